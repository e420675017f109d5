//! Releases and posts, sent to Redis by one task in the order they happen.
//! Order matters: a charge must be counted unposted (release) before its
//! ledger row takes it over (post), or another node would briefly count it
//! nowhere. The task sends whatever has queued as one pipeline.

use super::{keys, source_code, Cluster};
use crate::billing::Source;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

const RELEASE_LUA: &str = include_str!("release.lua");
const POST_LUA: &str = include_str!("post.lua");
static RELEASE: once_cell::sync::Lazy<redis::Script> = once_cell::sync::Lazy::new(|| redis::Script::new(RELEASE_LUA));
static POST: once_cell::sync::Lazy<redis::Script> = once_cell::sync::Lazy::new(|| redis::Script::new(POST_LUA));

/// Ops sent per pipeline at most.
const BATCH: usize = 512;

pub enum Op {
    Release { user_id: i64, request_id: String, source: Source, cost: i64 },
    Post { user_id: i64, ledger_id: i64, source: Source, amount: i64, charged_at: i64 },
}

impl Op {
    fn add_to(&self, pipe: &mut redis::Pipeline, me: &str) {
        match self {
            Op::Release { user_id, request_id, source, cost } => {
                let k = keys::User::new(*user_id);
                pipe.cmd("EVALSHA")
                    .arg(RELEASE.get_hash())
                    .arg(4)
                    .arg(&k.leases)
                    .arg(&k.holds)
                    .arg(&k.unposted)
                    .arg(&k.held);
                pipe.arg(request_id).arg(format!("{me}|{}", source_code(*source))).arg(*cost).ignore();
            }
            Op::Post { user_id, ledger_id, source, amount, charged_at } => {
                let k = keys::User::new(*user_id);
                let s = source_code(*source);
                pipe.cmd("EVALSHA").arg(POST.get_hash()).arg(2).arg(&k.unposted).arg(k.posted(me));
                pipe.arg(format!("{me}|{s}")).arg(s).arg(*ledger_id).arg(*amount).arg(*charged_at).ignore();
            }
        }
    }
}

pub(super) fn spawn(cluster: &Arc<Cluster>, mut rx: UnboundedReceiver<Op>) {
    let Ok(link) = cluster.link() else { return };
    let weak = Arc::downgrade(cluster);
    link.runtime.spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            let Some(c) = weak.upgrade() else { return };
            send(&c, &batch).await;
            batch.clear();
        }
    });
}

/// Sends one batch; loads the scripts and tries once more when Redis does
/// not know them (a restarted Redis). What still fails is logged: leases
/// then expire by themselves, and unposted charges stay counted (refusing a
/// little early) until Redis forgets them.
async fn send(c: &Cluster, batch: &[Op]) {
    let mut pipe = redis::pipe();
    for op in batch {
        op.add_to(&mut pipe, &c.instance);
    }
    let Ok(mut conn) = c.link().map(|l| l.conn.clone()) else { return };
    let first: Result<(), _> = c
        .call({
            let (pipe, mut conn) = (pipe.clone(), conn.clone());
            async move { pipe.query_async(&mut conn).await }
        })
        .await;
    let missing = matches!(&first, Err(super::ClusterError::Redis(e)) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript));
    let result = if missing {
        let mut load = redis::pipe();
        for code in [RELEASE_LUA, POST_LUA] {
            load.cmd("SCRIPT").arg("LOAD").arg(code).ignore();
        }
        c.call(async move {
            let _: () = load.query_async(&mut conn).await?;
            pipe.query_async(&mut conn).await
        })
        .await
    } else {
        first
    };
    // While Redis is down the outage is logged once (`Cluster::observe`).
    if let (Err(e), super::Health::Up) = (result, c.health()) {
        log::warn!("cannot send {} releases and posts to redis: {e}", batch.len());
    }
}
