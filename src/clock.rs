//! The crate's one clock: `now_ms` is the only place that reads the system
//! time. Billing takes a `Clock` so its tests can drive time; the billing day
//! (daily quotas reset at 00:00 in the configured UTC offset) and the time
//! formats operators type live here too.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that only moves when told to.
#[cfg(test)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

#[cfg(test)]
impl ManualClock {
    pub fn new(ms: i64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(ms))
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Parses `YYYY-MM-DD` (midnight in the billing timezone), RFC 3339, or a
/// duration from now (`30d`, `12h`).
pub fn parse_time(s: &str, utc_offset_secs: i32) -> Result<i64, String> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let midnight = d.and_hms_opt(0, 0, 0).ok_or("invalid date")?.and_utc().timestamp_millis();
        return Ok(midnight - utc_offset_secs as i64 * 1000);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = humantime::parse_duration(s).map_err(|_| format!("{s:?} is not a date, time or duration"))?;
    Ok(now_ms() + d.as_millis() as i64)
}

const DAY_MS: i64 = 86_400_000;

/// Billing days in a fixed UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days {
    pub utc_offset_secs: i32,
}

impl Days {
    /// The day number containing `ms` (days since 1970-01-01 local).
    pub fn day_of(&self, ms: i64) -> i64 {
        (ms + self.utc_offset_secs as i64 * 1000).div_euclid(DAY_MS)
    }

    /// When the day containing `ms` began, in Unix milliseconds.
    pub fn start_of_day(&self, ms: i64) -> i64 {
        self.day_of(ms) * DAY_MS - self.utc_offset_secs as i64 * 1000
    }

    /// When the next day begins (the next quota reset), in Unix milliseconds.
    pub fn next_reset(&self, ms: i64) -> i64 {
        self.start_of_day(ms) + DAY_MS
    }

    /// Whole seconds until the next reset, at least 1.
    pub fn secs_to_reset(&self, ms: i64) -> u64 {
        ((self.next_reset(ms) - ms + 999) / 1000).max(1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_days() {
        let d = Days { utc_offset_secs: 0 };
        let t = 1_700_000_000_000; // 2023-11-14T22:13:20Z
        assert_eq!(d.start_of_day(t), 1_699_920_000_000);
        assert_eq!(d.next_reset(t), 1_700_006_400_000);
        assert_eq!(d.secs_to_reset(t), 6400);
        assert_eq!(d.day_of(d.next_reset(t)), d.day_of(t) + 1);
    }

    #[test]
    fn parse_times() {
        assert_eq!(parse_time("2023-11-15", 0), Ok(1_700_006_400_000));
        assert_eq!(parse_time("2023-11-15", 3600), Ok(1_700_002_800_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", 0), Ok(1_700_000_000_000));
        let soon = parse_time("1h", 0).unwrap() - crate::clock::now_ms();
        assert!((3_599_000..=3_600_000).contains(&soon));
        assert!(parse_time("tomorrow-ish", 0).is_err());
    }

    #[test]
    fn offset_days() {
        // +08:00: 2023-11-14T22:13:20Z is 06:13:20 on the 15th locally.
        let d = Days { utc_offset_secs: 8 * 3600 };
        let t = 1_700_000_000_000;
        assert_eq!(d.start_of_day(t), 1_699_977_600_000); // 2023-11-14T16:00Z
        assert_eq!(d.secs_to_reset(t), 64_000);
    }
}
