//! Attempt counters for the console's sign-in and sign-up: a sliding window
//! per key (a client IP, or an email), in memory, bounded in size.

use crate::limits::MinuteWindow;
use lru::LruCache;
use parking_lot::Mutex;
use std::num::NonZeroUsize;

/// Keys remembered at most; the least recently seen are forgotten first.
const CAPACITY: usize = 100_000;

pub struct Throttle {
    limit: usize,
    window_ms: i64,
    seen: Mutex<LruCache<String, MinuteWindow>>,
}

impl Throttle {
    pub fn new(limit: u32, window_ms: i64) -> Throttle {
        Throttle {
            limit: limit as usize,
            window_ms,
            seen: Mutex::new(LruCache::new(NonZeroUsize::new(CAPACITY).expect("non-zero"))),
        }
    }

    /// `Err(seconds)` while `key` has used up its attempts.
    pub fn check(&self, key: &str, now: i64) -> Result<(), u64> {
        let mut seen = self.seen.lock();
        let Some(w) = seen.get_mut(key) else { return Ok(()) };
        let (n, free_at) = w.count(now, self.window_ms);
        if n >= self.limit {
            return Err(((free_at - now + 999) / 1000).max(1) as u64);
        }
        Ok(())
    }

    /// Counts one attempt against `key`.
    pub fn hit(&self, key: &str, now: i64) {
        let mut seen = self.seen.lock();
        match seen.get_mut(key) {
            Some(w) => {
                w.record(now, self.window_ms);
            }
            None => {
                let mut w = MinuteWindow::default();
                w.record(now, self.window_ms);
                seen.put(key.to_string(), w);
            }
        }
    }

    /// Forgets `key` (a successful sign-in clears its account's failures).
    pub fn reset(&self, key: &str) {
        self.seen.lock().pop(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_within_the_window() {
        let t = Throttle::new(3, 60_000);
        for i in 0..3 {
            assert!(t.check("ip", i).is_ok());
            t.hit("ip", i);
        }
        assert_eq!(t.check("ip", 10_000), Err(50));
        assert!(t.check("other", 10_000).is_ok());
        assert!(t.check("ip", 60_001).is_ok(), "the oldest attempt left the window");
        t.reset("ip");
        assert!(t.check("ip", 10).is_ok());
    }
}
