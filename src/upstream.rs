//! One HTTP/1.1 client connection to an upstream (an execution client or a chained proxy): a
//! state machine that connects, sends one request at a time, and reads its response.
//!
//! It owns the leg it is carrying, so a failure hands the leg back for a retry or a report. It
//! does not choose what to send next, sign tokens or decide retries: the
//! [`crate::execution_client`] lane that owns this connection does.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::engine::Lane;
use crate::http::body::{BodyError, BodyReader};
use crate::http::head::{Framing, HeadError, ResponseHead, parse_response_head};
use crate::net::{InputBuffer, MAX_BODY_RESERVATION_BYTES, MAX_IO_ROUNDS, read_body};
use crate::request::Leg;

/// An upstream's answer, passed to the beacon node byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` as sent.
    pub content_type: Option<Box<str>>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Why a connection or a request on it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// The TCP connection could not be made.
    Connect(io::ErrorKind),
    /// The TCP connection was not made in time.
    ConnectTimeout,
    /// No complete answer within the request's timeout.
    Timeout(Duration),
    /// The upstream closed the connection before answering.
    Closed,
    /// A socket error while sending or receiving.
    Io(io::ErrorKind),
    /// The answer's head is not valid HTTP.
    BadHead(HeadError),
    /// The answer's body is broken or too large.
    BadBody(BodyError),
}

impl UpstreamError {
    /// Whether the beacon node's error answer should be `504` rather than `502`.
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            UpstreamError::Timeout(_) | UpstreamError::ConnectTimeout
        )
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(kind) => write!(f, "connect failed: {kind}"),
            UpstreamError::ConnectTimeout => f.write_str("connect timed out"),
            UpstreamError::Timeout(after) => write!(f, "no answer within {} ms", after.as_millis()),
            UpstreamError::Closed => f.write_str("connection closed before the answer"),
            UpstreamError::Io(kind) => write!(f, "socket error: {kind}"),
            UpstreamError::BadHead(e) => write!(f, "bad answer: {e}"),
            UpstreamError::BadBody(e) => write!(f, "bad answer: {e}"),
        }
    }
}

/// What happened on a connection.
#[derive(Debug)]
pub enum UpstreamEvent {
    /// The TCP connection is established; the connection is idle.
    Connected,
    /// A complete answer to `leg`; the connection is idle again when `keep_alive`.
    Answered {
        /// The leg that was answered.
        leg: Leg,
        /// The answer.
        response: Response,
        /// Whether the connection can carry another request.
        keep_alive: bool,
    },
    /// The connection failed; it must be closed. `leg` is the request it was carrying.
    Failed {
        /// The leg in flight, if any.
        leg: Option<Leg>,
        /// What went wrong.
        error: UpstreamError,
        /// A reused connection failed before any answer byte: sending again on a fresh
        /// connection is safe (every Engine API call is idempotent) and likely to work.
        retryable: bool,
    },
}

/// What a connection needs of its stream beyond reading and writing: the outcome of a
/// non-blocking connect. Implemented by `mio`'s `TcpStream`, and by in-memory streams in tests.
pub trait Connecting: Read + Write {
    /// The connect's error, if it failed (`SO_ERROR`).
    fn take_error(&self) -> io::Result<Option<io::Error>>;
    /// Whether the connection is really established (`NotConnected` while still in progress).
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// Small requests and answers go out at once (`TCP_NODELAY`).
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()>;
}

impl Connecting for TcpStream {
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        TcpStream::take_error(self)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self)
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        TcpStream::set_nodelay(self, nodelay)
    }
}

/// A client connection to an upstream over a non-blocking stream (a `TcpStream` in the proxy;
/// an in-memory stream in tests).
#[derive(Debug)]
pub struct Upstream<S = TcpStream> {
    stream: S,
    /// Index of the upstream this connection belongs to.
    pub upstream: usize,
    /// The lane it serves.
    pub lane: Lane,
    state: State,
    /// Answers completed on this connection; a connection with any is "reused".
    served: u64,
    readable: bool,
    writable: bool,
    /// The peer hung up (or the socket errored): read until end of stream, not just until a
    /// short read.
    hangup: bool,
    /// Answer bytes read but not yet parsed.
    input: InputBuffer,
    max_head_bytes: usize,
    max_body_bytes: usize,
}

/// What the connection is waiting for.
#[derive(Debug)]
enum State {
    /// TCP handshake in progress.
    Connecting { deadline: Instant },
    /// Connected, nothing in flight.
    Idle,
    /// Writing the request; `written` counts head then body bytes.
    Sending {
        leg: Leg,
        head: Vec<u8>,
        written: usize,
        deadline: Instant,
        timeout: Duration,
    },
    /// Reading the answer.
    Receiving {
        leg: Leg,
        deadline: Instant,
        timeout: Duration,
        answer: Answer,
    },
    /// Failed or finished; waiting to be removed.
    Dead,
}

/// How far an answer has been read.
#[derive(Debug)]
enum Answer {
    /// Reading the head (its bytes so far are in the connection's input buffer).
    Head,
    /// A `Content-Length` body, read in place.
    Length {
        head: ResponseHead,
        body: Vec<u8>,
        expected: usize,
    },
    /// A chunked or close-delimited body.
    Framed {
        head: ResponseHead,
        reader: BodyReader,
        body: Vec<u8>,
    },
}

impl Upstream {
    /// Starts a non-blocking connect to `addr`.
    pub fn connect(
        addr: SocketAddr,
        upstream: usize,
        lane: Lane,
        deadline: Instant,
        max_head_bytes: usize,
        max_body_bytes: usize,
    ) -> io::Result<Upstream> {
        let stream = TcpStream::connect(addr)?;
        Ok(Upstream::with_stream(
            stream,
            upstream,
            lane,
            deadline,
            max_head_bytes,
            max_body_bytes,
        ))
    }
}

impl<S: Connecting> Upstream<S> {
    /// A connection over `stream`, whose connect is under way until `deadline`.
    pub fn with_stream(
        stream: S,
        upstream: usize,
        lane: Lane,
        deadline: Instant,
        max_head_bytes: usize,
        max_body_bytes: usize,
    ) -> Upstream<S> {
        Upstream {
            stream,
            upstream,
            lane,
            state: State::Connecting { deadline },
            served: 0,
            readable: false,
            writable: false,
            hangup: false,
            input: InputBuffer::new(),
            max_head_bytes,
            max_body_bytes,
        }
    }

    /// The socket, for (de)registration.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Connected and free to carry a request.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// The connection is of no further use.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, State::Dead)
    }

    /// Readiness is left that a capped read or write round did not use. Edge-triggered
    /// readiness will not announce it again, so the event loop must drive this connection
    /// again by itself.
    pub fn wants_service(&self) -> bool {
        match self.state {
            State::Connecting { .. } | State::Sending { .. } => self.writable,
            State::Receiving { .. } | State::Idle => self.readable,
            State::Dead => false,
        }
    }

    /// The leg in flight, if any.
    pub fn leg(&self) -> Option<&Leg> {
        match &self.state {
            State::Sending { leg, .. } | State::Receiving { leg, .. } => Some(leg),
            _ => None,
        }
    }

    /// When the current phase times out.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Connecting { deadline }
            | State::Sending { deadline, .. }
            | State::Receiving { deadline, .. } => Some(deadline),
            State::Idle | State::Dead => None,
        }
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

    /// Begins sending `leg` with the given head; the connection must be idle.
    pub fn start(&mut self, mut leg: Leg, head: Vec<u8>, now: Instant, timeout: Duration) {
        debug_assert!(self.is_idle(), "start on a busy connection");
        leg.sent_at = Some(now);
        self.state = State::Sending {
            leg,
            head,
            written: 0,
            deadline: now + timeout,
            timeout,
        };
    }

    /// Does whatever I/O readiness allows and reports what happened, if anything.
    pub fn drive(&mut self) -> Option<UpstreamEvent> {
        match &self.state {
            State::Connecting { .. } if self.writable => self.finish_connect(),
            State::Connecting { .. } => None,
            State::Sending { .. } if self.writable => self.send(),
            State::Sending { .. } => None,
            State::Receiving { .. } if self.readable => self.receive(),
            State::Receiving { .. } => None,
            State::Idle if self.readable => self.idle_read(),
            State::Idle | State::Dead => None,
        }
    }

    /// The deadline passed: the phase in progress failed.
    pub fn on_timeout(&mut self, now: Instant) -> Option<UpstreamEvent> {
        let deadline = self.deadline()?;
        if now < deadline {
            return None;
        }
        let error = match &self.state {
            State::Connecting { .. } => UpstreamError::ConnectTimeout,
            State::Sending { timeout, .. } | State::Receiving { timeout, .. } => {
                UpstreamError::Timeout(*timeout)
            }
            State::Idle | State::Dead => return None,
        };
        // A timed-out connection may still deliver the late answer: it is never reused.
        Some(self.fail(error, false))
    }

    /// Takes the leg out of a connection that is being discarded.
    pub fn take_leg(&mut self) -> Option<Leg> {
        match std::mem::replace(&mut self.state, State::Dead) {
            State::Sending { leg, .. } | State::Receiving { leg, .. } => Some(leg),
            _ => None,
        }
    }

    fn finish_connect(&mut self) -> Option<UpstreamEvent> {
        // mio's recipe: a writable event on a connecting socket means done or failed;
        // `take_error` tells which, and `peer_addr` confirms the connection is real.
        match self.stream.take_error() {
            Ok(Some(e)) | Err(e) => {
                return Some(self.fail(UpstreamError::Connect(e.kind()), false));
            }
            Ok(None) => {}
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                let _ = self.stream.set_nodelay(true);
                self.state = State::Idle;
                Some(UpstreamEvent::Connected)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                // Spurious wake-up: still connecting.
                self.writable = false;
                None
            }
            Err(e) => Some(self.fail(UpstreamError::Connect(e.kind()), false)),
        }
    }

    fn send(&mut self) -> Option<UpstreamEvent> {
        let State::Sending {
            leg, head, written, ..
        } = &mut self.state
        else {
            return None;
        };
        let body: &[u8] = &leg.request.body;
        let total = head.len() + body.len();
        for _ in 0..MAX_IO_ROUNDS {
            if *written >= total {
                break;
            }
            let result = if *written < head.len() {
                let bufs = [IoSlice::new(&head[*written..]), IoSlice::new(body)];
                self.stream.write_vectored(&bufs)
            } else {
                self.stream.write(&body[*written - head.len()..])
            };
            match result {
                Ok(0) => return Some(self.fail(UpstreamError::Closed, true)),
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(self.fail(UpstreamError::Io(e.kind()), true)),
            }
        }
        if *written < total {
            // Round budget spent with the socket still writable: `wants_service` tells the loop
            // to come back, since no new readiness event will.
            return None;
        }
        let State::Sending {
            leg,
            deadline,
            timeout,
            ..
        } = std::mem::replace(&mut self.state, State::Dead)
        else {
            return None;
        };
        self.state = State::Receiving {
            leg,
            deadline,
            timeout,
            answer: Answer::Head,
        };
        // The answer may already be waiting.
        if self.readable {
            return self.receive();
        }
        None
    }

    fn receive(&mut self) -> Option<UpstreamEvent> {
        for _ in 0..MAX_IO_ROUNDS {
            if !self.readable {
                return None;
            }
            let State::Receiving { answer, .. } = &mut self.state else {
                return None;
            };
            let result = match answer {
                // Bodies framed by length are read straight into their final buffer.
                Answer::Length { body, expected, .. } => {
                    read_body(&mut self.stream, body, *expected)
                }
                Answer::Head | Answer::Framed { .. } => self.input.read_from(&mut self.stream),
            };
            let event = match result {
                Ok(filled) if filled.bytes == 0 => self.on_eof(),
                Ok(filled) => {
                    self.readable = !filled.drained || self.hangup;
                    self.on_input()
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                Err(e) => {
                    let got_bytes = self.got_answer_bytes();
                    Some(self.fail(UpstreamError::Io(e.kind()), !got_bytes))
                }
            };
            if event.is_some() {
                return event;
            }
        }
        None
    }

    /// Bytes arrived on an idle connection: the server closed it (or misbehaves).
    fn idle_read(&mut self) -> Option<UpstreamEvent> {
        match self.input.read_from(&mut self.stream) {
            Ok(filled) if filled.bytes == 0 => Some(self.fail(UpstreamError::Closed, false)),
            Ok(_) => Some(self.fail(UpstreamError::BadHead(HeadError::Malformed), false)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                None
            }
            Err(e) => Some(self.fail(UpstreamError::Io(e.kind()), false)),
        }
    }

    fn got_answer_bytes(&self) -> bool {
        match &self.state {
            State::Receiving { answer, .. } => match answer {
                Answer::Head => !self.input.is_empty(),
                Answer::Length { .. } | Answer::Framed { .. } => true,
            },
            _ => false,
        }
    }

    fn on_eof(&mut self) -> Option<UpstreamEvent> {
        if let State::Receiving {
            answer: Answer::Framed { reader, .. },
            ..
        } = &mut self.state
        {
            if reader.on_eof().is_ok() {
                return self.complete(false);
            }
        }
        let got_bytes = self.got_answer_bytes();
        Some(self.fail(UpstreamError::Closed, !got_bytes))
    }

    /// Moves newly read bytes through the answer's phases.
    fn on_input(&mut self) -> Option<UpstreamEvent> {
        let State::Receiving { answer, .. } = &mut self.state else {
            return None;
        };
        match answer {
            Answer::Length { body, expected, .. } => {
                if body.len() >= *expected {
                    // Bytes past the answer would be an unsolicited second answer: don't reuse.
                    return self.complete(self.input.is_empty());
                }
                None
            }
            Answer::Framed { reader, body, .. } => match reader.feed(self.input.bytes(), body) {
                Err(e) => Some(self.fail(UpstreamError::BadBody(e), false)),
                Ok(progress) => {
                    self.input.consume(progress.consumed);
                    if progress.done {
                        return self.complete(self.input.is_empty());
                    }
                    None
                }
            },
            Answer::Head => self.on_head_bytes(),
        }
    }

    /// Parses the head once complete and moves any body bytes after it to the body phase.
    fn on_head_bytes(&mut self) -> Option<UpstreamEvent> {
        let head = loop {
            match parse_response_head(self.input.bytes(), self.max_head_bytes) {
                Ok(None) => return None,
                Err(e) => return Some(self.fail(UpstreamError::BadHead(e), false)),
                // `100 Continue` and friends precede the real answer.
                Ok(Some(head)) if head.is_interim() => self.input.consume(head.head_bytes),
                Ok(Some(head)) => break head,
            }
        };
        self.input.consume(head.head_bytes);
        let State::Receiving { answer, .. } = &mut self.state else {
            return None;
        };
        match head.framing {
            Framing::Length(n) if n > self.max_body_bytes as u64 => {
                Some(self.fail(UpstreamError::BadBody(BodyError::TooLarge), false))
            }
            Framing::Length(n) => {
                // Bounded by max_body_bytes just above, so the cast is exact.
                let expected = n as usize;
                let take = self.input.len().min(expected);
                let mut body = Vec::with_capacity(expected.min(MAX_BODY_RESERVATION_BYTES));
                body.extend_from_slice(&self.input.bytes()[..take]);
                self.input.consume(take);
                *answer = Answer::Length {
                    head,
                    body,
                    expected,
                };
                self.on_input()
            }
            framing => {
                *answer = Answer::Framed {
                    head,
                    reader: BodyReader::new(framing, self.max_body_bytes),
                    body: Vec::new(),
                };
                self.on_input()
            }
        }
    }

    fn complete(&mut self, keep_alive: bool) -> Option<UpstreamEvent> {
        let State::Receiving { leg, answer, .. } = std::mem::replace(&mut self.state, State::Dead)
        else {
            return None;
        };
        let (head, body) = match answer {
            Answer::Length { head, body, .. } | Answer::Framed { head, body, .. } => (head, body),
            Answer::Head => return None,
        };
        let keep_alive = keep_alive && head.keep_alive;
        self.served += 1;
        if keep_alive {
            self.state = State::Idle;
        }
        Some(UpstreamEvent::Answered {
            leg,
            response: Response {
                status: head.status,
                content_type: head.content_type,
                body,
            },
            keep_alive,
        })
    }

    fn fail(&mut self, error: UpstreamError, before_answer: bool) -> UpstreamEvent {
        let leg = self.take_leg();
        UpstreamEvent::Failed {
            retryable: before_answer && self.served > 0 && leg.is_some(),
            leg,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::engine::Method;
    use crate::net::MemoryStream;
    use crate::request::Request;

    impl Connecting for MemoryStream {
        fn take_error(&self) -> io::Result<Option<io::Error>> {
            Ok(self
                .refused
                .then(|| io::Error::from(io::ErrorKind::ConnectionRefused)))
        }

        fn peer_addr(&self) -> io::Result<SocketAddr> {
            Ok(SocketAddr::from(([127, 0, 0, 1], 8551)))
        }

        fn set_nodelay(&self, _: bool) -> io::Result<()> {
            Ok(())
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(8);
    const MAX_BODY: usize = 8 << 20;

    fn leg(body: &[u8]) -> Leg {
        Leg::new(
            Rc::new(Request {
                body: body.into(),
                call: None,
                method: Method::NewPayload(4),
                authorization: None,
                beacon: Rc::from("bn"),
                via: None,
                received_at: Instant::now(),
            }),
            None,
        )
    }

    /// A connection that finished its connect and carries `body`, now waiting for the answer.
    fn sent(body: &[u8], now: Instant) -> Upstream<MemoryStream> {
        let mut connection = Upstream::with_stream(
            MemoryStream::default(),
            0,
            Lane::State,
            now,
            16 * 1024,
            MAX_BODY,
        );
        connection.on_ready(false, true);
        assert!(matches!(connection.drive(), Some(UpstreamEvent::Connected)));
        connection.start(leg(body), b"POST / HTTP/1.1\r\n\r\n".to_vec(), now, TIMEOUT);
        assert!(connection.drive().is_none(), "sent, nothing to read yet");
        connection
    }

    /// A connection that served one answer and now carries a second request.
    fn reused(now: Instant) -> Upstream<MemoryStream> {
        let mut connection = sent(b"{}", now);
        arrive(
            &mut connection,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
        );
        answered(drive(&mut connection).0);
        connection.start(leg(b"{}"), b"H\r\n\r\n".to_vec(), now, TIMEOUT);
        connection
    }

    /// Makes `bytes` arrive, as a readiness event announces them.
    fn arrive(connection: &mut Upstream<MemoryStream>, chunks: &[&[u8]]) {
        for chunk in chunks {
            connection.stream_mut().incoming.push_back(chunk.to_vec());
        }
        connection.on_ready(true, false);
    }

    /// Drives until an event, as the loop does: again only while readiness is left.
    fn drive(connection: &mut Upstream<MemoryStream>) -> (Option<UpstreamEvent>, usize) {
        for rounds in 1..1000 {
            if let Some(event) = connection.drive() {
                return (Some(event), rounds);
            }
            if !connection.wants_service() {
                return (None, rounds);
            }
        }
        (None, 1000)
    }

    fn answered(event: Option<UpstreamEvent>) -> (Response, bool) {
        match event {
            Some(UpstreamEvent::Answered {
                response,
                keep_alive,
                ..
            }) => (response, keep_alive),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn failed(event: Option<UpstreamEvent>) -> (UpstreamError, bool) {
        match event {
            Some(UpstreamEvent::Failed {
                error, retryable, ..
            }) => (error, retryable),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn chunked(body: &[u8], size: usize) -> Vec<u8> {
        let mut message = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for chunk in body.chunks(size) {
            message.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            message.extend_from_slice(chunk);
            message.extend_from_slice(b"\r\n");
        }
        message.extend_from_slice(b"0\r\n\r\n");
        message
    }

    #[test]
    fn connecting_refused_fails_not_retryable() {
        let now = Instant::now();
        let wire = MemoryStream {
            refused: true,
            ..MemoryStream::default()
        };
        let mut connection = Upstream::with_stream(wire, 0, Lane::State, now, 1024, MAX_BODY);
        connection.on_ready(false, true);
        let (error, retryable) = failed(connection.drive());
        assert_eq!(
            error,
            UpstreamError::Connect(io::ErrorKind::ConnectionRefused)
        );
        assert!(!retryable);
    }

    #[test]
    fn connecting_past_deadline_times_out() {
        let now = Instant::now();
        let mut connection =
            Upstream::with_stream(MemoryStream::default(), 0, Lane::State, now, 1024, MAX_BODY);
        assert!(
            connection
                .on_timeout(now - Duration::from_millis(1))
                .is_none()
        );
        let (error, _) = failed(connection.on_timeout(now));
        assert_eq!(error, UpstreamError::ConnectTimeout);
    }

    #[test]
    fn sending_writes_head_then_body_across_partial_writes() {
        let now = Instant::now();
        let mut connection =
            Upstream::with_stream(MemoryStream::default(), 0, Lane::State, now, 1024, MAX_BODY);
        connection.stream_mut().window = 3;
        connection.on_ready(false, true);
        connection.drive();
        connection.start(leg(b"{\"a\":1}"), b"HEAD\r\n\r\n".to_vec(), now, TIMEOUT);
        let (event, _) = drive(&mut connection);
        assert!(event.is_none());
        assert_eq!(connection.stream_mut().written, b"HEAD\r\n\r\n{\"a\":1}");
    }

    #[test]
    fn sending_beyond_one_write_budget_wants_service_until_sent() {
        let now = Instant::now();
        let mut connection =
            Upstream::with_stream(MemoryStream::default(), 0, Lane::State, now, 1024, MAX_BODY);
        connection.stream_mut().window = 1024;
        connection.on_ready(false, true);
        connection.drive();
        let body = vec![b'x'; 200 * 1024];
        connection.start(leg(&body), b"H\r\n\r\n".to_vec(), now, TIMEOUT);
        assert!(connection.drive().is_none());
        assert!(
            connection.wants_service(),
            "writable, budget spent, body not all out"
        );
        let (event, rounds) = drive(&mut connection);
        assert!(event.is_none());
        assert!(rounds > 1);
        assert_eq!(connection.stream_mut().written.len(), body.len() + 5);
    }

    #[test]
    fn receiving_length_answer_split_anywhere_completes_once() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 1..answer.len() {
            let now = Instant::now();
            let mut connection = sent(b"{}", now);
            arrive(&mut connection, &[&answer[..cut]]);
            assert!(drive(&mut connection).0.is_none(), "cut {cut}");
            arrive(&mut connection, &[&answer[cut..]]);
            let (response, keep_alive) = answered(drive(&mut connection).0);
            assert_eq!(response.body, b"hello", "cut {cut}");
            assert!(keep_alive);
            assert!(connection.is_idle());
        }
    }

    /// The paused-proxy case: a whole chunked answer larger than one read budget is in the
    /// socket when the only readiness edge comes.
    #[test]
    fn receiving_chunked_beyond_one_budget_wants_service_until_complete() {
        for size in [4096, 32 * 1024] {
            let body = vec![b'b'; 2_000_000];
            let message = chunked(&body, size);
            let now = Instant::now();
            let mut connection = sent(b"{}", now);
            let pieces: Vec<&[u8]> = message.chunks(16 * 1024).collect();
            arrive(&mut connection, &pieces);
            assert!(
                connection.drive().is_none(),
                "one budget does not reach the end"
            );
            assert!(
                connection.wants_service(),
                "bytes left that no edge announces"
            );
            let (response, keep_alive) = answered(drive(&mut connection).0);
            assert_eq!(response.body, body);
            assert!(keep_alive);
        }
    }

    #[test]
    fn receiving_close_delimited_beyond_one_budget_completes_at_end_of_stream() {
        let body = vec![b'c'; 2_000_000];
        let mut message = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        message.extend_from_slice(&body);
        let now = Instant::now();
        let mut connection = sent(b"{}", now);
        let pieces: Vec<&[u8]> = message.chunks(16 * 1024).collect();
        arrive(&mut connection, &pieces);
        // The end of the stream comes with its own readiness event (a hang-up).
        connection.stream_mut().closed = true;
        connection.on_hangup();
        let (response, keep_alive) = answered(drive(&mut connection).0);
        assert_eq!(response.body, body);
        assert!(!keep_alive, "the end of the stream ended the answer");
    }

    #[test]
    fn receiving_interim_100_is_skipped() {
        let now = Instant::now();
        let mut connection = sent(b"{}", now);
        arrive(
            &mut connection,
            &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        );
        let (response, _) = answered(drive(&mut connection).0);
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"ok");
    }

    #[test]
    fn receiving_declared_body_over_limit_fails() {
        let now = Instant::now();
        let mut connection = sent(b"{}", now);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        arrive(&mut connection, &[head.as_bytes()]);
        let (error, retryable) = failed(drive(&mut connection).0);
        assert_eq!(error, UpstreamError::BadBody(BodyError::TooLarge));
        assert!(!retryable);
    }

    #[test]
    fn receiving_past_deadline_fails_and_is_never_reused() {
        let now = Instant::now();
        let mut connection = sent(b"{}", now);
        assert!(connection.on_timeout(now + TIMEOUT / 2).is_none());
        let (error, retryable) = failed(connection.on_timeout(now + TIMEOUT));
        assert_eq!(error, UpstreamError::Timeout(TIMEOUT));
        assert!(!retryable);
        assert!(connection.is_dead());
    }

    #[test]
    fn reused_connection_closed_before_answer_is_retryable() {
        let now = Instant::now();
        let mut connection = reused(now);
        connection.stream_mut().closed = true;
        connection.on_ready(true, true);
        let (error, retryable) = failed(drive(&mut connection).0);
        assert_eq!(error, UpstreamError::Closed);
        assert!(
            retryable,
            "served one answer, failed before any byte of the next"
        );
    }

    #[test]
    fn fresh_connection_closed_before_answer_is_not_retryable() {
        let now = Instant::now();
        let mut connection = sent(b"{}", now);
        connection.stream_mut().closed = true;
        connection.on_ready(true, false);
        let (error, retryable) = failed(drive(&mut connection).0);
        assert_eq!(error, UpstreamError::Closed);
        assert!(!retryable);
    }

    #[test]
    fn closed_mid_answer_is_not_retryable() {
        let now = Instant::now();
        let mut connection = reused(now);
        arrive(
            &mut connection,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart"],
        );
        connection.stream_mut().closed = true;
        connection.on_hangup();
        let (error, retryable) = failed(drive(&mut connection).0);
        assert_eq!(error, UpstreamError::Closed);
        assert!(
            !retryable,
            "answer bytes came: the request may have been executed"
        );
    }

    #[test]
    fn idle_connection_closed_by_server_fails_closed() {
        let now = Instant::now();
        let mut connection = sent(b"{}", now);
        arrive(
            &mut connection,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
        );
        answered(drive(&mut connection).0);
        connection.stream_mut().closed = true;
        connection.on_ready(true, false);
        let (error, _) = failed(drive(&mut connection).0);
        assert_eq!(error, UpstreamError::Closed);
    }

    #[test]
    fn bytes_after_answer_forbid_reuse() {
        let now = Instant::now();
        let mut connection = sent(b"{}", now);
        arrive(
            &mut connection,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"],
        );
        let (_, keep_alive) = answered(drive(&mut connection).0);
        assert!(!keep_alive, "an unsolicited second answer");
    }
}
