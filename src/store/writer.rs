//! The batched background writer: the only writer of SQLite inside the gateway.
//!
//! Request handlers hand it [`WriteOp`]s through a bounded channel (an `await`
//! that only waits when the disk cannot keep up: backpressure, never a dropped
//! record). One thread commits an op together with everything that arrives
//! within 10 ms of it, in one transaction (group commit). A `kill -9` therefore
//! loses only the ops queued or being committed at that instant — measured at a
//! few milliseconds of traffic, bounded by `flush_interval` plus one commit.
//! A usage record and its ledger charge are one op, so they are never split;
//! a batch's charges become one ledger row per user (see `charges`).
//! Between batches, and at least every `flush_interval`, the thread checks
//! `PRAGMA data_version` and calls back when another process (the CLI) changed
//! the database: that is how CLI changes reach the gateway within a second.

use super::charges::Charges;
use super::{data_version, SqlContext, StoreError};
use crate::store::db::{params, params_from_iter, value_tuples, Connection, ToSql, Value};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One request's usage, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRecord {
    pub request_id: String,
    pub created_at: i64,
    pub key_id: Option<i64>,
    pub user_id: Option<i64>,
    pub endpoint: &'static str,
    pub model: Option<String>,
    pub channel: Option<String>,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    pub stream: bool,
    pub estimated: bool,
    pub cost: i64,
    pub billed_to: Option<&'static str>,
    /// JSON array of `{channel, status, error}` per upstream attempt.
    pub attempts: Option<String>,
    pub translation: Option<&'static str>,
}

/// A credit ledger entry (the balance of a user is the sum of their entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub user_id: i64,
    /// `credits` (the balance) or `plan` (daily plan usage).
    pub account: &'static str,
    /// Signed micro-credits: usage charges are negative.
    pub amount: i64,
    /// `usage`, `topup`, `redeem`, `adjust`, `refund`.
    pub kind: &'static str,
    pub reason: String,
    /// Request id, code id, admin action id: what this entry is about.
    pub reference: String,
    pub created_at: i64,
}

/// A usage charge the ledger now holds: `ledger_id` is the row that charged
/// it (the cluster tells the other nodes, see `cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub user_id: i64,
    pub request_id: String,
    pub ledger_id: i64,
    /// `credits` or `plan`.
    pub account: &'static str,
    /// What the request cost (micro-credits, positive).
    pub cost: i64,
    /// When the request was charged (ms).
    pub charged_at: i64,
}

/// Called on the writer thread after each commit that charged something.
pub type OnPosted = Box<dyn FnMut(Vec<Posted>) + Send + Sync>;

/// Something to persist.
#[derive(Debug)]
pub enum WriteOp {
    Usage(Box<UsageRecord>),
    /// A request's usage and its charge, committed together.
    Charge(Box<UsageRecord>, LedgerEntry),
    Ledger(LedgerEntry),
    KeyUsed {
        key_id: i64,
        at: i64,
    },
    /// A console session was used (its idle timer restarts).
    SessionSeen {
        session_id: i64,
        at: i64,
    },
    /// An operator console session was used.
    OperatorSeen {
        session_id: i64,
        at: i64,
    },
    /// Commits everything queued before it, checks for external changes (so an
    /// admin change written on another connection is loaded), then acknowledges.
    Flush(std_mpsc::Sender<()>),
    /// Deletes usage rows created before this time (ms), a small batch
    /// between other batches until none is left (`storage.usage_retention`).
    PruneUsage(i64),
}

/// What the writer thread reports about itself (for `/readyz` and `/metrics`).
#[derive(Debug, Default)]
pub struct WriterStats {
    /// When commits started failing (0: they succeed).
    failing_since: AtomicI64,
    /// Records in the batch being retried (out of the queue, not yet in).
    held: AtomicU64,
    /// Batches committed, and the time spent committing them (µs).
    commits: AtomicU64,
    commit_micros: AtomicU64,
}

/// Cloneable handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteOp>,
    stats: Arc<WriterStats>,
}

/// Called with the writer's connection when another process changed the file.
pub type OnExternalChange = Box<dyn FnMut(&Connection) + Send>;

const QUEUE: usize = 65_536;
const MAX_BATCH: usize = 4_096;
/// How long a batch stays open after its first op. Each commit rewrites the
/// table and index pages it touched in the WAL, so at thousands of requests a
/// second committing every op alone costs a core. 10 ms halves the WAL page
/// writes per request against 2 ms (measured: 1.8 -> 0.9 pwrite per request at
/// ~4k req/s), costs nothing in latency (the request already got its answer)
/// and adds at most 10 ms of records to what a `kill -9` can lose, well inside
/// the documented `flush_interval` bound.
const GROUP_WINDOW: Duration = Duration::from_millis(10);

/// How often the writer looks at the ledger snapshot, and how many newer
/// entries make it fold them in: a start then sums at most about that many
/// entries beyond the snapshot, plus an hour of traffic.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);
const SNAPSHOT_MIN_NEW: i64 = 10_000;

/// The receiving end, turned into the writer thread by `spawn`.
pub struct WriterTask {
    rx: mpsc::Receiver<WriteOp>,
    stats: Arc<WriterStats>,
    on_posted: Option<OnPosted>,
}

impl WriterTask {
    /// Runs the writer thread on `conn`. Call from inside the running server
    /// (threads do not survive daemonisation).
    pub fn spawn(
        self,
        conn: Connection,
        flush_interval: Duration,
        on_change: OnExternalChange,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let (rx, stats) = (self.rx, self.stats);
        let hooks = Hooks { on_change, on_posted: self.on_posted };
        std::thread::Builder::new()
            .name("codex-proxy-db-writer".into())
            .spawn(move || run(conn, rx, flush_interval, hooks, stats))
    }

    /// Reports each committed batch's charges to `f`.
    pub fn on_posted(mut self, f: OnPosted) -> WriterTask {
        self.on_posted = Some(f);
        self
    }
}

struct Hooks {
    on_change: OnExternalChange,
    on_posted: Option<OnPosted>,
}

impl Writer {
    /// A writer handle and the task that will serve it. Ops sent before the
    /// task runs wait in the queue.
    pub fn channel() -> (Writer, WriterTask) {
        Self::with_capacity(QUEUE)
    }

    fn with_capacity(records: usize) -> (Writer, WriterTask) {
        let (tx, rx) = mpsc::channel(records);
        let stats = Arc::new(WriterStats::default());
        (Writer { tx, stats: stats.clone() }, WriterTask { rx, stats, on_posted: None })
    }

    /// Records the queue holds before senders wait.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// Since when (ms) commits have been failing, if they are.
    pub fn failing_since(&self) -> Option<i64> {
        Some(self.stats.failing_since.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    /// Batches committed so far, and the seconds spent committing them.
    pub fn commits(&self) -> (u64, f64) {
        let micros = self.stats.commit_micros.load(Ordering::Relaxed);
        (self.stats.commits.load(Ordering::Relaxed), micros as f64 / 1e6)
    }

    /// Ops queued and not yet taken by the writer thread.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Records not in the database yet: queued, or in a batch being retried.
    pub fn waiting(&self) -> usize {
        self.queue_depth() + self.stats.held.load(Ordering::Relaxed) as usize
    }

    /// Why failing commits should take the node out of rotation, if they
    /// should. Failing alone is not enough: requests go on from memory and
    /// their records wait (PostgreSQL restarting, a failover). Past `grace`,
    /// or with the queue half full, it is: a full queue makes requests wait.
    pub fn unready(&self, now_ms: i64, grace: Duration) -> Option<String> {
        let since = self.failing_since()?;
        let waiting = self.waiting();
        let past_grace = now_ms - since >= grace.as_millis() as i64;
        (past_grace || waiting >= self.capacity() / 2).then(|| {
            format!("database writes have been failing for {}s ({waiting} records waiting)", (now_ms - since) / 1000)
        })
    }

    /// Channel + thread in one step (CLI, tests).
    pub fn start(conn: Connection, flush_interval: Duration, on_change: OnExternalChange) -> std::io::Result<Writer> {
        let (w, task) = Writer::channel();
        task.spawn(conn, flush_interval, on_change)?;
        Ok(w)
    }

    /// Queues an op; waits only when the queue is full.
    pub async fn send(&self, op: WriteOp) {
        if self.tx.send(op).await.is_err() {
            log::error!("database writer is gone; a record could not be queued");
        }
    }

    /// Queues an op from synchronous code; blocks when the queue is full. Must
    /// not be called on an async worker thread.
    pub fn send_blocking(&self, op: WriteOp) {
        if self.tx.blocking_send(op).is_err() {
            log::error!("database writer is gone; a record could not be queued");
        }
    }

    /// Commits everything queued so far; returns false on timeout.
    pub fn flush_blocking(&self, timeout: Duration) -> bool {
        let (ack_tx, ack_rx) = std_mpsc::channel();
        if self.tx.try_send(WriteOp::Flush(ack_tx)).is_err() {
            // Full queue: hand the flush over from a helper thread so this call
            // stays usable from any context.
            let tx = self.tx.clone();
            let (ack2_tx, ack2_rx) = std_mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.blocking_send(WriteOp::Flush(ack2_tx));
            });
            return ack2_rx.recv_timeout(timeout).is_ok();
        }
        ack_rx.recv_timeout(timeout).is_ok()
    }

    /// Async flush for tests and the admin API.
    pub async fn flush(&self) {
        let (ack_tx, ack_rx) = std_mpsc::channel();
        self.send(WriteOp::Flush(ack_tx)).await;
        let _ = tokio::task::spawn_blocking(move || ack_rx.recv_timeout(Duration::from_secs(30))).await;
    }
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<WriteOp>,
    flush_interval: Duration,
    mut hooks: Hooks,
    stats: Arc<WriterStats>,
) {
    let dead_letters = conn.dead_letters();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("database writer cannot start its timer: {e}");
            return;
        }
    };
    // Sync once at start: a change made between the gateway's initial load and
    // this point would otherwise wait for the next one to be noticed.
    let mut last_version = data_version(&conn).unwrap_or(0);
    (hooks.on_change)(&conn);
    let mut pending: Vec<WriteOp> = Vec::new();
    let mut acks: Vec<std_mpsc::Sender<()>> = Vec::new();
    let mut last_snapshot = std::time::Instant::now();
    let mut prune_before: Option<i64> = None;
    loop {
        // Wait for the first op of a batch (or a tick to poll data_version),
        // then take whatever else is already queued.
        let first = rt.block_on(async { tokio::time::timeout(flush_interval, rx.recv()).await });
        let closed = matches!(first, Ok(None));
        if let Ok(Some(op)) = first {
            let flush_now = matches!(op, WriteOp::Flush(_));
            push(op, &mut pending, &mut acks, &mut prune_before);
            // Sleep rather than wait on the queue: while nobody waits on it,
            // handlers enqueue without waking this thread (a futex call per
            // request otherwise). A flush is someone waiting: no window.
            if !flush_now {
                std::thread::sleep(GROUP_WINDOW);
            }
            while pending.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => push(op, &mut pending, &mut acks, &mut prune_before),
                    Err(_) => break,
                }
            }
        }
        if !pending.is_empty() {
            let started = std::time::Instant::now();
            let result = commit(&conn, &pending);
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.commit_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            match result {
                Ok(posted) => {
                    pending.clear();
                    stats.failing_since.store(0, Ordering::Relaxed);
                    stats.held.store(0, Ordering::Relaxed);
                    if let (Some(f), false) = (hooks.on_posted.as_mut(), posted.is_empty()) {
                        f(posted);
                    }
                }
                Err(e) if e.is_transient() => {
                    let now = crate::clock::now_ms();
                    let _ = stats.failing_since.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                    stats.held.store(pending.len() as u64, Ordering::Relaxed);
                    // Keep the batch and retry: the queue applies backpressure
                    // meanwhile, so nothing is dropped.
                    log::error!("database batch commit failed ({} ops kept for retry): {e}", pending.len());
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                Err(e) => {
                    log::error!("database batch commit failed ({e}); committing its {} ops one by one", pending.len());
                    isolate(&conn, std::mem::take(&mut pending), &dead_letters);
                }
            }
        }
        match data_version(&conn) {
            Ok(v) if v != last_version => {
                last_version = v;
                (hooks.on_change)(&conn);
            }
            Ok(_) => {}
            Err(e) => log::warn!("cannot poll database changes: {e}"),
        }
        if let Some(before) = prune_before {
            prune_before = prune_step(&conn, before);
        }
        if last_snapshot.elapsed() >= SNAPSHOT_EVERY {
            last_snapshot = std::time::Instant::now();
            if let Err(e) = super::snapshot::advance(&conn, SNAPSHOT_MIN_NEW) {
                log::warn!("cannot advance the ledger snapshot: {e}");
            }
        }
        // After the change check: whoever waits on a flush (the admin API after
        // writing on its own connection) then sees its change loaded.
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if closed {
            return;
        }
    }
}

/// After a batch failed for a reason retrying will not fix (a constraint, a
/// type): each op is committed alone, so that one bad op costs only itself.
/// An op that fails alone is logged and appended to the dead-letter file next
/// to the database (one JSON line each), and the writer goes on.
fn isolate(conn: &Connection, ops: Vec<WriteOp>, dead_letters: &Option<std::path::PathBuf>) {
    for op in ops {
        let one = std::slice::from_ref(&op);
        let Err(e) = commit(conn, one) else { continue };
        log::error!("database op dropped after it failed alone ({e}): {op:?}");
        let Some(path) = dead_letters else { continue };
        let line = serde_json::json!({"at": crate::clock::now_ms(), "error": e.to_string(), "op": format!("{op:?}")});
        let written = super::secret::open_private_append(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()));
        if let Err(io) = written {
            log::error!("cannot write the dead-letter file {}: {io}", path.display());
        }
    }
}

fn push(op: WriteOp, pending: &mut Vec<WriteOp>, acks: &mut Vec<std_mpsc::Sender<()>>, prune: &mut Option<i64>) {
    match op {
        WriteOp::Flush(ack) => acks.push(ack),
        WriteOp::PruneUsage(before) => *prune = Some(prune.map_or(before, |p| p.max(before))),
        other => pending.push(other),
    }
}

/// Usage rows deleted per step: a few milliseconds, so records of live
/// traffic never wait long behind a prune.
const PRUNE_BATCH: usize = 2_000;

/// One step of a prune; what is left to do. When nothing is left, freed
/// pages go back to the file system (when `auto_vacuum` is incremental, see
/// `codex-proxy db vacuum`).
fn prune_step(conn: &Connection, before: i64) -> Option<i64> {
    match super::usage::prune(conn, before, PRUNE_BATCH) {
        Ok(n) if n == PRUNE_BATCH => Some(before),
        Ok(_) => {
            if let Err(e) = conn.execute_batch("PRAGMA incremental_vacuum") {
                log::warn!("incremental vacuum failed: {e}");
            }
            None
        }
        Err(e) => {
            log::warn!("pruning usage rows failed ({e}); retried with the next batch");
            Some(before)
        }
    }
}

fn commit(conn: &Connection, ops: &[WriteOp]) -> Result<Vec<Posted>, StoreError> {
    let tx = conn.unchecked_transaction().ctx("starting batch")?;
    let mut touched: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    let mut seen: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    let mut rollup = super::usage::Rollup::default();
    let mut charges = Charges::of(ops);
    charges.insert(&tx)?;
    let mut posted = Vec::new();
    let rows: Vec<(&UsageRecord, Option<i64>)> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Usage(u) => Some((&**u, None)),
            WriteOp::Charge(u, l) => Some((&**u, charges.ledger_id(l))),
            _ => None,
        })
        .collect();
    // A request id the database already had, or met twice in this batch, is
    // neither inserted nor counted again: only its first row is new.
    let mut new = insert_usage(&tx, &rows)?;
    for op in ops {
        match op {
            WriteOp::Usage(u) => {
                if new.remove(u.request_id.as_str()) {
                    rollup.add(u);
                }
            }
            WriteOp::Charge(u, l) => {
                let ledger_id = charges.ledger_id(l);
                if !new.remove(u.request_id.as_str()) {
                    charges.drop_charge(l);
                    continue;
                }
                rollup.add(u);
                if let Some(ledger_id) = ledger_id {
                    posted.push(Posted {
                        user_id: l.user_id,
                        request_id: l.reference.clone(),
                        ledger_id,
                        account: l.account,
                        cost: -l.amount,
                        charged_at: l.created_at,
                    });
                }
            }
            WriteOp::Ledger(l) => insert_ledger(&tx, l)?,
            WriteOp::KeyUsed { key_id, at } => {
                let e = touched.entry(*key_id).or_insert(*at);
                *e = (*e).max(*at);
            }
            WriteOp::SessionSeen { session_id, at } => {
                let e = seen.entry(*session_id).or_insert(*at);
                *e = (*e).max(*at);
            }
            WriteOp::OperatorSeen { session_id, at } => super::sessions::touch_operator(&tx, *session_id, *at)?,
            WriteOp::Flush(_) | WriteOp::PruneUsage(_) => {}
        }
    }
    charges.finish(&tx)?;
    rollup.write(&tx)?;
    let stamps: Vec<(i64, i64)> = touched.into_iter().collect();
    super::accounts::touch_keys(&tx, &stamps)?;
    if !seen.is_empty() {
        super::sessions::touch(&tx, &seen.into_iter().collect::<Vec<_>>())?;
    }
    tx.commit().ctx("committing batch")?;
    Ok(posted)
}

/// Rows per usage insert: a few fixed shapes, each prepared once per
/// connection. Several rows per statement make a batch a few round trips on
/// PostgreSQL instead of one per request.
const USAGE_ROWS_PER_INSERT: [usize; 4] = [64, 16, 4, 1];

const USAGE_COLUMNS: &str = "request_id, created_at, key_id, user_id, endpoint, model, channel, input_tokens,
    cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, status, upstream_status, latency_ms,
    ttfb_ms, stream, estimated, cost, billed_to, attempts, translation, ledger_id";
const USAGE_WIDTH: usize = 23;

/// The usage insert of `n` rows, one per [`USAGE_ROWS_PER_INSERT`] size,
/// written once.
fn usage_insert(n: usize) -> &'static str {
    static SQL: once_cell::sync::Lazy<Vec<(usize, String)>> = once_cell::sync::Lazy::new(|| {
        let sql = |n| {
            format!(
                "INSERT INTO usage({USAGE_COLUMNS}) VALUES {} ON CONFLICT(request_id) DO NOTHING RETURNING request_id",
                value_tuples(n, USAGE_WIDTH)
            )
        };
        USAGE_ROWS_PER_INSERT.iter().map(|&n| (n, sql(n))).collect()
    });
    SQL.iter().find(|(rows, _)| *rows == n).map(|(_, sql)| sql.as_str()).expect("one of USAGE_ROWS_PER_INSERT")
}

/// Inserts the batch's usage rows; the request ids that were new.
fn insert_usage(
    conn: &Connection,
    rows: &[(&UsageRecord, Option<i64>)],
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut new = std::collections::HashSet::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let n = USAGE_ROWS_PER_INSERT.into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        let values = chunk.iter().flat_map(|(u, ledger_id)| usage_values(u, *ledger_id));
        let mut stmt = conn.prepare_cached(usage_insert(n)).ctx("preparing usage insert")?;
        let mut inserted = stmt.query(params_from_iter(values)).ctx("inserting usage")?;
        while let Some(r) = inserted.next().ctx("inserting usage")? {
            new.insert(r.get::<_, String>(0).ctx("inserting usage")?);
        }
        rest = tail;
    }
    Ok(new)
}

fn usage_values(u: &UsageRecord, ledger_id: Option<i64>) -> [Value; USAGE_WIDTH] {
    [
        u.request_id.to_value(),
        u.created_at.to_value(),
        u.key_id.to_value(),
        u.user_id.to_value(),
        u.endpoint.to_value(),
        u.model.to_value(),
        u.channel.to_value(),
        u.input_tokens.to_value(),
        u.cached_tokens.to_value(),
        u.cache_write_tokens.to_value(),
        u.output_tokens.to_value(),
        u.reasoning_tokens.to_value(),
        u.status.to_value(),
        u.upstream_status.to_value(),
        u.latency_ms.to_value(),
        u.ttfb_ms.to_value(),
        u.stream.to_value(),
        u.estimated.to_value(),
        u.cost.to_value(),
        u.billed_to.to_value(),
        u.attempts.to_value(),
        u.translation.to_value(),
        ledger_id.to_value(),
    ]
}

fn insert_ledger(conn: &Connection, l: &LedgerEntry) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO ledger(user_id, account, amount, kind, reason, reference, origin, created_at, instance)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'gateway', ?7, ?8)",
        )
        .ctx("preparing ledger insert")?;
    let instance = super::instance();
    stmt.execute(params![l.user_id, l.account, l.amount, l.kind, l.reason, l.reference, l.created_at, instance])
        .ctx("inserting ledger entry")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn batches_commit_and_flush_acknowledges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = super::super::open(&path).unwrap();
        let w = Writer::start(conn, Duration::from_millis(50), Box::new(|_| {})).unwrap();
        for i in 0..100 {
            w.send_blocking(WriteOp::Usage(Box::new(UsageRecord {
                request_id: format!("r{i}"),
                endpoint: "chat",
                status: 200,
                output_tokens: i,
                ..Default::default()
            })));
        }
        assert!(w.flush_blocking(Duration::from_secs(5)));
        let reader = super::super::open(&path).unwrap();
        let (n, sum): (i64, i64) = reader
            .query_row("SELECT count(*), sum(output_tokens) FROM usage", (), |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((n, sum), (100, 4950));
    }

    fn charge(request_id: &str, user_id: i64, cost: i64, at: i64) -> WriteOp {
        let usage = UsageRecord {
            request_id: request_id.into(),
            created_at: at,
            user_id: Some(user_id),
            endpoint: "chat",
            status: 200,
            cost,
            ..Default::default()
        };
        let entry = LedgerEntry {
            user_id,
            account: "credits",
            amount: -cost,
            kind: "usage",
            reason: "gpt-4o-mini".into(),
            reference: request_id.into(),
            created_at: at,
        };
        WriteOp::Charge(Box::new(usage), entry)
    }

    #[test]
    fn a_batch_charges_each_user_once_and_each_usage_row_names_its_charge() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path().join("db")).unwrap();
        for u in [1, 2] {
            conn.execute(
                "INSERT INTO users(id, email, created_at) VALUES (?1, ?2, 0)",
                params![u, format!("{u}@x.io")],
            )
            .unwrap();
        }
        let t = 1_700_000_000_000;
        let ops: Vec<WriteOp> = (0..10).map(|i| charge(&format!("r{i}"), 1 + i % 2, 100 + i, t + i)).collect();
        commit(&conn, &ops).unwrap();
        // A second batch replays r0 (already committed) and charges r10.
        commit(&conn, &[charge("r0", 1, 100, t + 20), charge("r10", 1, 7, t + 21)]).unwrap();

        let rows: Vec<(i64, i64, i64, String)> = conn
            .prepare("SELECT id, user_id, amount, reason FROM ledger ORDER BY id")
            .unwrap()
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let sums = |id: i64| -> (i64, i64) {
            conn.query_row("SELECT count(*), -SUM(cost) FROM usage WHERE ledger_id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        // Users 1 and 2 in the first batch; user 1 again for r10 alone (r0's
        // replay charged nothing).
        assert_eq!(rows.len(), 3, "{rows:?}");
        let expected = [(1, -(100 + 102 + 104 + 106 + 108)), (2, -(101 + 103 + 105 + 107 + 109)), (1, -7)];
        for ((id, user, amount, _), (want_user, want_amount)) in rows.iter().zip(expected) {
            assert_eq!((*user, *amount), (want_user, want_amount));
            assert_eq!(sums(*id), (if want_amount == -7 { 1 } else { 5 }, *amount), "usage rows of ledger row {id}");
        }
        assert_eq!(rows[0].3, "5 requests");
        assert_eq!(rows[2].3, "gpt-4o-mini", "one request keeps its model as the reason");
        // Every request's own cost is still in its usage row.
        let costs: i64 = conn.query_row("SELECT SUM(cost) FROM usage", (), |r| r.get(0)).unwrap();
        let ledger: i64 = conn.query_row("SELECT -SUM(amount) FROM ledger", (), |r| r.get(0)).unwrap();
        assert_eq!((costs, ledger), ((100..110).sum::<i64>() + 7, (100..110).sum::<i64>() + 7));

        // The same request id twice in one batch: its first row counts, once,
        // in the usage rows, the ledger and the rollup.
        commit(&conn, &[charge("r11", 2, 5, t + 30), charge("r11", 2, 5, t + 31)]).unwrap();
        let one = |sql: &str| -> i64 { conn.query_row(sql, (), |r| r.get(0)).unwrap() };
        assert_eq!(one("SELECT COUNT(*) FROM usage WHERE request_id = 'r11'"), 1);
        assert_eq!(one("SELECT -SUM(amount) FROM ledger WHERE user_id = 2"), 101 + 103 + 105 + 107 + 109 + 5);
        assert_eq!(one("SELECT SUM(requests) FROM usage_rollup WHERE user_id = 2"), 6);
    }

    /// The request ids of every usage row, in order.
    fn request_ids(conn: &Connection) -> Vec<String> {
        let mut st = conn.prepare("SELECT request_id FROM usage ORDER BY request_id").unwrap();
        st.query_map((), |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn a_poison_op_is_set_aside_and_the_rest_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codex-proxy.db");
        let conn = super::super::open(&path).unwrap();
        conn.execute("INSERT INTO users(id, email, created_at) VALUES (1, 'a@x.io', 0)", ()).unwrap();
        let w = Writer::start(conn, Duration::from_millis(20), Box::new(|_| {})).unwrap();
        w.send_blocking(charge("good-1", 1, 10, 1_000));
        // User 999 does not exist: the foreign key refuses this op every time.
        w.send_blocking(charge("poison", 999, 20, 1_000));
        w.send_blocking(charge("good-2", 1, 30, 1_000));
        assert!(w.flush_blocking(Duration::from_secs(5)));
        // Later ops are not stuck behind it.
        w.send_blocking(charge("good-3", 1, 40, 2_000));
        assert!(w.flush_blocking(Duration::from_secs(5)));
        let reader = super::super::open(&path).unwrap();
        assert_eq!(request_ids(&reader), ["good-1", "good-2", "good-3"]);
        let balance: i64 = reader.query_row("SELECT SUM(amount) FROM ledger", (), |r| r.get(0)).unwrap();
        assert_eq!(balance, -80);
        let dead = std::fs::read_to_string(dir.path().join("codex-proxy.dead-letters.jsonl")).unwrap();
        assert_eq!(dead.lines().count(), 1, "{dead}");
        assert!(dead.contains("poison") && dead.contains("FOREIGN KEY"), "{dead}");
        assert!(w.failing_since().is_none(), "a poison op is not a failing database");
    }

    #[test]
    fn failing_writes_make_the_node_unready_past_the_grace_or_with_the_queue_half_full() {
        // No writer thread: what is sent stays queued.
        let (w, _task) = Writer::with_capacity(8);
        let grace = Duration::from_secs(30);
        let usage =
            |i: usize| WriteOp::Usage(Box::new(UsageRecord { request_id: format!("r{i}"), ..Default::default() }));
        for i in 0..3 {
            w.send_blocking(usage(i));
        }
        assert_eq!(w.unready(1_000_000, grace), None, "commits are not failing");
        w.stats.failing_since.store(1_000_000, Ordering::Relaxed);
        assert_eq!(w.unready(1_029_999, grace), None, "3 of 8 waiting, inside the grace");
        assert_eq!(
            w.unready(1_030_000, grace).as_deref(),
            Some("database writes have been failing for 30s (3 records waiting)")
        );
        // A batch being retried counts as waiting too: 3 queued + 1 held.
        w.stats.held.store(1, Ordering::Relaxed);
        assert_eq!(
            w.unready(1_002_000, grace).as_deref(),
            Some("database writes have been failing for 2s (4 records waiting)"),
            "half full, long before the grace is over"
        );
    }

    #[test]
    fn a_prune_runs_between_batches_until_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = super::super::open(&path).unwrap();
        conn.execute("INSERT INTO users(id, email, created_at) VALUES (1, 'a@x.io', 0)", ()).unwrap();
        let w = Writer::start(conn, Duration::from_millis(20), Box::new(|_| {})).unwrap();
        let n = PRUNE_BATCH + 500;
        for i in 0..n {
            w.send_blocking(charge(&format!("old-{i:05}"), 1, 1, 1_000 + i as i64));
        }
        w.send_blocking(charge("new", 1, 1, 10_000_000));
        assert!(w.flush_blocking(Duration::from_secs(10)));
        w.send_blocking(WriteOp::PruneUsage(9_000_000));
        // Two steps: a full batch, then the rest; flushes in between.
        for _ in 0..3 {
            assert!(w.flush_blocking(Duration::from_secs(10)));
        }
        let reader = super::super::open(&path).unwrap();
        assert_eq!(request_ids(&reader), ["new"]);
        let rolled: i64 = reader.query_row("SELECT SUM(requests) FROM usage_rollup", (), |r| r.get(0)).unwrap();
        assert_eq!(rolled, n as i64 + 1, "the rollups keep every request");
        let ledger: i64 = reader.query_row("SELECT -SUM(amount) FROM ledger", (), |r| r.get(0)).unwrap();
        assert_eq!(ledger, n as i64 + 1, "the ledger is never pruned");
    }

    #[test]
    fn a_charge_group_never_straddles_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path().join("db")).unwrap();
        conn.execute("INSERT INTO users(id, email, created_at) VALUES (1, 'a@x.io', 0)", ()).unwrap();
        // 59.999 s and 60.000 s: one batch, two minutes, two ledger rows.
        commit(&conn, &[charge("a", 1, 5, 59_999), charge("b", 1, 6, 60_000)]).unwrap();
        let rows: Vec<(i64, i64)> = conn
            .prepare("SELECT amount, created_at FROM ledger ORDER BY id")
            .unwrap()
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![(-5, 59_999), (-6, 60_000)]);
    }

    #[test]
    fn external_changes_are_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = super::super::open(&path).unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let s2 = seen.clone();
        let _w = Writer::start(
            conn,
            Duration::from_millis(20),
            Box::new(move |_| {
                s2.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        let wait_for = |n: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while seen.load(Ordering::SeqCst) < n && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            seen.load(Ordering::SeqCst)
        };
        // The initial sync, then nothing until another connection commits.
        assert_eq!(wait_for(1), 1);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        let other = super::super::open(&path).unwrap();
        other.execute("INSERT INTO users(email, created_at) VALUES ('a@b.c', 0)", ()).unwrap();
        assert_eq!(wait_for(2), 2);
    }
}
