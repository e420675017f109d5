//! `codex-proxy orders`: credits bought online. Listing, and the two things an
//! operator does to an order by hand: refund it (the credits are taken back;
//! the money goes back through the provider's dashboard) or confirm it paid
//! (money received another way). Both are audited and reach a running
//! gateway within a second.

use crate::access_log::timestamp;
use crate::config::units::{format_credits, format_money};
use crate::config::Config;
use crate::payments::orders;
use crate::store::orders::{self as sql, OrderFilter, OrderStatus};
use crate::store::{self, accounts as users};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum OrdersCommand {
    /// Orders, newest first.
    List {
        /// pending, paid, failed, expired or refunded.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Refund a paid order: its credits are taken back (and its plan revoked).
    Refund {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Confirm an unpaid order as paid (money received another way).
    Complete {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

pub fn orders(cfg: &Config, command: OrdersCommand) -> Result<(), String> {
    let conn = store::open(&cfg.database).map_err(|e| e.to_string())?;
    let actor = super::accounts::actor();
    let now = crate::clock::now_ms();
    match command {
        OrdersCommand::List { status, user, limit } => {
            let status = status
                .map(|s| {
                    OrderStatus::parse(&s)
                        .ok_or_else(|| format!("--status: pending, paid, failed, expired or refunded, got {s:?}"))
                })
                .transpose()?;
            let user_id = user.map(|e| users::user(&conn, &e).map(|u| u.id)).transpose().map_err(|e| e.to_string())?;
            let rows = sql::list(&conn, &OrderFilter { user_id, status, limit, ..Default::default() })
                .map_err(|e| e.to_string())?;
            println!(
                "{:<24} {:<20} {:<28} {:<9} {:>12} {:<14} {:>10}",
                "ID", "CREATED", "USER", "STATUS", "AMOUNT", "PAID WITH", "CREDITS"
            );
            for o in rows {
                let amount = format!("{} {}", format_money(o.amount, &o.currency), o.currency.to_uppercase());
                let grant = o.plan_id.clone().map_or_else(|| format_credits(o.credits), |p| format!("plan {p}"));
                println!(
                    "{:<24} {:<20} {:<28} {:<9} {:>12} {:<14} {:>10}",
                    o.id,
                    &timestamp(o.created_at)[..19],
                    o.email,
                    o.status.as_str(),
                    amount,
                    format!("{}/{}", o.provider, o.method),
                    grant
                );
            }
        }
        OrdersCommand::Refund { id, reason } => {
            orders::refund(&conn, &id, &actor, &reason, now).map_err(|e| e.to_string())?;
            println!("order {id} refunded; its credits were taken back");
        }
        OrdersCommand::Complete { id, reason } => {
            orders::complete(&conn, cfg, &id, &actor, &reason, now).map_err(|e| e.to_string())?;
            println!("order {id} confirmed paid and credited");
        }
    }
    Ok(())
}
