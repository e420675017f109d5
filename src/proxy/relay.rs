//! The client side of an attempt: holding a stream's head until its first
//! content (bounded), writing the response head, and pumping the body through
//! the relay with keep-alives, coalesced writes and the client protocol's
//! error event when the upstream breaks mid-response.

use super::ctx::RequestCtx;
use crate::api::ErrorShape;
use crate::convert::Relay;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use std::time::Duration;

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

/// How holding a stream's head ended.
pub(super) enum Held {
    /// Commit: what was held, and whether the upstream body already ended.
    Ready(BytesMut, bool),
    /// Nothing reached the client and the upstream failed: fail over.
    Failed(String),
    ClientGone,
}

/// Reads a 2xx stream until its first content event, holding what came before
/// (so an error event that arrives before any content can still fail over),
/// but only until `hold_until`: then what is held goes out and the stream is
/// committed, content or not.
pub(super) async fn hold_head(
    session: &mut Session,
    up: &mut HttpSession,
    relay: &mut dyn Relay,
    hold_until: tokio::time::Instant,
) -> Held {
    let mut held = BytesMut::new();
    loop {
        if let Some(err) = relay.stream_error().filter(|_| !relay.content_started()) {
            return Held::Failed(format!("error event before any content: {}", err.message));
        }
        if relay.content_started() {
            return Held::Ready(held, false);
        }
        // The hold ends at `hold_until` (the earlier of `stream_hold` and the
        // total timeout): a read still pending then is dropped before it has
        // taken any bytes, and the pump reads on.
        let next = tokio::select! {
            r = up.read_response_body() => r,
            _ = session.as_downstream_mut().read_body_or_idle(true) => return Held::ClientGone,
            _ = tokio::time::sleep_until(hold_until) => return Held::Ready(held, false),
        };
        match next {
            Ok(Some(chunk)) => held.extend_from_slice(&relay.push(chunk)),
            Ok(None) => return Held::Ready(held, true),
            Err(e) => return Held::Failed(format!("stream failed before any content: {e}")),
        }
    }
}

/// Reads the rest of an upstream body nobody will receive, for its usage.
pub(super) async fn drain(up: &mut HttpSession, relay: &mut dyn Relay, deadline: tokio::time::Instant) -> Relayed {
    loop {
        match tokio::time::timeout_at(deadline, up.read_response_body()).await {
            Ok(Ok(Some(chunk))) => {
                relay.push(chunk);
            }
            Ok(Ok(None)) => {
                relay.finish();
                return Relayed::Complete;
            }
            _ => return Relayed::ClientGone,
        }
    }
}

pub(super) async fn write_head(
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

/// How relaying a response body ended.
pub(super) enum Relayed {
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
pub(super) async fn pump(
    session: &mut Session,
    ctx: &RequestCtx,
    up: &mut HttpSession,
    relay: &mut dyn Relay,
    deadline: tokio::time::Instant,
    keepalive: Option<Duration>,
) -> Relayed {
    // A read that completed while a burst was being gathered, handled first.
    let mut ready: Option<pingora::Result<Option<Bytes>>> = None;
    loop {
        let next = match ready.take() {
            Some(r) => Ok(r),
            None => tokio::select! {
                r = tokio::time::timeout_at(deadline, up.read_response_body()) => r,
                _ = session.as_downstream_mut().read_body_or_idle(true) => return Relayed::ClientGone,
                _ = tokio::time::sleep(keepalive.unwrap_or_default()), if keepalive.is_some() => {
                    if session.write_response_body(Some(Bytes::from_static(KEEPALIVE_COMMENT)), false).await.is_err() {
                        return Relayed::ClientGone;
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
                    return Relayed::ClientGone;
                }
                continue;
            }
            Ok(Ok(None)) => {
                let tail = relay.finish();
                let tail = (!tail.is_empty()).then_some(tail);
                if session.write_response_body(tail, true).await.is_err() {
                    return Relayed::ClientGone;
                }
                return Relayed::Complete;
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
        return Relayed::UpstreamFailed(failure);
    }
}
