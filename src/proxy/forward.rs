//! The upstream exchange ("manual mode", see `pingora-notes.md` §4.4): the
//! request body is already in memory, so `request_filter` drives the upstream
//! call itself through the shared `Connector`. That sidesteps Pingora 0.9.1's
//! hang on pre-read bodies over 64 KiB and gives a plain failover loop.
//!
//! Failover happens only before the first byte reaches the client: connect
//! errors, timeouts before headers, 429, 5xx, the channel's own key refused
//! (401/403), and an error event before any content in a 2xx stream (the head
//! of a stream is held until its first content event for that). Each failure
//! also feeds the channel's passive health. Once the client has a status line,
//! an upstream failure ends the stream with the client protocol's error event.

use super::ctx::RequestCtx;
use crate::access_log::AttemptLog;
use crate::api::body::{parse_value, rewrite_for_upstream};
use crate::api::{Endpoint, ErrorShape, Protocol};
use crate::app::App;
use crate::billing::estimate;
use crate::channels::{state::rate_limit_reset, Channel, Picker, Route};
use crate::convert::context::Ctx;
use crate::convert::passthrough::{JsonPassthrough, SsePassthrough};
use crate::convert::translate::{self, Pair, Translating};
use crate::convert::Relay;
use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use once_cell::sync::OnceCell;
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
    /// The client asked for a stream.
    pub stream: bool,
    /// The parsed body, built by the first attempt that translates (most
    /// requests never need it).
    pub json: OnceCell<serde_json::Value>,
}

impl Outbound {
    fn json(&self) -> Result<&serde_json::Value, GatewayError> {
        self.json.get_or_try_init(|| parse_value(&self.body))
    }
}

/// What a failed attempt says about the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// Connect error, timeout, 5xx, error event before content: counts toward
    /// ejection over the failure window.
    Failure,
    /// 429: cool down until the reset time (Unix ms), or the default.
    RateLimited(Option<i64>),
    /// 401/403: the channel's own key is bad.
    AuthRefused,
}

/// How one attempt on one channel ended.
enum Attempt {
    /// A response (of any status) was delivered to the client.
    Delivered,
    /// Nothing reached the client; the next channel may try.
    Retry { status: Option<u16>, reason: String, signal: Signal },
    /// The client went away.
    ClientGone,
    /// The request cannot go to this channel's API (a translation refused
    /// it); the client gets this error unless another channel takes it.
    Reject(GatewayError),
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

/// Counts a request in flight on a channel for as long as it lives.
struct OnChannel<'a>(&'a Channel);

impl<'a> OnChannel<'a> {
    fn new(ch: &'a Channel) -> Self {
        ch.state.begin();
        OnChannel(ch)
    }
}

impl Drop for OnChannel<'_> {
    fn drop(&mut self) {
        self.0.state.end();
    }
}

/// Tries channels until one delivers: each picker in turn (channels that
/// speak the client's API first, then translating ones), at most
/// `routing.max_attempts` attempts in all.
pub async fn run(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    out: Outbound,
    pickers: Vec<Picker<'_>>,
) -> Result<(), GatewayError> {
    let mut last = String::new();
    let mut retry_after: Option<u64> = None;
    let mut rejected: Option<GatewayError> = None;
    let mut tried = 0;
    let mut attempts = 0;
    for mut picker in pickers {
        while attempts < app.config.routing.max_attempts {
            let Some((channel, route)) = picker.next_channel() else { break };
            attempts += 1;
            let started = Instant::now();
            let result = attempt(app, session, ctx, &channel, route, &out).await;
            let ms = started.elapsed().as_millis() as u64;
            match result {
                Attempt::Delivered => {
                    channel.state.record_success();
                    ctx.attempts.push(AttemptLog {
                        channel: channel.name().into(),
                        status: ctx.upstream_status,
                        error: None,
                        ms,
                    });
                    picker.remember(&channel);
                    return Ok(());
                }
                Attempt::ClientGone => {
                    ctx.error_kind = Some("client_disconnected");
                    return Ok(());
                }
                Attempt::Reject(e) => {
                    // The channel is fine; this request just cannot take that
                    // route. Not a try, not a failure.
                    rejected.get_or_insert(e);
                }
                Attempt::Retry { status, reason, signal } => {
                    tried += 1;
                    log::warn!("{}: channel {} failed: {reason}", ctx.request_id, channel.name());
                    let now = crate::store::now_ms();
                    if let Some(wait) = apply_signal(app, &channel, signal, &reason, now) {
                        retry_after = Some(retry_after.map_or(wait, |r| r.min(wait)));
                    }
                    ctx.attempts.push(AttemptLog {
                        channel: channel.name().into(),
                        status,
                        error: Some(reason.clone()),
                        ms,
                    });
                    last = format!("{}: {reason}", channel.name());
                }
            }
        }
    }
    match (tried, rejected) {
        (0, Some(e)) => Err(e),
        (0, None) => Err(GatewayError::NoChannel { model: out.model }),
        _ => Err(GatewayError::AllChannelsFailed { model: out.model, last, retry_after: retry_after.unwrap_or(1) }),
    }
}

/// Applies a failure to the channel's passive health; returns the seconds a
/// client should wait when the channel is cooling down.
fn apply_signal(app: &App, ch: &Channel, signal: Signal, reason: &str, now: i64) -> Option<u64> {
    let r = &app.config.routing;
    match signal {
        Signal::Failure => {
            if ch.state.record_failure(now, reason, r.failure_window, r.failure_threshold, r.ejection_time) {
                log::error!(
                    "channel {} ejected for {:?}: {} failures within {:?} (last: {reason})",
                    ch.name(),
                    r.ejection_time,
                    r.failure_threshold,
                    r.failure_window
                );
            }
            None
        }
        Signal::RateLimited(until) => {
            let default = now + r.default_cooldown.as_millis() as i64;
            // Bounded: a bogus header must not take a channel away for days.
            let until = until.unwrap_or(default).clamp(now + 1_000, now + 3_600_000);
            if ch.state.cool_down(now, until, reason) {
                log::warn!("channel {} rate limited: cooling down for {}s", ch.name(), (until - now) / 1000);
            }
            Some(((until - now + 999) / 1000) as u64)
        }
        Signal::AuthRefused => {
            if ch.state.auth_failure(now, reason) {
                log::error!(
                    "channel {} DISABLED: the upstream refused its API key ({reason}); it returns when a health check \
                     passes or an operator re-enables it (POST /admin/channels/{}/enable)",
                    ch.name(),
                    ch.name()
                );
            }
            None
        }
    }
}

/// Whether a client header belongs to the other vendor's API and must not
/// reach an upstream that speaks a translated one (an `anthropic-beta` flag
/// means nothing to an OpenAI server, and may make a strict one refuse).
fn foreign_header(name: &str, translated_to: Option<Pair>) -> bool {
    match translated_to.map(Pair::upstream_endpoint) {
        Some(Endpoint::ChatCompletions) => name.starts_with("anthropic-") || name.starts_with("x-stainless-helper"),
        Some(_) => name.starts_with("openai-"),
        None => false,
    }
}

fn request_header(
    session: &Session,
    channel: &Channel,
    endpoint: Endpoint,
    translated_to: Option<Pair>,
    body_len: usize,
) -> Result<RequestHeader, String> {
    let path = channel.path_for(endpoint);
    // No case-preserving name map (HTTP header names are case-insensitive):
    // keeping one copied every header name once more per request.
    let size = session.req_header().headers.len() + 3;
    let mut req = RequestHeader::build_no_case("POST", path.as_bytes(), Some(size)).map_err(|e| e.to_string())?;
    for (name, value) in session.req_header().headers.iter() {
        if !DROP_REQUEST_HEADERS.contains(&name.as_str()) && !foreign_header(name.as_str(), translated_to) {
            req.append_header(name.clone(), value.clone()).map_err(|e| e.to_string())?;
        }
    }
    channel.apply_auth(&mut req).map_err(|e| e.to_string())?;
    req.insert_header("host", channel.base_url().authority()).map_err(|e| e.to_string())?;
    req.insert_header("content-length", body_len.to_string()).map_err(|e| e.to_string())?;
    req.insert_header("accept-encoding", "identity").map_err(|e| e.to_string())?;
    Ok(req)
}

/// Connects (trying each resolved address in turn) and sends the request; on
/// a stale pooled connection (the upstream closed it while idle) retries once
/// on a fresh one, which is safe: nothing was read. Returns the session and
/// the peer it is connected to.
async fn send_request(
    app: &App,
    peers: Vec<HttpPeer>,
    header: &RequestHeader,
    body: &Bytes,
    write_timeout: Duration,
) -> Result<(HttpSession, HttpPeer), String> {
    let mut last = String::from("no address");
    for peer in peers {
        match send_to(app, &peer, header, body, write_timeout).await {
            Ok(up) => return Ok((up, peer)),
            Err((e, connected)) => {
                last = e;
                if connected {
                    break;
                }
            }
        }
    }
    Err(last)
}

/// One address; the error says whether a connection was made (then another
/// address would not help).
async fn send_to(
    app: &App,
    peer: &HttpPeer,
    header: &RequestHeader,
    body: &Bytes,
    write_timeout: Duration,
) -> Result<HttpSession, (String, bool)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let (up, reused) = app.connector.get_http_session(peer).await.map_err(|e| (format!("connect: {e}"), false))?;
        // A failed session is dropped (closed) inside `write_request`.
        match write_request(up, peer, header, body, write_timeout).await {
            Ok(up) => return Ok(up),
            Err(e) if reused && tries == 1 => log::debug!("stale pooled connection ({e}); reconnecting"),
            Err(e) => return Err((format!("sending request: {e}"), true)),
        }
    }
}

/// Bodies up to this size leave in the same write as the request head.
const COALESCE_BODY_MAX: usize = 64 << 10;

/// Writes the request head and body. Pingora's HTTP/1 client flushes the head
/// on its own, so every request cost two sends and woke the upstream twice;
/// for bodies up to [`COALESCE_BODY_MAX`] the head and body go out in one
/// write on the pooled stream, which is then wrapped in a fresh client session
/// to read the response. That session has no record of the request head, which
/// only matters for HEAD and upgrade requests: never sent here (every
/// forwarded request is a POST with a Content-Length, see [`request_header`]).
async fn write_request(
    mut up: HttpSession,
    peer: &HttpPeer,
    header: &RequestHeader,
    body: &Bytes,
    write_timeout: Duration,
) -> pingora::Result<HttpSession> {
    use pingora::protocols::http::v1::client::{http_req_header_to_wire, HttpSession as Http1Session};
    use pingora::{Error, ErrorType, OrErr};
    use tokio::io::AsyncWriteExt;
    match up {
        HttpSession::H1(h1) if body.len() <= COALESCE_BODY_MAX => {
            let mut wire = http_req_header_to_wire(header)
                .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "unsendable request head"))?;
            wire.extend_from_slice(body);
            let mut stream = h1.into_inner();
            let write = async {
                stream.write_all(&wire).await?;
                stream.flush().await
            };
            match tokio::time::timeout(write_timeout, write).await {
                Ok(done) => done.or_err(ErrorType::WriteError, "writing request")?,
                Err(_) => return Error::e_explain(ErrorType::WriteTimedout, "writing request"),
            }
            Ok(HttpSession::H1(Http1Session::new_with_options(stream, peer)))
        }
        _ => {
            up.set_write_timeout(Some(write_timeout));
            up.write_request_header(Box::new(header.clone())).await?;
            up.write_request_body(body.clone(), true).await?;
            up.finish_request_body().await?;
            Ok(up)
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

/// What the first phase of an attempt produced.
enum Head {
    /// Bytes (held back while waiting for content) and whether the body ended.
    Ready(BytesMut, bool),
    Retry(Attempt),
}

async fn attempt(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    channel: &Arc<Channel>,
    route: Route,
    out: &Outbound,
) -> Attempt {
    let _on = OnChannel::new(channel);
    let fail = |status: Option<u16>, reason: String| Attempt::Retry { status, reason, signal: Signal::Failure };
    let peers = channel.peers();
    if peers.is_empty() {
        return fail(None, format!("{} is not resolved", channel.base_url().host));
    }
    let upstream_model = channel.upstream_model(&out.model).unwrap_or(&out.model);
    // `translation`: the pair and what the response side needs to know.
    let (body, endpoint, mut translation) = match route {
        Route::Native => {
            let body = rewrite_for_upstream(out.body.clone(), Some(upstream_model), out.add_include_usage);
            (body, out.endpoint, None)
        }
        Route::Translate(pair) => {
            let json = match out.json() {
                Ok(j) => j,
                Err(e) => return Attempt::Reject(e),
            };
            let mut tctx = Ctx::new(&out.model, upstream_model, app.ids.clone(), app.signer.clone());
            tctx.context_window = channel.cfg.context_window;
            tctx.quirks = channel.cfg.quirks.clone();
            match translate::request(pair, json, &mut tctx) {
                Ok(body) => (body, pair.upstream_endpoint(), Some((pair, tctx))),
                Err(e) => return Attempt::Reject(e),
            }
        }
    };
    let pair = translation.as_ref().map(|(p, _)| *p);
    let header = match request_header(session, channel, endpoint, pair, body.len()) {
        Ok(h) => h,
        Err(e) => return fail(None, format!("building request: {e}")),
    };
    let timeouts = channel.cfg.timeouts;
    let deadline = tokio::time::Instant::now() + timeouts.total;
    let (mut up, peer) = match send_request(app, peers, &header, &body, timeouts.idle).await {
        Ok(r) => r,
        Err(e) => return fail(None, e),
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
        return fail(None, format!("no response header: {e}"));
    }
    let Some(resp) = up.response_header().cloned() else {
        return fail(None, "no response header".into());
    };
    let status = resp.status.as_u16();
    ctx.upstream_status = Some(status);
    let signal = match status {
        429 => Some(Signal::RateLimited(rate_limit_reset(&resp.headers, crate::store::now_ms()))),
        401 | 403 => Some(Signal::AuthRefused),
        s if s >= 500 => Some(Signal::Failure),
        _ => None,
    };
    if let Some(signal) = signal {
        let body = read_small_body(&mut up, 16 << 10).await;
        up.shutdown().await;
        let reason = format!("upstream answered {status}: {}", error_message(&body));
        return Attempt::Retry { status: Some(status), reason, signal };
    }

    let is_sse = resp.headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let success = (200..300).contains(&status);
    if let (Some((pair, tctx)), false) = (translation.as_ref(), success) {
        let pair = *pair;
        // The upstream refused the translated request (400, 404, 413...):
        // the client gets that refusal in its own API's words.
        let body = read_small_body(&mut up, 64 << 10).await;
        up.shutdown().await;
        ctx.channel = Some(channel.name().to_string());
        ctx.translation = Some(pair.label());
        ctx.error_detail = Some(error_message(&body));
        let (status, content_type, body) = translate::error(pair, status, &body, tctx, out.stream, None);
        ctx.status = status;
        super::respond::send_typed(session, ctx, status, content_type, &[], body).await;
        let gone = ctx.error_kind == Some("client_disconnected");
        ctx.error_kind = Some("upstream_client_error");
        return if gone { Attempt::ClientGone } else { Attempt::Delivered };
    }
    let mut relay: Box<dyn Relay> = match translation.take() {
        Some((pair, tctx)) => {
            ctx.translation = Some(pair.label());
            Box::new(Translating::new(pair, tctx, is_sse, out.stream))
        }
        _ if is_sse && success => {
            Box::new(SsePassthrough::new(out.protocol, out.add_include_usage && !out.client_wants_usage))
        }
        _ => Box::new(JsonPassthrough::new(if success { out.protocol } else { Protocol::CountTokens })),
    };
    up.set_read_timeout(Some(timeouts.idle));
    let streaming = is_sse || (pair.is_some() && out.stream);
    let (held, ended) = if streaming && success {
        let hold_until = tokio::time::Instant::now() + app.config.routing.stream_hold;
        match hold_head(session, &mut up, relay.as_mut(), deadline.min(hold_until)).await {
            Head::Ready(held, ended) => (held, ended),
            Head::Retry(a) => {
                up.shutdown().await;
                return a;
            }
        }
    } else {
        (BytesMut::new(), false)
    };

    // Committed: from here on the client gets this upstream's answer.
    ctx.channel = Some(channel.name().to_string());
    ctx.ttfb = Some(ctx.started.elapsed());
    // A translated body is in the client's format, whatever the upstream sent.
    let content_type = pair.map(|_| if out.stream { "text/event-stream" } else { "application/json" });
    if let Err(e) = write_head(session, ctx, &resp, relay.preserves_length(), content_type).await {
        log::debug!("{}: client gone before the response header: {e}", ctx.request_id);
        up.shutdown().await;
        return Attempt::ClientGone;
    }
    ctx.status = status;
    if !success {
        ctx.error_kind = Some("upstream_client_error");
    }
    let mut outcome = if ended {
        let mut tail = held;
        tail.extend_from_slice(&relay.finish());
        match session.write_response_body((!tail.is_empty()).then(|| tail.freeze()), true).await {
            Ok(()) => Pump::Complete,
            Err(_) => Pump::ClientGone,
        }
    } else if !held.is_empty() && session.write_response_body(Some(held.freeze()), false).await.is_err() {
        Pump::ClientGone
    } else {
        let keepalive = app.config.routing.stream_keepalive.filter(|_| streaming && out.stream);
        pump(session, ctx, &mut up, relay.as_mut(), deadline, keepalive).await
    };
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
            channel.state.note_error(crate::store::now_ms(), &reason);
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

/// Reads a 2xx stream until its first content event, holding what came before
/// (so an error event that arrives before any content can still fail over),
/// but only until `hold_until`: then what is held goes out and the stream is
/// committed, content or not.
async fn hold_head(
    session: &mut Session,
    up: &mut HttpSession,
    relay: &mut dyn Relay,
    hold_until: tokio::time::Instant,
) -> Head {
    let mut held = BytesMut::new();
    loop {
        if let Some(err) = relay.stream_error().filter(|_| !relay.content_started()) {
            let reason = format!("error event before any content: {}", err.message);
            return Head::Retry(Attempt::Retry { status: Some(200), reason, signal: Signal::Failure });
        }
        if relay.content_started() {
            return Head::Ready(held, false);
        }
        // The hold ends at `hold_until` (the earlier of `stream_hold` and the
        // total timeout): a read still pending then is dropped before it has
        // taken any bytes, and the pump reads on.
        let next = tokio::select! {
            r = up.read_response_body() => r,
            _ = session.as_downstream_mut().read_body_or_idle(true) => return Head::Retry(Attempt::ClientGone),
            _ = tokio::time::sleep_until(hold_until) => return Head::Ready(held, false),
        };
        match next {
            Ok(Some(chunk)) => held.extend_from_slice(&relay.push(chunk)),
            Ok(None) => return Head::Ready(held, true),
            Err(e) => {
                let reason = format!("stream failed before any content: {e}");
                return Head::Retry(Attempt::Retry { status: Some(200), reason, signal: Signal::Failure });
            }
        }
    }
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
    content_type: Option<&'static str>,
) -> pingora::Result<()> {
    // Without a case-preserving name map, as in `request_header`.
    let mut resp = ResponseHeader::build_no_case(up.status, Some(up.headers.len() + 5))?;
    for (name, value) in up.headers.iter() {
        if !drop_response_header(name.as_str()) {
            resp.append_header(name.clone(), value.clone())?;
        }
    }
    if let Some(ct) = content_type {
        resp.insert_header("content-type", ct)?;
        if ct == "text/event-stream" {
            resp.insert_header("cache-control", "no-cache")?;
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

/// Most bytes gathered from a burst before writing them to the client.
const COALESCE_LIMIT: usize = 64 << 10;

/// What a silent stream gets every `routing.stream_keepalive`.
const KEEPALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// Relays the upstream body to the client as it arrives; an SSE stream gets
/// a comment after `keepalive` of upstream silence.
async fn pump(
    session: &mut Session,
    ctx: &RequestCtx,
    up: &mut HttpSession,
    relay: &mut dyn Relay,
    deadline: tokio::time::Instant,
    keepalive: Option<Duration>,
) -> Pump {
    // A read that completed while a burst was being gathered, handled first.
    let mut ready: Option<pingora::Result<Option<Bytes>>> = None;
    loop {
        let next = match ready.take() {
            Some(r) => Ok(r),
            None => tokio::select! {
                r = tokio::time::timeout_at(deadline, up.read_response_body()) => r,
                _ = session.as_downstream_mut().read_body_or_idle(true) => return Pump::ClientGone,
                _ = tokio::time::sleep(keepalive.unwrap_or_default()), if keepalive.is_some() => {
                    if session.write_response_body(Some(Bytes::from_static(KEEPALIVE_COMMENT)), false).await.is_err() {
                        return Pump::ClientGone;
                    }
                    continue;
                }
            },
        };
        let failure = match next {
            Ok(Ok(Some(chunk))) => {
                let mut out = BytesMut::from(relay.push(chunk));
                // Take what the upstream has already sent as well and write it
                // in one go: a burst of events costs one send, not one each.
                // Only what is ready: waiting for more would add latency.
                while out.len() < COALESCE_LIMIT {
                    match up.read_response_body().now_or_never() {
                        Some(Ok(Some(more))) => out.extend_from_slice(&relay.push(more)),
                        Some(other) => {
                            ready = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                if !out.is_empty() && session.write_response_body(Some(out.freeze()), false).await.is_err() {
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
