//! Every decision of the proxy, and no I/O: which upstreams get a request, in which lane and
//! order, what a beacon node is answered and when, when an upstream is healthy, when a request is
//! retried or an upstream caught up, and when a connection is opened or closed.
//!
//! The [`Core`] is a sans-IO state machine in the style of quinn-proto: the event loop feeds it
//! inputs stamped with the loop's [`Clock`] ([`Core::handle_request`],
//! [`Core::handle_link_event`], [`Core::handle_timeout`], [`Core::begin_shutdown`]) and drains
//! its [`Output`]s ([`Core::poll_output`]): answer this beacon-node request, open a connection,
//! send this request on that connection, close that one. [`Core::poll_timeout`] says when it next
//! needs [`Core::handle_timeout`]. It never sees a socket and never reads the clock, so the
//! simulator (`crate::sim`) drives it through millions of slots deterministically.
//!
//! Upstream connections are known here only as [`LinkId`]s; the loop maps them to sockets. The
//! upstream side (queues, links, health, catch-up) lives in the child module `delivery`.
//! `ARCHITECTURE.md` draws the data flow.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::config::Config;
use crate::engine::Lane;
use crate::event_log;
use crate::exchange::{Answer, Class, Exchange, LegFailure, ReplyTo, classify};
use crate::execution_client::ExecutionClient;
use crate::handler::{self, Action, Context, Endpoint};
use crate::inbound::ParsedRequest;
use crate::log_limit::LogLimiter;
use crate::metrics::Metrics;
use crate::outbound::{OutboundEvent, Response};
use crate::readiness;
use crate::request::{ExchangeId, IdMap, Leg, Request};
use crate::router::{PayloadKey, Plan, Router, UpstreamSet, UpstreamView};
use crate::rpc::{self, Hash32};
use crate::status;
use crate::time::Clock;
use crate::timer::TimerQueue;
use crate::ui;

mod delivery;

/// Names an upstream connection between the core and the event loop. Never reused, so an event
/// about a connection the core already closed cannot be taken for another.
pub type LinkId = u64;

/// Something the event loop must do.
#[derive(Debug)]
pub enum Output {
    /// Answer a beacon-node request.
    Answer {
        /// Which request, on which connection.
        to: ReplyTo,
        /// The answer.
        answer: Answer,
    },
    /// Open a connection to `addr`; report it as `link`.
    Connect {
        /// The new connection's id.
        link: LinkId,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Send `request` with `head` on the idle connection `link`.
    Send {
        /// The connection.
        link: LinkId,
        /// The HTTP head, with a token signed for this send.
        head: Vec<u8>,
        /// The request; its body is shared with every other upstream's copy.
        request: Rc<Request>,
        /// A catch-up replay of a request this upstream missed (older than ones it has had).
        replay: bool,
    },
    /// Close the connection `link` (timed out, or shutting down); report nothing more of it.
    Close {
        /// The connection.
        link: LinkId,
    },
}

/// What the loop reports of an upstream connection: the connection's own events. After
/// `Failed`, or `Answered` without keep-alive, the connection is dead and the loop drops it.
pub type LinkEvent = OutboundEvent;

/// A timer the core set: an exchange's answer deadline or a link's connect or request deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Exchange(ExchangeId),
    Hedge(ExchangeId),
    Link(LinkId),
}

/// The log topic of connections closed for answers left unread (see [`crate::log_limit`]).
const SHED_TOPIC: &str = "connections closed for unread answers";

/// The log topic of connections refused at `--max-connections` (see [`crate::log_limit`]).
const CONNECTION_LIMIT_TOPIC: &str = "connections refused at --max-connections";

/// How long a plain fork choice from a beacon node that is not followed waits for the followed
/// one to name the same head: beacon nodes on one gossip network import a block within tens of
/// milliseconds of each other, and the fork choice follows the payload's verdict.
const FOLLOW_WAIT: Duration = Duration::from_millis(1_000);

/// A fork choice held for the followed beacon node to name its head.
#[derive(Debug)]
struct Held {
    to: ReplyTo,
    request: Rc<Request>,
    head: Hash32,
    deadline: Instant,
}

/// Copies of a payload waiting for an upstream's verdict on it, by (upstream, payload): each the
/// waiting exchange and its request's id.
type BlockWaiters = HashMap<(usize, PayloadKey), Vec<(ExchangeId, Box<[u8]>)>>;

/// All state of the proxy's decisions.
#[derive(Debug)]
pub struct Core {
    config: Config,
    upstreams: Vec<ExecutionClient>,
    /// Upstream URLs by index, for error messages.
    names: Rc<[Box<str>]>,
    links: IdMap<delivery::Link>,
    next_link: LinkId,
    exchanges: IdMap<Exchange>,
    next_exchange: ExchangeId,
    /// The serial number of the next request forwarded.
    next_serial: u64,
    /// Copies of a block waiting for an upstream's verdict on it; emptied when that delivery
    /// settles, bounded by the exchanges.
    block_waiters: BlockWaiters,
    /// Deadlines of exchanges and links, soonest first. An entry whose exchange is answered or
    /// whose link moved on is skipped when it comes up.
    timers: TimerQueue<Timer>,
    router: Router,
    metrics: Metrics,
    open_connections: usize,
    shutdown_deadline: Option<Instant>,
    outputs: VecDeque<Output>,
    /// The grace period ended and everyone waiting was answered.
    gave_up: bool,
    /// Fork choices held for the followed beacon node to name their head.
    held: Vec<Held>,
    /// Log lines a peer can trigger, rate-limited per reason and peer.
    log_limit: LogLimiter,
    /// Fork choices of other beacon nodes that take an exchange's answer, by exchange.
    followers: IdMap<Vec<(ReplyTo, Box<[u8]>)>>,
}

impl Core {
    /// A core for `config` at `now`: nothing connected yet, a health probe due for every
    /// upstream.
    pub fn new(config: Config, now: Instant) -> Core {
        let upstreams: Vec<ExecutionClient> = config
            .upstreams
            .iter()
            .map(|u| ExecutionClient::new(u.clone(), Rc::from(&*config.instance), now))
            .collect();
        let names: Rc<[Box<str>]> = upstreams.iter().map(|u| u.config.url.clone()).collect();
        let router = Router::new(
            config.ack,
            config.chain,
            config.tracker,
            upstreams.len(),
            config.catch_up_max_bytes,
        );
        Core {
            upstreams,
            names,
            links: IdMap::default(),
            next_link: 0,
            exchanges: IdMap::default(),
            next_exchange: 0,
            next_serial: 0,
            block_waiters: HashMap::new(),
            timers: TimerQueue::default(),
            router,
            metrics: Metrics::new(now),
            open_connections: 0,
            shutdown_deadline: None,
            outputs: VecDeque::new(),
            gave_up: false,
            held: Vec::new(),
            log_limit: LogLimiter::new(),
            followers: IdMap::default(),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The upstreams, in configured order.
    pub fn upstreams(&self) -> &[ExecutionClient] {
        &self.upstreams
    }

    /// The forwarding table and beacon tracking.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Requests waiting for their answer.
    pub fn exchanges_in_flight(&self) -> usize {
        self.exchanges.len()
    }

    /// Upstream connections open or opening.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// The next thing the loop must do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Core::handle_timeout`] is next needed.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let (exchanges, links) = (&self.exchanges, &self.links);
        self.timers.skip_stale(|at, timer| match timer {
            Timer::Exchange(id) | Timer::Hedge(id) => exchanges.contains_key(&id),
            Timer::Link(link) => links.get(&link).is_some_and(|l| l.deadline() == Some(at)),
        });
        let timers = self.timers.next();
        let probing = self.shutdown_deadline.is_none();
        let probes = self
            .upstreams
            .iter()
            .filter(|_| probing)
            .filter_map(ExecutionClient::probe_deadline);
        let drop_logs = self
            .upstreams
            .iter()
            .filter_map(ExecutionClient::drop_log_deadline);
        timers
            .into_iter()
            .chain(probes)
            .chain(drop_logs)
            .chain(self.router.deadline())
            // Past the grace, the loop only lingers for answers: no timer to spin on.
            .chain(self.shutdown_deadline.filter(|_| !self.gave_up))
            .chain(self.held.iter().map(|h| h.deadline))
            .chain(self.log_limit.deadline())
            .min()
    }

    /// A beacon-node connection was accepted.
    pub fn on_connection_opened(&mut self) {
        self.open_connections += 1;
        self.metrics.connections_accepted += 1;
    }

    /// A beacon-node connection was closed.
    pub fn on_connection_closed(&mut self) {
        self.open_connections = self.open_connections.saturating_sub(1);
    }

    /// A connection from `peer` was refused at the connection limit.
    pub fn on_connection_refused(&mut self, peer: SocketAddr, now: Instant) {
        self.metrics.connections_refused += 1;
        if self.log_limit.admit(CONNECTION_LIMIT_TOPIC, peer.ip(), now) {
            event_log::connection_refused(peer, self.config.max_connections);
        }
    }

    /// A connection from `peer` was closed for `bytes` of answers it left unread while all
    /// beacon-node connections owed more than `--max-unsent-answer-bytes`.
    pub fn on_connection_shed(&mut self, peer: SocketAddr, bytes: usize, now: Instant) {
        self.metrics.connections_shed += 1;
        if self.log_limit.admit(SHED_TOPIC, peer.ip(), now) {
            warn!(
                "closing connection from {peer}: {bytes} answer bytes unread while beacon-node connections owe more than --max-unsent-answer-bytes"
            );
        }
    }

    /// A complete request arrived from `peer`; its answer goes to `to`.
    pub fn handle_request(
        &mut self,
        to: ReplyTo,
        parsed: ParsedRequest,
        peer: SocketAddr,
        clock: Clock,
    ) {
        let views = self.views();
        let mut context = Context {
            config: &self.config,
            router: &mut self.router,
            metrics: &mut self.metrics,
            log_limit: &mut self.log_limit,
            upstreams: &views,
            serial: self.next_serial,
        };
        self.next_serial += 1;
        match handler::handle(&mut context, parsed, peer, clock) {
            Action::Answer(answer) => self.answer(to, answer, clock.now),
            Action::Endpoint(endpoint) => {
                let answer = self.render(endpoint, clock);
                self.answer(to, answer, clock.now);
            }
            Action::Local {
                request,
                answer,
                targets,
            } => {
                self.answer(to, answer, clock.now);
                self.remember(&request, targets);
                self.dispatch(&request, targets, None, false, clock);
            }
            Action::Exchange { request, plan } => {
                let head = request
                    .call
                    .as_ref()
                    .filter(|c| !c.has_payload_attributes)
                    .and_then(|c| c.head_block_hash)
                    .filter(|h| self.router.is_followed_head(h));
                let id = self.open_exchange(to, request, plan, clock);
                if let Some(head) = head {
                    self.adopt_held(head, id);
                }
            }
            Action::Build { request, plan } => {
                let clients = plan.targets;
                let _ = self.open_exchange(to, request, plan, clock);
                if let Some(followed) = self.router.followed_forkchoice() {
                    self.dispatch(&followed, clients, None, true, clock);
                }
            }
            Action::Hold { request, head } => self.held.push(Held {
                to,
                request,
                head,
                deadline: clock.now + FOLLOW_WAIT,
            }),
        }
        self.release_held(clock);
    }

    /// Answers the held fork choices that waited long enough with `SYNCING`, the proxy's own.
    fn release_held(&mut self, clock: Clock) {
        let (expired, held): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|held| held.deadline <= clock.now);
        self.held = held;
        for Held { to, request, .. } in expired {
            let Some(call) = request.call.as_ref() else {
                continue;
            };
            self.metrics.local_answers += 1;
            let body = rpc::syncing_body(call.method, &call.id).unwrap_or_default();
            self.answer(to, Answer::json(200, body), clock.now);
        }
    }

    /// The followed node's fork choice on `head` is exchange `id`: the fork choices held for
    /// the same head take its answer (merged: the same state, no attributes, one delivery).
    fn adopt_held(&mut self, head: Hash32, id: ExchangeId) {
        if !self.held.iter().any(|held| held.head == head) {
            return;
        }
        let (adopted, held): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|held| held.head == head);
        self.held = held;
        let followers = self.followers.entry(id).or_default();
        for Held { to, request, .. } in adopted {
            let request_id = request
                .call
                .as_ref()
                .map_or_else(|| Box::from(&b"null"[..]), |c| c.id.clone());
            followers.push((to, request_id));
        }
    }

    /// The upstreams as routing sees them.
    fn views(&self) -> Vec<UpstreamView> {
        self.upstreams
            .iter()
            .map(|u| UpstreamView {
                is_proxy: u.is_proxy(),
                available: u.is_available(),
                healthy: u.is_healthy(),
            })
            .collect()
    }

    /// Sets up an exchange as `plan` says, sends its legs, and answers if that already decides.
    fn open_exchange(
        &mut self,
        to: ReplyTo,
        request: Rc<Request>,
        plan: Plan,
        clock: Clock,
    ) -> ExchangeId {
        let id = self.next_exchange;
        self.next_exchange += 1;
        let call = request.call.as_ref();
        let call_id: Box<[u8]> = call.map_or_else(|| Box::from(&b"null"[..]), |c| c.id.clone());
        let deadline = clock.now + self.config.answer_deadline(request.method);
        let mut exchange = Exchange::new(
            to,
            plan.policy,
            &call_id,
            request.method,
            plan.order,
            Rc::clone(&self.names),
        );
        match self.config.hedge_for(request.method) {
            _ if plan.hedged => exchange.hedge(),
            Some(grace) => self.timers.push(clock.now + grace, Timer::Hedge(id)),
            None => {}
        }
        for (index, body) in plan.known {
            let response = Response {
                status: 200,
                content_type: None,
                body,
            };
            let class = classify(call, &response);
            exchange.on_answer(index, response, class);
        }
        self.exchanges.insert(id, exchange);
        self.timers.push(deadline, Timer::Exchange(id));
        if let Some(key) = plan.payload {
            for index in plan.awaiting {
                let waiting = self.block_waiters.entry((index, key)).or_default();
                waiting.push((id, call_id.clone()));
            }
        }
        let mut targets = plan.targets;
        for (index, body) in plan.alternates {
            // Another execution client's payload for the same fork choice, asked under its id.
            let mut alternate_call = call.cloned();
            if let Some(alternate) = alternate_call.as_mut() {
                alternate.payload_id = None;
            }
            let alternate = Rc::new(Request {
                body,
                call: alternate_call,
                method: request.method,
                authorization: request.authorization.clone(),
                beacon: Rc::clone(&request.beacon),
                via: request.via.clone(),
                received_at: request.received_at,
                serial: request.serial,
            });
            let mut only = UpstreamSet::EMPTY;
            only.insert(index);
            self.dispatch(&alternate, only, Some(id), false, clock);
            targets = targets.without(index);
        }
        self.remember(&request, targets);
        self.dispatch(&request, targets, Some(id), false, clock);
        self.try_decide(id, clock.now);
        id
    }

    /// Keeps what catch-up may need of a request sent to `targets`.
    fn remember(&mut self, request: &Rc<Request>, targets: UpstreamSet) {
        let forwarded = targets
            .iter()
            .any(|i| self.upstreams.get(i).is_some_and(|u| !u.is_proxy()));
        self.router.remember(request, forwarded);
    }

    /// Something happened on upstream connection `link`.
    pub fn handle_link_event(&mut self, link: LinkId, event: LinkEvent, clock: Clock) {
        self.on_link_event(link, event, clock);
    }

    /// Time passed: timers due at `clock.now` fire.
    pub fn handle_timeout(&mut self, clock: Clock) {
        let now = clock.now;
        while let Some((at, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Exchange(id) => {
                    if let Some(mut exchange) = self.exchanges.remove(&id) {
                        let answer = exchange.on_timeout();
                        debug!("exchange {id} timed out; answering {}", answer.status);
                        self.finish(id, exchange.reply_to, answer, now);
                    }
                }
                Timer::Link(link) => self.on_link_deadline(link, at, clock),
                Timer::Hedge(id) => {
                    if let Some(exchange) = self.exchanges.get_mut(&id) {
                        exchange.hedge();
                        self.try_decide(id, now);
                    }
                }
            }
        }
        if let Some(switch) = self.router.on_timeout(now, clock.unix_secs) {
            event_log::switch(&switch);
        }
        for summary in self.log_limit.due(now) {
            warn!("{summary}");
        }
        for upstream in &mut self.upstreams {
            if let Some(count) = upstream.flush_drops(now) {
                event_log::dropped(&upstream.config.url, count, None);
            }
        }
        self.release_held(clock);
        if self.shutdown_deadline.is_none() {
            for index in 0..self.upstreams.len() {
                if self.upstreams[index].probe_if_due(now) {
                    self.pump(index, Lane::Read, clock);
                }
            }
        }
        if self
            .shutdown_deadline
            .is_some_and(|deadline| now >= deadline)
        {
            self.give_up(now);
            self.release_held(clock);
        }
    }

    /// Stop probing and start the grace period; queued requests are still delivered.
    pub fn begin_shutdown(&mut self, clock: Clock) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!(
            "shutting down: not accepting, delivering {} queued requests within {} ms",
            self.queued_requests(),
            self.config.shutdown_grace.as_millis()
        );
        self.shutdown_deadline = Some(clock.now + self.config.shutdown_grace);
    }

    /// When the grace period ends, once shutting down.
    pub fn shutdown_deadline(&self) -> Option<Instant> {
        self.shutdown_deadline
    }

    /// Ends the grace period at once (a second signal).
    pub fn hurry_shutdown(&mut self, now: Instant) {
        self.shutdown_deadline = Some(now);
    }

    /// Shutting down, and either nothing is left to deliver or the grace period is over.
    pub fn is_done(&self, now: Instant) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        if now >= deadline {
            return true;
        }
        let idle = self
            .links
            .values()
            .all(|link| link.leg().is_none_or(|leg| leg.probe));
        self.queued_requests() == 0 && idle && self.exchanges.is_empty()
    }

    /// Requests queued at all upstreams, not yet sent.
    pub fn queued_requests(&self) -> usize {
        self.upstreams
            .iter()
            .map(|u| u.lane(Lane::State).len() + u.lane(Lane::Read).len())
            .sum()
    }

    /// The grace period is over: every beacon node still waiting is answered now.
    fn give_up(&mut self, now: Instant) {
        let left = self.queued_requests();
        let first = !std::mem::replace(&mut self.gave_up, true);
        if left > 0 && first {
            warn!("grace period over: {left} queued requests not delivered");
        }
        let mut waiting: Vec<ExchangeId> = self.exchanges.keys().copied().collect();
        waiting.sort_unstable();
        for id in waiting {
            if let Some(mut exchange) = self.exchanges.remove(&id) {
                let answer = exchange.on_timeout();
                self.finish(id, exchange.reply_to, answer, now);
            }
        }
        // A fork choice held for the followed node's head may wait longer than the grace.
        for held in &mut self.held {
            held.deadline = held.deadline.min(now);
        }
    }

    fn render(&self, endpoint: Endpoint, clock: Clock) -> Answer {
        let now = clock.now;
        match endpoint {
            Endpoint::Health => {
                let reachable = self
                    .upstreams
                    .iter()
                    .filter(|u| !u.is_proxy() && u.is_up())
                    .count();
                let status = if reachable > 0 { 200 } else { 503 };
                let body = serde_json::json!({
                    "healthy": reachable > 0,
                    "reachable_execution_clients": reachable,
                });
                Answer::json(status, body.to_string().into_bytes())
            }
            Endpoint::Ready => readiness::answer(
                self.router.tracker(),
                &self.upstreams,
                self.shutdown_deadline.is_some(),
                now,
            ),
            Endpoint::Ui => ui::answer(),
            Endpoint::Status => Answer::json(
                200,
                status::render(
                    &self.config,
                    clock,
                    &self.upstreams,
                    self.router.tracker(),
                    self.shutdown_deadline.is_some(),
                ),
            ),
            Endpoint::Metrics => Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4".into(),
                body: self
                    .metrics
                    .render(
                        now,
                        &self.upstreams,
                        self.router.tracker(),
                        self.open_connections,
                        self.exchanges.len(),
                    )
                    .into_bytes(),
            },
        }
    }

    /// Gives an exchange one upstream's outcome and answers the beacon node if that decides it.
    /// Recording and deciding are one step, so no outcome can leave a beacon node waiting.
    fn report(
        &mut self,
        id: ExchangeId,
        index: usize,
        outcome: Result<(Response, Class), LegFailure>,
        now: Instant,
    ) {
        let Some(exchange) = self.exchanges.get_mut(&id) else {
            return;
        };
        match outcome {
            Ok((response, class)) => exchange.on_answer(index, response, class),
            Err(failure) => exchange.on_failure(index, failure),
        }
        self.try_decide(id, now);
    }

    fn try_decide(&mut self, id: ExchangeId, now: Instant) {
        let Some(exchange) = self.exchanges.get_mut(&id) else {
            return;
        };
        let Some(answer) = exchange.decide() else {
            return;
        };
        let (to, decision) = (exchange.reply_to, exchange.decision);
        if decision.disagreement {
            self.metrics.verdict_disagreements += 1;
            warn!(
                "execution clients disagree (VALID against INVALID) on request id={}; answered SYNCING",
                String::from_utf8_lossy(exchange.id())
            );
        }
        if decision.hedged {
            self.metrics.hedged_answers += 1;
        }
        self.exchanges.remove(&id);
        self.finish(id, to, answer, now);
    }

    /// Hands an exchange's answer to its beacon node, and to the fork choices of other beacon
    /// nodes that waited for this one (re-addressed to each one's id).
    fn finish(&mut self, id: ExchangeId, to: ReplyTo, answer: Answer, now: Instant) {
        for (follower, request_id) in self.followers.remove(&id).unwrap_or_default() {
            let body = rpc::rewrite_id(&answer.body, &request_id).unwrap_or_else(|| {
                let message = "the followed beacon node's fork choice got no answer";
                rpc::error_body(&request_id, rpc::code::INTERNAL_ERROR, message)
            });
            self.answer(follower, Answer::json(answer.status, body), now);
        }
        self.answer(to, answer, now);
    }

    /// Counts an answer and hands it to the loop.
    fn answer(&mut self, to: ReplyTo, answer: Answer, now: Instant) {
        let latency = now.saturating_duration_since(to.received_at);
        self.metrics.on_answer(answer.status, latency);
        self.outputs.push_back(Output::Answer { to, answer });
    }
}

/// A leg, by the link carrying it.
impl delivery::Link {
    fn leg(&self) -> Option<&Leg> {
        match &self.phase {
            delivery::Phase::Busy { leg, .. } => Some(leg),
            delivery::Phase::Connecting { .. } | delivery::Phase::Idle => None,
        }
    }
}
