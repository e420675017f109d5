//! The PostgreSQL side: the synchronous `postgres` client (the store runs on
//! blocking threads already), statements prepared once per connection, and
//! SQLite's dynamic cells mapped onto PostgreSQL's types in both directions.

use super::{Error, PgTarget, Result, Row, Value};
use bytes::BytesMut;
use parking_lot::Mutex;
use postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use postgres::{Client, Statement};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Every transaction that reads a value and writes on it takes this lock
/// first, so such transactions run one at a time across all nodes, as they
/// do on one SQLite file.
pub(super) const BEGIN_SERIALISED: &str = "BEGIN; SELECT pg_advisory_xact_lock(7401, 1)";

/// The connection a node's change listener tells apart (see `changes`).
pub(super) fn writer_label() -> String {
    format!("codex-proxy {} writer", crate::store::instance())
}

fn label() -> String {
    format!("codex-proxy {}", crate::store::instance())
}

pub(super) struct PgConn {
    target: PgTarget,
    writer: AtomicBool,
    client: Mutex<Option<Client>>,
    /// Prepared statements by their SQLite text; emptied on reconnect.
    statements: Mutex<HashMap<String, Statement>>,
}

/// A client's connection drops with a `block_on`, which must not run
/// inside a runtime either.
impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(client) = self.client.lock().take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                std::thread::spawn(move || drop(client));
            }
        }
    }
}

impl PgConn {
    pub(super) fn connect(target: &PgTarget) -> Result<PgConn> {
        let conn = PgConn {
            target: target.clone(),
            writer: AtomicBool::new(false),
            client: Mutex::new(None),
            statements: Mutex::new(HashMap::new()),
        };
        *conn.client.lock() = Some(off_runtime(|| conn.open())?);
        Ok(conn)
    }

    pub(super) fn target(&self) -> &PgTarget {
        &self.target
    }

    fn open(&self) -> Result<Client> {
        self.target.connect(&if self.writer.load(Ordering::Relaxed) { writer_label() } else { label() })
    }

    pub(super) fn set_writer(&self) -> Result<()> {
        self.writer.store(true, Ordering::Relaxed);
        self.batch(&format!("SET application_name = '{}'", writer_label()), false)
    }

    /// Runs `f` on a live client: one lost between calls is opened again,
    /// unless a transaction was open on it (its work is gone; the caller's
    /// retry starts over).
    fn with_client<T: Send>(&self, in_tx: bool, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        off_runtime(|| self.on_this_thread(in_tx, f))
    }

    fn on_this_thread<T>(&self, in_tx: bool, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut slot = self.client.lock();
        if slot.as_ref().is_none_or(Client::is_closed) {
            if in_tx {
                return Err(Error::LostTransaction);
            }
            *slot = None;
            self.statements.lock().clear();
            *slot = Some(self.open()?);
        }
        f(slot.as_mut().expect("opened above"))
    }

    fn statement(&self, client: &mut Client, sql: &str, values: &[Value]) -> Result<Statement> {
        if let Some(s) = self.statements.lock().get(sql) {
            return Ok(s.clone());
        }
        let text = translate(sql);
        let mut st = match client.prepare(&text) {
            Ok(st) => st,
            // Nothing around a parameter says its type (`?1 IS NULL`): the
            // value's own type does.
            Err(e) if e.code().is_some_and(|c| matches!(c.code(), "42P18" | "42P08")) => {
                client.prepare_typed(&text, &values.iter().map(type_of).collect::<Vec<_>>())?
            }
            Err(e) => return Err(e.into()),
        };
        // A parameter next to a small literal (`?1 - 900000`) is inferred as
        // int4; every integer column is int8, and so is every value sent.
        if st.params().iter().any(|t| *t == Type::INT4 || *t == Type::INT2) {
            let widened: Vec<Type> = st
                .params()
                .iter()
                .map(|t| if *t == Type::INT4 || *t == Type::INT2 { Type::INT8 } else { t.clone() })
                .collect();
            st = client.prepare_typed(&text, &widened)?;
        }
        self.statements.lock().insert(sql.to_string(), st.clone());
        Ok(st)
    }

    pub(super) fn query(&self, sql: &str, values: &[Value], in_tx: bool) -> Result<Vec<Row>> {
        self.with_client(in_tx, |c| {
            let st = self.statement(c, sql, values)?;
            let rows = with_params(values, |refs| c.query(&st, refs))?;
            rows.iter()
                .map(|r| {
                    let values =
                        (0..r.len()).map(|i| r.try_get::<_, Cell_>(i).map(|c| c.0)).collect::<Result<_, _>>()?;
                    Ok(Row { values })
                })
                .collect()
        })
    }

    pub(super) fn execute(&self, sql: &str, values: &[Value], in_tx: bool) -> Result<usize> {
        let n = self.with_client(in_tx, |c| {
            let st = self.statement(c, sql, values)?;
            Ok(with_params(values, |refs| c.execute(&st, refs))? as usize)
        })?;
        if !in_tx {
            self.committed();
        }
        Ok(n)
    }

    /// A change of this connection's is in the database.
    pub(super) fn committed(&self) {
        if !self.writer.load(Ordering::Relaxed) {
            super::changes::committed_here();
        }
    }

    pub(super) fn batch(&self, sql: &str, in_tx: bool) -> Result<()> {
        self.with_client(in_tx, |c| Ok(c.batch_execute(sql)?))
    }
}

/// Calls `f` with `values` as the client's parameters.
fn with_params<T>(values: &[Value], f: impl FnOnce(&[&(dyn ToSql + Sync)]) -> T) -> T {
    let params: Vec<Param> = values.iter().map(Param).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    f(&refs)
}

/// Runs `f` here, or on a thread of its own when this one is inside a tokio
/// runtime: the client drives its socket with a runtime of its own, which
/// cannot start inside another (a test's, a background service's, a
/// blocking task of the server's).
fn off_runtime<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

/// SQLite's dialect to PostgreSQL's, for the few places they differ in the
/// store's SQL: `?N` placeholders become `$N`, `INSERT OR IGNORE` an
/// `ON CONFLICT DO NOTHING`. Text in quotes is left alone.
pub(super) fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 24);
    let mut chars = sql.chars().peekable();
    let (mut quoted, mut next) = (false, 1);
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    out.push_str(&next.to_string());
                    next += 1;
                }
            }
            _ => out.push(c),
        }
    }
    let trimmed = out.trim_start();
    if trimmed.len() >= 16 && trimmed[..16].eq_ignore_ascii_case("INSERT OR IGNORE") {
        let body = trimmed[16..].trim_end().trim_end_matches(';');
        return format!("INSERT{body} ON CONFLICT DO NOTHING");
    }
    out
}

fn type_of(v: &Value) -> Type {
    match v {
        Value::Integer(_) => Type::INT8,
        Value::Real(_) => Type::FLOAT8,
        Value::Blob(_) => Type::BYTEA,
        Value::Null | Value::Text(_) => Type::TEXT,
    }
}

fn text_like(ty: &Type) -> bool {
    matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN) || ty.name() == "citext"
}

/// A value sent as whatever type the server declared for its parameter.
#[derive(Debug)]
struct Param<'a>(&'a Value);

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match (self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Integer(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Integer(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Value::Integer(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Integer(i), t) if text_like(t) => i.to_string().as_str().to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (Value::Text(s), t) if text_like(t) => s.as_str().to_sql(ty, out),
            (Value::Blob(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            (v, t) => Err(format!("cannot send {v} as {t}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A cell of any type the schema uses, as a [`Value`].
struct Cell_(Value);

impl<'a> FromSql<'a> for Cell_ {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let v = match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Integer(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Integer(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Value::Blob(raw.to_vec()),
            ref t if text_like(t) => Value::Text(std::str::from_utf8(raw)?.to_string()),
            ref t => return Err(format!("a column of type {t} is not read by the store").into()),
        };
        Ok(Cell_(v))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell_(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// PostgreSQL's binary NUMERIC (what `SUM` of a bigint column returns): base
/// 10,000 digits with a weight. Whole numbers come back as integers, the way
/// SQLite returns a sum of integers.
fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "short NUMERIC".into())
    };
    let (ndigits, weight, sign) = (word(0)? as usize, word(2)? as i16, word(4)?);
    if sign == 0xC000 {
        return Err("NUMERIC NaN".into());
    }
    let (mut whole, mut fraction) = (0i128, 0f64);
    for i in 0..ndigits {
        let digit = word(8 + 2 * i)?;
        let exp = weight as i32 - i as i32;
        if exp >= 0 {
            let scale = 10_000i128.checked_pow(exp as u32).ok_or("NUMERIC out of range")?;
            whole = whole.checked_add(digit as i128 * scale).ok_or("NUMERIC out of range")?;
        } else {
            fraction += digit as f64 * 10_000f64.powi(exp);
        }
    }
    let negative = sign == 0x4000;
    if fraction == 0.0 {
        let v = i64::try_from(whole).map_err(|_| "NUMERIC out of range")?;
        return Ok(Value::Integer(if negative { -v } else { v }));
    }
    let v = whole as f64 + fraction;
    Ok(Value::Real(if negative { -v } else { v }))
}

/// Whether a failed statement may succeed later: the server is unreachable,
/// restarting, out of resources, or this transaction lost a race it may win
/// next time.
pub(super) fn is_transient(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let c = code.code();
            c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57P")
                || matches!(c, "40001" | "40P01" | "25006")
        }
        // No SQLSTATE: I/O on the socket, or a failure to connect at all.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

pub(super) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None if super::tls::is_handshake_failure(e) => format!(
            "{e} (the server's certificate must chain to storage.ca_file, or to the system's roots without \
             it, and name the host in storage.url)"
        ),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_ignores_are_translated() {
        assert_eq!(translate("SELECT a FROM t WHERE b = ?1 AND c = ?12"), "SELECT a FROM t WHERE b = $1 AND c = $12");
        assert_eq!(translate("UPDATE t SET a = ?, b = ? WHERE c = '?'"), "UPDATE t SET a = $1, b = $2 WHERE c = '?'");
        assert_eq!(
            translate("  INSERT OR IGNORE INTO t(a) VALUES (?1);"),
            "INSERT INTO t(a) VALUES ($1) ON CONFLICT DO NOTHING"
        );
    }

    fn numeric_bytes(ndigits: u16, weight: i16, sign: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, 0] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_decode() {
        // 123,456,789 = 1|2345|6789 with weight 2.
        assert_eq!(numeric(&numeric_bytes(3, 2, 0, &[1, 2345, 6789])).unwrap(), Value::Integer(123_456_789));
        assert_eq!(numeric(&numeric_bytes(1, 1, 0x4000, &[5])).unwrap(), Value::Integer(-50_000));
        assert_eq!(numeric(&numeric_bytes(0, 0, 0, &[])).unwrap(), Value::Integer(0));
        assert_eq!(numeric(&numeric_bytes(2, 0, 0, &[3, 5000])).unwrap(), Value::Real(3.5));
        assert!(numeric(&numeric_bytes(1, 9, 0, &[1])).is_err(), "past i64");
        assert!(numeric(&[0, 1]).is_err());
    }
}
