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
