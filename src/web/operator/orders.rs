//! Orders: every order with its status, and the two things an operator does
//! by hand: refund a paid order, or confirm an unpaid one as paid. Both need
//! a reason, which goes into the ledger and the audit trail.

use super::{after, api, enc, failed_page, failure, frame, ApiFailure, Operator};
use crate::web::response::Response;
use crate::web::Env;
use maud::{html, Markup};
use serde_json::{json, Value};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub(super) async fn list(env: &Env<'_>, op: &Operator, problem: Option<ApiFailure>) -> Response {
    let t = env.t;
    let status = env.req.param_nonempty("status").unwrap_or_default();
    let v = match api(env, op, "GET", &format!("/admin/orders?limit=200&status={}", enc(&status)), None).await {
        Ok(v) => v,
        Err(f) => return failed_page(env, op, t.op_orders, &f),
    };
    let done = super::done_notice(env);
    let code = problem.as_ref().map_or(200, |f| f.status.max(400));
    let content = html! {
        h1 { (t.op_orders) }
        @if let Some(d) = done { (d) }
        @if let Some(f) = &problem { (failure(f)) }
        form.filters method="get" action="/orders" {
            label { (t.col_status) select name="status" {
                option value="" { (t.op_any) }
                @for st in ["pending", "paid", "failed", "expired", "refunded"] { option value=(st) selected[status == st] { (st) } }
            } }
            button.ghost type="submit" { (t.apply) }
        }
        (table(env, op, &v["orders"], true))
    };
    Response::html(code, frame(env, op, t.op_orders, content))
}

/// The orders table; `actions` adds refund and confirm forms.
pub(super) fn table(env: &Env, op: &Operator, orders: &Value, actions: bool) -> Markup {
    let t = env.t;
    let rows = orders.as_array().cloned().unwrap_or_default();
    html! {
        @if rows.is_empty() { p.muted { (t.op_no_orders) } } @else {
            div.table-wrap { table.orders {
                thead { tr { th { (t.order_word) } th { (t.col_time) } th { (t.op_user) } th.num { (t.col_amount) } th { (t.pay_with) } th { (t.col_what) } th { (t.col_status) } @if actions { th {} } } }
                tbody { @for o in &rows { tr data-order=(s(&o["id"])) {
                    td.mono { (s(&o["id"])) }
                    td.nowrap { (super::when(env, &o["created_at"])) }
                    td { a href=(format!("/users/{}", enc(s(&o["user"])))) { (s(&o["user"])) } }
                    td.num { (s(&o["amount"])) " " (s(&o["currency"]).to_uppercase()) }
                    td { (s(&o["provider"])) " " span.sub { (s(&o["method"])) } }
                    td { @if o["plan"].is_null() { (s(&o["credits"])) " " (t.op_credits_unit) } @else { (t.plan) " " (s(&o["plan"])) } }
                    td { span class=(order_pill(s(&o["status"]))) { (s(&o["status"])) } @if !s(&o["note"]).is_empty() { br; span.sub { (s(&o["note"])) } } }
                    @if actions { td {
                        @let action = match s(&o["status"]) { "paid" => Some(("refund", t.op_refund)), "pending" | "failed" | "expired" => Some(("complete", t.op_confirm_paid)), _ => None };
                        @if let Some((action, label)) = action {
                            form.inline method="post" action=(format!("/orders/{}/{action}", enc(s(&o["id"])))) data-confirm=(t.op_confirm) {
                                input type="hidden" name="csrf" value=(op.csrf);
                                input type="text" name="reason" placeholder=(t.op_reason) required maxlength="200";
                                button.ghost.small type="submit" { (label) }
                            }
                        }
                    } }
                } } }
            } }
        }
    }
}

pub(super) async fn act(env: &Env<'_>, op: &Operator, id: &str, action: &str) -> Response {
    if !matches!(action, "refund" | "complete") {
        return crate::web::not_found(env);
    }
    let reason = env.req.form().get("reason").unwrap_or("").to_string();
    let result =
        api(env, op, "POST", &format!("/admin/orders/{}/{action}", enc(id)), Some(json!({"reason": reason}))).await;
    match after(result, "/orders", action) {
        Ok(r) => r,
        Err(f) => list(env, op, Some(f)).await,
    }
}

/// The pill colour of an order status.
fn order_pill(status: &str) -> &'static str {
    match status {
        "paid" => "pill ok",
        "pending" => "pill warn",
        "failed" => "pill bad",
        _ => "pill",
    }
}
