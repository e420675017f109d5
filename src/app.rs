//! The state every request shares: configuration, accounts, channels, the
//! upstream connector and the background writers. Built in `serve`; a reload
//! builds a new `App` (a new configuration generation) that shares every
//! long-lived part with the old one, and `Live` hands it to new requests.

use crate::access_log::AccessLog;
use crate::accounts::Accounts;
use crate::billing::Billing;
use crate::channels::Channels;
use crate::cluster::Health;
use crate::config::{Config, RedisDown};
use crate::convert::support::{Ids, RandomIds, Signer};
use crate::store::pool::Pool;
use crate::store::writer::Writer;
use crate::web::Site;
use arc_swap::ArcSwap;
use pingora::connectors::http::v1::Connector;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct App {
    /// This generation's configuration and the channels built from it.
    pub config: Arc<Config>,
    pub channels: Arc<Channels>,
    /// Configurations loaded since start (1 for the first).
    pub version: u64,
    pub accounts: Arc<Accounts>,
    pub billing: Arc<Billing>,
    pub writer: Writer,
    pub access_log: AccessLog,
    /// One pooled HTTP client for every upstream (a connector per request
    /// would mean a pool per request: no reuse).
    pub connector: Arc<Connector>,
    /// Whether the built-in fake upstream stands in for every channel.
    pub demo: bool,
    /// Signs thinking translated from OpenAI-compatible upstreams.
    pub signer: Arc<Signer>,
    pub ids: Arc<dyn Ids>,
    /// Connections for the website and the admin API (never the request path).
    pub db: Arc<Pool>,
    /// The docs and console, when `console.enabled`.
    pub site: Option<Arc<Site>>,
    /// The payment providers, when credits can be bought online.
    pub payments: Option<crate::payments::Payments>,
    /// Requests per minute for the operator overview.
    pub traffic: Arc<crate::traffic::Traffic>,
    /// When this configuration was loaded (Unix ms).
    pub loaded_at: i64,
    /// Counters for `/metrics` (atomics only on the request path).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The last reload attempt.
    pub reloads: Arc<crate::reload::History>,
    /// Requests in flight on every generation.
    inflight: Arc<AtomicUsize>,
    /// Connections accepted whose first request has not arrived yet
    /// (counted by `connections::Guarded`).
    pub opening: Arc<AtomicUsize>,
}

impl App {
    pub fn new(
        config: Arc<Config>,
        accounts: Arc<Accounts>,
        billing: Arc<Billing>,
        channels: Arc<Channels>,
        writer: Writer,
        access_log: AccessLog,
        demo: bool,
    ) -> std::io::Result<App> {
        // The thinking-signature key lives with the data: signatures handed
        // to clients stay valid across restarts.
        let signer = Arc::new(Signer::load_or_create(&config)?);
        let site =
            if config.console.enabled { Some(Arc::new(Site::new(&config, billing.cluster().cloned())?)) } else { None };
        let db = Pool::new(config.database.clone());
        let payments = crate::payments::Payments::from_config(&config.payments);
        let (models, names) = label_values(&config, &channels);
        let metrics = crate::metrics::Metrics::new(&models, &names).map_err(std::io::Error::other)?;
        Ok(App {
            config,
            channels,
            version: 1,
            accounts,
            billing,
            writer,
            access_log,
            connector: Arc::new(Connector::new(None)),
            demo,
            signer,
            ids: Arc::new(RandomIds),
            db,
            site,
            payments,
            traffic: Default::default(),
            loaded_at: crate::clock::now_ms(),
            metrics: Arc::new(metrics),
            reloads: Default::default(),
            inflight: Default::default(),
            opening: Default::default(),
        })
    }

    /// The next generation: `config` and `channels` replace this one's, the
    /// parts built from them (plans and billing parameters, payment
    /// providers, metric labels) follow, and everything long-lived (accounts,
    /// balances, writers, connection pools, the website's state) is shared.
    pub fn reconfigured(&self, config: Arc<Config>, channels: Arc<Channels>) -> App {
        self.billing.set_config(config.clone());
        let (models, names) = label_values(&config, &channels);
        self.metrics.relabel(&models, &names);
        App {
            payments: crate::payments::Payments::from_config(&config.payments),
            config,
            channels,
            version: self.version + 1,
            accounts: self.accounts.clone(),
            billing: self.billing.clone(),
            writer: self.writer.clone(),
            access_log: self.access_log.clone(),
            connector: self.connector.clone(),
            demo: self.demo,
            signer: self.signer.clone(),
            ids: self.ids.clone(),
            db: self.db.clone(),
            site: self.site.clone(),
            traffic: self.traffic.clone(),
            loaded_at: crate::clock::now_ms(),
            metrics: self.metrics.clone(),
            reloads: self.reloads.clone(),
            inflight: self.inflight.clone(),
            opening: self.opening.clone(),
        }
    }

    /// Whether the gateway can serve: the database writer is keeping up and
    /// at least one channel may take a request now. Otherwise, why not.
    /// Failing database writes count past `storage.write_failure_grace` or
    /// with the writer's queue half full (see `Writer::unready`).
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        let now = crate::clock::now_ms();
        reasons.extend(self.writer.unready(now, self.config.write_failure_grace));
        let up = self.channels.all().iter().any(|c| c.usable() && c.state.check(now).is_ok());
        if !up {
            reasons.push("no channel is available".to_string());
        }
        if let Some((since, RedisDown::FailClosed)) = self.redis_down() {
            reasons.push(format!(
                "redis has been unreachable for {}s (cluster.on_redis_down: fail_closed)",
                (now - since) / 1000
            ));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// Since when Redis has been unreachable, and the policy in force, when
    /// this node is one of a cluster and Redis is down.
    pub fn redis_down(&self) -> Option<(i64, RedisDown)> {
        let cluster = self.billing.cluster()?;
        match cluster.health() {
            Health::Up => None,
            Health::Down { since_ms } => Some((since_ms, cluster.config().on_redis_down)),
        }
    }

    /// Requests being served right now (graceful shutdown waits for zero).
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Connections accepted whose first request has not arrived yet.
    pub fn opening(&self) -> usize {
        self.opening.load(Ordering::Acquire)
    }
}

fn label_values(config: &Config, channels: &Channels) -> (Vec<String>, Vec<String>) {
    let models = config.models.iter().map(|m| m.id.clone()).collect();
    let names = channels.all().iter().map(|c| c.name().to_string()).collect();
    (models, names)
}

/// The generation new requests start on. A request holds its `Arc<App>`
/// from start to end, so a reload never changes the configuration under it.
pub struct Live(ArcSwap<App>);

impl Live {
    pub fn new(app: Arc<App>) -> Arc<Live> {
        Arc::new(Live(ArcSwap::new(app)))
    }

    pub fn current(&self) -> Arc<App> {
        self.0.load_full()
    }

    pub fn replace(&self, app: Arc<App>) {
        self.0.store(app);
    }
}

/// Counts a request as in flight until dropped (the request context owns it,
/// so it is released after `logging`, on every path).
pub struct InFlight(Arc<App>);

impl InFlight {
    pub fn new(app: Arc<App>) -> InFlight {
        app.inflight.fetch_add(1, Ordering::AcqRel);
        InFlight(app)
    }

    /// The generation the request runs on.
    pub fn app(&self) -> &Arc<App> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}
