//! Admin API routes. Reads and writes run on the blocking pool with their own
//! SQLite connection; after a write the call waits for the gateway's writer to
//! load the change.

use super::{AdminError, AdminResult, Reply, Req};
use crate::accounts::ops::Ops;
use crate::app::App;
use crate::billing::clock::parse_time;
use crate::config::units::{format_credits, parse_credits};
use crate::store::accounts::{self as sql, KeyRow};
use crate::store::billing::{self, Grant};
use crate::store::usage::{self, GroupBy, UsageFilter};
use crate::store::{self, StoreError};
use http::StatusCode;
use rusqlite::Connection;
use serde_json::{json, Value};
use std::sync::Arc;

fn bad(msg: impl Into<String>) -> AdminError {
    AdminError(StatusCode::BAD_REQUEST, msg.into())
}

fn ok(v: Value) -> AdminResult {
    Ok(Reply::Json(StatusCode::OK, v))
}

/// Runs `f` with a pooled connection on the blocking pool.
async fn with_db<T: Send + 'static>(
    app: &Arc<App>,
    actor: &str,
    f: impl FnOnce(&Connection, &Ops) -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    let (cfg, actor) = (app.config.clone(), actor.to_string());
    app.db
        .run(move |conn| {
            let ops = Ops { conn, cfg: &cfg, actor: &actor };
            f(conn, &ops)
        })
        .await
}

/// A write: runs it, then waits until the gateway has loaded it.
async fn change<T: Send + 'static>(
    app: &Arc<App>,
    actor: &str,
    f: impl FnOnce(&Connection, &Ops) -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    let out = with_db(app, actor, f).await?;
    app.writer.flush().await;
    Ok(out)
}

fn when(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |t| json!(crate::access_log::timestamp(t)))
}

fn key_json(k: &KeyRow) -> Value {
    json!({
        "id": k.id, "prefix": k.prefix(), "name": k.name, "status": k.status,
        "expires_at": when(k.expires_at), "models": k.allowed_models,
        "created_at": when(Some(k.created_at)), "last_used_at": when(k.last_used_at),
        "deleted_at": when(k.deleted_at),
    })
}

/// `null`/absent → None; a string is a date, time or duration.
fn optional_time(v: &Value, field: &str, tz: i32) -> Result<Option<i64>, AdminError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_time(s, tz).map(Some).map_err(bad),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad(format!("{field}: invalid time"))),
        Some(_) => Err(bad(format!("{field}: expected a date, time or duration"))),
    }
}

fn optional_models(v: &Value) -> Result<Option<Vec<String>>, AdminError> {
    match v.get("models") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|m| m.as_str().map(str::to_string).ok_or_else(|| bad("models: expected strings")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad("models: expected a list of model patterns or null")),
    }
}

fn amount(v: &Value, field: &str) -> Result<i64, AdminError> {
    match v.get(field) {
        Some(Value::String(s)) => parse_credits(s).map_err(bad),
        Some(Value::Number(n)) => parse_credits(&n.to_string()).map_err(bad),
        _ => Err(bad(format!("{field}: required, in credits (\"12.5\")"))),
    }
}

fn user_summary(app: &App, conn: &Connection, u: &sql::UserRow) -> Result<Value, StoreError> {
    let sub = billing::current_subscription(conn, u.id)?;
    let now = store::now_ms();
    let balance = billing::credit_balance(conn, u.id)?;
    let live = app.accounts.snapshot().user(u.id).map(|e| app.billing.view(e));
    Ok(json!({
        "id": u.id, "email": u.email, "status": u.status, "created_at": when(Some(u.created_at)),
        "balance": format_credits(balance),
        "plan": sub.filter(|s| s.expires_at > now).map(|s| json!({"id": s.plan_id, "expires_at": when(Some(s.expires_at))})),
        "in_flight": live.as_ref().map(|v| v.inflight),
        "plan_used_today": live.map(|v| format_credits(v.plan_used_today)),
    }))
}

/// An order as the admin API shows it.
pub fn order_json(o: &crate::store::orders::OrderRow) -> Value {
    json!({
        "id": o.id, "user": o.email, "provider": o.provider, "method": o.method, "status": o.status,
        "amount": crate::config::units::format_money(o.amount, &o.currency), "currency": o.currency,
        "credits": format_credits(o.credits), "plan": o.plan_id, "package": o.package,
        "provider_ref": o.provider_ref, "ledger_id": o.ledger_id, "note": o.note,
        "created_at": when(Some(o.created_at)), "expires_at": when(Some(o.expires_at)), "paid_at": when(o.paid_at),
    })
}

fn order_error(e: crate::payments::orders::OrderError) -> AdminError {
    use crate::payments::orders::OrderError;
    match e {
        OrderError::NotFound(_) => AdminError(StatusCode::NOT_FOUND, e.to_string()),
        OrderError::WrongState { .. } => AdminError(StatusCode::CONFLICT, e.to_string()),
        OrderError::Store(s) => s.into(),
    }
}

/// A channel's configuration and live state.
pub fn channel_json(c: &crate::channels::Channel) -> Value {
    let now = store::now_ms();
    let v = c.state.view(now);
    json!({
        "name": c.name(),
        "kind": c.kind().as_str(),
        "base_url": c.base_url().to_string(),
        "usable": c.usable(),
        "demo": c.demo,
        "models": c.cfg.models,
        "weight": c.cfg.weight,
        "priority": c.cfg.priority,
        "addresses": c.addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "health_check": {"enabled": c.cfg.health.enabled, "path": c.cfg.health.path,
            "interval_ms": c.cfg.health.interval.as_millis() as u64, "last_probe": when(Some(c.state.last_probe_ms()).filter(|t| *t > 0))},
        "healthy": v.healthy,
        "status": v.status,
        "auth_failed": v.auth_failed,
        "disabled": v.disabled,
        "cooldown_until": when(v.cooldown_until_ms),
        "ejected_until": when(v.ejected_until_ms),
        "in_flight": v.inflight,
        "last_error": v.last_error,
        "recent_errors": v.recent_errors.iter().map(|e| json!({"at": when(Some(e.at_ms)), "message": e.message})).collect::<Vec<_>>(),
    })
}

pub async fn route(app: &Arc<App>, req: Req) -> AdminResult {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let tz = app.config.billing.utc_offset_secs;
    match (req.method.as_str(), seg.as_slice()) {
        ("GET", ["admin", "users"]) => {
            let app2 = app.clone();
            let users = with_db(app, &req.actor, move |c, _| {
                Ok(sql::list_users(c)?.iter().map(|u| user_summary(&app2, c, u)).collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
            ok(json!({"users": users}))
        }
        ("POST", ["admin", "users"]) => {
            let body = req.json()?;
            let email = body.get("email").and_then(Value::as_str).ok_or_else(|| bad("email: required"))?.to_string();
            let password = body.get("password").and_then(Value::as_str).map(str::to_string);
            let credits = body.get("credits").map(|_| amount(&body, "credits")).transpose()?;
            let app2 = app.clone();
            let v = change(app, &req.actor, move |c, ops| {
                let u = ops.add_user(&email, password.as_deref())?;
                if let Some(a) = credits.filter(|a| *a != 0) {
                    ops.add_credits(&email, a, "initial credits")?;
                }
                Ok(user_summary(&app2, c, &u)?)
            })
            .await?;
            Ok(Reply::Json(StatusCode::CREATED, v))
        }
        ("GET", ["admin", "users", email]) => {
            let (email, app2) = (email.to_string(), app.clone());
            let v = with_db(app, &req.actor, move |c, ops| {
                let u = ops.user(&email)?;
                let mut v = user_summary(&app2, c, &u)?;
                v["keys"] = sql::list_keys(c, Some(u.id))?.iter().map(key_json).collect();
                Ok(v)
            })
            .await?;
            ok(v)
        }
        ("POST", ["admin", "users", email, action @ ("ban" | "unban")]) => {
            let (email, banned) = (email.to_string(), *action == "ban");
            let u = change(app, &req.actor, move |_, ops| Ok(ops.set_banned(&email, banned)?)).await?;
            ok(json!({"email": u.email, "status": u.status}))
        }
        ("POST", ["admin", "users", email, "keys"]) => {
            let body = req.json()?;
            let name = body.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            let expires = optional_time(&body, "expires_at", tz)?;
            let models = optional_models(&body)?;
            let email = email.to_string();
            let (row, key) =
                change(app, &req.actor, move |_, ops| Ok(ops.create_key(&email, &name, expires, models.as_deref())?))
                    .await?;
            let mut v = key_json(&row);
            v["key"] = json!(key);
            Ok(Reply::Json(StatusCode::CREATED, v))
        }
        ("GET", ["admin", "users", email, "keys"]) => {
            let email = email.to_string();
            let keys =
                with_db(app, &req.actor, move |c, ops| Ok(sql::list_keys(c, Some(ops.user(&email)?.id))?)).await?;
            ok(json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()}))
        }
        ("POST", ["admin", "keys", id, action @ ("disable" | "enable")]) => {
            let id: i64 = id.parse().map_err(|_| bad("key id must be a number"))?;
            let active = *action == "enable";
            let k = change(app, &req.actor, move |_, ops| Ok(ops.set_key_active(id, active)?)).await?;
            ok(key_json(&k))
        }
        ("PUT", ["admin", "keys", id, "expiry"]) => {
            let id: i64 = id.parse().map_err(|_| bad("key id must be a number"))?;
            let at = optional_time(&req.json()?, "expires_at", tz)?;
            let k = change(app, &req.actor, move |_, ops| Ok(ops.set_key_expiry(id, at)?)).await?;
            ok(key_json(&k))
        }
        ("PUT", ["admin", "keys", id, "models"]) => {
            let id: i64 = id.parse().map_err(|_| bad("key id must be a number"))?;
            let models = optional_models(&req.json()?)?;
            let k = change(app, &req.actor, move |_, ops| Ok(ops.set_key_models(id, models.as_deref())?)).await?;
            ok(key_json(&k))
        }
        ("POST", ["admin", "users", email, "credits"]) => {
            let body = req.json()?;
            let a = amount(&body, "amount")?;
            let reason = body.get("reason").and_then(Value::as_str).unwrap_or("admin adjustment").to_string();
            let email = email.to_string();
            let balance = change(app, &req.actor, move |_, ops| Ok(ops.add_credits(&email, a, &reason)?)).await?;
            ok(json!({"amount": format_credits(a), "balance": format_credits(balance)}))
        }
        ("POST", ["admin", "users", email, "plan"]) => {
            let body = req.json()?;
            let plan = body.get("plan").and_then(Value::as_str).ok_or_else(|| bad("plan: required"))?.to_string();
            let email = email.to_string();
            let s = change(app, &req.actor, move |_, ops| Ok(ops.assign_plan(&email, &plan)?)).await?;
            ok(json!({"plan": s.plan_id, "starts_at": when(Some(s.starts_at)), "expires_at": when(Some(s.expires_at))}))
        }
        ("DELETE", ["admin", "users", email, "plan"]) => {
            let email = email.to_string();
            let revoked = change(app, &req.actor, move |_, ops| Ok(ops.revoke_plan(&email)?)).await?;
            ok(json!({"revoked": revoked}))
        }
        ("GET", ["admin", "users", email, "ledger"]) => {
            let limit: i64 = req.query("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
            let email = email.to_string();
            let (rows, balance) = with_db(app, &req.actor, move |c, ops| {
                let u = ops.user(&email)?;
                Ok((billing::ledger_for_user(c, u.id, limit)?, billing::credit_balance(c, u.id)?))
            })
            .await?;
            let entries: Vec<Value> = rows
                .iter()
                .map(|e| {
                    json!({"id": e.id, "time": when(Some(e.created_at)), "account": e.account, "amount": format_credits(e.amount),
                        "kind": e.kind, "reason": e.reason, "reference": e.reference, "origin": e.origin})
                })
                .collect();
            ok(json!({"balance": format_credits(balance), "entries": entries}))
        }
        ("GET", ["admin", "plans"]) => {
            let plans: Vec<Value> = app
                .config
                .plans
                .iter()
                .map(|p| {
                    json!({"id": p.id, "name": p.name, "daily_quota": format_credits(p.daily_quota), "concurrency": p.concurrency,
                        "requests_per_minute": p.requests_per_minute, "allowed_models": p.allowed_models,
                        "blocked_models": p.blocked_models, "duration_days": p.duration_days})
                })
                .collect();
            ok(json!({"plans": plans}))
        }
        ("POST", ["admin", "codes"]) => {
            let body = req.json()?;
            let grant = match (body.get("credits"), body.get("plan").and_then(Value::as_str)) {
                (Some(_), None) => Grant::Credits(amount(&body, "credits")?),
                (None, Some(p)) => Grant::Plan(p.to_string()),
                _ => return Err(bad("give exactly one of credits or plan")),
            };
            let count = body.get("count").and_then(Value::as_u64).unwrap_or(1) as u32;
            let uses = body.get("uses").and_then(Value::as_u64).unwrap_or(1) as u32;
            let expires = optional_time(&body, "expires_at", tz)?;
            let codes =
                change(app, &req.actor, move |_, ops| Ok(ops.create_codes(&grant, count, uses, expires)?)).await?;
            // Shown once, one per line.
            Ok(Reply::Text(codes.into_iter().map(|(_, c)| c + "\n").collect()))
        }
        ("GET", ["admin", "codes"]) => {
            let codes = with_db(app, &req.actor, |c, _| Ok(billing::list_codes(c)?)).await?;
            ok(json!({"codes": codes}))
        }
        ("POST", ["admin", "codes", id, "disable"]) => {
            let id: i64 = id.parse().map_err(|_| bad("code id must be a number"))?;
            let c = change(app, &req.actor, move |_, ops| Ok(ops.disable_code(id)?)).await?;
            ok(json!(c))
        }
        ("GET", ["admin", "usage"]) => {
            let group = match req.query("by").unwrap_or("day") {
                "user" => GroupBy::User,
                "key" => GroupBy::Key,
                "model" => GroupBy::Model,
                "day" => GroupBy::Day,
                other => return Err(bad(format!("by: must be user, key, model or day, got {other:?}"))),
            };
            let time = |f: &str| req.query(f).map(|s| parse_time(s, tz).map_err(bad)).transpose();
            let (since_ms, until_ms) = (time("since")?, time("until")?);
            let key_id = req.query("key").map(|k| k.parse::<i64>().map_err(|_| bad("key: a key id"))).transpose()?;
            let (user, model) = (req.query("user").map(str::to_string), req.query("model").map(str::to_string));
            let lines = with_db(app, &req.actor, move |c, ops| {
                let user_id = user.map(|e| ops.user(&e).map(|u| u.id)).transpose()?;
                let filter = UsageFilter { user_id, key_id, model, since_ms, until_ms };
                Ok(usage::report(c, &filter, group, tz)?)
            })
            .await?;
            let total_cost: i64 = lines.iter().map(|l| l.cost).sum();
            let total_requests: i64 = lines.iter().map(|l| l.requests).sum();
            let rows: Vec<Value> = lines
                .iter()
                .map(|l| {
                    let mut v = json!(l);
                    v["cost"] = json!(format_credits(l.cost));
                    v
                })
                .collect();
            ok(json!({"rows": rows, "total": {"requests": total_requests, "cost": format_credits(total_cost)}}))
        }
        ("GET", ["admin", "channels"]) => {
            ok(json!({"channels": app.channels.all().iter().map(|c| channel_json(c)).collect::<Vec<_>>()}))
        }
        ("POST", ["admin", "channels", name, action @ ("enable" | "disable")]) => {
            let ch = app
                .channels
                .by_name(name)
                .ok_or_else(|| AdminError(StatusCode::NOT_FOUND, format!("no channel {name:?}")))?;
            if *action == "enable" {
                ch.state.enable();
                log::warn!("channel {} enabled by an operator", ch.name());
            } else {
                ch.state.disable();
                log::warn!("channel {} disabled by an operator", ch.name());
            }
            let (name, what) = (ch.name().to_string(), format!("channel.{action}"));
            with_db(app, &req.actor, move |c, ops| Ok(billing::audit(c, ops.actor, &what, &name, "{}")?)).await?;
            ok(channel_json(ch))
        }
        ("GET", ["admin", "orders"]) => {
            let status = match req.query("status") {
                None | Some("") => None,
                Some(s) => Some(
                    crate::store::orders::OrderStatus::parse(s)
                        .ok_or_else(|| bad(format!("status: pending, paid, failed, expired or refunded, got {s:?}")))?,
                ),
            };
            let limit: i64 = req.query("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
            let user = req.query("user").map(str::to_string);
            let rows = with_db(app, &req.actor, move |c, ops| {
                let user_id = user.map(|e| ops.user(&e).map(|u| u.id)).transpose()?;
                let f = crate::store::orders::OrderFilter { user_id, status, limit, ..Default::default() };
                Ok(crate::store::orders::list(c, &f)?)
            })
            .await?;
            ok(json!({"orders": rows.iter().map(order_json).collect::<Vec<_>>()}))
        }
        ("GET", ["admin", "orders", id]) => {
            let id = id.to_string();
            let o = with_db(app, &req.actor, move |c, _| Ok(crate::store::orders::get(c, &id)?)).await?;
            let o = o.ok_or_else(|| AdminError(StatusCode::NOT_FOUND, "no such order".into()))?;
            ok(order_json(&o))
        }
        ("POST", ["admin", "orders", id, action @ ("refund" | "complete")]) => {
            let body = req.json()?;
            let reason = body.get("reason").and_then(Value::as_str).unwrap_or("").trim().to_string();
            if reason.is_empty() {
                return Err(bad("reason: required (it goes into the ledger and the audit trail)"));
            }
            let (id, refund, app2) = (id.to_string(), *action == "refund", app.clone());
            let o = change(app, &req.actor, move |c, ops| {
                let now = store::now_ms();
                let done = if refund {
                    crate::payments::orders::refund(c, &id, ops.actor, &reason, now)
                } else {
                    crate::payments::orders::complete(c, &app2.config, &id, ops.actor, &reason, now)
                };
                done.map_err(order_error)?;
                Ok(crate::store::orders::get(c, &id)?)
            })
            .await?;
            ok(o.as_ref().map(order_json).unwrap_or(Value::Null))
        }
        ("GET", ["admin", "audit"]) => {
            let limit: i64 = req.query("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
            let rows = with_db(app, &req.actor, move |c, _| Ok(billing::audit_log(c, limit)?)).await?;
            ok(json!({"entries": rows}))
        }
        _ => {
            Err(AdminError(StatusCode::NOT_FOUND, format!("no admin route {} /{}", req.method, req.segments.join("/"))))
        }
    }
}
