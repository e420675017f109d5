//! Per-model pools on `pingora-load-balancing`: for every model, one weighted
//! round-robin `LoadBalancer` per priority tier. Lower `priority` first: a
//! tier only serves when nothing in the tiers before it is available. Shares
//! are exact (weight 3 next to weight 1 gets 3 of every 4 requests). All pools share
//! one `HealthRegistry`, so a channel serving ten models is probed once.
//!
//! Backend identity: Pingora's `Backend` compares and hashes `addr` and `weight`
//! only, never `ext`, so two channels on the same host and port would collapse
//! into one. Each channel therefore gets a synthetic Unix address
//! `channel/<uid>` (never connected to); the real peer is built from the
//! `Arc<Channel>` carried in `ext`.

use super::Channel;
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, HealthRegistry, LoadBalancer};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A fixed membership (channels come from the configuration).
struct Fixed(BTreeSet<Backend>);

#[async_trait]
impl ServiceDiscovery for Fixed {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((self.0.clone(), HashMap::new()))
    }
}

/// The Pingora backend standing for a channel.
pub fn backend(ch: &Arc<Channel>) -> Backend {
    let path = format!("channel/{}", ch.uid);
    let addr =
        std::os::unix::net::SocketAddr::from_pathname(&path).expect("a short relative path is a valid unix address");
    let mut b = Backend {
        addr: pingora::protocols::l4::socket::SocketAddr::Unix(addr),
        weight: ch.cfg.weight as usize,
        ext: Default::default(),
    };
    b.ext.insert(ch.clone());
    b
}

/// The channel a backend stands for.
pub fn channel_of(b: &Backend) -> Option<&Arc<Channel>> {
    b.ext.get::<Arc<Channel>>()
}

pub struct Tier {
    pub priority: i32,
    lb: LoadBalancer<RoundRobin>,
    members: Vec<Arc<Channel>>,
}

pub struct Pools {
    by_model: HashMap<String, Vec<Tier>>,
    registry: Arc<HealthRegistry>,
}

impl Pools {
    /// Builds the pools of every model over the usable channels serving it.
    pub async fn build(channels: &[Arc<Channel>], registry: Arc<HealthRegistry>) -> pingora::Result<Pools> {
        let mut grouped: BTreeMap<&str, BTreeMap<i32, Vec<Arc<Channel>>>> = BTreeMap::new();
        for ch in channels.iter().filter(|c| c.usable()) {
            for model in ch.cfg.models.keys() {
                grouped.entry(model).or_default().entry(ch.cfg.priority).or_default().push(ch.clone());
            }
        }
        let mut by_model = HashMap::new();
        for (model, tiers) in grouped {
            let mut built = Vec::new();
            for (priority, members) in tiers {
                let set: BTreeSet<Backend> = members.iter().map(backend).collect();
                let view = Backends::new_with_health_registry(Box::new(Fixed(set)), registry.clone());
                let lb = LoadBalancer::<RoundRobin>::from_backends(view);
                lb.update().await?;
                built.push(Tier { priority, lb, members });
            }
            by_model.insert(model.to_string(), built);
        }
        Ok(Pools { by_model, registry })
    }

    pub fn registry(&self) -> &Arc<HealthRegistry> {
        &self.registry
    }

    pub fn tiers(&self, model: &str) -> &[Tier] {
        self.by_model.get(model).map(Vec::as_slice).unwrap_or(&[])
    }
}

impl Tier {
    /// Picks a channel of this tier that `accept` allows, by weight; Pingora's
    /// selector first, then (should its bounded random walk miss one) a full
    /// scan, so an acceptable channel is never overlooked.
    pub fn pick(&self, accept: &dyn Fn(&Arc<Channel>, bool) -> bool) -> Option<Arc<Channel>> {
        let max = 8 * self.members.len().max(1);
        let chosen = self.lb.select_with(b"", max, |b, healthy| channel_of(b).is_some_and(|c| accept(c, healthy)));
        if let Some(b) = chosen {
            return channel_of(&b).cloned();
        }
        let ok: Vec<&Arc<Channel>> =
            self.members.iter().filter(|c| accept(c, self.lb.backends().ready(&backend(c)))).collect();
        let total: u64 = ok.iter().map(|c| c.cfg.weight as u64).sum();
        if total == 0 {
            return None;
        }
        let mut pick = rand::Rng::gen_range(&mut rand::thread_rng(), 0..total);
        for c in ok {
            if pick < c.cfg.weight as u64 {
                return Some(c.clone());
            }
            pick -= c.cfg.weight as u64;
        }
        None
    }

    pub fn members(&self) -> &[Arc<Channel>] {
        &self.members
    }
}
