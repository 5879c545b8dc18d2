//! A JSON-RPC request once read from a beacon node, and its legs: the copies of it on their way
//! to each upstream.
//!
//! The body is held once (`Rc`) and shared by every leg, so fanning a 2 MB `newPayload` out to
//! eight execution clients costs eight pointers, not 16 MB. Legs carry no socket; an upstream
//! connection owns a leg while it is being sent and answered.

use std::rc::Rc;
use std::time::Instant;

use crate::engine::{Lane, Method};
use crate::rpc::Call;

/// The request body of a health probe of an execution client: cheap, read-only, served by
/// every execution client. (A chained proxy's probe has an empty body: `GET /health`.)
pub const PROBE_BODY: &[u8] =
    br#"{"jsonrpc":"2.0","id":"sync-proxy-probe","method":"eth_syncing","params":[]}"#;

/// Identifies an [`crate::exchange::Exchange`] waiting for legs' outcomes.
pub type ExchangeId = u64;

/// Hashes the proxy's own sequence numbers (exchange and link ids). They are never chosen by a
/// peer, so the identity is a perfect, DoS-safe hash.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// A map keyed by one of the proxy's own sequence numbers.
pub type IdMap<V> = std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// A request as read, with the facts the proxy routes on.
#[derive(Debug)]
pub struct Request {
    /// The body exactly as the beacon node sent it (a `Vec`, so a large one's buffer, spare
    /// capacity included, can be reused when the request is gone).
    pub body: Vec<u8>,
    /// What was read from the body; `None` for a batch, which is forwarded as one unit.
    pub call: Option<Call>,
    /// Method class (`Other` for batches).
    pub method: Method,
    /// The beacon node's `Authorization` header, passed to upstreams that have no secret.
    pub authorization: Option<Box<str>>,
    /// The beacon node's identity, passed on to chained proxies in `X-Forwarded-For`.
    pub beacon: Rc<str>,
    /// The `Via` trail of chained proxies this request already passed, if any.
    pub via: Option<Box<str>>,
    /// When the last byte of the request arrived.
    pub received_at: Instant,
    /// The proxy's number for this request: answers to one call are told apart by it.
    pub serial: u64,
}

/// A large body's buffer goes back to the pool for the next one (see [`net::body_buffer`]).
///
/// [`net::body_buffer`]: crate::net::body_buffer
impl Drop for Request {
    fn drop(&mut self) {
        crate::net::recycle_body(std::mem::take(&mut self.body));
    }
}

impl Request {
    /// The lane this request travels in at every upstream.
    pub fn lane(&self) -> Lane {
        self.method.lane()
    }

    /// A short human description for logs: method and id, or what a call-less request is.
    pub fn describe(&self) -> String {
        match &self.call {
            Some(call) => format!(
                "{} id={}",
                call.method_name,
                String::from_utf8_lossy(&call.id)
            ),
            // Only the proxy's own probes have no call and are not batches: a beacon node's
            // request is inspected, and one with this exact body would be a call.
            None if *self.body == *PROBE_BODY => "health probe eth_syncing".to_owned(),
            None if self.body.is_empty() => "health probe GET /health".to_owned(),
            None => "batch".to_owned(),
        }
    }
}

/// One request on its way to one upstream.
#[derive(Debug)]
pub struct Leg {
    /// The shared request.
    pub request: Rc<Request>,
    /// The exchange waiting for this leg's outcome, if anyone waits.
    pub exchange: Option<ExchangeId>,
    /// Sends attempted so far (a failure on a reused connection is retried once).
    pub attempts: u8,
    /// The outcome was already reported to the exchange (e.g. as "unavailable" while the
    /// upstream was down); later outcomes only update bookkeeping.
    pub reported: bool,
    /// A health probe of the proxy's own, not a beacon node's request.
    pub probe: bool,
    /// A catch-up replay of a request the upstream missed, sent ahead of newer ones.
    pub replay: bool,
    /// When it was last handed to a connection, to measure the upstream's latency.
    pub sent_at: Option<Instant>,
}

impl Leg {
    /// A new leg of `request`, reporting to `exchange`.
    pub fn new(request: Rc<Request>, exchange: Option<ExchangeId>) -> Leg {
        Leg {
            request,
            exchange,
            attempts: 0,
            reported: false,
            probe: false,
            replay: false,
            sent_at: None,
        }
    }

    /// Body bytes this leg keeps alive while queued.
    pub fn body_bytes(&self) -> usize {
        self.request.body.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &[u8]) -> Request {
        Request {
            body: body.into(),
            call: None,
            method: Method::Other,
            authorization: None,
            beacon: Rc::from("sync-proxy"),
            via: None,
            received_at: Instant::now(),
            serial: 0,
        }
    }

    #[test]
    fn call_less_requests_describe_what_they_are() {
        assert_eq!(request(PROBE_BODY).describe(), "health probe eth_syncing");
        assert_eq!(request(b"").describe(), "health probe GET /health");
        assert_eq!(request(br#"[{"jsonrpc":"2.0"}]"#).describe(), "batch");
    }
}
