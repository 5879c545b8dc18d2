//! The event loop's open sockets: beacon-node connections and upstream connections in one slab
//! (a slab key is a poll token), the upstream connections by the core's link id, the beacon-node
//! connections' HTTP timers, and the connections to free at the end of an iteration.
//!
//! Bookkeeping only: it registers and deregisters sockets, but reads, writes and decides
//! nothing. The event loop drives the connections and the core decides for them.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::debug;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::core::LinkId;
use crate::inbound::{Inbound, Limits, MAX_REFUSING_CONNECTIONS};
use crate::outbound::Outbound;
use crate::request::IdMap;
use crate::timer::{self, TimerQueue};

/// Poll tokens below this are the loop's own (listener, signals); connection tokens are slab
/// keys shifted past them.
pub const FIRST_CONNECTION: usize = 2;

/// What became of an accepted beacon-node connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Kept.
    Accepted,
    /// Over `--max-connections`: kept only to be answered `503`.
    Refusing,
    /// Over `--max-connections` with enough held for `503` already: closed at once.
    Dropped,
}

/// A connection in the slab.
#[derive(Debug)]
pub enum Connection {
    /// From a beacon node; `armed` is the deadline its timer entry was set for.
    Inbound {
        /// The connection (boxed: it is several times larger than an upstream one).
        conn: Box<Inbound>,
        /// The deadline its timer entry was set for.
        armed: Option<Instant>,
        /// Its unsent answer bytes, as counted in the total.
        counted: usize,
    },
    /// To an upstream, known to the core as `link`.
    Outbound {
        /// The connection.
        conn: Outbound,
        /// Its id in the core.
        link: LinkId,
    },
}

/// Every open connection.
#[derive(Debug, Default)]
pub struct Connections {
    slab: Slab<Connection>,
    /// Slab keys of upstream connections, by the core's link id.
    links: IdMap<usize>,
    /// Beacon-node connection deadlines by (slab key, serial): O(log n) per change, where a scan
    /// of every connection per iteration would grow with idle connections.
    inbound_timers: TimerQueue<(usize, u64)>,
    inbound_count: usize,
    /// Connections over `--max-connections`, held only to be answered `503`.
    refusing_count: usize,
    /// Answer bytes all beacon-node connections owe, unsent: kept up to date connection by
    /// connection, so no iteration scans them all.
    unsent_total: usize,
    next_serial: u64,
    /// Connections to free at the end of the iteration.
    closed: Vec<usize>,
}

impl Connections {
    /// Answer bytes all beacon-node connections owe, unsent.
    pub fn unsent_total(&self) -> usize {
        self.unsent_total
    }

    /// Counts a beacon-node connection's unsent answer bytes again, after it changed.
    pub fn recount(&mut self, key: usize) {
        if let Some(Connection::Inbound { conn, counted, .. }) = self.slab.get_mut(key) {
            let now = conn.unsent_answer_bytes();
            self.unsent_total = self.unsent_total - *counted + now;
            *counted = now;
        }
    }

    /// Closes the connections owing the most unsent answer bytes until the rest owe at most
    /// `max`; returns each one's peer and debt, for the log. A scan, but only when over.
    pub fn shed(&mut self, max: usize) -> Vec<(SocketAddr, usize)> {
        if self.unsent_total <= max {
            return Vec::new();
        }
        let mut debtors: Vec<(usize, usize)> = self
            .slab
            .iter()
            .filter_map(|(key, c)| match c {
                Connection::Inbound { counted, .. } if *counted > 0 => Some((key, *counted)),
                _ => None,
            })
            .collect();
        debtors.sort_unstable_by_key(|&(key, bytes)| (std::cmp::Reverse(bytes), key));
        let mut total = self.unsent_total;
        let mut shed = Vec::new();
        for (key, bytes) in debtors {
            if total <= max {
                break;
            }
            if let Some(Connection::Inbound { conn, .. }) = self.slab.get_mut(key) {
                conn.shed();
                shed.push((conn.peer, bytes));
                self.closed.push(key);
                total -= bytes;
            }
        }
        shed
    }

    /// Every beacon-node connection's key, to service them all.
    pub fn inbound_keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.slab.iter().filter_map(|(key, c)| match c {
            Connection::Inbound { .. } => Some(key),
            Connection::Outbound { .. } => None,
        })
    }

    /// The connection under a slab key.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut Connection> {
        self.slab.get_mut(key)
    }

    /// The beacon-node connection under a slab key.
    pub fn inbound(&mut self, key: usize) -> Option<&mut Inbound> {
        match self.slab.get_mut(key) {
            Some(Connection::Inbound { conn, .. }) => Some(conn),
            _ => None,
        }
    }

    /// The upstream connection the core calls `link`, with its slab key, while it is open.
    pub fn outbound(&mut self, link: LinkId) -> Option<(usize, &mut Outbound)> {
        let key = *self.links.get(&link)?;
        match self.slab.get_mut(key) {
            Some(Connection::Outbound { conn, .. }) => Some((key, conn)),
            _ => None,
        }
    }

    /// Shutting down: no beacon-node connection reads a request after the one under way;
    /// returns their keys, to be serviced (those with nothing owed close).
    pub fn stop_reading(&mut self) -> Vec<usize> {
        let mut keys = Vec::new();
        for (key, connection) in self.slab.iter_mut() {
            if let Connection::Inbound { conn, .. } = connection {
                conn.stop_reading();
                keys.push(key);
            }
        }
        keys
    }

    /// Takes an accepted beacon-node connection: kept when under `max` connections; over it,
    /// kept only to be answered `503` (at most [`MAX_REFUSING_CONNECTIONS`]), else dropped.
    pub fn admit(
        &mut self,
        registry: &Registry,
        mut stream: TcpStream,
        peer: SocketAddr,
        limits: Limits,
        max: usize,
        now: Instant,
    ) -> io::Result<Admission> {
        let refusing = self.inbound_count >= max;
        if refusing && self.refusing_count >= MAX_REFUSING_CONNECTIONS {
            return Ok(Admission::Dropped);
        }
        let _ = stream.set_nodelay(true);
        let key = self.slab.vacant_key();
        register(registry, &mut stream, key)?;
        self.next_serial += 1;
        let serial = self.next_serial;
        let conn = match refusing {
            true => Inbound::refusing(stream, peer, serial, limits, now),
            false => Inbound::new(stream, peer, serial, limits, now),
        };
        let (conn, armed, counted) = (Box::new(conn), None, 0);
        self.slab.insert(Connection::Inbound {
            conn,
            armed,
            counted,
        });
        self.arm(key);
        match refusing {
            true => self.refusing_count += 1,
            false => self.inbound_count += 1,
        }
        Ok(match refusing {
            true => Admission::Refusing,
            false => Admission::Accepted,
        })
    }

    /// Records a readiness event on connection `key`; false when there is no such connection.
    pub fn on_event(&mut self, key: usize, event: &Event) -> bool {
        let hangup = event.is_read_closed() || event.is_error();
        let readable = event.is_readable() || hangup;
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        match self.slab.get_mut(key) {
            Some(Connection::Inbound { conn, .. }) => conn.on_event(readable, writable, hangup),
            Some(Connection::Outbound { conn, .. }) => conn.on_event(readable, writable, hangup),
            None => return false,
        }
        true
    }

    /// Opens, registers and keeps an upstream connection the core calls `link`.
    pub fn add_outbound(
        &mut self,
        registry: &Registry,
        link: LinkId,
        addr: SocketAddr,
        max_head_bytes: usize,
        max_body_bytes: usize,
    ) -> io::Result<()> {
        let key = self.slab.vacant_key();
        let mut conn = Outbound::connect(addr, max_head_bytes, max_body_bytes)?;
        register(registry, conn.stream_mut(), key)?;
        self.slab.insert(Connection::Outbound { conn, link });
        self.links.insert(link, key);
        Ok(())
    }

    /// Deregisters the upstream connection `link`, to be freed at the end of the iteration;
    /// it is no longer found by its link.
    pub fn close_outbound(&mut self, registry: &Registry, link: LinkId) {
        let Some(key) = self.links.remove(&link) else {
            return;
        };
        if let Some(Connection::Outbound { conn, .. }) = self.slab.get_mut(key) {
            let _ = registry.deregister(conn.stream_mut());
        }
        self.closed.push(key);
    }

    /// After a beacon-node connection was serviced: counts its unsent answers again, marks it
    /// to be freed if it finished, sets its timer; returns whether it has readiness left that
    /// no edge will announce (see [`Inbound::wants_service`]).
    pub fn after_service(&mut self, key: usize) -> bool {
        self.recount(key);
        let Some(Connection::Inbound { conn, .. }) = self.slab.get(key) else {
            return false;
        };
        let wants_service = conn.wants_service();
        if let Some(reason) = conn.finished() {
            debug!("connection from {} closed: {reason}", conn.peer);
            self.closed.push(key);
        }
        self.arm(key);
        wants_service
    }

    /// Sets a timer for a beacon-node connection's deadline, if it moved sooner.
    pub fn arm(&mut self, key: usize) {
        if let Some(Connection::Inbound { conn, armed, .. }) = self.slab.get_mut(key) {
            timer::arm(
                &mut self.inbound_timers,
                (key, conn.serial),
                armed,
                conn.deadline(),
            );
        }
    }

    /// Fires the beacon-node connection timers due at `now`; their keys go to `fired`.
    pub fn expire(&mut self, now: Instant, fired: &mut Vec<usize>) {
        while let Some((at, (key, serial))) = self.inbound_timers.pop_due(now) {
            // Entries of connections that moved their deadline or left their slot are stale.
            if let Some(Connection::Inbound { conn, armed, .. }) = self.slab.get_mut(key) {
                if conn.serial == serial && *armed == Some(at) {
                    *armed = None;
                    conn.on_timeout(now);
                    fired.push(key);
                }
            }
        }
    }

    /// The soonest beacon-node connection timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.inbound_timers.next()
    }

    /// Every beacon-node connection has been answered and reads no body.
    pub fn all_answered(&self) -> bool {
        self.slab.iter().all(|(_, c)| match c {
            Connection::Inbound { conn, .. } => {
                conn.pending_answers() == 0 && !conn.is_reading_body()
            }
            Connection::Outbound { .. } => true,
        })
    }

    /// Frees the connections closed during this iteration; returns how many beacon-node
    /// connections went.
    pub fn reap(&mut self, registry: &Registry) -> usize {
        let mut closed = std::mem::take(&mut self.closed);
        closed.sort_unstable();
        closed.dedup();
        let mut inbound = 0;
        for key in closed {
            let Some(Connection::Inbound {
                mut conn, counted, ..
            }) = self.slab.try_remove(key)
            else {
                continue;
            };
            let _ = registry.deregister(conn.stream_mut());
            self.unsent_total -= counted;
            match conn.is_refusing() {
                true => self.refusing_count -= 1,
                false => {
                    self.inbound_count -= 1;
                    inbound += 1;
                }
            }
        }
        inbound
    }
}

/// Registers a socket under its slab key's token, for both directions (edge-triggered).
fn register(
    registry: &Registry,
    source: &mut impl mio::event::Source,
    key: usize,
) -> io::Result<()> {
    let token = Token(key + FIRST_CONNECTION);
    registry.register(source, token, Interest::READABLE | Interest::WRITABLE)
}
