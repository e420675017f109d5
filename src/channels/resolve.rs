//! Name resolution for channel hosts, off the request path: `HttpPeer::new`
//! would resolve synchronously and panic on failure, so the gateway resolves
//! every host name at start and refreshes the addresses in the background.

use super::Channels;
use crate::app::Live;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

/// Resolves the hosts of the running configuration's channels every
/// `interval` (a reload resolves its new channels itself).
pub struct Resolver {
    live: Arc<Live>,
    interval: Duration,
}

impl Resolver {
    pub fn new(live: Arc<Live>, interval: Duration) -> Resolver {
        Resolver { live, interval }
    }

    /// Resolves every host name once (blocking; for start-up and this service).
    pub fn resolve_all(channels: &Channels) {
        for ch in channels.all() {
            let url = ch.base_url();
            if url.host.parse::<std::net::IpAddr>().is_ok() || !ch.usable() {
                continue;
            }
            match (url.host.as_str(), url.port).to_socket_addrs() {
                Ok(addrs) => {
                    let addrs: Vec<_> = addrs.collect();
                    if addrs.is_empty() {
                        log::warn!("channel {}: {} resolved to no address", ch.name(), url.host);
                    } else if *ch.addrs() != addrs {
                        log::info!("channel {}: {} -> {:?}", ch.name(), url.host, addrs);
                        ch.set_addrs(addrs);
                    }
                }
                // Keep the previous addresses: a resolver hiccup must not take
                // a working channel down.
                Err(e) => log::warn!("channel {}: cannot resolve {}: {e}", ch.name(), url.host),
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Resolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let app = self.live.current();
            let _ = tokio::task::spawn_blocking(move || Resolver::resolve_all(&app.channels)).await;
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
