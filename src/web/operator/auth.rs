//! Operator sign-in: the admin token, or the email and password of a user
//! whose role is admin. Failures get one message and count against the
//! client IP (and the email) like the user console's.

use super::{Operator, IDLE, MAX_AGE};
use crate::accounts::password;
use crate::store::accounts::normalize_email;
use crate::store::kinds::Role;
use crate::store::sessions as sql;
use crate::store::StoreError;
use crate::web::console::{plain, server_error};
use crate::web::layout::notice;
use crate::web::response::Response;
use crate::web::session::{self, Csrf, ANON_COOKIE};
use crate::web::Env;
use maud::html;
use subtle::ConstantTimeEq;

pub(super) fn form(env: &Env, error: Option<&str>, status: u16) -> Response {
    let t = env.t;
    let (anon, set) = match env.req.cookie(ANON_COOKIE).filter(|v| v.len() == 43) {
        Some(v) => (v, false),
        None => (session::new_token(), true),
    };
    let csrf = env.site.csrf.for_anon(&anon);
    let p = env.page(None);
    let done = crate::web::console::done_notice(env, &[("signed_out", t.signed_out)]);
    let body = html! {
        h1 { (t.op_sign_in_title) }
        p.muted { (t.op_sign_in_lead) }
        @if let Some(d) = done { (d) }
        @if let Some(e) = error { (notice("bad", e)) }
        div.card {
            form.stack method="post" action="/sign-in" {
                input type="hidden" name="csrf" value=(csrf);
                label { (t.op_admin_token) span.hint { (t.op_admin_token_hint) }
                    input type="password" name="token" autocomplete="off" maxlength="256"; }
                button type="submit" { (t.sign_in) }
            }
        }
        div.card {
            form.stack method="post" action="/sign-in" {
                input type="hidden" name="csrf" value=(csrf);
                p.sub { (t.op_as_admin_user) }
                label { (t.email) input type="email" name="email" autocomplete="username" maxlength="254"; }
                label { (t.password) input type="password" name="password" autocomplete="current-password" maxlength=(password::MAX_CHARS); }
                button.ghost type="submit" { (t.sign_in) }
            }
        }
    };
    let resp = Response::html(status, plain(&p, t.op_sign_in_title, body));
    if set {
        resp.cookie(&session::strict_cookie(ANON_COOKIE, anon, 86_400, env.secure))
    } else {
        resp
    }
}

/// Who signs in: the token, or an admin user.
enum Who {
    Token,
    User(i64, String),
    Nobody,
}

pub(super) async fn sign_in(env: &Env<'_>, admin_token: &str) -> Response {
    let t = env.t;
    let f = env.req.form();
    let anon_ok = env.req.cookie(ANON_COOKIE).is_some_and(|a| Csrf::verify(&env.site.csrf.for_anon(&a), f.raw("csrf")));
    if !anon_ok {
        return form(env, Some(t.form_expired), 403);
    }
    let now = env.now();
    let ip = env.req.client_ip.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into());
    let email = f.get("email").and_then(normalize_email);
    let limited = match (env.site.sign_in_per_ip.check(&ip, now).await, &email) {
        (Ok(()), Some(e)) => env.site.sign_in_per_account.check(e, now).await,
        (other, _) => other,
    };
    if let Err(secs) = limited {
        let msg = t.too_many_attempts.replace("{s}", &secs.to_string());
        return form(env, Some(&msg), 429).header("retry-after", secs.to_string());
    }
    let who = match identify(env, f.raw("token"), email.as_deref(), f.raw("password"), admin_token).await {
        Ok(w) => w,
        Err(e) => return server_error(env, &e),
    };
    match who {
        Who::Token => start_session(env, "operator:token".to_string(), None).await,
        Who::User(id, email) => start_session(env, format!("operator:{email}"), Some(id)).await,
        Who::Nobody => {
            env.site.sign_in_per_ip.hit(&ip, now).await;
            if let Some(e) = &email {
                env.site.sign_in_per_account.hit(e, now).await;
            }
            form(env, Some(t.op_bad_credentials), 401)
        }
    }
}

/// Who the form's token, or email and password, belong to. A user counts
/// only while active and an admin.
async fn identify(
    env: &Env<'_>,
    token: Option<&str>,
    email: Option<&str>,
    password: Option<&str>,
    admin_token: &str,
) -> Result<Who, StoreError> {
    let (email, pw) = match (token.filter(|s| !s.is_empty()), email, password) {
        (Some(tok), _, _) => {
            let ok = tok.len() == admin_token.len() && bool::from(tok.as_bytes().ct_eq(admin_token.as_bytes()));
            return Ok(if ok { Who::Token } else { Who::Nobody });
        }
        (None, Some(e), Some(pw)) => (e.to_string(), pw.to_string()),
        _ => return Ok(Who::Nobody),
    };
    let _permit = env.site.hashing.acquire().await;
    env.app
        .db
        .run(move |c| {
            let login = crate::store::accounts::find_login(c, &email)?;
            let role = match &login {
                Some(l) => Some(crate::store::accounts::user_by_id(c, l.id)?.role),
                None => None,
            };
            let ok = password::verify(login.as_ref().and_then(|l| l.password_hash.as_deref()), &pw);
            Ok(match login {
                Some(l) if ok && !l.banned && role == Some(Role::Admin) => Who::User(l.id, l.email),
                _ => Who::Nobody,
            })
        })
        .await
}

/// Records the session (and the sign-in in the audit log), sets its cookie.
async fn start_session(env: &Env<'_>, actor: String, user_id: Option<i64>) -> Response {
    let token = session::new_token();
    let hash = session::token_hash(&token);
    let (now, max, idle) = (env.now(), MAX_AGE.as_millis() as i64, IDLE.as_millis() as i64);
    let created = env
        .app
        .db
        .run(move |c| {
            sql::end_operator(c, None, now, idle)?;
            sql::create_operator(c, &hash, &actor, user_id, now, now + max)?;
            crate::store::billing::audit(c, &actor, "operator.sign_in", "", "{}")
        })
        .await;
    if let Err(e) = created {
        return server_error(env, &e);
    }
    Response::redirect("/")
        .cookie(&session::strict_cookie(session::operator_cookie_name(env.secure), token, max / 1000, env.secure))
        .cookie(&session::expired_cookie(ANON_COOKIE, env.secure))
}

pub(super) async fn sign_out(env: &Env<'_>, op: &Operator) -> Response {
    let (id, now) = (op.session_id, env.now());
    if let Err(e) = env.app.db.run(move |c| sql::end_operator(c, Some(id), now, 0)).await {
        return server_error(env, &e);
    }
    Response::redirect("/sign-in?done=signed_out")
        .cookie(&session::expired_cookie(session::operator_cookie_name(env.secure), env.secure))
}
