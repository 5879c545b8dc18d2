//! A map that remembers only the most recent entries: bounded memory for facts about recent
//! blocks and payloads that a peer could otherwise make us hoard.
//!
//! Eviction is first-in first-out by insertion, which matches how these facts age (blocks and
//! payloads arrive in slot order); updating an existing key does not refresh it.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A bounded insertion-ordered map.
#[derive(Debug, Clone)]
pub struct RecentMap<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> RecentMap<K, V> {
    /// An empty map holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> RecentMap<K, V> {
        let capacity = capacity.max(1);
        RecentMap {
            map: HashMap::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Inserts or updates `key`, evicting the oldest entry when full.
    pub fn insert(&mut self, key: K, value: V) {
        if let Some(slot) = self.map.get_mut(&key) {
            *slot = value;
            return;
        }
        if self.map.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
    }

    /// The value for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let value = self.map.remove(key)?;
        if let Some(at) = self.order.iter().position(|k| k == key) {
            self.order.remove(at);
        }
        Some(value)
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_map_insert_evicts_oldest() {
        let mut map = RecentMap::new(2);
        map.insert(1, "a");
        map.insert(2, "b");
        map.insert(3, "c");
        assert_eq!(map.get(&1), None);
        assert_eq!(map.get(&3), Some(&"c"));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn existing_key_update_keeps_size() {
        let mut map = RecentMap::new(2);
        map.insert(1, "a");
        map.insert(1, "b");
        map.insert(2, "c");
        assert_eq!(map.get(&1), Some(&"b"));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn removed_key_frees_its_place() {
        let mut map = RecentMap::new(2);
        map.insert(1, "a");
        map.insert(2, "b");
        assert_eq!(map.remove(&1), Some("a"));
        map.insert(3, "c");
        assert_eq!(map.get(&2), Some(&"b"));
        assert_eq!(map.get(&3), Some(&"c"));
    }
}
