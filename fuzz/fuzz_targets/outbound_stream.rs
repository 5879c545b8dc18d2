//! Drives one upstream connection (`Outbound`) over an in-memory stream the way the event loop
//! does: an execution client's answer bytes arrive in arbitrary pieces (a piece may be repeated
//! to build answers larger than one read budget from a small input), readiness events come
//! with them or spuriously, writes take arbitrary sizes, the execution client may hang up, and
//! the core hands the connection requests whenever it is idle (also right after an answer, in
//! the same service, as the loop's `apply_outputs` does).
//!
//! Checked: nothing panics; each answer equals what an independent reading of the bytes that
//! arrived (`parse_response_head`, interim `1xx` skipped, then `BodyReader` or the declared
//! length) finds, ends where that reading ends (the connection took no byte of the next answer),
//! and keeps the connection alive only if its head says so (and gives it up only if bytes beyond
//! it had arrived); a failure is one that reading explains (a malformed head, the body error it
//! finds, a hang-up before the end, a refused connect, bytes on an idle connection); after
//! `Failed` or an answer that does not keep the connection alive, the connection is dead and
//! neither reads, writes nor reports anything again; `answer_started` is true exactly when bytes
//! of the request's answer had been read (complete interim heads aside: a `1xx` says nothing
//! about whether the request was carried out); the bytes written are exactly the requests'
//! heads and bodies, in order. The edge-triggered contract: while `wants_service()` says so,
//! `drive()` makes progress (reads, writes, an event, or readiness found used up) — it never
//! spins — and once it says no, no byte that arrived and no hang-up is left unread, nor a
//! request unsent: no readiness edge would come for them.
//!
//! Input layout (so seeds can be written by hand), as in `inbound_stream`: byte 0 is the length
//! `n` of the script, bytes `1..=n` are the script (a setup byte, then operations decoded with
//! `arbitrary`), and the rest is what the execution client sends. A seed `\0` + raw HTTP sends
//! one request after the connect and delivers the stream at the end, then hangs up.
//!
//! With `OUTBOUND_STREAM_TRACE` set in the environment, each operation and event is printed to
//! stderr, to read a crash input.
//!
//! It does not check what the core makes of events (retries, health), nor socket errors other
//! than a hang-up (`MemoryStream` has none).

#![no_main]

use std::rc::Rc;
use std::time::Instant;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

use sync_proxy::engine::Method;
use sync_proxy::http::body::{BodyError, BodyReader};
use sync_proxy::http::head::{Framing, parse_response_head};
use sync_proxy::outbound::{Outbound, OutboundEvent, Response, UpstreamError};
use sync_proxy::request::Request;
use sync_proxy::sim::MemoryStream;

/// Limits the fuzzer can cross with small inputs (setup bit 0): 128-byte heads, 256-byte bodies.
const TINY_LIMITS: (usize, usize) = (128, 256);
/// Limits a repeated piece can exceed the read budget under: 1 KiB heads, 4 MiB bodies.
const SMALL_LIMITS: (usize, usize) = (1024, 4 << 20);
/// Most bytes the execution client's stream grows to by repetition: beyond one read budget
/// (64 reads of 16 KiB), so the capped drain must come back by itself, with room to spare.
const MAX_STREAM_BYTES: usize = 3 << 20;
/// Most times `drive()` is called per readiness event; each call must progress, and a 3 MiB
/// stream in 16 KiB reads needs a few hundred.
const MAX_DRIVES_PER_EVENT: usize = 4096;
/// The head of every request, before its `Content-Length` (bodies of up to `u16::MAX` bytes span
/// many partial writes).
const REQUEST_HEAD: &str = "POST / HTTP/1.1\r\nHost: el\r\nContent-Type: application/json\r\n";

/// One step of the script.
#[derive(Arbitrary, Debug)]
enum Op {
    /// Up to `bytes` more of the execution client's stream arrive; the poller reports readable.
    Arrive { bytes: u16 },
    /// The piece that arrived last arrives `times` more times; the poller reports readable.
    Repeat { times: u16 },
    /// A readiness event without news (spurious, or for the other direction).
    Ready { readable: bool, writable: bool },
    /// Writes take at most `bytes` per call (0: all) from now on; the poller reports writable.
    Window { bytes: u16 },
    /// The execution client closes its side: what has not arrived never will.
    HangUp,
    /// The core has a request of `bytes` body bytes for this connection: handed on as soon as
    /// the connection is idle.
    Send { bytes: u16 },
}

/// What an independent reading of the bytes from an answer's start finds.
#[derive(Debug, PartialEq)]
enum Expected {
    /// Not complete with the bytes so far (truncated, if the stream has ended).
    Incomplete,
    /// A complete answer ending `end` bytes after the answer's start.
    Answer {
        response: Response,
        keep_alive: bool,
        end: usize,
    },
    /// The final head (or an interim one) is not valid HTTP or over the limit.
    BadHead,
    /// The body is broken or too large.
    BadBody(BodyError),
}

/// One run: the connection, the execution client's stream, and what has been seen.
struct Run {
    conn: Outbound<MemoryStream>,
    max_head_bytes: usize,
    max_body_bytes: usize,
    /// Everything the execution client will send, unless it hangs up first.
    source: Vec<u8>,
    /// Bytes of `source` sent so far.
    taken: usize,
    /// What has arrived at the connection's socket (read or not).
    arrived: Vec<u8>,
    /// Where in `arrived` the last piece starts, for `Repeat`.
    last_piece: usize,
    /// Where in `arrived` the answer to the request in flight (or the next one) starts.
    answer_start: usize,
    /// Every byte the connection was given to write, in order.
    requests_written: Vec<u8>,
    /// A request the core holds for this connection until it is idle: its body size.
    waiting: Option<usize>,
    /// A request was handed on and its outcome not reported yet.
    in_flight: bool,
    connected: bool,
    refused: bool,
    hung_up: bool,
    dead: bool,
    /// Bytes read and written when the connection died: neither may change after.
    at_death: Option<(usize, usize)>,
    requests: usize,
    answers: usize,
    trace: bool,
}

fuzz_target!(|data: &[u8]| {
    let Some((&script_len, rest)) = data.split_first() else {
        return;
    };
    let script_len = usize::from(script_len).min(rest.len());
    let (script, source) = rest.split_at(script_len);
    let mut u = Unstructured::new(script);
    let setup = u8::arbitrary(&mut u).unwrap_or(0);
    let (max_head_bytes, max_body_bytes) = match setup & 1 {
        1 => TINY_LIMITS,
        _ => SMALL_LIMITS,
    };
    let refused = setup & 2 != 0;
    let trace = std::env::var_os("OUTBOUND_STREAM_TRACE").is_some();
    let stream = MemoryStream {
        refused,
        ..MemoryStream::default()
    };
    let mut run = Run {
        conn: Outbound::with_stream(stream, max_head_bytes, max_body_bytes),
        max_head_bytes,
        max_body_bytes,
        source: source.to_vec(),
        taken: 0,
        arrived: Vec::new(),
        last_piece: 0,
        answer_start: 0,
        requests_written: Vec::new(),
        waiting: None,
        in_flight: false,
        connected: false,
        refused,
        hung_up: false,
        dead: false,
        at_death: None,
        requests: 0,
        answers: 0,
        trace,
    };
    if trace {
        eprintln!(
            "limits {max_head_bytes}/{max_body_bytes}, refused {refused}, stream {:?}",
            String::from_utf8_lossy(source)
        );
    }
    if u.is_empty() {
        // A plain seed: connect, one small request, then everything arrives.
        run.apply(Op::Send { bytes: 2 });
        run.apply(Op::Ready {
            readable: false,
            writable: true,
        });
    }
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        run.apply(op);
    }
    run.finish();
});

impl Run {
    fn apply(&mut self, op: Op) {
        if self.trace {
            eprintln!("{op:?}");
        }
        match op {
            Op::Arrive { bytes } => {
                if self.hung_up {
                    return;
                }
                let end = (self.taken + usize::from(bytes)).min(self.source.len());
                let piece = self.source[self.taken..end].to_vec();
                self.taken = end;
                self.arrive(&piece);
                self.conn.on_event(true, false, false);
            }
            Op::Repeat { times } => {
                if self.hung_up {
                    return;
                }
                let piece = self.arrived[self.last_piece..].to_vec();
                for _ in 0..times {
                    if piece.is_empty() || self.arrived.len() + piece.len() > MAX_STREAM_BYTES {
                        break;
                    }
                    self.arrive(&piece);
                }
                self.conn.on_event(true, false, false);
            }
            Op::Ready { readable, writable } => self.conn.on_event(readable, writable, false),
            Op::Window { bytes } => {
                self.conn.stream_mut().window = usize::from(bytes);
                self.conn.on_event(false, true, false);
            }
            Op::HangUp => self.hang_up(),
            Op::Send { bytes } => {
                if self.waiting.is_none() {
                    self.waiting = Some(usize::from(bytes));
                }
            }
        }
        self.service();
    }

    /// The end: the execution client sends the rest and hangs up, with readiness both ways.
    fn finish(&mut self) {
        let rest = self.source[self.taken..].to_vec();
        self.taken = self.source.len();
        if !self.hung_up {
            self.arrive(&rest);
        }
        self.hang_up();
        self.conn.on_event(true, true, true);
        self.service();
        assert!(
            self.dead && self.conn.is_dead(),
            "after a hang-up with readiness every way, the connection ends"
        );
        let written = self.conn.stream_mut().written.len();
        self.conn.on_event(true, true, true);
        assert!(
            self.conn.drive().is_none(),
            "a dead connection reports nothing"
        );
        assert_eq!(self.conn.stream_mut().written.len(), written);
        if self.trace {
            eprintln!(
                "{} requests, {} answers, {} bytes arrived",
                self.requests,
                self.answers,
                self.arrived.len()
            );
        }
    }

    /// Bytes reach the connection's socket; unread bytes pile up as a socket's buffer does, so
    /// a read returns all of them up to its buffer's size.
    fn arrive(&mut self, piece: &[u8]) {
        if piece.is_empty() {
            return;
        }
        self.last_piece = self.arrived.len();
        self.arrived.extend_from_slice(piece);
        let incoming = &mut self.conn.stream_mut().incoming;
        match incoming.back_mut() {
            Some(unread) => unread.extend_from_slice(piece),
            None => incoming.push_back(piece.to_vec()),
        }
    }

    fn hang_up(&mut self) {
        self.hung_up = true;
        self.conn.stream_mut().closed = true;
        self.conn.on_event(false, false, true);
    }

    /// Bytes of `arrived` the connection has read.
    fn consumed(&mut self) -> usize {
        let unread: usize = self.conn.stream_mut().incoming.iter().map(Vec::len).sum();
        self.arrived.len() - unread
    }

    /// Hands the waiting request on if the connection is idle, as the core does.
    fn hand_on(&mut self) {
        if !self.conn.is_idle() {
            return;
        }
        let Some(bytes) = self.waiting.take() else {
            return;
        };
        let body: Vec<u8> = (0..bytes).map(|i| b'a' + (i % 26) as u8).collect();
        let head = format!("{REQUEST_HEAD}Content-Length: {bytes}\r\n\r\n").into_bytes();
        self.requests_written.extend_from_slice(&head);
        self.requests_written.extend_from_slice(&body);
        let request = Rc::new(Request {
            body,
            call: None,
            method: Method::NewPayload(4),
            authorization: None,
            beacon: Rc::from("bn"),
            via: None,
            received_at: Instant::now(),
            serial: self.requests as u64,
        });
        self.conn.start(request, head);
        self.in_flight = true;
        self.requests += 1;
        // Bytes that arrived before it (and were not read, or the connection would have failed
        // idle) are now its answer's.
        assert_eq!(
            self.consumed(),
            self.answer_start,
            "idle means nothing read"
        );
    }

    /// Drives the connection as the event loop does after an event: until it reports nothing
    /// and wants no further service.
    fn service(&mut self) {
        self.hand_on();
        for _ in 0..MAX_DRIVES_PER_EVENT {
            let before = self.progress_mark();
            let wanted = self.conn.wants_service();
            match self.conn.drive() {
                Some(event) => {
                    assert!(!self.dead, "an event from a dead connection: {event:?}");
                    self.on_event(event);
                    self.hand_on();
                }
                None if !self.conn.wants_service() => {
                    self.check_settled();
                    return;
                }
                None => assert!(
                    !wanted || self.progress_mark() != before,
                    "wants_service() without progress: the loop would spin"
                ),
            }
        }
        panic!("no settling within {MAX_DRIVES_PER_EVENT} drives of one event");
    }

    /// What a `drive()` may change: bytes read, bytes written, idle or dead.
    fn progress_mark(&mut self) -> (usize, usize, bool, bool) {
        let consumed = self.consumed();
        let written = self.conn.stream_mut().written.len();
        (consumed, written, self.conn.is_idle(), self.conn.is_dead())
    }

    /// The connection wants no service: nothing may be left that needs it, since no readiness
    /// edge will announce bytes already in the socket, a hang-up already reported, or room to
    /// write that was never used up.
    fn check_settled(&mut self) {
        let written = self.conn.stream_mut().written.clone();
        if self.dead {
            assert!(self.conn.is_dead());
            let now = (self.consumed(), written.len());
            let at_death = *self.at_death.get_or_insert(now);
            assert_eq!(now, at_death, "a dead connection neither reads nor writes");
            return;
        }
        if !self.connected {
            return;
        }
        assert_eq!(
            written, self.requests_written,
            "every request handed on is written in full (writes never block here)"
        );
        let unread = self.consumed() < self.arrived.len();
        assert!(
            !unread && !self.hung_up,
            "settled with {} unread bytes (hung up: {}): they would wait for an edge that never comes",
            self.arrived.len() - self.consumed(),
            self.hung_up
        );
    }

    fn on_event(&mut self, event: OutboundEvent) {
        if self.trace {
            eprintln!("  -> {event:?}");
        }
        match event {
            OutboundEvent::Connected => {
                assert!(
                    !self.connected && !self.refused,
                    "connected twice or refused"
                );
                self.connected = true;
                assert!(self.conn.is_idle());
            }
            OutboundEvent::Answered {
                response,
                keep_alive,
            } => self.on_answer(response, keep_alive),
            OutboundEvent::Failed {
                error,
                answer_started,
            } => self.on_failure(error, answer_started),
        }
    }

    fn on_answer(&mut self, response: Response, keep_alive: bool) {
        assert!(self.in_flight, "an answer without a request");
        let expected = self.expected();
        let Expected::Answer {
            response: want,
            keep_alive: head_keep_alive,
            end,
        } = expected
        else {
            panic!("answered {response:?}, but an independent reading finds {expected:?}");
        };
        assert_eq!(response, want, "the answer is what its bytes say");
        assert!(
            !keep_alive || head_keep_alive,
            "kept alive against its head"
        );
        let end = self.answer_start + end;
        if head_keep_alive && !keep_alive {
            assert!(
                self.arrived.len() > end,
                "a keep-alive answer given up without bytes after it"
            );
        }
        self.in_flight = false;
        self.answers += 1;
        if keep_alive {
            assert!(self.conn.is_idle(), "kept alive, so idle");
            assert_eq!(
                self.consumed(),
                end,
                "the connection read exactly its answer, nothing of the next"
            );
            self.answer_start = end;
        } else {
            assert!(self.conn.is_dead(), "not kept alive, so dead");
            self.dead = true;
        }
    }

    fn on_failure(&mut self, error: UpstreamError, answer_started: bool) {
        assert!(self.conn.is_dead(), "failed, so dead");
        self.dead = true;
        if !self.connected {
            assert!(
                self.refused,
                "a connect failure only where refused: {error:?}"
            );
            assert!(!answer_started);
            return;
        }
        let consumed = self.consumed();
        if !self.in_flight {
            // Idle: the execution client closed, or sent bytes no request asked for.
            assert!(!answer_started, "no request, no answer");
            let extra = consumed > self.answer_start;
            match error {
                UpstreamError::Closed => assert!(self.hung_up && !extra, "closed with bytes"),
                UpstreamError::BadHead(_) => assert!(extra, "a bad head from no bytes"),
                other => panic!("an idle connection failed with {other:?}"),
            }
            return;
        }
        assert_eq!(
            answer_started,
            consumed > self.final_head_start(consumed),
            "answer_started is whether answer bytes were read ({} read for this request)",
            consumed - self.answer_start
        );
        let expected = self.expected();
        match error {
            UpstreamError::BadHead(_) => {
                assert_eq!(expected, Expected::BadHead, "a head error the bytes show")
            }
            UpstreamError::BadBody(e) => {
                assert_eq!(
                    expected,
                    Expected::BadBody(e),
                    "a body error the bytes show"
                )
            }
            UpstreamError::Closed => {
                assert!(self.hung_up, "closed without a hang-up");
                assert_eq!(consumed, self.arrived.len(), "closed before reading all");
                assert_eq!(expected, Expected::Incomplete, "closed mid-answer");
            }
            other => panic!("{other:?} cannot happen over a memory stream"),
        }
    }

    /// Where the final head starts among the `consumed` bytes of the answer in flight: after
    /// any complete interim (`1xx`) heads.
    fn final_head_start(&self, consumed: usize) -> usize {
        let mut at = self.answer_start;
        while let Ok(Some(head)) =
            parse_response_head(&self.arrived[at..consumed], self.max_head_bytes)
        {
            if !head.is_interim() {
                break;
            }
            at += head.head_bytes;
        }
        at
    }

    /// An independent reading of the answer in flight from the bytes that arrived.
    fn expected(&self) -> Expected {
        let bytes = &self.arrived[self.answer_start..];
        let mut at = 0;
        let head = loop {
            match parse_response_head(&bytes[at..], self.max_head_bytes) {
                Ok(None) => return Expected::Incomplete,
                Err(_) => return Expected::BadHead,
                Ok(Some(head)) if head.is_interim() => at += head.head_bytes,
                Ok(Some(head)) => break head,
            }
        };
        let start = at + head.head_bytes;
        let rest = &bytes[start..];
        let answer = |body: Vec<u8>, keep_alive: bool, end: usize| Expected::Answer {
            response: Response {
                status: head.status,
                content_type: head.content_type.clone(),
                body,
            },
            keep_alive,
            end,
        };
        match head.framing {
            Framing::Length(n) if n > self.max_body_bytes as u64 => {
                Expected::BadBody(BodyError::TooLarge)
            }
            Framing::Length(n) => {
                let n = n as usize;
                match rest.len() >= n {
                    true => answer(rest[..n].to_vec(), head.keep_alive, start + n),
                    false => Expected::Incomplete,
                }
            }
            framing => {
                let mut reader = BodyReader::new(framing, self.max_body_bytes);
                let mut body = Vec::new();
                match reader.feed(rest, &mut body) {
                    Err(e) => Expected::BadBody(e),
                    Ok(progress) if progress.done => {
                        answer(body, head.keep_alive, start + progress.consumed)
                    }
                    Ok(_) if self.hung_up && reader.on_eof().is_ok() => {
                        answer(body, false, bytes.len())
                    }
                    Ok(_) => Expected::Incomplete,
                }
            }
        }
    }
}
