//! The state every request shares: configuration, accounts, channels, the
//! upstream connector and the background writers. Built once in `serve`.

use crate::access_log::AccessLog;
use crate::accounts::Accounts;
use crate::billing::Billing;
use crate::channels::Channels;
use crate::config::Config;
use crate::convert::support::{Ids, RandomIds, Signer};
use crate::store::pool::Pool;
use crate::store::writer::Writer;
use crate::web::Site;
use pingora::connectors::http::v1::Connector;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct App {
    pub config: Arc<Config>,
    pub accounts: Arc<Accounts>,
    pub billing: Arc<Billing>,
    pub channels: Arc<Channels>,
    pub writer: Writer,
    pub access_log: AccessLog,
    /// One pooled HTTP client for every upstream (a connector per request
    /// would mean a pool per request: no reuse).
    pub connector: Connector,
    /// Whether the built-in fake upstream stands in for every channel.
    pub demo: bool,
    /// Signs thinking translated from OpenAI-compatible upstreams.
    pub signer: Arc<Signer>,
    pub ids: Arc<dyn Ids>,
    /// Connections for the website and the admin API (never the request path).
    pub db: Arc<Pool>,
    /// The docs and console, when `console.enabled`.
    pub site: Option<Site>,
    /// The payment providers, when credits can be bought online.
    pub payments: Option<crate::payments::Payments>,
    /// Requests per minute for the operator overview.
    pub traffic: crate::traffic::Traffic,
    /// When this configuration was loaded (Unix ms).
    pub loaded_at: i64,
    /// Counters for `/metrics` (atomics only on the request path).
    pub metrics: crate::metrics::Metrics,
    inflight: AtomicUsize,
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
        let signer = Arc::new(Signer::load_or_create(&config.data_dir)?);
        let site = if config.console.enabled { Some(Site::new(&config)?) } else { None };
        let db = Pool::new(config.database.clone());
        let payments = crate::payments::Payments::from_config(&config.payments);
        let models: Vec<String> = config.models.iter().map(|m| m.id.clone()).collect();
        let names: Vec<String> = channels.all().iter().map(|c| c.name().to_string()).collect();
        let metrics = crate::metrics::Metrics::new(&models, &names).map_err(std::io::Error::other)?;
        Ok(App {
            config,
            accounts,
            billing,
            channels,
            writer,
            access_log,
            connector: Connector::new(None),
            demo,
            signer,
            ids: Arc::new(RandomIds),
            db,
            site,
            payments,
            traffic: Default::default(),
            loaded_at: crate::clock::now_ms(),
            metrics,
            inflight: AtomicUsize::new(0),
        })
    }

    /// Whether the gateway can serve: the database writer's commits succeed
    /// and at least one channel may take a request now. Otherwise, why not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if let Some(since) = self.writer.failing_since() {
            let secs = (crate::clock::now_ms() - since) / 1000;
            reasons.push(format!("database writes have been failing for {secs}s"));
        }
        let now = crate::clock::now_ms();
        let up = self.channels.all().iter().any(|c| c.usable() && c.state.check(now).is_ok());
        if !up {
            reasons.push("no channel is available".to_string());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// Requests being served right now (graceful shutdown waits for zero).
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
}

/// Counts a request as in flight until dropped (the request context owns it,
/// so it is released after `logging`, on every path).
pub struct InFlight(Arc<App>);

impl InFlight {
    pub fn new(app: &Arc<App>) -> InFlight {
        app.inflight.fetch_add(1, Ordering::AcqRel);
        InFlight(app.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}
