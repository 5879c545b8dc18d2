//! A simulated beacon node for the soak: it imports every block of the chain through the proxy
//! (`newPayload`, then `forkchoiceUpdated` without attributes), and when one of its validators
//! proposes the next slot, starts a build (`forkchoiceUpdated` with attributes) and fetches it
//! (`getPayload`) before that slot starts. One keep-alive connection, calls one at a time and
//! with a consensus client's timeouts, as Lighthouse, Prysm and Teku make them.
//!
//! Every answer is judged as a consensus client would: an HTTP status other than 200, a
//! JSON-RPC error, a broken or missing answer, an `INVALID` verdict, a build without a
//! `payloadId` or a `getPayload` without a payload is an error; `SYNCING` or `ACCEPTED` is
//! counted apart (an optimistic head: no attestations until it resolves).

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sync_proxy::sim::Rng;

use crate::chain::{self, Block};
use crate::http::Reader;
use crate::slot::SlotClock;

/// How long a consensus client waits for `newPayload` and `forkchoiceUpdated` (8 s in every
/// client but Lodestar).
const STATE_CALL_TIMEOUT: Duration = Duration::from_secs(8);
/// How long it waits for `getPayload` (Lighthouse, Teku: 2 s).
const GET_PAYLOAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connect to the proxy may take on loopback.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Gossip: a block reaches each beacon node within this many milliseconds of its slot's start.
const MAX_GOSSIP_DELAY_MS: u64 = 150;
/// The proposer fetches its payload this far into the slot before its own (in tenths of a slot).
const GET_PAYLOAD_AT_TENTHS: u32 = 7;
/// Error messages kept per beacon node for the report.
const MAX_ERROR_SAMPLES: usize = 8;

/// The calls a beacon node makes, as tallied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `engine_newPayloadV3` of a block.
    NewPayload,
    /// `engine_forkchoiceUpdatedV3` without attributes.
    Forkchoice,
    /// `engine_forkchoiceUpdatedV3` with attributes: a build.
    Build,
    /// `engine_getPayloadV3`.
    GetPayload,
}

impl Call {
    /// Every call, in report order.
    pub const ALL: [Call; 4] = [
        Call::NewPayload,
        Call::Forkchoice,
        Call::Build,
        Call::GetPayload,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Call::NewPayload => "`newPayloadV3`",
            Call::Forkchoice => "`forkchoiceUpdatedV3`",
            Call::Build => "`forkchoiceUpdatedV3` + attributes",
            Call::GetPayload => "`getPayloadV3`",
        }
    }
}

/// What came of one kind of call.
#[derive(Clone, Debug, Default)]
pub struct CallTally {
    /// Answered `VALID` (or with a payload).
    pub ok: u64,
    /// Answered `SYNCING` or `ACCEPTED`.
    pub syncing: u64,
    /// Answered with an error, or not at all.
    pub errors: u64,
    /// Time to each answer (errors included).
    pub latencies: Vec<Duration>,
}

/// What came of a beacon node's calls.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// By call, in [`Call::ALL`] order.
    pub calls: [CallTally; 4],
    /// The first errors, with the call and the time since the soak started.
    pub error_samples: Vec<String>,
}

impl Tally {
    /// Adds another beacon node's tally.
    pub fn merge(&mut self, other: Tally) {
        for (mine, theirs) in self.calls.iter_mut().zip(other.calls) {
            mine.ok += theirs.ok;
            mine.syncing += theirs.syncing;
            mine.errors += theirs.errors;
            mine.latencies.extend(theirs.latencies);
        }
        self.error_samples.extend(other.error_samples);
    }
}

/// When each block was first answered to any beacon node: from then on every execution client
/// is due to have it.
pub type FirstAnswers = Arc<Mutex<HashMap<String, Instant>>>;

/// How a call was answered.
enum Verdict {
    Ok(Value),
    Syncing,
    Error(String),
}

/// One beacon node.
pub struct Beacon {
    index: usize,
    beacons: usize,
    path: String,
    proxy: SocketAddr,
    stream: Option<TcpStream>,
    reader: Reader,
    next_id: u64,
    rng: Rng,
    clock: SlotClock,
    started: Instant,
    tally: Tally,
}

impl Beacon {
    /// Beacon node `index` of `beacons`, known to the proxy by its path `/bn-<index>`.
    pub fn new(
        index: usize,
        beacons: usize,
        proxy: SocketAddr,
        seed: u64,
        clock: SlotClock,
    ) -> Beacon {
        Beacon {
            index,
            beacons,
            path: format!("/bn-{index}"),
            proxy,
            stream: None,
            reader: Reader::new(),
            next_id: 1,
            rng: Rng::new(seed ^ index as u64),
            clock,
            started: Instant::now(),
            tally: Tally::default(),
        }
    }

    /// Imports every block that comes, until the soak stops sending them; returns the tally.
    pub fn run(mut self, blocks: Receiver<Arc<Block>>, first_answers: FirstAnswers) -> Tally {
        while let Ok(block) = blocks.recv() {
            thread::sleep(Duration::from_millis(
                self.rng.below(MAX_GOSSIP_DELAY_MS + 1),
            ));
            let id = self.id();
            if let Verdict::Ok(_) | Verdict::Syncing =
                self.call(Call::NewPayload, &block.new_payload(id))
            {
                let mut first = first_answers.lock().unwrap_or_else(|p| p.into_inner());
                first.entry(block.hash.clone()).or_insert_with(Instant::now);
            }
            let id = self.id();
            self.call(Call::Forkchoice, &chain::forkchoice(id, &block.hash, None));
            let next = block.slot + 1;
            if next % self.beacons as u64 == self.index as u64 {
                self.propose(&block, next);
            }
        }
        self.tally
    }

    /// Builds on `head` for `slot` and fetches the payload before the slot starts.
    fn propose(&mut self, head: &Block, slot: u64) {
        let id = self.id();
        let timestamp = self.clock.timestamp(slot);
        let body = chain::forkchoice(id, &head.hash, Some(timestamp));
        let Verdict::Ok(result) = self.call(Call::Build, &body) else {
            return;
        };
        let Some(payload_id) = result["payloadId"].as_str().map(str::to_owned) else {
            return;
        };
        let fetch_at = self.clock.start(head.slot) + self.clock.slot() * GET_PAYLOAD_AT_TENTHS / 10;
        thread::sleep(fetch_at.saturating_duration_since(Instant::now()));
        let id = self.id();
        self.call(Call::GetPayload, &chain::get_payload(id, &payload_id));
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Makes one call and tallies its answer.
    fn call(&mut self, call: Call, body: &[u8]) -> Verdict {
        let timeout = match call {
            Call::GetPayload => GET_PAYLOAD_TIMEOUT,
            Call::NewPayload | Call::Forkchoice | Call::Build => STATE_CALL_TIMEOUT,
        };
        let sent = Instant::now();
        let verdict = match self.exchange(body, timeout) {
            Ok((status, answer)) => judge(call, status, &answer),
            Err(e) => Verdict::Error(format!("no answer: {e}")),
        };
        let tally = &mut self.tally.calls[call as usize];
        tally.latencies.push(sent.elapsed());
        match &verdict {
            Verdict::Ok(_) => tally.ok += 1,
            Verdict::Syncing => tally.syncing += 1,
            Verdict::Error(message) => {
                tally.errors += 1;
                if self.tally.error_samples.len() < MAX_ERROR_SAMPLES {
                    self.tally.error_samples.push(format!(
                        "{} s: bn-{} {}: {message}",
                        self.started.elapsed().as_secs(),
                        self.index,
                        call.name()
                    ));
                }
            }
        }
        verdict
    }

    /// Sends `body` and reads the answer on the keep-alive connection (opened again after any
    /// failure, as a consensus client's HTTP client does).
    fn exchange(&mut self, body: &[u8], timeout: Duration) -> io::Result<(u16, Vec<u8>)> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect_timeout(&self.proxy, CONNECT_TIMEOUT)?;
                stream.set_nodelay(true)?;
                self.reader = Reader::new();
                stream
            }
        };
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: sync-proxy\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.path,
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let message = self
            .reader
            .read(&mut stream, false)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let answer = self.reader.bytes(message.body.clone()).to_vec();
        if message.keep_alive {
            self.stream = Some(stream);
        }
        Ok((message.status, answer))
    }
}

/// Judges an answer as a consensus client would.
fn judge(call: Call, status: u16, body: &[u8]) -> Verdict {
    let text = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if status != 200 {
        return Verdict::Error(format!("HTTP {status}: {}", text()));
    }
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Error(format!("not JSON: {}", text()));
    };
    if let Some(error) = answer.get("error") {
        return Verdict::Error(format!("JSON-RPC error {error}"));
    }
    let result = answer["result"].clone();
    let status = match call {
        Call::NewPayload => result["status"].as_str(),
        Call::Forkchoice | Call::Build => result["payloadStatus"]["status"].as_str(),
        Call::GetPayload if result["executionPayload"].is_object() => return Verdict::Ok(result),
        Call::GetPayload => return Verdict::Error(format!("no payload: {}", text())),
    };
    if call == Call::Build && !result["payloadId"].is_string() {
        // Whatever the verdict, the proposer has nothing to propose.
        return Verdict::Error(format!("a build without a payloadId: {}", text()));
    }
    match status {
        Some("VALID") => Verdict::Ok(result),
        Some("SYNCING" | "ACCEPTED") => Verdict::Syncing,
        _ => Verdict::Error(format!("verdict {}", text())),
    }
}
