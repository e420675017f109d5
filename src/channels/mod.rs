//! Upstream channels: what each speaks and serves, where it is (addresses
//! resolved off the request path), its live health, and how requests pick one
//! (per-model Pingora pools with priority tiers and weights, session affinity,
//! never the same channel twice for one request).

mod affinity;
pub mod health;
mod plan;
mod pool;
mod resolve;
pub mod state;

pub use affinity::Affinity;
pub use plan::{Candidate, Plan};
pub use pool::Pools;
pub use resolve::Resolver;

use crate::api::{Endpoint, Protocol};
use crate::config::{BaseUrl, ChannelConfig, ChannelKind, Config};
use crate::convert::translate::Pair;
use arc_swap::ArcSwap;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use state::ChannelState;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a request reaches a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Native,
    Translate(Pair),
}

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Channel identities are unique for the life of the process, so a channel
/// keeps its Pingora backend (and health) across reloads while its position
/// in the list (`index`) may change.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// One upstream account behind one base URL.
pub struct Channel {
    /// Position in this configuration's list.
    pub index: usize,
    /// Identity across reloads: kept while the channel's configuration is
    /// unchanged.
    pub uid: u64,
    pub cfg: ChannelConfig,
    /// Whether this channel points at the built-in demo upstream.
    pub demo: bool,
    /// Shared with the same upstream account in a reloaded configuration.
    pub state: Arc<ChannelState>,
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
        Channel {
            index,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            cfg,
            demo,
            state: Arc::new(ChannelState::new()),
            addrs: ArcSwap::from_pointee(addrs),
            next_addr: AtomicUsize::new(0),
        }
    }

    /// This channel in a reloaded configuration, when `previous` is the same
    /// upstream account (name, kind, base URL and key): it keeps its health,
    /// cool-down and resolved addresses, and its identity too when nothing
    /// else about it changed.
    fn carried(index: usize, cfg: ChannelConfig, demo: bool, previous: Option<&Channel>) -> Channel {
        let mut ch = Channel::new(index, cfg, demo);
        let Some(prev) = previous.filter(|p| p.same_account(&ch)) else { return ch };
        ch.state = prev.state.clone();
        if ch.addrs().is_empty() {
            ch.set_addrs(prev.addrs().to_vec());
        }
        if prev.cfg == ch.cfg {
            ch.uid = prev.uid;
        }
        ch
    }

    fn same_account(&self, other: &Channel) -> bool {
        let (a, b) = (&self.cfg, &other.cfg);
        a.name == b.name && a.kind == b.kind && a.base_url == b.base_url && a.api_key == b.api_key
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

    /// How a request of `protocol` goes to this channel: natively, through a
    /// translation, or not at all. `force_translation` makes a channel that
    /// speaks the protocol translate anyway (for example a Responses client on
    /// an upstream whose Responses endpoint misbehaves).
    pub fn route_for(&self, protocol: Protocol) -> Option<Route> {
        let pair = Pair::between(protocol, self.cfg.kind);
        match pair {
            Some(p) if !self.speaks(protocol) || self.cfg.force_translation => Some(Route::Translate(p)),
            _ if self.speaks(protocol) => Some(Route::Native),
            _ => None,
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

    /// Puts the channel's own credential on an upstream request.
    pub fn apply_auth(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        let key = self.cfg.api_key.expose();
        match self.kind() {
            ChannelKind::Anthropic => {
                req.insert_header("x-api-key", key)?;
                if !req.headers.contains_key("anthropic-version") {
                    req.insert_header("anthropic-version", "2023-06-01")?;
                }
            }
            ChannelKind::OpenAi | ChannelKind::OpenAiChat => {
                req.insert_header("authorization", format!("Bearer {key}"))?;
            }
        }
        for (k, v) in &self.cfg.headers {
            req.insert_header(k.clone(), v.expose())?;
        }
        Ok(())
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
        self.peers().into_iter().next()
    }

    /// Peers for every resolved address, starting at the next one in rotation:
    /// a connect failure on one address (say, IPv6 unreachable) moves on to
    /// the next before the channel counts as failed.
    pub fn peers(&self) -> Vec<HttpPeer> {
        let addrs = self.addrs.load();
        let start = self.next_addr.fetch_add(1, Ordering::Relaxed);
        (0..addrs.len()).map(|i| self.peer_for(addrs[(start + i) % addrs.len()])).collect()
    }

    fn peer_for(&self, addr: SocketAddr) -> HttpPeer {
        let url = &self.cfg.base_url;
        // SNI is the host name: an empty SNI would disable certificate checks.
        let mut peer = HttpPeer::new(addr, url.tls, url.host.clone());
        let t = &self.cfg.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect * 2);
        peer.options.idle_timeout = Some(POOL_IDLE);
        peer.options.write_timeout = Some(t.idle);
        // Keep each channel's connections apart (two accounts on one host).
        peer.group_key = self.uid;
        peer
    }

    pub fn pool_idle_timeout(&self) -> Duration {
        POOL_IDLE
    }
}

/// Every configured channel, their pools, the route table and the affinity
/// table.
pub struct Channels {
    list: Vec<Arc<Channel>>,
    pools: Pools,
    routes: plan::RouteTable,
    affinity: Affinity,
}

impl Channels {
    /// Builds channels and pools from config. With `demo`, every channel is
    /// pointed at the built-in fake upstream at that address (keeping its kind
    /// and models).
    pub fn build(cfg: &Config, demo: Option<SocketAddr>) -> std::io::Result<Channels> {
        let registry = Arc::new(pingora::lb::HealthRegistry::new());
        registry.set_health_check(Box::new(health::Probe::new()));
        Self::assemble(cfg, demo, registry, |_| None)
    }

    /// Builds the channels of a reloaded configuration. A channel that is the
    /// same upstream account as one of `self` carries over its health,
    /// cool-downs and conversations; the pools join the same health registry, so the running
    /// health-check service probes them (and forgets the old ones once the
    /// last request on the old configuration is done).
    pub fn rebuild(&self, cfg: &Config, demo: Option<SocketAddr>) -> std::io::Result<Channels> {
        let next =
            Self::assemble(cfg, demo, self.pools.registry().clone(), |name| self.by_name(name).map(Arc::as_ref))?;
        // Conversations stay on their channel (its prompt cache is warm) when
        // it is still the same upstream account.
        next.affinity.adopt(&self.affinity, |i| {
            let old = self.list.get(i)?;
            next.by_name(old.name()).filter(|n| Arc::ptr_eq(&n.state, &old.state)).map(|n| n.index)
        });
        Ok(next)
    }

    fn assemble<'p>(
        cfg: &Config,
        demo: Option<SocketAddr>,
        registry: Arc<pingora::lb::HealthRegistry>,
        previous: impl Fn(&str) -> Option<&'p Channel>,
    ) -> std::io::Result<Channels> {
        let list: Vec<Arc<Channel>> = cfg
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
                let prev = previous(&c.name);
                Arc::new(Channel::carried(i, c, demo.is_some(), prev))
            })
            .collect();
        // Building a pool runs its (static) discovery once. At start this is
        // before the server forks or starts its runtimes; on reload it runs
        // on the reloading thread, off the request path.
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let pools = rt.block_on(Pools::build(&list, registry)).map_err(|e| std::io::Error::other(e.to_string()))?;
        let affinity = Affinity::new(cfg.routing.affinity_max_entries, cfg.routing.affinity_ttl);
        let routes = plan::RouteTable::build(&list);
        Ok(Channels { list, pools, routes, affinity })
    }

    pub fn all(&self) -> &[Arc<Channel>] {
        &self.list
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Channel>> {
        self.list.iter().find(|c| c.name() == name)
    }

    /// Whether any usable channel serves `model`, whatever it speaks.
    pub fn serves_model(&self, model: &str) -> bool {
        self.routes.serves(model)
    }

    /// How a request of `model` at `endpoint` is served, or why it cannot be.
    pub fn plan(&self, model: &str, endpoint: Endpoint) -> Result<Plan<'_>, crate::error::GatewayError> {
        self.routes.plan(model, endpoint)
    }

    /// Starts picking among `candidates` (one list of a plan) for one request
    /// of `model`.
    pub fn picker<'a>(&'a self, model: &'a str, candidates: &'a [Candidate], affinity: Option<u64>) -> Picker<'a> {
        let now = crate::clock::now_ms();
        let preferred = affinity.and_then(|k| self.affinity.get(k, now));
        Picker { channels: self, model, candidates, affinity, preferred, tried: Vec::new() }
    }
}

/// The channels one request may still try.
pub struct Picker<'a> {
    channels: &'a Channels,
    model: &'a str,
    candidates: &'a [Candidate],
    affinity: Option<u64>,
    preferred: Option<usize>,
    tried: Vec<usize>,
}

impl Picker<'_> {
    /// The next channel to try and how to reach it: the conversation's
    /// channel while it is available, else the first priority tier with an
    /// available candidate, weighted; never one already tried. `None` when
    /// nothing is left.
    pub fn next_channel(&mut self) -> Option<(Arc<Channel>, Route)> {
        let now = crate::clock::now_ms();
        let route = |c: &Channel| self.candidates.iter().find(|x| x.index == c.index).map(|x| x.route);
        let ok = |c: &Channel, healthy: bool| {
            healthy && !self.tried.contains(&c.index) && c.state.check(now).is_ok() && route(c).is_some()
        };
        let preferred = self.preferred.take().and_then(|p| self.channels.list.get(p)).filter(|c| ok(c, true));
        let chosen = preferred.cloned().or_else(|| {
            self.channels.pools.tiers(self.model).iter().find_map(|tier| tier.pick(&|c, healthy| ok(c, healthy)))
        })?;
        let r = route(&chosen)?;
        self.tried.push(chosen.index);
        Some((chosen, r))
    }

    /// Records that `channel` served this conversation.
    pub fn remember(&self, channel: &Channel) {
        if let Some(k) = self.affinity {
            self.channels.affinity.put(k, channel.index, crate::clock::now_ms());
        }
    }
}
