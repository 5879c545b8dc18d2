//! Fuzzes upstream response framing: arbitrary bytes are an execution client's byte stream, read
//! as a sequence of response heads (`parse_response_head`: interim `1xx`, then final ones on a
//! keep-alive connection), each followed by its body (`BodyReader`: length, chunked or until
//! close). Nothing may panic, and the framing must not depend on how the bytes were split: a head
//! is the same with or without the bytes after it and under any limit it fits; every proper
//! prefix of a head is "need more"; a body decodes the same fed whole, one byte at a time or cut
//! at points taken from the input; the reader consumes no more than it is given, stops early only
//! when done, never holds more than its limit and never yields more payload than it consumed;
//! EOF ends exactly the bodies delimited by it.
//!
//! It does not check the upstream connection state machine nor the exact error of a given
//! malformed head (the unit tests pin those).

#![no_main]

#[path = "common/framing.rs"]
mod framing;

use framing::{Outcome, feed, input_cuts};
use libfuzzer_sys::fuzz_target;
use sync_proxy::http::body::BodyError;
use sync_proxy::http::head::{Framing, ResponseHead, parse_response_head};

/// Head limit the fuzzer can cross with its default input sizes (the proxy's default is larger).
const MAX_HEAD_BYTES: usize = 1024;
/// Body limit the fuzzer can cross, so the `TooLarge` paths are reached.
const MAX_BODY_BYTES: usize = 256;
/// A body limit no fuzz input reaches, to tell limit errors from framing errors.
const UNLIMITED_BODY_BYTES: usize = 1 << 30;
/// Most responses followed in one input (interim ones included); enough to reach every state
/// twice.
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
fn check_head(buf: &[u8]) -> Option<ResponseHead> {
    let head = framing::check_head(buf, MAX_HEAD_BYTES, parse_response_head, |h| h.head_bytes)?;

    // Framing facts the proxy relies on (RFC 9112 §6.3).
    assert_ne!(
        head.framing,
        Framing::Length(0),
        "an empty body is Framing::Empty"
    );
    assert!(head.status <= 999, "status {}", head.status);
    assert_eq!(head.is_interim(), (100..200).contains(&head.status));
    if head.is_interim() || head.status == 204 || head.status == 304 {
        assert_eq!(head.framing, Framing::Empty, "{head:?}");
    }
    if head.framing == Framing::UntilClose {
        assert!(
            !head.keep_alive,
            "a close-delimited body cannot keep the connection"
        );
    }
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

    if framing == Framing::UntilClose {
        assert!(!outcome.done, "a close-delimited body ends only at EOF");
        assert_eq!(outcome.consumed, input.len());
        assert_eq!(outcome.body, input);
    }

    // The connection ends here: fine for a complete body or one delimited by the close.
    let mut reader = outcome.reader.clone();
    match reader.on_eof() {
        Ok(()) => {
            assert!(outcome.done || framing == Framing::UntilClose);
            assert!(reader.is_done());
        }
        Err(error) => {
            assert_eq!(error, BodyError::Truncated);
            assert!(!outcome.done && framing != Framing::UntilClose);
        }
    }
    outcome.done.then_some(outcome.consumed)
}
