//! Channels: the live status `/admin/channels` reports, enable and disable,
//! and a test that sends one small real request through a channel.

use super::overview::status_class;
use super::{after, api, enc, failed_page, failure, frame, ApiFailure, Operator};
use crate::web::response::Response;
use crate::web::Env;
use maud::{html, Markup};
use serde_json::Value;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub(super) async fn list(env: &Env<'_>, op: &Operator, result: Option<Result<Markup, ApiFailure>>) -> Response {
    let t = env.t;
    let v = match api(env, op, "GET", "/admin/channels", None).await {
        Ok(v) => v,
        Err(f) => return failed_page(env, op, t.op_channels, &f),
    };
    let done = super::done_notice(env);
    let status = match &result {
        Some(Err(f)) => f.status.max(400),
        _ => 200,
    };
    let content = html! {
        h1 { (t.op_channels) }
        @if let Some(d) = done { (d) }
        @match &result { Some(Ok(m)) => { (m) } Some(Err(f)) => { (failure(f)) } None => {} }
        div.table-wrap { table.channels {
            thead { tr { th { (t.op_channel) } th { (t.op_kind) } th { (t.col_status) } th.num { (t.limits) } th { (t.models_word) } th { (t.op_last_error) } th {} } }
            tbody { @for c in v["channels"].as_array().into_iter().flatten() { tr data-channel=(s(&c["name"])) {
                td { strong { (s(&c["name"])) } br; span.sub.mono { (s(&c["base_url"])) } }
                td { (s(&c["kind"])) br; span.sub { (t.op_weight) " " (c["weight"]) " · " (t.op_priority) " " (c["priority"]) } }
                td { span class=(status_class(s(&c["status"]))) { (s(&c["status"])) } }
                td.num { (c["in_flight"]) }
                td { (models(&c["models"])) }
                td { span.sub { (c["last_error"].as_str().unwrap_or("—")) } }
                td { div.actions {
                    @let name = enc(s(&c["name"]));
                    @let disabled = c["disabled"].as_bool().unwrap_or(false);
                    form.inline method="post" action=(format!("/channels/{name}/{}", if disabled { "enable" } else { "disable" })) {
                        input type="hidden" name="csrf" value=(op.csrf);
                        @if disabled { button.ghost.small type="submit" { (t.enable) } } @else { button.danger.small type="submit" { (t.disable) } }
                    }
                    form.inline method="post" action=(format!("/channels/{name}/test")) {
                        input type="hidden" name="csrf" value=(op.csrf);
                        button.ghost.small type="submit" { (t.op_test) }
                    }
                } }
            } } }
        } }
    };
    Response::html(status, frame(env, op, t.op_channels, content))
}

pub(super) async fn act(env: &Env<'_>, op: &Operator, name: &str, action: &str) -> Response {
    let t = env.t;
    let path = format!("/admin/channels/{}/{action}", enc(name));
    match action {
        "enable" | "disable" => match after(api(env, op, "POST", &path, None).await, "/channels", action) {
            Ok(r) => r,
            Err(f) => list(env, op, Some(Err(f))).await,
        },
        "test" => {
            let outcome = api(env, op, "POST", &path, None).await.map(|r| {
                let ok = r["ok"].as_bool().unwrap_or(false);
                let status = r["status"].as_u64().map_or("—".to_string(), |s| s.to_string());
                let line = t
                    .op_test_result
                    .replace("{name}", name)
                    .replace("{model}", s(&r["model"]))
                    .replace("{status}", &status)
                    .replace("{ms}", &r["latency_ms"].to_string());
                html! {
                    div class=(if ok { "note ok" } else { "note bad" }) #test-result {
                        p { strong { @if ok { (t.op_test_ok) } @else { (t.op_test_failed) } } " " (line) }
                        pre { code { (s(&r["detail"])) } }
                    }
                }
            });
            list(env, op, Some(outcome)).await
        }
        _ => crate::web::not_found(env),
    }
}

/// The first few model names a channel serves, all of them in the tooltip.
fn models(models: &Value) -> Markup {
    let names: Vec<&str> = models.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
    let shown = names.iter().take(3).copied().collect::<Vec<_>>().join(", ");
    let more = names.len().saturating_sub(3);
    html! { span.sub title=(names.join("\n")) { (shown) @if more > 0 { " +" (more) } } }
}
