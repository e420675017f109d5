//! Account endpoints answered by the gateway itself: `GET /v1/account`, the
//! OpenAI-legacy billing endpoints that usage widgets read, and
//! `POST /v1/redeem`.

use super::ctx::RequestCtx;
use super::respond;
use crate::accounts::ops::{self, Redeemed};
use crate::accounts::Identity;
use crate::app::App;
use crate::billing::Ticket;
use crate::config::units::{format_credits, MICROS_PER_CREDIT};
use crate::error::GatewayError;
use pingora::proxy::Session;
use serde_json::{json, Value};

fn rfc3339(ms: i64) -> String {
    crate::access_log::timestamp(ms)
}

/// The account as JSON (shared by `/v1/account` and `/v1/redeem`).
fn account_json(app: &App, id: &Identity) -> Value {
    let now = app.billing.now_ms();
    let view = app.billing.view(&id.user);
    let plan = id.user.active_plan(&app.config, now).map(|(sub, p)| {
        json!({
            "id": p.id,
            "name": p.name,
            "expires_at": rfc3339(sub.expires_at),
            "daily_quota": format_credits(p.daily_quota),
            "used_today": format_credits(view.plan_used_today),
            "remaining_today": format_credits((p.daily_quota - view.plan_used_today).max(0)),
            "resets_at": rfc3339(view.next_reset_ms),
            "requests_per_minute": p.requests_per_minute,
        })
    });
    json!({
        "object": "account",
        "email": id.user.email,
        "key": {
            "prefix": id.key.prefix(),
            "name": id.key.name,
            "expires_at": id.key.expires_at.map(rfc3339),
            "models": id.key.allowed_models,
        },
        "plan": plan,
        "balance": format_credits(view.balance),
        "reserved": format_credits(view.reserved),
        "concurrency": {"limit": view.concurrency_limit, "in_use": view.inflight},
    })
}

pub async fn account(app: &App, session: &mut Session, ctx: &mut RequestCtx, id: &Identity) {
    let mut v = account_json(app, id);
    // On a cluster, the requests in flight on every node.
    if let Some(c) = app.billing.cluster() {
        if let Ok(n) = c.in_flight(id.user.id).await {
            v["concurrency"]["in_use"] = n.into();
        }
    }
    respond::json(session, ctx, &v).await;
}

fn usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_CREDIT as f64
}

/// `GET /v1/dashboard/billing/subscription`: `hard_limit_usd` is everything
/// the user was granted (balance + spent), the convention one-api/new-api
/// widgets rely on (remaining = hard limit − usage).
pub async fn legacy_subscription(app: &App, session: &mut Session, ctx: &mut RequestCtx, id: &Identity) {
    let view = app.billing.view(&id.user);
    let total = usd(view.balance + view.spent);
    let until = id.user.active_plan(&app.config, app.billing.now_ms()).map_or(0, |(s, _)| s.expires_at / 1000);
    let v = json!({
        "object": "billing_subscription",
        "has_payment_method": true,
        "soft_limit_usd": total,
        "hard_limit_usd": total,
        "system_hard_limit_usd": total,
        "access_until": until,
    });
    respond::json(session, ctx, &v).await;
}

/// `GET /v1/dashboard/billing/usage`: credits spent, in cents (all time; the
/// date parameters of the legacy API are accepted and ignored).
pub async fn legacy_usage(app: &App, session: &mut Session, ctx: &mut RequestCtx, id: &Identity) {
    let view = app.billing.view(&id.user);
    respond::json(session, ctx, &json!({"object": "list", "total_usage": usd(view.spent) * 100.0})).await;
}

/// `POST /v1/redeem {"code": "CPX-…"}`.
pub async fn redeem(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    id: &Identity,
    body: &[u8],
) -> Result<(), GatewayError> {
    #[derive(serde::Deserialize)]
    struct Req {
        code: Option<String>,
    }
    let req: Req = serde_json::from_slice(body).map_err(|e| GatewayError::InvalidJson(e.to_string()))?;
    let code = req.code.filter(|c| !c.trim().is_empty()).ok_or(GatewayError::MissingField("code"))?;
    app.billing.redeem_allowed(id.user.id).await?;
    let (cfg, user_id) = (app.config.clone(), id.user.id);
    // A rare, transactional write: on the blocking pool with a pooled
    // connection, never on the request threads.
    let result =
        app.db.run(move |conn| Ok::<_, crate::store::StoreError>(ops::redeem(conn, &cfg, user_id, &code))).await;
    let redeemed = match result.map_err(|e| GatewayError::Internal(e.to_string()))?.map_err(GatewayError::from) {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, GatewayError::RedeemInvalid(_) | GatewayError::RedeemConflict(_)) {
                app.billing.redeem_failed(id.user.id).await;
            }
            return Err(e);
        }
    };
    // Load the change (ledger entry, subscription) before answering.
    app.writer.flush().await;
    let what = match redeemed {
        Redeemed::Credits(c) => json!({"credits": format_credits(c)}),
        Redeemed::Plan(s) => json!({"plan": s.plan_id, "expires_at": rfc3339(s.expires_at)}),
    };
    let identity = app.accounts.snapshot().user(id.user.id).cloned().map(|user| Identity { key: id.key.clone(), user });
    let mut v = account_json(app, identity.as_ref().unwrap_or(id));
    v["redeemed"] = what;
    respond::json(session, ctx, &v).await;
    Ok(())
}

/// Response headers with the remaining plan quota and credit balance, as of
/// admission.
pub fn quota_headers(t: &Ticket) -> Vec<(&'static str, String)> {
    let mut h = vec![("x-credits-balance", format_credits(t.balance))];
    if let Some(r) = t.plan_remaining {
        h.push(("x-plan-quota-remaining", format_credits(r)));
    }
    h
}
