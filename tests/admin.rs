//! The admin API and the account CLI: auth, every resource, the audit trail,
//! and changes reaching the running gateway.

mod common;

use codex_proxy::fake_upstream::{Behavior, FakeUsage};
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const PLANS: &str = "  - {id: pro, daily_quota: 50, concurrency: 8, duration_days: 30}";

#[tokio::test]
async fn admin_api_requires_its_token() {
    let fake = fake();
    let gw = Gateway::start(&billing_conf(&fake, "  default_concurrency: 4", PLANS));
    let url = format!("http://{}/admin/users", gw.admin.unwrap());
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json(&r.text().await.unwrap())["error"], "missing admin token");
    let r = client().get(&url).bearer_auth("test-admin-token-0123456788").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json(&r.text().await.unwrap())["error"], "invalid admin token");
    let r = client().get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A user API key is not an admin token.
    let key = gw.create_key("u@x.io");
    let r = client().get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn without_a_configured_token_one_is_generated() {
    let fake = fake();
    let yaml = conf(&fake).replace("admin:\n  listen: \"off\"", "admin:\n  listen: 127.0.0.1:0");
    let gw = Gateway::start(&yaml);
    let token_file = gw.data_dir().join("admin.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.starts_with("cpa_") && token.len() > 40);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let url = format!("http://{}/admin/users", gw.admin.unwrap());
    assert_eq!(client().get(&url).send().await.unwrap().status(), 401);
    assert_eq!(client().get(&url).bearer_auth(&token).send().await.unwrap().status(), 200);
}

#[test]
fn admin_is_loopback_by_default_and_refuses_public_without_token() {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/codex-proxy.yaml")).unwrap();
    let cfg = codex_proxy::config::parse(&shipped, std::path::Path::new("conf"), &|_| None).unwrap();
    assert_eq!(cfg.admin.listen.unwrap().to_string(), "127.0.0.1:8081");
    let env = |n: &str| (n == "CODEX_PROXY_ADMIN_LISTEN").then(|| "0.0.0.0:8081".to_string());
    let err = codex_proxy::config::parse(&shipped, std::path::Path::new("conf"), &env).unwrap_err();
    assert_eq!(err.to_string(), "admin.token: required when admin.listen (0.0.0.0:8081) is not a loopback address");
}

#[tokio::test]
async fn every_admin_resource_and_the_audit_trail() {
    let fake = fake();
    let gw = Gateway::start(&billing_conf(&fake, "  default_concurrency: 4", PLANS));
    let (s, b) = gw.admin("POST", "/admin/users", Some(json!({"email": "a@x.io", "password": "long enough pw"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = gw.admin("POST", "/admin/users", Some(json!({"email": "a@x.io"}))).await;
    assert_eq!((s, json(&b)["error"].as_str()), (409, Some("user a@x.io already exists")));
    let (s, _) = gw.admin("GET", "/admin/users/nobody@x.io", None).await;
    assert_eq!(s, 404);

    // Keys: create (plaintext once), list without secrets, expiry, models, disable.
    let (s, b) = gw.admin("POST", "/admin/users/a@x.io/keys", Some(json!({"name": "ci", "expires_at": "30d"}))).await;
    assert_eq!(s, 201, "{b}");
    let created = json(&b);
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["id"].as_i64().unwrap();
    assert!(created["expires_at"].is_string());
    let (_, listing) = gw.admin("GET", "/admin/users/a@x.io/keys", None).await;
    assert!(!listing.contains(&key[14..]), "key secret listed");
    assert_eq!(json(&listing)["keys"][0]["name"], "ci");

    // No credits yet: 402; credits with a reason reach the gateway at once.
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &body).await.0, 402);
    let (s, b) =
        gw.admin("POST", "/admin/users/a@x.io/credits", Some(json!({"amount": "2.5", "reason": "invoice 42"}))).await;
    assert_eq!((s, json(&b)["balance"].as_str()), (200, Some("2.5")));
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &body).await.0, 200);

    let (s, b) = gw.admin("PUT", &format!("/admin/keys/{key_id}/models"), Some(json!({"models": ["claude-*"]}))).await;
    assert_eq!((s, json(&b)["models"][0].as_str()), (200, Some("claude-*")));
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &body).await.0, 403);
    gw.admin("PUT", &format!("/admin/keys/{key_id}/models"), Some(json!({"models": null}))).await;
    gw.admin("PUT", &format!("/admin/keys/{key_id}/expiry"), Some(json!({"expires_at": "2020-01-01"}))).await;
    let (s, _, b) = post(&gw, "/v1/chat/completions", &key, &body).await;
    assert_eq!((s, json(&b)["error"]["message"].as_str()), (401, Some("This API key has expired")));
    gw.admin("PUT", &format!("/admin/keys/{key_id}/expiry"), Some(json!({"expires_at": null}))).await;
    assert_eq!(gw.admin("POST", &format!("/admin/keys/{key_id}/disable"), None).await.0, 200);
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &body).await.0, 401);
    assert_eq!(gw.admin("POST", &format!("/admin/keys/{key_id}/enable"), None).await.0, 200);

    // Plans.
    let (s, b) = gw.admin("POST", "/admin/users/a@x.io/plan", Some(json!({"plan": "pro"}))).await;
    assert_eq!((s, json(&b)["plan"].as_str()), (200, Some("pro")));
    let (_, _, b) = get(&gw, "/v1/account", &key).await;
    assert_eq!(json(&b)["plan"]["id"], "pro");
    let (s, b) = gw.admin("POST", "/admin/users/a@x.io/plan", Some(json!({"plan": "platinum"}))).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(gw.admin("DELETE", "/admin/users/a@x.io/plan", None).await.0, 200);
    let (_, _, b) = get(&gw, "/v1/account", &key).await;
    assert!(json(&b)["plan"].is_null());

    // Ban.
    gw.admin("POST", "/admin/users/a@x.io/ban", None).await;
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &body).await.0, 403);
    gw.admin("POST", "/admin/users/a@x.io/unban", None).await;

    // Usage report with totals and cost, and the ledger.
    fake.script(Behavior {
        usage: Some(FakeUsage { input: 1_000_000, output: 1_000_000, ..Default::default() }),
        ..Default::default()
    });
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &body).await.0, 200);
    gw.wait_count("SELECT count(*) FROM usage WHERE ledger_id IS NOT NULL", 2);
    let (s, b) = gw.admin("GET", "/admin/usage?by=model&user=a@x.io", None).await;
    assert_eq!(s, 200, "{b}");
    let report = json(&b);
    let row = &report["rows"][0];
    assert_eq!((row["group"].as_str(), row["requests"].as_i64()), (Some("gpt-4o-mini"), Some(2)));
    assert!(row["input_tokens"].as_i64().unwrap() > 1_000_000);
    let (_, b) = gw.admin("GET", "/admin/users/a@x.io/ledger", None).await;
    let ledger = json(&b);
    let entries = ledger["entries"].as_array().unwrap();
    assert_eq!(entries.last().unwrap()["reason"], "invoice 42");
    assert_eq!(entries.last().unwrap()["origin"], "admin-api");
    assert_eq!(entries[0]["kind"], "usage");
    // 0.75 for the big request plus the small one.
    let bal = ledger["balance"].as_str().unwrap().parse::<f64>().unwrap();
    assert!(bal < 1.75 && bal > 1.74, "{bal}");
    assert_eq!(report["total"]["cost"], row["cost"]);

    // Every change was recorded: who, when, what.
    let (_, b) = gw.admin("GET", "/admin/audit", None).await;
    let audit = json(&b);
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in [
        "user.create",
        "key.create",
        "credits.adjust",
        "key.models",
        "key.expiry",
        "key.disable",
        "key.enable",
        "plan.assign",
        "plan.revoke",
        "user.ban",
        "user.unban",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "admin-api" && e["created_at"].as_i64().unwrap() > 0));
}

#[tokio::test]
async fn cli_covers_the_same_and_reaches_the_gateway_within_a_second() {
    let fake = fake();
    let gw = Gateway::start(&billing_conf(&fake, "  default_concurrency: 4", PLANS));
    let out = |args: &[&str]| {
        let o = gw.cli(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    out(&["users", "add", "c@x.io"]);
    let key = out(&["keys", "create", "c@x.io", "--name", "cli"]).lines().last().unwrap().to_string();
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]});
    let wait_status = |want: u16| {
        let (gw, key, body) = (&gw, key.clone(), body.clone());
        async move {
            let start = Instant::now();
            loop {
                let s = post(gw, "/v1/chat/completions", &key, &body).await.0;
                if s == want {
                    return start.elapsed();
                }
                assert!(start.elapsed() < Duration::from_secs(1), "still {s} after 1s, want {want}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // The new key is live within a second (no credits yet: 402).
    println!("keys create -> 402 after {:?}", wait_status(402).await);
    assert!(out(&["credits", "add", "c@x.io", "1.25", "--reason", "trial"]).contains("balance 1.25"));
    println!("credits add -> 200 after {:?}", wait_status(200).await);
    out(&["users", "ban", "c@x.io"]);
    println!("users ban -> 403 after {:?}", wait_status(403).await);
    out(&["users", "unban", "c@x.io"]);
    wait_status(200).await;
    out(&["credits", "add", "c@x.io", "-1.25"]);
    // Removing the 1.25 again leaves the balance just below zero (the served
    // request was charged): no reservation fits, 402.
    wait_status(402).await;
    assert!(out(&["plans", "assign", "c@x.io", "pro"]).contains("plan pro until"));
    println!("plans assign -> 200 after {:?}", wait_status(200).await);
    assert!(out(&["plans", "list"]).contains("pro"));

    let codes = out(&["codes", "create", "--credits", "5", "--count", "3", "--uses", "2"]);
    assert_eq!(codes.lines().count(), 3);
    assert!(codes.lines().all(|c| c.starts_with("CPX-")));
    let (s, _, b) = post(&gw, "/v1/redeem", &key, &json!({"code": codes.lines().next().unwrap()})).await;
    assert_eq!(s, 200, "{b}");
    let listing = out(&["codes", "list"]);
    assert!(listing.contains("1/2") && !listing.contains(&codes.lines().next().unwrap()[4..]));
    let plan_codes = out(&["codes", "create", "--plan", "pro"]);
    assert_eq!(plan_codes.lines().count(), 1);

    gw.wait_count("SELECT count(*) FROM usage", 3);
    let usage = out(&["usage", "--user", "c@x.io", "--by", "model"]);
    assert!(usage.contains("gpt-4o-mini") && usage.contains("TOTAL"), "{usage}");
    let ledger = out(&["ledger", "c@x.io"]);
    assert!(ledger.contains("trial") && ledger.contains("redeem") && ledger.contains("balance: "), "{ledger}");
    assert!(out(&["audit"]).contains("cli:"));
    assert!(out(&["users", "list"]).contains("c@x.io"));
}

#[tokio::test]
async fn endpoints_for_the_operator_console() {
    let fake = fake();
    let yaml = billing_conf(&fake, "  default_concurrency: 10", "  - {id: pro, daily_quota: 5, duration_days: 30}")
        .replace("api_key: sk-test-openai", "api_key: sk-test-openai\n    headers: {x-org-secret: hush-0123}");
    let gw = Gateway::start(&yaml);
    for i in 0..5 {
        let (s, _) =
            gw.admin("POST", "/admin/users", Some(json!({"email": format!("u{i}@x.io"), "credits": "5"}))).await;
        assert_eq!(s, 201);
    }
    // Search and keyset pages.
    let (_, b) = gw.admin("GET", "/admin/users?limit=2", None).await;
    let page = json(&b);
    assert_eq!((page["users"].as_array().unwrap().len(), page["total"].as_i64()), (2, Some(5)));
    let next = page["next"].as_i64().unwrap();
    let (_, b) = gw.admin("GET", &format!("/admin/users?limit=10&after={next}"), None).await;
    assert_eq!(json(&b)["users"].as_array().unwrap().len(), 3);
    let (_, b) = gw.admin("GET", "/admin/users?q=U3", None).await;
    assert_eq!(json(&b)["users"][0]["email"], "u3@x.io");
    assert_eq!(gw.admin("GET", "/admin/users?limit=0", None).await.0, 400);
    // Roles and passwords.
    let (s, b) = gw.admin("POST", "/admin/users/u1@x.io/role", Some(json!({"role": "admin"}))).await;
    assert_eq!((s, json(&b)["role"].as_str()), (200, Some("admin")));
    assert_eq!(gw.admin("POST", "/admin/users/u1@x.io/role", Some(json!({"role": "root"}))).await.0, 400);
    assert_eq!(gw.admin("POST", "/admin/users/u1@x.io/password", Some(json!({"password": "short"}))).await.0, 400);
    let (s, b) = gw.admin("POST", "/admin/users/u1@x.io/password", Some(json!({"password": "long enough"}))).await;
    assert_eq!(s, 200, "{b}");
    // Requests, by channel, and pages of them.
    let (_, b) = gw.admin("POST", "/admin/users/u2@x.io/keys", Some(json!({"name": "k"}))).await;
    let key = json(&b)["key"].as_str().unwrap().to_string();
    for _ in 0..3 {
        assert_eq!(say_hi(&gw, &key).await, 200);
    }
    gw.wait_count("SELECT count(*) FROM usage", 3);
    let (_, b) = gw.admin("GET", "/admin/requests?user=u2@x.io&limit=2", None).await;
    let page = json(&b);
    assert_eq!(page["requests"].as_array().unwrap().len(), 2);
    assert_eq!(
        (page["requests"][0]["user"].as_str(), page["requests"][0]["channel"].as_str()),
        (Some("u2@x.io"), Some("oa"))
    );
    let (_, b) = gw.admin("GET", &format!("/admin/requests?before={}", page["next"].as_str().unwrap()), None).await;
    assert_eq!(json(&b)["requests"].as_array().unwrap().len(), 1);
    let (_, b) = gw.admin("GET", "/admin/usage?by=channel&channel=oa", None).await;
    assert_eq!(
        (json(&b)["rows"][0]["group"].as_str(), json(&b)["rows"][0]["requests"].as_i64()),
        (Some("oa"), Some(3))
    );
    // Overview: this minute's requests, today's totals.
    let (_, b) = gw.admin("GET", "/admin/overview", None).await;
    let o = json(&b);
    assert_eq!(o["minutes"].as_array().unwrap().len(), 60);
    assert!(o["minutes"].as_array().unwrap().iter().map(|m| m["total"].as_i64().unwrap()).sum::<i64>() >= 3);
    assert_eq!((o["today"]["requests"].as_i64(), o["users"].as_i64()), (Some(3), Some(5)));
    assert_eq!(o["channels"]["available"], 2);
    // The effective configuration, without a secret in it.
    let (_, b) = gw.admin("GET", "/admin/config", None).await;
    let text = json(&b)["effective"].as_str().unwrap().to_string();
    assert!(text.contains("max_body_bytes") && text.contains("\"*****\""));
    for secret in ["sk-test-openai", "hush-0123", ADMIN_TOKEN] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    // Testing a channel sends one real request through it (its first model,
    // by the name the upstream knows it by).
    let before = fake.requests().len();
    let (s, b) = gw.admin("POST", "/admin/channels/oa/test", None).await;
    let t = json(&b);
    assert_eq!(
        (s, t["ok"].as_bool(), t["status"].as_u64(), t["model"].as_str()),
        (200, Some(true), Some(200), Some("gpt-4o-2024-08-06"))
    );
    let sent = &fake.requests()[before];
    assert_eq!((sent.path.as_str(), sent.json()["max_tokens"].as_i64()), ("/v1/chat/completions", Some(8)));
    assert_eq!(gw.admin("POST", "/admin/channels/nope/test", None).await.0, 404);
    // Codes by pages.
    gw.admin("POST", "/admin/codes", Some(json!({"credits": "1", "count": 3}))).await;
    let (_, b) = gw.admin("GET", "/admin/codes?limit=2", None).await;
    let next = json(&b)["next"].as_i64().unwrap();
    let (_, b) = gw.admin("GET", &format!("/admin/codes?after={next}"), None).await;
    assert_eq!(json(&b)["codes"].as_array().unwrap().len(), 1);
}
