//! The website through the real gateway: public docs, sign-up modes, sign-in
//! throttling, CSRF, sessions, the API Keys, Redeem and Usage pages, and every
//! bad input answered with a clear 4xx. A cookie-keeping client that does not
//! follow redirects plays the browser, so every 303 is asserted.

mod common;

use codex_proxy::fake_upstream::{Behavior, FakeUsage};
use common::browser::*;
use common::*;
use serde_json::json;
use std::time::Duration;

const PLANS: &str = r#"
  - {id: pro, name: Pro, daily_quota: 50, concurrency: 8, blocked_models: ["gpt-4o"], duration_days: 30}
"#;

/// `billing_conf` plus a `console:` section.
fn console_conf(fake: &codex_proxy::fake_upstream::FakeUpstream, console: &str) -> String {
    format!("{}\nconsole:\n  max_keys_per_user: 3\n{console}\n", billing_conf(fake, "  default_concurrency: 4", PLANS))
}

#[tokio::test]
async fn docs_are_public_light_and_in_both_languages() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, "  site_name: Relay One"));
    let b = Browser::new(&gw);
    let host = gw.addr.to_string();
    let mut total_assets = 0;
    for (path, title) in [
        ("/", "Get started"),
        ("/docs/endpoints", "Endpoints"),
        ("/docs/errors", "Errors"),
        ("/docs/models", "Models and pricing"),
        ("/docs/code", "Code integration"),
        ("/docs/cc-switch", "cc-switch"),
        ("/docs/codex", "Codex CLI"),
        ("/docs/claude-code", "Claude Code"),
        ("/docs/opencode", "OpenCode"),
        ("/docs/openclaw", "OpenClaw"),
    ] {
        let p = b.get(path).await;
        assert_eq!(p.status, 200, "{path}");
        assert!(p.body.contains(&format!("<title>{title} · Relay One</title>")), "{path}");
        // Snippets carry this gateway's base URLs, not placeholders (the
        // cc-switch usage script's own `{{baseUrl}}` and `{{apiKey}}` aside).
        let body = p.body.replace("{{baseUrl}}", "").replace("{{apiKey}}", "");
        assert!(!body.contains("{{"), "{path} has an unfilled placeholder");
        if path != "/docs/errors" && path != "/docs/models" {
            assert!(p.body.contains(&format!("http://{host}")), "{path} shows the base URL");
        }
        // Nothing is loaded from another host (links to other sites are fine).
        for attr in ["src=\"http", "src=\"//", "<link rel=\"stylesheet\" href=\"http"] {
            assert!(!p.body.contains(attr), "{path} loads {attr}");
        }
        for (k, v) in [
            ("content-security-policy", "default-src 'none'; script-src 'self'; style-src 'self'"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "same-origin"),
            ("x-content-type-options", "nosniff"),
        ] {
            let got = p.headers.get(k).and_then(|h| h.to_str().ok()).unwrap_or("");
            assert!(got.starts_with(v), "{path}: {k}: {got}");
        }
        // Under 150 KB with the stylesheet, script and icon it loads.
        let mut bytes = p.body.len();
        for asset in p.body.split("\"/assets/").skip(1).map(|s| &s[..s.find('"').unwrap()]) {
            let a = b.get(&format!("/assets/{asset}")).await;
            assert_eq!(a.status, 200, "{asset}");
            assert_eq!(a.headers["cache-control"], "public, max-age=31536000, immutable");
            bytes += a.body.len();
        }
        assert!(bytes < 150_000, "{path}: {bytes} bytes");
        total_assets = total_assets.max(bytes);
    }
    println!("largest docs page with its assets: {total_assets} bytes");

    // Chinese from Accept-Language; the switch link sets a cookie that wins.
    let zh = b.send(b.http.get(gw.url("/docs/codex")).header("accept-language", "zh-CN,zh;q=0.9,en;q=0.5")).await;
    assert!(zh.body.contains("<html lang=\"zh-CN\"") && zh.body.contains("手动配置"), "Chinese page");
    let en = b.get("/docs/codex?lang=en").await;
    assert!(en.body.contains("Manual set-up"));
    let set = en.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(set.starts_with("cp_lang=en;"), "{set}");
    let again = b.send(b.http.get(gw.url("/docs/codex")).header("accept-language", "zh-CN")).await;
    assert!(again.body.contains("Manual set-up"), "the chosen language sticks");

    // Prices from the live config, for the models a usable channel serves.
    let models = b.get("/docs/models").await;
    assert!(models.body.contains("<code>claude-sonnet-4-6</code>"));
    assert!(models.body.contains("<td class=\"num\">3.75</td>"), "sonnet's cache-write price");
    assert!(!models.body.contains("claude-haiku-4-5"), "declared but served by no channel");

    // A Host header that is not a host name is not echoed into the page.
    let evil = b.send(b.http.get(gw.url("/")).header("host", "x\"><script>alert(1)</script>")).await;
    assert_eq!(evil.status, 200);
    assert!(!evil.body.contains("<script>alert") && evil.body.contains("http://localhost/v1"));
    assert_eq!(b.get("/docs/nope").await.status, 404);
    assert_eq!(b.post("/docs/codex", &[]).await.status, 405);
    // /v1 misses stay JSON errors of the API.
    let api = b.get("/v1/nope").await;
    assert_eq!(api.status, 404);
    assert!(api.body.starts_with("{\"error\""), "{}", api.body);
}

#[tokio::test]
async fn public_url_is_what_the_docs_and_links_show() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, "  public_url: https://relay.example.com"));
    let b = Browser::new(&gw);
    let p = b.get("/docs/claude-code").await;
    assert!(p.body.contains("export ANTHROPIC_BASE_URL=https://relay.example.com\n"));
    assert!(b.get("/docs/codex").await.body.contains("base_url = \"https://relay.example.com/v1\""));
    // Cookies are Secure when users reach the site over https.
    let p = b.get("/console/sign-in").await;
    let c = p.headers["set-cookie"].to_str().unwrap();
    assert!(c.contains("Secure") && c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");
    // Behind a proxy that rewrites Host, a post from the public address is
    // not taken for a cross-site one (it then fails only for want of the
    // Secure cookie, which this plain-HTTP client does not send back).
    let from =
        |origin: &'static str| b.http.post(gw.url("/console/sign-in")).header("origin", origin).form(&[("x", "y")]);
    let ours = b.send(from("https://relay.example.com")).await;
    assert!(ours.status == 403 && ours.body.contains("This form has expired"), "{}", ours.body);
    let theirs = b.send(from("https://evil.example")).await;
    assert!(theirs.status == 403 && theirs.body.contains("Requests from other sites are refused"));
}

#[tokio::test]
async fn sign_up_open_invite_and_closed() {
    let fake = fake();
    // Open: anyone; a code is optional and redeemed on the new account.
    let gw = Gateway::start(&console_conf(&fake, "  signup: open\n  signup_credits: 0.5"));
    let b = Browser::new(&gw);
    let p = b.sign_up("  Ann@Example.COM ", "correct horse", None).await;
    assert_eq!((p.status, p.location()), (303, "/console/dashboard?done=welcome"));
    let c = p.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(c.contains("cp_session=") && c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");
    assert!(!c.contains("Secure"), "plain HTTP: no Secure flag (browsers would drop the cookie)");
    let dash = b.get("/console/dashboard").await;
    assert_eq!(dash.status, 200);
    assert!(dash.body.contains("ann@example.com"), "emails are stored lower-case");
    assert!(dash.body.contains("<div class=\"stat\">0.50</div>"), "sign-up credits");
    // The same address again, in another case: refused, nothing created.
    let again = Browser::new(&gw).sign_up("ann@example.com", "another horse", None).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("This email cannot be used to sign up"));
    let n: i64 = gw.db().query_row("SELECT count(*) FROM users", (), |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
    drop(gw);

    // Invite: a valid redemption code is required and redeemed.
    let gw = Gateway::start(&console_conf(&fake, "  signup: invite"));
    let code = codes(&gw, &["--credits", "2"]).remove(0);
    let b = Browser::new(&gw);
    let form = b.get("/console/sign-up").await;
    assert!(form.body.contains("Invitation code") && form.body.contains("name=\"code\""));
    let p = b.sign_up("bo@x.io", "correct horse", None).await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("needs an invitation code"));
    let p = b.sign_up("bo@x.io", "correct horse", Some("CPX-00000-00000-00000-00000")).await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("This code is not valid"));
    assert!(gw.db().query_row("SELECT count(*) FROM users", (), |r| r.get::<_, i64>(0)).unwrap() == 0);
    let p = b.sign_up("bo@x.io", "correct horse", Some(&code)).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(b.get("/console/dashboard").await.body.contains("<div class=\"stat\">2.00</div>"));
    // The code was single-use: a second invitee cannot use it.
    let p = Browser::new(&gw).sign_up("cy@x.io", "correct horse", Some(&code)).await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("This code has already been used"));
    drop(gw);

    // Closed: the page says so and posting creates nothing.
    let gw = Gateway::start(&console_conf(&fake, "  signup: closed"));
    let b = Browser::new(&gw);
    let page = b.get("/console/sign-up").await;
    assert!(page.body.contains("Sign-up is closed"));
    let p = b.post("/console/sign-up", &[("email", "x@y.z"), ("password", "correct horse")]).await;
    assert_eq!(p.status, 403);
    assert!(!b.get("/console/sign-in").await.body.contains("href=\"/console/sign-up\">Sign up</a></p>"));
}

#[tokio::test]
async fn sign_in_is_generic_throttled_and_refuses_banned_users() {
    let fake = fake();
    let throttle = "  throttle: {sign_in_per_ip: 8, sign_in_per_account: 3, window: 1m}";
    let gw = Gateway::start(&console_conf(&fake, throttle));
    // A user made on the command line with a password can sign in.
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["users", "add", "cli@x.io", "--password-stdin", "-c"]).arg(&gw.conf);
    let mut child = cmd.stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"correct horse\n").unwrap();
    assert!(child.wait().unwrap().success());
    let b = Browser::new(&gw);
    let p = b.sign_in("CLI@x.io", "correct horse").await;
    assert_eq!((p.status, p.location()), (303, "/console/dashboard"));

    // Wrong password and unknown email: the same answer.
    let wrong = Browser::new(&gw).sign_in("cli@x.io", "wrong horse!").await;
    let unknown = Browser::new(&gw).sign_in("nobody@x.io", "wrong horse!").await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    for p in [&wrong, &unknown] {
        assert!(p.body.contains("Incorrect email or password."));
    }
    // Per account: a third failure is the last; even the right password now
    // waits (and the answer does not say whether the account exists).
    Browser::new(&gw).sign_in("cli@x.io", "wrong again!").await;
    Browser::new(&gw).sign_in("cli@x.io", "wrong thrice").await;
    let locked = Browser::new(&gw).sign_in("cli@x.io", "correct horse").await;
    assert_eq!(locked.status, 429);
    let retry: u64 = locked.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(locked.body.contains("Too many attempts"));
    // Per IP: 4 failures so far, 3 more for an unknown address, one for
    // another: the 8th fails, and from then on every account waits.
    for _ in 0..3 {
        assert_eq!(Browser::new(&gw).sign_in("ghost@x.io", "wrong horse!").await.status, 401);
    }
    assert_eq!(Browser::new(&gw).sign_in("other@x.io", "wrong horse!").await.status, 401);
    let ip_locked = Browser::new(&gw).sign_in("other@x.io", "wrong horse!").await;
    assert_eq!(ip_locked.status, 429);

    // The session made before stays valid; a ban ends it and sign-in says so.
    assert_eq!(b.get("/console/keys").await.status, 200);
    let out = gw.cli(&["users", "ban", "cli@x.io"]);
    assert!(out.status.success());
    let p = b.get("/console/keys").await;
    assert_eq!((p.status, p.location()), (303, "/console/sign-in?next=%2Fconsole%2Fkeys"));
}

#[tokio::test]
async fn banned_users_cannot_sign_in() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, ""));
    Browser::new(&gw).sign_up("ban@x.io", "correct horse", None).await;
    assert!(gw.cli(&["users", "ban", "ban@x.io"]).status.success());
    let p = Browser::new(&gw).sign_in("ban@x.io", "correct horse").await;
    assert_eq!(p.status, 403);
    assert!(p.body.contains("This account is banned"));
    // A wrong password for a banned account says nothing about the ban.
    let p = Browser::new(&gw).sign_in("ban@x.io", "wrong horse!").await;
    assert_eq!(p.status, 401);
}

#[tokio::test]
async fn csrf_and_cross_site_posts_are_refused() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, ""));
    let b = signed_up(&gw, "csrf@x.io").await;
    let form = b.get("/console/keys").await;
    let once = form.field("once");
    // No token, a token of another session, a forged one: 403, no key.
    let other = signed_up(&gw, "other@x.io").await;
    let foreign = other.get("/console/keys").await.field("csrf");
    for csrf in ["", "forged", foreign.as_str()] {
        let p = b.post("/console/keys", &[("csrf", csrf), ("once", &once), ("name", "x")]).await;
        assert_eq!(p.status, 403, "csrf {csrf:?}");
        assert!(p.body.contains("This form has expired"));
    }
    // The right token from another site's page: refused before anything else.
    let csrf = form.field("csrf");
    let p = b
        .send(b.http.post(gw.url("/console/keys")).header("origin", "https://evil.example").form(&[
            ("csrf", csrf.as_str()),
            ("once", once.as_str()),
            ("name", "x"),
        ]))
        .await;
    assert_eq!(p.status, 403);
    assert!(p.body.contains("Requests from other sites are refused"));
    let p = b
        .send(b.http.post(gw.url("/console/sign-out")).header("sec-fetch-site", "cross-site").form(&[("csrf", &csrf)]))
        .await;
    assert_eq!(p.status, 403);
    let n: i64 = gw.db().query_row("SELECT count(*) FROM api_keys", (), |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
    // Sign-in needs the token of the pre-session cookie (login CSRF).
    let fresh = Browser::new(&gw);
    let p = fresh.post("/console/sign-in", &[("email", "csrf@x.io"), ("password", "correct horse")]).await;
    assert_eq!(p.status, 403);
    // State never changes on GET.
    assert_eq!(b.get("/console/sign-out").await.status, 404);
    assert_eq!(b.get("/console/keys").await.status, 200, "still signed in");
}

#[tokio::test]
async fn sessions_expire_end_and_stay_apart_from_api_keys() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, "  session_idle_timeout: 2s\n  session_max_age: 4s"));
    let b = signed_up(&gw, "s@x.io").await;
    let token = gw.db().query_row("SELECT token_hash FROM web_sessions", (), |r| r.get::<_, String>(0)).unwrap();
    assert_eq!(token.len(), 64, "only the SHA-256 of the token is stored");
    // Idle: two requests 1.2 s apart keep it alive; then 2.2 s idle ends it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(b.get("/console/dashboard").await.status, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(b.get("/console/dashboard").await.status, 303, "idle session ended");
    // Absolute: active every second, it still ends after 4 s.
    b.sign_in("s@x.io", "correct horse").await;
    let started = std::time::Instant::now();
    let mut ended = None;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        if b.get("/console/dashboard").await.status != 200 {
            ended = Some(started.elapsed());
            break;
        }
    }
    let ended = ended.expect("the session ended");
    assert!(ended >= Duration::from_millis(3500) && ended < Duration::from_millis(5000), "{ended:?}");

    // Sign-out ends the session server-side: the old cookie is worthless.
    let p = b.sign_in("s@x.io", "correct horse").await;
    let cookie = p.headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let csrf = b.get("/console/account").await.field("csrf");
    let out = b.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.location()), (303, "/console/sign-in?done=signed_out"));
    let replay = b.send(b.http.get(gw.url("/console/dashboard")).header("cookie", &cookie)).await;
    assert_eq!(replay.status, 303);

    // A session cookie is no API key, an API key no session.
    b.sign_in("s@x.io", "correct horse").await;
    let (_, key) = b.create_key(&[("name", "k")]).await;
    let key = key.unwrap();
    let api = b.send(b.http.get(gw.url("/v1/models"))).await;
    assert_eq!(api.status, 401, "the browser's cookie does not authenticate /v1");
    let r = client().get(gw.url("/console/dashboard")).bearer_auth(&key).send().await.unwrap();
    assert!(r.url().path().starts_with("/console/sign-in"), "{}", r.url());
}

#[tokio::test]
async fn password_change_needs_the_old_one_and_ends_other_sessions() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, ""));
    let (a, b) = (Browser::new(&gw), Browser::new(&gw));
    a.sign_up("pw@x.io", "correct horse", None).await;
    b.sign_in("pw@x.io", "correct horse").await;
    let change = |cur: &'static str, new: &'static str, again: &'static str| {
        let a = &a;
        async move {
            a.submit(
                "/console/account",
                "/console/account/password",
                &[("current", cur), ("password", new), ("password2", again)],
            )
            .await
        }
    };
    let p = change("wrong horse!", "battery staple", "battery staple").await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("The current password is not correct."));
    let p = change("correct horse", "short", "short").await;
    assert!(p.status == 400 && p.body.contains("at least 8 characters"));
    let long = "x".repeat(129);
    let p = a
        .submit(
            "/console/account",
            "/console/account/password",
            &[("current", "correct horse"), ("password", &long), ("password2", &long)],
        )
        .await;
    assert!(p.status == 400 && p.body.contains("at most 128 characters"));
    let p = change("correct horse", "battery staple", "battery stapler").await;
    assert!(p.status == 400 && p.body.contains("The two passwords differ."));
    let p = change("correct horse", "battery staple", "battery staple").await;
    assert_eq!((p.status, p.location()), (303, "/console/account?done=password"));
    assert_eq!(a.get("/console/dashboard").await.status, 200, "this browser has a new session");
    assert_eq!(b.get("/console/dashboard").await.status, 303, "the other browser was signed out");
    assert_eq!(Browser::new(&gw).sign_in("pw@x.io", "correct horse").await.status, 401);
    assert_eq!(Browser::new(&gw).sign_in("pw@x.io", "battery staple").await.status, 303);
    let n: i64 =
        gw.db().query_row("SELECT count(*) FROM admin_audit WHERE action = 'user.password'", (), |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn keys_are_shown_once_and_managed_from_the_console() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, ""));
    let b = signed_up(&gw, "k@x.io").await;
    gw.cli(&["credits", "add", "k@x.io", "5"]);
    let (page, key) = b.create_key(&[("name", "laptop"), ("expires", "30d")]).await;
    assert_eq!(page.status, 201);
    let key = key.expect("the plaintext is on the page");
    assert!(key.starts_with("codex_") && key.len() == 46, "{key}");
    assert!(page.body.contains("it is shown only this once"));
    // cc-switch links for the four clients, with this key and base URL.
    for app in ["codex", "claude", "opencode", "openclaw"] {
        let at = page.body.find(&format!("data-app=\"{app}\"")).unwrap_or_else(|| panic!("{app} link"));
        let link = &page.body[page.body[..at].rfind("href=\"").unwrap() + 6..at];
        let link = link.trim_end_matches("\" ").replace("&amp;", "&");
        assert!(link.starts_with("ccswitch://v1/import?resource=provider&"), "{link}");
        assert!(link.contains(&format!("&app={app}&")) && link.contains(&format!("&apiKey={key}&")), "{link}");
        assert!(link.contains("usageEnabled=true") && link.contains("usageScript="), "{link}");
        let endpoint = if app == "claude" { gw.url("") } else { gw.url("/v1") };
        let enc: String = form_urlencoded::byte_serialize(endpoint.as_bytes()).collect();
        assert!(link.contains(&format!("&endpoint={enc}&")), "{link}");
    }
    // The key works at once, and is never shown again.
    let (s, _, _) = get(&gw, "/v1/models", &key).await;
    assert_eq!(s, 200);
    let list = b.get("/console/keys").await;
    assert!(!list.body.contains(&key) && list.body.contains(&key[..14]), "prefix only");
    let stored: String = gw.db().query_row("SELECT key_hash FROM api_keys", (), |r| r.get(0)).unwrap();
    assert!(!stored.contains(&key[14..]));
    let id: i64 = gw.db().query_row("SELECT id FROM api_keys", (), |r| r.get(0)).unwrap();
    // Disable, enable, delete: each takes effect on /v1 when the page answers.
    let act = |action: &'static str| {
        let b = &b;
        async move { b.submit("/console/keys", &format!("/console/keys/{id}/{action}"), &[]).await }
    };
    let p = act("disable").await;
    assert_eq!((p.status, p.location()), (303, "/console/keys?done=disabled"));
    let (s, _, body) = get(&gw, "/v1/models", &key).await;
    assert_eq!((s, json(&body)["error"]["message"].as_str()), (401, Some("This API key is disabled")));
    act("enable").await;
    assert_eq!(get(&gw, "/v1/models", &key).await.0, 200);
    let p = act("delete").await;
    assert_eq!(p.location(), "/console/keys?done=deleted");
    assert_eq!(get(&gw, "/v1/models", &key).await.0, 401);
    assert!(!b.get("/console/keys").await.body.contains(&key[..14]), "deleted keys leave the list");
    assert_eq!(act("enable").await.status, 404, "a deleted key cannot come back");

    // A model list limits the key; a date sets its expiry.
    let (_, limited) = b.create_key(&[("name", "mini"), ("models", "gpt-4o-mini"), ("expires_on", "2099-01-01")]).await;
    let limited = limited.unwrap();
    let (s, _, _) = post(
        &gw,
        "/v1/chat/completions",
        &limited,
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, body) = post(
        &gw,
        "/v1/messages",
        &limited,
        &json!({"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let exp: i64 = gw.db().query_row("SELECT expires_at FROM api_keys WHERE name = 'mini'", (), |r| r.get(0)).unwrap();
    assert_eq!(exp, 4_070_995_200_000, "through the whole of 2099-01-01 UTC");

    // The key limit (3 here) counts keys that are not deleted: at the limit
    // the form is gone, and a post anyway is refused.
    b.create_key(&[("name", "two")]).await;
    b.create_key(&[("name", "three")]).await;
    let full = b.get("/console/keys").await;
    assert!(!full.body.contains("name=\"once\"") && full.body.contains("limit of 3 keys"));
    let p = b.post("/console/keys", &[("csrf", &full.field("csrf")), ("once", "fresh"), ("name", "four")]).await;
    assert_eq!(p.status, 409);
    assert!(p.body.contains("limit of 3 keys"));
    // Another user's key looks like no key at all.
    let other = signed_up(&gw, "o@x.io").await;
    let p = other.submit("/console/keys", &format!("/console/keys/{id}/enable"), &[]).await;
    assert_eq!(p.status, 404);
}

#[tokio::test]
async fn double_submits_create_one_key_and_redeem_once() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, ""));
    let b = signed_up(&gw, "d@x.io").await;
    let form = b.get("/console/keys").await;
    let (csrf, once) = (form.field("csrf"), form.field("once"));
    let fields = [("csrf", csrf.as_str()), ("once", once.as_str()), ("name", "twice")];
    let posts = (0..6).map(|_| b.post("/console/keys", &fields));
    let pages = futures_util::future::join_all(posts).await;
    let mut statuses: Vec<u16> = pages.iter().map(|p| p.status).collect();
    statuses.sort();
    assert_eq!(statuses, vec![201, 409, 409, 409, 409, 409]);
    assert!(pages.iter().filter(|p| p.status == 409).all(|p| p.body.contains("already submitted")));
    let n: i64 = gw.db().query_row("SELECT count(*) FROM api_keys", (), |r| r.get(0)).unwrap();
    assert_eq!(n, 1);

    let code = codes(&gw, &["--credits", "3"]).remove(0);
    let csrf = b.get("/console/redeem").await.field("csrf");
    let fields = [("csrf", csrf.as_str()), ("code", code.as_str())];
    let posts = (0..6).map(|_| b.post("/console/redeem", &fields));
    let pages = futures_util::future::join_all(posts).await;
    assert_eq!(pages.iter().filter(|p| p.status == 200).count(), 1);
    assert!(pages.iter().filter(|p| p.status != 200).all(|p| p.body.contains("You have already redeemed this code")));
    let credits: i64 = gw.db().query_row("SELECT SUM(amount) FROM ledger", (), |r| r.get(0)).unwrap();
    assert_eq!(credits, 3_000_000, "credited exactly once");
}

#[tokio::test]
async fn redeem_page_explains_every_outcome() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, ""));
    let b = signed_up(&gw, "r@x.io").await;
    let credits = codes(&gw, &["--credits", "2.5"]).remove(0);
    let plan = codes(&gw, &["--plan", "pro"]).remove(0);
    let expired = codes(&gw, &["--credits", "1", "--expires", "2020-01-01"]).remove(0);
    let disabled = codes(&gw, &["--credits", "1"]).remove(0);
    let id: i64 = gw.db().query_row("SELECT max(id) FROM redemption_codes", (), |r| r.get(0)).unwrap();
    gw.cli(&["codes", "disable", &id.to_string()]);
    // A single-use code someone else redeemed.
    let taken = codes(&gw, &["--credits", "1"]).remove(0);
    let other = signed_up(&gw, "r2@x.io").await;
    assert_eq!(other.submit("/console/redeem", "/console/redeem", &[("code", &taken)]).await.status, 200);
    let redeem = |code: String| {
        let b = &b;
        async move { b.submit("/console/redeem", "/console/redeem", &[("code", &code)]).await }
    };
    let p = redeem(credits.to_lowercase().replace('-', " ")).await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Redeemed: 2.50 credits were added to your balance."), "case and dashes do not matter");
    let p = redeem(plan).await;
    assert!(p.body.contains("Redeemed: plan Pro, valid until"), "{}", p.body);
    for (code, msg) in [
        (credits, "You have already redeemed this code."),
        (taken, "This code has already been used."),
        (expired, "This code has expired."),
        (disabled, "This code has been disabled."),
        ("CPX-00000-00000-00000-00000".to_string(), "This code is not valid."),
        ("not a code".to_string(), "This code is not valid."),
        (String::new(), "This code is not valid."),
    ] {
        let p = redeem(code.clone()).await;
        assert_eq!(p.status, 400, "{code}");
        assert!(p.body.contains(msg), "{code}: {msg}");
    }
    // Ten failures in ten minutes (six above, four here): the next attempt
    // waits (the limit is shared with /v1/redeem).
    for _ in 0..4 {
        redeem("CPX-00000-00000-00000-00000".into()).await;
    }
    let p = redeem("CPX-00000-00000-00000-00000".into()).await;
    assert_eq!(p.status, 429);
    assert!(p.headers.contains_key("retry-after"));
    // The dashboard shows the plan and the history lists both redemptions.
    let dash = b.get("/console/dashboard").await;
    assert!(
        dash.body.contains("<div class=\"stat\">Pro</div>") && dash.body.contains("<div class=\"stat\">2.50</div>")
    );
    assert_eq!(b.get("/console/redeem").await.body.matches("<td>Redemption</td>").count(), 1, "credits only");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, ""));
    let b = Browser::new(&gw);
    // Sign-up validation.
    for (email, pw, again, status, msg) in [
        ("not-an-email", "correct horse", "correct horse", 400, "Enter a valid email address."),
        ("a@b.c", "short", "short", 400, "at least 8 characters"),
        ("a@b.c", &"x".repeat(129), &"x".repeat(129), 400, "at most 128 characters"),
        ("a@b.c", "correct horse", "correct horses", 400, "The two passwords differ."),
    ] {
        let p = b
            .submit("/console/sign-up", "/console/sign-up", &[("email", email), ("password", pw), ("password2", again)])
            .await;
        assert_eq!(p.status, status, "{email} {pw}");
        assert!(p.body.contains(msg), "{msg}");
    }
    assert_eq!(gw.db().query_row("SELECT count(*) FROM users", (), |r| r.get::<_, i64>(0)).unwrap(), 0);
    // An oversized form: 413 before anything is read into a handler.
    let big = "x".repeat(20_000);
    let p = b.post("/console/sign-in", &[("email", big.as_str())]).await;
    assert_eq!(p.status, 413);
    // Not a form at all.
    let p = b.send(b.http.post(gw.url("/console/sign-in")).header("content-type", "application/json").body("{}")).await;
    assert_eq!(p.status, 403);

    b.sign_up("bad@x.io", "correct horse", None).await;
    for (fields, msg) in [
        (vec![("name", "x".repeat(65))], "at most 64 characters"),
        (vec![("name", "ok".into()), ("expires_on", "2020-01-01".into())], "must be in the future"),
        (vec![("name", "ok".into()), ("expires_on", "tomorrow".into())], "Dates are written YYYY-MM-DD"),
        (vec![("name", "ok".into()), ("expires", "forever".into())], "not valid"),
        (vec![("name", "ok".into()), ("models", "gpt-9".into())], "Pick models from the list."),
        (vec![("name", "ok".into()), ("models", "claude-haiku-4-5".into())], "Pick models from the list."),
    ] {
        let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (p, key) = b.create_key(&f).await;
        assert_eq!((p.status, key), (400, None), "{fields:?}");
        assert!(p.body.contains(msg), "{fields:?}: {msg}");
    }
    let form = b.get("/console/keys").await;
    let p = b.post("/console/keys", &[("csrf", &form.field("csrf")), ("name", "no once")]).await;
    assert_eq!(p.status, 400);
    assert_eq!(gw.db().query_row("SELECT count(*) FROM api_keys", (), |r| r.get::<_, i64>(0)).unwrap(), 0);
    for path in ["/console/keys/abc/enable", "/console/keys/99/enable", "/console/keys/1/explode"] {
        let p = b.submit("/console/keys", path, &[]).await;
        assert_eq!(p.status, 404, "{path}");
    }
    // Usage filters that make no sense fall back to defaults, with a notice.
    let p = b.get("/console/usage?from=yesterday&key=abc&before=zzz").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Dates are written YYYY-MM-DD") && p.body.contains("A filter was not valid"));
    let p = b.get("/console/usage?from=2001-01-01&to=2026-01-01").await;
    assert!(p.body.contains("at most 366 days"));
    assert_eq!(b.send(b.http.put(gw.url("/console/keys"))).await.status, 405);
    assert_eq!(b.get("/console/nothing-here").await.status, 404);
}

#[tokio::test]
async fn pages_show_the_users_own_data() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, ""));
    let b = signed_up(&gw, "u@x.io").await;
    gw.cli(&["credits", "add", "u@x.io", "10"]);
    let (_, key) = b.create_key(&[("name", "ci")]).await;
    let key = key.unwrap();
    // 55 requests with known usage: 10 input, 20 output on gpt-4o-mini
    // (0.15 / 0.60 per 1M) = 1.5 + 12 = 13.5 micro, billed 14 (rounded up).
    for _ in 0..55 {
        fake.script(Behavior {
            usage: Some(FakeUsage { input: 10, output: 20, ..Default::default() }),
            ..Default::default()
        });
    }
    for _ in 0..55 {
        assert_eq!(say_hi(&gw, &key).await, 200);
    }
    gw.wait_count("SELECT count(*) FROM usage", 55);
    // Someone else's usage never shows.
    let other = signed_up(&gw, "them@x.io").await;
    assert!(other.get("/console/usage").await.body.contains("No requests in this range."));

    let dash = b.get("/console/dashboard").await;
    assert!(dash.body.contains("<div class=\"stat\">9.99923</div>"), "10 - 55 × 14 micro (13.5, rounded up)");
    assert_eq!(dash.body.matches("<code>gpt-4o-mini</code>").count(), 10, "the last 10 requests");
    let usage = b.get("/console/usage").await;
    assert!(usage.body.contains("<div class=\"stat\">55</div>"));
    assert!(usage.body.contains("<svg class=\"chart\""));
    // 55 × 14 micro on one day: the axis runs to 0.001 in quarters.
    assert!(usage.body.contains(">0.00025</text>") && usage.body.contains(">0.001</text>"), "cost axis labels");
    assert_eq!(usage.body.matches("<td class=\"nowrap\" title=\"req_").count(), 50, "first page");
    let older = &usage.body[usage.body.find("before=").unwrap() + 7..];
    let cursor = &older[..older.find('#').unwrap()];
    let page2 = b.get(&format!("/console/usage?before={cursor}")).await;
    assert_eq!(page2.body.matches("<td class=\"nowrap\" title=\"req_").count(), 5, "the rest");
    let csv = b.get("/console/usage.csv").await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    assert!(csv.headers["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"usage-"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines.len(), 56);
    assert!(lines[0].starts_with("time,request_id,key,model,endpoint,status,input_tokens"));
    assert!(lines[1].contains(",gpt-4o-mini,chat,200,10,0,0,20,0,0.000014,"), "{}", lines[1]);
    let filtered = b.get("/console/usage.csv?model=claude-sonnet-4-6").await;
    assert_eq!(filtered.body.lines().count(), 1, "header only");

    // Models: what the plan allows, with prices.
    let models = b.get("/console/models").await;
    assert!(models.body.contains("<code>gpt-4o</code>"));
    let (s, body) = gw.admin("POST", "/admin/users/u@x.io/plan", Some(json!({"plan": "pro"}))).await;
    assert_eq!(s, 200, "{body}");
    let models = b.get("/console/models").await;
    assert!(!models.body.contains("<code>gpt-4o</code>") && models.body.contains("not on your plan"));
    // Each key's spend, today and in all.
    let keys = b.get("/console/keys").await;
    assert_eq!(keys.body.matches("<td class=\"num\">0.00077</td>").count(), 2, "today and total");
    let billing = b.get("/console/billing").await;
    assert!(billing.body.contains("Online payment is not set up"));
}

#[tokio::test]
async fn buy_credits_page_shows_the_operators_shop() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(
        &fake,
        "  purchase_url: https://shop.example.com/credits\n  purchase_note: \"Packs of 10 and 50 credits.\"",
    ));
    let b = signed_up(&gw, "buy@x.io").await;
    let p = b.get("/console/billing").await;
    assert!(
        p.body.contains("href=\"https://shop.example.com/credits\"") && p.body.contains("Packs of 10 and 50 credits.")
    );
    assert!(p.body.contains("rel=\"noopener noreferrer\""));
}

#[tokio::test]
async fn the_console_can_be_switched_off() {
    let fake = fake();
    let gw = Gateway::start(&console_conf(&fake, "  enabled: false"));
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().starts_with("{\"error\""), "an API 404, no page");
}
