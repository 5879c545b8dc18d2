//! The load generator of the proxy benchmark: `engine_newPayloadV4` requests built once and
//! re-stamped in place (unique `id` and `blockHash`, current `timestamp`, so no proxy can
//! answer from a cache), blocking keep-alive clients, a sequential latency run and a
//! fixed-duration throughput run over several connections.
//!
//! It does not interpret answers beyond "HTTP 200 and my `id` is in it".

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::http::{self, Reader};

/// First request id: ten digits, so ids can be rewritten in place for the whole run.
const FIRST_ID: u64 = 1_000_000_000;

/// Digits of every id.
const ID_DIGITS: usize = 10;

/// Hex digits of a stamped `timestamp` (unix seconds fit 8 until 2106).
const TIMESTAMP_DIGITS: usize = 8;

/// How long a client waits for an answer before counting an error: beyond any Engine API
/// timeout the proxies apply (8 s), so a slow answer is measured, not cut.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The next id and block hash seed, shared by every client of the run.
static NEXT_ID: AtomicU64 = AtomicU64::new(FIRST_ID);

/// An HTTP request (head and body) whose id, block hash and timestamp are rewritten in place.
#[derive(Clone)]
pub struct Request {
    bytes: Vec<u8>,
    body_bytes: usize,
    id_at: usize,
    hash_at: usize,
    timestamp_at: usize,
}

impl Request {
    /// An `engine_newPayloadV4` shaped like a Prague block from the captured fixtures, with
    /// `transactions` transactions of `transaction_hex_bytes` hex digits each.
    pub fn new_payload(transactions: usize, transaction_hex_bytes: usize) -> Request {
        let mut body = String::new();
        body.push_str(r#"{"jsonrpc":"2.0","id":"#);
        let id_at = body.len();
        body.push_str(&FIRST_ID.to_string());
        body.push_str(r#","method":"engine_newPayloadV4","params":[{"blockNumber":"0x1","parentHash":"0x234f34cb17fb5047cd44cc2b8551022fc31f2595ef6c1d5645e9cdda2b1f0409","feeRecipient":"0xabababababababababababababababababababab","stateRoot":"0xe025b285c9f5d1390dd31f40eda4ff092a3cb1df7c190d720dbded6688a927ab","receiptsRoot":"0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421","logsBloom":"0x"#);
        body.push_str(&"0".repeat(512));
        body.push_str(r#"","gasLimit":"0x1c9c380","gasUsed":"0x0","timestamp":"0x"#);
        let timestamp_at = body.len();
        body.push_str(&"0".repeat(TIMESTAMP_DIGITS));
        body.push_str(r#"","extraData":"0x","baseFeePerGas":"0x342770c0","blobGasUsed":"0x0","excessBlobGas":"0x0","blockHash":"0x"#);
        let hash_at = body.len();
        body.push_str(&"0".repeat(64));
        body.push_str(r#"","prevRandao":"0xb3cbd322e29ea20bf495279cff6101dff5629d3801acb5a6d3fb01e536319719","transactions":["#);
        for index in 0..transactions {
            if index > 0 {
                body.push(',');
            }
            body.push_str("\"0x");
            // Varied digits, as real transactions are; the content is never decoded.
            let digit = b"0123456789abcdef"[index % 16] as char;
            body.extend(std::iter::repeat_n(digit, transaction_hex_bytes));
            body.push('"');
        }
        body.push_str(r#"],"withdrawals":[],"requestsHash":"0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},[],"0x435527c939becae2a2561b8aade9e9ea7f175f03b85082f4fa8ac30e1cd3157e",[]]}"#);
        Request::from_body(&body, id_at, hash_at, timestamp_at)
    }

    /// An `engine_forkchoiceUpdatedV3` with payload attributes (a block build starts), shaped
    /// like a Prague call with one withdrawal: unique head block hash, current timestamp.
    pub fn fork_choice() -> Request {
        let mut body = String::new();
        body.push_str(r#"{"jsonrpc":"2.0","id":"#);
        let id_at = body.len();
        body.push_str(&FIRST_ID.to_string());
        body.push_str(r#","method":"engine_forkchoiceUpdatedV3","params":[{"headBlockHash":"0x"#);
        let hash_at = body.len();
        body.push_str(&"0".repeat(64));
        body.push_str(r#"","safeBlockHash":"0x234f34cb17fb5047cd44cc2b8551022fc31f2595ef6c1d5645e9cdda2b1f0409","finalizedBlockHash":"0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"},{"timestamp":"0x"#);
        let timestamp_at = body.len();
        body.push_str(&"0".repeat(TIMESTAMP_DIGITS));
        body.push_str(r#"","prevRandao":"0xb3cbd322e29ea20bf495279cff6101dff5629d3801acb5a6d3fb01e536319719","suggestedFeeRecipient":"0xabababababababababababababababababababab","withdrawals":[{"index":"0x1a2b3c","validatorIndex":"0x4d5e","address":"0xcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","amount":"0x2b1f0409"}],"parentBeaconBlockRoot":"0x435527c939becae2a2561b8aade9e9ea7f175f03b85082f4fa8ac30e1cd3157e"}]}"#);
        Request::from_body(&body, id_at, hash_at, timestamp_at)
    }

    /// A `POST /` of `body`, whose id, hash and timestamp digits start at the given offsets.
    fn from_body(body: &str, id_at: usize, hash_at: usize, timestamp_at: usize) -> Request {
        let head = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut bytes = head.into_bytes();
        let body_at = bytes.len();
        let body_bytes = body.len();
        bytes.extend_from_slice(body.as_bytes());
        let mut request = Request {
            bytes,
            body_bytes,
            id_at: body_at + id_at,
            hash_at: body_at + hash_at,
            timestamp_at: body_at + timestamp_at,
        };
        request.stamp();
        request
    }

    /// Gives the request a fresh id and block hash and the current time; returns the id digits.
    pub fn stamp(&mut self) -> [u8; ID_DIGITS] {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id_text = format!("{id:0ID_DIGITS$}");
        let hash_text = format!("{:064x}", id);
        let time_text = format!("{now:0TIMESTAMP_DIGITS$x}");
        self.bytes[self.id_at..self.id_at + ID_DIGITS].copy_from_slice(id_text.as_bytes());
        self.bytes[self.hash_at..self.hash_at + 64].copy_from_slice(hash_text.as_bytes());
        self.bytes[self.timestamp_at..self.timestamp_at + TIMESTAMP_DIGITS]
            .copy_from_slice(time_text.as_bytes());
        let mut digits = [0u8; ID_DIGITS];
        digits.copy_from_slice(id_text.as_bytes());
        digits
    }

    /// Bytes of the JSON body.
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    /// The JSON body.
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.bytes.len() - self.body_bytes..]
    }
}

/// A blocking keep-alive client that reconnects when the server closes.
pub struct Client {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    reader: Reader,
}

impl Client {
    /// A client of `addr`; it connects on first use.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            stream: None,
            reader: Reader::new(),
        }
    }

    /// Sends `request`, stamped with `id` (see [`Request::stamp`]), and reads the answer; true
    /// when it is HTTP 200 and carries the id. Errors leave the client to reconnect on the next
    /// call.
    pub fn call(&mut self, request: &Request, id: &[u8]) -> io::Result<bool> {
        let result = self.exchange(&request.bytes, id);
        if !matches!(result, Ok(true)) {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self, bytes: &[u8], id: &[u8]) -> io::Result<bool> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(READ_TIMEOUT))?;
            self.stream = Some(stream);
            self.reader = Reader::new();
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(bytes)?;
        let Some(message) = self.reader.read(stream, false)? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let ok = message.status == 200 && http::contains(self.reader.bytes(message.body), id);
        if !message.keep_alive {
            self.stream = None;
        }
        Ok(ok)
    }
}

/// Latencies of a run, in nanoseconds, and how many calls failed.
#[derive(Default, Clone)]
pub struct Samples {
    /// One entry per successful call.
    pub nanos: Vec<u64>,
    /// Calls that failed or got a wrong answer.
    pub errors: u64,
}

impl Samples {
    /// Adds another run's samples.
    pub fn extend(&mut self, other: Samples) {
        self.nanos.extend(other.nanos);
        self.errors += other.errors;
    }

    /// The `percent` percentile (nearest rank), in microseconds; NaN without samples.
    pub fn percentile_us(&self, percent: f64) -> f64 {
        if self.nanos.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.nanos.clone();
        sorted.sort_unstable();
        let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1_000.0
    }
}

/// Failed calls in a row after which a run gives up: the target is broken, and each failure
/// may have waited a whole read timeout.
const MAX_ERRORS_IN_A_ROW: u64 = 3;

/// Sends `count` sequential requests (at most until `max_time` passed) and times each.
pub fn latency(
    client: &mut Client,
    request: &mut Request,
    count: usize,
    max_time: Duration,
) -> Samples {
    let deadline = Instant::now() + max_time;
    let mut samples = Samples {
        nanos: Vec::with_capacity(count),
        errors: 0,
    };
    let mut in_a_row = 0;
    for _ in 0..count {
        if Instant::now() >= deadline || in_a_row >= MAX_ERRORS_IN_A_ROW {
            break;
        }
        // Stamped outside the timed part: only the exchange is measured.
        let id = request.stamp();
        let start = Instant::now();
        match client.call(request, &id) {
            Ok(true) => {
                samples.nanos.push(start.elapsed().as_nanos() as u64);
                in_a_row = 0;
            }
            Ok(false) | Err(_) => {
                samples.errors += 1;
                in_a_row += 1;
            }
        }
    }
    samples
}

/// What a throughput run achieved.
#[derive(Clone, Copy, Default)]
pub struct Throughput {
    /// Successful calls.
    pub completed: u64,
    /// Failed calls.
    pub errors: u64,
    /// From the common start to the last connection's end.
    pub elapsed: Duration,
}

impl Throughput {
    /// Successful calls per second.
    pub fn per_second(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `connections` clients of `addr` in parallel for `duration` (each at most
/// `max_per_connection` calls), after a short warm-up; `at_start` runs just before the common
/// start and `at_end` just after the last client finished (for CPU readings).
pub fn throughput(
    addr: SocketAddr,
    template: &Request,
    connections: usize,
    duration: Duration,
    max_per_connection: u64,
    at_start: impl FnOnce(),
    at_end: impl FnOnce(),
) -> Throughput {
    /// Calls per connection before the start: connects and lets proxies open upstream
    /// connections.
    const WARM_UP_CALLS: usize = 5;
    // Two barriers: every client warmed up, then the CPU reading, then everyone starts.
    let (ready, go) = (Barrier::new(connections + 1), Barrier::new(connections + 1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                let (ready, go) = (&ready, &go);
                scope.spawn(move || {
                    let mut request = template.clone();
                    let mut client = Client::new(addr);
                    for _ in 0..WARM_UP_CALLS {
                        let id = request.stamp();
                        let _ = client.call(&request, &id);
                    }
                    ready.wait();
                    go.wait();
                    let start = Instant::now();
                    let deadline = start + duration;
                    let (mut completed, mut errors) = (0u64, 0u64);
                    let mut in_a_row = 0;
                    while completed + errors < max_per_connection
                        && Instant::now() < deadline
                        && in_a_row < MAX_ERRORS_IN_A_ROW
                    {
                        let id = request.stamp();
                        match client.call(&request, &id) {
                            Ok(true) => {
                                completed += 1;
                                in_a_row = 0;
                            }
                            Ok(false) | Err(_) => {
                                errors += 1;
                                in_a_row += 1;
                            }
                        }
                    }
                    (completed, errors, Instant::now())
                })
            })
            .collect();
        ready.wait();
        at_start();
        go.wait();
        let start = Instant::now();
        let mut result = Throughput::default();
        let mut last_end = start;
        for worker in workers {
            let (completed, errors, end) = worker.join().expect("load thread panicked");
            result.completed += completed;
            result.errors += errors;
            last_end = last_end.max(end);
        }
        at_end();
        result.elapsed = last_end - start;
        result
    })
}
