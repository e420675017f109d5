//! Prometheus metrics, served as text at `GET /metrics` on the admin
//! listener. The request path only touches atomics: every labelled series it
//! counts into is resolved once (per label combination, lazily, into a
//! lock-free slot) instead of through the registry's map on each request.
//! Gauges that describe state (in flight, channel state, writer queue, config
//! time) are read when scraped.
//!
//! Labels stay bounded: endpoint, configured model (anything else is
//! `other`), configured channel, status class, and fixed reason sets. No user
//! or key ever becomes a label.

use crate::app::App;
use arc_swap::ArcSwap;
use once_cell::sync::OnceCell;
use prometheus::core::Collector;
use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Endpoints as labelled (the access log's names).
pub const ENDPOINTS: &[&str] =
    &["chat", "responses", "responses_compact", "embeddings", "messages", "count_tokens", "models", "account", "other"];
const CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
/// Why an attempt on a channel was given up for the next one.
pub const FAILOVER_REASONS: &[&str] = &["rate_limited", "upstream_5xx", "auth", "connect", "timeout", "other"];
/// Which limit refused a request.
pub const REFUSALS: &[&str] = &["concurrency", "rate", "daily_quota", "credits"];
const TOKEN_CLASSES: &[&str] = &["input", "cached", "cache_write", "output", "reasoning"];
/// Seconds: from 5 ms to 5 minutes (LLM answers are long).
const BUCKETS: &[f64] = &[0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

pub struct Metrics {
    registry: Registry,
    /// The label values of the running configuration (replaced on reload).
    labels: ArcSwap<Labels>,
    requests: IntCounterVec,
    total: Vec<Histogram>,
    ttfb: Vec<Histogram>,
    tokens: Vec<IntCounter>,
    credits: IntCounter,
    refusals: Vec<IntCounter>,
    failovers: Vec<IntCounter>,
    in_flight: IntGauge,
    channel_up: IntGaugeVec,
    writer_queue: IntGauge,
    writer_failing: IntGauge,
    writer_commits: IntCounter,
    writer_commit_seconds: Counter,
    config_loaded: IntGauge,
    config_version: IntGauge,
    config_reload_failed: IntGauge,
    redis_down: IntGauge,
    connections_refused: Vec<IntCounter>,
}

/// Why a client connection was closed before it was served.
pub const CONNECTION_REFUSALS: &[&str] = &["per_ip", "header_timeout"];

/// The configured models and channels as label values, and a lazily
/// resolved counter for every combination of the request labels.
struct Labels {
    models: HashMap<String, usize>,
    channels: HashMap<String, usize>,
    model_names: Vec<String>,
    channel_names: Vec<String>,
    request_slots: Vec<OnceCell<IntCounter>>,
}

impl Labels {
    fn new(models: &[String], channels: &[String]) -> Labels {
        let mut model_names: Vec<String> = models.to_vec();
        model_names.push("other".into());
        let mut channel_names: Vec<String> = channels.to_vec();
        channel_names.push("none".into());
        let slots = ENDPOINTS.len() * model_names.len() * CLASSES.len() * channel_names.len();
        Labels {
            models: models.iter().enumerate().map(|(i, m)| (m.clone(), i)).collect(),
            channels: channels.iter().enumerate().map(|(i, c)| (c.clone(), i)).collect(),
            request_slots: (0..slots).map(|_| OnceCell::new()).collect(),
            model_names,
            channel_names,
        }
    }
}

/// One answered request, as counted.
pub struct Observed<'a> {
    pub endpoint: &'a str,
    pub model: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub status: u16,
    pub total_secs: f64,
    pub ttfb_secs: Option<f64>,
}

fn index(names: &[&str], name: &str) -> usize {
    names.iter().position(|n| *n == name).unwrap_or(names.len() - 1)
}

impl Metrics {
    /// The registry for the configured models and channels.
    pub fn new(models: &[String], channels: &[String]) -> prometheus::Result<Metrics> {
        let registry = Registry::new_custom(Some("codex_proxy".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests answered, by endpoint, model, status class and channel"),
            &["endpoint", "model", "status_class", "channel"],
        )?;
        let total = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Time from the request to the end of its answer")
                .buckets(BUCKETS.to_vec()),
            &["endpoint"],
        )?;
        let ttfb = HistogramVec::new(
            HistogramOpts::new("time_to_first_byte_seconds", "Time from the request to the upstream's response head")
                .buckets(BUCKETS.to_vec()),
            &["endpoint"],
        )?;
        let tokens = IntCounterVec::new(Opts::new("tokens_total", "Tokens billed, by class"), &["class"])?;
        let credits = IntCounter::new("credits_charged_micro_total", "Credits charged, in micro-credits")?;
        let refusals =
            IntCounterVec::new(Opts::new("limit_refusals_total", "Requests refused by a limit"), &["limit"])?;
        let failovers = IntCounterVec::new(
            Opts::new("failovers_total", "Attempts given up for another channel, by reason"),
            &["reason"],
        )?;
        let in_flight = IntGauge::new("requests_in_flight", "Requests being served")?;
        let channel_up = IntGaugeVec::new(
            Opts::new("channel_up", "1 when the channel may take requests now, 0 when not (see the state label)"),
            &["channel", "state"],
        )?;
        let writer_queue = IntGauge::new("db_writer_queue_depth", "Records waiting for the database writer")?;
        let writer_failing =
            IntGauge::new("db_writer_failing", "1 while the database writer's commits fail (they are retried)")?;
        let config_loaded =
            IntGauge::new("config_loaded_timestamp_seconds", "When the running configuration was loaded")?;
        let writer_commits = IntCounter::new("db_commits_total", "Batches the database writer committed or tried to")?;
        let writer_commit_seconds =
            Counter::new("db_commit_seconds_total", "Time the database writer spent committing batches")?;
        let config_version =
            IntGauge::new("config_version", "Configurations loaded since start: 1, plus one per successful reload")?;
        let config_reload_failed = IntGauge::new(
            "config_reload_failed",
            "1 when the last reload was refused (the file differs from the configuration in force)",
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new("connections_refused_total", "Client connections closed unserved, by reason"),
            &["reason"],
        )?;
        let redis_down = IntGauge::new(
            "redis_down",
            "1 while this node cannot reach the cluster's Redis (cluster.on_redis_down applies); 0 otherwise",
        )?;
        let collectors: [Box<dyn Collector>; 18] = [
            Box::new(requests.clone()),
            Box::new(total.clone()),
            Box::new(ttfb.clone()),
            Box::new(tokens.clone()),
            Box::new(credits.clone()),
            Box::new(refusals.clone()),
            Box::new(failovers.clone()),
            Box::new(in_flight.clone()),
            Box::new(channel_up.clone()),
            Box::new(writer_queue.clone()),
            Box::new(writer_failing.clone()),
            Box::new(config_loaded.clone()),
            Box::new(writer_commits.clone()),
            Box::new(writer_commit_seconds.clone()),
            Box::new(config_version.clone()),
            Box::new(connections_refused.clone()),
            Box::new(config_reload_failed.clone()),
            Box::new(redis_down.clone()),
        ];
        for c in collectors {
            registry.register(c)?;
        }
        Ok(Metrics {
            labels: ArcSwap::from_pointee(Labels::new(models, channels)),
            total: ENDPOINTS.iter().map(|e| total.with_label_values(&[*e])).collect(),
            ttfb: ENDPOINTS.iter().map(|e| ttfb.with_label_values(&[*e])).collect(),
            tokens: TOKEN_CLASSES.iter().map(|c| tokens.with_label_values(&[*c])).collect(),
            refusals: REFUSALS.iter().map(|r| refusals.with_label_values(&[*r])).collect(),
            failovers: FAILOVER_REASONS.iter().map(|r| failovers.with_label_values(&[*r])).collect(),
            registry,
            requests,
            credits,
            in_flight,
            channel_up,
            writer_queue,
            writer_failing,
            writer_commits,
            writer_commit_seconds,
            config_loaded,
            config_version,
            config_reload_failed,
            redis_down,
            connections_refused: CONNECTION_REFUSALS
                .iter()
                .map(|r| connections_refused.with_label_values(&[*r]))
                .collect(),
        })
    }

    /// Labels for the models and channels of a reloaded configuration.
    /// Series already counted stay (Prometheus counters never go back).
    pub fn relabel(&self, models: &[String], channels: &[String]) {
        self.labels.store(Arc::new(Labels::new(models, channels)));
    }

    /// Counts an answered request.
    pub fn observe(&self, o: &Observed) {
        let l = self.labels.load();
        let e = index(ENDPOINTS, o.endpoint);
        let m = o.model.and_then(|m| l.models.get(m)).copied().unwrap_or(l.model_names.len() - 1);
        let c = o.channel.and_then(|c| l.channels.get(c)).copied().unwrap_or(l.channel_names.len() - 1);
        let class = match o.status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        let slot = ((e * l.model_names.len() + m) * CLASSES.len() + class) * l.channel_names.len() + c;
        l.request_slots[slot]
            .get_or_init(|| {
                self.requests.with_label_values(&[ENDPOINTS[e], &l.model_names[m], CLASSES[class], &l.channel_names[c]])
            })
            .inc();
        self.total[e].observe(o.total_secs);
        if let Some(t) = o.ttfb_secs {
            self.ttfb[e].observe(t);
        }
    }

    /// Counts billed tokens (input, cached, cache_write, output, reasoning)
    /// and the credits charged.
    pub fn bill(&self, tokens: [u64; 5], credits_micro: i64) {
        for (counter, n) in self.tokens.iter().zip(tokens) {
            counter.inc_by(n);
        }
        self.credits.inc_by(credits_micro.max(0) as u64);
    }

    /// Counts a refusal by the limit named in `REFUSALS`.
    pub fn refused(&self, limit: &str) {
        if let Some(i) = REFUSALS.iter().position(|r| *r == limit) {
            self.refusals[i].inc();
        }
    }

    /// Counts a connection closed unserved, by a reason in `CONNECTION_REFUSALS`.
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused[index(CONNECTION_REFUSALS, reason)].inc();
    }

    /// Counts a failover by a reason in `FAILOVER_REASONS`.
    pub fn failover(&self, reason: &str) {
        self.failovers[index(FAILOVER_REASONS, reason)].inc();
    }

    /// The text exposition, with the state gauges read now.
    pub fn render(&self, app: &App) -> Vec<u8> {
        self.in_flight.set(app.inflight() as i64);
        self.writer_queue.set(app.writer.queue_depth() as i64);
        self.writer_failing.set(app.writer.failing_since().is_some() as i64);
        // The writer keeps running totals; the counters catch up to them.
        let (commits, secs) = app.writer.commits();
        self.writer_commits.inc_by(commits.saturating_sub(self.writer_commits.get()));
        self.writer_commit_seconds.inc_by((secs - self.writer_commit_seconds.get()).max(0.0));
        self.config_loaded.set(app.loaded_at / 1000);
        self.config_version.set(app.version as i64);
        self.config_reload_failed.set(app.reloads.last().is_some_and(|r| !r.ok) as i64);
        self.redis_down.set(app.redis_down().is_some() as i64);
        let now = crate::clock::now_ms();
        self.channel_up.reset();
        for ch in app.channels.all() {
            let (up, state) = match (ch.usable(), ch.state.check(now)) {
                (false, _) => (0, "unconfigured"),
                (true, Ok(())) => (1, "up"),
                (true, Err(why)) => (0, why.as_str()),
            };
            self.channel_up.with_label_values(&[ch.name(), state]).set(up);
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// The failover reason of an attempt that did not deliver.
pub fn failover_reason(status: Option<u16>, error: &str) -> &'static str {
    match status {
        Some(429) => "rate_limited",
        Some(401 | 403) => "auth",
        Some(500..=599) => "upstream_5xx",
        _ if error.contains("connect") || error.contains("not resolved") => "connect",
        _ if error.contains("timeout") || error.contains("timed out") => "timeout",
        _ => "other",
    }
}

/// The limit a refusal kind (`GatewayError::kind`) stands for.
pub fn refusal_limit(kind: &str) -> Option<&'static str> {
    match kind {
        "concurrency_limit" => Some("concurrency"),
        "rate_limit" => Some("rate"),
        "daily_quota_exhausted" => Some("daily_quota"),
        "insufficient_credits" | "credits_held" => Some("credits"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded_and_counts_add_up() {
        let m = Metrics::new(&["gpt-4o".into()], &["oa".into()]).unwrap();
        for model in ["gpt-4o", "gpt-4o", "made-up-1", "made-up-2"] {
            let o = Observed {
                endpoint: "chat",
                model: Some(model),
                channel: Some("oa"),
                status: 200,
                total_secs: 0.2,
                ttfb_secs: Some(0.1),
            };
            m.observe(&o);
        }
        m.observe(&Observed {
            endpoint: "nonsense",
            model: None,
            channel: None,
            status: 429,
            total_secs: 0.0,
            ttfb_secs: None,
        });
        m.refused("concurrency");
        m.failover(failover_reason(Some(503), ""));
        let text =
            String::from_utf8(TextEncoder::new().encode_to_string(&m.registry.gather()).unwrap().into()).unwrap();
        let line = |s: &str| text.lines().any(|l| l == s);
        assert!(
            line(r#"codex_proxy_requests_total{channel="oa",endpoint="chat",model="gpt-4o",status_class="2xx"} 2"#),
            "{text}"
        );
        assert!(
            line(r#"codex_proxy_requests_total{channel="oa",endpoint="chat",model="other",status_class="2xx"} 2"#),
            "{text}"
        );
        assert!(
            line(r#"codex_proxy_requests_total{channel="none",endpoint="other",model="other",status_class="4xx"} 1"#),
            "{text}"
        );
        assert!(line(r#"codex_proxy_request_duration_seconds_count{endpoint="chat"} 4"#), "{text}");
        assert!(line(r#"codex_proxy_limit_refusals_total{limit="concurrency"} 1"#), "{text}");
        assert!(line(r#"codex_proxy_failovers_total{reason="upstream_5xx"} 1"#), "{text}");
        assert!(!text.contains("made-up"));
    }
}
