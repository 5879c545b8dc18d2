//! A fast mock execution client for the proxy benchmark: one thread per keep-alive
//! connection, answers every JSON-RPC request at once with a small fixed result that echoes the
//! request's `id` (`false` for the proxy's `eth_syncing` probes, a `VALID` payload status
//! otherwise).
//!
//! It records nothing but a count and checks nothing (no JWT, no JSON validation): it is the
//! floor the proxies are compared against, so it must cost as little as possible.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};

use super::http::{self, Reader};

/// Stack of a connection thread: it only holds a buffer pointer and a small answer.
const CONNECTION_STACK_BYTES: usize = 128 * 1024;

/// Bodies up to this size are searched for the probe's method name; bigger ones are payloads.
const MAX_PROBE_BODY_BYTES: usize = 512;

/// The `result` of every answer but probes: what a synced EL says to a valid payload.
const PAYLOAD_RESULT: &str = r#"{"status":"VALID","latestValidHash":"0x2fd36d8018b71c590b5400849c832800163994ab506132d2cc535e349efd497d","validationError":null}"#;

/// The result of a `forkchoiceUpdated` that starts a build.
const FORK_CHOICE_RESULT: &str = r#"{"payloadStatus":{"status":"VALID","latestValidHash":"0x2fd36d8018b71c590b5400849c832800163994ab506132d2cc535e349efd497d","validationError":null},"payloadId":"0x0000000000000001"}"#;

/// A running mock execution client on 127.0.0.1.
pub struct MockEl {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

impl MockEl {
    /// Starts a mock on an ephemeral loopback port.
    pub fn start() -> io::Result<MockEl> {
        MockEl::start_with(false)
    }

    /// A hung execution client: it answers the proxy's `eth_syncing` probes (so it looks
    /// alive) but never any Engine API call, reading and dropping them.
    pub fn start_hung() -> io::Result<MockEl> {
        MockEl::start_with(true)
    }

    fn start_with(hung: bool) -> io::Result<MockEl> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let accept = {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            thread::Builder::new()
                .name("mock-el-accept".into())
                .spawn(move || accept_loop(&listener, &stop, &served, hung))?
        };
        Ok(MockEl {
            addr,
            stop,
            served,
            accept: Some(accept),
        })
    }

    /// The mock's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far (probes included).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for MockEl {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A connection wakes the blocking accept so it sees the flag. Connection threads end
        // when their peers (killed proxies, dropped clients) close.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, served: &Arc<AtomicU64>, hung: bool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let served = Arc::clone(served);
        let _ = thread::Builder::new()
            .name("mock-el-conn".into())
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || serve(stream, &served, hung));
    }
}

fn serve(mut stream: TcpStream, served: &AtomicU64, hung: bool) {
    let _ = stream.set_nodelay(true);
    let mut reader = Reader::new();
    let mut answer = Vec::with_capacity(512);
    loop {
        let message = match reader.read(&mut stream, true) {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => return,
        };
        answer.clear();
        let body = reader.bytes(message.body);
        if hung && !is_probe(body) {
            continue;
        }
        write_answer(&mut answer, body, message.keep_alive);
        if stream.write_all(&answer).is_err() {
            return;
        }
        served.fetch_add(1, Ordering::Relaxed);
        if !message.keep_alive {
            return;
        }
    }
}

/// Appends a whole HTTP answer to `body`'s request to `out`.
fn is_probe(body: &[u8]) -> bool {
    body.len() <= MAX_PROBE_BODY_BYTES && http::contains(body, b"\"eth_syncing\"")
}

fn write_answer(out: &mut Vec<u8>, body: &[u8], keep_alive: bool) {
    let result = if is_probe(body) {
        "false"
    } else if http::contains(body, b"\"engine_forkchoiceUpdated") {
        FORK_CHOICE_RESULT
    } else {
        PAYLOAD_RESULT
    };
    let id = json_id(body);
    let length = r#"{"jsonrpc":"2.0","id":,"result":}"#.len() + id.len() + result.len();
    let connection = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n{connection}\r\n"
    );
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id);
    out.extend_from_slice(br#","result":"#);
    out.extend_from_slice(result.as_bytes());
    out.push(b'}');
}

/// The raw JSON of the request's `id` (`null` when absent). The benchmark's requests put `id`
/// before `params`, so the search stops within the first bytes even of a 2 MB payload.
fn json_id(body: &[u8]) -> &[u8] {
    let Some(at) = http::find(body, b"\"id\"") else {
        return b"null";
    };
    let rest = skip_space(&body[at + 4..]);
    let Some(rest) = rest.strip_prefix(b":") else {
        return b"null";
    };
    let rest = skip_space(rest);
    let end = if rest.first() == Some(&b'"') {
        rest.iter()
            .skip(1)
            .position(|&b| b == b'"')
            .map(|quote| quote + 2)
    } else {
        rest.iter()
            .position(|&b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
    };
    match end {
        Some(end) if end > 0 => &rest[..end],
        _ => b"null",
    }
}

fn skip_space(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}
