//! A simulated execution client: a small model of what an Engine API server answers, and the
//! faults real ones show (down, restarted behind, hung engine calls while `eth_syncing` still
//! answers, JSON-RPC errors in HTTP 200, 5xx, resyncing, slow, resets mid-answer).
//!
//! It knows blocks by hash: a payload whose parent it knows is `VALID`, else `SYNCING` until its
//! devp2p sync (the simulator's `learn`) fills the gap. It builds a payload for a fork choice
//! with attributes on a head it knows, and hands it out for that payload id only.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::rng::Rng;

/// What an execution client is suffering from, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Healthy.
    None,
    /// Process down: connections are refused, open ones reset.
    Down,
    /// Engine calls never answer; `eth_syncing` still does (a stuck block import).
    Hung,
    /// Engine calls answer a JSON-RPC server error (`-32000`) in HTTP 200.
    Erroring,
    /// Everything answers HTTP 503.
    Unavailable,
    /// Resyncing: payloads and fork choices answer `SYNCING`.
    Syncing,
    /// Every answer takes several times longer.
    Slow,
}

impl Fault {
    /// A short name for traces.
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "healthy",
            Fault::Down => "down",
            Fault::Hung => "hung",
            Fault::Erroring => "erroring",
            Fault::Unavailable => "503",
            Fault::Syncing => "syncing",
            Fault::Slow => "slow",
        }
    }

    /// Whether the client validates and answers engine calls properly.
    pub fn is_healthy(self) -> bool {
        matches!(self, Fault::None | Fault::Slow)
    }
}

/// How the client answers one request.
#[derive(Debug)]
pub enum Reply {
    /// An HTTP answer after `after`; `verdict` is the payload status in it, if any.
    Answer {
        /// HTTP status.
        status: u16,
        /// JSON body.
        body: Vec<u8>,
        /// Time to answer.
        after: Duration,
        /// `VALID`, `INVALID`, `SYNCING`… for payload and fork-choice calls.
        verdict: Option<&'static str>,
    },
    /// Never answered (the connection stays open).
    Hang,
}

/// One simulated execution client.
#[derive(Debug)]
pub struct ExecutionModel {
    /// Its name in traces (`el-0`…).
    pub name: String,
    /// Blocks it has validated, with their slot and when it learned them.
    known: HashMap<[u8; 32], (u64, Duration)>,
    /// Payloads it built, by id: the head they build on.
    built: HashMap<[u8; 8], [u8; 32]>,
    /// The fault it suffers from now.
    pub fault: Fault,
    /// Base latency of its engine calls, in ms.
    base_ms: u64,
}

impl ExecutionModel {
    /// A healthy client that knows `genesis`.
    pub fn new(name: String, genesis: [u8; 32], base_ms: u64) -> ExecutionModel {
        let mut known = HashMap::new();
        known.insert(genesis, (0, Duration::ZERO));
        ExecutionModel {
            name,
            known,
            built: HashMap::new(),
            fault: Fault::None,
            base_ms,
        }
    }

    /// Whether it had validated `hash` by `time`.
    pub fn knew(&self, hash: &[u8; 32], time: Duration) -> bool {
        self.known.get(hash).is_some_and(|(_, at)| *at <= time)
    }

    /// Learns blocks by devp2p sync at `now` (the simulator passes their ancestry).
    pub fn learn(&mut self, blocks: impl IntoIterator<Item = ([u8; 32], u64)>, now: Duration) {
        for (hash, slot) in blocks {
            self.known.entry(hash).or_insert((slot, now));
        }
    }

    /// A restart from an old snapshot: forgets blocks after `slot`, and the payloads it built.
    pub fn forget_after(&mut self, slot: u64) {
        self.known.retain(|_, (s, _)| *s <= slot);
        self.built.clear();
    }

    /// Answers one JSON-RPC request body.
    pub fn handle(
        &mut self,
        body: &[u8],
        slot_of: &dyn Fn(&[u8; 32]) -> u64,
        rng: &mut Rng,
        now: Duration,
    ) -> Reply {
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let method = request.get("method").and_then(Value::as_str).unwrap_or("");
        let engine = method.starts_with("engine_");
        let scale = if self.fault == Fault::Slow { 6 } else { 1 };
        let (low, high) = match method {
            m if m.starts_with("engine_newPayload") => (self.base_ms * 4, self.base_ms * 40),
            m if m.starts_with("engine_getPayload") => (self.base_ms, self.base_ms * 20),
            m if m.starts_with("engine_") => (self.base_ms / 2, self.base_ms * 6),
            _ => (0, 2),
        };
        let after = rng.latency_ms(low * scale, high * scale);
        match self.fault {
            Fault::Hung if engine => return Reply::Hang,
            Fault::Unavailable => {
                return answer(503, b"{}".to_vec(), after, None);
            }
            Fault::Erroring if engine => {
                let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": "internal error"}});
                return answer(200, to_vec(&body), after, None);
            }
            _ => {}
        }
        let params = &request["params"];
        let (result, verdict) = if method.starts_with("engine_newPayload") {
            let payload = &params[0];
            let hash = hash_of(&payload["blockHash"]);
            let parent = hash_of(&payload["parentHash"]);
            let status = if self.fault == Fault::Syncing {
                "SYNCING"
            } else if self.known.contains_key(&parent) {
                self.known.entry(hash).or_insert((slot_of(&hash), now));
                "VALID"
            } else {
                "SYNCING"
            };
            let latest = if status == "VALID" {
                hex(&hash)
            } else {
                Value::Null
            };
            let result =
                json!({"status": status, "latestValidHash": latest, "validationError": null});
            (result, Some(status))
        } else if method.starts_with("engine_forkchoiceUpdated") {
            let head = hash_of(&params[0]["headBlockHash"]);
            let valid = self.fault != Fault::Syncing && self.known.contains_key(&head);
            let status = if valid { "VALID" } else { "SYNCING" };
            let payload_id = (valid && params[1].is_object()).then(|| {
                let id = rng.next_u64().to_be_bytes();
                self.built.insert(id, head);
                id
            });
            let id_value = payload_id.map_or(Value::Null, |id| {
                Value::String(format!("0x{}", hex_string(&id)))
            });
            let latest = if valid { hex(&head) } else { Value::Null };
            let result = json!({
                "payloadStatus": {"status": status, "latestValidHash": latest, "validationError": null},
                "payloadId": id_value,
            });
            (result, Some(status))
        } else if method.starts_with("engine_getPayload") {
            let wanted = params[0].as_str().and_then(parse_id);
            match wanted.and_then(|id| self.built.get(&id)) {
                Some(parent) => {
                    let result = json!({
                        "executionPayload": {"parentHash": hex(parent), "blockHash": hex(&rng.hash()), "builtBy": self.name},
                        "blockValue": "0x1",
                    });
                    (result, None)
                }
                None => {
                    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -38001, "message": "Unknown payload"}});
                    return answer(200, to_vec(&body), after, None);
                }
            }
        } else if method == "engine_exchangeCapabilities" {
            (
                json!([
                    "engine_newPayloadV3",
                    "engine_forkchoiceUpdatedV3",
                    "engine_getPayloadV3"
                ]),
                None,
            )
        } else if method == "engine_getClientVersionV1" {
            (
                json!([{"code": "SM", "name": self.name, "version": "1.0.0", "commit": "0x00000000"}]),
                None,
            )
        } else if method == "eth_syncing" {
            let syncing = self.fault == Fault::Syncing;
            let result = if syncing {
                json!({"startingBlock": "0x0", "currentBlock": "0x1", "highestBlock": "0x2"})
            } else {
                json!(false)
            };
            (result, None)
        } else {
            (json!(self.name), None)
        };
        let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
        answer(200, to_vec(&body), after, verdict)
    }
}

fn answer(status: u16, body: Vec<u8>, after: Duration, verdict: Option<&'static str>) -> Reply {
    Reply::Answer {
        status,
        body,
        after,
        verdict,
    }
}

fn to_vec(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// `0x`-prefixed lowercase hex of `bytes`, as a JSON string.
pub fn hex(bytes: &[u8]) -> Value {
    Value::String(format!("0x{}", hex_string(bytes)))
}

/// Lowercase hex of `bytes`, no prefix.
pub fn hex_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A 32-byte hash from a `0x…` JSON string (zeros when malformed: the model's requests come from
/// the simulator and are well-formed).
pub fn hash_of(value: &Value) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(text) = value.as_str().and_then(|t| t.strip_prefix("0x")) {
        decode(text, &mut out);
    }
    out
}

fn parse_id(text: &str) -> Option<[u8; 8]> {
    let mut out = [0u8; 8];
    let text = text.strip_prefix("0x")?;
    (text.len() == 16)
        .then(|| decode(text, &mut out))
        .map(|()| out)
}

fn decode(text: &str, out: &mut [u8]) {
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = text
            .get(i * 2..i * 2 + 2)
            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            .unwrap_or(0);
    }
}
