//! The Usage page: cost and tokens per day, totals per model, and every
//! request (never its contents) page by page, with a CSV export of the same
//! rows. Filters: a date range (30 days by default), a key, a model.

use super::{frame, server_error, Viewer};
use crate::store::accounts::{self as keys_sql, KeyRow};
use crate::store::usage::{self, Cursor, GroupBy, UsageFilter, UsageLine, UsageRow};
use crate::store::StoreError;
use crate::web::chart::{self, Bar};
use crate::web::format;
use crate::web::i18n::Text;
use crate::web::layout::notice;
use crate::web::response::Response;
use crate::web::Env;
use bytes::Bytes;
use chrono::NaiveDate;
use maud::{html, Markup};

/// Requests per history page.
const PAGE_ROWS: i64 = 50;
/// Rows per database read while exporting.
const EXPORT_CHUNK: i64 = 2_000;
/// The longest range a page or export covers.
const MAX_DAYS: i64 = 366;
const DAY_MS: i64 = 86_400_000;

/// The filters of a Usage request, validated.
struct Query {
    from: NaiveDate,
    to: NaiveDate,
    key: Option<i64>,
    model: Option<String>,
    before: Option<Cursor>,
    /// Filters that could not be used (shown; defaults stand in).
    problems: Vec<&'static str>,
}

impl Query {
    fn parse(env: &Env) -> Query {
        let t = env.t;
        let tz = env.app.config.billing.utc_offset_secs;
        let today = chrono::DateTime::from_timestamp_millis(env.now() + tz as i64 * 1000)
            .map(|d| d.date_naive())
            .unwrap_or_default();
        let mut problems = Vec::new();
        let mut date = |name: &str, default: NaiveDate| match env.req.param_nonempty(name) {
            None => default,
            Some(s) => NaiveDate::parse_from_str(&s, "%Y-%m-%d").unwrap_or_else(|_| {
                problems.push(t.bad_date);
                default
            }),
        };
        let (mut from, mut to) = (date("from", today - chrono::Duration::days(29)), date("to", today));
        if from > to {
            std::mem::swap(&mut from, &mut to);
        }
        if (to - from).num_days() >= MAX_DAYS {
            from = to - chrono::Duration::days(MAX_DAYS - 1);
            problems.push(t.range_too_long);
        }
        let key = match env.req.param_nonempty("key").map(|k| k.parse::<i64>()) {
            Some(Ok(k)) => Some(k),
            Some(Err(_)) => {
                problems.push(t.bad_filter);
                None
            }
            None => None,
        };
        let model = env.req.param_nonempty("model").filter(|m| m.len() <= 128);
        let before = env.req.param_nonempty("before").and_then(|c| Cursor::decode(&c));
        problems.dedup();
        Query { from, to, key, model, before, problems }
    }

    /// Milliseconds of local midnight starting `d`.
    fn start_ms(d: NaiveDate, tz: i32) -> i64 {
        d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()).unwrap_or(0) - tz as i64 * 1000
    }

    fn filter(&self, user_id: i64, tz: i32) -> UsageFilter {
        UsageFilter {
            user_id: Some(user_id),
            key_id: self.key,
            model: self.model.clone(),
            since_ms: Some(Self::start_ms(self.from, tz)),
            until_ms: Some(Self::start_ms(self.to, tz) + DAY_MS),
            channel: None,
        }
    }

    /// The query string of these filters (without the cursor).
    fn params(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("from", &self.from.to_string()).append_pair("to", &self.to.to_string());
        if let Some(k) = self.key {
            s.append_pair("key", &k.to_string());
        }
        if let Some(m) = &self.model {
            s.append_pair("model", m);
        }
        s.finish()
    }
}

struct Data {
    days: Vec<UsageLine>,
    models: Vec<UsageLine>,
    rows: Vec<UsageRow>,
    keys: Vec<KeyRow>,
}

pub(super) async fn page(env: &Env<'_>, viewer: &Viewer) -> Response {
    let t = env.t;
    let tz = env.app.config.billing.utc_offset_secs;
    let q = Query::parse(env);
    let filter = q.filter(viewer.user_id, tz);
    let (before, user_id) = (q.before, viewer.user_id);
    let data = env
        .app
        .db
        .run(move |c| {
            Ok::<_, StoreError>(Data {
                days: usage::report(c, &filter, GroupBy::Day, tz)?,
                models: usage::report(c, &filter, GroupBy::Model, tz)?,
                rows: usage::page(c, &filter, before, PAGE_ROWS)?,
                keys: keys_sql::list_keys(c, Some(user_id))?,
            })
        })
        .await;
    let data = match data {
        Ok(d) => d,
        Err(e) => return server_error(env, &e),
    };
    let total_cost: i64 = data.models.iter().map(|l| l.cost).sum();
    let total_requests: i64 = data.models.iter().map(|l| l.requests).sum();
    let params = q.params();
    let content = html! {
        h1 { (t.console_usage) }
        @for p in &q.problems { (notice("warn", p)) }
        (filters(env, &q, &data.keys))
        div.cards {
            div.card { h2 { (t.total_cost) } div.stat { (format::credits(total_cost)) } div.sub { (q.from) " – " (q.to) } }
            div.card { h2 { (t.total_requests) } div.stat { (format::count(total_requests)) } }
        }
        (charts(t, &q, &data.days))
        h2 { (t.by_model) }
        (model_table(t, &data.models))
        h2 #requests { (t.requests_title) }
        p.sub { (t.requests_privacy) }
        @if data.rows.is_empty() {
            p.muted { (t.no_requests) }
        } @else {
            (requests_table(t, &data.rows, tz))
        }
        div.pager {
            @if q.before.is_some() { a.btn.ghost.small href=(format!("/console/usage?{params}#requests")) { (t.newest) } }
            @if data.rows.len() as i64 == PAGE_ROWS {
                @if let Some(last) = data.rows.last() {
                    a.btn.ghost.small href=(format!("/console/usage?{params}&before={}#requests", Cursor::of(last).encode())) { (t.older) " →" }
                }
            }
            a.btn.small href=(format!("/console/usage.csv?{params}")) download { (t.export_csv) }
        }
    };
    Response::html(200, frame(env, viewer, t.console_usage, content))
}

fn filters(env: &Env, q: &Query, keys: &[KeyRow]) -> Markup {
    let t = env.t;
    let models: Vec<&str> = env.app.config.models.iter().map(|m| m.id.as_str()).collect();
    html! {
        form.filters method="get" action="/console/usage" {
            label { (t.from) input type="date" name="from" value=(q.from); }
            label { (t.to) input type="date" name="to" value=(q.to); }
            label {
                (t.key_word)
                select name="key" {
                    option value="" { (t.all_keys) }
                    @for k in keys {
                        option value=(k.id) selected[q.key == Some(k.id)] {
                            (key_label(k)) @if k.deleted_at.is_some() { " (" (t.deleted) ")" }
                        }
                    }
                }
            }
            label {
                (t.col_model)
                select name="model" {
                    option value="" { (t.all_models) }
                    @for m in &models {
                        option value=(m) selected[q.model.as_deref() == Some(*m)] { (m) }
                    }
                }
            }
            button.ghost type="submit" { (t.apply) }
        }
    }
}

fn key_label(k: &KeyRow) -> String {
    if k.name.is_empty() {
        k.prefix()
    } else {
        format!("{} ({})", k.name, k.prefix())
    }
}

/// Every day of the range, with zeros where nothing was used.
fn daily(q: &Query, days: &[UsageLine]) -> Vec<(NaiveDate, UsageLine)> {
    let mut out = Vec::new();
    let mut d = q.from;
    while d <= q.to {
        let label = d.to_string();
        let line = days.iter().find(|l| l.group == label).cloned().unwrap_or_default();
        out.push((d, line));
        d = d.succ_opt().unwrap_or(d + chrono::Duration::days(1));
    }
    out
}

fn charts(t: &Text, q: &Query, days: &[UsageLine]) -> Markup {
    let series = daily(q, days);
    let label = |d: &NaiveDate| d.format("%m-%d").to_string();
    let cost: Vec<Bar> = series
        .iter()
        .map(|(d, l)| Bar {
            label: label(d),
            values: vec![l.cost as f64 / 1e6],
            title: format!("{d}: {} · {} {}", format::credits(l.cost), format::count(l.requests), t.requests_word),
        })
        .collect();
    let tokens: Vec<Bar> = series
        .iter()
        .map(|(d, l)| Bar {
            label: label(d),
            values: vec![
                l.input_tokens as f64,
                l.cached_tokens as f64,
                l.cache_write_tokens as f64,
                l.output_tokens as f64,
            ],
            title: format!(
                "{d}: {} {} · {} {} · {} {} · {} {}",
                t.col_input,
                format::count(l.input_tokens),
                t.col_cached,
                format::count(l.cached_tokens),
                t.col_cache_write,
                format::count(l.cache_write_tokens),
                t.col_output,
                format::count(l.output_tokens)
            ),
        })
        .collect();
    // Exact decimals, however small the amounts (0.00005, not 0).
    let credits_axis = |v: f64| crate::config::units::format_credits((v * 1e6).round() as i64);
    html! {
        div.card {
            h3 { (t.cost_per_day) }
            (chart::bars(t.cost_per_day, &cost, &credits_axis))
        }
        div.card {
            h3 { (t.tokens_per_day) }
                (chart::bars(t.tokens_per_day, &tokens, &|v| short_count(v)))
                div.legend {
                    span { i.c0 {} (t.col_input) }
                    span { i.c1 {} (t.col_cached) }
                    span { i.c2 {} (t.col_cache_write) }
                    span { i.c3 {} (t.col_output) }
                }
        }
    }
}

/// 1.2k, 3.4M.
fn short_count(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn model_table(t: &Text, lines: &[UsageLine]) -> Markup {
    html! {
        @if lines.is_empty() {
            p.muted { (t.no_requests) }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th { (t.col_model) } th.num { (t.requests_title) } th.num { (t.col_input) } th.num { (t.col_cached) }
                    th.num { (t.col_cache_write) } th.num { (t.col_output) } th.num { (t.col_cost) }
                } }
                tbody {
                    @for l in lines {
                        tr {
                            td { code { (l.group) } }
                            td.num { (format::count(l.requests)) }
                            td.num { (format::count(l.input_tokens)) }
                            td.num { (format::count(l.cached_tokens)) }
                            td.num { (format::count(l.cache_write_tokens)) }
                            td.num { (format::count(l.output_tokens)) }
                            td.num { (format::credits(l.cost)) }
                        }
                    }
                }
            } }
        }
    }
}

/// The per-request table (also on the dashboard).
pub(crate) fn requests_table(t: &Text, rows: &[UsageRow], tz: i32) -> Markup {
    html! {
        div.table-wrap { table.requests {
            thead { tr {
                th { (t.col_time) } th { (t.key_word) } th { (t.col_model) } th { (t.col_endpoint) } th { (t.col_status) }
                th.num { (t.col_input) } th.num { (t.col_cached) } th.num { (t.col_cache_write) } th.num { (t.col_output) }
                th.num { (t.col_cost) } th.num { (t.col_latency) }
            } }
            tbody {
                @for r in rows {
                    tr {
                        td.nowrap title=(r.request_id) { (format::time(r.created_at, tz)) }
                        td.nowrap { (r.key_name.as_deref().filter(|n| !n.is_empty()).or(r.key_prefix.as_deref()).unwrap_or("-")) }
                        td { code { (r.model.as_deref().unwrap_or("-")) } }
                        td.nowrap { (r.endpoint) @if r.stream { " " span.pill { (t.stream_word) } } }
                        td { span class=(status_class(r.status)) { (r.status) } }
                        td.num { (format::count(r.input_tokens)) }
                        td.num { (format::count(r.cached_tokens)) }
                        td.num { (format::count(r.cache_write_tokens)) }
                        td.num title=(format!("{} {}", t.reasoning, r.reasoning_tokens)) { (format::count(r.output_tokens)) }
                        td.num { (format::credits(r.cost)) @if r.estimated { "*" } }
                        td.num title=[r.ttfb_ms.map(|f| format!("{} {}", t.first_token, format::duration_ms(f)))] {
                            (format::duration_ms(r.latency_ms))
                        }
                    }
                }
            }
        } }
        @if rows.iter().any(|r| r.estimated) { p.sub { "* " (t.estimated_note) } }
    }
}

fn status_class(status: i64) -> &'static str {
    match status {
        200..=299 => "pill ok",
        400..=499 => "pill warn",
        _ => "pill bad",
    }
}

/// `GET /console/usage.csv`: the rows of the current filters, newest first,
/// read and sent in chunks so a long history never sits in memory.
pub(super) async fn csv(env: &Env<'_>, viewer: &Viewer) -> Response {
    let tz = env.app.config.billing.utc_offset_secs;
    let q = Query::parse(env);
    let filter = q.filter(viewer.user_id, tz);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let pool = env.app.db.clone();
    tokio::spawn(async move {
        let header = "time,request_id,key,model,endpoint,status,input_tokens,cached_tokens,cache_write_tokens,output_tokens,reasoning_tokens,cost,latency_ms,ttfb_ms,stream,estimated,billed_to\n";
        if tx.send(Bytes::from_static(header.as_bytes())).await.is_err() {
            return;
        }
        let mut before = None;
        loop {
            let f = filter.clone();
            let rows = match pool.run(move |c| usage::page(c, &f, before, EXPORT_CHUNK)).await {
                Ok(r) => r,
                Err(e) => {
                    log::error!("usage export failed: {e}");
                    return;
                }
            };
            let Some(last) = rows.last() else { return };
            before = Some(Cursor::of(last));
            let chunk: String = rows.iter().map(csv_line).collect();
            if tx.send(Bytes::from(chunk)).await.is_err() || (rows.len() as i64) < EXPORT_CHUNK {
                return;
            }
        }
    });
    let name = format!("usage-{}-{}.csv", q.from, q.to);
    Response::stream("text/csv; charset=utf-8", rx)
        .header("content-disposition", format!("attachment; filename=\"{name}\""))
        .header("cache-control", "no-store")
}

fn csv_line(r: &UsageRow) -> String {
    let time = crate::access_log::timestamp(r.created_at);
    let key = r.key_prefix.clone().unwrap_or_default();
    format!(
        "{time},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        csv_field(&r.request_id),
        csv_field(&key),
        csv_field(r.model.as_deref().unwrap_or("")),
        csv_field(&r.endpoint),
        r.status,
        r.input_tokens,
        r.cached_tokens,
        r.cache_write_tokens,
        r.output_tokens,
        r.reasoning_tokens,
        crate::config::units::format_credits(r.cost),
        r.latency_ms,
        r.ttfb_ms.map(|v| v.to_string()).unwrap_or_default(),
        r.stream,
        r.estimated,
        csv_field(r.billed_to.as_deref().unwrap_or("")),
    )
}

/// Quotes a CSV field when needed, and defuses spreadsheet formulas.
pub(crate) fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_safe() {
        assert_eq!(csv_field("gpt-4o"), "gpt-4o");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }

    #[test]
    fn short_counts() {
        assert_eq!(short_count(0.0), "0");
        assert_eq!(short_count(1500.0), "1.5k");
        assert_eq!(short_count(2_500_000.0), "2.5M");
    }
}
