//! The forwarding table (README, "Where each request goes"): for each request, which upstreams get it and who answers
//! the beacon node; plus the memory that needs (heads, delivered blocks, payload ids).
//!
//! Pure: a request's facts, the beacon node's standing and the upstreams' availability in,
//! a [`Route`] out. Answers coming back update the memory through [`Router::on_read_answer`].

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use crate::config::AckMode;
use crate::engine::Method;
use crate::exchange::{AnswerPolicy, Class};
use crate::network::Chain;
use crate::recent::RecentMap;
use crate::request::Request;
use crate::rpc::{self, Call, Hash32, PayloadStatus};
use crate::tracker::{BeaconTracker, BlockSlots, SlotClaim, Switch, TrackerConfig};

/// Blocks remembered per upstream as already delivered: ~50 minutes of mainnet blocks, far
/// longer than beacon nodes take to send the same block, at ~200 bytes each.
pub const MAX_DELIVERED_BLOCKS: usize = 256;

/// Payload ids remembered with the upstreams that issued them; a beacon node asks for a
/// payload within a slot of starting it, and each id costs a few bytes.
pub const MAX_PAYLOAD_IDS: usize = 64;

/// Statuses remembered per block to compare upstreams' verdicts.
pub const MAX_COMPARED_BLOCKS: usize = 256;

/// Recent payloads kept for catch-up: 32 blocks is over six minutes of mainnet, longer than an
/// execution client restart. Their bytes are bounded separately (`--catch-up-max-bytes`): while
/// queues are busy the bodies are shared with them, once they drain the window is what remains.
pub const MAX_CATCH_UP_PAYLOADS: usize = 32;

/// A set of upstreams by index (fits [`crate::config::MAX_UPSTREAMS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamSet(u64);

impl UpstreamSet {
    /// The empty set.
    pub const EMPTY: UpstreamSet = UpstreamSet(0);

    /// Adds an upstream.
    pub fn insert(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }

    /// Whether the set has `index`.
    pub fn contains(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }

    /// The union of two sets.
    pub fn union(self, other: UpstreamSet) -> UpstreamSet {
        UpstreamSet(self.0 | other.0)
    }

    /// The set without `index`.
    pub fn without(self, index: usize) -> UpstreamSet {
        match index < 64 {
            true => UpstreamSet(self.0 & !(1 << index)),
            false => self,
        }
    }

    /// Whether the set is empty.
    #[cfg(test)]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Members in index order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let index = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(index)
        })
    }
}

/// What the router knows of an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamView {
    /// A chained proxy (fire-and-forget) rather than an execution client.
    pub is_proxy: bool,
    /// Not known to be down: requests can be sent.
    pub available: bool,
    /// Answers engine calls properly: it may be the primary.
    pub healthy: bool,
}

/// A `newPayload` as the dedup memory knows it: method version, block hash, and a digest of
/// the other parameters (versioned hashes, beacon root, requests), which a verdict depends on.
pub type PayloadKey = (u16, Hash32, u64);

/// What an upstream has made of a payload delivered to it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Delivery {
    /// Sent or queued; no verdict yet.
    InFlight,
    /// Its final verdict (`VALID`, `INVALID`…), the answer body as it gave it.
    Final(Vec<u8>),
}

/// Where a request goes and who answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The proxy answers itself with this JSON body (HTTP 200); `targets` still get the request.
    Local {
        /// The answer.
        body: Vec<u8>,
        /// Upstreams that get the request anyway.
        targets: UpstreamSet,
        /// Why the proxy answers itself, for logs.
        reason: &'static str,
    },
    /// The upstreams in `order` answer (first = primary); `targets` get the request.
    Exchange(Plan),
    /// A fork choice with attributes from a beacon node that is not followed, on a head the
    /// execution clients validated: delivered so its proposer can build, then the followed
    /// head is restored at once. The one-writer rule holds: the execution clients' head
    /// moves only to a validated block, for one build, and the followed node's fork choice
    /// is the next state call they get.
    Build(Plan),
    /// A plain fork choice from a beacon node that is not followed, naming the block the
    /// followed node is about to confirm (imported a few milliseconds apart): held briefly
    /// for the followed node's own fork choice, then forwarded, or answered `SYNCING`.
    Hold {
        /// The head it names.
        head: Hash32,
    },
}

/// How an exchange is set up: who gets the request, whose answers count and how, and what is
/// already known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Upstreams that get the request.
    pub targets: UpstreamSet,
    /// Upstreams whose answers count, in preference order (the primary first).
    pub order: Vec<usize>,
    /// How the answer is chosen.
    pub policy: AnswerPolicy,
    /// Final verdicts already given on this very payload, re-addressed to this request.
    pub known: Vec<(usize, Vec<u8>)>,
    /// Upstreams validating this very payload right now (another beacon node's copy): their
    /// verdicts answer this request too.
    pub awaiting: Vec<usize>,
    /// The payload the `awaiting` verdicts are about.
    pub payload: Option<PayloadKey>,
    /// Bodies for upstreams that built for the same fork choice under another payload id:
    /// `getPayload` falls back to them.
    pub alternates: Vec<(usize, Vec<u8>)>,
    /// Any upstream's final verdict may answer at once (a copy of a block already being
    /// validated: the primary's verdict has no head start worth waiting for).
    pub hedged: bool,
}

impl Plan {
    /// `targets` get the request; the upstreams in `order` answer by `policy`.
    pub fn new(targets: UpstreamSet, order: Vec<usize>, policy: AnswerPolicy) -> Plan {
        Plan {
            targets,
            order,
            policy,
            known: Vec::new(),
            awaiting: Vec::new(),
            payload: None,
            alternates: Vec::new(),
            hedged: false,
        }
    }
}

/// What the tracker made of a request, for logging.
#[derive(Debug, Default)]
pub struct Observation {
    /// A slot claim that was not believed: (claimed, wall-clock slot).
    pub ignored_slot: Option<(u64, u64)>,
    /// A change of the followed beacon node.
    pub switch: Option<Switch>,
}

/// Two upstreams' payload statuses for one block or head differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disagreement {
    /// The upstream that answered first.
    pub first: usize,
    /// What it said.
    pub said: PayloadStatus,
    /// What this upstream says.
    pub status: PayloadStatus,
}

/// The forwarding table and its memory.
#[derive(Debug)]
pub struct Router {
    ack: AckMode,
    chain: Chain,
    tracker: BeaconTracker,
    blocks: BlockSlots,
    /// The head last forwarded from the best beacon node.
    best_head: Option<Hash32>,
    /// Payload ids, each with the upstream that issued it and the fork choice it answered.
    builds: RecentMap<[u8; 8], (usize, u64)>,
    /// Per fork choice with attributes: the payload id each upstream issued for it.
    build_siblings: RecentMap<u64, Vec<(usize, [u8; 8])>>,
    /// Per upstream: payloads delivered, with the final verdict once known.
    delivered: Vec<RecentMap<PayloadKey, Delivery>>,
    /// First status seen per (method kind, hash), to spot upstreams that disagree.
    verdicts: RecentMap<(bool, Hash32), (usize, PayloadStatus)>,
    /// Blocks an execution client found `VALID`.
    validated: RecentMap<Hash32, ()>,
    /// Recent forwarded payloads, oldest first, for catch-up.
    recent_payloads: VecDeque<Rc<Request>>,
    recent_payload_bytes: usize,
    max_catch_up_bytes: usize,
    /// The last fork choice forwarded from the followed beacon node.
    last_forkchoice: Option<Rc<Request>>,
}

impl Router {
    /// A router for `upstreams` upstreams, keeping at most `max_catch_up_bytes` of recent
    /// payloads for catch-up.
    pub fn new(
        ack: AckMode,
        chain: Chain,
        tracker: TrackerConfig,
        upstreams: usize,
        max_catch_up_bytes: usize,
    ) -> Router {
        Router {
            ack,
            chain,
            tracker: BeaconTracker::new(tracker),
            blocks: BlockSlots::new(),
            best_head: None,
            builds: RecentMap::new(MAX_PAYLOAD_IDS),
            build_siblings: RecentMap::new(MAX_PAYLOAD_IDS),
            delivered: (0..upstreams)
                .map(|_| RecentMap::new(MAX_DELIVERED_BLOCKS))
                .collect(),
            verdicts: RecentMap::new(MAX_COMPARED_BLOCKS),
            validated: RecentMap::new(MAX_COMPARED_BLOCKS),
            recent_payloads: VecDeque::new(),
            recent_payload_bytes: 0,
            max_catch_up_bytes,
            last_forkchoice: None,
        }
    }

    /// Keeps a forwarded request that catch-up may need: payloads, and the followed head.
    pub fn remember(&mut self, request: &Rc<Request>, forwarded: bool) {
        let Some(call) = &request.call else {
            return;
        };
        match call.method {
            Method::NewPayload(_) if forwarded && call.block_hash.is_some() => {
                if self
                    .recent_payloads
                    .iter()
                    .any(|r| r.call.as_ref().and_then(|c| c.block_hash) == call.block_hash)
                {
                    return;
                }
                self.recent_payload_bytes += request.body.len();
                self.recent_payloads.push_back(Rc::clone(request));
                while self.recent_payloads.len() > MAX_CATCH_UP_PAYLOADS
                    || self.recent_payload_bytes > self.max_catch_up_bytes
                {
                    let Some(old) = self.recent_payloads.pop_front() else {
                        break;
                    };
                    self.recent_payload_bytes -= old.body.len();
                }
            }
            // Only a plain fork choice is replayed: attributes in a replay would start a build
            // nobody asked for, long after its slot.
            Method::ForkchoiceUpdated(_)
                if forwarded
                    && !call.has_payload_attributes
                    && self.tracker.is_best(&request.beacon) =>
            {
                self.last_forkchoice = Some(Rc::clone(request));
            }
            _ => {}
        }
    }

    /// What `upstream` missed: recent payloads it has not been given (oldest first), then the
    /// followed head, so it resumes at the head instead of waiting for devp2p sync. After an
    /// outage (`everything`), every recent payload goes again: a restart from an older
    /// snapshot lost blocks the proxy delivered, and an execution client answers a payload it
    /// has at once. The payloads are marked as delivered to it.
    pub fn catch_up(&mut self, upstream: usize, everything: bool) -> Vec<Rc<Request>> {
        let Some(delivered) = self.delivered.get_mut(upstream) else {
            return Vec::new();
        };
        let mut missing = Vec::new();
        for request in &self.recent_payloads {
            let Some(key) = request.call.as_ref().and_then(payload_key) else {
                continue;
            };
            // A payload queued or in flight to it goes anyway; one with a verdict goes again
            // only after an outage.
            let again = everything && matches!(delivered.get(&key), Some(Delivery::Final(_)));
            if again || delivered.get(&key).is_none() {
                delivered.insert(key, Delivery::InFlight);
                missing.push(Rc::clone(request));
            }
        }
        if let (false, Some(forkchoice)) = (missing.is_empty(), &self.last_forkchoice) {
            missing.push(Rc::clone(forkchoice));
        }
        missing
    }

    /// The head last forwarded from the followed beacon node.
    pub fn best_head(&self) -> Option<Hash32> {
        self.best_head
    }

    /// The beacon-node tracker, for status and metrics.
    pub fn tracker(&self) -> &BeaconTracker {
        &self.tracker
    }

    /// The wall-clock slot at `unix_secs`.
    pub fn wall_slot(&self, unix_secs: u64) -> u64 {
        self.chain.slot_of_timestamp(unix_secs).unwrap_or(0)
    }

    /// Records that `beacon` sent `call` (progress and liveness) and re-runs selection.
    pub fn observe(
        &mut self,
        beacon: &str,
        call: Option<&Call>,
        now: Instant,
        unix_secs: u64,
    ) -> Observation {
        let wall_slot = self.wall_slot(unix_secs);
        let slot = call.and_then(|call| self.slot_of(call));
        if let (Some(call), Some(slot)) = (call, slot) {
            if let (Method::NewPayload(_), Some(hash)) = (call.method, call.block_hash) {
                if slot <= wall_slot.saturating_add(1) {
                    self.blocks.insert(hash, slot);
                }
            }
        }
        let (claim, switch) = self.tracker.observe(beacon, slot, now, wall_slot);
        Observation {
            ignored_slot: match claim {
                SlotClaim::Ignored { claimed, wall_slot } => Some((claimed, wall_slot)),
                _ => None,
            },
            switch,
        }
    }

    /// Time passed: liveness and lag rules.
    pub fn on_timeout(&mut self, now: Instant, unix_secs: u64) -> Option<Switch> {
        let wall_slot = self.wall_slot(unix_secs);
        self.tracker.on_timeout(now, wall_slot)
    }

    /// When selection may change by itself.
    pub fn deadline(&self) -> Option<Instant> {
        self.tracker.deadline()
    }

    /// Decides where a request from `beacon` goes (`call` is `None` for a batch).
    pub fn route(
        &mut self,
        beacon: &str,
        call: Option<&Call>,
        upstreams: &[UpstreamView],
    ) -> Route {
        let proxies = set_of(upstreams, |u| u.is_proxy);
        let clients = set_of(upstreams, |u| !u.is_proxy);
        let primary = primary(upstreams);
        let route = match call {
            None => exchange(proxies, single(primary), AnswerPolicy::Primary),
            Some(call) => self.route_call(beacon, call, upstreams, primary, clients, proxies),
        };
        self.apply_ack_mode(route, call)
    }

    /// [`Router::on_read_answer`], reading the answer's facts from its body first (tests).
    #[cfg(test)]
    pub fn on_answer(
        &mut self,
        upstream: usize,
        serial: u64,
        call: &Call,
        class: Class,
        body: &[u8],
    ) -> Option<Disagreement> {
        let answer = rpc::inspect_answer(call.method, body);
        self.on_read_answer(upstream, serial, call, class, body, &answer)
    }

    /// An upstream answered `call` (`serial` names the request, `class` says how the answer
    /// counts, `answer` holds its facts, already read by `classify_read`): remember what later
    /// routing needs. Returns the disagreement when its payload status differs from the first
    /// upstream's for the same block or head.
    pub fn on_read_answer(
        &mut self,
        upstream: usize,
        serial: u64,
        call: &Call,
        class: Class,
        body: &[u8],
        answer: &rpc::AnswerFacts,
    ) -> Option<Disagreement> {
        if let (Some(id), Method::ForkchoiceUpdated(_)) = (answer.payload_id, call.method) {
            self.builds.insert(id, (upstream, serial));
            let mut siblings = self.build_siblings.remove(&serial).unwrap_or_default();
            siblings.push((upstream, id));
            self.build_siblings.insert(serial, siblings);
        }
        if let (Some(key), Some(delivered)) = (payload_key(call), self.delivered.get_mut(upstream))
        {
            match class {
                Class::Final => delivered.insert(key, Delivery::Final(body.to_vec())),
                // No verdict on the block yet (or none at all): the next copy goes there again.
                Class::Tentative | Class::Refusal | Class::Broken(_) => {
                    delivered.remove(&key);
                }
            }
        }
        let key = match call.method {
            Method::NewPayload(_) => call.block_hash.map(|hash| (true, hash)),
            Method::ForkchoiceUpdated(_) => call.head_block_hash.map(|hash| (false, hash)),
            _ => None,
        };
        let (Some(key), Some(status)) = (key, answer.status) else {
            return None;
        };
        if let ((true, hash), PayloadStatus::Valid) = (key, status) {
            self.validated.insert(hash, ());
        }
        match self.verdicts.get(&key) {
            Some(&(first, said)) if said != status => Some(Disagreement {
                first,
                said,
                status,
            }),
            Some(_) => None,
            None => {
                self.verdicts.insert(key, (upstream, status));
                None
            }
        }
    }

    /// A `newPayload` leg failed: the next copy of that block may go to that upstream again.
    pub fn on_failure(&mut self, upstream: usize, call: &Call) {
        if let (Some(key), Some(delivered)) = (payload_key(call), self.delivered.get_mut(upstream))
        {
            delivered.remove(&key);
        }
    }

    fn slot_of(&self, call: &Call) -> Option<u64> {
        call.slot
            .or_else(|| call.timestamp.and_then(|t| self.chain.slot_of_timestamp(t)))
            .or_else(|| call.head_block_hash.and_then(|h| self.blocks.slot(&h)))
    }

    fn route_call(
        &mut self,
        beacon: &str,
        call: &Call,
        upstreams: &[UpstreamView],
        primary: Option<usize>,
        clients: UpstreamSet,
        proxies: UpstreamSet,
    ) -> Route {
        match call.method {
            Method::ForkchoiceUpdated(_) | Method::BuilderPayloadAttributes => {
                let everyone = exchange(
                    clients.union(proxies),
                    ordered(clients, primary),
                    AnswerPolicy::Primary,
                );
                if self.tracker.is_best(beacon) {
                    if call.head_block_hash.is_some() {
                        self.best_head = call.head_block_hash;
                    }
                    return everyone;
                }
                let Some(head) = call.head_block_hash else {
                    return self.not_followed(call, proxies);
                };
                if Some(head) == self.best_head {
                    // The followed head: harmless, and it lets this node's validators build.
                    return everyone;
                }
                if call.has_payload_attributes && self.validated.get(&head).is_some() {
                    // A proposer on this node builds on a head the execution clients validated;
                    // the followed head is put back right after (see `Route::Build`).
                    return match everyone {
                        Route::Exchange(plan) => Route::Build(plan),
                        local => local,
                    };
                }
                if !call.has_payload_attributes && self.is_about_to_be_followed(&head) {
                    return Route::Hold { head };
                }
                self.not_followed(call, proxies)
            }
            Method::NewPayload(_) | Method::OtherBuilder => match payload_key(call) {
                Some(key) => self.route_new_payload(key, call, primary, clients, proxies),
                None => exchange(
                    clients.union(proxies),
                    ordered(clients, primary),
                    AnswerPolicy::Primary,
                ),
            },
            Method::GetPayload(_) => self.route_get_payload(call, upstreams, proxies),
            Method::GetClientVersion(_) => exchange(
                clients.union(proxies),
                ordered(clients, primary),
                AnswerPolicy::Concatenate,
            ),
            Method::ExchangeCapabilities => exchange(
                clients.union(proxies),
                ordered(clients, primary),
                AnswerPolicy::Intersect,
            ),
            Method::GetPayloadBodies | Method::GetBlobs | Method::OtherEngine | Method::Other => {
                exchange(proxies, single(primary), AnswerPolicy::Primary)
            }
        }
    }

    /// Each payload goes to each execution client once. A copy from another beacon node takes
    /// the verdicts already given on it, waits for those being formed, and goes to the
    /// execution clients that have not had it (or gave no final verdict).
    fn route_new_payload(
        &mut self,
        key: PayloadKey,
        call: &Call,
        primary: Option<usize>,
        clients: UpstreamSet,
        proxies: UpstreamSet,
    ) -> Route {
        let mut plan = Plan::new(proxies, ordered(clients, primary), AnswerPolicy::Primary);
        for index in clients.iter() {
            let Some(delivered) = self.delivered.get_mut(index) else {
                continue;
            };
            match delivered.get(&key) {
                None => {
                    delivered.insert(key, Delivery::InFlight);
                    plan.targets.insert(index);
                }
                Some(Delivery::InFlight) => plan.awaiting.push(index),
                Some(Delivery::Final(body)) => {
                    if let Some(body) = rpc::rewrite_id(body, &call.id) {
                        plan.known.push((index, body));
                    }
                }
            }
        }
        plan.hedged = !plan.awaiting.is_empty() || !plan.known.is_empty();
        plan.payload = Some(key);
        Route::Exchange(plan)
    }

    /// `getPayload` goes to the execution client that issued the id; the others that built for
    /// the same fork choice (under ids of their own) stand by with their payloads.
    fn route_get_payload(
        &mut self,
        call: &Call,
        upstreams: &[UpstreamView],
        proxies: UpstreamSet,
    ) -> Route {
        let build = call.payload_id.and_then(|id| self.builds.get(&id).copied());
        let Some((owner, serial)) = build else {
            return Route::Local {
                body: rpc::error_body(&call.id, rpc::code::UNKNOWN_PAYLOAD, "Unknown payload"),
                targets: proxies,
                reason: "payload id issued by no execution client",
            };
        };
        let mut targets = proxies;
        targets.insert(owner);
        let mut plan = Plan::new(targets, vec![owner], AnswerPolicy::Primary);
        let siblings = self
            .build_siblings
            .get(&serial)
            .cloned()
            .unwrap_or_default();
        for (index, id) in siblings {
            let usable = upstreams
                .get(index)
                .is_some_and(|u| u.available && !u.is_proxy);
            if index != owner && usable {
                plan.order.push(index);
                plan.targets.insert(index);
                plan.alternates.push((
                    index,
                    rpc::get_payload_body(&call.id, &call.method_name, &id),
                ));
            }
        }
        Route::Exchange(plan)
    }

    /// The answer to a fork choice that may not move the head: `SYNCING`, the proxy's own.
    fn not_followed(&self, call: &Call, proxies: UpstreamSet) -> Route {
        Route::Local {
            body: rpc::syncing_body(call.method, &call.id)
                .unwrap_or_else(|| rpc::immediate_body(call)),
            targets: proxies,
            reason: "fork choice from a beacon node that is not followed",
        }
    }

    /// Whether `head` is a block the followed beacon node is likely about to name: its payload
    /// was forwarded, for a slot no older than the followed head's (beacon nodes import the
    /// same block a few milliseconds apart).
    fn is_about_to_be_followed(&self, head: &Hash32) -> bool {
        let Some(slot) = self.blocks.slot(head) else {
            return false;
        };
        let followed = self.best_head.and_then(|h| self.blocks.slot(&h));
        followed.is_none_or(|followed| slot >= followed)
    }

    /// Whether an execution client found the block `hash` valid.
    pub fn is_validated(&self, hash: &Hash32) -> bool {
        self.validated.get(hash).is_some()
    }

    /// Whether a fork choice held for `head` may go now: the followed node named it.
    pub fn is_followed_head(&self, head: &Hash32) -> bool {
        self.best_head == Some(*head)
    }

    /// The followed beacon node's last plain fork choice, to restore the execution clients'
    /// head after another node's build.
    pub fn followed_forkchoice(&self) -> Option<Rc<Request>> {
        self.last_forkchoice.clone()
    }

    fn apply_ack_mode(&self, route: Route, call: Option<&Call>) -> Route {
        let policy = match self.ack {
            AckMode::Immediate => None,
            AckMode::Majority => Some(AnswerPolicy::Majority),
            AckMode::Primary => return route,
        };
        match (route, policy) {
            (Route::Hold { .. }, None) => Route::Local {
                body: call.map(rpc::immediate_body).unwrap_or_default(),
                targets: UpstreamSet::EMPTY,
                reason: "--ack immediate",
            },
            (Route::Exchange(plan) | Route::Build(plan), None) => Route::Local {
                body: match call {
                    Some(call) => rpc::immediate_body(call),
                    None => rpc::error_body(
                        b"null",
                        rpc::code::INTERNAL_ERROR,
                        "sync-proxy --ack immediate: batch queued for delivery, not answered",
                    ),
                },
                targets: plan.targets,
                reason: "--ack immediate",
            },
            (Route::Exchange(mut plan), Some(majority)) => {
                if plan.policy == AnswerPolicy::Primary {
                    plan.policy = majority;
                }
                Route::Exchange(plan)
            }
            (route, _) => route,
        }
    }
}

/// The dedup key of a `newPayload` call.
pub fn payload_key(call: &Call) -> Option<PayloadKey> {
    match (call.method, call.block_hash) {
        (Method::NewPayload(version), Some(hash)) => Some((version, hash, call.params_digest)),
        _ => None,
    }
}

/// The first healthy execution client, else the first available, else the first at all.
fn primary(upstreams: &[UpstreamView]) -> Option<usize> {
    let clients = || upstreams.iter().enumerate().filter(|(_, u)| !u.is_proxy);
    clients()
        .find(|(_, u)| u.healthy && u.available)
        .or_else(|| clients().find(|(_, u)| u.available))
        .or_else(|| clients().next())
        .map(|(i, _)| i)
}

fn set_of(upstreams: &[UpstreamView], pick: impl Fn(&UpstreamView) -> bool) -> UpstreamSet {
    let mut set = UpstreamSet::EMPTY;
    for (index, upstream) in upstreams.iter().enumerate() {
        if pick(upstream) {
            set.insert(index);
        }
    }
    set
}

fn single(primary: Option<usize>) -> Vec<usize> {
    primary.into_iter().collect()
}

/// Members of `set`, the primary first, then configured order.
fn ordered(set: UpstreamSet, primary: Option<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = primary.filter(|&p| set.contains(p)).into_iter().collect();
    order.extend(set.iter().filter(|&i| Some(i) != primary));
    order
}

fn exchange(extra: UpstreamSet, order: Vec<usize>, policy: AnswerPolicy) -> Route {
    let mut targets = extra;
    for &index in &order {
        targets.insert(index);
    }
    Route::Exchange(Plan::new(targets, order, policy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{Inspected, inspect};

    const GENESIS: u64 = 1_000_000;

    fn chain() -> Chain {
        Chain {
            genesis_time: GENESIS,
            seconds_per_slot: 12,
        }
    }

    fn router(ack: AckMode) -> Router {
        Router::new(ack, chain(), TrackerConfig::default(), 3, 1 << 20)
    }

    fn clients(n: usize) -> Vec<UpstreamView> {
        vec![
            UpstreamView {
                is_proxy: false,
                available: true,
                healthy: true,
            };
            n
        ]
    }

    fn call(body: &str) -> Call {
        match inspect(body.as_bytes()) {
            Ok(Inspected::Call(call)) => call,
            other => panic!("{other:?}"),
        }
    }

    fn hash(byte: u8) -> String {
        format!("0x{}", format!("{byte:02x}").repeat(32))
    }

    fn new_payload(id: u64, byte: u8, slot: u64) -> Call {
        call(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"engine_newPayloadV3","params":[{{"blockHash":"{}","timestamp":"0x{:x}"}},[],"{}"]}}"#,
            hash(byte),
            GENESIS + slot * 12,
            hash(0)
        ))
    }

    fn forkchoice(id: u64, byte: u8) -> Call {
        call(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"engine_forkchoiceUpdatedV3","params":[{{"headBlockHash":"{}","safeBlockHash":"{}","finalizedBlockHash":"{}"}},null]}}"#,
            hash(byte),
            hash(byte),
            hash(byte)
        ))
    }

    fn targets_of(route: &Route) -> Vec<usize> {
        match route {
            Route::Local { targets, .. }
            | Route::Exchange(Plan { targets, .. })
            | Route::Build(Plan { targets, .. }) => targets.iter().collect(),
            Route::Hold { .. } => Vec::new(),
        }
    }

    fn plan(route: Route) -> Plan {
        match route {
            Route::Exchange(plan) => plan,
            other => panic!("expected an exchange, got {other:?}"),
        }
    }

    const VALID: &[u8] = br#"{"jsonrpc":"2.0","id":1,"result":{"status":"VALID","latestValidHash":null,"validationError":null}}"#;

    /// Observes then routes, as the handler does.
    fn send(router: &mut Router, beacon: &str, call: &Call, now: Instant) -> Route {
        let unix = GENESIS + 100 * 12;
        router.observe(beacon, Some(call), now, unix);
        router.route(beacon, Some(call), &clients(3))
    }

    #[test]
    fn upstream_set_iterates_members_in_order() {
        let mut set = UpstreamSet::EMPTY;
        for i in [63, 0, 5] {
            set.insert(i);
        }
        set.insert(64);
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 5, 63]);
        assert!(UpstreamSet::EMPTY.is_empty());
    }

    #[test]
    fn primary_is_first_healthy_client() {
        let mut views = clients(3);
        views[0].healthy = false;
        assert_eq!(primary(&views), Some(1), "a demoted client is not primary");
        views[0].healthy = true;
        views[0].available = false;
        assert_eq!(primary(&views), Some(1));
        views[1].is_proxy = true;
        assert_eq!(primary(&views), Some(2));
        views[2].available = false;
        assert_eq!(
            primary(&views),
            Some(0),
            "all down: the first client still answers (with errors)"
        );
    }

    #[test]
    fn forkchoice_from_best_goes_everywhere_primary_answers() {
        let mut router = router(AckMode::Primary);
        let now = Instant::now();
        let plan = plan(send(&mut router, "bn-a", &forkchoice(1, 0xaa), now));
        assert_eq!(plan.targets.iter().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(plan.order, [0, 1, 2]);
        assert_eq!(plan.policy, AnswerPolicy::Primary);
    }

    #[test]
    fn forkchoice_from_other_beacon_on_other_head_is_answered_syncing() {
        let mut router = router(AckMode::Primary);
        let now = Instant::now();
        send(&mut router, "bn-a", &new_payload(1, 0xaa, 100), now);
        send(&mut router, "bn-a", &forkchoice(2, 0xaa), now);
        let route = send(&mut router, "bn-b", &forkchoice(3, 0xbb), now);
        let Route::Local { body, targets, .. } = route else {
            panic!("{route:?}");
        };
        assert!(targets.is_empty());
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["id"], 3);
        assert_eq!(answer["result"]["payloadStatus"]["status"], "SYNCING");
        // The same head from bn-b is forwarded.
        let same = send(&mut router, "bn-b", &forkchoice(4, 0xaa), now);
        assert_eq!(targets_of(&same), [0, 1, 2]);
    }

    #[test]
    fn new_payload_goes_to_each_client_once_and_repeats_get_the_final_verdicts() {
        let mut router = router(AckMode::Primary);
        let now = Instant::now();
        let first = new_payload(1, 0xcc, 100);
        let route = send(&mut router, "bn-a", &first, now);
        assert_eq!(targets_of(&route), [0, 1, 2]);
        for upstream in 0..3 {
            assert!(
                router
                    .on_answer(upstream, 1, &first, Class::Final, VALID)
                    .is_none()
            );
        }
        let repeat = plan(send(&mut router, "bn-b", &new_payload(7, 0xcc, 100), now));
        assert!(repeat.targets.is_empty(), "no client gets the block twice");
        assert_eq!(repeat.known.len(), 3);
        let body: serde_json::Value = serde_json::from_slice(&repeat.known[0].1).unwrap();
        assert_eq!(body["id"], 7, "re-addressed to the new request");
        assert_eq!(body["result"]["status"], "VALID");
    }

    #[test]
    fn new_payload_answered_syncing_goes_again() {
        let mut router = router(AckMode::Primary);
        let now = Instant::now();
        let first = new_payload(1, 0xcd, 100);
        send(&mut router, "bn-a", &first, now);
        let syncing = br#"{"jsonrpc":"2.0","id":1,"result":{"status":"SYNCING"}}"#;
        router.on_answer(0, 1, &first, Class::Tentative, syncing);
        for upstream in 1..3 {
            router.on_answer(upstream, 1, &first, Class::Final, VALID);
        }
        let repeat = plan(send(&mut router, "bn-b", &new_payload(7, 0xcd, 100), now));
        assert_eq!(
            repeat.targets.iter().collect::<Vec<_>>(),
            [0],
            "only a final verdict is kept"
        );
    }

    #[test]
    fn new_payload_with_other_parameters_is_another_payload() {
        let mut router = router(AckMode::Primary);
        let now = Instant::now();
        let first = new_payload(1, 0xce, 100);
        send(&mut router, "bn-a", &first, now);
        for upstream in 0..3 {
            router.on_answer(upstream, 1, &first, Class::Final, VALID);
        }
        let other = call(&format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"engine_newPayloadV3","params":[{{"blockHash":"{}","timestamp":"0x{:x}"}},["{}"],"{}"]}}"#,
            hash(0xce),
            GENESIS + 100 * 12,
            hash(9),
            hash(0)
        ));
        let route = send(&mut router, "bn-b", &other, now);
        assert_eq!(targets_of(&route), [0, 1, 2], "other versioned hashes");
    }

    #[test]
    fn new_payload_copy_while_clients_validate_awaits_their_verdicts() {
        let mut router = router(AckMode::Primary);
        let now = Instant::now();
        send(&mut router, "bn-a", &new_payload(1, 0xab, 100), now);
        let copy = plan(send(&mut router, "bn-b", &new_payload(2, 0xab, 100), now));
        assert_eq!(copy.awaiting, [0, 1, 2]);
        assert!(copy.targets.is_empty());
        assert!(copy.hedged, "any client's final verdict answers a copy");
    }

    #[test]
    fn new_payload_failed_at_one_client_goes_there_again() {
        let mut router = router(AckMode::Primary);
        let now = Instant::now();
        let first = new_payload(1, 0xdd, 100);
        send(&mut router, "bn-a", &first, now);
        router.on_failure(2, &first);
        let repeat = send(&mut router, "bn-b", &new_payload(2, 0xdd, 100), now);
        assert_eq!(targets_of(&repeat), [2]);
    }

    #[test]
    fn differing_statuses_are_reported_as_mismatch() {
        let mut router = router(AckMode::Primary);
        let first = new_payload(1, 0xee, 100);
        send(&mut router, "bn-a", &first, Instant::now());
        let valid = br#"{"jsonrpc":"2.0","id":1,"result":{"status":"VALID"}}"#;
        let invalid = br#"{"jsonrpc":"2.0","id":1,"result":{"status":"INVALID"}}"#;
        assert!(
            router
                .on_answer(0, 1, &first, Class::Final, valid)
                .is_none()
        );
        assert!(
            router
                .on_answer(1, 1, &first, Class::Final, invalid)
                .is_some()
        );
    }

    #[test]
    fn get_payload_goes_to_the_issuer_then_to_others_that_built() {
        let mut router = router(AckMode::Primary);
        let now = Instant::now();
        let fcu = forkchoice(1, 0x11);
        send(&mut router, "bn-a", &fcu, now);
        let issued = br#"{"jsonrpc":"2.0","id":1,"result":{"payloadStatus":{"status":"VALID"},"payloadId":"0x0102030405060708"}}"#;
        router.on_answer(2, 41, &fcu, Class::Final, issued);
        let other = br#"{"jsonrpc":"2.0","id":1,"result":{"payloadStatus":{"status":"VALID"},"payloadId":"0x1112131415161718"}}"#;
        router.on_answer(0, 41, &fcu, Class::Final, other);
        let get = call(
            r#"{"jsonrpc":"2.0","id":5,"method":"engine_getPayloadV4","params":["0x0102030405060708"]}"#,
        );
        let plan = plan(send(&mut router, "bn-a", &get, now));
        assert_eq!(
            plan.order,
            [2, 0],
            "the issuer first, then the other builder"
        );
        assert_eq!(plan.alternates.len(), 1);
        let (index, body) = &plan.alternates[0];
        assert_eq!(*index, 0);
        let body: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(body["params"][0], "0x1112131415161718");
        assert_eq!(body["id"], 5);
        assert_eq!(body["method"], "engine_getPayloadV4");
        let unknown = call(
            r#"{"jsonrpc":"2.0","id":6,"method":"engine_getPayloadV4","params":["0x0a0a0a0a0a0a0a0a"]}"#,
        );
        let Route::Local { body, .. } = send(&mut router, "bn-a", &unknown, now) else {
            panic!("unknown payload must be answered locally");
        };
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], -38001);
    }

    #[test]
    fn reads_go_to_the_primary_only() {
        let mut router = router(AckMode::Primary);
        let read = call(r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#);
        assert_eq!(
            targets_of(&send(&mut router, "bn-a", &read, Instant::now())),
            [0]
        );
    }

    #[test]
    fn immediate_mode_answers_locally_and_still_forwards() {
        let mut router = router(AckMode::Immediate);
        let route = send(
            &mut router,
            "bn-a",
            &new_payload(1, 0x22, 100),
            Instant::now(),
        );
        let Route::Local { body, targets, .. } = route else {
            panic!("{route:?}");
        };
        assert_eq!(targets.iter().collect::<Vec<_>>(), [0, 1, 2]);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["result"]["status"], "SYNCING");
    }

    #[test]
    fn majority_mode_applies_to_payload_and_forkchoice() {
        let mut router = router(AckMode::Majority);
        let route = send(
            &mut router,
            "bn-a",
            &new_payload(1, 0x33, 100),
            Instant::now(),
        );
        assert_eq!(plan(route).policy, AnswerPolicy::Majority);
    }

    #[test]
    fn catch_up_returns_missed_payloads_in_order_then_the_head() {
        let mut router = router(AckMode::Primary);
        let now = Instant::now();
        let mut requests = Vec::new();
        for (i, byte) in [0x41u8, 0x42, 0x43].into_iter().enumerate() {
            let call = new_payload(i as u64, byte, 100 + i as u64);
            send(&mut router, "bn-a", &call, now);
            let request = Rc::new(Request {
                body: vec![b' '; 10],
                method: call.method,
                call: Some(call),
                authorization: None,
                beacon: Rc::from("bn-a"),
                via: None,
                received_at: now,
                serial: 0,
            });
            router.remember(&request, true);
            requests.push(request);
        }
        let fcu = forkchoice(9, 0x43);
        send(&mut router, "bn-a", &fcu, now);
        router.remember(
            &Rc::new(Request {
                body: Vec::new(),
                method: fcu.method,
                call: Some(fcu),
                authorization: None,
                beacon: Rc::from("bn-a"),
                via: None,
                received_at: now,
                serial: 0,
            }),
            true,
        );
        // Client 1 lost the first two payloads (e.g. dropped from a full queue).
        router.on_failure(1, requests[0].call.as_ref().unwrap());
        router.on_failure(1, requests[1].call.as_ref().unwrap());
        let missed = router.catch_up(1, false);
        let ids: Vec<String> = missed
            .iter()
            .map(|r| String::from_utf8_lossy(&r.call.as_ref().unwrap().id).into_owned())
            .collect();
        assert_eq!(ids, ["0", "1", "9"]);
        assert!(router.catch_up(1, false).is_empty(), "marked as delivered");
        assert!(
            router.catch_up(0, false).is_empty(),
            "client 0 missed nothing"
        );
        for request in &requests {
            let call = request.call.as_ref().unwrap();
            router.on_answer(0, 0, call, Class::Final, VALID);
        }
        let all = router.catch_up(0, true);
        assert_eq!(
            all.len(),
            4,
            "after an outage, every recent payload with a verdict, and the head"
        );
    }
}
