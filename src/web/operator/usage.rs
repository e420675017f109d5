//! Usage across users: filters (user, model, channel, dates), cost and
//! tokens per day, top users, models and channels, single requests page by
//! page, and a CSV export of them.

use super::users::usage_lines;
use super::{api, enc, failed_page, frame, ApiFailure, Operator};
use crate::web::chart::{self, Bar};
use crate::web::format;
use crate::web::i18n::Text;
use crate::web::response::Response;
use crate::web::Env;
use chrono::NaiveDate;
use maud::{html, Markup};
use serde_json::Value;

/// Rows of the CSV export at most (the requests API pages 500 at a time).
const EXPORT_MAX: usize = 200_000;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The filters as the page shows them and as the API takes them.
struct Filters {
    user: String,
    model: String,
    channel: String,
    from: String,
    to: String,
}

impl Filters {
    fn read(env: &Env) -> Filters {
        let tz = env.app.config.billing.utc_offset_secs;
        let date = |name: &str, default: String| {
            env.req.param_nonempty(name).filter(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()).unwrap_or(default)
        };
        Filters {
            user: env.req.param_nonempty("user").unwrap_or_default(),
            model: env.req.param_nonempty("model").unwrap_or_default(),
            channel: env.req.param_nonempty("channel").unwrap_or_default(),
            from: date("from", format::date(env.now() - 13 * 86_400_000, tz)),
            to: date("to", format::date(env.now(), tz)),
        }
    }

    /// `user=…&model=…&channel=…&since=…&until=…` for the API (until is the
    /// day after `to`).
    fn api_query(&self) -> String {
        let until = NaiveDate::parse_from_str(&self.to, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.succ_opt())
            .map(|d| d.to_string())
            .unwrap_or_default();
        format!(
            "user={}&model={}&channel={}&since={}&until={}",
            enc(&self.user),
            enc(&self.model),
            enc(&self.channel),
            enc(&self.from),
            enc(&until)
        )
    }

    /// The same filters for this page's own links.
    fn page_query(&self) -> String {
        format!(
            "user={}&model={}&channel={}&from={}&to={}",
            enc(&self.user),
            enc(&self.model),
            enc(&self.channel),
            enc(&self.from),
            enc(&self.to)
        )
    }
}

pub(super) async fn page(env: &Env<'_>, op: &Operator) -> Response {
    let t = env.t;
    let f = Filters::read(env);
    let q = f.api_query();
    let before = env.req.param_nonempty("before").map(|b| format!("&before={}", enc(&b))).unwrap_or_default();
    let read = async {
        Ok::<_, ApiFailure>((
            api(env, op, "GET", &format!("/admin/usage?by=day&{q}"), None).await?,
            api(env, op, "GET", &format!("/admin/usage?by=user&{q}"), None).await?,
            api(env, op, "GET", &format!("/admin/usage?by=model&{q}"), None).await?,
            api(env, op, "GET", &format!("/admin/usage?by=channel&{q}"), None).await?,
            api(env, op, "GET", &format!("/admin/requests?limit=50&{q}{before}"), None).await?,
        ))
    };
    let (days, users, models, channels, requests) = match read.await {
        Ok(r) => r,
        Err(e) => return failed_page(env, op, t.console_usage, &e),
    };
    let top = |v: &Value| -> Value {
        let mut rows = v["rows"].as_array().cloned().unwrap_or_default();
        rows.sort_by_key(|r| {
            std::cmp::Reverse(r["cost"].as_str().and_then(|c| crate::config::units::parse_credits(c).ok()).unwrap_or(0))
        });
        rows.truncate(10);
        serde_json::json!({"rows": rows})
    };
    let pq = f.page_query();
    let content = html! {
        h1 { (t.console_usage) }
        form.filters method="get" action="/usage" {
            label { (t.op_user) input type="text" name="user" value=(f.user) placeholder="user@example.com"; }
            label { (t.col_model) input type="text" name="model" value=(f.model); }
            label { (t.op_channel) input type="text" name="channel" value=(f.channel); }
            label { (t.from) input type="date" name="from" value=(f.from); }
            label { (t.to) input type="date" name="to" value=(f.to); }
            button.ghost type="submit" { (t.apply) }
        }
        div.cards {
            div.card { h2 { (t.total_cost) } div.stat { (s(&days["total"]["cost"])) } div.sub { (f.from) " – " (f.to) } }
            div.card { h2 { (t.total_requests) } div.stat { (format::count(n(&days["total"]["requests"]))) } }
        }
        (day_charts(t, &days))
        div.cards.wide {
            div.card { h3 { (t.op_top_users) } (usage_lines(t, &top(&users), t.op_user, true)) }
            div.card { h3 { (t.op_top_models) } (usage_lines(t, &top(&models), t.col_model, true)) }
        }
        h2 { (t.op_by_channel) }
        (usage_lines(t, &channels, t.op_channel, false))
        h2 #requests { (t.requests_title) }
        (request_rows(env, &requests["requests"], true))
        div.pager {
            @if !before.is_empty() { a.btn.ghost.small href=(format!("/usage?{pq}#requests")) { (t.newest) } }
            @if let Some(next) = requests["next"].as_str() { a.btn.ghost.small href=(format!("/usage?{pq}&before={}#requests", enc(next))) { (t.older) " →" } }
            a.btn.small href=(format!("/usage.csv?{pq}")) download { (t.export_csv) }
        }
    };
    Response::html(200, frame(env, op, t.console_usage, content))
}

fn day_charts(t: &Text, days: &Value) -> Markup {
    let rows = days["rows"].as_array().cloned().unwrap_or_default();
    let cost: Vec<Bar> = rows
        .iter()
        .map(|r| {
            let c = r["cost"].as_str().and_then(|c| crate::config::units::parse_credits(c).ok()).unwrap_or(0);
            Bar {
                label: s(&r["group"]).get(5..).unwrap_or("").to_string(),
                values: vec![c as f64 / 1e6],
                title: format!("{}: {}", s(&r["group"]), s(&r["cost"])),
            }
        })
        .collect();
    let tokens: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            label: s(&r["group"]).get(5..).unwrap_or("").to_string(),
            values: vec![
                n(&r["input_tokens"]) as f64,
                n(&r["cached_tokens"]) as f64,
                n(&r["cache_write_tokens"]) as f64,
                n(&r["output_tokens"]) as f64,
            ],
            title: format!("{}: {} {}", s(&r["group"]), format::count(n(&r["output_tokens"])), t.col_output),
        })
        .collect();
    html! {
        @if rows.is_empty() { p.muted { (t.no_requests) } } @else {
            div.cards {
                div.card { h3 { (t.cost_per_day) } (chart::bars(t.cost_per_day, &cost, &|v| crate::config::units::format_credits((v * 1e6).round() as i64))) }
                div.card { h3 { (t.tokens_per_day) } (chart::bars(t.tokens_per_day, &tokens, &|v| format!("{v:.0}"))) }
            }
        }
    }
}

/// Rows of `/admin/requests`; `who` adds the user and channel columns.
pub(super) fn request_rows(env: &Env, rows: &Value, who: bool) -> Markup {
    let t = env.t;
    let rows = rows.as_array().cloned().unwrap_or_default();
    html! {
        @if rows.is_empty() { p.muted { (t.no_requests) } } @else {
            div.table-wrap { table.requests {
                thead { tr {
                    th { (t.col_time) } @if who { th { (t.op_users) } th { (t.op_channel) } }
                    th { (t.col_model) } th { (t.col_endpoint) } th { (t.col_status) }
                    th.num { (t.col_input) } th.num { (t.col_cached) } th.num { (t.col_output) } th.num { (t.col_cost) } th.num { (t.col_latency) }
                } }
                tbody { @for r in &rows { tr {
                    td.nowrap title=(s(&r["request_id"])) { (super::when(env, &r["time"])) }
                    @if who { td { (s(&r["user"])) } td { (s(&r["channel"])) } }
                    td { code { (s(&r["model"])) } } td { (s(&r["endpoint"])) }
                    td { (r["status"]) }
                    td.num { (format::count(n(&r["input_tokens"]))) } td.num { (format::count(n(&r["cached_tokens"]))) }
                    td.num { (format::count(n(&r["output_tokens"]))) } td.num { (s(&r["cost"])) }
                    td.num { (format::duration_ms(n(&r["latency_ms"]))) }
                } } }
            } }
        }
    }
}

/// `GET /usage.csv`: the filtered requests, newest first, read 500 at a time.
pub(super) async fn csv(env: &Env<'_>, op: &Operator) -> Response {
    let f = Filters::read(env);
    let q = f.api_query();
    let mut out = String::from("time,request_id,user,key,model,channel,endpoint,status,input_tokens,cached_tokens,cache_write_tokens,output_tokens,reasoning_tokens,cost,latency_ms\n");
    let mut before = String::new();
    let mut rows = 0;
    while rows < EXPORT_MAX {
        let page = match api(env, op, "GET", &format!("/admin/requests?limit=500&{q}{before}"), None).await {
            Ok(p) => p,
            Err(e) => return failed_page(env, op, env.t.console_usage, &e),
        };
        for r in page["requests"].as_array().into_iter().flatten() {
            let fields = [
                s(&r["time"]).to_string(),
                s(&r["request_id"]).to_string(),
                s(&r["user"]).to_string(),
                s(&r["key"]).to_string(),
                s(&r["model"]).to_string(),
                s(&r["channel"]).to_string(),
                s(&r["endpoint"]).to_string(),
                r["status"].to_string(),
                r["input_tokens"].to_string(),
                r["cached_tokens"].to_string(),
                r["cache_write_tokens"].to_string(),
                r["output_tokens"].to_string(),
                r["reasoning_tokens"].to_string(),
                s(&r["cost"]).to_string(),
                r["latency_ms"].to_string(),
            ];
            out.push_str(&fields.iter().map(|x| crate::web::console::csv_field(x)).collect::<Vec<_>>().join(","));
            out.push('\n');
            rows += 1;
        }
        match page["next"].as_str() {
            Some(next) => before = format!("&before={}", enc(next)),
            None => break,
        }
    }
    Response::new(200, "text/csv; charset=utf-8", out)
        .header("content-disposition", format!("attachment; filename=\"usage-{}-{}.csv\"", f.from, f.to))
        .header("cache-control", "no-store")
}
