//! JSON-RPC envelope inspection of Engine API requests and answers, and the answers the proxy
//! builds itself (errors, `SYNCING`, the `--ack immediate` answer, multiplexed results).
//!
//! Bodies are forwarded byte for byte: this module only reads them, in one validating pass
//! without a DOM or a copy of `params`, whatever the key order. The scanner walks the JSON
//! structure itself with a nesting limit; it recognises plain strings (printable ASCII without
//! escapes: every hex value of an Engine API body) with `memchr2` and a vectorised check,
//! integers and literals directly, and hands every other scalar (escapes, non-ASCII,
//! fractions, exponents) to serde_json.
//! It does not route, track beacon nodes or keep time.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use crate::engine::Method;

/// A 32-byte hash (block hash, head block hash).
pub type Hash32 = [u8; 32];

/// JSON-RPC and Engine API error codes used by the proxy.
pub mod code {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist or is not available.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal JSON-RPC error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The payload build process does not exist or is not available (Engine API).
    pub const UNKNOWN_PAYLOAD: i64 = -38001;
}

/// What the proxy reads from one JSON-RPC request.
///
/// A field the method does not read, or that is absent or `null` in the request, is `None`;
/// one that is present but malformed makes the request `InvalidParams` instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Raw JSON text of `id` exactly as sent (`1`, `"a"`, `null`); `null` when absent.
    pub id: Box<[u8]>,
    /// The classified method.
    pub method: Method,
    /// The method name as sent (escapes decoded).
    pub method_name: Box<str>,
    /// `newPayload` `params[0].timestamp`, fork choice `params[1].timestamp`,
    /// `builder_payloadAttributes` `params[0].timestamp`.
    pub timestamp: Option<u64>,
    /// `builder_payloadAttributes` `params[0].slot`, else the Amsterdam `slotNumber` of the
    /// payload (`newPayload` `params[0]`) or of the payload attributes (fork choice `params[1]`).
    pub slot: Option<u64>,
    /// `newPayload` `params[0].blockNumber`.
    pub block_number: Option<u64>,
    /// `newPayload` `params[0].blockHash`.
    pub block_hash: Option<Hash32>,
    /// Fork choice `params[0].headBlockHash`; for `builder_payloadAttributes` the head it
    /// builds on (`headBlockHash`, else the Flashbots `blockHash`, else `headHash`).
    pub head_block_hash: Option<Hash32>,
    /// Fork choice `params[1]` is a payload attributes object (a block build starts).
    pub has_payload_attributes: bool,
    /// `getPayload` `params[0]`, the 8-byte payload id.
    pub payload_id: Option<[u8; 8]>,
    /// A digest of `params[1..]` (whitespace aside): a `newPayload`'s versioned hashes, beacon
    /// root and requests, which a verdict on the block depends on as much as on its hash.
    pub params_digest: u64,
}

/// A request body that is valid JSON-RPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inspected {
    /// A single call.
    Call(Call),
    /// A batch (JSON array) of `len` elements, forwarded as one unit and not looked into.
    Batch {
        /// Number of elements in the batch.
        len: usize,
    },
}

/// Why a request body is refused; nothing refused is forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InspectError {
    /// Malformed JSON anywhere in the body, or nesting deeper than the proxy accepts.
    Parse,
    /// Valid JSON but not a JSON-RPC request; `id` is the request's own id when it was valid.
    InvalidRequest {
        /// Raw JSON text of a valid `id`, if one was found.
        id: Option<Box<[u8]>>,
        /// What is wrong.
        reason: &'static str,
    },
    /// A JSON-RPC request whose parameters the proxy reads are malformed.
    InvalidParams {
        /// Raw JSON text of the request's `id` (`null` when absent).
        id: Box<[u8]>,
        /// What is wrong.
        reason: &'static str,
    },
}

impl InspectError {
    /// The JSON-RPC error code answered for this error.
    pub fn code(&self) -> i64 {
        match self {
            InspectError::Parse => code::PARSE_ERROR,
            InspectError::InvalidRequest { .. } => code::INVALID_REQUEST,
            InspectError::InvalidParams { .. } => code::INVALID_PARAMS,
        }
    }

    /// The raw `id` to echo, when the request had a valid one.
    pub fn id(&self) -> Option<&[u8]> {
        match self {
            InspectError::Parse => None,
            InspectError::InvalidRequest { id, .. } => id.as_deref(),
            InspectError::InvalidParams { id, .. } => Some(id),
        }
    }

    /// The complete JSON-RPC error answer for this error.
    pub fn body(&self) -> Vec<u8> {
        error_body(self.id().unwrap_or(b"null"), self.code(), &self.to_string())
    }
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InspectError::Parse => f.write_str("Parse error"),
            InspectError::InvalidRequest { reason, .. } => write!(f, "Invalid request: {reason}"),
            InspectError::InvalidParams { reason, .. } => write!(f, "Invalid params: {reason}"),
        }
    }
}

/// Inspects a request body: the whole body is validated as JSON in one pass, and only the
/// envelope, `params[0]` and `params[1]` are looked into.
pub fn inspect(body: &[u8]) -> Result<Inspected, InspectError> {
    let mut scanner = Scanner::new(body);
    match scanner.peek() {
        Some(b'{') => {
            let mut envelope = Envelope::default();
            scanner
                .object(|scanner, key| envelope.member(scanner, key))
                .and_then(|()| scanner.end())
                .map_err(|Malformed| InspectError::Parse)?;
            envelope.call().map(Inspected::Call)
        }
        Some(b'[') => {
            let mut len = 0;
            scanner
                .array(|scanner, _| {
                    len += 1;
                    scanner.value().map(drop)
                })
                .and_then(|()| scanner.end())
                .map_err(|Malformed| InspectError::Parse)?;
            if len == 0 {
                return Err(InspectError::InvalidRequest {
                    id: None,
                    reason: "empty batch",
                });
            }
            Ok(Inspected::Batch { len })
        }
        _ => {
            scanner
                .value()
                .and_then(|_| scanner.end())
                .map_err(|Malformed| InspectError::Parse)?;
            Err(InspectError::InvalidRequest {
                id: None,
                reason: "a request must be a JSON object or a batch array",
            })
        }
    }
}

/// The `status` of an Engine API payload status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadStatus {
    /// `VALID`.
    Valid,
    /// `INVALID`.
    Invalid,
    /// `SYNCING`.
    Syncing,
    /// `ACCEPTED`.
    Accepted,
    /// `INVALID_BLOCK_HASH` (`newPayloadV1`/`V2` only).
    InvalidBlockHash,
}

impl PayloadStatus {
    /// The status as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadStatus::Valid => "VALID",
            PayloadStatus::Invalid => "INVALID",
            PayloadStatus::Syncing => "SYNCING",
            PayloadStatus::Accepted => "ACCEPTED",
            PayloadStatus::InvalidBlockHash => "INVALID_BLOCK_HASH",
        }
    }

    /// Parses the wire form; unknown statuses are `None`.
    fn parse(text: &[u8]) -> Option<PayloadStatus> {
        match text {
            b"VALID" => Some(PayloadStatus::Valid),
            b"INVALID" => Some(PayloadStatus::Invalid),
            b"SYNCING" => Some(PayloadStatus::Syncing),
            b"ACCEPTED" => Some(PayloadStatus::Accepted),
            b"INVALID_BLOCK_HASH" => Some(PayloadStatus::InvalidBlockHash),
            _ => None,
        }
    }
}

impl fmt::Display for PayloadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the proxy reads from an execution client's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnswerFacts {
    /// `newPayload`: `result.status`; fork choice: `result.payloadStatus.status`.
    pub status: Option<PayloadStatus>,
    /// Fork choice: `result.payloadId`.
    pub payload_id: Option<[u8; 8]>,
    /// `error.code`, when the answer is an error with an integer code.
    pub error_code: Option<i64>,
    /// The answer is valid JSON with a `result` member and no `error`: the call succeeded.
    pub has_result: bool,
    /// A digest of the answer's raw `id` text ([`id_digest`]), to tell another request's answer.
    pub id_digest: Option<u64>,
}

/// A digest of a raw JSON `id` text (FNV-1a), to compare an answer's id with the request's
/// without keeping either.
pub fn id_digest(raw: &[u8]) -> u64 {
    raw.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A digest of JSON text with whitespace left out (so re-formatted parameters digest alike):
/// eight bytes per step, each folded in with a 64×64→128-bit multiply. Compact text, what
/// beacon nodes send, is digested in place; text with whitespace is compacted first.
fn params_digest(text: &[u8]) -> u64 {
    let has_whitespace = text.iter().fold(false, |any, &b| {
        any | matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
    });
    if has_whitespace {
        let compact: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        return fold_digest(&compact);
    }
    fold_digest(text)
}

fn fold_digest(bytes: &[u8]) -> u64 {
    #[inline(always)]
    fn mix(hash: u64, word: u64) -> u64 {
        let product = u128::from(hash ^ word) * 0x9e37_79b9_7f4a_7c15;
        (product as u64) ^ ((product >> 64) as u64)
    }
    let mut hash = 0x243f_6a88_85a3_08d3 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = mix(hash, u64::from_le_bytes(word));
    }
    let mut word = [0u8; 8];
    word[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(hash, u64::from_le_bytes(word))
}

/// Reads an execution client's answer to `method`; anything unreadable yields the default.
pub fn inspect_answer(method: Method, body: &[u8]) -> AnswerFacts {
    read_answer(method, body).unwrap_or_default()
}

/// `{"jsonrpc":"2.0","id":<id>,"error":{"code":<code>,"message":<message>}}`.
///
/// An `id` that is not a single JSON string, number or null is answered as `null`, so the
/// body is always valid JSON.
pub fn error_body(id: &[u8], code: i64, message: &str) -> Vec<u8> {
    let mut body = envelope_head(id, message.len() + 64);
    body.extend_from_slice(b",\"error\":{\"code\":");
    body.extend_from_slice(code.to_string().as_bytes());
    body.extend_from_slice(b",\"message\":");
    serde_json::to_writer(&mut body, message).expect("a str always serializes into a Vec");
    body.extend_from_slice(b"}}");
    body
}

/// The spec-valid non-committal `SYNCING` answer for `newPayload` and fork choice calls.
///
/// `newPayloadV1`–`V5` and `forkchoiceUpdatedV1`–`V4` answer a `PayloadStatusV1`
/// (`paris.md`, unchanged through `amsterdam.md`); `newPayloadV6` and `forkchoiceUpdatedV5`
/// answer a `PayloadStatusV2` with `inclusionListSatisfied`, `null` unless `VALID`
/// (`bogota.md`, still a draft). Other methods have no `SYNCING` answer: `None`.
pub fn syncing_body(method: Method, id: &[u8]) -> Option<Vec<u8>> {
    let (status_v2, fork_choice) = match method {
        Method::NewPayload(version) => (version >= FIRST_PAYLOAD_STATUS_V2_NEW_PAYLOAD, false),
        Method::ForkchoiceUpdated(version) => {
            (version >= FIRST_PAYLOAD_STATUS_V2_FORK_CHOICE, true)
        }
        _ => return None,
    };
    let status: &[u8] = if status_v2 {
        b"{\"status\":\"SYNCING\",\"latestValidHash\":null,\"validationError\":null,\"inclusionListSatisfied\":null}"
    } else {
        b"{\"status\":\"SYNCING\",\"latestValidHash\":null,\"validationError\":null}"
    };
    let mut body = envelope_head(id, 160);
    body.extend_from_slice(b",\"result\":");
    if fork_choice {
        body.extend_from_slice(b"{\"payloadStatus\":");
        body.extend_from_slice(status);
        body.extend_from_slice(b",\"payloadId\":null}");
    } else {
        body.extend_from_slice(status);
    }
    body.push(b'}');
    Some(body)
}

/// `{"jsonrpc":"2.0","id":<id>,"method":<method>,"params":["0x<payload id>"]}`: the same
/// `getPayload` call for another payload id (an execution client that built for the same fork
/// choice under its own id).
pub fn get_payload_body(id: &[u8], method: &str, payload_id: &[u8; 8]) -> Vec<u8> {
    let id = echo_id(id);
    let mut body = Vec::with_capacity(96 + id.len() + method.len());
    body.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    body.extend_from_slice(id);
    body.extend_from_slice(b",\"method\":");
    serde_json::to_writer(&mut body, method).expect("a str always serializes into a Vec");
    body.extend_from_slice(b",\"params\":[\"0x");
    for byte in payload_id {
        body.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    body.extend_from_slice(b"\"]}");
    body
}

/// The answer sent at once under `--ack immediate`, before any execution client answered.
pub fn immediate_body(call: &Call) -> Vec<u8> {
    if let Some(body) = syncing_body(call.method, &call.id) {
        return body;
    }
    match call.method {
        Method::BuilderPayloadAttributes | Method::OtherBuilder => {
            let mut body = envelope_head(&call.id, 16);
            body.extend_from_slice(b",\"result\":null}");
            body
        }
        Method::GetPayload(_) => error_body(&call.id, code::UNKNOWN_PAYLOAD, "Unknown payload"),
        _ => error_body(&call.id, code::INTERNAL_ERROR, IMMEDIATE_MESSAGE),
    }
}

/// `engine_getClientVersionV1` multiplexing: every successful answer's `result` array,
/// concatenated in answer order; `None` when no answer succeeded.
pub fn concat_results(id: &[u8], answers: &[&[u8]]) -> Option<Vec<u8>> {
    let mut elements: Vec<&[u8]> = Vec::new();
    let mut any = false;
    for answer in answers {
        if let Some(result) = result_array(answer) {
            elements.extend(result);
            any = true;
        }
    }
    any.then(|| result_body(id, &elements))
}

/// `engine_exchangeCapabilities` multiplexing: the methods every successful answer lists, in
/// the order of the first; `None` when no answer succeeded.
pub fn intersect_capabilities(id: &[u8], answers: &[&[u8]]) -> Option<Vec<u8>> {
    let mut lists = answers.iter().filter_map(|answer| result_array(answer));
    let first = lists.next()?;
    let mut kept: Vec<(&[u8], Cow<'_, [u8]>)> = Vec::new();
    for raw in first {
        if let Some(name) = string_content(raw)
            && !kept.iter().any(|(_, seen)| *seen == name)
        {
            kept.push((raw, name));
        }
    }
    for list in lists {
        let names: HashSet<Cow<'_, [u8]>> = list.into_iter().filter_map(string_content).collect();
        kept.retain(|(_, name)| names.contains(name));
    }
    let elements: Vec<&[u8]> = kept.into_iter().map(|(raw, _)| raw).collect();
    Some(result_body(id, &elements))
}

/// The `id` of a request whose JSON is malformed, when it can still be read: a top-level `id`
/// member that is a valid JSON number, string or null and stands before the damage. Lets a
/// `-32700` answer carry the request's own id (`null` otherwise).
pub fn recover_id(body: &[u8]) -> Option<Box<[u8]>> {
    let mut at = skip_whitespace(body, 0);
    if body.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_whitespace(body, at);
        if body.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = lenient_string_end(body, at)?;
        let key = &body[at + 1..key_end - 1];
        at = skip_whitespace(body, key_end);
        if body.get(at) != Some(&b':') {
            return None;
        }
        at = skip_whitespace(body, at + 1);
        let value_end = lenient_value_end(body, at)?;
        let value = &body[at..value_end];
        if key == b"id" {
            let scalar = matches!(
                serde_json::from_slice::<serde_json::Value>(value),
                Ok(serde_json::Value::Number(_)
                    | serde_json::Value::String(_)
                    | serde_json::Value::Null)
            );
            return (scalar && value.len() <= MAX_ID_BYTES).then(|| value.into());
        }
        at = skip_whitespace(body, value_end);
        if body.get(at) != Some(&b',') {
            return None;
        }
        at += 1;
    }
}

fn skip_whitespace(body: &[u8], mut at: usize) -> usize {
    while body
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// The index after the closing quote of the string starting at `at`, honouring escapes.
fn lenient_string_end(body: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while let Some(&byte) = body.get(i) {
        match byte {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index after the value starting at `at`: a string, a bracketed value (strings inside
/// honoured), or a bare scalar up to the next delimiter. Only shape, not validity, is checked.
fn lenient_value_end(body: &[u8], at: usize) -> Option<usize> {
    match body.get(at)? {
        b'"' => lenient_string_end(body, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while let Some(&byte) = body.get(i) {
                match byte {
                    b'"' => {
                        i = lenient_string_end(body, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let mut i = at;
            while body
                .get(i)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                i += 1;
            }
            // A scalar cut by the end of the body might have gone on (`12` of `123`).
            (i > at && i < body.len()).then_some(i)
        }
    }
}

/// A stored answer re-addressed to another request: the same bytes with the new `id`.
///
/// `None` when the answer is not a valid JSON object with exactly one `id` member, or `id` is
/// not a single JSON string, number or null.
pub fn rewrite_id(answer: &[u8], id: &[u8]) -> Option<Vec<u8>> {
    let id = valid_id(id)?;
    let mut spans = Vec::new();
    let mut scanner = Scanner::new(answer);
    scanner
        .object(|scanner, key| {
            let is_id = key == b"id";
            let raw = scanner.value()?;
            if is_id {
                spans.push((scanner.pos - raw.len(), scanner.pos));
            }
            Ok(())
        })
        .ok()?;
    scanner.end().ok()?;
    let [(start, end)] = spans[..] else {
        return None;
    };
    let mut body = Vec::with_capacity(answer.len() - (end - start) + id.len());
    body.extend_from_slice(answer.get(..start)?);
    body.extend_from_slice(id);
    body.extend_from_slice(answer.get(end..)?);
    Some(body)
}

/// Nesting deeper than this many arrays/objects is refused as a parse error.
///
/// The scanner recurses once per level, so a body of 100 000 `[` (200 KB, far under the body
/// limit) must not reach it unbounded; containers are never handed to serde_json, which
/// would only take a whole body. 128 is serde_json's limit; 128 levels take under
/// 32 KB of stack optimised and under 64 KB unoptimised, and are far above the 5 levels of an
/// Engine API body or the ~10 of the deepest `eth_*` call (`eth_simulateV1`).
const MAX_NESTING_DEPTH: usize = 128;

/// An `id` longer than this is refused: it is copied into every `Call` and echoed in every
/// answer, and real clients send small integers or UUID strings.
const MAX_ID_BYTES: usize = 256;

/// A method name longer than this is refused: the longest Engine API name is 32 bytes, and the
/// name is copied into every `Call`.
const MAX_METHOD_BYTES: usize = 128;

/// The number of members of a JSON object (repeated names counted each time), or `None` when
/// `json` is not one valid object.
pub(crate) fn object_member_count(json: &[u8]) -> Option<usize> {
    let mut count = 0;
    let mut scanner = Scanner::new(json);
    scanner
        .object(|scanner, _| {
            count += 1;
            scanner.value().map(drop)
        })
        .and_then(|()| scanner.end())
        .ok()?;
    Some(count)
}

/// Strings with escapes are decoded only up to this many raw bytes, so decoding never
/// allocates in proportion to the body. Every string the proxy decodes (keys, `jsonrpc`,
/// `method`, hex values) fits: a `\uXXXX` escape is 6 bytes per character.
const MAX_DECODED_RAW_BYTES: usize = 6 * MAX_METHOD_BYTES + 2;

/// The first `newPayload` version answering `PayloadStatusV2` (`bogota.md`).
const FIRST_PAYLOAD_STATUS_V2_NEW_PAYLOAD: u16 = 6;

/// The first `forkchoiceUpdated` version answering `PayloadStatusV2` (`bogota.md`).
const FIRST_PAYLOAD_STATUS_V2_FORK_CHOICE: u16 = 5;

/// The `--ack immediate` error message for calls that have no non-committal result.
const IMMEDIATE_MESSAGE: &str = "sync-proxy answers immediately (--ack immediate): the request \
    was accepted for delivery to the execution clients, whose result is not available here";

/// The body is not valid JSON (or nests deeper than `MAX_NESTING_DEPTH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Malformed;

/// A validating cursor over a body: one pass, no copy, no DOM.
///
/// Structure (objects, arrays, keys, separators) is walked here, one stack frame per level up
/// to `MAX_NESTING_DEPTH`. Plain strings (found with `memchr2` and a vectorised check),
/// integers and literals, which are most of an Engine API body, are recognised here; every
/// other scalar (escaped or non-ASCII strings, fractions, exponents) is validated by
/// serde_json. Every byte is consumed once (string bytes twice: find the quote, check them).
struct Scanner<'a> {
    body: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Scanner<'a> {
    fn new(body: &'a [u8]) -> Self {
        Scanner {
            body,
            pos: 0,
            depth: 0,
        }
    }

    /// Skips whitespace and returns the next byte without consuming it.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&byte) = self.body.get(self.pos) {
            if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(byte);
            }
            self.pos += 1;
        }
        None
    }

    /// Consumes `byte` after optional whitespace.
    fn eat(&mut self, byte: u8) -> Result<(), Malformed> {
        if self.peek() != Some(byte) {
            return Err(Malformed);
        }
        self.pos += 1;
        Ok(())
    }

    /// Validates and consumes one JSON value of any kind, returning its exact text.
    fn value(&mut self) -> Result<&'a [u8], Malformed> {
        let first = self.peek().ok_or(Malformed)?;
        let start = self.pos;
        match first {
            b'{' => self.object(|scanner, _| scanner.value().map(drop))?,
            b'[' => self.array(|scanner, _| scanner.value().map(drop))?,
            _ => {
                self.scalar(first)?;
            }
        }
        self.body.get(start..self.pos).ok_or(Malformed)
    }

    /// Validates and consumes the scalar starting with `first`.
    fn scalar(&mut self, first: u8) -> Result<(), Malformed> {
        let start = self.pos;
        let end = match first {
            b'"' => plain_string_end(self.body, start),
            b'-' | b'0'..=b'9' => integer_end(self.body, start),
            b'n' => return self.literal(b"null"),
            b't' => return self.literal(b"true"),
            b'f' => return self.literal(b"false"),
            _ => return Err(Malformed),
        };
        match end {
            Some(end) => self.pos = end,
            None => self.slow_scalar()?,
        }
        Ok(())
    }

    /// Consumes `word`; what follows is checked by the caller, which expects a separator or
    /// the end of the body.
    fn literal(&mut self, word: &[u8]) -> Result<(), Malformed> {
        let rest = self.body.get(self.pos..).ok_or(Malformed)?;
        if !rest.starts_with(word) {
            return Err(Malformed);
        }
        self.pos += word.len();
        Ok(())
    }

    /// Validates and consumes a string or number with serde_json (escapes, UTF-8, fractions,
    /// exponents): the rare scalars the vectorised scan does not take.
    fn slow_scalar(&mut self) -> Result<(), Malformed> {
        let rest = self.body.get(self.pos..).ok_or(Malformed)?;
        // One value from the front of `rest`; a number must be followed by a delimiter.
        let mut values =
            serde_json::Deserializer::from_slice(rest).into_iter::<serde_json::Value>();
        match values.next() {
            Some(Ok(serde_json::Value::String(_) | serde_json::Value::Number(_))) => {}
            _ => return Err(Malformed),
        }
        let len = values.byte_offset();
        let raw = rest.get(..len).ok_or(Malformed)?;
        // Belt and braces: the four digits of every `\u` escape are hex, so a string's end
        // is exactly where the scan of the structure resumes.
        if raw.first() == Some(&b'"') && !unicode_escapes_valid(raw) {
            return Err(Malformed);
        }
        self.pos += len;
        Ok(())
    }

    /// Only whitespace may follow the top-level value.
    fn end(&mut self) -> Result<(), Malformed> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Malformed),
        }
    }

    /// Enters an object or array, refusing nesting deeper than `MAX_NESTING_DEPTH`.
    fn enter(&mut self, open: u8) -> Result<(), Malformed> {
        self.eat(open)?;
        self.depth += 1;
        if self.depth > MAX_NESTING_DEPTH {
            return Err(Malformed);
        }
        Ok(())
    }

    /// Walks an object; `member` gets each key's content (escapes decoded) and must consume
    /// its value.
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &[u8]) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        self.enter(b'{')?;
        if self.peek() != Some(b'}') {
            loop {
                let first = self.peek();
                if first != Some(b'"') {
                    return Err(Malformed);
                }
                let start = self.pos;
                let key: Cow<'a, [u8]> = match plain_string_end(self.body, start) {
                    // A plain key is its own content: no copy, no second look for escapes.
                    Some(end) => {
                        self.pos = end;
                        Cow::Borrowed(self.body.get(start + 1..end - 1).ok_or(Malformed)?)
                    }
                    None => {
                        self.slow_scalar()?;
                        let raw = self.body.get(start..self.pos).ok_or(Malformed)?;
                        // An escaped key too long to decode matches no key the proxy reads.
                        string_content(raw).unwrap_or(Cow::Borrowed(b""))
                    }
                };
                self.eat(b':')?;
                member(self, &key)?;
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => break,
                    _ => return Err(Malformed),
                }
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }

    /// Walks an array; `element` gets each index and must consume the element.
    fn array(
        &mut self,
        mut element: impl FnMut(&mut Self, usize) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        self.enter(b'[')?;
        if self.peek() != Some(b']') {
            let mut index = 0;
            loop {
                element(self, index)?;
                index += 1;
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => break,
                    _ => return Err(Malformed),
                }
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }

    /// Walks an object value, or validates and skips any other value.
    fn object_or_value(
        &mut self,
        member: impl FnMut(&mut Self, &[u8]) -> Result<(), Malformed>,
    ) -> Result<Shape<'a>, Malformed> {
        if self.peek() == Some(b'{') {
            self.object(member)?;
            return Ok(Shape::Object);
        }
        let raw = self.value()?;
        Ok(Shape::of(raw))
    }
}

/// Every `\u` in a string's raw text is followed by four hex digits.
fn unicode_escapes_valid(raw: &[u8]) -> bool {
    let mut index = 0;
    while let Some(offset) = raw
        .get(index..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\\'))
    {
        let at = index + offset;
        match raw.get(at + 1) {
            Some(b'u') => {
                let digits_valid = raw
                    .get(at + 2..at + 6)
                    .is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit));
                if !digits_valid {
                    return false;
                }
                index = at + 6;
            }
            Some(_) => index = at + 2,
            None => return false,
        }
    }
    true
}

/// The end (exclusive) of the string starting at `start` when it is plain: printable ASCII
/// without escapes, which is valid JSON as it stands. `None` sends the string to serde_json.
///
/// The closing quote is found with `memchr2` (SSE2/AVX2, chosen at run time), then the bytes
/// before it are checked in one vectorised pass: no control character (JSON forbids them raw)
/// and no byte of 0x80 or more (UTF-8, which serde_json validates). Hex strings, nearly all of an
/// Engine API body, take well under one instruction per byte.
#[inline]
fn plain_string_end(body: &[u8], start: usize) -> Option<usize> {
    let content = body.get(start + 1..)?;
    let at = memchr::memchr2(b'"', b'\\', content)?;
    if content[at] != b'"' || !printable_ascii(&content[..at]) {
        return None;
    }
    Some(start + 1 + at + 1)
}

/// Every byte is printable ASCII (0x20..=0x7f): shifted down by 0x20, those are exactly the
/// bytes below 0x60, so one max reduction decides, with no branch per byte. Written so the
/// compiler vectorises it (`paddb` + `pmaxub`, four 16-byte vectors per step); the tail is one
/// more vector that overlaps bytes already seen, which a maximum does not mind.
#[inline]
fn printable_ascii(bytes: &[u8]) -> bool {
    const LANES: usize = 16;
    #[inline(always)]
    fn shifted(byte: u8) -> u8 {
        byte.wrapping_sub(0x20)
    }
    #[inline(always)]
    fn fold_vector(lanes: &mut [u8; LANES], vector: &[u8]) {
        for (lane, &byte) in lanes.iter_mut().zip(vector) {
            *lane = (*lane).max(shifted(byte));
        }
    }
    let Some(last) = bytes.last_chunk::<LANES>() else {
        return bytes.iter().fold(0, |high, &b| u8::max(high, shifted(b))) < 0x60;
    };
    let mut lanes = [0u8; LANES];
    let mut blocks = bytes.chunks_exact(4 * LANES);
    for block in &mut blocks {
        for vector in block.chunks_exact(LANES) {
            fold_vector(&mut lanes, vector);
        }
    }
    for vector in blocks.remainder().chunks_exact(LANES) {
        fold_vector(&mut lanes, vector);
    }
    fold_vector(&mut lanes, last);
    lanes.iter().fold(0, |high, &lane| high.max(lane)) < 0x60
}

/// The end of the integer at `start` (`-?(0|[1-9][0-9]*)`, JSON's grammar) when nothing
/// makes it a fraction or exponent; anything else is left to serde_json.
fn integer_end(body: &[u8], start: usize) -> Option<usize> {
    let digits_start = if body.get(start) == Some(&b'-') {
        start + 1
    } else {
        start
    };
    let digits = body.get(digits_start..)?;
    let count = digits
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    let leading_zero = count > 1 && digits.first() == Some(&b'0');
    let continues = matches!(digits.get(count), Some(b'.' | b'e' | b'E'));
    (count > 0 && !leading_zero && !continues).then_some(digits_start + count)
}

/// A member the proxy reads, as it was found.
#[derive(Clone, Copy, Debug, Default)]
enum Member<'a> {
    #[default]
    Absent,
    Once(&'a [u8]),
    Repeated,
}

impl<'a> Member<'a> {
    fn set(&mut self, raw: &'a [u8]) {
        *self = match self {
            Member::Absent => Member::Once(raw),
            Member::Once(_) | Member::Repeated => Member::Repeated,
        };
    }

    /// The value, with JSON `null` read as absent (the Engine API treats them alike).
    fn present(self) -> Result<Option<&'a [u8]>, &'static str> {
        match self {
            Member::Absent => Ok(None),
            Member::Once(b"null") => Ok(None),
            Member::Once(raw) => Ok(Some(raw)),
            Member::Repeated => Err("a member read by the proxy appears twice"),
        }
    }
}

/// The kind of a value the proxy descends into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Shape<'a> {
    #[default]
    Absent,
    Null,
    Object,
    Array,
    Other(&'a [u8]),
}

impl<'a> Shape<'a> {
    fn of(raw: &'a [u8]) -> Shape<'a> {
        match raw.first() {
            Some(b'n') => Shape::Null,
            Some(b'{') => Shape::Object,
            Some(b'[') => Shape::Array,
            _ => Shape::Other(raw),
        }
    }
}

/// The members of `params[0]` or `params[1]` any method might need. They are collected before
/// the method is known (it may come last), and only the ones the method reads are checked.
#[derive(Clone, Copy, Debug, Default)]
struct Positional<'a> {
    shape: Shape<'a>,
    timestamp: Member<'a>,
    block_number: Member<'a>,
    block_hash: Member<'a>,
    head_block_hash: Member<'a>,
    head_hash: Member<'a>,
    slot: Member<'a>,
    slot_number: Member<'a>,
}

impl<'a> Positional<'a> {
    fn read(&mut self, scanner: &mut Scanner<'a>) -> Result<(), Malformed> {
        self.shape = scanner.object_or_value(|scanner, key| {
            let raw = scanner.value()?;
            let field = match Some(key) {
                Some(b"timestamp") => &mut self.timestamp,
                Some(b"blockNumber") => &mut self.block_number,
                Some(b"blockHash") => &mut self.block_hash,
                Some(b"headBlockHash") => &mut self.head_block_hash,
                Some(b"headHash") => &mut self.head_hash,
                Some(b"slot") => &mut self.slot,
                Some(b"slotNumber") => &mut self.slot_number,
                _ => return Ok(()),
            };
            field.set(raw);
            Ok(())
        })?;
        Ok(())
    }

    /// Absent and `null` read as "not provided"; any other non-object is refused.
    fn object(&self, reason: &'static str) -> Result<bool, &'static str> {
        match self.shape {
            Shape::Absent | Shape::Null => Ok(false),
            Shape::Object => Ok(true),
            Shape::Array | Shape::Other(_) => Err(reason),
        }
    }
}

/// The envelope members of a request, collected in one pass whatever their order.
#[derive(Default)]
struct Envelope<'a> {
    jsonrpc: Member<'a>,
    id: Member<'a>,
    method: Member<'a>,
    params: Member<'a>,
    params_shape: Shape<'a>,
    first: Positional<'a>,
    second: Positional<'a>,
    /// Digest of `params[1..]`, whitespace left out.
    tail_digest: u64,
}

impl<'a> Envelope<'a> {
    fn member(&mut self, scanner: &mut Scanner<'a>, key: &[u8]) -> Result<(), Malformed> {
        let target = match Some(key) {
            Some(b"jsonrpc") => &mut self.jsonrpc,
            Some(b"id") => &mut self.id,
            Some(b"method") => &mut self.method,
            Some(b"params") => return self.read_params(scanner),
            _ => {
                scanner.value()?;
                return Ok(());
            }
        };
        let raw = scanner.value()?;
        target.set(raw);
        Ok(())
    }

    fn read_params(&mut self, scanner: &mut Scanner<'a>) -> Result<(), Malformed> {
        let start = scanner.pos;
        if scanner.peek() == Some(b'[') {
            let (first, second) = (&mut self.first, &mut self.second);
            // Where `params[1..]` starts and ends: digested at once, not copied.
            let mut tail: Option<(usize, usize)> = None;
            scanner.array(|scanner, index| {
                let at = scanner.pos;
                match index {
                    0 => first.read(scanner)?,
                    1 => second.read(scanner)?,
                    _ => drop(scanner.value()?),
                }
                if index > 0 {
                    tail = Some((tail.map_or(at, |(start, _)| start), scanner.pos));
                }
                Ok(())
            })?;
            let tail = tail.and_then(|(start, end)| scanner.body.get(start..end));
            self.tail_digest = params_digest(tail.unwrap_or_default());
            self.params_shape = Shape::Array;
        } else {
            self.params_shape = Shape::of(scanner.value()?);
        }
        // Only presence matters for `params`; the text is never looked at again.
        self.params
            .set(scanner.body.get(start..scanner.pos).unwrap_or_default());
        Ok(())
    }

    /// Checks the envelope and the parameters its method reads.
    fn call(self) -> Result<Call, InspectError> {
        let id: Box<[u8]> = match self.id {
            Member::Absent => Box::from(&b"null"[..]),
            Member::Once(raw) => {
                if !matches!(raw.first(), Some(b'"' | b'-' | b'0'..=b'9' | b'n')) {
                    return Err(invalid_request(None, "id must be a string, number or null"));
                }
                if raw.len() > MAX_ID_BYTES {
                    return Err(invalid_request(None, "id is too long"));
                }
                Box::from(raw)
            }
            Member::Repeated => return Err(invalid_request(None, "duplicate id")),
        };
        let jsonrpc = match self.jsonrpc {
            Member::Once(raw) => raw,
            Member::Absent => return Err(invalid_request(Some(&id), "missing jsonrpc \"2.0\"")),
            Member::Repeated => return Err(invalid_request(Some(&id), "duplicate jsonrpc")),
        };
        if string_content(jsonrpc).as_deref() != Some(b"2.0") {
            return Err(invalid_request(Some(&id), "jsonrpc must be \"2.0\""));
        }
        let method_name = match self.method {
            Member::Once(raw) => {
                method_name(raw).map_err(|reason| invalid_request(Some(&id), reason))?
            }
            Member::Absent => return Err(invalid_request(Some(&id), "missing method")),
            Member::Repeated => return Err(invalid_request(Some(&id), "duplicate method")),
        };
        if let Member::Repeated = self.params {
            return Err(invalid_request(Some(&id), "duplicate params"));
        }
        if let Shape::Other(_) = self.params_shape {
            return Err(invalid_request(
                Some(&id),
                "params must be an array or an object",
            ));
        }
        let method = Method::classify(&method_name);
        let mut call = Call {
            id,
            method,
            method_name,
            timestamp: None,
            slot: None,
            block_number: None,
            block_hash: None,
            head_block_hash: None,
            has_payload_attributes: false,
            payload_id: None,
            params_digest: self.tail_digest,
        };
        if let Err(reason) = self.read_params_into(&mut call) {
            return Err(InspectError::InvalidParams {
                id: call.id,
                reason,
            });
        }
        Ok(call)
    }

    /// Fills in what `call.method` reads from its parameters.
    fn read_params_into(&self, call: &mut Call) -> Result<(), &'static str> {
        let reads_params = matches!(
            call.method,
            Method::NewPayload(_)
                | Method::ForkchoiceUpdated(_)
                | Method::GetPayload(_)
                | Method::BuilderPayloadAttributes
        );
        if !reads_params {
            return Ok(());
        }
        if self.params_shape == Shape::Object {
            return Err("params must be an array");
        }
        match call.method {
            Method::NewPayload(_) => self.first.read_payload(call),
            Method::ForkchoiceUpdated(_) => {
                self.first.read_fork_choice_state(call)?;
                self.second.read_payload_attributes(call)
            }
            Method::BuilderPayloadAttributes => self.first.read_builder_attributes(call),
            Method::GetPayload(_) => self.first.read_payload_id(call),
            _ => Ok(()),
        }
    }
}

impl Positional<'_> {
    /// `newPayload` `params[0]`, an execution payload.
    fn read_payload(&self, call: &mut Call) -> Result<(), &'static str> {
        if !self.object("params[0] must be an execution payload object")? {
            return Ok(());
        }
        call.timestamp = quantity(self.timestamp, TIMESTAMP)?;
        call.block_number = quantity(self.block_number, BLOCK_NUMBER)?;
        call.block_hash = data(self.block_hash, BLOCK_HASH)?;
        call.slot = quantity(self.slot_number, SLOT_NUMBER)?;
        Ok(())
    }

    /// Fork choice `params[0]`, the fork choice state.
    fn read_fork_choice_state(&self, call: &mut Call) -> Result<(), &'static str> {
        if !self.object("params[0] must be a fork choice state object")? {
            return Ok(());
        }
        call.head_block_hash = data(self.head_block_hash, HEAD_BLOCK_HASH)?;
        Ok(())
    }

    /// Fork choice `params[1]`, payload attributes or `null`.
    fn read_payload_attributes(&self, call: &mut Call) -> Result<(), &'static str> {
        if !self.object("params[1] must be a payload attributes object or null")? {
            return Ok(());
        }
        call.has_payload_attributes = true;
        call.timestamp = quantity(self.timestamp, TIMESTAMP)?;
        call.slot = quantity(self.slot_number, SLOT_NUMBER)?;
        Ok(())
    }

    /// `builder_payloadAttributes` `params[0]`.
    fn read_builder_attributes(&self, call: &mut Call) -> Result<(), &'static str> {
        if !self.object("params[0] must be a payload attributes object")? {
            return Ok(());
        }
        call.timestamp = quantity(self.timestamp, TIMESTAMP)?;
        let slot = builder_slot(self.slot)?;
        let slot_number = quantity(self.slot_number, SLOT_NUMBER)?;
        call.slot = slot.or(slot_number);
        let head = data(self.head_block_hash, HEAD_BLOCK_HASH)?;
        let block_hash = data(self.block_hash, BLOCK_HASH)?;
        let head_hash = data(self.head_hash, HEAD_HASH)?;
        call.head_block_hash = head.or(block_hash).or(head_hash);
        Ok(())
    }

    /// `getPayload` `params[0]`, the payload id.
    fn read_payload_id(&self, call: &mut Call) -> Result<(), &'static str> {
        call.payload_id = match self.shape {
            Shape::Absent | Shape::Null => None,
            Shape::Other(raw) => Some(hex_string(raw).ok_or(PAYLOAD_ID)?),
            Shape::Object | Shape::Array => return Err(PAYLOAD_ID),
        };
        Ok(())
    }
}

const TIMESTAMP: &str = "timestamp must be a hex QUANTITY of at most 64 bits";
const BLOCK_NUMBER: &str = "blockNumber must be a hex QUANTITY of at most 64 bits";
const SLOT_NUMBER: &str = "slotNumber must be a hex QUANTITY of at most 64 bits";
const SLOT: &str = "slot must be an unsigned 64-bit integer, decimal string or hex QUANTITY";
const BLOCK_HASH: &str = "blockHash must be 32 bytes of hex DATA";
const HEAD_BLOCK_HASH: &str = "headBlockHash must be 32 bytes of hex DATA";
const HEAD_HASH: &str = "headHash must be 32 bytes of hex DATA";
const PAYLOAD_ID: &str = "params[0] must be an 8-byte hex payload id";

fn invalid_request(id: Option<&[u8]>, reason: &'static str) -> InspectError {
    InspectError::InvalidRequest {
        id: id.map(Box::from),
        reason,
    }
}

/// Decodes and bounds the `method` member.
fn method_name(raw: &[u8]) -> Result<Box<str>, &'static str> {
    if raw.first() != Some(&b'"') {
        return Err("method must be a string");
    }
    let name = string_content(raw).ok_or("method name is too long")?;
    if name.len() > MAX_METHOD_BYTES {
        return Err("method name is too long");
    }
    // The scanner validated the UTF-8 of the whole string.
    let name = std::str::from_utf8(&name).map_err(|_| "method must be a string")?;
    Ok(Box::from(name))
}

/// A QUANTITY member: absent or `null` is `None`; anything else must be a strict QUANTITY.
fn quantity(member: Member<'_>, reason: &'static str) -> Result<Option<u64>, &'static str> {
    let Some(raw) = member.present()? else {
        return Ok(None);
    };
    let text = string_content(raw).ok_or(reason)?;
    parse_quantity(&text).map(Some).ok_or(reason)
}

/// A fixed-size DATA member: absent or `null` is `None`; anything else must be exact hex DATA.
fn data<const N: usize>(
    member: Member<'_>,
    reason: &'static str,
) -> Result<Option<[u8; N]>, &'static str> {
    let Some(raw) = member.present()? else {
        return Ok(None);
    };
    hex_string(raw).map(Some).ok_or(reason)
}

/// The builder `slot`: a JSON integer (Flashbots `uint64`), a decimal string (builders that
/// tag it `,string`) or a hex QUANTITY.
fn builder_slot(member: Member<'_>) -> Result<Option<u64>, &'static str> {
    let Some(raw) = member.present()? else {
        return Ok(None);
    };
    if raw.first() != Some(&b'"') {
        return parse_decimal(raw).map(Some).ok_or(SLOT);
    }
    let text = string_content(raw).ok_or(SLOT)?;
    if text.starts_with(b"0x") {
        return parse_quantity(&text).map(Some).ok_or(SLOT);
    }
    parse_decimal(&text).map(Some).ok_or(SLOT)
}

/// The content of a JSON string's raw text, escapes decoded; `None` for a non-string or an
/// escaped string longer than `MAX_DECODED_RAW_BYTES`.
fn string_content(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if !inner.contains(&b'\\') {
        return Some(Cow::Borrowed(inner));
    }
    if raw.len() > MAX_DECODED_RAW_BYTES {
        return None;
    }
    let text = serde_json::from_slice::<String>(raw).ok()?;
    Some(Cow::Owned(text.into_bytes()))
}

/// A JSON string holding `0x` and exactly `2 × N` hex digits.
fn hex_string<const N: usize>(raw: &[u8]) -> Option<[u8; N]> {
    parse_data(&string_content(raw)?)
}

/// A strict QUANTITY (`common.md`: `^0x(?:0|(?:[a-fA-F1-9][a-fA-F0-9]*))$`) of at most 64 bits.
fn parse_quantity(text: &[u8]) -> Option<u64> {
    let digits = text.strip_prefix(b"0x")?;
    if digits.is_empty() || digits.len() > 16 || (digits.len() > 1 && digits.first() == Some(&b'0'))
    {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        Some(value << 4 | u64::from(hex_digit(digit)?))
    })
}

/// DATA of exactly `N` bytes (`common.md`: `^0x(?:[a-fA-F0-9]{2})*$`).
fn parse_data<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let digits = text.strip_prefix(b"0x")?;
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let [high, low] = pair else {
            return None;
        };
        *byte = hex_digit(*high)? << 4 | hex_digit(*low)?;
    }
    Some(bytes)
}

/// An unsigned decimal of at most 64 bits, digits only, no leading zero.
fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if text.len() > 1 && text.first() == Some(&b'0') {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Reads an answer in one validating pass.
fn read_answer(method: Method, body: &[u8]) -> Result<AnswerFacts, Malformed> {
    let mut answer = AnswerFacts::default();
    let mut has_result = false;
    let mut has_error = false;
    let mut scanner = Scanner::new(body);
    scanner.object(|scanner, key| match Some(key) {
        Some(b"result") => {
            has_result = true;
            read_result(method, scanner, &mut answer)
        }
        Some(b"error") => {
            let mut code = None;
            let shape = scanner.object_or_value(|scanner, key| {
                let raw = scanner.value()?;
                if key == b"code" {
                    code = std::str::from_utf8(raw)
                        .ok()
                        .and_then(|text| text.parse().ok());
                }
                Ok(())
            })?;
            has_error = shape != Shape::Null;
            answer.error_code = code;
            Ok(())
        }
        Some(b"id") => {
            answer.id_digest = Some(id_digest(scanner.value()?));
            Ok(())
        }
        _ => scanner.value().map(drop),
    })?;
    scanner.end()?;
    answer.has_result = has_result && !has_error;
    if !answer.has_result {
        answer.status = None;
        answer.payload_id = None;
    }
    Ok(answer)
}

/// Reads `result.status` (payloads) or `result.payloadStatus.status` and `result.payloadId`
/// (fork choice).
fn read_result(
    method: Method,
    scanner: &mut Scanner<'_>,
    answer: &mut AnswerFacts,
) -> Result<(), Malformed> {
    match method {
        Method::NewPayload(_) => {
            scanner.object_or_value(|scanner, key| {
                let raw = scanner.value()?;
                if key == b"status" {
                    answer.status = status(raw);
                }
                Ok(())
            })?;
        }
        Method::ForkchoiceUpdated(_) => {
            scanner.object_or_value(|scanner, key| match Some(key) {
                Some(b"payloadStatus") => {
                    scanner.object_or_value(|scanner, key| {
                        let raw = scanner.value()?;
                        if key == b"status" {
                            answer.status = status(raw);
                        }
                        Ok(())
                    })?;
                    Ok(())
                }
                Some(b"payloadId") => {
                    answer.payload_id = hex_string(scanner.value()?);
                    Ok(())
                }
                _ => scanner.value().map(drop),
            })?;
        }
        _ => {
            scanner.value()?;
        }
    }
    Ok(())
}

fn status(raw: &[u8]) -> Option<PayloadStatus> {
    PayloadStatus::parse(&string_content(raw)?)
}

/// The elements of a successful answer's `result` array.
fn result_array(body: &[u8]) -> Option<Vec<&[u8]>> {
    let mut elements = None;
    let mut has_error = false;
    let mut scanner = Scanner::new(body);
    scanner
        .object(|scanner, key| match Some(key) {
            Some(b"result") => {
                if scanner.peek() != Some(b'[') {
                    elements = None;
                    return scanner.value().map(drop);
                }
                let mut list = Vec::new();
                scanner.array(|scanner, _| {
                    list.push(scanner.value()?);
                    Ok(())
                })?;
                elements = Some(list);
                Ok(())
            }
            Some(b"error") => {
                has_error = scanner.value()? != b"null";
                Ok(())
            }
            _ => scanner.value().map(drop),
        })
        .ok()?;
    scanner.end().ok()?;
    if has_error {
        return None;
    }
    elements
}

/// `{"jsonrpc":"2.0","id":<id>` with room for `extra` more bytes.
fn envelope_head(id: &[u8], extra: usize) -> Vec<u8> {
    let id = echo_id(id);
    let mut body = Vec::with_capacity(32 + id.len() + extra);
    body.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    body.extend_from_slice(id);
    body
}

/// `{"jsonrpc":"2.0","id":<id>,"result":[<elements>]}`.
fn result_body(id: &[u8], elements: &[&[u8]]) -> Vec<u8> {
    let elements_len: usize = elements.iter().map(|element| element.len() + 1).sum();
    let mut body = envelope_head(id, elements_len + 16);
    body.extend_from_slice(b",\"result\":[");
    for (index, element) in elements.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(element);
    }
    body.extend_from_slice(b"]}");
    body
}

/// The id to echo: a single JSON string, number or null (whitespace trimmed), else `null`.
fn echo_id(id: &[u8]) -> &[u8] {
    valid_id(id).unwrap_or(b"null")
}

/// `id` trimmed, when it is a single JSON string, number or null of at most `MAX_ID_BYTES`.
fn valid_id(id: &[u8]) -> Option<&[u8]> {
    let mut scanner = Scanner::new(id);
    if !matches!(scanner.peek(), Some(b'"' | b'-' | b'0'..=b'9' | b'n')) || id.len() > MAX_ID_BYTES
    {
        return None;
    }
    let raw = scanner.value().ok()?;
    scanner.end().ok()?;
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPELLA_FCU_ATTRS: &str = include_str!(
        "../tests/fixtures/engine/lodestar-1.5.1_to_ethereumjs-0.10.5_capella/02_forkchoiceUpdatedV2_with_payloadAttributes.json"
    );
    const CAPELLA_GET_PAYLOAD: &str = include_str!(
        "../tests/fixtures/engine/lodestar-1.5.1_to_ethereumjs-0.10.5_capella/04_getPayloadV2.json"
    );
    const CAPELLA_NEW_PAYLOAD: &str = include_str!(
        "../tests/fixtures/engine/lodestar-1.5.1_to_ethereumjs-0.10.5_capella/06_newPayloadV2.json"
    );
    const CAPELLA_FCU_HEAD: &str = include_str!(
        "../tests/fixtures/engine/lodestar-1.5.1_to_ethereumjs-0.10.5_capella/08_forkchoiceUpdatedV2_no_attributes.json"
    );
    const CAPELLA_UNKNOWN_PAYLOAD: &str = include_str!(
        "../tests/fixtures/engine/lodestar-1.5.1_to_ethereumjs-0.10.5_capella/10_getPayloadV2_unknown_payload_error.json"
    );
    const CAPELLA_TRANSITION: &str = include_str!(
        "../tests/fixtures/engine/lodestar-1.5.1_to_ethereumjs-0.10.5_capella/01_exchangeTransitionConfigurationV1.json"
    );
    const CAPELLA_SESSION: &str = include_str!(
        "../tests/fixtures/engine/lodestar-1.5.1_to_ethereumjs-0.10.5_capella/full_session.jsonl"
    );
    const PRAGUE_CAPABILITIES: &str = include_str!(
        "../tests/fixtures/engine/minicl_to_ethereumjs-0.10.5_prague/01_exchangeCapabilities.json"
    );
    const PRAGUE_CLIENT_VERSION: &str = include_str!(
        "../tests/fixtures/engine/minicl_to_ethereumjs-0.10.5_prague/02_getClientVersionV1.json"
    );
    const PRAGUE_FCU_ATTRS: &str = include_str!(
        "../tests/fixtures/engine/minicl_to_ethereumjs-0.10.5_prague/03_forkchoiceUpdatedV3_attrs_b1.json"
    );
    const PRAGUE_NEW_PAYLOAD: &str = include_str!(
        "../tests/fixtures/engine/minicl_to_ethereumjs-0.10.5_prague/05_newPayloadV4_b1.json"
    );
    const PRAGUE_GET_PAYLOAD_V5: &str = include_str!(
        "../tests/fixtures/engine/minicl_to_ethereumjs-0.10.5_prague/16_edge_getPayloadV5_unsupported.json"
    );
    const PRAGUE_BAD_BLOCK_HASH: &str = include_str!(
        "../tests/fixtures/engine/minicl_to_ethereumjs-0.10.5_prague/18_edge_newPayloadV4_bad_blockhash.json"
    );
    const PRAGUE_UNKNOWN_HEAD: &str = include_str!(
        "../tests/fixtures/engine/minicl_to_ethereumjs-0.10.5_prague/20_edge_forkchoiceUpdatedV3_unknown_head.json"
    );

    const HASH_A: &str = "0xa22bf8856a340ce4e866ad1c403029c5ac5bda9b96dd913a189ca074b84afd65";
    const ID_AND_VERSION: &str = r#""jsonrpc":"2.0","id":7"#;

    /// The exact text of a fixture's `request` or `response` member (pretty-printed).
    fn member(fixture: &str, name: &str) -> String {
        sonic_rs::get(fixture, &[name])
            .expect("fixture has the member")
            .as_raw_str()
            .to_owned()
    }

    fn call(body: &str) -> Call {
        match inspect(body.as_bytes()) {
            Ok(Inspected::Call(call)) => call,
            other => panic!("expected a call, got {other:?} for {body}"),
        }
    }

    fn error(body: &str) -> InspectError {
        match inspect(body.as_bytes()) {
            Err(error) => error,
            Ok(other) => panic!("expected an error, got {other:?} for {body}"),
        }
    }

    fn reason(body: &str) -> &'static str {
        match error(body) {
            InspectError::InvalidRequest { reason, .. }
            | InspectError::InvalidParams { reason, .. } => reason,
            InspectError::Parse => panic!("expected a reason, got a parse error for {body}"),
        }
    }

    fn hash(text: &str) -> Hash32 {
        parse_data(text.as_bytes()).expect("test hash is valid")
    }

    fn new_payload(fields: &str) -> String {
        format!(
            r#"{{{ID_AND_VERSION},"method":"engine_newPayloadV3","params":[{{{fields}}},[],"{HASH_A}"]}}"#
        )
    }

    fn fork_choice(attributes: &str) -> String {
        format!(
            r#"{{{ID_AND_VERSION},"method":"engine_forkchoiceUpdatedV3","params":[{{"headBlockHash":"{HASH_A}"}}{attributes}]}}"#
        )
    }

    fn builder(fields: &str) -> String {
        format!(
            r#"{{{ID_AND_VERSION},"method":"builder_payloadAttributes","params":[{{{fields}}}]}}"#
        )
    }

    fn parse_back(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).expect("built body is valid JSON")
    }

    #[test]
    fn inspect_capella_new_payload_reads_block() {
        let call = call(&member(CAPELLA_NEW_PAYLOAD, "request"));
        assert_eq!(call.method, Method::NewPayload(2));
        assert_eq!(&*call.method_name, "engine_newPayloadV2");
        assert_eq!(&*call.id, b"4");
        assert_eq!(call.timestamp, Some(0x6b05_14a9));
        assert_eq!(call.block_number, Some(1));
        assert_eq!(
            call.block_hash,
            Some(hash(
                "0xa9d24416ea4f09867e27d0322b9c067e640f9df61cd1d3f54238069d13bb1239"
            ))
        );
        assert_eq!(call.slot, None);
        assert_eq!(call.head_block_hash, None);
        assert!(!call.has_payload_attributes);
    }

    #[test]
    fn inspect_prague_new_payload_reads_block_after_other_params() {
        let call = call(&member(PRAGUE_NEW_PAYLOAD, "request"));
        assert_eq!(call.method, Method::NewPayload(4));
        assert_eq!(call.timestamp, Some(0x6b05_16c4));
        assert_eq!(call.block_number, Some(1));
        assert_eq!(
            call.block_hash,
            Some(hash(
                "0x2fd36d8018b71c590b5400849c832800163994ab506132d2cc535e349efd497d"
            ))
        );
        let bad = self::call(&member(PRAGUE_BAD_BLOCK_HASH, "request"));
        assert_eq!(bad.block_number, Some(4));
    }

    #[test]
    fn inspect_fork_choice_with_attributes_reads_head_and_timestamp() {
        for (fixture, version, timestamp) in [
            (CAPELLA_FCU_ATTRS, 2, 0x6b05_14a9),
            (PRAGUE_FCU_ATTRS, 3, 0x6b05_16c4),
        ] {
            let call = call(&member(fixture, "request"));
            assert_eq!(call.method, Method::ForkchoiceUpdated(version));
            assert!(call.has_payload_attributes);
            assert_eq!(call.timestamp, Some(timestamp));
            assert!(call.head_block_hash.is_some());
            assert_eq!(call.block_hash, None);
        }
    }

    #[test]
    fn inspect_fork_choice_null_attributes_reads_head_only() {
        let call = call(&member(CAPELLA_FCU_HEAD, "request"));
        assert_eq!(call.method, Method::ForkchoiceUpdated(2));
        assert!(!call.has_payload_attributes);
        assert_eq!(call.timestamp, None);
        assert_eq!(
            call.head_block_hash,
            Some(hash(
                "0xa9d24416ea4f09867e27d0322b9c067e640f9df61cd1d3f54238069d13bb1239"
            ))
        );
        let unknown = self::call(&member(PRAGUE_UNKNOWN_HEAD, "request"));
        assert_eq!(unknown.head_block_hash, Some([0x44; 32]));
    }

    #[test]
    fn inspect_fork_choice_params1_variants() {
        let absent = call(&fork_choice(""));
        assert!(!absent.has_payload_attributes);
        assert_eq!(absent.head_block_hash, Some(hash(HASH_A)));
        let null = call(&fork_choice(",null"));
        assert!(!null.has_payload_attributes);
        assert_eq!(null.timestamp, None);
        let empty = call(&fork_choice(",{}"));
        assert!(empty.has_payload_attributes);
        assert_eq!(empty.timestamp, None);
        let object = call(&fork_choice(
            r#",{"timestamp":"0x10","slotNumber":"0x2a"},"0x00""#,
        ));
        assert!(object.has_payload_attributes);
        assert_eq!(object.timestamp, Some(16));
        assert_eq!(object.slot, Some(42));
        assert_eq!(
            reason(&fork_choice(",5")),
            "params[1] must be a payload attributes object or null"
        );
        assert_eq!(
            reason(&fork_choice(",[]")),
            "params[1] must be a payload attributes object or null"
        );
        assert_eq!(reason(&fork_choice(r#",{"timestamp":5}"#)), TIMESTAMP);
    }

    #[test]
    fn inspect_fork_choice_bad_state_is_invalid_params() {
        let body =
            format!(r#"{{{ID_AND_VERSION},"method":"engine_forkchoiceUpdatedV1","params":["x"]}}"#);
        assert_eq!(
            reason(&body),
            "params[0] must be a fork choice state object"
        );
        let body = format!(
            r#"{{{ID_AND_VERSION},"method":"engine_forkchoiceUpdatedV1","params":[{{"headBlockHash":"0x12"}}]}}"#
        );
        assert_eq!(reason(&body), HEAD_BLOCK_HASH);
    }

    #[test]
    fn inspect_new_payload_slot_number_is_slot() {
        let call = call(&new_payload(
            r#""timestamp":"0x5","slotNumber":"0x3039","blockNumber":"0x9""#,
        ));
        assert_eq!(call.slot, Some(12345));
        assert_eq!(call.timestamp, Some(5));
        assert_eq!(call.block_number, Some(9));
        assert_eq!(reason(&new_payload(r#""slotNumber":12345"#)), SLOT_NUMBER);
    }

    #[test]
    fn inspect_builder_attributes_reads_slot_and_head() {
        // The shape the original sync-proxy's tests use for the Flashbots prysm fork.
        let flashbots = builder(&format!(
            r#""timestamp":"0x6303c7bc","prevRandao":"{HASH_A}","slot":1182052,"blockHash":"{HASH_A}""#
        ));
        let call = call(&flashbots);
        assert_eq!(call.method, Method::BuilderPayloadAttributes);
        assert_eq!(call.slot, Some(1_182_052));
        assert_eq!(call.timestamp, Some(0x6303_c7bc));
        assert_eq!(call.head_block_hash, Some(hash(HASH_A)));
        assert_eq!(call.block_hash, None);

        assert_eq!(
            self::call(&builder(r#""slot":"1182052""#)).slot,
            Some(1_182_052)
        );
        assert_eq!(self::call(&builder(r#""slot":"0x10""#)).slot, Some(16));
        assert_eq!(
            self::call(&builder(r#""slotNumber":"0x10""#)).slot,
            Some(16)
        );
        assert_eq!(
            self::call(&builder(r#""slot":7,"slotNumber":"0x10""#)).slot,
            Some(7)
        );
        assert_eq!(self::call(&builder(r#""slot":null"#)).slot, None);
        let head = format!(r#""headHash":"{HASH_A}""#);
        assert_eq!(
            self::call(&builder(&head)).head_block_hash,
            Some(hash(HASH_A))
        );
        let both = format!(
            r#""blockHash":"0x{}","headBlockHash":"{HASH_A}""#,
            "11".repeat(32)
        );
        assert_eq!(
            self::call(&builder(&both)).head_block_hash,
            Some(hash(HASH_A))
        );
        for bad in [
            r#""slot":-1"#,
            r#""slot":1.5"#,
            r#""slot":1e3"#,
            r#""slot":18446744073709551616"#,
            r#""slot":"01""#,
            r#""slot":"""#,
            r#""slot":true"#,
            r#""slot":"0x""#,
        ] {
            assert_eq!(reason(&builder(bad)), SLOT, "{bad}");
        }
        assert_eq!(
            self::call(&builder(r#""slot":18446744073709551615"#)).slot,
            Some(u64::MAX)
        );
    }

    #[test]
    fn inspect_get_payload_reads_payload_id() {
        let call = call(&member(CAPELLA_GET_PAYLOAD, "request"));
        assert_eq!(call.method, Method::GetPayload(2));
        assert_eq!(
            call.payload_id,
            Some([0x0c, 0xe6, 0xda, 0x71, 0x94, 0xc6, 0xb1, 0xcf])
        );
        let v5 = self::call(&member(PRAGUE_GET_PAYLOAD_V5, "request"));
        assert_eq!(v5.method, Method::GetPayload(5));
        assert!(v5.payload_id.is_some());
        for bad in [
            r#"["0x0ce6da7194c6b1"]"#,
            r#"[12]"#,
            r#"[{}]"#,
            r#"["0x0ce6da7194c6b1cfaa"]"#,
        ] {
            let body =
                format!(r#"{{{ID_AND_VERSION},"method":"engine_getPayloadV3","params":{bad}}}"#);
            assert_eq!(reason(&body), PAYLOAD_ID, "{bad}");
        }
    }

    #[test]
    fn inspect_other_methods_read_no_params() {
        let call = call(&member(CAPELLA_TRANSITION, "request"));
        assert_eq!(call.method, Method::OtherEngine);
        assert_eq!(call.timestamp, None);
        let call = self::call(&member(PRAGUE_CAPABILITIES, "request"));
        assert_eq!(call.method, Method::ExchangeCapabilities);
        let call = self::call(&member(PRAGUE_CLIENT_VERSION, "request"));
        assert_eq!(call.method, Method::GetClientVersion(1));
        // Shapes the proxy does not read are not checked.
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"timestamp":5,"timestamp":6},"latest"]}"#;
        assert_eq!(self::call(body).method, Method::Other);
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_x","params":{"a":1}}"#;
        assert_eq!(self::call(body).method, Method::Other);
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_x","params":null}"#;
        assert_eq!(self::call(body).method, Method::Other);
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}"#;
        assert_eq!(self::call(body).method, Method::Other);
    }

    #[test]
    fn inspect_every_request_of_a_real_session() {
        let mut methods = 0;
        for line in CAPELLA_SESSION.lines() {
            let request = sonic_rs::get(line, &["request"]).expect("line has a request");
            let request = sonic_rs::JsonValueTrait::as_str(&request).expect("request is a string");
            let call = call(request);
            match call.method {
                Method::NewPayload(2) => {
                    assert!(call.block_hash.is_some() && call.timestamp.is_some());
                }
                Method::ForkchoiceUpdated(2) => assert!(call.head_block_hash.is_some()),
                Method::GetPayload(2) => assert!(call.payload_id.is_some()),
                Method::OtherEngine => {}
                other => panic!("unexpected method {other:?}"),
            }
            methods += 1;
        }
        assert_eq!(methods, 85);
    }

    #[test]
    fn inspect_answers_of_a_real_session() {
        for line in CAPELLA_SESSION.lines() {
            let text = |name: &str| {
                let value = sonic_rs::get(line, &[name]).expect("line has the member");
                sonic_rs::JsonValueTrait::as_str(&value)
                    .expect("member is a string")
                    .to_owned()
            };
            let method = call(&text("request")).method;
            let answer = inspect_answer(method, text("response").as_bytes());
            match method {
                Method::NewPayload(_) | Method::ForkchoiceUpdated(_) => {
                    assert!(answer.has_result);
                    assert_eq!(answer.status, Some(PayloadStatus::Valid));
                }
                Method::GetPayload(_) => assert!(answer.has_result || answer.error_code.is_some()),
                _ => assert_eq!(answer.error_code, Some(code::METHOD_NOT_FOUND)),
            }
        }
    }

    #[test]
    fn inspect_method_after_big_params_reads_everything() {
        // A synthetic 2 MB newPayload: 2 000 transactions of 1 000 bytes, `method` and `id` last.
        let transaction = format!("\"0x{}\"", "ab".repeat(500));
        let transactions = vec![transaction; 2000].join(",");
        let body = format!(
            r#"{{"params":[{{"transactions":[{transactions}],"blockHash":"{HASH_A}","timestamp":"0x64","blockNumber":"0x2a","slotNumber":"0x7"}},[],"{HASH_A}",[]],"jsonrpc":"2.0","method":"engine_newPayloadV4","id":"last"}}"#
        );
        assert!(body.len() > 2_000_000);
        let call = call(&body);
        assert_eq!(call.method, Method::NewPayload(4));
        assert_eq!(&*call.id, br#""last""#);
        assert_eq!(call.timestamp, Some(100));
        assert_eq!(call.block_number, Some(42));
        assert_eq!(call.slot, Some(7));
        assert_eq!(call.block_hash, Some(hash(HASH_A)));
        let broken = body.replacen("\"0xab", "\"0xa\u{1}b", 1);
        assert_eq!(error(&broken), InspectError::Parse);
    }

    #[test]
    fn inspect_key_order_does_not_matter() {
        let bodies = [
            r#"{"jsonrpc":"2.0","id":3,"method":"engine_getPayloadV1","params":["0x0000000000000001"]}"#,
            r#"{"params":["0x0000000000000001"],"method":"engine_getPayloadV1","id":3,"jsonrpc":"2.0"}"#,
            r#" { "id" : 3 , "params" : [ "0x0000000000000001" ] , "jsonrpc" : "2.0" , "method" : "engine_getPayloadV1" } "#,
        ];
        for body in bodies {
            let call = call(body);
            assert_eq!(call.method, Method::GetPayload(1));
            assert_eq!(call.payload_id, Some([0, 0, 0, 0, 0, 0, 0, 1]));
            assert_eq!(&*call.id, b"3");
        }
    }

    #[test]
    fn inspect_id_kinds_are_echoed_exactly() {
        for (id, expected) in [
            ("1", "1"),
            ("  -12.5e3 \n", "-12.5e3"),
            (r#""a b""#, r#""a b""#),
            (r#""\u0041\"""#, r#""\u0041\"""#),
            ("null", "null"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","method":"eth_chainId","id":{id}}}"#);
            assert_eq!(&*call(&body).id, expected.as_bytes(), "{id}");
        }
        let body = r#"{"jsonrpc":"2.0","method":"eth_chainId"}"#;
        assert_eq!(&*call(body).id, b"null");
    }

    #[test]
    fn inspect_invalid_ids_are_invalid_request_without_id() {
        for id in ["{}", r#"{"a":1}"#, "[1]", "[]", "true", "false"] {
            let body = format!(r#"{{"jsonrpc":"2.0","method":"eth_chainId","id":{id}}}"#);
            assert_eq!(
                error(&body),
                InspectError::InvalidRequest {
                    id: None,
                    reason: "id must be a string, number or null"
                },
                "{id}"
            );
        }
        let long = format!(
            r#"{{"jsonrpc":"2.0","method":"eth_chainId","id":"{}"}}"#,
            "x".repeat(MAX_ID_BYTES)
        );
        assert_eq!(reason(&long), "id is too long");
        let twice = r#"{"jsonrpc":"2.0","method":"eth_chainId","id":1,"id":2}"#;
        assert_eq!(reason(twice), "duplicate id");
    }

    #[test]
    fn inspect_envelope_errors_are_invalid_request_with_id() {
        for (body, expected) in [
            (
                r#"{"id":1,"method":"eth_chainId"}"#,
                "missing jsonrpc \"2.0\"",
            ),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"eth_chainId"}"#,
                "jsonrpc must be \"2.0\"",
            ),
            (
                r#"{"jsonrpc":2.0,"id":1,"method":"eth_chainId"}"#,
                "jsonrpc must be \"2.0\"",
            ),
            (
                r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"x"}"#,
                "duplicate jsonrpc",
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, "missing method"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
                "method must be a string",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":null}"#,
                "method must be a string",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#,
                "duplicate method",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"a","params":"x"}"#,
                "params must be an array or an object",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"a","params":5}"#,
                "params must be an array or an object",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"a","params":[],"params":[]}"#,
                "duplicate params",
            ),
        ] {
            let error = error(body);
            assert_eq!(error.code(), code::INVALID_REQUEST, "{body}");
            assert_eq!(error.id(), Some(&b"1"[..]), "{body}");
            assert_eq!(reason(body), expected, "{body}");
        }
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{}"}}"#,
            "m".repeat(MAX_METHOD_BYTES + 1)
        );
        assert_eq!(reason(&long), "method name is too long");
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{}"}}"#,
            "\\u0041".repeat(MAX_METHOD_BYTES + 1)
        );
        assert_eq!(reason(&long), "method name is too long");
    }

    #[test]
    fn inspect_escaped_strings_are_decoded() {
        let body = r#"{"jsonrpc":"2\u002e0","id":1,"m\u0065thod":"engine_newPayload\u0056\u0032","params":[{"timestamp":"\u0030x1f"}]}"#;
        let call = call(body);
        assert_eq!(call.method, Method::NewPayload(2));
        assert_eq!(&*call.method_name, "engine_newPayloadV2");
        assert_eq!(call.timestamp, Some(0x1f));
    }

    #[test]
    fn inspect_not_an_object_is_invalid_request() {
        for body in ["\"x\"", "5", "-1.5e3", "null", "true", " false "] {
            assert_eq!(
                error(body),
                InspectError::InvalidRequest {
                    id: None,
                    reason: "a request must be a JSON object or a batch array"
                },
                "{body}"
            );
        }
    }

    #[test]
    fn inspect_batch_counts_elements() {
        let body = format!(
            "[{},\n{}]",
            member(CAPELLA_FCU_HEAD, "request"),
            member(CAPELLA_GET_PAYLOAD, "request")
        );
        assert_eq!(inspect(body.as_bytes()), Ok(Inspected::Batch { len: 2 }));
        assert_eq!(
            inspect(b"[1, \"x\", null]"),
            Ok(Inspected::Batch { len: 3 })
        );
        assert_eq!(
            inspect(b" [ ] "),
            Err(InspectError::InvalidRequest {
                id: None,
                reason: "empty batch"
            })
        );
        assert_eq!(inspect(b"[1,]"), Err(InspectError::Parse));
        assert_eq!(inspect(b"[{\"a\":}]"), Err(InspectError::Parse));
    }

    #[test]
    fn inspect_every_truncation_is_parse_error() {
        let body = member(PRAGUE_NEW_PAYLOAD, "request");
        for len in 0..body.len() {
            assert_eq!(
                inspect(&body.as_bytes()[..len]),
                Err(InspectError::Parse),
                "prefix of {len} bytes"
            );
        }
        let compact = sonic_rs::get(
            CAPELLA_SESSION.lines().next().unwrap_or_default(),
            &["request"],
        )
        .map(|value| {
            sonic_rs::JsonValueTrait::as_str(&value)
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default();
        assert!(!compact.is_empty());
        for len in 0..compact.len() {
            assert_eq!(
                inspect(&compact.as_bytes()[..len]),
                Err(InspectError::Parse),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn inspect_malformed_json_in_unread_params_is_parse_error() {
        for broken in [
            r#""transactions":["0x12",]"#,
            r#""extra":tru"#,
            r#""extra":nul"#,
            r#""extra":01"#,
            r#""extra":1."#,
            r#""extra":-"#,
            r#""extra":.5"#,
            r#""extra":"\x""#,
            r#""extra":"\u12""#,
            r#""extra":"\uZZZZ""#,
            "\"extra\":\"a\u{1}b\"",
            "\"extra\":\"tab\there\"",
            r#""extra":[1 2]"#,
            r#""extra":{"a" 1}"#,
            r#""extra":{a:1}"#,
            r#""extra":'x'"#,
            r#""extra":NaN"#,
            r#""extra" 1"#,
            "\"extra\":\u{c}1",
        ] {
            let body = new_payload(broken);
            assert_eq!(error(&body), InspectError::Parse, "{broken}");
        }
        let mut invalid_utf8 = new_payload(r#""extra":"AB""#).into_bytes();
        let at = invalid_utf8
            .windows(2)
            .position(|pair| pair == b"AB")
            .unwrap_or_default();
        invalid_utf8[at] = 0xff;
        assert_eq!(inspect(&invalid_utf8), Err(InspectError::Parse));
        for trailing in ["x", "{}", ",", "]"] {
            let body = format!("{}{trailing}", new_payload(""));
            assert_eq!(error(&body), InspectError::Parse, "{trailing}");
        }
        assert_eq!(inspect(b""), Err(InspectError::Parse));
        assert_eq!(inspect(b"  \n "), Err(InspectError::Parse));
        assert_eq!(inspect("\u{feff}{}".as_bytes()), Err(InspectError::Parse));
    }

    #[test]
    fn inspect_deep_nesting_is_parse_error_without_overflow() {
        let deep = new_payload(&format!(
            r#""extra":{}{}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        ));
        assert_eq!(error(&deep), InspectError::Parse);
        // The envelope, params and params[0] are three levels: 29 more reach the limit.
        let inner = MAX_NESTING_DEPTH - 3;
        let limit = new_payload(&format!(
            r#""extra":{}{}"#,
            "[".repeat(inner),
            "]".repeat(inner)
        ));
        assert_eq!(call(&limit).method, Method::NewPayload(3));
        let over = new_payload(&format!(
            r#""extra":{}{}"#,
            "[".repeat(inner + 1),
            "]".repeat(inner + 1)
        ));
        assert_eq!(error(&over), InspectError::Parse);
        // Brackets inside strings do not count.
        let strings = new_payload(&format!(r#""extra":"{}""#, "[{".repeat(10_000)));
        assert_eq!(call(&strings).method, Method::NewPayload(3));
    }

    #[test]
    fn inspect_short_unicode_escape_cannot_hide_nesting() {
        // A validator that skipped `\u` plus four bytes unchecked would swallow the closing
        // quote here and accept the string; it must be refused.
        let hidden = format!(r#"{{"a":["\u"abc",{}]}}"#, "[".repeat(100_000));
        assert_eq!(inspect(hidden.as_bytes()), Err(InspectError::Parse));
    }

    #[test]
    fn inspect_agrees_with_serde_json_on_validity() {
        // Every single-byte deletion, insertion and replacement of two bodies: a compact real
        // fork choice call (plain strings, the fast paths) and one built to reach serde_json
        // (escapes, non-ASCII, fractions, exponents, literals).
        let real = member(CAPELLA_FCU_ATTRS, "request");
        let real =
            sonic_rs::to_string(&sonic_rs::from_str::<sonic_rs::Value>(&real).unwrap_or_default())
                .unwrap_or_default();
        let exotic = r#"{"jsonrpc":"2.0","id":-1.5e3,"method":"eth_x","params":[{"a":"\u00e9\n","b":[true,false,null,0,-0.25,1E+2],"c":"é"}]}"#;
        let inserts: &[u8] = b"\"\\{}[],: 0x-e.+nutf\x00\x1f\x7f\x80\xc3\xff";
        let mut cases = 0;
        let mut check = |body: &[u8]| {
            let reference = serde_json::from_slice::<serde_json::Value>(body);
            let parse = inspect(body) == Err(InspectError::Parse);
            assert_eq!(
                parse,
                reference.is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            cases += 1;
        };
        for base in [real.as_str(), exotic] {
            let bytes = base.as_bytes();
            check(bytes);
            for at in 0..=bytes.len() {
                if at < bytes.len() {
                    let mut removed = bytes.to_vec();
                    removed.remove(at);
                    check(&removed);
                }
                for &insert in inserts {
                    let mut inserted = bytes.to_vec();
                    inserted.insert(at, insert);
                    check(&inserted);
                    if at < bytes.len() {
                        let mut replaced = bytes.to_vec();
                        replaced[at] = insert;
                        check(&replaced);
                    }
                }
            }
        }
        assert!(cases > 30_000);
    }

    #[test]
    fn inspect_quantities_are_strict() {
        let timestamp =
            |text: &str| inspect(new_payload(&format!(r#""timestamp":{text}"#)).as_bytes());
        for (text, value) in [
            (r#""0x0""#, 0),
            (r#""0x5""#, 5),
            (r#""0xabcDEF""#, 0xab_cdef),
            (r#""0xffffffffffffffff""#, u64::MAX),
        ] {
            match timestamp(text) {
                Ok(Inspected::Call(call)) => assert_eq!(call.timestamp, Some(value), "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        for text in [
            r#""0x""#,
            r#""0x00""#,
            r#""0x01""#,
            r#""0X1""#,
            r#""1""#,
            r#""x1""#,
            r#""0xg""#,
            r#""0x-1""#,
            r#""0x 1""#,
            r#"" 0x1""#,
            r#""0x10000000000000000""#,
            r#""0x1ffffffffffffffff""#,
            r#""""#,
            "5",
            "true",
            "{}",
            r#"["0x1"]"#,
        ] {
            let id = b"7";
            assert_eq!(
                timestamp(text),
                Err(InspectError::InvalidParams {
                    id: Box::from(&id[..]),
                    reason: TIMESTAMP
                }),
                "{text}"
            );
        }
        match timestamp("null") {
            Ok(Inspected::Call(call)) => assert_eq!(call.timestamp, None),
            other => panic!("null: {other:?}"),
        }
        assert_eq!(
            reason(&new_payload(r#""blockNumber":"0x01""#)),
            BLOCK_NUMBER
        );
        assert_eq!(
            reason(&new_payload(r#""timestamp":"0x1","timestamp":"0x1""#)),
            "a member read by the proxy appears twice"
        );
    }

    #[test]
    fn inspect_hashes_are_exact_data() {
        let upper = HASH_A.to_uppercase().replacen("0X", "0x", 1);
        let call = call(&new_payload(&format!(r#""blockHash":"{upper}""#)));
        assert_eq!(call.block_hash, Some(hash(HASH_A)));
        for text in [
            format!(r#""{}""#, &HASH_A[..65]),
            format!(r#""{HASH_A}0""#),
            format!(r#""{HASH_A}00""#),
            format!(r#""0x{}""#, "g".repeat(64)),
            format!(r#""{}""#, &HASH_A[2..]),
            "\"0x\"".to_owned(),
            "1".to_owned(),
        ] {
            assert_eq!(
                reason(&new_payload(&format!(r#""blockHash":{text}"#))),
                BLOCK_HASH,
                "{text}"
            );
        }
    }

    #[test]
    fn inspect_params_by_name_for_read_method_is_invalid_params() {
        let body = format!(
            r#"{{{ID_AND_VERSION},"method":"engine_newPayloadV1","params":{{"payload":{{}}}}}}"#
        );
        assert_eq!(reason(&body), "params must be an array");
        let body = format!(r#"{{{ID_AND_VERSION},"method":"engine_newPayloadV1","params":[5]}}"#);
        assert_eq!(
            reason(&body),
            "params[0] must be an execution payload object"
        );
        let body = format!(r#"{{{ID_AND_VERSION},"method":"engine_newPayloadV1","params":[]}}"#);
        assert_eq!(call(&body).block_hash, None);
        let body = format!(r#"{{{ID_AND_VERSION},"method":"engine_newPayloadV1"}}"#);
        assert_eq!(call(&body).block_hash, None);
    }

    #[test]
    fn inspect_error_codes_ids_and_bodies() {
        assert_eq!(InspectError::Parse.code(), code::PARSE_ERROR);
        assert_eq!(InspectError::Parse.id(), None);
        let params = InspectError::InvalidParams {
            id: Box::from(&b"\"x\""[..]),
            reason: TIMESTAMP,
        };
        assert_eq!(params.code(), code::INVALID_PARAMS);
        assert_eq!(params.id(), Some(&b"\"x\""[..]));
        let value = parse_back(&params.body());
        assert_eq!(value["id"], "x");
        assert_eq!(value["error"]["code"], code::INVALID_PARAMS);
        assert_eq!(
            value["error"]["message"],
            format!("Invalid params: {TIMESTAMP}")
        );
        let value = parse_back(&InspectError::Parse.body());
        assert_eq!(value["id"], serde_json::Value::Null);
        assert_eq!(value["error"]["code"], code::PARSE_ERROR);
    }

    #[test]
    fn answer_new_payload_statuses() {
        let answer = inspect_answer(
            Method::NewPayload(2),
            member(CAPELLA_NEW_PAYLOAD, "response").as_bytes(),
        );
        assert_eq!(
            answer,
            AnswerFacts {
                status: Some(PayloadStatus::Valid),
                payload_id: None,
                error_code: None,
                has_result: true,
                id_digest: answer.id_digest,
            }
        );
        let invalid = inspect_answer(
            Method::NewPayload(4),
            member(PRAGUE_BAD_BLOCK_HASH, "response").as_bytes(),
        );
        assert_eq!(invalid.status, Some(PayloadStatus::Invalid));
        for status in [
            PayloadStatus::Valid,
            PayloadStatus::Invalid,
            PayloadStatus::Syncing,
            PayloadStatus::Accepted,
            PayloadStatus::InvalidBlockHash,
        ] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"latestValidHash":null,"status":"{status}"}}}}"#
            );
            assert_eq!(
                inspect_answer(Method::NewPayload(1), body.as_bytes()).status,
                Some(status)
            );
        }
        let unknown = br#"{"jsonrpc":"2.0","id":1,"result":{"status":"INVALID_INCLUSION_LIST"}}"#;
        let answer = inspect_answer(Method::NewPayload(5), unknown);
        assert!(answer.has_result);
        assert_eq!(answer.status, None);
    }

    #[test]
    fn answer_fork_choice_status_and_payload_id() {
        let answer = inspect_answer(
            Method::ForkchoiceUpdated(2),
            member(CAPELLA_FCU_ATTRS, "response").as_bytes(),
        );
        assert_eq!(answer.status, Some(PayloadStatus::Valid));
        assert_eq!(
            answer.payload_id,
            Some([0x0c, 0xe6, 0xda, 0x71, 0x94, 0xc6, 0xb1, 0xcf])
        );
        let answer = inspect_answer(
            Method::ForkchoiceUpdated(3),
            member(PRAGUE_UNKNOWN_HEAD, "response").as_bytes(),
        );
        assert_eq!(answer.status, Some(PayloadStatus::Syncing));
        assert_eq!(answer.payload_id, None);
        assert!(answer.has_result);
    }

    #[test]
    fn answer_errors_carry_code() {
        let answer = inspect_answer(
            Method::GetPayload(2),
            member(CAPELLA_UNKNOWN_PAYLOAD, "response").as_bytes(),
        );
        assert_eq!(answer.error_code, Some(-32001));
        assert!(!answer.has_result);
        let answer = inspect_answer(
            Method::GetPayload(5),
            member(PRAGUE_GET_PAYLOAD_V5, "response").as_bytes(),
        );
        assert_eq!(answer.error_code, Some(code::METHOD_NOT_FOUND));
        let both = br#"{"jsonrpc":"2.0","id":1,"result":{"status":"VALID"},"error":{"code":-38001,"message":"x"}}"#;
        let answer = inspect_answer(Method::NewPayload(1), both);
        assert_eq!(
            answer,
            AnswerFacts {
                status: None,
                payload_id: None,
                error_code: Some(-38001),
                has_result: false,
                id_digest: Some(id_digest(b"1")),
            }
        );
        let null_error = br#"{"jsonrpc":"2.0","id":1,"result":{"status":"VALID"},"error":null}"#;
        assert!(inspect_answer(Method::NewPayload(1), null_error).has_result);
        let odd_code = br#"{"jsonrpc":"2.0","id":1,"error":{"code":1.5}}"#;
        let odd = inspect_answer(Method::Other, odd_code);
        assert_eq!((odd.error_code, odd.has_result), (None, false));
        let get_payload = inspect_answer(
            Method::GetPayload(2),
            member(CAPELLA_GET_PAYLOAD, "response").as_bytes(),
        );
        assert!(get_payload.has_result);
    }

    #[test]
    fn answer_malformed_yields_default() {
        let body = member(CAPELLA_FCU_ATTRS, "response");
        for len in 0..body.len() {
            assert_eq!(
                inspect_answer(Method::ForkchoiceUpdated(2), &body.as_bytes()[..len]),
                AnswerFacts::default()
            );
        }
        for body in [
            &b"[]"[..],
            b"5",
            b"{\"result\":{\"status\":\"VALID\"}} x",
            b"{\"result\":[[[[[[[[[[[[",
        ] {
            assert_eq!(
                inspect_answer(Method::NewPayload(1), body),
                AnswerFacts::default()
            );
        }
        let deep = format!(
            r#"{{"result":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            inspect_answer(Method::NewPayload(1), deep.as_bytes()),
            AnswerFacts::default()
        );
    }

    #[test]
    fn error_body_escapes_message_and_echoes_id() {
        let message = "bad \"quote\" \\ back\nslash \u{1} é";
        for (id, expected) in [
            (&b"17"[..], serde_json::json!(17)),
            (br#""a \"b\"""#, serde_json::json!("a \"b\"")),
            (b"null", serde_json::Value::Null),
            (b" 5 ", serde_json::json!(5)),
            (b"{}", serde_json::Value::Null),
            (b"1 2", serde_json::Value::Null),
            (b"\"open", serde_json::Value::Null),
            (b"", serde_json::Value::Null),
        ] {
            let body = error_body(id, code::INTERNAL_ERROR, message);
            let value = parse_back(&body);
            assert_eq!(value["jsonrpc"], "2.0");
            assert_eq!(value["id"], expected, "{}", String::from_utf8_lossy(id));
            assert_eq!(value["error"]["code"], code::INTERNAL_ERROR);
            assert_eq!(value["error"]["message"], message);
        }
        let body = error_body(b"\"x\"", -1, "m");
        assert_eq!(
            body,
            br#"{"jsonrpc":"2.0","id":"x","error":{"code":-1,"message":"m"}}"#
        );
    }

    #[test]
    fn syncing_body_shapes_per_version() {
        for version in 1..=8 {
            let body = syncing_body(Method::NewPayload(version), b"9").unwrap_or_default();
            let value = parse_back(&body);
            assert_eq!(value["id"], 9);
            assert_eq!(value["result"]["status"], "SYNCING");
            assert_eq!(value["result"]["latestValidHash"], serde_json::Value::Null);
            assert_eq!(value["result"]["validationError"], serde_json::Value::Null);
            let fields = value["result"].as_object().map_or(0, |object| object.len());
            assert_eq!(
                fields,
                if version >= 6 { 4 } else { 3 },
                "newPayloadV{version}"
            );
            let answer = inspect_answer(Method::NewPayload(version), &body);
            assert_eq!(answer.status, Some(PayloadStatus::Syncing));
        }
        for version in 1..=6 {
            let body =
                syncing_body(Method::ForkchoiceUpdated(version), br#""f""#).unwrap_or_default();
            let value = parse_back(&body);
            assert_eq!(value["id"], "f");
            assert_eq!(value["result"]["payloadId"], serde_json::Value::Null);
            assert_eq!(value["result"]["payloadStatus"]["status"], "SYNCING");
            let fields = value["result"]["payloadStatus"]
                .as_object()
                .map_or(0, |object| object.len());
            assert_eq!(
                fields,
                if version >= 5 { 4 } else { 3 },
                "forkchoiceUpdatedV{version}"
            );
            let answer = inspect_answer(Method::ForkchoiceUpdated(version), &body);
            assert_eq!(answer.status, Some(PayloadStatus::Syncing));
            assert!(answer.has_result);
        }
        for method in [
            Method::GetPayload(1),
            Method::BuilderPayloadAttributes,
            Method::Other,
        ] {
            assert_eq!(syncing_body(method, b"1"), None);
        }
    }

    #[test]
    fn immediate_body_per_method_kind() {
        let body = immediate_body(&call(&member(CAPELLA_NEW_PAYLOAD, "request")));
        assert_eq!(parse_back(&body)["result"]["status"], "SYNCING");
        let body = immediate_body(&call(&member(CAPELLA_FCU_ATTRS, "request")));
        assert_eq!(
            parse_back(&body)["result"]["payloadStatus"]["status"],
            "SYNCING"
        );
        let body = immediate_body(&call(&builder(r#""slot":1"#)));
        let value = parse_back(&body);
        assert_eq!(value["id"], 7);
        assert_eq!(value["result"], serde_json::Value::Null);
        assert!(
            value
                .as_object()
                .is_some_and(|object| object.contains_key("result"))
        );
        let body = immediate_body(&call(&member(CAPELLA_GET_PAYLOAD, "request")));
        let value = parse_back(&body);
        assert_eq!(value["id"], 3);
        assert_eq!(value["error"]["code"], code::UNKNOWN_PAYLOAD);
        assert_eq!(value["error"]["message"], "Unknown payload");
        let body = immediate_body(&call(
            r#"{"jsonrpc":"2.0","id":"e","method":"eth_chainId"}"#,
        ));
        let value = parse_back(&body);
        assert_eq!(value["id"], "e");
        assert_eq!(value["error"]["code"], code::INTERNAL_ERROR);
        assert_eq!(value["error"]["message"], IMMEDIATE_MESSAGE);
    }

    #[test]
    fn concat_results_flattens_successful_answers() {
        let el1 = br#"{"jsonrpc":"2.0","id":1,"result":[{"code":"GE","name":"geth","version":"1.0","commit":"abcd0123"}]}"#;
        let el2 = br#"{"jsonrpc":"2.0","id":1,"result":[ {"code":"NM"} , {"code":"RH"} ]}"#;
        let failed = member(PRAGUE_CLIENT_VERSION, "response");
        let garbage = b"{\"result\":[1,";
        let body =
            concat_results(b"2", &[el1, failed.as_bytes(), el2, garbage]).unwrap_or_default();
        let value = parse_back(&body);
        assert_eq!(value["id"], 2);
        let codes: Vec<&str> = value["result"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|entry| entry["code"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(codes, ["GE", "NM", "RH"]);
        assert_eq!(concat_results(b"2", &[failed.as_bytes(), garbage]), None);
        assert_eq!(concat_results(b"2", &[]), None);
        let empty =
            concat_results(b"2", &[br#"{"jsonrpc":"2.0","id":1,"result":[]}"#]).unwrap_or_default();
        assert_eq!(parse_back(&empty)["result"], serde_json::json!([]));
        let not_array = br#"{"jsonrpc":"2.0","id":1,"result":{"code":"GE"}}"#;
        assert_eq!(concat_results(b"2", &[not_array]), None);
    }

    #[test]
    fn intersect_capabilities_keeps_first_order() {
        let first = member(PRAGUE_CAPABILITIES, "response");
        let second = br#"{"jsonrpc":"2.0","id":1,"result":["engine_getBlobsV1","engine_newPayloadV4","engine_newPayloadV\u0033","engine_forkchoiceUpdatedV3","engine_other"]}"#;
        let failed = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"down"}}"#;
        let body =
            intersect_capabilities(b"1", &[failed, first.as_bytes(), second]).unwrap_or_default();
        let value = parse_back(&body);
        assert_eq!(
            value["result"],
            serde_json::json!([
                "engine_newPayloadV3",
                "engine_newPayloadV4",
                "engine_forkchoiceUpdatedV3",
                "engine_getBlobsV1"
            ])
        );
        let alone = intersect_capabilities(b"1", &[first.as_bytes()]).unwrap_or_default();
        assert_eq!(
            parse_back(&alone)["result"].as_array().map(Vec::len),
            Some(18)
        );
        assert_eq!(intersect_capabilities(b"1", &[failed]), None);
        let duplicates = br#"{"jsonrpc":"2.0","id":1,"result":["a","a",5,"b"]}"#;
        let body = intersect_capabilities(b"1", &[duplicates]).unwrap_or_default();
        assert_eq!(parse_back(&body)["result"], serde_json::json!(["a", "b"]));
    }

    #[test]
    fn unicode_escapes_need_four_hex_digits() {
        for (raw, valid) in [
            (&br#""plain""#[..], true),
            (br#""\u00e9\n\\u""#, true),
            (br#""\uABCD\uabcd""#, true),
            (br#""\u00g9""#, false),
            (br#""\u"ab""#, false),
            (br#""\u12""#, false),
            (br#""\"#, false),
        ] {
            assert_eq!(
                unicode_escapes_valid(raw),
                valid,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn printable_ascii_finds_any_byte_out_of_range_at_any_position() {
        for len in [0, 1, 5, 31, 32, 33, 64, 100] {
            let text = vec![b'a'; len];
            assert!(printable_ascii(&text));
            for at in 0..len {
                for bad in [0x00, 0x1f, 0x80, 0xff] {
                    let mut text = text.clone();
                    text[at] = bad;
                    assert!(!printable_ascii(&text), "{len} {at} {bad:#x}");
                }
                let mut edge = text.clone();
                edge[at] = if at % 2 == 0 { 0x20 } else { 0x7f };
                assert!(printable_ascii(&edge));
            }
        }
    }

    #[test]
    fn plain_string_end_stops_at_quote_or_falls_back() {
        let padded = |text: &str| format!("{text}{}", " ".repeat(40));
        for (text, expected) in [
            (r#""""#, Some(2)),
            (r#""abc""#, Some(5)),
            (r#""a\"b""#, None),
            ("\"é\"", None),
            ("\"a\u{1}\"", None),
            ("\"a\u{7f}\"", Some(4)),
            (r#""unterminated"#, None),
        ] {
            assert_eq!(plain_string_end(text.as_bytes(), 0), expected, "{text}");
            assert_eq!(
                plain_string_end(padded(text).as_bytes(), 0),
                expected,
                "{text} padded"
            );
        }
        let long = format!("\"{}\"", "x".repeat(100));
        assert_eq!(plain_string_end(long.as_bytes(), 0), Some(102));
        let long_escaped = format!("\"{}\\n\"", "x".repeat(100));
        assert_eq!(plain_string_end(long_escaped.as_bytes(), 0), None);
    }

    #[test]
    fn rewrite_id_keeps_every_other_byte() {
        let answer = member(CAPELLA_NEW_PAYLOAD, "response");
        let rewritten = rewrite_id(answer.as_bytes(), br#" "bn-2:9" "#).unwrap_or_default();
        let expected = answer.replacen(r#""id": 4"#, r#""id": "bn-2:9""#, 1);
        assert_eq!(String::from_utf8_lossy(&rewritten), expected);
        let compact = br#"{"result":{"status":"SYNCING"},"jsonrpc":"2.0","id":"a"}"#;
        let rewritten = rewrite_id(compact, b"12").unwrap_or_default();
        assert_eq!(
            rewritten,
            br#"{"result":{"status":"SYNCING"},"jsonrpc":"2.0","id":12}"#
        );
        assert_eq!(
            rewrite_id(compact, b"null").map(|body| parse_back(&body)["id"].is_null()),
            Some(true)
        );
        for (answer, id) in [
            (&compact[..], &b"{}"[..]),
            (compact, b"1 2"),
            (br#"{"jsonrpc":"2.0","result":null}"#, b"1"),
            (br#"{"id":1,"id":2}"#, b"1"),
            (br#"[{"id":1}]"#, b"1"),
            (br#"{"id":1"#, b"1"),
            (br#"{"id":1} x"#, b"1"),
        ] {
            assert_eq!(
                rewrite_id(answer, id),
                None,
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[test]
    fn payload_status_round_trips_wire_form() {
        for status in [
            PayloadStatus::Valid,
            PayloadStatus::Invalid,
            PayloadStatus::Syncing,
            PayloadStatus::Accepted,
            PayloadStatus::InvalidBlockHash,
        ] {
            assert_eq!(
                PayloadStatus::parse(status.as_str().as_bytes()),
                Some(status)
            );
        }
        assert_eq!(PayloadStatus::parse(b"valid"), None);
    }

    #[test]
    fn recover_id_reads_ids_before_the_damage() {
        let cases: [(&[u8], Option<&[u8]>); 9] = [
            (
                br#"{"jsonrpc":"2.0","id":7,"method":"engine_newPayloadV3","params":[{"#,
                Some(b"7"),
            ),
            (br#" { "id" : "a\"b" , "method": tru"#, Some(br#""a\"b""#)),
            (br#"{"params":[{"id":1}],"id":null,"x":"#, Some(b"null")),
            (br#"{"params":[{"a":"}]"}],"id":-3.5e2"#, None),
            (br#"{"params":[{"a":"}]"}],"id":-3.5e2,"#, Some(b"-3.5e2")),
            (br#"{"method":"x","params":[1,2"#, None),
            (br#"{"id":{"nested":1},"x""#, None),
            (br#"[{"id":1}"#, None),
            (br#"{"id":01,"#, None),
        ];
        for (body, expected) in cases {
            assert_eq!(
                recover_id(body).as_deref(),
                expected,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn recover_id_never_panics_on_any_prefix() {
        let body =
            br#"{"jsonrpc":"2.0","params":[{"a":["\"]",{"b":"}"}]}],"id":"x\\","method":"m"}"#;
        for cut in 0..=body.len() {
            let _ = recover_id(&body[..cut]);
        }
        assert_eq!(recover_id(body).as_deref(), Some(&br#""x\\""#[..]));
    }
}
