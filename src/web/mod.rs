//! The website the gateway serves beside `/v1`: the public docs at `/` and
//! `/docs/…`, the user console at `/console/…`, and static assets.
//!
//! Pages are rendered on the server with `maud` (compile-time checked
//! templates, escaped by default) and work without JavaScript; a small script
//! adds copy buttons and double-submit guards. Everything is compiled into
//! the binary and nothing is fetched from another host.
//!
//! The proxy hands a request here only after `/v1` routing found no API
//! endpoint, so the API path pays nothing for the site.

mod assets;
mod ccswitch;
mod chart;
mod console;
mod docs;
mod format;
mod i18n;
mod layout;
mod operator;
mod request;
mod response;
mod session;

pub use request::{Request, MAX_FORM_BYTES};
pub use response::{security_headers, Body, Response};

use crate::app::App;
use crate::config::{Config, ConsoleConfig};
use crate::throttle::Throttle;
use i18n::{Lang, Text};
use layout::{BaseUrls, Page};
use maud::html;
use session::Csrf;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Password hashes computed at once, at most: each argon2id hash takes 19 MiB
/// and tens of milliseconds of a core.
const CONCURRENT_HASHES: usize = 2;

/// The website's long-lived state.
pub struct Site {
    docs: docs::Docs,
    csrf: Csrf,
    sign_in_per_ip: Throttle,
    sign_in_per_account: Throttle,
    sign_up_per_ip: Throttle,
    hashing: Semaphore,
    /// New code batches, downloadable once (operator console).
    code_downloads: operator::CodeDownloads,
}

impl Site {
    /// Renders the docs and loads (or creates) the CSRF key (see `key_for`).
    pub fn new(cfg: &Config, cluster: Option<Arc<crate::cluster::Cluster>>) -> std::io::Result<Site> {
        let key = crate::store::secret::key_for(cfg, "web.key")?;
        let th = &cfg.console.throttle;
        let window = th.window.as_millis() as i64;
        let throttle = |name, limit| Throttle::new(name, limit, window, cluster.clone());
        Ok(Site {
            docs: docs::Docs::render_all(),
            csrf: Csrf::new(key),
            sign_in_per_ip: throttle("sign-in-ip", th.sign_in_per_ip),
            sign_in_per_account: throttle("sign-in-account", th.sign_in_per_account),
            sign_up_per_ip: throttle("sign-up-ip", th.sign_up_per_ip),
            hashing: Semaphore::new(CONCURRENT_HASHES),
            code_downloads: Default::default(),
        })
    }

    /// Answers one website request.
    pub async fn handle(&self, app: &Arc<App>, req: &Request) -> Response {
        let chosen = req.param("lang").and_then(|l| Lang::from_code(&l));
        let env = Env::new(self, app, req, chosen);
        let resp = route(&env).await;
        match chosen {
            // The switch remembers the choice for later pages.
            Some(lang) => {
                resp.cookie(&session::cookie(session::LANG_COOKIE, lang.code().to_string(), 365 * 86_400, env.secure))
            }
            None => resp,
        }
    }
}

impl Site {
    /// Answers one request for the operator console (the admin listener's
    /// paths outside `/admin/`). `admin_token` is the token operators may
    /// sign in with.
    pub async fn handle_operator(&self, app: &Arc<App>, req: &Request, admin_token: &str) -> Response {
        let chosen = req.param("lang").and_then(|l| Lang::from_code(&l));
        let env = Env { operator: true, ..Env::new(self, app, req, chosen) };
        let resp = match req.path.strip_prefix("/assets/") {
            Some(file) if matches!(req.method, http::Method::GET | http::Method::HEAD) => {
                assets::serve(file).unwrap_or_else(|| not_found(&env))
            }
            _ => operator::route(&env, admin_token).await,
        };
        match chosen {
            Some(lang) => resp.cookie(&session::strict_cookie(
                session::LANG_COOKIE,
                lang.code().to_string(),
                365 * 86_400,
                env.secure,
            )),
            None => resp,
        }
    }
}

/// What a handler needs about the request it answers.
pub(crate) struct Env<'a> {
    pub app: &'a Arc<App>,
    pub site: &'a Site,
    pub req: &'a Request,
    pub lang: Lang,
    pub t: &'static Text,
    pub urls: BaseUrls,
    /// Cookies get `Secure` (TLS listener, or an https `public_url`).
    pub secure: bool,
    /// Served on the admin listener: every page gets the operator chrome.
    pub operator: bool,
}

impl<'a> Env<'a> {
    fn new(site: &'a Site, app: &'a Arc<App>, req: &'a Request, chosen: Option<Lang>) -> Env<'a> {
        let console = &app.config.console;
        let lang = chosen
            .or_else(|| req.cookie(session::LANG_COOKIE).and_then(|c| Lang::from_code(&c)))
            .unwrap_or_else(|| Lang::negotiate(req.header("accept-language")));
        let secure = req.tls || console.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
        Env { app, site, req, lang, t: lang.text(), urls: base_urls(console, req), secure, operator: false }
    }

    pub fn console(&self) -> &ConsoleConfig {
        &self.app.config.console
    }

    pub fn page<'b>(&'b self, user: Option<&'b str>) -> Page<'b> {
        Page {
            lang: self.lang,
            t: self.t,
            site: &self.app.config.console.site_name,
            urls: &self.urls,
            path: &self.req.path,
            user,
            operator: self.operator,
        }
    }

    pub fn now(&self) -> i64 {
        self.app.billing.now_ms()
    }
}

/// The base URLs shown to users: `console.public_url`, or the scheme and
/// `Host` of the request. A `Host` that is not a plain host name or address
/// is not echoed into pages.
fn base_urls(console: &ConsoleConfig, req: &Request) -> BaseUrls {
    if let Some(u) = &console.public_url {
        return BaseUrls::from_root(u);
    }
    let scheme = if req.tls { "https" } else { "http" };
    let host = req.header("host").filter(|h| plausible_host(h)).unwrap_or("localhost");
    BaseUrls::from_root(&format!("{scheme}://{host}"))
}

fn plausible_host(h: &str) -> bool {
    !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

async fn route(env: &Env<'_>) -> Response {
    let req = env.req;
    let path = req.path.as_str();
    let read_only = matches!(req.method, http::Method::GET | http::Method::HEAD);
    if path == "/console" || path.starts_with("/console/") {
        return console::route(env).await;
    }
    if let Some(endpoint) = path.strip_prefix("/payments/") {
        return payment_notification(env, endpoint).await;
    }
    if !read_only {
        return Response::text(405, env.t.method_not_allowed).header("allow", "GET, HEAD");
    }
    if let Some(file) = path.strip_prefix("/assets/") {
        return assets::serve(file).unwrap_or_else(|| not_found(env));
    }
    match path {
        "/favicon.ico" | "/favicon.svg" => assets::serve("logo.svg").unwrap_or_else(|| not_found(env)),
        "/robots.txt" => Response::new(200, "text/plain; charset=utf-8", "User-agent: *\nDisallow: /console/\n"),
        "/" => docs_page(env, ""),
        _ => match path.strip_prefix("/docs/") {
            Some(slug) => docs_page(env, slug.trim_end_matches('/')),
            None => not_found(env),
        },
    }
}

/// A payment provider's server-to-server notification: `POST
/// /payments/stripe/webhook`, `GET` or `POST /payments/epay/notify`.
async fn payment_notification(env: &Env<'_>, endpoint: &str) -> Response {
    let provider = match endpoint {
        "stripe/webhook" => "stripe",
        "epay/notify" => "epay",
        _ => return not_found(env),
    };
    let req = env.req;
    let n = crate::payments::Notification {
        method: req.method.as_str(),
        query: &req.query,
        signature: req.header("stripe-signature"),
        content_type: req.header("content-type"),
        body: &req.body,
    };
    let (status, content_type, body) = crate::payments::notify(env.app, provider, &n).await;
    Response::new(status, content_type, body).header("cache-control", "no-store")
}

/// The largest body read for a path: payment notifications carry a
/// provider's whole event, forms a few fields.
pub fn body_limit(path: &str) -> usize {
    if path.starts_with("/payments/") {
        256 << 10
    } else {
        MAX_FORM_BYTES
    }
}

fn docs_page(env: &Env, slug: &str) -> Response {
    let channels = &env.app.channels;
    let served = |m: &str| channels.serves_model(m);
    let page = env.page(None);
    match env.site.docs.page(&page, &env.app.config, &served, slug) {
        Some(markup) => Response::html(200, markup).header("vary", "Accept-Language, Cookie"),
        None => not_found(env),
    }
}

/// The 404 page.
pub(crate) fn not_found(env: &Env) -> Response {
    let p = env.page(None);
    let t = env.t;
    let body = html! {
        div.auth {
            h1 { (t.not_found_title) }
            p { (t.not_found_body) }
            @if env.operator { p { a.btn href="/" { (t.op_overview) } } }
            @else { p { a.btn href="/" { (t.nav_docs) } " " a.btn.ghost href="/console/dashboard" { (t.nav_console) } } }
        }
    };
    Response::html(404, layout::document(&p, t.not_found_title, layout::Section::Docs, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_echoed_into_pages_are_plain() {
        assert!(plausible_host("relay.example.com"));
        assert!(plausible_host("127.0.0.1:8080"));
        assert!(plausible_host("[::1]:8080"));
        assert!(!plausible_host("evil.com\"><script>"));
        assert!(!plausible_host("a b"));
        assert!(!plausible_host(""));
    }
}
