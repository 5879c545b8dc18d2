//! The simulator's invariants: each has a name and a one-line reason, and is checked after every
//! step (or at each slot, or at the end). The checker keeps only what it needs to check them:
//! what was sent and admitted, what each execution client received and answered.
//!
//! Delivery invariants hold under any fault: every admitted request gets one answer with its own
//! id; state-changing calls reach each execution client in the order received; a block reaches
//! an execution client that already gave a final verdict on it at most once, and one back from
//! an outage catches up; only the followed beacon node moves the head; memory stays bounded.
//! The answer rules ([`super::Options::answer_rules`]) say what a beacon node must be answered.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::Value;

use super::beacon::{Beacon, Call};
use super::execution::ExecutionModel;
use crate::core::Core;
use crate::engine::Lane;
use crate::router::MAX_CATCH_UP_PAYLOADS;
use crate::rpc::Hash32;

/// A violated invariant: its name, why it matters, what was seen.
pub type Failure = (&'static str, &'static str, String);

/// How long the proxy may take to notice an execution client is back: the longest probe
/// backoff, and a margin.
const NOTICE_RECOVERY: Duration = Duration::from_secs(6);

/// Healthy this long, an execution client must have every recent payload.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(24);

/// What the checker knows of one request a beacon node sent.
#[derive(Clone, Debug)]
struct Sent {
    bn: usize,
    call: Call,
    sent: Duration,
    /// Its place in the order the proxy admitted requests.
    index: Option<u64>,
    /// At admission: from the followed beacon node, or naming the head it forwarded last.
    may_move_head: bool,
    /// At admission: the sender was the followed beacon node.
    followed: bool,
}

/// The invariants' memory.
#[derive(Debug)]
pub struct Checker {
    answer_rules: bool,
    sent: HashMap<u64, Sent>,
    next_index: u64,
    /// Answers the core handed out, by (connection serial, request seq).
    answered: HashSet<(u64, u64)>,
    duplicate_answer: Option<(u64, u64)>,
    /// Admitted requests the core has not answered yet.
    unanswered: usize,
    /// Per execution client: the admission index of the last state-changing call received.
    last_state_index: Vec<u64>,
    /// Per execution client: blocks it gave a final verdict on, as the proxy read it.
    finals: Vec<HashSet<Hash32>>,
    /// Per execution client: blocks it received and took (any payload status).
    reached: Vec<HashSet<Hash32>>,
    /// Payloads the proxy forwarded to some execution client, oldest first, with when.
    forwarded: VecDeque<(Hash32, Duration)>,
    /// Per execution client: healthy since, if healthy now.
    healthy_since: Vec<Option<Duration>>,
    /// Per execution client: its last fault episode (fault, from).
    last_fault: Vec<Option<(&'static str, Duration)>>,
    /// Answers the beacon nodes read.
    answers: u64,
}

impl Checker {
    /// A checker for `executions` execution clients.
    pub fn new(executions: usize, answer_rules: bool) -> Checker {
        Checker {
            answer_rules,
            sent: HashMap::new(),
            next_index: 0,
            answered: HashSet::new(),
            duplicate_answer: None,
            unanswered: 0,
            last_state_index: vec![0; executions],
            finals: vec![HashSet::new(); executions],
            reached: vec![HashSet::new(); executions],
            forwarded: VecDeque::new(),
            healthy_since: vec![Some(Duration::ZERO); executions],
            last_fault: vec![None; executions],
            answers: 0,
        }
    }

    /// A beacon node sent request `id`.
    pub fn on_sent(&mut self, id: u64, bn: usize, call: Call, at: Duration) {
        let sent = Sent {
            bn,
            call,
            sent: at,
            index: None,
            may_move_head: false,
            followed: false,
        };
        self.sent.insert(id, sent);
    }

    /// The proxy admitted request `id`; `followed` and `best_head` are the selection after it,
    /// `validated` tells whether an execution client found a block valid.
    pub fn on_admitted(
        &mut self,
        id: u64,
        followed: bool,
        best_head: Option<Hash32>,
        validated: &dyn Fn(&Hash32) -> bool,
    ) {
        let index = self.next_index;
        self.next_index += 1;
        self.unanswered += 1;
        if let Some(sent) = self.sent.get_mut(&id) {
            sent.index = Some(index);
            sent.followed = followed;
            // A proposer on a node that is not followed may build on a validated head (the
            // followed head is restored right after).
            sent.may_move_head = match sent.call {
                Call::ForkChoice(head, attributes) => {
                    followed
                        || Some(head) == best_head
                        || (attributes.is_some() && validated(&head))
                }
                _ => true,
            };
        }
    }

    /// The core answered request `seq` of connection `serial`.
    pub fn on_answer_output(&mut self, serial: u64, seq: u64) {
        if !self.answered.insert((serial, seq)) {
            self.duplicate_answer.get_or_insert((serial, seq));
        }
        self.unanswered = self.unanswered.saturating_sub(1);
    }

    /// A beacon node closed the connection `id` awaited its answer on.
    pub fn on_abandoned(&mut self, id: u64) {
        self.sent.remove(&id);
    }

    /// A beacon node gave up waiting for `id`.
    pub fn on_beacon_timeout(&mut self, id: u64, call: Call) -> Option<Failure> {
        self.sent.remove(&id);
        if !self.answer_rules {
            return None;
        }
        Some((
            "answer_within_client_timeout",
            "a beacon node that waits past its own timeout treats the execution layer as offline and misses the duty",
            format!(
                "request id={id} ({}) got no answer within the client's timeout",
                call.method()
            ),
        ))
    }

    /// A beacon node read the answer to `id`.
    pub fn on_answer(
        &mut self,
        id: u64,
        status: u16,
        answer: &Value,
        els: &[ExecutionModel],
        now: Duration,
    ) -> Option<Failure> {
        self.answers += 1;
        let sent = self.sent.remove(&id)?;
        if answer["id"].as_u64() != Some(id) {
            return Some((
                "one_answer_per_request",
                "a beacon node matches answers by id; another request's answer is a wrong verdict",
                format!("request id={id} was answered with id {}", answer["id"]),
            ));
        }
        if !self.answer_rules {
            return None;
        }
        // Back from a fault, an execution client is noticed by the next probe (backoff up to
        // 5 s): only one healthy for longer counts.
        let healthy = |el: &ExecutionModel, since: Option<Duration>| {
            el.fault.is_healthy() && since.is_some_and(|s| s + NOTICE_RECOVERY <= sent.sent)
        };
        let healthy_els: Vec<&ExecutionModel> = els
            .iter()
            .zip(&self.healthy_since)
            .filter(|(el, since)| healthy(el, **since))
            .map(|(el, _)| el)
            .collect();
        let error = status != 200 || answer.get("error").is_some();
        let verdict = answer["result"]["status"]
            .as_str()
            .or_else(|| answer["result"]["payloadStatus"]["status"].as_str());
        match sent.call {
            Call::NewPayload(_) | Call::ForkChoice(..) if error && !healthy_els.is_empty() => {
                Some((
                    "no_error_while_an_execution_client_is_healthy",
                    "an error on newPayload or forkchoiceUpdated makes the beacon node drop the block or report the execution layer offline",
                    format!(
                        "request id={id} ({}) answered HTTP {status} {}",
                        sent.call.method(),
                        answer["error"]
                    ),
                ))
            }
            Call::NewPayload(block) if verdict == Some("SYNCING") => {
                let knew = healthy_els.iter().find(|el| el.knew(&block, sent.sent))?;
                Some((
                    "no_syncing_where_an_execution_client_knew_valid",
                    "SYNCING makes the beacon node's head optimistic: no attestations, no proposals",
                    format!(
                        "newPayload id={id} answered SYNCING although {} had validated the block before it was sent",
                        knew.name
                    ),
                ))
            }
            Call::ForkChoice(head, attributes)
                if sent.may_move_head && verdict == Some("SYNCING") =>
            {
                let knew = healthy_els.iter().find(|el| el.knew(&head, sent.sent))?;
                let _ = attributes;
                Some((
                    "no_syncing_where_an_execution_client_knew_valid",
                    "SYNCING makes the beacon node's head optimistic: no attestations, no proposals",
                    format!(
                        "forkchoiceUpdated id={id} answered SYNCING although {} knew the head when it was sent",
                        knew.name
                    ),
                ))
            }
            Call::ForkChoice(head, Some(_))
                if sent.may_move_head && answer["result"]["payloadId"].is_null() =>
            {
                let knew = healthy_els.iter().find(|el| el.knew(&head, sent.sent))?;
                let _ = now;
                Some((
                    "proposer_gets_a_payload_id",
                    "a proposer without a payloadId misses its block",
                    format!(
                        "forkchoiceUpdated with attributes id={id} got no payloadId although {} could build on the head",
                        knew.name
                    ),
                ))
            }
            _ => None,
        }
    }

    /// Execution client `el` received a request from the proxy.
    #[allow(clippy::too_many_arguments)]
    pub fn on_delivery(
        &mut self,
        el: usize,
        id: Option<u64>,
        method: &str,
        block: Option<Hash32>,
        head: Option<Hash32>,
        replay: bool,
        now: Duration,
    ) -> Option<Failure> {
        let sent = id.and_then(|id| self.sent.get(&id))?;
        let state = block.is_some() || head.is_some();
        if state && !replay {
            let index = sent.index.unwrap_or(0);
            if index < self.last_state_index[el] {
                return Some((
                    "state_calls_in_order",
                    "the Engine API requires state-changing calls in the order the beacon node sent them",
                    format!(
                        "el-{el} received {method} id={} (admitted #{index}) after admitted #{}",
                        id.unwrap_or(0),
                        self.last_state_index[el]
                    ),
                ));
            }
            self.last_state_index[el] = index;
        }
        if head.is_some() && !sent.may_move_head {
            return Some((
                "only_the_followed_beacon_node_moves_the_head",
                "one writer of the head: a beacon node on another head must never move the execution clients'",
                format!(
                    "el-{el} received forkchoiceUpdated id={} from bn-{} that was not followed and named another head",
                    id.unwrap_or(0),
                    sent.bn
                ),
            ));
        }
        if let Some(block) = block {
            // A catch-up after an outage replays recent payloads on purpose: the execution
            // client may have come back from an older snapshot.
            if !replay && self.finals[el].contains(&block) {
                return Some((
                    "block_reaches_each_execution_client_once",
                    "a block an execution client already judged is work and latency for nothing",
                    format!(
                        "el-{el} received block {} again (id={}) after a final verdict",
                        short(&block),
                        id.unwrap_or(0)
                    ),
                ));
            }
            if !self.forwarded.iter().any(|(b, _)| *b == block) {
                self.forwarded.push_back((block, now));
                if self.forwarded.len() > MAX_CATCH_UP_PAYLOADS {
                    self.forwarded.pop_front();
                }
            }
        }
        None
    }

    /// Execution client `el` answered a payload delivery the proxy read.
    pub fn on_el_answer(
        &mut self,
        el: usize,
        block: Option<Hash32>,
        verdict: Option<&'static str>,
        status: u16,
    ) {
        let Some(block) = block else {
            return;
        };
        if status != 200 || verdict.is_none() {
            return;
        }
        self.reached[el].insert(block);
        if matches!(verdict, Some("VALID" | "INVALID")) {
            self.finals[el].insert(block);
        }
    }

    /// Execution client `el` restarted from a snapshot without these blocks.
    pub fn on_forgotten(&mut self, el: usize, blocks: &[Hash32]) {
        for block in blocks {
            self.finals[el].remove(block);
            self.reached[el].remove(block);
        }
    }

    /// Execution client `el` became healthy, or suffers `fault`, at `now`.
    pub fn on_health(&mut self, el: usize, fault: Option<&'static str>, now: Duration) {
        self.healthy_since[el] = fault.is_none().then_some(now);
        if let Some(fault) = fault {
            self.last_fault[el] = Some((fault, now));
        }
    }

    /// At each slot: every execution client healthy for a while has every recent payload.
    pub fn at_slot(&self, now: Duration) -> Option<Failure> {
        for (el, since) in self.healthy_since.iter().enumerate() {
            let Some(since) = since else {
                continue;
            };
            if now < *since + CATCH_UP_WITHIN {
                continue;
            }
            let missing = self.forwarded.iter().find(|(block, at)| {
                *at + Duration::from_secs(12) <= now && !self.reached[el].contains(block)
            });
            if let Some((block, at)) = missing {
                return Some((
                    "execution_clients_catch_up",
                    "an execution client that misses payloads falls behind and serves stale data until devp2p sync",
                    format!(
                        "el-{el}, healthy since {}s (before: {}), never took block {} forwarded at {}s",
                        since.as_secs(),
                        self.last_fault[el].map_or("no fault".into(), |(f, from)| format!(
                            "{f} from {}s",
                            from.as_secs()
                        )),
                        short(block),
                        at.as_secs()
                    ),
                ));
            }
        }
        None
    }

    /// After every step: bounded memory, one answer per request.
    pub fn after_step(&self, core: &Core) -> Option<Failure> {
        if let Some((serial, seq)) = self.duplicate_answer {
            return Some((
                "one_answer_per_request",
                "a second answer to one request would be read as the answer to the next",
                format!("connection {serial} request {seq} was answered twice"),
            ));
        }
        let config = core.config();
        for upstream in core.upstreams() {
            for lane in [Lane::State, Lane::Read] {
                let queue = upstream.lane(lane);
                // Catch-up legs bypass the queue bound: the router's window holds them.
                let max_len = config.queue_max + MAX_CATCH_UP_PAYLOADS + 2;
                let max_bytes = config.queue_max_bytes + config.catch_up_max_bytes;
                if queue.len() > max_len || queue.queued_bytes() > max_bytes {
                    return Some((
                        "memory_within_bounds",
                        "a dead or slow execution client must not grow the proxy's memory",
                        format!(
                            "{} {lane:?} lane holds {} requests, {} bytes",
                            upstream.config.url,
                            queue.len(),
                            queue.queued_bytes()
                        ),
                    ));
                }
            }
        }
        if core.exchanges_in_flight() > self.unanswered {
            return Some((
                "memory_within_bounds",
                "an exchange outliving its answer is a leak",
                format!(
                    "{} exchanges in flight for {} unanswered requests",
                    core.exchanges_in_flight(),
                    self.unanswered
                ),
            ));
        }
        let per_upstream = Lane::State.max_links() + Lane::Read.max_links();
        if core.links() > per_upstream * core.upstreams().len() {
            return Some((
                "memory_within_bounds",
                "connections per execution client are bounded (Lane::max_links)",
                format!(
                    "{} upstream connections for {} upstreams",
                    core.links(),
                    core.upstreams().len()
                ),
            ));
        }
        None
    }

    /// At the end: every request a beacon node still awaits on an open connection was answered.
    pub fn at_end(&self, beacons: &[Beacon]) -> Option<Failure> {
        let waiting = beacons.iter().flat_map(|b| b.pending.keys()).next()?;
        Some((
            "one_answer_per_request",
            "a beacon node waiting forever misses every later duty",
            format!("request id={waiting} was never answered"),
        ))
    }
}

/// An answer arrived that no request awaited.
pub fn unexpected_answer(what: usize, body: &[u8]) -> Failure {
    (
        "one_answer_per_request",
        "an answer nobody asked for is read as the answer to the next request",
        format!(
            "unexpected answer ({what}): {}",
            String::from_utf8_lossy(body)
        ),
    )
}

/// The proxy sent an execution client bytes that are not an HTTP request.
pub fn garbled(el: usize, bytes: &[u8]) -> Failure {
    (
        "requests_are_well_formed",
        "an execution client refuses a malformed request",
        format!(
            "el-{el} received: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ),
    )
}

fn short(hash: &Hash32) -> String {
    super::execution::hex_string(&hash[..4])
}
