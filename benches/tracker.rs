//! Cost of the beacon tracker on the request path: `observe` with a handful and with the
//! maximum number of beacon nodes, and `BlockSlots` lookups in a full memory.
//!
//! This measures only the pure bookkeeping; the proxy end to end is measured in `proxy.rs`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

use sync_proxy::tracker::{BeaconTracker, BlockSlots, MAX_BEACONS, MAX_BLOCKS, TrackerConfig};

/// An arbitrary mainnet-like wall-clock slot.
const WALL_SLOT: u64 = 11_000_000;

/// Round-robin requests from `count` live BNs that all follow the head: the steady state, in
/// which no switch happens.
fn bench_observe_steady(c: &mut Criterion, count: usize) {
    let ids: Vec<String> = (0..count).map(|i| format!("bn-{i}")).collect();
    let t0 = Instant::now();
    let mut tracker = BeaconTracker::new(TrackerConfig::default());
    for id in &ids {
        tracker.observe(id, Some(WALL_SLOT), t0, WALL_SLOT);
    }
    let mut request = 0u64;
    c.bench_function(&format!("observe_steady/{count}_beacons"), |b| {
        b.iter(|| {
            request += 1;
            let id = &ids[request as usize % count];
            // One request per microsecond of fake time: every BN stays live.
            let now = t0 + Duration::from_micros(request);
            let result = tracker.observe(black_box(id), Some(WALL_SLOT), now, WALL_SLOT);
            black_box(result)
        })
    });
}

/// Two BNs leapfrogging each other by more than the margin: every request switches, which
/// allocates the two ids of the `Switch`.
fn bench_observe_switching(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut tracker = BeaconTracker::new(TrackerConfig::default());
    let mut request = 0u64;
    c.bench_function("observe_switching/2_beacons", |b| {
        b.iter(|| {
            request += 1;
            let id = if request % 2 == 0 { "bn-0" } else { "bn-1" };
            let slot = 2 * request;
            let now = t0 + Duration::from_micros(request);
            let result = tracker.observe(black_box(id), Some(slot), now, slot);
            black_box(result)
        })
    });
    assert_eq!(tracker.switches(), request, "every request must switch");
}

fn bench_block_slots(c: &mut Criterion) {
    let hash = |n: u64| {
        let mut h = [0x5a; 32];
        h[..8].copy_from_slice(&n.to_le_bytes());
        h
    };
    let mut blocks = BlockSlots::new();
    for n in 0..MAX_BLOCKS as u64 {
        blocks.insert(hash(n), n);
    }
    // The newest block is the usual fork-choice head; in a ring it may sit anywhere, so the
    // worst case (last scanned) and a miss are measured.
    let last = hash(MAX_BLOCKS as u64 - 1);
    let missing = hash(u64::MAX);
    c.bench_function("block_slots/hit_last_of_full", |b| {
        b.iter(|| black_box(blocks.slot(black_box(&last))))
    });
    c.bench_function("block_slots/miss_full", |b| {
        b.iter(|| black_box(blocks.slot(black_box(&missing))))
    });
    let mut next = MAX_BLOCKS as u64;
    c.bench_function("block_slots/insert_full", |b| {
        b.iter(|| {
            next += 1;
            blocks.insert(black_box(hash(next)), next)
        })
    });
}

fn benches(c: &mut Criterion) {
    bench_observe_steady(c, 8);
    bench_observe_steady(c, MAX_BEACONS);
    bench_observe_switching(c);
    bench_block_slots(c);
}

criterion_group!(tracker, benches);
criterion_main!(tracker);
