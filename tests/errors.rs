//! Every error of the gateway core, in both client shapes, with exact statuses,
//! bodies and retry headers.

mod common;

use codex_proxy::fake_upstream::Behavior;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn send(
    gw: &Gateway,
    path: &str,
    auth: Option<(&str, &str)>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb = client().post(gw.url(path)).header("content-type", "application/json").body(body.to_string());
    if let Some((h, v)) = auth {
        rb = rb.header(h, v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, json(&r.text().await.unwrap()))
}

fn openai_err(v: &Value) -> (&str, &str, Option<&str>) {
    (v["error"]["type"].as_str().unwrap(), v["error"]["message"].as_str().unwrap(), v["error"]["code"].as_str())
}

fn anthropic_err(v: &Value) -> (&str, &str) {
    assert_eq!(v["type"], "error", "{v}");
    assert!(v["request_id"].as_str().unwrap().starts_with("req_"));
    (v["error"]["type"].as_str().unwrap(), v["error"]["message"].as_str().unwrap())
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const MSG: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn each_401_in_both_shapes() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io", "v@x.io"]);
    let unknown = format!("codex_{}", "A".repeat(40));
    let cases: Vec<(Option<(&str, String)>, &str)> = vec![
        (None, "Missing API key: send `Authorization: Bearer codex_...`"),
        (
            Some(("authorization", "Bearer sk-proj-abc".into())),
            "Malformed API key: expected `codex_` followed by at least 32 letters and digits",
        ),
        (Some(("authorization", format!("Bearer {unknown}"))), "Invalid API key: no such key"),
    ];
    for (auth, message) in &cases {
        let a = auth.as_ref().map(|(h, v)| (*h, v.as_str()));
        let (status, headers, v) = send(&gw, "/v1/chat/completions", a, CHAT).await;
        assert_eq!(status, 401);
        assert_eq!(openai_err(&v), ("invalid_request_error", *message, Some("invalid_api_key")));
        assert_eq!(headers["x-should-retry"], "false");
        let (status, _, v) = send(&gw, "/v1/messages", a, MSG).await;
        assert_eq!(status, 401);
        assert_eq!(anthropic_err(&v), ("authentication_error", *message));
    }
    // x-api-key is an Anthropic header: accepted there, not on OpenAI paths.
    let (status, _, _) = send(&gw, "/v1/messages", Some(("x-api-key", &keys[0])), MSG).await;
    assert_eq!(status, 200);
    let (status, _, v) = send(&gw, "/v1/chat/completions", Some(("x-api-key", &keys[0])), CHAT).await;
    assert_eq!((status, openai_err(&v).1), (401, "Missing API key: send `Authorization: Bearer codex_...`"));

    // Disabled by the CLI while the gateway runs: effective within a second.
    let out = gw.cli(&["keys", "list", "v@x.io"]);
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(!listing.contains(&keys[1]), "keys list must never print a key");
    let id = listing.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert!(gw.cli(&["keys", "disable", &id]).status.success());
    let disabled_at = Instant::now();
    let bearer = format!("Bearer {}", keys[1]);
    loop {
        let (status, _, v) = send(&gw, "/v1/chat/completions", Some(("authorization", &bearer)), CHAT).await;
        if status == 401 {
            assert_eq!(openai_err(&v).1, "This API key is disabled");
            break;
        }
        assert!(disabled_at.elapsed() < Duration::from_secs(1), "disable took longer than 1s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, v) = send(&gw, "/v1/messages", Some(("x-api-key", &keys[1])), MSG).await;
    assert_eq!((status, anthropic_err(&v)), (401, ("authentication_error", "This API key is disabled")));
    assert!(gw.cli(&["keys", "enable", &id]).status.success());
    let enabled_at = Instant::now();
    loop {
        let (status, _, _) = send(&gw, "/v1/chat/completions", Some(("authorization", &bearer)), CHAT).await;
        if status == 200 {
            break;
        }
        assert!(enabled_at.elapsed() < Duration::from_secs(1), "enable took longer than 1s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bad_requests() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    let bearer = format!("Bearer {}", keys[0]);
    let auth = Some(("authorization", bearer.as_str()));

    let (status, headers, v) = send(&gw, "/v1/chat/completions", auth, r#"{"model": "gpt-9", "messages": []}"#).await;
    assert_eq!(status, 404);
    assert_eq!(
        openai_err(&v),
        (
            "invalid_request_error",
            "The model 'gpt-9' does not exist or is not served by this gateway",
            Some("model_not_found")
        )
    );
    assert_eq!(headers["x-should-retry"], "false");
    let (status, _, v) =
        send(&gw, "/v1/messages", auth, r#"{"model":"claude-opus-5-5","max_tokens":1,"messages":[]}"#).await;
    assert_eq!((status, anthropic_err(&v).0), (404, "not_found_error"));

    let (status, _, v) = send(&gw, "/v1/chat/completions", auth, "{not json").await;
    assert_eq!(status, 400);
    assert!(openai_err(&v).1.starts_with("Invalid JSON body: "), "{v}");
    let (status, _, v) = send(&gw, "/v1/chat/completions", auth, "[]").await;
    assert_eq!((status, openai_err(&v).1), (400, "Invalid JSON body: the request body must be a JSON object"));
    let (status, _, v) = send(&gw, "/v1/chat/completions", auth, r#"{"messages":[]}"#).await;
    assert_eq!((status, openai_err(&v).1), (400, "Missing required field 'model'"));
    assert_eq!(v["error"]["param"], "model");
    let (status, _, v) = send(&gw, "/v1/chat/completions", auth, r#"{"model":"gpt-4o-mini"}"#).await;
    assert_eq!((status, openai_err(&v).1), (400, "Missing required field 'messages'"));
    let (status, _, v) = send(&gw, "/v1/messages", auth, r#"{"model":"claude-sonnet-4-6","messages":[]}"#).await;
    assert_eq!((status, anthropic_err(&v)), (400, ("invalid_request_error", "Missing required field 'max_tokens'")));
    let (status, _, v) =
        send(&gw, "/v1/chat/completions", auth, r#"{"model":"gpt-4o-mini","messages":[],"stream":"yes"}"#).await;
    assert_eq!((status, openai_err(&v).1), (400, "Invalid field 'stream': must be a boolean"));
    let (status, _, v) = send(&gw, "/v1/chat/completions", auth, r#"{"model":42,"messages":[]}"#).await;
    assert_eq!((status, openai_err(&v).1), (400, "Invalid field 'model': must be a non-empty string"));

    let r = client().get(gw.url("/v1/chat/completions")).header("authorization", &bearer).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = client().post(gw.url("/v1/unknown")).header("authorization", &bearer).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json(&r.text().await.unwrap())["error"]["message"], "Unknown endpoint: /v1/unknown");
    assert!(fake.requests().is_empty(), "bad requests must not reach the upstream");
}

#[tokio::test]
async fn body_limit_gives_413() {
    let fake = fake();
    let yaml = conf(&fake).replace("  grace_period: 5s", "  grace_period: 5s\n  max_body_size: 64KiB");
    let (gw, keys) = Gateway::start_with_keys(&yaml, &["u@x.io"]);
    let big = format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#, "y".repeat(70_000));
    let (status, headers, v) =
        send(&gw, "/v1/chat/completions", Some(("authorization", &format!("Bearer {}", keys[0]))), &big).await;
    assert_eq!(status, 413);
    assert_eq!(
        openai_err(&v),
        ("invalid_request_error", "Request body too large: the limit is 65536 bytes", Some("request_too_large"))
    );
    assert_eq!(headers["x-should-retry"], "false");
    let (status, _, v) =
        send(&gw, "/v1/messages", Some(("x-api-key", &keys[0])), &big.replace("gpt-4o-mini", "claude-sonnet-4-6"))
            .await;
    assert_eq!((status, anthropic_err(&v).0), (413, "request_too_large"));
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn upstream_failures_give_503_in_the_clients_shape() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    let bearer = format!("Bearer {}", keys[0]);
    fake.script(Behavior { status: Some(500), ..Default::default() });
    let (status, headers, v) = send(&gw, "/v1/chat/completions", Some(("authorization", &bearer)), CHAT).await;
    assert_eq!(status, 503);
    assert_eq!(v["error"]["type"], "service_unavailable_error");
    assert_eq!(
        v["error"]["message"],
        "All channels failed for model 'gpt-4o-mini': oa: upstream answered 500: fake upstream error 500"
    );
    assert!(headers.contains_key("retry-after"));
    assert!(!headers.contains_key("x-should-retry"));
    fake.script(Behavior { status: Some(529), ..Default::default() });
    let (status, _, v) = send(&gw, "/v1/messages", Some(("x-api-key", &keys[0])), MSG).await;
    assert_eq!((status, anthropic_err(&v).0), (503, "overloaded_error"));

    // Upstream 4xx other than 429 goes back as it is.
    fake.script(Behavior { status: Some(400), ..Default::default() });
    let (status, _, v) = send(&gw, "/v1/chat/completions", Some(("authorization", &bearer)), CHAT).await;
    assert_eq!((status, v["error"]["message"].as_str()), (400, Some("fake upstream error 400")));
    gw.wait_count("SELECT count(*) FROM usage WHERE status = 400 AND upstream_status = 400", 1);
}

#[tokio::test]
async fn unreachable_and_slow_upstreams_give_503() {
    let fake = fake();
    // A port nothing listens on: bind, note the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let yaml =
        conf(&fake).replace(&format!("base_url: {}/v1", fake.url()), &format!("base_url: http://{dead}/v1")).replace(
            "    models: [claude-sonnet-4-6]",
            "    models: [claude-sonnet-4-6]\n    timeouts: {first_byte: 300ms}",
        );
    let (gw, keys) = Gateway::start_with_keys(&yaml, &["u@x.io"]);
    let (status, _, v) =
        send(&gw, "/v1/chat/completions", Some(("authorization", &format!("Bearer {}", keys[0]))), CHAT).await;
    assert_eq!(status, 503);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("All channels failed for model 'gpt-4o-mini': oa: connect:"),
        "{v}"
    );

    fake.script(Behavior { delay_ms: 3000, ..Default::default() });
    let start = Instant::now();
    let (status, _, v) = send(&gw, "/v1/messages", Some(("x-api-key", &keys[0])), MSG).await;
    assert_eq!((status, anthropic_err(&v).0), (503, "overloaded_error"));
    assert!(start.elapsed() < Duration::from_millis(2500), "first-byte timeout not applied");
}

#[tokio::test]
async fn access_log_has_one_line_per_request_without_content() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    let secret_prompt = "the-secret-prompt-text";
    let req = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": secret_prompt}]});
    let (status, headers, _) = post(&gw, "/v1/chat/completions", &keys[0], &req).await;
    assert_eq!(status, 200);
    let rid = headers["x-request-id"].to_str().unwrap().to_string();
    let _ = send(&gw, "/v1/chat/completions", None, CHAT).await;
    let lines = gw.access_log(2);
    assert_eq!(lines.len(), 2);
    let ok = &lines[0];
    assert_eq!(ok["request_id"], rid.as_str());
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["upstream_status"], 200);
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["path"], "/v1/chat/completions");
    assert_eq!(ok["model"], "gpt-4o-mini");
    assert_eq!(ok["channel"], "oa");
    assert_eq!(ok["stream"], true);
    assert_eq!(ok["user"], "u@x.io");
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert_eq!(ok["key_prefix"].as_str().unwrap(), &keys[0][..14]);
    assert!(ok["tokens"]["output"].as_u64().unwrap() > 0);
    assert!(ok["ttfb_ms"].is_u64() && ok["total_ms"].is_u64());
    assert!(ok["bytes_in"].as_u64().unwrap() > 50 && ok["bytes_out"].as_u64().unwrap() > 100);
    assert_eq!(lines[1]["status"], 401);
    assert_eq!(lines[1]["error"], "missing_key");
    let text = std::fs::read_to_string(gw.data_dir().join("access.log")).unwrap();
    assert!(!text.contains(secret_prompt), "prompt text in the access log");
    assert!(!text.contains("Hello from"), "completion text in the access log");
    assert!(!text.contains(&keys[0][14..]), "key secret in the access log");
}

#[tokio::test]
async fn healthz_needs_no_key() {
    let fake = fake();
    let gw = Gateway::start(&conf(&fake));
    let r = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
