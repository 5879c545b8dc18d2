//! Drives one beacon-node connection (`Inbound`) over an in-memory stream with a scripted peer
//! and a fake clock, the way the event loop does: the peer's bytes arrive in arbitrary pieces and
//! reads of arbitrary size, interleaved with `WouldBlock`, `Interrupted` and socket errors; the
//! peer accepts answers in arbitrary partial writes; time advances by arbitrary amounts and the
//! timer fires when `deadline()` has passed; requests are answered in arbitrary order; the proxy
//! may shut down. At the end the peer turns cooperative and everything owed is delivered.
//!
//! Checked: nothing panics; requests come out numbered 0, 1, 2… and equal to what an independent
//! reading of the whole stream (`parse_request_head` + `BodyReader`) finds, within the limits;
//! the written bytes parse as HTTP responses whose answers (each body names its request's seq)
//! come in request order, with the status given, and only a final error answer after them;
//! after `stop_reading()` at most the request already under way completes;
//! `pending_answers()` stays within `MAX_PIPELINED_REQUESTS` plus a small constant; a due timer
//! always ends the connection and an early one changes nothing; once `finished()`, the stream is
//! neither read nor written; and a connection that ended cleanly has read every complete request
//! in the stream and answered all of them. With a JWT secret (bit 1 of the script's first
//! byte), a request that needs a token and has no valid one is handed on refused at its head,
//! with no body beyond what came with the head, no `100 Continue`, and nothing read after it.
//! The answer budget is this connection's own unsent bytes (as if it were the only one), so
//! backpressure on it is exercised, and the final delivery must still read everything.
//! With bit 2 set the connection is one accepted over `--max-connections`: it never hands a
//! request on, writes at most one answer (`503`, or the error its head deserves) and closes by
//! `REFUSAL_HEAD_WAIT`.
//!
//! Input layout (so seeds can be written by hand): byte 0 is the length `n` of the script, bytes
//! `1..=n` are the script (decoded with `arbitrary` into a setup and operations), and the rest is
//! what the peer sends. A seed `\0` + raw HTTP runs no operations: the final delivery only.
//!
//! With `INBOUND_STREAM_TRACE` set in the environment, each operation and the outcome are
//! printed to stderr, to read a crash input.
//!
//! It does not check answer contents the event loop decides, nor the JSON of error answers.

#![no_main]

use std::collections::BTreeMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

use sync_proxy::http::body::BodyReader;
use sync_proxy::http::head::{
    Framing, HeadError, RequestHead, RequestMethod, Version, parse_request_head,
};
use sync_proxy::inbound::{
    Auth, CloseReason, Inbound, Limits, MAX_PIPELINED_REQUESTS, ParsedRequest, REFUSAL_HEAD_WAIT,
    ReadContext,
};
use sync_proxy::jwt::{self, Secret};
use sync_proxy::time::Clock;

/// Slots beyond `MAX_PIPELINED_REQUESTS` a connection may hold: a `100 Continue` and the error
/// answer that ends the connection.
const MAX_EXTRA_SLOTS: usize = 2;
/// Most service rounds per readiness event, as the event loop's `MAX_INBOUND_ROUNDS` bounds it.
const MAX_SERVICE_ROUNDS: usize = 8;
/// Most times the loop comes back to a connection with readiness left over, per event; each
/// must progress, and the stream is finite.
const MAX_REQUEUES: usize = 1 << 16;
/// Most rounds of the final cooperative delivery; each round either progresses or ends it.
const MAX_DRAIN_ROUNDS: usize = 4096;
/// Answer bodies are padded by up to 255 times this, so answers span many partial writes.
const PAD_UNIT_BYTES: usize = 16;
/// Statuses answers are given with (the event loop's and the execution clients').
const STATUSES: [u16; 6] = [200, 400, 404, 413, 502, 504];
/// Prefix of every answer body the script gives; error answers of `Inbound` never start so.
const ANSWER_PREFIX: &[u8] = b"{\"seq\":";
/// The `--jwt-secret` of the runs that check tokens (seeds can carry tokens signed with it).
const SECRET_HEX: &str = "7365637265742d6b65792d666f722d73796e632d70726f78792d74657374732e";
/// The wall clock of every run, in Unix seconds: tokens with `iat` within 60 s of it are fresh.
const UNIX_SECS: u64 = 1_700_000_000;

/// Limits the fuzzer can cross with its input sizes; the script's first byte picks them (odd:
/// `Tiny`).
#[derive(Debug, Clone, Copy)]
enum LimitSet {
    /// 1 KiB heads, 64 KiB bodies: the head limit is reachable, the body limit by declaration.
    Small,
    /// 128-byte heads, 64-byte bodies: both limits are reachable by real bytes.
    Tiny,
}

impl LimitSet {
    fn limits(self) -> Limits {
        // The answer budget is within reach of the script's padded answers (up to 4 KiB each).
        let (max_head_bytes, max_body_bytes, max_unsent_answer_bytes) = match self {
            LimitSet::Small => (1024, 64 * 1024, 16 * 1024),
            LimitSet::Tiny => (128, 64, 256),
        };
        Limits {
            max_head_bytes,
            max_body_bytes,
            header_timeout: Duration::from_millis(1_000),
            body_timeout: Duration::from_millis(2_000),
            idle_timeout: Duration::from_millis(5_000),
            max_unsent_answer_bytes,
        }
    }
}

/// A socket error the script injects.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Fault {
    Interrupted,
    ConnectionReset,
    BrokenPipe,
}

impl Fault {
    fn kind(self) -> io::ErrorKind {
        match self {
            Fault::Interrupted => io::ErrorKind::Interrupted,
            Fault::ConnectionReset => io::ErrorKind::ConnectionReset,
            Fault::BrokenPipe => io::ErrorKind::BrokenPipe,
        }
    }
}

/// One step of the script.
#[derive(Arbitrary, Debug)]
enum Op {
    /// The peer sends up to `bytes` more of its stream; the poller reports readable.
    Send { bytes: u16 },
    /// Reads return at most `bytes` (at least 1) from now on.
    ReadSize { bytes: u16 },
    /// The peer's receive window opens by `bytes`; the poller reports writable.
    Window { bytes: u16 },
    /// Writes accept at most `bytes` (at least 1) per call from now on.
    WriteSize { bytes: u16 },
    /// A readiness event without news (spurious, or level-triggered).
    Ready { readable: bool, writable: bool },
    /// The peer closes its side: what it has not sent yet is never sent.
    Close,
    /// The next read (or write) fails with `fault`.
    Fail { write: bool, fault: Fault },
    /// Time passes; the timer fires if the connection's deadline has passed.
    Advance { ms: u16 },
    /// The timer fires early (another connection's deadline): nothing may change.
    EarlyTimer,
    /// The event loop answers the `pick`-th unanswered request (or a seq never issued).
    Answer { pick: u8, status: u8, pad: u8 },
    /// The proxy shuts down.
    StopReading,
}

/// The scripted peer: the far end of the connection's socket.
struct Peer {
    /// Everything the peer will send (cut short by `Close`).
    stream: Vec<u8>,
    /// Bytes of `stream` the peer has sent so far.
    sent: usize,
    /// Bytes the connection has read.
    read: usize,
    read_size: usize,
    closed: bool,
    read_fault: Option<io::ErrorKind>,
    /// Everything the connection wrote.
    written: Vec<u8>,
    /// Bytes the peer accepts before writes would block.
    window: usize,
    write_size: usize,
    write_fault: Option<io::ErrorKind>,
    read_calls: usize,
    write_calls: usize,
    /// A read came back short while more bytes were there (`read_size`): to the connection
    /// that looks drained, as if the rest arrived just after, which raises a new readiness edge.
    edge: bool,
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_calls += 1;
        // A zero-length read returns Ok(0) from a real socket, which reads as EOF.
        assert!(!buf.is_empty(), "zero-length read");
        if let Some(kind) = self.read_fault.take() {
            return Err(kind.into());
        }
        let available = self.sent - self.read;
        if available == 0 {
            return if self.closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = available.min(buf.len()).min(self.read_size);
        buf[..n].copy_from_slice(&self.stream[self.read..self.read + n]);
        self.read += n;
        self.edge |= n < buf.len() && n < available;
        Ok(n)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_calls += 1;
        if let Some(kind) = self.write_fault.take() {
            return Err(kind.into());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        if self.window == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let limit = self.window.min(self.write_size);
        let mut n = 0;
        for buf in bufs {
            let take = (limit - n).min(buf.len());
            self.written.extend_from_slice(&buf[..take]);
            n += take;
            if n == limit {
                break;
            }
        }
        self.window -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What an independent reading of the whole stream finds.
struct Expected {
    requests: Vec<ExpectedRequest>,
    /// The stream's requests end in an error answered with this status.
    reject_status: Option<u16>,
    /// A head that is both malformed and longer than the limit is refused as too large (431)
    /// or as malformed (400), depending on whether a read ended inside the limit: both are right.
    alternative_reject_status: Option<u16>,
}

/// A complete request of the stream.
struct ExpectedRequest {
    head: RequestHead,
    body: Vec<u8>,
    /// Refused for want of a valid token: handed on at its head, its body read only if it came
    /// with the head (which depends on where reads ended).
    refused: bool,
}

/// One run: the connection, its peer, the clock and what has been seen.
struct Run {
    conn: Inbound<Peer>,
    limits: Limits,
    secret: Option<Secret>,
    t0: Instant,
    elapsed: Duration,
    expected: Expected,
    /// Length of the peer's stream before any `Close`.
    stream_len: usize,
    /// Requests read, by seq.
    requests: Vec<RequestHead>,
    /// Whether each request read was refused for want of a token, by seq.
    refused: Vec<bool>,
    /// Seqs read and not answered yet, in order.
    unanswered: Vec<u64>,
    /// Answers given: (status, body) by seq.
    answers: BTreeMap<u64, (u16, Vec<u8>)>,
    /// Requests read when the script called `stop_reading()`.
    requests_at_stop: Option<usize>,
    stopped_by_script: bool,
    faulted: bool,
    timed_out: bool,
    closed_early: bool,
    /// (read calls, write calls, bytes read, bytes written) when the connection finished.
    at_finish: Option<(usize, usize, usize, usize)>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&script_len, rest)) = data.split_first() else {
        return;
    };
    let script_len = usize::from(script_len).min(rest.len());
    let (script, stream) = rest.split_at(script_len);
    let mut u = Unstructured::new(script);
    let setup = u8::arbitrary(&mut u).unwrap_or(0);
    let limit_set = match setup & 1 {
        1 => LimitSet::Tiny,
        _ => LimitSet::Small,
    };
    let secret = (setup & 2 != 0).then(|| Secret::from_hex(SECRET_HEX).expect("valid secret"));

    let trace = std::env::var_os("INBOUND_STREAM_TRACE").is_some();
    if trace {
        eprintln!(
            "limits {limit_set:?}, secret {}, stream {:?}",
            secret.is_some(),
            String::from_utf8_lossy(stream)
        );
    }
    let mut run = Run::new(limit_set.limits(), secret, setup & 4 != 0, stream);
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        if trace {
            eprintln!("{op:?}");
        }
        run.apply(op);
        run.check();
        if trace {
            eprintln!("  -> {}", run.state());
        }
    }
    run.drain();
    run.check();
    if trace {
        eprintln!("after final delivery: {}", run.state());
        let written = &run.conn.stream_mut().written;
        eprintln!("written {:?}", String::from_utf8_lossy(written));
    }
    run.check_end();
});

impl Run {
    fn new(limits: Limits, secret: Option<Secret>, refusing: bool, stream: &[u8]) -> Run {
        let peer = Peer {
            stream: stream.to_vec(),
            sent: 0,
            read: 0,
            read_size: usize::MAX,
            closed: false,
            read_fault: None,
            written: Vec::new(),
            window: 0,
            write_size: usize::MAX,
            write_fault: None,
            read_calls: 0,
            write_calls: 0,
            edge: false,
        };
        let t0 = Instant::now();
        let peer_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000));
        Run {
            conn: if refusing {
                Inbound::refusing(peer, peer_addr, 1, limits, t0)
            } else {
                Inbound::new(peer, peer_addr, 1, limits, t0)
            },
            limits,
            expected: expected(stream, limits, secret.as_ref()),
            secret,
            t0,
            elapsed: Duration::ZERO,
            stream_len: stream.len(),
            requests: Vec::new(),
            refused: Vec::new(),
            unanswered: Vec::new(),
            answers: BTreeMap::new(),
            requests_at_stop: None,
            stopped_by_script: false,
            faulted: false,
            timed_out: false,
            closed_early: false,
            at_finish: None,
        }
    }

    /// One line for the trace.
    fn state(&mut self) -> String {
        let (finished, pending, deadline, written, read) = self.snapshot();
        let deadline_ms = deadline.map(|d| d.saturating_duration_since(self.t0).as_millis());
        format!(
            "t={}ms read={read} written={written} requests={} pending={pending} deadline={deadline_ms:?}ms finished={finished:?}",
            self.elapsed.as_millis(),
            self.requests.len(),
        )
    }

    fn now(&self) -> Instant {
        self.t0 + self.elapsed
    }

    fn peer(&mut self) -> &mut Peer {
        self.conn.stream_mut()
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Send { bytes } => {
                let peer = self.peer();
                if !peer.closed {
                    peer.sent = (peer.sent + usize::from(bytes)).min(peer.stream.len());
                }
                self.event(true, false);
            }
            Op::ReadSize { bytes } => self.peer().read_size = usize::from(bytes).max(1),
            Op::Window { bytes } => {
                let peer = self.peer();
                peer.window = peer.window.saturating_add(usize::from(bytes));
                self.event(false, true);
            }
            Op::WriteSize { bytes } => self.peer().write_size = usize::from(bytes).max(1),
            Op::Ready { readable, writable } => self.event(readable, writable),
            Op::Close => {
                let peer = self.peer();
                if !peer.closed {
                    peer.closed = true;
                    let sent = peer.sent;
                    peer.stream.truncate(sent);
                    self.closed_early |= sent < self.stream_len;
                }
                self.event(true, false);
            }
            Op::Fail { write, fault } => {
                let peer = self.peer();
                if write {
                    peer.write_fault = Some(fault.kind());
                } else {
                    peer.read_fault = Some(fault.kind());
                }
                // Interrupted is retried; any other error may end the connection.
                self.faulted |= !matches!(fault, Fault::Interrupted);
            }
            Op::Advance { ms } => {
                self.elapsed += Duration::from_millis(u64::from(ms));
                let now = self.now();
                if self.conn.deadline().is_some_and(|deadline| deadline <= now) {
                    self.conn.on_timeout(now);
                    assert!(
                        self.conn.finished().is_some(),
                        "a due timer must end the connection"
                    );
                    self.timed_out = true;
                }
            }
            Op::EarlyTimer => {
                let now = self.now();
                if self.conn.deadline().is_some_and(|deadline| deadline > now) {
                    let before = self.snapshot();
                    self.conn.on_timeout(now);
                    assert_eq!(
                        self.snapshot(),
                        before,
                        "an early timer changed the connection"
                    );
                }
            }
            Op::Answer { pick, status, pad } => {
                let status = STATUSES[usize::from(status) % STATUSES.len()];
                if self.unanswered.is_empty() {
                    // A seq never issued (or long answered) is ignored.
                    let before = self.snapshot();
                    let seq = self.requests.len() as u64 + u64::from(pick);
                    self.conn
                        .answer(seq, status, "application/json", answer_body(seq, 0));
                    assert_eq!(
                        self.snapshot(),
                        before,
                        "a stray answer changed the connection"
                    );
                    return;
                }
                let index = usize::from(pick) % self.unanswered.len();
                let seq = self.unanswered.remove(index);
                self.give_answer(seq, status, usize::from(pad));
            }
            Op::StopReading => {
                self.stopped_by_script = true;
                self.requests_at_stop.get_or_insert(self.requests.len());
                self.conn.stop_reading();
            }
        }
    }

    fn give_answer(&mut self, seq: u64, status: u16, pad: usize) {
        let body = answer_body(seq, pad);
        self.answers.insert(seq, (status, body.clone()));
        self.conn.answer(seq, status, "application/json", body);
        // A second answer for the same request is ignored.
        self.conn
            .answer(seq, 500, "application/json", answer_body(seq + 1, 0));
        let now = self.now();
        self.conn.flush(now);
    }

    /// A readiness event, serviced as the event loop does.
    fn event(&mut self, readable: bool, writable: bool) {
        self.conn.on_ready(readable, writable);
        self.service();
    }

    /// Services the connection as the event loop does after an event: rounds of read, handle
    /// and write; then, while `wants_service()` says readiness is left over (edge-triggered
    /// readiness will not announce it again), further rounds in the loop's next iterations.
    /// Each of those must make progress or use the readiness up, or the loop would spin.
    fn service(&mut self) {
        self.service_rounds();
        for _ in 0..MAX_REQUEUES {
            let edge = std::mem::take(&mut self.peer().edge);
            if edge {
                self.conn.on_ready(true, false);
            } else if !self.conn.wants_service() {
                return;
            }
            let before = (self.requests.len(), self.snapshot());
            self.service_rounds();
            // A round may only find the readiness used up (the capped round before ended
            // exactly at the socket's limit, so no WouldBlock was seen): that consumes it.
            // Spinning is asking to be serviced again without having moved.
            assert!(
                edge || (self.requests.len(), self.snapshot()) != before
                    || !self.conn.wants_service(),
                "wants_service() without progress: the event loop would spin"
            );
        }
    }

    fn service_rounds(&mut self) {
        for _ in 0..MAX_SERVICE_ROUNDS {
            let now = self.now();
            let mut parsed = Vec::new();
            let context = ReadContext {
                clock: Clock {
                    now,
                    unix_secs: UNIX_SECS,
                },
                jwt_secret: self.secret.as_ref(),
                // As if this were the only connection: its own debt is the total.
                unsent_answer_bytes: self.conn.unsent_answer_bytes(),
            };
            // The event loop skips finished connections; calling anyway checks they stay quiet.
            self.conn.read_requests(context, &mut parsed);
            let progressed = !parsed.is_empty();
            for request in parsed {
                self.on_request(request);
            }
            self.conn.flush(now);
            self.check();
            if !progressed {
                break;
            }
        }
    }

    fn on_request(&mut self, request: ParsedRequest) {
        assert!(
            !self.conn.is_refusing(),
            "a connection over --max-connections handed on {:?}",
            request.head
        );
        let seq = request.seq;
        assert_eq!(seq, self.requests.len() as u64, "requests out of sequence");
        assert!(request.head.head_bytes <= self.limits.max_head_bytes);
        assert!(request.body.len() <= self.limits.max_body_bytes);
        if let Some(at_stop) = self.requests_at_stop {
            // The request whose body was being read may complete; no new one may start.
            assert!(
                seq <= at_stop as u64,
                "request {seq} read after stop_reading() (at {at_stop} requests)"
            );
        }
        let Some(expected) = self.expected.requests.get(self.requests.len()) else {
            panic!("request {seq} not in the stream: {:?}", request.head);
        };
        assert_eq!(request.head, expected.head, "request {seq} head");
        let refused = matches!(request.auth, Auth::Refused(_));
        assert_eq!(
            refused, expected.refused,
            "request {seq}: {:?}",
            request.auth
        );
        if refused {
            assert!(
                request.body.is_empty() || request.body == expected.body,
                "refused request {seq}: a body beyond what came with its head"
            );
        } else {
            assert_eq!(request.body, expected.body, "request {seq} body");
        }
        if self.secret.is_none() {
            assert_eq!(
                request.auth,
                Auth::Open,
                "request {seq}: no secret, no check"
            );
        }
        self.refused.push(refused);
        self.requests.push(request.head);
        self.unanswered.push(seq);
    }

    /// Everything a no-op must leave as it was.
    fn snapshot(&mut self) -> (Option<CloseReason>, usize, Option<Instant>, usize, usize) {
        let pending = self.conn.pending_answers();
        let finished = self.conn.finished();
        let deadline = self.conn.deadline();
        let peer = self.peer();
        (finished, pending, deadline, peer.written.len(), peer.read)
    }

    /// Invariants that hold after every step.
    fn check(&mut self) {
        let pending = self.conn.pending_answers();
        assert!(
            pending <= MAX_PIPELINED_REQUESTS + MAX_EXTRA_SLOTS,
            "{pending} answers pending, more than MAX_PIPELINED_REQUESTS ({MAX_PIPELINED_REQUESTS}) + {MAX_EXTRA_SLOTS}"
        );
        let finished = self.conn.finished().is_some();
        if finished {
            assert_eq!(
                self.conn.deadline(),
                None,
                "a finished connection has no deadline"
            );
        }
        let peer = self.peer();
        let io = (
            peer.read_calls,
            peer.write_calls,
            peer.read,
            peer.written.len(),
        );
        match self.at_finish {
            Some(at_finish) => assert_eq!(io, at_finish, "socket used after finished()"),
            None if finished => self.at_finish = Some(io),
            None => {}
        }
    }

    /// The peer turns cooperative: sends everything, reads everything; every request read is
    /// answered, in order.
    fn drain(&mut self) {
        let peer = self.peer();
        peer.sent = peer.stream.len();
        peer.read_size = usize::MAX;
        peer.window = usize::MAX;
        peer.write_size = usize::MAX;
        peer.read_fault = None;
        peer.write_fault = None;
        // One edge announces everything the peer now sends and all the room it gives; after it,
        // only answers (which the loop follows with a round) and left-over readiness drive the
        // connection, as with edge-triggered readiness.
        self.conn.on_ready(true, true);
        for _ in 0..MAX_DRAIN_ROUNDS {
            let before = (self.requests.len(), self.snapshot());
            self.service();
            for seq in std::mem::take(&mut self.unanswered) {
                self.give_answer(seq, 200, 0);
            }
            self.check();
            if (self.requests.len(), self.snapshot()) == before {
                break;
            }
        }
    }

    /// What the peer received, and whether the connection did all it had to.
    fn check_end(&mut self) {
        let finished = self.conn.finished();
        let written = std::mem::take(&mut self.peer().written);
        let responses = parse_responses(&written, &self.requests);
        if self.conn.is_refusing() {
            self.check_end_refusing(finished, &responses);
            return;
        }

        let mut next_seq = 0;
        let mut continues = 0;
        let mut reject = None;
        let mut last_allowed = None;
        for (index, response) in responses.complete.iter().enumerate() {
            if response.status == 100 {
                assert!(response.body.is_empty());
                assert!(last_allowed.is_none(), "100 Continue after the last answer");
                continues += 1;
                continue;
            }
            assert!(reject.is_none(), "a response after the error answer");
            if response.body.starts_with(ANSWER_PREFIX) || response.head_only {
                let Some((status, body)) = self.answers.get(&next_seq) else {
                    panic!("answer {next_seq} written but never given");
                };
                if response.head_only {
                    assert_eq!(response.length, body.len(), "HEAD answer {next_seq} length");
                } else {
                    assert_eq!(response.body, *body, "answers out of order at {next_seq}");
                }
                assert_eq!(response.status, *status);
                let head = &self.requests[next_seq as usize];
                let close_header = head.version == Version::Http11 && !head.keep_alive;
                assert_eq!(
                    response.close, close_header,
                    "Connection: close of {next_seq}"
                );
                next_seq += 1;
                if !head.keep_alive {
                    last_allowed = Some(index);
                }
            } else {
                assert!(response.close, "an error answer must close the connection");
                assert!(
                    response.status >= 400,
                    "error answer status {}",
                    response.status
                );
                reject = Some(response.status);
                last_allowed = Some(index);
            }
            if let Some(last) = last_allowed {
                assert!(
                    index == last
                        && index + 1 == responses.complete.len()
                        && responses.leftover == 0,
                    "bytes after the answer that closes the connection"
                );
            }
        }
        // A request refused for want of a token is never invited to send its body.
        let expect_continues = self
            .requests
            .iter()
            .zip(&self.refused)
            .filter(|(h, refused)| h.expect_continue && !**refused)
            .count();
        assert!(
            continues <= expect_continues + 1,
            "{continues} 100 Continue"
        );

        let ended_cleanly = matches!(
            finished,
            None | Some(CloseReason::Done | CloseReason::PeerClosed)
        );
        if ended_cleanly {
            assert_eq!(
                responses.leftover, 0,
                "a partial response on a clean connection"
            );
        }
        if finished.is_none() {
            assert_eq!(
                self.conn.pending_answers(),
                0,
                "answers left after the final delivery"
            );
            assert_eq!(
                next_seq as usize,
                self.requests.len(),
                "answers not written"
            );
        }
        let whole_stream =
            !self.stopped_by_script && !self.faulted && !self.timed_out && !self.closed_early;
        if whole_stream && matches!(finished, None | Some(CloseReason::Done)) {
            assert_eq!(
                self.requests.len(),
                self.expected.requests.len(),
                "complete requests left unread"
            );
            assert_eq!(
                next_seq as usize,
                self.requests.len(),
                "answers not written"
            );
            if reject != self.expected.reject_status {
                assert!(
                    reject.is_some() && reject == self.expected.alternative_reject_status,
                    "error answer {reject:?}, expected {:?}",
                    self.expected.reject_status
                );
            }
        }
    }
}

impl Run {
    /// A connection over `--max-connections`: one error answer at most, then closed; never
    /// open past `REFUSAL_HEAD_WAIT`.
    fn check_end_refusing(&mut self, finished: Option<CloseReason>, responses: &Responses) {
        assert!(responses.complete.len() <= 1, "more than one answer");
        if let Some(answer) = responses.complete.first() {
            assert!(answer.close, "the refusal closes the connection");
            let head_error = self
                .expected
                .reject_status
                .filter(|_| self.expected.requests.is_empty());
            assert!(
                answer.status == 503
                    || Some(answer.status) == head_error
                    || Some(answer.status) == self.expected.alternative_reject_status,
                "refusal status {}",
                answer.status
            );
        }
        match finished {
            Some(_) => {}
            None => {
                let deadline = self
                    .conn
                    .deadline()
                    .expect("a refusing connection has a deadline");
                assert!(deadline <= self.t0 + REFUSAL_HEAD_WAIT);
            }
        }
    }
}

fn answer_body(seq: u64, pad: usize) -> Vec<u8> {
    let mut body = format!("{{\"seq\":{seq},\"pad\":\"").into_bytes();
    body.resize(body.len() + pad * PAD_UNIT_BYTES, b'x');
    body.extend_from_slice(b"\"}");
    body
}

/// Reads the stream independently: each complete request, and the error that ends them, if any.
fn expected(stream: &[u8], limits: Limits, secret: Option<&Secret>) -> Expected {
    let mut requests = Vec::new();
    let mut rest = stream;
    let mut alternative_reject_status = None;
    let reject_status = loop {
        if rest.is_empty() {
            break None;
        }
        let head = match parse_request_head(rest, limits.max_head_bytes) {
            Ok(Some(head)) => head,
            Ok(None) => break None,
            Err(error) => {
                let within_limit = &rest[..rest.len().min(limits.max_head_bytes)];
                if parse_request_head(within_limit, limits.max_head_bytes)
                    == Err(HeadError::TooLarge)
                {
                    alternative_reject_status = Some(HeadError::TooLarge.status());
                }
                break Some(error.status());
            }
        };
        rest = &rest[head.head_bytes..];
        // With a secret, every request needs a token but a body-less GET or HEAD, and one
        // without a valid one ends the connection's reading at its head.
        let needs_token = !(matches!(head.method, RequestMethod::Get | RequestMethod::Head)
            && head.framing == Framing::Empty);
        if let Some(secret) = secret
            && needs_token
            && jwt::verify(head.authorization.as_deref(), secret, UNIX_SECS).is_err()
        {
            let body = match head.framing {
                Framing::Length(n) if n <= limits.max_body_bytes as u64 => {
                    rest.get(..n as usize).unwrap_or_default().to_vec()
                }
                _ => Vec::new(),
            };
            let head = RequestHead {
                keep_alive: false,
                ..head
            };
            requests.push(ExpectedRequest {
                head,
                body,
                refused: true,
            });
            break None;
        }
        if let Framing::Length(n) = head.framing
            && n > limits.max_body_bytes as u64
        {
            break Some(413);
        }
        let mut reader = BodyReader::new(head.framing, limits.max_body_bytes);
        let mut body = Vec::new();
        match reader.feed(rest, &mut body) {
            Ok(progress) if progress.done => rest = &rest[progress.consumed..],
            Ok(_) => break None,
            Err(error) => break Some(error.status()),
        }
        let keep_alive = head.keep_alive;
        requests.push(ExpectedRequest {
            head,
            body,
            refused: false,
        });
        if !keep_alive {
            break None;
        }
    };
    Expected {
        requests,
        reject_status,
        alternative_reject_status,
    }
}

/// A response the peer received.
struct Response {
    status: u16,
    close: bool,
    body: Vec<u8>,
    /// The answer to a `HEAD` request: `Content-Length` announces a body that is not sent.
    head_only: bool,
    /// The `Content-Length` value.
    length: usize,
}

/// The responses in `written`, and how many bytes after them do not form a complete one.
struct Responses {
    complete: Vec<Response>,
    leftover: usize,
}

/// `requests` are the requests read, in order: answers to `HEAD` carry no body.
fn parse_responses(written: &[u8], requests: &[RequestHead]) -> Responses {
    let mut complete = Vec::new();
    let mut rest = written;
    let mut answered = 0;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let head_bytes = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => break,
            Err(error) => panic!("the connection wrote a malformed response: {error}"),
        };
        let status = response.code.expect("complete response has a status");
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| std::str::from_utf8(h.value).expect("header is text"))
        };
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let length: usize = match header("content-length") {
            Some(value) => value.parse().expect("Content-Length is a number"),
            None => {
                assert_eq!(status, 100, "a final answer without Content-Length");
                0
            }
        };
        let head_only = status != 100
            && requests
                .get(answered)
                .is_some_and(|r| r.method == RequestMethod::Head);
        let sent = if head_only { 0 } else { length };
        let Some(body) = rest.get(head_bytes..head_bytes + sent) else {
            break;
        };
        if status != 100 {
            answered += 1;
        }
        complete.push(Response {
            status,
            close,
            body: body.to_vec(),
            head_only,
            length,
        });
        rest = &rest[head_bytes + sent..];
    }
    Responses {
        complete,
        leftover: rest.len(),
    }
}
