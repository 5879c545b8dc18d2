//! One beacon-node connection (or nginx, or a chained proxy): reads pipelined HTTP/1.x requests
//! and writes their answers back in order.
//!
//! A state machine over a non-blocking socket. It frames requests (length, chunked,
//! `100-continue`), enforces the size limits and slowloris timeouts, and keeps one slot per
//! request so answers that arrive out of order still leave in order. It does not look inside
//! bodies or decide answers: the event loop hands complete requests on and fills the slots.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::http::body::BodyReader;
use crate::http::head::{Framing, RequestHead, RequestMethod, Version, parse_request_head};
use crate::http::write::{CONTINUE, JSON, response_head};
use crate::net::{InputBuffer, MAX_BODY_RESERVATION_BYTES, MAX_IO_ROUNDS, read_body};
use crate::rpc;

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
}

/// A complete request read from the connection.
#[derive(Debug)]
pub struct ParsedRequest {
    /// Its place in the connection's order of answers.
    pub seq: u64,
    /// The head.
    pub head: RequestHead,
    /// The body, de-chunked.
    pub body: Vec<u8>,
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
    read: ReadState,
    buf: InputBuffer,
    slots: VecDeque<Slot>,
    next_seq: u64,
    readable: bool,
    writable: bool,
    /// The peer hung up (or the socket errored): read until end of stream, not just until a
    /// short read.
    hangup: bool,
    peer_closed: bool,
    /// Shutting down: read no request after the one under way.
    stopping: bool,
    last_activity: Instant,
    finished: Option<CloseReason>,
}

/// What the reading side waits for.
#[derive(Debug)]
enum ReadState {
    /// The next request head; `started` is when its first byte came.
    Head { started: Option<Instant> },
    /// The body of `head`.
    Body {
        head: RequestHead,
        reader: BodyReader,
        body: Vec<u8>,
        /// For `Content-Length` bodies: the exact size, read in place.
        expected: Option<usize>,
        deadline: Instant,
    },
    /// No more requests on this connection (error answered, `Connection: close`, shutdown).
    Stopped,
}

/// An answer's place in the connection's order.
#[derive(Debug)]
enum Slot {
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

impl<S: Read + Write> Inbound<S> {
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
            read: ReadState::Head { started: None },
            buf: InputBuffer::new(),
            slots: VecDeque::new(),
            next_seq: 0,
            readable: false,
            writable: false,
            hangup: false,
            peer_closed: false,
            stopping: false,
            last_activity: now,
            finished: None,
        }
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

    /// Records that the poller reported the peer's hang-up or a socket error.
    pub fn on_hangup(&mut self) {
        self.hangup = true;
        self.readable = true;
    }

    /// Why the connection is over, once it is.
    pub fn finished(&self) -> Option<CloseReason> {
        self.finished
    }

    /// Answers still owed to the peer.
    pub fn pending_answers(&self) -> usize {
        self.slots.len()
    }

    /// Reads what the socket has and returns the requests completed by it.
    pub fn read_requests(&mut self, now: Instant, out: &mut Vec<ParsedRequest>) {
        // Requests already buffered come first: answers may have freed pipeline slots since
        // they were read, and edge-triggered readiness will not announce them again.
        if self.finished.is_none() {
            self.parse(now, out);
        }
        for _ in 0..MAX_IO_ROUNDS {
            if !self.readable || !self.wants_read() {
                break;
            }
            let result = match &mut self.read {
                ReadState::Body {
                    body,
                    expected: Some(expected),
                    ..
                } if self.buf.is_empty() => read_body(&mut self.stream, body, *expected),
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
                    self.parse(now, out);
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
            .find(|s| matches!(s, Slot::Waiting { seq: waiting, .. } if *waiting == seq))
        else {
            return;
        };
        let Slot::Waiting {
            version,
            keep_alive,
            head_only,
            ..
        } = *slot
        else {
            return;
        };
        *slot = Slot::Ready {
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
            let Some(Slot::Ready {
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
        if matches!(self.slots.front(), Some(Slot::Ready { .. })) {
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
        if matches!(self.slots.front(), Some(Slot::Ready { .. })) {
            self.finish(CloseReason::WriteTimeout);
            return;
        }
        match self.read {
            ReadState::Head { started: Some(_) } => {
                self.reject(408, "request head not received in time");
                self.flush(now);
                self.finish(CloseReason::HeaderTimeout);
            }
            ReadState::Body { .. } => {
                self.reject(408, "request body not received in time");
                self.flush(now);
                self.finish(CloseReason::BodyTimeout);
            }
            ReadState::Head { started: None } | ReadState::Stopped => {
                self.finish(CloseReason::IdleTimeout);
            }
        }
    }

    fn wants_read(&self) -> bool {
        self.finished.is_none()
            && !self.peer_closed
            && !matches!(self.read, ReadState::Stopped)
            && self.slots.len() < MAX_PIPELINED_REQUESTS
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
    fn parse(&mut self, now: Instant, out: &mut Vec<ParsedRequest>) {
        loop {
            match &mut self.read {
                ReadState::Stopped => {
                    self.buf.clear();
                    return;
                }
                ReadState::Head { started } => {
                    // Backpressure: no more requests than answers we are willing to owe.
                    if self.buf.is_empty() || self.slots.len() >= MAX_PIPELINED_REQUESTS {
                        return;
                    }
                    started.get_or_insert(now);
                    if !self.parse_head(now) {
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
    fn parse_head(&mut self, now: Instant) -> bool {
        let head = match parse_request_head(self.buf.bytes(), self.limits.max_head_bytes) {
            Ok(Some(head)) => head,
            Ok(None) => return false,
            Err(e) => {
                self.reject(e.status(), &e.to_string());
                return false;
            }
        };
        self.buf.consume(head.head_bytes);
        let expected = match head.framing {
            Framing::Length(n) if n > self.limits.max_body_bytes as u64 => {
                // Refused before reading a byte of it; the connection closes after the answer.
                self.reject(413, "request body too large");
                return false;
            }
            // Bounded by max_body_bytes just above.
            Framing::Length(n) => Some(n as usize),
            Framing::Empty | Framing::Chunked | Framing::UntilClose => None,
        };
        if head.expect_continue && head.framing != Framing::Empty && self.buf.is_empty() {
            self.slots.push_back(Slot::Ready {
                head: CONTINUE.to_vec(),
                body: Vec::new(),
                written: 0,
                close: false,
            });
        }
        let capacity = expected.unwrap_or(0).min(MAX_BODY_RESERVATION_BYTES);
        self.read = ReadState::Body {
            reader: BodyReader::new(head.framing, self.limits.max_body_bytes),
            head,
            body: Vec::with_capacity(capacity),
            expected,
            deadline: now + self.limits.body_timeout,
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
                    self.reject(status, &e.to_string());
                    return false;
                }
            },
        };
        if !done {
            return false;
        }
        let ReadState::Body { head, body, .. } =
            std::mem::replace(&mut self.read, ReadState::Head { started: None })
        else {
            return false;
        };
        if !head.keep_alive || self.stopping {
            self.read = ReadState::Stopped;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(Slot::Waiting {
            seq,
            version: head.version,
            keep_alive: head.keep_alive,
            head_only: head.method == RequestMethod::Head,
        });
        out.push(ParsedRequest { seq, head, body });
        true
    }

    /// Answers a request that cannot be read with `status` and a JSON-RPC error (id null:
    /// the body was never read), then stops reading; the connection closes after the answer.
    fn reject(&mut self, status: u16, message: &str) {
        let body = rpc::error_body(b"null", rpc::code::INVALID_REQUEST, message);
        self.slots.push_back(Slot::Ready {
            head: response_head(Version::Http11, status, JSON, body.len(), false),
            body,
            written: 0,
            close: true,
        });
        self.read = ReadState::Stopped;
        self.buf.clear();
    }
}
