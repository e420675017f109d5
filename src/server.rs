//! `codex-proxy serve`: builds the state, wires the Pingora services (proxy,
//! background writers, resolver, demo upstream) and runs until a signal.

use crate::access_log::AccessLog;
use crate::accounts::{Accounts, Directory};
use crate::app::{App, Live};
use crate::billing::Billing;
use crate::channels::{Channels, Resolver};
use crate::clock::SystemClock;
use crate::config::{Config, DemoMode};
use crate::connections;
use crate::listen::{self, Bound};
use crate::proxy::Gateway;
use crate::reload::{OnHangup, Reloader};
use crate::shutdown::{self, LogReopener, Signals};
use crate::store::{self, writer::Writer};
use crate::tls::Certificates;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the access log {path}: {source}")]
    AccessLog { path: String, source: std::io::Error },
    #[error("TLS listener {addr}: {message}")]
    Tls { addr: SocketAddr, message: String },
    #[error("cannot build the channel pools: {source}")]
    Channels { source: std::io::Error },
    #[error("cannot write a generated secret (admin token, signing key) into the data directory: {source}")]
    Secret { source: std::io::Error },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// The health-check service's longest tick.
const HEALTH_TICK: Duration = Duration::from_secs(1);

/// Command-line switches of `serve`.
#[derive(Debug, Default, Clone)]
pub struct ServeOptions {
    pub daemon: bool,
    pub upgrade: bool,
    /// The file `cfg` came from, re-read on reload.
    pub config_path: std::path::PathBuf,
}

/// The serving process's pid (Pingora writes it when daemonized; `Ready`
/// writes it in every mode, for `codex-proxy reload` and scripts).
pub fn pid_file(cfg: &Config) -> std::path::PathBuf {
    cfg.data_dir.join("codex-proxy.pid")
}

/// Where a process started with `serve --upgrade` waits for the listeners.
fn upgrade_sock(cfg: &Config) -> std::path::PathBuf {
    cfg.data_dir.join("codex-proxy-upgrade.sock")
}

/// Whether the demo upstream stands in, given the conf.
pub fn demo_active(cfg: &Config) -> bool {
    match cfg.demo {
        DemoMode::Always => true,
        DemoMode::Never => false,
        DemoMode::Auto => cfg.channels.iter().all(|c| c.api_key.is_empty()),
    }
}

pub fn serve(cfg: Config, opts: ServeOptions) -> Result<(), ServeError> {
    let cfg = Arc::new(cfg);
    let conn = store::open(&cfg.database)?;
    let accounts = Arc::new(Accounts::new(Directory::load(&conn)?));
    let (billing, ledger_check) = Billing::load_checked(cfg.clone(), Arc::new(SystemClock), &conn)?;
    let billing = Arc::new(billing);
    let cluster = cfg.cluster.as_ref().map(crate::cluster::Cluster::new).transpose()?;
    if let Some(c) = &cluster {
        billing.join(c.clone());
    }
    let switched_off = store::channels::disabled(&conn)?;
    drop(conn);

    let demo = demo_active(&cfg);
    let demo_listener = if demo {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("loopback");
        let l = std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
        let a = l.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
        log::warn!("==================================================================");
        log::warn!("DEMO MODE: no upstream API key is configured (OPENAI_API_KEY,");
        log::warn!("ANTHROPIC_API_KEY). Every answer comes from the built-in fake");
        log::warn!("upstream on {a}. Set a key to reach a real provider.");
        log::warn!("==================================================================");
        Some((l, a))
    } else {
        for ch in cfg.channels.iter().filter(|c| c.api_key.is_empty() && c.enabled) {
            log::warn!("channel {} has no API key and takes no traffic", ch.name);
        }
        None
    };
    let channels = Arc::new(
        Channels::build(&cfg, demo_listener.as_ref().map(|(_, a)| *a))
            .map_err(|source| ServeError::Channels { source })?,
    );
    Resolver::resolve_all(&channels);
    for (name, actor) in switched_off {
        if let Some(ch) = channels.by_name(&name) {
            ch.state.disable();
            log::warn!("channel {name} stays disabled: {actor} disabled it (enable it in the console or with `channels enable`)");
        }
    }

    let (writer, writer_task) = Writer::channel();
    let (access_log, log_task) = match &cfg.access_log {
        Some(path) => {
            let (log, task) = AccessLog::new(path);
            task.check().map_err(|source| ServeError::AccessLog { path: path.display().to_string(), source })?;
            (log, Some(task))
        }
        None => (AccessLog::disabled(), None),
    };
    let app = App::new(cfg.clone(), accounts.clone(), billing.clone(), channels.clone(), writer, access_log, demo)
        .map_err(|source| ServeError::Secret { source })?;
    let app = Arc::new(app);
    let live = Live::new(app.clone());

    let conf = ServerConf {
        threads: cfg.threads,
        // Pingora's own grace sleep is only a backstop: `Signals` exits as soon
        // as the last request is done.
        grace_period_seconds: Some(cfg.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: pid_file(&cfg).display().to_string(),
        upgrade_sock: upgrade_sock(&cfg).display().to_string(),
        daemon: opts.daemon,
        ..Default::default()
    };
    let opt = Opt { upgrade: opts.upgrade, daemon: opts.daemon, ..Default::default() };
    let mut server = Server::new_with_opt_and_conf(opt, conf);

    // The proxy service and its listeners.
    let mut proxy_app = pingora::proxy::http_proxy(&server.configuration, Gateway::new(live.clone()));
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = cfg.h2c;
    // An idle HTTP/2 connection is closed like an idle HTTP/1.1 one
    // (Pingora keeps it forever otherwise).
    options.h2_idle_timeout = Some(cfg.keepalive_timeout).filter(|d| !d.is_zero());
    proxy_app.server_options = Some(options);
    let limits =
        connections::Limits { per_ip: cfg.max_connections_per_ip, header_timeout: cfg.header_timeout, h2c: cfg.h2c };
    let guarded = connections::Guarded::new(proxy_app, limits, app.opening.clone(), app.metrics.clone());
    let mut proxy = pingora::services::listening::Service::new("codex-proxy".to_string(), guarded);
    let mut bound = Vec::new();
    let mut certs = Vec::new();
    for l in &cfg.listeners {
        let b = Bound::reserve(l.address).map_err(|source| ServeError::Bind { addr: l.address, source })?;
        let addr = b.addr.to_string();
        match &l.tls {
            Some(tls) => {
                let tls_error = |message: String| ServeError::Tls { addr: l.address, message };
                let slot = Certificates::load(tls).map_err(|e| tls_error(e.to_string()))?;
                // The certificate comes from the slot a reload swaps, not
                // from the files Pingora would read once.
                let mut settings =
                    pingora::listeners::tls::TlsSettings::intermediate("", "").map_err(|e| tls_error(e.to_string()))?;
                settings.set_cert_resolver(slot.clone());
                settings.enable_h2();
                proxy.add_tls_with_settings(&addr, b.socket_options(), settings);
                certs.push((l.address, slot));
            }
            None => match b.socket_options() {
                Some(o) => proxy.add_tcp_with_settings(&addr, o),
                None => proxy.add_tcp(&addr),
            },
        }
        bound.push(b);
    }
    server.add_service(proxy);
    let reloader =
        Arc::new(Reloader::new(opts.config_path.clone(), live.clone(), demo_listener.as_ref().map(|(_, a)| *a), certs));
    if let Some(c) = &cluster {
        reloader.join(c.clone());
    }

    // The admin API, on its own listener.
    let admin_addr = match cfg.admin.listen {
        Some(addr) => {
            let token = crate::admin::resolve_token(&app).map_err(|source| ServeError::Secret { source })?;
            let b = Bound::reserve(addr).map_err(|source| ServeError::Bind { addr, source })?;
            let mut admin = pingora::services::listening::Service::new(
                "admin".into(),
                crate::admin::Admin::new(reloader.clone(), token),
            );
            admin.threads = Some(1);
            match b.socket_options() {
                Some(o) => admin.add_tcp_with_settings(&b.addr.to_string(), o),
                None => admin.add_tcp(&b.addr.to_string()),
            }
            let a = b.addr;
            bound.push(b);
            server.add_service(admin);
            Some(a)
        }
        None => None,
    };

    // Background work. Threads start inside services: they would not survive
    // daemonisation if started here.
    let db_path = cfg.database.clone();
    let flush_interval = cfg.flush_interval;
    let (accounts_for_reload, billing_for_reload) = (accounts.clone(), billing.clone());
    let writer_task = match &cluster {
        Some(c) => {
            let c = c.clone();
            writer_task.on_posted(Box::new(move |posted| c.posted(posted)))
        }
        None => writer_task,
    };
    if let Some(c) = cluster {
        server.add_service(background_service("cluster", OnStart::new(move || c.start().map_err(|e| e.to_string()))));
    }
    server.add_service(background_service(
        "db-writer",
        OnStart::new(move || {
            let conn = store::open(&db_path).map_err(|e| e.to_string())?;
            conn.set_writer().map_err(|e| e.to_string())?;
            writer_task
                .spawn(
                    conn,
                    flush_interval,
                    Box::new(move |c| {
                        accounts_for_reload.reload(c);
                        billing_for_reload.apply_external(c);
                    }),
                )
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    ));
    let (db_path, billing_to_check) = (cfg.database.clone(), billing.clone());
    server.add_service(background_service(
        "ledger-check",
        OnStart::new(move || {
            std::thread::Builder::new()
                .name("codex-proxy-ledger-check".into())
                .spawn(move || check_ledger(&db_path, ledger_check, &billing_to_check))
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    ));
    if let Some(task) = log_task {
        server.add_service(background_service(
            "access-log",
            OnStart::new(move || task.spawn().map(|_| ()).map_err(|e| e.to_string())),
        ));
    }
    server.add_service(background_service("resolver", Resolver::new(live.clone(), Duration::from_secs(60))));
    // One health-check loop for every pool of every generation (they share
    // the registry). It ticks at least every second, so a channel a reload
    // adds with a short interval is probed on time; a channel not yet due
    // costs nothing.
    let tick = crate::channels::health::tick(channels.all()).map_or(HEALTH_TICK, |t| t.min(HEALTH_TICK));
    let mut hc = pingora::lb::HealthCheckService::new(channels.pools().registry().clone());
    hc.health_check_frequency = Some(tick);
    hc.parallel_health_check = true;
    server.add_service(background_service("health-check", hc));
    server.add_service(background_service("log-reopen", LogReopener(app.clone())));
    server.add_service(background_service("reload", OnHangup(reloader.clone())));
    server.add_service(background_service(
        "upgrade",
        crate::upgrade::OnUpgradeSignal { config_path: opts.config_path.clone(), upgrade_sock: upgrade_sock(&cfg) },
    ));
    if let Some(keep) = cfg.usage_retention {
        server.add_service(background_service("usage-pruner", UsagePruner(app.clone(), keep)));
    }
    server.add_service(background_service("order-expiry", OrderExpiry(live.clone())));
    if let Some((listener, _)) = demo_listener {
        server.add_service(background_service("demo-upstream", DemoUpstream(Mutex::new(Some(listener)))));
    }
    let addrs: Vec<SocketAddr> = bound.iter().map(|b| b.addr).filter(|a| Some(*a) != admin_addr).collect();
    server.add_service(background_service(
        "ready",
        Ready {
            addrs,
            admin: admin_addr,
            admin_addr_file: cfg.data_dir.join("admin.addr"),
            pid_file: pid_file(&cfg),
            demo,
            placeholders: Mutex::new(bound),
        },
    ));

    server.bootstrap();
    let phases = parking_lot::Mutex::new(Some(server.watch_execution_phase()));
    let pid_file = pid_file(&cfg);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals { app: app.clone(), grace: cfg.grace_period, phases, pid_file }),
    });
    shutdown::flush(&app);
    Ok(())
}

/// Runs a closure once when the server starts (after any daemon fork).
/// Checks the credit totals loaded at start (snapshot + newer entries)
/// against a sum of the whole ledger, after the gateway is serving.
fn check_ledger(db: &store::Database, check: crate::billing::LedgerCheck, billing: &crate::billing::Billing) {
    let started = std::time::Instant::now();
    match store::open(db).and_then(|conn| check.run(&conn, billing)) {
        Ok(0) => log::info!("ledger snapshot checked against the ledger in {:?}", started.elapsed()),
        Ok(n) => log::error!("ledger snapshot was wrong for {n} users; corrected from the ledger"),
        Err(e) => log::error!("checking the ledger snapshot failed: {e}"),
    }
}

struct OnStart<F>(Mutex<Option<F>>);

impl<F> OnStart<F> {
    fn new(f: F) -> Self {
        OnStart(Mutex::new(Some(f)))
    }
}

#[async_trait]
impl<F> BackgroundService for OnStart<F>
where
    F: FnOnce() -> Result<(), String> + Send + Sync + 'static,
{
    async fn start(&self, _shutdown: ShutdownWatch) {
        let f = self.0.lock().take();
        if let Some(f) = f {
            if let Err(e) = f() {
                log::error!("background task failed to start: {e}; exiting");
                std::process::exit(1);
            }
        }
    }
}

/// Expires unpaid orders whose time is up, every minute (while payments are
/// configured: a reload may turn them on or off).
struct OrderExpiry(Arc<Live>);

#[async_trait]
impl BackgroundService for OrderExpiry {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let app = self.0.current();
            if app.payments.is_none() {
                continue;
            }
            match crate::payments::expire_due(&app).await {
                Ok(0) => {}
                Ok(n) => log::info!("{n} unpaid order(s) expired"),
                Err(e) => log::error!("expiring orders failed: {e}"),
            }
        }
    }
}

/// Asks the writer, every hour (the first time a minute after start), to
/// delete usage rows older than `storage.usage_retention`.
struct UsagePruner(Arc<App>, Duration);

#[async_trait]
impl BackgroundService for UsagePruner {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let start = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut tick = tokio::time::interval_at(start, Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let before = crate::clock::now_ms() - self.1.as_millis() as i64;
                    self.0.writer.send(store::writer::WriteOp::PruneUsage(before)).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The built-in fake upstream of demo mode.
struct DemoUpstream(Mutex<Option<std::net::TcpListener>>);

#[async_trait]
impl BackgroundService for DemoUpstream {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(listener) = self.0.lock().take() else { return };
        let state = crate::fake_upstream::FakeState::new(Default::default());
        if let Err(e) = crate::fake_upstream::serve(listener, state, async move {
            let _ = shutdown.changed().await;
        })
        .await
        {
            log::error!("demo upstream stopped: {e}");
        }
    }
}

/// Announces readiness once every listener accepts connections: one JSON line
/// on stdout (`{"event":"ready","listen":[...]}`) that scripts and tests read.
struct Ready {
    addrs: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    admin_addr_file: std::path::PathBuf,
    pid_file: std::path::PathBuf,
    demo: bool,
    placeholders: Mutex<Vec<Bound>>,
}

#[async_trait]
impl BackgroundService for Ready {
    async fn start(&self, _shutdown: ShutdownWatch) {
        for addr in self.addrs.iter().chain(self.admin.iter()) {
            if !listen::wait_listening(*addr, Duration::from_secs(30)).await {
                log::error!("listener {addr} did not come up within 30s");
            }
        }
        // Pingora holds the ports now; the placeholders can go.
        self.placeholders.lock().clear();
        // After an upgrade this is the new process's pid.
        if let Err(e) = store::secret::write_private(&self.pid_file, std::process::id().to_string().as_bytes()) {
            log::warn!("cannot write {}: {e}", self.pid_file.display());
        }
        // The CLI finds an OS-picked admin port here.
        if let Some(admin) = self.admin {
            if let Err(e) = std::fs::write(&self.admin_addr_file, admin.to_string()) {
                log::warn!("cannot write {}: {e}", self.admin_addr_file.display());
            }
        }
        let line = serde_json::json!({
            "event": "ready",
            "listen": self.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "admin": self.admin.map(|a| a.to_string()),
            "demo": self.demo,
        });
        log::info!("codex-proxy ready on {:?}{}", self.addrs, if self.demo { " (DEMO MODE)" } else { "" });
        println!("{line}");
        crate::upgrade::notify_ready();
    }
}
