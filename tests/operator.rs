//! The operator console on the admin listener, through the real gateway:
//! sign-in (token or admin user), sessions, CSRF, every page, and each
//! action's effect on what users and their keys can do, checked through the
//! API they call and the admin API. A cookie-keeping client that does not
//! follow redirects plays the browser.

mod common;

use common::browser::*;
use common::*;
use serde_json::{json, Value};

const PLANS: &str = r#"
  - {id: pro, name: Pro, daily_quota: 50, concurrency: 8, blocked_models: ["gpt-4o"], duration_days: 30}
"#;

fn op_conf(fake: &codex_proxy::fake_upstream::FakeUpstream) -> String {
    billing_conf(fake, "  default_concurrency: 4", PLANS)
}

async fn user(gw: &Gateway, email: &str) -> Value {
    let (status, body) = gw.admin("GET", &format!("/admin/users/{email}"), None).await;
    assert_eq!(status, 200, "{body}");
    json(&body)
}

async fn chat(gw: &Gateway, key: &str, model: &str) -> u16 {
    post(gw, "/v1/chat/completions", key, &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .0
}

/// Posts a form of the page at `page` (with its CSRF token) to `action`.
async fn act(op: &Browser, page: &str, action: &str, fields: &[(&str, &str)]) -> Page {
    op.submit(page, action, fields).await
}

#[tokio::test]
async fn operators_sign_in_with_the_token_or_as_an_admin_user() {
    let fake = fake();
    let gw = Gateway::start(&op_conf(&fake));
    let op = Browser::operator(&gw);

    // Nothing without a session; the public listener has no operator pages.
    let home = op.get("/").await;
    assert_eq!((home.status, home.location()), (303, "/sign-in"));
    assert_eq!(Browser::new(&gw).get("/users").await.status, 404);
    assert_eq!(Browser::new(&gw).get("/sign-in").await.status, 404);

    // A wrong token is refused, and so is a form without its CSRF token.
    let wrong = op.submit("/sign-in", "/sign-in", &[("token", "not-the-token")]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.body.contains("not right"), "{}", wrong.body);
    assert_eq!(op.post("/sign-in", &[("token", ADMIN_TOKEN)]).await.status, 403);

    let p = op.submit("/sign-in", "/sign-in", &[("token", ADMIN_TOKEN)]).await;
    assert_eq!((p.status, p.location()), (303, "/"));
    let cookie = p.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
    let session = cookie.iter().find(|c| c.starts_with("cp_operator=")).expect("operator session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"), "{session}");

    // The session opens the console, not the admin API.
    let overview = op.get("/").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("operator:token") && overview.body.contains("id=\"last-hour\""));
    let api = op.get("/admin/users").await;
    assert_eq!(api.status, 401, "a console cookie is not an admin token");

    // Forms need the session's CSRF token, and a same-site origin.
    let csrf = op.get("/").await.field("csrf");
    assert_eq!(op.post("/sign-out", &[]).await.status, 403);
    let cross = op
        .send(
            op.http
                .post(format!("{}/sign-out", op.base))
                .header("origin", "https://evil.example")
                .form(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(cross.status, 403);

    // A user signs in only while their role is admin.
    let alice = signed_up(&gw, "alice@example.com").await;
    let admin_user = Browser::operator(&gw);
    let creds = [("email", "alice@example.com"), ("password", "correct horse")];
    assert_eq!(admin_user.submit("/sign-in", "/sign-in", &creds).await.status, 401, "not an admin yet");
    let made = act(&op, "/users/alice%40example.com", "/users/alice%40example.com/role", &[("role", "admin")]).await;
    assert_eq!(made.location(), "/users/alice%40example.com?done=role", "{}", made.body);
    let p = admin_user.submit("/sign-in", "/sign-in", &creds).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(admin_user.get("/").await.body.contains("operator:alice@example.com"));
    // Her actions are audited under her name.
    let credited = act(
        &admin_user,
        "/users/alice%40example.com",
        "/users/alice%40example.com/credits",
        &[("amount", "1"), ("reason", "test")],
    )
    .await;
    assert_eq!(credited.status, 303, "{}", credited.body);
    let audit = op.get("/audit").await;
    assert!(
        audit.body.contains("operator:alice@example.com") && audit.body.contains("credits.adjust"),
        "{}",
        audit.body
    );
    // Demoted, her operator session ends at once; her user session does not.
    act(&op, "/users/alice%40example.com", "/users/alice%40example.com/role", &[("role", "user")]).await;
    assert_eq!(admin_user.get("/").await.location(), "/sign-in");
    assert_eq!(alice.get("/console/dashboard").await.status, 200);
    // An admin who is banned loses the console too.
    act(&op, "/users/alice%40example.com", "/users/alice%40example.com/role", &[("role", "admin")]).await;
    assert_eq!(admin_user.submit("/sign-in", "/sign-in", &creds).await.status, 303);
    act(&op, "/users/alice%40example.com", "/users/alice%40example.com/ban", &[]).await;
    assert_eq!(admin_user.get("/").await.location(), "/sign-in");
    assert_eq!(admin_user.submit("/sign-in", "/sign-in", &creds).await.status, 401);

    // The CLI makes admins too, with the gateway running.
    let _carol = signed_up(&gw, "carol@example.com").await;
    let out = gw.cli(&["users", "role", "carol@example.com", "admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let carol_op = Browser::operator(&gw);
    let carol = [("email", "carol@example.com"), ("password", "correct horse")];
    assert_eq!(carol_op.submit("/sign-in", "/sign-in", &carol).await.status, 303);
    assert!(!gw.cli(&["users", "role", "carol@example.com", "root"]).status.success());

    // Signing out ends the session.
    let out = op.submit("/", "/sign-out", &[]).await;
    assert_eq!((out.status, out.location()), (303, "/sign-in?done=signed_out"));
    assert_eq!(op.get("/users").await.location(), "/sign-in");
}

#[tokio::test]
async fn every_page_renders_and_shows_no_secret() {
    let fake = fake();
    let gw = Gateway::start(&op_conf(&fake));
    let alice = signed_up(&gw, "alice@example.com").await;
    let (_, key) = alice.create_key(&[("name", "laptop")]).await;
    let key = key.expect("key");
    gw.admin("POST", "/admin/users/alice@example.com/credits", Some(json!({"amount": "5", "reason": "seed"}))).await;
    gw.wait_count("SELECT COUNT(*) FROM ledger WHERE reason = 'seed'", 1);
    assert_eq!(chat(&gw, &key, "gpt-4o-mini").await, 200);
    gw.wait_count("SELECT COUNT(*) FROM usage_log", 1);

    let op = operator_signed_in(&gw).await;
    for (path, expect) in [
        ("/", "id=\"channels\""),
        ("/users", "alice@example.com"),
        ("/users?q=alice", "alice@example.com"),
        ("/users/alice%40example.com", "laptop"),
        ("/codes", "name=\"count\""),
        ("/channels", "data-channel=\"oa\""),
        ("/usage", "gpt-4o-mini"),
        ("/usage?user=alice%40example.com&model=gpt-4o-mini", "alice@example.com"),
        ("/orders", "<h1>Orders</h1>"),
        ("/audit", "operator.sign_in"),
        ("/settings", "billing.timezone"),
        ("/settings?lang=zh", "设置"),
    ] {
        let p = op.get(path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        assert!(p.body.contains(expect), "{path} shows {expect}");
        for secret in [ADMIN_TOKEN, "sk-test-openai", "sk-ant-test", &key] {
            assert!(!p.body.contains(secret), "{path} shows a secret");
        }
    }
    // The user page shows the request and the ledger; usage exports as CSV.
    let u = op.get("/users/alice%40example.com?lang=en").await;
    assert!(u.body.contains("seed") && u.body.contains("gpt-4o-mini"));
    let csv = op.get("/usage.csv?user=alice%40example.com").await;
    assert_eq!(csv.status, 200);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert_eq!(csv.body.lines().filter(|l| l.contains("alice@example.com")).count(), 1, "{}", csv.body);

    // Bad input is a clear 4xx page, not a 500.
    assert_eq!(op.get("/users/nobody%40example.com").await.status, 404);
    // A date that is not one falls back to the default range.
    assert_eq!(op.get("/usage?from=yesterday").await.status, 200);
    assert_eq!(op.get("/nope").await.status, 404);
    assert_eq!(op.get("/codes/download/nope.txt").await.status, 410);
    let put = op.send(op.http.put(format!("{}/users", op.base))).await;
    assert_eq!(put.status, 405);
}

#[tokio::test]
async fn account_actions_change_what_users_can_do() {
    let fake = fake();
    let gw = Gateway::start(&op_conf(&fake));
    let alice = signed_up(&gw, "alice@example.com").await;
    let (_, key) = alice.create_key(&[("name", "laptop")]).await;
    let key = key.expect("key");
    let op = operator_signed_in(&gw).await;
    let page = "/users/alice%40example.com";
    let to = |a: &str| format!("/users/alice%40example.com/{a}");

    // Credits: a reason is required; the amount must be a number.
    assert_eq!(chat(&gw, &key, "gpt-4o-mini").await, 402);
    let p = act(&op, page, &to("credits"), &[("amount", "3"), ("reason", "")]).await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("Give a reason"), "{}", p.body);
    let p = act(&op, page, &to("credits"), &[("amount", "three"), ("reason", "x")]).await;
    assert!(p.status >= 400 && p.status < 500, "{}", p.status);
    let p = act(&op, page, &to("credits"), &[("amount", "3"), ("reason", "welcome")]).await;
    assert_eq!(p.location(), "/users/alice%40example.com?done=credits");
    assert!(op.get(p.location()).await.body.contains("Credits adjusted."));
    assert_eq!(user(&gw, "alice@example.com").await["balance"], "3");
    act(&op, page, &to("credits"), &[("amount", "-0.5"), ("reason", "correction")]).await;
    assert_eq!(user(&gw, "alice@example.com").await["balance"], "2.5");
    assert_eq!(chat(&gw, &key, "gpt-4o-mini").await, 200);

    // A plan, with its model rules; then revoked.
    assert_eq!(act(&op, page, &to("plan"), &[("plan", "pro")]).await.status, 303);
    assert_eq!(user(&gw, "alice@example.com").await["plan"]["id"], "pro");
    assert_eq!(chat(&gw, &key, "gpt-4o").await, 403, "blocked by the plan");
    assert_eq!(act(&op, page, &to("plan"), &[("plan", "nope")]).await.status, 400);
    assert_eq!(act(&op, page, &to("revoke-plan"), &[]).await.status, 303);
    assert!(user(&gw, "alice@example.com").await["plan"].is_null());

    // Ban and unban: her key stops and starts working at once.
    assert_eq!(act(&op, page, &to("ban"), &[]).await.status, 303);
    assert_eq!(chat(&gw, &key, "gpt-4o-mini").await, 403);
    assert!(op.get(page).await.body.contains("Unban user"));
    act(&op, page, &to("unban"), &[]).await;
    assert_eq!(chat(&gw, &key, "gpt-4o-mini").await, 200);

    // One key disabled from her page.
    let id = user(&gw, "alice@example.com").await["keys"][0]["id"].as_i64().unwrap().to_string();
    let p = act(&op, page, &format!("{page}/keys/{id}/disable"), &[]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(chat(&gw, &key, "gpt-4o-mini").await, 401);
    act(&op, page, &format!("{page}/keys/{id}/enable"), &[]).await;
    assert_eq!(chat(&gw, &key, "gpt-4o-mini").await, 200);

    // A new password ends her sessions; the new one signs in.
    assert_eq!(act(&op, page, &to("password"), &[("password", "short")]).await.status, 400);
    assert_eq!(act(&op, page, &to("password"), &[("password", "a new long password")]).await.status, 303);
    assert_eq!(alice.get("/console/dashboard").await.status, 303, "signed out");
    assert_eq!(alice.sign_in("alice@example.com", "a new long password").await.status, 303);

    // Every change is in the audit log, by the token's operator.
    let audit = op.get("/audit").await.body;
    for action in
        ["credits.adjust", "plan.assign", "plan.revoke", "user.ban", "user.unban", "key.disable", "user.password"]
    {
        assert!(audit.contains(action), "audit shows {action}");
    }
    assert!(audit.contains("operator:token"));
    // Unknown actions and users are 404s.
    assert_eq!(act(&op, page, &to("explode"), &[]).await.status, 404);
    let ghost = act(&op, page, "/users/ghost%40example.com/ban", &[]).await;
    assert_eq!(ghost.status, 404, "{}", ghost.body);
}

#[tokio::test]
async fn code_batches_are_shown_once_and_redeem() {
    let fake = fake();
    let gw = Gateway::start(&op_conf(&fake));
    let op = operator_signed_in(&gw).await;

    let p =
        act(&op, "/codes", "/codes", &[("grant", "credits"), ("credits", "7"), ("count", "3"), ("uses", "1")]).await;
    assert_eq!(p.status, 201, "{}", p.body);
    let shown = p.body.split("id=\"new-codes\"><code>").nth(1).unwrap();
    let codes: Vec<&str> = shown[..shown.find("</code>").unwrap()].lines().collect();
    assert_eq!(codes.len(), 3);
    assert!(codes.iter().all(|c| c.starts_with("CPX-")), "{codes:?}");
    let txt_link = p.body.split("href=\"/codes/download/").nth(1).unwrap();
    let token = &txt_link[..txt_link.find(".txt").unwrap()];
    let txt = op.get(&format!("/codes/download/{token}.txt")).await;
    assert_eq!(txt.status, 200);
    assert_eq!(txt.body, format!("{}\n", codes.join("\n")));
    assert_eq!(op.get(&format!("/codes/download/{token}.txt")).await.status, 410, "once");
    let csv = op.get(&format!("/codes/download/{token}.csv")).await;
    assert!(csv.body.starts_with("code,grant\n") && csv.body.contains(&format!("{},7 credits", codes[0])));
    // The list shows prefixes only: the plaintext is gone.
    let list = op.get("/codes").await;
    assert!(!list.body.contains(codes[0]) && list.body.contains(&codes[0][..8]));

    // A user redeems one; a disabled one is refused.
    let bob = signed_up(&gw, "bob@example.com").await;
    let r = bob.submit("/console/redeem", "/console/redeem", &[("code", codes[0])]).await;
    assert!(r.status == 200 && r.body.contains("Redeemed"), "{}", r.body);
    assert_eq!(user(&gw, "bob@example.com").await["balance"], "7");
    let (_, listed) = gw.admin("GET", "/admin/codes", None).await;
    let listed = json(&listed);
    let second = listed["codes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| codes[1].starts_with(c["prefix"].as_str().unwrap()))
        .unwrap();
    let id = second["id"].to_string();
    assert_eq!(act(&op, "/codes", &format!("/codes/{id}/disable"), &[]).await.location(), "/codes?done=disable");
    let refused = bob.submit("/console/redeem", "/console/redeem", &[("code", codes[1])]).await;
    assert!(refused.status >= 400, "{}", refused.status);
    assert_eq!(user(&gw, "bob@example.com").await["balance"], "7");

    // A plan batch; bad batches are 400s that keep the form.
    let p = act(
        &op,
        "/codes",
        "/codes",
        &[("grant", "plan:pro"), ("count", "1"), ("uses", "2"), ("expires", "2030-01-31")],
    )
    .await;
    assert_eq!(p.status, 201, "{}", p.body);
    for bad in [
        vec![("grant", "credits"), ("credits", "7"), ("count", ""), ("uses", "1")],
        vec![("grant", "credits"), ("credits", "seven"), ("count", "1"), ("uses", "1")],
        vec![("grant", "plan:nope"), ("count", "1"), ("uses", "1")],
        vec![("grant", "credits"), ("credits", "1"), ("count", "1"), ("uses", "1"), ("expires", "someday")],
    ] {
        let p = act(&op, "/codes", "/codes", &bad).await;
        assert!((400..500).contains(&p.status), "{bad:?}: {}", p.status);
        assert!(p.body.contains("name=\"count\""), "the form is still there");
    }
}

#[tokio::test]
async fn channels_are_disabled_enabled_and_tested() {
    let fake = fake();
    let conf = op_conf(&fake).replace(
        "channels:\n",
        "channels:\n  - {name: dead, kind: openai, base_url: \"http://127.0.0.1:9/v1\", api_key: sk-dead, models: [gpt-5.1-codex], health_check: {enabled: false}}\n",
    );
    let (gw, keys) = Gateway::start_with_keys(&conf, &["alice@example.com"]);
    let op = operator_signed_in(&gw).await;

    let p = act(&op, "/channels", "/channels/oa/disable", &[]).await;
    assert_eq!(p.location(), "/channels?done=disable");
    assert_eq!(chat(&gw, &keys[0], "gpt-4o-mini").await, 503, "no channel left for the model");
    let page = op.get("/channels").await;
    let row = &page.body[page.body.find("data-channel=\"oa\"").unwrap()..];
    assert!(row[..row.find("</tr>").unwrap()].contains("disabled"), "the row says disabled");
    // The switch outlives a restart, and says who threw it.
    let mut gw = gw;
    gw.stop();
    let dir = std::mem::replace(&mut gw.dir, tempfile::tempdir().unwrap());
    drop(gw);
    let gw = Gateway::start_in(dir, &conf, &[]);
    assert_eq!(chat(&gw, &keys[0], "gpt-4o-mini").await, 503, "still disabled after the restart");
    assert!(gw.stderr_text().contains("channel oa stays disabled: operator:token disabled it"));
    let op = operator_signed_in(&gw).await;
    act(&op, "/channels", "/channels/oa/enable", &[]).await;
    assert_eq!(chat(&gw, &keys[0], "gpt-4o-mini").await, 200);

    let ok = act(&op, "/channels", "/channels/oa/test", &[]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("id=\"test-result\"") && ok.body.contains("Test passed."), "{}", ok.body);
    let bad = act(&op, "/channels", "/channels/dead/test", &[]).await;
    assert!(bad.body.contains("Test failed."), "{}", bad.body);
    assert_eq!(act(&op, "/channels", "/channels/ghost/disable", &[]).await.status, 404);
    let audit = op.get("/audit").await.body;
    assert!(audit.contains("channel.disable") && audit.contains("channel.test"));
}
