//! The background half of the cluster, on one tick (at most every 500 ms
//! and three times per lease TTL): this node's heartbeat, which tells the
//! others its unposted charges are still coming (a dead node's never will),
//! and the renewal of its leases. The same round trip notices Redis coming
//! back while no request asks it.

use super::{keys, Cluster, Health, RENEW};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(500);

pub(super) fn spawn(cluster: &Arc<Cluster>) {
    let Ok(link) = cluster.link() else { return };
    let weak = Arc::downgrade(cluster);
    let tick = TICK.min(cluster.cfg.lease_ttl / 3);
    link.runtime.spawn(async move {
        loop {
            let Some(c) = weak.upgrade() else { return };
            beat(&c).await;
            drop(c);
            tokio::time::sleep(tick).await;
        }
    });
}

/// The heartbeat, then one script per user with requests running here.
async fn beat(c: &Cluster) {
    let mut by_user: HashMap<i64, Vec<String>> = HashMap::new();
    for (id, user) in c.leases.lock().iter() {
        by_user.entry(*user).or_default().push(id.clone());
    }
    let ttl = c.cfg.lease_ttl.as_millis() as i64;
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg(keys::node(&c.instance)).arg(1).arg("PX").arg(ttl).ignore();
    for (user, ids) in &by_user {
        let k = keys::User::new(*user);
        pipe.cmd("EVAL").arg(RENEW).arg(1).arg(&k.leases).arg(ttl).arg(ids).ignore();
    }
    let Ok(mut conn) = c.link().map(|l| l.conn.clone()) else { return };
    let r: Result<(), _> = c.call(async move { pipe.query_async(&mut conn).await }).await;
    if let (Err(e), Health::Up) = (r, c.health()) {
        log::warn!("cannot renew {} leases in redis: {e}", by_user.values().map(Vec::len).sum::<usize>());
    }
}
