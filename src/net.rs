//! Socket helpers shared by both sides of the proxy: a read buffer that is zero-filled once and
//! reused, and in-place body reads.
//!
//! No unsafe code: buffers are initialised once when they grow (never again per read), and
//! bodies of known length are read with `Read::take` + `read_to_end`, which fills a vector's spare
//! capacity without initialising it first.

use std::io::{self, Read};

/// Bytes read per `read` call into an [`InputBuffer`]: room for a default-size request head
/// (16 KiB) in one read; bodies of known length bypass it.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Most read or write calls per readiness event, so one fast peer cannot starve the others.
pub const MAX_IO_ROUNDS: usize = 64;

/// Largest reservation made at once for a body of declared length: a few full-size payloads
/// (2 MB) fit exactly; a larger declared size grows as its bytes actually arrive.
pub const MAX_BODY_RESERVATION_BYTES: usize = 8 * 1024 * 1024;

/// What one read call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filled {
    /// Bytes read; 0 means the peer closed its side.
    pub bytes: usize,
    /// The socket had no more to give: the read came back shorter than asked, or hit
    /// `WouldBlock` after some bytes. With edge-triggered readiness new data raises a new event,
    /// so the caller can stop reading without spending a syscall on `WouldBlock`.
    pub drained: bool,
}

/// Unread bytes from a socket: `data[start..end]`, with the rest of `data` reused for the next
/// reads. It grows only when a read needs more room than it has.
#[derive(Debug, Default)]
pub struct InputBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl InputBuffer {
    /// An empty buffer; nothing is allocated until the first read.
    pub fn new() -> InputBuffer {
        InputBuffer::default()
    }

    /// The unread bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Number of unread bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// No unread bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` bytes as read.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops every unread byte.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Appends at most [`READ_CHUNK_BYTES`] read from `source`.
    pub fn read_from(&mut self, source: &mut impl Read) -> io::Result<Filled> {
        if self.start > 0 && self.data.len() - self.end < READ_CHUNK_BYTES {
            // Move the unread tail to the front rather than grow.
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = self.end + READ_CHUNK_BYTES;
        if self.data.len() < want {
            self.data.resize(want, 0);
        }
        let n = source.read(&mut self.data[self.end..want])?;
        self.end += n;
        Ok(Filled {
            bytes: n,
            drained: n < READ_CHUNK_BYTES,
        })
    }
}

/// Reads body bytes into `body` until it holds `expected` bytes, the source would block, or it
/// ends. `bytes: 0` with `body` short of `expected` means end of stream.
pub fn read_body(
    source: &mut impl Read,
    body: &mut Vec<u8>,
    expected: usize,
) -> io::Result<Filled> {
    let before = body.len();
    let remaining = expected.saturating_sub(before) as u64;
    if remaining == 0 {
        return Ok(Filled {
            bytes: 0,
            drained: false,
        });
    }
    // A lying Content-Length must not reserve 128 MiB up front; real bodies grow the buffer.
    body.reserve_exact((expected - before).min(MAX_BODY_RESERVATION_BYTES));
    match source.take(remaining).read_to_end(body) {
        // The limit was reached (the body is complete) or the stream ended.
        Ok(_) => Ok(Filled {
            bytes: body.len() - before,
            drained: false,
        }),
        // Bytes read before the error are kept in `body`: report them.
        Err(e) if body.len() > before && e.kind() == io::ErrorKind::WouldBlock => Ok(Filled {
            bytes: body.len() - before,
            drained: true,
        }),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that yields its chunks one per read, then WouldBlock.
    struct Chunks(Vec<Vec<u8>>);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let chunk = &mut self.0[0];
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    #[test]
    fn input_buffer_consumes_and_reuses_room() {
        let mut buffer = InputBuffer::new();
        let mut source = Chunks(vec![b"hello ".to_vec(), b"world".to_vec()]);
        assert_eq!(buffer.read_from(&mut source).unwrap().bytes, 6);
        buffer.consume(2);
        assert_eq!(buffer.bytes(), b"llo ");
        let filled = buffer.read_from(&mut source).unwrap();
        assert_eq!(
            filled,
            Filled {
                bytes: 5,
                drained: true
            }
        );
        assert_eq!(buffer.bytes(), b"llo world");
        buffer.consume(9);
        assert!(buffer.is_empty());
        assert!(buffer.read_from(&mut source).is_err());
    }

    #[test]
    fn read_body_stops_at_expected_and_keeps_partial_progress() {
        let mut body = Vec::new();
        let mut source = Chunks(vec![b"abc".to_vec(), b"defgh".to_vec()]);
        assert_eq!(read_body(&mut source, &mut body, 6).unwrap().bytes, 6);
        assert_eq!(body, b"abcdef");
        let mut body = Vec::new();
        let mut source = Chunks(vec![b"ab".to_vec()]);
        let filled = read_body(&mut source, &mut body, 6).unwrap();
        assert_eq!(
            filled,
            Filled {
                bytes: 2,
                drained: true
            }
        );
        assert!(
            read_body(&mut source, &mut body, 6).is_err(),
            "then WouldBlock"
        );
    }

    #[test]
    fn read_body_reports_end_of_stream_as_zero() {
        let mut body = Vec::new();
        let mut source: &[u8] = b"ab";
        assert_eq!(read_body(&mut source, &mut body, 6).unwrap().bytes, 2);
        assert_eq!(read_body(&mut source, &mut body, 6).unwrap().bytes, 0);
    }
}
