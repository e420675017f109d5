//! The YAML file as written by operators: serde structs that mirror
//! `conf/codex-proxy.yaml` one to one. Every struct denies unknown fields, so a
//! typo is an error naming its path instead of a silently ignored setting.
//! Nothing here is validated beyond its type; see `model.rs` for that.

use super::units::{Credits, Decimal, Dur, Num, Size};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub access_log: AccessLogSection,
    #[serde(default)]
    pub admin: AdminSection,
    /// `auto` (default), `always` or `never`.
    #[serde(default)]
    pub demo_upstream: Option<String>,
    #[serde(default)]
    pub routing: RoutingSection,
    #[serde(default)]
    pub billing: BillingSection,
    #[serde(default)]
    pub channels: Vec<ChannelSection>,
    #[serde(default)]
    pub models: Vec<ModelSection>,
    #[serde(default)]
    pub plans: Vec<PlanSection>,
    #[serde(default)]
    pub console: ConsoleSection,
    #[serde(default)]
    pub payments: PaymentsSection,
    #[serde(default)]
    pub cluster: ClusterSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default)]
    pub listen: Vec<ListenSection>,
    pub threads: Option<Num>,
    pub grace_period: Option<Dur>,
    pub max_body_size: Option<Size>,
    /// Seconds a keep-alive client connection may stay idle.
    pub keepalive_timeout: Option<Dur>,
    /// The request line and headers together, at most (431 beyond).
    pub max_header_size: Option<Size>,
    /// Header fields per request, at most (431 beyond).
    pub max_headers: Option<Num>,
    /// Cleartext HTTP/2 (prior knowledge) on the plain listeners too.
    pub h2c: Option<bool>,
    /// Open connections per client address, at most (0: no limit).
    pub max_connections_per_ip: Option<Num>,
    /// Time for a new connection's first request head (0s: no limit).
    pub header_timeout: Option<Dur>,
}

/// A listener: either `"0.0.0.0:8080"` or `{address, tls: {cert, key}}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ListenSection {
    Plain(String),
    Full(ListenFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFull {
    pub address: String,
    pub tls: Option<TlsSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub data_dir: Option<String>,
    /// `sqlite` (the default) or `postgres`.
    pub backend: Option<String>,
    /// SQLite file; relative paths are inside `data_dir`.
    pub database: Option<String>,
    /// PostgreSQL's `postgres://user@host:port/database`, without the
    /// password (`backend: postgres`).
    pub url: Option<String>,
    /// The environment variable holding PostgreSQL's password
    /// (default `CODEX_PROXY_DB_PASSWORD`).
    pub password_env: Option<String>,
    /// Longest time a usage record waits in memory before its batch commits.
    pub flush_interval: Option<Dur>,
    /// Per-request usage rows older than this are deleted (their totals stay
    /// in the rollups); `off` or absent keeps them.
    pub usage_retention: Option<String>,
    /// How long failing database writes are ridden out from memory before
    /// `/readyz` fails (a PostgreSQL restart or failover).
    pub write_failure_grace: Option<Dur>,
    /// Redis shared by the nodes of a cluster (`redis://…`, `rediss://…`
    /// for TLS, or `unix://…`); absent or empty: one node, limits in memory.
    pub redis_url: Option<String>,
    /// CA certificates (PEM) that PostgreSQL's and Redis's certificates must
    /// chain to when TLS is used; absent: the system's roots.
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Gateway nodes behind the load balancer: `local_limits` gives each
    /// node this share of every limit while Redis is unreachable.
    pub nodes: Option<Num>,
    /// `fail_closed` or `local_limits`.
    pub on_redis_down: Option<String>,
    /// A request's concurrency slot lives this long unless its node renews it.
    pub lease_ttl: Option<Dur>,
    /// Longest wait for Redis on the request path.
    pub redis_timeout: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    /// JSON-lines file; relative paths are inside `data_dir`; `off` disables it.
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Listener of the admin API; empty disables it.
    pub listen: Option<String>,
    /// Bearer token the admin API requires.
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    pub max_attempts: Option<Num>,
    /// Cool-down after an upstream 429 without a usable reset header.
    pub default_cooldown: Option<Dur>,
    /// Request fields/headers that pin a conversation to one channel.
    pub affinity_keys: Option<Vec<String>>,
    pub affinity_ttl: Option<Dur>,
    pub affinity_max_entries: Option<Num>,
    /// Sliding window and threshold of passive failures that eject a channel.
    pub failure_window: Option<Dur>,
    pub failure_threshold: Option<Num>,
    /// How long an ejected channel rests before traffic may try it again.
    pub ejection_time: Option<Dur>,
    /// How long a 2xx stream's head may be held waiting for its first content.
    pub stream_hold: Option<Dur>,
    /// An SSE comment after this much upstream silence; 0: none.
    pub stream_keepalive: Option<Dur>,
    /// Serve the Responses API over a WebSocket on `GET /v1/responses`
    /// (false: answer 426, and Codex falls back to HTTP).
    pub responses_websocket: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSection {
    /// IANA-free fixed offset such as `UTC`, `+08:00`, `-05:00`; daily quotas reset
    /// at 00:00 in it.
    pub timezone: Option<String>,
    /// Concurrent requests per user when no plan says otherwise.
    pub default_concurrency: Option<Num>,
    /// Upper bound of the credit reservation taken before forwarding.
    pub max_reservation: Option<Credits>,
    /// Output tokens assumed for the reservation when the request sets no limit.
    pub default_max_output_tokens: Option<Num>,
    /// Failed redemptions per user per 10 minutes before answering 429.
    pub redeem_failures_per_10min: Option<Num>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSection {
    pub name: String,
    /// `openai` (chat + responses + embeddings), `openai-chat` (chat + embeddings)
    /// or `anthropic` (messages + count_tokens).
    pub kind: String,
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub models: Vec<ChannelModelSection>,
    pub weight: Option<Num>,
    pub priority: Option<Num>,
    pub enabled: Option<bool>,
    /// Always translate to this channel's protocol even when another channel
    /// speaks the client's protocol natively.
    pub force_translation: Option<bool>,
    /// Extra headers sent upstream (for example `OpenAI-Organization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    #[serde(default)]
    pub health_check: HealthCheckSection,
    /// Context window of the models behind this channel, for overflow messages.
    pub context_window: Option<Num>,
    /// Compatibility switches for translating to an OpenAI-compatible upstream.
    pub quirks: Option<super::quirks::Quirks>,
}

/// A model a channel serves: `gpt-4o-mini`, or `{name, upstream}` to rename it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ChannelModelSection {
    Plain(String),
    Mapped(ChannelModelMapped),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelModelMapped {
    pub name: String,
    pub upstream: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    pub connect: Option<Dur>,
    pub first_byte: Option<Dur>,
    pub idle: Option<Dur>,
    pub total: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    pub enabled: Option<bool>,
    /// Path below the base URL probed with GET (default `/models`).
    pub path: Option<String>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    /// Consecutive failures that eject the channel.
    pub failures: Option<Num>,
    /// Consecutive successes that restore it.
    pub successes: Option<Num>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub id: String,
    pub display_name: Option<String>,
    pub owned_by: Option<String>,
    /// Unix time shown as `created` in `/v1/models`.
    pub created: Option<Num>,
    #[serde(default)]
    pub price: PriceSection,
}

/// Credits per one million tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSection {
    pub input: Option<Credits>,
    pub cached_input: Option<Credits>,
    pub cache_write: Option<Credits>,
    pub output: Option<Credits>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSection {
    pub id: String,
    pub name: Option<String>,
    /// Credits the plan covers per day.
    pub daily_quota: Credits,
    pub concurrency: Option<Num>,
    pub requests_per_minute: Option<Num>,
    #[serde(default)]
    pub allowed_models: Vec<String>,
    #[serde(default)]
    pub blocked_models: Vec<String>,
    pub duration_days: Num,
}

/// The website: docs at `/`, the user console at `/console/`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Serve the website beside `/v1` (default true).
    pub enabled: Option<bool>,
    /// The address users reach the gateway at (`https://relay.example.com`),
    /// shown in the docs and in cc-switch links; default: from each request.
    pub public_url: Option<String>,
    /// Who may create an account.
    pub signup: Option<super::model::Signup>,
    pub site_name: Option<String>,
    pub max_keys_per_user: Option<Num>,
    /// Credits every new account starts with.
    pub signup_credits: Option<Credits>,
    /// A session ends after this long without a request.
    pub session_idle_timeout: Option<Dur>,
    /// A session ends this long after sign-in, whatever happens.
    pub session_max_age: Option<Dur>,
    /// Where the Buy credits page sends users (a shop selling codes).
    pub purchase_url: Option<String>,
    /// Instructions shown on the Buy credits page.
    pub purchase_note: Option<String>,
    #[serde(default)]
    pub throttle: ThrottleSection,
}

/// Limits on sign-in and sign-up attempts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSection {
    /// Failed sign-ins from one IP address per window.
    pub sign_in_per_ip: Option<Num>,
    /// Failed sign-ins to one account per window.
    pub sign_in_per_account: Option<Num>,
    /// Accounts created from one IP address per window.
    pub sign_up_per_ip: Option<Num>,
    pub window: Option<Dur>,
}

/// Buying credits online.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsSection {
    pub stripe: Option<StripeSection>,
    pub epay: Option<EpaySection>,
    /// What users can buy.
    #[serde(default)]
    pub packages: Vec<PackageSection>,
    /// A free amount of credits, priced per credit in each currency.
    pub custom: Option<CustomAmountSection>,
    /// How long an unpaid order waits before it expires (30m to 24h).
    pub order_ttl: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSection {
    pub secret_key: String,
    pub webhook_secret: String,
    /// Stripe's API (tests point it at a fake).
    pub api_base: Option<String>,
    /// The currency Stripe charges in (ISO code, default usd).
    pub currency: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpaySection {
    /// The gateway's base URL; payments go to `{gateway_url}/submit.php`.
    pub gateway_url: String,
    pub pid: String,
    pub key: String,
    /// Payment types offered (default alipay and wxpay).
    pub types: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSection {
    pub id: String,
    pub name: Option<String>,
    /// Credits the package adds (or give `plan`).
    pub credits: Option<Credits>,
    /// A plan the package starts or extends.
    pub plan: Option<String>,
    /// Price per currency, in its major unit: `{usd: 10, cny: 72}`.
    pub prices: BTreeMap<String, Decimal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomAmountSection {
    pub min_credits: Credits,
    pub max_credits: Credits,
    /// Price of one credit per currency: `{usd: "1.00", cny: "7.30"}`.
    pub credit_price: BTreeMap<String, Decimal>,
}
