//! Live reload: SIGHUP and `codex-proxy reload` re-read the YAML file while
//! traffic runs. No request fails; new requests see the new prices and
//! channels; every usage record carries the price in force when its request
//! started; a file that fails validation changes nothing; a channel that
//! stays keeps its health and cool-down.

mod common;

use codex_proxy::fake_upstream::{Behavior, FakeUpstream};
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "the same words every time"}]})
}

/// One OpenAI channel per `(name, fake)`, plus the Anthropic channel `an`.
fn yaml(fakes: &[(&str, &FakeUpstream)], mini_price: &str) -> String {
    let mut channels = String::new();
    for (name, f) in fakes {
        channels.push_str(&format!(
            "  - {{name: {name}, kind: openai, base_url: \"{}/v1\", api_key: sk-{name}, models: [gpt-4o-mini], health_check: {{enabled: false}}}}\n",
            f.url()
        ));
    }
    // The shared test conf with an admin API and room for the load loop,
    // its channels replaced.
    let base = billing_conf(fakes[0].1, "  default_concurrency: 16", "  []");
    let head = &base[..base.find("\nchannels:").expect("a channels section")];
    let an = format!(
        "  - {{name: an, kind: anthropic, base_url: \"{}\", api_key: sk-ant, models: [claude-sonnet-4-6], health_check: {{enabled: false}}}}\n",
        fakes[0].1.url()
    );
    format!("{}\nchannels:\n{channels}{an}", head.replace(OLD_PRICE, mini_price))
}

const OLD_PRICE: &str = "price: {input: 0.15, cached_input: 0.075, output: 0.60}";
const NEW_PRICE: &str = "price: {input: 0.30, cached_input: 0.15, output: 1.20}";

async fn config_version(gw: &Gateway) -> Value {
    let (status, body) = gw.admin("GET", "/admin/config", None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits (bounded) until the running configuration has `version`.
async fn wait_version(gw: &Gateway, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while config_version(gw).await["version"] != version {
        assert!(Instant::now() < deadline, "version {version} never came:\n{}", gw.stderr_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one chat; returns its request id after checking it succeeded.
async fn one_chat(gw: &Gateway, key: &str) -> String {
    let r = client().post(gw.url("/v1/chat/completions")).bearer_auth(key).json(&chat()).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    r.headers()["x-request-id"].to_str().unwrap().to_string()
}

fn cost_of(gw: &Gateway, request_id: &str) -> i64 {
    gw.wait_count(&format!("SELECT count(*) FROM usage WHERE request_id = '{request_id}'"), 1);
    gw.db().query_row("SELECT cost FROM usage WHERE request_id = ?1", [request_id], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_change_prices_and_channels_without_a_failed_request() {
    let (a, b) = (fake(), fake());
    let (gw, keys) = Gateway::start_with_keys(&yaml(&[("oa", &a)], OLD_PRICE), &["r@x.io"]);
    let key = keys[0].clone();
    let old_cost = cost_of(&gw, &one_chat(&gw, &key).await);
    assert!(old_cost > 0);

    // A bounded load loop: 4 workers, at most 1,500 requests or 30 s.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, key, url) = (stop.clone(), key.clone(), gw.url("/v1/chat/completions"));
            tokio::spawn(async move {
                let c = client();
                let (mut ok, mut failed) = (0u32, Vec::new());
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && ok < 375 {
                    match c.post(&url).bearer_auth(&key).json(&chat()).send().await {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => failed.push(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Reload 1 (SIGHUP): a new price, a new channel `ob`.
    std::fs::write(&gw.conf, with_data_dir(&gw, &yaml(&[("oa", &a), ("ob", &b)], NEW_PRICE))).unwrap();
    gw.signal(libc::SIGHUP);
    wait_version(&gw, 2).await;
    let new_cost = cost_of(&gw, &one_chat(&gw, &key).await);
    // Twice the price (each token class is rounded on its own).
    assert!(
        (new_cost - 2 * old_cost).abs() <= 1,
        "a request after the reload pays the new price: {old_cost} then {new_cost}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.state.hits() > 0, "the added channel takes traffic");

    // Reload 2 (the CLI): `oa` is removed.
    let out = gw.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("reloaded: configuration version 3"));
    std::fs::write(&gw.conf, with_data_dir(&gw, &yaml(&[("ob", &b)], NEW_PRICE))).unwrap();
    let out = gw.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_version(&gw, 4).await;
    // Requests that started before may still finish on `oa`; new ones never go there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a_before = a.state.hits();
    for _ in 0..10 {
        one_chat(&gw, &key).await;
    }
    assert_eq!(a.state.hits(), a_before, "the removed channel takes no new request");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut answered = 12u32;
    for w in workers {
        let (ok, failed) = w.await.unwrap();
        assert!(failed.is_empty(), "failed requests during reloads: {failed:?}");
        answered += ok;
    }
    // Every answered request has its usage record, at the price of its start.
    let n = gw.wait_count("SELECT count(*) FROM usage WHERE endpoint = 'chat'", answered as i64);
    assert_eq!(n, answered as i64);
    let priced: Vec<(i64, i64)> = {
        let db = gw.db();
        let mut st = db.prepare("SELECT cost, count(*) FROM usage WHERE endpoint = 'chat' GROUP BY cost").unwrap();
        st.query_map((), |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    let costs: Vec<i64> = priced.iter().map(|(c, _)| *c).collect();
    assert_eq!(costs, vec![old_cost, new_cost], "only the two prices in force: {priced:?}");
    assert!(gw.stderr_text().contains("configuration reloaded"));
}

async fn metrics(gw: &Gateway) -> String {
    let url = format!("http://{}/metrics", gw.admin.expect("an admin listener"));
    client().get(url).send().await.unwrap().text().await.unwrap()
}

/// `yaml` on the running gateway's storage (its data directory, and its
/// PostgreSQL database when the suite runs on one).
fn with_data_dir(gw: &Gateway, yaml: &str) -> String {
    let mut storage = format!("storage:\n  data_dir: {}", gw.data_dir().display());
    if let Database::Postgres(t) = database_of(&gw.conf) {
        storage.push_str(&format!("\n  backend: postgres\n  url: {}", t.url));
    }
    yaml.replacen("storage:", &storage, 1)
}

#[tokio::test]
async fn an_invalid_file_keeps_the_running_configuration_and_names_every_error() {
    let a = fake();
    let (gw, keys) = Gateway::start_with_keys(&yaml(&[("oa", &a)], OLD_PRICE), &["i@x.io"]);
    let bad = with_data_dir(&gw, &yaml(&[("oa", &a)], OLD_PRICE)).replace("threads: 2", "threads: 2\n  colour: blue");
    std::fs::write(&gw.conf, &bad).unwrap();

    // The CLI checks the file first and names the field.
    let out = gw.cli(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server") && err.contains("colour"), "{err}");
    assert_eq!(config_version(&gw).await["version"], 1);

    // SIGHUP goes to the gateway itself: it refuses, logs, and keeps going.
    gw.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while config_version(&gw).await["last_reload"].is_null() {
        assert!(Instant::now() < deadline, "no reload attempt recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v = config_version(&gw).await;
    assert_eq!(v["version"], 1);
    assert_eq!(v["last_reload"]["ok"], false);
    let errors = v["last_reload"]["errors"].to_string();
    assert!(errors.contains("colour"), "{errors}");
    assert!(gw.stderr_text().contains("reload refused, the running configuration stays"));
    assert!(metrics(&gw).await.contains("codex_proxy_config_reload_failed 1"));
    one_chat(&gw, &keys[0]).await;

    // A setting only a new process can apply keeps its running value, and
    // is named; the rest of the file applies.
    let moved = with_data_dir(&gw, &yaml(&[("oa", &a)], NEW_PRICE)).replace("threads: 2", "threads: 3");
    std::fs::write(&gw.conf, moved).unwrap();
    let (status, body) = gw.admin("POST", "/admin/config/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["needs_upgrade"], json!(["server.threads"]));
    assert!(gw.stderr_text().contains("server.threads changed in the file: it needs an upgrade"));
    let text = metrics(&gw).await;
    assert!(
        text.contains("codex_proxy_config_reload_failed 0") && text.contains("codex_proxy_config_version 2"),
        "{text}"
    );
}

#[tokio::test]
async fn a_channel_that_stays_keeps_its_cool_down_and_a_new_one_starts_fresh() {
    let (a, b) = (fake(), fake());
    let (gw, keys) = Gateway::start_with_keys(&yaml(&[("oa", &a), ("ob", &b)], OLD_PRICE), &["c@x.io"]);
    // `oa` answers 429 for a minute; the request fails over to `ob`.
    a.script(Behavior { status: Some(429), headers: vec![("retry-after".into(), "60".into())], ..Default::default() });
    b.script(Behavior { status: Some(429), headers: vec![("retry-after".into(), "60".into())], ..Default::default() });
    let r = client().post(gw.url("/v1/chat/completions")).bearer_auth(&keys[0]).json(&chat()).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let status = |v: &Value, name: &str| {
        v["channels"].as_array().unwrap().iter().find(|c| c["name"] == name).map(|c| c["status"].clone())
    };
    let (_, body) = gw.admin("GET", "/admin/channels", None).await;
    let before: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status(&before, "oa"), Some(json!("cooling_down")));
    assert_eq!(status(&before, "ob"), Some(json!("cooling_down")));

    // `oa` stays as it was; `ob` gets a new key (another account: fresh
    // state); the price changes.
    let next = with_data_dir(&gw, &yaml(&[("oa", &a), ("ob", &b)], NEW_PRICE)).replace("sk-ob", "sk-ob-rotated");
    std::fs::write(&gw.conf, next).unwrap();
    let (code, body) = gw.admin("POST", "/admin/config/reload", None).await;
    assert_eq!(code, 200, "{body}");
    let (_, body) = gw.admin("GET", "/admin/channels", None).await;
    let after: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status(&after, "oa"), Some(json!("cooling_down")), "{after}");
    assert_eq!(status(&after, "ob"), Some(json!("available")), "{after}");
    one_chat(&gw, &keys[0]).await;
    let last = b.requests().last().cloned().unwrap();
    assert_eq!(last.header("authorization"), Some("Bearer sk-ob-rotated"));
}

#[tokio::test]
async fn conversations_stay_on_their_channel_across_a_reload() {
    let (a, b) = (fake(), fake());
    let (gw, keys) = Gateway::start_with_keys(&yaml(&[("oa", &a), ("ob", &b)], OLD_PRICE), &["p@x.io"]);
    // Which upstream served one turn of conversation `i`.
    let turn = |i: usize| {
        let (gw, key, a) = (&gw, &keys[0], &a);
        async move {
            let before = a.state.hits();
            let body = json!({"model": "gpt-4o-mini", "prompt_cache_key": format!("conversation-{i}"),
                "messages": [{"role": "user", "content": "hi"}]});
            let r = client().post(gw.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            if a.state.hits() > before {
                "oa"
            } else {
                "ob"
            }
        }
    };
    let mut first = Vec::new();
    for i in 0..6 {
        first.push(turn(i).await);
    }
    // The channels swap places in the file and the price changes.
    let next = with_data_dir(&gw, &yaml(&[("ob", &b), ("oa", &a)], NEW_PRICE));
    std::fs::write(&gw.conf, next).unwrap();
    let (code, body) = gw.admin("POST", "/admin/config/reload", None).await;
    assert_eq!(code, 200, "{body}");
    // In reverse order: a fresh round robin would not match by chance.
    for (i, channel) in first.iter().enumerate().rev() {
        assert_eq!(turn(i).await, *channel, "conversation {i} moved: {first:?}");
    }
}

#[tokio::test]
async fn without_an_admin_listener_the_cli_reloads_by_signal() {
    let a = fake();
    let mut gw = Gateway::start(&conf(&a));
    let pid_file = gw.data_dir().join("codex-proxy.pid");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), gw.pid().to_string(), "the pid file names the server");
    let out = gw.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains(&format!("sent SIGHUP to {}", gw.pid())), "{said}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.stderr_text().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "no reload:\n{}", gw.stderr_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gw.stop().unwrap().success());
    assert!(!pid_file.exists(), "the pid file goes with the process");
}
