//! The order lifecycle and its money rules. Every change is one immediate
//! transaction, so however notifications are repeated or raced:
//!
//! - a provider's event is acted on once (its id is recorded first);
//! - an order is credited once (the credit is conditional on the order still
//!   being pending or expired);
//! - a report whose amount, currency or provider differs from the order
//!   credits nothing, fails the order and is logged;
//! - every credit is one ledger entry whose reference is the order, so a
//!   balance is still the sum of its ledger.

use crate::config::units::format_money;
use crate::config::Config;
use crate::store::billing::{self, NewEntry};
use crate::store::db::{Connection, Transaction};
use crate::store::kinds::Account;
use crate::store::orders::{self as sql, NewOrder, OrderRow, OrderStatus};
use crate::store::StoreError;

/// Who wrote a payment's ledger entries (the gateway loads them on reload).
pub const ORIGIN: &str = "payment";

fn immediate(conn: &Connection) -> Result<Transaction<'_>, StoreError> {
    conn.write_transaction().map_err(|source| StoreError::Sql { context: "begin", source })
}

fn commit(tx: Transaction) -> Result<(), StoreError> {
    tx.commit().map_err(|source| StoreError::Sql { context: "commit", source })
}

/// A new order id: `ORD`, the time in base 36, 10 random base-36 characters.
/// Letters and digits only, which every EPay gateway accepts as out_trade_no.
pub fn new_id(now_ms: i64) -> String {
    use rand::Rng;
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut time = Vec::new();
    let mut n = now_ms.max(0) as u64;
    while n > 0 {
        time.push(A[(n % 36) as usize]);
        n /= 36;
    }
    time.reverse();
    let mut rng = rand::rngs::OsRng;
    let random: String = (0..10).map(|_| A[rng.gen_range(0..36)] as char).collect();
    format!("ORD{}{random}", String::from_utf8_lossy(&time))
}

pub fn create(conn: &Connection, o: &NewOrder) -> Result<OrderRow, StoreError> {
    sql::insert(conn, o)?;
    sql::get(conn, o.id)?.ok_or_else(|| StoreError::Invalid("order vanished".into()))
}

/// A provider's confirmation that an order was paid.
#[derive(Debug, Clone)]
pub struct Payment<'a> {
    pub provider: &'a str,
    /// The provider's id of this notification (Stripe's event id, EPay's
    /// trade number): the same payment reported twice has the same id.
    pub event_id: &'a str,
    pub order_id: &'a str,
    /// What the provider says was paid, in the currency's minor unit.
    pub amount: i64,
    pub currency: &'a str,
    /// The provider's id of the payment, kept on the order and the ledger entry.
    pub reference: Option<&'a str>,
}

/// What a confirmation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fulfilment {
    Credited {
        ledger_id: i64,
    },
    /// The order was paid (or refunded) already.
    AlreadyDone(OrderStatus),
    /// This notification was handled before.
    Duplicate,
    UnknownOrder,
    /// Refused: what was paid is not what the order asked for.
    Mismatch(String),
}

/// Credits a paid order, once. See the module docs for the rules.
pub fn fulfil(conn: &Connection, cfg: &Config, p: &Payment, now: i64) -> Result<Fulfilment, StoreError> {
    settle(conn, cfg, p, &[OrderStatus::Pending, OrderStatus::Expired], now)
}

fn settle(
    conn: &Connection,
    cfg: &Config,
    p: &Payment,
    from: &[OrderStatus],
    now: i64,
) -> Result<Fulfilment, StoreError> {
    let tx = immediate(conn)?;
    if !sql::claim_event(&tx, p.provider, p.event_id, Some(p.order_id), "paid", now)? {
        return Ok(Fulfilment::Duplicate);
    }
    let outcome = apply(&tx, cfg, p, from, now)?;
    let label = match &outcome {
        Fulfilment::Credited { .. } => "credited".to_string(),
        Fulfilment::AlreadyDone(s) => format!("already {}", s.as_str()),
        Fulfilment::Duplicate => "duplicate".into(),
        Fulfilment::UnknownOrder => "unknown order".into(),
        Fulfilment::Mismatch(why) => format!("refused: {why}"),
    };
    sql::set_event_outcome(&tx, p.provider, p.event_id, &label)?;
    commit(tx)?;
    match &outcome {
        Fulfilment::Mismatch(why) => log::error!("payment {} for order {} refused: {why}", p.event_id, p.order_id),
        Fulfilment::UnknownOrder => log::warn!("payment {} names unknown order {:?}", p.event_id, p.order_id),
        Fulfilment::Credited { .. } => log::info!("order {} paid ({} {})", p.order_id, p.provider, p.event_id),
        _ => {}
    }
    Ok(outcome)
}

fn apply(tx: &Connection, cfg: &Config, p: &Payment, from: &[OrderStatus], now: i64) -> Result<Fulfilment, StoreError> {
    let Some(order) = sql::get(tx, p.order_id)? else { return Ok(Fulfilment::UnknownOrder) };
    if order.provider != p.provider || order.amount != p.amount || !order.currency.eq_ignore_ascii_case(p.currency) {
        let why = format!(
            "{} reported {} {}, the order is {} {} with {}",
            p.provider,
            format_money(p.amount, &p.currency.to_ascii_lowercase()),
            p.currency.to_ascii_uppercase(),
            format_money(order.amount, &order.currency),
            order.currency.to_ascii_uppercase(),
            order.provider
        );
        sql::transition(tx, &order.id, &[OrderStatus::Pending, OrderStatus::Expired], OrderStatus::Failed, &why, now)?;
        return Ok(Fulfilment::Mismatch(why));
    }
    if !sql::transition(tx, &order.id, from, OrderStatus::Paid, "", now)? {
        return Ok(Fulfilment::AlreadyDone(order.status));
    }
    let ledger_id = credit(tx, cfg, &order, p, now)?;
    sql::set_ledger(tx, &order.id, ledger_id, p.reference)?;
    Ok(Fulfilment::Credited { ledger_id })
}

/// The ledger entry of a paid order (and the plan it buys, if any).
fn credit(tx: &Connection, cfg: &Config, order: &OrderRow, p: &Payment, now: i64) -> Result<i64, StoreError> {
    let reference = format!("order:{}", order.id);
    let mut reason = format!("{} {}", p.provider, p.reference.unwrap_or(p.event_id));
    if let Some(plan_id) = &order.plan_id {
        let plan =
            cfg.plan(plan_id).ok_or_else(|| StoreError::Invalid(format!("plan {plan_id} is no longer offered")))?;
        billing::grant_plan(tx, order.user_id, &plan.id, plan.duration_days, now, &reference)?;
        reason = format!("{reason}: plan {}", plan.id);
    }
    billing::insert_ledger(
        tx,
        &NewEntry {
            user_id: order.user_id,
            account: Account::Credits,
            amount: order.credits,
            kind: "payment",
            reason: &reason,
            reference: &reference,
            origin: ORIGIN,
        },
    )
}

/// A provider's report that an order will not be paid: failed or expired.
pub fn close(
    conn: &Connection,
    provider: &str,
    event_id: &str,
    order_id: &str,
    to: OrderStatus,
    note: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let tx = immediate(conn)?;
    if !sql::claim_event(&tx, provider, event_id, Some(order_id), to.as_str(), now)? {
        return Ok(false);
    }
    let changed = match sql::get(&tx, order_id)? {
        Some(o) if o.provider == provider => sql::transition(&tx, order_id, &[OrderStatus::Pending], to, note, now)?,
        _ => false,
    };
    sql::set_event_outcome(&tx, provider, event_id, if changed { to.as_str() } else { "no change" })?;
    commit(tx)?;
    Ok(changed)
}

/// Why an operator's action on an order was refused.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("no order {0}")]
    NotFound(String),
    #[error("order {id} is {status}, not {wanted}")]
    WrongState { id: String, status: &'static str, wanted: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An operator confirms an order as paid (money received another way):
/// credited once, like a provider's confirmation, with `manual:` as its event.
pub fn complete(
    conn: &Connection,
    cfg: &Config,
    id: &str,
    actor: &str,
    reason: &str,
    now: i64,
) -> Result<i64, OrderError> {
    let order = sql::get(conn, id)?.ok_or_else(|| OrderError::NotFound(id.into()))?;
    let event = format!("manual:{id}:{now}");
    let reference = format!("{actor}: {reason}");
    let p = Payment {
        provider: &order.provider,
        event_id: &event,
        order_id: id,
        amount: order.amount,
        currency: &order.currency,
        reference: Some(&reference),
    };
    let from = [OrderStatus::Pending, OrderStatus::Expired, OrderStatus::Failed];
    match settle(conn, cfg, &p, &from, now)? {
        Fulfilment::Credited { ledger_id } => {
            billing::audit(conn, actor, "order.complete", id, &serde_json::json!({"reason": reason}).to_string())?;
            Ok(ledger_id)
        }
        _ => Err(OrderError::WrongState { id: id.into(), status: order.status.as_str(), wanted: "unpaid" }),
    }
}

/// An operator refunds a paid order: it becomes `refunded` and its credits
/// are taken back by one ledger entry (the plan it bought is revoked). The
/// money itself goes back through the provider's dashboard.
pub fn refund(conn: &Connection, id: &str, actor: &str, reason: &str, now: i64) -> Result<i64, OrderError> {
    let tx = immediate(conn)?;
    let order = sql::get(&tx, id)?.ok_or_else(|| OrderError::NotFound(id.into()))?;
    let note = format!("refunded by {actor}: {reason}");
    if !sql::transition(&tx, id, &[OrderStatus::Paid], OrderStatus::Refunded, &note, now)? {
        return Err(OrderError::WrongState { id: id.into(), status: order.status.as_str(), wanted: "paid" });
    }
    if order.plan_id.is_some() {
        billing::revoke_subscription(&tx, order.user_id)?;
    }
    let reference = format!("order:{id}");
    let ledger_id = billing::insert_ledger(
        &tx,
        &NewEntry {
            user_id: order.user_id,
            account: Account::Credits,
            amount: -order.credits,
            kind: "refund",
            reason,
            reference: &reference,
            origin: ORIGIN,
        },
    )?;
    billing::audit(&tx, actor, "order.refund", id, &serde_json::json!({"reason": reason}).to_string())?;
    commit(tx)?;
    Ok(ledger_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, accounts};

    fn setup() -> (tempfile::TempDir, std::path::PathBuf, Config, i64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = store::open(&path).unwrap();
        let cfg = crate::config::parse(
            "server: {listen: [\"127.0.0.1:0\"]}\nplans: [{id: pro, daily_quota: 5, duration_days: 30}]\n",
            std::path::Path::new("."),
            &|_| None,
        )
        .unwrap();
        let u = accounts::add_user(&conn, "buyer@x.io").unwrap();
        (dir, path, cfg, u.id)
    }

    fn order(conn: &Connection, user: i64, id: &str, plan: Option<&str>) -> OrderRow {
        let o = NewOrder {
            id,
            user_id: user,
            provider: "stripe",
            method: "card",
            amount: 1000,
            currency: "usd",
            credits: if plan.is_some() { 0 } else { 10_000_000 },
            plan_id: plan,
            package: None,
            now: 1,
            expires_at: 1_000,
        };
        create(conn, &o).unwrap()
    }

    fn paid<'a>(event: &'a str, order: &'a str, amount: i64, currency: &'a str) -> Payment<'a> {
        Payment { provider: "stripe", event_id: event, order_id: order, amount, currency, reference: Some("cs_1") }
    }

    #[test]
    fn credits_once_however_repeated() {
        let (_d, path, cfg, user) = setup();
        let conn = store::open(&path).unwrap();
        order(&conn, user, "ORD1", None);
        assert!(matches!(
            fulfil(&conn, &cfg, &paid("evt_1", "ORD1", 1000, "usd"), 5).unwrap(),
            Fulfilment::Credited { .. }
        ));
        assert_eq!(fulfil(&conn, &cfg, &paid("evt_1", "ORD1", 1000, "usd"), 6).unwrap(), Fulfilment::Duplicate);
        // Another event for the same payment (completed, then async succeeded).
        assert_eq!(
            fulfil(&conn, &cfg, &paid("evt_2", "ORD1", 1000, "usd"), 7).unwrap(),
            Fulfilment::AlreadyDone(OrderStatus::Paid)
        );
        assert_eq!(billing::credit_balance(&conn, user).unwrap(), 10_000_000);
        let o = sql::get(&conn, "ORD1").unwrap().unwrap();
        assert_eq!((o.status, o.paid_at, o.provider_ref.as_deref()), (OrderStatus::Paid, Some(5), Some("cs_1")));
        let entry = &billing::ledger_for_user(&conn, user, 10).unwrap()[0];
        assert_eq!(
            (entry.id, entry.reference.as_str(), entry.kind.as_str()),
            (o.ledger_id.unwrap(), "order:ORD1", "payment")
        );
    }

    #[test]
    fn racing_confirmations_credit_once() {
        let (_d, path, cfg, user) = setup();
        order(&store::open(&path).unwrap(), user, "ORD2", None);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (path, cfg) = (path.clone(), cfg.clone());
                std::thread::spawn(move || {
                    let conn = store::open(&path).unwrap();
                    let event = format!("evt_{}", i % 2);
                    fulfil(&conn, &cfg, &paid(&event, "ORD2", 1000, "usd"), 5).unwrap()
                })
            })
            .collect();
        let outcomes: Vec<Fulfilment> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(outcomes.iter().filter(|o| matches!(o, Fulfilment::Credited { .. })).count(), 1, "{outcomes:?}");
        assert_eq!(billing::credit_balance(&store::open(&path).unwrap(), user).unwrap(), 10_000_000);
    }

    #[test]
    fn mismatches_and_strangers_change_nothing() {
        let (_d, path, cfg, user) = setup();
        let conn = store::open(&path).unwrap();
        order(&conn, user, "ORD3", None);
        order(&conn, user, "ORD4", None);
        let short = fulfil(&conn, &cfg, &paid("e1", "ORD3", 999, "usd"), 5).unwrap();
        assert!(
            matches!(&short, Fulfilment::Mismatch(why) if why == "stripe reported 9.99 USD, the order is 10.00 USD with stripe"),
            "{short:?}"
        );
        assert!(matches!(fulfil(&conn, &cfg, &paid("e2", "ORD4", 1000, "eur"), 5).unwrap(), Fulfilment::Mismatch(_)));
        let other = Payment { provider: "epay", ..paid("e3", "ORD4", 1000, "usd") };
        assert!(matches!(fulfil(&conn, &cfg, &other, 5).unwrap(), Fulfilment::Mismatch(_)));
        assert_eq!(fulfil(&conn, &cfg, &paid("e4", "ORD-nope", 1000, "usd"), 5).unwrap(), Fulfilment::UnknownOrder);
        assert_eq!(billing::credit_balance(&conn, user).unwrap(), 0);
        assert_eq!(sql::get(&conn, "ORD3").unwrap().unwrap().status, OrderStatus::Failed);
    }

    #[test]
    fn expiry_late_payment_plans_refund_and_manual_completion() {
        let (_d, path, cfg, user) = setup();
        let conn = store::open(&path).unwrap();
        order(&conn, user, "ORD5", None);
        assert_eq!(sql::expire_due(&conn, 999).unwrap(), 0);
        assert_eq!(sql::expire_due(&conn, 1_000).unwrap(), 1);
        // Paid after it expired: the customer paid, so they get the credits.
        assert!(matches!(
            fulfil(&conn, &cfg, &paid("e5", "ORD5", 1000, "usd"), 2_000).unwrap(),
            Fulfilment::Credited { .. }
        ));
        // A plan purchase starts the plan.
        order(&conn, user, "ORD6", Some("pro"));
        fulfil(&conn, &cfg, &paid("e6", "ORD6", 1000, "usd"), 3_000).unwrap();
        assert_eq!(billing::current_subscription(&conn, user).unwrap().unwrap().plan_id, "pro");
        // Refund takes the credits back and revokes the plan.
        refund(&conn, "ORD5", "admin", "asked by the customer", 4_000).unwrap();
        refund(&conn, "ORD6", "admin", "asked by the customer", 4_000).unwrap();
        assert!(matches!(refund(&conn, "ORD5", "admin", "again", 4_001), Err(OrderError::WrongState { .. })));
        assert_eq!(billing::credit_balance(&conn, user).unwrap(), 0);
        assert!(billing::current_subscription(&conn, user).unwrap().is_none());
        // A failed order an operator confirms by hand.
        order(&conn, user, "ORD7", None);
        assert!(close(&conn, "stripe", "e7", "ORD7", OrderStatus::Failed, "declined", 5_000).unwrap());
        assert!(!close(&conn, "stripe", "e7", "ORD7", OrderStatus::Failed, "declined", 5_001).unwrap(), "once");
        complete(&conn, &cfg, "ORD7", "admin", "paid by bank transfer", 6_000).unwrap();
        assert!(matches!(complete(&conn, &cfg, "ORD7", "admin", "again", 6_001), Err(OrderError::WrongState { .. })));
        assert_eq!(billing::credit_balance(&conn, user).unwrap(), 10_000_000);
        // The balance is the sum of the ledger, entry by entry.
        let sum: i64 = billing::ledger_for_user(&conn, user, 100).unwrap().iter().map(|e| e.amount).sum();
        assert_eq!(sum, 10_000_000);
    }

    #[test]
    fn order_ids_are_alphanumeric_and_unique() {
        let a = new_id(1_700_000_000_000);
        let b = new_id(1_700_000_000_000);
        assert_ne!(a, b);
        assert!(a.starts_with("ORD") && a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert!(a.len() <= 32, "EPay gateways take at most 32 characters: {a}");
    }
}
