//! One upstream as a whole (an execution client or a chained proxy): its two lanes with their
//! bounded queues, its health, reconnect backoff, probing and token signing.
//!
//! State-changing calls travel in the `State` lane, strictly in order, one at a time; everything
//! else in the `Read` lane, so a `getPayload` never waits behind a slow `newPayload`. This module
//! owns no socket: it knows each lane's connection by slab key and decides what to send next;
//! the event loop does the I/O.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{UpstreamConfig, UpstreamKind};
use crate::core::LinkId;
use crate::engine::{Lane, Method};
use crate::http::write::request_head;
use crate::jwt::Signer;
use crate::outbound::Response;
use crate::request::{Leg, PROBE_BODY, Request};
use crate::rpc;

/// First reconnect delay after a failure; short, because a restarted execution client is back
/// within seconds and every missed slot matters.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// Longest reconnect delay: a dead upstream costs one connect attempt per this period.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// An upstream idle for this long is probed, so a dead one is known before a beacon node's
/// request needs it (under half a 12 s slot).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Drops are logged at most once per this period per upstream, with a count: under overload a
/// line per drop would flood the log, and writing it stalls the only thread.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Timeout of a health probe: a healthy execution client answers `eth_syncing` in milliseconds.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the upstream is believed to answer, and answer well.
///
/// Health is earned by the calls that matter: only a proper answer to an engine call (or, for
/// a chained proxy, its health check) makes an upstream `Up`. A reachable upstream whose calls
/// time out or come back broken (HTTP 401/5xx, a server error, not JSON-RPC) is `Demoted`: it
/// still gets every state-changing call, so it stays in step, but it is not the primary and a
/// passing probe alone does not promote it. `Down` is for connections that fail: its calls wait
/// in the queue until a probe reaches it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not heard from yet.
    Unknown,
    /// Answers engine calls properly.
    Up,
    /// Reachable, but its last engine call timed out or was answered badly.
    Demoted {
        /// When it was demoted.
        since: Instant,
    },
    /// Connections fail; `retry_at` is when the next probe may go.
    Down {
        /// When it went down.
        since: Instant,
        /// When to try again.
        retry_at: Instant,
    },
}

/// What changed in an upstream's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthChange {
    /// Nothing new.
    Same,
    /// Now up, after being down: it missed calls and must catch up.
    UpFromDown,
    /// Now up, after being demoted or unknown.
    Up,
    /// Reachable again after being down, not yet proven by an engine call.
    Reachable,
    /// Newly demoted.
    Demoted,
    /// Newly down.
    Down,
}

/// Why queued legs were removed without being sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// The queue was full (count or bytes); the oldest went.
    QueueFull,
}

/// Counters of one upstream, for metrics and `/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Requests sent (attempts).
    pub sent: u64,
    /// Answers received.
    pub answered: u64,
    /// Requests that failed (connect, timeout, error).
    pub failed: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Queued requests dropped because the queue was full.
    pub dropped: u64,
    /// Requests retried on a fresh connection.
    pub retried: u64,
    /// Answers whose payload status differed from another upstream's for the same block.
    pub status_mismatches: u64,
    /// Connections opened.
    pub connects: u64,
}

/// How an upstream's recent answers looked, for `/status` and `/ui`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Smoothed time from sending a beacon node's request to its answer (probes excluded):
    /// each new answer weighs 1/8, so one slow block shows without one outlier dominating.
    pub latency: Option<Duration>,
    /// How long the last answered probe took.
    pub probe_latency: Option<Duration>,
    /// The last answer to a payload or fork choice.
    pub last_verdict: Option<Verdict>,
}

/// An upstream's answer to a payload or fork choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The method as the beacon node sent it, e.g. `engine_newPayloadV4`.
    pub method: Box<str>,
    /// `VALID`, `SYNCING`…, `error -32000`, or `HTTP 500`.
    pub outcome: Box<str>,
    /// When it arrived.
    pub at: Instant,
}

/// One lane: a queue and its connections (one for state-changing calls, a small pool for
/// reads: see [`Lane::max_links`]).
#[derive(Debug, Default)]
pub struct LaneState {
    queue: VecDeque<Leg>,
    queued_bytes: usize,
    /// This lane's connections, open or opening.
    pub links: Vec<LinkId>,
}

impl LaneState {
    /// Legs waiting to be sent.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Body bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }
}

/// One upstream and everything the proxy keeps about it.
#[derive(Debug)]
pub struct ExecutionClient {
    /// Where it is and how to reach it.
    pub config: UpstreamConfig,
    /// Health as last observed.
    pub health: Health,
    /// Counters.
    pub stats: UpstreamStats,
    /// Latency and the last verdict.
    pub observed: Observed,
    state_lane: LaneState,
    read_lane: LaneState,
    signer: Option<Signer>,
    /// This proxy's name in `Via` headers.
    via_name: Rc<str>,
    /// The health probe this upstream gets.
    probe: Rc<Request>,
    /// State-changing calls were dropped from the queue since the last catch-up.
    behind: bool,
    /// Drops not yet logged, and when the last drop line was written.
    unlogged_drops: u64,
    last_drop_log: Option<Instant>,
    failures_in_row: u32,
    last_answer: Option<Instant>,
    probe_due: Option<Instant>,
}

impl ExecutionClient {
    /// A new upstream, not yet connected; a probe is due at once.
    pub fn new(config: UpstreamConfig, via_name: Rc<str>, now: Instant) -> ExecutionClient {
        let signer = config.jwt_secret.clone().map(Signer::new);
        let probe = Rc::new(ExecutionClient::probe_request(config.kind, now));
        ExecutionClient {
            config,
            health: Health::Unknown,
            stats: UpstreamStats::default(),
            observed: Observed::default(),
            state_lane: LaneState::default(),
            read_lane: LaneState::default(),
            signer,
            via_name,
            probe,
            behind: false,
            unlogged_drops: 0,
            last_drop_log: None,
            failures_in_row: 0,
            last_answer: None,
            probe_due: Some(now),
        }
    }

    /// A chained proxy rather than an execution client.
    pub fn is_proxy(&self) -> bool {
        self.config.kind == UpstreamKind::Proxy
    }

    /// Whether it can be sent requests now: not known to be down.
    pub fn is_available(&self) -> bool {
        !matches!(self.health, Health::Down { .. })
    }

    /// Whether its engine calls are answered properly.
    pub fn is_up(&self) -> bool {
        self.health == Health::Up
    }

    /// Whether it may be the primary: up, or not heard from yet (at start).
    pub fn is_healthy(&self) -> bool {
        matches!(self.health, Health::Up | Health::Unknown)
    }

    /// A lane's state.
    pub fn lane(&self, lane: Lane) -> &LaneState {
        match lane {
            Lane::State => &self.state_lane,
            Lane::Read => &self.read_lane,
        }
    }

    /// A lane's state, mutably.
    pub fn lane_mut(&mut self, lane: Lane) -> &mut LaneState {
        match lane {
            Lane::State => &mut self.state_lane,
            Lane::Read => &mut self.read_lane,
        }
    }

    /// Queues a leg in its lane, enforcing the bounds; returns the legs evicted to make room
    /// (possibly the new leg itself, when it alone exceeds the byte bound).
    pub fn enqueue(&mut self, leg: Leg, max_legs: usize, max_bytes: usize) -> Vec<(Leg, Eviction)> {
        // Nothing that carries meaning is coalesced away: a fork choice with attributes starts
        // a build, and a different head is cheap to deliver in order. So every leg is queued.
        let mut evicted = Vec::new();
        let lane = leg.request.lane();
        let queue = self.lane_mut(lane);
        if leg.body_bytes() > max_bytes {
            evicted.push((leg, Eviction::QueueFull));
        } else {
            queue.queued_bytes += leg.body_bytes();
            queue.queue.push_back(leg);
            while queue.queue.len() > max_legs || queue.queued_bytes > max_bytes {
                let Some(old) = queue.queue.pop_front() else {
                    break;
                };
                queue.queued_bytes -= old.body_bytes();
                evicted.push((old, Eviction::QueueFull));
            }
        }
        for (leg, _) in &evicted {
            self.stats.dropped += 1;
            self.behind |= leg.request.lane() == Lane::State;
        }
        evicted
    }

    /// Counts a drop; returns how many to log now (the first drop after a quiet second, else
    /// `None`: they are summed into the next line).
    pub fn note_drop(&mut self, now: Instant) -> Option<u64> {
        self.unlogged_drops += 1;
        if self
            .last_drop_log
            .is_some_and(|at| now.saturating_duration_since(at) < DROP_LOG_INTERVAL)
        {
            return None;
        }
        self.last_drop_log = Some(now);
        Some(std::mem::take(&mut self.unlogged_drops))
    }

    /// Drops counted but not logged, once their second is over.
    pub fn flush_drops(&mut self, now: Instant) -> Option<u64> {
        let due = self.drop_log_deadline()?;
        if now < due {
            return None;
        }
        self.last_drop_log = Some(now);
        Some(std::mem::take(&mut self.unlogged_drops))
    }

    /// When counted drops must be logged.
    pub fn drop_log_deadline(&self) -> Option<Instant> {
        if self.unlogged_drops == 0 {
            return None;
        }
        self.last_drop_log.map(|at| at + DROP_LOG_INTERVAL)
    }

    /// Puts catch-up legs (oldest first) ahead of everything queued in the state lane.
    ///
    /// They bypass the queue bounds: their bodies are already held by the router's bounded
    /// window of recent payloads, so they cost no memory beyond that window.
    pub fn queue_catch_up(&mut self, legs: Vec<Leg>) {
        let is_forkchoice = |leg: &Leg| matches!(leg.request.method, Method::ForkchoiceUpdated(_));
        // A fork choice already queued is newer than the remembered one: keep only that.
        let queued_forkchoice = self.state_lane.queue.iter().any(is_forkchoice);
        for leg in legs.into_iter().rev() {
            if queued_forkchoice && is_forkchoice(&leg) {
                continue;
            }
            self.state_lane.queued_bytes += leg.body_bytes();
            self.state_lane.queue.push_front(leg);
        }
        self.behind = false;
    }

    /// Whether queue-full drops left this upstream missing payloads, and its state lane has
    /// drained: time to catch up.
    pub fn needs_catch_up(&self) -> bool {
        self.behind && self.state_lane.is_empty() && self.is_up()
    }

    /// Puts a leg back at the head of its lane, for a retry on a fresh connection.
    pub fn requeue_front(&mut self, leg: Leg) {
        self.stats.retried += 1;
        let queue = self.lane_mut(leg.request.lane());
        queue.queued_bytes += leg.body_bytes();
        queue.queue.push_front(leg);
    }

    /// Takes the next leg of a lane, if it may be sent now.
    pub fn next_leg(&mut self, lane: Lane) -> Option<Leg> {
        // State-changing calls wait for the upstream to be reachable; a probe decides that.
        if lane == Lane::State && !self.is_available() {
            return None;
        }
        let queue = self.lane_mut(lane);
        let leg = queue.queue.pop_front()?;
        queue.queued_bytes -= leg.body_bytes();
        Some(leg)
    }

    /// Whether a lane should have a connection: it has something it may send.
    pub fn wants_connection(&self, lane: Lane) -> bool {
        match lane {
            Lane::State => self.is_available() && !self.state_lane.is_empty(),
            Lane::Read => !self.read_lane.is_empty(),
        }
    }

    /// The request head for `leg`, with a token signed now (a queued request never goes stale).
    pub fn request_head(&mut self, leg: &Leg, unix_secs: u64) -> Vec<u8> {
        let request = &leg.request;
        if leg.probe && self.is_proxy() {
            return health_check_head(&self.config.host);
        }
        let authorization = match (&mut self.signer, &self.config.jwt_secret) {
            // A chained proxy learns the beacon node from the token's `id` claim, which the
            // shared secret vouches for (no need to trust forwarding headers).
            (Some(_), Some(secret)) if self.config.kind == UpstreamKind::Proxy => Some(
                Signer::with_id(secret.clone(), &request.beacon)
                    .bearer(unix_secs)
                    .to_owned(),
            ),
            (Some(signer), _) => Some(signer.bearer(unix_secs).to_owned()),
            (None, _) => request.authorization.as_deref().map(str::to_owned),
        };
        if !self.is_proxy() {
            return request_head(
                &self.config.path,
                &self.config.host,
                request.body.len(),
                authorization.as_deref(),
                None,
                None,
            );
        }
        // Chained proxies learn who the beacon node is and which proxies the request passed,
        // so they can refuse a loop.
        let mut via = String::new();
        if let Some(earlier) = &request.via {
            let _ = write!(via, "{earlier}, ");
        }
        let _ = write!(via, "1.1 {}", self.via_name);
        request_head(
            &self.config.path,
            &self.config.host,
            request.body.len(),
            authorization.as_deref(),
            Some(&request.beacon),
            Some(&via),
        )
    }

    /// A leg was handed to a connection.
    pub fn on_sent(&mut self) {
        self.stats.sent += 1;
    }

    /// A proper answer to an engine call (or a chained proxy's health check): the upstream
    /// is up.
    pub fn on_engine_answer(&mut self, now: Instant) -> HealthChange {
        self.stats.answered += 1;
        self.failures_in_row = 0;
        self.last_answer = Some(now);
        self.probe_due = Some(now + PROBE_INTERVAL);
        let before = self.health;
        self.health = Health::Up;
        match before {
            Health::Up => HealthChange::Same,
            Health::Down { .. } => HealthChange::UpFromDown,
            Health::Unknown | Health::Demoted { .. } => HealthChange::Up,
        }
    }

    /// [`ExecutionClient::observe_read`], reading the answer's facts from its body first (tests).
    #[cfg(test)]
    pub fn observe(&mut self, leg: &Leg, response: &Response, now: Instant) {
        let answer = match &leg.request.call {
            Some(call) => rpc::inspect_answer(call.method, &response.body),
            None => rpc::AnswerFacts::default(),
        };
        self.observe_read(leg, response, &answer, now);
    }

    /// Records how long `leg` took and, for a payload or fork choice, what the answer said
    /// (`answer`, already read by `classify_read`).
    pub fn observe_read(
        &mut self,
        leg: &Leg,
        response: &Response,
        answer: &rpc::AnswerFacts,
        now: Instant,
    ) {
        let took = leg.sent_at.map(|sent| now.saturating_duration_since(sent));
        if leg.probe {
            self.observed.probe_latency = took.or(self.observed.probe_latency);
            return;
        }
        if let Some(took) = took {
            self.observed.latency = Some(match self.observed.latency {
                Some(smoothed) => (smoothed * 7 + took) / 8,
                None => took,
            });
        }
        let Some(call) = &leg.request.call else {
            return;
        };
        if !matches!(
            call.method,
            Method::NewPayload(_) | Method::ForkchoiceUpdated(_)
        ) {
            return;
        }
        let outcome = match (response.status, answer.status, answer.error_code) {
            (200..=299, Some(status), _) => status.as_str().to_owned(),
            (200..=299, None, Some(code)) => format!("error {code}"),
            (200..=299, None, None) => "unreadable answer".to_owned(),
            (status, _, _) => format!("HTTP {status}"),
        };
        self.observed.last_verdict = Some(Verdict {
            method: call.method_name.clone(),
            outcome: outcome.into(),
            at: now,
        });
    }

    /// A health probe was answered: a down upstream is reachable again; nothing is proven.
    pub fn on_probe_answer(&mut self, now: Instant) -> HealthChange {
        self.failures_in_row = 0;
        self.probe_due = Some(now + PROBE_INTERVAL);
        match self.health {
            Health::Down { .. } => {
                self.health = Health::Demoted { since: now };
                HealthChange::Reachable
            }
            Health::Unknown => {
                self.health = Health::Up;
                HealthChange::Up
            }
            Health::Up | Health::Demoted { .. } => HealthChange::Same,
        }
    }

    /// An engine call timed out or was answered badly: demoted until an engine call succeeds.
    pub fn on_bad_answer(&mut self, now: Instant, timed_out: bool) -> HealthChange {
        self.stats.failed += 1;
        self.stats.timeouts += u64::from(timed_out);
        self.probe_due = Some(now + PROBE_INTERVAL);
        match self.health {
            Health::Demoted { .. } => HealthChange::Same,
            // A connection failure already took it down; a late bad answer changes nothing.
            Health::Down { .. } => HealthChange::Same,
            Health::Unknown | Health::Up => {
                self.health = Health::Demoted { since: now };
                HealthChange::Demoted
            }
        }
    }

    /// A read failed on a connection that was up: counted, but health is the state lane's and
    /// the probes' to decide (a slow `eth_getLogs` says nothing about block import).
    pub fn on_read_failure(&mut self, timed_out: bool) -> HealthChange {
        self.stats.failed += 1;
        self.stats.timeouts += u64::from(timed_out);
        HealthChange::Same
    }

    /// A connection failed (refused, reset, no connect in time): down until a probe reaches it.
    pub fn on_failure(&mut self, now: Instant, timed_out: bool) -> HealthChange {
        self.stats.failed += 1;
        if timed_out {
            self.stats.timeouts += 1;
        }
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        let delay = backoff(self.failures_in_row);
        let (was_down, since) = match self.health {
            Health::Down { since, .. } => (true, since),
            Health::Unknown | Health::Up | Health::Demoted { .. } => (false, now),
        };
        self.health = Health::Down {
            since,
            retry_at: now + delay,
        };
        self.probe_due = Some(now + delay);
        match was_down {
            true => HealthChange::Same,
            false => HealthChange::Down,
        }
    }

    /// Legs in the read lane fail at once when the upstream goes down: stale reads help nobody.
    pub fn drain_reads(&mut self) -> Vec<Leg> {
        self.read_lane.queued_bytes = 0;
        self.read_lane.queue.drain(..).collect()
    }

    /// Marks every queued state leg as reported and returns their exchanges, so beacon nodes
    /// waiting on a down upstream are answered at once; the legs stay queued for delivery.
    pub fn report_queued_unavailable(&mut self) -> Vec<u64> {
        self.state_lane
            .queue
            .iter_mut()
            .filter(|leg| !leg.reported)
            .filter_map(|leg| {
                leg.reported = true;
                leg.exchange
            })
            .collect()
    }

    /// When a probe is due, if one should be sent at all.
    pub fn probe_deadline(&self) -> Option<Instant> {
        // Queued reads will tell the health anyway; a probe in flight clears `probe_due`.
        if !self.read_lane.is_empty() {
            return None;
        }
        self.probe_due
    }

    /// Queues a health probe if one is due at `now`.
    pub fn probe_if_due(&mut self, now: Instant) -> bool {
        match self.probe_deadline() {
            Some(due) if due <= now => {
                let mut leg = Leg::new(Rc::clone(&self.probe), None);
                leg.probe = true;
                self.read_lane.queued_bytes += leg.body_bytes();
                self.read_lane.queue.push_back(leg);
                self.probe_due = None;
                true
            }
            _ => false,
        }
    }

    /// The probe of this kind of upstream: `eth_syncing` for an execution client; for a chained
    /// proxy an empty body, sent as `GET /health`, so it is not mistaken for a beacon node.
    fn probe_request(kind: UpstreamKind, now: Instant) -> Request {
        Request {
            body: match kind {
                UpstreamKind::ExecutionClient => PROBE_BODY.into(),
                UpstreamKind::Proxy => Vec::new(),
            },
            call: None,
            method: Method::Other,
            authorization: None,
            beacon: Rc::from("sync-proxy"),
            via: None,
            received_at: now,
            serial: 0,
        }
    }

    /// The timeout of a probe.
    pub fn probe_timeout() -> Duration {
        PROBE_TIMEOUT
    }
}

/// `GET /health` toward a chained proxy.
fn health_check_head(host: &str) -> Vec<u8> {
    format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// Capped exponential backoff: 100 ms, 200 ms, 400 ms … 5 s.
pub fn backoff(failures_in_row: u32) -> Duration {
    let exponent = failures_in_row.saturating_sub(1).min(16);
    BACKOFF_INITIAL
        .saturating_mul(1 << exponent)
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamKind;

    fn client() -> ExecutionClient {
        let config = UpstreamConfig {
            kind: UpstreamKind::ExecutionClient,
            url: "http://127.0.0.1:8551".into(),
            addr: "127.0.0.1:8551".parse().unwrap(),
            host: "127.0.0.1:8551".into(),
            path: "/".into(),
            jwt_secret: None,
        };
        ExecutionClient::new(config, Rc::from("sync-proxy-test"), Instant::now())
    }

    fn leg(method: Method, bytes: usize) -> Leg {
        Leg::new(
            Rc::new(Request {
                body: vec![b' '; bytes],
                call: None,
                method,
                authorization: Some("Bearer inbound".into()),
                beacon: Rc::from("bn"),
                via: None,
                received_at: Instant::now(),
                serial: 0,
            }),
            None,
        )
    }

    #[test]
    fn state_lane_queue_full_drops_oldest() {
        let mut el = client();
        for i in 0..3 {
            let evicted = el.enqueue(leg(Method::NewPayload(3), 10 + i), 2, 1000);
            assert_eq!(evicted.len(), usize::from(i == 2));
        }
        assert_eq!(el.lane(Lane::State).len(), 2);
        assert_eq!(el.stats.dropped, 1);
        let next = el.next_leg(Lane::State).unwrap();
        assert_eq!(next.body_bytes(), 11, "the oldest (10 bytes) was dropped");
    }

    #[test]
    fn state_lane_byte_bound_drops_oldest() {
        let mut el = client();
        el.enqueue(leg(Method::NewPayload(3), 60), 10, 100);
        let evicted = el.enqueue(leg(Method::NewPayload(3), 60), 10, 100);
        assert_eq!(evicted.len(), 1);
        assert_eq!(el.lane(Lane::State).queued_bytes(), 60);
    }

    #[test]
    fn oversized_leg_is_dropped_itself() {
        let mut el = client();
        el.enqueue(leg(Method::NewPayload(3), 10), 10, 100);
        let evicted = el.enqueue(leg(Method::NewPayload(3), 101), 10, 100);
        assert_eq!(evicted[0].0.body_bytes(), 101);
        assert_eq!(el.lane(Lane::State).len(), 1);
    }

    #[test]
    fn forkchoices_are_never_coalesced() {
        let mut el = client();
        el.enqueue(leg(Method::NewPayload(3), 1), 10, 100);
        el.enqueue(leg(Method::ForkchoiceUpdated(3), 2), 10, 100);
        el.enqueue(leg(Method::NewPayload(3), 3), 10, 100);
        let evicted = el.enqueue(leg(Method::ForkchoiceUpdated(3), 4), 10, 100);
        assert!(evicted.is_empty());
        let order: Vec<usize> = std::iter::from_fn(|| el.next_leg(Lane::State))
            .map(|l| l.body_bytes())
            .collect();
        assert_eq!(order, [1, 2, 3, 4], "every call, in the order received");
    }

    #[test]
    fn reads_use_their_own_lane() {
        let mut el = client();
        el.enqueue(leg(Method::NewPayload(3), 1), 10, 100);
        el.enqueue(leg(Method::GetPayload(4), 2), 10, 100);
        assert_eq!(el.lane(Lane::State).len(), 1);
        assert_eq!(el.lane(Lane::Read).len(), 1);
    }

    #[test]
    fn down_client_holds_state_legs_until_up() {
        let mut el = client();
        let now = Instant::now();
        el.enqueue(leg(Method::NewPayload(3), 1), 10, 100);
        assert_eq!(el.on_failure(now, false), HealthChange::Down);
        assert!(el.next_leg(Lane::State).is_none());
        assert!(!el.wants_connection(Lane::State));
        assert_eq!(el.on_probe_answer(now), HealthChange::Reachable);
        assert!(
            el.next_leg(Lane::State).is_some(),
            "reachable: state calls flow again"
        );
        assert!(
            !el.is_healthy(),
            "not primary before an engine call succeeds"
        );
    }

    #[test]
    fn demoted_client_is_promoted_only_by_an_engine_call() {
        let mut el = client();
        let now = Instant::now();
        assert_eq!(el.on_engine_answer(now), HealthChange::Up);
        assert_eq!(el.on_bad_answer(now, true), HealthChange::Demoted);
        assert!(el.is_available() && !el.is_healthy());
        assert_eq!(el.on_probe_answer(now), HealthChange::Same);
        assert!(
            !el.is_healthy(),
            "a passing probe alone does not promote it"
        );
        assert_eq!(el.on_engine_answer(now), HealthChange::Up);
        assert!(el.is_healthy());
    }

    #[test]
    fn drops_are_logged_once_per_second_with_a_count() {
        let mut el = client();
        let now = Instant::now();
        assert_eq!(el.note_drop(now), Some(1));
        assert_eq!(el.note_drop(now), None);
        assert_eq!(el.note_drop(now + Duration::from_millis(500)), None);
        assert_eq!(el.drop_log_deadline(), Some(now + DROP_LOG_INTERVAL));
        assert_eq!(el.flush_drops(now + Duration::from_millis(900)), None);
        assert_eq!(el.flush_drops(now + DROP_LOG_INTERVAL), Some(2));
        assert_eq!(el.drop_log_deadline(), None);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }

    #[test]
    fn without_secret_inbound_authorization_passes_through() {
        let mut el = client();
        let leg = leg(Method::NewPayload(3), 5);
        let head = String::from_utf8(el.request_head(&leg, 0)).unwrap();
        assert!(head.contains("Authorization: Bearer inbound\r\n"), "{head}");
        assert!(head.contains("Content-Length: 5\r\n"), "{head}");
        assert!(!head.contains("X-Forwarded-For"), "{head}");
    }

    /// A leg of `body` (a real JSON-RPC call), sent at `sent_at`.
    fn call_leg(body: &[u8], sent_at: Instant) -> Leg {
        let Ok(crate::rpc::Inspected::Call(call)) = crate::rpc::inspect(body) else {
            panic!("test body is a call");
        };
        let mut leg = leg(call.method, 0);
        leg.request = Rc::new(Request {
            body: body.into(),
            method: call.method,
            call: Some(call),
            authorization: None,
            beacon: Rc::from("bn"),
            via: None,
            received_at: sent_at,
            serial: 0,
        });
        leg.sent_at = Some(sent_at);
        leg
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn answers_record_smoothed_latency_and_the_last_verdict() {
        let mut el = client();
        let t0 = Instant::now();
        let payload = br#"{"jsonrpc":"2.0","id":1,"method":"engine_newPayloadV4","params":[{}]}"#;
        let valid = r#"{"jsonrpc":"2.0","id":1,"result":{"status":"VALID"}}"#;
        el.observe(
            &call_leg(payload, t0),
            &response(200, valid),
            t0 + Duration::from_millis(80),
        );
        assert_eq!(el.observed.latency, Some(Duration::from_millis(80)));
        let verdict = el.observed.last_verdict.clone().unwrap();
        assert_eq!(&*verdict.method, "engine_newPayloadV4");
        assert_eq!(&*verdict.outcome, "VALID");
        // A slow answer moves the average by an eighth of the difference.
        let error = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"x"}}"#;
        el.observe(
            &call_leg(payload, t0),
            &response(200, error),
            t0 + Duration::from_millis(880),
        );
        assert_eq!(el.observed.latency, Some(Duration::from_millis(180)));
        assert_eq!(
            &*el.observed.last_verdict.clone().unwrap().outcome,
            "error -32000"
        );
        el.observe(
            &call_leg(payload, t0),
            &response(502, ""),
            t0 + Duration::from_millis(180),
        );
        assert_eq!(
            &*el.observed.last_verdict.clone().unwrap().outcome,
            "HTTP 502"
        );
        // Reads change the latency but are no verdict; probes count apart.
        let read = br#"{"jsonrpc":"2.0","id":2,"method":"eth_chainId","params":[]}"#;
        el.observe(
            &call_leg(read, t0),
            &response(200, "{}"),
            t0 + Duration::from_millis(180),
        );
        assert_eq!(el.observed.latency, Some(Duration::from_millis(180)));
        assert_eq!(
            &*el.observed.last_verdict.clone().unwrap().outcome,
            "HTTP 502"
        );
        let mut probe = leg(Method::Other, 0);
        probe.probe = true;
        probe.sent_at = Some(t0);
        el.observe(&probe, &response(200, "{}"), t0 + Duration::from_millis(3));
        assert_eq!(el.observed.probe_latency, Some(Duration::from_millis(3)));
        assert_eq!(el.observed.latency, Some(Duration::from_millis(180)));
    }

    #[test]
    fn probe_is_queued_once_when_due() {
        let mut el = client();
        let now = Instant::now();
        assert!(el.probe_if_due(now));
        assert!(!el.probe_if_due(now));
        assert_eq!(el.lane(Lane::Read).len(), 1);
    }
}
