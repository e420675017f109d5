//! The audit trail (every operator action: who, when, what) and the
//! effective configuration, every secret redacted.

use super::{api, failed_page, frame, Operator};
use crate::web::i18n::Text;
use crate::web::response::Response;
use crate::web::Env;
use maud::html;
use serde_json::Value;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub(super) async fn audit(env: &Env<'_>, op: &Operator) -> Response {
    let t = env.t;
    let v = match api(env, op, "GET", "/admin/audit?limit=300", None).await {
        Ok(v) => v,
        Err(f) => return failed_page(env, op, t.op_audit, &f),
    };
    let content = html! {
        h1 { (t.op_audit) }
        p.muted { (t.op_audit_lead) }
        div.table-wrap { table.audit {
            thead { tr { th { (t.col_time) } th { (t.op_actor) } th { (t.op_action) } th { (t.op_target) } th { (t.op_detail) } } }
            tbody { @for e in v["entries"].as_array().into_iter().flatten() { tr {
                td.nowrap { (super::when(env, &e["created_at"])) }
                td { (s(&e["actor"])) } td { code { (s(&e["action"])) } } td { (s(&e["target"])) }
                td.mono { @match s(&e["detail"]) { "" | "{}" => { "—" } d => { (d) } } }
            } } }
        } }
    };
    Response::html(200, frame(env, op, t.op_audit, content))
}

pub(super) async fn settings(env: &Env<'_>, op: &Operator) -> Response {
    let t = env.t;
    let v = match api(env, op, "GET", "/admin/config", None).await {
        Ok(v) => v,
        Err(f) => return failed_page(env, op, t.op_settings, &f),
    };
    let plans = api(env, op, "GET", "/admin/plans", None).await.unwrap_or_default();
    let sum = &v["summary"];
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let content = html! {
        h1 { (t.op_settings) }
        p.muted { (t.op_settings_lead) " " (t.op_loaded_at) " " (super::when(env, &v["loaded_at"])) " (v" (v["version"]) ")." }
        @if v["last_reload"]["ok"] == false {
            div.note.warn {
                p { (t.op_reload_refused) }
                ul { @for e in list(&v["last_reload"]["errors"]) { li.mono { (s(&e)) } } }
            }
        }
        @if let Some(cl) = v["cluster"].as_object() {
            h2 { (t.op_cluster) }
            @if cl.get("redis").and_then(Value::as_str) == Some("up") {
                p #cluster-state { (t.op_cluster_redis_up) }
            } @else {
                div.note.warn { p #cluster-state { (t.op_cluster_redis_down) " " code { (s(&v["cluster"]["on_redis_down"])) } } }
            }
            p { (t.op_cluster_nodes) ": "
                @if v["cluster"]["nodes"].is_null() { span.muted { (t.op_cluster_nodes_unknown) } }
                @for (i, n) in list(&v["cluster"]["nodes"]).iter().enumerate() {
                    @if i > 0 { ", " }
                    code { (s(n)) }
                    @if n == &v["cluster"]["this_node"] { " (" (t.op_cluster_this_node) ")" }
                }
            }
        }
        @for sec in list(&sum["sections"]) {
            h2 { (s(&sec["title"])) }
            div.table-wrap { table.settings { tbody { @for kv in list(&sec["settings"]) { tr {
                th.mono { (s(&kv[0])) }
                td { @match &kv[1] { Value::String(x) => { (x) } other => { (other.to_string()) } } }
            } } } } }
        }
        h2 { (t.op_plans) }
        div.table-wrap { table { thead { tr { th { "id" } th { (t.plan) } th.num { (t.op_daily_quota) } th.num { (t.op_concurrency) } th.num { "RPM" } th.num { (t.op_days) } th { (t.models_word) } } }
            tbody { @for p in list(&plans["plans"]) { tr {
                td.mono { (s(&p["id"])) } td { (s(&p["name"])) } td.num { (s(&p["daily_quota"])) }
                td.num { (num_or_dash(&p["concurrency"])) } td.num { (num_or_dash(&p["requests_per_minute"])) } td.num { (p["duration_days"]) }
                td.sub { (model_rules(t, &p)) }
            } } } } }
        h2 { (t.models_word) }
        p.sub { (t.op_prices_per_million) }
        div.table-wrap { table { thead { tr { th { (t.col_model) } th.num { (t.col_input) } th.num { (t.col_cached) } th.num { (t.col_cache_write) } th.num { (t.col_output) } } }
            tbody { @for m in list(&sum["models"]) { tr {
                td.mono { (s(&m["id"])) } td.num { (s(&m["input"])) } td.num { (s(&m["cached_input"])) } td.num { (s(&m["cache_write"])) } td.num { (s(&m["output"])) }
            } } } } }
        @let packages = list(&sum["packages"]);
        @if !packages.is_empty() {
            h2 { (t.op_packages) }
            div.table-wrap { table { thead { tr { th { "id" } th { (t.op_package_name) } th { (t.op_grant) } th { (t.col_amount) } } }
                tbody { @for k in &packages { tr { td.mono { (s(&k["id"])) } td { (s(&k["name"])) } td { (s(&k["grant"])) } td { (s(&k["prices"])) } } } } } }
        }
        details { summary { (t.op_raw_config) } pre #config { code { (s(&v["effective"])) } } }
    };
    Response::html(200, frame(env, op, t.op_settings, content))
}

fn num_or_dash(v: &Value) -> String {
    v.as_u64().map_or("—".to_string(), |n| n.to_string())
}

/// A plan's allowed and blocked model patterns in one line.
fn model_rules(t: &Text, p: &Value) -> String {
    let join = |k: &str| p[k].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
    let allowed = join("allowed_models").filter(|a| !a.is_empty()).unwrap_or_else(|| t.all_models.to_string());
    match join("blocked_models").filter(|b| !b.is_empty()) {
        Some(blocked) => format!("{allowed} · {} {blocked}", t.op_except),
        None => allowed,
    }
}
