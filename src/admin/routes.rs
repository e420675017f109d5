//! Admin API routes. Reads and writes run on the blocking pool with their own
//! SQLite connection; after a write the call waits for the gateway's writer to
//! load the change.

use super::{AdminError, AdminResult, Reply, Req};
use crate::accounts::ops::Ops;
use crate::app::App;
use crate::clock::parse_time;
use crate::config::units::{format_credits, parse_credits};
use crate::store::accounts::{self as sql, KeyRow};
use crate::store::billing::{self, Grant};
use crate::store::usage::{self, GroupBy, UsageFilter};
use crate::store::Connection;
use crate::store::{self, SqlContext, StoreError};
use http::StatusCode;
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
    let now = crate::clock::now_ms();
    let balance = billing::credit_balance(conn, u.id)?;
    let live = app.accounts.snapshot().user(u.id).map(|e| app.billing.view(e));
    Ok(json!({
        "id": u.id, "email": u.email, "status": u.status, "role": u.role, "created_at": when(Some(u.created_at)),
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
    let now = crate::clock::now_ms();
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

/// `limit` of a listing: 1 to 500, 100 when absent.
fn page_limit(req: &Req) -> Result<i64, AdminError> {
    match req.query("limit") {
        None => Ok(100),
        Some(l) => l.parse::<i64>().ok().filter(|n| (1..=500).contains(n)).ok_or_else(|| bad("limit: 1 to 500")),
    }
}

/// The usage filters of a query string (`user` by email, resolved later on
/// the database thread).
struct QueryFilter {
    user: Option<String>,
    filter: UsageFilter,
}

impl QueryFilter {
    fn resolve(mut self, ops: &Ops) -> Result<UsageFilter, AdminError> {
        self.filter.user_id = self.user.map(|e| ops.user(&e).map(|u| u.id)).transpose()?;
        Ok(self.filter)
    }
}

fn usage_filter(req: &Req, tz: i32) -> Result<QueryFilter, AdminError> {
    let time = |f: &str| req.query(f).filter(|s| !s.is_empty()).map(|s| parse_time(s, tz).map_err(bad)).transpose();
    let text = |f: &str| req.query(f).filter(|s| !s.is_empty()).map(str::to_string);
    let key_id = req.query("key").map(|k| k.parse::<i64>().map_err(|_| bad("key: a key id"))).transpose()?;
    Ok(QueryFilter {
        user: text("user"),
        filter: UsageFilter {
            user_id: None,
            key_id,
            model: text("model"),
            channel: text("channel"),
            since_ms: time("since")?,
            until_ms: time("until")?,
        },
    })
}

/// `GET /admin/users?q=&after=&limit=`: users whose email contains `q`, by id.
async fn users_page(app: &Arc<App>, req: &Req) -> AdminResult {
    let limit = page_limit(req)?;
    let q = req.query("q").unwrap_or("").trim().to_string();
    let after = req.query("after").map(|a| a.parse::<i64>().map_err(|_| bad("after: a user id"))).transpose()?;
    let app2 = app.clone();
    let (users, total) = with_db(app, &req.actor, move |c, _| {
        let rows = sql::search_users(c, &q, after.unwrap_or(0), limit)?;
        let users = rows.iter().map(|u| user_summary(&app2, c, u)).collect::<Result<Vec<_>, _>>()?;
        Ok((users, sql::count_users(c)?))
    })
    .await?;
    let next = (users.len() as i64 == limit).then(|| users.last().map(|u| u["id"].clone())).flatten();
    ok(json!({"users": users, "next": next, "total": total}))
}

/// `GET /admin/requests`: single requests, newest first, with the usage
/// filters, `before` (a cursor from the last page) and `limit`.
async fn requests_page(app: &Arc<App>, req: &Req, tz: i32) -> AdminResult {
    let limit = page_limit(req)?;
    let filter = usage_filter(req, tz)?;
    let before = match req.query("before") {
        None | Some("") => None,
        Some(c) => Some(usage::Cursor::decode(c).ok_or_else(|| bad("before: a cursor from the last page"))?),
    };
    let rows =
        with_db(app, &req.actor, move |c, ops| Ok(usage::page(c, &filter.resolve(ops)?, before, limit)?)).await?;
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| usage::Cursor::of(r).encode())).flatten();
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "time": when(Some(r.created_at)), "request_id": r.request_id, "user": r.email, "key": r.key_prefix,
                "model": r.model, "channel": r.channel, "endpoint": r.endpoint, "status": r.status,
                "input_tokens": r.input_tokens, "cached_tokens": r.cached_tokens, "cache_write_tokens": r.cache_write_tokens,
                "output_tokens": r.output_tokens, "reasoning_tokens": r.reasoning_tokens, "cost": format_credits(r.cost),
                "latency_ms": r.latency_ms, "ttfb_ms": r.ttfb_ms, "stream": r.stream, "estimated": r.estimated,
            })
        })
        .collect();
    ok(json!({"requests": rows, "next": next}))
}

/// `GET /admin/overview`: the last hour per minute, today's usage, revenue,
/// channels by status, users and pending orders.
async fn overview(app: &Arc<App>, req: &Req) -> AdminResult {
    let now = app.billing.now_ms();
    let minutes = app.traffic.last(now, 60);
    let today = app.billing.days().start_of_day(now);
    let month = now - 30 * 86_400_000;
    let (totals, revenue_today, revenue_month, users, pending) = with_db(app, &req.actor, move |c, _| {
        let f = UsageFilter { since_ms: Some(today), ..Default::default() };
        let day = usage::report(c, &f, GroupBy::Day, 0)?;
        Ok((
            day,
            crate::store::orders::revenue_since(c, today)?,
            crate::store::orders::revenue_since(c, month)?,
            sql::count_users(c)?,
            crate::store::orders::list(
                c,
                &crate::store::orders::OrderFilter {
                    status: Some(crate::store::orders::OrderStatus::Pending),
                    limit: 1000,
                    ..Default::default()
                },
            )?
            .len(),
        ))
    })
    .await?;
    let sum = |f: fn(&usage::UsageLine) -> i64| totals.iter().map(f).sum::<i64>();
    let mut by_status: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for ch in app.channels.all() {
        *by_status.entry(ch.state.view(now).status).or_default() += 1;
    }
    let money = |rows: Vec<(String, i64, i64)>| -> Vec<Value> {
        rows.into_iter()
            .map(|(cur, amount, n)| json!({"currency": cur, "amount": crate::config::units::format_money(amount, &cur), "orders": n}))
            .collect()
    };
    ok(json!({
        "minutes": minutes,
        "today": {
            "requests": sum(|l| l.requests), "cost": format_credits(sum(|l| l.cost)),
            "input_tokens": sum(|l| l.input_tokens), "cached_tokens": sum(|l| l.cached_tokens),
            "cache_write_tokens": sum(|l| l.cache_write_tokens), "output_tokens": sum(|l| l.output_tokens),
        },
        "revenue": {"today": money(revenue_today), "last_30_days": money(revenue_month)},
        "channels": by_status,
        "users": users,
        "orders_pending": pending,
    }))
}

pub async fn route(app: &Arc<App>, req: Req) -> AdminResult {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let tz = app.config.billing.utc_offset_secs;
    match (req.method.as_str(), seg.as_slice()) {
        ("GET", ["admin", "users"]) => users_page(app, &req).await,
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
        ("POST", ["admin", "users", email, "password"]) => {
            let body = req.json()?;
            let pw = body.get("password").and_then(Value::as_str).ok_or_else(|| bad("password: required"))?.to_string();
            let email = email.to_string();
            change(app, &req.actor, move |_, ops| Ok(ops.set_password(&email, &pw)?)).await?;
            ok(json!({"password": "set", "sessions": "ended"}))
        }
        ("POST", ["admin", "users", email, "role"]) => {
            let body = req.json()?;
            let role = body.get("role").and_then(Value::as_str).ok_or_else(|| bad("role: admin or user"))?.to_string();
            let email = email.to_string();
            let u = change(app, &req.actor, move |_, ops| Ok(ops.set_role(&email, &role)?)).await?;
            ok(json!({"email": u.email, "role": u.role}))
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
            let limit = page_limit(&req)?;
            let after =
                req.query("after").map(|b| b.parse::<i64>().map_err(|_| bad("after: a code id"))).transpose()?;
            let text = |f: &str| req.query(f).filter(|s| !s.is_empty()).map(str::to_string);
            let (batch, status) = (text("batch"), text("status"));
            let codes = with_db(app, &req.actor, move |c, _| {
                Ok(billing::page_codes(c, batch.as_deref(), status.as_deref(), after.unwrap_or(0), limit)?)
            })
            .await?;
            let next = (codes.len() as i64 == limit).then(|| codes.last().map(|c| c.id)).flatten();
            ok(json!({"codes": codes, "next": next}))
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
                "channel" => GroupBy::Channel,
                "day" => GroupBy::Day,
                other => return Err(bad(format!("by: must be user, key, model, channel or day, got {other:?}"))),
            };
            let filter = usage_filter(&req, tz)?;
            let lines =
                with_db(app, &req.actor, move |c, ops| Ok(usage::report(c, &filter.resolve(ops)?, group, tz)?)).await?;
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
        ("GET", ["admin", "requests"]) => requests_page(app, &req, tz).await,
        ("GET", ["admin", "overview"]) => overview(app, &req).await,
        ("GET", ["admin", "config"]) => {
            let cluster = match app.billing.cluster() {
                Some(c) => crate::cluster::admin_json(c).await,
                None => Value::Null,
            };
            ok(json!({
                "version": app.version,
                "loaded_at": when(Some(app.loaded_at)),
                "last_reload": app.reloads.last(),
                "cluster": cluster,
                "summary": super::settings::summary(&app.config),
                "effective": format!("{:#?}", app.config),
            }))
        }
        ("POST", ["admin", "channels", name, "test"]) => {
            let ch = app
                .channels
                .by_name(name)
                .ok_or_else(|| AdminError(StatusCode::NOT_FOUND, format!("no channel {name:?}")))?
                .clone();
            // A fresh connection, like the health checker's: the test says
            // whether the channel answers now, not whether a pooled socket does.
            let connector = pingora::connectors::http::Connector::new(None);
            let outcome = crate::channels::health::test_once(&connector, &ch).await;
            let (name, detail) =
                (ch.name().to_string(), json!({"ok": outcome.ok, "status": outcome.status}).to_string());
            with_db(app, &req.actor, move |c, ops| Ok(billing::audit(c, ops.actor, "channel.test", &name, &detail)?))
                .await?;
            ok(json!(outcome))
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
            let (name, what, off) = (ch.name().to_string(), format!("channel.{action}"), *action == "disable");
            with_db(app, &req.actor, move |c, ops| {
                let tx = c.unchecked_transaction().ctx("switching a channel")?;
                store::channels::set_disabled(&tx, &name, off, ops.actor, crate::clock::now_ms())?;
                billing::audit(&tx, ops.actor, &what, &name, "{}")?;
                Ok(tx.commit().ctx("switching a channel")?)
            })
            .await?;
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
                let now = crate::clock::now_ms();
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
