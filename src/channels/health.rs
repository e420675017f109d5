//! Active health checks: Pingora's `HealthCheck` over channels, run for every
//! pool by one `HealthCheckService`. Each channel has its own probe path,
//! interval, timeout and thresholds; the service ticks at the shortest interval
//! and a channel not yet due reports its last verdict. Thresholds are applied
//! here (`ChannelState::observe_probe`), so Pingora flips on every change of
//! verdict (threshold 1).

use super::pool::channel_of;
use super::Channel;
use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::Backend;
use pingora::prelude::*;
use std::sync::Arc;
use std::time::Duration;

pub struct Probe {
    connector: Connector,
}

impl Probe {
    pub fn new() -> Probe {
        Probe { connector: Connector::new(None) }
    }
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

/// One exchange with a channel's upstream, with its own key: the status and
/// up to 4 MiB of the answer. `Err` when no answer came.
async fn exchange(
    connector: &Connector,
    ch: &Channel,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let peer = ch.peer().ok_or_else(|| format!("{} is not resolved", ch.base_url().host))?;
    let mut req = RequestHeader::build(method, path.as_bytes(), None).map_err(|e| e.to_string())?;
    req.insert_header("host", ch.base_url().authority()).map_err(|e| e.to_string())?;
    req.insert_header("accept", "application/json").map_err(|e| e.to_string())?;
    req.insert_header("user-agent", "codex-proxy-health-check").map_err(|e| e.to_string())?;
    if let Some(b) = body {
        req.insert_header("content-type", "application/json").map_err(|e| e.to_string())?;
        req.insert_header("content-length", b.len().to_string()).map_err(|e| e.to_string())?;
    }
    ch.apply_auth(&mut req).map_err(|e| e.to_string())?;
    let (mut s, _) = connector.get_http_session(&peer).await.map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout));
    s.set_write_timeout(Some(timeout));
    s.write_request_header(Box::new(req)).await.map_err(|e| e.to_string())?;
    if let Some(b) = body {
        s.write_request_body(bytes::Bytes::copy_from_slice(b), true).await.map_err(|e| e.to_string())?;
    }
    s.finish_request_body().await.map_err(|e| e.to_string())?;
    s.read_response_header().await.map_err(|e| format!("no response: {e}"))?;
    let status = s.response_header().map(|r| r.status.as_u16()).unwrap_or(0);
    let mut read = Vec::new();
    while let Ok(Some(b)) = s.read_response_body().await {
        if read.len() < 4 << 20 {
            read.extend_from_slice(&b);
        }
    }
    if (200..300).contains(&status) {
        connector.release_http_session(s, &peer, Some(Duration::from_secs(30))).await;
    } else {
        s.shutdown().await;
    }
    Ok((status, read))
}

/// One probe: `GET {base}{path}` with the channel's own key; any 2xx passes.
pub async fn probe_once(connector: &Connector, ch: &Channel) -> Result<(), String> {
    let path = format!("{}{}", ch.base_url().path, ch.cfg.health.path);
    let (status, _) = exchange(connector, ch, "GET", &path, None, ch.cfg.health.timeout).await?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("health check GET {path} answered {status}"))
    }
}

/// What an operator's test of a channel came to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestOutcome {
    pub ok: bool,
    pub model: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The start of the answer (or the error): enough to see what happened.
    pub detail: String,
}

/// Sends one small real request through a channel, as a client would: a chat
/// (or Anthropic message) of one word and a few output tokens for its first
/// model, or an embedding when it serves only embedding models.
pub async fn test_once(connector: &Connector, ch: &Channel) -> TestOutcome {
    let pick = ch.cfg.models.values().find(|m| !m.contains("embedding")).or_else(|| ch.cfg.models.values().next());
    let model = pick.cloned().unwrap_or_default();
    let embedding = model.contains("embedding");
    let (suffix, body) = match ch.kind() {
        _ if embedding => ("/embeddings", serde_json::json!({"model": model, "input": "ping"})),
        crate::config::ChannelKind::Anthropic => (
            "/v1/messages",
            serde_json::json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "ping"}]}),
        ),
        _ => (
            "/chat/completions",
            serde_json::json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "ping"}]}),
        ),
    };
    let path = format!("{}{suffix}", ch.base_url().path);
    let started = std::time::Instant::now();
    let body = body.to_string();
    let result = exchange(connector, ch, "POST", &path, Some(body.as_bytes()), ch.cfg.timeouts.first_byte).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let snippet = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(400)]).into_owned();
    match result {
        Ok((status, b)) => TestOutcome {
            ok: (200..300).contains(&status),
            model,
            status: Some(status),
            latency_ms,
            detail: snippet(&b),
        },
        Err(e) => TestOutcome { ok: false, model, status: None, latency_ms, detail: e },
    }
}

#[async_trait]
impl HealthCheck for Probe {
    async fn check(&self, target: &Backend) -> Result<()> {
        let Some(ch) = channel_of(target) else { return Ok(()) };
        let h = &ch.cfg.health;
        if !h.enabled {
            return Ok(());
        }
        let now = crate::clock::now_ms();
        // Not due yet (the service ticks at the shortest interval of all).
        let slack = 50;
        if now - ch.state.last_probe_ms() + slack < h.interval.as_millis() as i64 {
            return if ch.state.probe_healthy() { Ok(()) } else { Error::e_explain(ConnectError, "still unhealthy") };
        }
        let result = match tokio::time::timeout(h.timeout, probe_once(&self.connector, ch)).await {
            Ok(r) => r,
            Err(_) => Err(format!("health check timed out after {:?}", h.timeout)),
        };
        let message = result.as_ref().err().cloned().unwrap_or_default();
        if ch.state.observe_probe(now, result.is_ok(), h.failures, h.successes, &message) {
            Ok(())
        } else {
            Error::e_explain(ConnectError, message)
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(ch) = channel_of(target) {
            if healthy {
                log::warn!("channel {} is healthy again: taking traffic", ch.name());
            } else {
                let last = ch.state.view(crate::clock::now_ms()).last_error.unwrap_or_default();
                log::error!("channel {} failed its health checks and is ejected: {last}", ch.name());
            }
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        channel_of(target).map_or_else(|| format!("{target:?}"), |c| format!("channel {}", c.name()))
    }

    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}

/// The tick of the health service: the shortest enabled interval.
pub fn tick(channels: &[Arc<Channel>]) -> Option<Duration> {
    channels.iter().filter(|c| c.usable() && c.cfg.health.enabled).map(|c| c.cfg.health.interval).min()
}
