//! Several gateway nodes (separate processes) on one database and one Redis:
//! every limit holds exactly across them, a change made on one node reaches
//! the others within a second, a node killed with its requests in flight frees
//! their slots within the lease TTL, and a Redis outage follows the configured
//! policy. Requests spread round robin over the nodes, as a load balancer's.
//! Each node runs in a network namespace of its own where the machine allows
//! it, so nothing but the database and Redis connects them.

mod common;

use codex_proxy::fake_upstream::{Behavior, FakeUsage};
use common::browser::{operator_signed_in, signed_up, Browser};
use common::netns::Netns;
use common::services::{Redis, UnixLink};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BILLING: &str = "  default_concurrency: 100\n  max_reservation: 1000\n  default_max_output_tokens: 1000";
const PLANS: &str = r#"
  - {id: four, daily_quota: 100, concurrency: 4, duration_days: 30}
  - {id: rpm5, daily_quota: 100, requests_per_minute: 5, duration_days: 30}
  - {id: quota, daily_quota: 0.001, duration_days: 30}
"#;

struct Cluster {
    nodes: Vec<Gateway>,
    /// A network namespace per node, where the machine allows it.
    _namespaces: Option<Vec<Netns>>,
    /// Each node's way to Redis, which a test may cut (a partition).
    links: Vec<UnixLink>,
    redis: Redis,
    fake: codex_proxy::fake_upstream::FakeUpstream,
    db: Database,
    _shared: tempfile::TempDir,
}

/// `n` nodes on one database (a SQLite file, or PostgreSQL when the suite
/// runs on it) and one Redis, each reaching Redis through a link of its own.
/// The `meter` model costs one
/// micro-credit per output token and nothing for input, so a request with
/// `max_tokens: 1000` reserves exactly 1000.
fn cluster(n: usize, flush_interval: &str, cluster_yaml: &str) -> Cluster {
    let fake = fake();
    let redis = Redis::start();
    let shared = tempfile::tempdir().unwrap();
    let (db, storage) = if on_postgres() {
        let url = fresh_pg_database();
        (Database::Postgres(pg_target(&url)), format!("backend: postgres\n  url: {url}"))
    } else {
        let file = shared.path().join("shared.db");
        (Database::Sqlite(file.clone()), format!("database: {}", file.display()))
    };
    let yaml = billing_conf(&fake, BILLING, PLANS)
        .replace("models:\n", "models:\n  - {id: meter, owned_by: t, price: {input: 0, output: 1}}\n")
        .replace("models: [gpt-4o-mini,", "models: [meter, gpt-4o-mini,")
        .replace(
            "  flush_interval: 20ms",
            &format!("  flush_interval: {flush_interval}\n  {storage}\n  redis_url: REDIS_URL"),
        );
    let yaml = yaml.replace("  max_reservation: 1000", "  max_reservation: 1000\n  redeem_failures_per_10min: 3");
    let yaml = format!(
        "{yaml}\nconsole:\n  signup: open\n  throttle: {{sign_in_per_ip: 100, sign_in_per_account: 3, window: 1m}}\ncluster:\n  nodes: {n}\n{cluster_yaml}\n"
    );
    let links: Vec<UnixLink> = (0..n).map(|_| UnixLink::to(redis.socket())).collect();
    let node_yaml = |i: usize| yaml.replace("REDIS_URL", &links[i].url());
    // One at a time: the first creates the schema.
    let namespaces = Netns::for_nodes(n);
    let nodes: Vec<Gateway> = match &namespaces {
        Some(all) => all
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                ns.serve_upstream(&fake);
                Gateway::start_in_netns(&node_yaml(i), ns)
            })
            .collect(),
        None => (0..n).map(|i| Gateway::start(&node_yaml(i))).collect(),
    };
    if namespaces.is_some() {
        let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("a network namespace");
        let mut seen: Vec<_> = nodes.iter().map(|n| netns(&n.pid().to_string())).collect();
        seen.push(netns("self"));
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), n + 1, "each node in a network namespace of its own");
    }
    Cluster { nodes, _namespaces: namespaces, links, redis, fake, db, _shared: shared }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
        if let Database::Postgres(t) = &self.db {
            drop_pg_database(pg_database_name(&t.url));
        }
    }
}

impl Cluster {
    /// A user with a key, made through node 1's admin API, once every node
    /// knows the key.
    async fn user(&self, email: &str, credits: Option<&str>, plan: Option<&str>) -> (i64, String) {
        let (id, key) = admin_user(&self.nodes[0], email, credits, plan).await;
        for node in &self.nodes {
            wait_for(Duration::from_secs(5), || async { get(node, "/v1/account", &key).await.0 == 200 }).await;
        }
        (id, key)
    }

    /// Sends `n` requests at once, request `i` to node `i % nodes`; the
    /// statuses in order.
    async fn burst(&self, n: usize, key: &str, body: &Value) -> Vec<u16> {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (url, k, b) =
                    (self.nodes[i % self.nodes.len()].url("/v1/chat/completions"), key.to_string(), body.clone());
                tokio::spawn(async move {
                    client().post(url).bearer_auth(k).json(&b).send().await.unwrap().status().as_u16()
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    /// Waits until Redis shows nothing in flight for the user: every release
    /// (sent in the background after the answer) has arrived.
    async fn settled(&self, user_id: i64) {
        let tag = format!("codex-proxy:{{u:{user_id}}}");
        wait_for(Duration::from_secs(5), || async {
            let leases = self.redis.cli(&["ZCARD", &format!("{tag}:leases")]);
            let held = self.redis.cli(&["HMGET", &format!("{tag}:held"), "P", "C"]);
            leases == "0" && held.lines().all(|l| l.is_empty() || l == "0")
        })
        .await;
    }

    /// The shared database, read directly.
    fn db(&self) -> Connection {
        codex_proxy::storage::open(&self.db).unwrap()
    }

    fn ledger_sum(&self, user_id: i64) -> i64 {
        self.db()
            .query_row(
                "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = ?1 AND account = 'credits'",
                [user_id],
                |r| r.get(0),
            )
            .unwrap()
    }
}

async fn wait_for<F, Fut>(limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn meter(max_tokens: u32) -> Value {
    json!({"model": "meter", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]})
}

/// `n` metered requests sent to `node` without waiting for them.
fn in_background(
    node: &Gateway,
    key: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>> {
    let url = node.url("/v1/chat/completions");
    (0..n)
        .map(|_| {
            let (url, k) = (url.clone(), key.to_string());
            tokio::spawn(async move { client().post(url).bearer_auth(k).json(&meter(10)).send().await })
        })
        .collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

fn slow(fake: &codex_proxy::fake_upstream::FakeUpstream, n: usize, delay_ms: u64, output: u64) {
    for _ in 0..n {
        fake.script(Behavior {
            delay_ms,
            usage: Some(FakeUsage { input: 10, output, ..Default::default() }),
            ..Default::default()
        });
    }
}

#[tokio::test]
async fn concurrency_holds_across_three_nodes() {
    let c = cluster(3, "200ms", "");
    let (user, key) = c.user("four@x.io", None, Some("four")).await;
    slow(&c.fake, 15, 1500, 10);
    let burst = {
        let c = &c;
        let key = key.clone();
        async move { c.burst(15, &key, &meter(100)).await }
    };
    // Asked of node 3 while the admitted requests hold their slots (1.5 s),
    // once all four are admitted (under load that takes a moment).
    let account = async {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let v = json(&get(&c.nodes[2], "/v1/account", &key).await.2);
            if v["concurrency"]["in_use"] == 4 || started.elapsed() > Duration::from_millis(1200) {
                return v;
            }
        }
    };
    let (statuses, account) = tokio::join!(burst, account);
    assert_eq!(account["concurrency"], json!({"limit": 4, "in_use": 4}), "every node's requests count");
    println!("15 at once over 3 nodes, limit 4: {statuses:?}");
    assert_eq!((count(&statuses, 200), count(&statuses, 429)), (4, 11));
    assert_eq!(c.fake.state.hits(), 4, "the upstream saw exactly the admitted requests");
    // Every slot is free again, on every node.
    c.settled(user).await;
    slow(&c.fake, 4, 0, 10);
    assert_eq!(c.burst(4, &key, &meter(100)).await, vec![200; 4]);
}

#[tokio::test]
async fn requests_per_minute_and_the_daily_quota_hold_across_nodes() {
    let c = cluster(3, "200ms", "");
    let (_, key) = c.user("rpm@x.io", None, Some("rpm5")).await;
    let mut statuses = Vec::new();
    for i in 0..9 {
        let (s, h, b) = post(&c.nodes[i % 3], "/v1/chat/completions", &key, &meter(10)).await;
        if s == 429 {
            assert!(b.contains("at most 5 requests per minute"), "{b}");
            assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
        }
        statuses.push(s);
    }
    println!("9 over 3 nodes at 5 per minute: {statuses:?}");
    assert_eq!(statuses, [vec![200; 5], vec![429; 4]].concat());

    // Quota 1000 micro, each request holds 400 and costs 300: the cluster
    // admits while used + held < 1000, i.e. 3 at once (each node alone would
    // admit 3).
    let (user, key) = c.user("quota@x.io", None, Some("quota")).await;
    slow(&c.fake, 9, 1000, 300);
    let statuses = c.burst(9, &key, &meter(400)).await;
    println!("9 at once over 3 nodes on a quota for 3: {statuses:?}");
    assert_eq!((count(&statuses, 200), count(&statuses, 429)), (3, 6));
    // 900 used: one more fits (900 < 1000), then none, whichever node asks.
    c.settled(user).await;
    slow(&c.fake, 2, 0, 300);
    assert_eq!(post(&c.nodes[1], "/v1/chat/completions", &key, &meter(400)).await.0, 200);
    c.settled(user).await;
    let (s, _, b) = post(&c.nodes[2], "/v1/chat/completions", &key, &meter(400)).await;
    assert_eq!(s, 429, "{b}");
    assert!(b.contains("Daily plan quota exhausted"), "{b}");
}

#[tokio::test]
async fn credits_hold_across_nodes_before_they_see_each_others_ledger() {
    // A flush interval of 1s: the nodes load each other's charges late, so
    // only the pending charges in Redis keep them exact.
    let c = cluster(3, "1s", "");
    let (user, key) = c.user("fifty@x.io", Some("0.01"), None).await;
    slow(&c.fake, 30, 1500, 700);
    let statuses = c.burst(30, &key, &meter(1000)).await;
    println!("30 at once over 3 nodes on a balance for 10: {statuses:?}");
    assert_eq!((count(&statuses, 200), count(&statuses, 402)), (10, 20));
    // 3000 left. One request after another, each on the next node once the
    // previous one's release reached Redis (its charge is then unposted or
    // posted, and the next node's memory may not have it yet): 1000, 1000,
    // 1000 held -> 2300, 1600, 900 left; 900 held -> 200; 200 held -> -500
    // (an overdraw within that request's estimate); then 402.
    slow(&c.fake, 6, 0, 700);
    let mut statuses = Vec::new();
    for i in 0..6 {
        c.settled(user).await;
        statuses.push(post(&c.nodes[i % 3], "/v1/chat/completions", &key, &meter(1000)).await.0);
    }
    println!("then one at a time over the nodes: {statuses:?}");
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 402]);
    let expected = 10_000 - 15 * 700;
    wait_for(Duration::from_secs(5), || async { c.ledger_sum(user) == expected }).await;
    assert_eq!(c.ledger_sum(user), expected);
}

#[tokio::test]
async fn a_key_disabled_on_node_1_is_refused_on_node_3_within_a_second() {
    let c = cluster(3, "200ms", "");
    let (_, key) = c.user("k@x.io", Some("1"), None).await;
    let (s, b) = c.nodes[0].admin("GET", "/admin/users/k@x.io/keys", None).await;
    assert_eq!(s, 200, "{b}");
    let id = json(&b)["keys"][0]["id"].as_i64().unwrap();
    assert_eq!(get(&c.nodes[2], "/v1/account", &key).await.0, 200);
    let (s, b) = c.nodes[0].admin("POST", &format!("/admin/keys/{id}/disable"), None).await;
    assert_eq!(s, 200, "{b}");
    let took =
        wait_for(Duration::from_secs(1), || async { get(&c.nodes[2], "/v1/account", &key).await.0 == 401 }).await;
    println!("node 3 refused the key {took:?} after node 1 disabled it");
    // And a ban, the same way.
    let (_, key) = c.user("ban@x.io", Some("1"), None).await;
    let (s, _) = c.nodes[0].admin("POST", "/admin/users/ban@x.io/ban", None).await;
    assert_eq!(s, 200);
    let took = wait_for(Duration::from_secs(1), || async { get(&c.nodes[1], "/v1/models", &key).await.0 == 403 }).await;
    println!("node 2 refused the banned user {took:?} after node 1 banned them");
}

#[tokio::test]
async fn credits_plans_and_codes_reach_every_node_within_a_second() {
    let c = cluster(3, "200ms", "");
    let (_, key) = c.user("grants@x.io", None, None).await;
    let account = |node: usize| {
        let (gw, key) = (&c.nodes[node], key.clone());
        async move { json(&get(gw, "/v1/account", &key).await.2) }
    };
    assert_eq!(account(2).await["balance"], "0");
    // Credits added on node 1 are spendable on node 3.
    let (s, b) = c.nodes[0].admin("POST", "/admin/users/grants@x.io/credits", Some(json!({"amount": "2"}))).await;
    assert_eq!(s, 200, "{b}");
    let took = wait_for(Duration::from_secs(1), || async { account(2).await["balance"] == "2" }).await;
    println!("node 3 saw credits added on node 1 after {took:?}");
    // A plan assigned on node 1 applies on node 2.
    let (s, b) = c.nodes[0].admin("POST", "/admin/users/grants@x.io/plan", Some(json!({"plan": "four"}))).await;
    assert_eq!(s, 200, "{b}");
    let took = wait_for(Duration::from_secs(1), || async { account(1).await["plan"]["id"] == "four" }).await;
    println!("node 2 saw the plan assigned on node 1 after {took:?}");
    // A code made on node 1, redeemed on node 2: node 3 has the credits, and
    // refuses the code a second time.
    let (s, code) = c.nodes[0].admin("POST", "/admin/codes", Some(json!({"credits": "1"}))).await;
    assert_eq!(s, 200, "{code}");
    let code = json!({"code": code.trim()});
    let (s, _, b) = post(&c.nodes[1], "/v1/redeem", &key, &code).await;
    assert_eq!(s, 200, "{b}");
    let took = wait_for(Duration::from_secs(1), || async { account(2).await["balance"] == "3" }).await;
    println!("node 3 saw the code redeemed on node 2 after {took:?}");
    let (s, _, b) = post(&c.nodes[2], "/v1/redeem", &key, &code).await;
    assert_eq!(s, 409, "a used code is used on every node: {b}");
    assert!(b.contains("You have already redeemed this code"), "{b}");
}

#[tokio::test]
async fn a_killed_node_frees_its_slots_within_the_lease_ttl_and_loses_no_acknowledged_usage() {
    let mut c = cluster(3, "200ms", "  lease_ttl: 2s");
    let (user, key) = c.user("kill@x.io", None, Some("four")).await;
    // Acknowledged usage on node 2, then time for one flush.
    for _ in 0..20 {
        assert_eq!(post(&c.nodes[1], "/v1/chat/completions", &key, &meter(10)).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Four requests in flight on node 2 fill the user's slots.
    slow(&c.fake, 4, 30_000, 10);
    let _hanging = in_background(&c.nodes[1], &key, 4);
    wait_for(Duration::from_secs(5), || async { c.fake.state.hits() >= 24 }).await;
    assert_eq!(post(&c.nodes[0], "/v1/chat/completions", &key, &meter(10)).await.0, 429);
    // Past one lease TTL the live node still holds them: it renews.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(post(&c.nodes[2], "/v1/chat/completions", &key, &meter(10)).await.0, 429);
    c.nodes[1].kill9();
    let killed = Instant::now();
    wait_for(Duration::from_secs(4), || async {
        post(&c.nodes[0], "/v1/chat/completions", &key, &meter(10)).await.0 == 200
    })
    .await;
    let freed = killed.elapsed();
    println!("slots of the killed node came back after {freed:?} (lease_ttl 2s)");
    assert!(freed <= Duration::from_millis(2_500), "{freed:?}");
    let rows: i64 = c
        .db()
        .query_row("SELECT count(*) FROM usage WHERE user_id = ?1 AND status = 200", [user], |r| r.get(0))
        .unwrap();
    assert!(rows >= 20, "the killed node lost acknowledged usage: {rows} of 20 rows");
}

/// `codex_proxy_redis_down` from the node's `/metrics`.
async fn redis_down_metric(gw: &Gateway) -> u8 {
    let (s, text) = gw.admin("GET", "/metrics", None).await;
    assert_eq!(s, 200);
    let line = text.lines().find(|l| l.starts_with("codex_proxy_redis_down ")).expect("the metric");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn ready(gw: &Gateway) -> (u16, Value) {
    let r = client().get(gw.url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn redis_down_with_local_limits_each_node_enforces_its_share() {
    let mut c = cluster(3, "200ms", "  on_redis_down: local_limits\n  redis_timeout: 100ms");
    let (_, key) = c.user("local@x.io", None, Some("four")).await;
    assert_eq!(ready(&c.nodes[0]).await.1["cluster"]["redis"], "up");
    c.redis.stop();
    // The first request finds Redis gone and is served under the policy.
    slow(&c.fake, 1, 0, 10);
    assert_eq!(post(&c.nodes[0], "/v1/chat/completions", &key, &meter(10)).await.0, 200);
    let (s, v) = ready(&c.nodes[0]).await;
    assert_eq!((s, &v["cluster"]["redis"], &v["cluster"]["limits"]), (200, &json!("down"), &json!("local share")));
    // A limit of 4 on 3 nodes: 2 at a time on this node.
    slow(&c.fake, 3, 1000, 10);
    let (url, k) = (c.nodes[0].url("/v1/chat/completions"), key.clone());
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (url, k) = (url.clone(), k.clone());
            tokio::spawn(async move {
                client().post(url).bearer_auth(k).json(&meter(10)).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 429]);
    assert!(c.nodes[0].stderr_text().contains("redis is unreachable"));
    assert_eq!(redis_down_metric(&c.nodes[0]).await, 1);
    c.redis.restart();
    wait_for(Duration::from_secs(3), || async { ready(&c.nodes[0]).await.1["cluster"]["redis"] == "up" }).await;
    assert!(c.nodes[0].stderr_text().contains("redis is reachable again"));
    assert_eq!(redis_down_metric(&c.nodes[0]).await, 0);
    slow(&c.fake, 1, 0, 10);
    assert_eq!(post(&c.nodes[2], "/v1/chat/completions", &key, &meter(10)).await.0, 200);
}

/// Redis restarted empty under load: the requests already running are
/// unknown to it, so until they end the cluster may admit that many more;
/// their ends must not free anyone else's slot; new requests are exact again
/// at once.
#[tokio::test]
async fn after_redis_restarts_empty_new_requests_are_exact_and_old_releases_free_nothing() {
    let mut c = cluster(3, "200ms", "  redis_timeout: 500ms");
    let (user, key) = c.user("empty@x.io", None, Some("four")).await;
    slow(&c.fake, 2, 3_000, 10);
    let old = in_background(&c.nodes[0], &key, 2);
    wait_for(Duration::from_secs(5), || async { c.fake.state.hits() >= 2 }).await;
    c.redis.stop();
    c.redis.restart();
    // Every node back on Redis (its heartbeat written again, and not down
    // for it): a node that met the restart meanwhile would admit its local
    // share instead, which the Redis-down tests cover.
    wait_for(Duration::from_secs(10), || async {
        let (_, b) = c.nodes[0].admin("GET", "/admin/config", None).await;
        let mut up = json(&b)["cluster"]["nodes"].as_array().map_or(0, Vec::len) == 3;
        for node in &c.nodes {
            up &= ready(node).await.1["cluster"]["redis"] == "up";
        }
        up
    })
    .await;
    assert!(old.iter().all(|t| !t.is_finished()), "the two old requests still run");
    // Redis knows nothing of the two running: four more are admitted.
    slow(&c.fake, 4, 5_000, 10);
    // Once the two old requests have ended, their releases freed nothing:
    // the four new ones still fill the limit.
    let after_old = async {
        for t in old {
            assert_eq!(t.await.unwrap().unwrap().status(), 200);
        }
        post(&c.nodes[1], "/v1/chat/completions", &key, &meter(10)).await.0
    };
    let body = meter(10);
    let (statuses, late) = tokio::join!(c.burst(8, &key, &body), after_old);
    println!("8 at once after Redis restarted empty, 2 still running: {statuses:?}");
    assert_eq!((count(&statuses, 200), count(&statuses, 429)), (4, 4));
    assert_eq!(late, 429, "an old request's release freed a new request's slot");
    c.settled(user).await;
    slow(&c.fake, 15, 1_000, 10);
    let statuses = c.burst(15, &key, &meter(10)).await;
    assert_eq!((count(&statuses, 200), count(&statuses, 429)), (4, 11), "exact again");
}

/// A partition that cuts one node off from Redis but not from its clients:
/// that node follows its policy (local_limits: its share, from memory)
/// while the others stay exact through Redis. A limit of 4 on 3 nodes then
/// admits 4 through Redis plus 2 on the cut node: N × ⌈limit / N⌉ = 6, the
/// bound docs/scaling-out.md gives. Healed, all three count through Redis.
#[tokio::test]
async fn a_node_cut_off_from_redis_follows_its_policy_and_the_others_stay_exact() {
    let c = cluster(3, "200ms", "  on_redis_down: local_limits\n  redis_timeout: 100ms");
    let (user, key) = c.user("cut@x.io", None, Some("four")).await;
    c.links[2].cut();
    slow(&c.fake, 1, 0, 10);
    assert_eq!(post(&c.nodes[2], "/v1/chat/completions", &key, &meter(10)).await.0, 200, "served under its policy");
    let (s, v) = ready(&c.nodes[2]).await;
    assert_eq!((s, &v["cluster"]["redis"], &v["cluster"]["limits"]), (200, &json!("down"), &json!("local share")));
    assert_eq!(ready(&c.nodes[0]).await.1["cluster"]["redis"], "up", "the other nodes still reach Redis");

    // 15 at once, round robin: 5 on each node.
    slow(&c.fake, 15, 1500, 10);
    let statuses = c.burst(15, &key, &meter(100)).await;
    let admitted_on = |node: usize| (node..15).step_by(3).filter(|&i| statuses[i] == 200).count();
    println!("15 at once over 3 nodes, node 3 cut off from Redis, limit 4: {statuses:?}");
    assert_eq!(admitted_on(0) + admitted_on(1), 4, "through Redis: exactly the limit");
    assert_eq!(admitted_on(2), 2, "the cut node alone: its share, 4 / 3 rounded up");
    assert_eq!(c.fake.state.hits(), 1 + 6, "the upstream saw exactly the admitted requests");

    c.links[2].heal();
    wait_for(Duration::from_secs(3), || async { ready(&c.nodes[2]).await.1["cluster"]["redis"] == "up" }).await;
    c.settled(user).await;
    slow(&c.fake, 15, 1500, 10);
    let statuses = c.burst(15, &key, &meter(100)).await;
    assert_eq!((count(&statuses, 200), count(&statuses, 429)), (4, 11), "healed: exact across all three");
}

#[tokio::test]
async fn redis_down_with_fail_closed_refuses_and_fails_readiness() {
    let mut c = cluster(2, "200ms", "  on_redis_down: fail_closed\n  redis_timeout: 100ms");
    let (_, key) = c.user("closed@x.io", Some("1"), None).await;
    c.redis.stop();
    let (s, h, b) = post(&c.nodes[1], "/v1/chat/completions", &key, &meter(10)).await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(h["retry-after"], "1");
    let v = json(&b);
    assert_eq!(v["error"]["code"], Value::Null);
    assert!(v["error"]["message"].as_str().unwrap().contains("cannot reach the cluster's Redis"), "{b}");
    let (s, v) = ready(&c.nodes[1]).await;
    assert_eq!(s, 503);
    assert!(v["reasons"][0].as_str().unwrap().contains("fail_closed"), "{v}");
    assert_eq!(v["cluster"]["limits"], "refusing");
    c.redis.restart();
    wait_for(Duration::from_secs(3), || async { ready(&c.nodes[1]).await.0 == 200 }).await;
    assert_eq!(post(&c.nodes[1], "/v1/chat/completions", &key, &meter(10)).await.0, 200);
}

#[tokio::test]
async fn a_console_form_from_one_node_is_accepted_by_another() {
    let c = cluster(2, "200ms", "");
    // Signed up on node 1; the session lives in the shared database.
    let b = signed_up(&c.nodes[0], "web@x.io").await;
    let page = Browser::new(&c.nodes[1]);
    let dash = b.send(b.http.get(page.base.clone() + "/console/dashboard")).await;
    assert_eq!(dash.status, 200, "node 2 knows node 1's session");
    // A form rendered by node 1 and posted to node 2 (a load balancer may do
    // that): its CSRF token checks, because the nodes share the key.
    let form = b.get("/console/keys").await;
    let csrf = form.field("csrf");
    let once = form.field("once");
    let p = b
        .send(b.http.post(page.base.clone() + "/console/keys").form(&[
            ("csrf", csrf.as_str()),
            ("once", once.as_str()),
            ("name", "k"),
        ]))
        .await;
    assert_eq!(p.status, 201, "node 2 refused node 1's form");
    let key = p.text_of("new-key-value");
    assert!(key.starts_with("codex_"), "the new key is shown once: {key}");
    // And it works on node 1 at once (well, within the change poll).
    wait_for(Duration::from_secs(1), || async { get(&c.nodes[0], "/v1/account", &key).await.0 == 200 }).await;
}

#[tokio::test]
async fn sign_in_and_redemption_throttles_count_on_every_node() {
    let c = cluster(3, "200ms", "");
    let b = signed_up(&c.nodes[0], "t@x.io").await;
    drop(b);
    // Three wrong passwords, one per node: the account is locked on all of
    // them (each node alone has seen one).
    for node in &c.nodes {
        assert_eq!(Browser::new(node).sign_in("t@x.io", "wrong horse!").await.status, 401);
    }
    for node in &c.nodes {
        let p = Browser::new(node).sign_in("t@x.io", "correct horse").await;
        assert_eq!(p.status, 429, "a node let a locked account try again");
    }
    // Redemption: three bad codes over the nodes, then every node refuses.
    let (_, key) = c.user("r@x.io", Some("1"), None).await;
    let code = json!({"code": "CPX-00000-00000-00000-00000"});
    for node in &c.nodes {
        assert_eq!(post(node, "/v1/redeem", &key, &code).await.0, 400);
    }
    for node in &c.nodes {
        let (s, _, b) = post(node, "/v1/redeem", &key, &code).await;
        assert_eq!(s, 429, "{b}");
        assert!(b.contains("Too many failed redemption attempts"), "{b}");
    }
}

#[tokio::test]
async fn operators_see_the_cluster_and_its_live_nodes() {
    let mut c = cluster(3, "200ms", "  redis_timeout: 100ms\n  lease_ttl: 2s");
    let (s, b) = c.nodes[0].admin("GET", "/admin/config", None).await;
    assert_eq!(s, 200);
    let v = json(&b);
    assert_eq!(v["cluster"]["redis"], "up");
    let nodes = v["cluster"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{v}");
    assert_eq!(nodes[0], v["cluster"]["this_node"], "this node comes first");
    let settings = v["summary"]["sections"][0]["settings"].to_string();
    assert!(settings.contains("3 nodes, on_redis_down local_limits, lease_ttl 2s"), "{settings}");
    let op = operator_signed_in(&c.nodes[1]).await;
    let page = op.get("/settings").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("every limit is counted across the nodes"), "{}", page.body);
    assert_eq!(page.body.matches("this node").count(), 1);
    // A node that stops is gone from the list once its heartbeat expires.
    c.nodes[2].kill9();
    wait_for(Duration::from_secs(4), || async {
        let (_, b) = c.nodes[0].admin("GET", "/admin/config", None).await;
        json(&b)["cluster"]["nodes"].as_array().map_or(0, Vec::len) == 2
    })
    .await;
    c.redis.stop();
    let page = op.get("/settings").await;
    assert!(page.body.contains("Redis is unreachable"), "the page asks Redis, and says when it cannot");
    assert!(page.body.contains("<code>local_limits</code>"));
}

#[tokio::test]
async fn a_reload_on_one_node_reloads_every_node_within_a_second() {
    let c = cluster(3, "200ms", "");
    // The operator changed the file on every machine (here: a new plan)...
    for node in &c.nodes {
        let text = std::fs::read_to_string(&node.conf).unwrap();
        let text = text.replacen("plans:\n", "plans:\n  - {id: added, daily_quota: 1, duration_days: 7}\n", 1);
        std::fs::write(&node.conf, text).unwrap();
    }
    // ...and reloads one node.
    let (s, b) = c.nodes[0].admin("POST", "/admin/config/reload", None).await;
    assert_eq!(s, 200, "{b}");
    let version = |b: &str| json(b)["version"].as_i64().unwrap();
    assert_eq!(version(&b), 2);
    for node in &c.nodes[1..] {
        let took = wait_for(Duration::from_secs(1), || async {
            let (_, b) = node.admin("GET", "/admin/config", None).await;
            version(&b) == 2
        })
        .await;
        println!("a peer reloaded {took:?} after node 1");
        let (_, b) = node.admin("GET", "/admin/plans", None).await;
        assert!(b.contains("\"added\""), "{b}");
    }
}

/// Redis over TLS (`rediss://`): a node that trusts the server's CA
/// (`storage.ca_file`) counts through it; one that trusts only the system's
/// roots never talks to it unverified: Redis is down to it, and its log says
/// why.
#[tokio::test]
async fn redis_over_tls_is_verified_against_the_ca_file() {
    let fake = fake();
    let (ca, cert, key) = test_pki();
    let mut redis = Redis::start();
    let url = redis.serve_tls(&cert, &key);
    let ca_file = redis.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let node = |ca: Option<&std::path::Path>| {
        let storage = match ca {
            Some(ca) => format!("  flush_interval: 20ms\n  redis_url: {url}\n  ca_file: {}", ca.display()),
            None => format!("  flush_interval: 20ms\n  redis_url: {url}"),
        };
        let yaml = billing_conf(&fake, BILLING, PLANS).replace("  flush_interval: 20ms", &storage);
        Gateway::start(&format!("{yaml}\ncluster:\n  nodes: 2\n  redis_timeout: 500ms\n"))
    };

    let trusting = node(Some(&ca_file));
    let (_, key) = admin_user(&trusting, "tls@x.io", None, Some("four")).await;
    assert_eq!(say_hi(&trusting, &key).await, 200);
    wait_for(Duration::from_secs(5), || async { ready(&trusting).await.1["cluster"]["redis"] == "up" }).await;
    let (s, b) = trusting.admin("GET", "/admin/config", None).await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["cluster"]["nodes"].as_array().map(Vec::len), Some(1), "its heartbeat went over TLS: {b}");
    assert_ne!(redis.cli(&["DBSIZE"]), "0", "the node's counts are in Redis");

    let untrusting = node(None);
    let (_, key) = admin_user(&untrusting, "system-roots@x.io", None, Some("four")).await;
    assert_eq!(say_hi(&untrusting, &key).await, 200, "served under its policy, local_limits");
    wait_for(Duration::from_secs(5), || async { ready(&untrusting).await.1["cluster"]["redis"] == "down" }).await;
    let log = untrusting.stderr_text();
    assert!(log.contains("redis is unreachable") && log.contains("certificate"), "{log}");
}
