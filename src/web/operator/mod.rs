//! The operator console, served at `/` on the admin listener beside the
//! admin API. Operators sign in with the admin token or as a user whose role
//! is admin.
//!
//! Every page reads and every form acts through the admin API's own routes,
//! called in-process with the signed-in operator as the audited actor: the
//! CLI, the API and this console are three front ends on one set of
//! operations. Sessions, CSRF tokens and headers work as in the user console;
//! the session cookie has its own name and is `SameSite=Strict`.

mod auth;
mod channels;
mod codes;

pub(crate) use codes::Downloads as CodeDownloads;
mod orders;
mod overview;
mod system;
mod usage;
mod users;

use super::layout::{self, Section};
use super::response::Response;
use super::session::{self, Csrf};
use super::Env;
use crate::admin::{AdminError, Reply, Req};
use crate::store::sessions as sql;
use crate::store::writer::WriteOp;
use crate::store::StoreError;
use maud::{html, Markup};
use serde_json::Value;
use std::time::Duration;

/// An operator session ends after this long without a request…
pub const IDLE: Duration = Duration::from_secs(2 * 3600);
/// …and this long after sign-in, whatever happens.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// A signed-in operator.
pub(crate) struct Operator {
    pub session_id: i64,
    /// Who acts, for the audit trail: `operator:token` or `operator:EMAIL`.
    pub actor: String,
    pub csrf: String,
}

pub(super) async fn route(env: &Env<'_>, admin_token: &str) -> Response {
    use http::Method;
    let req = env.req;
    let path = req.path.trim_end_matches('/');
    let post = req.method == Method::POST;
    if !post && !matches!(req.method, Method::GET | Method::HEAD) {
        return Response::text(405, env.t.method_not_allowed).header("allow", "GET, HEAD, POST");
    }
    if post && req.cross_site(None) {
        return super::console::forbidden(env, env.t.cross_site);
    }
    match (post, path) {
        (false, "/sign-in") => return auth::form(env, None, 200),
        (true, "/sign-in") => return auth::sign_in(env, admin_token).await,
        _ => {}
    }
    let op = match current(env).await {
        Ok(Some(op)) => op,
        Ok(None) => return Response::redirect("/sign-in"),
        Err(e) => return super::console::server_error(env, &e),
    };
    if post && !Csrf::verify(&op.csrf, req.form().raw("csrf")) {
        return super::console::forbidden(env, env.t.form_expired);
    }
    // Segments are decoded once here: emails arrive as `bob%40example.com`.
    let decoded: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(crate::admin::path_segment).collect();
    let seg: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match (post, seg.as_slice()) {
        (false, []) => overview::page(env, &op).await,
        (true, ["sign-out"]) => auth::sign_out(env, &op).await,
        (false, ["users"]) => users::list(env, &op).await,
        (false, ["users", email]) => users::detail(env, &op, email, None).await,
        (true, ["users", email, action]) => users::act(env, &op, email, action, None).await,
        (true, ["users", email, "keys", id, action]) => users::act(env, &op, email, action, Some(id)).await,
        (false, ["codes"]) => codes::list(env, &op, None).await,
        (true, ["codes"]) => codes::create(env, &op).await,
        (true, ["codes", id, "disable"]) => codes::disable(env, &op, id).await,
        (false, ["codes", "download", file]) => codes::download(env, file),
        (false, ["channels"]) => channels::list(env, &op, None).await,
        (true, ["channels", name, action]) => channels::act(env, &op, name, action).await,
        (false, ["usage"]) => usage::page(env, &op).await,
        (false, ["usage.csv"]) => usage::csv(env, &op).await,
        (false, ["orders"]) => orders::list(env, &op, None).await,
        (true, ["orders", id, action]) => orders::act(env, &op, id, action).await,
        (false, ["audit"]) => system::audit(env, &op).await,
        (false, ["settings"]) => system::settings(env, &op).await,
        _ => super::not_found(env),
    }
}

/// The operator session the request's cookie names, if it is live.
async fn current(env: &Env<'_>) -> Result<Option<Operator>, StoreError> {
    let Some(token) = env.req.cookie(session::operator_cookie_name(env.secure)) else { return Ok(None) };
    let hash = session::token_hash(&token);
    let now = env.now();
    let idle = IDLE.as_millis() as i64;
    let lookup = hash.clone();
    let row = env
        .app
        .db
        .run(move |c| {
            let row = sql::find_operator(c, &lookup)?;
            match row {
                Some(s) if !s.still_allowed || s.expires_at <= now || s.last_seen_at + idle <= now => {
                    sql::end_operator(c, Some(s.id), now, idle)?;
                    Ok(None)
                }
                other => Ok(other),
            }
        })
        .await?;
    let Some(s) = row else { return Ok(None) };
    if now - s.last_seen_at >= 60_000 {
        env.app.writer.send(WriteOp::OperatorSeen { session_id: s.id, at: now }).await;
    }
    Ok(Some(Operator { session_id: s.id, actor: s.actor, csrf: env.site.csrf.for_operator(&hash) }))
}

/// A failed admin API call, to show.
pub(crate) struct ApiFailure {
    pub status: u16,
    pub message: String,
}

/// Calls the admin API as this operator: `target` is a path with its query
/// (`/admin/users?q=bob`), `body` the JSON a client would send.
pub(crate) async fn api(
    env: &Env<'_>,
    op: &Operator,
    method: &str,
    target: &str,
    body: Option<Value>,
) -> Result<Value, ApiFailure> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let req = Req {
        actor: op.actor.clone(),
        method: method.to_string(),
        segments: path.split('/').filter(|s| !s.is_empty()).map(crate::admin::path_segment).collect(),
        query: form_urlencoded::parse(query.as_bytes()).into_owned().collect(),
        body: body.map(|b| bytes::Bytes::from(b.to_string())).unwrap_or_default(),
    };
    match crate::admin::routes::route(env.app, req).await {
        Ok(Reply::Json(_, v)) => Ok(v),
        Ok(Reply::Text(t)) => Ok(Value::String(t)),
        Err(AdminError(status, message)) => Err(ApiFailure { status: status.as_u16(), message }),
    }
}

/// A percent-encoded path segment (emails in links).
pub(crate) fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An operator page with the sidebar.
pub(crate) fn frame(env: &Env, op: &Operator, title: &str, content: Markup) -> Markup {
    let t = env.t;
    let p = env.page(Some(&op.actor));
    let groups = vec![
        (
            "",
            vec![
                ("/", t.op_overview),
                ("/users", t.op_users),
                ("/codes", t.op_codes),
                ("/channels", t.op_channels),
                ("/usage", t.console_usage),
                ("/orders", t.op_orders),
            ],
        ),
        (t.op_group_system, vec![("/audit", t.op_audit), ("/settings", t.op_settings)]),
    ];
    let sign_out = html! {
        form method="post" action="/sign-out" { input type="hidden" name="csrf" value=(op.csrf); button.ghost.small type="submit" { (t.sign_out) } }
    };
    let side = layout::sidebar(&p, t.menu, &groups, Some(sign_out));
    layout::document(&p, title, Section::Operator, layout::shell(side, html! { div.console { (content) } }))
}

/// A notice for an API failure, or a `done` message after a redirect.
pub(crate) fn failure(f: &ApiFailure) -> Markup {
    layout::notice("bad", &f.message)
}

/// A page that failed as a whole (its data could not be read).
pub(crate) fn failed_page(env: &Env, op: &Operator, title: &str, f: &ApiFailure) -> Response {
    Response::html(
        if f.status >= 400 { f.status } else { 500 },
        frame(env, op, title, html! { h1 { (title) } (failure(f)) }),
    )
}

/// After a form: back to `to` with a message, or the same page with the
/// failure (status 4xx/5xx, so tests and scripts see it).
pub(crate) fn after(result: Result<Value, ApiFailure>, to: &str, done: &str) -> Result<Response, ApiFailure> {
    result.map(|_| Response::redirect(&format!("{to}{}done={done}", if to.contains('?') { '&' } else { '?' })))
}

/// The message for `?done=ACTION` after a form. Only known actions are shown,
/// so a crafted link cannot put words in the console's mouth.
pub(crate) fn done_notice(env: &Env) -> Option<Markup> {
    let t = env.t;
    super::console::done_notice(
        env,
        &[
            ("credits", t.op_done_credits),
            ("ban", t.op_done_ban),
            ("unban", t.op_done_unban),
            ("plan", t.op_done_plan),
            ("revoke-plan", t.op_done_revoke_plan),
            ("password", t.op_done_password),
            ("role", t.op_done_role),
            ("enable", t.op_done_enable),
            ("disable", t.op_done_disable),
            ("refund", t.op_done_refund),
            ("complete", t.op_done_complete),
        ],
    )
}

/// A time from the admin API (RFC 3339 text or Unix milliseconds) as
/// `YYYY-MM-DD HH:MM` in the billing timezone; `—` when absent.
pub(crate) fn when(env: &Env, v: &Value) -> String {
    let ms = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis()),
        _ => None,
    };
    ms.map_or_else(|| "—".to_string(), |ms| super::format::time(ms, env.app.config.billing.utc_offset_secs))
}
