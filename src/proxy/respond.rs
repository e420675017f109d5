//! Responses the gateway writes itself: JSON answers and errors in the client's
//! protocol shape, always with `x-request-id`.

use super::ctx::{Failure, RequestCtx};
use crate::api::ErrorShape;
use crate::error::GatewayError;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Writes a complete response; returns whether the client got it. Failures
/// to write mean the client is gone; they are recorded, not propagated.
pub async fn send(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    headers: &[(&str, String)],
    body: Bytes,
) -> bool {
    send_typed(session, ctx, status, "application/json", headers, body).await
}

/// `send` with another content type (an error event stream for a streaming
/// client of a translated request).
pub async fn send_typed(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> bool {
    let mut resp = match ResponseHeader::build(status, Some(headers.len() + 4)) {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot build a {status} response: {e}");
            return false;
        }
    };
    let _ = resp.insert_header("content-type", content_type);
    let _ = resp.insert_header("content-length", body.len().to_string());
    let _ = resp.insert_header("x-request-id", ctx.request_id.as_str());
    if ctx.shape == ErrorShape::Anthropic {
        let _ = resp.insert_header("request-id", ctx.request_id.as_str());
    }
    for (k, v) in headers {
        let _ = resp.insert_header(k.to_string(), v.as_str());
    }
    ctx.status = status;
    let is_head = session.req_header().method == http::Method::HEAD;
    if let Err(e) = session.write_response_header(Box::new(resp), is_head).await {
        ctx.failure.get_or_insert(Failure::ClientGone);
        log::debug!("{}: writing response header failed: {e}", ctx.request_id);
        return false;
    }
    if is_head {
        return true;
    }
    if let Err(e) = session.write_response_body(Some(body), true).await {
        ctx.failure.get_or_insert(Failure::ClientGone);
        log::debug!("{}: writing response body failed: {e}", ctx.request_id);
        return false;
    }
    true
}

/// Writes `value` as a 200 JSON response.
pub async fn json(session: &mut Session, ctx: &mut RequestCtx, value: &serde_json::Value) {
    let body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
    send(session, ctx, 200, &[], body).await;
}

/// Writes a gateway error in the client's shape with the retry headers.
pub async fn error(session: &mut Session, ctx: &mut RequestCtx, err: &GatewayError) {
    ctx.failure = Some(Failure::Refused(err.kind()));
    ctx.error_detail = Some(err.to_string());
    let mut headers: Vec<(&str, String)> = Vec::with_capacity(2);
    if err.should_not_retry() {
        headers.push(("x-should-retry", "false".into()));
    }
    if let Some(secs) = err.retry_after() {
        headers.push(("retry-after", secs.to_string()));
    }
    // An unread oversized body must not be drained for keep-alive.
    if matches!(err, GatewayError::BodyTooLarge { .. }) {
        session.set_keepalive(None);
    }
    let body = err.body(ctx.shape, &ctx.request_id);
    send(session, ctx, err.status(), &headers, body).await;
}
