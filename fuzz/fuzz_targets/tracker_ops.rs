//! Drives the beacon tracker and the block-slot memory with an arbitrary sequence of requests,
//! fork-choice lookups and clock ticks on a fake, advancing clock, and checks after every step
//! that the selection is sound: the best is a live tracked BN or none (and none only when no BN
//! is live), no live BN is ahead of it by more than the margin, the lag rule is satisfied,
//! slots are never beyond the wall clock + 1, and both tables stay bounded. Eviction from a full
//! table is checked too: the best is never evicted, a live BN only by a newcomer with a higher
//! slot, and a newcomer is left untracked only when every other BN is live and ranks as high.
//!
//! It does not check log text or exact switch reasons; the unit tests pin those.

#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use sync_proxy::tracker::{
    BeaconTracker, BeaconView, BlockSlots, MAX_BEACONS, MAX_BLOCKS, SlotClaim, Switch,
    TrackerConfig,
};

const SECONDS_PER_SLOT: u64 = 12;

#[derive(Arbitrary, Debug)]
struct Input {
    beacon_timeout_ms: u16,
    switch_margin_slots: u8,
    /// 255 stands for "rule disabled" (`u64::MAX`).
    max_lag_slots: u8,
    start_wall_slot: u64,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Claim {
    None,
    /// The wall-clock slot minus this.
    Behind(u8),
    /// The wall-clock slot plus this (0 and 1 are believed, more is not).
    Ahead(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A request from BN `beacon` (an index into more names than `MAX_BEACONS`).
    Observe {
        beacon: u8,
        claim: Claim,
        advance_ms: u16,
    },
    /// A `newPayload`: remember a block's slot.
    Block { hash: u8, claim: Claim },
    /// A fork-choice update naming block `hash`: its slot, if known, is the claim.
    Head {
        beacon: u8,
        hash: u8,
        advance_ms: u16,
    },
    /// The event loop's timer fired.
    Tick { advance_ms: u16 },
    /// A long silence (up to about 18 hours).
    Sleep { advance_secs: u16 },
}

struct Run {
    tracker: BeaconTracker,
    blocks: BlockSlots,
    names: Vec<String>,
    t0: Instant,
    elapsed: Duration,
    start_wall_slot: u64,
    switches_seen: u64,
}

impl Run {
    fn now(&self) -> Instant {
        self.t0 + self.elapsed
    }

    fn wall_slot(&self) -> u64 {
        self.start_wall_slot
            .saturating_add(self.elapsed.as_secs() / SECONDS_PER_SLOT)
    }

    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
    }

    fn slot(&self, claim: &Claim) -> Option<u64> {
        let wall = self.wall_slot();
        match *claim {
            Claim::None => None,
            Claim::Behind(n) => Some(wall.saturating_sub(u64::from(n))),
            Claim::Ahead(n) => Some(wall.saturating_add(u64::from(n))),
            Claim::Raw(slot) => Some(slot),
        }
    }

    fn observe(&mut self, beacon: u8, slot: Option<u64>) {
        let (now, wall) = (self.now(), self.wall_slot());
        let id = self.names[usize::from(beacon)].clone();
        let before: Vec<Tracked> = self.tracker.beacons().map(|v| tracked(&v, now)).collect();
        let untracked_before = self.tracker.untracked();
        let (claim, switch) = self.tracker.observe(&id, slot, now, wall);
        let believed = match (claim, slot) {
            (SlotClaim::None, None) => None,
            (SlotClaim::Accepted, Some(s)) => {
                assert!(s <= wall.saturating_add(1));
                Some(s)
            }
            (SlotClaim::Ignored { claimed, wall_slot }, Some(s)) => {
                assert_eq!((claimed, wall_slot), (s, wall));
                assert!(s > wall.saturating_add(1));
                None
            }
            (claim, slot) => panic!("claim {claim:?} for slot {slot:?}"),
        };
        self.record(switch);
        self.check_eviction(&id, believed, &before, untracked_before);
    }

    /// A newcomer takes the place of a BN that could never be chosen over it, or stays out.
    fn check_eviction(
        &self,
        id: &str,
        believed: Option<u64>,
        before: &[Tracked],
        untracked_before: u64,
    ) {
        let after: Vec<&str> = self.tracker.beacons().map(|v| v.id).collect();
        let was_tracked = before.iter().any(|b| b.id == id);
        let Some(view) = self.tracker.beacons().find(|v| v.id == id) else {
            assert!(
                !was_tracked,
                "a tracked BN is never dropped by its own request"
            );
            assert_eq!(
                before.len(),
                MAX_BEACONS,
                "room was left, yet {id} is untracked"
            );
            assert_eq!(self.tracker.untracked(), untracked_before + 1);
            for b in before.iter().filter(|b| !b.best) {
                assert!(b.live, "{} is not live, yet was kept over {id}", b.id);
                assert!(
                    b.slot >= believed,
                    "{} ranks below {id}, yet was kept",
                    b.id
                );
            }
            return;
        };
        assert!(view.slot >= believed, "the head slot is the highest seen");
        assert_eq!(self.tracker.untracked(), untracked_before);
        let evicted: Vec<&Tracked> = before
            .iter()
            .filter(|b| !after.contains(&b.id.as_str()))
            .collect();
        assert!(
            evicted.len() <= usize::from(!was_tracked),
            "one BN at most makes room"
        );
        for b in evicted {
            assert!(!b.best, "the followed BN {} was evicted", b.id);
            assert!(
                !b.live || b.slot < believed,
                "live {} (slot {:?}) evicted by {id} (slot {believed:?})",
                b.id,
                b.slot
            );
        }
    }

    fn record(&mut self, switch: Option<Switch>) {
        let Some(switch) = switch else { return };
        self.switches_seen += 1;
        let to = switch.to.as_ref().map(|(id, _)| &**id);
        let from = switch.from.as_ref().map(|(id, _)| &**id);
        assert_eq!(to, self.tracker.best(), "a switch names the new best");
        assert_ne!(from, to, "a switch changes the best");
        assert!(!switch.to_string().is_empty());
    }

    /// The selection is settled as of `now`: nothing the rules would change is left.
    fn check(&self, config: &TrackerConfig) {
        let now = self.now();
        let wall = self.wall_slot();
        let views: Vec<_> = self.tracker.beacons().collect();
        assert!(views.len() <= MAX_BEACONS);
        assert!(self.blocks.len() <= MAX_BLOCKS);
        assert_eq!(self.tracker.switches(), self.switches_seen);
        for v in &views {
            assert!(v.slot.is_none_or(|s| s <= wall.saturating_add(1)));
            assert_eq!(v.is_best, self.tracker.is_best(v.id));
        }
        let mut bests = views.iter().filter(|v| v.is_best);
        let best = bests.next();
        assert!(bests.next().is_none(), "at most one best");
        assert_eq!(best.map(|v| v.id), self.tracker.best());
        let Some(best) = best else {
            assert!(
                !views.iter().any(|v| v.is_live(now)),
                "a live BN is followed"
            );
            assert_eq!(self.tracker.deadline(), None);
            return;
        };
        assert!(best.is_live(now), "the best is live");
        let deadline = best.last_seen.checked_add(config.beacon_timeout);
        assert_eq!(self.tracker.deadline(), deadline);
        assert!(deadline.is_none_or(|d| d > now));
        let lag = |slot: Option<u64>| slot.map_or(u64::MAX, |s| wall.saturating_sub(s));
        for v in views.iter().filter(|v| !v.is_best && v.is_live(now)) {
            let ahead = match (v.slot, best.slot) {
                (Some(c), Some(b)) => c.saturating_sub(b) > config.switch_margin_slots,
                (Some(_), None) => true,
                (None, _) => false,
            };
            assert!(!ahead, "{} is ahead of the best {}", v.id, best.id);
            let lagging = lag(best.slot) > config.max_lag_slots;
            assert!(!lagging || lag(v.slot) > config.max_lag_slots);
        }
    }
}

/// A tracked BN as it stood before an operation.
struct Tracked {
    id: String,
    live: bool,
    slot: Option<u64>,
    best: bool,
}

fn tracked(view: &BeaconView<'_>, now: Instant) -> Tracked {
    Tracked {
        id: view.id.to_owned(),
        live: view.is_live(now),
        slot: view.slot,
        best: view.is_best,
    }
}

fn hash(n: u8) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[31] = n;
    h
}

fn names() -> Vec<String> {
    // Path-style ids, IPv4 and IPv6 addresses, and ids that differ only in case or length.
    (0..=255u16)
        .map(|i| match i % 4 {
            0 => format!("bn-{i}"),
            1 => format!("10.1.2.{i}"),
            2 => format!("::{i:x}"),
            _ => "Bn".repeat(usize::from(i % 7)),
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let config = TrackerConfig {
        beacon_timeout: Duration::from_millis(u64::from(input.beacon_timeout_ms)),
        switch_margin_slots: u64::from(input.switch_margin_slots),
        max_lag_slots: match input.max_lag_slots {
            255 => u64::MAX,
            n => u64::from(n),
        },
    };
    let mut run = Run {
        tracker: BeaconTracker::new(config),
        blocks: BlockSlots::new(),
        names: names(),
        t0: Instant::now(),
        elapsed: Duration::ZERO,
        start_wall_slot: input.start_wall_slot,
        switches_seen: 0,
    };
    for op in input.ops.iter().take(4096) {
        match op {
            Op::Observe {
                beacon,
                claim,
                advance_ms,
            } => {
                run.advance(Duration::from_millis(u64::from(*advance_ms)));
                let slot = run.slot(claim);
                run.observe(*beacon, slot);
            }
            Op::Block { hash: n, claim } => {
                if let Some(slot) = run.slot(claim) {
                    run.blocks.insert(hash(*n), slot);
                    assert_eq!(run.blocks.slot(&hash(*n)), Some(slot));
                }
            }
            Op::Head {
                beacon,
                hash: n,
                advance_ms,
            } => {
                run.advance(Duration::from_millis(u64::from(*advance_ms)));
                let slot = run.blocks.slot(&hash(*n));
                run.observe(*beacon, slot);
            }
            Op::Tick { advance_ms } => {
                run.advance(Duration::from_millis(u64::from(*advance_ms)));
                let switch = run.tracker.on_timeout(run.now(), run.wall_slot());
                run.record(switch);
            }
            Op::Sleep { advance_secs } => {
                run.advance(Duration::from_secs(u64::from(*advance_secs)));
                let switch = run.tracker.on_timeout(run.now(), run.wall_slot());
                run.record(switch);
            }
        }
        run.check(&config);
    }
});
