//! The PostgreSQL backend where it differs from SQLite: moving a single
//! node's file into PostgreSQL, and riding out PostgreSQL going away under
//! load. Each test runs its own server (see `services::Postgres`); the rest
//! of the suite runs on PostgreSQL in `scripts/test`'s second pass.

mod common;

use common::services::Postgres;
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const BILLING: &str = "  default_concurrency: 100\n  max_reservation: 1000\n  default_max_output_tokens: 1000";
const PLANS: &str = "  - {id: pro, daily_quota: 100, duration_days: 30}\n";

/// `yaml` storing in `storage` (lines under `storage:`), whatever backend
/// the suite runs on.
fn on(yaml: &str, storage: &str) -> String {
    yaml.replace("  flush_interval: 20ms", &format!("  flush_interval: 20ms\n{storage}"))
}

fn table_counts(db: &Connection) -> HashMap<String, i64> {
    ["users", "api_keys", "usage", "ledger", "subscriptions", "redemption_codes", "usage_rollup", "admin_audit"]
        .iter()
        .map(|t| (t.to_string(), db.query_row(&format!("SELECT COUNT(*) FROM {t}"), (), |r| r.get(0)).unwrap()))
        .collect()
}

fn balances(db: &Connection) -> HashMap<i64, i64> {
    let mut stmt =
        db.prepare("SELECT user_id, SUM(amount) FROM ledger WHERE account = 'credits' GROUP BY user_id").unwrap();
    stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

async fn balance(gw: &Gateway, key: &str) -> Value {
    let (s, _, b) = get(gw, "/v1/account", key).await;
    assert_eq!(s, 200, "{b}");
    json(&b)["balance"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_moves_to_postgres_with_every_balance_equal() {
    let fake = fake();
    let pg = Postgres::start();
    let url = pg.database("codex");

    // A single node on its SQLite file, with traffic, a plan and a code.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data/codex-proxy.db");
    let yaml = on(&billing_conf(&fake, BILLING, PLANS), &format!("  database: {}", file.display()));
    let mut gw = Gateway::start_in(dir, &yaml, &[]);
    let (_, a) = admin_user(&gw, "a@x.io", Some("10"), None).await;
    let (_, b) = admin_user(&gw, "b@x.io", Some("2.5"), Some("pro")).await;
    for key in [&a, &a, &b] {
        assert_eq!(say_hi(&gw, key).await, 200);
    }
    let (s, body) = gw.admin("POST", "/admin/codes", Some(json!({"credits": "1", "count": 2}))).await;
    assert_eq!((s, body.lines().count()), (200, 2), "{body}");
    let (before_a, before_b) = (balance(&gw, &a).await, balance(&gw, &b).await);
    gw.stop();
    let sqlite = codex_proxy::storage::open(&file).unwrap();
    let (counts, sums) = (table_counts(&sqlite), balances(&sqlite));
    assert_eq!(counts["usage"], 3);

    let out = gw.cli(&["migrate", "--from", &format!("sqlite://{}", file.display()), "--to", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("balances equal on both sides: 2 users"), "{stdout}");

    let moved = codex_proxy::storage::open(Database::Postgres(pg_target(&url))).unwrap();
    assert_eq!(table_counts(&moved), counts);
    assert_eq!(balances(&moved), sums);

    // A node on PostgreSQL takes over: same balances, and new rows follow
    // the copied ids.
    let yaml = on(&billing_conf(&fake, BILLING, PLANS), &format!("  backend: postgres\n  url: {url}"));
    let node = Gateway::start(&yaml);
    assert_eq!((balance(&node, &a).await, balance(&node, &b).await), (before_a, before_b));
    assert_eq!(say_hi(&node, &a).await, 200);
    let (id, _) = admin_user(&node, "c@x.io", Some("1"), None).await;
    assert_eq!(id, 3);
    node.wait_count("SELECT COUNT(*) FROM usage", 4);

    // Copying again would mix two deployments: refused.
    let again = gw.cli(&["migrate", "--from", &format!("sqlite://{}", file.display()), "--to", &url]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds data"));
}

/// PostgreSQL goes away for a few seconds while requests keep coming: every
/// request is served from memory, `/readyz` stays up (the outage is inside
/// the grace), and once PostgreSQL is back every record is there exactly
/// once and the ledger charged exactly what the usage rows cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_under_load_loses_and_double_counts_nothing() {
    let fake = fake();
    let mut pg = Postgres::start();
    let url = pg.database("codex");
    let yaml = on(&billing_conf(&fake, BILLING, PLANS), &format!("  backend: postgres\n  url: {url}"));
    let gw = Gateway::start(&yaml);
    let (user, key) = admin_user(&gw, "load@x.io", Some("100"), None).await;

    let (mut ok, mut sent) = (0, 0);
    let started = Instant::now();
    let mut stopped_at = None;
    let mut ready_while_down = Vec::new();
    // Bounded: 120 requests or 20 s, whichever comes first.
    while sent < 120 && started.elapsed() < Duration::from_secs(20) {
        if sent == 30 {
            pg.stop();
            stopped_at = Some(Instant::now());
        }
        if sent == 90 {
            pg.restart();
        }
        if stopped_at.is_some() && sent < 90 && sent % 20 == 0 {
            ready_while_down.push(client().get(gw.url("/readyz")).send().await.unwrap().status().as_u16());
        }
        sent += 1;
        if say_hi(&gw, &key).await == 200 {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let down_for = stopped_at.unwrap().elapsed();
    assert_eq!((sent, ok), (120, 120), "every request is served while PostgreSQL is away");
    assert!(ready_while_down.iter().all(|s| *s == 200), "{ready_while_down:?}");
    assert!(down_for > Duration::from_secs(1));

    // Everything lands once PostgreSQL is back.
    assert_eq!(gw.wait_count("SELECT COUNT(*) FROM usage WHERE status = 200", 120), 120);
    let db = gw.db();
    let (rows, distinct): (i64, i64) = db
        .query_row("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage", (), |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((rows, distinct), (120, 120));
    let cost: i64 = db.query_row("SELECT SUM(cost) FROM usage WHERE user_id = ?1", [user], |r| r.get(0)).unwrap();
    let charged: i64 = db
        .query_row("SELECT -SUM(amount) FROM ledger WHERE user_id = ?1 AND kind = 'usage'", [user], |r| r.get(0))
        .unwrap();
    assert!(cost > 0);
    assert_eq!(charged, cost, "the ledger charged exactly what the usage rows cost");
    assert!(gw.stderr_text().contains("kept for retry"), "the outage was noticed and ridden out");
    let r = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Ledger ids grow in commit order, which a node's reading of other nodes'
/// entries relies on (it reads past the last id it saw). PostgreSQL's
/// sequences alone do not promise that: a transaction holding id N may
/// commit after one holding N + 1. The ledger's trigger takes the id under a
/// lock held to the commit, so a second writer waits for the first.
#[test]
fn ledger_ids_are_taken_in_commit_order() {
    let pg = Postgres::start();
    let db = Database::Postgres(pg_target(&pg.database("codex")));
    let a = codex_proxy::storage::open(&db).unwrap();
    a.execute("INSERT INTO users(email, created_at) VALUES ('l@x.io', 0)", ()).unwrap();
    let insert = "INSERT INTO ledger(user_id, amount, kind, origin, created_at) VALUES (1, 1, 'grant', 'test', 0)";

    let tx = a.unchecked_transaction().unwrap();
    let first = tx.insert(insert, ()).unwrap();
    let (db2, started) = (db.clone(), Instant::now());
    let second = std::thread::spawn(move || {
        let b = codex_proxy::storage::open(&db2).unwrap();
        let id = b.insert(insert, ()).unwrap();
        (id, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!second.is_finished(), "a second ledger writer waits for the first to commit");
    tx.commit().unwrap();
    let (second, waited) = second.join().unwrap();
    assert!(second > first, "ids follow commit order: {first} then {second}");
    assert!(waited >= Duration::from_millis(300));
}

/// Past `storage.write_failure_grace`, a node whose writes keep failing says
/// so on `/readyz` (a load balancer then drains it), and is ready again once
/// PostgreSQL is back and the waiting record is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_once_writes_have_failed_past_the_grace() {
    let fake = fake();
    let mut pg = Postgres::start();
    let url = pg.database("codex");
    let storage = format!("  backend: postgres\n  url: {url}\n  write_failure_grace: 1s");
    let gw = Gateway::start(&on(&billing_conf(&fake, BILLING, PLANS), &storage));
    let (_, key) = admin_user(&gw, "r@x.io", Some("10"), None).await;
    let readyz = || async {
        let r = client().get(gw.url("/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    // Ready until the first second of failing writes is over; then not.
    let until = |want: u16| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = readyz().await;
            if status == want || Instant::now() > deadline {
                return (status, body, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    pg.stop();
    let stopped = Instant::now();
    assert_eq!(say_hi(&gw, &key).await, 200, "served from memory");
    assert_eq!(readyz().await.0, 200, "inside the grace");
    let (status, body, at) = until(503).await;
    assert_eq!(status, 503, "{body}");
    assert!(at - stopped >= Duration::from_secs(1), "not before the grace is over");
    let reasons = json(&body)["reasons"].to_string();
    // The chat's usage record and its key's last use wait in the batch.
    assert!(
        reasons.contains("database writes have been failing") && reasons.contains("(2 records waiting)"),
        "{reasons}"
    );

    pg.restart();
    let (status, body, _) = until(200).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.wait_count("SELECT COUNT(*) FROM usage", 1), 1);
}

/// PostgreSQL over TCP with TLS. A node that trusts the server's CA
/// (`storage.ca_file`) runs with every one of its connections encrypted; a
/// node that trusts only the system's roots refuses to start, and says what
/// to set, rather than connect unverified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_is_verified_against_the_ca_file() {
    let fake = fake();
    let (ca, cert, key) = test_pki();
    let mut pg = Postgres::start();
    pg.serve_tls(&cert, &key);
    pg.database("codex");
    let url = format!("{}?sslmode=require", pg.tcp_url("codex"));
    let yaml = on(&billing_conf(&fake, BILLING, PLANS), &format!("  backend: postgres\n  url: {url}"));

    let untrusting = tempfile::tempdir().unwrap();
    let conf = write_conf(untrusting.path(), &yaml);
    let mut serve = std::process::Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while serve.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "a node that cannot verify PostgreSQL's certificate kept running");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = String::from_utf8_lossy(&serve.wait_with_output().unwrap().stderr).into_owned();
    assert!(err.contains("certificate") && err.contains("storage.ca_file"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let gw = Gateway::start_in(
        dir,
        &yaml.replace("?sslmode=require", &format!("?sslmode=require\n  ca_file: {}", ca_file.display())),
        &[],
    );
    let (_, key) = admin_user(&gw, "tls@x.io", Some("10"), None).await;
    assert_eq!(say_hi(&gw, &key).await, 200);
    assert_eq!(gw.wait_count("SELECT COUNT(*) FROM usage", 1), 1);
    // Asked through the socket, which is not the node's: its connections
    // are the TCP ones.
    let db = codex_proxy::storage::open(Database::Postgres(pg_target(&pg.url("codex")))).unwrap();
    let (encrypted, all): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.client_addr IS NOT NULL AND a.application_name LIKE 'codex-proxy%'",
            (),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    println!("{encrypted} of the node's {all} connections to PostgreSQL are TLS");
    assert!(all >= 2, "the writer and the change listener at least: {all}");
    assert_eq!(encrypted, all);

    // `migrate --ca-file` trusts the same way.
    pg.database("moved");
    let single = tempfile::tempdir().unwrap();
    let file = single.path().join("codex-proxy.db");
    drop(codex_proxy::storage::open(&file).unwrap());
    let (from, to) = (format!("sqlite://{}", file.display()), format!("{}?sslmode=require", pg.tcp_url("moved")));
    let migrate = |more: &[&str]| {
        std::process::Command::new(BIN).args(["migrate", "--from", &from, "--to", &to]).args(more).output().unwrap()
    };
    let refused = migrate(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("certificate"));
    let moved = migrate(&["--ca-file", ca_file.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&moved.stdout);
    assert!(moved.status.success(), "{out}{}", String::from_utf8_lossy(&moved.stderr));
    assert!(out.contains("balances equal on both sides: 0 users"), "{out}");
}
