//! A mock execution client for the soak: real HTTP/1.1 on loopback, one thread per connection,
//! recording every block it receives and when; it can be killed (listener closed, connections
//! cut, as when the process dies) and brought back on the same port.
//!
//! It answers like a synced execution client that keeps its database across restarts: a payload
//! whose parent it has is `VALID`, one whose parent it lacks `SYNCING` (and recorded as
//! delivered out of order); a fork choice is `VALID`, and with payload attributes starts a build
//! whose id `getPayload` answers with a payload of 100 KB to 1.5 MB, chunked as Go's HTTP server
//! (geth) sends large answers. A restart forgets its builds, as a real client does.
//!
//! It checks no token and answers nothing but the Engine API calls the soak makes and the
//! proxy's probes.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::Reader;

/// Chunks of a chunked answer: Go's `net/http` flushes in 4–32 KiB pieces.
const CHUNK_BYTES: usize = 32 * 1024;
/// Smallest `getPayload` answer: a block with no blobs.
const MIN_PAYLOAD_ANSWER_BYTES: usize = 100_000;
/// Spread of `getPayload` answers above the smallest: with blobs, over the proxy's 1 MiB read
/// budget per readiness event.
const PAYLOAD_ANSWER_SPREAD_BYTES: usize = 1_400_000;
/// Attempts to bind the old port again at a restart (a socket of the previous listener may
/// linger for a moment), 20 ms apart.
const MAX_REBIND_ATTEMPTS: usize = 100;
/// Stack of a connection thread: a buffer pointer and an answer under construction.
const CONNECTION_STACK_BYTES: usize = 256 * 1024;

/// A block as one execution client received it.
#[derive(Clone, Debug)]
pub struct Receipt {
    /// The block's hash.
    pub hash: String,
    /// When its `newPayload` was read completely.
    pub at: Instant,
    /// The client had the block's parent already.
    pub in_order: bool,
}

/// A running (or killed) mock execution client.
pub struct ExecutionClient {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    index: usize,
    /// Incremented at every kill: connections of an older generation answer nothing more.
    generation: AtomicU64,
    stop: AtomicBool,
    state: Mutex<State>,
    /// Hex to build large answers from.
    filler: Arc<Vec<u8>>,
}

struct State {
    known: HashSet<String>,
    receipts: Vec<Receipt>,
    /// Payload ids of builds under way, with the head they build on and their number.
    builds: HashMap<String, (String, u64)>,
    next_build: u64,
    /// Open connections (a second handle each), to cut at a kill.
    connections: HashMap<u64, TcpStream>,
    next_connection: u64,
}

impl ExecutionClient {
    /// Starts client `index` on a fresh loopback port, knowing the block `genesis`.
    pub fn start(index: usize, genesis: &str, filler: Arc<Vec<u8>>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            index,
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                known: HashSet::from([genesis.to_owned()]),
                receipts: Vec::new(),
                builds: HashMap::new(),
                next_build: 0,
                connections: HashMap::new(),
                next_connection: 0,
            }),
            filler,
        });
        let accept = spawn_accept(listener, &shared)?;
        Ok(ExecutionClient {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it is listening.
    pub fn is_up(&self) -> bool {
        self.accept.is_some()
    }

    /// The process dies: the listener closes (connects are refused) and every connection is
    /// cut, whatever it was doing.
    pub fn kill(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        // The accept loop sees the new generation at its next connection: this one.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = accept.join();
        let mut state = self.shared.lock();
        for (_, connection) in state.connections.drain() {
            let _ = connection.shutdown(Shutdown::Both);
        }
        state.builds.clear();
    }

    /// The process is back on the same port, with its database (known blocks) but no builds.
    pub fn restart(&mut self) -> io::Result<()> {
        if self.accept.is_some() {
            return Ok(());
        }
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(listener) => break listener,
                Err(_) if attempts < MAX_REBIND_ATTEMPTS => {
                    attempts += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        self.accept = Some(spawn_accept(listener, &self.shared)?);
        Ok(())
    }

    /// The blocks received so far, in the order they arrived.
    pub fn receipts(&self) -> Vec<Receipt> {
        self.shared.lock().receipts.clone()
    }
}

impl Drop for ExecutionClient {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.kill();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The answer to one request (HTTP 200 always): its JSON body, and whether to send it
    /// chunked.
    fn answer(&self, body: &[u8]) -> (Vec<u8>, bool) {
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let method = request["method"].as_str().unwrap_or("");
        let params = &request["params"];
        let result = if method.starts_with("engine_newPayload") {
            self.on_payload(&params[0])
        } else if method.starts_with("engine_forkchoiceUpdated") {
            self.on_forkchoice(&params[0], &params[1])
        } else if method.starts_with("engine_getPayload") {
            return match self.payload(params[0].as_str().unwrap_or("")) {
                Some(payload) => (rpc_answer(&id, "result", payload), true),
                None => (rpc_error(&id, -38001, "Unknown payload"), false),
            };
        } else if method == "eth_syncing" {
            json!(false)
        } else if method == "engine_exchangeCapabilities" {
            json!([
                "engine_newPayloadV3",
                "engine_forkchoiceUpdatedV3",
                "engine_getPayloadV3"
            ])
        } else {
            return (rpc_error(&id, -32601, "Method not found"), false);
        };
        (rpc_answer(&id, "result", result), false)
    }

    fn on_payload(&self, payload: &Value) -> Value {
        let hash = payload["blockHash"].as_str().unwrap_or("").to_owned();
        let parent = payload["parentHash"].as_str().unwrap_or("");
        let mut state = self.lock();
        let in_order = state.known.contains(parent);
        state.known.insert(hash.clone());
        let at = Instant::now();
        state.receipts.push(Receipt {
            hash: hash.clone(),
            at,
            in_order,
        });
        match in_order {
            true => json!({"status": "VALID", "latestValidHash": hash, "validationError": null}),
            false => json!({"status": "SYNCING", "latestValidHash": null, "validationError": null}),
        }
    }

    fn on_forkchoice(&self, forkchoice: &Value, attributes: &Value) -> Value {
        let head = forkchoice["headBlockHash"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let mut state = self.lock();
        if !state.known.contains(&head) {
            let status =
                json!({"status": "SYNCING", "latestValidHash": null, "validationError": null});
            return json!({"payloadStatus": status, "payloadId": null});
        }
        let status = json!({"status": "VALID", "latestValidHash": head, "validationError": null});
        if !attributes.is_object() {
            return json!({"payloadStatus": status, "payloadId": null});
        }
        state.next_build += 1;
        let payload_id = format!("0x{:02x}{:014x}", self.index, state.next_build);
        let build = state.next_build;
        state.builds.insert(payload_id.clone(), (head, build));
        json!({"payloadStatus": status, "payloadId": payload_id})
    }

    /// The payload built for `payload_id`, as the `result` of `getPayloadV3`.
    fn payload(&self, payload_id: &str) -> Option<Value> {
        let (parent, build) = self.lock().builds.get(payload_id)?.clone();
        // Sizes spread over the range by a multiplier prime to it.
        let spread = (build as usize).wrapping_mul(7_919) % PAYLOAD_ANSWER_SPREAD_BYTES;
        let size = MIN_PAYLOAD_ANSWER_BYTES + spread;
        let filler = &self.filler[..size.min(self.filler.len())];
        let transaction = format!("0x{}", String::from_utf8_lossy(filler));
        Some(json!({
            "executionPayload": {
                "parentHash": parent,
                "blockHash": format!("0x{:064x}", build),
                "transactions": [transaction],
            },
            "blockValue": "0x1",
            "blobsBundle": {"commitments": [], "proofs": [], "blobs": []},
            "shouldOverrideBuilder": false,
        }))
    }
}

/// A JSON-RPC answer whose `member` (`result` or `error`) is `value`.
fn rpc_answer(id: &Value, member: &str, value: Value) -> Vec<u8> {
    let mut answer = json!({"jsonrpc": "2.0", "id": id});
    answer[member] = value;
    answer.to_string().into_bytes()
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Vec<u8> {
    rpc_answer(id, "error", json!({"code": code, "message": message}))
}

fn spawn_accept(listener: TcpListener, shared: &Arc<Shared>) -> io::Result<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    let generation = shared.generation.load(Ordering::SeqCst);
    thread::Builder::new()
        .name(format!("soak-el-{}-accept", shared.index))
        .spawn(move || accept_loop(&listener, &shared, generation))
}

/// Accepts until the client is killed (a new generation) or the soak ends; each accept is one
/// connection, so the loop is bounded by the connections the proxy makes.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, generation: u64) {
    for stream in listener.incoming() {
        if shared.generation.load(Ordering::SeqCst) != generation
            || shared.stop.load(Ordering::SeqCst)
        {
            return;
        }
        let Ok(stream) = stream else { continue };
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        let key = {
            let mut state = shared.lock();
            state.next_connection += 1;
            let key = state.next_connection;
            state.connections.insert(key, handle);
            key
        };
        let shared = Arc::clone(shared);
        let _ = thread::Builder::new()
            .name(format!("soak-el-{}-conn", shared.index))
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                serve(stream, &shared, generation);
                shared.lock().connections.remove(&key);
            });
    }
}

/// Answers requests on one connection until the proxy closes it or the client is killed.
fn serve(mut stream: TcpStream, shared: &Shared, generation: u64) {
    let _ = stream.set_nodelay(true);
    let mut reader = Reader::new();
    loop {
        let message = match reader.read(&mut stream, true) {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => return,
        };
        if shared.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let (body, chunked) = shared.answer(reader.bytes(message.body));
        if write_answer(&mut stream, &body, chunked, message.keep_alive).is_err()
            || !message.keep_alive
        {
            return;
        }
    }
}

fn write_answer(
    stream: &mut TcpStream,
    body: &[u8],
    chunked: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let connection = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    if !chunked {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{connection}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        return stream.write_all(body);
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n{connection}\r\n"
    );
    let mut message = head.into_bytes();
    for chunk in body.chunks(CHUNK_BYTES) {
        message.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        message.extend_from_slice(chunk);
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&message)
}
