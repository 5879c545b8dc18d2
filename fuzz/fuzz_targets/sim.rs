//! Drives the deterministic simulator (`sync_proxy::sim`: the real core, HTTP and JSON code
//! against simulated beacon nodes and execution clients) from the fuzz input: the input picks the
//! seed and the mix (slots, beacon nodes, execution clients, which faults may strike, whether
//! beacon nodes misbehave and restarts lose blocks), and the simulator checks its named
//! invariants, answer rules included, after every step. A violation panics with the options and
//! the violation's report (its seed, the invariant, why it matters, the last events).
//!
//! Input layout (short inputs are padded with zeros): bytes 0–7 the seed (little-endian),
//! byte 8 the slots (4 + b % 13: 4–16), byte 9 the beacon nodes (1 + b % 4), byte 10 the
//! execution clients (1 + b % 3), byte 11 the faults: bits 0–5 allow `Down`, `Hung`, `Erroring`,
//! `Unavailable`, `Syncing`, `Slow`; bit 6 beacon-node faults; bit 7 restarts that lose blocks.
//! The rest is ignored.
//!
//! Replay a crash with `cargo +nightly fuzz run sim <file>`; the options printed make it a
//! `sim::run(seed, &options)` call for a unit test.

#![no_main]

use libfuzzer_sys::fuzz_target;

use sync_proxy::sim::{self, Fault, Options};

/// Fewest slots simulated: enough for a proposal, an import and a fork choice to settle.
const MIN_SLOTS: u64 = 4;
/// Slot counts above the fewest: short runs keep executions fast (the simulator's own tests
/// run 48 slots per seed; this target trades length for many seeds).
const SLOT_SPREAD: u64 = 13;
/// Faults the input's bits may allow, in bit order.
const FAULTS: [Fault; 6] = [
    Fault::Down,
    Fault::Hung,
    Fault::Erroring,
    Fault::Unavailable,
    Fault::Syncing,
    Fault::Slow,
];

fuzz_target!(|data: &[u8]| {
    let mut bytes = [0u8; 12];
    let used = data.len().min(bytes.len());
    bytes[..used].copy_from_slice(&data[..used]);
    let seed = u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"));
    let mask = bytes[11];
    let options = Options {
        slots: MIN_SLOTS + u64::from(bytes[8]) % SLOT_SPREAD,
        beacons: 1 + usize::from(bytes[9] % 4),
        executions: 1 + usize::from(bytes[10] % 3),
        faults: (FAULTS.iter().enumerate())
            .filter(|(bit, _)| mask & (1 << bit) != 0)
            .map(|(_, fault)| *fault)
            .collect(),
        beacon_faults: mask & 0x40 != 0,
        restarts_lose_blocks: mask & 0x80 != 0,
        answer_rules: true,
    };
    if let Err(violation) = sim::run(seed, &options) {
        panic!("{options:?}\n{violation}");
    }
});
