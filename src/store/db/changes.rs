//! How a node hears that another process changed the PostgreSQL database:
//! every table has a statement trigger that sends `NOTIFY codex_proxy_changes`
//! with the writing connection's `application_name` (see the schema). One
//! thread per process and database listens and counts the notifications that
//! are not its own writer's; the count stands in for SQLite's
//! `PRAGMA data_version`, which the writer polls.
//!
//! A notification sent while the listener is disconnected is lost, so every
//! reconnection counts as a change, and so does every [`RESYNC_EVERY`]: a
//! full reload then catches whatever was missed.

use super::postgres::writer_label;
use super::PgTarget;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use postgres::fallible_iterator::FallibleIterator;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CHANNEL: &str = "codex_proxy_changes";

/// The backstop: a node reloads at least this often.
const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// Commits made by this process's other connections (the website's, the
/// admin API's): counted at once, since a notification arrives a moment
/// later and whoever waits on a flush expects to see their own change.
static OWN_COMMITS: AtomicI64 = AtomicI64::new(0);

pub(super) fn committed_here() {
    OWN_COMMITS.fetch_add(1, Ordering::AcqRel);
}

static LISTENERS: Lazy<Mutex<HashMap<String, Arc<AtomicI64>>>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// The change count for this database; starts its listener on first use.
pub(super) fn version(target: &PgTarget) -> i64 {
    let mut listeners = LISTENERS.lock();
    let count = listeners.entry(target.url.clone()).or_insert_with(|| {
        let count = Arc::new(AtomicI64::new(0));
        spawn(target.clone(), count.clone());
        count
    });
    count.load(Ordering::Acquire) + OWN_COMMITS.load(Ordering::Acquire)
}

fn spawn(target: PgTarget, count: Arc<AtomicI64>) {
    let run = move || loop {
        if let Err(e) = listen(&target, &count) {
            log::warn!("listening for database changes failed ({e}); reconnecting");
        }
        count.fetch_add(1, Ordering::AcqRel);
        std::thread::sleep(Duration::from_millis(500));
    };
    if let Err(e) = std::thread::Builder::new().name("db-changes".into()).spawn(run) {
        log::error!("cannot start the database change listener: {e}");
    }
}

fn listen(target: &PgTarget, count: &AtomicI64) -> Result<(), String> {
    let name = format!("codex-proxy {} listener", crate::store::instance());
    let mut client = target.connect(&name).map_err(|e| e.to_string())?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).map_err(|e| e.to_string())?;
    // What changed between the last notification heard and now.
    count.fetch_add(1, Ordering::AcqRel);
    let own = writer_label();
    let mut resynced = Instant::now();
    loop {
        {
            let mut notifications = client.notifications();
            let mut waiting = notifications.timeout_iter(Duration::from_millis(500));
            while let Some(n) = waiting.next().map_err(|e| e.to_string())? {
                if n.payload() != own {
                    count.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        if client.is_closed() {
            return Err("the connection closed".into());
        }
        if resynced.elapsed() >= RESYNC_EVERY {
            resynced = Instant::now();
            count.fetch_add(1, Ordering::AcqRel);
        }
    }
}
