//! The soak chain's slots on the wall clock (what the proxy computes from timestamps) and on the
//! monotonic clock (what the soak sleeps on).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Slot times of a chain whose genesis was `genesis_time` (Unix seconds).
#[derive(Clone, Copy, Debug)]
pub struct SlotClock {
    genesis_time: u64,
    seconds_per_slot: u64,
    /// Genesis on the monotonic clock.
    genesis: Instant,
}

impl SlotClock {
    /// The clock of a chain that started `slots_ago` slots of `seconds_per_slot` before now
    /// (rounded down to a whole second, so slot starts are whole Unix seconds).
    pub fn new(slots_ago: u64, seconds_per_slot: u64) -> SlotClock {
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let genesis_time = unix.as_secs() - slots_ago * seconds_per_slot;
        let since_genesis = unix - Duration::from_secs(genesis_time);
        SlotClock {
            genesis_time,
            seconds_per_slot,
            genesis: now.checked_sub(since_genesis).unwrap_or(now),
        }
    }

    /// Genesis, in Unix seconds (`--genesis-time`).
    pub fn genesis_time(&self) -> u64 {
        self.genesis_time
    }

    /// The length of a slot.
    pub fn slot(&self) -> Duration {
        Duration::from_secs(self.seconds_per_slot)
    }

    /// When `slot` starts, on the monotonic clock.
    pub fn start(&self, slot: u64) -> Instant {
        self.genesis + Duration::from_secs(slot * self.seconds_per_slot)
    }

    /// When `slot` starts, in Unix seconds (a block's timestamp).
    pub fn timestamp(&self, slot: u64) -> u64 {
        self.genesis_time + slot * self.seconds_per_slot
    }

    /// The slot under way at `now`.
    pub fn current(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.genesis).as_secs() / self.seconds_per_slot
    }
}
