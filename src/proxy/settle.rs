//! What `logging` does once per request: the usage record (through the batched
//! writer) and the access-log line. Runs on every path, rejected requests
//! included.

use super::ctx::{Failure, RequestCtx};
use crate::access_log::{timestamp, AccessLine, Tokens};
use crate::app::App;
use crate::config::units::format_credits;
use crate::store::writer::{UsageRecord, WriteOp};
use pingora::proxy::Session;

fn endpoint_name(ctx: &RequestCtx) -> &'static str {
    use crate::api::Endpoint::*;
    match ctx.endpoint {
        Some(ChatCompletions) => "chat",
        Some(Responses) => "responses",
        Some(ResponsesCompact) => "responses_compact",
        Some(Embeddings) => "embeddings",
        Some(Messages) => "messages",
        Some(CountTokens) => "count_tokens",
        Some(Models) => "models",
        Some(Account) => "account",
        Some(BillingSubscription) => "billing_subscription",
        Some(BillingUsage) => "billing_usage",
        Some(Redeem) => "redeem",
        Some(ResponsesSocket) => "responses_websocket",
        Some(Health) => "health",
        Some(Ready) => "ready",
        None => "unknown",
    }
}

/// The request in `/metrics`.
fn count(app: &App, ctx: &RequestCtx, cost: i64, total_ms: u64) {
    let m = &app.metrics;
    m.observe(&crate::metrics::Observed {
        endpoint: endpoint_name(ctx),
        model: ctx.model.as_deref(),
        channel: ctx.channel.as_deref(),
        status: ctx.status,
        total_secs: total_ms as f64 / 1000.0,
        ttfb_secs: ctx.ttfb.map(|d| d.as_secs_f64()),
    });
    if let Some(u) = &ctx.usage {
        m.bill(
            [u.input, u.cache_read, u.cache_write, u.output, u.reasoning],
            if ctx.billed_to.is_some() { cost } else { 0 },
        );
    }
    if let Some(Failure::Refused(kind)) = ctx.failure {
        if let Some(limit) = crate::metrics::refusal_limit(kind) {
            m.refused(limit);
        }
    }
    // Every attempt but a delivering last one was given up for another.
    let given_up = ctx.attempts.iter().filter(|a| a.error.is_some() || ctx.channel.as_deref() != Some(&a.channel));
    for a in given_up {
        m.failover(crate::metrics::failover_reason(a.status, a.error.as_deref().unwrap_or("")));
    }
}

pub async fn settle(app: &App, session: &Session, ctx: &mut RequestCtx) {
    let total_ms = ctx.started.elapsed().as_millis() as u64;
    if ctx.status == 0 {
        ctx.status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
    }
    app.traffic.record(ctx.received_ms, ctx.status);
    let usage = ctx.usage.unwrap_or_default();
    let cost = ctx.model.as_deref().and_then(|m| app.config.model(m)).map(|m| usage.cost(&m.price)).unwrap_or(0);
    // Charge (or just release) the admission: the upstream's reported usage,
    // nothing for a failed call without usage.
    let charge = ctx.ticket.take().and_then(|t| {
        ctx.billed_to = Some(t.source.as_str());
        t.settle(cost, &ctx.request_id, ctx.model.as_deref().unwrap_or(""))
    });
    // A usage record exists for every request that reached an upstream.
    let forwarded = ctx.channel.is_some() || !ctx.attempts.is_empty();
    count(app, ctx, cost, total_ms);
    let tokens = ctx.usage.map(|u| Tokens {
        input: u.input,
        cached: u.cache_read,
        cache_write: u.cache_write,
        output: u.output,
        reasoning: u.reasoning,
    });
    let attempts_json = (!ctx.attempts.is_empty()).then(|| serde_json::to_string(&ctx.attempts).unwrap_or_default());

    if forwarded {
        let record = UsageRecord {
            request_id: ctx.request_id.clone(),
            created_at: ctx.received_ms,
            key_id: ctx.identity.as_ref().map(|i| i.key.id),
            user_id: ctx.identity.as_ref().map(|i| i.user.id),
            endpoint: endpoint_name(ctx),
            model: ctx.model.clone(),
            channel: ctx.channel.clone(),
            input_tokens: usage.input,
            cached_tokens: usage.cache_read,
            cache_write_tokens: usage.cache_write,
            output_tokens: usage.output,
            reasoning_tokens: usage.reasoning,
            status: ctx.status,
            upstream_status: ctx.upstream_status,
            latency_ms: total_ms,
            ttfb_ms: ctx.ttfb.map(|d| d.as_millis() as u64),
            stream: ctx.stream,
            estimated: ctx.estimated,
            cost,
            billed_to: ctx.billed_to,
            attempts: attempts_json,
            translation: ctx.translation,
        };
        // Usage and charge commit in the same batch transaction.
        let op = match charge {
            Some(entry) => WriteOp::Charge(Box::new(record), entry),
            None => WriteOp::Usage(Box::new(record)),
        };
        app.writer.send(op).await;
    } else if let Some(entry) = charge {
        app.writer.send(WriteOp::Ledger(entry)).await;
    }

    let req = session.req_header();
    let line = AccessLine {
        time: timestamp(ctx.received_ms),
        request_id: ctx.request_id.clone(),
        client_ip: ctx
            .client_ip
            .or_else(|| session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
            .map(|ip| ip.to_string()),
        key_prefix: ctx.identity.as_ref().map(|i| i.key.prefix()),
        user: ctx.identity.as_ref().map(|i| i.user.email.clone()),
        method: req.method.to_string(),
        path: req.uri.path().to_string(),
        model: ctx.model.clone(),
        channel: ctx.channel.clone(),
        status: ctx.status,
        upstream_status: ctx.upstream_status,
        stream: ctx.stream,
        tokens,
        estimated: ctx.estimated,
        cost: forwarded.then(|| format_credits(cost)),
        billed_to: ctx.billed_to,
        ttfb_ms: ctx.ttfb.map(|d| d.as_millis() as u64),
        total_ms,
        bytes_in: session.body_bytes_read() as u64,
        bytes_out: session.body_bytes_sent() as u64,
        error: ctx.failure.map(Failure::as_str),
        error_detail: ctx.error_detail.clone(),
        attempts: std::mem::take(&mut ctx.attempts),
        translation: ctx.translation,
    };
    app.access_log.write(line).await;
}
