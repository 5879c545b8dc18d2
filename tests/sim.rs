//! The deterministic simulator over many seeds: the real core, HTTP and JSON code against
//! simulated beacon nodes and execution clients (see `src/sim`).
//!
//! `cargo test --test sim` runs a fixed set of seeds. Environment:
//! - `SYNC_PROXY_SIM_SEED=<n>` replays one seed (and prints its report);
//! - `SYNC_PROXY_SIM_SEEDS=<n>` runs seeds 0..n instead of the fixed set (a soak);
//! - `SYNC_PROXY_SIM_SLOTS=<n>` simulates n slots per seed.

use std::time::Instant;

use sync_proxy::sim::{self, Options};

/// Seeds `cargo test` runs: a few hundred, well under a minute on a 2-core machine.
const SEEDS: u64 = 200;
/// Slots per seed in `cargo test`.
const SLOTS: u64 = 48;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn simulated_seeds_hold_every_invariant() {
    let slots = env("SYNC_PROXY_SIM_SLOTS").unwrap_or(SLOTS);
    let seeds: Vec<u64> = match (env("SYNC_PROXY_SIM_SEED"), env("SYNC_PROXY_SIM_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(count)) => (0..count).collect(),
        (None, None) => (0..SEEDS).collect(),
    };
    let started = Instant::now();
    let mut total_slots = 0;
    let mut failures = Vec::new();
    for &seed in &seeds {
        let options = Options::for_seed(seed, slots);
        match sim::run(seed, &options) {
            Ok(report) => {
                total_slots += report.slots;
                if seeds.len() == 1 {
                    println!("{report:?}");
                }
            }
            Err(violation) => failures.push(violation),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} seeds, {total_slots} slots in {elapsed:.1} s: {:.0} slots/s",
        seeds.len(),
        total_slots as f64 / elapsed
    );
    let mut by_invariant = std::collections::BTreeMap::new();
    for violation in &failures {
        by_invariant
            .entry(violation.invariant)
            .or_insert_with(Vec::new)
            .push(violation.seed);
    }
    for (invariant, seeds) in &by_invariant {
        println!("{invariant}: seeds {seeds:?}");
    }
    if let Some(first) = failures.first() {
        panic!(
            "{} of {} seeds failed; the first:\n{first}",
            failures.len(),
            seeds.len()
        );
    }
}

/// Seeds that found defects, kept so each stays fixed (seed, slots to run, what it found).
const REGRESSIONS: [(u64, u64, &str); 9] = [
    (
        0,
        SLOTS,
        "an execution client's HTTP 503 body passed on without the request's id",
    ),
    (
        3,
        SLOTS,
        "a demoted execution client not caught up before its next engine call",
    ),
    (
        4,
        SLOTS,
        "a single reset mid-answer answered as an error though the call is idempotent",
    ),
    (
        62,
        SLOTS,
        "a catch-up replaying a payload already queued for the same execution client",
    ),
    (
        179,
        SLOTS,
        "an execution client noticed back only after its probe backoff",
    ),
    (
        572,
        SLOTS,
        "catch-up legs queued by a probe answer left waiting in the state lane",
    ),
    (
        785,
        SLOTS,
        "SYNCING judged against blocks learned after the request was sent",
    ),
    (875, SLOTS, "two resets in a row from one execution client"),
    (
        1340,
        500,
        "a read reset mid-answer took the only execution client down; the next fork choice \
         with attributes was answered unavailable (found at slot 273 by a 10^6-slot soak)",
    ),
];

#[test]
fn seeds_that_found_defects_stay_fixed() {
    for (seed, slots, found) in REGRESSIONS {
        let options = Options::for_seed(seed, slots);
        if let Err(violation) = sim::run(seed, &options) {
            panic!("regression seed {seed} ({found}):\n{violation}");
        }
    }
    // Found by the `sim` fuzz target: one execution client, one beacon node, no faults, and
    // the very first probe reset mid-answer marked the only execution client down.
    let options = Options {
        slots: 4,
        beacons: 1,
        executions: 1,
        faults: Vec::new(),
        beacon_faults: false,
        restarts_lose_blocks: false,
        answer_rules: true,
    };
    for seed in [
        3_377_700_173_576_180,
        556_198_265_369,
        7_289_442,
        2_478_233_944_681,
    ] {
        if let Err(violation) = sim::run(seed, &options) {
            panic!("fuzz regression seed {seed}:\n{violation}");
        }
    }
}
