//! Session affinity: requests of one conversation (same `prompt_cache_key`,
//! `metadata.user_id`, session header, …) go to the same channel while it stays
//! available, so the upstream's prompt cache stays warm. A bounded LRU table
//! with a time-to-live; entries of dead channels are simply overwritten.

use lru::LruCache;
use parking_lot::Mutex;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::time::Duration;

pub struct Affinity {
    ttl_ms: i64,
    table: Option<Mutex<LruCache<u64, (usize, i64)>>>,
}

impl Affinity {
    pub fn new(max_entries: usize, ttl: Duration) -> Affinity {
        Affinity {
            ttl_ms: ttl.as_millis() as i64,
            table: NonZeroUsize::new(max_entries).map(|n| Mutex::new(LruCache::new(n))),
        }
    }

    /// The key of a conversation: user, model and the first affinity value found.
    pub fn key(user_id: i64, model: &str, value: &str) -> u64 {
        let mut h = DefaultHasher::new();
        (user_id, model, value).hash(&mut h);
        h.finish()
    }

    /// The channel this conversation used, if recent.
    pub fn get(&self, key: u64, now_ms: i64) -> Option<usize> {
        let mut t = self.table.as_ref()?.lock();
        match t.get(&key) {
            Some(&(ch, expires)) if expires > now_ms => Some(ch),
            Some(_) => {
                t.pop(&key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: u64, channel: usize, now_ms: i64) {
        if let Some(t) = &self.table {
            t.lock().put(key, (channel, now_ms + self.ttl_ms));
        }
    }

    /// Takes over the conversations of `old` (a reloaded configuration's
    /// table) whose channel is still there, at its new position `moved`
    /// gives, keeping their age and order of use.
    pub fn adopt(&self, old: &Affinity, moved: impl Fn(usize) -> Option<usize>) {
        let (Some(to), Some(from)) = (&self.table, &old.table) else { return };
        let from = from.lock();
        let mut to = to.lock();
        for (key, &(channel, expires)) in from.iter().rev() {
            if let Some(channel) = moved(channel) {
                to.put(*key, (channel, expires));
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.as_ref().map_or(0, |t| t.lock().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_bound() {
        let a = Affinity::new(2, Duration::from_secs(10));
        let (k1, k2, k3) = (Affinity::key(1, "m", "a"), Affinity::key(1, "m", "b"), Affinity::key(2, "m", "a"));
        assert_ne!(k1, k3, "users do not share conversations");
        a.put(k1, 4, 0);
        assert_eq!(a.get(k1, 9_999), Some(4));
        assert_eq!(a.get(k1, 10_000), None);
        a.put(k1, 1, 0);
        a.put(k2, 2, 0);
        a.put(k3, 3, 0);
        assert_eq!(a.len(), 2);
        assert_eq!(a.get(k1, 1), None, "the least recently used entry went");
        assert!(Affinity::new(0, Duration::from_secs(1)).get(k1, 0).is_none());
    }

    #[test]
    fn a_reload_keeps_conversations_on_channels_that_stay() {
        let old = Affinity::new(10, Duration::from_secs(10));
        let (k1, k2, k3) = (Affinity::key(1, "m", "a"), Affinity::key(1, "m", "b"), Affinity::key(1, "m", "c"));
        old.put(k1, 0, 0);
        old.put(k2, 1, 0);
        old.put(k3, 2, 5_000);
        // Channel 0 was removed; 1 and 2 swapped places.
        let new = Affinity::new(2, Duration::from_secs(10));
        new.adopt(&old, |i| match i {
            1 => Some(2),
            2 => Some(1),
            _ => None,
        });
        assert_eq!(new.get(k1, 1), None);
        assert_eq!(new.get(k2, 1), Some(2));
        assert_eq!(new.get(k3, 14_999), Some(1), "the entry keeps its expiry");
        assert_eq!(new.get(k2, 10_000), None);
    }
}
