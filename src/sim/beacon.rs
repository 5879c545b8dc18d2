//! Simulated beacon nodes: which consensus client each is (and so how long it waits for each
//! answer, ARCHITECTURE.md), what it has imported, and the requests it awaits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

/// The consensus client a simulated beacon node plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// Lighthouse: 8 s for payloads and fork choice, 2 s for `getPayload`, 1 s for capabilities.
    Lighthouse,
    /// Prysm: 8 s, 1 s for `getPayload`.
    Prysm,
    /// Teku: 8 s, 2 s for `getPayload`.
    Teku,
    /// Lodestar: 12 s.
    Lodestar,
    /// Nimbus: 8 s, 1.5 s for `getPayload`.
    Nimbus,
}

/// Every client, for picking one per beacon node.
pub const CLIENTS: [Client; 5] = [
    Client::Lighthouse,
    Client::Prysm,
    Client::Teku,
    Client::Lodestar,
    Client::Nimbus,
];

/// What a beacon node asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `engine_newPayloadV3` of a block.
    NewPayload([u8; 32]),
    /// `engine_forkchoiceUpdatedV3` to a head, with attributes for `slot` when proposing.
    ForkChoice([u8; 32], Option<u64>),
    /// `engine_getPayloadV3` for a proposal at `slot`.
    GetPayload([u8; 8], u64),
    /// `engine_exchangeCapabilities`.
    Capabilities,
}

impl Call {
    /// The JSON-RPC method.
    pub fn method(self) -> &'static str {
        match self {
            Call::NewPayload(_) => "engine_newPayloadV3",
            Call::ForkChoice(..) => "engine_forkchoiceUpdatedV3",
            Call::GetPayload(..) => "engine_getPayloadV3",
            Call::Capabilities => "engine_exchangeCapabilities",
        }
    }
}

impl Client {
    /// A short name for traces.
    pub fn name(self) -> &'static str {
        match self {
            Client::Lighthouse => "lighthouse",
            Client::Prysm => "prysm",
            Client::Teku => "teku",
            Client::Lodestar => "lodestar",
            Client::Nimbus => "nimbus",
        }
    }

    /// How long this client waits for the answer to `call` (ARCHITECTURE.md, "What consensus clients do with an answer").
    pub fn timeout(self, call: Call) -> Duration {
        let ms = match (self, call) {
            (Client::Lodestar, Call::NewPayload(_) | Call::ForkChoice(..)) => 12_000,
            (_, Call::NewPayload(_) | Call::ForkChoice(..)) => 8_000,
            (Client::Prysm, Call::GetPayload(..)) => 1_000,
            (Client::Nimbus, Call::GetPayload(..)) => 1_500,
            (Client::Lodestar, Call::GetPayload(..)) => 12_000,
            (_, Call::GetPayload(..)) => 2_000,
            (_, Call::Capabilities) => 1_000,
        };
        Duration::from_millis(ms)
    }
}

/// A request a beacon node awaits.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    /// What was asked.
    pub call: Call,
    /// When it was sent.
    pub sent: Duration,
    /// The proxy-side connection it went on.
    pub conn: usize,
}

/// One simulated beacon node.
#[derive(Debug)]
pub struct Beacon {
    /// Its identity, sent as the request path (`/bn-0`).
    pub name: String,
    /// The client it plays.
    pub client: Client,
    /// The head it imported last.
    pub head: [u8; 32],
    /// Blocks it has imported (a payload call answered without error).
    pub imported: HashSet<[u8; 32]>,
    /// Blocks waiting to be imported, oldest first; the first is under way when `importing`.
    pub imports: VecDeque<[u8; 32]>,
    /// A newPayload or fork choice of the import under way is awaited.
    pub importing: bool,
    /// Requests awaited, by JSON-RPC id.
    pub pending: HashMap<u64, Pending>,
    /// Sends nothing until then (a stall).
    pub stalled_until: Duration,
    /// Extra delay before importing a block (a lagging node).
    pub lag: Duration,
    /// Its proxy-side connections (slab keys of the simulator's beacon connections).
    pub conns: Vec<usize>,
}

impl Beacon {
    /// A beacon node at `genesis`.
    pub fn new(index: usize, client: Client, genesis: [u8; 32]) -> Beacon {
        Beacon {
            name: format!("bn-{index}"),
            client,
            head: genesis,
            imported: HashSet::from([genesis]),
            imports: VecDeque::new(),
            importing: false,
            pending: HashMap::new(),
            stalled_until: Duration::ZERO,
            lag: Duration::ZERO,
            conns: Vec::new(),
        }
    }

    /// Whether it has imported `hash`.
    pub fn has(&self, hash: &[u8; 32]) -> bool {
        self.imported.contains(hash)
    }

    /// Whether it is stalled at `now`.
    pub fn is_stalled(&self, now: Duration) -> bool {
        now < self.stalled_until
    }
}
