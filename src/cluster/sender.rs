//! Releases and posts, sent to Redis by one task in the order they happen.
//!
//! Order matters: a charge must be counted unposted (release) before its
//! ledger row takes it over (post), or another node would briefly count it
//! nowhere; and a post must only take over charges whose release counted
//! them (a request admitted from memory while Redis was down never was). So
//! the task remembers which requests it released, posts only their share of
//! a row, and resends a batch that failed until Redis takes it, before
//! anything newer. While Redis is down no request is admitted through it, so
//! what waits is bounded by the requests in flight when it went away.

use super::{keys, source_code, Cluster};
use crate::billing::Source;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

const RELEASE_LUA: &str = include_str!("release.lua");
const POST_LUA: &str = super::timed_lua!("post.lua");
static RELEASE: once_cell::sync::Lazy<redis::Script> = once_cell::sync::Lazy::new(|| redis::Script::new(RELEASE_LUA));
static POST: once_cell::sync::Lazy<redis::Script> = once_cell::sync::Lazy::new(|| redis::Script::new(POST_LUA));

/// Ops sent per pipeline at most.
const BATCH: usize = 512;
/// Pause between two tries of a batch Redis refused.
const RETRY: Duration = Duration::from_millis(200);
/// A released charge whose ledger row never came (its usage row was a
/// duplicate, dropped by the writer) is forgotten after this.
const FORGET: Duration = Duration::from_secs(600);

pub enum Op {
    Release {
        user_id: i64,
        request_id: String,
        source: Source,
        cost: i64,
    },
    /// One ledger row of this node: the requests it charges, with their cost.
    Post {
        user_id: i64,
        ledger_id: i64,
        source: Source,
        charges: Vec<(String, i64)>,
        charged_at: i64,
    },
}

/// The sender task's memory: requests released with a cost, not posted yet.
#[derive(Default)]
struct Released(HashMap<String, Instant>);

impl Released {
    /// Adds `op` to `pipe`; false when there is nothing to send for it.
    fn add(&mut self, op: &Op, pipe: &mut redis::Pipeline, me: &str) -> bool {
        match op {
            Op::Release { user_id, request_id, source, cost } => {
                if *cost > 0 {
                    self.0.insert(request_id.clone(), Instant::now());
                }
                let k = keys::User::new(*user_id);
                pipe.cmd("EVALSHA").arg(RELEASE.get_hash()).arg(4);
                pipe.arg(&k.leases).arg(&k.holds).arg(&k.unposted).arg(&k.held);
                pipe.arg(request_id).arg(format!("{me}|{}", source_code(*source))).arg(*cost).ignore();
                true
            }
            Op::Post { user_id, ledger_id, source, charges, charged_at } => {
                let amount: i64 = charges.iter().filter(|(id, _)| self.0.remove(id).is_some()).map(|(_, c)| c).sum();
                if amount == 0 {
                    return false;
                }
                let k = keys::User::new(*user_id);
                let s = source_code(*source);
                pipe.cmd("EVALSHA").arg(POST.get_hash()).arg(2).arg(&k.unposted).arg(k.posted(me));
                pipe.arg(format!("{me}|{s}")).arg(s).arg(*ledger_id).arg(amount).arg(*charged_at).ignore();
                true
            }
        }
    }

    fn forget_old(&mut self) {
        self.0.retain(|_, at| at.elapsed() < FORGET);
    }
}

pub(super) fn spawn(cluster: &Arc<Cluster>, mut rx: UnboundedReceiver<Op>) {
    let Ok(link) = cluster.link() else { return };
    let weak = Arc::downgrade(cluster);
    link.runtime.spawn(async move {
        let mut released = Released::default();
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            let Some(c) = weak.upgrade() else { return };
            // MULTI/EXEC: a batch cut off by a lost connection is applied
            // whole or not at all. Only a connection lost after EXEC ran,
            // before its answer came back, makes the resend apply it twice.
            let mut pipe = redis::pipe();
            pipe.atomic();
            let mut any = false;
            for op in &batch {
                any |= released.add(op, &mut pipe, &c.instance);
            }
            batch.clear();
            released.forget_old();
            if any {
                while !send(&c, &pipe).await {
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    });
}

/// Sends one pipeline; loads the scripts first when Redis does not know them
/// (it restarted). False when Redis did not take it.
async fn send(c: &Cluster, pipe: &redis::Pipeline) -> bool {
    let Ok(conn) = c.link().map(|l| l.conn.clone()) else { return false };
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
        let (pipe, mut conn) = (pipe.clone(), conn);
        c.call(async move {
            let _: () = load.query_async(&mut conn).await?;
            pipe.query_async(&mut conn).await
        })
        .await
    } else {
        first
    };
    // While Redis is down the outage is logged once (`Cluster::observe`).
    match result {
        Ok(()) => true,
        Err(e) => {
            if c.health() == super::Health::Up {
                log::warn!("cannot send releases and posts to redis ({e}); retrying");
            }
            false
        }
    }
}
