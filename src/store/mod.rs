//! Durable state: one SQLite file in WAL mode (the default), or a PostgreSQL
//! database that several nodes share (see [`db`]). The request path never
//! touches it: the gateway loads what it needs into memory at start, writes
//! through the batched [`writer`], and notices changes made by other
//! processes (the CLI, other nodes) through [`db::Connection::data_version`].

pub mod accounts;
pub mod billing;
pub mod channels;
mod charges;
pub mod copy;
pub mod db;
pub mod kinds;
mod migrations;
pub mod orders;
pub mod pool;
pub mod secret;
pub mod sessions;
pub mod snapshot;
pub mod usage;
pub mod writer;

pub use db::{Connection, Database};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open database {path}: {source}")]
    Open { path: PathBuf, source: db::Error },
    #[error("database migration to version {version} failed: {source}")]
    Migrate { version: u32, source: db::Error },
    #[error("database {path} has schema version {found}, newer than this binary ({supported}); upgrade codex-proxy")]
    TooNew { path: PathBuf, found: u32, supported: u32 },
    #[error("{context}: {source}")]
    Sql { context: &'static str, source: db::Error },
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("no user with email {0}")]
    NoSuchUser(String),
    #[error("no API key with id {0}")]
    NoSuchKey(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("database task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether retrying the same write later may succeed: the database is
    /// busy, full, read-only for now or failing I/O, as opposed to refusing
    /// this write (a constraint, a type) every time.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Sql { source, .. } => source.is_transient(),
            _ => true,
        }
    }
}

/// This process among the gateways that may share the database (two during
/// a graceful upgrade): written with its ledger entries, so that each applies
/// the other's charges and not its own.
pub fn instance() -> &'static str {
    static ID: once_cell::sync::Lazy<String> =
        once_cell::sync::Lazy::new(|| format!("{}-{}", std::process::id(), crate::auth::random_base62(8)));
    &ID
}

/// Attaches a context string to rusqlite errors: `.ctx("inserting user")?`.
pub trait SqlContext<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for Result<T, db::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sql { context, source })
    }
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sql { context, source: source.into() })
    }
}

/// Opens (creating when missing) the database and brings its schema up to
/// date: a path or `&Database`.
pub fn open(target: impl Into<Database>) -> Result<Connection, StoreError> {
    match target.into() {
        Database::Sqlite(path) => open_file(&path).map(Connection::sqlite),
        Database::Postgres(t) => {
            let conn =
                Connection::postgres(&t).map_err(|source| StoreError::Open { path: t.url.clone().into(), source })?;
            migrations::migrate_pg(&conn, &t.url)?;
            Ok(conn)
        }
    }
}

fn open_file(path: &std::path::Path) -> Result<rusqlite::Connection, StoreError> {
    secret::touch_private(path)
        .map_err(|source| StoreError::CreateDir { path: path.parent().unwrap_or(path).to_path_buf(), source })?;
    let fail = |source: rusqlite::Error| StoreError::Open { path: path.to_path_buf(), source: source.into() };
    let conn = rusqlite::Connection::open(path).map_err(fail)?;
    let setup = || -> rusqlite::Result<()> {
        // A CLI write and the gateway's batch writer may meet; wait instead of failing.
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode: a commit survives a process crash (kill -9); only
        // an OS crash or power loss may roll back the last transactions.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    };
    // Switching a file to WAL, or opening one another process is recovering,
    // can be refused as busy without waiting on busy_timeout: nodes that
    // start together on one file would then fail at once. They wait here.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match setup() {
            Ok(()) => break,
            Err(e) if busy(&e) && std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(25)),
            Err(e) => return Err(fail(e)),
        }
    }
    migrations::migrate(&conn, path)?;
    Ok(conn)
}

fn busy(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, DatabaseBusy | DatabaseLocked))
}

/// Changes whenever *another* connection commits (see
/// [`db::Connection::data_version`]).
pub fn data_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.data_version().ctx("reading data_version")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_and_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/db.sqlite");
        let conn = open(&path).unwrap();
        let v: u32 = conn.query_row("PRAGMA user_version", (), |r| r.get(0)).unwrap();
        assert_eq!(v, migrations::LATEST);
        let mode: String = conn.query_row("PRAGMA journal_mode", (), |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        // Re-opening is a no-op migration.
        open(&path).unwrap();
    }

    /// Nodes started together on a new file: switching it to WAL must not
    /// fail one of them as busy.
    #[test]
    fn connections_opening_a_new_file_together_all_succeed() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db.sqlite");
            let opening: Vec<_> = (0..8)
                .map(|_| {
                    let p = path.clone();
                    std::thread::spawn(move || open(&p).map(drop))
                })
                .collect();
            for o in opening {
                o.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = open(&path).unwrap();
        conn.as_sqlite().unwrap().pragma_update(None, "user_version", 999).unwrap();
        drop(conn);
        assert!(matches!(open(&path), Err(StoreError::TooNew { found: 999, .. })));
    }

    #[test]
    fn data_version_sees_other_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let a = open(&path).unwrap();
        let b = open(&path).unwrap();
        let before = data_version(&a).unwrap();
        b.execute("INSERT INTO users(email, created_at) VALUES ('x@y.z', 0)", ()).unwrap();
        assert_ne!(data_version(&a).unwrap(), before);
    }
}
