//! The upstream side of the loop: queueing each request's legs at its upstreams, opening and
//! driving upstream connections, and settling each leg's outcome (router memory, then the
//! waiting exchange). Health changes, retries and catch-up are decided here.
//!
//! A child module of [`crate::event_loop`], so it works on the same `Proxy` state; the loop
//! itself (poll, accept, timers, beacon-node connections) stays in the parent.

use std::rc::Rc;

use log::{debug, error, trace};
use mio::{Interest, Token};

use super::{Connection, FIRST_CONNECTION, MAX_UPSTREAM_EVENTS, Proxy};
use crate::engine::{Lane, Method};
use crate::event_log;
use crate::exchange::LegFailure;
use crate::execution_client::{Eviction, ExecutionClient};
use crate::policy::UpstreamSet;
use crate::request::{ExchangeId, Leg, Request};
use crate::rpc::{self, Call};
use crate::time::Clock;
use crate::upstream::{Response, Upstream, UpstreamError, UpstreamEvent};

impl Proxy {
    /// Queues a leg of `request` at every target and starts whatever can be sent.
    pub(super) fn dispatch(
        &mut self,
        request: &Rc<Request>,
        targets: UpstreamSet,
        exchange: Option<ExchangeId>,
        clock: Clock,
    ) {
        let lane = request.lane();
        for index in targets.iter() {
            let Some(upstream) = self.upstreams.get_mut(index) else {
                continue;
            };
            let mut leg = Leg::new(Rc::clone(request), exchange);
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
            for (leg, why) in evicted {
                let failure = match why {
                    Eviction::QueueFull => {
                        let due = self
                            .upstreams
                            .get_mut(index)
                            .and_then(|u| u.note_drop(clock.now));
                        if let Some(count) = due {
                            event_log::dropped(&self.names[index], count, Some(&leg.request));
                        }
                        LegFailure::Dropped
                    }
                    Eviction::Superseded => {
                        debug!(
                            "{}: {} superseded by a newer forkchoiceUpdated",
                            self.names[index],
                            leg.request.describe()
                        );
                        LegFailure::Superseded
                    }
                };
                self.settle(index, leg, Err(failure), clock);
            }
            self.pump(index, lane, clock);
        }
    }

    /// Starts the next leg of a lane (opening a connection if needed) and drives its I/O.
    pub(super) fn pump(&mut self, index: usize, lane: Lane, clock: Clock) {
        if let Some(key) = self.start_next(index, lane, clock) {
            self.service_upstream(key, clock);
        }
    }

    /// Hands the next leg to the lane's idle connection, or opens one; returns the connection
    /// to drive.
    pub(super) fn start_next(&mut self, index: usize, lane: Lane, clock: Clock) -> Option<usize> {
        let behind = self
            .upstreams
            .get(index)
            .is_some_and(ExecutionClient::needs_catch_up);
        if lane == Lane::State && behind && self.lane_is_idle(index, lane) {
            self.catch_up(index);
        }
        let upstream = self.upstreams.get_mut(index)?;
        let Some(key) = upstream.lane(lane).conn else {
            if upstream.wants_connection(lane) {
                self.connect(index, lane, clock);
            }
            return None;
        };
        let Some(Connection::Upstream(connection)) = self.connections.get_mut(key) else {
            upstream.lane_mut(lane).conn = None;
            return None;
        };
        if !connection.is_idle() {
            return None;
        }
        let mut leg = upstream.next_leg(lane)?;
        let head = upstream.request_head(&leg, clock.unix_secs);
        let timeout = if leg.probe {
            ExecutionClient::probe_timeout()
        } else {
            self.config
                .leg_timeout(upstream.config.kind, leg.request.method)
        };
        leg.attempts = leg.attempts.saturating_add(1);
        upstream.on_sent();
        trace!(
            "{}: sending {}",
            upstream.config.url,
            leg.request.describe()
        );
        connection.start(leg, head, clock.now, timeout);
        Some(key)
    }

    /// Whether a lane has a connection with nothing in flight.
    pub(super) fn lane_is_idle(&self, index: usize, lane: Lane) -> bool {
        let key = self.upstreams.get(index).and_then(|u| u.lane(lane).conn);
        matches!(key.and_then(|k| self.connections.get(k)), Some(Connection::Upstream(c)) if c.is_idle())
    }

    pub(super) fn connect(&mut self, index: usize, lane: Lane, clock: Clock) {
        let Some(upstream) = self.upstreams.get_mut(index) else {
            return;
        };
        let deadline = clock.now + self.config.connect_timeout;
        let connection = Upstream::connect(
            upstream.config.addr,
            index,
            lane,
            deadline,
            self.config.max_header_bytes,
            self.config.max_body_bytes,
        );
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(e) => {
                // Immediate failures (no route, no ports) count like a refused connection.
                self.on_upstream_down(index, &format!("connect failed: {e}"), false, clock);
                return;
            }
        };
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            connection.stream_mut(),
            Token(key + FIRST_CONNECTION),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            error!("cannot register upstream connection: {e}");
            return;
        }
        entry.insert(Connection::Upstream(connection));
        upstream.lane_mut(lane).conn = Some(key);
        upstream.stats.connects += 1;
        trace!("{}: connecting ({lane:?} lane)", upstream.config.url);
    }

    /// Drives an upstream connection until it has nothing more to report.
    pub(super) fn service_upstream(&mut self, key: usize, clock: Clock) {
        for _ in 0..MAX_UPSTREAM_EVENTS {
            let Some(Connection::Upstream(connection)) = self.connections.get_mut(key) else {
                return;
            };
            let (index, lane) = (connection.upstream, connection.lane);
            let Some(event) = connection.drive() else {
                if connection.wants_service() {
                    self.unfinished.push(key);
                }
                return;
            };
            let keep = self.on_upstream_event(index, lane, event, clock);
            if !keep {
                self.close_upstream(key, index, lane);
                self.pump(index, lane, clock);
                return;
            }
            // The connection is idle again: give it the next leg and keep driving.
            self.start_next(index, lane, clock);
        }
        // Event budget spent: the rest waits for the next iteration.
        self.unfinished.push(key);
    }

    /// Applies an upstream event; returns whether the connection stays open.
    pub(super) fn on_upstream_event(
        &mut self,
        index: usize,
        lane: Lane,
        event: UpstreamEvent,
        clock: Clock,
    ) -> bool {
        match event {
            UpstreamEvent::Connected => {
                trace!("{}: connected ({lane:?} lane)", self.names[index]);
                true
            }
            UpstreamEvent::Answered {
                leg,
                response,
                keep_alive,
            } => {
                let Some(upstream) = self.upstreams.get_mut(index) else {
                    return false;
                };
                let was_down = !upstream.is_available();
                upstream.observe(&leg, &response, clock.now);
                if upstream.on_answer(clock.now) {
                    event_log::upstream_up(&upstream.config.url);
                    if was_down {
                        self.catch_up(index);
                    }
                    // State-changing calls held while it was down can go now.
                    if lane == Lane::Read {
                        self.pump(index, Lane::State, clock);
                    }
                }
                if !(200..300).contains(&response.status) {
                    debug!(
                        "{}: HTTP {} for {}",
                        self.names[index],
                        response.status,
                        leg.request.describe()
                    );
                }
                self.settle(index, leg, Ok(response), clock);
                keep_alive
            }
            UpstreamEvent::Failed {
                leg,
                error,
                retryable,
            } => {
                match leg {
                    Some(leg) if retryable && leg.attempts < 2 => {
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
                        let cause = format!("{error} ({})", leg.request.describe());
                        self.settle(index, leg, Err(LegFailure::Upstream(error)), clock);
                        self.on_upstream_down(index, &cause, error.is_timeout(), clock);
                    }
                    None => match error {
                        UpstreamError::Connect(_) | UpstreamError::ConnectTimeout => {
                            self.on_upstream_down(
                                index,
                                &error.to_string(),
                                error.is_timeout(),
                                clock,
                            );
                        }
                        // An idle keep-alive connection closed by the server: routine.
                        _ => trace!("{}: idle connection ended: {error}", self.names[index]),
                    },
                }
                false
            }
        }
    }

    /// Queues what an upstream missed (recent payloads, then the followed head) ahead of its
    /// state lane.
    pub(super) fn catch_up(&mut self, index: usize) {
        let Some(upstream) = self.upstreams.get_mut(index) else {
            return;
        };
        if upstream.is_proxy() {
            return;
        }
        let missed = self.router.catch_up(index);
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
            .map(|request| Leg::new(request, None))
            .collect();
        upstream.queue_catch_up(legs);
    }

    /// An upstream failed: mark it down, answer everyone waiting on it, fail its queued reads.
    pub(super) fn on_upstream_down(
        &mut self,
        index: usize,
        cause: &str,
        timed_out: bool,
        clock: Clock,
    ) {
        let Some(upstream) = self.upstreams.get_mut(index) else {
            return;
        };
        let news = upstream.on_failure(clock.now, timed_out);
        event_log::upstream_down(&upstream.config.url, cause, news);
        let waiting = upstream.report_queued_unavailable();
        let reads = upstream.drain_reads();
        for id in waiting {
            self.report(id, index, Err(LegFailure::Unavailable), clock.now);
        }
        for leg in reads {
            self.settle(index, leg, Err(LegFailure::Unavailable), clock);
        }
    }

    pub(super) fn close_upstream(&mut self, key: usize, index: usize, lane: Lane) {
        if let Some(upstream) = self.upstreams.get_mut(index) {
            if upstream.lane(lane).conn == Some(key) {
                upstream.lane_mut(lane).conn = None;
            }
        }
        if let Some(Connection::Upstream(connection)) = self.connections.get_mut(key) {
            let _ = self.poll.registry().deregister(connection.stream_mut());
            debug_assert!(connection.leg().is_none() || connection.is_dead());
        }
        self.closed.push(key);
    }

    /// Bookkeeping for a leg's outcome, then the waiting exchange, if any.
    /// Answers the copies of a block other beacon nodes sent while `index` was validating it,
    /// each with that verdict under its own id (`SYNCING` if the delivery failed).
    fn answer_copies(
        &mut self,
        index: usize,
        call: &Call,
        outcome: &Result<Response, LegFailure>,
        clock: Clock,
    ) {
        let (Method::NewPayload(_), Some(hash)) = (call.method, call.block_hash) else {
            return;
        };
        let Some(copies) = self.block_waiters.remove(&(index, hash)) else {
            return;
        };
        for (id, request_id) in copies {
            let verdict = match outcome {
                Ok(response) if (200..300).contains(&response.status) => {
                    rpc::rewrite_id(&response.body, &request_id)
                }
                Ok(_) | Err(_) => None,
            };
            let body = verdict
                .or_else(|| rpc::syncing_body(call.method, &request_id))
                .unwrap_or_default();
            let response = Response {
                status: 200,
                content_type: None,
                body,
            };
            self.report(id, index, Ok(response), clock.now);
        }
    }

    pub(super) fn settle(
        &mut self,
        index: usize,
        leg: Leg,
        outcome: Result<Response, LegFailure>,
        clock: Clock,
    ) {
        if leg.probe {
            return;
        }
        if let Some(call) = &leg.request.call {
            match &outcome {
                Ok(response) if (200..300).contains(&response.status) => {
                    if self.router.on_answer(index, call, &response.body) {
                        if let Some(upstream) = self.upstreams.get_mut(index) {
                            upstream.stats.status_mismatches += 1;
                        }
                        event_log::status_mismatch(&self.names[index], &leg.request);
                    }
                }
                Ok(_) | Err(_) => self.router.on_failure(index, call),
            }
            self.answer_copies(index, call, &outcome, clock);
        }
        if leg.reported {
            return;
        }
        if let Some(id) = leg.exchange {
            self.report(id, index, outcome, clock.now);
        }
    }
}
