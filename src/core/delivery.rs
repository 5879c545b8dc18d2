//! The upstream side of the core: queueing each request's legs at its upstreams, the links
//! (connections as the core sees them) that carry them, and settling each leg's outcome (router
//! memory, then the waiting exchange). Health changes, retries, timeouts and catch-up are
//! decided here.
//!
//! A child module of [`crate::core`], so it works on the same `Core` state; request admission
//! and answers stay in the parent.

use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, trace};

use super::{Core, LinkEvent, LinkId, Output, Timer};
use crate::engine::{Lane, Method};
use crate::event_log;
use crate::exchange::{Breakage, Class, LegFailure, classify_read};
use crate::execution_client::{Eviction, ExecutionClient, HealthChange};
use crate::outbound::{Response, UpstreamError};
use crate::request::{ExchangeId, Leg, Request};
use crate::router::{UpstreamSet, payload_key};
use crate::rpc::{self, Call};
use crate::time::Clock;

/// A request sent on a reused connection that failed before any answer byte is sent once more
/// on a fresh one (every Engine API call is idempotent); a second failure is the upstream's.
const MAX_ATTEMPTS: u8 = 2;

/// Whether a leg whose connection failed goes once more on a fresh one. A stale keep-alive
/// connection (one that served before) failing before any answer byte says nothing about the
/// upstream. Engine calls are idempotent (a payload is validated again, a fork choice applied
/// again, a payload returned again), so a connection reset even mid-answer is worth one more
/// try before another upstream's answer or an error has to do.
fn is_retryable(leg: &Leg, link: &Link, error: UpstreamError, answer_started: bool) -> bool {
    let connection_failed = matches!(error, UpstreamError::Closed | UpstreamError::Io(_));
    let stale = link.served > 0 && !answer_started;
    let engine = leg.request.method.is_engine() || leg.request.method.lane() == Lane::State;
    // A probe cut short says nothing yet: one blip must not mark the upstream down.
    connection_failed && (stale || engine || leg.probe)
}

/// An upstream connection as the core knows it.
#[derive(Debug)]
pub(super) struct Link {
    /// Index of the upstream.
    pub(super) upstream: usize,
    /// The lane it serves.
    pub(super) lane: Lane,
    /// Answers completed on it; a failure before any answer byte on a connection that served
    /// one is a stale keep-alive connection, not a sign of a dead upstream.
    served: u64,
    pub(super) phase: Phase,
}

/// What a link is doing.
#[derive(Debug)]
pub(super) enum Phase {
    /// The TCP connect is under way.
    Connecting { deadline: Instant },
    /// Connected, nothing in flight.
    Idle,
    /// Carrying `leg`, which must be answered by `deadline`.
    Busy {
        leg: Leg,
        deadline: Instant,
        timeout: Duration,
    },
}

impl Link {
    /// When the phase in progress times out.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { deadline } | Phase::Busy { deadline, .. } => Some(deadline),
            Phase::Idle => None,
        }
    }

    fn take_leg(&mut self) -> Option<Leg> {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Busy { leg, .. } => Some(leg),
            Phase::Connecting { .. } | Phase::Idle => None,
        }
    }
}

impl Core {
    /// Queues a leg of `request` at every target and starts whatever can be sent; a `replay`
    /// is a request sent again (a catch-up, or the followed head restored after a build).
    pub(super) fn dispatch(
        &mut self,
        request: &Rc<Request>,
        targets: UpstreamSet,
        exchange: Option<ExchangeId>,
        replay: bool,
        clock: Clock,
    ) {
        let lane = request.lane();
        for index in targets.iter() {
            let Some(upstream) = self.upstreams.get_mut(index) else {
                continue;
            };
            let mut leg = Leg::new(Rc::clone(request), exchange);
            leg.replay = replay;
            if !upstream.is_available() {
                // Beacon nodes waiting on it are answered at once; state-changing calls stay
                // queued for when it returns, reads are pointless later.
                leg.reported = true;
                if let Some(id) = exchange {
                    self.report(id, index, Err(LegFailure::Unavailable), clock.now);
                }
                if lane == Lane::Read {
                    continue;
                }
            }
            let Some(upstream) = self.upstreams.get_mut(index) else {
                continue;
            };
            let evicted = upstream.enqueue(leg, self.config.queue_max, self.config.queue_max_bytes);
            for (leg, Eviction::QueueFull) in evicted {
                let due = self
                    .upstreams
                    .get_mut(index)
                    .and_then(|u| u.note_drop(clock.now));
                if let Some(count) = due {
                    event_log::dropped(&self.names[index], count, Some(&leg.request));
                }
                self.settle(index, leg, Err(LegFailure::Dropped), None, clock);
            }
            self.pump(index, lane, clock);
        }
    }

    /// Hands the next legs of a lane to its idle links, and opens a link when legs wait and
    /// the lane may have another.
    pub(super) fn pump(&mut self, index: usize, lane: Lane, clock: Clock) {
        let behind = self
            .upstreams
            .get(index)
            .is_some_and(ExecutionClient::needs_catch_up);
        if lane == Lane::State && behind && self.lane_is_idle(index, lane) {
            self.catch_up(index, false, clock);
        }
        // Bounded: each round sends a leg or stops.
        for _ in 0..=lane.max_links() {
            let Some(upstream) = self.upstreams.get(index) else {
                return;
            };
            let links = &upstream.lane(lane).links;
            let phases = links
                .iter()
                .filter_map(|id| Some((*id, &self.links.get(id)?.phase)));
            let idle = phases
                .clone()
                .find(|(_, p)| matches!(p, Phase::Idle))
                .map(|(id, _)| id);
            let connecting = phases
                .clone()
                .any(|(_, p)| matches!(p, Phase::Connecting { .. }));
            match idle {
                Some(id) => {
                    if !self.send_next(index, lane, id, clock) {
                        return;
                    }
                }
                None => {
                    let room = links.len() < lane.max_links();
                    if room && !connecting && upstream.wants_connection(lane) {
                        self.connect(index, lane, clock);
                    }
                    return;
                }
            }
        }
    }

    /// Sends the lane's next leg on its idle link `id`; false when none may go.
    fn send_next(&mut self, index: usize, lane: Lane, id: LinkId, clock: Clock) -> bool {
        let Some(upstream) = self.upstreams.get_mut(index) else {
            return false;
        };
        let Some(link) = self.links.get_mut(&id) else {
            return false;
        };
        let Some(mut leg) = upstream.next_leg(lane) else {
            return false;
        };
        let head = upstream.request_head(&leg, clock.unix_secs);
        let timeout = if leg.probe {
            ExecutionClient::probe_timeout()
        } else {
            self.config
                .leg_timeout(upstream.config.kind, leg.request.method)
        };
        leg.attempts = leg.attempts.saturating_add(1);
        leg.sent_at = Some(clock.now);
        upstream.on_sent();
        trace!(
            "{}: sending {}",
            upstream.config.url,
            leg.request.describe()
        );
        let (request, replay) = (Rc::clone(&leg.request), leg.replay);
        let deadline = clock.now + timeout;
        link.phase = Phase::Busy {
            leg,
            deadline,
            timeout,
        };
        self.timers.push(deadline, Timer::Link(id));
        self.outputs.push_back(Output::Send {
            link: id,
            head,
            request,
            replay,
        });
        true
    }

    /// Whether a lane has a link with nothing in flight (and none busy).
    fn lane_is_idle(&self, index: usize, lane: Lane) -> bool {
        let Some(upstream) = self.upstreams.get(index) else {
            return false;
        };
        let links = &upstream.lane(lane).links;
        let phase = |id: &LinkId| self.links.get(id).map(|link| &link.phase);
        !links.is_empty()
            && links
                .iter()
                .all(|id| matches!(phase(id), Some(Phase::Idle)))
    }

    fn connect(&mut self, index: usize, lane: Lane, clock: Clock) {
        let Some(upstream) = self.upstreams.get_mut(index) else {
            return;
        };
        let id = self.next_link;
        self.next_link += 1;
        let deadline = clock.now + self.config.connect_timeout;
        self.links.insert(
            id,
            Link {
                upstream: index,
                lane,
                served: 0,
                phase: Phase::Connecting { deadline },
            },
        );
        upstream.lane_mut(lane).links.push(id);
        upstream.stats.connects += 1;
        trace!("{}: connecting ({lane:?} lane)", upstream.config.url);
        self.timers.push(deadline, Timer::Link(id));
        self.outputs.push_back(Output::Connect {
            link: id,
            addr: upstream.config.addr,
        });
    }

    /// Applies an event of link `id`.
    pub(super) fn on_link_event(&mut self, id: LinkId, event: LinkEvent, clock: Clock) {
        let Some(link) = self.links.get_mut(&id) else {
            // Closed by the core already (timed out); the loop dropped it.
            return;
        };
        let (index, lane) = (link.upstream, link.lane);
        match event {
            LinkEvent::Connected => {
                if matches!(link.phase, Phase::Connecting { .. }) {
                    link.phase = Phase::Idle;
                }
                trace!("{}: connected ({lane:?} lane)", self.names[index]);
            }
            LinkEvent::Answered {
                response,
                keep_alive,
            } => {
                link.served += 1;
                let leg = link.take_leg();
                if !keep_alive {
                    self.forget_link(id);
                }
                if let Some(leg) = leg {
                    self.on_answered(index, lane, leg, response, clock);
                }
            }
            LinkEvent::Failed {
                error,
                answer_started,
            } => {
                let Some(mut link) = self.forget_link(id) else {
                    return;
                };
                let leg = link.take_leg();
                let retryable = leg
                    .as_ref()
                    .is_some_and(|leg| is_retryable(leg, &link, error, answer_started));
                self.on_link_failed(index, lane, leg, error, retryable, clock);
            }
        }
        self.pump(index, lane, clock);
    }

    /// A link's deadline came: its connect or its request timed out. The link is closed, never
    /// reused: a late answer to a timed-out request must not be taken for the next one's.
    pub(super) fn on_link_deadline(&mut self, id: LinkId, at: Instant, clock: Clock) {
        let Some(link) = self.links.get(&id) else {
            return;
        };
        if link.deadline() != Some(at) {
            return;
        }
        let error = match link.phase {
            Phase::Connecting { .. } => UpstreamError::ConnectTimeout,
            Phase::Busy { timeout, .. } => UpstreamError::Timeout(timeout),
            Phase::Idle => return,
        };
        let Some(mut link) = self.forget_link(id) else {
            return;
        };
        self.outputs.push_back(Output::Close { link: id });
        let (index, lane) = (link.upstream, link.lane);
        let leg = link.take_leg();
        self.on_link_failed(index, lane, leg, error, false, clock);
        self.pump(index, lane, clock);
    }

    /// Removes a link from the core and from its lane.
    fn forget_link(&mut self, id: LinkId) -> Option<Link> {
        let link = self.links.remove(&id)?;
        if let Some(upstream) = self.upstreams.get_mut(link.upstream) {
            upstream.lane_mut(link.lane).links.retain(|l| *l != id);
        }
        Some(link)
    }

    fn on_answered(
        &mut self,
        index: usize,
        lane: Lane,
        leg: Leg,
        response: Response,
        clock: Clock,
    ) {
        // Read once: the class, the upstream's last verdict and the router all need it.
        let (class, answer) = classify_read(leg.request.call.as_ref(), &response);
        let Some(upstream) = self.upstreams.get_mut(index) else {
            return;
        };
        upstream.observe_read(&leg, &response, &answer, clock.now);
        let change = match (leg.probe && !upstream.is_proxy(), class) {
            (true, Class::Broken(_)) => upstream.on_bad_answer(clock.now, false),
            (true, _) => upstream.on_probe_answer(clock.now),
            (false, Class::Broken(_)) => upstream.on_bad_answer(clock.now, false),
            (false, _) => upstream.on_engine_answer(clock.now),
        };
        let cause = match class {
            Class::Broken(breakage) => format!("{breakage} for {}", leg.request.describe()),
            _ => String::new(),
        };
        self.on_health_change(index, change, &cause, clock);
        if lane == Lane::Read && change != HealthChange::Same {
            // State-changing calls held while it was down can go now.
            self.pump(index, Lane::State, clock);
        }
        self.settle(index, leg, Ok(response), Some((class, answer)), clock);
    }

    /// A link failed (or timed out) carrying `leg`, if any.
    fn on_link_failed(
        &mut self,
        index: usize,
        lane: Lane,
        leg: Option<Leg>,
        error: UpstreamError,
        retryable: bool,
        clock: Clock,
    ) {
        let cause = match &leg {
            Some(leg) => format!("{error} ({})", leg.request.describe()),
            None => error.to_string(),
        };
        match leg {
            Some(leg) if retryable && leg.attempts < MAX_ATTEMPTS => {
                debug!(
                    "{}: {error} on a reused connection; retrying {} once",
                    self.names[index],
                    leg.request.describe()
                );
                if let Some(upstream) = self.upstreams.get_mut(index) {
                    upstream.requeue_front(leg);
                }
            }
            Some(leg) => {
                // A read cut short on a connection that was up says nothing about the state
                // lane's connection: failing the whole execution client for it would answer
                // the next fork choice "unavailable" where a direct connection would have
                // worked (simulator seed 1340). Probes and connects still decide health.
                let read_only = lane == Lane::Read && !leg.probe && !error.is_connect();
                self.settle(index, leg, Err(LegFailure::Upstream(error)), None, clock);
                let Some(upstream) = self.upstreams.get_mut(index) else {
                    return;
                };
                let change = match error {
                    _ if read_only => upstream.on_read_failure(error.is_timeout()),
                    // Reachable but not answering in time, or answering garbage: demoted, its
                    // calls keep flowing (it may be slow, not gone).
                    UpstreamError::Timeout(_) => upstream.on_bad_answer(clock.now, true),
                    UpstreamError::BadHead(_) | UpstreamError::BadBody(_) => {
                        upstream.on_bad_answer(clock.now, false)
                    }
                    _ => upstream.on_failure(clock.now, error.is_timeout()),
                };
                self.on_health_change(index, change, &cause, clock);
            }
            None => match error {
                UpstreamError::Connect(_) | UpstreamError::ConnectTimeout => {
                    let change = match self.upstreams.get_mut(index) {
                        Some(upstream) => upstream.on_failure(clock.now, error.is_timeout()),
                        None => return,
                    };
                    self.on_health_change(index, change, &cause, clock);
                }
                // An idle keep-alive connection closed by the server: routine.
                _ => trace!("{}: idle connection ended: {error}", self.names[index]),
            },
        }
    }

    /// Logs a change of an upstream's health and does what it calls for: catch-up when it is
    /// back, answering the beacon nodes waiting on it when it is down.
    fn on_health_change(&mut self, index: usize, change: HealthChange, cause: &str, clock: Clock) {
        let name = &self.names[index];
        match change {
            HealthChange::Same => {
                if !cause.is_empty() {
                    debug!("{name} still unhealthy: {cause}");
                }
                // A demoted execution client that answers probes again is fed what it missed
                // now, so its next engine call finds it at the head.
                if cause.is_empty() && self.upstreams.get(index).is_some_and(|u| !u.is_healthy()) {
                    self.catch_up(index, false, clock);
                }
            }
            HealthChange::Up => {
                event_log::upstream_up(name);
                self.catch_up(index, false, clock);
            }
            HealthChange::UpFromDown => {
                event_log::upstream_up(name);
                self.catch_up(index, true, clock);
            }
            HealthChange::Reachable => {
                event_log::upstream_reachable(name);
                self.catch_up(index, true, clock);
            }
            HealthChange::Demoted => event_log::upstream_unhealthy(name, cause),
            HealthChange::Down => event_log::upstream_down(name, cause, true),
        }
        if self.upstreams.get(index).is_some_and(|u| !u.is_available()) {
            self.on_unreachable(index, clock);
        }
    }

    /// An upstream cannot be reached: everyone waiting on it is answered by the others now,
    /// its state-changing calls wait for its return, its reads (stale by then) fail, and
    /// nothing is sent until a probe is due.
    fn on_unreachable(&mut self, index: usize, clock: Clock) {
        let Some(upstream) = self.upstreams.get_mut(index) else {
            return;
        };
        let waiting = upstream.report_queued_unavailable();
        let reads = upstream.drain_reads();
        for id in waiting {
            self.report(id, index, Err(LegFailure::Unavailable), clock.now);
        }
        for leg in reads {
            self.settle(index, leg, Err(LegFailure::Unavailable), None, clock);
        }
    }

    /// Queues what an upstream missed (recent payloads, then the followed head) ahead of its
    /// state lane; after an outage (`everything`), every recent payload.
    fn catch_up(&mut self, index: usize, everything: bool, clock: Clock) {
        let Some(upstream) = self.upstreams.get_mut(index) else {
            return;
        };
        if upstream.is_proxy() {
            return;
        }
        let missed = self.router.catch_up(index, everything);
        if missed.is_empty() {
            return;
        }
        let payloads = missed
            .iter()
            .filter(|r| matches!(r.method, Method::NewPayload(_)))
            .count();
        event_log::catch_up(&upstream.config.url, payloads);
        let legs = missed
            .into_iter()
            .map(|request| Leg {
                replay: true,
                ..Leg::new(request, None)
            })
            .collect();
        upstream.queue_catch_up(legs);
        // Often a probe on the read lane brought this on: the state lane must move by itself.
        self.pump(index, Lane::State, clock);
    }

    /// Gives the copies of a payload that other beacon nodes sent while `index` was validating
    /// it this delivery's outcome, re-addressed to each copy's own id.
    fn answer_copies(
        &mut self,
        index: usize,
        call: &Call,
        outcome: &Result<Response, LegFailure>,
        class: Option<Class>,
        clock: Clock,
    ) {
        let Some(key) = payload_key(call) else {
            return;
        };
        let Some(copies) = self.block_waiters.remove(&(index, key)) else {
            return;
        };
        for (id, request_id) in copies {
            let outcome = match (outcome, class) {
                (Ok(response), Some(class)) if class.is_answer() => {
                    match rpc::rewrite_id(&response.body, &request_id) {
                        Some(body) => Ok((
                            Response {
                                status: response.status,
                                content_type: None,
                                body,
                            },
                            class,
                        )),
                        None => Err(LegFailure::Broken(Breakage::Malformed)),
                    }
                }
                (Ok(_), Some(Class::Broken(breakage))) => Err(LegFailure::Broken(breakage)),
                (Ok(_), _) => Err(LegFailure::Broken(Breakage::Malformed)),
                (Err(failure), _) => Err(*failure),
            };
            self.report(id, index, outcome, clock.now);
        }
    }

    /// Bookkeeping for a leg's outcome (`class`: how its answer counts), then the waiting
    /// exchange, if any.
    pub(super) fn settle(
        &mut self,
        index: usize,
        leg: Leg,
        outcome: Result<Response, LegFailure>,
        read: Option<(Class, rpc::AnswerFacts)>,
        clock: Clock,
    ) {
        if leg.probe {
            return;
        }
        let class = read.map(|(class, _)| class);
        if let Some(call) = &leg.request.call {
            match (&outcome, read) {
                (Ok(response), Some((class, answer))) if class.is_answer() => {
                    let serial = leg.request.serial;
                    let body = &response.body;
                    if let Some(disagreement) =
                        (self.router).on_read_answer(index, serial, call, class, body, &answer)
                    {
                        if let Some(upstream) = self.upstreams.get_mut(index) {
                            upstream.stats.status_mismatches += 1;
                        }
                        event_log::status_mismatch(
                            &self.names[index],
                            &self.names[disagreement.first],
                            disagreement,
                            &leg.request,
                        );
                    }
                }
                _ => self.router.on_failure(index, call),
            }
            self.answer_copies(index, call, &outcome, class, clock);
        }
        if leg.reported {
            return;
        }
        if let Some(id) = leg.exchange {
            let outcome = match (outcome, class) {
                (Ok(response), Some(class)) => Ok((response, class)),
                (Ok(_), None) => Err(LegFailure::Broken(Breakage::Malformed)),
                (Err(failure), _) => Err(failure),
            };
            self.report(id, index, outcome, clock.now);
        }
    }
}
