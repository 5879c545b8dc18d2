//! Deadlines of many things in one heap, soonest first: O(log n) to set one and to take the
//! next due, however many connections or exchanges there are.
//!
//! Entries are never removed when their owner moves its deadline or goes away: the owner
//! remembers the deadline it armed, and an entry that no longer matches is skipped when it comes
//! up (lazy invalidation). That keeps changing a deadline O(log n) without a handle into the
//! heap. It does not know what its keys mean.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Deadlines keyed by `K`.
#[derive(Debug)]
pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord + Copy> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> TimerQueue<K> {
    /// Sets a deadline for `key`; earlier entries of the same key stay until skipped.
    pub fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The soonest entry's deadline, stale or not.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the soonest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let Reverse((at, key)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        Some((at, key))
    }

    /// Drops stale entries from the front, so [`TimerQueue::next`] is a live deadline.
    pub fn skip_stale(&mut self, is_live: impl Fn(Instant, K) -> bool) {
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if is_live(at, key) {
                return;
            }
            self.heap.pop();
        }
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

/// Arms `queue` for `key` at `deadline` when that is sooner than what `armed` says was set;
/// a later deadline is found when the earlier entry fires. Keeps one or two entries per owner
/// however often its deadline moves.
pub fn arm<K: Ord + Copy>(
    queue: &mut TimerQueue<K>,
    key: K,
    armed: &mut Option<Instant>,
    deadline: Option<Instant>,
) {
    let Some(deadline) = deadline else {
        return;
    };
    if armed.is_none_or(|at| deadline < at) {
        *armed = Some(deadline);
        queue.push(deadline, key);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn due_entries_come_soonest_first() {
        let t0 = Instant::now();
        let mut queue = TimerQueue::default();
        queue.push(t0 + Duration::from_secs(3), 3);
        queue.push(t0 + Duration::from_secs(1), 1);
        queue.push(t0 + Duration::from_secs(2), 2);
        assert_eq!(queue.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(queue.pop_due(t0), None);
        let due: Vec<u32> = std::iter::from_fn(|| queue.pop_due(t0 + Duration::from_secs(2)))
            .map(|(_, key)| key)
            .collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn arm_sets_only_sooner_deadlines() {
        let t0 = Instant::now();
        let mut queue = TimerQueue::default();
        let mut armed = None;
        arm(&mut queue, 7, &mut armed, Some(t0 + Duration::from_secs(5)));
        arm(&mut queue, 7, &mut armed, Some(t0 + Duration::from_secs(9)));
        assert_eq!(queue.len(), 1, "a later deadline waits for the armed one");
        arm(&mut queue, 7, &mut armed, Some(t0 + Duration::from_secs(1)));
        assert_eq!(queue.len(), 2);
        assert_eq!(armed, Some(t0 + Duration::from_secs(1)));
        arm(&mut queue, 7, &mut armed, None);
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn skip_stale_drops_dead_entries_from_the_front() {
        let t0 = Instant::now();
        let mut queue = TimerQueue::default();
        queue.push(t0, 1);
        queue.push(t0 + Duration::from_secs(1), 2);
        queue.skip_stale(|_, key| key != 1);
        assert_eq!(queue.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(queue.len(), 1);
    }
}
