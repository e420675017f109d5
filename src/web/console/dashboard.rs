//! The dashboard (balance, plan, limits, today's usage, the last requests)
//! and the Models page (what this user may call, at what price).

use super::usage::requests_table;
use super::{frame, server_error, Viewer};
use crate::billing::AccountView;
use crate::config::{Config, PlanConfig};
use crate::limits;
use crate::store::usage::{self, GroupBy, UsageFilter, UsageLine, UsageRow};
use crate::store::StoreError;
use crate::web::chart::meter;
use crate::web::docs::{price_table, utc_offset_label};
use crate::web::format;
use crate::web::layout::notice;
use crate::web::response::Response;
use crate::web::Env;
use maud::html;

/// The user's live account (balance, plan, limits), from memory.
pub(crate) struct Live {
    pub view: AccountView,
    /// The running plan and when it ends.
    pub plan: Option<(PlanConfig, i64)>,
}

pub(crate) fn live(env: &Env, viewer: &Viewer) -> Live {
    let now = env.now();
    let dir = env.app.accounts.snapshot();
    match dir.user(viewer.user_id) {
        Some(u) => Live {
            view: env.app.billing.view(u),
            plan: u.active_plan(&env.app.config, now).map(|(s, p)| (p.clone(), s.expires_at)),
        },
        // Not loaded yet (created this instant): nothing to show but limits.
        None => Live {
            view: AccountView {
                balance: 0,
                spent: 0,
                reserved: 0,
                plan_used_today: 0,
                inflight: 0,
                concurrency_limit: env.app.config.billing.default_concurrency,
                next_reset_ms: env.app.billing.days().next_reset(now),
            },
            plan: None,
        },
    }
}

pub(super) async fn page_data(env: &Env<'_>, viewer: &Viewer) -> Result<(Vec<UsageLine>, Vec<UsageRow>), StoreError> {
    let today = env.app.billing.days().start_of_day(env.now());
    let user_id = viewer.user_id;
    env.app
        .db
        .run(move |c| {
            let mine = UsageFilter { user_id: Some(user_id), ..Default::default() };
            let today = usage::report(c, &UsageFilter { since_ms: Some(today), ..mine.clone() }, GroupBy::User, 0)?;
            let recent = usage::page(c, &mine, None, 10)?;
            Ok((today, recent))
        })
        .await
}

pub(super) async fn page(env: &Env<'_>, viewer: &Viewer) -> Response {
    let t = env.t;
    let (today, recent) = match page_data(env, viewer).await {
        Ok(d) => d,
        Err(e) => return server_error(env, &e),
    };
    let live = live(env, viewer);
    let v = &live.view;
    let tz = env.app.config.billing.utc_offset_secs;
    let (today_requests, today_cost) = today.first().map_or((0, 0), |l| (l.requests, l.cost));
    let available = (v.balance - v.reserved).max(0);
    let welcome = super::done_notice(env, &[("welcome", t.welcome)]);
    let nothing_to_spend = live.plan.is_none() && available == 0;
    let content = html! {
        h1 { (t.console_dashboard) }
        @if let Some(w) = welcome { (w) }
        @if nothing_to_spend {
            div.note.warn {
                p { (t.no_credits_warning) }
                p { a.btn.small href="/console/redeem" { (t.console_redeem) } " " a.btn.small.ghost href="/console/billing" { (t.console_buy) } }
            }
        }
        div.cards {
            div.card #balance {
                h2 { (t.balance) }
                div.stat { (format::credits(v.balance)) }
                div.sub { (t.reserved) ": " (format::credits(v.reserved)) " · " (t.available) ": " (format::credits(available)) }
            }
            div.card #plan {
                h2 { (t.plan) }
                @match &live.plan {
                    Some((p, expires)) => {
                        div.stat { (p.name) }
                        div.sub { (t.plan_expires) " " (format::time(*expires, tz)) }
                        @let left = (p.daily_quota - v.plan_used_today).max(0);
                        (meter(v.plan_used_today as f64 / p.daily_quota.max(1) as f64))
                        div.sub {
                            (t.quota_today) ": " (format::credits(v.plan_used_today)) " / " (format::credits(p.daily_quota))
                            " · " (t.quota_left) " " (format::credits(left))
                        }
                        div.sub { (t.quota_resets) " " (format::time(v.next_reset_ms, tz)) " (" (utc_offset_label(tz)) ")" }
                    }
                    None => {
                        div.stat { (t.no_plan) }
                        div.sub { (t.no_plan_hint) }
                    }
                }
            }
            div.card #limits {
                h2 { (t.limits) }
                div.stat { (v.inflight) " / " (v.concurrency_limit) }
                div.sub { (t.concurrency_hint) }
                @if let Some(rpm) = live.plan.as_ref().and_then(|(p, _)| p.requests_per_minute) {
                    div.sub { (t.rpm_limit.replace("{n}", &rpm.to_string())) }
                }
            }
            div.card #today {
                h2 { (t.today) }
                div.stat { (format::credits(today_cost)) }
                div.sub { (format::count(today_requests)) " " (t.requests_word) }
            }
        }
        div.actions {
            a.btn href="/console/keys" { (t.create_key) }
            a.btn.ghost href="/console/redeem" { (t.console_redeem) }
            a.btn.ghost href="/" { (t.read_docs) }
        }
        h2 { (t.recent_requests) }
        @if recent.is_empty() {
            p.muted { (t.no_requests_yet) " " a href="/" { (t.read_docs) } }
        } @else {
            (requests_table(t, &recent, tz))
            p { a href="/console/usage" { (t.all_usage) " →" } }
        }
    };
    Response::html(200, frame(env, viewer, t.console_dashboard, content))
}

/// The models this user's plan allows and the gateway serves.
pub(crate) fn allowed_models<'c>(
    cfg: &'c Config,
    plan: Option<&PlanConfig>,
    served: &dyn Fn(&str) -> bool,
) -> Vec<&'c crate::config::ModelConfig> {
    cfg.models.iter().filter(|m| served(&m.id) && plan.is_none_or(|p| limits::plan_allows(p, &m.id))).collect()
}

pub(super) async fn models(env: &Env<'_>, viewer: &Viewer) -> Response {
    let t = env.t;
    let live = live(env, viewer);
    let plan = live.plan.as_ref().map(|(p, _)| p);
    let channels = &env.app.channels;
    let allowed = allowed_models(&env.app.config, plan, &|m| channels.serves_model(m));
    let served = env.app.config.models.iter().filter(|m| channels.serves_model(&m.id)).count();
    let content = html! {
        h1 { (t.console_models) }
        p.muted { (t.models_lead) }
        @if allowed.len() < served {
            (notice("warn", &t.models_limited.replace("{n}", &(served - allowed.len()).to_string())))
        }
        (price_table(t, &allowed))
        p.sub { (t.models_api_hint) " " a href="/docs/models" { (t.docs_models) } }
    };
    Response::html(200, frame(env, viewer, t.console_models, content))
}
