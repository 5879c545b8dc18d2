//! Socket helpers shared by both sides of the proxy: per-connection input buffers that hold only
//! unparsed bytes (reads go through one shared, zero-filled-once buffer), and in-place body
//! reads.
//!
//! No unsafe code: the shared buffer is initialised once (never again per read), and
//! bodies of known length are read with `Read::take` + `read_to_end`, which fills a vector's spare
//! capacity without initialising it first when the reader implements `read_buf` (`std`'s
//! `TcpStream` does; large bodies are read through one, see [`InPlaceReader`]).

use std::cell::RefCell;
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

/// Unread bytes from a socket: `data[start..]`.
///
/// Every read lands first in one buffer shared by all connections (the loop is
/// single-threaded), and only the bytes of it not yet parsed are copied here. A connection
/// whose requests were all parsed holds no allocation, so a thousand idle keep-alive
/// connections cost no read buffers; a busy one pays a copy of what it reads (a few hundred
/// bytes per Engine API call; bodies of known length bypass it).
#[derive(Debug, Default)]
pub struct InputBuffer {
    data: Vec<u8>,
    start: usize,
}

thread_local! {
    /// The read buffer all connections of the thread share: zero-filled once, reused by every
    /// read.
    static SHARED_READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl InputBuffer {
    /// An empty buffer; nothing is allocated until bytes are left over from a read.
    pub fn new() -> InputBuffer {
        InputBuffer::default()
    }

    /// The unread bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// Number of unread bytes.
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// No unread bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    /// Marks `n` bytes as read; once nothing is left, the allocation is given back.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.data.len());
        if self.start == self.data.len() {
            self.clear();
        }
    }

    /// Drops every unread byte, and the allocation.
    pub fn clear(&mut self) {
        self.data = Vec::new();
        self.start = 0;
    }

    /// Reads at most [`READ_CHUNK_BYTES`] from `source` and keeps them.
    pub fn read_from(&mut self, source: &mut impl Read) -> io::Result<Filled> {
        SHARED_READ_BUFFER.with_borrow_mut(|shared| {
            if shared.len() < READ_CHUNK_BYTES {
                shared.resize(READ_CHUNK_BYTES, 0);
            }
            let n = source.read(&mut shared[..READ_CHUNK_BYTES])?;
            self.append(&shared[..n]);
            Ok(Filled {
                bytes: n,
                drained: n < READ_CHUNK_BYTES,
            })
        })
    }

    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // Parsed bytes at the front go before the buffer grows: amortised O(1) per byte.
        if self.start > 0 && self.data.len() + bytes.len() > self.data.capacity() {
            self.data.drain(..self.start);
            self.start = 0;
        }
        self.data.extend_from_slice(bytes);
    }
}

/// Large body buffers kept for reuse after their requests are gone.
const POOLED_BODIES: usize = 2;

/// Largest buffer kept: a full block's payload fits, and the pool never holds more than
/// `POOLED_BODIES` × this (8 MiB) after an unusually large body.
const POOLED_BODY_MAX_BYTES: usize = 4 * 1024 * 1024;

thread_local! {
    /// Buffers of finished large bodies: a new body of about the same size reuses one, so its
    /// pages are already mapped. Without it every 2 MB body was a fresh allocation, which glibc
    /// (and musl always) maps anew: ~280 page faults per request with glibc, ~500 with musl,
    /// each a kernel entry and a page cleared, and the largest part of the CPU of a 2 MB
    /// request after the copies.
    static BODY_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer for a body of `capacity` bytes: a pooled one that fits (at most 1/4
/// larger), else a new one with 1/8 to spare, so the next body of about the same size fits it.
pub fn body_buffer(capacity: usize) -> Vec<u8> {
    if capacity < IN_PLACE_BODY_BYTES {
        return Vec::with_capacity(capacity);
    }
    let reused = BODY_POOL.with_borrow_mut(|pool| {
        let fits = |b: &Vec<u8>| (capacity..=capacity + capacity / 4).contains(&b.capacity());
        let at = pool.iter().position(fits)?;
        Some(pool.swap_remove(at))
    });
    match reused {
        Some(mut buffer) => {
            buffer.clear();
            buffer
        }
        None => Vec::with_capacity(capacity + capacity / 8),
    }
}

/// Gives a finished large body's buffer back for [`body_buffer`]; small ones and ones over
/// [`POOLED_BODY_MAX_BYTES`] are just freed, and the pool keeps at most [`POOLED_BODIES`] (the
/// newest).
pub fn recycle_body(body: Vec<u8>) {
    if !(IN_PLACE_BODY_BYTES..=POOLED_BODY_MAX_BYTES).contains(&body.capacity()) {
        return;
    }
    BODY_POOL.with_borrow_mut(|pool| {
        if pool.len() >= POOLED_BODIES {
            pool.remove(0);
        }
        pool.push(body);
    });
}

/// Bodies at least this large are read through [`InPlaceReader`]'s duplicate descriptor.
pub const IN_PLACE_BODY_BYTES: usize = 64 * 1024;

/// Reads a large body of known length from a `mio` socket without zero-filling the buffer
/// first.
///
/// `read_to_end` fills a vector's spare capacity without initialising it only for readers that
/// implement `read_buf` themselves; `std::net::TcpStream` does, `mio`'s stream does not, so
/// through `mio` every byte of a 2 MB body was zeroed (a 2 MB `memset`) before the kernel
/// copied into it. Without unsafe code the way to `std`'s reader is a second descriptor of the
/// same socket (`dup`, safe through `OwnedFd`): one per large body, closed when it is dropped.
/// Other streams (in-memory ones in tests and fuzzing) and small bodies are read as before.
#[derive(Debug, Default)]
pub struct InPlaceReader(Option<std::net::TcpStream>);

impl InPlaceReader {
    /// [`read_body`] from `source`, through the duplicate when `source` is a `mio` socket and
    /// the body is large.
    pub fn read_body<S: Read + 'static>(
        &mut self,
        source: &mut S,
        body: &mut Vec<u8>,
        expected: usize,
    ) -> io::Result<Filled> {
        if self.0.is_none() && expected >= IN_PLACE_BODY_BYTES {
            let socket = (source as &mut dyn std::any::Any).downcast_mut::<mio::net::TcpStream>();
            if let Some(socket) = socket {
                use std::os::fd::AsFd;
                // Failing to duplicate (out of descriptors) only costs the zero-filling.
                self.0 = socket
                    .as_fd()
                    .try_clone_to_owned()
                    .ok()
                    .map(std::net::TcpStream::from);
            }
        }
        match &mut self.0 {
            Some(socket) => read_body(socket, body, expected),
            None => read_body(source, body, expected),
        }
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
    fn body_pool_reuses_a_large_buffer_and_keeps_no_huge_one() {
        let mut body = body_buffer(1 << 20);
        body.resize(1 << 20, 7);
        let address = body.as_ptr();
        recycle_body(body);
        let reused = body_buffer(1 << 20);
        assert_eq!(reused.as_ptr(), address, "the same allocation comes back");
        assert!(reused.is_empty());
        recycle_body(Vec::with_capacity(POOLED_BODY_MAX_BYTES + 1));
        assert!(
            BODY_POOL
                .with_borrow(|pool| pool.iter().all(|b| b.capacity() <= POOLED_BODY_MAX_BYTES))
        );
        let small = body_buffer(100);
        assert!(small.capacity() >= 100 && small.capacity() < IN_PLACE_BODY_BYTES);
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
