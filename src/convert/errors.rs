//! Upstream errors in the client's protocol (§7.3): classified from any body
//! (OpenAI-shaped, Anthropic-shaped, plain text, HTML), re-rendered with the
//! status and type the client's SDK branches on, and the context-overflow
//! wording Claude Code and Codex act on (§7.3.1, §7.3.2).

use super::context::Ctx;
use super::ir::ErrKind;
use super::{anthropic, chat, responses};
use crate::api::Protocol;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

/// Whether an error is the prompt not fitting the model's context.
pub fn is_context_overflow(code: &str, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == "context_length_exceeded"
        || [
            "maximum context length",
            "context window",
            "prompt is too long",
            "input length and `max_tokens` exceed context limit",
            "exceeds the context window",
            "too many tokens",
        ]
        .iter()
        .any(|p| m.contains(p))
}

/// An upstream error, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub kind: ErrKind,
    pub message: String,
}

pub fn classify(status: u16, body: &[u8]) -> UpstreamError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get("error").unwrap_or(&Value::Null);
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect::<String>().trim().to_string());
    let ty = e.get("type").and_then(Value::as_str).unwrap_or("");
    let code = e.get("code").and_then(Value::as_str).unwrap_or("");
    let kind = if is_context_overflow(code, &message) {
        ErrKind::ContextOverflow
    } else if v.get("type").and_then(Value::as_str) == Some("error") {
        anthropic::err_kind(ty)
    } else if !ty.is_empty() || !code.is_empty() {
        match chat::err_kind(ty, code, &message) {
            ErrKind::InvalidRequest | ErrKind::Server => by_status(status),
            k => k,
        }
    } else {
        by_status(status)
    };
    UpstreamError { kind, message }
}

fn by_status(status: u16) -> ErrKind {
    match status {
        400 | 422 => ErrKind::InvalidRequest,
        401 => ErrKind::Auth,
        402 => ErrKind::Quota,
        403 => ErrKind::Permission,
        404 => ErrKind::NotFound,
        408 | 504 => ErrKind::Timeout,
        413 => ErrKind::TooLarge,
        429 => ErrKind::RateLimit,
        503 | 529 => ErrKind::Overloaded,
        502 => ErrKind::Protocol,
        _ => ErrKind::Server,
    }
}

/// "prompt is too long: N tokens > M maximum": M from the message or the
/// channel's context window, N from the message or the estimate, N > M.
pub fn overflow_message(message: &str, ctx: &Ctx) -> String {
    let numbers: Vec<u64> =
        message.split(|c: char| !c.is_ascii_digit()).filter(|s| s.len() >= 3).filter_map(|s| s.parse().ok()).collect();
    let lower = message.to_ascii_lowercase();
    let max = ["maximum context length is ", "context window of ", "> "]
        .iter()
        .find_map(|p| {
            lower
                .find(p)
                .and_then(|i| lower[i + p.len()..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        })
        .or(ctx.context_window)
        .or_else(|| numbers.iter().min().copied());
    let max = max.unwrap_or(ctx.prompt_estimate.saturating_sub(1).max(1));
    let used = numbers.iter().copied().filter(|&n| n != max).max().unwrap_or(ctx.prompt_estimate).max(max + 1);
    format!("prompt is too long: {used} tokens > {max} maximum (upstream: {message})")
}

/// An upstream error rendered for the client: status, content type, body.
pub fn render(
    err: &UpstreamError,
    client: Protocol,
    ctx: &Ctx,
    stream: bool,
    retry_after: Option<u64>,
) -> (u16, &'static str, Bytes) {
    let status_of = |kind: ErrKind, anthropic_client: bool| match kind {
        ErrKind::InvalidRequest | ErrKind::ContextOverflow => 400,
        ErrKind::Auth => 401,
        ErrKind::Permission => 403,
        ErrKind::NotFound => 404,
        ErrKind::TooLarge => 413,
        ErrKind::RateLimit => 429,
        ErrKind::Quota if anthropic_client => 402,
        ErrKind::Quota => 429,
        ErrKind::Overloaded if anthropic_client => 529,
        ErrKind::Overloaded => 503,
        ErrKind::Timeout => 504,
        ErrKind::Protocol => 502,
        ErrKind::Server => 500,
    };
    match client {
        Protocol::Messages | Protocol::CountTokens => {
            let message = if err.kind == ErrKind::ContextOverflow {
                overflow_message(&err.message, ctx)
            } else {
                err.message.clone()
            };
            let body = json!({"type": "error", "error": {"type": anthropic::error_type(err.kind), "message": message}, "request_id": null});
            (status_of(err.kind, true), "application/json", Bytes::from(body.to_string()))
        }
        // Codex only acts on overflow inside a stream's response.failed.
        Protocol::Responses if stream && err.kind == ErrKind::ContextOverflow => {
            let mut em = responses::Emitter::new(ctx, false);
            let mut out = BytesMut::new();
            em.error(ctx, ErrKind::ContextOverflow, &err.message, &mut out);
            (200, "text/event-stream", out.freeze())
        }
        _ => {
            let (ty, code) = chat::error_type_code(err.kind);
            let mut message = err.message.clone();
            if err.kind == ErrKind::RateLimit {
                if let Some(s) = retry_after {
                    message = format!("{}. Please try again in {s}s.", message.trim_end_matches('.'));
                }
            }
            let param = match (err.kind, client) {
                (ErrKind::ContextOverflow, Protocol::Responses) => json!("input"),
                (ErrKind::ContextOverflow, _) => json!("messages"),
                _ => Value::Null,
            };
            let body = json!({"error": {"message": message, "type": ty, "param": param, "code": code}});
            (status_of(err.kind, false), "application/json", Bytes::from(body.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::support::{FixedIds, Signer};
    use std::sync::Arc;

    fn ctx() -> Ctx {
        Ctx::new("m", "up", Arc::new(FixedIds::new(1_700_000_000)), Arc::new(Signer::new([0; 32])))
    }

    #[test]
    fn classifies_shapes() {
        let e =
            classify(400, br#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}"#);
        assert_eq!(e, UpstreamError { kind: ErrKind::InvalidRequest, message: "bad".into() });
        let e = classify(529, br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);
        assert_eq!(e.kind, ErrKind::Overloaded);
        assert_eq!(classify(502, b"<html>bad gateway</html>").kind, ErrKind::Protocol);
        let e = classify(400, br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#);
        assert_eq!(e.kind, ErrKind::ContextOverflow);
    }

    #[test]
    fn overflow_wording() {
        let m =
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens.";
        assert_eq!(
            overflow_message(m, &ctx()),
            format!("prompt is too long: 131072 tokens > 128000 maximum (upstream: {m})")
        );
        let mut c = ctx();
        c.context_window = Some(32_768);
        c.prompt_estimate = 100;
        assert_eq!(
            overflow_message("context window exceeded", &c),
            "prompt is too long: 32769 tokens > 32768 maximum (upstream: context window exceeded)"
        );
    }
}
