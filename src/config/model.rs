//! The validated configuration the gateway runs on. Built from `file::FileConfig`
//! by `validate`, which reports every problem it finds, each with its field path.
//! Nothing outside `config/` sees the file format.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A secret string whose `Debug`/`Display` never print it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; call sites are easy to audit by searching for `expose`.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"*****\"" })
    }
}

/// One problem in the configuration, at a field path such as `channels[1].base_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<FieldError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub threads: usize,
    pub grace_period: Duration,
    /// Idle time allowed between a client's requests on one connection
    /// (zero: one request per connection).
    pub keepalive_timeout: Duration,
    pub max_body_bytes: usize,
    /// Request line plus headers, in bytes, and the header count: beyond
    /// either the answer is 431 and the connection is closed.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Plain listeners also take HTTP/2 with prior knowledge (h2c).
    pub h2c: bool,
    /// Open connections one client address may hold (`None`: no limit).
    pub max_connections_per_ip: Option<u32>,
    /// Time a new HTTP/1 connection has to deliver its first request head.
    pub header_timeout: Option<Duration>,
    pub data_dir: PathBuf,
    pub database: crate::store::Database,
    pub flush_interval: Duration,
    /// How long per-request usage rows are kept (`None`: forever).
    pub usage_retention: Option<Duration>,
    /// How long failing database writes leave `/readyz` up.
    pub write_failure_grace: Duration,
    pub access_log: Option<PathBuf>,
    pub admin: AdminConfig,
    pub demo: DemoMode,
    pub routing: RoutingConfig,
    pub billing: BillingConfig,
    pub channels: Vec<ChannelConfig>,
    pub models: Vec<ModelConfig>,
    pub plans: Vec<PlanConfig>,
    pub console: ConsoleConfig,
    pub payments: PaymentsConfig,
    /// Limits shared with other nodes through Redis (`None`: a single node).
    pub cluster: Option<ClusterConfig>,
}

/// Several gateway nodes enforcing every limit together (see `cluster`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub redis_url: Secret,
    pub nodes: u32,
    pub on_redis_down: RedisDown,
    pub lease_ttl: Duration,
    pub redis_timeout: Duration,
    /// `storage.ca_file`, for a `rediss://` URL: the CA certificates Redis's
    /// must chain to (`None`: the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
}

/// What admission does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisDown {
    /// Refuse LLM requests with 503 (and fail `/readyz`): never over a limit.
    FailClosed,
    /// Each node enforces its share (`1/nodes`) of each limit from memory.
    LocalLimits,
}

impl RedisDown {
    /// The name `cluster.on_redis_down` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisDown::FailClosed => "fail_closed",
            RedisDown::LocalLimits => "local_limits",
        }
    }
}

/// Buying credits online: the providers, what can be bought, and for how long
/// an unpaid order stays open.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    pub stripe: Option<StripeConfig>,
    pub epay: Option<EpayConfig>,
    pub packages: Vec<PackageConfig>,
    pub custom: Option<CustomAmount>,
    pub order_ttl: Duration,
}

impl PaymentsConfig {
    /// Whether anything can be bought at all.
    pub fn enabled(&self) -> bool {
        (self.stripe.is_some() || self.epay.is_some()) && (!self.packages.is_empty() || self.custom.is_some())
    }

    pub fn package(&self, id: &str) -> Option<&PackageConfig> {
        self.packages.iter().find(|p| p.id == id)
    }
}

#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: Secret,
    pub webhook_secret: Secret,
    /// Stripe's API, without a trailing slash (`https://api.stripe.com`).
    pub api_base: String,
    /// Lower-case ISO currency code.
    pub currency: String,
}

/// An EPay (易支付) merchant account. It charges in CNY.
#[derive(Debug, Clone)]
pub struct EpayConfig {
    /// Without a trailing slash; payments go to `{gateway_url}/submit.php`.
    pub gateway_url: String,
    pub pid: String,
    pub key: Secret,
    pub types: Vec<String>,
}

/// The currency EPay gateways charge in.
pub const EPAY_CURRENCY: &str = "cny";

/// What an order grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purchase {
    /// Micro-credits.
    Credits(i64),
    /// A plan id.
    Plan(String),
}

#[derive(Debug, Clone)]
pub struct PackageConfig {
    pub id: String,
    pub name: String,
    pub grant: Purchase,
    /// Lower-case currency → price in its minor unit.
    pub prices: BTreeMap<String, i64>,
}

/// A free amount of whole credits.
#[derive(Debug, Clone)]
pub struct CustomAmount {
    /// Whole credits.
    pub min_credits: i64,
    pub max_credits: i64,
    /// Lower-case currency → price of one credit in its minor unit.
    pub credit_price: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signup {
    /// Anyone.
    Open,
    /// Only with a valid redemption code, redeemed on the new account.
    Invite,
    /// Nobody: operators create accounts.
    Closed,
}

/// The website (docs and user console).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub enabled: bool,
    /// The site root users reach (`https://relay.example.com`), without a
    /// trailing slash; `None`: derived from each request.
    pub public_url: Option<String>,
    pub signup: Signup,
    pub site_name: String,
    pub max_keys_per_user: u32,
    pub signup_credits: i64,
    pub session_idle_timeout: Duration,
    pub session_max_age: Duration,
    pub purchase_url: Option<String>,
    pub purchase_note: Option<String>,
    pub throttle: ThrottleConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    pub sign_in_per_ip: u32,
    pub sign_in_per_account: u32,
    pub sign_up_per_ip: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
    pub token: Secret,
}

/// Whether the built-in fake upstream stands in for the configured channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoMode {
    /// Only when no channel has an API key.
    Auto,
    Always,
    Never,
}

/// A request field or header that pins a conversation to one channel
/// (`routing.affinity_keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AffinityKey {
    /// The body's `prompt_cache_key` (Codex, the OpenAI SDKs).
    PromptCacheKey,
    /// The body's `metadata.user_id` (Claude Code).
    MetadataUserId,
    /// The body's `session_id`.
    SessionId,
    /// A request header (`header:NAME`), lower-case.
    Header(String),
}

impl AffinityKey {
    pub fn parse(s: &str) -> Result<AffinityKey, String> {
        match s {
            "prompt_cache_key" => Ok(AffinityKey::PromptCacheKey),
            "metadata.user_id" => Ok(AffinityKey::MetadataUserId),
            "session_id" => Ok(AffinityKey::SessionId),
            _ => match s.strip_prefix("header:") {
                Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                    Ok(AffinityKey::Header(h.to_ascii_lowercase()))
                }
                _ => Err(format!("{s:?} must be prompt_cache_key, metadata.user_id, session_id or header:NAME")),
            },
        }
    }

    /// What Codex, Claude Code and the SDKs send.
    pub fn defaults() -> Vec<AffinityKey> {
        [
            "prompt_cache_key",
            "metadata.user_id",
            "session_id",
            "header:session_id",
            "header:session-id",
            "header:x-claude-code-session-id",
        ]
        .iter()
        .filter_map(|k| AffinityKey::parse(k).ok())
        .collect()
    }
}

impl fmt::Display for AffinityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AffinityKey::PromptCacheKey => f.write_str("prompt_cache_key"),
            AffinityKey::MetadataUserId => f.write_str("metadata.user_id"),
            AffinityKey::SessionId => f.write_str("session_id"),
            AffinityKey::Header(h) => write!(f, "header:{h}"),
        }
    }
}

/// `routing.stream_hold` unless configured.
pub const DEFAULT_STREAM_HOLD: Duration = Duration::from_secs(5);
pub(super) const MAX_STREAM_HOLD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub max_attempts: usize,
    pub default_cooldown: Duration,
    pub affinity_keys: Vec<AffinityKey>,
    pub affinity_ttl: Duration,
    pub affinity_max_entries: usize,
    pub failure_window: Duration,
    pub failure_threshold: u32,
    pub ejection_time: Duration,
    /// A 2xx stream's head is held until its first content event, so that an
    /// error event before any content can still fail over; at most this long,
    /// then the head and what was held go out (a model that thinks for a
    /// minute must not leave the client, or a CDN, without response headers).
    pub stream_hold: Duration,
    /// A client stream the upstream leaves silent this long gets an SSE
    /// comment, so proxies and CDNs on the way keep the connection (a
    /// translated stream drops the upstream's own pings); `None`: never.
    pub stream_keepalive: Option<Duration>,
    /// Codex's WebSocket transport on `GET /v1/responses`: each
    /// `response.create` message runs as a Responses request. Off: 426.
    pub responses_websocket: bool,
}

#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// Offset of the quota-reset timezone from UTC, in seconds.
    pub utc_offset_secs: i32,
    pub default_concurrency: u32,
    pub max_reservation: i64,
    pub default_max_output_tokens: u64,
    pub redeem_failures_per_10min: u32,
}

/// What an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// OpenAI-compatible with Chat Completions, Responses and Embeddings.
    OpenAi,
    /// OpenAI-compatible with Chat Completions and Embeddings only.
    OpenAiChat,
    /// Anthropic Messages (and count_tokens).
    Anthropic,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::OpenAi => "openai",
            ChannelKind::OpenAiChat => "openai-chat",
            ChannelKind::Anthropic => "anthropic",
        }
    }
}

/// A parsed upstream base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`/v1`, or empty).
    pub path: String,
}

impl BaseUrl {
    pub fn parse(s: &str) -> Result<BaseUrl, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("URL {s:?} must start with http:// or https://")),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("URL {s:?} has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if uri.query().is_some() {
            return Err(format!("URL {s:?} must not have a query string"));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path().trim_end_matches('/').to_string();
        Ok(BaseUrl { tls, host, port, path })
    }

    /// `host:port` as sent in the `Host` header (port omitted when default).
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    pub base_url: BaseUrl,
    pub api_key: Secret,
    /// Client-facing model id → upstream model id.
    pub models: BTreeMap<String, String>,
    pub weight: u32,
    pub priority: i32,
    pub enabled: bool,
    pub force_translation: bool,
    /// Extra upstream headers; values may be credentials, so they never print.
    pub headers: Vec<(String, Secret)>,
    pub timeouts: Timeouts,
    pub health: HealthCheck,
    pub context_window: Option<u64>,
    pub quirks: super::quirks::Quirks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Until the response header arrives (reasoning models think for minutes).
    pub first_byte: Duration,
    /// Longest silence between two body chunks.
    pub idle: Duration,
    pub total: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub enabled: bool,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
    pub successes: u32,
}

/// Per-1M-token prices in micro-credits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: i64,
    pub cached_input: i64,
    pub cache_write: i64,
    pub output: i64,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub id: String,
    pub display_name: String,
    pub owned_by: String,
    pub created: u64,
    pub price: Price,
}

#[derive(Debug, Clone)]
pub struct PlanConfig {
    pub id: String,
    pub name: String,
    /// Micro-credits per day.
    pub daily_quota: i64,
    pub concurrency: Option<u32>,
    pub requests_per_minute: Option<u32>,
    pub allowed_models: Vec<String>,
    pub blocked_models: Vec<String>,
    pub duration_days: u32,
}

impl Config {
    pub fn model(&self, id: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.id == id)
    }
    pub fn plan(&self, id: &str) -> Option<&PlanConfig> {
        self.plans.iter().find(|p| p.id == id)
    }
}

/// Parses `UTC`, `Z`, `+08:00`, `-0530`, `+8` into seconds east of UTC.
pub fn parse_utc_offset(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("z") || t.is_empty() {
        return Ok(0);
    }
    let t = t.strip_prefix("UTC").unwrap_or(t);
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(format!("timezone {s:?} must be UTC or an offset like +08:00")),
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    let h: i32 = h.parse().map_err(|_| format!("invalid timezone {s:?}"))?;
    let m: i32 = m.parse().map_err(|_| format!("invalid timezone {s:?}"))?;
    if h > 14 || m > 59 {
        return Err(format!("invalid timezone {s:?}"));
    }
    // Usage rollups are per 15 minutes; every real offset is a multiple.
    if m % 15 != 0 {
        return Err(format!("timezone {s:?}: minutes must be 00, 15, 30 or 45"));
    }
    Ok(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let u = BaseUrl::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (true, "api.openai.com", 443, "/v1"));
        assert_eq!(u.to_string(), "https://api.openai.com/v1");
        let u = BaseUrl::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str(), u.authority()), (false, 9000, "", "127.0.0.1:9000".into()));
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("api.openai.com").is_err());
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_utc_offset("UTC"), Ok(0));
        assert_eq!(parse_utc_offset("+08:00"), Ok(8 * 3600));
        assert_eq!(parse_utc_offset("-0530"), Ok(-(5 * 3600 + 30 * 60)));
        assert!(parse_utc_offset("Europe/Paris").is_err());
        assert_eq!(parse_utc_offset("+05:45"), Ok(5 * 3600 + 45 * 60));
        assert!(parse_utc_offset("+05:07").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("sk-123")), "\"*****\"");
    }
}
