//! Process lifecycle: `check`, graceful shutdown with requests in flight, log
//! reopening, demo mode.

mod common;

use codex_proxy::fake_upstream::Behavior;
use common::*;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn check_reports_every_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "server:\n  listen: [\"nowhere\"]\nchannels:\n  - {name: a, kind: gemini, base_url: \"http://x\", models: [m]}\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("server.listen[0]: \"nowhere\" is not an IP:port address"), "{err}");
    assert!(err.contains("channels[0].kind: must be openai, openai-chat or anthropic, got \"gemini\""), "{err}");
    assert!(err.contains("channels[0].models[0]: model \"m\" is not declared under models"), "{err}");

    let out = Command::new(BIN)
        .args(["check", "-c", concat!(env!("CARGO_MANIFEST_DIR"), "/conf/codex-proxy.yaml")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn sigterm_lets_streams_finish_and_flushes() {
    let fake = fake();
    let (mut gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    // A stream that takes ~1.2 s.
    fake.script(Behavior { chunk_delay_ms: 100, text: Some("a b c d e f g h i j".into()), ..Default::default() });
    let url = gw.url("/v1/chat/completions");
    let key = keys[0].clone();
    // SIGTERM goes out once the first event has arrived, so the stream is
    // under way however slowly this machine started it.
    let (started, under_way) = tokio::sync::oneshot::channel();
    let stream = tokio::spawn(async move {
        let req = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let mut r = client().post(url).bearer_auth(key).json(&req).send().await.unwrap();
        let mut body = r.chunk().await.unwrap().expect("a first event").to_vec();
        started.send(()).unwrap();
        while let Some(chunk) = r.chunk().await.unwrap() {
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).unwrap()
    });
    tokio::time::timeout(Duration::from_secs(10), under_way).await.expect("the stream starts").unwrap();
    let start = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let st = gw.stop();
        (st, gw)
    });
    let body = stream.await.unwrap();
    let (st, gw) = status.await.unwrap();
    assert!(st.unwrap().success());
    assert!(body.ends_with("data: [DONE]\n\n"), "stream was cut: {body}");
    assert!(start.elapsed() < Duration::from_secs(4), "shutdown took {:?}", start.elapsed());
    // Flushed before exit: the record and the log line are on disk.
    let n: i64 = gw.db().query_row("SELECT count(*) FROM usage WHERE stream = 1", (), |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
    let log = std::fs::read_to_string(gw.data_dir().join("access.log")).unwrap();
    assert_eq!(log.lines().count(), 1);
}

#[tokio::test]
async fn idle_gateway_stops_at_once() {
    let fake = fake();
    let mut gw = Gateway::start(&conf(&fake));
    let start = Instant::now();
    assert!(gw.stop().unwrap().success());
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}

#[tokio::test]
async fn a_connection_that_never_sends_holds_the_stop_briefly_and_one_in_transit_is_served() {
    let fake = fake();
    let (mut gw, keys) = Gateway::start_with_keys(&conf(&fake), &["t@x.io"]);
    // A pre-opened connection (as browsers make) that will never send.
    let _idle = std::net::TcpStream::connect(gw.addr).unwrap();
    // A request whose head arrives just after SIGTERM.
    let mut late = std::net::TcpStream::connect(gw.addr).unwrap();
    // Time for the gateway to accept both: one still in the kernel's queue
    // when the listener closes is reset, by any server.
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    gw.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let req = format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", keys[0]);
    std::io::Write::write_all(&mut late, req.as_bytes()).unwrap();
    let mut answer = String::new();
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = std::io::Read::read_to_string(&mut late, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "the request in transit is served: {answer:?}");
    let status = gw.wait_exit(Duration::from_secs(10)).expect("it stops");
    assert!(status.success());
    assert!(start.elapsed() < Duration::from_secs(4), "the idle connection held the stop {:?}", start.elapsed());
}

#[tokio::test]
async fn sigusr1_reopens_the_access_log() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["u@x.io"]);
    let (s, _, _) = get(&gw, "/v1/models", &keys[0]).await;
    assert_eq!(s, 200);
    assert_eq!(gw.access_log(1).len(), 1);
    let log = gw.data_dir().join("access.log");
    std::fs::rename(&log, gw.data_dir().join("access.log.1")).unwrap();
    gw.signal(libc::SIGUSR1);
    // The reopen is asynchronous; requests made right after may still land in
    // the old file, so keep asking until one shows up in the new file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists() || std::fs::read_to_string(&log).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no new access log after SIGUSR1");
        let _ = get(&gw, "/v1/models", &keys[0]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(std::fs::read_to_string(gw.data_dir().join("access.log.1")).unwrap().lines().count() >= 1);
}

#[tokio::test]
async fn demo_mode_answers_every_endpoint_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/codex-proxy.yaml")).unwrap();
    let env = [
        ("CODEX_PROXY_LISTEN", "127.0.0.1:0"),
        ("CODEX_PROXY_ADMIN_LISTEN", "off"),
        ("OPENAI_API_KEY", ""),
        ("ANTHROPIC_API_KEY", ""),
        ("CODEX_PROXY_DATA_DIR", data.to_str().unwrap()),
    ];
    let conf_path = write_conf(dir.path(), &shipped);
    let mut cmd = Command::new(BIN);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(["users", "add", "demo@x.io", "-c"]).arg(&conf_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut cmd = Command::new(BIN);
    for (k, v) in env {
        cmd.env(k, v);
    }
    assert!(cmd.args(["credits", "add", "demo@x.io", "5", "-c"]).arg(&conf_path).status().unwrap().success());
    let mut cmd = Command::new(BIN);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(["keys", "create", "demo@x.io", "-c"]).arg(&conf_path).output().unwrap();
    let key = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string();
    let gw = Gateway::start_in(dir, &shipped, &env);
    assert!(gw.stderr_text().contains("DEMO MODE"));

    let (s, _, body) = get(&gw, "/v1/models", &key).await;
    assert_eq!(s, 200);
    assert!(json(&body)["data"][0]["owned_by"].as_str().unwrap().starts_with("codex-proxy-demo"));
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("/v1/chat/completions", json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})),
        ("/v1/responses", json!({"model": "gpt-5.1-codex", "stream": true, "input": "hi"})),
        ("/v1/embeddings", json!({"input": "hi"})),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-6", "max_tokens": 20, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/messages/count_tokens",
            json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ];
    for (path, body) in cases {
        let (s, _, text) = post(&gw, path, &key, &body).await;
        assert_eq!(s, 200, "{path}: {text}");
    }
}
