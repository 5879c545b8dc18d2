//! Which beacon node (BN) to follow: per-BN progress (head slot) and liveness, and the
//! selection rules of the README ("Which beacon node is followed"), plus a bounded block-hash → slot memory so a fork-choice
//! head hash can count as a slot.
//!
//! Everything here is pure: the caller passes `now` and the wall-clock slot, and applies the
//! decisions (logging, metrics, forwarding). This module reads no clock, parses no JSON and does
//! not compute slots from timestamps (see `crate::network`).
//!
//! Decisions the README states, taken here:
//! - A BN's *rank* is its head slot; a BN without a slot yet (it only sent, say,
//!   `engine_exchangeCapabilities`) ranks below every BN with a slot. Such a BN can still become
//!   best when it is the only live one, and any live BN with a slot then overtakes it at once.
//! - Ties on the slot go to the BN first seen earliest (the longest-tracked one). This keeps
//!   the choice stable under any interleaving of requests and never favours a BN that has just
//!   appeared; it is deterministic because every tracked BN gets a unique arrival number.
//! - The lag rule switches only to a BN that is itself within `max_lag_slots` of the wall
//!   clock. Read literally ("another BN is nearer"), two BNs that both catch up after downtime
//!   would swap the lead on every block; this way the margin rule alone governs them.
//! - Every returned [`Switch`] counts, including the first choice and "no live BN left".
//! - A full table makes room for a newcomer only at the expense of a BN that could never be
//!   chosen over it: one that is no longer live, else a live one the newcomer outranks (a
//!   higher believed slot). The followed BN is never evicted. Without inbound JWT an identity is
//!   a claim (a path, an address), so a flood of new names must not push real BNs out; a
//!   newcomer that ranks no higher than every live BN is simply not tracked, and is counted.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Most BNs tracked at once. Deployments run 2–8 BNs, but without JWT a BN's identity is a
/// request path or an address any client can pick, so the table must not grow with them; 64
/// leaves room for large fleets and keeps the linear scans of `observe` well under 1 µs.
pub const MAX_BEACONS: usize = 64;

// Eviction spares the best, so a full table must hold at least one other BN.
const _: () = assert!(MAX_BEACONS > 1);

/// Most block hashes remembered by [`BlockSlots`]. A fork-choice head names a block from the
/// last few slots (reorgs on mainnet are one or two blocks deep); 128 blocks, four epochs,
/// cover that with a wide margin, and a head older than that is too stale to be worth a slot.
pub const MAX_BLOCKS: usize = 128;

/// Recent switches kept for `/status` and `/ui`: enough to see a flapping selection (several
/// switches a minute) at a glance; the total is counted separately.
pub const MAX_RECENT_SWITCHES: usize = 16;

/// Default `--beacon-timeout`: one slot, since a healthy BN sends at least a fork-choice update
/// per slot.
pub const DEFAULT_BEACON_TIMEOUT: Duration = Duration::from_secs(12);

/// Default `--switch-margin`: two BNs racing to import the same block are routinely one slot
/// apart for a moment; following such noise would switch back and forth every slot.
pub const DEFAULT_SWITCH_MARGIN_SLOTS: u64 = 1;

/// Default `--max-lag`: a healthy BN is at most one slot behind the wall clock (until the
/// slot's block arrives), and a run of empty slots leaves every BN equally behind, which this
/// rule ignores; a best four slots (48 s) behind while another BN is near the clock is stale.
pub const DEFAULT_MAX_LAG_SLOTS: u64 = 4;

/// The tunables of BN selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    /// A BN is live while its last request is younger than this.
    pub beacon_timeout: Duration,
    /// Another live BN must be ahead of the best by more than this to take over.
    pub switch_margin_slots: u64,
    /// A best this many slots behind the wall clock yields to a BN within this of it;
    /// `u64::MAX` disables the rule.
    pub max_lag_slots: u64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            beacon_timeout: DEFAULT_BEACON_TIMEOUT,
            switch_margin_slots: DEFAULT_SWITCH_MARGIN_SLOTS,
            max_lag_slots: DEFAULT_MAX_LAG_SLOTS,
        }
    }
}

/// What became of the slot a request claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotClaim {
    /// The request carried no slot.
    None,
    /// The slot was believed (the BN's head is now at least this slot).
    Accepted,
    /// The slot lies beyond the wall-clock slot + 1 and was not believed; the caller logs it.
    Ignored {
        /// The slot the request claimed.
        claimed: u64,
        /// The wall-clock slot at the time.
        wall_slot: u64,
    },
}

/// Why the followed BN changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchReason {
    /// No BN was followed and one became live.
    FirstLive,
    /// The followed BN sent nothing for the beacon timeout.
    NotLive,
    /// Another live BN got ahead by more than the switch margin.
    Overtaken,
    /// The followed BN lags the wall clock by more than the maximum lag and another does not.
    Lagging,
}

impl fmt::Display for SwitchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SwitchReason::FirstLive => "first live beacon node",
            SwitchReason::NotLive => "best beacon node no longer live",
            SwitchReason::Overtaken => "overtaken by more than the switch margin",
            SwitchReason::Lagging => "best lags the wall clock",
        })
    }
}

/// A change of the followed BN: old and new id with their head slots, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    /// The BN followed before, with its head slot; `None` when none was.
    pub from: Option<(Box<str>, Option<u64>)>,
    /// The BN followed now, with its head slot; `None` when no live BN is left.
    pub to: Option<(Box<str>, Option<u64>)>,
    /// Why the switch happened.
    pub reason: SwitchReason,
}

impl fmt::Display for Switch {
    /// One log line's worth: `bn-1 (slot 10) -> bn-2 (slot 13): overtaken by …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_end(f, self.from.as_ref())?;
        f.write_str(" -> ")?;
        write_end(f, self.to.as_ref())?;
        write!(f, ": {}", self.reason)
    }
}

/// A switch as remembered for operators: when it happened and at which wall-clock slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentSwitch {
    /// When the switch happened.
    pub at: Instant,
    /// The wall-clock slot at the time.
    pub wall_slot: u64,
    /// The switch itself.
    pub switch: Switch,
}

/// One tracked BN as shown by `/status` and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeaconView<'a> {
    /// The BN's identity.
    pub id: &'a str,
    /// The BN's head slot: the highest believed slot seen from it.
    pub slot: Option<u64>,
    /// When its last request arrived.
    pub last_seen: Instant,
    /// How many requests it sent (saturating).
    pub requests: u64,
    /// Whether it is the BN followed.
    pub is_best: bool,
    beacon_timeout: Duration,
}

impl BeaconView<'_> {
    /// Whether the BN counts as live at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        is_live(self.last_seen, now, self.beacon_timeout)
    }
}

/// The tracked BNs and the one followed.
#[derive(Clone, Debug)]
pub struct BeaconTracker {
    config: TrackerConfig,
    beacons: Vec<Beacon>,
    /// Index into `beacons` of the followed BN.
    best: Option<usize>,
    /// Arrival number for the next new BN; orders ties.
    next_arrival: u64,
    switches: u64,
    /// Requests from BNs left untracked because the table was full of BNs ranking as high.
    untracked: u64,
    /// The last [`MAX_RECENT_SWITCHES`] switches, oldest first.
    recent: VecDeque<RecentSwitch>,
}

impl BeaconTracker {
    /// An empty tracker following no BN.
    pub fn new(config: TrackerConfig) -> Self {
        BeaconTracker {
            config,
            beacons: Vec::new(),
            best: None,
            next_arrival: 0,
            switches: 0,
            untracked: 0,
            recent: VecDeque::with_capacity(MAX_RECENT_SWITCHES),
        }
    }

    /// A request from `beacon` arrived at `now`, possibly claiming `slot`. Updates liveness and
    /// progress and re-evaluates the selection.
    pub fn observe(
        &mut self,
        beacon: &str,
        slot: Option<u64>,
        now: Instant,
        wall_slot: u64,
    ) -> (SlotClaim, Option<Switch>) {
        let claim = match slot {
            None => SlotClaim::None,
            // The +1 tolerates a BN whose clock runs slightly ahead of ours.
            Some(claimed) if claimed > wall_slot.saturating_add(1) => {
                SlotClaim::Ignored { claimed, wall_slot }
            }
            Some(_) => SlotClaim::Accepted,
        };
        let believed = match claim {
            SlotClaim::Accepted => slot,
            SlotClaim::None | SlotClaim::Ignored { .. } => None,
        };
        let index = match self.beacons.iter().position(|b| &*b.id == beacon) {
            Some(index) => Some(index),
            None => self.track(beacon, believed, now),
        };
        if index.is_none() {
            self.untracked = self.untracked.saturating_add(1);
        }
        if let Some(entry) = index.and_then(|index| self.beacons.get_mut(index)) {
            // A request with a disbelieved slot still proves the BN is alive.
            entry.last_seen = entry.last_seen.max(now);
            entry.requests = entry.requests.saturating_add(1);
            // `None < Some(_)`, so this keeps the highest slot ever believed.
            entry.slot = entry.slot.max(believed);
        }
        (claim, self.reselect(now, wall_slot))
    }

    /// Time passed: applies liveness expiry and the lag rule as of `now`.
    pub fn on_timeout(&mut self, now: Instant, wall_slot: u64) -> Option<Switch> {
        self.reselect(now, wall_slot)
    }

    /// When the best BN expires: the next instant at which `on_timeout` could change anything
    /// without a request arriving (other than the lag rule, which needs a new wall-clock slot).
    pub fn deadline(&self) -> Option<Instant> {
        let best = self.beacons.get(self.best?)?;
        best.last_seen.checked_add(self.config.beacon_timeout)
    }

    /// The id of the BN followed, if any.
    pub fn best(&self) -> Option<&str> {
        self.best_entry().map(|b| &*b.id)
    }

    /// Whether `beacon` is the BN followed.
    pub fn is_best(&self, beacon: &str) -> bool {
        self.best_entry().is_some_and(|b| &*b.id == beacon)
    }

    /// Every tracked BN, in no particular order.
    pub fn beacons(&self) -> impl Iterator<Item = BeaconView<'_>> {
        self.beacons
            .iter()
            .enumerate()
            .map(move |(index, b)| BeaconView {
                id: &b.id,
                slot: b.slot,
                last_seen: b.last_seen,
                requests: b.requests,
                is_best: self.best == Some(index),
                beacon_timeout: self.config.beacon_timeout,
            })
    }

    /// How many switches happened, including the first choice and losing every BN.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// How many requests came from BNs left untracked because the table was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// The last [`MAX_RECENT_SWITCHES`] switches, newest first.
    pub fn recent_switches(&self) -> impl Iterator<Item = &RecentSwitch> {
        self.recent.iter().rev()
    }

    /// The configuration in force.
    pub fn config(&self) -> TrackerConfig {
        self.config
    }

    fn best_entry(&self) -> Option<&Beacon> {
        self.beacons.get(self.best?)
    }

    /// Adds a BN seen for the first time, with the slot its first request proved, and returns
    /// its index. When the table is full it replaces the BN least worth keeping other than the
    /// best (one no longer live, the stalest first; else the live one with the lowest slot),
    /// and only if the newcomer outranks it; otherwise the newcomer is not tracked (`None`).
    fn track(&mut self, beacon: &str, slot: Option<u64>, now: Instant) -> Option<usize> {
        let entry = Beacon {
            id: beacon.into(),
            slot: None,
            last_seen: now,
            requests: 0,
            arrival: self.next_arrival,
        };
        if self.beacons.len() < MAX_BEACONS {
            self.next_arrival = self.next_arrival.wrapping_add(1);
            self.beacons.push(entry);
            return Some(self.beacons.len() - 1);
        }
        let (best, timeout) = (self.best, self.config.beacon_timeout);
        let (index, victim) = self
            .beacons
            .iter_mut()
            .enumerate()
            .filter(|(index, _)| best != Some(*index))
            .min_by_key(|(_, b)| {
                let live = is_live(b.last_seen, now, timeout);
                // Among live BNs the lowest slot goes first: it is the one selection would
                // pick last.
                (live, live.then_some(b.slot), b.last_seen, b.arrival)
            })?;
        // Ties keep the BN already tracked, as selection does.
        let outranked = !is_live(victim.last_seen, now, timeout) || slot > victim.slot;
        if !outranked {
            return None;
        }
        self.next_arrival = self.next_arrival.wrapping_add(1);
        *victim = entry;
        Some(index)
    }

    /// Applies the selection rules as of `now` and records the switch, if any.
    fn reselect(&mut self, now: Instant, wall_slot: u64) -> Option<Switch> {
        let switch = self.choose(now, wall_slot)?;
        if self.recent.len() == MAX_RECENT_SWITCHES {
            self.recent.pop_front();
        }
        self.recent.push_back(RecentSwitch {
            at: now,
            wall_slot,
            switch: switch.clone(),
        });
        Some(switch)
    }

    /// The selection rules: the switch they call for as of `now`, applied.
    fn choose(&mut self, now: Instant, wall_slot: u64) -> Option<Switch> {
        let timeout = self.config.beacon_timeout;
        let challenger = self.highest_live(now);
        let Some(best) = self.best_entry() else {
            return challenger.map(|c| self.switch_to(Some(c), SwitchReason::FirstLive));
        };
        if !is_live(best.last_seen, now, timeout) {
            return Some(self.switch_to(challenger, SwitchReason::NotLive));
        }
        let challenger_slot = self.beacons.get(challenger?)?.slot;
        let ahead = match (challenger_slot, best.slot) {
            (Some(c), Some(b)) => c.saturating_sub(b) > self.config.switch_margin_slots,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if ahead {
            return Some(self.switch_to(challenger, SwitchReason::Overtaken));
        }
        let max_lag = self.config.max_lag_slots;
        if lag(best.slot, wall_slot) > max_lag && lag(challenger_slot, wall_slot) <= max_lag {
            return Some(self.switch_to(challenger, SwitchReason::Lagging));
        }
        None
    }

    /// The live BN, other than the best, with the highest slot; ties go to the earliest arrival.
    fn highest_live(&self, now: Instant) -> Option<usize> {
        let timeout = self.config.beacon_timeout;
        self.beacons
            .iter()
            .enumerate()
            .filter(|&(index, b)| self.best != Some(index) && is_live(b.last_seen, now, timeout))
            .max_by_key(|(_, b)| (b.slot, std::cmp::Reverse(b.arrival)))
            .map(|(index, _)| index)
    }

    fn switch_to(&mut self, to: Option<usize>, reason: SwitchReason) -> Switch {
        let describe = |b: &Beacon| (b.id.clone(), b.slot);
        let switch = Switch {
            from: self.best_entry().map(describe),
            to: to.and_then(|index| self.beacons.get(index)).map(describe),
            reason,
        };
        self.best = to;
        self.switches = self.switches.saturating_add(1);
        switch
    }
}

/// Remembers the slot of recently seen `newPayload` blocks, so a fork-choice `headBlockHash`
/// naming one of them counts as that slot. Holds at most [`MAX_BLOCKS`]; the oldest insert goes
/// first.
#[derive(Clone, Debug, Default)]
pub struct BlockSlots {
    /// A ring: once full, `next` is the oldest entry and the one overwritten next.
    entries: Vec<([u8; 32], u64)>,
    next: usize,
}

impl BlockSlots {
    /// An empty memory.
    pub fn new() -> Self {
        BlockSlots {
            entries: Vec::with_capacity(MAX_BLOCKS),
            next: 0,
        }
    }

    /// Remembers that block `hash` is at `slot`; a known hash gets the new slot in place.
    pub fn insert(&mut self, hash: [u8; 32], slot: u64) {
        if let Some(entry) = self.entries.iter_mut().find(|(h, _)| *h == hash) {
            entry.1 = slot;
            return;
        }
        if self.entries.len() < MAX_BLOCKS {
            self.entries.push((hash, slot));
            return;
        }
        if let Some(oldest) = self.entries.get_mut(self.next) {
            *oldest = (hash, slot);
        }
        self.next = (self.next + 1) % MAX_BLOCKS;
    }

    /// The slot of block `hash`, if it is remembered.
    pub fn slot(&self, hash: &[u8; 32]) -> Option<u64> {
        self.entries
            .iter()
            .find(|(h, _)| h == hash)
            .map(|&(_, slot)| slot)
    }

    /// How many blocks are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no block is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Clone, Debug)]
struct Beacon {
    id: Box<str>,
    slot: Option<u64>,
    last_seen: Instant,
    requests: u64,
    /// Order in which BNs were first tracked; unique, so ties on the slot are broken
    /// deterministically.
    arrival: u64,
}

fn is_live(last_seen: Instant, now: Instant, timeout: Duration) -> bool {
    now.saturating_duration_since(last_seen) < timeout
}

/// Slots behind the wall clock; a BN without a slot is infinitely behind.
fn lag(slot: Option<u64>, wall_slot: u64) -> u64 {
    slot.map_or(u64::MAX, |s| wall_slot.saturating_sub(s))
}

fn write_end(f: &mut fmt::Formatter<'_>, end: Option<&(Box<str>, Option<u64>)>) -> fmt::Result {
    match end {
        None => f.write_str("none"),
        Some((id, Some(slot))) => write!(f, "{id} (slot {slot})"),
        Some((id, None)) => write!(f, "{id} (no slot)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const WALL: u64 = 1000;

    fn tracker() -> BeaconTracker {
        BeaconTracker::new(TrackerConfig::default())
    }

    fn end(id: &str, slot: Option<u64>) -> Option<(Box<str>, Option<u64>)> {
        Some((id.into(), slot))
    }

    /// A tracker following "a" at `slot`, with "b" live at `other_slot`, both seen at `t0`.
    fn two_live(t0: Instant, slot: u64, other_slot: u64) -> BeaconTracker {
        let mut t = tracker();
        t.observe("a", Some(slot), t0, WALL);
        let (_, switch) = t.observe("b", Some(other_slot), t0, WALL);
        assert_eq!(switch, None, "setup must not switch");
        assert_eq!(t.best(), Some("a"));
        t
    }

    #[test]
    fn empty_first_observe_becomes_best() {
        let t0 = Instant::now();
        let mut t = tracker();
        assert_eq!(t.best(), None);
        let (claim, switch) = t.observe("bn-1", Some(WALL), t0, WALL);
        assert_eq!(claim, SlotClaim::Accepted);
        assert_eq!(
            switch,
            Some(Switch {
                from: None,
                to: end("bn-1", Some(WALL)),
                reason: SwitchReason::FirstLive,
            })
        );
        assert_eq!(t.best(), Some("bn-1"));
        assert!(t.is_best("bn-1"));
        assert!(!t.is_best("bn-2"));
        assert_eq!(t.switches(), 1);
    }

    #[test]
    fn recent_switches_keep_the_last_few_newest_first() {
        let t0 = Instant::now();
        let mut t = tracker();
        // Two beacon nodes overtaking each other, far more often than the ring holds.
        let rounds = MAX_RECENT_SWITCHES as u64 + 5;
        for round in 0..rounds {
            let id = if round % 2 == 0 { "a" } else { "b" };
            let at = t0 + SECOND * u32::try_from(round).unwrap();
            t.observe(id, Some(WALL - 100 + 3 * round), at, WALL + round);
        }
        assert_eq!(t.switches(), rounds);
        let recent: Vec<&RecentSwitch> = t.recent_switches().collect();
        assert_eq!(recent.len(), MAX_RECENT_SWITCHES);
        let newest = recent[0];
        assert_eq!(newest.wall_slot, WALL + rounds - 1);
        assert_eq!(newest.at, t0 + SECOND * u32::try_from(rounds - 1).unwrap());
        assert_eq!(newest.switch.reason, SwitchReason::Overtaken);
        assert!(recent.windows(2).all(|w| w[0].at > w[1].at), "newest first");
        assert_eq!(
            recent[MAX_RECENT_SWITCHES - 1].wall_slot,
            WALL + rounds - MAX_RECENT_SWITCHES as u64,
            "the oldest were let go"
        );
    }

    #[test]
    fn following_same_beacon_observe_stays() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.observe("a", Some(WALL - 1), t0, WALL);
        for i in 0..5 {
            let (claim, switch) = t.observe("a", Some(WALL + i), t0 + i as u32 * SECOND, WALL + i);
            assert_eq!(claim, SlotClaim::Accepted);
            assert_eq!(switch, None);
        }
        assert_eq!(t.best(), Some("a"));
        assert_eq!(t.switches(), 1);
        let view = t.beacons().next().expect("one beacon tracked");
        assert_eq!(view.requests, 6);
        assert_eq!(view.slot, Some(WALL + 4));
    }

    #[test]
    fn following_other_ahead_by_margin_does_not_switch() {
        let t0 = Instant::now();
        let mut t = two_live(t0, WALL - 3, WALL - 3);
        let (_, switch) = t.observe("b", Some(WALL - 2), t0, WALL);
        assert_eq!(switch, None);
        assert_eq!(t.best(), Some("a"));
    }

    #[test]
    fn following_other_ahead_by_margin_plus_one_switches_overtaken() {
        let t0 = Instant::now();
        let mut t = two_live(t0, WALL - 3, WALL - 2);
        let (_, switch) = t.observe("b", Some(WALL - 1), t0 + SECOND, WALL);
        assert_eq!(
            switch,
            Some(Switch {
                from: end("a", Some(WALL - 3)),
                to: end("b", Some(WALL - 1)),
                reason: SwitchReason::Overtaken,
            })
        );
        assert_eq!(t.best(), Some("b"));
        assert_eq!(t.switches(), 2);
    }

    #[test]
    fn following_wider_margin_ahead_within_margin_does_not_switch() {
        let t0 = Instant::now();
        let mut t = BeaconTracker::new(TrackerConfig {
            switch_margin_slots: 3,
            ..TrackerConfig::default()
        });
        t.observe("a", Some(WALL - 3), t0, WALL);
        assert_eq!(t.observe("b", Some(WALL), t0, WALL).1, None);
        let (_, switch) = t.observe("b", Some(WALL + 1), t0, WALL);
        assert_eq!(switch.map(|s| s.reason), Some(SwitchReason::Overtaken));
    }

    #[test]
    fn following_best_expires_switches_not_live_to_highest() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.observe("a", Some(WALL), t0, WALL);
        t.observe("b", Some(WALL - 2), t0 + SECOND, WALL);
        t.observe("c", Some(WALL - 1), t0 + SECOND, WALL);
        t.observe("d", None, t0 + SECOND, WALL);
        assert_eq!(t.best(), Some("a"));
        // Just before expiry nothing changes.
        let almost = t0 + DEFAULT_BEACON_TIMEOUT - Duration::from_nanos(1);
        assert_eq!(t.on_timeout(almost, WALL), None);
        let switch = t.on_timeout(t0 + DEFAULT_BEACON_TIMEOUT, WALL + 1);
        assert_eq!(
            switch,
            Some(Switch {
                from: end("a", Some(WALL)),
                to: end("c", Some(WALL - 1)),
                reason: SwitchReason::NotLive,
            })
        );
        assert_eq!(t.best(), Some("c"));
    }

    #[test]
    fn following_best_expires_observe_from_other_switches_not_live() {
        let t0 = Instant::now();
        let mut t = two_live(t0, WALL, WALL);
        // No on_timeout call in between: the next request still notices the expiry.
        let later = t0 + DEFAULT_BEACON_TIMEOUT + SECOND;
        let (_, switch) = t.observe("b", Some(WALL + 1), later, WALL + 1);
        assert_eq!(switch.map(|s| s.reason), Some(SwitchReason::NotLive));
        assert_eq!(t.best(), Some("b"));
    }

    #[test]
    fn following_best_expired_returns_before_timeout_call_stays() {
        let t0 = Instant::now();
        let mut t = two_live(t0, WALL, WALL);
        let later = t0 + DEFAULT_BEACON_TIMEOUT + SECOND;
        assert_eq!(t.observe("a", Some(WALL + 1), later, WALL + 1).1, None);
        assert_eq!(t.best(), Some("a"));
    }

    #[test]
    fn following_all_expire_switches_to_none() {
        let t0 = Instant::now();
        let mut t = two_live(t0, WALL, WALL);
        let switch = t.on_timeout(t0 + DEFAULT_BEACON_TIMEOUT, WALL + 1);
        assert_eq!(
            switch,
            Some(Switch {
                from: end("a", Some(WALL)),
                to: None,
                reason: SwitchReason::NotLive,
            })
        );
        assert_eq!(t.best(), None);
        assert_eq!(t.deadline(), None);
        // Nothing further to report while nobody is live.
        assert_eq!(
            t.on_timeout(t0 + 10 * DEFAULT_BEACON_TIMEOUT, WALL + 9),
            None
        );
        assert_eq!(t.switches(), 2);
    }

    #[test]
    fn none_live_beacon_returns_switches_first_live() {
        let t0 = Instant::now();
        let mut t = two_live(t0, WALL, WALL);
        t.on_timeout(t0 + DEFAULT_BEACON_TIMEOUT, WALL + 1);
        let back = t0 + 2 * DEFAULT_BEACON_TIMEOUT;
        let (_, switch) = t.observe("b", Some(WALL + 2), back, WALL + 2);
        assert_eq!(
            switch,
            Some(Switch {
                from: None,
                to: end("b", Some(WALL + 2)),
                reason: SwitchReason::FirstLive,
            })
        );
        assert_eq!(t.switches(), 3);
    }

    #[test]
    fn following_lagging_best_with_nearer_beacon_switches_lagging() {
        let t0 = Instant::now();
        // "a" is 5 slots behind (more than 4), "b" 4 behind: within the margin, but near.
        let mut t = two_live(t0, WALL - 5, WALL - 5);
        let (_, switch) = t.observe("b", Some(WALL - 4), t0, WALL);
        assert_eq!(
            switch,
            Some(Switch {
                from: end("a", Some(WALL - 5)),
                to: end("b", Some(WALL - 4)),
                reason: SwitchReason::Lagging,
            })
        );
    }

    #[test]
    fn following_best_within_max_lag_other_ahead_by_margin_stays() {
        let t0 = Instant::now();
        let mut t = two_live(t0, WALL - 4, WALL - 3);
        assert_eq!(t.on_timeout(t0, WALL), None);
        assert_eq!(t.best(), Some("a"));
    }

    #[test]
    fn following_lagging_best_without_nearer_beacon_stays() {
        let t0 = Instant::now();
        // Both far behind (catching up): only the margin rule applies, so no flapping.
        let mut t = two_live(t0, WALL - 100, WALL - 99);
        assert_eq!(t.on_timeout(t0, WALL), None);
        let (_, switch) = t.observe("a", Some(WALL - 98), t0, WALL);
        assert_eq!(switch, None);
        assert_eq!(t.best(), Some("a"));
    }

    #[test]
    fn following_lagging_best_only_beacon_stays() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.observe("a", Some(WALL - 50), t0, WALL);
        assert_eq!(t.on_timeout(t0 + SECOND, WALL), None);
        assert_eq!(t.best(), Some("a"));
    }

    #[test]
    fn following_wall_clock_advances_lag_rule_fires_on_timeout() {
        let t0 = Instant::now();
        let mut t = two_live(t0, WALL - 4, WALL - 3);
        assert_eq!(t.on_timeout(t0 + SECOND, WALL), None);
        let switch = t.on_timeout(t0 + 2 * SECOND, WALL + 1);
        assert_eq!(switch.map(|s| s.reason), Some(SwitchReason::Lagging));
    }

    #[test]
    fn lag_rule_disabled_lagging_best_stays() {
        let t0 = Instant::now();
        let mut t = BeaconTracker::new(TrackerConfig {
            max_lag_slots: u64::MAX,
            ..TrackerConfig::default()
        });
        t.observe("a", Some(0), t0, WALL);
        assert_eq!(t.observe("b", Some(1), t0, WALL).1, None);
        assert_eq!(t.best(), Some("a"));
    }

    #[test]
    fn any_slot_beyond_wall_plus_one_is_ignored() {
        let t0 = Instant::now();
        let mut t = tracker();
        let (claim, switch) = t.observe("a", Some(WALL + 2), t0, WALL);
        assert_eq!(
            claim,
            SlotClaim::Ignored {
                claimed: WALL + 2,
                wall_slot: WALL
            }
        );
        // The request still proves liveness: the BN becomes best, but without a slot.
        assert_eq!(switch.map(|s| s.to), Some(end("a", None)));
        let (claim, _) = t.observe("a", Some(u64::MAX), t0, WALL);
        assert!(matches!(claim, SlotClaim::Ignored { .. }));
        assert_eq!(t.beacons().next().map(|v| v.slot), Some(None));
    }

    #[test]
    fn any_slot_wall_plus_one_is_accepted() {
        let t0 = Instant::now();
        let mut t = tracker();
        let (claim, _) = t.observe("a", Some(WALL + 1), t0, WALL);
        assert_eq!(claim, SlotClaim::Accepted);
        assert_eq!(t.beacons().next().map(|v| v.slot), Some(Some(WALL + 1)));
    }

    #[test]
    fn wall_slot_max_claim_max_is_accepted() {
        let t0 = Instant::now();
        let mut t = tracker();
        let (claim, _) = t.observe("a", Some(u64::MAX), t0, u64::MAX);
        assert_eq!(claim, SlotClaim::Accepted);
    }

    #[test]
    fn tracked_lower_claim_keeps_highest_slot() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.observe("a", Some(WALL), t0, WALL);
        let (claim, _) = t.observe("a", Some(WALL - 10), t0, WALL);
        assert_eq!(claim, SlotClaim::Accepted);
        let (claim, _) = t.observe("a", None, t0, WALL);
        assert_eq!(claim, SlotClaim::None);
        assert_eq!(t.beacons().next().map(|v| v.slot), Some(Some(WALL)));
    }

    #[test]
    fn empty_slotless_first_becomes_best() {
        let t0 = Instant::now();
        let mut t = tracker();
        let (claim, switch) = t.observe("caps-only", None, t0, WALL);
        assert_eq!(claim, SlotClaim::None);
        assert_eq!(switch.map(|s| s.reason), Some(SwitchReason::FirstLive));
        assert_eq!(t.best(), Some("caps-only"));
    }

    #[test]
    fn following_slotless_best_any_slot_overtakes() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.observe("a", None, t0, WALL);
        assert_eq!(t.observe("b", None, t0, WALL).1, None);
        let (_, switch) = t.observe("b", Some(0), t0, WALL);
        assert_eq!(
            switch,
            Some(Switch {
                from: end("a", None),
                to: end("b", Some(0)),
                reason: SwitchReason::Overtaken,
            })
        );
    }

    #[test]
    fn following_best_with_slot_slotless_other_never_overtakes() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.observe("a", Some(0), t0, WALL);
        assert_eq!(t.observe("b", None, t0, WALL).1, None);
        assert_eq!(t.on_timeout(t0, WALL), None);
        assert_eq!(t.best(), Some("a"));
    }

    #[test]
    fn following_best_expires_slotless_ranks_below_any_slot() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.observe("a", Some(WALL), t0, WALL);
        t.observe("slotless", None, t0 + SECOND, WALL);
        t.observe("low", Some(1), t0 + SECOND, WALL);
        let switch = t.on_timeout(t0 + DEFAULT_BEACON_TIMEOUT, WALL);
        assert_eq!(switch.and_then(|s| s.to), end("low", Some(1)));
    }

    #[test]
    fn following_best_expires_tie_goes_to_earliest_seen() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.observe("a", Some(WALL), t0, WALL);
        t.observe("first", Some(WALL - 1), t0 + SECOND, WALL);
        t.observe("second", Some(WALL - 1), t0 + SECOND, WALL);
        // A later request from "second" does not make it win the tie.
        t.observe("second", Some(WALL - 1), t0 + 2 * SECOND, WALL);
        let switch = t.on_timeout(t0 + DEFAULT_BEACON_TIMEOUT, WALL);
        assert_eq!(switch.and_then(|s| s.to), end("first", Some(WALL - 1)));
    }

    /// The best (seen first) and `MAX_BEACONS - 1` others `bn-1`… seen a millisecond apart, all
    /// at `slot` except the best at `WALL`.
    fn full_table(t0: Instant, slot: Option<u64>) -> BeaconTracker {
        let mut t = tracker();
        t.observe("best", Some(WALL), t0, WALL);
        for i in 1..MAX_BEACONS {
            let now = t0 + Duration::from_millis(i as u64);
            t.observe(&format!("bn-{i}"), slot, now, WALL);
        }
        assert_eq!(t.beacons().count(), MAX_BEACONS);
        t
    }

    fn ids(t: &BeaconTracker) -> Vec<&str> {
        t.beacons().map(|v| v.id).collect()
    }

    #[test]
    fn full_table_expired_beacons_make_room_stalest_first() {
        let t0 = Instant::now();
        let mut t = full_table(t0, Some(WALL - 1));
        // The best is kept alive; the others expire.
        let later = t0 + DEFAULT_BEACON_TIMEOUT + SECOND;
        t.observe("best", Some(WALL), later, WALL);
        let (_, switch) = t.observe("newcomer", None, later, WALL);
        assert_eq!(switch, None);
        assert_eq!(t.beacons().count(), MAX_BEACONS);
        assert_eq!(t.best(), Some("best"));
        assert!(!ids(&t).contains(&"bn-1"), "the stalest expired BN goes");
        assert!(ids(&t).contains(&"bn-2") && ids(&t).contains(&"newcomer"));
        // The evicted BN comes back as a new entry, evicting the next stalest.
        t.observe("bn-1", None, later, WALL);
        assert!(ids(&t).contains(&"bn-1") && !ids(&t).contains(&"bn-2"));
        assert_eq!(t.untracked(), 0);
    }

    /// Issue 11, item 6: 5,000 new names in a burst (a flood of paths without JWT) must not
    /// evict the followed BN nor any live BN with a slot.
    #[test]
    fn full_table_flood_of_slotless_newcomers_evicts_no_live_beacon() {
        let t0 = Instant::now();
        let mut t = full_table(t0, Some(WALL - 1));
        let before = ids(&t).into_iter().map(str::to_owned).collect::<Vec<_>>();
        for i in 0..5000u64 {
            let now = t0 + SECOND + Duration::from_micros(i * 80);
            let (_, switch) = t.observe(&format!("flood-{i}"), None, now, WALL);
            assert_eq!(switch, None);
        }
        assert_eq!(ids(&t), before, "every live BN is still tracked");
        assert_eq!(t.best(), Some("best"));
        assert_eq!(t.untracked(), 5000);
        // Nor may newcomers that only tie a live BN's slot push it out.
        t.observe("tie", Some(WALL - 1), t0 + 2 * SECOND, WALL);
        assert_eq!(ids(&t), before);
        assert_eq!(t.untracked(), 5001);
    }

    #[test]
    fn full_table_newcomer_with_slot_evicts_the_stalest_slotless_beacon() {
        let t0 = Instant::now();
        let mut t = full_table(t0, None);
        t.observe("real", Some(WALL), t0 + SECOND, WALL);
        assert!(
            ids(&t).contains(&"real"),
            "a slot outranks live BNs without one"
        );
        assert!(!ids(&t).contains(&"bn-1"), "the stalest slotless BN went");
        assert_eq!(t.untracked(), 0);
    }

    #[test]
    fn full_table_newcomer_evicts_only_a_live_beacon_it_outranks() {
        let t0 = Instant::now();
        let mut t = full_table(t0, Some(WALL - 3));
        // bn-1 is the stalest but no longer the lowest; bn-2 is both among the rest.
        t.observe("bn-1", Some(WALL - 2), t0 + SECOND, WALL);
        t.observe("lower", Some(WALL - 4), t0 + SECOND, WALL);
        t.observe("equal", Some(WALL - 3), t0 + SECOND, WALL);
        assert!(!ids(&t).contains(&"lower"), "ranks below every live BN");
        assert!(
            !ids(&t).contains(&"equal"),
            "ties keep the BN tracked first"
        );
        assert_eq!(t.untracked(), 2);
        t.observe("higher", Some(WALL - 2), t0 + SECOND, WALL);
        assert!(ids(&t).contains(&"higher"));
        assert!(
            !ids(&t).contains(&"bn-2"),
            "the stalest of the lowest live BNs went"
        );
        assert!(ids(&t).contains(&"bn-1"));
        assert_eq!(t.best(), Some("best"));
    }

    #[test]
    fn full_table_repeated_newcomers_stay_bounded() {
        let t0 = Instant::now();
        let mut t = tracker();
        for i in 0..(3 * MAX_BEACONS) {
            t.observe(&format!("10.0.0.{i}"), Some(WALL), t0, WALL);
            assert!(t.beacons().count() <= MAX_BEACONS);
        }
        assert_eq!(t.best(), Some("10.0.0.0"));
        assert_eq!(t.beacons().filter(|v| v.is_best).count(), 1);
    }

    #[test]
    fn empty_deadline_is_none() {
        assert_eq!(tracker().deadline(), None);
    }

    #[test]
    fn following_deadline_is_best_last_seen_plus_timeout() {
        let t0 = Instant::now();
        let mut t = two_live(t0, WALL, WALL);
        assert_eq!(t.deadline(), Some(t0 + DEFAULT_BEACON_TIMEOUT));
        // Requests from other BNs do not move it; requests from the best do.
        t.observe("a", None, t0 + 2 * SECOND, WALL);
        assert_eq!(t.deadline(), Some(t0 + 2 * SECOND + DEFAULT_BEACON_TIMEOUT));
        t.observe("b", None, t0 + 5 * SECOND, WALL);
        assert_eq!(t.deadline(), Some(t0 + 2 * SECOND + DEFAULT_BEACON_TIMEOUT));
        // After the best expires the deadline follows the new best.
        let switch = t.on_timeout(t0 + 2 * SECOND + DEFAULT_BEACON_TIMEOUT, WALL);
        assert_eq!(switch.map(|s| s.reason), Some(SwitchReason::NotLive));
        assert_eq!(t.best(), Some("b"));
        assert_eq!(t.deadline(), Some(t0 + 5 * SECOND + DEFAULT_BEACON_TIMEOUT));
    }

    #[test]
    fn following_time_goes_backwards_last_seen_kept() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.observe("a", Some(WALL), t0 + SECOND, WALL);
        t.observe("a", Some(WALL), t0, WALL);
        assert_eq!(t.deadline(), Some(t0 + SECOND + DEFAULT_BEACON_TIMEOUT));
    }

    #[test]
    fn zero_timeout_nothing_is_live() {
        let t0 = Instant::now();
        let mut t = BeaconTracker::new(TrackerConfig {
            beacon_timeout: Duration::ZERO,
            ..TrackerConfig::default()
        });
        assert_eq!(t.observe("a", Some(WALL), t0, WALL).1, None);
        assert_eq!(t.best(), None);
    }

    #[test]
    fn views_report_liveness_and_best() {
        let t0 = Instant::now();
        let mut t = tracker();
        t.observe("a", Some(WALL), t0, WALL);
        t.observe("b", Some(WALL), t0 + 5 * SECOND, WALL);
        let at = t0 + DEFAULT_BEACON_TIMEOUT;
        let views: Vec<_> = t
            .beacons()
            .map(|v| (v.id, v.is_best, v.is_live(at)))
            .collect();
        assert_eq!(views, [("a", true, false), ("b", false, true)]);
    }

    #[test]
    fn switch_display_names_both_ends_and_reason() {
        let switch = Switch {
            from: end("bn-1", Some(10)),
            to: end("::1", None),
            reason: SwitchReason::Overtaken,
        };
        assert_eq!(
            switch.to_string(),
            "bn-1 (slot 10) -> ::1 (no slot): overtaken by more than the switch margin"
        );
        let switch = Switch {
            from: None,
            to: None,
            reason: SwitchReason::NotLive,
        };
        assert_eq!(
            switch.to_string(),
            "none -> none: best beacon node no longer live"
        );
    }

    fn hash(n: u64) -> [u8; 32] {
        let mut h = [0xab; 32];
        h[24..].copy_from_slice(&n.to_be_bytes());
        h
    }

    #[test]
    fn block_slots_inserted_hash_is_found() {
        let mut blocks = BlockSlots::new();
        assert!(blocks.is_empty());
        blocks.insert(hash(1), 100);
        blocks.insert(hash(2), 101);
        assert_eq!(blocks.slot(&hash(1)), Some(100));
        assert_eq!(blocks.slot(&hash(2)), Some(101));
        assert_eq!(blocks.slot(&hash(3)), None);
        assert_eq!(blocks.len(), 2);
    }

    #[test]
    fn block_slots_known_hash_insert_updates_in_place() {
        let mut blocks = BlockSlots::new();
        blocks.insert(hash(1), 100);
        blocks.insert(hash(1), 105);
        assert_eq!(blocks.slot(&hash(1)), Some(105));
        assert_eq!(blocks.len(), 1);
    }

    #[test]
    fn block_slots_full_insert_evicts_oldest() {
        let mut blocks = BlockSlots::new();
        let max = MAX_BLOCKS as u64;
        for n in 0..max {
            blocks.insert(hash(n), n);
        }
        assert_eq!(blocks.len(), MAX_BLOCKS);
        blocks.insert(hash(max), max);
        assert_eq!(blocks.len(), MAX_BLOCKS);
        assert_eq!(blocks.slot(&hash(0)), None);
        assert_eq!(blocks.slot(&hash(1)), Some(1));
        assert_eq!(blocks.slot(&hash(max)), Some(max));
        // Many more wrap the ring repeatedly; only the newest MAX_BLOCKS remain.
        for n in max + 1..5 * max + 3 {
            blocks.insert(hash(n), n);
        }
        assert_eq!(blocks.len(), MAX_BLOCKS);
        assert_eq!(blocks.slot(&hash(4 * max + 2)), None);
        assert_eq!(blocks.slot(&hash(4 * max + 3)), Some(4 * max + 3));
        assert_eq!(blocks.slot(&hash(5 * max + 2)), Some(5 * max + 2));
    }
}
