//! Reloads that reach every node: a node whose configuration was reloaded
//! (SIGHUP, `codex-proxy reload`, the admin API) says so on a Redis channel,
//! and every other node reloads its own file, so an operator who changed the
//! file on every machine reloads once. A reload a peer asked for is not
//! announced again.

use super::{Cluster, Health};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

const CHANNEL: &str = "codex-proxy:reloaded";

/// What a node does when another one reloaded.
pub type OnPeerReload = Arc<dyn Fn() + Send + Sync>;

impl Cluster {
    /// Tells the other nodes this one reloaded (in the background).
    pub fn announce_reload(&self) {
        let Ok(link) = self.link() else { return };
        let (mut conn, me) = (link.conn.clone(), self.instance.clone());
        link.runtime.spawn(async move {
            let r: redis::RedisResult<i64> = redis::cmd("PUBLISH").arg(CHANNEL).arg(&me).query_async(&mut conn).await;
            if let Err(e) = r {
                log::warn!("cannot tell the other nodes about this reload: {e}");
            }
        });
    }

    /// Calls `f` (on a blocking thread) whenever another node reloads. Set
    /// before `start`.
    pub fn on_peer_reload(&self, f: OnPeerReload) {
        let _ = self.on_peer_reload.set(f);
    }
}

/// Listens on the channel for as long as the cluster lives, reconnecting
/// after a failure.
pub(super) fn spawn(cluster: &Arc<Cluster>) {
    let (Ok(link), Some(f)) = (cluster.link(), cluster.on_peer_reload.get().cloned()) else { return };
    let (weak, client, me) = (Arc::downgrade(cluster), cluster.client.clone(), cluster.instance.clone());
    link.runtime.spawn(async move {
        loop {
            if let Err(e) = listen(&client, &me, &f).await {
                log::debug!("the subscription to {CHANNEL} ended: {e}");
            }
            match weak.upgrade() {
                Some(c) if c.health() != Health::Up => tokio::time::sleep(Duration::from_secs(1)).await,
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                None => return,
            }
        }
    });
}

/// One subscription: reloads for every other node's announcement until the
/// connection ends.
async fn listen(client: &redis::Client, me: &str, f: &OnPeerReload) -> redis::RedisResult<()> {
    let mut ps = client.get_async_pubsub().await?;
    ps.subscribe(CHANNEL).await?;
    let mut messages = ps.on_message();
    while let Some(m) = messages.next().await {
        let from: String = m.get_payload().unwrap_or_default();
        if from != me {
            log::info!("node {from} reloaded its configuration: reloading this node's");
            let f = f.clone();
            tokio::task::spawn_blocking(move || f());
        }
    }
    Ok(())
}
