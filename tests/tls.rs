//! TLS termination and HTTP/2, with certificates made here: HTTPS over
//! HTTP/1.1 and h2 (ALPN), SSE streams over h2, several streams on one h2
//! connection with one cancelled, and cleartext h2 (prior knowledge).

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A self-signed certificate for localhost, written as PEM into `dir`;
/// returns the YAML listener and the certificate for the client to trust.
fn tls_listener(dir: &Path) -> (String, reqwest::Certificate) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let listener = format!(
        "listen:\n    - {{address: \"127.0.0.1:0\", tls: {{cert: \"{}\", key: \"{}\"}}}}",
        cert.display(),
        key.display()
    );
    (listener, reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
}

fn https_gateway(fake: &codex_proxy::fake_upstream::FakeUpstream) -> (Gateway, String, reqwest::Certificate) {
    let dir = tempfile::tempdir().unwrap();
    let (listener, ca) = tls_listener(dir.path());
    let yaml = conf(fake).replace("listen: [\"127.0.0.1:0\"]", &listener);
    let conf_path = write_conf(dir.path(), &yaml);
    let key = create_key(&conf_path, "t@x.io");
    (Gateway::start_in(dir, &yaml, &[]), key, ca)
}

fn client_for(addr: SocketAddr, ca: &reqwest::Certificate) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(30))
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn https_serves_http1_and_negotiates_h2() {
    let fake = fake();
    let (gw, key, ca) = https_gateway(&fake);
    let url = format!("https://localhost:{}/v1/chat/completions", gw.addr.port());

    let h1 = client_for(gw.addr, &ca).http1_only().build().unwrap();
    let r = h1.post(&url).bearer_auth(&key).json(&chat(false)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, http::Version::HTTP_11));
    assert_eq!(json(&r.text().await.unwrap())["object"], "chat.completion");

    let h2 = client_for(gw.addr, &ca).build().unwrap();
    let r = h2.post(&url).bearer_auth(&key).json(&chat(false)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, http::Version::HTTP_2));
    // A stream over h2 is the same event stream as over HTTP/1.1.
    let r = h2.post(&url).bearer_auth(&key).json(&chat(true)).send().await.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    let body = r.text().await.unwrap();
    let events = sse_events(&body);
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"), "{body}");
    assert!(events.iter().any(|e| e.1.contains("chat.completion.chunk")));
    // Errors keep their shape and status.
    let r = h2.post(&url).bearer_auth("codex_nope").json(&chat(false)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    gw.wait_count("SELECT count(*) FROM usage", 3);
}

#[tokio::test]
async fn one_cancelled_stream_leaves_the_others_on_its_h2_connection_alone() {
    let fake = fake();
    let (gw, key, ca) = https_gateway(&fake);
    for _ in 0..3 {
        fake.script(codex_proxy::fake_upstream::Behavior {
            chunk_delay_ms: 100,
            text: Some("one two three four five six seven eight".into()),
            ..Default::default()
        });
    }
    let url = format!("https://localhost:{}/v1/chat/completions", gw.addr.port());
    // One client: its h2 connection carries all three streams.
    let h2 = client_for(gw.addr, &ca).build().unwrap();
    let send = || h2.post(&url).bearer_auth(&key).json(&chat(true)).send();
    let (a, b, c) = tokio::join!(send(), send(), send());
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert!([&a, &b, &c].iter().all(|r| r.version() == http::Version::HTTP_2));
    // Cancel the first after its first chunk: an RST_STREAM, not a closed connection.
    let mut first = a.bytes_stream();
    assert!(first.next().await.unwrap().is_ok());
    drop(first);
    let (b, c) = tokio::join!(b.text(), c.text());
    for body in [b.unwrap(), c.unwrap()] {
        assert_eq!(sse_events(&body).last().map(|e| e.1.clone()), Some("[DONE]".to_string()), "{body}");
    }
    gw.wait_count("SELECT count(*) FROM usage", 3);
    let lines = gw.access_log(3);
    let gone: Vec<&Value> = lines.iter().filter(|l| l["error"] == "client_disconnected").collect();
    assert_eq!(gone.len(), 1, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l["status"] == 200 && l["error"].is_null()).count(), 2, "{lines:?}");
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_keepalive_timeout() {
    let fake = fake();
    let yaml = conf(&fake).replace("  grace_period: 5s", "  grace_period: 5s\n  h2c: true\n  keepalive_timeout: 1s");
    let (gw, keys) = Gateway::start_with_keys(&yaml, &["i@x.io"]);
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    let closed = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let _ = connection.await;
        started.elapsed()
    });
    let req = http::Request::get(format!("http://{}/v1/models", gw.addr))
        .header("authorization", format!("Bearer {}", keys[0]))
        .body(())
        .unwrap();
    let (resp, _) = h2.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    let idle = tokio::time::timeout(Duration::from_secs(10), closed).await.expect("the server closes it").unwrap();
    assert!(idle < Duration::from_secs(5), "closed after {idle:?}");
}

#[tokio::test]
async fn cleartext_h2_with_prior_knowledge_when_enabled() {
    let fake = fake();
    let yaml = conf(&fake).replace("  grace_period: 5s", "  grace_period: 5s\n  h2c: true");
    let (gw, keys) = Gateway::start_with_keys(&yaml, &["c@x.io"]);
    let h2c = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let r = h2c.post(gw.url("/v1/chat/completions")).bearer_auth(&keys[0]).json(&chat(true)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, http::Version::HTTP_2));
    assert!(r.text().await.unwrap().contains("[DONE]"));
    // HTTP/1.1 clients are still served on the same listener.
    assert_eq!(say_hi(&gw, &keys[0]).await, 200);
}

/// Waits (bounded) until the gateway's log holds `needle` `n` times.
fn wait_log(gw: &Gateway, needle: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.stderr_text().matches(needle).count() < n {
        assert!(std::time::Instant::now() < deadline, "no {needle:?} in the log:\n{}", gw.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_new_certificates_without_dropping_open_connections() {
    let fake = fake();
    let (gw, key, old_ca) = https_gateway(&fake);
    let url = format!("https://localhost:{}/v1/chat/completions", gw.addr.port());
    let open = client_for(gw.addr, &old_ca).build().unwrap();
    let r = open.post(&url).bearer_auth(&key).json(&chat(false)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, http::Version::HTTP_2));
    // A stream runs across the reload on the open connection.
    fake.script(codex_proxy::fake_upstream::Behavior {
        chunk_delay_ms: 100,
        text: Some("w ".repeat(10)),
        ..Default::default()
    });
    let stream = open.post(&url).bearer_auth(&key).json(&chat(true)).send().await.unwrap();

    // New files in place, then SIGHUP.
    let dir = gw.dir.path().join("renewed");
    std::fs::create_dir_all(&dir).unwrap();
    let (_, new_ca) = tls_listener(&dir);
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(dir.join(f), gw.dir.path().join(f)).unwrap();
    }
    gw.signal(libc::SIGHUP);
    wait_log(&gw, "configuration reloaded", 1);

    // The open connection carries on: the stream ends, another request goes.
    let body = stream.text().await.unwrap();
    assert_eq!(sse_events(&body).last().map(|e| e.1.as_str()), Some("[DONE]"), "{body}");
    let r = open.post(&url).bearer_auth(&key).json(&chat(false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A new connection gets the new certificate: the old CA no longer
    // verifies it, the new one does.
    let stale = client_for(gw.addr, &old_ca).build().unwrap();
    assert!(stale.post(&url).bearer_auth(&key).json(&chat(false)).send().await.is_err());
    let fresh = client_for(gw.addr, &new_ca).build().unwrap();
    assert_eq!(fresh.post(&url).bearer_auth(&key).json(&chat(false)).send().await.unwrap().status(), 200);

    // A broken key file is refused; the certificate in use stays.
    std::fs::write(gw.dir.path().join("key.pem"), "not a key").unwrap();
    gw.signal(libc::SIGHUP);
    wait_log(&gw, "reload refused", 1);
    let again = client_for(gw.addr, &new_ca).build().unwrap();
    assert_eq!(again.post(&url).bearer_auth(&key).json(&chat(false)).send().await.unwrap().status(), 200);
}
