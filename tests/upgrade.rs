//! Zero-downtime upgrade: a new process started with `serve --upgrade` takes
//! the listening socket over from the running one (SIGQUIT), while a load
//! loop and a long stream run. No request fails, the stream completes, every
//! answered request has its usage record, and the new process's balance
//! equals the ledger, charges made by the old one while it drained included.

mod common;

use codex_proxy::fake_upstream::Behavior;
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_under_load_loses_and_double_counts_nothing() {
    let fake = fake();
    let old_dir = tempfile::tempdir().unwrap();
    let new_dir = tempfile::tempdir().unwrap();
    // Shared by both processes, and kept after the old one is gone.
    let shared = tempfile::tempdir().unwrap();
    let data = shared.path().join("data");
    // The two processes share a SQLite file here: PostgreSQL has no file to share.
    let db = || codex_proxy::storage::open(data.join("codex-proxy.db")).unwrap();
    let yaml = conf(&fake).replace("storage:\n", &format!("storage:\n  data_dir: {}\n", data.display()));
    let conf_path = write_conf(old_dir.path(), &yaml);
    let key = create_key(&conf_path, "u@x.io");
    assert!(cli(&conf_path, &["credits", "add", "u@x.io", "100"]).status.success());
    let mut old = Gateway::start_in(old_dir, &yaml, &[]);
    let addr = old.addr;

    // A stream that outlives the handover: 20 chunks, 250 ms apart.
    fake.script(Behavior { chunk_delay_ms: 250, text: Some("w ".repeat(20)), ..Default::default() });
    let stream_url = old.url("/v1/chat/completions");
    let stream_key = key.clone();
    let stream = tokio::spawn(async move {
        let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "long"}]});
        let r = client().post(stream_url).bearer_auth(stream_key).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Load: a new connection per request (a pooled idle connection to the old
    // process may be closed under it, which clients retry; this loop does not).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, key, url) = (stop.clone(), key.clone(), format!("http://{addr}/v1/chat/completions"));
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(40);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && statuses.len() < 2_000 {
                let c = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
                let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
                let status = match c.post(&url).bearer_auth(&key).json(&body).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        0
                    }
                };
                statuses.push(status);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        })
    };

    // The new process waits for the sockets; the old one sends them on SIGQUIT.
    let old_pid = old.pid() as i32;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1_500));
        unsafe {
            libc::kill(old_pid, libc::SIGQUIT);
        }
    });
    let new_yaml = yaml.replace("listen: [\"127.0.0.1:0\"]", &format!("listen: [\"{addr}\"]"));
    let new = tokio::task::spawn_blocking(move || Gateway::start_with_args(new_dir, &new_yaml, &[], &["--upgrade"]))
        .await
        .unwrap();
    assert_eq!(new.addr, addr);

    // The old process finishes the stream, flushes and exits by itself.
    let exited = tokio::task::spawn_blocking(move || {
        let st = old.wait_exit(Duration::from_secs(30));
        (st, old.stderr_text())
    });
    let (status, text) = stream.await.unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("[DONE]"), "the stream was cut: {text}");
    let (st, old_log) = exited.await.unwrap();
    assert!(st.is_some_and(|s| s.success()), "old process: {st:?}\n{old_log}");
    // The new process alone serves for a while, then the loop stops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    println!("{} requests during the upgrade, {ok} answered 200", statuses.len());
    assert!(statuses.len() >= 50, "the load loop ran: {}", statuses.len());
    assert_eq!(ok, statuses.len(), "every request succeeded: {statuses:?}");

    // One usage record per answered request, the stream's included.
    let answered = ok as i64 + 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    let count = || db().query_row("SELECT count(*) FROM usage WHERE status = 200", (), |r| r.get::<_, i64>(0)).unwrap();
    while count() < answered && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(), answered);
    // The new process's balance is the ledger's, charges the old one made
    // while it drained included, none counted twice.
    let (s, _, b) = get(&new, "/v1/account", &key).await;
    assert_eq!(s, 200);
    let ledger: i64 =
        db().query_row("SELECT SUM(amount) FROM ledger WHERE account = 'credits'", (), |r| r.get(0)).unwrap();
    let charged: i64 =
        db().query_row("SELECT SUM(cost) FROM usage WHERE billed_to = 'credits'", (), |r| r.get(0)).unwrap();
    let funded: i64 = db()
        .query_row("SELECT SUM(amount) FROM ledger WHERE account = 'credits' AND kind != 'usage'", (), |r| r.get(0))
        .unwrap();
    assert_eq!(ledger, funded - charged, "every charge in the ledger once");
    assert_eq!(json(&b)["balance"].as_str().unwrap(), codex_proxy::config::units::format_credits(ledger));
}

/// The `MAINPID=` of the next message on systemd's notify socket.
fn next_main_pid(notify: &std::os::unix::net::UnixDatagram) -> u32 {
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("a notification within the timeout");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.contains("READY=1"), "{text}");
    let pid = text.lines().find_map(|l| l.strip_prefix("MAINPID=")).expect("MAINPID");
    pid.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigusr2_upgrades_in_place_and_moves_systemds_main_pid() {
    let fake = fake();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = conf(&fake).replace("listen: [\"127.0.0.1:0\"]", &format!("listen: [\"127.0.0.1:{port}\"]"));
    let conf_path = write_conf(dir.path(), &yaml);
    let key = create_key(&conf_path, "s@x.io");
    let socket_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut old = Gateway::start_in(dir, &yaml, &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    assert_eq!(next_main_pid(&notify), old.pid(), "systemd learns the first process");

    // A stream that runs across the handover.
    fake.script(Behavior { chunk_delay_ms: 200, text: Some("w ".repeat(15)), ..Default::default() });
    let (url, k) = (old.url("/v1/chat/completions"), key.clone());
    let stream = tokio::spawn(async move {
        let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "long"}]});
        let r = client().post(url).bearer_auth(k).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    old.signal(libc::SIGUSR2);
    let new_pid = tokio::task::spawn_blocking(move || next_main_pid(&notify)).await.unwrap();
    assert_ne!(new_pid, old.pid(), "the new process announces itself as the main process");
    let (status, text) = stream.await.unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("[DONE]"), "the stream was cut: {text}");
    let st = tokio::task::spawn_blocking(move || {
        let st = old.wait_exit(Duration::from_secs(30));
        (st, old)
    })
    .await
    .unwrap();
    let (exit, old) = st;
    assert!(exit.is_some_and(|s| s.success()), "old process: {exit:?}\n{}", old.stderr_text());

    // The new process serves the same port; then it stops like any other.
    let c = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let r = c.post(old.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    unsafe {
        libc::kill(new_pid as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.stderr_text().matches("shutdown complete").count() < 2 {
        assert!(Instant::now() < deadline, "the new process did not stop:\n{}", old.stderr_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = old.stderr_text();
    assert!(log.contains("SIGUSR2: starting the new binary"), "{log}");
    assert!(log.contains("is ready for the listeners: handing them over"), "{log}");
}
