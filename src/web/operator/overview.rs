//! The overview: requests and errors per minute over the last hour, today's
//! tokens and credits, revenue, channels by status.

use super::{api, failed_page, frame, Operator};
use crate::web::chart::{self, Bar};
use crate::web::format;
use crate::web::response::Response;
use crate::web::Env;
use maud::html;
use serde_json::Value;

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

pub(super) async fn page(env: &Env<'_>, op: &Operator) -> Response {
    let t = env.t;
    let o = match api(env, op, "GET", "/admin/overview", None).await {
        Ok(o) => o,
        Err(f) => return failed_page(env, op, t.op_overview, &f),
    };
    let minutes = o["minutes"].as_array().cloned().unwrap_or_default();
    let tz = env.app.config.billing.utc_offset_secs;
    let bars: Vec<Bar> = minutes
        .iter()
        .map(|m| {
            let (total, c4, c5) = (n(&m["total"]), n(&m["client_errors"]), n(&m["server_errors"]));
            let at = format::time(n(&m["minute"]) * 60_000, tz);
            Bar {
                label: at[11..].to_string(),
                values: vec![(total - c4 - c5) as f64, 0.0, c4 as f64, 0.0, c5 as f64],
                title: format!("{at}: {total} · 4xx {c4} · 5xx {c5}"),
            }
        })
        .collect();
    let last_hour: i64 = minutes.iter().map(|m| n(&m["total"])).sum();
    let errors: i64 = minutes.iter().map(|m| n(&m["server_errors"])).sum();
    let today = &o["today"];
    let channels = o["channels"].as_object().cloned().unwrap_or_default();
    let revenue = |k: &str| -> Vec<String> {
        o["revenue"][k]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        format!(
                            "{} {}",
                            r["amount"].as_str().unwrap_or(""),
                            r["currency"].as_str().unwrap_or("").to_uppercase()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let content = html! {
        h1 { (t.op_overview) }
        div.cards {
            div.card #last-hour { h2 { (t.op_last_hour) } div.stat { (format::count(last_hour)) } div.sub { (t.op_server_errors) ": " (format::count(errors)) } }
            div.card #today { h2 { (t.today) } div.stat { (format::count(n(&today["requests"]))) } div.sub { (t.op_billed_requests) " · " (today["cost"].as_str().unwrap_or("0")) " " (t.op_credits_unit) } }
            div.card #tokens { h2 { (t.op_tokens_today) } div.stat { (format::count(n(&today["input_tokens"]) + n(&today["cached_tokens"]) + n(&today["cache_write_tokens"]) + n(&today["output_tokens"]))) }
                div.sub { (t.col_output) " " (format::count(n(&today["output_tokens"]))) } }
            div.card #revenue { h2 { (t.op_revenue) }
                @let r30 = revenue("last_30_days");
                div.stat { @if r30.is_empty() { "—" } @else { (r30.join(" · ")) } }
                div.sub { (t.today) ": " @let rt = revenue("today"); @if rt.is_empty() { "—" } @else { (rt.join(" · ")) } } }
        }
        div.card {
            h3 { (t.op_requests_per_minute) }
            (chart::bars(t.op_requests_per_minute, &bars, &|v| format!("{v:.0}")))
            div.legend { span { i.c0 {} "2xx/3xx" } span { i.c2 {} "4xx" } span { i.c4 {} "5xx" } }
        }
        div.cards {
            div.card #channels {
                h2 { (t.op_channels) }
                @for (status, count) in &channels { div { span class=(status_class(status)) { (status) } " " (count) } }
                p.sub { a href="/channels" { (t.op_channels) " →" } }
            }
            div.card #people {
                h2 { (t.op_users) }
                div.stat { (format::count(n(&o["users"]))) }
                div.sub { (t.op_pending_orders) ": " (n(&o["orders_pending"])) }
                p.sub { a href="/users" { (t.op_users) " →" } " " a href="/orders" { (t.op_orders) " →" } }
            }
        }
    };
    Response::html(200, frame(env, op, t.op_overview, content))
}

/// The pill colour of a channel status.
pub(super) fn status_class(status: &str) -> &'static str {
    match status {
        "available" => "pill ok",
        "cooling_down" | "ejected" | "unhealthy" => "pill warn",
        _ => "pill bad",
    }
}
