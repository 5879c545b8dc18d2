//! The only `poll()`: one thread, one `mio` event loop doing the proxy's I/O.
//!
//! It accepts beacon-node connections, drives them ([`Inbound`]) and the upstream connections
//! ([`Outbound`]), feeds what they produce to the [`Core`] and carries out the core's outputs
//! (answers, connects, sends, closes). Every decision is the core's; this module owns sockets,
//! readiness, the clock and the connections' own HTTP timers (slowloris, idle).
//!
//! Each iteration reads the clock once, runs due timers, polls, marks ready connections, then
//! settles: applies the core's outputs and services the connections they touched until nothing
//! is left. A connection that spent its I/O budget with readiness left waits for the next
//! iteration (the poll does not block then). Closed connections are freed after the batch.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Config;
use crate::core::{Core, LinkId, Output};
use crate::exchange::ReplyTo;
use crate::http::write::JSON;
use crate::inbound::{Inbound, Limits};
use crate::outbound::{Outbound, OutboundEvent, UpstreamError};
use crate::request::IdMap;
use crate::time::Clock;

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

/// Rounds of read-handle-write per beacon-node connection per service.
const MAX_INBOUND_ROUNDS: usize = 8;

/// Events taken from an upstream connection per service; one answering from a queue of ready
/// responses yields after this many.
const MAX_OUTBOUND_EVENTS: usize = 64;

/// After the grace period, answers already decided get this long to reach their beacon nodes.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(500);

/// A connection in the slab.
#[derive(Debug)]
enum Connection {
    /// From a beacon node; `armed` is the deadline its timer entry was set for.
    Inbound {
        conn: Box<Inbound>,
        armed: Option<Instant>,
    },
    /// To an upstream, known to the core as `link`.
    Outbound { conn: Outbound, link: LinkId },
}

/// The proxy: the core and the sockets that serve it.
pub struct Proxy {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Signals,
    connections: Slab<Connection>,
    /// Slab keys of upstream connections, by the core's link id.
    links: IdMap<usize>,
    core: Core,
    limits: Limits,
    max_connections: usize,
    inbound_count: usize,
    next_serial: u64,
    /// Beacon-node connection deadlines (deadline, key, serial), soonest first; entries that no
    /// longer match their connection's `armed` are skipped. O(log n) per change, not a scan.
    inbound_timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Connections to service in this settle pass.
    ready: Vec<usize>,
    /// Connections that spent their I/O budget with readiness left. Edge-triggered readiness
    /// will not announce those bytes again, so the next iteration services them after a poll
    /// that does not wait.
    unfinished: Vec<usize>,
    /// Connections to free at the end of the iteration.
    closed: Vec<usize>,
}

impl Proxy {
    /// Binds the listener and prepares the core; nothing is connected yet.
    pub fn bind(config: Config) -> io::Result<Proxy> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
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
            links: IdMap::default(),
            limits,
            max_connections: config.max_connections,
            inbound_count: 0,
            next_serial: 0,
            inbound_timers: BinaryHeap::new(),
            ready: Vec::new(),
            unfinished: Vec::new(),
            closed: Vec::new(),
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
            self.expire_inbound(clock.now);
            self.settle(clock);
            self.reap();
            if self.is_done(clock.now) {
                return Ok(());
            }
            let timeout = match self.unfinished.is_empty() {
                true => self.next_deadline(),
                false => Some(clock.now),
            };
            let timeout = timeout.map(|at| at.saturating_duration_since(clock.now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let clock = Clock::read();
            // Taken before this batch: what the batch leaves unfinished waits one more round,
            // so a fast peer yields to the others after each budget.
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
            if self.inbound_count >= self.max_connections {
                self.core.on_connection_refused();
                warn!(
                    "refused connection from {peer}: --max-connections {} reached",
                    self.max_connections
                );
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.connections.vacant_entry();
            let token = Token(entry.key() + FIRST_CONNECTION);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
                warn!("cannot register connection from {peer}: {e}");
                continue;
            }
            self.next_serial += 1;
            let conn = Box::new(Inbound::new(
                stream,
                peer,
                self.next_serial,
                self.limits,
                clock.now,
            ));
            let key = entry.key();
            entry.insert(Connection::Inbound { conn, armed: None });
            self.arm(key);
            self.inbound_count += 1;
            self.core.on_connection_opened();
            trace!("accepted connection from {peer}");
        }
    }

    fn on_signal(&mut self, clock: Clock) {
        let received: Vec<i32> = self.signals.pending().collect();
        for signal in received {
            if self.listener.is_none() {
                info!("second signal {signal}: exiting without draining");
                self.core.hurry_shutdown(clock.now);
                return;
            }
            if let Some(mut listener) = self.listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
            self.core.begin_shutdown(clock);
            for (key, connection) in self.connections.iter_mut() {
                if let Connection::Inbound { conn, .. } = connection {
                    conn.stop_reading();
                    if conn.finished().is_some() {
                        self.closed.push(key);
                    }
                }
            }
        }
    }

    fn on_ready(&mut self, key: usize, event: &Event) {
        let hangup = event.is_read_closed() || event.is_error();
        let readable = event.is_readable() || hangup;
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        match self.connections.get_mut(key) {
            Some(Connection::Inbound { conn, .. }) => {
                conn.on_ready(readable, writable);
                if hangup {
                    conn.on_hangup();
                }
            }
            Some(Connection::Outbound { conn, .. }) => {
                conn.on_ready(readable, writable);
                if hangup {
                    conn.on_hangup();
                }
            }
            None => return,
        }
        self.ready.push(key);
    }

    /// Applies the core's outputs and services the connections they touch, until both are done.
    fn settle(&mut self, clock: Clock) {
        loop {
            while let Some(output) = self.core.poll_output() {
                self.apply(output, clock);
            }
            let Some(key) = self.ready.pop() else {
                return;
            };
            match self.connections.get(key) {
                Some(Connection::Inbound { .. }) => self.service_inbound(key, clock),
                Some(Connection::Outbound { .. }) => self.service_outbound(key, clock),
                None => {}
            }
        }
    }

    fn apply(&mut self, output: Output, clock: Clock) {
        match output {
            Output::Answer { to, answer } => self.answer(to, answer, clock.now),
            Output::Connect { link, addr } => self.connect(link, addr, clock),
            Output::Send {
                link,
                head,
                request,
            } => {
                let key = self.links.get(&link).copied();
                if let Some(Connection::Outbound { conn, .. }) =
                    key.and_then(|key| self.connections.get_mut(key))
                {
                    conn.start(request, head);
                    self.ready.extend(key);
                }
            }
            Output::Close { link } => self.close_outbound(link),
        }
    }

    /// Hands an answer to its beacon-node connection, if it is still there.
    fn answer(&mut self, to: ReplyTo, answer: crate::exchange::Answer, now: Instant) {
        let Some(Connection::Inbound { conn, .. }) = self.connections.get_mut(to.conn) else {
            return;
        };
        if conn.serial != to.serial {
            return;
        }
        let content_type = match answer.content_type.is_empty() {
            true => JSON,
            false => &answer.content_type,
        };
        conn.answer(to.seq, answer.status, content_type, answer.body);
        conn.flush(now);
        self.ready.push(to.conn);
    }

    fn connect(&mut self, link: LinkId, addr: SocketAddr, clock: Clock) {
        let config = self.core.config();
        let connection = Outbound::connect(addr, config.max_header_bytes, config.max_body_bytes);
        let entry = self.connections.vacant_entry();
        let token = Token(entry.key() + FIRST_CONNECTION);
        let registered = connection.and_then(|mut conn| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.poll
                .registry()
                .register(conn.stream_mut(), token, interest)?;
            Ok(conn)
        });
        match registered {
            Ok(conn) => {
                self.links.insert(link, entry.key());
                entry.insert(Connection::Outbound { conn, link });
            }
            Err(e) => {
                // Immediate failures (no route, no ports) count like a refused connection.
                let error = UpstreamError::Connect(e.kind());
                let event = OutboundEvent::Failed {
                    error,
                    answer_started: false,
                };
                self.core.handle_link_event(link, event, clock);
            }
        }
    }

    /// Reads requests, hands them to the core, writes answers, until nothing is left to do.
    fn service_inbound(&mut self, key: usize, clock: Clock) {
        for _ in 0..MAX_INBOUND_ROUNDS {
            let Some(Connection::Inbound { conn, .. }) = self.connections.get_mut(key) else {
                return;
            };
            if conn.finished().is_some() {
                break;
            }
            let mut parsed = Vec::new();
            conn.read_requests(clock.now, &mut parsed);
            let (peer, serial) = (conn.peer, conn.serial);
            let progressed = !parsed.is_empty();
            for request in parsed {
                let to = ReplyTo {
                    conn: key,
                    serial,
                    seq: request.seq,
                    received_at: clock.now,
                };
                self.core.handle_request(to, request, peer, clock);
            }
            if let Some(Connection::Inbound { conn, .. }) = self.connections.get_mut(key) {
                conn.flush(clock.now);
            }
            if !progressed {
                break;
            }
        }
        if let Some(Connection::Inbound { conn, .. }) = self.connections.get(key) {
            if conn.wants_service() {
                self.unfinished.push(key);
            }
        }
        self.arm(key);
        self.close_if_finished(key);
    }

    /// Drives an upstream connection, reporting its events to the core.
    fn service_outbound(&mut self, key: usize, clock: Clock) {
        for _ in 0..MAX_OUTBOUND_EVENTS {
            let Some(Connection::Outbound { conn, link }) = self.connections.get_mut(key) else {
                return;
            };
            let link = *link;
            if !self.links.contains_key(&link) {
                // Closed by the core this iteration; freed at the end of it.
                return;
            }
            let Some(event) = conn.drive() else {
                if conn.wants_service() {
                    self.unfinished.push(key);
                }
                return;
            };
            let dead = conn.is_dead();
            self.core.handle_link_event(link, event, clock);
            if dead {
                self.close_outbound(link);
                return;
            }
            // The core may have handed the idle connection its next request.
            while let Some(output) = self.core.poll_output() {
                self.apply(output, clock);
            }
        }
        self.unfinished.push(key);
    }

    fn close_outbound(&mut self, link: LinkId) {
        let Some(key) = self.links.remove(&link) else {
            return;
        };
        if let Some(Connection::Outbound { conn, .. }) = self.connections.get_mut(key) {
            let _ = self.poll.registry().deregister(conn.stream_mut());
        }
        self.closed.push(key);
    }

    fn close_if_finished(&mut self, key: usize) {
        if let Some(Connection::Inbound { conn, .. }) = self.connections.get(key) {
            if let Some(reason) = conn.finished() {
                debug!("connection from {} closed: {reason}", conn.peer);
                self.closed.push(key);
            }
        }
    }

    /// Sets a timer entry for a beacon-node connection's deadline when it is sooner than the
    /// one set; a later deadline is found when the earlier entry fires.
    fn arm(&mut self, key: usize) {
        let Some(Connection::Inbound { conn, armed }) = self.connections.get_mut(key) else {
            return;
        };
        let Some(deadline) = conn.deadline() else {
            return;
        };
        if armed.is_none_or(|at| deadline < at) {
            *armed = Some(deadline);
            self.inbound_timers
                .push(Reverse((deadline, key, conn.serial)));
        }
    }

    /// Fires the beacon-node connection timers due at `now`.
    fn expire_inbound(&mut self, now: Instant) {
        while let Some(Reverse((at, key, serial))) = self.inbound_timers.peek().copied() {
            if at > now {
                return;
            }
            self.inbound_timers.pop();
            let Some(Connection::Inbound { conn, armed }) = self.connections.get_mut(key) else {
                continue;
            };
            if conn.serial != serial || *armed != Some(at) {
                continue;
            }
            *armed = None;
            conn.on_timeout(now);
            self.arm(key);
            self.close_if_finished(key);
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let inbound = self.inbound_timers.peek().map(|Reverse((at, _, _))| *at);
        let linger = self.core.shutdown_deadline().map(|at| at + SHUTDOWN_LINGER);
        self.core.poll_timeout().into_iter().chain(inbound).chain(linger).min()
    }

    /// Shutting down: the core has nothing left, and every answer is written (or the answers
    /// had their linger after the grace period).
    fn is_done(&self, now: Instant) -> bool {
        if !self.core.is_done(now) {
            return false;
        }
        let lingered = self
            .core
            .shutdown_deadline()
            .is_some_and(|at| now >= at + SHUTDOWN_LINGER);
        lingered
            || self.connections.iter().all(|(_, c)| match c {
                Connection::Inbound { conn, .. } => {
                    conn.pending_answers() == 0 && !conn.is_reading_body()
                }
                Connection::Outbound { .. } => true,
            })
    }

    /// Frees the connections closed during this iteration.
    fn reap(&mut self) {
        let mut closed = std::mem::take(&mut self.closed);
        closed.sort_unstable();
        closed.dedup();
        for key in closed {
            match self.connections.try_remove(key) {
                Some(Connection::Inbound { mut conn, .. }) => {
                    let _ = self.poll.registry().deregister(conn.stream_mut());
                    self.inbound_count -= 1;
                    self.core.on_connection_closed();
                }
                Some(Connection::Outbound { .. }) | None => {}
            }
        }
    }
}
