//! Socket helpers shared by both sides of the proxy: bounded reads into growing buffers.
//!
//! Buffers are zero-filled before a read instead of using uninitialised memory: no unsafe code,
//! and the cost (a memset of at most one window) is small next to the copy the kernel does.

use std::io::{self, Read};

/// Bytes read per `read` call into a scratch buffer; 64 KiB matches the loopback socket buffer.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Most read or write calls per readiness event, so one fast peer cannot starve the others.
pub const MAX_IO_ROUNDS: usize = 64;

/// Appends at most `window` bytes read from `source` to `buf`.
pub fn read_append(source: &mut impl Read, buf: &mut Vec<u8>, window: usize) -> io::Result<usize> {
    let filled = buf.len();
    buf.resize(filled + window, 0);
    let result = source.read(&mut buf[filled..]);
    buf.truncate(filled + *result.as_ref().unwrap_or(&0));
    result
}

/// Appends bytes read from `source` to `buf` without growing it past `limit` bytes in all.
///
/// Callers only call it while `buf` is short of `limit`, so `Ok(0)` always means end of stream.
pub fn read_up_to(
    source: &mut impl Read,
    buf: &mut Vec<u8>,
    limit: usize,
    window: usize,
) -> io::Result<usize> {
    let room = limit.saturating_sub(buf.len()).min(window);
    debug_assert!(room > 0, "read_up_to called on a full buffer");
    read_append(source, buf, room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_up_to_never_passes_the_limit() {
        let mut source: &[u8] = b"0123456789";
        let mut buf = b"ab".to_vec();
        let n = read_up_to(&mut source, &mut buf, 6, 100).unwrap();
        assert_eq!(n, 4);
        assert_eq!(buf, b"ab0123");
    }

    #[test]
    fn read_append_keeps_only_what_was_read() {
        let mut source: &[u8] = b"xyz";
        let mut buf = Vec::new();
        assert_eq!(read_append(&mut source, &mut buf, 1024).unwrap(), 3);
        assert_eq!(buf, b"xyz");
        assert_eq!(read_append(&mut source, &mut buf, 1024).unwrap(), 0);
        assert_eq!(buf, b"xyz");
    }
}
