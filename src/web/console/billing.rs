//! The Buy credits page: the operator's shop link and instructions when
//! configured (`console.purchase_url`, `console.purchase_note`); otherwise
//! how to get credits here.

use super::dashboard::live;
use super::Viewer;
use crate::web::format;
use crate::web::response::Response;
use crate::web::Env;
use maud::html;

pub(super) async fn page(env: &Env<'_>, viewer: &Viewer) -> Response {
    let t = env.t;
    let c = env.console();
    let v = live(env, viewer).view;
    let content = html! {
        h1 { (t.console_buy) }
        div.cards {
            div.card { h2 { (t.balance) } div.stat { (format::credits(v.balance)) } }
        }
        div.card {
            @match (&c.purchase_url, &c.purchase_note) {
                (None, None) => {
                    h2 { (t.buy_how_title) }
                    p { (t.buy_none) }
                    p { a.btn href="/console/redeem" { (t.console_redeem) } }
                }
                (url, note) => {
                    h2 { (t.buy_title) }
                    @if let Some(n) = note { @for para in n.split("\n\n") { p { (para) } } }
                    @if let Some(u) = url {
                        p { a.btn href=(u) target="_blank" rel="noopener noreferrer" { (t.buy_button) " ↗" } }
                    }
                    p.sub { (t.buy_then_redeem) " " a href="/console/redeem" { (t.console_redeem) } }
                }
            }
        }
        p.sub { (t.buy_pricing) " " a href="/docs/models" { (t.docs_models) } }
    };
    Response::html(200, super::frame(env, viewer, t.console_buy, content))
}
