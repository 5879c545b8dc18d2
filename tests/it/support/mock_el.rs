//! A mock execution client speaking real HTTP/1.1 on loopback: records every request it gets,
//! answers like an Engine API server, and can be told to be slow, hang, drop connections or
//! refuse. One thread per connection; everything stops when the mock is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How the mock treats the next requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Behavior {
    /// Answer at once.
    Answer,
    /// Answer after this long.
    Delay(Duration),
    /// Read the request and never answer.
    Hang,
    /// Close the connection without answering.
    Close,
    /// Answer with this HTTP status and an empty JSON object.
    Status(u16),
    /// Answer HTTP 200 with exactly these bytes (a broken answer: truncated, empty, another id).
    Body(Vec<u8>),
}

/// How the mock frames the bodies of its answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, in chunks of this many bytes (Go's servers, geth: 4 KiB to
    /// 32 KiB).
    Chunked(usize),
    /// No length: the body ends when the mock closes the connection.
    UntilClose,
}

/// A request as the mock received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Request line and headers, as text.
    pub head: String,
    /// The body bytes.
    pub body: Vec<u8>,
    /// The JSON-RPC method.
    pub method: String,
    /// When it was completely read.
    pub at: Instant,
    /// Which connection of this mock it came on (0, 1, …).
    pub connection: usize,
    /// The body the mock answered (or would have answered) with.
    pub answer: Vec<u8>,
}

impl Received {
    /// The JSON-RPC id of the request, when it is a number.
    pub fn id(&self) -> Option<u64> {
        serde_json::from_slice::<Value>(&self.body)
            .ok()?
            .get("id")?
            .as_u64()
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

struct State {
    behavior: Behavior,
    received: Vec<Received>,
    connections: usize,
    name: String,
    /// Per-method answer overrides: method → `result` value.
    results: Vec<(String, Value)>,
    /// Requests with this method are never answered (whatever the behaviour).
    hang_methods: Vec<String>,
    /// Requests with this method are answered after this long (whatever the behaviour).
    delays: Vec<(String, Duration)>,
    /// Requests with this method are answered with this JSON-RPC error code.
    errors: Vec<(String, i64)>,
    /// Secret to verify Authorization tokens with, and the `iat`s seen.
    jwt_secret: Option<[u8; 32]>,
    token_iats: Vec<Result<u64, String>>,
    framing: Framing,
    /// Answers written completely.
    answers_written: usize,
}

/// A running mock execution client.
pub struct MockEl {
    addr: SocketAddr,
    shared: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl MockEl {
    /// Starts a mock named `name` (used in its answers) on an ephemeral loopback port.
    pub fn start(name: &str) -> MockEl {
        Self::start_on("127.0.0.1:0", name)
    }

    /// Starts a mock on a given address (e.g. to bring one back on the same port).
    pub fn start_on(addr: &str, name: &str) -> MockEl {
        let listener = TcpListener::bind(addr).expect("bind mock execution client");
        let addr = listener.local_addr().expect("mock address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let shared = Arc::new((
            Mutex::new(State {
                behavior: Behavior::Answer,
                received: Vec::new(),
                connections: 0,
                name: name.to_owned(),
                results: Vec::new(),
                hang_methods: Vec::new(),
                delays: Vec::new(),
                errors: Vec::new(),
                jwt_secret: None,
                token_iats: Vec::new(),
                framing: Framing::Length,
                answers_written: 0,
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared2, stop2) = (Arc::clone(&shared), Arc::clone(&stop));
        thread::spawn(move || accept_loop(listener, shared2, stop2));
        MockEl { addr, shared, stop }
    }

    /// The mock's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr` for `--el`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how the next requests are treated.
    pub fn set_behavior(&self, behavior: Behavior) {
        self.shared.0.lock().unwrap().behavior = behavior;
    }

    /// Answers `method` with this `result` from now on.
    pub fn set_result(&self, method: &str, result: Value) {
        let mut state = self.shared.0.lock().unwrap();
        state.results.retain(|(m, _)| m != method);
        state.results.push((method.to_owned(), result));
    }

    /// Frames the next answers' bodies this way.
    pub fn set_framing(&self, framing: Framing) {
        self.shared.0.lock().unwrap().framing = framing;
    }

    /// Waits until at least `count` answers were written completely; false on timeout.
    pub fn wait_answers_written(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, condvar) = &*self.shared;
        let mut state = lock.lock().unwrap();
        loop {
            if state.answers_written >= count {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = condvar.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Answers `method` after `delay` from now on.
    pub fn delay_on(&self, method: &str, delay: Duration) {
        let mut state = self.shared.0.lock().unwrap();
        state.delays.retain(|(m, _)| m != method);
        state.delays.push((method.to_owned(), delay));
    }

    /// Answers `method` with a JSON-RPC error `code` (in HTTP 200) from now on; `None` stops.
    pub fn error_on(&self, method: &str, code: Option<i64>) {
        let mut state = self.shared.0.lock().unwrap();
        state.errors.retain(|(m, _)| m != method);
        state
            .errors
            .extend(code.map(|code| (method.to_owned(), code)));
    }

    /// Answers `method` as it would by default again.
    pub fn clear_result(&self, method: &str) {
        self.shared
            .0
            .lock()
            .unwrap()
            .results
            .retain(|(m, _)| m != method);
    }

    /// Never answers `method`.
    pub fn hang_on(&self, method: &str) {
        self.shared
            .0
            .lock()
            .unwrap()
            .hang_methods
            .push(method.to_owned());
    }

    /// Verifies every request's token with this secret (results via [`MockEl::token_iats`]).
    pub fn verify_jwt(&self, secret: [u8; 32]) {
        self.shared.0.lock().unwrap().jwt_secret = Some(secret);
    }

    /// For each request: the verified token's `iat`, or why verification failed.
    pub fn token_iats(&self) -> Vec<Result<u64, String>> {
        self.shared.0.lock().unwrap().token_iats.clone()
    }

    /// Everything received so far, probes of the proxy excluded.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .0
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.method != "eth_syncing")
            .cloned()
            .collect()
    }

    /// Requests with this method received so far.
    pub fn received_method(&self, method: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.0.lock().unwrap().connections
    }

    /// Waits until at least `count` non-probe requests arrived; returns them.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let (lock, condvar) = &*self.shared;
        let mut state = lock.lock().unwrap();
        loop {
            let seen: Vec<Received> = state
                .received
                .iter()
                .filter(|r| r.method != "eth_syncing")
                .cloned()
                .collect();
            let now = Instant::now();
            if seen.len() >= count || now >= deadline {
                return seen;
            }
            state = condvar.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Waits until any request (probes included) arrives after `since`.
    pub fn wait_for_any_since(&self, since: Instant, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, condvar) = &*self.shared;
        let mut state = lock.lock().unwrap();
        loop {
            if state.received.iter().any(|r| r.at >= since) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = condvar.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

impl Drop for MockEl {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and closes the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<(Mutex<State>, Condvar)>, stop: Arc<AtomicBool>) {
    // Bounded: the loop ends when the mock is dropped, polling the flag every 5 ms at most.
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let connection = {
                    let mut state = shared.0.lock().unwrap();
                    state.connections += 1;
                    state.connections - 1
                };
                let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
                thread::spawn(move || serve(stream, connection, shared, stop));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve(
    stream: TcpStream,
    connection: usize,
    shared: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::SeqCst) {
        let Some((head, body)) = read_request(&mut reader, &stop) else {
            return;
        };
        let method = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("method").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        let (behavior, answer, framing) = {
            let (lock, condvar) = &*shared;
            let mut state = lock.lock().unwrap();
            let answer = answer_for(&state, &body);
            let received = Received {
                head,
                body: body.clone(),
                method: method.clone(),
                at: Instant::now(),
                connection,
                answer: answer.clone(),
            };
            if let Some(secret) = state.jwt_secret {
                let outcome = verify_token(received.header("authorization").as_deref(), &secret);
                state.token_iats.push(outcome);
            }
            state.received.push(received);
            condvar.notify_all();
            let delay = state.delays.iter().find(|(m, _)| *m == method);
            let behavior = if state.hang_methods.contains(&method) {
                Behavior::Hang
            } else if let Some((_, delay)) = delay {
                Behavior::Delay(*delay)
            } else {
                state.behavior.clone()
            };
            (behavior, answer, state.framing)
        };
        let mut raw = None;
        let status = match behavior {
            Behavior::Answer => 200,
            Behavior::Delay(delay) => {
                let until = Instant::now() + delay;
                while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(5).min(until - Instant::now()));
                }
                200
            }
            Behavior::Hang => {
                // Hold the connection open without answering until the peer or the test ends.
                let mut sink = [0u8; 1024];
                while !stop.load(Ordering::SeqCst) {
                    match reader.read(&mut sink) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => return,
                    }
                }
                return;
            }
            Behavior::Close => return,
            Behavior::Status(status) => status,
            Behavior::Body(bytes) => {
                raw = Some(bytes);
                200
            }
        };
        let body = if let Some(raw) = raw {
            raw
        } else if status == 200 {
            answer
        } else {
            b"{}".to_vec()
        };
        let message = frame(status, &body, framing);
        if writer.write_all(&message).is_err() {
            return;
        }
        {
            let (lock, condvar) = &*shared;
            lock.lock().unwrap().answers_written += 1;
            condvar.notify_all();
        }
        if framing == Framing::UntilClose {
            return;
        }
    }
}

/// An HTTP answer with `body` framed as asked.
fn frame(status: u16, body: &[u8], framing: Framing) -> Vec<u8> {
    let mut message = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n");
    match framing {
        Framing::Length => message.push_str(&format!("Content-Length: {}\r\n\r\n", body.len())),
        Framing::Chunked(_) => message.push_str("Transfer-Encoding: chunked\r\n\r\n"),
        Framing::UntilClose => message.push_str("Connection: close\r\n\r\n"),
    }
    let mut message = message.into_bytes();
    match framing {
        Framing::Length | Framing::UntilClose => message.extend_from_slice(body),
        Framing::Chunked(size) => {
            for chunk in body.chunks(size.max(1)) {
                message.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                message.extend_from_slice(chunk);
                message.extend_from_slice(b"\r\n");
            }
            message.extend_from_slice(b"0\r\n\r\n");
        }
    }
    message
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Reads one request (Content-Length bodies only: the proxy always sends them).
fn read_request(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => {
                head.push_str(&line);
                if line == "\r\n" && head.len() > 2 {
                    break;
                }
                if line == "\r\n" {
                    head.clear();
                }
            }
            Err(e) if is_timeout(&e) => {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let mut filled = 0;
    while filled < length {
        match reader.read(&mut body[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) => {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    Some((head, body))
}

/// An Engine-API-shaped answer for the request.
fn answer_for(state: &State, body: &[u8]) -> Vec<u8> {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if request.is_array() {
        let answers: Vec<Value> = request
            .as_array()
            .unwrap()
            .iter()
            .map(|r| json!({"jsonrpc": "2.0", "id": r["id"], "result": state.name}))
            .collect();
        return serde_json::to_vec(&answers).unwrap();
    }
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = request.get("method").and_then(Value::as_str).unwrap_or("");
    if let Some((_, code)) = state.errors.iter().find(|(m, _)| m == method) {
        let error = json!({"code": code, "message": "mock error"});
        return serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "error": error})).unwrap();
    }
    if let Some((_, result)) = state.results.iter().find(|(m, _)| m == method) {
        return serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": result})).unwrap();
    }
    let valid = json!({"status": "VALID", "latestValidHash": request["params"][0]["blockHash"], "validationError": null});
    let result = if method.starts_with("engine_newPayload") {
        valid
    } else if method.starts_with("engine_forkchoiceUpdated") {
        let payload_id = if request["params"][1].is_object() {
            // Each mock issues its own ids, so routing by id is observable.
            let digits: String = state.name.bytes().map(|b| format!("{:02x}", b)).collect();
            Value::String(format!("0x{:0<16}", &digits[..digits.len().min(16)]))
        } else {
            Value::Null
        };
        json!({"payloadStatus": {"status": "VALID", "latestValidHash": request["params"][0]["headBlockHash"], "validationError": null}, "payloadId": payload_id})
    } else if method.starts_with("engine_getPayload") {
        json!({"executionPayload": {"blockHash": "0x01", "builtBy": state.name}, "blockValue": "0x1"})
    } else if method == "engine_getClientVersionV1" {
        json!([{"code": "MK", "name": state.name, "version": "1.0.0", "commit": "0x00000000"}])
    } else if method == "engine_exchangeCapabilities" {
        json!([
            "engine_newPayloadV4",
            "engine_forkchoiceUpdatedV3",
            "engine_getPayloadV4",
            format!("engine_only_{}", state.name)
        ])
    } else if method == "eth_syncing" {
        json!(false)
    } else {
        json!(state.name)
    };
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": result})).unwrap()
}

/// Verifies an HS256 bearer token independently of the proxy's own code.
fn verify_token(authorization: Option<&str>, secret: &[u8; 32]) -> Result<u64, String> {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let token = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or("no bearer token")?;
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("not three segments".into());
    }
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    let signature = engine.decode(parts[2]).map_err(|e| e.to_string())?;
    mac.verify_slice(&signature)
        .map_err(|_| "bad signature".to_owned())?;
    let claims: Value =
        serde_json::from_slice(&engine.decode(parts[1]).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    claims["iat"].as_u64().ok_or_else(|| "no iat".to_owned())
}
