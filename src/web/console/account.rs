//! The Account page: who is signed in, the password, and signing out of
//! every browser. A password change needs the current password and ends every
//! other session; this browser gets a new one.

use super::auth::password_message;
use super::{csrf_field, server_error, Viewer};
use crate::accounts::{ops::Ops, password};
use crate::store::sessions as sql;
use crate::store::StoreError;
use crate::web::format;
use crate::web::layout::notice;
use crate::web::response::Response;
use crate::web::session;
use crate::web::Env;
use maud::html;

pub(super) async fn page(env: &Env<'_>, viewer: &Viewer, problem: Option<&str>) -> Response {
    let t = env.t;
    let user_id = viewer.user_id;
    let since = match env.app.db.run(move |c| crate::store::accounts::user_by_id(c, user_id)).await {
        Ok(u) => u.created_at,
        Err(e) => return server_error(env, &e),
    };
    let tz = env.app.config.billing.utc_offset_secs;
    let done = super::done_notice(env, &[("password", t.password_changed)]);
    let content = html! {
        h1 { (t.console_account) }
        @if let Some(d) = done { (d) }
        div.card {
            h2 { (t.email) }
            p { strong { (viewer.email) } }
            p.sub { (t.member_since) " " (format::date(since, tz)) }
        }
        div.card {
            h2 { (t.change_password) }
            @if let Some(p) = problem { (notice("bad", p)) }
            form.stack method="post" action="/console/account/password" {
                (csrf_field(viewer))
                // For password managers: which account this password is for.
                input type="email" name="username" autocomplete="username" value=(viewer.email) hidden;
                label { (t.current_password) input type="password" name="current" autocomplete="current-password" required maxlength=(password::MAX_CHARS); }
                label { (t.new_password) span.hint { (t.password_rules) }
                    input type="password" name="password" autocomplete="new-password" required minlength=(password::MIN_CHARS) maxlength=(password::MAX_CHARS); }
                label { (t.password_again) input type="password" name="password2" autocomplete="new-password" required maxlength=(password::MAX_CHARS); }
                div { button type="submit" { (t.change_password) } }
            }
        }
        div.card {
            h2 { (t.sessions_title) }
            p.sub { (t.sessions_hint) }
            div.actions {
                form.inline method="post" action="/console/sign-out" { (csrf_field(viewer)) button.ghost type="submit" { (t.sign_out) } }
                form.inline method="post" action="/console/sign-out-everywhere" { (csrf_field(viewer)) button.danger type="submit" { (t.sign_out_everywhere) } }
            }
        }
    };
    let status = if problem.is_some() { 400 } else { 200 };
    Response::html(status, super::frame(env, viewer, t.console_account, content))
}

/// What a password change came to.
enum Change {
    Done,
    WrongCurrent,
}

pub(super) async fn change_password(env: &Env<'_>, viewer: &Viewer) -> Response {
    let t = env.t;
    let form = env.req.form();
    let (current, new) = (form.raw("current").unwrap_or(""), form.raw("password").unwrap_or(""));
    if let Err(e) = password::check(new) {
        return page(env, viewer, Some(&password_message(env, e))).await;
    }
    if form.raw("password2") != Some(new) {
        return page(env, viewer, Some(t.passwords_differ)).await;
    }
    let result = {
        let _permit = env.site.hashing.acquire().await;
        let (cfg, user_id) = (env.app.config.clone(), viewer.user_id);
        let (current, new) = (current.to_string(), new.to_string());
        env.app
            .db
            .run(move |c| {
                let login = crate::store::accounts::login_by_id(c, user_id)?;
                if !password::verify(login.password_hash.as_deref(), &current) {
                    return Ok::<_, StoreError>(Change::WrongCurrent);
                }
                // This ends every session, this one too: `rotate` gives this
                // browser a new one.
                Ops { conn: c, cfg: &cfg, actor: "console" }.set_password(&login.email, &new)?;
                Ok(Change::Done)
            })
            .await
    };
    match result {
        Err(e) => server_error(env, &e),
        Ok(Change::WrongCurrent) => page(env, viewer, Some(t.wrong_current_password)).await,
        Ok(Change::Done) => rotate(env, viewer).await,
    }
}

/// Gives this browser a new session after a password change ended all of
/// them: the old token (which a thief might hold) stays dead.
async fn rotate(env: &Env<'_>, viewer: &Viewer) -> Response {
    let token = session::new_token();
    let hash = session::token_hash(&token);
    let (uid, now) = (viewer.user_id, env.now());
    let max_age = env.console().session_max_age.as_millis() as i64;
    let ip = env.req.client_ip.map(|i| i.to_string());
    let ua = env.req.header("user-agent").map(str::to_string);
    let created = env
        .app
        .db
        .run(move |c| {
            let origin = sql::Origin { ip: ip.as_deref(), user_agent: ua.as_deref() };
            sql::create(c, &hash, uid, now, now + max_age, &origin)
        })
        .await;
    match created {
        Ok(_) => Response::redirect("/console/account?done=password").cookie(&session::cookie(
            session::session_cookie_name(env.secure),
            token,
            max_age / 1000,
            env.secure,
        )),
        Err(e) => server_error(env, &e),
    }
}
