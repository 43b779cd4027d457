//! The engine's timers: at most one per key, each removable with what it times.
//!
//! A timer is armed for a key (an agent's lease, a sync point's deadline...) at a time; arming the
//! same key again moves it, and cancelling it forgets it at once. So the table holds one entry per
//! thing that is timed and nothing more: when a sync point or an agent is gone, so are its timers,
//! and memory returns to what it was before (a heap of timers that merely go stale keeps every id
//! for as long as its longest timer, up to a day).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use crate::io::Time;

/// Timers keyed by `K`, fired in time order (then key order, so that firing is deterministic).
#[derive(Debug)]
pub struct Timers<K> {
    queue: BTreeSet<(Time, K)>,
    at: HashMap<K, Time>,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers { queue: BTreeSet::new(), at: HashMap::new() }
    }
}

impl<K: Clone + Ord + Hash> Timers<K> {
    /// Arms `key` to fire at `at`, replacing its earlier time if it had one.
    pub fn set(&mut self, key: K, at: Time) {
        if let Some(old) = self.at.insert(key.clone(), at) {
            if old == at {
                return;
            }
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key));
    }

    /// Forgets `key`'s timer, if it has one.
    pub fn cancel(&mut self, key: &K) {
        if let Some(old) = self.at.remove(key) {
            self.queue.remove(&(old, key.clone()));
        }
    }

    /// When `key` fires, if it is armed.
    pub fn get(&self, key: &K) -> Option<Time> {
        self.at.get(key).copied()
    }

    /// The earliest time a timer fires.
    pub fn next_deadline(&self) -> Option<Time> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Takes the earliest timer due at `now` (firing it disarms it).
    pub fn pop_due(&mut self, now: Time) -> Option<K> {
        if self.next_deadline()? > now {
            return None;
        }
        let (_, key) = self.queue.pop_first()?;
        self.at.remove(&key);
        Some(key)
    }

    /// How many timers are armed.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_timer_per_key_fired_in_time_then_key_order() {
        let mut t = Timers::default();
        t.set("b", 10);
        t.set("a", 10);
        t.set("c", 5);
        t.set("c", 20);
        assert_eq!(t.len(), 3, "arming a key again moves it");
        assert_eq!(t.next_deadline(), Some(10));
        assert_eq!(t.pop_due(9), None);
        assert_eq!(t.pop_due(10), Some("a"));
        assert_eq!(t.pop_due(10), Some("b"));
        assert_eq!(t.pop_due(10), None);
        assert_eq!(t.get(&"c"), Some(20));
        assert_eq!(t.pop_due(u64::MAX), Some("c"));
        assert!(t.is_empty());
    }

    #[test]
    fn a_cancelled_timer_is_gone_at_once() {
        let mut t = Timers::default();
        for i in 0..1000u32 {
            t.set(i, u64::from(i) + 86_400_000);
        }
        for i in 0..1000u32 {
            t.cancel(&i);
        }
        t.cancel(&5);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
        assert!(t.queue.is_empty(), "nothing stays behind in the queue either");
    }
}
