//! The only `poll()`: one thread, one `mio` event loop driving the listener, beacon-node
//! connections, upstream connections, the loop's own timers and signals.
//!
//! Each iteration reads the clock once, dispatches readiness events to the connection state
//! machines, applies what they report (answers, legs to queue, connections to open or close),
//! runs expired timers, and frees closed connections only after the whole batch. Handlers never
//! touch another connection; the loop does.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Config;
use crate::engine::Lane;
use crate::event_log;
use crate::exchange::{Answer, Exchange, LegFailure, Reply};
use crate::execution_client::ExecutionClient;
use crate::handler::{self, Action, Context, Endpoint};
use crate::http::write::JSON;
use crate::inbound::{Inbound, Limits, ParsedRequest};
use crate::metrics::Metrics;
use crate::policy::{Router, UpstreamView};
use crate::readiness;
use crate::request::{ExchangeId, ExchangeMap};
use crate::rpc::Hash32;
use crate::signal::{self, Disposition};
use crate::status;
use crate::time::Clock;
use crate::ui;
use crate::upstream::{Response, Upstream};

mod delivery;

/// The listening socket.
const LISTENER: Token = Token(0);
/// The signal pipe.
const SIGNALS: Token = Token(1);
/// Connection tokens are slab keys shifted past the reserved ones.
const FIRST_CONNECTION: usize = 2;

/// Readiness events handled per `poll()`; more simply wait for the next iteration.
const MAX_EVENTS: usize = 1024;

/// Connections accepted per listener event, so a connection storm cannot starve open ones.
const MAX_ACCEPTS_PER_EVENT: usize = 64;

/// Upstream events handled per connection per wake-up; a connection answering from a queue of
/// ready responses yields after this many.
const MAX_UPSTREAM_EVENTS: usize = 64;

/// Rounds of read-handle-write per beacon-node connection per wake-up.
const MAX_INBOUND_ROUNDS: usize = 8;

/// Copies of a block waiting for an upstream's verdict, by (upstream, block hash): each the
/// waiting exchange and its request's id.
type BlockWaiters = HashMap<(usize, Hash32), Vec<(ExchangeId, Box<[u8]>)>>;

/// A connection in the slab.
#[derive(Debug)]
enum Connection {
    Inbound(Inbound),
    Upstream(Upstream),
}

/// The proxy: all state of the single thread.
pub struct Proxy {
    config: Config,
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Signals,
    connections: Slab<Connection>,
    inbound_count: usize,
    upstreams: Vec<ExecutionClient>,
    names: Rc<[Box<str>]>,
    exchanges: ExchangeMap<Exchange>,
    /// Copies of a block waiting for an upstream's verdict on it: (upstream, block hash) →
    /// (exchange, request id). Emptied when that delivery settles; bounded by the exchanges.
    block_waiters: BlockWaiters,
    exchange_deadlines: BinaryHeap<Reverse<(Instant, ExchangeId)>>,
    next_exchange: ExchangeId,
    next_serial: u64,
    router: Router,
    metrics: Metrics,
    limits: Limits,
    /// Connections to free at the end of the iteration.
    closed: Vec<usize>,
    /// Beacon-node connections to service again (an answer freed a pipeline slot).
    woken: Vec<usize>,
    /// Connections that spent their I/O budget with readiness left. Edge-triggered readiness
    /// will not announce those bytes again, so the loop drives them in the next iteration
    /// (after a poll that does not wait) instead of waiting for an edge that never comes.
    unfinished: Vec<usize>,
    shutdown_deadline: Option<Instant>,
}

impl Proxy {
    /// Binds the listener and prepares every upstream; nothing is connected yet.
    pub fn bind(config: Config) -> io::Result<Proxy> {
        let now = Instant::now();
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new(signal::HANDLED)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let upstreams: Vec<ExecutionClient> = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| ExecutionClient::new(i, u.clone(), Rc::from(&*config.instance), now))
            .collect();
        let names: Rc<[Box<str>]> = upstreams.iter().map(|u| u.config.url.clone()).collect();
        let router = Router::new(
            config.ack,
            config.chain,
            config.tracker,
            upstreams.len(),
            config.catch_up_max_bytes,
        );
        let limits = Limits {
            max_head_bytes: config.max_header_bytes,
            max_body_bytes: config.max_body_bytes,
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            idle_timeout: config.idle_timeout,
        };
        Ok(Proxy {
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            connections: Slab::new(),
            inbound_count: 0,
            upstreams,
            names,
            exchanges: ExchangeMap::default(),
            block_waiters: HashMap::new(),
            exchange_deadlines: BinaryHeap::new(),
            next_exchange: 0,
            next_serial: 0,
            router,
            metrics: Metrics::new(now),
            limits,
            closed: Vec::new(),
            woken: Vec::new(),
            unfinished: Vec::new(),
            shutdown_deadline: None,
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs until a signal asks to stop and the queues are drained (or the grace period ends).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(MAX_EVENTS);
        loop {
            let clock = Clock::read();
            // Due timers first, so the poll timeout below is always in the future.
            self.on_timers(clock);
            self.reap();
            if self.is_done(clock.now) {
                return Ok(());
            }
            let timeout = if self.unfinished.is_empty() {
                self.next_deadline()
                    .map(|deadline| deadline.saturating_duration_since(clock.now))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let clock = Clock::read();
            // Taken before this batch: what the batch leaves unfinished waits one more round,
            // so a fast peer yields to the others after each budget.
            let unfinished = std::mem::take(&mut self.unfinished);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(clock),
                    SIGNALS => self.on_signal(clock),
                    Token(token) => {
                        self.on_connection_event(token - FIRST_CONNECTION, event, clock);
                    }
                }
            }
            self.service_unfinished(unfinished, clock);
            self.service_woken(clock);
            self.reap();
        }
    }

    fn service_unfinished(&mut self, mut keys: Vec<usize>, clock: Clock) {
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            match self.connections.get(key) {
                Some(Connection::Inbound(_)) => self.service_inbound(key, clock),
                Some(Connection::Upstream(_)) => self.service_upstream(key, clock),
                None => {}
            }
        }
    }

    fn accept(&mut self, clock: Clock) {
        for _ in 0..MAX_ACCEPTS_PER_EVENT {
            let Some(listener) = &self.listener else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the socket stays in the backlog; try on the next event.
                    warn!("accept failed: {e}");
                    return;
                }
            };
            if self.inbound_count >= self.config.max_connections {
                self.metrics.connections_refused += 1;
                event_log::connection_refused(peer, self.config.max_connections);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.connections.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(key + FIRST_CONNECTION),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("cannot register connection from {peer}: {e}");
                continue;
            }
            self.next_serial += 1;
            entry.insert(Connection::Inbound(Inbound::new(
                stream,
                peer,
                self.next_serial,
                self.limits,
                clock.now,
            )));
            self.inbound_count += 1;
            self.metrics.connections_accepted += 1;
            trace!("accepted connection from {peer}");
        }
    }

    fn on_signal(&mut self, clock: Clock) {
        let received: Vec<i32> = self.signals.pending().collect();
        for signal in received {
            if signal::disposition(signal) == Disposition::Ignore {
                signal::log_ignored(signal);
                continue;
            }
            if self.shutdown_deadline.is_some() {
                info!("second signal {signal}: exiting without draining");
                self.shutdown_deadline = Some(clock.now);
                return;
            }
            self.begin_shutdown(clock);
        }
    }

    fn begin_shutdown(&mut self, clock: Clock) {
        let queued: usize = self
            .upstreams
            .iter()
            .map(|u| u.lane(Lane::State).len() + u.lane(Lane::Read).len())
            .sum();
        info!(
            "shutting down: not accepting, delivering {queued} queued requests within {} ms",
            self.config.shutdown_grace.as_millis()
        );
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.shutdown_deadline = Some(clock.now + self.config.shutdown_grace);
        for (key, connection) in self.connections.iter_mut() {
            if let Connection::Inbound(inbound) = connection {
                inbound.stop_reading();
                if inbound.finished().is_some() {
                    self.closed.push(key);
                }
            }
        }
    }

    fn on_connection_event(&mut self, key: usize, event: &Event, clock: Clock) {
        let hangup = event.is_read_closed() || event.is_error();
        let readable = event.is_readable() || hangup;
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        match self.connections.get_mut(key) {
            Some(Connection::Inbound(inbound)) => {
                inbound.on_ready(readable, writable);
                if hangup {
                    inbound.on_hangup();
                }
                self.service_inbound(key, clock);
            }
            Some(Connection::Upstream(upstream)) => {
                upstream.on_ready(readable, writable);
                if hangup {
                    upstream.on_hangup();
                }
                self.service_upstream(key, clock);
            }
            None => {}
        }
    }

    /// Reads requests, handles them, writes answers, until the connection has nothing to do.
    fn service_inbound(&mut self, key: usize, clock: Clock) {
        for _ in 0..MAX_INBOUND_ROUNDS {
            let mut parsed = Vec::new();
            let Some(Connection::Inbound(inbound)) = self.connections.get_mut(key) else {
                return;
            };
            if inbound.finished().is_some() {
                break;
            }
            inbound.read_requests(clock.now, &mut parsed);
            let peer = inbound.peer;
            let serial = inbound.serial;
            let progressed = !parsed.is_empty();
            for request in parsed {
                self.on_request(key, serial, peer, request, clock);
            }
            let Some(Connection::Inbound(inbound)) = self.connections.get_mut(key) else {
                return;
            };
            inbound.flush(clock.now);
            if !progressed {
                break;
            }
        }
        if let Some(Connection::Inbound(inbound)) = self.connections.get(key) {
            if inbound.wants_service() {
                self.unfinished.push(key);
            }
        }
        self.close_if_finished(key);
    }

    fn service_woken(&mut self, clock: Clock) {
        let mut woken = std::mem::take(&mut self.woken);
        woken.sort_unstable();
        woken.dedup();
        for key in woken {
            self.service_inbound(key, clock);
        }
    }

    fn close_if_finished(&mut self, key: usize) {
        if let Some(Connection::Inbound(inbound)) = self.connections.get(key) {
            if let Some(reason) = inbound.finished() {
                debug!("connection from {} closed: {reason}", inbound.peer);
                self.closed.push(key);
            }
        }
    }

    fn on_request(
        &mut self,
        key: usize,
        serial: u64,
        peer: SocketAddr,
        parsed: ParsedRequest,
        clock: Clock,
    ) {
        let seq = parsed.seq;
        let reply = Reply {
            conn: key,
            serial,
            seq,
            received_at: clock.now,
        };
        let views: Vec<UpstreamView> = self
            .upstreams
            .iter()
            .map(|u| UpstreamView {
                is_proxy: u.is_proxy(),
                available: u.is_available(),
            })
            .collect();
        let mut context = Context {
            config: &self.config,
            router: &mut self.router,
            metrics: &mut self.metrics,
            upstreams: &views,
        };
        let action = handler::handle(&mut context, parsed, peer, clock);
        match action {
            Action::Answer(answer) => self.deliver(reply, answer, clock.now),
            Action::Endpoint(endpoint) => {
                let answer = self.render(endpoint, clock);
                self.deliver(reply, answer, clock.now);
            }
            Action::Forward {
                request,
                targets,
                local,
                order,
                policy,
                awaiting,
            } => {
                let exchange = match local {
                    Some(answer) => {
                        self.deliver(reply, answer, clock.now);
                        None
                    }
                    None => {
                        let id = self.next_exchange;
                        self.next_exchange += 1;
                        let call_id: &[u8] = request.call.as_ref().map_or(b"null", |c| &c.id);
                        let deadline = clock.now + self.config.timeout_for(request.method);
                        self.exchanges.insert(
                            id,
                            Exchange::new(
                                reply,
                                policy,
                                call_id,
                                request.method,
                                order,
                                Rc::clone(&self.names),
                                deadline,
                            ),
                        );
                        self.exchange_deadlines.push(Reverse((deadline, id)));
                        if let Some(block) = awaiting {
                            self.block_waiters
                                .entry(block)
                                .or_default()
                                .push((id, call_id.into()));
                        }
                        Some(id)
                    }
                };
                let forwarded = targets
                    .iter()
                    .any(|i| self.upstreams.get(i).is_some_and(|u| !u.is_proxy()));
                self.router.remember(&request, forwarded);
                self.dispatch(&request, targets, exchange, clock);
                if let Some(id) = exchange {
                    self.try_decide(id, clock.now);
                }
            }
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
            Endpoint::Ui => ui::answer(),
            Endpoint::Metrics => Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4".into(),
                body: self
                    .metrics
                    .render(
                        now,
                        &self.upstreams,
                        self.router.tracker(),
                        self.inbound_count,
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
        outcome: Result<Response, LegFailure>,
        now: Instant,
    ) {
        let Some(exchange) = self.exchanges.get_mut(&id) else {
            return;
        };
        match outcome {
            Ok(response) => exchange.on_answer(index, response),
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
        let reply = exchange.reply;
        self.exchanges.remove(&id);
        self.deliver(reply, answer, now);
    }

    /// Hands an answer to its beacon-node connection, if it is still there.
    fn deliver(&mut self, reply: Reply, answer: Answer, now: Instant) {
        let latency = now.saturating_duration_since(reply.received_at);
        self.metrics.on_answer(answer.status, latency);
        let Some(Connection::Inbound(inbound)) = self.connections.get_mut(reply.conn) else {
            return;
        };
        if inbound.serial != reply.serial {
            return;
        }
        let content_type = if answer.content_type.is_empty() {
            JSON
        } else {
            &answer.content_type
        };
        inbound.answer(reply.seq, answer.status, content_type, answer.body);
        inbound.flush(now);
        self.woken.push(reply.conn);
    }

    fn on_timers(&mut self, clock: Clock) {
        let now = clock.now;
        let expired: Vec<usize> = self
            .connections
            .iter()
            .filter(|(_, c)| deadline_of(c).is_some_and(|d| d <= now))
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            match self.connections.get_mut(key) {
                Some(Connection::Inbound(inbound)) => {
                    inbound.on_timeout(now);
                    self.close_if_finished(key);
                }
                Some(Connection::Upstream(upstream)) => {
                    let (index, lane) = (upstream.upstream, upstream.lane);
                    if let Some(event) = upstream.on_timeout(now) {
                        let keep = self.on_upstream_event(index, lane, event, clock);
                        if !keep {
                            self.close_upstream(key, index, lane);
                            self.pump(index, lane, clock);
                        }
                    }
                }
                None => {}
            }
        }
        while let Some(Reverse((deadline, id))) = self.exchange_deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.exchange_deadlines.pop();
            if let Some(mut exchange) = self.exchanges.remove(&id) {
                let answer = exchange.on_timeout();
                debug!("exchange {id} timed out; answering {}", answer.status);
                self.deliver(exchange.reply, answer, now);
            }
        }
        if let Some(switch) = self.router.on_timeout(now, clock.unix_secs) {
            event_log::switch(&switch);
        }
        for upstream in &mut self.upstreams {
            if let Some(count) = upstream.flush_drops(now) {
                event_log::dropped(&upstream.config.url, count, None);
            }
        }
        if self.shutdown_deadline.is_none() {
            for index in 0..self.upstreams.len() {
                if self.upstreams[index].probe_if_due(now) {
                    self.pump(index, Lane::Read, clock);
                }
            }
        }
        self.service_woken(clock);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let connections = self.connections.iter().filter_map(|(_, c)| deadline_of(c));
        let exchanges = self.exchange_deadlines.peek().map(|Reverse((d, _))| *d);
        let probes = self
            .upstreams
            .iter()
            .filter(|_| self.shutdown_deadline.is_none())
            .filter_map(ExecutionClient::probe_deadline)
            .chain(
                self.upstreams
                    .iter()
                    .filter_map(ExecutionClient::drop_log_deadline),
            );
        connections
            .chain(exchanges)
            .chain(probes)
            .chain(self.router.deadline())
            .chain(self.shutdown_deadline)
            .min()
    }

    /// Frees the connections closed during this iteration.
    fn reap(&mut self) {
        let mut closed = std::mem::take(&mut self.closed);
        closed.sort_unstable();
        closed.dedup();
        for key in closed {
            let Some(connection) = self.connections.try_remove(key) else {
                continue;
            };
            match connection {
                Connection::Inbound(mut inbound) => {
                    let _ = self.poll.registry().deregister(inbound.stream_mut());
                    self.inbound_count -= 1;
                }
                Connection::Upstream(mut upstream) => {
                    let _ = self.poll.registry().deregister(upstream.stream_mut());
                    let (index, lane) = (upstream.upstream, upstream.lane);
                    if let Some(upstream) = self.upstreams.get_mut(index) {
                        if upstream.lane(lane).conn == Some(key) {
                            upstream.lane_mut(lane).conn = None;
                        }
                    }
                }
            }
        }
    }

    /// Shutting down and nothing left to deliver, or out of time.
    fn is_done(&self, now: Instant) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        if now >= deadline {
            let left: usize = self
                .upstreams
                .iter()
                .map(|u| u.lane(Lane::State).len() + u.lane(Lane::Read).len())
                .sum();
            if left > 0 {
                warn!("grace period over: {left} queued requests not delivered");
            }
            return true;
        }
        let queues_empty = self
            .upstreams
            .iter()
            .all(|u| u.lane(Lane::State).is_empty() && u.lane(Lane::Read).is_empty());
        let nothing_in_flight = self.connections.iter().all(|(_, c)| match c {
            Connection::Upstream(u) => u.leg().is_none_or(|leg| leg.probe),
            Connection::Inbound(i) => i.pending_answers() == 0,
        });
        queues_empty && nothing_in_flight
    }
}

fn deadline_of(connection: &Connection) -> Option<Instant> {
    match connection {
        Connection::Inbound(inbound) => inbound.deadline(),
        Connection::Upstream(upstream) => upstream.deadline(),
    }
}
