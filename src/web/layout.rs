//! The page shell every website page shares: head, top bar with the language
//! switch, the docs and console sidebars, and the footer.

use super::assets;
use super::i18n::{Lang, Text};
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// The two base URLs clients are given: the OpenAI-style one ends in `/v1`,
/// the Anthropic-style one is the site root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrls {
    pub root: String,
    pub api: String,
}

impl BaseUrls {
    pub fn from_root(root: &str) -> BaseUrls {
        let root = root.trim_end_matches('/').to_string();
        BaseUrls { api: format!("{root}/v1"), root }
    }
}

/// What every page render needs to know about the request.
pub struct Page<'a> {
    pub lang: Lang,
    pub t: &'static Text,
    pub site: &'a str,
    pub urls: &'a BaseUrls,
    /// The request path, for the active navigation entry and the language switch.
    pub path: &'a str,
    /// The signed-in user's email, when there is a session.
    pub user: Option<&'a str>,
    /// On the admin listener, where only operator pages exist.
    pub operator: bool,
}

/// Which top-level part of the site a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Docs,
    Pricing,
    Console,
    Auth,
    /// The operator console (on the admin listener).
    Operator,
}

/// A complete HTML document around `body`.
pub fn document(p: &Page, title: &str, section: Section, body: Markup) -> Markup {
    let t = p.t;
    let section = if p.operator { Section::Operator } else { section };
    let full_title = if title.is_empty() { p.site.to_string() } else { format!("{title} · {}", p.site) };
    html! {
        (DOCTYPE)
        html lang=(p.lang.tag()) data-copy-label=(t.copy) data-copied-label=(t.copied) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (full_title) }
                link rel="icon" type="image/svg+xml" href=(assets::url("logo.svg"));
                link rel="stylesheet" href=(assets::url("site.css"));
                script src=(assets::url("site.js")) defer {}
            }
            body {
                (top_bar(p, section))
                (body)
                @if section != Section::Operator { footer.foot {
                    div.foot-in {
                        span { "© " (p.site) }
                        a href="/" { (t.nav_docs) }
                        a href="/docs/models" { (t.nav_pricing) }
                        a href="/docs/errors" { (t.docs_errors) }
                        a href="/console/dashboard" { (t.nav_console) }
                    }
                } }
            }
        }
    }
}

fn top_bar(p: &Page, section: Section) -> Markup {
    let t = p.t;
    let other = p.lang.other();
    if section == Section::Operator {
        return html! {
            header.top.operator {
                div.top-in {
                    a.brand href="/" { img src=(assets::url("logo.svg")) alt=""; span { (p.site) } span.pill { (t.op_console) } }
                    nav aria-label=(t.nav_main) {
                        @if let Some(who) = p.user { span.sub.hide-narrow { (who) } }
                        a.lang href=(format!("{}?lang={}", p.path, other.code())) hreflang=(other.tag()) lang=(other.tag()) { (other.label()) }
                    }
                }
            }
        };
    }
    html! {
        header.top {
            div.top-in {
                a.brand href="/" {
                    img src=(assets::url("logo.svg")) alt="";
                    span { (p.site) }
                }
                nav aria-label=(t.nav_main) {
                    a.hide-narrow.on[section == Section::Docs] href="/" { (t.nav_docs) }
                    a.hide-narrow.on[section == Section::Pricing] href="/docs/models" { (t.nav_pricing) }
                    @if p.user.is_some() {
                        a.on[section == Section::Console] href="/console/dashboard" { (t.nav_console) }
                    } @else {
                        a.on[section == Section::Auth] href="/console/sign-in" { (t.sign_in) }
                        a.btn.small href="/console/sign-up" { (t.sign_up) }
                    }
                    a.lang href=(format!("{}?lang={}", p.path, other.code())) hreflang=(other.tag()) lang=(other.tag()) {
                        (other.label())
                    }
                }
            }
        }
    }
}

/// One sidebar entry: `(path, label)`.
pub type NavItem<'a> = (&'a str, &'a str);

/// A sidebar with titled groups, then `tail` (a sign-out form); on narrow
/// screens it becomes one row of links that scrolls sideways, above the
/// content.
pub fn sidebar(p: &Page, label: &str, groups: &[(&str, Vec<NavItem>)], tail: Option<Markup>) -> Markup {
    html! {
        nav.side aria-label=(label) {
            @if let Some(email) = p.user.filter(|_| p.path.starts_with("/console")) { div.who { (email) } }
            @for (title, items) in groups {
                @if !title.is_empty() { h4 { (title) } }
                @for (href, text) in items {
                    a.on[is_current(p.path, href)] href=(href) aria-current=[is_current(p.path, href).then_some("page")] { (text) }
                }
            }
            @if let Some(tail) = tail { div.side-tail { (tail) } }
        }
    }
}

fn is_current(path: &str, href: &str) -> bool {
    path == href || (href != "/" && path.starts_with(href) && path.as_bytes().get(href.len()) == Some(&b'/'))
}

/// A two-column page: sidebar and main content.
pub fn shell(sidebar: Markup, content: Markup) -> Markup {
    html! {
        div.shell {
            (sidebar)
            main { (content) }
        }
    }
}

/// The docs sidebar.
pub fn docs_sidebar(p: &Page) -> Markup {
    let t = p.t;
    let groups = vec![
        (
            t.docs_group_start,
            vec![
                ("/", t.docs_start),
                ("/docs/endpoints", t.docs_endpoints),
                ("/docs/errors", t.docs_errors),
                ("/docs/models", t.docs_models),
                ("/docs/code", t.docs_code),
            ],
        ),
        (
            t.docs_group_clients,
            vec![
                ("/docs/cc-switch", "cc-switch"),
                ("/docs/codex", "Codex CLI"),
                ("/docs/claude-code", "Claude Code"),
                ("/docs/opencode", "OpenCode"),
                ("/docs/openclaw", "OpenClaw"),
            ],
        ),
    ];
    sidebar(p, t.menu, &groups, None)
}

/// The console sidebar.
pub fn console_sidebar(p: &Page) -> Markup {
    let t = p.t;
    let groups = vec![
        (
            "",
            vec![
                ("/console/dashboard", t.console_dashboard),
                ("/console/keys", t.console_keys),
                ("/console/usage", t.console_usage),
                ("/console/models", t.console_models),
            ],
        ),
        (t.console_group_credits, vec![("/console/redeem", t.console_redeem), ("/console/billing", t.console_buy)]),
        (t.console_group_account, vec![("/console/account", t.console_account), ("/", t.nav_docs)]),
    ];
    sidebar(p, t.menu, &groups, None)
}

/// A block with the two base URLs and copy buttons.
pub fn base_urls(t: &Text, urls: &BaseUrls) -> Markup {
    html! {
        div.base-url {
            span.label { (t.base_url_openai) }
            code #base-api { (urls.api) }
            button.ghost.small type="button" data-copy="#base-api" data-done=(t.copied) { (t.copy) }
        }
        div.base-url {
            span.label { (t.base_url_anthropic) }
            code #base-root { (urls.root) }
            button.ghost.small type="button" data-copy="#base-root" data-done=(t.copied) { (t.copy) }
        }
    }
}

/// A one-line notice (success, warning or error).
pub fn notice(kind: &str, message: &str) -> Markup {
    html! { div class=(format!("note {kind}")) role="status" { p { (message) } } }
}

/// Raw HTML we produced ourselves (rendered Markdown).
pub fn trusted(html: String) -> Markup {
    PreEscaped(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_from_root() {
        let u = BaseUrls::from_root("https://relay.example.com/");
        assert_eq!((u.root.as_str(), u.api.as_str()), ("https://relay.example.com", "https://relay.example.com/v1"));
    }

    #[test]
    fn current_nav_entry() {
        assert!(is_current("/docs/codex", "/docs/codex"));
        assert!(is_current("/console/keys/3", "/console/keys"));
        assert!(!is_current("/docs/codex-x", "/docs/codex"));
        assert!(!is_current("/docs/codex", "/"));
        assert!(is_current("/", "/"));
    }
}
