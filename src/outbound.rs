//! One HTTP/1.1 client connection to an upstream (an execution client or a chained proxy): a
//! state machine that connects, sends one request at a time, and reads its answer.
//!
//! It carries bytes, nothing more: which request goes next, how long it may take, whether a
//! failure is retried and what an answer means are the [`crate::core`]'s decisions. It reads
//! no clock and holds no timer; the core closes a connection whose request timed out.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use mio::net::TcpStream;

use crate::http::body::{BodyError, BodyReader};
use crate::http::head::{Framing, HeadError, ResponseHead, parse_response_head};
use crate::net::{InputBuffer, MAX_BODY_RESERVATION_BYTES, MAX_IO_ROUNDS, read_body};
use crate::request::Request;

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

    /// Whether the connection could not be made at all (the upstream is not there).
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout
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
pub enum OutboundEvent {
    /// The TCP connection is established; the connection is idle.
    Connected,
    /// A complete answer to the request in flight; the connection is idle again when
    /// `keep_alive`, else it is dead.
    Answered {
        /// The answer.
        response: Response,
        /// Whether the connection can carry another request.
        keep_alive: bool,
    },
    /// The connection failed and is dead.
    Failed {
        /// What went wrong.
        error: UpstreamError,
        /// Bytes of an answer had arrived: the request may have been carried out.
        answer_started: bool,
    },
}

impl OutboundEvent {
    /// A failure before any byte of an answer (a connect that failed at once, say).
    pub fn failed_before_answer(error: UpstreamError) -> OutboundEvent {
        OutboundEvent::Failed {
            error,
            answer_started: false,
        }
    }
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
pub struct Outbound<S = TcpStream> {
    stream: S,
    state: State,
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
    Connecting,
    /// Connected, nothing in flight.
    Idle,
    /// Writing the request; `written` counts head then body bytes.
    Sending {
        request: Rc<Request>,
        head: Vec<u8>,
        written: usize,
    },
    /// Reading the answer.
    Receiving { reading: Reading },
    /// Failed or finished; waiting to be removed.
    Dead,
}

/// How far an answer has been read.
#[derive(Debug)]
enum Reading {
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

impl Outbound {
    /// Starts a non-blocking connect to `addr`.
    pub fn connect(
        addr: SocketAddr,
        max_head_bytes: usize,
        max_body_bytes: usize,
    ) -> io::Result<Outbound> {
        let stream = TcpStream::connect(addr)?;
        Ok(Outbound::with_stream(
            stream,
            max_head_bytes,
            max_body_bytes,
        ))
    }
}

impl<S: Connecting> Outbound<S> {
    /// A connection over `stream`, whose connect is under way.
    pub fn with_stream(stream: S, max_head_bytes: usize, max_body_bytes: usize) -> Outbound<S> {
        Outbound {
            stream,
            state: State::Connecting,
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
            State::Connecting | State::Sending { .. } => self.writable,
            State::Receiving { .. } | State::Idle => self.readable,
            State::Dead => false,
        }
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

    /// Begins sending `request` with the given head; the connection must be idle.
    pub fn start(&mut self, request: Rc<Request>, head: Vec<u8>) {
        debug_assert!(self.is_idle(), "start on a busy connection");
        self.state = State::Sending {
            request,
            head,
            written: 0,
        };
    }

    /// Does whatever I/O readiness allows and reports what happened, if anything.
    pub fn drive(&mut self) -> Option<OutboundEvent> {
        match &self.state {
            State::Connecting if self.writable => self.finish_connect(),
            State::Connecting => None,
            State::Sending { .. } if self.writable => self.send(),
            State::Sending { .. } => None,
            State::Receiving { .. } if self.readable => self.receive(),
            State::Receiving { .. } => None,
            State::Idle if self.readable => self.idle_read(),
            State::Idle | State::Dead => None,
        }
    }

    fn finish_connect(&mut self) -> Option<OutboundEvent> {
        // mio's recipe: a writable event on a connecting socket means done or failed;
        // `take_error` tells which, and `peer_addr` confirms the connection is real.
        match self.stream.take_error() {
            Ok(Some(e)) | Err(e) => return Some(self.fail(UpstreamError::Connect(e.kind()))),
            Ok(None) => {}
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                let _ = self.stream.set_nodelay(true);
                self.state = State::Idle;
                Some(OutboundEvent::Connected)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                // Spurious wake-up: still connecting.
                self.writable = false;
                None
            }
            Err(e) => Some(self.fail(UpstreamError::Connect(e.kind()))),
        }
    }

    fn send(&mut self) -> Option<OutboundEvent> {
        let State::Sending {
            request,
            head,
            written,
        } = &mut self.state
        else {
            return None;
        };
        let body: &[u8] = &request.body;
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
                Ok(0) => return Some(self.fail(UpstreamError::Closed)),
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(self.fail(UpstreamError::Io(e.kind()))),
            }
        }
        if *written < total {
            // Round budget spent with the socket still writable: `wants_service` tells the loop
            // to come back, since no new readiness event will.
            return None;
        }
        self.state = State::Receiving {
            reading: Reading::Head,
        };
        // The answer may already be waiting.
        if self.readable {
            return self.receive();
        }
        None
    }

    fn receive(&mut self) -> Option<OutboundEvent> {
        for _ in 0..MAX_IO_ROUNDS {
            if !self.readable {
                return None;
            }
            let State::Receiving { reading } = &mut self.state else {
                return None;
            };
            let result = match reading {
                // Bodies framed by length are read straight into their final buffer.
                Reading::Length { body, expected, .. } => {
                    read_body(&mut self.stream, body, *expected)
                }
                Reading::Head | Reading::Framed { .. } => self.input.read_from(&mut self.stream),
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
                Err(e) => Some(self.fail(UpstreamError::Io(e.kind()))),
            };
            if event.is_some() {
                return event;
            }
        }
        None
    }

    /// Bytes arrived on an idle connection: the server closed it (or misbehaves).
    fn idle_read(&mut self) -> Option<OutboundEvent> {
        match self.input.read_from(&mut self.stream) {
            Ok(filled) if filled.bytes == 0 => Some(self.fail(UpstreamError::Closed)),
            Ok(_) => Some(self.fail(UpstreamError::BadHead(HeadError::Malformed))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => Some(self.fail(UpstreamError::Io(e.kind()))),
        }
    }

    fn answer_started(&self) -> bool {
        match &self.state {
            State::Receiving { reading } => match reading {
                Reading::Head => !self.input.is_empty(),
                Reading::Length { .. } | Reading::Framed { .. } => true,
            },
            _ => false,
        }
    }

    fn on_eof(&mut self) -> Option<OutboundEvent> {
        if let State::Receiving {
            reading: Reading::Framed { reader, .. },
        } = &mut self.state
        {
            if reader.on_eof().is_ok() {
                return self.complete(false);
            }
        }
        Some(self.fail(UpstreamError::Closed))
    }

    /// Moves newly read bytes through the answer's phases.
    fn on_input(&mut self) -> Option<OutboundEvent> {
        let State::Receiving { reading } = &mut self.state else {
            return None;
        };
        match reading {
            Reading::Length { body, expected, .. } => {
                if body.len() >= *expected {
                    // Bytes past the answer would be an unsolicited second answer: don't reuse.
                    return self.complete(self.input.is_empty());
                }
                None
            }
            Reading::Framed { reader, body, .. } => match reader.feed(self.input.bytes(), body) {
                Err(e) => Some(self.fail(UpstreamError::BadBody(e))),
                Ok(progress) => {
                    self.input.consume(progress.consumed);
                    if progress.done {
                        return self.complete(self.input.is_empty());
                    }
                    None
                }
            },
            Reading::Head => self.on_head_bytes(),
        }
    }

    /// Parses the head once complete and moves any body bytes after it to the body phase.
    fn on_head_bytes(&mut self) -> Option<OutboundEvent> {
        let head = loop {
            match parse_response_head(self.input.bytes(), self.max_head_bytes) {
                Ok(None) => return None,
                Err(e) => return Some(self.fail(UpstreamError::BadHead(e))),
                // `100 Continue` and friends precede the real answer.
                Ok(Some(head)) if head.is_interim() => self.input.consume(head.head_bytes),
                Ok(Some(head)) => break head,
            }
        };
        if matches!(head.framing, Framing::Length(n) if n > self.max_body_bytes as u64) {
            // Failed with the head still in the buffer: the answer started (the request was
            // carried out), so it is not retried as if nothing had come.
            return Some(self.fail(UpstreamError::BadBody(BodyError::TooLarge)));
        }
        self.input.consume(head.head_bytes);
        let State::Receiving { reading } = &mut self.state else {
            return None;
        };
        match head.framing {
            Framing::Length(n) => {
                // Bounded by max_body_bytes just above, so the cast is exact.
                let expected = n as usize;
                let take = self.input.len().min(expected);
                let mut body = Vec::with_capacity(expected.min(MAX_BODY_RESERVATION_BYTES));
                body.extend_from_slice(&self.input.bytes()[..take]);
                self.input.consume(take);
                *reading = Reading::Length {
                    head,
                    body,
                    expected,
                };
                self.on_input()
            }
            framing => {
                *reading = Reading::Framed {
                    head,
                    reader: BodyReader::new(framing, self.max_body_bytes),
                    body: Vec::new(),
                };
                self.on_input()
            }
        }
    }

    fn complete(&mut self, keep_alive: bool) -> Option<OutboundEvent> {
        let State::Receiving { reading } = std::mem::replace(&mut self.state, State::Dead) else {
            return None;
        };
        let (head, body) = match reading {
            Reading::Length { head, body, .. } | Reading::Framed { head, body, .. } => (head, body),
            Reading::Head => return None,
        };
        let keep_alive = keep_alive && head.keep_alive;
        if keep_alive {
            self.state = State::Idle;
        }
        Some(OutboundEvent::Answered {
            response: Response {
                status: head.status,
                content_type: head.content_type,
                body,
            },
            keep_alive,
        })
    }

    fn fail(&mut self, error: UpstreamError) -> OutboundEvent {
        let answer_started = self.answer_started();
        self.state = State::Dead;
        OutboundEvent::Failed {
            error,
            answer_started,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Instant;

    use super::*;
    use crate::engine::Method;
    use crate::sim::MemoryStream;

    const MAX_BODY: usize = 8 << 20;

    fn request(body: &[u8]) -> Rc<Request> {
        Rc::new(Request {
            body: body.into(),
            call: None,
            method: Method::NewPayload(4),
            authorization: None,
            beacon: Rc::from("bn"),
            via: None,
            received_at: Instant::now(),
            serial: 0,
        })
    }

    fn connected(stream: MemoryStream) -> Outbound<MemoryStream> {
        let mut connection = Outbound::with_stream(stream, 16 * 1024, MAX_BODY);
        connection.on_ready(false, true);
        assert!(matches!(connection.drive(), Some(OutboundEvent::Connected)));
        connection
    }

    /// A connection that finished its connect and sent `body`, now waiting for the answer.
    fn sent(body: &[u8]) -> Outbound<MemoryStream> {
        let mut connection = connected(MemoryStream::default());
        connection.start(request(body), b"POST / HTTP/1.1\r\n\r\n".to_vec());
        assert!(connection.drive().is_none(), "sent, nothing to read yet");
        connection
    }

    /// A connection that served one answer and now carries a second request.
    fn reused() -> Outbound<MemoryStream> {
        let mut connection = sent(b"{}");
        arrive(
            &mut connection,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
        );
        answered(drive(&mut connection).0);
        connection.start(request(b"{}"), b"H\r\n\r\n".to_vec());
        connection
    }

    /// Makes `chunks` arrive, as a readiness event announces them.
    fn arrive(connection: &mut Outbound<MemoryStream>, chunks: &[&[u8]]) {
        for chunk in chunks {
            connection.stream_mut().incoming.push_back(chunk.to_vec());
        }
        connection.on_ready(true, false);
    }

    /// The peer closes its side, which comes with its own readiness event (a hang-up).
    fn hang_up(connection: &mut Outbound<MemoryStream>) {
        connection.stream_mut().closed = true;
        connection.on_hangup();
    }

    /// Drives until an event, as the loop does: again only while readiness is left.
    fn drive(connection: &mut Outbound<MemoryStream>) -> (Option<OutboundEvent>, usize) {
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

    fn answered(event: Option<OutboundEvent>) -> (Response, bool) {
        match event {
            Some(OutboundEvent::Answered {
                response,
                keep_alive,
            }) => (response, keep_alive),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn failed(event: Option<OutboundEvent>) -> (UpstreamError, bool) {
        match event {
            Some(OutboundEvent::Failed {
                error,
                answer_started,
            }) => (error, answer_started),
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
    fn connecting_refused_fails() {
        let stream = MemoryStream {
            refused: true,
            ..MemoryStream::default()
        };
        let mut connection = Outbound::with_stream(stream, 1024, MAX_BODY);
        connection.on_ready(false, true);
        let (error, started) = failed(connection.drive());
        assert_eq!(
            error,
            UpstreamError::Connect(io::ErrorKind::ConnectionRefused)
        );
        assert!(!started);
        assert!(connection.is_dead());
    }

    #[test]
    fn connecting_without_writable_waits() {
        let mut connection = Outbound::with_stream(MemoryStream::default(), 1024, MAX_BODY);
        assert!(connection.drive().is_none());
        assert!(!connection.wants_service());
    }

    #[test]
    fn sending_writes_head_then_body_across_partial_writes() {
        let mut connection = connected(MemoryStream {
            window: 3,
            ..MemoryStream::default()
        });
        connection.start(request(b"{\"a\":1}"), b"HEAD\r\n\r\n".to_vec());
        let (event, _) = drive(&mut connection);
        assert!(event.is_none());
        assert_eq!(connection.stream_mut().written, b"HEAD\r\n\r\n{\"a\":1}");
    }

    #[test]
    fn sending_beyond_one_write_budget_wants_service_until_sent() {
        let mut connection = connected(MemoryStream {
            window: 1024,
            ..MemoryStream::default()
        });
        let body = vec![b'x'; 200 * 1024];
        connection.start(request(&body), b"H\r\n\r\n".to_vec());
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
            let mut connection = sent(b"{}");
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
            let mut connection = sent(b"{}");
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
        let mut connection = sent(b"{}");
        let pieces: Vec<&[u8]> = message.chunks(16 * 1024).collect();
        arrive(&mut connection, &pieces);
        hang_up(&mut connection);
        let (response, keep_alive) = answered(drive(&mut connection).0);
        assert_eq!(response.body, body);
        assert!(!keep_alive, "the end of the stream ended the answer");
        assert!(connection.is_dead());
    }

    #[test]
    fn receiving_interim_100_is_skipped() {
        let mut connection = sent(b"{}");
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
        let mut connection = sent(b"{}");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        arrive(&mut connection, &[head.as_bytes()]);
        let (error, started) = failed(drive(&mut connection).0);
        assert_eq!(error, UpstreamError::BadBody(BodyError::TooLarge));
        assert!(
            started,
            "the head came: the request may have been carried out"
        );
    }

    #[test]
    fn receiving_closed_before_any_answer_byte_says_so() {
        let mut connection = reused();
        hang_up(&mut connection);
        connection.on_ready(true, true);
        let (error, started) = failed(drive(&mut connection).0);
        assert_eq!(error, UpstreamError::Closed);
        assert!(!started, "nothing of an answer came: sending again is safe");
    }

    #[test]
    fn receiving_closed_mid_answer_says_the_answer_started() {
        let mut connection = reused();
        arrive(
            &mut connection,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart"],
        );
        hang_up(&mut connection);
        let (error, started) = failed(drive(&mut connection).0);
        assert_eq!(error, UpstreamError::Closed);
        assert!(
            started,
            "answer bytes came: the request may have been executed"
        );
    }

    #[test]
    fn idle_connection_closed_by_server_fails_closed() {
        let mut connection = sent(b"{}");
        arrive(
            &mut connection,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
        );
        answered(drive(&mut connection).0);
        hang_up(&mut connection);
        let (error, started) = failed(drive(&mut connection).0);
        assert_eq!(error, UpstreamError::Closed);
        assert!(!started);
    }

    #[test]
    fn bytes_after_answer_forbid_reuse() {
        let mut connection = sent(b"{}");
        arrive(
            &mut connection,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"],
        );
        let (_, keep_alive) = answered(drive(&mut connection).0);
        assert!(!keep_alive, "an unsolicited second answer");
    }
}
