//! Just enough blocking HTTP/1.1 for the proxy benchmark: reads one message (head plus a
//! `Content-Length` body) at a time from a keep-alive stream into a reused buffer, for the mock
//! execution clients and for the load generator alike.
//!
//! It does not do chunked bodies, `Expect: 100-continue` or pipelining beyond what the buffer
//! happens to hold: every party in the benchmark sends `Content-Length` and waits for answers.

use std::io::{self, Read};
use std::net::TcpStream;
use std::ops::Range;

/// Largest head accepted; every party here sends a few hundred bytes of head.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header lines parsed; nginx and sync-proxy send fewer than ten.
const MAX_HEADERS: usize = 32;

/// Initial buffer size: a 1 KB request and its head fit many times over; a 2 MB body grows it
/// once per connection.
const INITIAL_BUFFER_BYTES: usize = 64 * 1024;

/// One message read by [`Reader::read`].
#[derive(Clone, Debug)]
pub struct Message {
    /// HTTP status of an answer; 0 for a request.
    pub status: u16,
    /// Whether the connection stays open after this message.
    pub keep_alive: bool,
    /// Where the body is in the reader's buffer (valid until the next read).
    pub body: Range<usize>,
}

/// A reusable read buffer for one connection.
pub struct Reader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Reader {
    /// An empty reader.
    pub fn new() -> Reader {
        Reader {
            buf: vec![0; INITIAL_BUFFER_BYTES],
            start: 0,
            end: 0,
        }
    }

    /// Reads the next request (`is_request`) or answer; `None` when the peer closed cleanly
    /// between messages.
    pub fn read(
        &mut self,
        stream: &mut TcpStream,
        is_request: bool,
    ) -> io::Result<Option<Message>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let head = loop {
            if let Some(head) = parse_head(&self.buf[self.start..self.end], is_request)? {
                break head;
            }
            if self.end - self.start > MAX_HEAD_BYTES {
                return Err(invalid("head too large"));
            }
            if !self.fill(stream)? {
                return if self.start == self.end {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        };
        let total = head.head_bytes + head.body_bytes;
        if self.start + total > self.buf.len() {
            self.compact();
            if total > self.buf.len() {
                self.buf.resize(total, 0);
            }
        }
        while self.end - self.start < total {
            if !self.fill(stream)? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let body = self.start + head.head_bytes..self.start + total;
        self.start += total;
        Ok(Some(Message {
            status: head.status,
            keep_alive: head.keep_alive,
            body,
        }))
    }

    /// The bytes of a range returned by [`Reader::read`].
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Reads more bytes; false at end of stream.
    fn fill(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        if self.end == self.buf.len() {
            self.compact();
            if self.end == self.buf.len() {
                let doubled = self.buf.len() * 2;
                self.buf.resize(doubled, 0);
            }
        }
        loop {
            match stream.read(&mut self.buf[self.end..]) {
                Ok(read) => {
                    self.end += read;
                    return Ok(read > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves the unread bytes to the front of the buffer.
    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }
}

/// `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the head of a message says about its framing.
struct Head {
    head_bytes: usize,
    body_bytes: usize,
    status: u16,
    keep_alive: bool,
}

fn parse_head(bytes: &[u8], is_request: bool) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (head_bytes, version, status, headers) = if is_request {
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => (n, request.version, 0, request.headers),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(&format!("bad request head: {e}"))),
        }
    } else {
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => (
                n,
                response.version,
                response.code.unwrap_or(0),
                response.headers,
            ),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(&format!("bad answer head: {e}"))),
        }
    };
    let mut body_bytes = None;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    for header in headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(header.value).map_err(|_| invalid("content-length"))?;
            body_bytes = Some(
                text.trim()
                    .parse::<usize>()
                    .map_err(|_| invalid("content-length"))?,
            );
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("chunked bodies are not supported by the benchmark"));
        } else if header.name.eq_ignore_ascii_case("connection") {
            let value = String::from_utf8_lossy(header.value).to_ascii_lowercase();
            connection_close |= value.contains("close");
            connection_keep_alive |= value.contains("keep-alive");
        }
    }
    let body_bytes = match body_bytes {
        Some(n) => n,
        None if is_request || status == 204 || status == 304 => 0,
        None => return Err(invalid("answer without Content-Length")),
    };
    let keep_alive = match version {
        Some(1) => !connection_close,
        _ => connection_keep_alive,
    };
    Ok(Some(Head {
        head_bytes,
        body_bytes,
        status,
        keep_alive,
    }))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}
