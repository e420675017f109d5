//! One connection type over the two storage backends: an embedded SQLite
//! file (the default) and PostgreSQL (several nodes on several machines).
//!
//! The store's SQL is written once, in the dialect both accept, with SQLite's
//! `?N` placeholders; the PostgreSQL side rewrites those (see `postgres`).
//! The API follows rusqlite's shape (`execute`, `query_row`, `prepare`,
//! `optional`) so that the store reads the same on either backend. Rows come
//! back as [`Value`]s, the way SQLite sees every cell, and each backend maps
//! its own types to them.
//!
//! Nothing here runs on the request path: callers are the batched writer,
//! the blocking pool of the website and admin API, and the CLI.

mod changes;
mod postgres;
mod sqlite;
mod target;
pub mod tls;
mod value;

pub use target::{Database, PgTarget};
pub use value::{FromSql, FromSqlError, ToSql, Value};

use std::cell::Cell;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres::describe(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error("query returned no rows")]
    NoRows,
    #[error("column {index}: {source}")]
    Column { index: usize, source: FromSqlError },
    #[error("the connection to PostgreSQL was lost inside a transaction")]
    LostTransaction,
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the same statement may succeed later: the database is busy,
    /// unreachable or out of room for now, as opposed to refusing this
    /// statement (a constraint, a type) every time.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Sqlite(e) => sqlite::is_transient(e),
            Error::Postgres(e) => postgres::is_transient(e),
            Error::LostTransaction => true,
            Error::NoRows | Error::Column { .. } | Error::Config(_) => false,
        }
    }
}

/// `.optional()` on a `query_row`: no row is `None`, not an error.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A statement's parameters: `params![a, b]`, an array of one type, `()`
/// for none, or [`params_from_iter`].
pub trait Params {
    fn values(self) -> Vec<Value>;
}

impl Params for () {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}

impl Params for &[&dyn ToSql] {
    fn values(self) -> Vec<Value> {
        self.iter().map(|p| p.to_value()).collect()
    }
}

impl<T: ToSql, const N: usize> Params for [T; N] {
    fn values(self) -> Vec<Value> {
        self.iter().map(ToSql::to_value).collect()
    }
}

impl<T: ToSql, const N: usize> Params for &[T; N] {
    fn values(self) -> Vec<Value> {
        self.iter().map(ToSql::to_value).collect()
    }
}

pub struct ParamsFromIter<I>(I);

pub fn params_from_iter<I: IntoIterator>(iter: I) -> ParamsFromIter<I>
where
    I::Item: ToSql,
{
    ParamsFromIter(iter)
}

impl<I: IntoIterator> Params for ParamsFromIter<I>
where
    I::Item: ToSql,
{
    fn values(self) -> Vec<Value> {
        self.0.into_iter().map(|p| p.to_value()).collect()
    }
}

/// `(?1, ?2), (?3, ?4)`: the VALUES of an insert of `rows` rows of `width`
/// columns each, numbered in order.
pub fn value_tuples(rows: usize, width: usize) -> String {
    let tuple = |r: usize| {
        let cols: Vec<String> = (1..=width).map(|c| format!("?{}", r * width + c)).collect();
        format!("({})", cols.join(", "))
    };
    (0..rows).map(tuple).collect::<Vec<_>>().join(", ")
}

/// `params![a, b, c]`: parameters of different types.
#[macro_export]
macro_rules! sql_params {
    () => { &[] as &[&dyn $crate::store::db::ToSql] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::store::db::ToSql),+] as &[&dyn $crate::store::db::ToSql] };
}
pub use crate::sql_params as params;

/// One row, read whole.
#[derive(Debug, Clone)]
pub struct Row {
    values: Vec<Value>,
}

/// A column by position (`r.get::<_, i64>(0)`).
pub trait RowIndex {
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl Row {
    pub fn get<I: RowIndex, T: FromSql>(&self, index: I) -> Result<T> {
        let index = index.index();
        let v = self.values.get(index).unwrap_or(&Value::Null);
        T::from_value(v).map_err(|source| Error::Column { index, source })
    }
}

/// The rows of a query, walked with `while let Some(r) = rows.next()?`.
pub struct Rows {
    rows: std::vec::IntoIter<Row>,
    current: Option<Row>,
}

impl Rows {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<&Row>> {
        self.current = self.rows.next();
        Ok(self.current.as_ref())
    }
}

enum Inner {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::PgConn>),
}

pub struct Connection {
    inner: Inner,
    /// Inside a transaction begun through [`Connection::transaction`].
    in_tx: Cell<bool>,
}

impl Connection {
    pub(crate) fn sqlite(conn: rusqlite::Connection) -> Connection {
        Connection { inner: Inner::Sqlite(conn), in_tx: Cell::new(false) }
    }

    pub(crate) fn postgres(target: &PgTarget) -> Result<Connection> {
        Ok(Connection { inner: Inner::Postgres(Box::new(postgres::PgConn::connect(target)?)), in_tx: Cell::new(false) })
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite connection underneath, for what only SQLite has (pragmas).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::Sqlite(c) => Some(c),
            Inner::Postgres(_) => None,
        }
    }

    /// Where this connection's process keeps records it could not store
    /// (see the writer's dead letters).
    pub fn dead_letters(&self) -> Option<PathBuf> {
        match &self.inner {
            Inner::Sqlite(c) => c.path().map(|p| std::path::Path::new(p).with_extension("dead-letters.jsonl")),
            Inner::Postgres(c) => Some(c.target().data_dir.join("codex-proxy.dead-letters.jsonl")),
        }
    }

    /// Names this connection to the other nodes' change listeners: a node
    /// does not reload on its own writer's commits (SQLite's data_version
    /// does not count a connection's own commits either).
    pub fn set_writer(&self) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(_) => Ok(()),
            Inner::Postgres(c) => c.set_writer(),
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        let values = params.values();
        match &self.inner {
            Inner::Sqlite(c) => sqlite::execute(c, sql, &values),
            Inner::Postgres(c) => c.execute(sql, &values, self.in_tx.get()),
        }
    }

    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Postgres(c) => c.batch(sql, self.in_tx.get()),
        }
    }

    /// Inserts one row and returns its `id`.
    pub fn insert<P: Params>(&self, sql: &str, params: P) -> Result<i64> {
        let values = params.values();
        match &self.inner {
            Inner::Sqlite(c) => {
                sqlite::execute(c, sql, &values)?;
                Ok(c.last_insert_rowid())
            }
            Inner::Postgres(c) => {
                let rows = c.query(&format!("{sql} RETURNING id"), &values, self.in_tx.get())?;
                if !self.in_tx.get() {
                    c.committed();
                }
                rows.first().ok_or(Error::NoRows)?.get(0)
            }
        }
    }

    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row) -> Result<T>,
    {
        let rows = self.query_all(sql, params.values())?;
        f(rows.first().ok_or(Error::NoRows)?)
    }

    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement { conn: self, sql: sql.to_string() })
    }

    /// Both backends cache prepared statements per connection.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare(sql)
    }

    fn query_all(&self, sql: &str, values: Vec<Value>) -> Result<Vec<Row>> {
        match &self.inner {
            Inner::Sqlite(c) => sqlite::query(c, sql, &values),
            Inner::Postgres(c) => c.query(sql, &values, self.in_tx.get()),
        }
    }

    /// A transaction that reads one consistent snapshot and may write;
    /// rolled back when dropped uncommitted.
    pub fn unchecked_transaction(&self) -> Result<Transaction<'_>> {
        self.begin(Isolation::Snapshot)
    }

    /// A transaction that first waits for every other such transaction on
    /// the database to end, in this process or any other: what reads a value
    /// and writes on it (a code's uses, an order's status) runs in one of
    /// these, as SQLite's `BEGIN IMMEDIATE` serialises writers.
    pub fn write_transaction(&self) -> Result<Transaction<'_>> {
        self.begin(Isolation::Serialised)
    }

    fn begin(&self, isolation: Isolation) -> Result<Transaction<'_>> {
        let sql = match (&self.inner, isolation) {
            (Inner::Sqlite(_), Isolation::Snapshot) => "BEGIN DEFERRED",
            (Inner::Sqlite(_), Isolation::Serialised) => "BEGIN IMMEDIATE",
            (Inner::Postgres(_), Isolation::Snapshot) => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            (Inner::Postgres(_), Isolation::Serialised) => postgres::BEGIN_SERIALISED,
        };
        self.execute_batch(sql)?;
        self.in_tx.set(true);
        Ok(Transaction { conn: self, done: false })
    }

    pub fn is_autocommit(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(c) => c.is_autocommit(),
            Inner::Postgres(_) => !self.in_tx.get(),
        }
    }

    /// A number that changes whenever another connection (another process,
    /// or this one's website) committed a change: SQLite's
    /// `PRAGMA data_version`, PostgreSQL's change notifications.
    pub fn data_version(&self) -> Result<i64> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.query_row("PRAGMA data_version", [], |r| r.get(0))?),
            Inner::Postgres(c) => Ok(changes::version(c.target())),
        }
    }
}

#[derive(Clone, Copy)]
enum Isolation {
    Snapshot,
    Serialised,
}

/// A statement to run with different parameters.
pub struct Statement<'c> {
    conn: &'c Connection,
    sql: String,
}

impl Statement<'_> {
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        self.conn.execute(&self.sql, params)
    }

    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows> {
        let rows = self.conn.query_all(&self.sql, params.values())?;
        Ok(Rows { rows: rows.into_iter(), current: None })
    }

    pub fn query_map<T, P, F>(&mut self, params: P, mut f: F) -> Result<std::vec::IntoIter<Result<T>>>
    where
        P: Params,
        F: FnMut(&Row) -> Result<T>,
    {
        let rows = self.conn.query_all(&self.sql, params.values())?;
        Ok(rows.iter().map(&mut f).collect::<Vec<_>>().into_iter())
    }

    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        Ok(!self.conn.query_all(&self.sql, params.values())?.is_empty())
    }
}

/// Rolled back when dropped without `commit`.
pub struct Transaction<'c> {
    conn: &'c Connection,
    done: bool,
}

impl Transaction<'_> {
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        let out = self.conn.execute_batch("COMMIT");
        self.conn.in_tx.set(false);
        if let (Ok(()), Inner::Postgres(c)) = (&out, &self.conn.inner) {
            c.committed();
        }
        out
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.conn.in_tx.set(false);
        }
    }
}
