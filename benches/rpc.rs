//! Request inspection throughput: `sync_proxy::rpc::inspect` (one validating pass, serde_json for
//! the hard scalars) against the same extraction done with a `serde_json::Value` DOM, on a small
//! fork-choice call and on a 2 MB `newPayload` whose `method` comes after `params`.
//!
//! It measures parsing only; forwarding, sockets and answers are benchmarked elsewhere.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sync_proxy::rpc::{self, Inspected};

const HASH: &str = "0xa22bf8856a340ce4e866ad1c403029c5ac5bda9b96dd913a189ca074b84afd65";

/// Transactions in the synthetic `newPayload`.
const TRANSACTIONS: usize = 2_000;

/// Bytes of each synthetic transaction once hex-encoded (without quotes).
const TRANSACTION_HEX_BYTES: usize = 1_000;

/// How a body is parsed.
#[derive(Clone, Copy)]
enum Parser {
    /// `rpc::inspect`: the product's code.
    Inspect,
    /// `serde_json::from_slice::<serde_json::Value>`, then the same fields.
    SerdeJson,
}

/// What both parsers extract: method name, timestamp, block or head hash.
#[derive(Debug, PartialEq, Eq)]
struct Extracted {
    method: String,
    timestamp: Option<u64>,
    hash: Option<[u8; 32]>,
}

/// Extracts the fields with `parser`; `None` when the body is refused.
fn extract(parser: Parser, body: &[u8]) -> Option<Extracted> {
    match parser {
        Parser::Inspect => match rpc::inspect(body).ok()? {
            Inspected::Call(call) => Some(Extracted {
                method: call.method_name.into(),
                timestamp: call.timestamp,
                hash: call.block_hash.or(call.head_block_hash),
            }),
            Inspected::Batch { .. } => None,
        },
        Parser::SerdeJson => {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            let method = value.get("method")?.as_str()?.to_owned();
            let params = value.get("params")?;
            let (timestamp, hash) = if method.starts_with("engine_newPayloadV") {
                let payload = params.get(0)?;
                (payload.get("timestamp"), payload.get("blockHash"))
            } else {
                let attributes = params.get(1).filter(|value| !value.is_null());
                let head = params.get(0)?.get("headBlockHash");
                (attributes.and_then(|value| value.get("timestamp")), head)
            };
            // A present but malformed field refuses the body, as `inspect` does.
            let timestamp = match timestamp {
                Some(value) => Some(quantity(value)?),
                None => None,
            };
            let hash = match hash {
                Some(value) => Some(hash32(value)?),
                None => None,
            };
            Some(Extracted {
                method,
                timestamp,
                hash,
            })
        }
    }
}

fn quantity(value: &serde_json::Value) -> Option<u64> {
    let digits = value.as_str()?.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn hash32(value: &serde_json::Value) -> Option<[u8; 32]> {
    let digits = value.as_str()?.strip_prefix("0x")?;
    if digits.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(digits.as_bytes().chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

/// A compact `engine_forkchoiceUpdatedV3` with payload attributes, as a beacon node sends it.
fn fork_choice() -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"engine_forkchoiceUpdatedV3","params":[{{"headBlockHash":"{HASH}","safeBlockHash":"{HASH}","finalizedBlockHash":"{HASH}"}},{{"timestamp":"0x6b0516c4","prevRandao":"{HASH}","suggestedFeeRecipient":"0xabababababababababababababababababababab","withdrawals":[],"parentBeaconBlockRoot":"{HASH}"}}]}}"#
    )
    .into_bytes()
}

/// A 2 MB `engine_newPayloadV4`, `method` and `id` after `params`.
fn new_payload() -> Vec<u8> {
    let transaction = format!("\"0x{}\"", "f8".repeat(TRANSACTION_HEX_BYTES / 2));
    let transactions = vec![transaction; TRANSACTIONS].join(",");
    let bloom = "0".repeat(512);
    format!(
        r#"{{"params":[{{"parentHash":"{HASH}","feeRecipient":"0xabababababababababababababababababababab","stateRoot":"{HASH}","receiptsRoot":"{HASH}","logsBloom":"0x{bloom}","prevRandao":"{HASH}","blockNumber":"0x1","gasLimit":"0x1c9c380","gasUsed":"0x0","timestamp":"0x6b0516c4","extraData":"0x","baseFeePerGas":"0x342770c0","blobGasUsed":"0x0","excessBlobGas":"0x0","blockHash":"{HASH}","transactions":[{transactions}],"withdrawals":[]}},[],"{HASH}",[]],"jsonrpc":"2.0","id":5,"method":"engine_newPayloadV4"}}"#
    )
    .into_bytes()
}

fn inspect(c: &mut Criterion) {
    for (name, body) in [
        ("fork_choice_small", fork_choice()),
        ("new_payload_2mb", new_payload()),
    ] {
        let inspected = extract(Parser::Inspect, &body);
        assert!(inspected.is_some(), "{name} must inspect");
        assert_eq!(
            inspected,
            extract(Parser::SerdeJson, &body),
            "{name}: parsers disagree"
        );
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("rpc_inspect", |b| {
            b.iter(|| extract(Parser::Inspect, black_box(&body)))
        });
        group.bench_function("serde_json_value", |b| {
            b.iter(|| extract(Parser::SerdeJson, black_box(&body)))
        });
        group.finish();
    }
}

criterion_group!(benches, inspect);
criterion_main!(benches);
