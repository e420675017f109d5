//! The usage charges of one writer batch, folded into one ledger row per user,
//! account and minute. A ledger row per request cost as much as the usage row
//! itself; the usage row stays (it is the user's receipt, with its own cost)
//! and names the ledger row that charged it in `ledger_id`. So the sum of the
//! usage rows that name a ledger row equals its amount, and a balance is still
//! exactly the sum of the user's ledger.
//!
//! Groups are per minute, not per batch alone: plan days start on a minute
//! (UTC offsets are whole minutes), so a row never straddles two plan days.

use super::writer::{LedgerEntry, WriteOp};
use super::{SqlContext, StoreError};
use crate::store::db::{params, Connection};
use std::collections::HashMap;

type GroupKey = (i64, &'static str, i64);

struct Group<'a> {
    first: &'a LedgerEntry,
    amount: i64,
    count: u32,
    created_at: i64,
    /// Charges whose usage row already existed (the same request id was
    /// committed before): neither the row nor its charge is made again.
    dropped: i64,
    dropped_count: u32,
    ledger_id: i64,
}

impl Group<'_> {
    /// One request keeps the per-request form: its model as the reason.
    fn reason(&self, count: u32) -> String {
        if count == 1 {
            self.first.reason.clone()
        } else {
            format!("{count} requests")
        }
    }
}

#[derive(Default)]
pub(super) struct Charges<'a> {
    groups: Vec<Group<'a>>,
    index: HashMap<GroupKey, usize>,
}

fn key(l: &LedgerEntry) -> GroupKey {
    (l.user_id, l.account, l.created_at.div_euclid(60_000))
}

impl<'a> Charges<'a> {
    /// Groups the batch's usage charges.
    pub(super) fn of(ops: &'a [WriteOp]) -> Charges<'a> {
        let mut c = Charges::default();
        for op in ops {
            if let WriteOp::Charge(_, l) = op {
                c.add(l);
            }
        }
        c
    }

    fn add(&mut self, l: &'a LedgerEntry) {
        let i = *self.index.entry(key(l)).or_insert_with(|| {
            self.groups.push(Group {
                first: l,
                amount: 0,
                count: 0,
                created_at: l.created_at,
                dropped: 0,
                dropped_count: 0,
                ledger_id: 0,
            });
            self.groups.len() - 1
        });
        let g = &mut self.groups[i];
        g.amount += l.amount;
        g.count += 1;
        g.created_at = g.created_at.max(l.created_at);
    }

    /// Writes one ledger row per group, before the usage rows that name it.
    pub(super) fn insert(&mut self, conn: &Connection) -> Result<(), StoreError> {
        for g in &mut self.groups {
            let l = g.first;
            let reason = g.reason(g.count);
            let instance = super::instance();
            g.ledger_id = conn
                .insert(
                    "INSERT INTO ledger(user_id, account, amount, kind, reason, reference, origin, created_at, instance)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'gateway', ?7, ?8)",
                    params![l.user_id, l.account, g.amount, l.kind, reason, l.reference, g.created_at, instance],
                )
                .ctx("inserting ledger entry")?;
        }
        Ok(())
    }

    /// The ledger row that charges `l`.
    pub(super) fn ledger_id(&self, l: &LedgerEntry) -> Option<i64> {
        self.index.get(&key(l)).map(|&i| self.groups[i].ledger_id)
    }

    /// `l`'s usage row was already there: take its charge back out.
    pub(super) fn drop_charge(&mut self, l: &LedgerEntry) {
        if let Some(&i) = self.index.get(&key(l)) {
            self.groups[i].dropped += l.amount;
            self.groups[i].dropped_count += 1;
        }
    }

    /// Applies the dropped charges (rare: a replayed request id).
    pub(super) fn finish(&self, conn: &Connection) -> Result<(), StoreError> {
        for g in self.groups.iter().filter(|g| g.dropped_count > 0) {
            let kept = g.count - g.dropped_count;
            if kept == 0 {
                conn.execute("DELETE FROM ledger WHERE id = ?1", [g.ledger_id]).ctx("dropping a replayed charge")?;
            } else {
                conn.execute(
                    "UPDATE ledger SET amount = ?1, reason = ?2 WHERE id = ?3",
                    params![g.amount - g.dropped, g.reason(kept), g.ledger_id],
                )
                .ctx("dropping a replayed charge")?;
            }
        }
        Ok(())
    }
}
