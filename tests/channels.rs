//! Channels: failover before the first byte, cool-downs, ejection, priority
//! tiers, weights, session affinity, active health checks, and cancellation of
//! the upstream call when the client leaves.

mod common;

use codex_proxy::fake_upstream::{Behavior, FakeOptions, FakeUpstream};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Ch<'a> {
    name: &'a str,
    url: String,
    kind: &'a str,
    weight: u32,
    priority: u32,
    extra: &'a str,
}

fn ch<'a>(name: &'a str, fake: &FakeUpstream, priority: u32) -> Ch<'a> {
    Ch {
        name,
        url: format!("{}/v1", fake.url()),
        kind: "openai",
        weight: 1,
        priority,
        extra: "health_check: {enabled: false}",
    }
}

/// An Anthropic channel on `fake`.
fn anthropic_ch<'a>(name: &'a str, fake: &FakeUpstream, priority: u32) -> Ch<'a> {
    Ch { kind: "anthropic", url: fake.url(), ..ch(name, fake, priority) }
}

fn channels_conf(channels: &[Ch]) -> String {
    let mut list = String::new();
    for c in channels {
        list.push_str(&format!(
            "  - {{name: {}, kind: {}, base_url: \"{}\", api_key: sk-{}, weight: {}, priority: {}, models: [gpt-4o-mini, claude-sonnet-4-6], {}}}\n",
            c.name, c.kind, c.url, c.name, c.weight, c.priority, c.extra
        ));
    }
    format!(
        r#"
server:
  listen: ["127.0.0.1:0"]
  grace_period: 2s
storage:
  flush_interval: 20ms
admin:
  listen: 127.0.0.1:0
  token: {ADMIN_TOKEN}
demo_upstream: never
routing:
  max_attempts: 3
  failure_threshold: 3
  failure_window: 10s
  ejection_time: 2s
billing:
  default_concurrency: 64
{MODELS}
channels:
{list}"#
    )
}

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
}

fn hits(f: &FakeUpstream) -> u64 {
    f.state.hits()
}

async fn channel_state(gw: &Gateway, name: &str) -> Value {
    let (s, b) = gw.admin("GET", "/admin/channels", None).await;
    assert_eq!(s, 200);
    json(&b)["channels"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap()
}

fn start(conf: &str) -> (Gateway, String) {
    let (gw, keys) = Gateway::start_with_keys(conf, &["u@x.io"]);
    (gw, keys[0].clone())
}

#[tokio::test]
async fn a_503_fails_over_and_the_client_sees_one_200() {
    let (a, b) = (fake(), fake());
    let (gw, key) = start(&channels_conf(&[ch("a", &a, 0), ch("b", &b, 1)]));
    a.script(Behavior { status: Some(503), ..Default::default() });
    let (s, _, body) = post(&gw, "/v1/chat/completions", &key, &chat()).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!((hits(&a), hits(&b)), (1, 1));
    let line = gw.access_log(1).pop().unwrap();
    assert_eq!(line["channel"], "b");
    assert_eq!(line["attempts"][0]["channel"], "a");
    assert_eq!(line["attempts"][0]["status"], 503);
    assert_eq!(line["attempts"][1]["channel"], "b");
    assert_eq!(line["attempts"][1]["status"], 200);
    gw.wait_count("SELECT count(*) FROM usage WHERE attempts LIKE '%\"a\"%503%' AND channel = 'b'", 1);
}

#[tokio::test]
async fn a_429_cools_the_channel_down_until_its_reset() {
    let (a, b) = (fake(), fake());
    let (gw, key) = start(&channels_conf(&[ch("a", &a, 0), ch("b", &b, 1)]));
    a.script(Behavior { status: Some(429), headers: vec![("retry-after".into(), "2".into())], ..Default::default() });
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    assert_eq!((hits(&a), hits(&b)), (1, 1));
    let st = channel_state(&gw, "a").await;
    assert_eq!(st["status"], "cooling_down");
    assert!(st["cooldown_until"].is_string());
    assert!(st["last_error"].as_str().unwrap().contains("429"));
    // While cooling down, traffic goes straight to b.
    for _ in 0..5 {
        assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    }
    assert_eq!((hits(&a), hits(&b)), (1, 6));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    assert_eq!(hits(&a), 2, "traffic returns to a after the reset");
}

#[tokio::test]
async fn all_channels_rate_limited_gives_503_with_retry_after() {
    let a = fake();
    let (gw, key) = start(&channels_conf(&[ch("a", &a, 0)]));
    a.script(Behavior { status: Some(429), headers: vec![("retry-after".into(), "7".into())], ..Default::default() });
    let (s, h, body) = post(&gw, "/v1/chat/completions", &key, &chat()).await;
    assert_eq!(s, 503);
    assert_eq!(h["retry-after"], "7");
    assert!(json(&body)["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("All channels failed for model 'gpt-4o-mini'"));
    // Nothing left that is not cooling down: no active channel.
    let (s, h, body) = post(&gw, "/v1/chat/completions", &key, &chat()).await;
    assert_eq!(s, 503);
    assert_eq!(json(&body)["error"]["message"], "No active upstream channel for model 'gpt-4o-mini'");
    assert!(h.contains_key("retry-after"));
    assert_eq!(hits(&a), 1);
}

#[tokio::test]
async fn a_hang_times_out_before_the_first_byte_and_fails_over() {
    let (a, b) = (fake(), fake());
    let mut slow = ch("a", &a, 0);
    slow.extra = "health_check: {enabled: false}, timeouts: {first_byte: 300ms}";
    let (gw, key) = start(&channels_conf(&[slow, ch("b", &b, 1)]));
    a.script(Behavior { hang: true, ..Default::default() });
    let start = Instant::now();
    let (s, _, _) = post(&gw, "/v1/chat/completions", &key, &chat()).await;
    assert_eq!(s, 200);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
    assert_eq!((hits(&a), hits(&b)), (1, 1));
    let line = gw.access_log(1).pop().unwrap();
    assert!(line["attempts"][0]["error"].as_str().unwrap().starts_with("no response header"), "{line}");
}

#[tokio::test]
async fn an_error_event_before_content_fails_over() {
    let (a, b) = (fake(), fake());
    let ca = anthropic_ch("a", &a, 0);
    let cb = anthropic_ch("b", &b, 1);
    let (gw, key) = start(&channels_conf(&[ca, cb]));
    a.script(Behavior { error_event: true, ..Default::default() });
    b.script(Behavior { text: Some("from b".into()), ..Default::default() });
    let req = json!({"model": "claude-sonnet-4-6", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let (s, _, body) = post(&gw, "/v1/messages", &key, &req).await;
    assert_eq!(s, 200);
    assert!(!body.contains("overloaded_error"), "the error event leaked: {body}");
    assert!(body.contains("\"text\":\"b\"") || body.contains("from "), "{body}");
    assert!(body.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    assert_eq!((hits(&a), hits(&b)), (1, 1));
}

#[tokio::test]
async fn a_chat_error_chunk_before_content_fails_over() {
    let (a, b) = (fake(), fake());
    let (gw, key) = start(&channels_conf(&[ch("a", &a, 0), ch("b", &b, 1)]));
    a.script(Behavior { error_event: true, ..Default::default() });
    let req = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let (s, _, body) = post(&gw, "/v1/chat/completions", &key, &req).await;
    assert_eq!(s, 200);
    assert!(!body.contains("server_is_overloaded"), "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"));
    assert_eq!((hits(&a), hits(&b)), (1, 1));
    let line = gw.access_log(1).pop().unwrap();
    assert!(line["attempts"][0]["error"].as_str().unwrap().starts_with("error event before any content"), "{line}");
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_the_protocols_error_event_and_bills_what_streamed() {
    let a = fake();
    let ca = anthropic_ch("a", &a, 0);
    let (gw, key) = start(&channels_conf(&[ch("o", &a, 0), ca]));
    // Anthropic: message_start (usage), block start, ping, 3 deltas, then cut.
    a.script(Behavior {
        cut_after: Some(6),
        text: Some("one two three four five six seven".into()),
        ..Default::default()
    });
    let req = json!({"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let (s, _, body) = post(&gw, "/v1/messages", &key, &req).await;
    assert_eq!(s, 200);
    let events = sse_events(&body);
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"), "{body}");
    assert_eq!(json(data)["error"]["type"], "api_error");
    assert!(!body.contains("message_stop"));
    // Chat: an error chunk, no [DONE].
    a.script(Behavior { cut_after: Some(3), ..Default::default() });
    let (s, _, body) = post(
        &gw,
        "/v1/chat/completions",
        &key,
        &json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(s, 200);
    let last = sse_events(&body).pop().unwrap().1;
    assert!(json(&last)["error"]["message"].as_str().unwrap().contains("incomplete"), "{body}");
    assert!(!body.contains("[DONE]"));
    // Both billed on what streamed, marked estimated.
    assert_eq!(gw.wait_count("SELECT count(*) FROM usage WHERE estimated = 1 AND cost > 0 AND status = 200", 2), 2);
    let line = gw.access_log(2);
    assert!(line.iter().all(|l| l["error"] == "upstream_stream_error"));
}

#[tokio::test]
async fn a_refused_channel_key_disables_the_channel_until_a_probe_passes() {
    let a = FakeUpstream::start(FakeOptions { expected_key: Some("sk-other".into()), ..Default::default() }).unwrap();
    let b = fake();
    let mut ca = ch("a", &a, 0);
    ca.extra = "health_check: {enabled: true, interval: 300ms, failures: 1, successes: 1}";
    let (gw, key) = start(&channels_conf(&[ca, ch("b", &b, 1)]));
    // The first probe fails (wrong key), or the first request gets 401: either
    // way a is out and traffic goes to b.
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    let st = channel_state(&gw, "a").await;
    assert_ne!(st["status"], "available", "{st}");
    let before = hits(&a);
    for _ in 0..3 {
        assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    }
    let requests_to_a = a.requests().iter().filter(|r| r.method == "POST").count();
    assert!(requests_to_a <= 1, "a still got {requests_to_a} requests");
    assert!(hits(&a) >= before, "probes keep checking a");
    // The operator fixes the key upstream: the next probe passes, a returns.
    a.state.set_expected_key(Some("sk-a".into()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while channel_state(&gw, "a").await["status"] != "available" {
        assert!(Instant::now() < deadline, "a never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    assert!(a.requests().iter().filter(|r| r.method == "POST").count() > requests_to_a);
}

#[tokio::test]
async fn a_401_from_upstream_disables_the_channel_loudly() {
    let a = FakeUpstream::start(FakeOptions { expected_key: Some("sk-other".into()), ..Default::default() }).unwrap();
    let b = fake();
    let (gw, key) = start(&channels_conf(&[ch("a", &a, 0), ch("b", &b, 1)]));
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    assert_eq!((hits(&a), hits(&b)), (1, 1));
    let st = channel_state(&gw, "a").await;
    assert_eq!((st["status"].as_str(), st["auth_failed"].as_bool()), (Some("auth_failed"), Some(true)));
    for _ in 0..3 {
        post(&gw, "/v1/chat/completions", &key, &chat()).await;
    }
    assert_eq!(hits(&a), 1);
    assert!(gw.stderr_text().contains("channel a DISABLED"));
    // An operator re-enables it (CLI through the admin API).
    let out = gw.cli(&["channels", "enable", "a"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8(gw.cli(&["channels", "list"]).stdout).unwrap();
    assert!(listing.lines().any(|l| l.starts_with("a ") && l.contains("available")), "{listing}");
}

#[tokio::test]
async fn lower_tiers_serve_only_when_higher_ones_are_unavailable() {
    let (a, b, c) = (fake(), fake(), fake());
    let (gw, key) = start(&channels_conf(&[ch("a", &a, 0), ch("b", &b, 0), ch("c", &c, 1)]));
    for _ in 0..20 {
        assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    }
    assert_eq!(hits(&c), 0);
    assert_eq!(hits(&a) + hits(&b), 20);
    gw.admin("POST", "/admin/channels/a/disable", None).await;
    gw.admin("POST", "/admin/channels/b/disable", None).await;
    for _ in 0..5 {
        assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    }
    assert_eq!(hits(&c), 5);
}

#[tokio::test]
async fn weights_hold_within_ten_percent_over_a_thousand_requests() {
    let (a, b) = (fake(), fake());
    let mut wa = ch("a", &a, 0);
    wa.weight = 1;
    let mut wb = ch("b", &b, 0);
    wb.weight = 3;
    let (gw, key) = start(&channels_conf(&[wa, wb]));
    let gw = std::sync::Arc::new(gw);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (gw, key) = (gw.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..63 {
                let r = c.post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&chat()).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (ha, hb) = (hits(&a) as f64, hits(&b) as f64);
    let total = ha + hb;
    println!("weights 1:3 over {total} requests: a {ha}, b {hb}");
    assert_eq!(total, 1008.0);
    // Within ±10% of each expected share (weighted round robin is in fact
    // exact: 252 and 756).
    assert!((ha / total - 0.25).abs() <= 0.025, "a got {ha} of {total}");
    assert!((hb / total - 0.75).abs() <= 0.075, "b got {hb} of {total}");
}

#[tokio::test]
async fn session_affinity_holds_and_moves_when_its_channel_dies() {
    let (a, b, c) = (fake(), fake(), fake());
    let (gw, key) = start(&channels_conf(&[ch("a", &a, 0), ch("b", &b, 0), ch("c", &c, 0)]));
    let req = json!({"model": "gpt-4o-mini", "prompt_cache_key": "conversation-42", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &req).await.0, 200);
    let first = gw.access_log(1).pop().unwrap()["channel"].as_str().unwrap().to_string();
    for _ in 0..15 {
        assert_eq!(post(&gw, "/v1/chat/completions", &key, &req).await.0, 200);
    }
    let lines = gw.access_log(16);
    assert!(
        lines.iter().all(|l| l["channel"] == first.as_str()),
        "affinity broke: {:?}",
        lines.iter().map(|l| &l["channel"]).collect::<Vec<_>>()
    );
    // Claude Code's session header works the same way, on its own channel choice.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-claude-code-session-id", "s-1")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The channel dies: the conversation moves and stays on its new channel.
    gw.admin("POST", &format!("/admin/channels/{first}/disable"), None).await;
    for _ in 0..10 {
        assert_eq!(post(&gw, "/v1/chat/completions", &key, &req).await.0, 200);
    }
    let lines = gw.access_log(27);
    let moved: Vec<&str> = lines[17..].iter().map(|l| l["channel"].as_str().unwrap()).collect();
    assert!(moved.iter().all(|c| *c == moved[0] && *c != first), "{moved:?}");
}

#[tokio::test]
async fn an_active_probe_ejects_and_restores_a_channel() {
    let (a, b) = (fake(), fake());
    let mut ca = ch("a", &a, 0);
    ca.extra = "health_check: {enabled: true, interval: 200ms, timeout: 1s, failures: 2, successes: 2}";
    let (gw, key) = start(&channels_conf(&[ca, ch("b", &b, 1)]));
    // Probes of a fail (the models endpoint answers 500) twice in a row.
    for _ in 0..2 {
        a.script(Behavior { path: Some("/v1/models".into()), status: Some(500), ..Default::default() });
    }
    let broke = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(5);
    while channel_state(&gw, "a").await["status"] != "unhealthy" {
        assert!(Instant::now() < deadline, "a never became unhealthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("active probes (interval 200ms, 2 failures) ejected the channel {:?} after it broke", broke.elapsed());
    let posts = |f: &FakeUpstream| f.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    assert_eq!((posts(&a), posts(&b)), (0, 1), "an unhealthy channel takes no traffic");
    // The probes pass again: after 2 successes a is back.
    let deadline = Instant::now() + Duration::from_secs(5);
    while channel_state(&gw, "a").await["status"] != "available" {
        assert!(Instant::now() < deadline, "a never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    assert_eq!(posts(&a), 1);
    assert!(gw.stderr_text().contains("channel a failed its health checks"));
}

#[tokio::test]
async fn a_dead_channel_loses_its_traffic_measured() {
    let b = fake();
    let a = fake();
    let (gw, key) = start(&channels_conf(&[ch("a", &a, 0), ch("b", &b, 0)]));
    for _ in 0..10 {
        assert_eq!(post(&gw, "/v1/chat/completions", &key, &chat()).await.0, 200);
    }
    // a dies (its port stops accepting).
    drop(a);
    let died = Instant::now();
    let mut times = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        let (s, _, _) = post(&gw, "/v1/chat/completions", &key, &chat()).await;
        assert_eq!(s, 200, "every request still succeeds");
        times.push((t.duration_since(died), t.elapsed()));
    }
    let lines = gw.access_log(50);
    let touched: Vec<usize> = (0..40).filter(|&i| lines[10 + i]["attempts"].as_array().unwrap().len() > 1).collect();
    let slowest = times.iter().map(|t| t.1).max().unwrap();
    let last = touched.last().map(|&i| times[i].0).unwrap_or_default();
    println!(
        "channel death: all 40 requests answered 200; {} of them tried the dead channel first (the last {last:?} after its death), each failing over at once (slowest request {slowest:?}); then it was ejected",
        touched.len()
    );
    // Ejected after the failure threshold (3) within the ejection time (2 s).
    // On a slow machine the loop outlasts it: each time an ejection ends,
    // one request tries the channel again (half-open) and re-ejects it.
    let ejection = Duration::from_secs(2);
    let early = touched.iter().filter(|&&i| times[i].0 < ejection).count();
    assert!(early <= 3, "ejected after the failure threshold (3): {touched:?}");
    let late = touched.len() - early;
    let periods = (died.elapsed().as_secs_f64() / ejection.as_secs_f64()) as usize;
    assert!(late <= periods, "one half-open try per ejection: {touched:?} over {:?}", died.elapsed());
    assert!(touched.len() >= 3, "the dead channel was tried until ejected: {touched:?}");
}

/// An upstream that reads the request, never answers, and reports when the
/// gateway closes the connection.
async fn silent_upstream() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<Instant>) {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Instant::now());
                    return;
                }
                Ok(_) => {}
            }
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_call_at_once() {
    let (addr, closed) = silent_upstream().await;
    let conf = channels_conf(&[Ch {
        name: "s",
        url: format!("http://{addr}/v1"),
        kind: "openai",
        weight: 1,
        priority: 0,
        extra: "health_check: {enabled: false}",
    }]);
    let (gw, key) = start(&conf);
    let client_task = tokio::spawn({
        let (addr, key) = (gw.addr, key.clone());
        async move {
            use tokio::io::AsyncWriteExt;
            let body = serde_json::to_vec(&chat()).unwrap();
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n", body.len());
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&body).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(s);
            Instant::now()
        }
    });
    let left = client_task.await.unwrap();
    let closed =
        tokio::time::timeout(Duration::from_secs(5), closed).await.expect("upstream connection never closed").unwrap();
    let lag = closed.saturating_duration_since(left);
    println!("client left -> upstream connection closed after {lag:?}");
    assert!(lag < Duration::from_millis(200), "{lag:?}");
    // Its concurrency slot is free again.
    let (s, _, b) = get(&gw, "/v1/account", &key).await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["concurrency"]["in_use"], 0);
    assert_eq!(gw.access_log(2)[0]["error"], "client_disconnected");
}

#[tokio::test]
async fn tls_upstreams_are_verified_against_the_system_roots_with_sni() {
    let (ca, cert, key) = test_pki();
    let tls = codex_proxy::fake_upstream::TlsIdentity { cert_pem: cert, key_pem: key };
    let up = FakeUpstream::start(FakeOptions { tls: Some(tls), ..Default::default() }).unwrap();
    assert!(up.url().starts_with("https://localhost:"));
    let good = ch("good", &up, 0);
    // Same server by IP: the certificate does not name 127.0.0.1.
    let mut wrong_name = ch("wrong-name", &up, 1);
    wrong_name.url = format!("https://127.0.0.1:{}/v1", up.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let yaml = channels_conf(&[good, wrong_name]);
    let conf = write_conf(dir.path(), &yaml);
    let key = create_key(&conf, "t@x.io");
    // rustls-native-certs reads the system trust store, which SSL_CERT_FILE replaces.
    let gw = Gateway::start_in(dir, &yaml, &[("SSL_CERT_FILE", ca_file.to_str().unwrap())]);
    let (s, _, body) = post(&gw, "/v1/chat/completions", &key, &chat()).await;
    assert_eq!(s, 200, "{body}");
    let got = up.requests().pop().unwrap();
    assert_eq!(got.header("host"), Some(format!("localhost:{}", up.addr.port()).as_str()));
    // Only the channel whose SNI matches the certificate works.
    gw.admin("POST", "/admin/channels/good/disable", None).await;
    let (s, _, body) = post(&gw, "/v1/chat/completions", &key, &chat()).await;
    assert_eq!(s, 503, "{body}");
    let err = json(&body)["error"]["message"].as_str().unwrap().to_string();
    assert!(err.contains("wrong-name") && err.to_lowercase().contains("cert"), "{err}");
}

/// `channels_conf` with a 1 s stream hold and keep-alive.
fn hold_conf(channels: &[Ch]) -> String {
    channels_conf(channels).replace("routing:\n", "routing:\n  stream_hold: 1s\n  stream_keepalive: 1s\n")
}

/// Posts a stream; returns the seconds until the response head and the body.
async fn timed_stream(gw: &Gateway, path: &str, key: &str, body: &Value) -> (u16, f64, String) {
    let started = Instant::now();
    let r = client().post(gw.url(path)).bearer_auth(key).json(body).send().await.unwrap();
    let head = started.elapsed().as_secs_f64();
    (r.status().as_u16(), head, r.text().await.unwrap())
}

#[tokio::test]
async fn a_thinking_model_gets_its_head_after_the_hold_and_keep_alives() {
    let a = fake();
    let (gw, key) = start(&hold_conf(&[ch("a", &a, 0)]));
    // Five seconds before the first token, and not a byte meanwhile.
    a.script(Behavior { think_ms: 5000, text: Some("after thought".into()), ..Default::default() });
    let req = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let (s, head, body) = timed_stream(&gw, "/v1/chat/completions", &key, &req).await;
    assert_eq!(s, 200);
    assert!((0.9..2.5).contains(&head), "the head came after {head:.2}s, not after the 1 s hold");
    let keepalives = body.matches(": keep-alive\n\n").count();
    assert!((2..=5).contains(&keepalives), "{keepalives} keep-alives in {body}");
    assert!(body.contains("after") && body.ends_with("data: [DONE]\n\n"), "{body}");
    // Billed in full: the stream completed.
    assert_eq!(gw.wait_count("SELECT count(*) FROM usage WHERE estimated = 0 AND status = 200", 1), 1);
}

#[tokio::test]
async fn pings_flow_and_a_failure_after_the_hold_is_the_clients_error_event() {
    let (a, b) = (fake(), fake());
    let ca = anthropic_ch("a", &a, 0);
    let cb = anthropic_ch("b", &b, 1);
    let (gw, key) = start(&hold_conf(&[ca, cb]));
    // Anthropic's own pings while it thinks reach an Anthropic client.
    a.script(Behavior { think_ms: 2500, ping_ms: 400, ..Default::default() });
    let req = json!({"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let (s, head, body) = timed_stream(&gw, "/v1/messages", &key, &req).await;
    assert_eq!(s, 200);
    assert!(head < 2.0, "head after {head:.2}s");
    let names: Vec<_> = sse_events(&body).into_iter().filter_map(|(n, _)| n).collect();
    let first_delta = names.iter().position(|n| n == "content_block_delta").expect("content");
    assert!(names[..first_delta].iter().filter(|n| *n == "ping").count() >= 4, "{names:?}");
    assert!(body.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));

    // A chat client translated to that channel: the upstream fails after the
    // head went out, so there is no failover; the stream ends with an error.
    a.script(Behavior { think_ms: 2500, cut_after: Some(1), ..Default::default() });
    let req = json!({"model": "claude-sonnet-4-6", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let (s, head, body) = timed_stream(&gw, "/v1/chat/completions", &key, &req).await;
    assert_eq!(s, 200);
    assert!(head < 2.0, "head after {head:.2}s");
    let last = sse_events(&body).pop().unwrap().1;
    assert!(json(&last)["error"]["message"].as_str().unwrap().contains("incomplete"), "{body}");
    assert_eq!(hits(&b), 0, "committed streams do not fail over");
}
