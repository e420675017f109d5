//! The user console: sign-up and sign-in, then the pages of a signed-in
//! user. Every POST is checked for a cross-site origin and a CSRF token
//! before its handler runs; every page but sign-in and sign-up needs a
//! session.

mod account;
mod auth;
mod billing;
mod dashboard;
mod keys;
mod redeem;
mod usage;

pub(crate) use usage::csv_field;

use super::layout::{self, Page, Section};
use super::response::Response;
use super::session::{self, Csrf};
use super::Env;
use crate::store::sessions::{self as sql, SessionRow};
use crate::store::writer::WriteOp;
use crate::store::StoreError;
use maud::{html, Markup};

/// A signed-in user, as the console pages see them.
pub(crate) struct Viewer {
    pub session_id: i64,
    pub user_id: i64,
    pub email: String,
    /// The CSRF token of this session's forms.
    pub csrf: String,
}

/// Last-seen times are written at most this often per session (or a quarter
/// of the idle timeout, when that is shorter).
const TOUCH_EVERY_MS: i64 = 60_000;

pub(super) async fn route(env: &Env<'_>) -> Response {
    use http::Method;
    let req = env.req;
    let sub = req.path.trim_start_matches("/console");
    let sub = if sub.len() > 1 { sub.trim_end_matches('/') } else { sub };
    let post = req.method == Method::POST;
    if !post && !matches!(req.method, Method::GET | Method::HEAD) {
        return Response::text(405, env.t.method_not_allowed).header("allow", "GET, HEAD, POST");
    }
    let public_host = env.console().public_url.as_deref().and_then(super::request::origin_host);
    if post && req.cross_site(public_host) {
        return forbidden(env, env.t.cross_site);
    }
    // Pages for visitors.
    match (post, sub) {
        (false, "/sign-in") => return auth::sign_in_form(env, None, 200).await,
        (true, "/sign-in") => return auth::sign_in(env).await,
        (false, "/sign-up") => return auth::sign_up_form(env, None, 200).await,
        (true, "/sign-up") => return auth::sign_up(env).await,
        _ => {}
    }
    let viewer = match current(env).await {
        Ok(Some(v)) => v,
        Ok(None) => return to_sign_in(env, sub),
        Err(e) => return server_error(env, &e),
    };
    if post && !Csrf::verify(&viewer.csrf, req.form().raw("csrf")) {
        return forbidden(env, env.t.form_expired);
    }
    let segments: Vec<&str> = sub.split('/').filter(|s| !s.is_empty()).collect();
    match (post, segments.as_slice()) {
        (false, []) => Response::redirect("/console/dashboard"),
        (false, ["dashboard"]) => dashboard::page(env, &viewer).await,
        (false, ["keys"]) => keys::page(env, &viewer).await,
        (true, ["keys"]) => keys::create(env, &viewer).await,
        (true, ["keys", id, action @ ("enable" | "disable" | "delete")]) => {
            keys::change(env, &viewer, id, action).await
        }
        (false, ["usage"]) => usage::page(env, &viewer).await,
        (false, ["usage.csv"]) => usage::csv(env, &viewer).await,
        (false, ["models"]) => dashboard::models(env, &viewer).await,
        (false, ["redeem"]) => redeem::page(env, &viewer, None).await,
        (true, ["redeem"]) => redeem::submit(env, &viewer).await,
        (false, ["billing"]) => billing::page(env, &viewer).await,
        (true, ["billing", "orders"]) => billing::create(env, &viewer).await,
        (false, ["billing", "orders", id]) => billing::order(env, &viewer, id).await,
        (false, ["account"]) => account::page(env, &viewer, None).await,
        (true, ["account", "password"]) => account::change_password(env, &viewer).await,
        (true, ["sign-out"]) => auth::sign_out(env, &viewer, false).await,
        (true, ["sign-out-everywhere"]) => auth::sign_out(env, &viewer, true).await,
        _ => super::not_found(env),
    }
}

/// The session the request's cookie names, if it is live. Ends sessions that
/// expired or whose user was banned; refreshes last-seen through the writer.
async fn current(env: &Env<'_>) -> Result<Option<Viewer>, StoreError> {
    let Some(token) = env.req.cookie(session::session_cookie_name(env.secure)) else { return Ok(None) };
    let hash = session::token_hash(&token);
    let (now, idle) = (env.now(), env.console().session_idle_timeout.as_millis() as i64);
    let lookup = hash.clone();
    let row: Option<SessionRow> = env
        .app
        .db
        .run(move |c| {
            let row = sql::find(c, &lookup)?;
            match row {
                Some(s) if s.banned || s.expires_at <= now || s.last_seen_at + idle <= now => {
                    sql::delete(c, s.id)?;
                    Ok(None)
                }
                other => Ok(other),
            }
        })
        .await?;
    let Some(s) = row else { return Ok(None) };
    if now - s.last_seen_at >= TOUCH_EVERY_MS.min(idle / 4) {
        env.app.writer.send(WriteOp::SessionSeen { session_id: s.id, at: now }).await;
    }
    Ok(Some(Viewer { session_id: s.id, user_id: s.user_id, email: s.email, csrf: env.site.csrf.for_session(&hash) }))
}

/// Sends a visitor to sign in, and back here afterwards.
fn to_sign_in(env: &Env, sub: &str) -> Response {
    if env.req.method != http::Method::GET || sub.is_empty() || sub == "/" {
        return Response::redirect("/console/sign-in");
    }
    let next: String = form_urlencoded::byte_serialize(format!("/console{sub}").as_bytes()).collect();
    Response::redirect(&format!("/console/sign-in?next={next}"))
}

/// A console page with the sidebar.
pub(crate) fn frame(env: &Env, viewer: &Viewer, title: &str, content: Markup) -> Markup {
    let p = env.page(Some(&viewer.email));
    let content = html! { div.console { (content) } };
    layout::document(&p, title, Section::Console, layout::shell(layout::console_sidebar(&p), content))
}

/// A small page on its own (sign-in, errors).
pub(crate) fn plain(p: &Page, title: &str, content: Markup) -> Markup {
    layout::document(p, title, Section::Auth, html! { div.auth { (content) } })
}

pub(crate) fn forbidden(env: &Env, message: &str) -> Response {
    let p = env.page(None);
    let t = env.t;
    let body = html! {
        h1 { (t.forbidden_title) }
        (layout::notice("bad", message))
        p { a.btn.ghost href=(if env.operator { "/" } else { "/console/dashboard" }) { (t.back_to_console) } }
    };
    Response::html(403, plain(&p, t.forbidden_title, body))
}

/// A failure of ours (the database): logged in full, shown in general terms.
pub(crate) fn server_error(env: &Env, e: &StoreError) -> Response {
    log::error!("console {} {}: {e}", env.req.method, env.req.path);
    let p = env.page(None);
    let t = env.t;
    let body = html! { h1 { (t.error_title) } (layout::notice("bad", t.error_body)) };
    Response::html(500, plain(&p, t.error_title, body))
}

/// A hidden CSRF field for a form of this session.
pub(crate) fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A fresh one-time token that makes a form act once however often it is sent.
pub(crate) fn once_field() -> Markup {
    html! { input type="hidden" name="once" value=(session::new_token()); }
}

/// A `done` query parameter's message, after a redirect.
pub(crate) fn done_notice(env: &Env, messages: &[(&str, &str)]) -> Option<Markup> {
    let done = env.req.param("done")?;
    messages.iter().find(|(k, _)| *k == done).map(|(_, m)| layout::notice("ok", m))
}
