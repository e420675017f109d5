//! Live reload: `SIGHUP`, or `POST /admin/config/reload` (what
//! `codex-proxy reload` calls), re-reads the YAML file into the running
//! gateway. Channels, models and prices, plans, routing, quirks, billing
//! parameters and the listeners' certificates change; requests that start
//! afterwards see the new configuration whole, requests in flight finish on
//! the one they started with (each holds its own generation of `App`).
//!
//! A file that fails validation changes nothing. Settings that only a new
//! process can apply (listeners, threads, the data directory and the like)
//! keep their running values and are logged as needing an upgrade.

use crate::app::{App, Live};
use crate::config::{self, Config, ConfigErrors};
use crate::server::demo_active;
use crate::shutdown::on_each_signal;
use crate::tls::{CertError, Certificates};
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::SignalKind;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the configuration is invalid:\n{0}")]
    Invalid(ConfigErrors),
    #[error("TLS listener {addr}: {source}")]
    Certificate { addr: SocketAddr, source: CertError },
    #[error("cannot build the channel pools: {0}")]
    Channels(std::io::Error),
}

/// What the last reload attempt came to (for `GET /admin/config`).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub at_ms: i64,
    pub ok: bool,
    /// The version in force afterwards.
    pub version: u64,
    pub errors: Vec<String>,
    /// Settings changed in the file that keep their running values.
    pub needs_upgrade: Vec<&'static str>,
}

/// Reloads one running gateway's configuration from its file.
pub struct Reloader {
    path: PathBuf,
    live: Arc<Live>,
    /// The built-in upstream's address in demo mode.
    demo: Option<SocketAddr>,
    /// The certificates of each TLS listener, by address.
    certs: Vec<(SocketAddr, Arc<Certificates>)>,
    /// One reload at a time.
    busy: Mutex<()>,
    /// The other nodes, told of each reload made here.
    cluster: once_cell::sync::OnceCell<Arc<crate::cluster::Cluster>>,
}

/// The last reload attempt, shared by every generation of `App`.
#[derive(Default)]
pub struct History(Mutex<Option<Outcome>>);

impl History {
    pub fn last(&self) -> Option<Outcome> {
        self.0.lock().clone()
    }
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        live: Arc<Live>,
        demo: Option<SocketAddr>,
        certs: Vec<(SocketAddr, Arc<Certificates>)>,
    ) -> Reloader {
        Reloader { path, live, demo, certs, busy: Mutex::new(()), cluster: Default::default() }
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Makes reloads made here reach the other nodes of `cluster`, and
    /// theirs reach this one.
    pub fn join(self: &Arc<Self>, cluster: Arc<crate::cluster::Cluster>) {
        let weak = Arc::downgrade(self);
        cluster.on_peer_reload(Arc::new(move || {
            if let Some(r) = weak.upgrade() {
                r.reload_here();
            }
        }));
        let _ = self.cluster.set(cluster);
    }

    /// Re-reads the file and, when it is valid, makes it the configuration
    /// of every request from now on; then tells the other nodes of a
    /// cluster to reload theirs. Blocking (file and DNS reads): call it off
    /// the request path.
    pub fn reload(&self) -> Outcome {
        let outcome = self.reload_here();
        if let (true, Some(c)) = (outcome.ok, self.cluster.get()) {
            c.announce_reload();
        }
        outcome
    }

    /// `reload` for this node alone (another node asked for it).
    fn reload_here(&self) -> Outcome {
        let _one = self.busy.lock();
        let running = self.live.current();
        let outcome = match self.prepare(&running) {
            Ok((next, needs_upgrade)) => {
                let version = next.version;
                self.live.replace(Arc::new(next));
                log::info!("configuration reloaded from {}: version {version}", self.path.display());
                Outcome { at_ms: crate::clock::now_ms(), ok: true, version, errors: Vec::new(), needs_upgrade }
            }
            Err(e) => {
                let errors = match &e {
                    ReloadError::Invalid(list) => list.0.iter().map(|f| format!("{}: {}", f.path, f.message)).collect(),
                    other => vec![other.to_string()],
                };
                for line in &errors {
                    log::error!("reload refused, the running configuration stays: {line}");
                }
                let at_ms = crate::clock::now_ms();
                Outcome { at_ms, ok: false, version: running.version, errors, needs_upgrade: Vec::new() }
            }
        };
        *running.reloads.0.lock() = Some(outcome.clone());
        outcome
    }

    /// Everything that can fail, before anything changes: the next
    /// generation, and the settings that need an upgrade.
    fn prepare(&self, running: &App) -> Result<(App, Vec<&'static str>), ReloadError> {
        let mut cfg = config::load(&self.path).map_err(ReloadError::Invalid)?;
        let needs_upgrade = keep_restart_only(&running.config, &mut cfg);
        for name in &needs_upgrade {
            log::warn!("{name} changed in the file: it needs an upgrade (serve --upgrade), the running value stays");
        }
        let certs = self.read_certificates(&cfg)?;
        let channels = running.channels.rebuild(&cfg, self.demo).map_err(ReloadError::Channels)?;
        crate::channels::Resolver::resolve_all(&channels);
        keep_operator_switches(&cfg, &channels);
        // Nothing can fail from here on.
        for (slot, key) in certs {
            slot.replace(key);
        }
        Ok((running.reconfigured(Arc::new(cfg), Arc::new(channels)), needs_upgrade))
    }

    /// The new certificate of every TLS listener, read and checked.
    #[allow(clippy::type_complexity)]
    fn read_certificates(
        &self,
        cfg: &Config,
    ) -> Result<Vec<(&Arc<Certificates>, Arc<pingora::tls::sign::CertifiedKey>)>, ReloadError> {
        let mut read = Vec::new();
        for (addr, slot) in &self.certs {
            let files = cfg.listeners.iter().find(|l| l.address == *addr).and_then(|l| l.tls.as_ref());
            if let Some(files) = files {
                let key = crate::tls::read(files).map_err(|source| ReloadError::Certificate { addr: *addr, source })?;
                read.push((slot, key));
            }
        }
        Ok(read)
    }
}

/// A channel an operator switched off stays off in the new configuration
/// (the switch is saved in the database; carried-over channels share it).
fn keep_operator_switches(cfg: &Config, channels: &crate::channels::Channels) {
    match crate::store::open(&cfg.database).and_then(|c| crate::store::channels::disabled(&c)) {
        Ok(off) => {
            for (name, _) in off {
                if let Some(ch) = channels.by_name(&name) {
                    ch.state.disable();
                }
            }
        }
        Err(e) => log::error!("reload: cannot read the channel switches: {e}"),
    }
}

/// Puts the running value back into every setting of `next` that a running
/// process cannot change, and names the ones that differed.
fn keep_restart_only(running: &Config, next: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut keep = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
        differs
    };
    let shape = |c: &Config| c.listeners.iter().map(|l| (l.address, l.tls.is_some())).collect::<Vec<_>>();
    if keep("server.listen", shape(running) != shape(next)) {
        next.listeners = running.listeners.clone();
    }
    macro_rules! pin {
        ($name:literal, $($field:tt)+) => {
            if keep($name, running.$($field)+ != next.$($field)+) {
                next.$($field)+ = running.$($field)+.clone();
            }
        };
    }
    pin!("server.threads", threads);
    pin!("server.grace_period", grace_period);
    pin!("server.keepalive_timeout", keepalive_timeout);
    pin!("server.h2c", h2c);
    pin!("server.max_connections_per_ip", max_connections_per_ip);
    pin!("server.header_timeout", header_timeout);
    pin!("storage.data_dir", data_dir);
    pin!("storage.backend, database and url", database);
    pin!("storage.flush_interval", flush_interval);
    pin!("storage.usage_retention", usage_retention);
    pin!("storage.redis_url and cluster.*", cluster);
    pin!("access_log.path", access_log);
    pin!("admin.listen", admin.listen);
    pin!("admin.token", admin.token);
    pin!("console.enabled", console.enabled);
    pin!("console.throttle", console.throttle);
    pin!("billing.utc_offset", billing.utc_offset_secs);
    // Whether the built-in upstream stands in was decided at start (the
    // channels are rebuilt against that decision).
    if keep("demo_upstream", demo_active(running) != demo_active(next)) {
        next.demo = running.demo;
    }
    changed
}

/// Reloads on `SIGHUP` (`systemctl reload`).
pub struct OnHangup(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for OnHangup {
    async fn start(&self, shutdown: ShutdownWatch) {
        let unavailable = "cannot listen for SIGHUP; reload through the admin API instead";
        on_each_signal(SignalKind::hangup(), unavailable, shutdown, || async {
            log::info!("SIGHUP: reloading the configuration");
            let reloader = self.0.clone();
            let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
            ControlFlow::Continue(())
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        config::parse(text, Path::new("."), &|_| None).unwrap()
    }

    fn base() -> String {
        config::tests::MINIMAL.replace("\nmodels:", "\n  threads: 2\nstorage:\n  data_dir: /tmp/a\nmodels:")
    }

    #[test]
    fn restart_only_settings_keep_their_running_values() {
        let running = parse(&base());
        let mut next = parse(
            &base()
                .replace("threads: 2", "threads: 4")
                .replace("/tmp/a", "/tmp/b")
                .replace("input: 1,", "input: 3,")
                .replace("127.0.0.1:0\"]", "127.0.0.1:0\", \"127.0.0.1:1\"]"),
        );
        let changed = keep_restart_only(&running, &mut next);
        // The database and the access log live in the data directory.
        let paths = ["storage.data_dir", "storage.backend, database and url", "access_log.path"];
        assert_eq!(changed, [&["server.listen", "server.threads"][..], &paths].concat());
        assert_eq!(next.threads, 2);
        assert_eq!(next.data_dir, Path::new("/tmp/a"));
        assert_eq!(next.listeners, running.listeners);
        // What may change live did.
        assert_eq!(next.models[0].price.input, 3_000_000);
    }

    #[test]
    fn an_unchanged_file_needs_nothing() {
        let running = parse(&base());
        let mut next = parse(&base());
        assert!(keep_restart_only(&running, &mut next).is_empty());
    }
}
