//! The background half of the cluster: lease renewal, and a health probe
//! that notices Redis coming back while no request asks it.

use super::{Cluster, Health, RENEW};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const PROBE_EVERY: Duration = Duration::from_millis(500);

pub(super) fn spawn(cluster: &Arc<Cluster>) {
    let Ok(link) = cluster.link() else { return };
    let weak = Arc::downgrade(cluster);
    link.runtime.spawn(async move {
        let renew_every = match weak.upgrade() {
            Some(c) => c.cfg.lease_ttl / 3,
            None => return,
        };
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(PROBE_EVERY.min(renew_every)).await;
            let Some(c) = weak.upgrade() else { return };
            if last_renewal.elapsed() >= renew_every {
                last_renewal = tokio::time::Instant::now();
                renew(&c).await;
            } else if c.health() != Health::Up {
                probe(&c).await;
            }
        }
    });
}

/// Extends the lease of every request this node still runs, one script per
/// user, all in one round trip.
async fn renew(c: &Cluster) {
    let mut by_user: HashMap<i64, Vec<String>> = HashMap::new();
    for (id, user) in c.leases.lock().iter() {
        by_user.entry(*user).or_default().push(id.clone());
    }
    if by_user.is_empty() {
        return probe(c).await;
    }
    let ttl = c.cfg.lease_ttl.as_millis() as i64;
    let mut pipe = redis::pipe();
    for (user, ids) in &by_user {
        let k = super::keys::User::new(*user);
        pipe.cmd("EVAL").arg(RENEW).arg(1).arg(&k.leases).arg(ttl).arg(ids).ignore();
    }
    let Ok(mut conn) = c.link().map(|l| l.conn.clone()) else { return };
    let r: Result<(), _> = c.call(async move { pipe.query_async(&mut conn).await }).await;
    if let (Err(e), Health::Up) = (r, c.health()) {
        log::warn!("cannot renew {} leases in redis: {e}", by_user.values().map(Vec::len).sum::<usize>());
    }
}

async fn probe(c: &Cluster) {
    let Ok(mut conn) = c.link().map(|l| l.conn.clone()) else { return };
    let _: Result<String, _> = c.call(async move { redis::cmd("PING").query_async(&mut conn).await }).await;
}
