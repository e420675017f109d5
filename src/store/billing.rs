//! SQL for money: the ledger, subscriptions, redemption codes and the admin
//! audit trail. Used by the CLI, the admin API, the console, redemption and
//! the gateway's reloads; never on the LLM request path.

use super::kinds::{Account, SubscriptionStatus, Switch};
use super::{SqlContext, StoreError};
use crate::clock::now_ms;
use crate::store::db::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use std::collections::HashMap;

/// Who wrote a ledger entry: the gateway's own writes are already applied in
/// memory, everything else is picked up on reload.
pub const ORIGIN_GATEWAY: &str = "gateway";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    pub id: i64,
    pub user_id: i64,
    pub account: Account,
    pub amount: i64,
    pub kind: String,
    pub reason: String,
    pub reference: String,
    pub origin: String,
    pub created_at: i64,
}

fn ledger_row(r: &Row) -> crate::store::db::Result<LedgerRow> {
    Ok(LedgerRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        account: r.get(2)?,
        amount: r.get(3)?,
        kind: r.get(4)?,
        reason: r.get(5)?,
        reference: r.get(6)?,
        origin: r.get(7)?,
        created_at: r.get(8)?,
    })
}

const LEDGER_COLS: &str = "id, user_id, account, amount, kind, reason, reference, origin, created_at";

/// A ledger entry written outside the gateway's batch writer.
pub struct NewEntry<'a> {
    pub user_id: i64,
    pub account: Account,
    pub amount: i64,
    pub kind: &'a str,
    pub reason: &'a str,
    pub reference: &'a str,
    pub origin: &'a str,
}

pub fn insert_ledger(conn: &Connection, e: &NewEntry) -> Result<i64, StoreError> {
    conn.insert(
        "INSERT INTO ledger(user_id, account, amount, kind, reason, reference, origin, created_at, instance)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            e.user_id,
            e.account,
            e.amount,
            e.kind,
            e.reason,
            e.reference,
            e.origin,
            now_ms(),
            if e.origin == ORIGIN_GATEWAY { super::instance() } else { "" }
        ],
    )
    .ctx("inserting ledger entry")
}

/// Runs a `SELECT user_id, <sum> … GROUP BY user_id` query into a map.
fn sums_by_user(
    conn: &Connection,
    sql: &str,
    params: impl crate::store::db::Params,
) -> Result<HashMap<i64, i64>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).ctx("summing the ledger")?;
    let rows = stmt.query_map(params, |r| Ok((r.get(0)?, r.get(1)?))).ctx("summing the ledger")?;
    rows.collect::<Result<_, _>>().ctx("summing the ledger")
}

/// Credit balance per user (sum of `credits` entries).
pub fn balances(conn: &Connection) -> Result<HashMap<i64, i64>, StoreError> {
    sums_by_user(
        conn,
        "SELECT user_id, COALESCE(SUM(amount), 0) FROM ledger WHERE account = 'credits' GROUP BY user_id",
        (),
    )
}

/// Plan usage (positive micro-credits) per user since `since_ms`.
pub fn plan_usage_since(conn: &Connection, since_ms: i64) -> Result<HashMap<i64, i64>, StoreError> {
    sums_by_user(
        conn,
        "SELECT user_id, -COALESCE(SUM(amount), 0) FROM ledger WHERE account = 'plan' AND created_at >= ?1 GROUP BY user_id",
        [since_ms],
    )
}

pub fn max_ledger_id(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM ledger", (), |r| r.get(0)).ctx("reading ledger")
}

/// Entries after `after_id` that this gateway process did not write itself
/// (another process's charges count: two share the file during an upgrade).
pub fn external_entries_after(conn: &Connection, after_id: i64) -> Result<Vec<LedgerRow>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {LEDGER_COLS} FROM ledger WHERE id > ?1 AND NOT (origin = ?2 AND instance = ?3) ORDER BY id"
        ))
        .ctx("reading ledger")?;
    let rows =
        stmt.query_map(params![after_id, ORIGIN_GATEWAY, super::instance()], ledger_row).ctx("reading ledger")?;
    rows.collect::<Result<_, _>>().ctx("reading ledger")
}

pub fn ledger_for_user(conn: &Connection, user_id: i64, limit: i64) -> Result<Vec<LedgerRow>, StoreError> {
    let mut stmt = conn
        .prepare(&format!("SELECT {LEDGER_COLS} FROM ledger WHERE user_id = ?1 ORDER BY id DESC LIMIT ?2"))
        .ctx("reading ledger")?;
    let rows = stmt.query_map(params![user_id, limit], ledger_row).ctx("reading ledger")?;
    rows.collect::<Result<_, _>>().ctx("reading ledger")
}

/// A user's entries other than usage charges (top-ups, redemptions,
/// adjustments), newest first.
pub fn credit_history(conn: &Connection, user_id: i64, limit: i64) -> Result<Vec<LedgerRow>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {LEDGER_COLS} FROM ledger WHERE user_id = ?1 AND account = 'credits' AND kind != 'usage'
             ORDER BY id DESC LIMIT ?2"
        ))
        .ctx("reading credit history")?;
    let rows = stmt.query_map(params![user_id, limit], ledger_row).ctx("reading credit history")?;
    rows.collect::<Result<_, _>>().ctx("reading credit history")
}

pub fn credit_balance(conn: &Connection, user_id: i64) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = ?1 AND account = 'credits'",
        [user_id],
        |r| r.get(0),
    )
    .ctx("reading balance")
}

// ------------------------------------------------------------ subscriptions

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionRow {
    pub id: i64,
    pub user_id: i64,
    pub plan_id: String,
    pub starts_at: i64,
    pub expires_at: i64,
    pub status: SubscriptionStatus,
}

fn sub_row(r: &Row) -> crate::store::db::Result<SubscriptionRow> {
    Ok(SubscriptionRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        plan_id: r.get(2)?,
        starts_at: r.get(3)?,
        expires_at: r.get(4)?,
        status: r.get(5)?,
    })
}

const SUB_COLS: &str = "id, user_id, plan_id, starts_at, expires_at, status";

/// Every user's current subscription (the latest active one; it may have
/// expired since — callers compare `expires_at` with their clock).
pub fn active_subscriptions(conn: &Connection) -> Result<Vec<SubscriptionRow>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {SUB_COLS} FROM subscriptions s WHERE status = 'active'
             AND id = (SELECT MAX(id) FROM subscriptions WHERE user_id = s.user_id AND status = 'active')"
        ))
        .ctx("reading subscriptions")?;
    let rows = stmt.query_map((), sub_row).ctx("reading subscriptions")?;
    rows.collect::<Result<_, _>>().ctx("reading subscriptions")
}

pub fn current_subscription(conn: &Connection, user_id: i64) -> Result<Option<SubscriptionRow>, StoreError> {
    conn.query_row(
        &format!(
            "SELECT {SUB_COLS} FROM subscriptions WHERE user_id = ?1 AND status = 'active' ORDER BY id DESC LIMIT 1"
        ),
        [user_id],
        sub_row,
    )
    .optional()
    .ctx("reading subscription")
}

/// Starts `plan_id` for `days`, or extends the user's running subscription of
/// the same plan by `days`. A different running plan is replaced.
pub fn grant_plan(
    conn: &Connection,
    user_id: i64,
    plan_id: &str,
    days: u32,
    now: i64,
    reference: &str,
) -> Result<SubscriptionRow, StoreError> {
    let span = days as i64 * 86_400_000;
    let current = current_subscription(conn, user_id)?.filter(|s| s.expires_at > now);
    match current {
        Some(s) if s.plan_id == plan_id => {
            conn.execute("UPDATE subscriptions SET expires_at = expires_at + ?1 WHERE id = ?2", params![span, s.id])
                .ctx("extending subscription")?;
        }
        other => {
            if let Some(s) = other {
                conn.execute("UPDATE subscriptions SET status = 'replaced' WHERE id = ?1", [s.id])
                    .ctx("replacing subscription")?;
            }
            conn.execute(
                "INSERT INTO subscriptions(user_id, plan_id, starts_at, expires_at, reference, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?3)",
                params![user_id, plan_id, now, now + span, reference],
            )
            .ctx("inserting subscription")?;
        }
    }
    current_subscription(conn, user_id)?.ok_or_else(|| StoreError::Invalid("subscription vanished".into()))
}

pub fn revoke_subscription(conn: &Connection, user_id: i64) -> Result<bool, StoreError> {
    let n = conn
        .execute("UPDATE subscriptions SET status = 'revoked' WHERE user_id = ?1 AND status = 'active'", [user_id])
        .ctx("revoking subscription")?;
    Ok(n > 0)
}

// ------------------------------------------------------------ codes

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeRow {
    pub id: i64,
    pub prefix: String,
    pub kind: Account,
    pub credits: Option<i64>,
    pub plan_id: Option<String>,
    pub max_uses: i64,
    pub uses: i64,
    pub expires_at: Option<i64>,
    pub status: Switch,
    pub batch: String,
    pub created_at: i64,
}

fn code_row(r: &Row) -> crate::store::db::Result<CodeRow> {
    Ok(CodeRow {
        id: r.get(0)?,
        prefix: r.get(1)?,
        kind: r.get(2)?,
        credits: r.get(3)?,
        plan_id: r.get(4)?,
        max_uses: r.get(5)?,
        uses: r.get(6)?,
        expires_at: r.get(7)?,
        status: r.get(8)?,
        batch: r.get(9)?,
        created_at: r.get(10)?,
    })
}

const CODE_COLS: &str = "id, prefix, kind, credits, plan_id, max_uses, uses, expires_at, status, batch, created_at";

/// What a code grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Credits(i64),
    Plan(String),
}

pub fn insert_code(
    conn: &Connection,
    hash: &str,
    prefix: &str,
    grant: &Grant,
    max_uses: i64,
    expires_at: Option<i64>,
    batch: &str,
) -> Result<CodeRow, StoreError> {
    let (kind, credits, plan) = match grant {
        Grant::Credits(c) => ("credits", Some(*c), None),
        Grant::Plan(p) => ("plan", None, Some(p.as_str())),
    };
    let id = conn.insert(
        "INSERT INTO redemption_codes(code_hash, prefix, kind, credits, plan_id, max_uses, expires_at, batch, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![hash, prefix, kind, credits, plan, max_uses, expires_at, batch, now_ms()],
    )
    .ctx("inserting code")?;
    code_by_id(conn, id)?.ok_or_else(|| StoreError::Invalid("code vanished".into()))
}

pub fn code_by_id(conn: &Connection, id: i64) -> Result<Option<CodeRow>, StoreError> {
    conn.query_row(&format!("SELECT {CODE_COLS} FROM redemption_codes WHERE id = ?1"), [id], code_row)
        .optional()
        .ctx("reading code")
}

pub fn code_by_hash(conn: &Connection, hash: &str) -> Result<Option<CodeRow>, StoreError> {
    conn.query_row(&format!("SELECT {CODE_COLS} FROM redemption_codes WHERE code_hash = ?1"), [hash], code_row)
        .optional()
        .ctx("reading code")
}

pub fn list_codes(conn: &Connection) -> Result<Vec<CodeRow>, StoreError> {
    page_codes(conn, None, None, 0, i64::MAX)
}

/// Codes by id after `after`, optionally of one batch or status.
pub fn page_codes(
    conn: &Connection,
    batch: Option<&str>,
    status: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<CodeRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {CODE_COLS} FROM redemption_codes
             WHERE COALESCE(?1, batch) = batch AND COALESCE(?2, status) = status AND id > ?3
             ORDER BY id LIMIT ?4"
        ))
        .ctx("listing codes")?;
    let rows = stmt.query_map(params![batch, status, after, limit], code_row).ctx("listing codes")?;
    rows.collect::<Result<_, _>>().ctx("listing codes")
}

pub fn set_code_status(conn: &Connection, id: i64, status: Switch) -> Result<CodeRow, StoreError> {
    conn.execute("UPDATE redemption_codes SET status = ?1 WHERE id = ?2", params![status, id]).ctx("updating code")?;
    code_by_id(conn, id)?.ok_or_else(|| StoreError::Invalid(format!("no code with id {id}")))
}

pub fn has_redeemed(conn: &Connection, code_id: i64, user_id: i64) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM code_redemptions WHERE code_id = ?1 AND user_id = ?2)",
        params![code_id, user_id],
        |r| r.get(0),
    )
    .ctx("reading redemptions")
}

/// Counts one use of a code by a user; false when the user already used it.
pub fn record_redemption(conn: &Connection, code_id: i64, user_id: i64) -> Result<bool, StoreError> {
    let n = conn
        .execute(
            "INSERT OR IGNORE INTO code_redemptions(code_id, user_id, created_at) VALUES (?1, ?2, ?3)",
            params![code_id, user_id, now_ms()],
        )
        .ctx("recording redemption")?;
    if n == 1 {
        conn.execute("UPDATE redemption_codes SET uses = uses + 1 WHERE id = ?1", [code_id]).ctx("counting use")?;
    }
    Ok(n == 1)
}

// ------------------------------------------------------------ audit

pub fn audit(conn: &Connection, actor: &str, action: &str, target: &str, detail: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO admin_audit(actor, action, target, detail, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![actor, action, target, detail, now_ms()],
    )
    .ctx("writing audit entry")?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub created_at: i64,
}

pub fn audit_log(conn: &Connection, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT id, actor, action, target, detail, created_at FROM admin_audit ORDER BY id DESC LIMIT ?1")
        .ctx("reading audit log")?;
    let rows = stmt
        .query_map([limit], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                target: r.get(3)?,
                detail: r.get(4)?,
                created_at: r.get(5)?,
            })
        })
        .ctx("reading audit log")?;
    rows.collect::<Result<_, _>>().ctx("reading audit log")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{accounts, open};

    #[test]
    fn plans_extend_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path().join("db")).unwrap();
        let u = accounts::add_user(&conn, "a@b.c").unwrap();
        let day = 86_400_000;
        let s = grant_plan(&conn, u.id, "pro", 30, 1000, "t").unwrap();
        assert_eq!((s.plan_id.as_str(), s.expires_at), ("pro", 1000 + 30 * day));
        let s = grant_plan(&conn, u.id, "pro", 30, 2000, "t").unwrap();
        assert_eq!(s.expires_at, 1000 + 60 * day);
        let s = grant_plan(&conn, u.id, "starter", 7, 3000, "t").unwrap();
        assert_eq!((s.plan_id.as_str(), s.starts_at, s.expires_at), ("starter", 3000, 3000 + 7 * day));
        assert_eq!(active_subscriptions(&conn).unwrap().len(), 1);
        assert!(revoke_subscription(&conn, u.id).unwrap());
        assert!(current_subscription(&conn, u.id).unwrap().is_none());
    }

    #[test]
    fn ledger_sums_and_external_entries() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path().join("db")).unwrap();
        let u = accounts::add_user(&conn, "a@b.c").unwrap();
        let e = |amount, account, origin| NewEntry {
            user_id: u.id,
            account,
            amount,
            kind: "t",
            reason: "",
            reference: "",
            origin,
        };
        insert_ledger(&conn, &e(5_000_000, Account::Credits, "cli")).unwrap();
        insert_ledger(&conn, &e(-1_250, Account::Credits, ORIGIN_GATEWAY)).unwrap();
        insert_ledger(&conn, &e(-300, Account::Plan, ORIGIN_GATEWAY)).unwrap();
        assert_eq!(balances(&conn).unwrap()[&u.id], 4_998_750);
        assert_eq!(plan_usage_since(&conn, 0).unwrap()[&u.id], 300);
        let ext = external_entries_after(&conn, 0).unwrap();
        assert_eq!(ext.len(), 1);
        assert_eq!(ext[0].amount, 5_000_000);
        assert_eq!(max_ledger_id(&conn).unwrap(), 3);
        // A charge by another gateway process (an upgrade's other half) counts.
        conn.execute(
            "INSERT INTO ledger(user_id, account, amount, kind, origin, created_at, instance)
             VALUES (?1, 'credits', -7, 'usage', 'gateway', 0, 'other-process')",
            [u.id],
        )
        .unwrap();
        let ext = external_entries_after(&conn, 3).unwrap();
        assert_eq!(ext.iter().map(|e| e.amount).collect::<Vec<_>>(), [-7]);
    }
}
