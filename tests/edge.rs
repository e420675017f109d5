//! Edge hardening, tried as a careless or hostile client would: oversized
//! heads, absurdly nested bodies, idle keep-alive connections; and what an
//! operator relies on: private files, `/readyz`, `/metrics`.

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// Sends raw bytes on a new connection; returns what came back until the
/// server closed it (or `wait` passed).
fn raw(gw: &Gateway, request: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn body_of(response: &str) -> serde_json::Value {
    json(response.split("\r\n\r\n").nth(1).unwrap_or(""))
}

#[tokio::test]
async fn an_oversized_head_gets_431_and_the_connection_closes() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["e@x.io"]);
    let big = "a".repeat(200_000);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nX-Big: {big}\r\nContent-Length: 2\r\n\r\n{{}}",
        keys[0]
    );
    let (resp, closed) = raw(&gw, req.as_bytes(), Duration::from_secs(5));
    assert!(resp.starts_with("HTTP/1.1 431"), "{}", &resp[..resp.len().min(300)]);
    let v = body_of(&resp);
    assert_eq!(v["error"]["code"], "request_header_fields_too_large", "{v}");
    assert!(closed, "the connection must be closed after a 431");
    // Too many header fields, each small.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{many}\r\n", keys[0]);
    let (resp, _) = raw(&gw, req.as_bytes(), Duration::from_secs(5));
    assert!(resp.starts_with("HTTP/1.1 431"), "{}", &resp[..resp.len().min(300)]);
    // An Anthropic client gets its own shape.
    let req = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: {}\r\nX-Big: {big}\r\nContent-Length: 2\r\n\r\n{{}}",
        keys[0]
    );
    let (resp, _) = raw(&gw, req.as_bytes(), Duration::from_secs(5));
    assert_eq!(body_of(&resp)["type"], "error", "{resp}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_deeply_nested_body_is_refused_and_costs_the_channel_nothing() {
    let fake = fake();
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["e@x.io"]);
    let deep = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":{}1{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    for _ in 0..10 {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&keys[0])
            .header("content-type", "application/json")
            .body(deep.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v = json(&r.text().await.unwrap());
        assert_eq!(v["error"]["code"], "invalid_json");
        assert!(v["error"]["message"].as_str().unwrap().contains("nested deeper than 128"), "{v}");
    }
    assert!(fake.requests().is_empty(), "nothing was forwarded");
    // Ten refusals, past the channel's failure threshold of five, and it is
    // as healthy as before: the next request goes through.
    assert_eq!(say_hi(&gw, &keys[0]).await, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let fake = fake();
    let yaml = conf(&fake).replace("  grace_period: 5s", "  grace_period: 5s\n  keepalive_timeout: 1s");
    let (gw, keys) = Gateway::start_with_keys(&yaml, &["e@x.io"]);
    let req = format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", keys[0]);
    let started = Instant::now();
    let (resp, closed) = raw(&gw, req.as_bytes(), Duration::from_secs(10));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(closed, "the server closes the idle connection");
    let idle = started.elapsed();
    assert!(idle >= Duration::from_millis(900) && idle < Duration::from_secs(5), "closed after {idle:?}");
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    let fake = fake();
    // The CLI creating the key creates the data directory, like the gateway.
    let (gw, keys) = Gateway::start_with_keys(&conf(&fake), &["p@x.io"]);
    let (data, key) = (gw.data_dir(), keys[0].clone());
    assert_eq!(say_hi(&gw, &key).await, 200);
    gw.wait_count("SELECT count(*) FROM usage", 1);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    let mut checked = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 4, "database, its WAL files and the access log at least: {checked}");
}

#[tokio::test]
async fn readyz_says_why_the_gateway_cannot_serve() {
    let fake = fake();
    let (gw, _) = Gateway::start_with_keys(&conf(&fake), &[]);
    let r = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r.text().await.unwrap())["status"], "ready");
    // No channel with a key: alive, but not ready.
    let yaml = conf(&fake)
        .replace("api_key: sk-test-openai", "api_key: \"\"")
        .replace("api_key: sk-ant-test", "api_key: \"\"");
    let (gw, _) = Gateway::start_with_keys(&yaml, &[]);
    assert_eq!(client().get(gw.url("/healthz")).send().await.unwrap().status(), 200);
    let r = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v = json(&r.text().await.unwrap());
    assert_eq!(v["status"], "not_ready");
    assert_eq!(v["reasons"], json!(["no channel is available"]));
}

/// Checks the Prometheus text format line by line and returns the samples.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(rest.starts_with("HELP ") || rest.starts_with("TYPE "), "bad comment: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(series[..name_end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name: {line}");
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels: {line}");
        }
        samples.push((series.to_string(), value));
    }
    samples
}

#[tokio::test]
async fn metrics_count_what_was_sent() {
    let fake = fake();
    let yaml = billing_conf(&fake, "  default_concurrency: 4", "  - {id: pro, daily_quota: 50, duration_days: 30}");
    let gw = Gateway::start(&yaml);
    let key = gw.create_key("m@x.io");
    gw.admin("POST", "/admin/users/m@x.io/credits", Some(json!({"amount": "5", "reason": "test"}))).await;
    for _ in 0..5 {
        assert_eq!(say_hi(&gw, &key).await, 200);
    }
    assert_eq!(post(&gw, "/v1/chat/completions", &key, &json!({"model": "nope", "messages": []})).await.0, 404);
    let admin = gw.admin.expect("admin listener");
    let text = client().get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    let samples = parse_prometheus(&text);
    let get = |series: &str| samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v);
    assert_eq!(
        get(r#"codex_proxy_requests_total{channel="oa",endpoint="chat",model="gpt-4o-mini",status_class="2xx"}"#),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        get(r#"codex_proxy_requests_total{channel="none",endpoint="chat",model="other",status_class="4xx"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(get(r#"codex_proxy_request_duration_seconds_count{endpoint="chat"}"#), Some(6.0));
    assert!(get(r#"codex_proxy_tokens_total{class="output"}"#).unwrap() > 0.0);
    assert!(get("codex_proxy_credits_charged_micro_total").unwrap() > 0.0);
    assert_eq!(get(r#"codex_proxy_channel_up{channel="oa",state="up"}"#), Some(1.0));
    assert_eq!(get("codex_proxy_requests_in_flight"), Some(0.0));
    assert!(get("codex_proxy_db_commits_total").unwrap() >= 1.0, "{text}");
    assert!(get("codex_proxy_db_commit_seconds_total").unwrap() > 0.0, "{text}");
    assert!(!text.contains("m@x.io"), "no user in a label");

    // The shipped alert rules and dashboard only use series the gateway exports.
    let exported: std::collections::HashSet<&str> =
        samples.iter().map(|(s, _)| s.split('{').next().unwrap_or(s.as_str())).collect();
    for file in ["conf/prometheus/alerts.yml", "conf/grafana/codex-proxy-dashboard.json"] {
        let text = std::fs::read_to_string(file).unwrap();
        let used = metric_names(&text);
        assert!(used.len() >= 5, "{file}: {used:?}");
        for name in used {
            assert!(exported.contains(name.as_str()), "{file} uses {name}, which /metrics does not export");
        }
    }
}

/// Every `codex_proxy_…` identifier in a text.
fn metric_names(text: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("codex_proxy_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(probe) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        println!("systemd-analyze is not installed: skipped");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    // The unit names the installed binary; point it at the one just built.
    let unit = std::fs::read_to_string("conf/systemd/codex-proxy.service")
        .unwrap()
        .replace("/usr/local/bin/codex-proxy", env!("CARGO_BIN_EXE_codex-proxy"));
    let path = dir.path().join("codex-proxy.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Without a running systemd (a container) verify still parses the unit:
    // only complaints about this file count.
    let about_unit: Vec<&str> = err.lines().filter(|l| l.contains("codex-proxy.service")).collect();
    assert!(about_unit.is_empty(), "{err}");
}

#[test]
fn usage_retention_is_validated_and_db_vacuum_turns_on_incremental_vacuum() {
    let fake = fake();
    let dir = tempfile::tempdir().unwrap();
    let bad = write_conf(
        dir.path(),
        &conf(&fake).replace("  flush_interval: 20ms", "  flush_interval: 20ms\n  usage_retention: 2h"),
    );
    let out = cli(&bad, &["check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage.usage_retention: must be at least 1d"), "{err}");

    let good = write_conf(
        dir.path(),
        &conf(&fake).replace("  flush_interval: 20ms", "  flush_interval: 20ms\n  usage_retention: 90d"),
    );
    assert!(cli(&good, &["check"]).status.success());
    create_key(&good, "v@x.io");
    let out = cli(&good, &["db", "vacuum"]);
    if on_postgres() {
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("PostgreSQL's autovacuum"));
        return;
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("auto_vacuum is incremental"));
    let db = rusqlite::Connection::open(dir.path().join("data/codex-proxy.db")).unwrap();
    let mode: i64 = db.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, 2, "incremental");
}

/// Reads from `s` until the server closes it; `None` when it stays open past `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(started.elapsed()),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_and_a_client_address_holds_few_connections() {
    let fake = fake();
    let yaml = conf(&fake).replace(
        "  grace_period: 5s",
        "  grace_period: 5s\n  header_timeout: 1s\n  max_connections_per_ip: 3\n  keepalive_timeout: 30s",
    );
    let (gw, keys) = Gateway::start_with_keys(&yaml, &["s@x.io"]);

    // Slowloris: a byte every 300 ms never completes the head in time.
    let mut slow = TcpStream::connect(gw.addr).unwrap();
    let trickle = std::thread::spawn({
        let mut s = slow.try_clone().unwrap();
        move || {
            for b in b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: 1234567890".iter().take(20) {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    });
    let cut = closed_within(&mut slow, Duration::from_secs(5)).expect("the server closes a slow head");
    assert!(cut < Duration::from_secs(3), "closed after {cut:?}");
    trickle.join().unwrap();

    // A client that sends its head in time is served, and may then keep
    // its connection idle past the head deadline (keepalive_timeout rules).
    let ok = format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", keys[0]);
    let mut kept = TcpStream::connect(gw.addr).unwrap();
    kept.write_all(ok.as_bytes()).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let answer = |s: &mut TcpStream| {
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(answer(&mut kept).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(1500));
    kept.write_all(ok.as_bytes()).unwrap();
    assert!(answer(&mut kept).starts_with("HTTP/1.1 200"));

    // Three connections from 127.0.0.1 are open (with `kept`); a fourth is
    // closed at once, and a slot frees when one closes.
    let _two = TcpStream::connect(gw.addr).unwrap();
    let _three = TcpStream::connect(gw.addr).unwrap();
    // Accepted and counted by now; still well inside their 1 s head deadline.
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = TcpStream::connect(gw.addr).unwrap();
    assert!(closed_within(&mut fourth, Duration::from_secs(2)).is_some(), "over the limit");
    drop(kept);
    std::thread::sleep(Duration::from_millis(200));
    let (resp, _) =
        raw(&gw, ok.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n").as_bytes(), Duration::from_secs(5));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    let log = gw.stderr_text();
    assert!(log.contains("holds server.max_connections_per_ip already"), "{log}");
}
