//! The validated configuration the gateway runs on. Built from `file::FileConfig`
//! by `validate`, which reports every problem it finds, each with its field path.
//! Nothing outside `config/` sees the file format.

use super::file::*;
use super::units::{parse_credits, Credits};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    pub keepalive_timeout: Duration,
    pub max_body_bytes: usize,
    pub data_dir: PathBuf,
    pub database: PathBuf,
    pub flush_interval: Duration,
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

#[derive(Debug, Clone)]
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

/// `routing.stream_hold` unless configured.
pub const DEFAULT_STREAM_HOLD: Duration = Duration::from_secs(5);
const MAX_STREAM_HOLD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub max_attempts: usize,
    pub default_cooldown: Duration,
    pub affinity_keys: Vec<String>,
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

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
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

/// Collects field errors while validating.
struct Check {
    errors: Vec<FieldError>,
}

impl Check {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError { path: path.into(), message: message.into() });
    }
    fn u64(&mut self, path: &str, v: Option<super::units::Num>, default: u64, min: u64, max: u64) -> u64 {
        let Some(n) = v else { return default };
        match n.as_u64() {
            Ok(x) if (min..=max).contains(&x) => x,
            Ok(x) => {
                self.err(path, format!("must be between {min} and {max}, got {x}"));
                default
            }
            Err(e) => {
                self.err(path, e);
                default
            }
        }
    }
}

fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
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

/// Validates the file model into a `Config`. `conf_dir` anchors relative paths
/// that are not under `data_dir` (TLS files).
pub fn validate(file: FileConfig, conf_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut c = Check { errors: Vec::new() };

    // server
    let mut listeners = Vec::new();
    if file.server.listen.is_empty() {
        c.err("server.listen", "at least one listener is required");
    }
    for (i, l) in file.server.listen.iter().enumerate() {
        let path = format!("server.listen[{i}]");
        let (addr, tls) = match l {
            ListenSection::Plain(a) => (a.as_str(), None),
            ListenSection::Full(f) => (f.address.as_str(), f.tls.as_ref()),
        };
        let address = match addr.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                c.err(&path, format!("{addr:?} is not an IP:port address"));
                continue;
            }
        };
        let tls = tls.map(|t| TlsFiles { cert: resolve(conf_dir, &t.cert), key: resolve(conf_dir, &t.key) });
        if let Some(t) = &tls {
            for (f, p) in [("cert", &t.cert), ("key", &t.key)] {
                if !p.exists() {
                    c.err(format!("{path}.tls.{f}"), format!("{} does not exist", p.display()));
                }
            }
        }
        listeners.push(Listener { address, tls });
    }
    let threads = c.u64("server.threads", file.server.threads, 2, 1, 256) as usize;
    let grace_period = file.server.grace_period.map(|d| d.0).unwrap_or(Duration::from_secs(10));
    let keepalive_timeout = file.server.keepalive_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(60));
    let max_body_bytes = file.server.max_body_size.map(|s| s.0).unwrap_or(32 << 20);
    if max_body_bytes == 0 || max_body_bytes > (1 << 32) {
        c.err("server.max_body_size", "must be between 1 byte and 4GiB");
    }

    // storage and logs
    let data_dir = PathBuf::from(file.storage.data_dir.as_deref().unwrap_or("./data"));
    if data_dir.as_os_str().is_empty() {
        c.err("storage.data_dir", "must not be empty");
    }
    let database = resolve(&data_dir, file.storage.database.as_deref().unwrap_or("codex-proxy.db"));
    let flush_interval = file.storage.flush_interval.map(|d| d.0).unwrap_or(Duration::from_millis(200));
    if flush_interval > Duration::from_secs(1) || flush_interval.is_zero() {
        c.err("storage.flush_interval", "must be between 1ms and 1s (it bounds what a crash can lose)");
    }
    let access_log = match file.access_log.path.as_deref() {
        Some("off") | Some("") => None,
        Some(p) => Some(resolve(&data_dir, p)),
        None => Some(data_dir.join("access.log")),
    };

    // admin
    let admin_listen = match file.admin.listen.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 8081))),
        Some("") | Some("off") => None,
        Some(a) => match a.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                c.err("admin.listen", format!("{a:?} is not an IP:port address"));
                None
            }
        },
    };
    let admin_token = Secret::new(file.admin.token.unwrap_or_default());
    if let Some(addr) = admin_listen {
        if !addr.ip().is_loopback() && admin_token.is_empty() {
            c.err("admin.token", format!("required when admin.listen ({addr}) is not a loopback address"));
        }
        if !admin_token.is_empty() && admin_token.expose().len() < 16 {
            c.err("admin.token", "must be at least 16 characters");
        }
    }

    let demo = match file.demo_upstream.as_deref().unwrap_or("auto") {
        "auto" => DemoMode::Auto,
        "always" => DemoMode::Always,
        "never" => DemoMode::Never,
        other => {
            c.err("demo_upstream", format!("must be auto, always or never, got {other:?}"));
            DemoMode::Auto
        }
    };

    // routing
    let r = &file.routing;
    let routing = RoutingConfig {
        max_attempts: c.u64("routing.max_attempts", r.max_attempts, 3, 1, 10) as usize,
        default_cooldown: r.default_cooldown.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
        affinity_keys: r.affinity_keys.clone().unwrap_or_else(|| {
            [
                "prompt_cache_key",
                "metadata.user_id",
                "session_id",
                "header:session_id",
                "header:session-id",
                "header:x-claude-code-session-id",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        }),
        affinity_ttl: r.affinity_ttl.map(|d| d.0).unwrap_or(Duration::from_secs(3600)),
        affinity_max_entries: c.u64("routing.affinity_max_entries", r.affinity_max_entries, 100_000, 0, 10_000_000)
            as usize,
        failure_window: r.failure_window.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
        failure_threshold: c.u64("routing.failure_threshold", r.failure_threshold, 5, 1, 1000) as u32,
        ejection_time: r.ejection_time.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
        stream_hold: r.stream_hold.map(|d| d.0).unwrap_or(DEFAULT_STREAM_HOLD),
        stream_keepalive: Some(r.stream_keepalive.map_or(Duration::from_secs(15), |d| d.0)).filter(|d| !d.is_zero()),
    };
    if routing.stream_hold > MAX_STREAM_HOLD {
        c.err(
            "routing.stream_hold",
            format!("must be at most {MAX_STREAM_HOLD:?}: CDNs and clients give up on a response without headers"),
        );
    }

    // billing
    let b = &file.billing;
    let utc_offset_secs = match parse_utc_offset(b.timezone.as_deref().unwrap_or("UTC")) {
        Ok(o) => o,
        Err(e) => {
            c.err("billing.timezone", e);
            0
        }
    };
    let billing = BillingConfig {
        utc_offset_secs,
        default_concurrency: c.u64("billing.default_concurrency", b.default_concurrency, 4, 1, 100_000) as u32,
        max_reservation: b.max_reservation.map(|c| c.0).unwrap_or_else(|| parse_credits("1").unwrap_or(0)),
        default_max_output_tokens: c.u64(
            "billing.default_max_output_tokens",
            b.default_max_output_tokens,
            4096,
            1,
            10_000_000,
        ),
        redeem_failures_per_10min: c.u64(
            "billing.redeem_failures_per_10min",
            b.redeem_failures_per_10min,
            10,
            1,
            10_000,
        ) as u32,
    };
    if billing.max_reservation < 0 {
        c.err("billing.max_reservation", "must not be negative");
    }

    // models
    let mut models = Vec::new();
    let mut model_ids = HashSet::new();
    for (i, m) in file.models.iter().enumerate() {
        let path = format!("models[{i}]");
        if m.id.trim().is_empty() || m.id.chars().any(char::is_whitespace) {
            c.err(format!("{path}.id"), format!("invalid model id {:?}", m.id));
        }
        if !model_ids.insert(m.id.clone()) {
            c.err(format!("{path}.id"), format!("model {:?} is declared twice", m.id));
        }
        let p = &m.price;
        let price = Price {
            input: p.input.unwrap_or_default().0,
            cached_input: p.cached_input.or(p.input).unwrap_or_default().0,
            cache_write: p.cache_write.or(p.input).unwrap_or_default().0,
            output: p.output.unwrap_or_default().0,
        };
        for (f, v) in
            [("input", p.input), ("cached_input", p.cached_input), ("cache_write", p.cache_write), ("output", p.output)]
        {
            if v.is_some_and(|Credits(x)| x < 0) {
                c.err(format!("{path}.price.{f}"), "must not be negative");
            }
        }
        let created = c.u64(&format!("{path}.created"), m.created, 1_700_000_000, 0, u32::MAX as u64);
        models.push(ModelConfig {
            id: m.id.clone(),
            display_name: m.display_name.clone().unwrap_or_else(|| m.id.clone()),
            owned_by: m.owned_by.clone().unwrap_or_else(|| "codex-proxy".into()),
            created,
            price,
        });
    }

    // channels
    let mut channels = Vec::new();
    let mut channel_names = HashSet::new();
    for (i, ch) in file.channels.iter().enumerate() {
        let path = format!("channels[{i}]");
        if !valid_name(&ch.name) {
            c.err(format!("{path}.name"), format!("{:?} must be 1-64 letters, digits, '-', '_' or '.'", ch.name));
        }
        if !channel_names.insert(ch.name.clone()) {
            c.err(format!("{path}.name"), format!("channel {:?} is declared twice", ch.name));
        }
        let kind = match ch.kind.as_str() {
            "openai" => ChannelKind::OpenAi,
            "openai-chat" => ChannelKind::OpenAiChat,
            "anthropic" => ChannelKind::Anthropic,
            other => {
                c.err(format!("{path}.kind"), format!("must be openai, openai-chat or anthropic, got {other:?}"));
                ChannelKind::OpenAi
            }
        };
        let base_url = match BaseUrl::parse(&ch.base_url) {
            Ok(u) => u,
            Err(e) => {
                c.err(format!("{path}.base_url"), e);
                continue;
            }
        };
        let mut map = BTreeMap::new();
        if ch.models.is_empty() {
            c.err(format!("{path}.models"), "a channel must serve at least one model");
        }
        for (j, m) in ch.models.iter().enumerate() {
            let (name, upstream) = match m {
                ChannelModelSection::Plain(n) => (n.clone(), n.clone()),
                ChannelModelSection::Mapped(mm) => (mm.name.clone(), mm.upstream.clone()),
            };
            if !model_ids.contains(&name) {
                c.err(format!("{path}.models[{j}]"), format!("model {name:?} is not declared under models"));
            }
            if map.insert(name.clone(), upstream).is_some() {
                c.err(format!("{path}.models[{j}]"), format!("model {name:?} is listed twice"));
            }
        }
        let t = &ch.timeouts;
        let timeouts = Timeouts {
            connect: t.connect.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
            first_byte: t.first_byte.map(|d| d.0).unwrap_or(Duration::from_secs(300)),
            idle: t.idle.map(|d| d.0).unwrap_or(Duration::from_secs(300)),
            total: t.total.map(|d| d.0).unwrap_or(Duration::from_secs(3600)),
        };
        for (f, d) in [
            ("connect", timeouts.connect),
            ("first_byte", timeouts.first_byte),
            ("idle", timeouts.idle),
            ("total", timeouts.total),
        ] {
            if d.is_zero() {
                c.err(format!("{path}.timeouts.{f}"), "must be greater than zero");
            }
        }
        let h = &ch.health_check;
        let health = HealthCheck {
            enabled: h.enabled.unwrap_or(true),
            // Base URLs of OpenAI kinds end in /v1, Anthropic ones do not.
            path: h
                .path
                .clone()
                .unwrap_or_else(|| if kind == ChannelKind::Anthropic { "/v1/models" } else { "/models" }.into()),
            interval: h.interval.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
            timeout: h.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(5)),
            failures: c.u64(&format!("{path}.health_check.failures"), h.failures, 3, 1, 100) as u32,
            successes: c.u64(&format!("{path}.health_check.successes"), h.successes, 1, 1, 100) as u32,
        };
        if !health.path.starts_with('/') {
            c.err(format!("{path}.health_check.path"), "must start with '/'");
        }
        let mut headers = Vec::new();
        for (k, v) in &ch.headers {
            let ok = http::HeaderName::from_bytes(k.as_bytes()).is_ok() && http::HeaderValue::from_str(v).is_ok();
            if !ok {
                c.err(format!("{path}.headers.{k}"), "invalid header name or value");
            }
            headers.push((k.to_ascii_lowercase(), Secret::new(v.clone())));
        }
        if ch.quirks.is_some() && kind == ChannelKind::Anthropic {
            c.err(format!("{path}.quirks"), "only applies to openai and openai-chat channels");
        }
        let quirks = ch.quirks.clone().unwrap_or_default();
        for (field, message) in quirks.problems() {
            c.err(format!("{path}.quirks.{field}"), message);
        }
        channels.push(ChannelConfig {
            name: ch.name.clone(),
            kind,
            base_url,
            api_key: Secret::new(ch.api_key.clone().unwrap_or_default()),
            models: map,
            weight: c.u64(&format!("{path}.weight"), ch.weight, 1, 1, 10_000) as u32,
            priority: {
                let p = c.u64(&format!("{path}.priority"), ch.priority, 0, 0, 1000);
                p as i32
            },
            enabled: ch.enabled.unwrap_or(true),
            force_translation: ch.force_translation.unwrap_or(false),
            headers,
            timeouts,
            health,
            context_window: ch
                .context_window
                .map(|n| c.u64(&format!("{path}.context_window"), Some(n), 0, 1, u64::MAX >> 12)),
            quirks,
        });
    }

    // plans
    let mut plans = Vec::new();
    let mut plan_ids = HashSet::new();
    for (i, p) in file.plans.iter().enumerate() {
        let path = format!("plans[{i}]");
        if !valid_name(&p.id) {
            c.err(format!("{path}.id"), format!("{:?} must be 1-64 letters, digits, '-', '_' or '.'", p.id));
        }
        if !plan_ids.insert(p.id.clone()) {
            c.err(format!("{path}.id"), format!("plan {:?} is declared twice", p.id));
        }
        if p.daily_quota.0 <= 0 {
            c.err(format!("{path}.daily_quota"), "must be positive");
        }
        plans.push(PlanConfig {
            id: p.id.clone(),
            name: p.name.clone().unwrap_or_else(|| p.id.clone()),
            daily_quota: p.daily_quota.0,
            concurrency: p.concurrency.map(|n| c.u64(&format!("{path}.concurrency"), Some(n), 1, 1, 100_000) as u32),
            requests_per_minute: p
                .requests_per_minute
                .map(|n| c.u64(&format!("{path}.requests_per_minute"), Some(n), 1, 1, 1_000_000) as u32),
            allowed_models: p.allowed_models.clone(),
            blocked_models: p.blocked_models.clone(),
            duration_days: c.u64(&format!("{path}.duration_days"), Some(p.duration_days), 30, 1, 36_500) as u32,
        });
    }

    let console = console(&mut c, &file.console);
    let payments = payments(&mut c, &file.payments, &plan_ids);

    if c.errors.is_empty() {
        Ok(Config {
            listeners,
            threads,
            grace_period,
            keepalive_timeout,
            max_body_bytes: max_body_bytes as usize,
            data_dir,
            database,
            flush_interval,
            access_log,
            admin: AdminConfig { listen: admin_listen, token: admin_token },
            demo,
            routing,
            billing,
            channels,
            models,
            plans,
            console,
            payments,
        })
    } else {
        Err(ConfigErrors(c.errors))
    }
}

/// Prices per currency, each in its minor unit, positive.
fn prices(c: &mut Check, path: &str, raw: &BTreeMap<String, super::units::Decimal>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (cur, v) in raw {
        let code = cur.to_ascii_lowercase();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_lowercase()) {
            c.err(format!("{path}.{cur}"), "must be a 3-letter ISO currency code (usd, cny, eur, ...)");
            continue;
        }
        match super::units::parse_fixed(&v.0, super::units::currency_exponent(&code) as usize) {
            Ok(minor) if minor > 0 => {
                out.insert(code, minor);
            }
            Ok(_) => c.err(format!("{path}.{cur}"), "must be positive"),
            Err(e) => c.err(format!("{path}.{cur}"), e),
        }
    }
    out
}

/// The `payments:` section.
fn payments(c: &mut Check, f: &PaymentsSection, plan_ids: &HashSet<String>) -> PaymentsConfig {
    let url = |c: &mut Check, path: &str, u: &str| -> String {
        let u = u.trim().trim_end_matches('/');
        if !(u.starts_with("https://") || u.starts_with("http://")) || BaseUrl::parse(u).is_err() {
            c.err(path, format!("{u:?} must be an http(s) URL"));
        }
        u.to_string()
    };
    let stripe = f.stripe.as_ref().map(|s| {
        for (field, v) in [("secret_key", &s.secret_key), ("webhook_secret", &s.webhook_secret)] {
            if v.trim().is_empty() {
                c.err(format!("payments.stripe.{field}"), "required (set it from an environment variable)");
            }
        }
        let currency = s.currency.as_deref().unwrap_or("usd").to_ascii_lowercase();
        StripeConfig {
            secret_key: Secret::new(s.secret_key.trim()),
            webhook_secret: Secret::new(s.webhook_secret.trim()),
            api_base: url(c, "payments.stripe.api_base", s.api_base.as_deref().unwrap_or("https://api.stripe.com")),
            currency,
        }
    });
    let epay = f.epay.as_ref().map(|e| {
        if e.pid.trim().is_empty() {
            c.err("payments.epay.pid", "required");
        }
        if e.key.trim().is_empty() {
            c.err("payments.epay.key", "required (set it from an environment variable)");
        }
        let types = e.types.clone().unwrap_or_else(|| vec!["alipay".into(), "wxpay".into()]);
        if types.is_empty() || types.iter().any(|t| !valid_name(t)) {
            c.err("payments.epay.types", "must list payment types such as alipay, wxpay");
        }
        EpayConfig {
            gateway_url: url(c, "payments.epay.gateway_url", &e.gateway_url),
            pid: e.pid.trim().to_string(),
            key: Secret::new(e.key.trim()),
            types,
        }
    });
    let mut ids = HashSet::new();
    let mut packages = Vec::new();
    for (i, p) in f.packages.iter().enumerate() {
        let path = format!("payments.packages[{i}]");
        if !valid_name(&p.id) {
            c.err(format!("{path}.id"), format!("{:?} must be 1-64 letters, digits, '-', '_' or '.'", p.id));
        }
        if !ids.insert(p.id.clone()) {
            c.err(format!("{path}.id"), format!("package {:?} is declared twice", p.id));
        }
        let grant = match (&p.credits, &p.plan) {
            (Some(cr), None) if cr.0 > 0 => Purchase::Credits(cr.0),
            (None, Some(plan)) if plan_ids.contains(plan) => Purchase::Plan(plan.clone()),
            (None, Some(plan)) => {
                c.err(format!("{path}.plan"), format!("no plan {plan:?} under plans"));
                Purchase::Plan(plan.clone())
            }
            _ => {
                c.err(&path, "give exactly one of credits (positive) or plan");
                Purchase::Credits(0)
            }
        };
        let prices = prices(c, &format!("{path}.prices"), &p.prices);
        if p.prices.is_empty() {
            c.err(format!("{path}.prices"), "at least one price is required ({usd: 10})");
        }
        packages.push(PackageConfig {
            id: p.id.clone(),
            name: p.name.clone().unwrap_or_else(|| p.id.clone()),
            grant,
            prices,
        });
    }
    let custom = f.custom.as_ref().map(|cu| {
        let whole = |c: &mut Check, field: &str, v: i64| -> i64 {
            if v <= 0 || v % super::units::MICROS_PER_CREDIT != 0 {
                c.err(format!("payments.custom.{field}"), "must be a positive whole number of credits");
            }
            v / super::units::MICROS_PER_CREDIT
        };
        let (min, max) = (whole(c, "min_credits", cu.min_credits.0), whole(c, "max_credits", cu.max_credits.0));
        if min > max {
            c.err("payments.custom.max_credits", "must not be below min_credits");
        }
        let credit_price = prices(c, "payments.custom.credit_price", &cu.credit_price);
        if cu.credit_price.is_empty() {
            c.err("payments.custom.credit_price", "at least one price is required ({usd: 1})");
        }
        CustomAmount { min_credits: min, max_credits: max, credit_price }
    });
    // Something to sell in a currency some provider charges in.
    let currencies: Vec<&str> =
        stripe.iter().map(|s| s.currency.as_str()).chain(epay.iter().map(|_| EPAY_CURRENCY)).collect();
    for (i, p) in packages.iter().enumerate() {
        if !currencies.is_empty() && !p.prices.keys().any(|k| currencies.contains(&k.as_str())) {
            c.err(
                format!("payments.packages[{i}].prices"),
                format!("no price in a currency a provider charges in ({})", currencies.join(", ")),
            );
        }
    }
    let order_ttl = f.order_ttl.map_or(Duration::from_secs(30 * 60), |d| d.0);
    if order_ttl < Duration::from_secs(30 * 60) || order_ttl > Duration::from_secs(24 * 3600) {
        c.err("payments.order_ttl", "must be between 30m and 24h (Stripe's checkout sessions live that long)");
    }
    PaymentsConfig { stripe, epay, packages, custom, order_ttl }
}

/// The `console:` section.
fn console(c: &mut Check, f: &ConsoleSection) -> ConsoleConfig {
    let public_url =
        f.public_url.as_deref().map(str::trim).filter(|u| !u.is_empty()).and_then(|u| match BaseUrl::parse(u) {
            Ok(b) if b.path.is_empty() => Some(b.to_string()),
            Ok(_) => {
                c.err(
                    "console.public_url",
                    format!("{u:?} must be the site root (https://relay.example.com), without a path"),
                );
                None
            }
            Err(e) => {
                c.err("console.public_url", e);
                None
            }
        });
    let purchase_url = f.purchase_url.as_deref().map(str::trim).filter(|u| !u.is_empty()).map(str::to_string);
    if let Some(u) = &purchase_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) || u.contains(char::is_whitespace) {
            c.err("console.purchase_url", format!("{u:?} must be an http(s) URL"));
        }
    }
    let site_name = f.site_name.as_deref().map(str::trim).unwrap_or("codex-proxy").to_string();
    if site_name.is_empty() || site_name.chars().count() > 64 {
        c.err("console.site_name", "must be 1 to 64 characters");
    }
    let signup_credits = f.signup_credits.map_or(0, |x| x.0);
    if signup_credits < 0 {
        c.err("console.signup_credits", "must not be negative");
    }
    let idle = f.session_idle_timeout.map_or(Duration::from_secs(8 * 3600), |d| d.0);
    let max_age = f.session_max_age.map_or(Duration::from_secs(7 * 86_400), |d| d.0);
    if idle < Duration::from_secs(1) || idle > max_age {
        c.err("console.session_idle_timeout", "must be at least 1s and at most console.session_max_age");
    }
    if max_age > Duration::from_secs(90 * 86_400) {
        c.err("console.session_max_age", "must be at most 90 days");
    }
    let t = &f.throttle;
    let throttle = ThrottleConfig {
        sign_in_per_ip: c.u64("console.throttle.sign_in_per_ip", t.sign_in_per_ip, 20, 1, 1_000_000) as u32,
        sign_in_per_account: c.u64("console.throttle.sign_in_per_account", t.sign_in_per_account, 10, 1, 1_000_000)
            as u32,
        sign_up_per_ip: c.u64("console.throttle.sign_up_per_ip", t.sign_up_per_ip, 10, 1, 1_000_000) as u32,
        window: t.window.map_or(Duration::from_secs(15 * 60), |d| d.0),
    };
    if throttle.window.is_zero() {
        c.err("console.throttle.window", "must be greater than zero");
    }
    ConsoleConfig {
        enabled: f.enabled.unwrap_or(true),
        public_url,
        signup: f.signup.unwrap_or(Signup::Open),
        site_name,
        max_keys_per_user: c.u64("console.max_keys_per_user", f.max_keys_per_user, 20, 1, 10_000) as u32,
        signup_credits,
        session_idle_timeout: idle,
        session_max_age: max_age,
        purchase_url,
        purchase_note: f.purchase_note.as_deref().map(str::trim).filter(|n| !n.is_empty()).map(str::to_string),
        throttle,
    }
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
