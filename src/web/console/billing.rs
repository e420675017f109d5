//! The Buy credits page: packages and free amounts paid through Stripe or an
//! EPay gateway (`payments`), the user's orders, and the operator's own shop
//! link and instructions (`console.purchase_url`, `console.purchase_note`).
//!
//! Forms post only to this site (the CSP says so); the hand-over to the
//! provider's page is a page of ours that refreshes to it.

use super::dashboard::live;
use super::{csrf_field, once_field, server_error, Viewer};
use crate::config::units::format_money;
use crate::config::Purchase;
use crate::payments::{self, Buy, Choice, PaymentError, StartError};
use crate::store::orders::{self as sql, OrderFilter, OrderRow, OrderStatus};
use crate::web::format;
use crate::web::i18n::Text;
use crate::web::layout::notice;
use crate::web::response::Response;
use crate::web::Env;
use maud::{html, Markup};

pub(super) async fn page(env: &Env<'_>, viewer: &Viewer) -> Response {
    render(env, viewer, 200, None).await
}

async fn render(env: &Env<'_>, viewer: &Viewer, status: u16, problem: Option<String>) -> Response {
    let t = env.t;
    let c = env.console();
    let user_id = viewer.user_id;
    let orders = match env
        .app
        .db
        .run(move |c| sql::list(c, &OrderFilter { user_id: Some(user_id), limit: 20, ..Default::default() }))
        .await
    {
        Ok(o) => o,
        Err(e) => return server_error(env, &e),
    };
    let v = live(env, viewer).view;
    let online = env.app.payments.is_some();
    let content = html! {
        h1 { (t.console_buy) }
        div.cards { div.card { h2 { (t.balance) } div.stat #balance-now { (format::credits(v.balance)) } } }
        @if let Some(p) = &problem { (notice("bad", p)) }
        @if online { (buy_form(env, viewer)) }
        @if c.purchase_url.is_some() || c.purchase_note.is_some() {
            div.card {
                h2 { @if online { (t.buy_other_ways) } @else { (t.buy_title) } }
                @if let Some(n) = &c.purchase_note { @for para in n.split("\n\n") { p { (para) } } }
                @if let Some(u) = &c.purchase_url {
                    p { a.btn href=(u) target="_blank" rel="noopener noreferrer" { (t.buy_button) " ↗" } }
                }
                p.sub { (t.buy_then_redeem) " " a href="/console/redeem" { (t.console_redeem) } }
            }
        } @else if !online {
            div.card {
                h2 { (t.buy_how_title) }
                p { (t.buy_none) }
                p { a.btn href="/console/redeem" { (t.console_redeem) } }
            }
        }
        @if !orders.is_empty() {
            h2 { (t.your_orders) }
            (order_table(env, &orders))
        }
        p.sub { (t.buy_pricing) " " a href="/docs/models" { (t.docs_models) } }
    };
    Response::html(status, super::frame(env, viewer, t.console_buy, content))
}

/// A payment method's label: `Card (Stripe)`, `Alipay`, `WeChat Pay`.
fn method_label(t: &Text, provider: &str, method: &str) -> String {
    match (provider, method) {
        ("stripe", _) => t.pay_card.to_string(),
        (_, "alipay") => t.pay_alipay.to_string(),
        (_, "wxpay") => t.pay_wxpay.to_string(),
        (_, "qqpay") => t.pay_qqpay.to_string(),
        (_, other) => other.to_string(),
    }
}

fn grant_label(t: &Text, env: &Env, grant: &Purchase) -> String {
    match grant {
        Purchase::Credits(c) => t.n_credits.replace("{n}", &format::credits(*c)),
        Purchase::Plan(id) => {
            let plan = env.app.config.plan(id);
            let name = plan.map_or(id.as_str(), |p| p.name.as_str());
            let days = plan.map_or(0, |p| p.duration_days);
            t.plan_for_days.replace("{plan}", name).replace("{n}", &days.to_string())
        }
    }
}

fn buy_form(env: &Env, viewer: &Viewer) -> Markup {
    let t = env.t;
    let cfg = &env.app.config.payments;
    let Some(payments) = env.app.payments.as_ref() else { return html! {} };
    let methods: Vec<(String, String, &str)> = payments
        .all()
        .flat_map(|p| {
            p.methods().iter().map(move |m| (format!("{}:{m}", p.name()), method_label(t, p.name(), m), p.currency()))
        })
        .collect();
    html! {
        div.card {
            h2 { (t.buy_online) }
            form.stack.wide method="post" action="/console/billing/orders" {
                (csrf_field(viewer))
                (once_field())
                fieldset {
                    legend { (t.what_to_buy) }
                    div.choices {
                        @for (i, p) in cfg.packages.iter().enumerate() {
                            label.choice {
                                input type="radio" name="item" value=(p.id) checked[i == 0] required;
                                span {
                                    strong { (p.name) }
                                    span.sub { (grant_label(t, env, &p.grant)) }
                                    span.price { @for (cur, amount) in &p.prices { span { (format_money(*amount, cur)) " " (cur.to_uppercase()) } } }
                                }
                            }
                        }
                        @if let Some(c) = &cfg.custom {
                            label.choice {
                                input type="radio" name="item" value="custom" checked[cfg.packages.is_empty()];
                                span {
                                    strong { (t.other_amount) }
                                    span.sub { (t.credits_between.replace("{min}", &c.min_credits.to_string()).replace("{max}", &c.max_credits.to_string())) }
                                    span.price { @for (cur, unit) in &c.credit_price { span { (format_money(*unit, cur)) " " (cur.to_uppercase()) " / " (t.credit_word) } } }
                                }
                            }
                            label { (t.credits_amount) input type="number" name="credits" min=(c.min_credits) max=(c.max_credits) step="1" placeholder=(c.min_credits); }
                        }
                    }
                }
                fieldset {
                    legend { (t.pay_with) }
                    div.checks {
                        @for (i, (value, label, currency)) in methods.iter().enumerate() {
                            label { input type="radio" name="pay" value=(value) checked[i == 0] required; (label) " " span.sub { "(" (currency.to_uppercase()) ")" } }
                        }
                    }
                }
                div { button type="submit" { (t.continue_to_payment) } }
            }
        }
    }
}

fn status_pill(t: &Text, s: OrderStatus) -> Markup {
    let (class, label) = match s {
        OrderStatus::Pending => ("pill warn", t.order_pending),
        OrderStatus::Paid => ("pill ok", t.order_paid),
        OrderStatus::Failed => ("pill bad", t.order_failed),
        OrderStatus::Expired => ("pill", t.order_expired),
        OrderStatus::Refunded => ("pill", t.order_refunded),
    };
    html! { span class=(class) { (label) } }
}

fn what(env: &Env, o: &OrderRow) -> String {
    match &o.plan_id {
        Some(p) => grant_label(env.t, env, &Purchase::Plan(p.clone())),
        None => grant_label(env.t, env, &Purchase::Credits(o.credits)),
    }
}

fn order_table(env: &Env, orders: &[OrderRow]) -> Markup {
    let t = env.t;
    let tz = env.app.config.billing.utc_offset_secs;
    html! {
        div.table-wrap { table.orders {
            thead { tr { th { (t.col_time) } th { (t.col_what) } th.num { (t.col_amount) } th { (t.pay_with) } th { (t.col_status) } } }
            tbody {
                @for o in orders {
                    tr {
                        td.nowrap { a href=(format!("/console/billing/orders/{}", o.id)) { (format::time(o.created_at, tz)) } }
                        td { (what(env, o)) }
                        td.num { (format_money(o.amount, &o.currency)) " " (o.currency.to_uppercase()) }
                        td { (method_label(t, &o.provider, &o.method)) }
                        td { (status_pill(t, o.status)) }
                    }
                }
            }
        } }
    }
}

/// `POST /console/billing/orders`: creates the order and hands the user to
/// the provider.
pub(super) async fn create(env: &Env<'_>, viewer: &Viewer) -> Response {
    let t = env.t;
    let form = env.req.form();
    let choice = match (form.get("item"), form.get("credits")) {
        (Some("custom"), Some(n)) => match n.parse::<i64>() {
            Ok(n) => Choice::Credits(n),
            Err(_) => return render(env, viewer, 400, Some(t.bad_amount.into())).await,
        },
        (Some("custom"), None) => return render(env, viewer, 400, Some(t.bad_amount.into())).await,
        (Some(id), _) => Choice::Package(id.to_string()),
        (None, _) => return render(env, viewer, 400, Some(t.pick_something.into())).await,
    };
    let Some((provider, method)) = form.get("pay").and_then(|p| p.split_once(':')) else {
        return render(env, viewer, 400, Some(t.pick_method.into())).await;
    };
    let Some(once) = form.get("once") else {
        return render(env, viewer, 400, Some(t.form_expired.into())).await;
    };
    let buy =
        Buy { user_id: viewer.user_id, email: &viewer.email, choice, provider, method, root: &env.urls.root, once };
    match payments::start(env.app, buy).await {
        Ok((order, url)) => handover(env, viewer, &order, &url),
        Err(StartError::AlreadySubmitted) => render(env, viewer, 409, Some(t.already_submitted.into())).await,
        Err(StartError::Payment(PaymentError::BadChoice(_) | PaymentError::UnknownMethod)) => {
            render(env, viewer, 400, Some(t.cannot_pay_that.into())).await
        }
        Err(StartError::Payment(PaymentError::Store(e))) => server_error(env, &e),
        Err(StartError::Payment(e)) => {
            render(env, viewer, 502, Some(t.provider_failed.replace("{e}", &e.to_string()))).await
        }
    }
}

/// The page between us and the provider: it refreshes to the payment page
/// at once (a redirect of a form post to another site would break the CSP's
/// form-action rule), with a link for browsers that do not.
fn handover(env: &Env, viewer: &Viewer, order: &OrderRow, url: &str) -> Response {
    let t = env.t;
    let content = html! {
        meta http-equiv="refresh" content=(format!("0;url={url}"));
        h1 { (t.to_payment_title) }
        p { (t.to_payment_body) }
        p { a.btn href=(url) #pay-link { (t.continue_to_payment) " →" } }
        p.sub { (t.order_word) " " code { (order.id) } " · " (format_money(order.amount, &order.currency)) " " (order.currency.to_uppercase()) }
    };
    Response::html(200, super::frame(env, viewer, t.to_payment_title, content))
}

/// `GET /console/billing/orders/{id}`: where the provider sends the user
/// back. While the order waits for the provider's confirmation the page
/// refreshes itself.
pub(super) async fn order(env: &Env<'_>, viewer: &Viewer, id: &str) -> Response {
    let t = env.t;
    let oid = id.to_string();
    let order = match env.app.db.run(move |c| sql::get(c, &oid)).await {
        Ok(Some(o)) if o.user_id == viewer.user_id => o,
        Ok(_) => return super::super::not_found(env),
        Err(e) => return server_error(env, &e),
    };
    let tz = env.app.config.billing.utc_offset_secs;
    let waiting = order.status == OrderStatus::Pending && order.expires_at > env.now();
    let balance = live(env, viewer).view.balance;
    let content = html! {
        @if waiting { meta http-equiv="refresh" content="3"; }
        h1 { (t.order_word) " " code { (order.id) } }
        @match order.status {
            OrderStatus::Paid => { div.note.ok #order-status { p { (t.order_paid_note.replace("{what}", &what(env, &order))) } p { (t.balance) ": " strong { (format::credits(balance)) } } } }
            OrderStatus::Pending if waiting => { div.note.warn #order-status { p { (t.order_waiting) } } }
            OrderStatus::Pending | OrderStatus::Expired => { div.note #order-status { p { (t.order_expired_note) } } }
            OrderStatus::Failed => { div.note.bad #order-status { p { (t.order_failed_note) } } }
            OrderStatus::Refunded => { div.note #order-status { p { (t.order_refunded_note) } } }
        }
        div.card {
            table {
                tbody {
                    tr { th { (t.col_what) } td { (what(env, &order)) } }
                    tr { th { (t.col_amount) } td { (format_money(order.amount, &order.currency)) " " (order.currency.to_uppercase()) } }
                    tr { th { (t.pay_with) } td { (method_label(t, &order.provider, &order.method)) } }
                    tr { th { (t.col_status) } td { (status_pill(t, order.status)) } }
                    tr { th { (t.created) } td { (format::time(order.created_at, tz)) } }
                    @if let Some(p) = order.paid_at { tr { th { (t.paid_at) } td { (format::time(p, tz)) } } }
                }
            }
        }
        div.actions {
            @if waiting { @if let Some(u) = &order.checkout_url { a.btn href=(u) { (t.continue_to_payment) } } }
            a.btn.ghost href="/console/billing" { (t.console_buy) }
            a.btn.ghost href="/console/keys" { (t.console_keys) }
        }
    };
    Response::html(200, super::frame(env, viewer, t.order_word, content))
}
