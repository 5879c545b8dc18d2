//! The soak's chain: one block per slot, each with a unique hash and the previous block as its
//! parent, of 100 KB to 2 MB, and the Engine API bodies beacon nodes send about it.
//!
//! Block bodies are built once per block and shared by the beacon nodes; only the JSON-RPC
//! envelope (the `id`) differs per request. Transactions are slices of a random hex pool made
//! once, so a block costs a copy, not a random-number generator run over megabytes.

use std::fmt::Write as _;
use std::sync::Arc;

use sync_proxy::sim::Rng;

/// Smallest block body: a block with a few hundred transactions.
pub const MIN_BLOCK_BYTES: usize = 100_000;
/// Largest block body: a full mainnet block is about this size.
pub const MAX_BLOCK_BYTES: usize = 2_000_000;
/// Hex digits per transaction: 500-byte transactions, a typical transfer or swap.
const TRANSACTION_HEX_BYTES: usize = 1_000;
/// Random hex to cut transactions from: one block's worth, so consecutive blocks differ.
const POOL_BYTES: usize = MAX_BLOCK_BYTES + TRANSACTION_HEX_BYTES;

/// One block of the chain.
#[derive(Debug)]
pub struct Block {
    /// Its slot; its timestamp is the slot's start.
    pub slot: u64,
    /// `0x` + 64 hex digits, unique in the run.
    pub hash: String,
    /// Bytes of its `newPayloadV3` params.
    pub bytes: usize,
    /// The `params` array of its `engine_newPayloadV3`.
    params: Vec<u8>,
}

impl Block {
    /// The `engine_newPayloadV3` request for this block under `id`.
    pub fn new_payload(&self, id: u64) -> Vec<u8> {
        envelope(id, "engine_newPayloadV3", &self.params)
    }
}

/// Makes the blocks, in order.
pub struct Chain {
    rng: Rng,
    /// Distinguishes this run's hashes from any other run's.
    run: u64,
    pool: Vec<u8>,
    head: String,
    number: u64,
}

impl Chain {
    /// A chain whose genesis block has a random hash.
    pub fn new(seed: u64) -> Chain {
        let mut rng = Rng::new(seed);
        let run = rng.next_u64();
        let mut pool = String::with_capacity(POOL_BYTES);
        while pool.len() < POOL_BYTES {
            let _ = write!(pool, "{:016x}", rng.next_u64());
        }
        Chain {
            run,
            pool: pool.into_bytes(),
            head: hash(run, 0),
            number: 0,
            rng,
        }
    }

    /// The hash every first block's parent is: execution clients know it from the start.
    pub fn genesis(&self) -> String {
        hash(self.run, 0)
    }

    /// The block of `slot`, starting at `timestamp`, a child of the last one made.
    pub fn next(&mut self, slot: u64, timestamp: u64) -> Arc<Block> {
        self.number += 1;
        let block_hash = hash(self.run, self.number);
        let target = MIN_BLOCK_BYTES + self.rng.index(MAX_BLOCK_BYTES - MIN_BLOCK_BYTES + 1);
        // The fields the proxy reads come first, as consensus clients serialise them.
        let mut params = format!(
            r#"[{{"blockHash":"{block_hash}","parentHash":"{parent}","blockNumber":"0x{number:x}","timestamp":"0x{timestamp:x}","feeRecipient":"0x{zero20}","stateRoot":"0x{zero32}","receiptsRoot":"0x{zero32}","logsBloom":"0x00","prevRandao":"0x{zero32}","gasLimit":"0x1c9c380","gasUsed":"0x0","extraData":"0x","baseFeePerGas":"0x7","blobGasUsed":"0x0","excessBlobGas":"0x0","withdrawals":[],"transactions":["#,
            parent = self.head,
            number = self.number,
            zero20 = "00".repeat(20),
            zero32 = "00".repeat(32),
        )
        .into_bytes();
        params.reserve(target + 128);
        let mut first = true;
        while params.len() < target {
            let at = self.rng.index(self.pool.len() - TRANSACTION_HEX_BYTES);
            if !first {
                params.push(b',');
            }
            first = false;
            params.extend_from_slice(b"\"0x");
            params.extend_from_slice(&self.pool[at..at + TRANSACTION_HEX_BYTES]);
            params.push(b'"');
        }
        // The payload ends; then no blob hashes and the parent beacon block root.
        params.extend_from_slice(format!(r#"]}},[],"0x{}"]"#, "00".repeat(32)).as_bytes());
        self.head = block_hash.clone();
        Arc::new(Block {
            slot,
            hash: block_hash,
            bytes: params.len(),
            params,
        })
    }

    /// `len` bytes of random hex, for answers that must be large.
    pub fn filler(&self, len: usize) -> &[u8] {
        &self.pool[..len.min(self.pool.len())]
    }
}

/// `engine_forkchoiceUpdatedV3` on `head`, with payload attributes for `timestamp` if given.
pub fn forkchoice(id: u64, head: &str, attributes: Option<u64>) -> Vec<u8> {
    let state = format!(
        r#"{{"headBlockHash":"{head}","safeBlockHash":"{head}","finalizedBlockHash":"{head}"}}"#
    );
    let attributes = match attributes {
        Some(timestamp) => format!(
            r#"{{"timestamp":"0x{timestamp:x}","prevRandao":"0x{}","suggestedFeeRecipient":"0x{}","withdrawals":[],"parentBeaconBlockRoot":"0x{}"}}"#,
            "00".repeat(32),
            "00".repeat(20),
            "00".repeat(32)
        ),
        None => "null".to_owned(),
    };
    let params = format!("[{state},{attributes}]");
    envelope(id, "engine_forkchoiceUpdatedV3", params.as_bytes())
}

/// `engine_getPayloadV3` for `payload_id` (`0x` + 16 hex digits).
pub fn get_payload(id: u64, payload_id: &str) -> Vec<u8> {
    envelope(
        id,
        "engine_getPayloadV3",
        format!(r#"["{payload_id}"]"#).as_bytes(),
    )
}

/// A JSON-RPC request with `params` (JSON) as given.
fn envelope(id: u64, method: &str, params: &[u8]) -> Vec<u8> {
    let mut body =
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":"#).into_bytes();
    body.reserve(params.len() + 1);
    body.extend_from_slice(params);
    body.push(b'}');
    body
}

/// The hash of block `number` of run `run`: unique per block and run.
fn hash(run: u64, number: u64) -> String {
    format!("0x{run:016x}{number:016x}{:032x}", 0xb10c_u128)
}
