//! `codex-proxy migrate`: copies a single node's SQLite file into an empty
//! PostgreSQL database, so that a deployment can grow into a cluster.
//!
//! The copy reads one snapshot of the file and writes in one transaction,
//! so it is all or nothing. It then checks, before committing, that every
//! table has as many rows on both sides and that every user's credit
//! balance (the sum of their ledger) is the same on both sides.

use super::db::{params_from_iter, value_tuples, Backend, Value};
use super::{billing, Connection, SqlContext, StoreError};

/// The tables in the order a copy fills them (each after those it names).
pub const TABLES: &[&str] = &[
    "users",
    "api_keys",
    "usage",
    "subscriptions",
    "ledger",
    "redemption_codes",
    "code_redemptions",
    "admin_audit",
    "web_sessions",
    "form_tokens",
    "usage_rollup",
    "orders",
    "payment_events",
    "operator_sessions",
    "channel_switches",
    "ledger_snapshot",
    "ledger_snapshot_meta",
    "usage_pruned",
    "shared_keys",
];

/// Tables whose `id` PostgreSQL numbers itself (an identity column).
const IDENTITIES: &[&str] = &[
    "users",
    "api_keys",
    "usage",
    "subscriptions",
    "redemption_codes",
    "code_redemptions",
    "admin_audit",
    "web_sessions",
    "operator_sessions",
];

/// Rows sent per INSERT: one round trip each, well under PostgreSQL's
/// 65,535 parameters for the widest table.
const ROWS_PER_INSERT: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("--from must be a SQLite file and --to a PostgreSQL database")]
    Backends,
    #[error("the destination already holds data ({table} has rows); copy into an empty database")]
    NotEmpty { table: &'static str },
    #[error("{table}: {source_rows} rows read but {copied} copied")]
    Count { table: &'static str, source_rows: i64, copied: i64 },
    #[error("{0} users' balances differ after the copy; nothing was committed")]
    Balances(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What was copied.
#[derive(Debug, Default)]
pub struct Copied {
    pub rows: Vec<(&'static str, i64)>,
    pub users_with_credits: usize,
    /// Σ of every credit balance, in micro-credits, on both sides.
    pub credits: i64,
}

pub fn copy(from: &Connection, to: &Connection) -> Result<Copied, CopyError> {
    if from.backend() != Backend::Sqlite || to.backend() != Backend::Postgres {
        return Err(CopyError::Backends);
    }
    for &table in TABLES {
        if count(to, table)? > 0 {
            return Err(CopyError::NotEmpty { table });
        }
    }
    let read = from.unchecked_transaction().ctx("reading the SQLite file")?;
    let write = to.write_transaction().ctx("starting the copy")?;
    let mut copied = Copied::default();
    for &table in TABLES {
        let n = copy_table(&read, &write, table)?;
        let source_rows = count(&read, table)?;
        if n != source_rows {
            return Err(CopyError::Count { table, source_rows, copied: n });
        }
        copied.rows.push((table, n));
    }
    restart_sequences(&write)?;
    let (before, after) = (billing::balances(&read)?, billing::balances(&write)?);
    let differ = before.iter().filter(|(u, b)| after.get(u) != Some(b)).count() + after.len().abs_diff(before.len());
    if differ > 0 {
        return Err(CopyError::Balances(differ));
    }
    copied.users_with_credits = before.len();
    copied.credits = before.values().sum();
    write.commit().ctx("committing the copy")?;
    Ok(copied)
}

fn count(conn: &Connection, table: &str) -> Result<i64, StoreError> {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), (), |r| r.get(0)).ctx("counting rows")
}

fn columns(sqlite: &Connection, table: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        sqlite.prepare(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid")).ctx("columns")?;
    let names = stmt.query_map((), |r| r.get(0)).ctx("columns")?;
    names.collect::<Result<_, _>>().ctx("columns")
}

/// Copies one table in batches of [`ROWS_PER_INSERT`]; the rows copied.
fn copy_table(from: &Connection, to: &Connection, table: &'static str) -> Result<i64, StoreError> {
    let cols = columns(from, table)?;
    let list = cols.join(", ");
    let mut stmt = from.prepare(&format!("SELECT {list} FROM {table}")).ctx("reading a table")?;
    let mut rows = stmt.query(()).ctx("reading a table")?;
    let (mut batch, mut copied) = (Vec::new(), 0i64);
    while let Some(row) = rows.next().ctx("reading a table")? {
        for i in 0..cols.len() {
            batch.push(row.get::<_, Value>(i).ctx("reading a cell")?);
        }
        if batch.len() == cols.len() * ROWS_PER_INSERT {
            copied += insert(to, table, &list, cols.len(), std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        copied += insert(to, table, &list, cols.len(), batch)?;
    }
    Ok(copied)
}

fn insert(to: &Connection, table: &str, list: &str, width: usize, values: Vec<Value>) -> Result<i64, StoreError> {
    let sql = format!("INSERT INTO {table}({list}) VALUES {}", value_tuples(values.len() / width, width));
    let n = to.execute(&sql, params_from_iter(values)).ctx("copying rows")?;
    Ok(n as i64)
}

/// Identities and the ledger's sequence go on after the copied ids.
fn restart_sequences(to: &Connection) -> Result<(), StoreError> {
    let identities = IDENTITIES.iter().map(|t| format!("pg_get_serial_sequence('{t}', 'id')"));
    let sequences = identities.zip(IDENTITIES).chain([("'ledger_id_seq'".to_string(), &"ledger")]);
    for (sequence, table) in sequences {
        let sql = format!("SELECT setval({sequence}, COALESCE(MAX(id), 0) + 1, false) FROM {table}");
        to.query_row(&sql, (), |r| r.get::<_, i64>(0)).ctx("restarting a sequence")?;
    }
    Ok(())
}
