//! Plans, credits, limits and the decision order through the real gateway:
//! exact statuses and shapes per protocol, exact costs per API, concurrency on
//! a small balance, redemption, restart persistence.

mod common;

use codex_proxy::fake_upstream::{Behavior, FakeUsage};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const BILLING: &str = "  default_concurrency: 100\n  max_reservation: 1000\n  default_max_output_tokens: 1000";
const PLANS: &str = r#"
  - {id: tiny, daily_quota: 0.001, concurrency: 1, requests_per_minute: 3, blocked_models: ["gpt-4o"], duration_days: 30}
  - {id: big, daily_quota: 100, duration_days: 30}
"#;

/// Creates a user (optionally with credits and a plan) and a key through the
/// admin API; returns the key.
async fn user(gw: &Gateway, email: &str, credits: Option<&str>, plan: Option<&str>) -> String {
    admin_user(gw, email, credits, plan).await.1
}

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
}

fn msg(model: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
}

/// POSTs with a key and returns (status, headers, json body).
async fn call(gw: &Gateway, path: &str, key: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let (s, h, b) = post(gw, path, key, body).await;
    let v = if b.starts_with('{') { json(&b) } else { Value::String(b) };
    (s, h, v)
}

fn oa_err(v: &Value) -> (&str, &str) {
    (v["error"]["type"].as_str().unwrap_or(""), v["error"]["message"].as_str().unwrap_or(""))
}

fn an_err(v: &Value) -> (&str, &str) {
    assert_eq!(v["type"], "error");
    (v["error"]["type"].as_str().unwrap_or(""), v["error"]["message"].as_str().unwrap_or(""))
}

async fn balance(gw: &Gateway, key: &str) -> String {
    let (s, _, b) = get(gw, "/v1/account", key).await;
    assert_eq!(s, 200, "{b}");
    json(&b)["balance"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn decision_order_each_branch_in_both_shapes() {
    let fake = fake();
    let gw = Gateway::start(&billing_conf(&fake, BILLING, PLANS));

    // 402: no plan, no balance.
    let broke = user(&gw, "broke@x.io", None, None).await;
    let (s, h, v) = call(&gw, "/v1/chat/completions", &broke, &chat("gpt-4o-mini")).await;
    assert_eq!(
        (s, oa_err(&v)),
        (402, ("insufficient_quota", "Insufficient credits: redeem a plan or buy credits first"))
    );
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert_eq!(h["x-should-retry"], "false");
    let (s, _, v) = call(&gw, "/v1/messages", &broke, &msg("claude-sonnet-4-6")).await;
    assert_eq!((s, an_err(&v)), (402, ("billing_error", "Insufficient credits: redeem a plan or buy credits first")));

    // 403: banned.
    let banned = user(&gw, "banned@x.io", Some("5"), None).await;
    let (s, _) = gw.admin("POST", "/admin/users/banned@x.io/ban", None).await;
    assert_eq!(s, 200);
    let (s, _, v) = call(&gw, "/v1/chat/completions", &banned, &chat("gpt-4o-mini")).await;
    assert_eq!((s, oa_err(&v)), (403, ("invalid_request_error", "This account is banned")));
    let (s, _, v) = call(&gw, "/v1/messages", &banned, &msg("claude-sonnet-4-6")).await;
    assert_eq!((s, an_err(&v)), (403, ("permission_error", "This account is banned")));

    // 403: model blocked by the plan, naming the model.
    let tiny = user(&gw, "tiny@x.io", None, Some("tiny")).await;
    let (s, _, v) = call(&gw, "/v1/chat/completions", &tiny, &chat("gpt-4o")).await;
    assert_eq!((s, oa_err(&v).1), (403, "Model 'gpt-4o' is not allowed on your plan"));
    assert_eq!(v["error"]["code"], "model_not_allowed");
    // /v1/models hides it.
    let (_, _, b) = get(&gw, "/v1/models", &tiny).await;
    assert!(!b.contains("\"gpt-4o\""), "{b}");
    assert!(b.contains("\"gpt-4o-mini\""));

    // Served on the plan, with the quota headers.
    for _ in 0..2 {
        fake.script(Behavior {
            usage: Some(FakeUsage { input: 1000, output: 1000, ..Default::default() }),
            ..Default::default()
        });
    }
    let (s, h, _) = call(&gw, "/v1/chat/completions", &tiny, &chat("gpt-4o-mini")).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-plan-quota-remaining"], "0.001");
    assert_eq!(h["x-credits-balance"], "0");
    // 1000*0.15 + 1000*0.6 = 750 micro of the 1000 quota; still below: served.
    let (s, _, _) = call(&gw, "/v1/chat/completions", &tiny, &chat("gpt-4o-mini")).await;
    assert_eq!(s, 200);
    // 1500 >= 1000: the daily quota is what ran out -> 429 with seconds to 00:00 UTC.
    let (s, h, v) = call(&gw, "/v1/chat/completions", &tiny, &chat("gpt-4o-mini")).await;
    assert_eq!(s, 429, "{v}");
    assert!(oa_err(&v).1.starts_with("Daily plan quota exhausted; it resets in "), "{v}");
    let now = codex_proxy::clock::now_ms();
    let expected = (86_400_000 - now.rem_euclid(86_400_000)) / 1000;
    let retry: i64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((retry - expected).abs() <= 2, "retry-after {retry}, expected about {expected}");
    let (s, _, v) = call(&gw, "/v1/messages", &tiny, &msg("claude-sonnet-4-6")).await;
    assert_eq!((s, an_err(&v).0), (429, "rate_limit_error"));
    // With credits the quota no longer refuses: served on credits, the third
    // admitted request of the minute; the fourth meets the plan's RPM limit.
    let (s, _) = gw.admin("POST", "/admin/users/tiny@x.io/credits", Some(json!({"amount": "1"}))).await;
    assert_eq!(s, 200);
    let (s, h, _) = call(&gw, "/v1/chat/completions", &tiny, &chat("gpt-4o-mini")).await;
    assert_eq!((s, h["x-credits-balance"].to_str().unwrap()), (200, "1"));
    let (s, _, v) = call(&gw, "/v1/chat/completions", &tiny, &chat("gpt-4o-mini")).await;
    assert_eq!((s, oa_err(&v).1), (429, "Rate limit reached: at most 3 requests per minute for this account"));

    // Key allow list.
    let (s, b) = gw.admin("POST", "/admin/users", Some(json!({"email": "k@x.io", "credits": "1"}))).await;
    assert_eq!(s, 201, "{b}");
    let (_, b) = gw.admin("POST", "/admin/users/k@x.io/keys", Some(json!({"models": ["claude-*"]}))).await;
    let limited = json(&b)["key"].as_str().unwrap().to_string();
    let (s, _, v) = call(&gw, "/v1/chat/completions", &limited, &chat("gpt-4o-mini")).await;
    assert_eq!((s, oa_err(&v).1), (403, "Model 'gpt-4o-mini' is not allowed for this API key"));
    let (s, _, _) = call(&gw, "/v1/messages", &limited, &msg("claude-sonnet-4-6")).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn concurrency_limit_of_the_plan() {
    let fake = fake();
    let gw = Gateway::start(&billing_conf(&fake, BILLING, PLANS));
    let key = user(&gw, "c@x.io", Some("1"), Some("tiny")).await;
    fake.script(Behavior { delay_ms: 800, ..Default::default() });
    let (url, k) = (gw.url("/v1/chat/completions"), key.clone());
    let slow = tokio::spawn(async move {
        client().post(url).bearer_auth(k).json(&chat("gpt-4o-mini")).send().await.unwrap().status()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, h, v) = call(&gw, "/v1/chat/completions", &key, &chat("gpt-4o-mini")).await;
    assert_eq!(
        (s, oa_err(&v)),
        (429, ("rate_limit_error", "Concurrency limit reached: at most 1 requests at a time for this account"))
    );
    assert_eq!(h["retry-after"], "1");
    let (s, _, v) = call(&gw, "/v1/messages", &key, &msg("claude-sonnet-4-6")).await;
    assert_eq!((s, an_err(&v).0), (429, "rate_limit_error"));
    assert_eq!(slow.await.unwrap(), 200);
    // The slot is free again.
    let (s, _, _) = call(&gw, "/v1/chat/completions", &key, &chat("gpt-4o-mini")).await;
    assert_eq!(s, 200);
}

/// Waits until `n` requests are charged and returns each one's charge (from
/// its usage row, checked against the ledger row that names it), by request id.
fn charges(gw: &Gateway, n: i64) -> Vec<(String, i64, String)> {
    gw.wait_count("SELECT count(*) FROM usage WHERE ledger_id IS NOT NULL", n);
    let db = gw.db();
    let mismatched: i64 = db
        .query_row(
            "SELECT count(*) FROM ledger l WHERE kind = 'usage'
               AND -l.amount != (SELECT COALESCE(SUM(cost), 0) FROM usage WHERE ledger_id = l.id)",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mismatched, 0, "a ledger row differs from the sum of its usage rows");
    let mut stmt = db
        .prepare(
            "SELECT u.request_id, u.cost, l.account FROM usage u JOIN ledger l ON l.id = u.ledger_id
             ORDER BY u.request_id",
        )
        .unwrap();
    stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn exact_cost_for_each_api_stream_and_not() {
    let fake = fake();
    let gw = Gateway::start(&billing_conf(&fake, BILLING, PLANS));
    let key = user(&gw, "cost@x.io", Some("10"), None).await;
    let u = FakeUsage { input: 1_234, cached: 5_678, cache_write: 91, output: 2_345, reasoning: 1_001 };
    // Expected micro-credits, by hand from the test prices (credits / 1M tokens):
    // gpt-4o-mini: in 0.15, cached 0.075, write (= input) 0.15, out 0.6
    //   1234*0.15 + 5678*0.075 + 91*0.15 + 2345*0.6 = 185.1 + 425.85 + 13.65 + 1407 = 2031.6 -> 2032
    // gpt-5.1-codex: in 1.25, cached 0.125, write 1.25, out 10
    //   1542.5 + 709.75 + 113.75 + 23450 = 25816
    // claude-sonnet-4-6: in 3, cached 0.3, write 3.75, out 15
    //   3702 + 1703.4 + 341.25 + 35175 = 40921.65 -> 40922
    // text-embedding-3-small: in 0.02 on 1234 tokens = 24.68 -> 25
    let cases: Vec<(&str, Value, i64)> = vec![
        ("/v1/chat/completions", json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}), 2032),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
            2032,
        ),
        ("/v1/responses", json!({"model": "gpt-5.1-codex", "input": "x"}), 25816),
        ("/v1/responses", json!({"model": "gpt-5.1-codex", "input": "x", "stream": true}), 25816),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            40922,
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-6", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]}),
            40922,
        ),
        ("/v1/embeddings", json!({"input": "x"}), 25),
    ];
    let mut expected = Vec::new();
    for (path, body, cost) in &cases {
        let usage = if path.ends_with("embeddings") { FakeUsage { input: 1_234, ..Default::default() } } else { u };
        fake.script(Behavior { usage: Some(usage), ..Default::default() });
        let (s, h, b) = post(&gw, path, &key, body).await;
        assert_eq!(s, 200, "{path}: {b}");
        expected.push((h["x-request-id"].to_str().unwrap().to_string(), *cost, "credits".to_string()));
    }
    expected.sort();
    assert_eq!(charges(&gw, cases.len() as i64), expected);
    // Usage rows carry the payer too.
    let n: i64 = gw.wait_count("SELECT count(*) FROM usage WHERE billed_to = 'credits' AND ledger_id IS NOT NULL", 7);
    assert_eq!(n, 7);
    let total: i64 = expected.iter().map(|e| e.1).sum();
    assert_eq!(balance(&gw, &key).await, codex_proxy::config::units::format_credits(10_000_000 - total));
}

#[tokio::test]
async fn fifty_concurrent_requests_on_a_balance_for_ten() {
    let fake = fake();
    // Output at 1 credit per 1M tokens = 1 micro per token; input free: the
    // reservation of a request with max_tokens 1000 is exactly 1000 micro.
    let yaml = billing_conf(&fake, BILLING, PLANS)
        .replace("models:\n", "models:\n  - {id: meter, owned_by: t, price: {input: 0, output: 1}}\n")
        .replace("models: [gpt-4o-mini,", "models: [meter, gpt-4o-mini,");
    let gw = Gateway::start(&yaml);
    let key = user(&gw, "fifty@x.io", Some("0.01"), None).await;
    for _ in 0..50 {
        fake.script(Behavior {
            delay_ms: 1500,
            usage: Some(FakeUsage { input: 10, output: 700, ..Default::default() }),
            ..Default::default()
        });
    }
    let body = json!({"model": "meter", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]});
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (url, k, b) = (gw.url("/v1/chat/completions"), key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            client().post(url).bearer_auth(k).json(&b).send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let started = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 402).count();
    println!("50 concurrent on a balance for 10: started {started}, refused {refused} (402)");
    assert_eq!((started, refused), (10, 40));
    // Final balance = top-ups - sum of charges, exactly.
    let ch = charges(&gw, 10);
    assert_eq!(ch.len(), 10);
    assert!(ch.iter().all(|c| c.1 == 700));
    assert_eq!(balance(&gw, &key).await, "0.003");
    let ledger_sum: i64 = gw
        .db()
        .query_row(
            "SELECT SUM(amount) FROM ledger WHERE user_id = (SELECT id FROM users WHERE email = 'fifty@x.io')",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ledger_sum, 3_000);
    println!("final balance {} micro = 10000 top-up - 10 x 700", ledger_sum);
}

#[tokio::test]
async fn the_last_credits_are_spent_and_overdraw_stays_within_one_estimate() {
    let fake = fake();
    let yaml = billing_conf(&fake, BILLING, PLANS)
        .replace("models:\n", "models:\n  - {id: meter, owned_by: t, price: {input: 0, output: 1}}\n")
        .replace("models: [gpt-4o-mini,", "models: [meter, gpt-4o-mini,");
    let gw = Gateway::start(&yaml);
    let key = user(&gw, "worst@x.io", Some("0.0025"), None).await;
    // Each request may produce at most max_tokens (300) and does. Eight hold
    // 300 each; the ninth finds 100 available and is served holding those 100
    // (402 only when nothing is available); it overdraws by 300 - 100.
    for i in 0..30 {
        fake.script(Behavior {
            delay_ms: 20 * (i % 5),
            usage: Some(FakeUsage { output: 300, ..Default::default() }),
            ..Default::default()
        });
    }
    let body = json!({"model": "meter", "max_tokens": 300, "messages": [{"role": "user", "content": "x"}]});
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let (url, k, b) = (gw.url("/v1/chat/completions"), key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            client().post(url).bearer_auth(k).json(&b).send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 9, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 402).count(), 21, "{statuses:?}");
    assert_eq!(balance(&gw, &key).await, "-0.0002");
}

#[tokio::test]
async fn a_small_balance_serves_claude_code_under_its_concurrency_limit() {
    let fake = fake();
    // Claude Code asks for max_tokens 32000: on sonnet ($15/M output) that is
    // an estimate of 0.48 credits. A user with 0.30 is served, not refused.
    let gw = Gateway::start(&billing_conf(&fake, "  default_concurrency: 4\n  max_reservation: 1", PLANS));
    let key = user(&gw, "cc@x.io", Some("0.30"), None).await;
    for _ in 0..4 {
        fake.script(Behavior {
            path: Some("/v1/messages".into()),
            delay_ms: 400,
            usage: Some(FakeUsage { input: 1000, output: 30_000, ..Default::default() }),
            ..Default::default()
        });
    }
    let body =
        json!({"model": "claude-sonnet-4-6", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}]});
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (url, k, b) = (gw.url("/v1/messages"), key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = client().post(url).header("x-api-key", k).json(&b).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    // The first holds all 0.30; the other three find nothing available and
    // are told why (402, Anthropic shape).
    let served: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(served.len(), 1, "{results:?}");
    for (s, b) in results.iter().filter(|(s, _)| *s != 200) {
        let v = json(b);
        assert_eq!((*s, an_err(&v).0), (402, "billing_error"), "{b}");
        assert!(an_err(&v).1.contains("hold all of your balance"), "{b}");
    }
    // Cost 1000 × 3 + 30000 × 15 = 453000 micro; it held 300000: the
    // overdraw (0.153) is below the bound, its estimate minus its hold
    // (about 0.48 - 0.30).
    assert_eq!(balance(&gw, &key).await, "-0.153");
    let (s, _, v) = call(&gw, "/v1/messages", &key, &msg("claude-sonnet-4-6")).await;
    assert_eq!((s, an_err(&v)), (402, ("billing_error", "Insufficient credits: redeem a plan or buy credits first")));
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_billed_as_estimated() {
    let fake = fake();
    let gw = Gateway::start(&billing_conf(&fake, BILLING, PLANS));
    let key = user(&gw, "gone@x.io", Some("1"), None).await;
    let text = "word ".repeat(40);
    fake.script(Behavior { chunk_delay_ms: 50, text: Some(text), ..Default::default() });
    let req = json!({"model": "claude-sonnet-4-6", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "x"}]});
    // Read a few events, then hang up.
    let head = post_and_hang_up(&gw, "/v1/messages", &key, &req, 900).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    gw.wait_count("SELECT count(*) FROM usage WHERE estimated = 1", 1);
    let (input, output, cost, est): (i64, i64, i64, i64) = gw
        .db()
        .query_row("SELECT input_tokens, output_tokens, cost, estimated FROM usage", (), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    // message_start reported the input; the output is estimated from the text
    // streamed so far (less than the 40 words of the full answer).
    assert_eq!(est, 1);
    assert!(input > 0 && (1..60).contains(&output), "input {input} output {output}");
    assert!(cost > 0);
    let charged: i64 = gw.db().query_row("SELECT -amount FROM ledger WHERE kind = 'usage'", (), |r| r.get(0)).unwrap();
    assert_eq!(charged, cost);
    // The upstream request was cancelled, not left running: the access log says why.
    let line = gw.access_log(1).pop().unwrap();
    assert_eq!(line["error"], "client_disconnected");
    assert_eq!(line["estimated"], true);
}

#[tokio::test]
async fn failed_upstream_costs_nothing_and_releases_the_reservation() {
    let fake = fake();
    let gw = Gateway::start(&billing_conf(&fake, BILLING, PLANS));
    let key = user(&gw, "fail@x.io", Some("0.001"), None).await;
    fake.script(Behavior { status: Some(500), ..Default::default() });
    let (s, _, _) = call(&gw, "/v1/chat/completions", &key, &chat("gpt-4o-mini")).await;
    assert_eq!(s, 503);
    gw.wait_count("SELECT count(*) FROM usage", 1);
    let (s, _, b) = get(&gw, "/v1/account", &key).await;
    assert_eq!(s, 200);
    let v = json(&b);
    assert_eq!((v["balance"].as_str(), v["reserved"].as_str()), (Some("0.001"), Some("0")));
    assert_eq!(v["concurrency"]["in_use"], 0);
    let n: i64 = gw.db().query_row("SELECT count(*) FROM ledger WHERE kind = 'usage'", (), |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn account_and_legacy_billing_endpoints() {
    let fake = fake();
    let gw = Gateway::start(&billing_conf(&fake, BILLING, PLANS));
    let key = user(&gw, "acct@x.io", Some("12.5"), Some("big")).await;
    let (s, _, b) = get(&gw, "/v1/account", &key).await;
    assert_eq!(s, 200);
    let v = json(&b);
    assert_eq!(v["email"], "acct@x.io");
    assert_eq!(v["balance"], "12.5");
    assert_eq!(v["plan"]["id"], "big");
    assert_eq!(v["plan"]["daily_quota"], "100");
    assert_eq!(v["plan"]["remaining_today"], "100");
    assert_eq!(v["concurrency"]["limit"], 100);
    assert!(v["plan"]["resets_at"].as_str().unwrap().ends_with("T00:00:00.000Z"));
    // Credits-only usage shows up in the legacy usage endpoint.
    let key2 = user(&gw, "legacy@x.io", Some("2"), None).await;
    fake.script(Behavior {
        usage: Some(FakeUsage { input: 1_000_000, output: 0, ..Default::default() }),
        ..Default::default()
    });
    let (s, _, _) = call(&gw, "/v1/chat/completions", &key2, &chat("gpt-4o-mini")).await;
    assert_eq!(s, 200);
    gw.wait_count("SELECT count(*) FROM usage WHERE ledger_id IS NOT NULL", 1);
    let (_, _, b) = get(&gw, "/v1/dashboard/billing/subscription", &key2).await;
    let sub = json(&b);
    assert_eq!(sub["object"], "billing_subscription");
    assert_eq!(sub["hard_limit_usd"], 2.0);
    let (_, _, b) = get(&gw, "/v1/dashboard/billing/usage", &key2).await;
    assert_eq!(json(&b)["total_usage"], 15.0); // 0.15 credits, in cents
}

#[tokio::test]
async fn redemption_of_each_kind_and_each_failure() {
    let fake = fake();
    let gw = Gateway::start(&billing_conf(&fake, BILLING, PLANS));
    let key = user(&gw, "r@x.io", None, None).await;
    let other = user(&gw, "o@x.io", None, None).await;
    let codes = |body: Value| {
        let gw = &gw;
        async move {
            let (s, t) = gw.admin("POST", "/admin/codes", Some(body)).await;
            assert_eq!(s, 200, "{t}");
            t.lines().map(str::to_string).collect::<Vec<_>>()
        }
    };
    let credit = codes(json!({"credits": "3.5", "count": 2})).await;
    assert_eq!(credit.len(), 2);
    let plan = codes(json!({"plan": "big"})).await;
    let expired = codes(json!({"credits": "1", "expires_at": "2020-01-01"})).await;
    let disabled = codes(json!({"credits": "1"})).await;
    let (_, listing) = gw.admin("GET", "/admin/codes", None).await;
    let id = json(&listing)["codes"].as_array().unwrap().last().unwrap()["id"].as_i64().unwrap();
    assert!(!listing.contains(&disabled[0][4..]), "codes are listed without their secret");
    assert_eq!(gw.admin("POST", &format!("/admin/codes/{id}/disable"), None).await.0, 200);

    let redeem = |k: &str, code: &str| {
        let (gw, k, code) = (&gw, k.to_string(), code.to_string());
        async move { call(gw, "/v1/redeem", &k, &json!({"code": code})).await }
    };
    // Before: 402. Credits code -> balance; then the request works.
    assert_eq!(call(&gw, "/v1/chat/completions", &key, &chat("gpt-4o-mini")).await.0, 402);
    let (s, _, v) = redeem(&key, &credit[0].to_lowercase()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["redeemed"]["credits"].as_str(), v["balance"].as_str()), (Some("3.5"), Some("3.5")));
    assert_eq!(call(&gw, "/v1/chat/completions", &key, &chat("gpt-4o-mini")).await.0, 200);
    // Plan code -> subscription.
    let (s, _, v) = redeem(&other, &plan[0]).await;
    assert_eq!((s, v["plan"]["id"].as_str()), (200, Some("big")));
    assert_eq!(call(&gw, "/v1/chat/completions", &other, &chat("gpt-4o-mini")).await.0, 200);
    // Failures.
    let (s, h, v) = redeem(&other, &credit[0]).await;
    assert_eq!((s, oa_err(&v).1), (409, "This code has already been used"));
    assert_eq!(h["x-should-retry"], "false");
    assert_eq!(
        (redeem(&key, &expired[0]).await.0, oa_err(&redeem(&key, &expired[0]).await.2).1),
        (409, "This code has expired")
    );
    let (s, _, v) = redeem(&key, &disabled[0]).await;
    assert_eq!((s, oa_err(&v).1), (409, "This code has been disabled"));
    let (s, _, v) = redeem(&key, "CPX-00000-00000-00000-00000").await;
    assert_eq!((s, oa_err(&v).1), (400, "Invalid redemption code"));
    let (s, _, v) = call(&gw, "/v1/redeem", &key, &json!({})).await;
    assert_eq!((s, oa_err(&v).1), (400, "Missing required field 'code'"));
    // Brute force: 10 failures in 10 minutes, then 429 even for a valid code.
    for _ in 0..6 {
        redeem(&key, "CPX-11111-11111-11111-11111").await;
    }
    let (s, h, v) = redeem(&key, &credit[1]).await;
    assert_eq!(s, 429, "{v}");
    assert!(oa_err(&v).1.starts_with("Too many failed redemption attempts"));
    assert!(h.contains_key("retry-after"));
    // The ledger has the redemption with its reference.
    let refs: i64 = gw
        .db()
        .query_row("SELECT count(*) FROM ledger WHERE kind = 'redeem' AND reference LIKE 'code:%'", (), |r| r.get(0))
        .unwrap();
    assert_eq!(refs, 1);
}

#[tokio::test]
async fn restart_keeps_balances_and_todays_plan_usage() {
    let fake = fake();
    let yaml = billing_conf(&fake, BILLING, PLANS);
    let mut gw = Gateway::start(&yaml);
    let key = user(&gw, "p@x.io", Some("3"), Some("big")).await;
    let key2 = user(&gw, "q@x.io", Some("3"), None).await;
    for k in [&key, &key2] {
        fake.script(Behavior {
            usage: Some(FakeUsage { input: 100_000, output: 10_000, ..Default::default() }),
            ..Default::default()
        });
        assert_eq!(call(&gw, "/v1/chat/completions", k, &chat("gpt-4o-mini")).await.0, 200);
    }
    let before: Vec<Value> = {
        let mut v = Vec::new();
        for k in [&key, &key2] {
            v.push(json(&get(&gw, "/v1/account", k).await.2));
        }
        v
    };
    assert!(gw.stop().unwrap().success());
    let dir = std::mem::replace(&mut gw.dir, tempfile::tempdir().unwrap());
    drop(gw);
    let gw = Gateway::start_in(dir, &yaml, &[]);
    for (k, b) in [&key, &key2].into_iter().zip(before) {
        let after = json(&get(&gw, "/v1/account", k).await.2);
        assert_eq!(after["balance"], b["balance"]);
        assert_eq!(after["plan"], b["plan"]);
    }
    assert_eq!(before_used(&gw, &key).await, "0.021");
}

async fn before_used(gw: &Gateway, key: &str) -> String {
    json(&get(gw, "/v1/account", key).await.2)["plan"]["used_today"].as_str().unwrap().to_string()
}
