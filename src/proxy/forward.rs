//! The upstream exchange ("manual mode", see `pingora-notes.md` §4.4): the
//! request body is already in memory, so `request_filter` drives the upstream
//! call itself through the shared `Connector`. That sidesteps Pingora 0.9.1's
//! hang on pre-read bodies over 64 KiB and gives a plain failover loop.
//!
//! Failover happens only before the first byte reaches the client: connect
//! errors, timeouts before headers, 429, 5xx, the channel's own key refused
//! (401/403), and an error event before any content in a 2xx stream (the head
//! of a stream is held until its first content event for that, at most
//! `routing.stream_hold`). Each failure also feeds the channel's passive
//! health. Once the client has a status line, an upstream failure ends the
//! stream with the client protocol's error event.
//!
//! `upstream` builds and sends the request; `relay` holds, writes and pumps
//! the response.

use super::ctx::{Failure, RequestCtx};
use super::relay::{self, Held, Relayed};
use super::upstream;
use crate::access_log::AttemptLog;
use crate::api::body::{parse_value, rewrite_for_upstream};
use crate::api::{Endpoint, Protocol};
use crate::app::App;
use crate::billing::estimate;
use crate::channels::{state::rate_limit_reset, Channel, Picker, Route};
use crate::convert::context::Ctx;
use crate::convert::passthrough::{JsonPassthrough, SsePassthrough};
use crate::convert::translate::{self, Pair, Translating};
use crate::convert::Relay;
use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
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
                    ctx.failure = Some(Failure::ClientGone);
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
                    let now = crate::clock::now_ms();
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

/// The upstream request an attempt sends, in the channel's API.
struct Prepared {
    header: RequestHeader,
    body: Bytes,
    /// The translation, with the context its response side needs.
    translation: Option<(Pair, Ctx)>,
}

/// A response head from the upstream, with the connection to read the rest.
struct Answer {
    up: HttpSession,
    peer: HttpPeer,
    head: ResponseHeader,
}

/// One attempt on one channel, in phases: prepare the request, send it and
/// wait for the head, classify the head, hold a stream's head until its first
/// content, then relay.
async fn attempt(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    channel: &Arc<Channel>,
    route: Route,
    out: &Outbound,
) -> Attempt {
    let _on = OnChannel::new(channel);
    let prepared = match prepare(app, session, channel, route, out) {
        Ok(p) => p,
        Err(a) => return a,
    };
    let timeouts = channel.cfg.timeouts;
    let deadline = tokio::time::Instant::now() + timeouts.total;
    let mut answer = match send(app, session, channel, &prepared).await {
        Ok(a) => a,
        Err(a) => return a,
    };
    let status = answer.head.status.as_u16();
    ctx.upstream_status = Some(status);
    if let Some(signal) = failover_signal(&answer.head) {
        let body = upstream::read_small_body(&mut answer.up, 16 << 10).await;
        answer.up.shutdown().await;
        let reason = format!("upstream answered {status}: {}", upstream::error_message(&body));
        return Attempt::Retry { status: Some(status), reason, signal };
    }
    let success = answer.head.status.is_success();
    let Prepared { translation, .. } = prepared;
    if let (Some((pair, tctx)), false) = (translation.as_ref(), success) {
        return refuse_translated(session, ctx, channel, answer, *pair, tctx, out.stream).await;
    }
    let is_sse =
        answer.head.headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let translated = translation.is_some();
    let mut relay = relay_for(ctx, out, translation, is_sse, success);
    answer.up.set_read_timeout(Some(timeouts.idle));
    let streaming = is_sse || (translated && out.stream);
    let (held, ended) = if streaming && success {
        let hold_until = deadline.min(tokio::time::Instant::now() + app.config.routing.stream_hold);
        match hold(session, &mut answer.up, relay.as_mut(), hold_until).await {
            Ok(h) => h,
            Err(a) => return a,
        }
    } else {
        (BytesMut::new(), false)
    };
    let keepalive = app.config.routing.stream_keepalive.filter(|_| streaming && out.stream);
    let body = Body { relay: relay.as_mut(), held, ended, is_sse, translated, deadline, keepalive };
    deliver(app, session, ctx, channel, answer, body, out).await
}

/// Phase 1: the body and head in the channel's API.
fn prepare(app: &App, session: &Session, channel: &Channel, route: Route, out: &Outbound) -> Result<Prepared, Attempt> {
    if channel.addrs().is_empty() {
        let reason = format!("{} is not resolved", channel.base_url().host);
        return Err(Attempt::Retry { status: None, reason, signal: Signal::Failure });
    }
    let upstream_model = channel.upstream_model(&out.model).unwrap_or(&out.model);
    let (body, endpoint, translation) = match route {
        Route::Native => {
            let body = rewrite_for_upstream(out.body.clone(), Some(upstream_model), out.add_include_usage);
            (body, out.endpoint, None)
        }
        Route::Translate(pair) => {
            let json = out.json().map_err(Attempt::Reject)?;
            let mut tctx = Ctx::new(&out.model, upstream_model, app.ids.clone(), app.signer.clone());
            tctx.context_window = channel.cfg.context_window;
            tctx.quirks = channel.cfg.quirks.clone();
            let body = translate::request(pair, json, &mut tctx).map_err(Attempt::Reject)?;
            (body, pair.upstream_endpoint(), Some((pair, tctx)))
        }
    };
    let pair = translation.as_ref().map(|(p, _)| *p);
    let header = upstream::request_header(session, channel, endpoint, pair, body.len()).map_err(|e| {
        Attempt::Retry { status: None, reason: format!("building request: {e}"), signal: Signal::Failure }
    })?;
    Ok(Prepared { header, body, translation })
}

/// Phase 2: sends the request and waits for the response head, noticing a
/// client that hangs up meanwhile.
async fn send(app: &App, session: &mut Session, channel: &Channel, p: &Prepared) -> Result<Answer, Attempt> {
    let fail = |reason: String| Attempt::Retry { status: None, reason, signal: Signal::Failure };
    let timeouts = channel.cfg.timeouts;
    let (mut up, peer) =
        upstream::send_request(app, channel.peers(), &p.header, &p.body, timeouts.idle).await.map_err(fail)?;
    up.set_read_timeout(Some(timeouts.first_byte));
    let read = tokio::select! {
        r = up.read_response_header() => r,
        _ = session.as_downstream_mut().read_body_or_idle(true) => {
            up.shutdown().await;
            return Err(Attempt::ClientGone);
        }
    };
    if let Err(e) = read {
        up.shutdown().await;
        return Err(fail(format!("no response header: {e}")));
    }
    let head = up.response_header().cloned().ok_or_else(|| fail("no response header".into()))?;
    Ok(Answer { up, peer, head })
}

/// Phase 3: whether the head is one another channel should get a chance at
/// (429, 5xx, the channel's own key refused), and what it says about the
/// channel.
fn failover_signal(head: &ResponseHeader) -> Option<Signal> {
    match head.status.as_u16() {
        429 => Some(Signal::RateLimited(rate_limit_reset(&head.headers, crate::clock::now_ms()))),
        401 | 403 => Some(Signal::AuthRefused),
        s if s >= 500 => Some(Signal::Failure),
        _ => None,
    }
}

/// Phase 4, for a 2xx stream: what was held before its first content (or
/// the hold's end), and whether the body already ended.
async fn hold(
    session: &mut Session,
    up: &mut HttpSession,
    relay: &mut dyn Relay,
    hold_until: tokio::time::Instant,
) -> Result<(BytesMut, bool), Attempt> {
    let failed = match relay::hold_head(session, up, relay, hold_until).await {
        Held::Ready(held, ended) => return Ok((held, ended)),
        Held::Failed(reason) => Attempt::Retry { status: Some(200), reason, signal: Signal::Failure },
        Held::ClientGone => Attempt::ClientGone,
    };
    up.shutdown().await;
    Err(failed)
}

/// The upstream refused a translated request (400, 404, 413…): the client
/// gets that refusal in its own API's words.
async fn refuse_translated(
    session: &mut Session,
    ctx: &mut RequestCtx,
    channel: &Channel,
    mut answer: Answer,
    pair: Pair,
    tctx: &Ctx,
    stream: bool,
) -> Attempt {
    let body = upstream::read_small_body(&mut answer.up, 64 << 10).await;
    answer.up.shutdown().await;
    ctx.channel = Some(channel.name().to_string());
    ctx.translation = Some(pair.label());
    ctx.error_detail = Some(upstream::error_message(&body));
    let (status, content_type, body) = translate::error(pair, answer.head.status.as_u16(), &body, tctx, stream, None);
    let delivered = super::respond::send_typed(session, ctx, status, content_type, &[], body).await;
    if delivered {
        ctx.failure = Some(Failure::UpstreamRefused);
        Attempt::Delivered
    } else {
        Attempt::ClientGone
    }
}

/// The relay that turns the upstream body into the client's.
fn relay_for(
    ctx: &mut RequestCtx,
    out: &Outbound,
    translation: Option<(Pair, Ctx)>,
    is_sse: bool,
    success: bool,
) -> Box<dyn Relay> {
    match translation {
        Some((pair, tctx)) => {
            ctx.translation = Some(pair.label());
            Box::new(Translating::new(pair, tctx, is_sse, out.stream))
        }
        None if is_sse && success => {
            Box::new(SsePassthrough::new(out.protocol, out.add_include_usage && !out.client_wants_usage))
        }
        None => Box::new(JsonPassthrough::new(if success { out.protocol } else { Protocol::CountTokens })),
    }
}

/// What phase 5 relays.
struct Body<'r> {
    relay: &'r mut dyn Relay,
    /// Client bytes held while waiting for content.
    held: BytesMut,
    /// The upstream body already ended.
    ended: bool,
    is_sse: bool,
    translated: bool,
    deadline: tokio::time::Instant,
    keepalive: Option<Duration>,
}

/// Phase 5, committed: from here on the client gets this upstream's answer.
/// Writes the head and the body, settles the usage seen, and returns the
/// connection to the pool when the body ended cleanly.
async fn deliver(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    channel: &Channel,
    answer: Answer,
    body: Body<'_>,
    out: &Outbound,
) -> Attempt {
    let Answer { mut up, peer, head } = answer;
    let Body { relay, held, ended, is_sse, translated, deadline, keepalive } = body;
    ctx.channel = Some(channel.name().to_string());
    ctx.ttfb = Some(ctx.started.elapsed());
    let success = head.status.is_success();
    // A translated body is in the client's format, whatever the upstream sent.
    let content_type = translated.then_some(if out.stream { "text/event-stream" } else { "application/json" });
    if let Err(e) = relay::write_head(session, ctx, &head, relay.preserves_length(), content_type).await {
        log::debug!("{}: client gone before the response header: {e}", ctx.request_id);
        up.shutdown().await;
        return Attempt::ClientGone;
    }
    ctx.status = head.status.as_u16();
    if !success {
        ctx.failure = Some(Failure::UpstreamRefused);
    }
    let mut outcome = if ended {
        let mut tail = held;
        tail.extend_from_slice(&relay.finish());
        match session.write_response_body((!tail.is_empty()).then(|| tail.freeze()), true).await {
            Ok(()) => Relayed::Complete,
            Err(_) => Relayed::ClientGone,
        }
    } else if !held.is_empty() && session.write_response_body(Some(held.freeze()), false).await.is_err() {
        Relayed::ClientGone
    } else {
        relay::pump(session, ctx, &mut up, relay, deadline, keepalive).await
    };
    if matches!(outcome, Relayed::ClientGone) && !is_sse {
        // A non-streaming answer is already generated: reading the rest costs
        // the upstream nothing and gives the exact usage to bill.
        outcome = relay::drain(&mut up, relay, deadline).await;
        ctx.failure = Some(Failure::ClientGone);
    }
    ctx.usage = relay.usage();
    if success && !relay.usage_complete() && !matches!(outcome, Relayed::Complete) {
        // Cut short before the final usage report: bill what was reported,
        // with output at least what the streamed text implies.
        ctx.usage = Some(estimate::incomplete(relay.usage(), ctx.body_len, relay.output_chars()));
        ctx.estimated = true;
    }
    match outcome {
        Relayed::Complete => {
            upstream::release(app, up, &peer, channel.pool_idle_timeout()).await;
        }
        Relayed::UpstreamFailed(reason) => {
            log::warn!("{}: stream from {} failed: {reason}", ctx.request_id, channel.name());
            channel.state.note_error(crate::clock::now_ms(), &reason);
            ctx.failure = Some(Failure::UpstreamBroke);
            ctx.error_detail = Some(reason);
            up.shutdown().await;
        }
        Relayed::ClientGone => {
            ctx.failure = Some(Failure::ClientGone);
            up.shutdown().await;
        }
    }
    Attempt::Delivered
}
