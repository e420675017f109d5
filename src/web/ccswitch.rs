//! cc-switch integration: `ccswitch://v1/import` deep links that set up a
//! client with a key in one click, and the usage-query script cc-switch runs
//! to show the remaining balance.
//!
//! Link parameters follow cc-switch 3.x (`src-tauri/src/deeplink/parser.rs`):
//! values are URL-encoded; `usageScript` is Base64 (URL-safe, unpadded).

use super::layout::BaseUrls;
use base64::Engine;

/// The clients cc-switch configures, by their `app` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    Codex,
    Claude,
    OpenCode,
    OpenClaw,
}

impl App {
    pub const ALL: [App; 4] = [App::Codex, App::Claude, App::OpenCode, App::OpenClaw];

    pub fn from_param(p: &str) -> Option<App> {
        App::ALL.into_iter().find(|a| a.param() == p)
    }

    pub fn param(self) -> &'static str {
        match self {
            App::Codex => "codex",
            App::Claude => "claude",
            App::OpenCode => "opencode",
            App::OpenClaw => "openclaw",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            App::Codex => "Codex",
            App::Claude => "Claude Code",
            App::OpenCode => "OpenCode",
            App::OpenClaw => "OpenClaw",
        }
    }

    /// Claude Code appends `/v1/messages` itself and takes the bare root; the
    /// others speak OpenAI-style APIs below `/v1`.
    pub fn endpoint(self, urls: &BaseUrls) -> &str {
        match self {
            App::Claude => &urls.root,
            _ => &urls.api,
        }
    }
}

/// One import link.
pub struct DeepLink<'a> {
    pub app: App,
    pub site: &'a str,
    pub urls: &'a BaseUrls,
    pub key: &'a str,
    pub model: &'a str,
}

/// How often cc-switch refreshes the balance, in minutes.
const USAGE_INTERVAL_MINUTES: u32 = 30;

impl DeepLink<'_> {
    pub fn url(&self) -> String {
        self.with_script(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(usage_script()))
    }

    /// The link as the docs show it: the 1.5 KB of Base64 script elided.
    pub fn shown(&self) -> String {
        self.with_script("SCRIPT").replace("usageScript=SCRIPT", "usageScript=…")
    }

    fn with_script(&self, script: &str) -> String {
        let interval = USAGE_INTERVAL_MINUTES.to_string();
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("resource", "provider")
            .append_pair("app", self.app.param())
            .append_pair("name", self.site)
            .append_pair("endpoint", self.app.endpoint(self.urls))
            .append_pair("apiKey", self.key)
            .append_pair("model", self.model)
            .append_pair("homepage", &self.urls.root)
            .append_pair("enabled", "true")
            .append_pair("usageEnabled", "true")
            .append_pair("usageScript", script)
            .append_pair("usageAutoInterval", &interval)
            .finish();
        format!("ccswitch://v1/import?{query}")
    }
}

/// The usage-query script: a JavaScript expression cc-switch evaluates after
/// replacing `{{baseUrl}}` and `{{apiKey}}`. The base URL it is given ends in
/// `/v1` for Codex and not for Claude Code, so the script strips a trailing
/// `/v1` before adding the path. It reads `GET /v1/account` and returns the
/// balance in credits, with the plan's quota left today first when a plan is
/// active (fields as cc-switch's extractor contract names them).
pub fn usage_script() -> String {
    r#"({
  request: {
    url: "{{baseUrl}}".replace(/\/v1\/?$/, "") + "/v1/account",
    method: "GET",
    headers: { "Authorization": "Bearer {{apiKey}}", "Accept": "application/json" }
  },
  extractor: function (r) {
    if (!r || r.object !== "account") {
      return { isValid: false, invalidMessage: (r && r.error && r.error.message) || "unexpected answer" };
    }
    var credits = { isValid: true, planName: "Credits", remaining: parseFloat(r.balance), unit: "credits" };
    if (!r.plan) return credits;
    return [{
      isValid: true,
      planName: r.plan.name,
      remaining: parseFloat(r.plan.remaining_today),
      total: parseFloat(r.plan.daily_quota),
      used: parseFloat(r.plan.used_today),
      unit: "credits today"
    }, credits];
  }
})"#
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str) -> Vec<(String, String)> {
        let q = url.strip_prefix("ccswitch://v1/import?").expect("import link");
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    #[test]
    fn links_carry_the_right_endpoint_per_app() {
        let urls = BaseUrls::from_root("https://relay.example.com");
        let link = |app| DeepLink { app, site: "My Relay", urls: &urls, key: "codex_abc", model: "m-1" }.url();
        let get = |q: &[(String, String)], k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let claude = query(&link(App::Claude));
        assert_eq!(get(&claude, "app").as_deref(), Some("claude"));
        assert_eq!(get(&claude, "endpoint").as_deref(), Some("https://relay.example.com"));
        assert_eq!(get(&claude, "name").as_deref(), Some("My Relay"));
        assert_eq!(get(&claude, "apiKey").as_deref(), Some("codex_abc"));
        assert_eq!(get(&claude, "usageEnabled").as_deref(), Some("true"));
        for app in [App::Codex, App::OpenCode, App::OpenClaw] {
            let q = query(&link(app));
            assert_eq!(get(&q, "endpoint").as_deref(), Some("https://relay.example.com/v1"), "{app:?}");
            assert_eq!(get(&q, "resource").as_deref(), Some("provider"));
        }
        // The script decodes back to itself.
        let script = get(&claude, "usageScript").unwrap();
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(script).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), usage_script());
        // Raw link: no characters a URL parser would mangle.
        assert!(!link(App::Codex).contains(' '));
        let shown = DeepLink { app: App::Codex, site: "s", urls: &urls, key: "k", model: "m" }.shown();
        assert!(shown.ends_with("&usageScript=…&usageAutoInterval=30"), "{shown}");
        assert_eq!(App::from_param("openclaw"), Some(App::OpenClaw));
    }
}
