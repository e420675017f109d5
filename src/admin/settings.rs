//! The effective configuration as operators read it: the settings that shape
//! behaviour, grouped as in the YAML file, with secrets left out. Channels
//! have their own live view (`/admin/channels`).

use crate::config::model::{Config, Purchase, Signup};
use crate::config::units::{format_credits, format_money};
use serde_json::{json, Value};
use std::time::Duration;

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `UTC+08:00` for an offset in seconds.
fn offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
}

/// Sections of `[setting, value]` pairs, then the models and the packages.
/// A Redis URL without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}

pub fn summary(c: &Config) -> Value {
    let listeners: Vec<String> =
        c.listeners.iter().map(|l| format!("{}{}", l.address, if l.tls.is_some() { " (TLS)" } else { "" })).collect();
    let path = |p: &std::path::Path| p.display().to_string();
    let server = json!([
        ["server.listen", listeners.join(", ")],
        ["server.threads", c.threads],
        ["server.grace_period", secs(c.grace_period)],
        ["server.keepalive_timeout", secs(c.keepalive_timeout)],
        ["server.header_timeout", c.header_timeout.map_or("off".to_string(), secs)],
        ["server.max_connections_per_ip", c.max_connections_per_ip.map_or("no limit".to_string(), |n| n.to_string())],
        ["server.max_body_size", format!("{} bytes", c.max_body_bytes)],
        ["storage.data_dir", path(&c.data_dir)],
        [
            "storage.backend",
            match &c.database {
                crate::store::Database::Sqlite(_) => "sqlite",
                crate::store::Database::Postgres(_) => "postgres",
            }
        ],
        [
            match &c.database {
                crate::store::Database::Sqlite(_) => "storage.database",
                crate::store::Database::Postgres(_) => "storage.url",
            },
            c.database.to_string()
        ],
        ["storage.ca_file", ca_file(c).map_or("the system's roots".to_string(), path)],
        ["storage.flush_interval", secs(c.flush_interval)],
        ["storage.write_failure_grace", secs(c.write_failure_grace)],
        [
            "storage.redis_url",
            c.cluster.as_ref().map_or("off (one node)".to_string(), |cl| redacted(cl.redis_url.expose()))
        ],
        [
            "cluster",
            c.cluster.as_ref().map_or("off".to_string(), |cl| format!(
                "{} nodes, on_redis_down {}, lease_ttl {}, redis_timeout {}",
                cl.nodes,
                cl.on_redis_down.as_str(),
                secs(cl.lease_ttl),
                secs(cl.redis_timeout)
            ))
        ],
        ["access_log.path", c.access_log.as_deref().map_or("off".to_string(), path)],
        ["admin.listen", c.admin.listen.map_or("off".to_string(), |a| a.to_string())],
        ["demo_upstream", format!("{:?}", c.demo).to_lowercase()],
    ]);
    let r = &c.routing;
    let routing = json!([
        ["routing.max_attempts", r.max_attempts],
        ["routing.default_cooldown", secs(r.default_cooldown)],
        ["routing.affinity_keys", r.affinity_keys.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")],
        ["routing.affinity_ttl", secs(r.affinity_ttl)],
        ["routing.failure_threshold", format!("{} in {}", r.failure_threshold, secs(r.failure_window))],
        ["routing.ejection_time", secs(r.ejection_time)],
        ["routing.stream_hold", secs(r.stream_hold)],
        ["routing.stream_keepalive", r.stream_keepalive.map_or("off".to_string(), secs)],
    ]);
    let b = &c.billing;
    let billing = json!([
        ["billing.timezone", offset(b.utc_offset_secs)],
        ["billing.default_concurrency", b.default_concurrency],
        ["billing.max_reservation", format_credits(b.max_reservation)],
        ["billing.default_max_output_tokens", b.default_max_output_tokens],
        ["billing.redeem_failures_per_10min", b.redeem_failures_per_10min],
    ]);
    let w = &c.console;
    let signup = match w.signup {
        Signup::Open => "open",
        Signup::Invite => "invite",
        Signup::Closed => "closed",
    };
    let console = json!([
        ["console.enabled", w.enabled],
        ["console.site_name", w.site_name],
        ["console.public_url", w.public_url.as_deref().unwrap_or("(from each request)")],
        ["console.signup", signup],
        ["console.signup_credits", format_credits(w.signup_credits)],
        ["console.max_keys_per_user", w.max_keys_per_user],
        ["console.session_idle_timeout", secs(w.session_idle_timeout)],
        ["console.session_max_age", secs(w.session_max_age)],
        [
            "console.throttle",
            format!(
                "sign-in {}/IP, {}/account, sign-up {}/IP per {}",
                w.throttle.sign_in_per_ip,
                w.throttle.sign_in_per_account,
                w.throttle.sign_up_per_ip,
                secs(w.throttle.window)
            )
        ],
    ]);
    let p = &c.payments;
    let mut providers = Vec::new();
    if let Some(s) = &p.stripe {
        providers.push(format!("Stripe ({}, {})", s.currency.to_uppercase(), s.api_base));
    }
    if let Some(e) = &p.epay {
        providers.push(format!("EPay ({}, pid {}, {})", e.gateway_url, e.pid, e.types.join("/")));
    }
    let custom = p.custom.as_ref().map_or("off".to_string(), |cu| {
        let prices: Vec<String> = cu.credit_price.iter().map(|(cur, m)| format_money(*m, cur)).collect();
        format!("{}–{} credits at {} each", cu.min_credits, cu.max_credits, prices.join(" / "))
    });
    let payments = json!([
        ["payments", if p.enabled() { "on" } else { "off" }],
        ["payments.providers", if providers.is_empty() { "none".to_string() } else { providers.join("; ") }],
        ["payments.custom", custom],
        ["payments.order_ttl", secs(p.order_ttl)],
    ]);
    let packages: Vec<Value> = p
        .packages
        .iter()
        .map(|k| {
            let grant = match &k.grant {
                Purchase::Credits(m) => format!("{} credits", format_credits(*m)),
                Purchase::Plan(id) => format!("plan {id}"),
            };
            let prices: Vec<String> = k.prices.iter().map(|(cur, m)| format_money(*m, cur)).collect();
            json!({"id": k.id, "name": k.name, "grant": grant, "prices": prices.join(" / ")})
        })
        .collect();
    let models: Vec<Value> = c
        .models
        .iter()
        .map(|m| {
            json!({"id": m.id, "owned_by": m.owned_by, "input": format_credits(m.price.input),
                "cached_input": format_credits(m.price.cached_input), "cache_write": format_credits(m.price.cache_write),
                "output": format_credits(m.price.output)})
        })
        .collect();
    json!({
        "sections": [
            {"title": "Server", "settings": server},
            {"title": "Routing", "settings": routing},
            {"title": "Billing", "settings": billing},
            {"title": "Website", "settings": console},
            {"title": "Payments", "settings": payments},
        ],
        "models": models,
        "packages": packages,
    })
}

/// The CA file TLS to PostgreSQL or Redis trusts (one setting serves both).
fn ca_file(c: &Config) -> Option<&std::path::Path> {
    let pg = match &c.database {
        crate::store::Database::Postgres(t) => t.ca_file.as_deref(),
        crate::store::Database::Sqlite(_) => None,
    };
    pg.or_else(|| c.cluster.as_ref().and_then(|cl| cl.ca_file.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_are_not_shown() {
        assert_eq!(redacted("redis://:s3cret@10.0.0.5:6379/0"), "redis://…@10.0.0.5:6379/0");
        assert_eq!(redacted("rediss://user:pw@host:6380"), "rediss://…@host:6380");
        assert_eq!(redacted("unix:///run/redis.sock"), "unix:///run/redis.sock");
    }

    #[test]
    fn offsets_read_as_utc_plus_minus() {
        assert_eq!(offset(8 * 3600), "UTC+08:00");
        assert_eq!(offset(-(5 * 3600 + 1800)), "UTC-05:30");
        assert_eq!(offset(0), "UTC+00:00");
    }
}
