//! A channel's live condition: active-probe verdict, passive signals (auth
//! failures, rate-limit cool-downs, failure-window ejection), requests in
//! flight and recent errors. Atomics on the request path; small mutexes only
//! for the failure window and the error ring.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

/// How many recent errors a channel remembers for the admin view.
const RECENT_ERRORS: usize = 10;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorRecord {
    pub at_ms: i64,
    pub message: String,
}

/// Why a channel takes no traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The active health check ejected it.
    Unhealthy,
    /// Its own key was refused (401/403): until a probe passes or an operator
    /// re-enables it.
    AuthFailed,
    /// Upstream 429: until the reset time.
    CoolingDown,
    /// Too many connect errors, timeouts or 5xx within the failure window.
    Ejected,
    /// Disabled by an operator.
    Disabled,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::Unhealthy => "unhealthy",
            Unavailable::AuthFailed => "auth_failed",
            Unavailable::CoolingDown => "cooling_down",
            Unavailable::Ejected => "ejected",
            Unavailable::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Default)]
pub struct ChannelState {
    /// Verdict of the active health check (mirrored by Pingora's registry).
    probe_healthy: AtomicBool,
    probe_ok_streak: AtomicU32,
    probe_fail_streak: AtomicU32,
    last_probe_ms: AtomicI64,
    auth_failed: AtomicBool,
    operator_disabled: AtomicBool,
    cooldown_until_ms: AtomicI64,
    ejected_until_ms: AtomicI64,
    /// Consecutive ejections without a success in between (backoff exponent).
    ejections: AtomicU32,
    failures: Mutex<VecDeque<i64>>,
    inflight: AtomicU32,
    recent: Mutex<VecDeque<ErrorRecord>>,
}

/// A snapshot for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct StateView {
    pub healthy: bool,
    pub status: &'static str,
    pub auth_failed: bool,
    pub disabled: bool,
    pub cooldown_until_ms: Option<i64>,
    pub ejected_until_ms: Option<i64>,
    pub inflight: u32,
    pub recent_errors: Vec<ErrorRecord>,
    pub last_error: Option<String>,
}

impl ChannelState {
    pub fn new() -> ChannelState {
        ChannelState { probe_healthy: AtomicBool::new(true), ..Default::default() }
    }

    /// Whether the channel may take a request at `now_ms`, or why not.
    pub fn check(&self, now_ms: i64) -> Result<(), Unavailable> {
        if self.operator_disabled.load(Ordering::Relaxed) {
            Err(Unavailable::Disabled)
        } else if self.auth_failed.load(Ordering::Relaxed) {
            Err(Unavailable::AuthFailed)
        } else if !self.probe_healthy.load(Ordering::Relaxed) {
            Err(Unavailable::Unhealthy)
        } else if self.cooldown_until_ms.load(Ordering::Relaxed) > now_ms {
            Err(Unavailable::CoolingDown)
        } else if self.ejected_until_ms.load(Ordering::Relaxed) > now_ms {
            Err(Unavailable::Ejected)
        } else {
            Ok(())
        }
    }

    pub fn probe_healthy(&self) -> bool {
        self.probe_healthy.load(Ordering::Relaxed)
    }

    fn remember(&self, now_ms: i64, message: &str) {
        let mut r = self.recent.lock();
        if r.len() >= RECENT_ERRORS {
            r.pop_front();
        }
        r.push_back(ErrorRecord { at_ms: now_ms, message: message.chars().take(300).collect() });
    }

    /// A connect error, timeout or 5xx. Returns true when this one ejected the
    /// channel: `threshold` failures within `window`, or — right after an
    /// ejection ended, before any success (half-open) — a single failure.
    /// Repeated ejections double the time out, up to 32 times `eject_for`.
    pub fn record_failure(
        &self,
        now_ms: i64,
        message: &str,
        window: Duration,
        threshold: u32,
        eject_for: Duration,
    ) -> bool {
        self.remember(now_ms, message);
        let mut f = self.failures.lock();
        let horizon = now_ms - window.as_millis() as i64;
        while f.front().is_some_and(|&t| t <= horizon) {
            f.pop_front();
        }
        f.push_back(now_ms);
        let half_open = self.ejections.load(Ordering::Relaxed) > 0;
        let tripped = f.len() >= threshold as usize || half_open;
        if tripped && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms {
            f.clear();
            let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(5);
            let span = eject_for.as_millis() as i64 * (1 << n);
            self.ejected_until_ms.store(now_ms + span, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// A request the channel answered: ends the half-open state.
    pub fn record_success(&self) {
        if self.ejections.load(Ordering::Relaxed) > 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Upstream 429: no traffic until `until_ms`. Returns true when this
    /// started a cool-down (rather than extending one).
    pub fn cool_down(&self, now_ms: i64, until_ms: i64, message: &str) -> bool {
        self.remember(now_ms, message);
        let prev = self.cooldown_until_ms.fetch_max(until_ms, Ordering::Relaxed);
        prev <= now_ms
    }

    /// Upstream 401/403: the channel's key is bad. Returns true on the change.
    pub fn auth_failure(&self, now_ms: i64, message: &str) -> bool {
        self.remember(now_ms, message);
        !self.auth_failed.swap(true, Ordering::Relaxed)
    }

    /// Any other remembered error (not a health signal).
    pub fn note_error(&self, now_ms: i64, message: &str) {
        self.remember(now_ms, message);
    }

    /// Feeds one active probe result; returns the verdict after applying the
    /// consecutive thresholds (`failures` to eject, `successes` to restore).
    pub fn observe_probe(&self, now_ms: i64, ok: bool, failures: u32, successes: u32, message: &str) -> bool {
        self.last_probe_ms.store(now_ms, Ordering::Relaxed);
        if ok {
            self.probe_fail_streak.store(0, Ordering::Relaxed);
            let streak = self.probe_ok_streak.fetch_add(1, Ordering::Relaxed) + 1;
            if streak >= successes {
                self.probe_healthy.store(true, Ordering::Relaxed);
                // A passing probe proves the key works again.
                self.auth_failed.store(false, Ordering::Relaxed);
            }
        } else {
            self.remember(now_ms, message);
            self.probe_ok_streak.store(0, Ordering::Relaxed);
            let streak = self.probe_fail_streak.fetch_add(1, Ordering::Relaxed) + 1;
            if streak >= failures {
                self.probe_healthy.store(false, Ordering::Relaxed);
            }
        }
        self.probe_healthy()
    }

    pub fn last_probe_ms(&self) -> i64 {
        self.last_probe_ms.load(Ordering::Relaxed)
    }

    /// An operator's enable: clears every passive penalty.
    pub fn enable(&self) {
        self.operator_disabled.store(false, Ordering::Relaxed);
        self.auth_failed.store(false, Ordering::Relaxed);
        self.cooldown_until_ms.store(0, Ordering::Relaxed);
        self.ejected_until_ms.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
        self.failures.lock().clear();
    }

    pub fn disable(&self) {
        self.operator_disabled.store(true, Ordering::Relaxed);
    }

    pub fn begin(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end(&self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn view(&self, now_ms: i64) -> StateView {
        let recent: Vec<ErrorRecord> = self.recent.lock().iter().cloned().collect();
        let until = |a: &AtomicI64| Some(a.load(Ordering::Relaxed)).filter(|&t| t > now_ms);
        StateView {
            healthy: self.probe_healthy(),
            status: self.check(now_ms).map_or_else(Unavailable::as_str, |_| "available"),
            auth_failed: self.auth_failed.load(Ordering::Relaxed),
            disabled: self.operator_disabled.load(Ordering::Relaxed),
            cooldown_until_ms: until(&self.cooldown_until_ms),
            ejected_until_ms: until(&self.ejected_until_ms),
            inflight: self.inflight.load(Ordering::Relaxed),
            last_error: recent.last().map(|e| e.message.clone()),
            recent_errors: recent,
        }
    }
}

/// When an upstream 429 says the limit resets, in Unix ms: `retry-after`
/// (seconds or an HTTP date), else the reset of the exhausted OpenAI
/// (`x-ratelimit-reset-*`, durations like `6m0s`) or Anthropic
/// (`anthropic-ratelimit-*-reset`, RFC 3339) limit, else the latest reset
/// given. `None` when the response says nothing usable.
pub fn rate_limit_reset(headers: &http::HeaderMap, now_ms: i64) -> Option<i64> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(v) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(now_ms + v.ceil() as i64);
    }
    if let Some(v) = get("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            return Some(now_ms + (secs * 1000.0).ceil() as i64);
        }
        if let Ok(t) = httpdate_to_ms(v) {
            return Some(t);
        }
    }
    let mut exhausted = Vec::new();
    let mut all = Vec::new();
    for kind in ["requests", "tokens", "input-tokens", "output-tokens"] {
        let openai = get(&format!("x-ratelimit-reset-{kind}"))
            .and_then(|v| humantime::parse_duration(v).ok())
            .map(|d| now_ms + d.as_millis() as i64);
        let anthropic = get(&format!("anthropic-ratelimit-{kind}-reset"))
            .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.timestamp_millis());
        let remaining = get(&format!("x-ratelimit-remaining-{kind}"))
            .or_else(|| get(&format!("anthropic-ratelimit-{kind}-remaining")));
        for t in [openai, anthropic].into_iter().flatten() {
            all.push(t);
            if remaining == Some("0") {
                exhausted.push(t);
            }
        }
    }
    exhausted.into_iter().max().or_else(|| all.into_iter().max())
}

fn httpdate_to_ms(v: &str) -> Result<i64, ()> {
    chrono::DateTime::parse_from_rfc2822(v).map(|t| t.timestamp_millis()).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn reset_headers() {
        let now = 1_000_000;
        assert_eq!(rate_limit_reset(&headers(&[("retry-after", "7")]), now), Some(now + 7000));
        assert_eq!(rate_limit_reset(&headers(&[("retry-after-ms", "250")]), now), Some(now + 250));
        let openai = headers(&[
            ("x-ratelimit-remaining-requests", "10"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(rate_limit_reset(&openai, now), Some(now + 360_000));
        let anthropic = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "1970-01-01T00:16:50Z"),
        ]);
        assert_eq!(rate_limit_reset(&anthropic, now), Some(1_010_000));
        assert_eq!(rate_limit_reset(&headers(&[]), now), None);
        let date = headers(&[("retry-after", "Thu, 01 Jan 1970 00:16:45 GMT")]);
        assert_eq!(rate_limit_reset(&date, now), Some(1_005_000));
    }

    #[test]
    fn failure_window_ejects_at_threshold() {
        let s = ChannelState::new();
        let w = Duration::from_secs(10);
        assert!(!s.record_failure(0, "a", w, 3, Duration::from_secs(30)));
        assert!(!s.record_failure(1000, "b", w, 3, Duration::from_secs(30)));
        // Both earlier failures are out of the 10 s window by now.
        assert!(!s.record_failure(11_000, "c", w, 3, Duration::from_secs(30)));
        assert!(!s.record_failure(12_000, "c", w, 3, Duration::from_secs(30)));
        assert!(s.record_failure(13_000, "d", w, 3, Duration::from_secs(30)));
        assert_eq!(s.check(13_001), Err(Unavailable::Ejected));
        assert_eq!(s.check(43_001), Ok(()));
        // Half-open: one more failure ejects again, for twice as long.
        assert!(s.record_failure(50_000, "e", w, 3, Duration::from_secs(30)));
        assert_eq!(s.check(109_999), Err(Unavailable::Ejected));
        assert_eq!(s.check(110_000), Ok(()));
        s.record_success();
        assert!(!s.record_failure(120_000, "f", w, 3, Duration::from_secs(30)));
        assert_eq!(s.view(0).last_error.as_deref(), Some("f"));
    }

    #[test]
    fn probes_and_auth() {
        let s = ChannelState::new();
        assert!(s.auth_failure(0, "401"));
        assert_eq!(s.check(0), Err(Unavailable::AuthFailed));
        // Two failures needed to eject, one success to restore.
        assert!(s.observe_probe(0, false, 2, 1, "x"));
        assert!(!s.observe_probe(0, false, 2, 1, "x"));
        assert!(s.observe_probe(0, true, 2, 1, ""));
        assert_eq!(s.check(0), Ok(()), "a passing probe clears the auth failure");
        assert!(s.cool_down(0, 5000, "429"));
        assert_eq!(s.check(4999), Err(Unavailable::CoolingDown));
        assert_eq!(s.check(5000), Ok(()));
    }
}
