//! Access rules and rate limits, as pure checks: which models a plan and a key
//! allow, and a sliding one-minute request window. The per-user counters they
//! act on live in `billing`.

use crate::accounts::KeyEntry;
use crate::config::PlanConfig;
use crate::error::GatewayError;
use std::collections::VecDeque;

/// `*` matches any run of characters (`claude-*`, `*-mini`, `*`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn any_match(patterns: &[String], model: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, model))
}

/// Whether a plan lets its users call `model`: not blocked, and allowed when the
/// plan has an allow list.
pub fn plan_allows(plan: &PlanConfig, model: &str) -> bool {
    (plan.allowed_models.is_empty() || any_match(&plan.allowed_models, model))
        && !any_match(&plan.blocked_models, model)
}

/// Step 2 of the decision order, for the model: the plan's rules, then the
/// key's allow list. The 403 names the model and says which rule refused it.
pub fn check_model(plan: Option<&PlanConfig>, key: &KeyEntry, model: &str) -> Result<(), GatewayError> {
    if let Some(p) = plan {
        if !plan_allows(p, model) {
            return Err(GatewayError::ModelNotAllowed { model: model.to_string(), reason: "on your plan" });
        }
    }
    if let Some(list) = &key.allowed_models {
        if !any_match(list, model) {
            return Err(GatewayError::ModelNotAllowed { model: model.to_string(), reason: "for this API key" });
        }
    }
    Ok(())
}

/// Whether a key and plan allow a model (for `/v1/models`).
pub fn model_visible(plan: Option<&PlanConfig>, key: &KeyEntry, model: &str) -> bool {
    check_model(plan, key, model).is_ok()
}

/// Request times of the last minute, for requests-per-minute limits.
#[derive(Debug, Default)]
pub struct MinuteWindow {
    times: VecDeque<i64>,
}

impl MinuteWindow {
    /// Whether a request at `now` fits under `limit` per minute; otherwise how
    /// many seconds until a slot frees up. Only admitted requests count: call
    /// `record` once the request is admitted.
    pub fn check(&mut self, now: i64, limit: u32) -> Result<(), u64> {
        let (n, free_at) = self.count(now, 60_000);
        if n >= limit as usize {
            return Err(((free_at - now + 999) / 1000).max(1) as u64);
        }
        Ok(())
    }

    /// Records an event without a limit (failure counters).
    pub fn record(&mut self, now: i64, window_ms: i64) -> usize {
        while self.times.front().is_some_and(|&t| t <= now - window_ms) {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len()
    }

    /// Events inside the window ending at `now`, and when the oldest leaves it.
    pub fn count(&mut self, now: i64, window_ms: i64) -> (usize, i64) {
        while self.times.front().is_some_and(|&t| t <= now - window_ms) {
            self.times.pop_front();
        }
        (self.times.len(), self.times.front().map_or(now, |&t| t + window_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("claude-*", "claude-opus-4-5"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*-mini", "gpt-4o-mini"));
        assert!(glob_match("gpt-*-codex*", "gpt-5.1-codex-mini"));
        assert!(!glob_match("gpt-*-codex", "gpt-5.1-codex-mini"));
        assert!(glob_match("gpt-5", "gpt-5"));
        assert!(!glob_match("gpt-5", "gpt-5-mini"));
        assert!(!glob_match("a*a", "a"));
    }

    fn plan(allowed: &[&str], blocked: &[&str]) -> PlanConfig {
        PlanConfig {
            id: "p".into(),
            name: "P".into(),
            daily_quota: 1,
            concurrency: None,
            requests_per_minute: None,
            allowed_models: allowed.iter().map(|s| s.to_string()).collect(),
            blocked_models: blocked.iter().map(|s| s.to_string()).collect(),
            duration_days: 1,
        }
    }

    #[test]
    fn plan_and_key_rules() {
        let key = KeyEntry {
            id: 1,
            user_id: 1,
            lookup: "x".into(),
            hash: crate::auth::KeyHash([0; 32]),
            name: String::new(),
            active: true,
            expires_at: None,
            allowed_models: Some(vec!["gpt-*".into()]),
        };
        let p = plan(&[], &["claude-opus-*"]);
        assert!(check_model(Some(&p), &key, "gpt-4o").is_ok());
        let e = check_model(Some(&p), &key, "claude-opus-4-5").unwrap_err();
        assert_eq!(e.to_string(), "Model 'claude-opus-4-5' is not allowed on your plan");
        let e = check_model(None, &key, "claude-haiku-4-5").unwrap_err();
        assert_eq!(e.to_string(), "Model 'claude-haiku-4-5' is not allowed for this API key");
        assert!(!plan_allows(&plan(&["gpt-4o-mini"], &[]), "gpt-4o"));
    }

    #[test]
    fn minute_window() {
        let mut w = MinuteWindow::default();
        assert!(w.check(0, 2).is_ok());
        w.record(0, 60_000);
        w.record(10_000, 60_000);
        assert_eq!(w.check(20_000, 2), Err(40));
        assert!(w.check(60_001, 2).is_ok());
    }
}
