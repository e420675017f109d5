//! The public documentation. Pages are Markdown files compiled into the
//! binary, one per language, rendered to HTML once at start. What depends on
//! the live configuration or the request (base URLs, model names and prices,
//! the site name) is written as `{{name}}` placeholders and filled in per
//! request, so a page always shows what this gateway really serves.

use super::ccswitch;
use super::i18n::{Lang, Text};
use super::layout::{self, Page, Section};
use crate::config::units::format_credits;
use crate::config::{Config, ModelConfig};
use maud::{html, Markup};
use std::collections::HashMap;

/// `(slug, English source, Chinese source)`; the slug is the path below
/// `/docs/` (empty for the home page).
const SOURCES: &[(&str, &str, &str)] = &[
    ("", include_str!("docs/en/index.md"), include_str!("docs/zh/index.md")),
    ("endpoints", include_str!("docs/en/endpoints.md"), include_str!("docs/zh/endpoints.md")),
    ("errors", include_str!("docs/en/errors.md"), include_str!("docs/zh/errors.md")),
    ("models", include_str!("docs/en/models.md"), include_str!("docs/zh/models.md")),
    ("code", include_str!("docs/en/code.md"), include_str!("docs/zh/code.md")),
    ("cc-switch", include_str!("docs/en/cc-switch.md"), include_str!("docs/zh/cc-switch.md")),
    ("codex", include_str!("docs/en/codex.md"), include_str!("docs/zh/codex.md")),
    ("claude-code", include_str!("docs/en/claude-code.md"), include_str!("docs/zh/claude-code.md")),
    ("opencode", include_str!("docs/en/opencode.md"), include_str!("docs/zh/opencode.md")),
    ("openclaw", include_str!("docs/en/openclaw.md"), include_str!("docs/zh/openclaw.md")),
];

struct Rendered {
    title: String,
    /// HTML with `{{placeholders}}` still in it.
    html: String,
}

/// Every page in both languages, rendered.
pub struct Docs {
    pages: HashMap<(Lang, &'static str), Rendered>,
}

impl Docs {
    pub fn render_all() -> Docs {
        let mut pages = HashMap::new();
        for (slug, en, zh) in SOURCES {
            pages.insert((Lang::En, *slug), render_markdown(en));
            pages.insert((Lang::Zh, *slug), render_markdown(zh));
        }
        Docs { pages }
    }

    /// The page at `slug` as a complete document, or `None` when there is none.
    pub fn page(&self, p: &Page, cfg: &Config, served: &dyn Fn(&str) -> bool, slug: &str) -> Option<Markup> {
        let r = self.pages.get(&(p.lang, slug))?;
        let vars = Vars::new(p, cfg, served);
        let body = fill(&r.html, &|name| vars.get(name));
        let section = if slug == "models" { Section::Pricing } else { Section::Docs };
        let content = html! { article.doc { (layout::trusted(body)) } };
        Some(layout::document(p, &r.title, section, layout::shell(layout::docs_sidebar(p), content)))
    }
}

fn render_markdown(src: &str) -> Rendered {
    use pulldown_cmark::{html::push_html, Options, Parser};
    let title = src.lines().find_map(|l| l.strip_prefix("# ")).unwrap_or("").trim().to_string();
    let opts = Options::ENABLE_TABLES | Options::ENABLE_HEADING_ATTRIBUTES | Options::ENABLE_STRIKETHROUGH;
    let mut out = String::with_capacity(src.len() * 2);
    push_html(&mut out, Parser::new_ext(src, opts));
    // Wide tables scroll inside their own box on narrow screens.
    let html = out.replace("<table>", "<div class=\"table-wrap\"><table>").replace("</table>", "</table></div>");
    Rendered { title, html }
}

/// Replaces each `{{name}}` whose value `lookup` knows; leaves others as they are.
pub fn fill(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 512);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}").map(|end| (&after[..end], end)) {
            Some((name, end)) if is_placeholder(name) => match lookup(name) {
                Some(v) => {
                    out.push_str(&v);
                    rest = &after[end + 2..];
                }
                None => {
                    out.push_str("{{");
                    rest = after;
                }
            },
            _ => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_placeholder(name: &str) -> bool {
    !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Escapes text for HTML (element content and attribute values).
pub fn escape(s: &str) -> String {
    maud::html! { (s) }.into_string()
}

/// Model ids the examples use, chosen from what the gateway serves so every
/// snippet works as written.
pub struct ExampleModels {
    pub chat: String,
    pub claude: String,
    pub codex: String,
    pub embedding: String,
}

impl ExampleModels {
    pub fn pick(models: &[&ModelConfig]) -> ExampleModels {
        let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
        let is_embedding = |id: &&str| id.contains("embedding");
        let first = |f: &dyn Fn(&&str) -> bool| ids.iter().find(|id| f(id)).map(|s| s.to_string());
        let chat = first(&|id| !is_embedding(id) && !id.starts_with("claude"))
            .or_else(|| first(&|id| !is_embedding(id)))
            .unwrap_or_else(|| "gpt-4o-mini".into());
        ExampleModels {
            claude: first(&|id| id.starts_with("claude")).unwrap_or_else(|| chat.clone()),
            codex: first(&|id| id.contains("codex")).unwrap_or_else(|| chat.clone()),
            embedding: first(&is_embedding).unwrap_or_else(|| crate::proxy::DEFAULT_EMBEDDING_MODEL.into()),
            chat,
        }
    }
}

/// The values of a page's placeholders.
struct Vars<'a> {
    p: &'a Page<'a>,
    cfg: &'a Config,
    models: Vec<&'a ModelConfig>,
    examples: ExampleModels,
}

impl<'a> Vars<'a> {
    fn new(p: &'a Page<'a>, cfg: &'a Config, served: &dyn Fn(&str) -> bool) -> Vars<'a> {
        let models: Vec<&ModelConfig> = cfg.models.iter().filter(|m| served(&m.id)).collect();
        let examples = ExampleModels::pick(&models);
        Vars { p, cfg, models, examples }
    }

    fn get(&self, name: &str) -> Option<String> {
        let p = self.p;
        Some(match name {
            "site" => escape(p.site),
            "api" => escape(&p.urls.api),
            "root" => escape(&p.urls.root),
            "chat_model" => escape(&self.examples.chat),
            "claude_model" => escape(&self.examples.claude),
            "codex_model" => escape(&self.examples.codex),
            "embedding_model" => escape(&self.examples.embedding),
            "timezone" => escape(&utc_offset_label(self.cfg.billing.utc_offset_secs)),
            "base_urls" => layout::base_urls(p.t, p.urls).into_string(),
            "models" => price_table(p.t, &self.models).into_string(),
            "usage_script" => escape(&ccswitch::usage_script()),
            "example_link" => self.link(ccswitch::App::Claude),
            _ => match name.strip_prefix("link_").and_then(ccswitch::App::from_param) {
                Some(app) => self.link(app),
                None => return None,
            },
        })
    }
}

impl Vars<'_> {
    /// An import link as the docs show it, with a placeholder key.
    fn link(&self, app: ccswitch::App) -> String {
        let e = &self.examples;
        let model = match app {
            ccswitch::App::Claude => &e.claude,
            ccswitch::App::Codex => &e.codex,
            _ => &e.chat,
        };
        let link = ccswitch::DeepLink { app, site: self.p.site, urls: self.p.urls, key: "codex_YOUR_KEY", model };
        escape(&link.shown())
    }
}

/// `UTC`, `UTC+08:00`, `UTC-05:30`.
pub fn utc_offset_label(secs: i32) -> String {
    if secs == 0 {
        return "UTC".into();
    }
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
}

/// Credits per 1M tokens, for price tables.
pub fn price(micros: i64) -> String {
    format_credits(micros)
}

/// The models with their prices.
pub fn price_table(t: &Text, models: &[&ModelConfig]) -> Markup {
    html! {
        @if models.is_empty() {
            p.muted { (t.no_models) }
        } @else {
            p.sub { (t.price_unit) }
            div.table-wrap {
                table {
                    thead { tr {
                        th { (t.col_model) }
                        th.num { (t.col_input) }
                        th.num { (t.col_cached) }
                        th.num { (t.col_cache_write) }
                        th.num { (t.col_output) }
                    } }
                    tbody {
                        @for m in models {
                            tr {
                                td {
                                    code { (m.id) }
                                    @if m.display_name != m.id { br; span.sub { (m.display_name) } }
                                }
                                td.num { (price(m.price.input)) }
                                td.num { (price(m.price.cached_input)) }
                                td.num { (price(m.price.cache_write)) }
                                td.num { (price(m.price.output)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_known_names_only() {
        let look = |n: &str| (n == "api").then(|| "https://x/v1".to_string());
        assert_eq!(fill("a {{api}} b {{other}} {{ api }} {{", &look), "a https://x/v1 b {{other}} {{ api }} {{");
        assert_eq!(fill("{{api}}{{api}}", &look), "https://x/v1https://x/v1");
        assert_eq!(fill("no braces", &look), "no braces");
        assert_eq!(fill("中文{{api}}文", &look), "中文https://x/v1文");
    }

    #[test]
    fn every_page_renders_in_both_languages() {
        let docs = Docs::render_all();
        for (slug, _, _) in SOURCES {
            for lang in [Lang::En, Lang::Zh] {
                let r = &docs.pages[&(lang, *slug)];
                assert!(!r.title.is_empty(), "{slug} {lang:?} has a title");
                assert!(r.html.contains("<h1>"), "{slug} {lang:?}");
                // Placeholders survive Markdown rendering untouched.
                let names: Vec<&str> = r.html.match_indices("{{").map(|(i, _)| &r.html[i..]).collect();
                for n in names {
                    let name = &n[2..n.find("}}").expect("closed placeholder")];
                    assert!(is_placeholder(name), "{slug} {lang:?}: odd placeholder {name:?}");
                }
            }
        }
    }

    #[test]
    fn example_models_come_from_the_served_list() {
        let cfg = crate::config::parse(
            "server: {listen: [\"127.0.0.1:0\"]}\nmodels: [{id: deepseek-chat}, {id: claude-x}, {id: text-embedding-3-large}]\n",
            std::path::Path::new("."),
            &|_| None,
        )
        .unwrap();
        let models: Vec<&ModelConfig> = cfg.models.iter().collect();
        let e = ExampleModels::pick(&models);
        assert_eq!(
            (e.chat.as_str(), e.claude.as_str(), e.codex.as_str()),
            ("deepseek-chat", "claude-x", "deepseek-chat")
        );
        assert_eq!(e.embedding, "text-embedding-3-large");
        assert_eq!(utc_offset_label(8 * 3600), "UTC+08:00");
        assert_eq!(utc_offset_label(-(5 * 3600 + 1800)), "UTC-05:30");
    }
}
