//! The upstream exchange ("manual mode", see `pingora-notes.md` §4.4): the
//! request body is already in memory, so `request_filter` drives the upstream
//! call itself through the shared `Connector`. That sidesteps Pingora 0.9.1's
//! hang on pre-read bodies over 64 KiB and gives a plain retry loop: channels
//! are tried in turn until one answers, and nothing reaches the client before
//! an upstream has answered with a non-retryable status.

use super::ctx::RequestCtx;
use crate::access_log::AttemptLog;
use crate::api::body::rewrite_for_upstream;
use crate::api::{Endpoint, ErrorShape, Protocol};
use crate::app::App;
use crate::billing::estimate;
use crate::channels::{Channel, Selection};
use crate::config::ChannelKind;
use crate::convert::passthrough::{JsonPassthrough, SsePassthrough};
use crate::convert::Relay;
use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request ready to go upstream.
pub struct Outbound {
    pub endpoint: Endpoint,
    pub protocol: Protocol,
    pub model: String,
    pub body: Bytes,
    /// Add `stream_options.include_usage` (chat streams).
    pub add_include_usage: bool,
    /// The client asked for the usage chunk itself.
    pub client_wants_usage: bool,
}

/// How one attempt on one channel ended.
enum Attempt {
    /// A response (of any status) was delivered to the client.
    Delivered,
    /// Nothing reached the client; the next channel may try.
    Retry { status: Option<u16>, reason: String, retry_after: Option<u64> },
    /// The client went away.
    ClientGone,
}

/// Request headers never forwarded upstream: hop-by-hop headers, the client's
/// credentials (replaced by the channel's), framing we recompute, and
/// compression (the gateway reads the bodies).
const DROP_REQUEST_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "accept-encoding",
    "cookie",
];

/// Upstream response headers never passed to the client: hop-by-hop, framing,
/// the upstream's own ids and account details, and its rate limits (they
/// describe the operator's account, not the user's).
fn drop_response_header(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "content-length"
            | "te"
            | "trailer"
            | "upgrade"
            | "set-cookie"
            | "alt-svc"
            | "x-request-id"
            | "request-id"
            | "openai-organization"
            | "openai-project"
            | "anthropic-organization-id"
    ) || name.starts_with("x-ratelimit-")
        || name.starts_with("anthropic-ratelimit-")
        || name.starts_with("cf-")
}

pub async fn run(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    out: Outbound,
    mut selection: Selection,
) -> Result<(), GatewayError> {
    let mut last = String::from("no channel was tried");
    let mut retry_after = None;
    for _ in 0..app.config.routing.max_attempts {
        let Some(channel) = selection.take_next() else { break };
        let started = Instant::now();
        match attempt(app, session, ctx, &channel, &out).await {
            Attempt::Delivered => return Ok(()),
            Attempt::ClientGone => {
                ctx.error_kind = Some("client_disconnected");
                return Ok(());
            }
            Attempt::Retry { status, reason, retry_after: ra } => {
                log::warn!("{}: channel {} failed: {reason}", ctx.request_id, channel.name());
                ctx.attempts.push(AttemptLog {
                    channel: channel.name().to_string(),
                    status,
                    error: Some(reason.clone()),
                    ms: started.elapsed().as_millis() as u64,
                });
                last = format!("{}: {reason}", channel.name());
                retry_after = ra.or(retry_after);
            }
        }
    }
    Err(GatewayError::AllChannelsFailed { model: out.model, last, retry_after: retry_after.unwrap_or(1) })
}

fn request_header(
    session: &Session,
    channel: &Channel,
    out: &Outbound,
    body_len: usize,
) -> Result<RequestHeader, String> {
    let path = channel.path_for(out.endpoint);
    let mut req = RequestHeader::build("POST", path.as_bytes(), None).map_err(|e| e.to_string())?;
    for (name, value) in session.req_header().headers.iter() {
        if !DROP_REQUEST_HEADERS.contains(&name.as_str()) {
            req.append_header(name.clone(), value.clone()).map_err(|e| e.to_string())?;
        }
    }
    let key = channel.cfg.api_key.expose();
    match channel.kind() {
        ChannelKind::Anthropic => {
            req.insert_header("x-api-key", key).map_err(|e| e.to_string())?;
            if !req.headers.contains_key("anthropic-version") {
                req.insert_header("anthropic-version", "2023-06-01").map_err(|e| e.to_string())?;
            }
        }
        ChannelKind::OpenAi | ChannelKind::OpenAiChat => {
            req.insert_header("authorization", format!("Bearer {key}")).map_err(|e| e.to_string())?;
        }
    }
    for (k, v) in &channel.cfg.headers {
        req.insert_header(k.clone(), v.as_str()).map_err(|e| e.to_string())?;
    }
    req.insert_header("host", channel.base_url().authority()).map_err(|e| e.to_string())?;
    req.insert_header("content-length", body_len.to_string()).map_err(|e| e.to_string())?;
    req.insert_header("accept-encoding", "identity").map_err(|e| e.to_string())?;
    Ok(req)
}

/// Sends the request; on a stale pooled connection (the upstream closed it
/// while idle) retries once on a fresh one, which is safe: nothing was read.
async fn send_request(
    app: &App,
    peer: &HttpPeer,
    header: &RequestHeader,
    body: &Bytes,
    write_timeout: Duration,
) -> Result<HttpSession, String> {
    let mut tries = 0;
    loop {
        tries += 1;
        let (mut up, reused) = app.connector.get_http_session(peer).await.map_err(|e| format!("connect: {e}"))?;
        up.set_write_timeout(Some(write_timeout));
        let sent = async {
            up.write_request_header(Box::new(header.clone())).await?;
            up.write_request_body(body.clone(), true).await?;
            up.finish_request_body().await
        }
        .await;
        match sent {
            Ok(()) => return Ok(up),
            Err(e) if reused && tries == 1 => {
                log::debug!("stale pooled connection ({e}); reconnecting");
                up.shutdown().await;
            }
            Err(e) => return Err(format!("sending request: {e}")),
        }
    }
}

/// Reads at most `limit` bytes of a (small) error body.
async fn read_small_body(up: &mut HttpSession, limit: usize) -> Bytes {
    let mut buf = BytesMut::new();
    let read = async {
        while buf.len() < limit {
            match up.read_response_body().await {
                Ok(Some(b)) => buf.extend_from_slice(&b),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    buf.freeze()
}

fn error_message(body: &[u8]) -> String {
    let parsed = crate::convert::passthrough::parse_error(&String::from_utf8_lossy(body));
    parsed.message.chars().take(300).collect()
}

/// Seconds from a `retry-after` header (delta-seconds form).
fn retry_after(resp: &ResponseHeader) -> Option<u64> {
    resp.headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| s.ceil() as u64)
}

async fn attempt(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    channel: &Arc<Channel>,
    out: &Outbound,
) -> Attempt {
    let retry = |status: Option<u16>, reason: String| Attempt::Retry { status, reason, retry_after: None };
    let Some(peer) = channel.peer() else {
        return retry(None, format!("{} is not resolved", channel.base_url().host));
    };
    let upstream_model = channel.upstream_model(&out.model).unwrap_or(&out.model);
    let body = rewrite_for_upstream(out.body.clone(), Some(upstream_model), out.add_include_usage);
    let header = match request_header(session, channel, out, body.len()) {
        Ok(h) => h,
        Err(e) => return retry(None, format!("building request: {e}")),
    };
    let timeouts = channel.cfg.timeouts;
    let deadline = tokio::time::Instant::now() + timeouts.total;
    let mut up = match send_request(app, &peer, &header, &body, timeouts.idle).await {
        Ok(up) => up,
        Err(e) => return retry(None, e),
    };

    // Wait for the response header, noticing a client that hangs up meanwhile.
    up.set_read_timeout(Some(timeouts.first_byte));
    let head = tokio::select! {
        r = up.read_response_header() => r,
        _ = session.as_downstream_mut().read_body_or_idle(true) => {
            up.shutdown().await;
            return Attempt::ClientGone;
        }
    };
    if let Err(e) = head {
        up.shutdown().await;
        return retry(None, format!("no response header: {e}"));
    }
    let Some(resp) = up.response_header().cloned() else {
        return retry(None, "no response header".into());
    };
    let status = resp.status.as_u16();
    ctx.upstream_status = Some(status);
    if status == 429 || status >= 500 {
        let body = read_small_body(&mut up, 16 << 10).await;
        up.shutdown().await;
        return Attempt::Retry {
            status: Some(status),
            reason: format!("upstream answered {status}: {}", error_message(&body)),
            retry_after: retry_after(&resp),
        };
    }

    // Committed: from here on the client gets this upstream's answer.
    ctx.channel = Some(channel.name().to_string());
    ctx.ttfb = Some(ctx.started.elapsed());
    let is_sse = resp.headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let success = (200..300).contains(&status);
    let mut relay: Box<dyn Relay> = if is_sse && success {
        Box::new(SsePassthrough::new(out.protocol, out.add_include_usage && !out.client_wants_usage))
    } else {
        Box::new(JsonPassthrough::new(if success { out.protocol } else { Protocol::CountTokens }))
    };
    if let Err(e) = write_head(session, ctx, &resp, relay.preserves_length()).await {
        log::debug!("{}: client gone before the response header: {e}", ctx.request_id);
        up.shutdown().await;
        return Attempt::ClientGone;
    }
    ctx.status = status;
    if !success {
        ctx.error_kind = Some("upstream_client_error");
    }
    up.set_read_timeout(Some(timeouts.idle));
    let mut outcome = pump(session, ctx, &mut up, relay.as_mut(), deadline).await;
    if matches!(outcome, Pump::ClientGone) && !is_sse {
        // A non-streaming answer is already generated: reading the rest costs
        // the upstream nothing and gives the exact usage to bill.
        outcome = drain(&mut up, relay.as_mut(), deadline).await;
        ctx.error_kind = Some("client_disconnected");
    }
    ctx.usage = relay.usage();
    if success && !relay.usage_complete() && !matches!(outcome, Pump::Complete) {
        // Cut short before the final usage report: bill what was reported,
        // with output at least what the streamed text implies.
        ctx.usage = Some(estimate::incomplete(relay.usage(), ctx.body_len, relay.output_chars()));
        ctx.estimated = true;
    }
    match outcome {
        Pump::Complete => {
            app.connector.release_http_session(up, &peer, Some(channel.pool_idle_timeout())).await;
        }
        Pump::UpstreamFailed(reason) => {
            log::warn!("{}: stream from {} failed: {reason}", ctx.request_id, channel.name());
            ctx.error_kind = Some("upstream_stream_error");
            ctx.error_detail = Some(reason);
            up.shutdown().await;
        }
        Pump::ClientGone => {
            ctx.error_kind = Some("client_disconnected");
            up.shutdown().await;
        }
    }
    Attempt::Delivered
}

/// Reads the rest of an upstream body nobody will receive, for its usage.
async fn drain(up: &mut HttpSession, relay: &mut dyn Relay, deadline: tokio::time::Instant) -> Pump {
    loop {
        match tokio::time::timeout_at(deadline, up.read_response_body()).await {
            Ok(Ok(Some(chunk))) => {
                relay.push(chunk);
            }
            Ok(Ok(None)) => {
                relay.finish();
                return Pump::Complete;
            }
            _ => return Pump::ClientGone,
        }
    }
}

async fn write_head(
    session: &mut Session,
    ctx: &RequestCtx,
    up: &ResponseHeader,
    keep_length: bool,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(up.status, Some(up.headers.len() + 3))?;
    for (name, value) in up.headers.iter() {
        if !drop_response_header(name.as_str()) {
            resp.append_header(name.clone(), value.clone())?;
        }
    }
    match up.headers.get("content-length") {
        Some(len) if keep_length => resp.insert_header("content-length", len.clone())?,
        _ => resp.insert_header("transfer-encoding", "chunked")?,
    }
    if let Some(id) = up.headers.get("x-request-id").or_else(|| up.headers.get("request-id")) {
        resp.insert_header("x-upstream-request-id", id.clone())?;
    }
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    if ctx.shape == ErrorShape::Anthropic {
        resp.insert_header("request-id", ctx.request_id.as_str())?;
    }
    if up.status.is_success() {
        for (k, v) in &ctx.quota_headers {
            resp.insert_header(*k, v.as_str())?;
        }
    }
    session.write_response_header(Box::new(resp), false).await
}

enum Pump {
    Complete,
    UpstreamFailed(String),
    ClientGone,
}

/// Relays the upstream body to the client chunk by chunk as it arrives.
async fn pump(
    session: &mut Session,
    ctx: &RequestCtx,
    up: &mut HttpSession,
    relay: &mut dyn Relay,
    deadline: tokio::time::Instant,
) -> Pump {
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout_at(deadline, up.read_response_body()) => r,
            _ = session.as_downstream_mut().read_body_or_idle(true) => return Pump::ClientGone,
        };
        let failure = match next {
            Ok(Ok(Some(chunk))) => {
                let bytes = relay.push(chunk);
                if !bytes.is_empty() && session.write_response_body(Some(bytes), false).await.is_err() {
                    return Pump::ClientGone;
                }
                continue;
            }
            Ok(Ok(None)) => {
                let tail = relay.finish();
                let tail = (!tail.is_empty()).then_some(tail);
                if session.write_response_body(tail, true).await.is_err() {
                    return Pump::ClientGone;
                }
                return Pump::Complete;
            }
            Ok(Err(e)) => format!("reading upstream body: {e}"),
            Err(_) => "total timeout reached".to_string(),
        };
        // The client already has a 200: end its stream with an error event in
        // its protocol rather than a silent truncation.
        log::debug!("{}: {failure}", ctx.request_id);
        let end = relay.abort("The upstream connection failed mid-response; the answer is incomplete.");
        if end.is_empty() {
            // A plain body has no error event: close the connection so the
            // client sees a truncated response, not a complete-looking one.
            session.as_downstream_mut().shutdown().await;
        } else {
            let _ = session.write_response_body(Some(end), true).await;
        }
        return Pump::UpstreamFailed(failure);
    }
}
