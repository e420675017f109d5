//! Users: search and pages, and a user's page with balance, plan, keys,
//! usage, requests, ledger and orders, and the operator's actions on them.

use super::{after, api, enc, failed_page, failure, frame, ApiFailure, Operator};
use crate::web::format;
use crate::web::i18n::Text;
use crate::web::response::Response;
use crate::web::Env;
use maud::{html, Markup};
use serde_json::{json, Value};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn csrf(op: &Operator) -> Markup {
    html! { input type="hidden" name="csrf" value=(op.csrf); }
}

pub(super) async fn list(env: &Env<'_>, op: &Operator) -> Response {
    let t = env.t;
    let q = env.req.param("q").unwrap_or_default();
    let after_id = env.req.param_nonempty("after").unwrap_or_default();
    let target = format!("/admin/users?limit=50&q={}&after={}", enc(&q), enc(&after_id));
    let v = match api(env, op, "GET", target.trim_end_matches("&after="), None).await {
        Ok(v) => v,
        Err(f) => return failed_page(env, op, t.op_users, &f),
    };
    let users = v["users"].as_array().cloned().unwrap_or_default();
    let content = html! {
        h1 { (t.op_users) " " span.sub { "(" (v["total"]) ")" } }
        form.filters method="get" action="/users" {
            label { (t.op_search_email) input type="text" name="q" value=(q) placeholder="@example.com"; }
            button.ghost type="submit" { (t.apply) }
        }
        @if users.is_empty() { p.muted { (t.op_no_users) } } @else {
            div.table-wrap { table.users {
                thead { tr { th { (t.email) } th { (t.col_status) } th { (t.op_role) } th.num { (t.balance) } th { (t.plan) } th.num { (t.limits) } th { (t.created) } } }
                tbody { @for u in &users { tr {
                    td { a href=(format!("/users/{}", enc(s(&u["email"])))) { (s(&u["email"])) } }
                    td { (user_status(t, s(&u["status"]))) }
                    td { (s(&u["role"])) }
                    td.num { (s(&u["balance"])) }
                    td { @if u["plan"].is_null() { span.muted { "—" } } @else { (s(&u["plan"]["id"])) } }
                    td.num { (u["in_flight"].as_u64().unwrap_or(0)) }
                    td.nowrap { (super::when(env, &u["created_at"]).get(..10).unwrap_or("—")) }
                } } }
            } }
        }
        @if let Some(next) = v["next"].as_i64() {
            div.pager { a.btn.ghost.small href=(format!("/users?q={}&after={next}", enc(&q))) { (t.op_next_page) " →" } }
        }
    };
    Response::html(200, frame(env, op, t.op_users, content))
}

fn user_status(t: &Text, status: &str) -> Markup {
    match status {
        "banned" => html! { span.pill.bad { (t.op_banned) } },
        _ => html! { span.pill.ok { (t.status_active) } },
    }
}

/// Everything the user page shows, read through the API.
struct UserData {
    user: Value,
    ledger: Value,
    usage: Value,
    requests: Value,
    orders: Value,
    plans: Value,
}

async fn load(env: &Env<'_>, op: &Operator, email: &str) -> Result<UserData, ApiFailure> {
    let e = enc(email);
    let since = format::date(env.now() - 29 * 86_400_000, env.app.config.billing.utc_offset_secs);
    Ok(UserData {
        user: api(env, op, "GET", &format!("/admin/users/{e}"), None).await?,
        ledger: api(env, op, "GET", &format!("/admin/users/{e}/ledger?limit=20"), None).await?,
        usage: api(env, op, "GET", &format!("/admin/usage?by=model&user={e}&since={since}"), None).await?,
        requests: api(env, op, "GET", &format!("/admin/requests?user={e}&limit=20"), None).await?,
        orders: api(env, op, "GET", &format!("/admin/orders?user={e}&limit=20"), None).await?,
        plans: api(env, op, "GET", "/admin/plans", None).await?,
    })
}

pub(super) async fn detail(env: &Env<'_>, op: &Operator, email: &str, problem: Option<ApiFailure>) -> Response {
    let t = env.t;
    let d = match load(env, op, email).await {
        Ok(d) => d,
        Err(f) => return failed_page(env, op, t.op_users, &f),
    };
    let u = &d.user;
    let base = format!("/users/{}", enc(email));
    let done = super::done_notice(env);
    let status = problem.as_ref().map_or(200, |f| f.status.max(400));
    let banned = s(&u["status"]) == "banned";
    let admin = s(&u["role"]) == "admin";
    let content = html! {
        h1 { (email) }
        @if let Some(d) = done { (d) }
        @if let Some(f) = &problem { (failure(f)) }
        div.cards {
            div.card #user-balance { h2 { (t.balance) } div.stat { (s(&u["balance"])) } }
            div.card #user-plan { h2 { (t.plan) }
                @if u["plan"].is_null() { div.stat { (t.no_plan) } } @else {
                    div.stat { (s(&u["plan"]["id"])) } div.sub { (t.plan_expires) " " (super::when(env, &u["plan"]["expires_at"])) } } }
            div.card #user-status { h2 { (t.col_status) } div.stat { (user_status(t, s(&u["status"]))) } div.sub { (t.op_role) ": " (s(&u["role"])) } }
        }
        div.cards.wide {
            div.card {
                h3 { (t.op_adjust_credits) }
                form.stack method="post" action=(format!("{base}/credits")) {
                    (csrf(op))
                    label { (t.col_amount) span.hint { (t.op_amount_hint) } input type="text" name="amount" required placeholder="10"; }
                    label { (t.op_reason) input type="text" name="reason" required maxlength="200"; }
                    div { button type="submit" { (t.op_apply_credits) } }
                }
            }
            div.card {
                h3 { (t.plan) }
                form.stack method="post" action=(format!("{base}/plan")) {
                    (csrf(op))
                    label { (t.op_plan_to_assign) select name="plan" {
                        @for p in d.plans["plans"].as_array().into_iter().flatten() { option value=(s(&p["id"])) { (s(&p["name"])) " (" (s(&p["id"])) ")" } }
                    } }
                    div { button type="submit" { (t.op_assign_plan) } }
                }
                @if !u["plan"].is_null() {
                    form.inline method="post" action=(format!("{base}/revoke-plan")) data-confirm=(t.op_confirm) { (csrf(op)) button.danger.small type="submit" { (t.op_revoke_plan) } }
                }
            }
            div.card {
                h3 { (t.op_account_actions) }
                div.actions {
                    form.inline method="post" action=(format!("{base}/{}", if banned { "unban" } else { "ban" })) data-confirm=(t.op_confirm) {
                        (csrf(op)) @if banned { button.ghost.small type="submit" { (t.op_unban) } } @else { button.danger.small type="submit" { (t.op_ban) } }
                    }
                    form.inline method="post" action=(format!("{base}/role")) data-confirm=(t.op_confirm) {
                        (csrf(op)) input type="hidden" name="role" value=(if admin { "user" } else { "admin" });
                        button.ghost.small type="submit" { @if admin { (t.op_make_user) } @else { (t.op_make_admin) } }
                    }
                }
                form.stack method="post" action=(format!("{base}/password")) {
                    (csrf(op))
                    label { (t.op_reset_password) span.hint { (t.op_reset_password_hint) } input type="text" name="password" required minlength="8" maxlength="128" autocomplete="off"; }
                    div { button.ghost type="submit" { (t.op_set_password) } }
                }
            }
        }
        h2 { (t.console_keys) }
        (keys(env, op, &base, &u["keys"]))
        h2 { (t.op_usage_30_days) }
        (usage_lines(t, &d.usage, t.col_model, false))
        h2 { (t.recent_requests) }
        (super::usage::request_rows(env, &d.requests["requests"], false))
        h2 { (t.credit_history) }
        (ledger(env, &d.ledger))
        h2 { (t.op_orders) }
        (super::orders::table(env, op, &d.orders["orders"], false))
    };
    Response::html(status, frame(env, op, email, content))
}

fn keys(env: &Env, op: &Operator, base: &str, keys: &Value) -> Markup {
    let t = env.t;
    let keys: Vec<&Value> = keys.as_array().into_iter().flatten().filter(|k| k["deleted_at"].is_null()).collect();
    html! {
        @if keys.is_empty() { p.muted { (t.no_keys) } } @else {
            div.table-wrap { table {
                thead { tr { th { (t.key_name) } th { (t.key_word) } th { (t.col_status) } th { (t.last_used) } th { (t.expires) } th { (t.models_word) } th {} } }
                tbody { @for k in keys { tr {
                    td { (s(&k["name"])) } td { code { (s(&k["prefix"])) "…" } }
                    td { @if s(&k["status"]) == "active" { span.pill.ok { (t.status_active) } } @else { span.pill.bad { (t.status_disabled) } } }
                    td.nowrap { (super::when(env, &k["last_used_at"])) } td.nowrap { (super::when(env, &k["expires_at"])) }
                    td { @match k["models"].as_array() { Some(m) => { span.mono { (m.iter().map(s).collect::<Vec<_>>().join(", ")) } } None => { span.muted { (t.all_models) } } } }
                    td {
                        @let action = if s(&k["status"]) == "active" { "disable" } else { "enable" };
                        form.inline method="post" action=(format!("{base}/keys/{}/{action}", k["id"])) {
                            input type="hidden" name="csrf" value=(op.csrf);
                            button.ghost.small type="submit" { @if action == "disable" { (t.disable) } @else { (t.enable) } }
                        }
                    }
                } } }
            } }
        }
    }
}

/// Usage grouped by `group` (named `heading`): every token column, or, when
/// `compact` (half-width cards), requests, total tokens and cost.
pub(super) fn usage_lines(t: &Text, usage: &Value, heading: &str, compact: bool) -> Markup {
    let rows = usage["rows"].as_array().cloned().unwrap_or_default();
    let n = |r: &Value, k: &str| r[k].as_i64().unwrap_or(0);
    html! {
        @if rows.is_empty() { p.muted { (t.no_requests) } } @else {
            div.table-wrap { table {
                thead { tr {
                    th { (heading) } th.num { (t.requests_title) }
                    @if compact { th.num { (t.op_tokens) } } @else { th.num { (t.col_input) } th.num { (t.col_cached) } th.num { (t.col_output) } }
                    th.num { (t.col_cost) }
                } }
                tbody { @for r in &rows { tr {
                    td { code { (s(&r["group"])) } }
                    td.num { (format::count(n(r, "requests"))) }
                    @if compact {
                        td.num { (format::count(n(r, "input_tokens") + n(r, "cached_tokens") + n(r, "cache_write_tokens") + n(r, "output_tokens"))) }
                    } @else {
                        td.num { (format::count(n(r, "input_tokens"))) }
                        td.num { (format::count(n(r, "cached_tokens"))) }
                        td.num { (format::count(n(r, "output_tokens"))) }
                    }
                    td.num { (s(&r["cost"])) }
                } } }
            } }
        }
    }
}

fn ledger(env: &Env, ledger: &Value) -> Markup {
    let t = env.t;
    let rows = ledger["entries"].as_array().cloned().unwrap_or_default();
    html! {
        @if rows.is_empty() { p.muted { (t.no_history) } } @else {
            div.table-wrap { table {
                thead { tr { th { (t.col_time) } th { (t.col_what) } th.num { (t.col_amount) } th { (t.col_note) } th { (t.op_reference) } } }
                tbody { @for e in &rows { tr {
                    td.nowrap { (super::when(env, &e["time"])) } td { (s(&e["kind"])) " " span.sub { (s(&e["account"])) } }
                    td.num { (s(&e["amount"])) } td { (s(&e["reason"])) } td.mono { (s(&e["reference"])) }
                } } }
            } }
        }
    }
}

/// A form on the user page: the action through the API, then back.
pub(super) async fn act(env: &Env<'_>, op: &Operator, email: &str, action: &str, key: Option<&str>) -> Response {
    let f = env.req.form();
    let e = enc(email);
    let field = |name: &str| f.get(name).unwrap_or("").to_string();
    let result = match (action, key) {
        ("credits", None) => {
            let body = json!({"amount": field("amount"), "reason": field("reason")});
            if field("reason").is_empty() {
                Err(ApiFailure { status: 400, message: env.t.op_reason_required.into() })
            } else {
                api(env, op, "POST", &format!("/admin/users/{e}/credits"), Some(body)).await
            }
        }
        ("ban" | "unban", None) => api(env, op, "POST", &format!("/admin/users/{e}/{action}"), None).await,
        ("plan", None) => {
            api(env, op, "POST", &format!("/admin/users/{e}/plan"), Some(json!({"plan": field("plan")}))).await
        }
        ("revoke-plan", None) => api(env, op, "DELETE", &format!("/admin/users/{e}/plan"), None).await,
        ("password", None) => {
            api(
                env,
                op,
                "POST",
                &format!("/admin/users/{e}/password"),
                Some(json!({"password": f.raw("password").unwrap_or("")})),
            )
            .await
        }
        ("role", None) => {
            api(env, op, "POST", &format!("/admin/users/{e}/role"), Some(json!({"role": field("role")}))).await
        }
        ("disable" | "enable", Some(id)) => {
            api(env, op, "POST", &format!("/admin/keys/{}/{action}", enc(id)), None).await
        }
        _ => return crate::web::not_found(env),
    };
    match after(result, &format!("/users/{e}"), action) {
        Ok(r) => r,
        Err(f) => detail(env, op, email, Some(f)).await,
    }
}
