//! The API Keys page: create a key (name, optional expiry, optional model
//! list), see it once with ready-made cc-switch import links, and list,
//! disable, enable or delete keys.

use super::dashboard::{allowed_models, live};
use super::{csrf_field, frame, once_field, server_error, Viewer};
use crate::accounts::ops::{KeyError, KeySpec, Ops};
use crate::store::accounts::{self as sql, KeyRow};
use crate::store::kinds::Switch;
use crate::store::usage::{self, GroupBy, UsageFilter, UsageLine};
use crate::store::StoreError;
use crate::web::ccswitch::{self, DeepLink};
use crate::web::docs::ExampleModels;
use crate::web::format;
use crate::web::i18n::Text;
use crate::web::layout::notice;
use crate::web::response::Response;
use crate::web::Env;
use chrono::NaiveDate;
use maud::{html, Markup};

/// Longest key name.
const MAX_NAME_CHARS: usize = 64;
const ACTOR: &str = "console";

/// A key just created: its row and the plaintext, shown on this response only.
struct Created {
    row: KeyRow,
    plaintext: String,
}

pub(super) async fn page(env: &Env<'_>, viewer: &Viewer) -> Response {
    render(env, viewer, 200, None, None).await
}

async fn render(
    env: &Env<'_>,
    viewer: &Viewer,
    status: u16,
    created: Option<Created>,
    problem: Option<String>,
) -> Response {
    let t = env.t;
    let user_id = viewer.user_id;
    let today = env.app.billing.days().start_of_day(env.now());
    let listed = env
        .app
        .db
        .run(move |c| {
            let keys = sql::list_keys(c, Some(user_id))?;
            let mine = UsageFilter { user_id: Some(user_id), ..Default::default() };
            let total = usage::report(c, &mine, GroupBy::Key, 0)?;
            let today = usage::report(c, &UsageFilter { since_ms: Some(today), ..mine }, GroupBy::Key, 0)?;
            Ok::<_, StoreError>((keys, Spend::of(&today), Spend::of(&total)))
        })
        .await;
    let (keys, today, total) = match listed {
        Ok((k, today, total)) => (k.into_iter().filter(|k| k.deleted_at.is_none()).collect::<Vec<_>>(), today, total),
        Err(e) => return server_error(env, &e),
    };
    let live = live(env, viewer);
    let channels = &env.app.channels;
    let models = allowed_models(&env.app.config, live.plan.as_ref().map(|(p, _)| p), &|m| channels.serves_model(m));
    let model_ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    let done = super::done_notice(
        env,
        &[("enabled", t.key_enabled), ("disabled", t.key_disabled), ("deleted", t.key_deleted)],
    );
    let limit = env.console().max_keys_per_user;
    let content = html! {
        h1 { (t.console_keys) }
        @if let Some(d) = done { (d) }
        @if let Some(p) = &problem { (notice("bad", p)) }
        @if let Some(c) = &created { (created_panel(env, c, &models)) }
        div.card {
            h2 { (t.create_key) }
            @if keys.len() as u32 >= limit {
                p.muted { (t.key_limit_reached.replace("{n}", &limit.to_string())) }
            } @else {
                (create_form(t, viewer, &model_ids))
            }
        }
        h2 { (t.your_keys) " " span.sub { "(" (keys.len()) " / " (limit) ")" } }
        @if keys.is_empty() {
            p.muted { (t.no_keys) }
        } @else {
            (key_table(env, viewer, &keys, &today, &total))
        }
    };
    Response::html(status, frame(env, viewer, t.console_keys, content))
}

fn create_form(t: &Text, viewer: &Viewer, models: &[&str]) -> Markup {
    html! {
        form.stack method="post" action="/console/keys" {
            (csrf_field(viewer))
            (once_field())
            label { (t.key_name) span.hint { (t.key_name_hint) } input type="text" name="name" maxlength=(MAX_NAME_CHARS) placeholder="laptop"; }
            div.row {
                label {
                    (t.expires)
                    select name="expires" {
                        option value="never" { (t.never) }
                        option value="7d" { (t.days_7) }
                        option value="30d" { (t.days_30) }
                        option value="90d" { (t.days_90) }
                        option value="365d" { (t.days_365) }
                    }
                }
                label { (t.expires_on) input type="date" name="expires_on"; }
            }
            @if !models.is_empty() {
                fieldset {
                    legend { (t.limit_models) }
                    p.sub { (t.limit_models_hint) }
                    div.checks {
                        @for m in models {
                            label { input type="checkbox" name="models" value=(m); code { (m) } }
                        }
                    }
                }
            }
            div { button type="submit" { (t.create_key) } }
        }
    }
}

fn created_panel(env: &Env, c: &Created, allowed: &[&crate::config::ModelConfig]) -> Markup {
    let t = env.t;
    // Links and examples name a model this key may use.
    let usable: Vec<&crate::config::ModelConfig> = match &c.row.allowed_models {
        Some(list) => allowed.iter().copied().filter(|m| list.contains(&m.id)).collect(),
        None => allowed.to_vec(),
    };
    let ex = ExampleModels::pick(&usable);
    let site = &env.app.config.console.site_name;
    html! {
        section.key-once #new-key {
            h2 { (t.key_created) }
            p { strong { (t.key_once_warning) } }
            div.secret {
                code #new-key-value { (c.plaintext) }
                button type="button" data-copy="#new-key-value" data-done=(t.copied) { (t.copy_key) }
            }
            p.sub { (t.deeplink_lead) " " a href="/docs/cc-switch" { (t.what_is_ccswitch) } }
            div.deeplinks {
                span.label { (t.import_into) }
                @for app in ccswitch::App::ALL {
                    @let model = match app { ccswitch::App::Claude => &ex.claude, ccswitch::App::Codex => &ex.codex, _ => &ex.chat };
                    @let link = DeepLink { app, site, urls: &env.urls, key: &c.plaintext, model }.url();
                    a.btn.ghost.small href=(link) data-app=(app.param()) { (app.label()) }
                }
            }
            details {
                summary { (t.env_snippet) }
                pre { code { "export OPENAI_BASE_URL=" (env.urls.api) "\nexport OPENAI_API_KEY=" (c.plaintext)
                    "\nexport ANTHROPIC_BASE_URL=" (env.urls.root) "\nexport ANTHROPIC_AUTH_TOKEN=" (c.plaintext) } }
            }
        }
    }
}

/// Credits spent per key (by its display prefix).
struct Spend(std::collections::HashMap<String, i64>);

impl Spend {
    fn of(lines: &[UsageLine]) -> Spend {
        Spend(lines.iter().map(|l| (l.group.clone(), l.cost)).collect())
    }
    fn get(&self, k: &KeyRow) -> i64 {
        self.0.get(&k.prefix()).copied().unwrap_or(0)
    }
}

fn key_table(env: &Env, viewer: &Viewer, keys: &[KeyRow], today: &Spend, total: &Spend) -> Markup {
    let t = env.t;
    let tz = env.app.config.billing.utc_offset_secs;
    let now = env.now();
    html! {
        div.table-wrap { table.keys {
            thead { tr {
                th { (t.key_name) } th { (t.key_word) } th { (t.col_status) } th { (t.created) }
                th { (t.last_used) } th { (t.expires) } th { (t.models_word) }
                th.num { (t.cost_today) } th.num { (t.cost_total) } th { }
            } }
            tbody {
                @for k in keys {
                    @let expired = k.expires_at.is_some_and(|e| e <= now);
                    tr data-key-id=(k.id) {
                        td { @if k.name.is_empty() { span.muted { "—" } } @else { (k.name) } }
                        td.nowrap { code { (k.prefix()) "…" } }
                        td {
                            @if k.status != Switch::Active { span.pill.bad { (t.status_disabled) } }
                            @else if expired { span.pill.warn { (t.status_expired) } }
                            @else { span.pill.ok { (t.status_active) } }
                        }
                        td.nowrap { (format::date(k.created_at, tz)) }
                        td.nowrap { (k.last_used_at.map(|l| format::time(l, tz)).unwrap_or_else(|| t.never_used.to_string())) }
                        td.nowrap { (k.expires_at.map(|e| format::date(e, tz)).unwrap_or_else(|| t.never.to_string())) }
                        td { @match &k.allowed_models { Some(m) => { span.mono { (m.join(", ")) } } None => { span.muted { (t.all_models) } } } }
                        td.num { (format::credits(today.get(k))) }
                        td.num { (format::credits(total.get(k))) }
                        td { div.actions {
                            @let (action, label) = if k.status == Switch::Active { ("disable", t.disable) } else { ("enable", t.enable) };
                            form.inline method="post" action=(format!("/console/keys/{}/{action}", k.id)) {
                                (csrf_field(viewer)) button.ghost.small type="submit" { (label) }
                            }
                            form.inline method="post" action=(format!("/console/keys/{}/delete", k.id)) data-confirm=(t.delete_confirm) {
                                (csrf_field(viewer)) button.danger.small type="submit" { (t.delete) }
                            }
                        } }
                    }
                }
            }
        } }
    }
}

/// What the creation form asks for, validated.
fn read_spec(env: &Env, allowed: &[&str]) -> Result<KeySpec, String> {
    let t = env.t;
    let form = env.req.form();
    let name = form.get("name").unwrap_or("").to_string();
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(t.key_name_invalid.replace("{n}", &MAX_NAME_CHARS.to_string()));
    }
    let now = env.now();
    let tz = env.app.config.billing.utc_offset_secs;
    let expires_at = match (form.get("expires_on"), form.get("expires").unwrap_or("never")) {
        (Some(d), _) => {
            let day = NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| t.bad_date.to_string())?;
            // The key works through the whole chosen day.
            let end = day.succ_opt().and_then(|n| n.and_hms_opt(0, 0, 0)).map(|n| n.and_utc().timestamp_millis());
            let end = end.ok_or_else(|| t.bad_date.to_string())? - tz as i64 * 1000;
            if end <= now {
                return Err(t.expiry_in_past.to_string());
            }
            Some(end)
        }
        (None, "never") => None,
        (None, span @ ("7d" | "30d" | "90d" | "365d")) => {
            let days: i64 = span.trim_end_matches('d').parse().unwrap_or(0);
            Some(now + days * 86_400_000)
        }
        (None, _) => return Err(t.bad_filter.to_string()),
    };
    let chosen = form.all("models");
    if chosen.len() > allowed.len() || chosen.iter().any(|m| !allowed.contains(m)) {
        return Err(t.model_not_offered.to_string());
    }
    let models = (!chosen.is_empty()).then(|| chosen.iter().map(|m| m.to_string()).collect());
    Ok(KeySpec { name, expires_at, models })
}

pub(super) async fn create(env: &Env<'_>, viewer: &Viewer) -> Response {
    let t = env.t;
    let live = live(env, viewer);
    let channels = &env.app.channels;
    let models = allowed_models(&env.app.config, live.plan.as_ref().map(|(p, _)| p), &|m| channels.serves_model(m));
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    let spec = match read_spec(env, &ids) {
        Ok(s) => s,
        Err(msg) => return render(env, viewer, 400, None, Some(msg)).await,
    };
    let Some(once) = env.req.form().get("once").map(str::to_string) else {
        return render(env, viewer, 400, None, Some(t.form_expired.to_string())).await;
    };
    let (cfg, user_id, limit) = (env.app.config.clone(), viewer.user_id, env.console().max_keys_per_user);
    let result = env
        .app
        .db
        .run(move |c| {
            let ops = Ops { conn: c, cfg: &cfg, actor: ACTOR };
            Ok::<_, StoreError>(ops.create_user_key(user_id, &spec, Some(limit), Some(&once)))
        })
        .await;
    match result {
        Err(e) | Ok(Err(KeyError::Store(e))) => server_error(env, &e),
        Ok(Err(KeyError::LimitReached)) => {
            render(env, viewer, 409, None, Some(t.key_limit_reached.replace("{n}", &limit.to_string()))).await
        }
        Ok(Err(KeyError::AlreadySubmitted)) => {
            render(env, viewer, 409, None, Some(t.already_submitted.to_string())).await
        }
        Ok(Ok((row, plaintext))) => {
            // The key works the moment the user sees it.
            env.app.writer.flush().await;
            render(env, viewer, 201, Some(Created { row, plaintext }), None).await
        }
    }
}

/// Enables, disables or deletes one of the viewer's keys.
pub(super) async fn change(env: &Env<'_>, viewer: &Viewer, id: &str, action: &str) -> Response {
    let Ok(key_id) = id.parse::<i64>() else { return super::super::not_found(env) };
    let (cfg, user_id, action_owned) = (env.app.config.clone(), viewer.user_id, action.to_string());
    let result = env
        .app
        .db
        .run(move |c| {
            let ops = Ops { conn: c, cfg: &cfg, actor: ACTOR };
            ops.owned_key(user_id, key_id)?;
            match action_owned.as_str() {
                "enable" => ops.set_key_active(key_id, true).map(|_| ()),
                "disable" => ops.set_key_active(key_id, false).map(|_| ()),
                _ => ops.delete_key(key_id),
            }
        })
        .await;
    match result {
        Ok(()) => {
            env.app.writer.flush().await;
            let done = match action {
                "enable" => "enabled",
                "disable" => "disabled",
                _ => "deleted",
            };
            Response::redirect(&format!("/console/keys?done={done}"))
        }
        Err(StoreError::NoSuchKey(_)) => super::super::not_found(env),
        Err(e) => server_error(env, &e),
    }
}
