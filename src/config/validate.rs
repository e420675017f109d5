//! Validation of the file model into a [`Config`]: one function per section,
//! each reporting every problem it finds with its field path, so that `check`
//! lists them all at once.

use super::file::*;
use super::model::*;
use super::units::{parse_credits, Credits};
use crate::store::{db::PgTarget, Database};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    /// Records `name` as seen under `path`; a second one is an error.
    fn unique(&mut self, seen: &mut HashSet<String>, path: String, what: &str, name: &str) {
        if !seen.insert(name.to_string()) {
            self.err(path, format!("{what} {name:?} is declared twice"));
        }
    }

    /// A name made of 1-64 letters, digits, '-', '_' or '.'.
    fn name(&mut self, path: String, name: &str) {
        if !valid_name(name) {
            self.err(path, format!("{name:?} must be 1-64 letters, digits, '-', '_' or '.'"));
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Validates the file model into a `Config`. `conf_dir` anchors relative paths
/// that are not under `data_dir` (TLS files).
pub fn validate(file: FileConfig, conf_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut c = Check { errors: Vec::new() };
    let server = server(&mut c, &file.server, conf_dir);
    let ca_file = ca_file(&mut c, &file.storage, conf_dir);
    let storage = storage(&mut c, &file, ca_file.clone());
    let admin = admin(&mut c, &file.admin);
    let demo = demo(&mut c, file.demo_upstream.as_deref());
    let routing = routing(&mut c, &file.routing);
    let billing = billing(&mut c, &file.billing);
    let models = models(&mut c, &file.models);
    let model_ids: HashSet<String> = models.iter().map(|m| m.id.clone()).collect();
    let channels = channels(&mut c, &file.channels, &model_ids);
    let plans = plans(&mut c, &file.plans);
    let plan_ids: HashSet<String> = plans.iter().map(|p| p.id.clone()).collect();
    let console = console(&mut c, &file.console);
    let payments = payments(&mut c, &file.payments, &plan_ids);
    let cluster = cluster(&mut c, file.storage.redis_url.as_deref(), &file.cluster, ca_file);
    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    Ok(Config {
        listeners: server.listeners,
        threads: server.threads,
        grace_period: server.grace_period,
        keepalive_timeout: server.keepalive_timeout,
        max_body_bytes: server.max_body_bytes,
        max_header_bytes: server.max_header_bytes,
        max_headers: server.max_headers,
        h2c: server.h2c,
        max_connections_per_ip: server.max_connections_per_ip,
        header_timeout: server.header_timeout,
        data_dir: storage.data_dir,
        database: storage.database,
        flush_interval: storage.flush_interval,
        usage_retention: storage.usage_retention,
        write_failure_grace: storage.write_failure_grace,
        access_log: storage.access_log,
        admin,
        demo,
        routing,
        billing,
        channels,
        models,
        plans,
        console,
        payments,
        cluster,
    })
}

struct Server {
    listeners: Vec<Listener>,
    threads: usize,
    grace_period: Duration,
    keepalive_timeout: Duration,
    max_body_bytes: usize,
    max_header_bytes: usize,
    max_headers: usize,
    h2c: bool,
    max_connections_per_ip: Option<u32>,
    header_timeout: Option<Duration>,
}

fn server(c: &mut Check, s: &ServerSection, conf_dir: &Path) -> Server {
    if s.listen.is_empty() {
        c.err("server.listen", "at least one listener is required");
    }
    let mut listeners = Vec::new();
    for (i, l) in s.listen.iter().enumerate() {
        let path = format!("server.listen[{i}]");
        let (addr, tls) = match l {
            ListenSection::Plain(a) => (a.as_str(), None),
            ListenSection::Full(f) => (f.address.as_str(), f.tls.as_ref()),
        };
        let Ok(address) = addr.parse::<SocketAddr>() else {
            c.err(&path, format!("{addr:?} is not an IP:port address"));
            continue;
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
    let max_body_bytes = s.max_body_size.map(|s| s.0).unwrap_or(32 << 20);
    if max_body_bytes == 0 || max_body_bytes > (1 << 32) {
        c.err("server.max_body_size", "must be between 1 byte and 4GiB");
    }
    // Pingora itself reads at most 1 MiB of head and 256 headers.
    let max_header_bytes = s.max_header_size.map(|s| s.0).unwrap_or(64 << 10);
    if !(1 << 10..=1 << 20).contains(&max_header_bytes) {
        c.err("server.max_header_size", "must be between 1KiB and 1MiB");
    }
    Server {
        listeners,
        max_header_bytes: max_header_bytes as usize,
        h2c: s.h2c.unwrap_or(false),
        max_headers: c.u64("server.max_headers", s.max_headers, 100, 8, 256) as usize,
        threads: c.u64("server.threads", s.threads, 2, 1, 256) as usize,
        grace_period: s.grace_period.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
        keepalive_timeout: s.keepalive_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(60)),
        max_body_bytes: max_body_bytes as usize,
        // 0 turns either off (say, behind a load balancer all clients share
        // its address).
        max_connections_per_ip: Some(c.u64(
            "server.max_connections_per_ip",
            s.max_connections_per_ip,
            1024,
            0,
            1 << 20,
        ))
        .filter(|n| *n > 0)
        .map(|n| n as u32),
        header_timeout: Some(s.header_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(15))).filter(|d| !d.is_zero()),
    }
}

struct Storage {
    data_dir: PathBuf,
    database: Database,
    flush_interval: Duration,
    usage_retention: Option<Duration>,
    write_failure_grace: Duration,
    access_log: Option<PathBuf>,
}

fn storage(c: &mut Check, file: &FileConfig, ca_file: Option<PathBuf>) -> Storage {
    let data_dir = PathBuf::from(file.storage.data_dir.as_deref().unwrap_or("./data"));
    if data_dir.as_os_str().is_empty() {
        c.err("storage.data_dir", "must not be empty");
    }
    let database = database(c, &file.storage, &data_dir, ca_file);
    let flush_interval = file.storage.flush_interval.map(|d| d.0).unwrap_or(Duration::from_millis(200));
    if flush_interval > Duration::from_secs(1) || flush_interval.is_zero() {
        c.err("storage.flush_interval", "must be between 1ms and 1s (it bounds what a crash can lose)");
    }
    let access_log = match file.access_log.path.as_deref() {
        Some("off") | Some("") => None,
        Some(p) => Some(resolve(&data_dir, p)),
        None => Some(data_dir.join("access.log")),
    };
    let usage_retention = match file.storage.usage_retention.as_deref().map(str::trim) {
        None | Some("off") | Some("") => None,
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) if d >= Duration::from_secs(86_400) => Some(d),
            Ok(_) => {
                c.err("storage.usage_retention", "must be at least 1d (or off)");
                None
            }
            Err(e) => {
                c.err("storage.usage_retention", format!("not a duration like 90d: {e}"));
                None
            }
        },
    };
    let write_failure_grace = file.storage.write_failure_grace.map_or(Duration::from_secs(30), |d| d.0);
    if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&write_failure_grace) {
        c.err("storage.write_failure_grace", "must be between 1s and 10m");
    }
    Storage { data_dir, database, flush_interval, usage_retention, write_failure_grace, access_log }
}

/// The environment variable PostgreSQL's password is read from by default.
pub const PASSWORD_ENV: &str = "CODEX_PROXY_DB_PASSWORD";

/// `storage.ca_file`, read now so that a bad file is named at load.
fn ca_file(c: &mut Check, s: &StorageSection, conf_dir: &Path) -> Option<PathBuf> {
    let path = resolve(conf_dir, s.ca_file.as_deref().map(str::trim).filter(|p| !p.is_empty())?);
    let redis_tls = s.redis_url.as_deref().is_some_and(|u| u.trim().starts_with("rediss://"));
    if s.backend.as_deref() != Some("postgres") && !redis_tls {
        c.err("storage.ca_file", "is for TLS to PostgreSQL (backend: postgres) or to Redis (rediss://)");
    }
    if let Err(e) = crate::store::db::tls::roots_from_file(&path) {
        c.err("storage.ca_file", e);
    }
    Some(path)
}

fn database(c: &mut Check, s: &StorageSection, data_dir: &Path, ca_file: Option<PathBuf>) -> Database {
    let sqlite = || Database::Sqlite(resolve(data_dir, s.database.as_deref().unwrap_or("codex-proxy.db")));
    match s.backend.as_deref().unwrap_or("sqlite") {
        "sqlite" => {
            if s.url.is_some() {
                c.err("storage.url", "is for backend: postgres (SQLite uses storage.database)");
            }
            sqlite()
        }
        "postgres" => {
            if s.database.is_some() {
                c.err("storage.database", "is the SQLite file; PostgreSQL's database is named in storage.url");
            }
            let url = s.url.as_deref().map(str::trim).unwrap_or("");
            if url.is_empty() {
                c.err("storage.url", "is required with backend: postgres (postgres://user@host:5432/codex)");
            } else if let Err(e) = PgTarget::check_url(url) {
                c.err("storage.url", e);
            }
            let password_env = s.password_env.clone().unwrap_or_else(|| PASSWORD_ENV.to_string());
            if password_env.is_empty() || !password_env.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                c.err("storage.password_env", "must be an environment variable's name");
            }
            Database::Postgres(PgTarget {
                url: url.to_string(),
                password_env,
                data_dir: data_dir.to_path_buf(),
                ca_file,
            })
        }
        other => {
            c.err("storage.backend", format!("{other:?} is not sqlite or postgres"));
            sqlite()
        }
    }
}

fn cluster(c: &mut Check, url: Option<&str>, s: &ClusterSection, ca_file: Option<PathBuf>) -> Option<ClusterConfig> {
    let url = url.map(str::trim).filter(|u| !u.is_empty());
    let on_redis_down = match s.on_redis_down.as_deref().unwrap_or("local_limits") {
        "local_limits" => RedisDown::LocalLimits,
        "fail_closed" => RedisDown::FailClosed,
        other => {
            c.err("cluster.on_redis_down", format!("{other:?} is not fail_closed or local_limits"));
            RedisDown::LocalLimits
        }
    };
    let nodes = c.u64("cluster.nodes", s.nodes, 1, 1, 1_000) as u32;
    let lease_ttl = s.lease_ttl.map_or(Duration::from_secs(10), |d| d.0);
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&lease_ttl) {
        c.err("cluster.lease_ttl", "must be between 1s and 5m");
    }
    let redis_timeout = s.redis_timeout.map_or(Duration::from_millis(250), |d| d.0);
    if !(Duration::from_millis(10)..=Duration::from_secs(5)).contains(&redis_timeout) {
        c.err("cluster.redis_timeout", "must be between 10ms and 5s");
    }
    let url = url?;
    if !["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|p| url.starts_with(p)) {
        c.err("storage.redis_url", "must start with redis://, rediss:// or unix://");
    }
    let ca_file = ca_file.filter(|_| url.starts_with("rediss://"));
    Some(ClusterConfig {
        redis_url: Secret::new(url.to_string()),
        nodes,
        on_redis_down,
        lease_ttl,
        redis_timeout,
        ca_file,
    })
}

fn admin(c: &mut Check, a: &AdminSection) -> AdminConfig {
    let listen = match a.listen.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 8081))),
        Some("") | Some("off") => None,
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                c.err("admin.listen", format!("{s:?} is not an IP:port address"));
                None
            }
        },
    };
    let token = Secret::new(a.token.clone().unwrap_or_default());
    if let Some(addr) = listen {
        if !addr.ip().is_loopback() && token.is_empty() {
            c.err("admin.token", format!("required when admin.listen ({addr}) is not a loopback address"));
        }
        if !token.is_empty() && token.expose().len() < 16 {
            c.err("admin.token", "must be at least 16 characters");
        }
    }
    AdminConfig { listen, token }
}

fn demo(c: &mut Check, v: Option<&str>) -> DemoMode {
    match v.unwrap_or("auto") {
        "auto" => DemoMode::Auto,
        "always" => DemoMode::Always,
        "never" => DemoMode::Never,
        other => {
            c.err("demo_upstream", format!("must be auto, always or never, got {other:?}"));
            DemoMode::Auto
        }
    }
}

fn routing(c: &mut Check, r: &RoutingSection) -> RoutingConfig {
    let affinity_keys = match &r.affinity_keys {
        None => AffinityKey::defaults(),
        Some(keys) => keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                AffinityKey::parse(k).map_err(|e| c.err(format!("routing.affinity_keys[{i}]"), e)).ok()
            })
            .collect(),
    };
    let routing = RoutingConfig {
        max_attempts: c.u64("routing.max_attempts", r.max_attempts, 3, 1, 10) as usize,
        default_cooldown: r.default_cooldown.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
        affinity_keys,
        affinity_ttl: r.affinity_ttl.map(|d| d.0).unwrap_or(Duration::from_secs(3600)),
        affinity_max_entries: c.u64("routing.affinity_max_entries", r.affinity_max_entries, 100_000, 0, 10_000_000)
            as usize,
        failure_window: r.failure_window.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
        failure_threshold: c.u64("routing.failure_threshold", r.failure_threshold, 5, 1, 1000) as u32,
        ejection_time: r.ejection_time.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
        stream_hold: r.stream_hold.map(|d| d.0).unwrap_or(DEFAULT_STREAM_HOLD),
        stream_keepalive: Some(r.stream_keepalive.map_or(Duration::from_secs(15), |d| d.0)).filter(|d| !d.is_zero()),
        responses_websocket: r.responses_websocket.unwrap_or(true),
    };
    if routing.stream_hold > MAX_STREAM_HOLD {
        c.err(
            "routing.stream_hold",
            format!("must be at most {MAX_STREAM_HOLD:?}: CDNs and clients give up on a response without headers"),
        );
    }
    routing
}

fn billing(c: &mut Check, b: &BillingSection) -> BillingConfig {
    let utc_offset_secs = parse_utc_offset(b.timezone.as_deref().unwrap_or("UTC")).unwrap_or_else(|e| {
        c.err("billing.timezone", e);
        0
    });
    let max_reservation = b.max_reservation.map(|c| c.0).unwrap_or_else(|| parse_credits("1").unwrap_or(0));
    if max_reservation < 0 {
        c.err("billing.max_reservation", "must not be negative");
    }
    BillingConfig {
        utc_offset_secs,
        default_concurrency: c.u64("billing.default_concurrency", b.default_concurrency, 4, 1, 100_000) as u32,
        max_reservation,
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
    }
}

fn models(c: &mut Check, list: &[ModelSection]) -> Vec<ModelConfig> {
    let mut seen = HashSet::new();
    let mut models = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let path = format!("models[{i}]");
        if m.id.trim().is_empty() || m.id.chars().any(char::is_whitespace) {
            c.err(format!("{path}.id"), format!("invalid model id {:?}", m.id));
        }
        c.unique(&mut seen, format!("{path}.id"), "model", &m.id);
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
    models
}

fn channels(c: &mut Check, list: &[ChannelSection], model_ids: &HashSet<String>) -> Vec<ChannelConfig> {
    let mut seen = HashSet::new();
    let mut channels = Vec::new();
    for (i, ch) in list.iter().enumerate() {
        let path = format!("channels[{i}]");
        c.name(format!("{path}.name"), &ch.name);
        c.unique(&mut seen, format!("{path}.name"), "channel", &ch.name);
        if let Some(channel) = channel(c, &path, ch, model_ids) {
            channels.push(channel);
        }
    }
    channels
}

fn channel(c: &mut Check, path: &str, ch: &ChannelSection, model_ids: &HashSet<String>) -> Option<ChannelConfig> {
    let kind = match ch.kind.as_str() {
        "openai" => ChannelKind::OpenAi,
        "openai-chat" => ChannelKind::OpenAiChat,
        "anthropic" => ChannelKind::Anthropic,
        other => {
            c.err(format!("{path}.kind"), format!("must be openai, openai-chat or anthropic, got {other:?}"));
            ChannelKind::OpenAi
        }
    };
    let base_url = BaseUrl::parse(&ch.base_url).map_err(|e| c.err(format!("{path}.base_url"), e)).ok()?;
    let quirks = ch.quirks.clone().unwrap_or_default();
    if ch.quirks.is_some() && kind == ChannelKind::Anthropic {
        c.err(format!("{path}.quirks"), "only applies to openai and openai-chat channels");
    }
    for (field, message) in quirks.problems() {
        c.err(format!("{path}.quirks.{field}"), message);
    }
    Some(ChannelConfig {
        name: ch.name.clone(),
        kind,
        base_url,
        api_key: Secret::new(ch.api_key.clone().unwrap_or_default()),
        models: channel_models(c, path, &ch.models, model_ids),
        weight: c.u64(&format!("{path}.weight"), ch.weight, 1, 1, 10_000) as u32,
        priority: c.u64(&format!("{path}.priority"), ch.priority, 0, 0, 1000) as i32,
        enabled: ch.enabled.unwrap_or(true),
        force_translation: ch.force_translation.unwrap_or(false),
        headers: channel_headers(c, path, &ch.headers),
        timeouts: timeouts(c, path, &ch.timeouts),
        health: health_check(c, path, &ch.health_check, kind),
        context_window: ch
            .context_window
            .map(|n| c.u64(&format!("{path}.context_window"), Some(n), 0, 1, u64::MAX >> 12)),
        quirks,
    })
}

/// Client-facing model → the upstream's name for it.
fn channel_models(
    c: &mut Check,
    path: &str,
    list: &[ChannelModelSection],
    model_ids: &HashSet<String>,
) -> BTreeMap<String, String> {
    if list.is_empty() {
        c.err(format!("{path}.models"), "a channel must serve at least one model");
    }
    let mut map = BTreeMap::new();
    for (j, m) in list.iter().enumerate() {
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
    map
}

fn channel_headers(c: &mut Check, path: &str, headers: &BTreeMap<String, String>) -> Vec<(String, Secret)> {
    let mut out = Vec::new();
    for (k, v) in headers {
        let ok = http::HeaderName::from_bytes(k.as_bytes()).is_ok() && http::HeaderValue::from_str(v).is_ok();
        if !ok {
            c.err(format!("{path}.headers.{k}"), "invalid header name or value");
        }
        out.push((k.to_ascii_lowercase(), Secret::new(v.clone())));
    }
    out
}

fn timeouts(c: &mut Check, path: &str, t: &TimeoutsSection) -> Timeouts {
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
    timeouts
}

fn health_check(c: &mut Check, path: &str, h: &HealthCheckSection, kind: ChannelKind) -> HealthCheck {
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
    health
}

fn plans(c: &mut Check, list: &[PlanSection]) -> Vec<PlanConfig> {
    let mut seen = HashSet::new();
    let mut plans = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let path = format!("plans[{i}]");
        c.name(format!("{path}.id"), &p.id);
        c.unique(&mut seen, format!("{path}.id"), "plan", &p.id);
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
    plans
}

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
        c.name(format!("{path}.id"), &p.id);
        c.unique(&mut ids, format!("{path}.id"), "package", &p.id);
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
