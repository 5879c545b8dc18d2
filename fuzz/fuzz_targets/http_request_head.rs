//! Fuzzes inbound request framing: arbitrary bytes are a client's byte stream, read as pipelined
//! request heads (`parse_request_head`), each followed by its body (`BodyReader`). Nothing may
//! panic, and the framing must not depend on how the bytes were split: a head is the same with
//! or without the bytes after it and under any limit it fits; every proper prefix of a head is
//! "need more"; a body decodes the same fed whole, one byte at a time or cut at points taken from
//! the input; the reader consumes no more than it is given, stops early only when done, never
//! holds more than its limit and never yields more payload than it consumed.
//!
//! It does not check what the proxy does with a request (that is `inbound_stream`) nor the exact
//! error of a given malformed head (the unit tests pin those).

#![no_main]

#[path = "common/framing.rs"]
mod framing;

use framing::{Outcome, feed, input_cuts};
use libfuzzer_sys::fuzz_target;
use sync_proxy::http::body::BodyError;
use sync_proxy::http::head::{Framing, RequestHead, Version, parse_request_head};

/// Head limit the fuzzer can cross with its default input sizes (the proxy's default is larger).
const MAX_HEAD_BYTES: usize = 1024;
/// Body limit the fuzzer can cross, so the `TooLarge` paths are reached.
const MAX_BODY_BYTES: usize = 256;
/// A body limit no fuzz input reaches, to tell limit errors from framing errors.
const UNLIMITED_BODY_BYTES: usize = 1 << 30;
/// Most pipelined requests followed in one input; enough to reach every state twice.
const MAX_MESSAGES: usize = 16;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    for _ in 0..MAX_MESSAGES {
        let Some(head) = check_head(rest) else {
            return;
        };
        let after_head = &rest[head.head_bytes..];
        let Some(consumed) = check_body(head.framing, after_head) else {
            return;
        };
        rest = &after_head[consumed..];
    }
});

/// Parses a head at the start of `buf` and checks it; `Some` when complete.
fn check_head(buf: &[u8]) -> Option<RequestHead> {
    let head = framing::check_head(buf, MAX_HEAD_BYTES, parse_request_head, |h| h.head_bytes)?;

    // Framing facts the proxy relies on.
    assert_ne!(
        head.framing,
        Framing::UntilClose,
        "requests never read until close"
    );
    assert_ne!(
        head.framing,
        Framing::Length(0),
        "an empty body is Framing::Empty"
    );
    if head.framing == Framing::Chunked || head.expect_continue {
        assert_eq!(head.version, Version::Http11, "{head:?}");
    }
    assert!(!head.path.is_empty());
    Some(head)
}

/// Reads a body of `framing` from `input` several ways and checks they agree; `Some(consumed)`
/// when the body completed.
fn check_body(framing: Framing, input: &[u8]) -> Option<usize> {
    let whole = feed(framing, input, MAX_BODY_BYTES, &[]);
    let every_byte: Vec<usize> = (1..input.len()).collect();
    assert_eq!(feed(framing, input, MAX_BODY_BYTES, &every_byte), whole);
    assert_eq!(
        feed(framing, input, MAX_BODY_BYTES, &input_cuts(input)),
        whole
    );

    // Under a larger limit only a `TooLarge` may change.
    if whole != Err(BodyError::TooLarge) {
        let unlimited = feed(framing, input, UNLIMITED_BODY_BYTES, &[]);
        assert_eq!(
            unlimited.as_ref().map(Outcome::read),
            whole.as_ref().map(Outcome::read)
        );
    }

    let outcome = whole.ok()?;
    if let Framing::Length(n) = framing
        && outcome.done
    {
        assert_eq!(outcome.consumed as u64, n);
        assert_eq!(outcome.body, input[..outcome.consumed]);
    }
    if framing == Framing::Empty {
        assert!(outcome.done && outcome.consumed == 0 && outcome.body.is_empty());
    }

    // The connection ends here: only a complete body is fine.
    let mut reader = outcome.reader.clone();
    match reader.on_eof() {
        Ok(()) => assert!(outcome.done, "a request body may not end at EOF"),
        Err(error) => {
            assert_eq!(error, BodyError::Truncated);
            assert!(!outcome.done);
        }
    }
    outcome.done.then_some(outcome.consumed)
}
