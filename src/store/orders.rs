//! SQL for orders (credits bought online) and the payment notifications
//! already processed. The order lifecycle itself, with its money rules, is in
//! `payments::orders`.

use super::{SqlContext, StoreError};
use crate::store::db::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

pub use super::kinds::OrderStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRow {
    pub id: String,
    pub user_id: i64,
    pub email: String,
    pub provider: String,
    /// The provider's payment method (`alipay`, `wxpay`; `card` for Stripe).
    pub method: String,
    pub status: OrderStatus,
    /// In the currency's minor unit.
    pub amount: i64,
    pub currency: String,
    /// Micro-credits the order adds (0 for a plan).
    pub credits: i64,
    pub plan_id: Option<String>,
    pub package: Option<String>,
    /// The provider's id for the payment (Stripe's session, EPay's trade number).
    pub provider_ref: Option<String>,
    pub checkout_url: Option<String>,
    pub ledger_id: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
    pub paid_at: Option<i64>,
    pub updated_at: i64,
    pub note: String,
}

const COLS: &str = "o.id, o.user_id, COALESCE(u.email, ''), o.provider, o.method, o.status, o.amount, o.currency,
    o.credits, o.plan_id, o.package, o.provider_ref, o.checkout_url, o.ledger_id, o.created_at, o.expires_at,
    o.paid_at, o.updated_at, o.note";

fn row(r: &Row) -> crate::store::db::Result<OrderRow> {
    let status: String = r.get(5)?;
    Ok(OrderRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        email: r.get(2)?,
        provider: r.get(3)?,
        method: r.get(4)?,
        status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Failed),
        amount: r.get(6)?,
        currency: r.get(7)?,
        credits: r.get(8)?,
        plan_id: r.get(9)?,
        package: r.get(10)?,
        provider_ref: r.get(11)?,
        checkout_url: r.get(12)?,
        ledger_id: r.get(13)?,
        created_at: r.get(14)?,
        expires_at: r.get(15)?,
        paid_at: r.get(16)?,
        updated_at: r.get(17)?,
        note: r.get(18)?,
    })
}

/// A new pending order.
pub struct NewOrder<'a> {
    pub id: &'a str,
    pub user_id: i64,
    pub provider: &'a str,
    pub method: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub credits: i64,
    pub plan_id: Option<&'a str>,
    pub package: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
}

pub fn insert(conn: &Connection, o: &NewOrder) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO orders(id, user_id, provider, method, status, amount, currency, credits, plan_id, package,
                            created_at, expires_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?10)",
        params![
            o.id,
            o.user_id,
            o.provider,
            o.method,
            o.amount,
            o.currency,
            o.credits,
            o.plan_id,
            o.package,
            o.now,
            o.expires_at
        ],
    )
    .ctx("creating order")?;
    Ok(())
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<OrderRow>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLS} FROM orders o LEFT JOIN users u ON u.id = o.user_id WHERE o.id = ?1"),
        [id],
        row,
    )
    .optional()
    .ctx("reading order")
}

/// Records where the provider sent the user (its checkout page and id).
pub fn set_checkout(
    conn: &Connection,
    id: &str,
    reference: Option<&str>,
    url: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE orders SET provider_ref = COALESCE(?2, provider_ref), checkout_url = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, reference, url, now],
    )
    .ctx("recording checkout")?;
    Ok(())
}

/// Moves an order from one of `from` to `to`; false when it was in no state
/// of `from` (someone else moved it first).
pub fn transition(
    conn: &Connection,
    id: &str,
    from: &[OrderStatus],
    to: OrderStatus,
    note: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let placeholders = (0..from.len()).map(|i| format!("?{}", i + 5)).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "UPDATE orders SET status = ?2, note = CASE WHEN ?3 = '' THEN note ELSE ?3 END, updated_at = ?4,
                paid_at = CASE WHEN ?2 = 'paid' THEN ?4 ELSE paid_at END
         WHERE id = ?1 AND status IN ({placeholders})"
    );
    let mut values: Vec<crate::store::db::Value> =
        vec![id.to_string().into(), to.as_str().to_string().into(), note.to_string().into(), now.into()];
    values.extend(from.iter().map(|s| crate::store::db::Value::Text(s.to_string())));
    let n = conn.execute(&sql, crate::store::db::params_from_iter(values)).ctx("updating order")?;
    Ok(n == 1)
}

pub fn set_ledger(conn: &Connection, id: &str, ledger_id: i64, reference: Option<&str>) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE orders SET ledger_id = ?2, provider_ref = COALESCE(?3, provider_ref) WHERE id = ?1",
        params![id, ledger_id, reference],
    )
    .ctx("linking order to ledger")?;
    Ok(())
}

/// Which orders a listing shows, newest first.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub user_id: Option<i64>,
    pub status: Option<OrderStatus>,
    /// Only orders created before this one (its `created_at`, `id`).
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

pub fn list(conn: &Connection, f: &OrderFilter) -> Result<Vec<OrderRow>, StoreError> {
    let mut conds = Vec::new();
    let mut values: Vec<crate::store::db::Value> = Vec::new();
    if let Some(u) = f.user_id {
        values.push(u.into());
        conds.push(format!("o.user_id = ?{}", values.len()));
    }
    if let Some(s) = f.status {
        values.push(s.as_str().to_string().into());
        conds.push(format!("o.status = ?{}", values.len()));
    }
    if let Some((t, id)) = &f.before {
        values.push((*t).into());
        values.push(id.clone().into());
        conds.push(format!("(o.created_at, o.id) < (?{}, ?{})", values.len() - 1, values.len()));
    }
    let clause = if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
    values.push(f.limit.clamp(1, 1000).into());
    let sql = format!(
        "SELECT {COLS} FROM orders o LEFT JOIN users u ON u.id = o.user_id {clause}
         ORDER BY o.created_at DESC, o.id DESC LIMIT ?{}",
        values.len()
    );
    let mut stmt = conn.prepare(&sql).ctx("listing orders")?;
    let rows = stmt.query_map(crate::store::db::params_from_iter(values), row).ctx("listing orders")?;
    rows.collect::<Result<_, _>>().ctx("listing orders")
}

/// Expires pending orders whose time is up; returns how many.
pub fn expire_due(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    conn.execute(
        "UPDATE orders SET status = 'expired', updated_at = ?1 WHERE status = 'pending' AND expires_at <= ?1",
        [now],
    )
    .ctx("expiring orders")
}

/// Money received since `since_ms`, per currency (paid orders, minor units).
pub fn revenue_since(conn: &Connection, since_ms: i64) -> Result<Vec<(String, i64, i64)>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT currency, SUM(amount), COUNT(*) FROM orders WHERE status = 'paid' AND paid_at >= ?1
             GROUP BY currency ORDER BY currency",
        )
        .ctx("summing revenue")?;
    let rows = stmt.query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).ctx("summing revenue")?;
    rows.collect::<Result<_, _>>().ctx("summing revenue")
}

/// Records a provider's notification; false when it was processed before
/// (providers repeat notifications until they are acknowledged).
pub fn claim_event(
    conn: &Connection,
    provider: &str,
    event_id: &str,
    order_id: Option<&str>,
    kind: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let n = conn
        .execute(
            "INSERT OR IGNORE INTO payment_events(provider, event_id, order_id, kind, outcome, created_at)
             VALUES (?1, ?2, ?3, ?4, '', ?5)",
            params![provider, event_id, order_id, kind, now],
        )
        .ctx("recording payment event")?;
    Ok(n == 1)
}

/// What became of a recorded notification (for operators reading the table).
pub fn set_event_outcome(conn: &Connection, provider: &str, event_id: &str, outcome: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE payment_events SET outcome = ?3 WHERE provider = ?1 AND event_id = ?2",
        params![provider, event_id, outcome],
    )
    .ctx("recording payment event")?;
    Ok(())
}
