//! Framing checks shared by the `http_request_head` and `http_response` targets: feeding a body
//! reader in pieces with every step checked, and the cut points to split inputs at.

use std::fmt::Debug;
use sync_proxy::http::body::{BodyError, BodyReader};

use sync_proxy::http::head::{Framing, HeadError};

/// Heads up to this size have every prefix checked; longer ones a sample.
pub const ALL_PREFIXES_BYTES: usize = 128;

/// What feeding a body reader produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub body: Vec<u8>,
    pub consumed: usize,
    pub done: bool,
    pub reader: BodyReader,
}

impl Outcome {
    /// What was read, leaving out the reader (whose limit differs between runs).
    pub fn read(&self) -> (&[u8], usize, bool) {
        (&self.body, self.consumed, self.done)
    }
}

/// Feeds `input` to a fresh reader in pieces ending at `cuts` (ascending), checking each step.
pub fn feed(
    framing: Framing,
    input: &[u8],
    max_body_bytes: usize,
    cuts: &[usize],
) -> Result<Outcome, BodyError> {
    let mut reader = BodyReader::new(framing, max_body_bytes);
    let mut body = Vec::new();
    let mut consumed = 0;
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        if end < start || end > input.len() {
            continue;
        }
        let piece = &input[start..end];
        start = end;
        let result = reader.feed(piece, &mut body);
        assert!(body.len() <= max_body_bytes, "body over its limit");
        let progress = result?;
        assert!(progress.consumed <= piece.len());
        assert_eq!(progress.done, reader.is_done());
        consumed += progress.consumed;
        assert!(body.len() <= consumed, "more payload than input");
        if progress.consumed < piece.len() {
            assert!(progress.done, "stopped early without finishing");
        }
        if progress.done {
            break;
        }
    }
    if reader.is_done() {
        // A finished reader takes nothing more.
        let again = reader.feed(input, &mut body)?;
        assert_eq!((again.consumed, again.done), (0, true));
    }
    Ok(Outcome {
        done: reader.is_done(),
        body,
        consumed,
        reader,
    })
}

/// Cut points derived from the input: thirds, and after every LF (where framing lines end).
pub fn input_cuts(input: &[u8]) -> Vec<usize> {
    let len = input.len();
    let mut cuts = vec![len / 3, len / 2, 2 * len / 3];
    cuts.extend(
        input
            .iter()
            .enumerate()
            .filter(|(_, byte)| **byte == b'\n')
            .map(|(at, _)| at + 1),
    );
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Proper prefix lengths of a `size`-byte head to check: all of them for short heads.
pub fn prefix_cuts(size: usize) -> Vec<usize> {
    if size <= ALL_PREFIXES_BYTES {
        return (0..size).collect();
    }
    let mut cuts: Vec<usize> = (0..16).map(|i| i * size / 16).collect();
    cuts.extend([size - 1, size - 2, size - 3, size - 4]);
    cuts
}

/// Parses a head at the start of `buf` with `parse` and checks what holds for every HTTP head:
/// errors map to a status, "need more" only below the limit, and the head depends only on its own
/// bytes (not on what follows, nor on any limit it fits), every proper prefix is "need more", and
/// a limit one byte short refuses it. `Some` when complete.
pub fn check_head<H: Clone + Debug + PartialEq>(
    buf: &[u8],
    max_head_bytes: usize,
    parse: fn(&[u8], usize) -> Result<Option<H>, HeadError>,
    head_bytes: fn(&H) -> usize,
) -> Option<H> {
    let head = match parse(buf, max_head_bytes) {
        Ok(Some(head)) => head,
        Ok(None) => {
            assert!(buf.len() < max_head_bytes, "need-more past the limit");
            return None;
        }
        Err(error) => {
            assert!(matches!(error.status(), 400 | 417 | 431 | 501), "{error:?}");
            assert!(!error.to_string().is_empty());
            return None;
        }
    };
    let size = head_bytes(&head);
    assert!(
        size > 0 && size <= buf.len() && size <= max_head_bytes,
        "head_bytes {size}"
    );
    assert_eq!(
        parse(&buf[..size], max_head_bytes).as_ref(),
        Ok(&Some(head.clone()))
    );
    assert_eq!(parse(buf, usize::MAX).as_ref(), Ok(&Some(head.clone())));
    assert_eq!(
        parse(buf, size - 1),
        Err(HeadError::TooLarge),
        "a limit below the head must refuse it"
    );
    for cut in prefix_cuts(size) {
        assert_eq!(
            parse(&buf[..cut], max_head_bytes),
            Ok(None),
            "prefix of {cut} of a {size}-byte head"
        );
    }
    Some(head)
}
