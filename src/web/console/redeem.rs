//! The Redeem page: a code adds credits or starts a plan. Each way a code
//! can fail has its own message; failures count towards the same per-user
//! limit as `POST /v1/redeem`.

use super::{csrf_field, frame, server_error, Viewer};
use crate::accounts::ops::{self, RedeemError, Redeemed};
use crate::store::billing::{self as ledger, LedgerRow};
use crate::web::format;
use crate::web::i18n::Text;
use crate::web::layout::notice;
use crate::web::response::Response;
use crate::web::Env;
use maud::{html, Markup};

/// What to show above the form after a submission.
pub(super) enum Outcome {
    Done(String),
    Failed(String),
}

/// The message for a failed redemption.
pub(crate) fn message(t: &Text, e: &RedeemError) -> &'static str {
    match e {
        RedeemError::Unknown => t.code_unknown,
        RedeemError::Disabled => t.code_disabled,
        RedeemError::Expired => t.code_expired,
        RedeemError::UsedUp => t.code_used,
        RedeemError::AlreadyRedeemed => t.code_already_yours,
        RedeemError::PlanGone => t.code_plan_gone,
        RedeemError::Store(_) => t.error_body,
    }
}

pub(super) async fn page(env: &Env<'_>, viewer: &Viewer, outcome: Option<Outcome>) -> Response {
    let t = env.t;
    let user_id = viewer.user_id;
    let history = match env.app.db.run(move |c| ledger::credit_history(c, user_id, 20)).await {
        Ok(h) => h,
        Err(e) => return server_error(env, &e),
    };
    let status = match &outcome {
        Some(Outcome::Failed(_)) => 400,
        _ => 200,
    };
    let content = html! {
        h1 { (t.console_redeem) }
        p.muted { (t.redeem_lead) }
        @match &outcome {
            Some(Outcome::Done(m)) => {
                div.note.ok role="status" {
                    p { (m) }
                    p { a.btn.small href="/console/keys" { (t.create_key) " →" } }
                }
            }
            Some(Outcome::Failed(m)) => { (notice("bad", m)) }
            None => {}
        }
        div.card {
            form.stack method="post" action="/console/redeem" {
                (csrf_field(viewer))
                label { (t.code_label) input type="text" name="code" placeholder="CPX-XXXXX-XXXXX-XXXXX-XXXXX" autocomplete="off" required maxlength="64" autofocus; }
                div { button type="submit" { (t.redeem_button) } }
            }
        }
        p.muted { (t.no_code) " " a href="/console/billing" { (t.console_buy) } }
        h2 { (t.credit_history) }
        (history_table(env, &history))
    };
    Response::html(status, frame(env, viewer, t.console_redeem, content))
}

pub(crate) fn history_table(env: &Env, rows: &[LedgerRow]) -> Markup {
    let t = env.t;
    let tz = env.app.config.billing.utc_offset_secs;
    html! {
        @if rows.is_empty() {
            p.muted { (t.no_history) }
        } @else {
            div.table-wrap { table {
                thead { tr { th { (t.col_time) } th { (t.col_what) } th.num { (t.col_amount) } th { (t.col_note) } } }
                tbody {
                    @for r in rows {
                        tr {
                            td.nowrap { (format::time(r.created_at, tz)) }
                            td { (kind_label(t, &r.kind)) }
                            td.num { @if r.amount > 0 { "+" } (format::credits(r.amount)) }
                            td { (r.reason) }
                        }
                    }
                }
            } }
        }
    }
}

fn kind_label(t: &Text, kind: &str) -> &'static str {
    match kind {
        "redeem" => t.kind_redeem,
        "topup" => t.kind_topup,
        "adjust" => t.kind_adjust,
        "refund" => t.kind_refund,
        "payment" => t.kind_payment,
        _ => t.kind_other,
    }
}

pub(super) async fn submit(env: &Env<'_>, viewer: &Viewer) -> Response {
    let t = env.t;
    let Some(code) = env.req.form().get("code").map(str::to_string) else {
        return page(env, viewer, Some(Outcome::Failed(t.code_unknown.to_string()))).await;
    };
    if let Err(e) = env.app.billing.redeem_allowed(viewer.user_id).await {
        let secs = e.retry_after().unwrap_or(60);
        let msg = t.too_many_attempts.replace("{s}", &secs.to_string());
        return page(env, viewer, Some(Outcome::Failed(msg)))
            .await
            .with_status(429)
            .header("retry-after", secs.to_string());
    }
    let (cfg, user_id) = (env.app.config.clone(), viewer.user_id);
    let result = env.app.db.run(move |c| Ok::<_, crate::store::StoreError>(ops::redeem(c, &cfg, user_id, &code))).await;
    let outcome = match result {
        Err(e) | Ok(Err(RedeemError::Store(e))) => return server_error(env, &e),
        Ok(Err(e)) => {
            env.app.billing.redeem_failed(viewer.user_id).await;
            Outcome::Failed(message(t, &e).to_string())
        }
        Ok(Ok(r)) => {
            // The new balance or plan counts from the next request on.
            env.app.writer.flush().await;
            Outcome::Done(match r {
                Redeemed::Credits(c) => t.redeemed_credits.replace("{n}", &format::credits(c)),
                Redeemed::Plan(s) => {
                    let name = env.app.config.plan(&s.plan_id).map_or(s.plan_id.clone(), |p| p.name.clone());
                    let tz = env.app.config.billing.utc_offset_secs;
                    t.redeemed_plan.replace("{plan}", &name).replace("{until}", &format::time(s.expires_at, tz))
                }
            })
        }
    };
    page(env, viewer, Some(outcome)).await
}
