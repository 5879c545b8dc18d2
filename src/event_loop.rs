//! The only `poll()`: one thread, one `mio` event loop doing the proxy's I/O.
//!
//! It accepts beacon-node connections, drives them ([`Inbound`]) and the upstream connections
//! ([`Outbound`]), feeds what they produce to the [`Core`] and carries out the core's outputs.
//! Every decision is the core's; this module owns the poll, readiness, signals and the clock.
//! `ARCHITECTURE.md` has the picture.
//!
//! Each iteration reads the clock once, runs due timers, polls, marks ready connections, then
//! settles: applies the core's outputs and services the connections they touched until nothing
//! is left. A connection that spent its I/O budget with readiness left is serviced again in the
//! next iteration (the poll does not wait then): edge-triggered readiness will not announce
//! those bytes again. Closed connections are freed after the batch.
//!
//! [`Inbound`]: crate::inbound::Inbound
//! [`Outbound`]: crate::outbound::Outbound

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::connections::{Admission, Connection, Connections, FIRST_CONNECTION};
use crate::core::{Core, LinkId, Output};
use crate::exchange::ReplyTo;
use crate::inbound::{Limits, ReadContext};
use crate::outbound::{OutboundEvent, UpstreamError};
use crate::signal;
use crate::time::Clock;

/// The listening socket.
const LISTENER: Token = Token(0);
/// The signal pipe.
const SIGNALS: Token = Token(1);
/// Readiness events handled per `poll()`; more simply wait for the next iteration.
const MAX_EVENTS: usize = 1024;
/// Connections accepted per listener event, so a connection storm cannot starve open ones.
const MAX_ACCEPTS_PER_EVENT: usize = 64;
/// Rounds of read-handle-write per beacon-node connection per service.
const MAX_INBOUND_ROUNDS: usize = 8;
/// Events taken from an upstream connection per service, so one answering from a queue of
/// ready responses yields to the others.
const MAX_OUTBOUND_EVENTS: usize = 64;
/// After the grace period, answers already decided get this long to reach their beacon nodes.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(500);

/// The proxy: the core and the sockets that serve it.
pub struct Proxy {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Signals,
    connections: Connections,
    core: Core,
    limits: Limits,
    max_connections: usize,
    /// Connections to service in this settle pass.
    ready: Vec<usize>,
    /// Connections that spent their I/O budget with readiness left: next iteration's.
    unfinished: Vec<usize>,
    /// The last accept round spent its budget: the backlog may hold connections that no
    /// listener edge will announce again.
    accept_unfinished: bool,
    /// Unsent answers exceeded `--max-unsent-answer-bytes`: connections were held back.
    over_budget: bool,
}

impl Proxy {
    /// Binds the listener and prepares the core; nothing is connected yet.
    pub fn bind(config: Config) -> io::Result<Proxy> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        let mut signals = Signals::new(signal::HANDLED)?;
        let registry = poll.registry();
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;
        registry.register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Proxy {
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            connections: Connections::default(),
            limits: Limits::of(&config),
            max_connections: config.max_connections,
            ready: Vec::new(),
            unfinished: Vec::new(),
            accept_unfinished: false,
            over_budget: false,
            core: Core::new(config, Instant::now()),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs until a signal asks to stop and everything is delivered (or the grace period ends).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(MAX_EVENTS);
        loop {
            let clock = Clock::read();
            // Due timers first, so the poll timeout below is always in the future.
            self.core.handle_timeout(clock);
            self.connections.expire(clock.now, &mut self.ready);
            self.settle(clock);
            self.reap();
            if self.is_done(clock.now) {
                return Ok(());
            }
            let wait = match self.unfinished.is_empty() && !self.accept_unfinished {
                true => self.next_deadline(clock.now),
                false => Some(Duration::ZERO),
            };
            match self.poll.poll(&mut events, wait) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => result?,
            }
            let clock = Clock::read();
            // What this batch leaves unfinished waits one more round, so a fast peer yields
            // to the others after each budget.
            self.ready.append(&mut self.unfinished);
            if std::mem::take(&mut self.accept_unfinished) {
                self.accept(clock);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(clock),
                    SIGNALS => self.on_signal(clock),
                    Token(token) => {
                        let key = token - FIRST_CONNECTION;
                        if self.connections.on_event(key, event) {
                            self.ready.push(key);
                        }
                    }
                }
            }
            self.settle(clock);
            self.review_answers(clock);
            self.reap();
        }
    }

    fn accept(&mut self, clock: Clock) {
        for _ in 0..MAX_ACCEPTS_PER_EVENT {
            let Some(listener) = &self.listener else {
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EMFILE and friends: the socket stays in the backlog; try on the next event.
                Err(e) => return warn!("accept failed: {e}"),
            };
            let (registry, limits, max) = (self.poll.registry(), self.limits, self.max_connections);
            match (self.connections).admit(registry, stream, peer, limits, max, clock.now) {
                Ok(Admission::Accepted) => self.core.on_connection_opened(),
                Ok(Admission::Refusing | Admission::Dropped) => {
                    self.core.on_connection_refused(peer, clock.now)
                }
                Err(e) => warn!("cannot register connection from {peer}: {e}"),
            }
        }
        // The backlog may hold more that no listener edge will announce again.
        self.accept_unfinished = true;
    }

    fn on_signal(&mut self, clock: Clock) {
        for signal in self.signals.pending().collect::<Vec<i32>>() {
            if signal::ignored(signal) {
                continue;
            }
            let Some(mut listener) = self.listener.take() else {
                info!("second signal {signal}: exiting without draining");
                return self.core.hurry_shutdown(clock.now);
            };
            let _ = self.poll.registry().deregister(&mut listener);
            self.core.begin_shutdown(clock);
            // Requests under way are still read and answered; none after them.
            self.ready.extend(self.connections.stop_reading());
        }
    }

    /// Applies the core's outputs and services the connections they touch, until both are done.
    fn settle(&mut self, clock: Clock) {
        loop {
            self.apply_outputs(clock);
            let Some(key) = self.ready.pop() else {
                return;
            };
            match self.connections.get_mut(key) {
                Some(Connection::Inbound { .. }) => self.service_inbound(key, clock),
                Some(Connection::Outbound { link, .. }) => {
                    let link = *link;
                    self.service_outbound(key, link, clock);
                }
                None => {}
            }
        }
    }

    fn apply_outputs(&mut self, clock: Clock) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Answer { to, answer } => match self.connections.inbound(to.conn) {
                    Some(conn) if conn.serial == to.serial => {
                        conn.answer(to.seq, answer.status, &answer.content_type, answer.body);
                        self.connections.recount(to.conn);
                        self.ready.push(to.conn);
                    }
                    _ => {}
                },
                Output::Connect { link, addr } => {
                    let (registry, config) = (self.poll.registry(), self.core.config());
                    let (head, body) = (config.max_header_bytes, config.max_body_bytes);
                    let opened = (self.connections).add_outbound(registry, link, addr, head, body);
                    // Immediate failures (no route, no ports) count like a refused connection.
                    if let Err(e) = opened {
                        let error = UpstreamError::Connect(e.kind());
                        let failed = OutboundEvent::failed_before_answer(error);
                        self.core.handle_link_event(link, failed, clock);
                    }
                }
                Output::Send {
                    link,
                    head,
                    request,
                    ..
                } => {
                    if let Some((key, conn)) = self.connections.outbound(link) {
                        conn.start(request, head);
                        self.ready.push(key);
                    }
                }
                Output::Close { link } => {
                    (self.connections).close_outbound(self.poll.registry(), link);
                }
            }
        }
    }

    /// Reads requests, hands them to the core, writes answers, until nothing is left to do.
    fn service_inbound(&mut self, key: usize, clock: Clock) {
        for _ in 0..MAX_INBOUND_ROUNDS {
            let unsent_answer_bytes = self.connections.unsent_total();
            let Some(conn) = self.connections.inbound(key) else {
                return;
            };
            conn.flush(clock.now);
            let mut parsed = Vec::new();
            if conn.finished().is_none() {
                let context = ReadContext {
                    clock,
                    jwt_secret: self.core.config().jwt_secret.as_ref(),
                    unsent_answer_bytes,
                };
                conn.read_requests(context, &mut parsed);
            }
            if parsed.is_empty() {
                conn.flush(clock.now);
                break;
            }
            let (peer, serial) = (conn.peer, conn.serial);
            for request in parsed {
                let to = ReplyTo::new(key, serial, request.seq, clock.now);
                self.core.handle_request(to, request, peer, clock);
            }
            self.apply_outputs(clock);
        }
        if self.connections.after_service(key) {
            self.unfinished.push(key);
        }
    }

    /// Drives an upstream connection, reporting its events to the core.
    fn service_outbound(&mut self, key: usize, link: LinkId, clock: Clock) {
        for _ in 0..MAX_OUTBOUND_EVENTS {
            // Gone when the core closed it this iteration; freed at the end of it.
            let Some((_, conn)) = self.connections.outbound(link) else {
                return;
            };
            let Some(event) = conn.drive() else {
                if conn.wants_service() {
                    self.unfinished.push(key);
                }
                return;
            };
            let dead = conn.is_dead();
            self.core.handle_link_event(link, event, clock);
            if dead {
                return (self.connections).close_outbound(self.poll.registry(), link);
            }
            // The core may have handed the idle connection its next request.
            self.apply_outputs(clock);
        }
        self.unfinished.push(key);
    }

    fn next_deadline(&mut self, now: Instant) -> Option<Duration> {
        let linger = self.core.shutdown_deadline().map(|at| at + SHUTDOWN_LINGER);
        let timers = [
            self.core.poll_timeout(),
            self.connections.next_deadline(),
            linger,
        ];
        (timers.into_iter().flatten().min()).map(|at| at.saturating_duration_since(now))
    }

    /// Shutting down: the core has nothing left, and every answer is written (or had its
    /// linger after the grace period).
    fn is_done(&self, now: Instant) -> bool {
        let lingered =
            (self.core.shutdown_deadline()).is_some_and(|at| now >= at + SHUTDOWN_LINGER);
        self.core.is_done(now) && (lingered || self.connections.all_answered())
    }

    /// Keeps the answers owed but unread by peers within `--max-unsent-answer-bytes`: beyond
    /// it the connections owing most are closed; back within it, every connection is serviced,
    /// since those held back have readiness no edge will announce again.
    fn review_answers(&mut self, clock: Clock) {
        let max = self.core.config().max_unsent_answer_bytes;
        for (peer, bytes) in self.connections.shed(max) {
            self.core.on_connection_shed(peer, bytes, clock.now);
        }
        let over = self.connections.unsent_total() > max;
        if std::mem::replace(&mut self.over_budget, over) && !over {
            self.ready.extend(self.connections.inbound_keys());
            self.settle(clock);
        }
    }

    /// Frees the connections closed during this iteration.
    fn reap(&mut self) {
        for _ in 0..self.connections.reap(self.poll.registry()) {
            self.core.on_connection_closed();
        }
    }
}
