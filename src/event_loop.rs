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

use log::{debug, info, trace, warn};
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::connections::{Connection, Connections, FIRST_CONNECTION};
use crate::core::{Core, LinkId, Output};
use crate::exchange::ReplyTo;
use crate::inbound::Limits;
use crate::outbound::{OutboundEvent, UpstreamError};
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
    /// Connections to service in this settle pass.
    ready: Vec<usize>,
    /// Connections that spent their I/O budget with readiness left: next iteration's.
    unfinished: Vec<usize>,
}

impl Proxy {
    /// Binds the listener and prepares the core; nothing is connected yet.
    pub fn bind(config: Config) -> io::Result<Proxy> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
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
            ready: Vec::new(),
            unfinished: Vec::new(),
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
            let wait = match self.unfinished.is_empty() {
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
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(clock),
                    SIGNALS => self.on_signal(clock),
                    Token(token) => self.on_ready(token - FIRST_CONNECTION, event),
                }
            }
            self.settle(clock);
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
            let max = self.core.config().max_connections;
            if self.connections.inbound_count() >= max {
                self.core.on_connection_refused();
                warn!("refused connection from {peer}: --max-connections {max} reached");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let registry = self.poll.registry();
            match (self.connections).add_inbound(registry, stream, peer, self.limits, clock.now) {
                Ok(_) => self.core.on_connection_opened(),
                Err(e) => warn!("cannot register connection from {peer}: {e}"),
            }
            trace!("accepted connection from {peer}");
        }
    }

    fn on_signal(&mut self, clock: Clock) {
        for signal in self.signals.pending().collect::<Vec<i32>>() {
            let Some(mut listener) = self.listener.take() else {
                info!("second signal {signal}: exiting without draining");
                return self.core.hurry_shutdown(clock.now);
            };
            let _ = self.poll.registry().deregister(&mut listener);
            self.core.begin_shutdown(clock);
            for (key, connection) in self.connections.iter_mut() {
                if let Connection::Inbound { conn, .. } = connection {
                    conn.stop_reading();
                    self.ready.push(key);
                }
            }
        }
    }

    fn on_ready(&mut self, key: usize, event: &Event) {
        let hangup = event.is_read_closed() || event.is_error();
        let readable = event.is_readable() || hangup;
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        match self.connections.get_mut(key) {
            Some(Connection::Inbound { conn, .. }) => conn.on_event(readable, writable, hangup),
            Some(Connection::Outbound { conn, .. }) => conn.on_event(readable, writable, hangup),
            None => return,
        }
        self.ready.push(key);
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
            let Some(conn) = self.connections.inbound(key) else {
                return;
            };
            conn.flush(clock.now);
            let mut parsed = Vec::new();
            if conn.finished().is_none() {
                conn.read_requests(clock.now, &mut parsed);
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
        let Some(conn) = self.connections.inbound(key) else {
            return;
        };
        if conn.wants_service() {
            self.unfinished.push(key);
        }
        if let Some(reason) = conn.finished() {
            debug!("connection from {} closed: {reason}", conn.peer);
            self.connections.close_inbound(key);
        }
        self.connections.arm(key);
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
        let inbound = self.connections.next_deadline();
        let core = self.core.poll_timeout();
        let at = core.into_iter().chain(inbound).chain(linger).min()?;
        Some(at.saturating_duration_since(now))
    }

    /// Shutting down: the core has nothing left, and every answer is written (or had its
    /// linger after the grace period).
    fn is_done(&self, now: Instant) -> bool {
        let lingered =
            (self.core.shutdown_deadline()).is_some_and(|at| now >= at + SHUTDOWN_LINGER);
        self.core.is_done(now) && (lingered || self.connections.all_answered())
    }

    /// Frees the connections closed during this iteration.
    fn reap(&mut self) {
        for _ in 0..self.connections.reap(self.poll.registry()) {
            self.core.on_connection_closed();
        }
    }
}
