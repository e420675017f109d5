//! Upstream channels: what each speaks and serves, where it is (addresses
//! resolved off the request path), and how to reach it (`HttpPeer`).

mod resolve;
mod select;

pub use resolve::Resolver;
pub use select::Selection;

use crate::api::{Endpoint, Protocol};
use crate::config::{BaseUrl, ChannelConfig, ChannelKind, Config};
use arc_swap::ArcSwap;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// One upstream account behind one base URL.
pub struct Channel {
    pub index: usize,
    pub cfg: ChannelConfig,
    /// Whether this channel points at the built-in demo upstream.
    pub demo: bool,
    /// Resolved addresses of `cfg.base_url.host`, refreshed in the background.
    addrs: ArcSwap<Vec<SocketAddr>>,
    next_addr: AtomicUsize,
}

impl Channel {
    pub fn new(index: usize, cfg: ChannelConfig, demo: bool) -> Channel {
        // IP literals need no lookup; host names are resolved by `Resolver`.
        let addrs = cfg
            .base_url
            .host
            .parse::<std::net::IpAddr>()
            .map(|ip| vec![SocketAddr::new(ip, cfg.base_url.port)])
            .unwrap_or_default();
        Channel { index, cfg, demo, addrs: ArcSwap::from_pointee(addrs), next_addr: AtomicUsize::new(0) }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn kind(&self) -> ChannelKind {
        self.cfg.kind
    }

    /// Whether the channel is configured to take traffic at all.
    pub fn usable(&self) -> bool {
        self.cfg.enabled && (self.demo || !self.cfg.api_key.is_empty())
    }

    /// Whether the upstream speaks `protocol` natively.
    pub fn speaks(&self, protocol: Protocol) -> bool {
        match self.cfg.kind {
            ChannelKind::OpenAi => matches!(protocol, Protocol::Chat | Protocol::Responses | Protocol::Embeddings),
            ChannelKind::OpenAiChat => matches!(protocol, Protocol::Chat | Protocol::Embeddings),
            ChannelKind::Anthropic => matches!(protocol, Protocol::Messages | Protocol::CountTokens),
        }
    }

    /// The upstream's name for a client-facing model, when served here.
    pub fn upstream_model(&self, model: &str) -> Option<&str> {
        self.cfg.models.get(model).map(String::as_str)
    }

    /// Request path on the upstream for an endpoint.
    pub fn path_for(&self, endpoint: Endpoint) -> String {
        format!("{}{}", self.cfg.base_url.path, endpoint.upstream_suffix())
    }

    pub fn base_url(&self) -> &BaseUrl {
        &self.cfg.base_url
    }

    pub fn addrs(&self) -> Arc<Vec<SocketAddr>> {
        self.addrs.load_full()
    }

    pub fn set_addrs(&self, addrs: Vec<SocketAddr>) {
        self.addrs.store(Arc::new(addrs));
    }

    /// A peer for the next resolved address (round robin), or `None` while the
    /// host name is unresolved.
    pub fn peer(&self) -> Option<HttpPeer> {
        let addrs = self.addrs.load();
        if addrs.is_empty() {
            return None;
        }
        let addr = addrs[self.next_addr.fetch_add(1, Ordering::Relaxed) % addrs.len()];
        let url = &self.cfg.base_url;
        // SNI is the host name: an empty SNI would disable certificate checks.
        let mut peer = HttpPeer::new(addr, url.tls, url.host.clone());
        let t = &self.cfg.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect * 2);
        peer.options.idle_timeout = Some(POOL_IDLE);
        peer.options.write_timeout = Some(t.idle);
        // Keep each channel's connections apart (two accounts on one host).
        peer.group_key = self.index as u64 + 1;
        Some(peer)
    }

    pub fn pool_idle_timeout(&self) -> Duration {
        POOL_IDLE
    }
}

/// Every configured channel.
pub struct Channels {
    list: Vec<Arc<Channel>>,
}

impl Channels {
    /// Builds channels from config. With `demo`, every channel is pointed at the
    /// built-in fake upstream at that address (keeping its kind and models).
    pub fn build(cfg: &Config, demo: Option<SocketAddr>) -> Channels {
        let list = cfg
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                if let Some(addr) = demo {
                    let path = if c.kind == ChannelKind::Anthropic { "" } else { "/v1" };
                    c.base_url =
                        BaseUrl { tls: false, host: addr.ip().to_string(), port: addr.port(), path: path.into() };
                    c.api_key = crate::config::Secret::new("demo");
                }
                Arc::new(Channel::new(i, c, demo.is_some()))
            })
            .collect();
        Channels { list }
    }

    pub fn all(&self) -> &[Arc<Channel>] {
        &self.list
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Channel>> {
        self.list.iter().find(|c| c.name() == name)
    }

    /// Usable channels that serve `model` and speak `protocol`.
    pub fn serving(&self, model: &str, protocol: Protocol) -> Vec<Arc<Channel>> {
        self.list
            .iter()
            .filter(|c| c.usable() && c.speaks(protocol) && c.upstream_model(model).is_some())
            .cloned()
            .collect()
    }

    /// Whether any usable channel serves `model`, whatever it speaks.
    pub fn serves_model(&self, model: &str) -> bool {
        self.list.iter().any(|c| c.usable() && c.upstream_model(model).is_some())
    }
}
