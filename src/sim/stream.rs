//! An in-memory socket for the connection state machines: what the simulator and the unit tests
//! put between [`crate::inbound::Inbound`] / [`crate::outbound::Outbound`] and their peers.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use crate::outbound::Connecting;

/// `incoming` chunks come one per read (then `WouldBlock`, or end of stream once `closed`);
/// writes are collected, at most `window` bytes per call (0: unlimited). `refused` makes a
/// connect fail.
#[derive(Debug, Default)]
pub struct MemoryStream {
    /// Bytes the peer sent, not yet read.
    pub incoming: VecDeque<Vec<u8>>,
    /// The peer closed its side: reads return end of stream once `incoming` is empty.
    pub closed: bool,
    /// Everything written to the peer.
    pub written: Vec<u8>,
    /// Most bytes taken per write call; 0 means unlimited.
    pub window: usize,
    /// The connect fails with `ConnectionRefused`.
    pub refused: bool,
}

impl Read for MemoryStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(chunk) = self.incoming.front_mut() else {
            return if self.closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.incoming.pop_front();
        }
        Ok(n)
    }
}

impl Write for MemoryStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self.window {
            0 => buf.len(),
            window => buf.len().min(window),
        };
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Connecting for MemoryStream {
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(self
            .refused
            .then(|| io::Error::from(io::ErrorKind::ConnectionRefused)))
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 8551)))
    }

    fn set_nodelay(&self, _: bool) -> io::Result<()> {
        Ok(())
    }
}
