//! One beacon-node connection (or nginx, or a chained proxy): reads pipelined HTTP/1.x requests
//! and writes their answers back in order.
//!
//! A state machine over a non-blocking socket. It frames requests (length, chunked,
//! `100-continue`), enforces the size limits and slowloris timeouts, and keeps one slot per
//! request so answers that arrive out of order still leave in order. It does not look inside
//! bodies or decide answers: the event loop hands complete requests on and fills the slots.
//!
//! With `--jwt-secret` the token is verified as soon as the head is parsed, with the clock the
//! caller passes in: a request without a valid one is handed on at once, marked refused, with
//! its body unread (no `100 Continue`, nothing buffered) and the connection closing after the
//! answer. A peer without the secret can make the proxy hold no more than a head.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::http::body::BodyReader;
use crate::http::head::{Framing, RequestHead, RequestMethod, Version, parse_request_head};
use crate::http::write::{CONTINUE, JSON, response_head};
use crate::jwt::{self, Claims, Secret, VerifyError};
use crate::net::{self, InputBuffer, MAX_BODY_RESERVATION_BYTES, MAX_IO_ROUNDS};
use crate::rpc;
use crate::time::Clock;

/// How long a connection over `--max-connections` has to send its request head before it is
/// closed unanswered. Clients write their request right after connecting, so a second is plenty
/// to tell them `503`, and short enough that holding the connection costs next to nothing.
pub const REFUSAL_HEAD_WAIT: Duration = Duration::from_secs(1);

/// Most connections over `--max-connections` held at once to be answered `503`; beyond them a
/// connection is closed at once, unanswered. Each holds at most one read buffer (16 KiB plus a
/// head) for a second: 64 of them are about 1 MiB, and 64 a second is far beyond any burst of
/// real beacon nodes retrying.
pub const MAX_REFUSING_CONNECTIONS: usize = 64;

/// Most answer bytes a connection may owe its peer, unsent, and still have its next request
/// read. A beacon node reads each answer before it sends its next request, so it never comes
/// near this; a peer that pipelines requests and reads nothing stops being read once it owes two
/// full-size answers (a `getPayload` with blobs is about 2 MB). Backpressure, not an error.
pub const MAX_UNSENT_ANSWER_BYTES_PER_CONNECTION: usize = 4 * 1024 * 1024;

/// Most requests read ahead of their answers on one connection. Beacon nodes send one at a
/// time; nginx may pipeline a few. Beyond this the connection stops being read (backpressure).
pub const MAX_PIPELINED_REQUESTS: usize = 16;

/// Limits and timeouts of beacon-node connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request head.
    pub max_head_bytes: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time for a head to arrive once its first byte has.
    pub header_timeout: Duration,
    /// Time for a body to arrive after its head.
    pub body_timeout: Duration,
    /// Time an idle connection is kept, and a stalled write is waited for.
    pub idle_timeout: Duration,
    /// `--max-unsent-answer-bytes`: while all connections together owe more answer bytes than
    /// this, none of them has a new request read.
    pub max_unsent_answer_bytes: usize,
}

/// What reading needs from outside the connection, passed in with each call.
#[derive(Clone, Copy, Debug)]
pub struct ReadContext<'a> {
    /// The loop's clock: `now` for timeouts, Unix seconds for the freshness of tokens.
    pub clock: Clock,
    /// `--jwt-secret`: tokens in request heads are verified with it.
    pub jwt_secret: Option<&'a Secret>,
    /// Answer bytes all beacon-node connections owe their peers, unsent (see [`AnswerBudget`]).
    pub unsent_answer_bytes: usize,
}

/// The answer bytes all beacon-node connections owe their peers, against
/// `--max-unsent-answer-bytes`, recounted by the event loop once per iteration.
///
/// Over the bound no connection has a new request read (each [`Inbound`] is told the total in
/// its [`ReadContext`]). Answers to requests read before can still push the total beyond it
/// (each connection may have [`MAX_PIPELINED_REQUESTS`] under way, and answers run to
/// `--max-body`), so beyond the bound the connections owing most are closed, their peers being
/// the ones not reading: memory stays bounded by the bound plus what one loop iteration brings.
#[derive(Clone, Copy, Debug)]
pub struct AnswerBudget {
    max_bytes: usize,
    unsent_bytes: usize,
}

/// What a recount of the [`AnswerBudget`] asks of the event loop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recount {
    /// Connections (by key) to close, largest debt first: the rest then fit the bound.
    pub shed: Vec<usize>,
    /// The total fell back within the bound: connections held back may read again, and
    /// edge-triggered readiness will not tell them.
    pub resumed: bool,
}

impl AnswerBudget {
    /// A budget of `max_bytes` with nothing owed yet.
    pub fn new(max_bytes: usize) -> AnswerBudget {
        AnswerBudget {
            max_bytes,
            unsent_bytes: 0,
        }
    }

    /// The total as last counted.
    pub fn unsent_bytes(&self) -> usize {
        self.unsent_bytes
    }

    /// Counts again from each connection's key and [`Inbound::unsent_answer_bytes`].
    pub fn recount(&mut self, owed: impl IntoIterator<Item = (usize, usize)>) -> Recount {
        let was_over = self.unsent_bytes > self.max_bytes;
        let mut debtors: Vec<(usize, usize)> = owed.into_iter().filter(|(_, b)| *b > 0).collect();
        let mut total: usize = debtors.iter().map(|(_, bytes)| bytes).sum();
        let mut shed = Vec::new();
        if total > self.max_bytes {
            debtors.sort_unstable_by_key(|&(key, bytes)| (std::cmp::Reverse(bytes), key));
            for (key, bytes) in debtors {
                if total <= self.max_bytes {
                    break;
                }
                shed.push(key);
                total -= bytes;
            }
        }
        self.unsent_bytes = total;
        Recount {
            shed,
            resumed: was_over && total <= self.max_bytes,
        }
    }
}

/// A request's credential, judged once its head arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No `--jwt-secret`, or a request that needs no token (`GET` or `HEAD` without a body).
    Open,
    /// The claims of the verified token (the `id` claim names the beacon node).
    Verified(Claims),
    /// No valid token: the body was not read and the connection closes after the answer.
    Refused(VerifyError),
}

impl Limits {
    /// The limits `config` sets.
    pub fn of(config: &crate::config::Config) -> Limits {
        Limits {
            max_head_bytes: config.max_header_bytes,
            max_body_bytes: config.max_body_bytes,
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            idle_timeout: config.idle_timeout,
            max_unsent_answer_bytes: config.max_unsent_answer_bytes,
        }
    }
}

/// A complete request read from the connection.
#[derive(Debug)]
pub struct ParsedRequest {
    /// Its place in the connection's order of answers.
    pub seq: u64,
    /// The head.
    pub head: RequestHead,
    /// The body, de-chunked. For a refused request, only a `Content-Length` body that arrived
    /// whole with the head (so its id can be echoed); otherwise empty.
    pub body: Vec<u8>,
    /// The credential.
    pub auth: Auth,
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed it.
    PeerClosed,
    /// The peer closed it in the middle of a request.
    Truncated,
    /// A socket error.
    Io(io::ErrorKind),
    /// The last answer said `Connection: close` (HTTP/1.0, an error, or the client asked).
    Done,
    /// No complete head in time (slowloris).
    HeaderTimeout,
    /// No complete body in time.
    BodyTimeout,
    /// Idle too long.
    IdleTimeout,
    /// The peer stopped reading its answers.
    WriteTimeout,
    /// The proxy is shutting down.
    Shutdown,
    /// Its peer left answers unread while all connections owed more than
    /// `--max-unsent-answer-bytes`, and it owed the most.
    AnswersUnread,
    /// Over `--max-connections`: answered `503`, or no head came within
    /// [`REFUSAL_HEAD_WAIT`].
    OverCapacity,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Truncated => f.write_str("closed by peer mid-request"),
            CloseReason::Io(kind) => write!(f, "socket error: {kind}"),
            CloseReason::Done => f.write_str("answered, connection not kept alive"),
            CloseReason::HeaderTimeout => f.write_str("request head not received in time"),
            CloseReason::BodyTimeout => f.write_str("request body not received in time"),
            CloseReason::IdleTimeout => f.write_str("idle"),
            CloseReason::WriteTimeout => f.write_str("peer stopped reading"),
            CloseReason::Shutdown => f.write_str("shutting down"),
            CloseReason::AnswersUnread => {
                f.write_str("answers left unread beyond --max-unsent-answer-bytes")
            }
            CloseReason::OverCapacity => f.write_str("over --max-connections"),
        }
    }
}

/// A beacon-node connection over a non-blocking stream (a `TcpStream` in the proxy; an
/// in-memory stream in fuzzing).
#[derive(Debug)]
pub struct Inbound<S = TcpStream> {
    stream: S,
    /// The direct peer.
    pub peer: SocketAddr,
    /// Unique for the process lifetime; tells a reused slab slot from the original.
    pub serial: u64,
    limits: Limits,
    mode: Mode,
    read: ReadState,
    buf: InputBuffer,
    slots: VecDeque<AnswerSlot>,
    next_seq: u64,
    readable: bool,
    writable: bool,
    /// The peer hung up (or the socket errored): read until end of stream, not just until a
    /// short read.
    hangup: bool,
    peer_closed: bool,
    /// Shutting down: read no request after the one under way.
    stopping: bool,
    /// All connections owed more answer bytes than the bound when last told: read no new
    /// request.
    answers_over_budget: bool,
    last_activity: Instant,
    finished: Option<CloseReason>,
}

/// Whether the connection serves requests or only refuses one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// An ordinary connection.
    Serving,
    /// Accepted over `--max-connections`: its first head is answered `503` and the connection
    /// closes; whatever happens, it is gone by `until`.
    Refusing { until: Instant },
}

/// What the reading side waits for.
#[derive(Debug)]
enum ReadState {
    /// The next request head; `started` is when its first byte came.
    Head { started: Option<Instant> },
    /// The body of `head`.
    Body {
        /// Boxed: the other states are a few bytes, and this one lasts a whole body.
        head: Box<RequestHead>,
        auth: Auth,
        reader: BodyReader,
        body: Vec<u8>,
        /// For `Content-Length` bodies: the exact size, read in place.
        expected: Option<usize>,
        deadline: Instant,
        /// A large body's socket as a `std` stream (a duplicate descriptor), made on its first
        /// in-place read and closed with the body: see [`net::InPlaceReader`].
        in_place: net::InPlaceReader,
    },
    /// No more requests on this connection (error answered, `Connection: close`, shutdown).
    Stopped,
}

/// An answer's place in the connection's order.
#[derive(Debug)]
enum AnswerSlot {
    /// Waiting for the answer to request `seq`.
    Waiting {
        seq: u64,
        version: Version,
        keep_alive: bool,
        /// A `HEAD` request: the answer's head says how long the body would be, and no body
        /// follows (RFC 9110 §9.3.2).
        head_only: bool,
    },
    /// Ready to write.
    Ready {
        head: Vec<u8>,
        body: Vec<u8>,
        written: usize,
        close: bool,
    },
}

impl<S: Read + Write + 'static> Inbound<S> {
    /// A freshly accepted connection.
    pub fn new(
        stream: S,
        peer: SocketAddr,
        serial: u64,
        limits: Limits,
        now: Instant,
    ) -> Inbound<S> {
        Inbound {
            stream,
            peer,
            serial,
            limits,
            mode: Mode::Serving,
            read: ReadState::Head { started: None },
            buf: InputBuffer::new(),
            slots: VecDeque::new(),
            next_seq: 0,
            readable: false,
            writable: false,
            hangup: false,
            peer_closed: false,
            stopping: false,
            answers_over_budget: false,
            last_activity: now,
            finished: None,
        }
    }

    /// A connection accepted over `--max-connections`: it is told `503` (a JSON-RPC error,
    /// `Connection: close`) if its request head arrives within [`REFUSAL_HEAD_WAIT`], and closed
    /// by then either way. No request of it is ever handed on.
    pub fn refusing(
        stream: S,
        peer: SocketAddr,
        serial: u64,
        limits: Limits,
        now: Instant,
    ) -> Inbound<S> {
        let mut inbound = Inbound::new(stream, peer, serial, limits, now);
        inbound.mode = Mode::Refusing {
            until: now + REFUSAL_HEAD_WAIT,
        };
        inbound
    }

    /// Whether this connection was accepted over `--max-connections` only to be refused.
    pub fn is_refusing(&self) -> bool {
        matches!(self.mode, Mode::Refusing { .. })
    }

    /// The socket, for (de)registration.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Records readiness from the poller.
    pub fn on_ready(&mut self, readable: bool, writable: bool) {
        self.readable |= readable;
        self.writable |= writable;
    }

    /// Records a readiness event: readable, writable, and whether the peer hung up (or the
    /// socket errored).
    pub fn on_event(&mut self, readable: bool, writable: bool, hangup: bool) {
        self.on_ready(readable, writable);
        if hangup {
            self.on_hangup();
        }
    }

    /// Records that the poller reported the peer's hang-up or a socket error.
    pub fn on_hangup(&mut self) {
        self.hangup = true;
        self.readable = true;
    }

    /// Why the connection is over, once it is.
    pub fn finished(&self) -> Option<CloseReason> {
        self.finished
    }

    /// Readiness is left that a capped read or write round did not use: more bytes are waiting
    /// in the socket, or room for an answer that is ready. Edge-triggered readiness will not
    /// announce them again, so the event loop must come back to this connection by itself.
    pub fn wants_service(&self) -> bool {
        if self.finished.is_some() {
            return false;
        }
        let can_read = self.readable && self.wants_read();
        let can_write =
            self.writable && matches!(self.slots.front(), Some(AnswerSlot::Ready { .. }));
        can_read || can_write
    }

    /// A request's body is arriving; at shutdown it is still read and answered.
    pub fn is_reading_body(&self) -> bool {
        self.finished.is_none() && matches!(self.read, ReadState::Body { .. })
    }

    /// Answers still owed to the peer.
    pub fn pending_answers(&self) -> usize {
        self.slots.len()
    }

    /// Bytes of answers ready for the peer and not written yet.
    pub fn unsent_answer_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|slot| match slot {
                AnswerSlot::Ready {
                    head,
                    body,
                    written,
                    ..
                } => (head.len() + body.len()).saturating_sub(*written),
                AnswerSlot::Waiting { .. } => 0,
            })
            .sum()
    }

    /// Closes the connection, answers unwritten: it owed the most while all connections owed
    /// more than `--max-unsent-answer-bytes` (see [`AnswerBudget`]).
    pub fn shed(&mut self) {
        self.finish(CloseReason::AnswersUnread);
    }

    /// Reads what the socket has and returns the requests completed by it.
    pub fn read_requests(&mut self, context: ReadContext<'_>, out: &mut Vec<ParsedRequest>) {
        let now = context.clock.now;
        self.answers_over_budget =
            context.unsent_answer_bytes > self.limits.max_unsent_answer_bytes;
        // Requests already buffered come first: answers may have freed pipeline slots since
        // they were read, and edge-triggered readiness will not announce them again.
        if self.finished.is_none() {
            self.parse(context, out);
        }
        for _ in 0..MAX_IO_ROUNDS {
            if !self.readable || !self.wants_read() {
                break;
            }
            let result = match &mut self.read {
                ReadState::Body {
                    body,
                    expected: Some(expected),
                    in_place,
                    ..
                } if self.buf.is_empty() => in_place.read_body(&mut self.stream, body, *expected),
                _ => self.buf.read_from(&mut self.stream),
            };
            match result {
                Ok(filled) if filled.bytes == 0 => {
                    self.on_eof();
                    break;
                }
                Ok(filled) => {
                    self.last_activity = now;
                    self.readable = !filled.drained || self.hangup;
                    self.parse(context, out);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.finish(CloseReason::Io(e.kind()));
                    break;
                }
            }
        }
    }

    /// Fills the slot of request `seq` with its answer.
    pub fn answer(&mut self, seq: u64, status: u16, content_type: &str, body: Vec<u8>) {
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| matches!(s, AnswerSlot::Waiting { seq: waiting, .. } if *waiting == seq))
        else {
            return;
        };
        let AnswerSlot::Waiting {
            version,
            keep_alive,
            head_only,
            ..
        } = *slot
        else {
            return;
        };
        *slot = AnswerSlot::Ready {
            head: response_head(version, status, content_type, body.len(), keep_alive),
            body: if head_only { Vec::new() } else { body },
            written: 0,
            close: !keep_alive,
        };
    }

    /// Writes whatever answers are ready, in order.
    pub fn flush(&mut self, now: Instant) {
        for _ in 0..MAX_IO_ROUNDS {
            if !self.writable || self.finished.is_some() {
                return;
            }
            let Some(AnswerSlot::Ready {
                head,
                body,
                written,
                close,
            }) = self.slots.front_mut()
            else {
                break;
            };
            let total = head.len() + body.len();
            let result = if *written < head.len() {
                let bufs = [IoSlice::new(&head[*written..]), IoSlice::new(body)];
                self.stream.write_vectored(&bufs)
            } else {
                self.stream.write(&body[*written - head.len()..])
            };
            match result {
                Ok(n) => {
                    *written += n;
                    self.last_activity = now;
                    if *written >= total {
                        let close = *close;
                        self.slots.pop_front();
                        if close {
                            self.finish(CloseReason::Done);
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.finish(CloseReason::Io(e.kind()));
                    return;
                }
            }
        }
        if self.peer_closed && self.slots.is_empty() {
            self.finish(CloseReason::PeerClosed);
        }
    }

    /// Stops reading new requests; closes at once if nothing is owed.
    pub fn stop_reading(&mut self) {
        // A request whose body is arriving is still read and answered; nothing after it.
        self.stopping = true;
        if matches!(self.read, ReadState::Head { .. }) {
            self.read = ReadState::Stopped;
        }
        if self.slots.is_empty() && matches!(self.read, ReadState::Stopped) {
            self.finish(CloseReason::Shutdown);
        }
    }

    /// When this connection next needs attention by itself.
    pub fn deadline(&self) -> Option<Instant> {
        if self.finished.is_some() {
            return None;
        }
        if let Mode::Refusing { until } = self.mode {
            return Some(until);
        }
        if matches!(self.slots.front(), Some(AnswerSlot::Ready { .. })) {
            return Some(self.last_activity + self.limits.idle_timeout);
        }
        match &self.read {
            ReadState::Head {
                started: Some(started),
            } => Some(*started + self.limits.header_timeout),
            ReadState::Body { deadline, .. } => Some(*deadline),
            ReadState::Head { started: None } | ReadState::Stopped if self.slots.is_empty() => {
                Some(self.last_activity + self.limits.idle_timeout)
            }
            // Waiting for answers: the exchanges' own deadlines bound that.
            ReadState::Head { started: None } | ReadState::Stopped => None,
        }
    }

    /// A deadline passed: answer `408` to a half-read request, or close.
    pub fn on_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        if self.is_refusing() {
            self.finish(CloseReason::OverCapacity);
            return;
        }
        if matches!(self.slots.front(), Some(AnswerSlot::Ready { .. })) {
            self.finish(CloseReason::WriteTimeout);
            return;
        }
        match self.read {
            // The 408 is written if the socket takes it now; the connection closes either way,
            // and the timeout (not the answer) is why.
            ReadState::Head { started: Some(_) } => {
                self.reject(
                    408,
                    rpc::code::INVALID_REQUEST,
                    "request head not received in time",
                );
                self.flush(now);
                self.finished = Some(CloseReason::HeaderTimeout);
            }
            ReadState::Body { .. } => {
                self.reject(
                    408,
                    rpc::code::INVALID_REQUEST,
                    "request body not received in time",
                );
                self.flush(now);
                self.finished = Some(CloseReason::BodyTimeout);
            }
            ReadState::Head { started: None } | ReadState::Stopped => {
                self.finish(CloseReason::IdleTimeout);
            }
        }
    }

    fn wants_read(&self) -> bool {
        let reading = match self.read {
            ReadState::Head { .. } => self.may_start_request(),
            ReadState::Body { .. } => self.slots.len() < MAX_PIPELINED_REQUESTS,
            ReadState::Stopped => false,
        };
        reading && self.finished.is_none() && !self.peer_closed
    }

    /// Backpressure: a new request is read only while the answers owed stay within bounds: in
    /// number, in unsent bytes on this connection, and in unsent bytes on all of them. A body
    /// under way is read to its end regardless.
    fn may_start_request(&self) -> bool {
        self.slots.len() < MAX_PIPELINED_REQUESTS
            && !self.answers_over_budget
            && self.unsent_answer_bytes() <= MAX_UNSENT_ANSWER_BYTES_PER_CONNECTION
    }

    fn finish(&mut self, reason: CloseReason) {
        if self.finished.is_none() {
            self.finished = Some(reason);
        }
    }

    fn on_eof(&mut self) {
        self.peer_closed = true;
        let mid_request = match &self.read {
            ReadState::Head { .. } => !self.buf.is_empty(),
            ReadState::Body { .. } => true,
            ReadState::Stopped => false,
        };
        if mid_request {
            self.finish(CloseReason::Truncated);
        } else if self.slots.is_empty() {
            self.finish(CloseReason::PeerClosed);
        }
        // Otherwise answers are still owed: a client may half-close after its last request.
    }

    /// Moves buffered bytes through the head and body states, completing requests.
    fn parse(&mut self, context: ReadContext<'_>, out: &mut Vec<ParsedRequest>) {
        let now = context.clock.now;
        loop {
            let may_start = self.may_start_request();
            match &mut self.read {
                ReadState::Stopped => {
                    self.buf.clear();
                    return;
                }
                ReadState::Head { started } => {
                    if self.buf.is_empty() || !may_start {
                        return;
                    }
                    started.get_or_insert(now);
                    if !self.parse_head(context, out) {
                        return;
                    }
                }
                ReadState::Body { .. } => {
                    if !self.parse_body(out) {
                        return;
                    }
                }
            }
        }
    }

    /// Parses a head from the buffer; true when the state moved on.
    fn parse_head(&mut self, context: ReadContext<'_>, out: &mut Vec<ParsedRequest>) -> bool {
        let mut head = match parse_request_head(self.buf.bytes(), self.limits.max_head_bytes) {
            Ok(Some(head)) => head,
            Ok(None) => return false,
            Err(e) => {
                self.reject(e.status(), rpc::code::INVALID_REQUEST, &e.to_string());
                return false;
            }
        };
        if self.is_refusing() {
            // Nothing of it is read further, and nothing else on this connection.
            self.reject(
                503,
                rpc::code::INTERNAL_ERROR,
                "too many connections (--max-connections): try again later",
            );
            return false;
        }
        self.buf.consume(head.head_bytes);
        let auth = authenticate(&head, context);
        if let Auth::Refused(_) = auth {
            // Handed on now, before a byte of the body is read or a `100 Continue` invites it;
            // the connection closes after the answer, so the body is never read at all.
            let whole =
                |n: u64| n <= self.buf.len() as u64 && n <= self.limits.max_body_bytes as u64;
            let body = match head.framing {
                Framing::Length(n) if whole(n) => self
                    .buf
                    .bytes()
                    .get(..n as usize)
                    .unwrap_or_default()
                    .to_vec(),
                _ => Vec::new(),
            };
            head.keep_alive = false;
            self.hand_on(head, body, auth, out);
            return true;
        }
        let expected = match head.framing {
            Framing::Length(n) if n > self.limits.max_body_bytes as u64 => {
                // Refused before reading a byte of it; the connection closes after the answer.
                self.reject(413, rpc::code::INVALID_REQUEST, "request body too large");
                return false;
            }
            // Bounded by max_body_bytes just above.
            Framing::Length(n) => Some(n as usize),
            Framing::Empty | Framing::Chunked | Framing::UntilClose => None,
        };
        if head.expect_continue && head.framing != Framing::Empty && self.buf.is_empty() {
            self.slots.push_back(AnswerSlot::Ready {
                head: CONTINUE.to_vec(),
                body: Vec::new(),
                written: 0,
                close: false,
            });
        }
        let capacity = expected.unwrap_or(0).min(MAX_BODY_RESERVATION_BYTES);
        self.read = ReadState::Body {
            reader: BodyReader::new(head.framing, self.limits.max_body_bytes),
            head: Box::new(head),
            auth,
            body: net::body_buffer(capacity),
            expected,
            deadline: context.clock.now + self.limits.body_timeout,
            in_place: net::InPlaceReader::default(),
        };
        true
    }

    /// Moves buffered bytes into the body; true when the request completed.
    fn parse_body(&mut self, out: &mut Vec<ParsedRequest>) -> bool {
        let ReadState::Body {
            reader,
            body,
            expected,
            ..
        } = &mut self.read
        else {
            return false;
        };
        let done = match expected {
            Some(expected) => {
                let take = (*expected - body.len()).min(self.buf.len());
                body.extend_from_slice(&self.buf.bytes()[..take]);
                self.buf.consume(take);
                body.len() == *expected
            }
            None => match reader.feed(self.buf.bytes(), body) {
                Ok(progress) => {
                    self.buf.consume(progress.consumed);
                    progress.done
                }
                Err(e) => {
                    let status = e.status();
                    self.reject(status, rpc::code::INVALID_REQUEST, &e.to_string());
                    return false;
                }
            },
        };
        if !done {
            return false;
        }
        let ReadState::Body {
            head, body, auth, ..
        } = std::mem::replace(&mut self.read, ReadState::Head { started: None })
        else {
            return false;
        };
        self.hand_on(*head, body, auth, out);
        true
    }

    /// Gives a complete request its slot in the order of answers and hands it on.
    fn hand_on(
        &mut self,
        head: RequestHead,
        body: Vec<u8>,
        auth: Auth,
        out: &mut Vec<ParsedRequest>,
    ) {
        self.read = if !head.keep_alive || self.stopping {
            ReadState::Stopped
        } else {
            ReadState::Head { started: None }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(AnswerSlot::Waiting {
            seq,
            version: head.version,
            keep_alive: head.keep_alive,
            head_only: head.method == RequestMethod::Head,
        });
        out.push(ParsedRequest {
            seq,
            head,
            body,
            auth,
        });
    }

    /// Answers a request that cannot be read with `status` and a JSON-RPC error (id null:
    /// the body was never read), then stops reading; the connection closes after the answer.
    fn reject(&mut self, status: u16, code: i64, message: &str) {
        let body = rpc::error_body(b"null", code, message);
        self.slots.push_back(AnswerSlot::Ready {
            head: response_head(Version::Http11, status, JSON, body.len(), false),
            body,
            written: 0,
            close: true,
        });
        self.read = ReadState::Stopped;
        self.buf.clear();
    }
}

/// Judges the token of a request whose head just arrived. With `--jwt-secret` every request
/// needs one except `GET` and `HEAD` without a body (the operator endpoints stay open, and
/// nothing else is read without a credential).
fn authenticate(head: &RequestHead, context: ReadContext<'_>) -> Auth {
    let Some(secret) = context.jwt_secret else {
        return Auth::Open;
    };
    let open = matches!(head.method, RequestMethod::Get | RequestMethod::Head)
        && head.framing == Framing::Empty;
    if open {
        return Auth::Open;
    }
    match jwt::verify(
        head.authorization.as_deref(),
        secret,
        context.clock.unix_secs,
    ) {
        Ok(claims) => Auth::Verified(claims),
        Err(error) => Auth::Refused(error),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::sim::MemoryStream as Peer;

    const LIMITS: Limits = Limits {
        max_head_bytes: 1024,
        max_body_bytes: 4096,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(120),
        max_unsent_answer_bytes: 1 << 20,
    };

    fn connection(chunks: &[&[u8]]) -> (Inbound<Peer>, Instant) {
        accepted(chunks, Inbound::new)
    }

    type Constructor = fn(Peer, SocketAddr, u64, Limits, Instant) -> Inbound<Peer>;

    /// A connection made by `constructor` whose peer has sent `chunks`, readable and writable.
    fn accepted(chunks: &[&[u8]], constructor: Constructor) -> (Inbound<Peer>, Instant) {
        let now = Instant::now();
        let peer = Peer {
            incoming: chunks.iter().map(|c| c.to_vec()).collect(),
            ..Peer::default()
        };
        let mut inbound = constructor(peer, "127.0.0.1:1".parse().unwrap(), 1, LIMITS, now);
        inbound.on_ready(true, true);
        (inbound, now)
    }

    /// Unix seconds of the fixtures' wall clock.
    const UNIX_SECS: u64 = 1_700_000_000;

    fn context(now: Instant) -> ReadContext<'static> {
        ReadContext {
            clock: Clock {
                now,
                unix_secs: UNIX_SECS,
            },
            jwt_secret: None,
            unsent_answer_bytes: 0,
        }
    }

    fn read(inbound: &mut Inbound<Peer>, now: Instant) -> Vec<ParsedRequest> {
        let mut out = Vec::new();
        inbound.read_requests(context(now), &mut out);
        out
    }

    fn secret() -> Secret {
        Secret::from_hex(&"ab".repeat(32)).unwrap()
    }

    /// Reads with `--jwt-secret` set.
    fn read_authenticated(inbound: &mut Inbound<Peer>, now: Instant) -> Vec<ParsedRequest> {
        let secret = secret();
        let mut out = Vec::new();
        let context = ReadContext {
            jwt_secret: Some(&secret),
            ..context(now)
        };
        inbound.read_requests(context, &mut out);
        out
    }

    /// Makes more bytes arrive, as a new readiness event would announce them.
    fn arrive(inbound: &mut Inbound<Peer>, bytes: &[u8]) {
        inbound.stream_mut().incoming.push_back(bytes.to_vec());
        inbound.on_ready(true, false);
    }

    fn written(inbound: &mut Inbound<Peer>) -> String {
        String::from_utf8_lossy(&inbound.stream_mut().written).into_owned()
    }

    const POST: &[u8] = b"POST /bn-1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";

    #[test]
    fn reading_head_complete_request_is_handed_on() {
        let (mut inbound, now) = connection(&[POST]);
        let requests = read(&mut inbound, now);
        assert_eq!(requests.len(), 1);
        assert_eq!(&*requests[0].head.path, "/bn-1");
        assert_eq!(requests[0].body, b"{}");
        assert_eq!(inbound.pending_answers(), 1);
    }

    #[test]
    fn reading_body_split_anywhere_completes_once() {
        for cut in 1..POST.len() {
            let (mut inbound, now) = connection(&[&POST[..cut]]);
            assert!(read(&mut inbound, now).is_empty(), "cut {cut}");
            arrive(&mut inbound, &POST[cut..]);
            assert_eq!(read(&mut inbound, now).len(), 1, "cut {cut}");
        }
    }

    /// A chunked body larger than one read budget, all of it in the socket at once (a peer that
    /// wrote while the proxy was paused): a readiness edge announces it once, so the connection
    /// must say it has more to read until the request is complete.
    #[test]
    fn reading_body_beyond_one_budget_wants_service_until_complete() {
        let body = vec![b'a'; 2_000_000];
        let mut message = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for chunk in body.chunks(4096) {
            message.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            message.extend_from_slice(chunk);
            message.extend_from_slice(b"\r\n");
        }
        message.extend_from_slice(b"0\r\n\r\n");
        let now = Instant::now();
        let peer = Peer {
            incoming: message.chunks(16 * 1024).map(<[u8]>::to_vec).collect(),
            ..Peer::default()
        };
        let limits = Limits {
            max_body_bytes: 4 << 20,
            ..LIMITS
        };
        let mut inbound = Inbound::new(peer, "127.0.0.1:1".parse().unwrap(), 1, limits, now);
        inbound.on_ready(true, false);
        let mut requests = read(&mut inbound, now);
        assert!(requests.is_empty(), "one budget does not reach the end");
        assert!(
            inbound.wants_service(),
            "bytes are left that no edge announces"
        );
        let mut rounds = 1;
        while requests.is_empty() && inbound.wants_service() && rounds < 100 {
            requests = read(&mut inbound, now);
            rounds += 1;
        }
        assert_eq!(requests.len(), 1, "complete after {rounds} rounds");
        assert_eq!(requests[0].body, body);
        assert!(rounds > 1);
    }

    #[test]
    fn waiting_answers_out_of_order_leave_in_order() {
        let (mut inbound, now) = connection(&[&[POST, POST].concat()]);
        assert_eq!(read(&mut inbound, now).len(), 2);
        inbound.answer(1, 200, JSON, b"second".to_vec());
        inbound.flush(now);
        assert_eq!(written(&mut inbound), "", "the first answer is still owed");
        inbound.answer(0, 200, JSON, b"first".to_vec());
        inbound.flush(now);
        let text = written(&mut inbound);
        let first = text.find("first").unwrap();
        let second = text.find("second").unwrap();
        assert!(first < second, "{text}");
        assert_eq!(inbound.pending_answers(), 0);
    }

    #[test]
    fn reading_head_oversized_closes_with_431() {
        let mut head = b"POST / HTTP/1.1\r\nX-Pad: ".to_vec();
        head.resize(2000, b'x');
        let (mut inbound, now) = connection(&[&head]);
        assert!(read(&mut inbound, now).is_empty());
        inbound.flush(now);
        assert!(written(&mut inbound).starts_with("HTTP/1.1 431 "));
        assert_eq!(inbound.finished(), Some(CloseReason::Done));
    }

    #[test]
    fn reading_head_declared_body_too_large_closes_with_413() {
        let (mut inbound, now) = connection(&[b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"]);
        assert!(read(&mut inbound, now).is_empty());
        inbound.flush(now);
        assert!(written(&mut inbound).starts_with("HTTP/1.1 413 "));
        assert_eq!(inbound.finished(), Some(CloseReason::Done));
    }

    #[test]
    fn reading_head_expect_continue_gets_interim_answer() {
        let (mut inbound, now) =
            connection(&[b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"]);
        assert!(read(&mut inbound, now).is_empty());
        inbound.flush(now);
        assert_eq!(written(&mut inbound), "HTTP/1.1 100 Continue\r\n\r\n");
        arrive(&mut inbound, b"{}");
        assert_eq!(read(&mut inbound, now).len(), 1);
    }

    /// Issue 11, item 1: six peers without the secret each sending 98 MB pinned 600 MB before
    /// their 401s. The head alone decides now, and nothing of the body is read.
    #[test]
    fn reading_head_without_token_is_refused_before_its_body() {
        let head = b"POST / HTTP/1.1\r\nContent-Length: 4000\r\n\r\n";
        let (mut inbound, now) = connection(&[head]);
        let requests = read_authenticated(&mut inbound, now);
        assert_eq!(requests.len(), 1, "handed on at the head");
        assert_eq!(requests[0].auth, Auth::Refused(VerifyError::Missing));
        assert!(requests[0].body.is_empty());
        assert!(
            !requests[0].head.keep_alive,
            "the connection closes after the answer"
        );
        arrive(&mut inbound, &[b'x'; 4000]);
        assert!(read_authenticated(&mut inbound, now).is_empty());
        assert_eq!(
            inbound.stream_mut().incoming.len(),
            1,
            "the body is never read"
        );
        inbound.answer(0, 401, JSON, b"{}".to_vec());
        inbound.flush(now);
        let text = written(&mut inbound);
        assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert_eq!(inbound.finished(), Some(CloseReason::Done));
    }

    #[test]
    fn reading_head_expect_continue_without_token_gets_no_interim_answer() {
        let (mut inbound, now) = connection(&[
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n",
        ]);
        let requests = read_authenticated(&mut inbound, now);
        assert_eq!(requests.len(), 1);
        assert!(matches!(requests[0].auth, Auth::Refused(_)));
        inbound.flush(now);
        assert_eq!(written(&mut inbound), "", "no 100 Continue");
        inbound.answer(0, 401, JSON, b"{}".to_vec());
        inbound.flush(now);
        assert!(written(&mut inbound).starts_with("HTTP/1.1 401 "));
    }

    #[test]
    fn reading_head_refused_small_body_in_the_buffer_is_kept_for_its_id() {
        let (mut inbound, now) = connection(&[POST]);
        let requests = read_authenticated(&mut inbound, now);
        assert!(matches!(requests[0].auth, Auth::Refused(_)));
        assert_eq!(requests[0].body, b"{}");
    }

    #[test]
    fn reading_head_valid_token_reads_the_body_with_its_claims() {
        let bearer = jwt::Signer::with_id(secret(), "bn-7")
            .bearer(UNIX_SECS)
            .to_owned();
        let message = format!(
            "POST / HTTP/1.1\r\nAuthorization: {bearer}\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        );
        let (mut inbound, now) = connection(&[message.as_bytes()]);
        assert!(read_authenticated(&mut inbound, now).is_empty());
        inbound.flush(now);
        assert_eq!(written(&mut inbound), "HTTP/1.1 100 Continue\r\n\r\n");
        arrive(&mut inbound, b"{}");
        let requests = read_authenticated(&mut inbound, now);
        let Auth::Verified(claims) = &requests[0].auth else {
            panic!("{:?}", requests[0].auth);
        };
        assert_eq!(claims.id.as_deref(), Some("bn-7"));
        assert_eq!(requests[0].body, b"{}");
        assert!(requests[0].head.keep_alive);
    }

    #[test]
    fn reading_head_get_needs_a_token_only_with_a_body() {
        let (mut inbound, now) = connection(&[b"GET /status HTTP/1.1\r\n\r\n"]);
        assert_eq!(read_authenticated(&mut inbound, now)[0].auth, Auth::Open);
        let (mut inbound, now) =
            connection(&[b"GET /status HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"]);
        assert!(matches!(
            read_authenticated(&mut inbound, now)[0].auth,
            Auth::Refused(_)
        ));
        let (mut inbound, now) = connection(&[b"PUT / HTTP/1.1\r\n\r\n"]);
        assert!(matches!(
            read_authenticated(&mut inbound, now)[0].auth,
            Auth::Refused(_)
        ));
    }

    fn refusing(chunks: &[&[u8]]) -> (Inbound<Peer>, Instant) {
        accepted(chunks, Inbound::refusing)
    }

    /// Issue 11, item 9: a connection over `--max-connections` used to be reset; now its first
    /// head is told `503` with a JSON-RPC error, and nothing of it reaches the handler.
    #[test]
    fn refusing_head_is_answered_503_and_closes() {
        let (mut inbound, now) = refusing(&[POST]);
        assert!(inbound.is_refusing());
        assert!(read(&mut inbound, now).is_empty(), "never handed on");
        inbound.flush(now);
        let text = written(&mut inbound);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.contains("\"code\":-32603"), "{text}");
        assert!(text.contains("--max-connections"), "{text}");
        assert_eq!(inbound.finished(), Some(CloseReason::Done));
    }

    #[test]
    fn refusing_head_split_anywhere_is_answered_once() {
        for cut in 1..POST.len() {
            let (mut inbound, now) = refusing(&[&POST[..cut]]);
            assert!(read(&mut inbound, now).is_empty());
            arrive(&mut inbound, &POST[cut..]);
            assert!(read(&mut inbound, now).is_empty());
            inbound.flush(now);
            assert_eq!(written(&mut inbound).matches("503").count(), 1, "cut {cut}");
        }
    }

    #[test]
    fn refusing_silence_closes_after_the_head_wait() {
        let (mut inbound, now) = refusing(&[b"POST / HT"]);
        assert!(read(&mut inbound, now).is_empty());
        assert_eq!(inbound.deadline(), Some(now + REFUSAL_HEAD_WAIT));
        inbound.on_timeout(now + REFUSAL_HEAD_WAIT - Duration::from_millis(1));
        assert_eq!(inbound.finished(), None);
        inbound.on_timeout(now + REFUSAL_HEAD_WAIT);
        assert_eq!(inbound.finished(), Some(CloseReason::OverCapacity));
        assert_eq!(written(&mut inbound), "", "no answer without a head");
    }

    #[test]
    fn refusing_answer_the_peer_does_not_read_is_dropped_at_the_head_wait() {
        let (mut inbound, now) = refusing(&[POST]);
        inbound.stream_mut().window = 1;
        inbound.on_ready(true, false);
        assert!(read(&mut inbound, now).is_empty());
        assert_eq!(inbound.deadline(), Some(now + REFUSAL_HEAD_WAIT));
        inbound.on_timeout(now + REFUSAL_HEAD_WAIT);
        assert_eq!(inbound.finished(), Some(CloseReason::OverCapacity));
    }

    #[test]
    fn reading_head_timeout_answers_408_and_closes() {
        let (mut inbound, now) = connection(&[b"POST / HTTP/1.1\r\nX-Slow"]);
        assert!(read(&mut inbound, now).is_empty());
        let deadline = inbound.deadline().unwrap();
        assert_eq!(deadline, now + LIMITS.header_timeout);
        inbound.on_timeout(deadline - Duration::from_millis(1));
        assert_eq!(inbound.finished(), None, "early timers change nothing");
        inbound.on_timeout(deadline);
        assert!(written(&mut inbound).starts_with("HTTP/1.1 408 "));
        assert_eq!(inbound.finished(), Some(CloseReason::HeaderTimeout));
    }

    #[test]
    fn idle_timeout_closes_quietly() {
        let (mut inbound, now) = connection(&[]);
        assert!(read(&mut inbound, now).is_empty());
        inbound.on_timeout(now + LIMITS.idle_timeout);
        assert_eq!(inbound.finished(), Some(CloseReason::IdleTimeout));
        assert_eq!(written(&mut inbound), "");
    }

    #[test]
    fn http10_request_is_answered_then_closed() {
        let (mut inbound, now) = connection(&[b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"]);
        assert_eq!(read(&mut inbound, now).len(), 1);
        inbound.answer(0, 200, JSON, b"ok".to_vec());
        inbound.flush(now);
        assert!(written(&mut inbound).starts_with("HTTP/1.1 200 OK\r\n"));
        assert_eq!(inbound.finished(), Some(CloseReason::Done));
    }

    #[test]
    fn peer_half_close_after_request_still_gets_its_answer() {
        let (mut inbound, now) = connection(&[POST]);
        inbound.stream_mut().closed = true;
        inbound.on_hangup();
        assert_eq!(read(&mut inbound, now).len(), 1);
        assert_eq!(inbound.finished(), None, "an answer is owed");
        inbound.answer(0, 200, JSON, b"ok".to_vec());
        inbound.flush(now);
        assert!(written(&mut inbound).ends_with("ok"));
        assert_eq!(inbound.finished(), Some(CloseReason::PeerClosed));
    }

    #[test]
    fn peer_close_mid_request_is_truncated() {
        let (mut inbound, now) = connection(&[&POST[..20]]);
        inbound.stream_mut().closed = true;
        inbound.on_hangup();
        assert!(read(&mut inbound, now).is_empty());
        assert_eq!(inbound.finished(), Some(CloseReason::Truncated));
    }

    #[test]
    fn pipelined_requests_beyond_the_bound_wait_in_the_buffer() {
        let many: Vec<u8> = POST.repeat(MAX_PIPELINED_REQUESTS + 4);
        let (mut inbound, now) = connection(&[&many]);
        assert_eq!(read(&mut inbound, now).len(), MAX_PIPELINED_REQUESTS);
        inbound.answer(0, 200, JSON, b"a".to_vec());
        inbound.flush(now);
        // No new readiness: the buffered requests are parsed as slots free up.
        assert_eq!(read(&mut inbound, now).len(), 1);
    }

    /// Issue 11, item 2: a peer that pipelines requests and reads no answer stops being read
    /// once it owes more than its share, and is read again once it catches up.
    #[test]
    fn pipelined_requests_wait_while_this_connection_owes_too_many_bytes() {
        let (mut inbound, now) = connection(&[&POST.repeat(3)]);
        inbound.stream_mut().window = 1;
        let read_first = read(&mut inbound, now).len();
        assert_eq!(read_first, 3);
        inbound.writable = false;
        inbound.answer(
            0,
            200,
            JSON,
            vec![b'a'; MAX_UNSENT_ANSWER_BYTES_PER_CONNECTION + 1],
        );
        arrive(&mut inbound, POST);
        assert!(
            read(&mut inbound, now).is_empty(),
            "owes more than its share"
        );
        assert!(
            !inbound.wants_service(),
            "nothing to do until the peer reads"
        );
        assert!(inbound.unsent_answer_bytes() > MAX_UNSENT_ANSWER_BYTES_PER_CONNECTION);
        inbound.stream_mut().window = 0;
        inbound.on_ready(false, true);
        inbound.flush(now);
        assert_eq!(inbound.unsent_answer_bytes(), 0);
        assert!(inbound.wants_service());
        assert_eq!(read(&mut inbound, now).len(), 1, "read again once written");
    }

    #[test]
    fn reading_head_waits_while_all_connections_owe_too_many_bytes() {
        let (mut inbound, now) = connection(&[POST]);
        let mut out = Vec::new();
        let over = ReadContext {
            unsent_answer_bytes: LIMITS.max_unsent_answer_bytes + 1,
            ..context(now)
        };
        inbound.read_requests(over, &mut out);
        assert!(out.is_empty(), "no new request while over the budget");
        assert!(
            !inbound.wants_service(),
            "the loop wakes it when the budget frees"
        );
        let at_bound = ReadContext {
            unsent_answer_bytes: LIMITS.max_unsent_answer_bytes,
            ..context(now)
        };
        inbound.read_requests(at_bound, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn reading_body_under_way_completes_over_the_budget() {
        let (mut inbound, now) = connection(&[&POST[..POST.len() - 1]]);
        assert!(read(&mut inbound, now).is_empty());
        arrive(&mut inbound, &POST[POST.len() - 1..]);
        let mut out = Vec::new();
        let over = ReadContext {
            unsent_answer_bytes: usize::MAX,
            ..context(now)
        };
        inbound.read_requests(over, &mut out);
        assert_eq!(out.len(), 1, "a body under way is read to its end");
    }

    #[test]
    fn answer_budget_sheds_the_largest_debtors_until_the_rest_fit() {
        let mut budget = AnswerBudget::new(100);
        let recount = budget.recount([(1, 40), (2, 0), (3, 50)]);
        assert_eq!(recount, Recount::default());
        assert_eq!(budget.unsent_bytes(), 90);
        let recount = budget.recount([(1, 40), (2, 30), (3, 80), (4, 80)]);
        assert_eq!(recount.shed, [3, 4], "largest first, ties by key");
        assert!(!recount.resumed, "it was within the bound before");
        assert_eq!(budget.unsent_bytes(), 70);
        // Over the bound between recounts (answers arrived): reading resumes once it fits.
        budget.unsent_bytes = 150;
        let recount = budget.recount([(1, 40)]);
        assert!(recount.shed.is_empty() && recount.resumed);
        assert_eq!(budget.recount([(1, 40)]), Recount::default());
    }

    #[test]
    fn shed_connection_closes_with_its_answers_unwritten() {
        let (mut inbound, now) = connection(&[POST]);
        assert_eq!(read(&mut inbound, now).len(), 1);
        inbound.shed();
        assert_eq!(inbound.finished(), Some(CloseReason::AnswersUnread));
        assert_eq!(inbound.deadline(), None);
    }

    #[test]
    fn stop_reading_mid_body_finishes_that_request_only() {
        let (mut inbound, now) = connection(&[&POST[..POST.len() - 1]]);
        assert!(read(&mut inbound, now).is_empty());
        inbound.stop_reading();
        arrive(&mut inbound, &[&POST[POST.len() - 1..], POST].concat());
        assert_eq!(
            read(&mut inbound, now).len(),
            1,
            "nothing after the request under way"
        );
    }
}
