//! A deterministic simulator: the real [`Core`] with the real HTTP and JSON code paths
//! ([`Inbound`] and [`Outbound`] over in-memory streams, `rpc` inspection) against simulated
//! beacon nodes and execution clients, on a virtual clock, from a seed.
//!
//! Beacon nodes follow a simulated chain (one proposal per slot by some beacon node, gossip that
//! reaches several of them within milliseconds, late blocks, missed slots, re-orgs), import each
//! block with `newPayload` then `forkchoiceUpdated`, propose with attributes then `getPayload`,
//! and stall, lag, restart and send duplicates. Execution clients answer from a small model of
//! block validity with latency distributions and faults ([`execution::Fault`]). Every step is
//! followed by the invariants in `invariants.rs`; a violation stops the run with the seed, the
//! invariant, why it matters and the last events. The same seed replays the same run.
//!
//! Nothing here touches a socket or reads the clock; time is `base + t`.

mod beacon;
mod execution;
mod invariants;
mod rng;
mod stream;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slab::Slab;

use self::beacon::{Beacon, CLIENTS, Call};
pub use self::execution::Fault;
use self::execution::{ExecutionModel, Reply, hash_of, hex, hex_string};
use self::invariants::Checker;
pub use self::rng::Rng;
pub use self::stream::MemoryStream;
use crate::cli;
use crate::config::Config;
use crate::core::{Core, LinkId, Output};
use crate::exchange::ReplyTo;
use crate::execution_client::Health;
use crate::http::head::{Framing, parse_request_head, parse_response_head};
use crate::inbound::{Inbound, Limits, ReadContext};
use crate::outbound::{Outbound, OutboundEvent, UpstreamError};
use crate::time::Clock;

/// Seconds per simulated slot (mainnet's).
const SLOT_SECS: u64 = 12;
/// The simulated chain's genesis time (Unix seconds).
const GENESIS_TIME: u64 = 1_700_000_000;
/// Virtual time after the last slot for answers and timeouts to settle.
const DRAIN: Duration = Duration::from_secs(30);
/// Lines of the trace kept for a violation report.
const TRACE_LINES: usize = 80;
/// Events taken from one simulated upstream connection at a time, as the event loop's budget.
const MAX_LINK_EVENTS: usize = 64;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    /// Slots to run.
    pub slots: u64,
    /// Beacon nodes (1–4).
    pub beacons: usize,
    /// Execution clients (1–3).
    pub executions: usize,
    /// Execution-client faults that may be injected.
    pub faults: Vec<Fault>,
    /// Beacon nodes stall, lag, restart and send duplicates.
    pub beacon_faults: bool,
    /// An execution client that goes down may come back from an older snapshot.
    pub restarts_lose_blocks: bool,
    /// Check the answer rules too (no late answer, no error or `SYNCING` where an execution
    /// client knew better, a `payloadId` for every proposer an execution client could build
    /// for).
    pub answer_rules: bool,
}

impl Options {
    /// A mix derived from `seed`: 1–4 beacon nodes, 1–3 execution clients, every fault.
    pub fn for_seed(seed: u64, slots: u64) -> Options {
        let mut rng = Rng::new(seed ^ 0x5EED);
        Options {
            slots,
            beacons: 1 + rng.index(4),
            executions: 1 + rng.index(3),
            faults: vec![
                Fault::Down,
                Fault::Hung,
                Fault::Erroring,
                Fault::Unavailable,
                Fault::Syncing,
                Fault::Slow,
            ],
            beacon_faults: true,
            restarts_lose_blocks: true,
            answer_rules: true,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Slots simulated.
    pub slots: u64,
    /// Requests the beacon nodes sent.
    pub requests: u64,
    /// Answers they received.
    pub answers: u64,
    /// Requests delivered to execution clients.
    pub deliveries: u64,
    /// Blocks proposed and published.
    pub blocks: u64,
    /// Proposals that got no payload.
    pub missed_proposals: u64,
    /// Execution-client fault episodes.
    pub faults: u64,
    /// Changes of the followed beacon node.
    pub switches: u64,
}

/// An invariant that did not hold.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The run's seed: it replays the run exactly.
    pub seed: u64,
    /// The invariant's name.
    pub invariant: &'static str,
    /// Why it matters, in one line.
    pub reason: &'static str,
    /// What was seen.
    pub detail: String,
    /// The last events before it, oldest first.
    pub trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: invariant `{}` violated: {}",
            self.seed, self.invariant, self.detail
        )?;
        writeln!(f, "  why it matters: {}", self.reason)?;
        writeln!(f, "  last events:")?;
        for line in &self.trace {
            writeln!(f, "    {line}")?;
        }
        write!(
            f,
            "  replay: SYNC_PROXY_SIM_SEED={} cargo test sim",
            self.seed
        )
    }
}

impl std::error::Error for Violation {}

/// Runs one simulation.
pub fn run(seed: u64, options: &Options) -> Result<Report, Violation> {
    let mut sim = Sim::new(seed, options.clone());
    sim.run()
}

/// A block of the simulated chain.
#[derive(Clone, Copy, Debug)]
struct Block {
    slot: u64,
    number: u64,
    parent: [u8; 32],
}

/// Something due at a virtual time.
#[derive(Debug)]
enum Event {
    /// A slot starts: faults, a proposal.
    Slot(u64),
    /// A proposer starts building for `slot`.
    Propose { bn: usize, slot: u64 },
    /// A block reaches a beacon node by gossip.
    Arrive { bn: usize, block: [u8; 32] },
    /// A lagging beacon node gets to its imports.
    Import { bn: usize },
    /// A beacon node's stall ends.
    Resume { bn: usize },
    /// A beacon node gives up on a request.
    BeaconTimeout { bn: usize, id: u64 },
    /// A TCP connect completes.
    Connected(LinkId),
    /// Answer bytes reach the proxy; `hangup` closes the connection after them.
    Reply {
        link: LinkId,
        bytes: Vec<u8>,
        hangup: bool,
    },
    /// An execution client's devp2p sync fills in `hash` and its ancestors.
    Learn { el: usize, hash: [u8; 32] },
    /// An execution client's fault ends (a restart comes back `forgetting` later blocks).
    Heal {
        el: usize,
        forget_after: Option<u64>,
    },
}

/// A beacon node's connection to the proxy: the proxy's side, and the node's unread answers.
#[derive(Debug)]
struct BeaconConn {
    inbound: Inbound<MemoryStream>,
    bn: usize,
    /// Answer bytes not yet parsed by the beacon node.
    unread: Vec<u8>,
    /// Ids of requests sent on it, in order, not yet admitted by the proxy.
    unadmitted: VecDeque<u64>,
    /// Ids of requests awaiting their answer on it, in order.
    awaiting: VecDeque<u64>,
}

/// A request on its way to, or at, an execution client.
#[derive(Clone, Debug)]
struct InFlight {
    block: Option<[u8; 32]>,
    verdict: Option<&'static str>,
}

/// An upstream connection of the core, played by an execution client.
#[derive(Debug)]
struct SimLink {
    el: usize,
    outbound: Outbound<MemoryStream>,
    in_flight: Option<InFlight>,
}

struct Sim {
    seed: u64,
    options: Options,
    rng: Rng,
    base: Instant,
    t: Duration,
    end: Duration,
    core: Core,
    limits: Limits,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: HashMap<u64, Event>,
    next_event: u64,
    beacons: Vec<Beacon>,
    els: Vec<ExecutionModel>,
    el_addrs: Vec<SocketAddr>,
    conns: Slab<BeaconConn>,
    links: HashMap<LinkId, SimLink>,
    blocks: HashMap<[u8; 32], Block>,
    /// The block with the highest slot: the canonical tip.
    tip: [u8; 32],
    /// Proposals under way: slot → the head they build on.
    proposals: HashMap<u64, [u8; 32]>,
    /// Send the next newPayload twice (a beacon node's duplicate).
    duplicate: Vec<bool>,
    /// Per execution client: its last answer was cut by a reset.
    just_reset: Vec<bool>,
    next_id: u64,
    next_serial: u64,
    checker: Checker,
    /// The health the proxy gives each execution client, as last noted.
    healths: Vec<&'static str>,
    trace: VecDeque<String>,
    report: Report,
}

impl Sim {
    fn new(seed: u64, options: Options) -> Sim {
        let mut rng = Rng::new(seed);
        let genesis = [0u8; 32];
        let el_addrs: Vec<SocketAddr> = (0..options.executions)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 8551 + i as u16)))
            .collect();
        let mut args: Vec<String> = Vec::new();
        for addr in &el_addrs {
            args.extend(["--el".into(), format!("http://{addr}")]);
        }
        args.extend(
            [
                "--genesis-time",
                &GENESIS_TIME.to_string(),
                "--seconds-per-slot",
                &SLOT_SECS.to_string(),
            ]
            .map(String::from),
        );
        let parsed = cli::parse(&args, &|_| None).expect("simulator flags parse");
        let config = Config::from_args(&parsed).expect("simulator configuration is valid");
        let base = Instant::now();
        let els = (0..options.executions)
            .map(|i| ExecutionModel::new(format!("el-{i}"), genesis, 1 + rng.below(8)))
            .collect();
        let beacons = (0..options.beacons)
            .map(|i| Beacon::new(i, CLIENTS[rng.index(CLIENTS.len())], genesis))
            .collect();
        let mut blocks = HashMap::new();
        blocks.insert(
            genesis,
            Block {
                slot: 0,
                number: 0,
                parent: genesis,
            },
        );
        let checker = Checker::new(options.executions, options.answer_rules);
        let end = Duration::from_secs((options.slots + 1) * SLOT_SECS) + DRAIN;
        Sim {
            seed,
            limits: Limits::of(&config),
            core: Core::new(config, base),
            rng,
            base,
            // The chain starts at slot 1; the proxy's wall clock agrees.
            t: Duration::from_secs(SLOT_SECS),
            end,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_event: 0,
            duplicate: vec![false; options.beacons],
            just_reset: vec![false; options.executions],
            beacons,
            els,
            el_addrs,
            conns: Slab::new(),
            links: HashMap::new(),
            blocks,
            tip: genesis,
            proposals: HashMap::new(),
            next_id: 1,
            next_serial: 0,
            checker,
            healths: Vec::new(),
            trace: VecDeque::new(),
            report: Report::default(),
            options,
        }
    }

    fn clock(&self) -> Clock {
        Clock {
            now: self.base + self.t,
            unix_secs: GENESIS_TIME + self.t.as_secs(),
        }
    }

    fn at(&mut self, after: Duration, event: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.queue.push(Reverse((self.t + after, id)));
        self.events.insert(id, event);
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE_LINES {
            self.trace.pop_front();
        }
        let ms = self.t.as_millis();
        self.trace
            .push_back(format!("t={}.{:03}s {line}", ms / 1000, ms % 1000));
    }

    fn violation(&self, (invariant, reason, detail): invariants::Failure) -> Violation {
        Violation {
            seed: self.seed,
            invariant,
            reason,
            detail,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    fn run(&mut self) -> Result<Report, Violation> {
        self.at(Duration::ZERO, Event::Slot(1));
        loop {
            let event_at = self.queue.peek().map(|Reverse((at, _))| *at);
            let core_at = self
                .core
                .poll_timeout()
                .map(|at| at.saturating_duration_since(self.base));
            let conn_at = self
                .conns
                .iter()
                .filter_map(|(_, c)| c.inbound.deadline())
                .min()
                .map(|at| at.saturating_duration_since(self.base));
            let Some(next) = [event_at, core_at, conn_at].into_iter().flatten().min() else {
                break;
            };
            if next > self.end {
                break;
            }
            self.t = self.t.max(next);
            if core_at.is_some_and(|at| at <= self.t) {
                self.core.handle_timeout(self.clock());
                self.apply_outputs()?;
            }
            if conn_at.is_some_and(|at| at <= self.t) {
                self.expire_conns()?;
            }
            if event_at.is_some_and(|at| at <= self.t) {
                if let Some(Reverse((_, id))) = self.queue.pop() {
                    if let Some(event) = self.events.remove(&id) {
                        self.handle(event)?;
                    }
                }
            }
            let healths: Vec<&'static str> = self
                .core
                .upstreams()
                .iter()
                .map(|u| health_name(u.health))
                .collect();
            for (index, health) in healths.into_iter().enumerate() {
                if self.healths.get(index) != Some(&health) {
                    self.healths.resize(self.els.len(), "unknown");
                    self.healths[index] = health;
                    self.note(format!("proxy sees {} as {health}", self.els[index].name));
                }
            }
            let switches = self.core.router().tracker().switches();
            if switches != self.report.switches {
                self.report.switches = switches;
                let best = self
                    .core
                    .router()
                    .tracker()
                    .best()
                    .unwrap_or("-")
                    .to_owned();
                self.note(format!("proxy follows {best}"));
            }
            let failure = self.checker.after_step(&self.core);
            if let Some(failure) = failure {
                return Err(self.violation(failure));
            }
        }
        if let Some(failure) = self.checker.at_end(&self.beacons) {
            return Err(self.violation(failure));
        }
        self.report.slots = self.options.slots;
        Ok(self.report.clone())
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Slot(slot) => self.on_slot(slot),
            Event::Propose { bn, slot } => self.propose(bn, slot),
            Event::Arrive { bn, block } => self.arrive(bn, block),
            Event::Import { bn } => self.start_import(bn),
            Event::Resume { bn } => {
                let tip = self.tip;
                self.note(format!("{} resumes", self.beacons[bn].name));
                self.arrive(bn, tip)
            }
            Event::BeaconTimeout { bn, id } => self.beacon_timeout(bn, id),
            Event::Connected(link) => {
                if let Some(sim_link) = self.links.get_mut(&link) {
                    sim_link.outbound.on_ready(false, true);
                    return self.drive_link(link);
                }
                Ok(())
            }
            Event::Reply {
                link,
                bytes,
                hangup,
            } => {
                let Some(sim_link) = self.links.get_mut(&link) else {
                    return Ok(());
                };
                let stream = sim_link.outbound.stream_mut();
                stream.incoming.push_back(bytes);
                stream.closed |= hangup;
                sim_link.outbound.on_event(true, false, hangup);
                self.drive_link(link)
            }
            Event::Learn { el, hash } => {
                let ancestry = self.ancestry(hash);
                self.els[el].learn(ancestry, self.t);
                Ok(())
            }
            Event::Heal { el, forget_after } => {
                if let Some(slot) = forget_after {
                    self.els[el].forget_after(slot);
                    let forgotten: Vec<[u8; 32]> = self
                        .blocks
                        .iter()
                        .filter(|(_, b)| b.slot > slot)
                        .map(|(h, _)| *h)
                        .collect();
                    self.checker.on_forgotten(el, &forgotten);
                }
                if self.els[el].fault == Fault::Syncing {
                    // The resync finished: it has the chain up to the tip.
                    let ancestry = self.ancestry(self.tip);
                    self.els[el].learn(ancestry, self.t);
                }
                self.els[el].fault = Fault::None;
                self.checker.on_health(el, None, self.t);
                self.note(format!("{} healthy again", self.els[el].name));
                Ok(())
            }
        }
    }

    fn on_slot(&mut self, slot: u64) -> Result<(), Violation> {
        if slot < self.options.slots {
            self.at(Duration::from_secs(SLOT_SECS), Event::Slot(slot + 1));
        }
        self.note(format!("slot {slot}"));
        if slot == 1 {
            for bn in 0..self.beacons.len() {
                let client = self.beacons[bn].client.name();
                self.note(format!("{} plays {client}", self.beacons[bn].name));
            }
        }
        // Beacon nodes ask for capabilities at start and now and then.
        if slot % 8 == 1 {
            for bn in 0..self.beacons.len() {
                if !self.beacons[bn].is_stalled(self.t) {
                    self.send(bn, Call::Capabilities)?;
                }
            }
        }
        if let Some(failure) = self.checker.at_slot(self.t) {
            return Err(self.violation(failure));
        }
        self.inject_faults(slot)?;
        // Missed slots happen: the proposer is offline.
        if self.rng.chance(40) {
            return Ok(());
        }
        let bn = self.rng.index(self.beacons.len());
        let after = self.rng.between_ms(0, 400);
        self.at(after, Event::Propose { bn, slot });
        Ok(())
    }

    fn inject_faults(&mut self, slot: u64) -> Result<(), Violation> {
        for el in 0..self.els.len() {
            if self.options.faults.is_empty()
                || self.els[el].fault != Fault::None
                || !self.rng.chance(40)
            {
                continue;
            }
            let fault = self.options.faults[self.rng.index(self.options.faults.len())];
            let slots = 1 + self.rng.below(5);
            let heal_in = Duration::from_secs(slots * SLOT_SECS) + self.rng.between_ms(0, 6000);
            // A restart comes back from a snapshot some blocks old.
            let forget_after =
                (fault == Fault::Down && self.options.restarts_lose_blocks && self.rng.chance(500))
                    .then(|| slot.saturating_sub(3));
            self.els[el].fault = fault;
            self.report.faults += 1;
            self.checker.on_health(el, Some(fault.name()), self.t);
            self.note(format!("{} becomes {}", self.els[el].name, fault.name()));
            self.at(heal_in, Event::Heal { el, forget_after });
            if fault == Fault::Down {
                // Open connections are reset.
                let links: Vec<LinkId> = self
                    .links
                    .iter()
                    .filter(|(_, l)| l.el == el)
                    .map(|(id, _)| *id)
                    .collect();
                for link in links {
                    if let Some(sim_link) = self.links.get_mut(&link) {
                        sim_link.outbound.stream_mut().closed = true;
                        sim_link.outbound.on_event(true, true, true);
                    }
                    self.drive_link(link)?;
                }
            }
        }
        if !self.options.beacon_faults {
            return Ok(());
        }
        for bn in 0..self.beacons.len() {
            if !self.rng.chance(25) {
                continue;
            }
            let name = self.beacons[bn].name.clone();
            match self.rng.below(4) {
                0 => {
                    let until = self.t + Duration::from_secs((1 + self.rng.below(3)) * SLOT_SECS);
                    self.beacons[bn].stalled_until = until;
                    self.note(format!("{name} stalls"));
                    self.at(until - self.t, Event::Resume { bn });
                }
                1 => {
                    let lag = self.rng.between_ms(1000, 5000);
                    self.beacons[bn].lag = lag;
                    self.note(format!("{name} lags by {} ms", lag.as_millis()));
                }
                2 => {
                    self.note(format!("{name} restarts"));
                    let conns = self.beacons[bn].conns.clone();
                    for key in conns {
                        self.close_conn(key);
                    }
                    self.beacons[bn].importing = false;
                    self.beacons[bn].lag = Duration::ZERO;
                    self.at(Duration::from_millis(500), Event::Import { bn });
                }
                _ => self.duplicate[bn] = true,
            }
        }
        Ok(())
    }

    fn propose(&mut self, bn: usize, slot: u64) -> Result<(), Violation> {
        if self.beacons[bn].is_stalled(self.t) {
            return Ok(());
        }
        let mut parent = self.beacons[bn].head;
        // A re-org: the proposer builds on the block before its head.
        if self.rng.chance(30) {
            parent = self.blocks.get(&parent).map_or(parent, |b| b.parent);
        }
        self.proposals.insert(slot, parent);
        self.send(bn, Call::ForkChoice(parent, Some(slot)))
    }

    /// A proposal got its payload: the block is published and gossiped.
    fn publish(&mut self, bn: usize, slot: u64) -> Result<(), Violation> {
        let Some(parent) = self.proposals.remove(&slot) else {
            return Ok(());
        };
        let number = self.blocks.get(&parent).map_or(0, |b| b.number) + 1;
        let hash = self.rng.hash();
        self.blocks.insert(
            hash,
            Block {
                slot,
                number,
                parent,
            },
        );
        if slot >= self.blocks.get(&self.tip).map_or(0, |b| b.slot) {
            self.tip = hash;
        }
        self.report.blocks += 1;
        self.note(format!(
            "{} publishes block {} (slot {slot})",
            self.beacons[bn].name,
            short(&hash)
        ));
        // One gossip wave reaches most nodes within milliseconds of each other; some blocks
        // are late for everybody.
        let wave = if self.rng.chance(60) {
            self.rng.between_ms(2000, 6000)
        } else {
            self.rng.between_ms(20, 300)
        };
        for other in 0..self.beacons.len() {
            let after = match other == bn {
                true => Duration::ZERO,
                false => wave + self.rng.between_ms(0, 15),
            };
            self.at(
                after,
                Event::Arrive {
                    bn: other,
                    block: hash,
                },
            );
        }
        Ok(())
    }

    /// A block reaches a beacon node: it queues the ancestors it lacks, then the block.
    fn arrive(&mut self, bn: usize, block: [u8; 32]) -> Result<(), Violation> {
        if self.beacons[bn].is_stalled(self.t) {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut cursor = block;
        while !self.beacons[bn].has(&cursor) && !self.beacons[bn].imports.contains(&cursor) {
            missing.push(cursor);
            let Some(parent) = self.blocks.get(&cursor).map(|b| b.parent) else {
                break;
            };
            cursor = parent;
        }
        self.beacons[bn].imports.extend(missing.into_iter().rev());
        let lag = self.beacons[bn].lag;
        if lag > Duration::ZERO {
            self.at(lag, Event::Import { bn });
            return Ok(());
        }
        self.start_import(bn)
    }

    fn start_import(&mut self, bn: usize) -> Result<(), Violation> {
        let beacon = &mut self.beacons[bn];
        if beacon.importing || beacon.is_stalled(self.t) {
            return Ok(());
        }
        while let Some(next) = beacon.imports.front().copied() {
            if !beacon.has(&next) {
                beacon.importing = true;
                self.send(bn, Call::NewPayload(next))?;
                if std::mem::take(&mut self.duplicate[bn]) {
                    self.send(bn, Call::NewPayload(next))?;
                }
                return Ok(());
            }
            beacon.imports.pop_front();
        }
        Ok(())
    }

    fn finish_import(&mut self, bn: usize) -> Result<(), Violation> {
        let beacon = &mut self.beacons[bn];
        beacon.importing = false;
        beacon.imports.pop_front();
        self.start_import(bn)
    }

    /// A beacon node sends `call` on an idle connection of its own (opening one if needed).
    fn send(&mut self, bn: usize, call: Call) -> Result<(), Violation> {
        let id = self.next_id;
        self.next_id += 1;
        let body = self.body(id, call);
        let name = self.beacons[bn].name.clone();
        let mut message = format!(
            "POST /{name} HTTP/1.1\r\nHost: sync-proxy\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        message.extend_from_slice(&body);
        let idle = self.beacons[bn]
            .conns
            .iter()
            .copied()
            .find(|&k| self.conns.get(k).is_some_and(|c| c.awaiting.is_empty()));
        let key = match idle {
            Some(key) => key,
            None => {
                self.next_serial += 1;
                let inbound = Inbound::new(
                    MemoryStream::default(),
                    SocketAddr::from(([127, 0, 0, 1], 40_000 + bn as u16)),
                    self.next_serial,
                    self.limits,
                    self.base + self.t,
                );
                let key = self.conns.insert(BeaconConn {
                    inbound,
                    bn,
                    unread: Vec::new(),
                    unadmitted: VecDeque::new(),
                    awaiting: VecDeque::new(),
                });
                self.beacons[bn].conns.push(key);
                self.core.on_connection_opened();
                key
            }
        };
        let conn = &mut self.conns[key];
        conn.inbound.stream_mut().incoming.push_back(message);
        conn.unadmitted.push_back(id);
        conn.awaiting.push_back(id);
        let pending = beacon::Pending {
            call,
            sent: self.t,
            conn: key,
        };
        self.beacons[bn].pending.insert(id, pending);
        self.checker.on_sent(id, bn, call, self.t);
        self.report.requests += 1;
        self.note(format!(
            "{name} -> {} id={id} {}",
            call.method(),
            describe(call)
        ));
        let timeout = self.beacons[bn].client.timeout(call);
        self.at(timeout, Event::BeaconTimeout { bn, id });
        self.service_conn(key)
    }

    fn body(&self, id: u64, call: Call) -> Vec<u8> {
        let request = match call {
            Call::NewPayload(hash) => {
                let block = self.blocks.get(&hash).copied().unwrap_or(Block {
                    slot: 0,
                    number: 0,
                    parent: [0; 32],
                });
                json!({"jsonrpc": "2.0", "id": id, "method": call.method(), "params": [{
                    "parentHash": hex(&block.parent),
                    "feeRecipient": hex(&[0u8; 20]),
                    "stateRoot": hex(&hash),
                    "blockNumber": format!("{:#x}", block.number),
                    "gasLimit": "0x1c9c380",
                    "gasUsed": "0x0",
                    "timestamp": format!("{:#x}", GENESIS_TIME + block.slot * SLOT_SECS),
                    "extraData": "0x",
                    "baseFeePerGas": "0x7",
                    "blockHash": hex(&hash),
                    "transactions": [],
                    "withdrawals": [],
                    "blobGasUsed": "0x0",
                    "excessBlobGas": "0x0",
                }, [], hex(&[1u8; 32])]})
            }
            Call::ForkChoice(head, attributes) => {
                let state = json!({"headBlockHash": hex(&head), "safeBlockHash": hex(&head), "finalizedBlockHash": hex(&[0u8; 32])});
                let attributes = attributes.map_or(Value::Null, |slot| {
                    json!({
                        "timestamp": format!("{:#x}", GENESIS_TIME + slot * SLOT_SECS),
                        "prevRandao": hex(&[2u8; 32]),
                        "suggestedFeeRecipient": hex(&[0u8; 20]),
                        "withdrawals": [],
                        "parentBeaconBlockRoot": hex(&[3u8; 32]),
                    })
                });
                json!({"jsonrpc": "2.0", "id": id, "method": call.method(), "params": [state, attributes]})
            }
            Call::GetPayload(payload_id, _) => {
                json!({"jsonrpc": "2.0", "id": id, "method": call.method(), "params": [format!("0x{}", hex_string(&payload_id))]})
            }
            Call::Capabilities => {
                json!({"jsonrpc": "2.0", "id": id, "method": call.method(), "params": [["engine_newPayloadV3"]]})
            }
        };
        serde_json::to_vec(&request).unwrap_or_default()
    }

    /// The proxy reads what a beacon connection sent, hands complete requests to the core, and
    /// writes the answers it has.
    fn service_conn(&mut self, key: usize) -> Result<(), Violation> {
        let now = self.base + self.t;
        let clock = self.clock();
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.inbound.on_ready(true, true);
        let mut parsed = Vec::new();
        let context = ReadContext {
            clock,
            jwt_secret: None,
            unsent_answer_bytes: 0,
        };
        conn.inbound.read_requests(context, &mut parsed);
        let (peer, serial, bn) = (conn.inbound.peer, conn.inbound.serial, conn.bn);
        for request in parsed {
            let Some(id) = self.conns[key].unadmitted.pop_front() else {
                continue;
            };
            let to = ReplyTo::new(key, serial, request.seq, now);
            self.core.handle_request(to, request, peer, clock);
            let router = self.core.router();
            let followed = router.tracker().best() == Some(&*self.beacons[bn].name);
            let validated = |hash: &[u8; 32]| router.is_validated(hash);
            self.checker
                .on_admitted(id, followed, router.best_head(), &validated);
            self.apply_outputs()?;
        }
        self.flush_conn(key)
    }

    /// Writes what answers a beacon connection has, and the beacon node reads them.
    fn flush_conn(&mut self, key: usize) -> Result<(), Violation> {
        let now = self.base + self.t;
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.inbound.flush(now);
        let written = std::mem::take(&mut conn.inbound.stream_mut().written);
        conn.unread.extend_from_slice(&written);
        loop {
            let conn = &mut self.conns[key];
            let Ok(Some(head)) = parse_response_head(&conn.unread, 64 * 1024) else {
                break;
            };
            let Framing::Length(length) = head.framing else {
                break;
            };
            let end = head.head_bytes + length as usize;
            if conn.unread.len() < end {
                break;
            }
            let body = conn.unread[head.head_bytes..end].to_vec();
            conn.unread.drain(..end);
            let Some(id) = conn.awaiting.pop_front() else {
                let failure = invariants::unexpected_answer(key, &body);
                return Err(self.violation(failure));
            };
            let bn = conn.bn;
            self.on_answer(bn, id, head.status, &body)?;
        }
        Ok(())
    }

    fn expire_conns(&mut self) -> Result<(), Violation> {
        let now = self.base + self.t;
        let due: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.inbound.deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| k)
            .collect();
        for key in due {
            self.conns[key].inbound.on_timeout(now);
            self.flush_conn(key)?;
            if self
                .conns
                .get(key)
                .is_some_and(|c| c.inbound.finished().is_some())
            {
                self.close_conn(key);
            }
        }
        Ok(())
    }

    /// A beacon node closes a connection; what it awaited there is lost.
    fn close_conn(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        let bn = conn.bn;
        self.beacons[bn].conns.retain(|&k| k != key);
        for id in conn.awaiting {
            self.beacons[bn].pending.remove(&id);
            self.checker.on_abandoned(id);
        }
        self.core.on_connection_closed();
    }

    fn beacon_timeout(&mut self, bn: usize, id: u64) -> Result<(), Violation> {
        let Some(pending) = self.beacons[bn].pending.get(&id).copied() else {
            return Ok(());
        };
        self.note(format!(
            "{} gives up on id={id} after {} ms",
            self.beacons[bn].name,
            (self.t - pending.sent).as_millis()
        ));
        if let Some(failure) = self.checker.on_beacon_timeout(id, pending.call) {
            return Err(self.violation(failure));
        }
        // HTTP clients drop a connection whose request timed out.
        self.close_conn(pending.conn);
        self.after_call(bn, pending.call, None)
    }

    /// A beacon node reads the answer to request `id`.
    fn on_answer(&mut self, bn: usize, id: u64, status: u16, body: &[u8]) -> Result<(), Violation> {
        let Some(pending) = self.beacons[bn].pending.remove(&id) else {
            let failure = invariants::unexpected_answer(id as usize, body);
            return Err(self.violation(failure));
        };
        self.report.answers += 1;
        let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let verdict = answer["result"]["status"]
            .as_str()
            .or_else(|| answer["result"]["payloadStatus"]["status"].as_str());
        self.note(format!(
            "{} <- id={id} HTTP {status} {}",
            self.beacons[bn].name,
            verdict
                .map(str::to_owned)
                .or_else(|| answer["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "result".into())
        ));
        let failure = self
            .checker
            .on_answer(id, status, &answer, &self.els, self.t);
        if let Some(failure) = failure {
            return Err(self.violation(failure));
        }
        let ok = status == 200 && answer.get("result").is_some();
        self.after_call(bn, pending.call, ok.then_some(&answer))
    }

    /// What a beacon node does next, given the answer (`None`: an error or no answer).
    fn after_call(
        &mut self,
        bn: usize,
        call: Call,
        answer: Option<&Value>,
    ) -> Result<(), Violation> {
        match call {
            Call::NewPayload(hash) => {
                let status = answer.and_then(|a| a["result"]["status"].as_str());
                match status {
                    Some("VALID" | "SYNCING" | "ACCEPTED") => {
                        let beacon = &mut self.beacons[bn];
                        beacon.imported.insert(hash);
                        beacon.head = hash;
                        // The import under way may have been replaced by a duplicate's; the
                        // fork choice follows each import once.
                        if beacon.imports.front() == Some(&hash) && beacon.importing {
                            return self.send(bn, Call::ForkChoice(hash, None));
                        }
                        Ok(())
                    }
                    _ if self.beacons[bn].imports.front() == Some(&hash) => self.finish_import(bn),
                    _ => Ok(()),
                }
            }
            Call::ForkChoice(head, None) => {
                if self.beacons[bn].imports.front() == Some(&head) {
                    return self.finish_import(bn);
                }
                Ok(())
            }
            Call::ForkChoice(_, Some(slot)) => {
                let payload_id = answer
                    .and_then(|a| a["result"]["payloadId"].as_str())
                    .and_then(|text| {
                        let mut id = [0u8; 8];
                        let hex = text.strip_prefix("0x")?;
                        for (i, byte) in id.iter_mut().enumerate() {
                            *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
                        }
                        Some(id)
                    });
                match payload_id {
                    Some(id) => self.send(bn, Call::GetPayload(id, slot)),
                    None => {
                        self.report.missed_proposals += 1;
                        self.proposals.remove(&slot);
                        Ok(())
                    }
                }
            }
            Call::GetPayload(_, slot) => match answer {
                Some(_) => self.publish(bn, slot),
                None => {
                    self.report.missed_proposals += 1;
                    self.proposals.remove(&slot);
                    Ok(())
                }
            },
            Call::Capabilities => Ok(()),
        }
    }

    /// Carries out the core's outputs, as the event loop does.
    fn apply_outputs(&mut self) -> Result<(), Violation> {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Answer { to, answer } => {
                    self.checker.on_answer_output(to.serial, to.seq);
                    let Some(conn) = self.conns.get_mut(to.conn) else {
                        continue;
                    };
                    if conn.inbound.serial != to.serial {
                        continue;
                    }
                    conn.inbound
                        .answer(to.seq, answer.status, &answer.content_type, answer.body);
                    self.flush_conn(to.conn)?;
                }
                Output::Connect { link, addr } => {
                    let el = self.el_addrs.iter().position(|a| *a == addr).unwrap_or(0);
                    if self.els[el].fault == Fault::Down {
                        let refused = UpstreamError::Connect(std::io::ErrorKind::ConnectionRefused);
                        let event = OutboundEvent::failed_before_answer(refused);
                        self.core.handle_link_event(link, event, self.clock());
                        continue;
                    }
                    let config = self.core.config();
                    let outbound = Outbound::with_stream(
                        MemoryStream::default(),
                        config.max_header_bytes,
                        config.max_body_bytes,
                    );
                    self.links.insert(
                        link,
                        SimLink {
                            el,
                            outbound,
                            in_flight: None,
                        },
                    );
                    self.at(Duration::from_micros(100), Event::Connected(link));
                }
                Output::Send {
                    link,
                    head,
                    request,
                    replay,
                } => {
                    let Some(sim_link) = self.links.get_mut(&link) else {
                        continue;
                    };
                    sim_link.outbound.start(request, head);
                    sim_link.outbound.on_ready(false, true);
                    while sim_link.outbound.drive().is_some() {}
                    let sent = std::mem::take(&mut sim_link.outbound.stream_mut().written);
                    let el = sim_link.el;
                    self.deliver(link, el, &sent, replay)?;
                }
                Output::Close { link } => {
                    if self.links.remove(&link).is_some() {
                        self.note(format!("proxy closes link {link}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// An execution client receives a request from the proxy and schedules its answer.
    fn deliver(
        &mut self,
        link: LinkId,
        el: usize,
        sent: &[u8],
        replay: bool,
    ) -> Result<(), Violation> {
        let Ok(Some(head)) = parse_request_head(sent, 64 * 1024) else {
            let failure = invariants::garbled(el, sent);
            return Err(self.violation(failure));
        };
        let body = &sent[head.head_bytes..];
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let method = request["method"].as_str().unwrap_or("").to_owned();
        let id = request["id"].as_u64();
        let block = method
            .starts_with("engine_newPayload")
            .then(|| hash_of(&request["params"][0]["blockHash"]));
        let head_hash = method
            .starts_with("engine_forkchoiceUpdated")
            .then(|| hash_of(&request["params"][0]["headBlockHash"]));
        if id.is_some() {
            self.report.deliveries += 1;
            let line = format!(
                "proxy -> {} {method} id={}{}",
                self.els[el].name,
                id.unwrap_or(0),
                if replay { " (catch-up)" } else { "" }
            );
            self.note(line);
        }
        let failure = self
            .checker
            .on_delivery(el, id, &method, block, head_hash, replay, self.t);
        if let Some(failure) = failure {
            return Err(self.violation(failure));
        }
        let blocks = &self.blocks;
        let slot_of = |hash: &[u8; 32]| blocks.get(hash).map_or(0, |b| b.slot);
        let reply = self.els[el].handle(body, &slot_of, &mut self.rng, self.t);
        let Reply::Answer {
            status,
            body,
            after,
            verdict,
            ..
        } = reply
        else {
            self.note(format!("{} holds {method}", self.els[el].name));
            return Ok(());
        };
        if verdict == Some("SYNCING") && self.els[el].fault == Fault::None {
            // Its devp2p sync finds the missing ancestors in a couple of slots.
            if let Some(hash) = block.or(head_hash) {
                let after = self.rng.between_ms(SLOT_SECS * 1000, 3 * SLOT_SECS * 1000);
                self.at(after, Event::Learn { el, hash });
            }
        }
        if let Some(sim_link) = self.links.get_mut(&link) {
            sim_link.in_flight = Some(InFlight { block, verdict });
        }
        let chunked = self.rng.chance(300);
        let mut bytes = frame(status, &body, chunked);
        // A reset in the middle of an answer, now and then, never twice in a row (a reset is a
        // blip, not the execution client's way of answering).
        let hangup = !std::mem::take(&mut self.just_reset[el]) && self.rng.chance(5);
        self.just_reset[el] = hangup;
        if hangup {
            bytes.truncate(bytes.len() / 2);
        }
        self.at(
            after,
            Event::Reply {
                link,
                bytes,
                hangup,
            },
        );
        Ok(())
    }

    /// Drives a simulated upstream connection, as the event loop does.
    fn drive_link(&mut self, link: LinkId) -> Result<(), Violation> {
        for _ in 0..MAX_LINK_EVENTS {
            let Some(sim_link) = self.links.get_mut(&link) else {
                return Ok(());
            };
            let Some(event) = sim_link.outbound.drive() else {
                if sim_link.outbound.wants_service() {
                    continue;
                }
                return Ok(());
            };
            let el = sim_link.el;
            if let OutboundEvent::Answered { response, .. } = &event {
                if let Some(in_flight) = sim_link.in_flight.take() {
                    self.checker.on_el_answer(
                        el,
                        in_flight.block,
                        in_flight.verdict,
                        response.status,
                    );
                }
            }
            let dead = sim_link.outbound.is_dead();
            if dead {
                self.links.remove(&link);
            }
            self.core.handle_link_event(link, event, self.clock());
            self.apply_outputs()?;
            if dead {
                return Ok(());
            }
        }
        Ok(())
    }

    /// `hash` and its ancestors, with their slots.
    fn ancestry(&self, hash: [u8; 32]) -> Vec<([u8; 32], u64)> {
        let mut out = Vec::new();
        let mut cursor = hash;
        while let Some(block) = self.blocks.get(&cursor) {
            out.push((cursor, block.slot));
            if block.number == 0 {
                break;
            }
            cursor = block.parent;
        }
        out
    }
}

/// An HTTP answer, by length or chunked.
fn frame(status: u16, body: &[u8], chunked: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n").into_bytes();
    if !chunked {
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        return out;
    }
    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    for chunk in body.chunks(97) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn health_name(health: Health) -> &'static str {
    match health {
        Health::Unknown => "unknown",
        Health::Up => "up",
        Health::Demoted { .. } => "demoted",
        Health::Down { .. } => "down",
    }
}

fn short(hash: &[u8; 32]) -> String {
    hex_string(&hash[..4])
}

fn describe(call: Call) -> String {
    match call {
        Call::NewPayload(hash) => format!("block {}", short(&hash)),
        Call::ForkChoice(head, None) => format!("head {}", short(&head)),
        Call::ForkChoice(head, Some(slot)) => {
            format!("head {} + attributes for slot {slot}", short(&head))
        }
        Call::GetPayload(id, slot) => format!("payload {} (slot {slot})", hex_string(&id)),
        Call::Capabilities => String::new(),
    }
}
