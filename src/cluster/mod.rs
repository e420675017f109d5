//! Exact limits across several gateway nodes, kept in Redis.
//!
//! Every node still decides from its memory what it alone knows (the key, the
//! user, the plan, the balance it loaded from the shared ledger). What the
//! nodes share lives in Redis, per user, and one Lua script
//! (`admit.lua`) reads and changes it atomically at admission:
//!
//! - **Concurrency**: a lease per request in flight, with an expiry its node
//!   renews every `lease_ttl / 3`. The script counts live leases, so a user
//!   with a limit of 4 never has a 5th; the leases of a node that died expire
//!   and free their slots within `lease_ttl`.
//! - **Requests per minute**: the admission times of the last minute.
//! - **Plan quota and credits**: each lease holds its reservation (plan or
//!   credits) as a single node does. A settled charge counts as *unposted* on
//!   its node until the node commits it, then as a *posted* ledger row until
//!   the other nodes load that row (their ledger position says when). A node
//!   adds what the others settled and it has not loaded yet to what its
//!   memory shows, so the cluster admits what one node with every request
//!   would.
//!
//! When Redis cannot be reached, `cluster.on_redis_down` decides: refuse
//! (`fail_closed`) or let each node enforce its share of each limit from
//! memory (`local_limits`). The state is logged on each change and shown by
//! `/readyz`. See `docs/scaling-out.md` for the invariants and their tests.

mod keys;
mod peers;
mod sender;
mod upkeep;

pub use peers::OnPeerReload;

use crate::billing::Source;
use crate::config::{ClusterConfig, RedisDown};
use crate::error::GatewayError;
use crate::store::writer::Posted;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A script that starts with `now.lua` (Redis's clock in ms as `now`).
macro_rules! timed_lua {
    ($file:literal) => {
        concat!(include_str!("now.lua"), include_str!($file))
    };
}
pub(crate) use timed_lua;

static ADMIT: once_cell::sync::Lazy<redis::Script> =
    once_cell::sync::Lazy::new(|| redis::Script::new(timed_lua!("admit.lua")));
static WINDOW: once_cell::sync::Lazy<redis::Script> =
    once_cell::sync::Lazy::new(|| redis::Script::new(timed_lua!("window.lua")));
/// Live leases: expiry past Redis's clock.
static IN_FLIGHT: once_cell::sync::Lazy<redis::Script> = once_cell::sync::Lazy::new(|| {
    redis::Script::new(concat!(include_str!("now.lua"), "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')"))
});
/// Sent with EVAL in the renewal pipeline (few calls, one per user).
const RENEW: &str = timed_lua!("renew.lua");

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid storage.redis_url: {0}")]
    Url(String),
    #[error("cannot start the cluster runtime: {0}")]
    Runtime(std::io::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the cluster link is not started yet")]
    NotStarted,
    #[error("redis is down; not asked")]
    Down,
    #[error("redis answered {0:?}, which this version does not understand")]
    Reply(Vec<i64>),
}

/// One admission, as the node's memory sees the user.
#[derive(Debug, Clone)]
pub struct AdmitRequest<'a> {
    pub user_id: i64,
    pub request_id: &'a str,
    pub concurrency: u32,
    pub rpm: Option<u32>,
    /// The plan's daily quota (micro-credits), when the user has a plan.
    pub quota: Option<i64>,
    pub plan_used: i64,
    pub day_start_ms: i64,
    pub balance: i64,
    pub estimate: i64,
    pub position: i64,
    /// Seconds until the plan day resets (the 429's `retry-after`).
    pub reset_secs: u64,
}

/// The cluster's admission: what pays and how much is held, with the
/// cluster-wide figures for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub source: Source,
    pub held: i64,
    pub plan_used: i64,
    pub balance: i64,
}

/// What `Cluster::window` does to a shared window of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowOp {
    Check,
    Hit,
    Reset,
}

/// Whether Redis answers, and since when it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down { since_ms: i64 },
}

pub struct Cluster {
    cfg: ClusterConfig,
    /// This process among the nodes (`store::instance`): it names the
    /// node's charges, which it never counts twice.
    instance: String,
    client: redis::Client,
    /// Set by `start`, inside the running server.
    link: once_cell::sync::OnceCell<Link>,
    /// 0 while Redis answers; otherwise when it stopped (ms).
    down_since: AtomicI64,
    /// Requests this node admitted through Redis and still runs: request id
    /// to user, for lease renewal.
    leases: Mutex<HashMap<String, i64>>,
    /// Releases and posts, sent to Redis in the order they happen.
    ops: tokio::sync::mpsc::UnboundedSender<sender::Op>,
    ops_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<sender::Op>>>,
    on_peer_reload: once_cell::sync::OnceCell<OnPeerReload>,
}

/// The Redis client. Over `rediss://` the server's certificate must chain
/// to `storage.ca_file`, or to the system's roots without one, and name the
/// host.
fn client(cfg: &ClusterConfig) -> Result<redis::Client, ClusterError> {
    let url = cfg.redis_url.expose();
    let client = match &cfg.ca_file {
        Some(ca) => {
            let root_cert = std::fs::read(ca).map_err(|e| ClusterError::Url(format!("{}: {e}", ca.display())))?;
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) };
            redis::Client::build_with_tls(url, certs)
        }
        None => redis::Client::open(url),
    };
    client.map_err(|e| ClusterError::Url(e.to_string()))
}

/// The connection to Redis and the runtime that drives it.
struct Link {
    conn: ConnectionManager,
    runtime: tokio::runtime::Handle,
}

impl Cluster {
    /// Checks the URL; nothing connects before `start`.
    pub fn new(cfg: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        Self::named(cfg, crate::store::instance())
    }

    fn named(cfg: &ClusterConfig, instance: &str) -> Result<Arc<Cluster>, ClusterError> {
        let client = client(cfg)?;
        let (ops, ops_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new(Cluster {
            cfg: cfg.clone(),
            instance: instance.to_string(),
            client,
            link: once_cell::sync::OnceCell::new(),
            down_since: AtomicI64::new(0),
            leases: Mutex::new(HashMap::new()),
            ops,
            ops_rx: Mutex::new(Some(ops_rx)),
            on_peer_reload: once_cell::sync::OnceCell::new(),
        }))
    }

    /// Starts the connection and its upkeep on a runtime of their own (so no
    /// request runtime owns them). Call inside the running server: threads
    /// do not survive daemonisation. The connection is lazy, so a node starts
    /// (and serves under its policy) while Redis is down.
    pub fn start(self: &Arc<Self>) -> Result<(), ClusterError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("codex-proxy-cluster")
            .enable_all()
            .build()
            .map_err(ClusterError::Runtime)?;
        // It lives as long as the process: dropping a runtime inside another
        // (tests, shutdown) is not allowed.
        let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.cfg.redis_timeout))
            .set_response_timeout(Some(self.cfg.redis_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = {
            let _in = runtime.enter();
            ConnectionManager::new_lazy_with_config(self.client.clone(), config)?
        };
        if self.link.set(Link { conn, runtime: runtime.handle().clone() }).is_ok() {
            upkeep::spawn(self);
            if let Some(rx) = self.ops_rx.lock().take() {
                sender::spawn(self, rx);
            }
            peers::spawn(self);
        }
        Ok(())
    }

    fn link(&self) -> Result<&Link, ClusterError> {
        self.link.get().ok_or(ClusterError::NotStarted)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    pub fn health(&self) -> Health {
        match self.down_since.load(Ordering::Relaxed) {
            0 => Health::Up,
            since_ms => Health::Down { since_ms },
        }
    }

    /// Records the outcome of a call to Redis; logs each change of state.
    fn observe<T>(&self, r: Result<T, ClusterError>) -> Result<T, ClusterError> {
        match &r {
            Ok(_) => {
                let since = self.down_since.swap(0, Ordering::Relaxed);
                if since != 0 {
                    let secs = (crate::clock::now_ms() - since) as f64 / 1000.0;
                    log::warn!("redis is reachable again after {secs:.1}s: cluster limits are exact again");
                }
            }
            Err(e) => {
                let now = crate::clock::now_ms();
                if self.down_since.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    let policy = match self.cfg.on_redis_down {
                        RedisDown::FailClosed => "fail_closed: LLM requests get 503 until it is back",
                        RedisDown::LocalLimits => "local_limits: each node enforces its share of each limit",
                    };
                    log::error!("redis is unreachable ({e}); cluster.on_redis_down is {policy}");
                }
            }
        }
        r
    }

    /// Runs a Redis call within `redis_timeout`. It runs on the caller's
    /// runtime: the connection's driver lives on the cluster runtime and the
    /// call only exchanges messages with it.
    async fn call<T>(&self, f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, ClusterError> {
        let timeout = self.cfg.redis_timeout;
        self.link()?;
        let r = match tokio::time::timeout(timeout, f).await {
            Ok(r) => r.map_err(ClusterError::from),
            Err(_) => Err(ClusterError::Timeout(timeout)),
        };
        self.observe(r)
    }

    /// The cluster's decision on one request. `Ok(Err(_))` is a refusal.
    pub async fn admit(&self, req: &AdmitRequest<'_>) -> Result<Result<Admitted, GatewayError>, ClusterError> {
        let k = keys::User::new(req.user_id);
        let mut inv = ADMIT.prepare_invoke();
        inv.key(&k.leases).key(&k.holds).key(&k.minute).key(&k.unposted).key(&k.held);
        inv.arg(req.request_id)
            .arg(&self.instance)
            .arg(self.cfg.lease_ttl.as_millis() as i64)
            .arg(req.concurrency)
            .arg(req.rpm.unwrap_or(0))
            .arg(req.position)
            .arg(req.quota.unwrap_or(-1))
            .arg(req.plan_used)
            .arg(req.day_start_ms)
            .arg(req.balance)
            .arg(req.estimate)
            .arg(&k.prefix);
        let mut conn = self.link()?.conn.clone();
        let reply: Vec<i64> = self.call(async move { inv.invoke_async(&mut conn).await }).await?;
        let verdict = decode_admit(&reply, req)?;
        if verdict.is_ok() {
            self.leases.lock().insert(req.request_id.to_string(), req.user_id);
        }
        Ok(verdict)
    }

    /// A sliding window of attempts every node counts in (`name` and `key`
    /// name it): `Ok(Err(seconds))` while it is full. Not asked while Redis
    /// is down: the caller's own window still applies.
    pub async fn window(
        &self,
        name: &str,
        key: &str,
        limit: u32,
        window_ms: i64,
        op: WindowOp,
    ) -> Result<Result<(), u64>, ClusterError> {
        if self.health() != Health::Up {
            return Err(ClusterError::Down);
        }

        let op = match op {
            WindowOp::Check => "check",
            WindowOp::Hit => "hit",
            WindowOp::Reset => "reset",
        };
        let mut inv = WINDOW.prepare_invoke();
        inv.key(keys::window(name, key)).arg(op).arg(limit).arg(window_ms);
        let mut conn = self.link()?.conn.clone();
        let ms: i64 = self.call(async move { inv.invoke_async(&mut conn).await }).await?;
        Ok(if ms > 0 { Err(((ms + 999) / 1000) as u64) } else { Ok(()) })
    }

    /// The user's requests in flight on every node (for `/v1/account`).
    pub async fn in_flight(&self, user_id: i64) -> Result<u32, ClusterError> {
        let k = keys::User::new(user_id);
        let mut inv = IN_FLIGHT.prepare_invoke();
        inv.key(&k.leases);
        let mut conn = self.link()?.conn.clone();
        self.call(async move { inv.invoke_async(&mut conn).await }).await
    }

    /// The instances whose heartbeat is alive, this one first.
    pub async fn live_nodes(&self) -> Result<Vec<String>, ClusterError> {
        let mut conn = self.link()?.conn.clone();
        let pattern = keys::node("*");
        let found: Vec<String> = self
            .call(async move {
                let mut found = Vec::new();
                let mut cursor = 0u64;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await?;
                    found.extend(batch);
                    if next == 0 {
                        return Ok(found);
                    }
                    cursor = next;
                }
            })
            .await?;
        let prefix = keys::node("");
        let mut nodes: Vec<String> = found.iter().map(|k| k.trim_start_matches(&prefix).to_string()).collect();
        nodes.sort_by_key(|n| (n != &self.instance, n.clone()));
        Ok(nodes)
    }

    /// Ends a request admitted by `admit`: frees its slot and hold and counts
    /// its charge as unposted. Sent in the background, in order with posts; a
    /// failure leaves the lease to expire within `lease_ttl`.
    pub fn release(&self, user_id: i64, request_id: String, source: Source, cost: i64) {
        self.leases.lock().remove(&request_id);
        let _ = self.ops.send(sender::Op::Release { user_id, request_id, source, cost: cost.max(0) });
    }

    /// This node committed charges: each ledger row's share moves from
    /// unposted to a posted row the other nodes count until they load it.
    pub fn posted(&self, posted: Vec<Posted>) {
        type Row = (i64, i64, &'static str);
        let mut rows: HashMap<Row, (Vec<(String, i64)>, i64)> = HashMap::new();
        for p in posted {
            let row = rows.entry((p.user_id, p.ledger_id, p.account)).or_insert((Vec::new(), p.charged_at));
            row.0.push((p.request_id, p.cost));
        }
        for ((user_id, ledger_id, account), (charges, charged_at)) in rows {
            let source = if account == "plan" { Source::Plan } else { Source::Credits };
            let _ = self.ops.send(sender::Op::Post { user_id, ledger_id, source, charges, charged_at });
        }
    }
}

/// The cluster part of `GET /admin/config`: `status_json`, this node, the
/// live nodes and the settings.
pub async fn admin_json(c: &Cluster) -> serde_json::Value {
    // Asked first: a failure then shows in the state below.
    let nodes = c.live_nodes().await.map_or(serde_json::Value::Null, Into::into);
    let mut v = status_json(c);
    v["this_node"] = c.instance.clone().into();
    v["nodes"] = nodes;
    v["configured_nodes"] = c.cfg.nodes.into();
    v["lease_ttl_ms"] = (c.cfg.lease_ttl.as_millis() as u64).into();
    v
}

/// The cluster part of `/readyz`: whether limits are exact right now.
pub fn status_json(c: &Cluster) -> serde_json::Value {
    let policy = c.cfg.on_redis_down.as_str();
    match c.health() {
        Health::Up => serde_json::json!({"redis": "up", "limits": "cluster", "on_redis_down": policy}),
        Health::Down { since_ms } => serde_json::json!({
            "redis": "down",
            "down_for_ms": crate::clock::now_ms() - since_ms,
            "limits": if c.cfg.on_redis_down == RedisDown::FailClosed { "refusing" } else { "local share" },
            "on_redis_down": policy,
        }),
    }
}

fn source_code(s: Source) -> &'static str {
    match s {
        Source::Plan => "P",
        Source::Credits => "C",
    }
}

fn decode_admit(reply: &[i64], req: &AdmitRequest<'_>) -> Result<Result<Admitted, GatewayError>, ClusterError> {
    let bad = || ClusterError::Reply(reply.to_vec());
    let code = *reply.first().ok_or_else(bad)?;
    let detail = reply.get(1).copied().unwrap_or(0);
    Ok(match code {
        0 => {
            let [_, source, held, plan_used, balance] = reply else { return Err(bad()) };
            let source = if *source == 1 { Source::Plan } else { Source::Credits };
            Ok(Admitted { source, held: *held, plan_used: *plan_used, balance: *balance })
        }
        1 => Err(GatewayError::ConcurrencyLimit { limit: req.concurrency }),
        2 => Err(GatewayError::RateLimit {
            rpm: req.rpm.unwrap_or(0),
            retry_after: ((detail.max(0) + 999) / 1000).max(1) as u64,
        }),
        3 => Err(GatewayError::DailyQuotaExhausted { retry_after: req.reset_secs }),
        4 => Err(GatewayError::CreditsHeld),
        5 => Err(GatewayError::InsufficientCredits),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests;
