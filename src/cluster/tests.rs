//! The scripts against a real Redis (Debian's redis-server, which
//! `scripts/test` installs), with two nodes in one process told apart by
//! their instance names, so each step of a charge's life can be held still.

use super::*;
use crate::config::Secret;
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    sock: std::path::PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(sock: &std::path::Path) -> Child {
    let _ = std::fs::remove_file(sock);
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no"])
        .arg("--unixsocket")
        .arg(sock)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is not installed: scripts/test installs Debian's redis-server package");
    for _ in 0..500 {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn redis() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("r.sock");
    let child = spawn(&sock);
    Server { child, url: format!("unix://{}", sock.display()), sock, _dir: dir }
}

impl Server {
    /// Kills Redis, runs `during`, and starts an empty one on the same socket.
    async fn outage(&mut self, during: impl std::future::Future<Output = ()>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        during.await;
        self.child = spawn(&self.sock);
    }
}

fn node(server: &Server, instance: &str, lease_ttl: Duration) -> Arc<Cluster> {
    let cfg = ClusterConfig {
        redis_url: Secret::new(server.url.clone()),
        nodes: 2,
        on_redis_down: RedisDown::FailClosed,
        lease_ttl,
        redis_timeout: Duration::from_secs(2),
        ca_file: None,
    };
    let c = Cluster::named(&cfg, instance).unwrap();
    c.start().unwrap();
    c
}

/// A credits-only request of user 7: `balance` and `position` as the
/// asking node's memory has them, holding at most 1000.
fn credits(id: &str, balance: i64, position: i64, concurrency: u32) -> AdmitRequest<'_> {
    AdmitRequest {
        user_id: 7,
        request_id: id,
        concurrency,
        rpm: None,
        quota: None,
        plan_used: 0,
        day_start_ms: 0,
        balance,
        estimate: 1000,
        position,
        reset_secs: 1,
    }
}

async fn held(c: &Cluster, req: AdmitRequest<'_>) -> Result<i64, GatewayError> {
    c.admit(&req).await.expect("redis answers").map(|a| a.held)
}

/// Waits until field `field` of user 7's hash `key` is `micro` (0 when
/// absent): the ordered ops sent in the background have reached Redis.
async fn field_is(server: &Server, key: fn(&keys::User) -> &String, field: &str, micro: i64) {
    let mut conn = redis::Client::open(server.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let k = keys::User::new(7);
    for _ in 0..200 {
        let v: Option<i64> = redis::cmd("HGET").arg(key(&k)).arg(field).query_async(&mut conn).await.unwrap();
        if v.unwrap_or(0) == micro {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{field} never became {micro}");
}

async fn unposted_is(server: &Server, c: &Cluster, micro: i64) {
    field_is(server, |k| &k.unposted, &format!("{}|C", c.instance), micro).await;
}

/// Ends request `id` of `c` at no cost, once Redis has it ended.
async fn end(server: &Server, c: &Cluster, id: &str) {
    c.release(7, id.into(), Source::Credits, 0);
    field_is(server, |k| &k.held, "C", 0).await;
}

#[tokio::test]
async fn another_node_s_charge_counts_until_its_ledger_row_is_loaded() {
    let server = redis();
    let (a, b) = (node(&server, "A", Duration::from_secs(10)), node(&server, "B", Duration::from_secs(10)));
    // A holds everything: B gets 402 (held), not a second hold of the same credits.
    assert_eq!(held(&a, credits("r1", 1000, 0, 10)).await, Ok(1000));
    assert_eq!(held(&b, credits("r2", 1000, 0, 10)).await, Err(GatewayError::CreditsHeld));
    // A's request cost 700. B's memory still says 1000: the unposted charge
    // makes up the difference.
    a.release(7, "r1".into(), Source::Credits, 700);
    unposted_is(&server, &a, 700).await;
    assert_eq!(held(&b, credits("r3", 1000, 0, 10)).await, Ok(300));
    end(&server, &b, "r3").await;
    // A committed it as ledger row 5: B counts the row until its position
    // reaches 5, when its memory has the charge itself.
    let charged_at = crate::clock::now_ms();
    a.posted(vec![Posted {
        user_id: 7,
        request_id: "r1".into(),
        ledger_id: 5,
        account: "credits",
        cost: 700,
        charged_at,
    }]);
    unposted_is(&server, &a, 0).await;
    assert_eq!(held(&b, credits("r4", 1000, 4, 10)).await, Ok(300));
    end(&server, &b, "r4").await;
    assert_eq!(held(&b, credits("r5", 300, 5, 10)).await, Ok(300));
    end(&server, &b, "r5").await;
    // A never counts its own charge twice: its memory has it already.
    assert_eq!(held(&a, credits("r6", 300, 0, 10)).await, Ok(300));
}

#[tokio::test]
async fn a_lease_lives_while_renewed_and_expires_when_its_node_is_gone() {
    let server = redis();
    let ttl = Duration::from_secs(1);
    let (a, b) = (node(&server, "A", ttl), node(&server, "B", ttl));
    assert!(held(&a, credits("r1", 10_000, 0, 1)).await.is_ok());
    // Renewed every ttl/3: still held well past one TTL.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(held(&b, credits("r2", 10_000, 0, 1)).await, Err(GatewayError::ConcurrencyLimit { limit: 1 }));
    // A stops renewing (as a dead node would): the slot frees within the TTL.
    a.leases.lock().clear();
    let started = std::time::Instant::now();
    while held(&b, credits("r3", 10_000, 0, 1)).await.is_err() {
        assert!(started.elapsed() < Duration::from_millis(1_500), "the lease outlived its TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dead_node_s_unposted_charges_stop_counting_after_its_heartbeat() {
    let server = redis();
    let ttl = Duration::from_secs(1);
    let (a, b) = (node(&server, "A", ttl), node(&server, "B", ttl));
    assert_eq!(held(&a, credits("r1", 1000, 0, 10)).await, Ok(1000));
    a.release(7, "r1".into(), Source::Credits, 700);
    unposted_is(&server, &a, 700).await;
    assert_eq!(held(&b, credits("r2", 1000, 0, 10)).await, Ok(300));
    end(&server, &b, "r2").await;
    // A dies before committing: the charge is lost with it, and once its
    // heartbeat has expired B no longer holds it against the balance.
    drop(a);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(held(&b, credits("r3", 1000, 0, 10)).await, Ok(1000));
}

#[tokio::test]
async fn a_row_only_takes_over_charges_the_node_released_through_redis() {
    let server = redis();
    let a = node(&server, "A", Duration::from_secs(10));
    assert!(held(&a, credits("r1", 1000, 0, 10)).await.is_ok());
    a.release(7, "r1".into(), Source::Credits, 700);
    unposted_is(&server, &a, 700).await;
    // A row that also charges a request admitted from memory (Redis was
    // down): only r1's 700 leaves the counter, not the other's 500.
    let posted = |id: &str, cost| Posted {
        user_id: 7,
        request_id: id.into(),
        ledger_id: 9,
        account: "credits",
        cost,
        charged_at: crate::clock::now_ms(),
    };
    a.posted(vec![posted("local", 500)]);
    assert!(held(&a, credits("r2", 1000, 0, 10)).await.is_ok());
    a.release(7, "r2".into(), Source::Credits, 100);
    unposted_is(&server, &a, 800).await;
    a.posted(vec![posted("r1", 700), posted("r2", 100)]);
    unposted_is(&server, &a, 0).await;
}

#[tokio::test]
async fn releases_wait_for_redis_and_go_out_in_order() {
    let mut server = redis();
    let a = node(&server, "A", Duration::from_secs(10));
    assert!(held(&a, credits("r1", 1000, 0, 10)).await.is_ok());
    // Redis goes away while r1 ends: its release waits and is sent once an
    // (empty) Redis is back, before the post that follows it.
    server
        .outage(async {
            a.release(7, "r1".into(), Source::Credits, 700);
            tokio::time::sleep(Duration::from_millis(500)).await;
        })
        .await;
    unposted_is(&server, &a, 700).await;
    let posted = Posted {
        user_id: 7,
        request_id: "r1".into(),
        ledger_id: 3,
        account: "credits",
        cost: 700,
        charged_at: crate::clock::now_ms(),
    };
    a.posted(vec![posted]);
    unposted_is(&server, &a, 0).await;
}
