//! Sign-up, sign-in and sign-out.
//!
//! Failed sign-ins say only "incorrect email or password", whether or not the
//! email is registered, take as long either way (an unknown email is checked
//! against a dummy hash), and count against the client IP and the email; over
//! the limit the answer is 429 with `retry-after`. Sign-up cannot hide that
//! an email is taken (there is no mail round trip to prove ownership), so it
//! is throttled per IP to make probing slow.

use super::{plain, server_error, Viewer};
use crate::accounts::ops::{self, RegisterError};
use crate::accounts::password;
use crate::config::Signup;
use crate::store::accounts::normalize_email;
use crate::store::sessions::{self as sql, Origin};
use crate::store::StoreError;
use crate::web::layout::notice;
use crate::web::response::Response;
use crate::web::session::{self, Csrf, ANON_COOKIE};
use crate::web::Env;
use maud::html;

/// The pre-session cookie's value, and whether it must be set now.
fn anon_cookie(env: &Env) -> (String, bool) {
    match env.req.cookie(ANON_COOKIE).filter(|v| v.len() == 43) {
        Some(v) => (v, false),
        None => (session::new_token(), true),
    }
}

/// Where to go after signing in: a console path of ours, nothing else.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console/")
                && !n.contains("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_string()
        }
        _ => "/console/dashboard".to_string(),
    }
}

fn with_anon(resp: Response, env: &Env, anon: &str, set: bool) -> Response {
    if set {
        resp.cookie(&session::cookie(ANON_COOKIE, anon.to_string(), 86_400, env.secure))
    } else {
        resp
    }
}

pub(super) async fn sign_in_form(env: &Env<'_>, error: Option<&str>, status: u16) -> Response {
    let t = env.t;
    let form = env.req.form();
    let next = safe_next(form.get("next").or(env.req.param("next").as_deref()));
    let email = form.get("email").unwrap_or("").to_string();
    let (anon, set) = anon_cookie(env);
    let p = env.page(None);
    let done = super::done_notice(env, &[("signed_out", t.signed_out), ("password", t.password_changed_sign_in)]);
    let body = html! {
        h1 { (t.sign_in_title) }
        p.muted { (t.sign_in_lead) }
        @if let Some(d) = done { (d) }
        @if let Some(e) = error { (notice("bad", e)) }
        div.card {
            form.stack method="post" action="/console/sign-in" {
                input type="hidden" name="csrf" value=(env.site.csrf.for_anon(&anon));
                input type="hidden" name="next" value=(next);
                label { (t.email) input type="email" name="email" value=(email) autocomplete="username" required maxlength="254" autofocus; }
                label { (t.password) input type="password" name="password" autocomplete="current-password" required maxlength=(password::MAX_CHARS); }
                button type="submit" { (t.sign_in) }
            }
        }
        @if env.console().signup != Signup::Closed {
            p.muted { (t.no_account) " " a href="/console/sign-up" { (t.sign_up) } }
        }
    };
    with_anon(Response::html(status, plain(&p, t.sign_in_title, body)), env, &anon, set)
}

/// The outcome of checking a password.
enum Login {
    Ok(i64),
    Banned,
    Wrong,
}

pub(super) async fn sign_in(env: &Env<'_>) -> Response {
    let t = env.t;
    let form = env.req.form();
    if !anon_csrf_ok(env, form.raw("csrf")) {
        return sign_in_form(env, Some(t.form_expired), 403).await;
    }
    let (Some(email), Some(pw)) = (form.get("email").and_then(normalize_email), form.raw("password")) else {
        return sign_in_form(env, Some(t.bad_credentials), 400).await;
    };
    let now = env.now();
    let ip = client_ip(env);
    let limited = match env.site.sign_in_per_ip.check(&ip, now).await {
        Ok(()) => env.site.sign_in_per_account.check(&email, now).await,
        refused => refused,
    };
    if let Err(secs) = limited {
        let msg = t.too_many_attempts.replace("{s}", &secs.to_string());
        return sign_in_form(env, Some(&msg), 429).await.header("retry-after", secs.to_string());
    }
    let outcome = {
        let _permit = env.site.hashing.acquire().await;
        let (email, pw) = (email.clone(), pw.to_string());
        env.app
            .db
            .run(move |c| {
                let login = crate::store::accounts::find_login(c, &email)?;
                // The same hash work whether or not the user exists.
                let hash = login.as_ref().and_then(|l| l.password_hash.clone());
                let ok = password::verify(hash.as_deref(), &pw);
                Ok::<_, StoreError>(match login {
                    Some(l) if ok && l.banned => Login::Banned,
                    Some(l) if ok => Login::Ok(l.id),
                    _ => Login::Wrong,
                })
            })
            .await
    };
    match outcome {
        Err(e) => server_error(env, &e),
        Ok(Login::Wrong) => {
            env.site.sign_in_per_ip.hit(&ip, now).await;
            env.site.sign_in_per_account.hit(&email, now).await;
            sign_in_form(env, Some(t.bad_credentials), 401).await
        }
        Ok(Login::Banned) => sign_in_form(env, Some(t.account_banned), 403).await,
        Ok(Login::Ok(user_id)) => {
            env.site.sign_in_per_account.reset(&email).await;
            let next = safe_next(form.get("next"));
            match start_session(env, user_id).await {
                Ok(resp) => resp.header("location", next),
                Err(e) => server_error(env, &e),
            }
        }
    }
}

fn anon_csrf_ok(env: &Env, presented: Option<&str>) -> bool {
    env.req.cookie(ANON_COOKIE).is_some_and(|a| Csrf::verify(&env.site.csrf.for_anon(&a), presented))
}

fn client_ip(env: &Env) -> String {
    env.req.client_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "unknown".into())
}

/// Starts a session for `user_id`: a 303 (whose `location` the caller sets)
/// with the session cookie, and the pre-session cookie cleared.
async fn start_session(env: &Env<'_>, user_id: i64) -> Result<Response, StoreError> {
    let token = session::new_token();
    let hash = session::token_hash(&token);
    let now = env.now();
    let c = env.console();
    let (max_age, idle) = (c.session_max_age.as_millis() as i64, c.session_idle_timeout.as_millis() as i64);
    let ip = env.req.client_ip.map(|i| i.to_string());
    let ua = env.req.header("user-agent").map(str::to_string);
    env.app
        .db
        .run(move |conn| {
            sql::purge_expired(conn, now, idle)?;
            sql::create(
                conn,
                &hash,
                user_id,
                now,
                now + max_age,
                &Origin { ip: ip.as_deref(), user_agent: ua.as_deref() },
            )
        })
        .await?;
    let name = session::session_cookie_name(env.secure);
    Ok(Response::new(303, "text/plain; charset=utf-8", "")
        .header("cache-control", "no-store")
        .cookie(&session::cookie(name, token, max_age / 1000, env.secure))
        .cookie(&session::expired_cookie(ANON_COOKIE, env.secure)))
}

pub(super) async fn sign_up_form(env: &Env<'_>, error: Option<&str>, status: u16) -> Response {
    let t = env.t;
    let p = env.page(None);
    let mode = env.console().signup;
    if mode == Signup::Closed {
        let body = html! {
            h1 { (t.sign_up_title) }
            (notice("warn", t.sign_up_closed))
            p { a.btn href="/console/sign-in" { (t.sign_in) } }
        };
        return Response::html(if status == 200 { 200 } else { 403 }, plain(&p, t.sign_up_title, body));
    }
    let form = env.req.form();
    let email = form.get("email").unwrap_or("").to_string();
    let code = form.get("code").unwrap_or("").to_string();
    let (anon, set) = anon_cookie(env);
    let body = html! {
        h1 { (t.sign_up_title) }
        p.muted { (t.sign_up_lead) }
        @if let Some(e) = error { (notice("bad", e)) }
        div.card {
            form.stack method="post" action="/console/sign-up" {
                input type="hidden" name="csrf" value=(env.site.csrf.for_anon(&anon));
                label { (t.email) input type="email" name="email" value=(email) autocomplete="username" required maxlength="254" autofocus; }
                label {
                    (t.password)
                    span.hint { (t.password_rules) }
                    input type="password" name="password" autocomplete="new-password" required
                        minlength=(password::MIN_CHARS) maxlength=(password::MAX_CHARS);
                }
                label { (t.password_again) input type="password" name="password2" autocomplete="new-password" required maxlength=(password::MAX_CHARS); }
                label {
                    @if mode == Signup::Invite { (t.invite_code) } @else { (t.code_optional) }
                    span.hint { (t.code_hint) }
                    input type="text" name="code" value=(code) placeholder="CPX-XXXXX-XXXXX-XXXXX-XXXXX"
                        autocomplete="off" maxlength="64" required[mode == Signup::Invite];
                }
                button type="submit" { (t.create_account) }
            }
        }
        p.muted { (t.have_account) " " a href="/console/sign-in" { (t.sign_in) } }
    };
    with_anon(Response::html(status, plain(&p, t.sign_up_title, body)), env, &anon, set)
}

pub(super) async fn sign_up(env: &Env<'_>) -> Response {
    let t = env.t;
    let mode = env.console().signup;
    if mode == Signup::Closed {
        return sign_up_form(env, None, 403).await;
    }
    let form = env.req.form();
    if !anon_csrf_ok(env, form.raw("csrf")) {
        return sign_up_form(env, Some(t.form_expired), 403).await;
    }
    let Some(email) = form.get("email").and_then(normalize_email) else {
        return sign_up_form(env, Some(t.invalid_email), 400).await;
    };
    let pw = form.raw("password").unwrap_or("");
    if let Err(e) = password::check(pw) {
        return sign_up_form(env, Some(&password_message(env, e)), 400).await;
    }
    if form.raw("password2") != Some(pw) {
        return sign_up_form(env, Some(t.passwords_differ), 400).await;
    }
    let code = form.get("code").map(str::to_string);
    if mode == Signup::Invite && code.is_none() {
        return sign_up_form(env, Some(t.invite_required), 400).await;
    }
    let now = env.now();
    let ip = client_ip(env);
    if let Err(secs) = env.site.sign_up_per_ip.check(&ip, now).await {
        let msg = t.too_many_attempts.replace("{s}", &secs.to_string());
        return sign_up_form(env, Some(&msg), 429).await.header("retry-after", secs.to_string());
    }
    let hash = {
        let _permit = env.site.hashing.acquire().await;
        let pw = pw.to_string();
        match tokio::task::spawn_blocking(move || password::hash(&pw)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return server_error(env, &e),
            Err(e) => return server_error(env, &StoreError::Task(e.to_string())),
        }
    };
    let cfg = env.app.config.clone();
    let credits = env.console().signup_credits;
    let registered = env.app.db.run(move |c| ops::register(c, &cfg, &email, &hash, code.as_deref(), credits)).await;
    let user = match registered {
        Ok(u) => u,
        Err(RegisterError::Store(e)) => return server_error(env, &e),
        Err(e) => return sign_up_form(env, Some(&register_message(env, &e)), 400).await,
    };
    env.site.sign_up_per_ip.hit(&ip, now).await;
    // Load the new user (and any credits) before their first page.
    env.app.writer.flush().await;
    match start_session(env, user.id).await {
        Ok(resp) => resp.header("location", "/console/dashboard?done=welcome"),
        Err(e) => server_error(env, &e),
    }
}

pub(super) async fn sign_out(env: &Env<'_>, viewer: &Viewer, everywhere: bool) -> Response {
    let (sid, uid) = (viewer.session_id, viewer.user_id);
    let ended = env
        .app
        .db
        .run(move |c| if everywhere { sql::delete_for_user(c, uid, None).map(|_| ()) } else { sql::delete(c, sid) })
        .await;
    if let Err(e) = ended {
        return server_error(env, &e);
    }
    Response::redirect("/console/sign-in?done=signed_out")
        .cookie(&session::expired_cookie(session::session_cookie_name(env.secure), env.secure))
}

pub(super) fn password_message(env: &Env, e: password::PasswordError) -> String {
    let t = env.t;
    match e {
        password::PasswordError::TooShort => t.password_too_short.replace("{n}", &password::MIN_CHARS.to_string()),
        password::PasswordError::TooLong => t.password_too_long.replace("{n}", &password::MAX_CHARS.to_string()),
    }
}

fn register_message(env: &Env, e: &RegisterError) -> String {
    match e {
        RegisterError::EmailTaken => env.t.email_taken.to_string(),
        RegisterError::Code(r) => super::redeem::message(env.t, r).to_string(),
        RegisterError::Store(_) => env.t.error_body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(safe_next(Some("/console/keys")), "/console/keys");
        assert_eq!(safe_next(Some("https://evil.example/")), "/console/dashboard");
        assert_eq!(safe_next(Some("//evil.example/console/")), "/console/dashboard");
        assert_eq!(safe_next(Some("/console//evil.example")), "/console/dashboard");
        assert_eq!(safe_next(Some("/console/\\evil")), "/console/dashboard");
        assert_eq!(safe_next(None), "/console/dashboard");
        assert_eq!(safe_next(Some("/console/x\r\nSet-Cookie: a=b")), "/console/dashboard");
        assert_eq!(safe_next(Some("/console/usage?from=2026-11-01")), "/console/usage?from=2026-11-01");
    }
}
