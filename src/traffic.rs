//! Requests per minute for the operator console's overview: a ring of the
//! last hour of per-minute counters, bumped with relaxed atomics once per
//! request in `logging` (no lock, no allocation, no SQLite).
//!
//! A slot is claimed for its minute by compare-and-swap; a request counted
//! in the few nanoseconds between a slot's claim and its reset can be lost.
//! These numbers are for a chart, not for billing.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

const SLOTS: usize = 60;

#[derive(Default)]
struct Slot {
    minute: AtomicI64,
    total: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
}

pub struct Traffic {
    slots: [Slot; SLOTS],
}

/// One minute's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Minute {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    pub total: u64,
    /// Answers 400-499 (refused: keys, credits, limits, bad input).
    pub client_errors: u64,
    /// Answers 500-599 (upstreams failing, no channel).
    pub server_errors: u64,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic { slots: std::array::from_fn(|_| Slot::default()) }
    }
}

impl Traffic {
    pub fn record(&self, now_ms: i64, status: u16) {
        let minute = now_ms.div_euclid(60_000);
        let slot = &self.slots[minute.rem_euclid(SLOTS as i64) as usize];
        let seen = slot.minute.load(Ordering::Relaxed);
        if seen != minute && slot.minute.compare_exchange(seen, minute, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            slot.total.store(0, Ordering::Relaxed);
            slot.client_errors.store(0, Ordering::Relaxed);
            slot.server_errors.store(0, Ordering::Relaxed);
        }
        slot.total.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => slot.client_errors.fetch_add(1, Ordering::Relaxed),
            500..=599 => slot.server_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// The last `n` minutes (at most an hour), oldest first, zeros included.
    pub fn last(&self, now_ms: i64, n: usize) -> Vec<Minute> {
        let now = now_ms.div_euclid(60_000);
        (0..n.min(SLOTS) as i64)
            .rev()
            .map(|back| {
                let minute = now - back;
                let s = &self.slots[minute.rem_euclid(SLOTS as i64) as usize];
                if s.minute.load(Ordering::Relaxed) == minute {
                    Minute {
                        minute,
                        total: s.total.load(Ordering::Relaxed),
                        client_errors: s.client_errors.load(Ordering::Relaxed),
                        server_errors: s.server_errors.load(Ordering::Relaxed),
                    }
                } else {
                    Minute { minute, total: 0, client_errors: 0, server_errors: 0 }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_minute_and_forgets_after_an_hour() {
        let t = Traffic::default();
        let m = 60_000;
        t.record(10 * m, 200);
        t.record(10 * m + 5, 402);
        t.record(11 * m, 503);
        let last = t.last(11 * m + 1, 3);
        assert_eq!(
            last.iter().map(|x| (x.minute, x.total, x.client_errors, x.server_errors)).collect::<Vec<_>>(),
            vec![(9, 0, 0, 0), (10, 2, 1, 0), (11, 1, 0, 1)]
        );
        // An hour later slot 10 is reused for minute 70.
        t.record(70 * m, 200);
        assert_eq!(t.last(70 * m, 1)[0].total, 1);
        assert_eq!(t.last(70 * m, 60).iter().map(|x| x.total).sum::<u64>(), 2, "minute 11 is still in the hour");
    }
}
