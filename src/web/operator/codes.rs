//! Redemption codes: create a batch (credits or a plan, uses, expiry), see
//! it once with a TXT and a CSV download, list and disable codes.
//!
//! A new batch's codes exist in plaintext only in this process's memory,
//! for ten minutes, and each download format can be fetched once: the
//! database holds their hashes, as it always has.

use super::{after, api, enc, failed_page, failure, frame, ApiFailure, Operator};
use crate::web::response::Response;
use crate::web::Env;
use maud::html;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;

/// How long a batch can be downloaded.
const KEEP_MS: i64 = 600_000;

struct Batch {
    codes: Vec<String>,
    grant: String,
    created_at: i64,
    served: Vec<&'static str>,
}

/// New batches waiting to be downloaded, by a random token.
#[derive(Default)]
pub struct Downloads {
    batches: Mutex<HashMap<String, Batch>>,
}

impl Downloads {
    fn keep(&self, codes: Vec<String>, grant: String, now: i64) -> String {
        let token = crate::web::session::new_token();
        let mut b = self.batches.lock();
        b.retain(|_, v| now - v.created_at < KEEP_MS);
        b.insert(token.clone(), Batch { codes, grant, created_at: now, served: Vec::new() });
        token
    }

    /// The file of a batch in `format`, once.
    fn take(&self, token: &str, format: &'static str, now: i64) -> Option<String> {
        let mut b = self.batches.lock();
        b.retain(|_, v| now - v.created_at < KEEP_MS);
        let batch = b.get_mut(token)?;
        if batch.served.contains(&format) {
            return None;
        }
        batch.served.push(format);
        Some(match format {
            "csv" => {
                let mut out = String::from("code,grant\n");
                for c in &batch.codes {
                    out.push_str(&format!("{c},{}\n", batch.grant));
                }
                out
            }
            _ => batch.codes.iter().map(|c| format!("{c}\n")).collect(),
        })
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub(super) async fn list(env: &Env<'_>, op: &Operator, problem: Option<ApiFailure>) -> Response {
    let t = env.t;
    let status = env.req.param_nonempty("status").unwrap_or_default();
    let batch = env.req.param_nonempty("batch").unwrap_or_default();
    let after_id = env.req.param_nonempty("after").unwrap_or_default();
    let target =
        format!("/admin/codes?limit=100&status={}&batch={}&after={}", enc(&status), enc(&batch), enc(&after_id));
    let v = match api(env, op, "GET", &target, None).await {
        Ok(v) => v,
        Err(f) => return failed_page(env, op, t.op_codes, &f),
    };
    let plans = api(env, op, "GET", "/admin/plans", None).await.unwrap_or_default();
    let codes = v["codes"].as_array().cloned().unwrap_or_default();
    let done = super::done_notice(env);
    let code = problem.as_ref().map_or(200, |f| f.status.max(400));
    let content = html! {
        h1 { (t.op_codes) }
        @if let Some(d) = done { (d) }
        @if let Some(f) = &problem { (failure(f)) }
        div.card {
            h2 { (t.op_new_batch) }
            form.stack.wide method="post" action="/codes" {
                input type="hidden" name="csrf" value=(op.csrf);
                div.row {
                    label { (t.op_grant) select name="grant" {
                        option value="credits" { (t.op_grant_credits) }
                        @for p in plans["plans"].as_array().into_iter().flatten() { option value=(format!("plan:{}", s(&p["id"]))) { (t.plan) " " (s(&p["name"])) } }
                    } }
                    label { (t.op_credits_each) input type="text" name="credits" placeholder="10"; }
                }
                div.row {
                    label { (t.op_count) input type="number" name="count" min="1" max="10000" value="10" required; }
                    label title=(t.op_uses_hint) { (t.op_uses) input type="number" name="uses" min="1" value="1" required; }
                    label { (t.op_expires_on) input type="date" name="expires"; }
                }
                div { button type="submit" { (t.op_create_batch) } }
            }
        }
        form.filters method="get" action="/codes" {
            label { (t.col_status) select name="status" {
                option value="" { (t.op_any) }
                @for st in ["active", "disabled"] { option value=(st) selected[status == st] { (st) } }
            } }
            label { (t.op_batch) input type="text" name="batch" value=(batch); }
            button.ghost type="submit" { (t.apply) }
        }
        @if codes.is_empty() { p.muted { (t.op_no_codes) } } @else {
            div.table-wrap { table.codes {
                thead { tr { th { (t.code_label) } th { (t.op_grant) } th.num { (t.op_uses) } th { (t.expires) } th { (t.col_status) } th { (t.op_batch) } th {} } }
                tbody { @for c in &codes { tr data-code-id=(c["id"]) {
                    td { code { (s(&c["prefix"])) "…" } }
                    td { @if s(&c["kind"]) == "plan" { (t.plan) " " (s(&c["plan_id"])) } @else { (crate::web::format::credits(c["credits"].as_i64().unwrap_or(0))) " " (t.op_credits_unit) } }
                    td.num { (c["uses"]) " / " (c["max_uses"]) }
                    td.nowrap { @match c["expires_at"].as_i64() { Some(e) => { (crate::web::format::date(e, env.app.config.billing.utc_offset_secs)) } None => { (t.never) } } }
                    td { @if s(&c["status"]) == "active" { span.pill.ok { (t.status_active) } } @else { span.pill.bad { (t.status_disabled) } } }
                    td.mono { a href=(format!("/codes?batch={}", enc(s(&c["batch"])))) { (s(&c["batch"])) } }
                    td { @if s(&c["status"]) == "active" {
                        form.inline method="post" action=(format!("/codes/{}/disable", c["id"])) { input type="hidden" name="csrf" value=(op.csrf); button.ghost.small type="submit" { (t.disable) } }
                    } }
                } } }
            } }
        }
        @if let Some(next) = v["next"].as_i64() {
            div.pager { a.btn.ghost.small href=(format!("/codes?status={}&batch={}&after={next}", enc(&status), enc(&batch))) { (t.op_next_page) " →" } }
        }
    };
    Response::html(code, frame(env, op, t.op_codes, content))
}

pub(super) async fn create(env: &Env<'_>, op: &Operator) -> Response {
    let t = env.t;
    let f = env.req.form();
    let number = |name: &str| f.get(name).and_then(|v| v.parse::<u64>().ok());
    let mut body = json!({"count": number("count"), "uses": number("uses")});
    let grant = match f.get("grant") {
        Some(g) if g.starts_with("plan:") => {
            body["plan"] = json!(&g[5..]);
            format!("plan {}", &g[5..])
        }
        _ => {
            body["credits"] = json!(f.get("credits").unwrap_or(""));
            format!("{} credits", f.get("credits").unwrap_or(""))
        }
    };
    if let Some(d) = f.get("expires") {
        body["expires_at"] = json!(d);
    }
    if body["count"].is_null() || body["uses"].is_null() {
        return list(env, op, Some(ApiFailure { status: 400, message: t.op_count_uses_required.into() })).await;
    }
    let codes = match api(env, op, "POST", "/admin/codes", Some(body)).await {
        Ok(Value::String(text)) => text.lines().map(str::to_string).collect::<Vec<_>>(),
        Ok(_) => Vec::new(),
        Err(f) => return list(env, op, Some(f)).await,
    };
    let token = env.site.code_downloads.keep(codes.clone(), grant.clone(), env.now());
    let content = html! {
        h1 { (t.op_batch_created) }
        div.key-once {
            h2 { (t.op_codes_once.replace("{n}", &codes.len().to_string())) }
            p { strong { (t.op_codes_once_warning) } }
            pre #new-codes { code { @for c in &codes { (c) "\n" } } }
            div.deeplinks {
                a.btn.small href=(format!("/codes/download/{token}.txt")) download { (t.op_download) " TXT" }
                a.btn.small.ghost href=(format!("/codes/download/{token}.csv")) download { (t.op_download) " CSV" }
            }
        }
        p { a href="/codes" { "← " (t.op_codes) } }
    };
    Response::html(201, frame(env, op, t.op_batch_created, content))
}

/// `GET /codes/download/{token}.txt|csv`: once per format.
pub(super) fn download(env: &Env, file: &str) -> Response {
    let (token, format) = match file.rsplit_once('.') {
        Some((t, "txt")) => (t, "txt"),
        Some((t, "csv")) => (t, "csv"),
        _ => return crate::web::not_found(env),
    };
    match env.site.code_downloads.take(token, format, env.now()) {
        Some(body) => {
            let kind = if format == "csv" { "text/csv; charset=utf-8" } else { "text/plain; charset=utf-8" };
            Response::new(200, kind, body)
                .header("content-disposition", format!("attachment; filename=\"codes.{format}\""))
                .header("cache-control", "no-store")
        }
        None => Response::text(410, env.t.op_download_gone),
    }
}

pub(super) async fn disable(env: &Env<'_>, op: &Operator, id: &str) -> Response {
    let result = api(env, op, "POST", &format!("/admin/codes/{}/disable", enc(id)), None).await;
    match after(result, "/codes", "disable") {
        Ok(r) => r,
        Err(f) => list(env, op, Some(f)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_download_once_per_format_and_expire() {
        let d = Downloads::default();
        let tok = d.keep(vec!["CPX-A".into(), "CPX-B".into()], "10 credits".into(), 0);
        assert_eq!(d.take(&tok, "txt", 1).as_deref(), Some("CPX-A\nCPX-B\n"));
        assert_eq!(d.take(&tok, "txt", 2), None, "once");
        assert_eq!(d.take(&tok, "csv", 3).as_deref(), Some("code,grant\nCPX-A,10 credits\nCPX-B,10 credits\n"));
        let late = d.keep(vec!["CPX-C".into()], "x".into(), 0);
        assert_eq!(d.take(&late, "txt", KEEP_MS), None, "forgotten after ten minutes");
        assert_eq!(d.take("nope", "txt", 0), None);
    }
}
