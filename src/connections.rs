//! The event loop's open sockets: beacon-node connections and upstream connections in one slab
//! (a slab key is a poll token), the upstream connections by the core's link id, the beacon-node
//! connections' HTTP timers, and the connections to free at the end of an iteration.
//!
//! Bookkeeping only: it registers and deregisters sockets, but reads, writes and decides
//! nothing. The event loop drives the connections and the core decides for them.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::core::LinkId;
use crate::inbound::{Inbound, Limits};
use crate::outbound::Outbound;
use crate::request::IdMap;
use crate::timer::{self, TimerQueue};

/// Poll tokens below this are the loop's own (listener, signals); connection tokens are slab
/// keys shifted past them.
pub const FIRST_CONNECTION: usize = 2;

/// A connection in the slab.
#[derive(Debug)]
pub enum Connection {
    /// From a beacon node; `armed` is the deadline its timer entry was set for.
    Inbound {
        /// The connection (boxed: it is several times larger than an upstream one).
        conn: Box<Inbound>,
        /// The deadline its timer entry was set for.
        armed: Option<Instant>,
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
    next_serial: u64,
    /// Connections to free at the end of the iteration.
    closed: Vec<usize>,
}

impl Connections {
    /// Beacon-node connections open.
    pub fn inbound_count(&self) -> usize {
        self.inbound_count
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

    /// Every connection, for a shutdown.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Connection)> {
        self.slab.iter_mut()
    }

    /// Registers and keeps an accepted beacon-node connection; returns its slab key.
    pub fn add_inbound(
        &mut self,
        registry: &Registry,
        mut stream: TcpStream,
        peer: SocketAddr,
        limits: Limits,
        now: Instant,
    ) -> io::Result<usize> {
        let key = self.slab.vacant_key();
        register(registry, &mut stream, key)?;
        self.next_serial += 1;
        let conn = Box::new(Inbound::new(stream, peer, self.next_serial, limits, now));
        self.slab.insert(Connection::Inbound { conn, armed: None });
        self.inbound_count += 1;
        self.arm(key);
        Ok(key)
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

    /// Marks a finished beacon-node connection to be freed at the end of the iteration.
    pub fn close_inbound(&mut self, key: usize) {
        self.closed.push(key);
    }

    /// Whether the upstream connection `link` is still open (not closed by the core).
    pub fn is_open(&self, link: LinkId) -> bool {
        self.links.contains_key(&link)
    }

    /// Sets a timer for a beacon-node connection's deadline, if it moved sooner.
    pub fn arm(&mut self, key: usize) {
        if let Some(Connection::Inbound { conn, armed }) = self.slab.get_mut(key) {
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
            if let Some(Connection::Inbound { conn, armed }) = self.slab.get_mut(key) {
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
            if let Some(Connection::Inbound { mut conn, .. }) = self.slab.try_remove(key) {
                let _ = registry.deregister(conn.stream_mut());
                inbound += 1;
            }
        }
        self.inbound_count -= inbound;
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
