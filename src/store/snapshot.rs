//! Credit totals per user (balance and usage spent), snapshotted so that a
//! start-up reads the snapshot and only the ledger entries after it, instead
//! of summing the whole ledger (about a second per million entries). The
//! ledger stays the truth: the snapshot is the sum of the entries up to
//! `through_id`, advanced by the writer, and checked against a full sum in the
//! background after every start (see `verify`).

use super::{SqlContext, StoreError};
use crate::clock::now_ms;
use crate::store::db::{params, Connection};
use std::collections::HashMap;

/// A user's credit totals in micro-credits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Σ of the `credits` entries.
    pub balance: i64,
    /// −Σ of the `credits` usage charges.
    pub spent: i64,
}

/// Totals per user and the last ledger id they include.
pub type Loaded = (HashMap<i64, Totals>, i64);

const SUMS: &str = "SELECT user_id, SUM(amount), -SUM(CASE WHEN kind = 'usage' THEN amount ELSE 0 END)
     FROM ledger WHERE account = 'credits' AND id > ?1 AND id <= ?2 GROUP BY user_id";

fn sums(conn: &Connection, after: i64, through: i64, into: &mut HashMap<i64, Totals>) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(SUMS).ctx("summing the ledger")?;
    let rows = stmt
        .query_map([after, through], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
        .ctx("summing the ledger")?;
    for row in rows {
        let (user, balance, spent) = row.ctx("summing the ledger")?;
        let t = into.entry(user).or_default();
        t.balance += balance;
        t.spent += spent;
    }
    Ok(())
}

fn max_id(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM ledger", (), |r| r.get(0)).ctx("reading the ledger")
}

fn snapshot(conn: &Connection) -> Result<Loaded, StoreError> {
    let through: i64 = conn
        .query_row("SELECT COALESCE(MAX(through_id), 0) FROM ledger_snapshot_meta", (), |r| r.get(0))
        .ctx("reading the ledger snapshot")?;
    let mut stmt =
        conn.prepare("SELECT user_id, balance, spent FROM ledger_snapshot").ctx("reading the ledger snapshot")?;
    let rows = stmt
        .query_map((), |r| Ok((r.get(0)?, Totals { balance: r.get(1)?, spent: r.get(2)? })))
        .ctx("reading the ledger snapshot")?;
    Ok((rows.collect::<Result<_, _>>().ctx("reading the ledger snapshot")?, through))
}

/// The totals of every entry now in the ledger: the snapshot plus the
/// entries after it, in one read transaction.
pub fn load(conn: &Connection) -> Result<Loaded, StoreError> {
    let tx = conn.unchecked_transaction().ctx("reading the ledger")?;
    let (mut totals, through) = snapshot(&tx)?;
    let last = max_id(&tx)?;
    sums(&tx, through, last, &mut totals)?;
    Ok((totals, last))
}

/// The totals of the entries up to `through`, summed from the ledger alone.
pub fn full(conn: &Connection, through: i64) -> Result<HashMap<i64, Totals>, StoreError> {
    let mut totals = HashMap::new();
    sums(conn, 0, through, &mut totals)?;
    Ok(totals)
}

/// Folds the entries after the snapshot into it once there are at least
/// `min_new` of them; returns how many were folded.
pub fn advance(conn: &Connection, min_new: i64) -> Result<i64, StoreError> {
    let tx = conn.unchecked_transaction().ctx("advancing the ledger snapshot")?;
    let (_, through) = snapshot(&tx)?;
    let last = max_id(&tx)?;
    if last - through < min_new.max(1) {
        return Ok(0);
    }
    let mut delta = HashMap::new();
    sums(&tx, through, last, &mut delta)?;
    write(&tx, &delta, last, true)?;
    tx.commit().ctx("advancing the ledger snapshot")?;
    Ok(last - through)
}

/// Replaces the snapshot with the ledger's own sums up to `through`.
pub fn rebuild(conn: &Connection, totals: &HashMap<i64, Totals>, through: i64) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction().ctx("rebuilding the ledger snapshot")?;
    tx.execute("DELETE FROM ledger_snapshot", ()).ctx("rebuilding the ledger snapshot")?;
    write(&tx, totals, through, false)?;
    tx.commit().ctx("rebuilding the ledger snapshot")
}

fn write(conn: &Connection, totals: &HashMap<i64, Totals>, through: i64, add: bool) -> Result<(), StoreError> {
    let sql = if add {
        "INSERT INTO ledger_snapshot(user_id, balance, spent) VALUES (?1, ?2, ?3)
         ON CONFLICT(user_id) DO UPDATE SET balance = ledger_snapshot.balance + excluded.balance,
                                           spent = ledger_snapshot.spent + excluded.spent"
    } else {
        "INSERT INTO ledger_snapshot(user_id, balance, spent) VALUES (?1, ?2, ?3)"
    };
    let mut stmt = conn.prepare_cached(sql).ctx("writing the ledger snapshot")?;
    for (user, t) in totals {
        stmt.execute(params![user, t.balance, t.spent]).ctx("writing the ledger snapshot")?;
    }
    conn.execute(
        "INSERT INTO ledger_snapshot_meta(id, through_id, taken_at) VALUES (1, ?1, ?2)
         ON CONFLICT(id) DO UPDATE SET through_id = excluded.through_id, taken_at = excluded.taken_at",
        params![through, now_ms()],
    )
    .ctx("writing the ledger snapshot")?;
    Ok(())
}

/// Users whose loaded totals differ from the ledger's own sums, with the
/// correction (ledger − loaded) to apply.
pub fn differences(loaded: &HashMap<i64, Totals>, ledger: &HashMap<i64, Totals>) -> Vec<(i64, Totals)> {
    let zero = Totals::default();
    let mut out: Vec<(i64, Totals)> = loaded
        .keys()
        .chain(ledger.keys())
        .filter_map(|u| {
            let (a, b) = (loaded.get(u).unwrap_or(&zero), ledger.get(u).unwrap_or(&zero));
            (a != b).then(|| (*u, Totals { balance: b.balance - a.balance, spent: b.spent - a.spent }))
        })
        .collect();
    out.sort_by_key(|d| d.0);
    out.dedup_by_key(|d| d.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(conn: &Connection, user: i64, amount: i64, kind: &str) {
        conn.execute(
            "INSERT INTO ledger(user_id, account, amount, kind, origin, created_at) VALUES (?1, 'credits', ?2, ?3, 'cli', 0)",
            params![user, amount, kind],
        )
        .unwrap();
    }

    #[test]
    fn snapshot_plus_new_entries_equals_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path().join("db")).unwrap();
        for u in [1, 2] {
            conn.execute("INSERT INTO users(id, email, created_at) VALUES (?1, ?2, 0)", params![u, format!("{u}@x")])
                .unwrap();
        }
        entry(&conn, 1, 1_000, "topup");
        entry(&conn, 1, -30, "usage");
        entry(&conn, 2, 500, "topup");
        assert_eq!(advance(&conn, 10).unwrap(), 0, "fewer new entries than asked: no snapshot");
        assert_eq!(advance(&conn, 1).unwrap(), 3);
        entry(&conn, 1, -20, "usage");
        entry(&conn, 2, -5, "usage");
        entry(&conn, 2, 100, "adjust");
        let (loaded, through) = load(&conn).unwrap();
        assert_eq!(through, 6);
        assert_eq!(loaded[&1], Totals { balance: 950, spent: 50 });
        assert_eq!(loaded[&2], Totals { balance: 595, spent: 5 });
        assert_eq!(loaded, full(&conn, through).unwrap());
        assert_eq!(advance(&conn, 1).unwrap(), 3);
        assert_eq!(load(&conn).unwrap(), (full(&conn, 6).unwrap(), 6));

        // A snapshot that disagrees with the ledger is found and rebuilt.
        conn.execute("UPDATE ledger_snapshot SET balance = balance + 7 WHERE user_id = 2", ()).unwrap();
        let (loaded, through) = load(&conn).unwrap();
        let ledger = full(&conn, through).unwrap();
        assert_eq!(differences(&loaded, &ledger), vec![(2, Totals { balance: -7, spent: 0 })]);
        rebuild(&conn, &ledger, through).unwrap();
        assert!(differences(&load(&conn).unwrap().0, &ledger).is_empty());
    }
}
