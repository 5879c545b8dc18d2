//! HTTP/1.x message bodies: reads a body delimited by length, chunked coding or connection close
//! out of arbitrarily split input, with a hard size limit.
//!
//! The reader is a state machine fed whatever bytes have arrived; it appends payload bytes to the
//! caller's buffer and reports how much input it consumed, so pipelined bytes after the body stay
//! with the caller. It never reads a socket and never allocates beyond the caller's buffer.

use std::fmt;

use crate::http::head::Framing;

/// Longest chunk-size line accepted, extensions included. Real clients send a few hex digits;
/// the bound stops a peer from making us scan an endless extension.
pub const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// Most trailer bytes accepted after the last chunk; trailers are read and discarded, so a small
/// bound is enough for any legitimate use.
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// Why a body could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The body is larger than the configured limit.
    TooLarge,
    /// The chunked coding is broken.
    BadChunk(&'static str),
    /// The connection ended before the body did.
    Truncated,
}

impl BodyError {
    /// The HTTP status that answers this error on the inbound side.
    pub fn status(self) -> u16 {
        match self {
            BodyError::TooLarge => 413,
            BodyError::BadChunk(_) | BodyError::Truncated => 400,
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge => f.write_str("body too large"),
            BodyError::BadChunk(what) => write!(f, "bad chunked body: {what}"),
            BodyError::Truncated => f.write_str("connection closed before the body ended"),
        }
    }
}

/// What one [`BodyReader::feed`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes used; the rest belongs to whatever follows the body.
    pub consumed: usize,
    /// The body is complete.
    pub done: bool,
}

/// Reads one message body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyReader {
    state: State,
    max_body_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// This many bytes of a `Content-Length` body are still to come.
    Length { remaining: u64 },
    /// Reading the hex size of the next chunk.
    ChunkSize {
        size: u64,
        digits: u8,
        line_bytes: usize,
    },
    /// Skipping a chunk extension up to the CR.
    ChunkExtension { size: u64, line_bytes: usize },
    /// Saw the CR ending a size line.
    ChunkSizeLf { size: u64 },
    /// Inside chunk data.
    ChunkData { remaining: u64 },
    /// Expecting the CR after chunk data.
    ChunkDataCr,
    /// Expecting the LF after chunk data.
    ChunkDataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart { trailer_bytes: usize },
    /// Inside a trailer line.
    TrailerLine { trailer_bytes: usize },
    /// Saw the CR ending a trailer line.
    TrailerLf { trailer_bytes: usize },
    /// Saw the CR of the final empty line.
    FinalLf,
    /// The body extends to the end of the connection.
    UntilClose,
    /// The body is complete.
    Done,
}

impl BodyReader {
    /// A reader for a body with the given framing and size limit.
    pub fn new(framing: Framing, max_body_bytes: usize) -> BodyReader {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => State::ChunkSize {
                size: 0,
                digits: 0,
                line_bytes: 0,
            },
            Framing::UntilClose => State::UntilClose,
        };
        BodyReader {
            state,
            max_body_bytes,
        }
    }

    /// The body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes body bytes from `input`, appending the payload to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, BodyError> {
        let mut at = 0;
        while at < input.len() && self.state != State::Done {
            at += self.step(&input[at..], out)?;
        }
        Ok(Progress {
            consumed: at,
            done: self.state == State::Done,
        })
    }

    /// The connection ended: fine only for bodies delimited by the close itself.
    pub fn on_eof(&mut self) -> Result<(), BodyError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(BodyError::Truncated),
        }
    }

    /// Advances the state machine over a non-empty `input`; returns the bytes used.
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, BodyError> {
        let Some(&byte) = input.first() else {
            return Ok(0);
        };
        match self.state {
            State::Length { remaining } => {
                let take = bounded_take(input.len(), remaining);
                self.append(&input[..take], out)?;
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 {
                    State::Done
                } else {
                    State::Length { remaining }
                };
                Ok(take)
            }
            State::UntilClose => {
                self.append(input, out)?;
                Ok(input.len())
            }
            State::ChunkData { remaining } => {
                let take = bounded_take(input.len(), remaining);
                self.append(&input[..take], out)?;
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 {
                    State::ChunkDataCr
                } else {
                    State::ChunkData { remaining }
                };
                Ok(take)
            }
            state => {
                self.state = self.next_framing_state(state, byte, out.len())?;
                Ok(1)
            }
        }
    }

    /// One byte of chunk framing (size lines, CRLFs, trailers).
    fn next_framing_state(
        &self,
        state: State,
        byte: u8,
        body_bytes: usize,
    ) -> Result<State, BodyError> {
        Ok(match state {
            State::ChunkSize {
                size,
                digits,
                line_bytes,
            } => {
                let line_bytes = line_bytes + 1;
                if line_bytes > MAX_CHUNK_LINE_BYTES {
                    return Err(BodyError::BadChunk("size line too long"));
                }
                match (byte, hex_value(byte)) {
                    (_, Some(value)) => {
                        // 16 hex digits fill a u64; more would overflow.
                        if digits >= 16 {
                            return Err(BodyError::BadChunk("chunk size overflows"));
                        }
                        State::ChunkSize {
                            size: (size << 4) | u64::from(value),
                            digits: digits + 1,
                            line_bytes,
                        }
                    }
                    _ if digits == 0 => return Err(BodyError::BadChunk("missing chunk size")),
                    (b'\r', _) => State::ChunkSizeLf { size },
                    (b';' | b' ' | b'\t', _) => State::ChunkExtension { size, line_bytes },
                    _ => return Err(BodyError::BadChunk("invalid chunk size")),
                }
            }
            State::ChunkExtension { size, line_bytes } => {
                let line_bytes = line_bytes + 1;
                if line_bytes > MAX_CHUNK_LINE_BYTES {
                    return Err(BodyError::BadChunk("size line too long"));
                }
                match byte {
                    b'\r' => State::ChunkSizeLf { size },
                    b'\n' => return Err(BodyError::BadChunk("bare LF in size line")),
                    _ => State::ChunkExtension { size, line_bytes },
                }
            }
            State::ChunkSizeLf { size } => match byte {
                b'\n' if size == 0 => State::TrailerStart { trailer_bytes: 0 },
                b'\n' => {
                    if self.exceeds_limit(body_bytes, size) {
                        return Err(BodyError::TooLarge);
                    }
                    State::ChunkData { remaining: size }
                }
                _ => return Err(BodyError::BadChunk("expected LF after size")),
            },
            State::ChunkDataCr => match byte {
                b'\r' => State::ChunkDataLf,
                _ => return Err(BodyError::BadChunk("expected CR after data")),
            },
            State::ChunkDataLf => match byte {
                b'\n' => State::ChunkSize {
                    size: 0,
                    digits: 0,
                    line_bytes: 0,
                },
                _ => return Err(BodyError::BadChunk("expected LF after data")),
            },
            State::TrailerStart { trailer_bytes } => match byte {
                b'\r' => State::FinalLf,
                _ => trailer_byte(trailer_bytes, State::TrailerLine { trailer_bytes })?,
            },
            State::TrailerLine { trailer_bytes } => match byte {
                b'\r' => trailer_byte(trailer_bytes, State::TrailerLf { trailer_bytes })?,
                b'\n' => return Err(BodyError::BadChunk("bare LF in trailer")),
                _ => trailer_byte(trailer_bytes, State::TrailerLine { trailer_bytes })?,
            },
            State::TrailerLf { trailer_bytes } => match byte {
                b'\n' => trailer_byte(trailer_bytes, State::TrailerStart { trailer_bytes })?,
                _ => return Err(BodyError::BadChunk("expected LF after trailer")),
            },
            State::FinalLf => match byte {
                b'\n' => State::Done,
                _ => return Err(BodyError::BadChunk("expected LF at end")),
            },
            State::Length { .. } | State::ChunkData { .. } | State::UntilClose | State::Done => {
                state
            }
        })
    }

    /// Chunk sizes are checked before their data arrives, so a huge declared chunk is refused
    /// at once instead of after buffering up to the limit.
    fn exceeds_limit(&self, body_bytes: usize, more: u64) -> bool {
        let limit = self.max_body_bytes as u64;
        (body_bytes as u64).saturating_add(more) > limit
    }

    fn append(&self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        if out.len().saturating_add(bytes.len()) > self.max_body_bytes {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(bytes);
        Ok(())
    }
}

/// Advances the trailer byte count, refusing trailers beyond [`MAX_TRAILER_BYTES`].
fn trailer_byte(trailer_bytes: usize, next: State) -> Result<State, BodyError> {
    let count = trailer_bytes + 1;
    if count > MAX_TRAILER_BYTES {
        return Err(BodyError::BadChunk("trailers too long"));
    }
    Ok(match next {
        State::TrailerLine { .. } => State::TrailerLine {
            trailer_bytes: count,
        },
        State::TrailerLf { .. } => State::TrailerLf {
            trailer_bytes: count,
        },
        State::TrailerStart { .. } => State::TrailerStart {
            trailer_bytes: count,
        },
        other => other,
    })
}

fn bounded_take(available: usize, remaining: u64) -> usize {
    usize::try_from(remaining).map_or(available, |remaining| available.min(remaining))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNKED: &[u8] =
        b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: yes\r\n\r\n";
    const DECODED: &[u8] = b"Wikipedia in\r\n\r\nchunks.";

    fn read_all(framing: Framing, input: &[u8], max: usize) -> Result<(Vec<u8>, usize), BodyError> {
        let mut reader = BodyReader::new(framing, max);
        let mut out = Vec::new();
        let progress = reader.feed(input, &mut out)?;
        assert!(progress.done, "body incomplete");
        Ok((out, progress.consumed))
    }

    #[test]
    fn chunked_whole_input_decodes() {
        let (out, consumed) = read_all(Framing::Chunked, CHUNKED, 1 << 20).unwrap();
        assert_eq!(out, DECODED);
        assert_eq!(consumed, CHUNKED.len());
    }

    #[test]
    fn chunked_every_split_point_decodes_the_same() {
        for cut in 0..=CHUNKED.len() {
            let mut reader = BodyReader::new(Framing::Chunked, 1 << 20);
            let mut out = Vec::new();
            let first = reader.feed(&CHUNKED[..cut], &mut out).unwrap();
            assert_eq!(first.consumed, cut, "cut at {cut}");
            let second = reader.feed(&CHUNKED[cut..], &mut out).unwrap();
            assert!(second.done, "cut at {cut}");
            assert_eq!(out, DECODED, "cut at {cut}");
        }
    }

    #[test]
    fn chunked_one_byte_at_a_time_decodes() {
        let mut reader = BodyReader::new(Framing::Chunked, 1 << 20);
        let mut out = Vec::new();
        for byte in CHUNKED.chunks(1) {
            reader.feed(byte, &mut out).unwrap();
        }
        assert!(reader.is_done());
        assert_eq!(out, DECODED);
    }

    #[test]
    fn chunked_followed_by_pipelined_bytes_leaves_them() {
        let mut input = CHUNKED.to_vec();
        input.extend_from_slice(b"POST / HTTP/1.1\r\n");
        let (out, consumed) = read_all(Framing::Chunked, &input, 1 << 20).unwrap();
        assert_eq!(out, DECODED);
        assert_eq!(consumed, CHUNKED.len());
    }

    #[test]
    fn chunked_over_limit_is_too_large() {
        assert_eq!(
            read_all(Framing::Chunked, CHUNKED, 10),
            Err(BodyError::TooLarge)
        );
        assert_eq!(BodyError::TooLarge.status(), 413);
    }

    #[test]
    fn chunked_broken_framing_is_refused() {
        let cases: [&[u8]; 8] = [
            b"\r\n",
            b"g\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikiX\r\n",
            b"4\r\nWiki\rX",
            b"0\r\n\r\r",
            b"11111111111111111\r\n",
            b"0\r\nTrailer\n",
        ];
        for case in cases {
            let mut reader = BodyReader::new(Framing::Chunked, 1 << 20);
            let result = reader.feed(case, &mut Vec::new());
            assert!(
                matches!(result, Err(BodyError::BadChunk(_))),
                "{:?}: {result:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn chunked_endless_extension_is_refused() {
        let mut input = b"1;".to_vec();
        input.resize(MAX_CHUNK_LINE_BYTES + 10, b'x');
        let mut reader = BodyReader::new(Framing::Chunked, 1 << 20);
        assert!(reader.feed(&input, &mut Vec::new()).is_err());
    }

    #[test]
    fn chunked_endless_trailer_is_refused() {
        let mut input = b"0\r\nX: ".to_vec();
        input.resize(MAX_TRAILER_BYTES + 10, b'x');
        let mut reader = BodyReader::new(Framing::Chunked, 1 << 20);
        assert!(reader.feed(&input, &mut Vec::new()).is_err());
    }

    #[test]
    fn chunked_eof_midway_is_truncated() {
        let mut reader = BodyReader::new(Framing::Chunked, 1 << 20);
        reader.feed(&CHUNKED[..10], &mut Vec::new()).unwrap();
        assert_eq!(reader.on_eof(), Err(BodyError::Truncated));
    }

    #[test]
    fn length_every_split_point_reads_exactly() {
        let body = b"{\"jsonrpc\":\"2.0\"}GET";
        for cut in 0..=17 {
            let mut reader = BodyReader::new(Framing::Length(17), 1 << 20);
            let mut out = Vec::new();
            let first = reader.feed(&body[..cut], &mut out).unwrap();
            assert_eq!(first.done, cut == 17);
            let second = reader.feed(&body[cut..], &mut out).unwrap();
            assert!(second.done);
            assert_eq!(first.consumed + second.consumed, 17);
            assert_eq!(out, &body[..17]);
        }
    }

    #[test]
    fn length_over_limit_is_too_large() {
        assert_eq!(
            read_all(Framing::Length(5), b"12345", 4),
            Err(BodyError::TooLarge)
        );
    }

    #[test]
    fn empty_is_done_at_once() {
        let reader = BodyReader::new(Framing::Empty, 0);
        assert!(reader.is_done());
    }

    #[test]
    fn until_close_ends_at_eof() {
        let mut reader = BodyReader::new(Framing::UntilClose, 1 << 20);
        let mut out = Vec::new();
        let progress = reader.feed(b"abc", &mut out).unwrap();
        assert!(!progress.done);
        reader.on_eof().unwrap();
        assert!(reader.is_done());
        assert_eq!(out, b"abc");
    }
}
