//! Black-box harness: the real `codex-proxy` binary on `127.0.0.1:0`, a temporary
//! data directory, and the in-process scriptable fake upstream.

#![allow(dead_code)]

pub mod browser;
pub mod fake_stripe;
pub mod netns;
pub mod services;

use codex_proxy::fake_upstream::{FakeOptions, FakeUpstream};
pub use codex_proxy::storage::PgTarget;
pub use codex_proxy::storage::{Connection, Database};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_codex-proxy");

/// Models and prices (credits per 1M tokens) every test config declares.
pub const MODELS: &str = r#"
models:
  - {id: gpt-4o-mini, owned_by: openai, price: {input: 0.15, cached_input: 0.075, output: 0.60}}
  - {id: gpt-4o, owned_by: openai, price: {input: 2.5, cached_input: 1.25, output: 10}}
  - {id: gpt-5.1-codex, owned_by: openai, price: {input: 1.25, cached_input: 0.125, output: 10}}
  - {id: text-embedding-3-small, owned_by: openai, price: {input: 0.02, output: 0}}
  - {id: claude-sonnet-4-6, display_name: Claude Sonnet 4.6, owned_by: anthropic, price: {input: 3, cached_input: 0.3, cache_write: 3.75, output: 15}}
  - {id: claude-haiku-4-5, display_name: Claude Haiku 4.5, owned_by: anthropic, price: {input: 1, cached_input: 0.1, cache_write: 1.25, output: 5}}
"#;

/// A gateway conf with one OpenAI channel and one Anthropic channel on `fake`.
pub fn conf(fake: &FakeUpstream) -> String {
    format!(
        r#"
server:
  listen: ["127.0.0.1:0"]
  threads: 2
  grace_period: 5s
storage:
  flush_interval: 20ms
admin:
  listen: "off"
demo_upstream: never
{MODELS}
channels:
  - name: oa
    kind: openai
    base_url: {url}/v1
    api_key: sk-test-openai
    models: [gpt-4o-mini, {{name: gpt-4o, upstream: gpt-4o-2024-08-06}}, gpt-5.1-codex, text-embedding-3-small]
    health_check: {{enabled: false}}
  - name: an
    kind: anthropic
    base_url: {url}
    api_key: sk-ant-test
    models: [claude-sonnet-4-6]
    health_check: {{enabled: false}}
"#,
        url = fake.url()
    )
}

/// The admin token test configs with an admin listener use.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// `conf()` plus plans, billing settings and an admin API on a free port.
pub fn billing_conf(fake: &FakeUpstream, billing: &str, plans: &str) -> String {
    conf(fake).replace(
        "admin:\n  listen: \"off\"",
        &format!("admin:\n  listen: 127.0.0.1:0\n  token: {ADMIN_TOKEN}\nbilling:\n{billing}\nplans:\n{plans}"),
    )
}

pub fn fake() -> FakeUpstream {
    FakeUpstream::start(FakeOptions::default()).expect("fake upstream")
}

pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub stderr: PathBuf,
}

impl Gateway {
    /// Starts the binary on `yaml` (storage.data_dir is set to a temp dir).
    pub fn start(yaml: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, yaml, &[])
    }

    /// Starts with users created (and their keys returned) before serving.
    pub fn start_with_keys(yaml: &str, emails: &[&str]) -> (Gateway, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = write_conf(dir.path(), yaml);
        let keys = emails.iter().map(|e| create_key(&conf, e)).collect();
        (Self::start_in(dir, yaml, &[]), keys)
    }

    pub fn start_in(dir: tempfile::TempDir, yaml: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_with_args(dir, yaml, env, &[])
    }

    /// `start_in` with more `serve` arguments (`--upgrade`).
    pub fn start_with_args(dir: tempfile::TempDir, yaml: &str, env: &[(&str, &str)], args: &[&str]) -> Gateway {
        Self::launch(dir, yaml, env, args, None)
    }

    /// Starts the binary inside a network namespace of its own; `addr` and
    /// `admin` are then forwarders on the test's loopback.
    pub fn start_in_netns(yaml: &str, ns: &netns::Netns) -> Gateway {
        Self::launch(tempfile::tempdir().expect("tempdir"), yaml, &[], &[], Some(ns))
    }

    fn launch(
        dir: tempfile::TempDir,
        yaml: &str,
        env: &[(&str, &str)],
        args: &[&str],
        ns: Option<&netns::Netns>,
    ) -> Gateway {
        let conf = write_conf(dir.path(), yaml);
        let stderr = dir.path().join("stderr.log");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(args)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = match ns {
            Some(ns) => ns.spawn(cmd),
            None => cmd.spawn(),
        }
        .expect("spawn codex-proxy");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["event"] == "ready" {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        let ready = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                panic!("gateway did not start:\n{}", std::fs::read_to_string(&stderr).unwrap_or_default());
            }
        };
        let addr = ready["listen"][0].as_str().expect("listen address").parse().expect("socket address");
        let admin = ready["admin"].as_str().map(|a| a.parse().expect("admin address"));
        let (addr, admin) = match ns {
            Some(ns) => (ns.forward(addr), admin.map(|a| ns.forward(a))),
            None => (addr, admin),
        };
        Gateway { child: Some(child), addr, admin, dir, conf, stderr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin token (configured, or generated into the data directory).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token")).unwrap_or_else(|_| ADMIN_TOKEN.to_string())
    }

    /// Calls the admin API with the right token; returns status and body.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let url = format!("http://{}{}", self.admin.expect("admin API enabled"), path);
        let mut rb = client().request(method.parse().unwrap(), url).bearer_auth(self.admin_token());
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("admin request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Runs a CLI subcommand against this gateway's conf.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.conf, args)
    }

    pub fn create_key(&self, email: &str) -> String {
        create_key(&self.conf, email)
    }

    /// The gateway's database, on whichever backend its conf names.
    pub fn db(&self) -> Connection {
        codex_proxy::storage::open(database_of(&self.conf)).expect("open db")
    }

    /// Waits until `sql` (a count query) returns at least `n`.
    pub fn wait_count(&self, sql: &str, n: i64) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got: i64 = self.db().query_row(sql, (), |r| r.get(0)).unwrap_or(0);
            if got >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The access log's lines, waiting until at least `n` are there.
    pub fn access_log(&self, n: usize) -> Vec<Value> {
        let path = self.data_dir().join("access.log");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<Value> = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Sends SIGTERM and waits for exit (bounded); returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.stderr_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "--- the gateway's last log lines ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(name) = std::fs::read_to_string(self.dir.path().join("pg-database")) {
            drop_pg_database(name.trim());
        }
    }
}

pub fn write_conf(dir: &Path, yaml: &str) -> PathBuf {
    let data = dir.join("data");
    let mut storage = format!("storage:\n  data_dir: {}", data.display());
    if pg_server().is_some() && !yaml.contains("backend:") && !yaml.contains("database:") {
        // A conf written again in the same directory keeps its database.
        let url = match std::fs::read_to_string(dir.join("codex-proxy.yaml")) {
            Ok(old) => old.lines().find_map(|l| l.trim().strip_prefix("url: postgres").map(|u| format!("postgres{u}"))),
            Err(_) => None,
        };
        let url = url.unwrap_or_else(|| {
            let url = fresh_pg_database();
            // The gateway that runs on it drops it when done (see `Drop`).
            std::fs::write(dir.join("pg-database"), pg_database_name(&url)).expect("write the database marker");
            url
        });
        storage.push_str(&format!("\n  backend: postgres\n  url: {url}"));
    }
    let full = if yaml.contains("data_dir:") {
        yaml.to_string()
    } else if yaml.contains("storage:") {
        yaml.replacen("storage:", &storage, 1)
    } else {
        format!("{yaml}\n{storage}\n")
    };
    let path = dir.join("codex-proxy.yaml");
    std::fs::write(&path, full).expect("write conf");
    path
}

/// The PostgreSQL server the suite runs on instead of SQLite files, when
/// `scripts/test` names one in `CODEX_PROXY_TEST_PG` (the URL of a database
/// from which the tests create their own).
pub fn pg_server() -> Option<String> {
    std::env::var("CODEX_PROXY_TEST_PG").ok().filter(|s| !s.trim().is_empty())
}

/// Whether this run stores in PostgreSQL (see [`pg_server`]).
pub fn on_postgres() -> bool {
    pg_server().is_some()
}

/// A new empty database on the test server; its URL.
pub fn fresh_pg_database() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let server = pg_server().expect("CODEX_PROXY_TEST_PG");
    let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    // Off the caller's thread: the client cannot start inside a tokio runtime.
    let create = format!("CREATE DATABASE {name} STRATEGY FILE_COPY");
    let admin_url = server.clone();
    std::thread::spawn(move || {
        let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).expect("connect to the test PostgreSQL");
        admin.batch_execute(&create).expect("create a test database");
    })
    .join()
    .expect("creating a test database");
    with_dbname(&server, &name)
}

/// Drops a database [`fresh_pg_database`] made (each holds a few MB of
/// catalogs; a run makes hundreds).
pub fn drop_pg_database(name: &str) {
    let (Some(server), false) = (pg_server(), name.is_empty()) else { return };
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let _ = std::thread::spawn(move || {
        if let Ok(mut admin) = postgres::Client::connect(&server, postgres::NoTls) {
            let _ = admin.batch_execute(&drop);
        }
    })
    .join();
}

/// The database a `postgres://…/NAME?…` URL names.
pub fn pg_database_name(url: &str) -> &str {
    url.rsplit('/').next().and_then(|t| t.split('?').next()).unwrap_or("")
}

/// `url` naming database `name` instead.
pub fn with_dbname(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let query = tail.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{authority}/{name}{query}")
}

/// A PostgreSQL database, as the tests reach it (no TLS, no password).
pub fn pg_target(url: &str) -> PgTarget {
    PgTarget { url: url.into(), password_env: "CODEX_PROXY_DB_PASSWORD".into(), data_dir: ".".into(), ca_file: None }
}

/// The database a conf written by [`write_conf`] stores in.
pub fn database_of(conf: &Path) -> Database {
    let text = std::fs::read_to_string(conf).expect("read conf");
    let value = |key: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().trim_matches('"').to_string()))
    };
    let data_dir = PathBuf::from(value("data_dir:").expect("data_dir"));
    match value("url:").filter(|u| u.starts_with("postgres")) {
        Some(url) => Database::Postgres(PgTarget { ca_file: value("ca_file:").map(PathBuf::from), ..pg_target(&url) }),
        None => {
            let file = value("database:").unwrap_or_else(|| "codex-proxy.db".into());
            Database::Sqlite(data_dir.join(file))
        }
    }
}

pub fn cli(conf: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(args).arg("-c").arg(conf).output().expect("run cli")
}

/// Creates the user if needed (with 100 credits) and a key; returns the
/// plaintext key.
pub fn create_key(conf: &Path, email: &str) -> String {
    if cli(conf, &["users", "add", email]).status.success() {
        let out = cli(conf, &["credits", "add", email, "100", "--reason", "test"]);
        assert!(out.status.success(), "credits add failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = cli(conf, &["keys", "create", email]);
    assert!(out.status.success(), "keys create failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    stdout.lines().last().expect("key line").trim().to_string()
}

/// Creates a user (optionally with credits and a plan) and a key through the
/// admin API; returns the user's id and the key.
pub async fn admin_user(gw: &Gateway, email: &str, credits: Option<&str>, plan: Option<&str>) -> (i64, String) {
    let mut body = serde_json::json!({"email": email});
    if let Some(c) = credits {
        body["credits"] = serde_json::json!(c);
    }
    let (s, b) = gw.admin("POST", "/admin/users", Some(body)).await;
    assert_eq!(s, 201, "{b}");
    let user_id = json(&b)["id"].as_i64().expect("user id");
    if let Some(p) = plan {
        let (s, b) =
            gw.admin("POST", &format!("/admin/users/{email}/plan"), Some(serde_json::json!({"plan": p}))).await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = gw.admin("POST", &format!("/admin/users/{email}/keys"), Some(serde_json::json!({"name": "t"}))).await;
    assert_eq!(s, 201, "{b}");
    (user_id, json(&b)["key"].as_str().unwrap().to_string())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client")
}

/// POSTs JSON with a bearer key; returns status, headers and body text.
pub async fn post(gw: &Gateway, path: &str, key: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client().post(gw.url(path)).bearer_auth(key).json(body).send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

/// A small chat request for gpt-4o-mini; returns its status.
pub async fn say_hi(gw: &Gateway, key: &str) -> u16 {
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    post(gw, "/v1/chat/completions", key, &body).await.0
}

pub async fn get(gw: &Gateway, path: &str, key: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client().get(gw.url(path)).bearer_auth(key).send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

pub fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Parses an SSE body into (event name, data) pairs.
pub fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = Vec::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                }
            }
            (name, data.join("\n"))
        })
        .collect()
}

/// Sends a POST over a raw TCP connection, reads at least `read_bytes` of the
/// response, then closes the socket (a client hanging up mid-response).
pub async fn post_and_hang_up(gw: &Gateway, path: &str, key: &str, body: &Value, read_bytes: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::to_vec(body).expect("json");
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        gw.addr,
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(&body).await.expect("write body");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < read_bytes {
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    String::from_utf8_lossy(&got).into_owned()
}

/// A test CA and a leaf certificate for `localhost` signed by it (PEM).
pub fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "codex-proxy test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}
