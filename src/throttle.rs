//! Attempt counters: a sliding window per key (a client IP or an email for
//! the console's sign-in and sign-up, a user for redemption failures), in
//! memory, bounded in size. On a node
//! of a cluster the window is also counted in Redis, shared by every node, so
//! spreading attempts over the nodes gains nothing; while Redis is down each
//! node's own window still applies.

use crate::cluster::{Cluster, WindowOp};
use crate::limits::MinuteWindow;
use lru::LruCache;
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Keys remembered at most; the least recently seen are forgotten first.
const CAPACITY: usize = 100_000;

pub struct Throttle {
    /// Names the shared window in Redis.
    name: &'static str,
    /// Attempts per window; a reload may change it.
    limit: AtomicU32,
    window_ms: i64,
    seen: Mutex<LruCache<String, MinuteWindow>>,
    cluster: once_cell::sync::OnceCell<Arc<Cluster>>,
}

impl Throttle {
    pub fn new(name: &'static str, limit: u32, window_ms: i64, cluster: Option<Arc<Cluster>>) -> Throttle {
        let t = Throttle {
            name,
            limit: AtomicU32::new(limit),
            window_ms,
            seen: Mutex::new(LruCache::new(NonZeroUsize::new(CAPACITY).expect("non-zero"))),
            cluster: once_cell::sync::OnceCell::new(),
        };
        if let Some(c) = cluster {
            t.join(c);
        }
        t
    }

    /// Counts in `cluster`'s shared window too from now on.
    pub fn join(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// `Err(seconds)` while `key` has used up its attempts, here or in the
    /// cluster.
    pub async fn check(&self, key: &str, now: i64) -> Result<(), u64> {
        self.check_here(key, now)?;
        match self.shared(key, WindowOp::Check).await {
            Some(Err(secs)) => Err(secs),
            _ => Ok(()),
        }
    }

    /// Counts one attempt against `key`.
    pub async fn hit(&self, key: &str, now: i64) {
        self.hit_here(key, now);
        self.shared(key, WindowOp::Hit).await;
    }

    /// Forgets `key` (a successful sign-in clears its account's failures).
    pub async fn reset(&self, key: &str) {
        self.seen.lock().pop(key);
        self.shared(key, WindowOp::Reset).await;
    }

    /// The cluster's window, when there is one and Redis answers.
    async fn shared(&self, key: &str, op: WindowOp) -> Option<Result<(), u64>> {
        let c = self.cluster.get()?;
        c.window(self.name, key, self.limit(), self.window_ms, op).await.ok()
    }

    fn check_here(&self, key: &str, now: i64) -> Result<(), u64> {
        let mut seen = self.seen.lock();
        let Some(w) = seen.get_mut(key) else { return Ok(()) };
        let (n, free_at) = w.count(now, self.window_ms);
        if n >= self.limit() as usize {
            return Err(((free_at - now + 999) / 1000).max(1) as u64);
        }
        Ok(())
    }

    fn hit_here(&self, key: &str, now: i64) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_within_the_window() {
        let t = Throttle::new("t", 3, 60_000, None);
        for i in 0..3 {
            assert!(t.check("ip", i).await.is_ok());
            t.hit("ip", i).await;
        }
        assert_eq!(t.check("ip", 10_000).await, Err(50));
        assert!(t.check("other", 10_000).await.is_ok());
        assert!(t.check("ip", 60_001).await.is_ok(), "the oldest attempt left the window");
        t.reset("ip").await;
        assert!(t.check("ip", 10).await.is_ok());
    }
}
