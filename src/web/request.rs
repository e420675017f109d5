//! A website request, owned and independent of Pingora: what the handlers
//! read (method, path, query, cookies, form fields, client address).

use bytes::Bytes;
use http::{HeaderMap, Method};
use std::net::IpAddr;

/// Largest form body the website reads (sign-in, key creation, redemption).
pub const MAX_FORM_BYTES: usize = 16 << 10;

pub struct Request {
    pub method: Method,
    /// The path without its query string.
    pub path: String,
    /// The raw query string (without `?`), possibly empty.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub client_ip: Option<IpAddr>,
    /// Whether the connection is TLS (cookies then get `Secure`).
    pub tls: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter (first occurrence), percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    /// A non-empty, trimmed query parameter.
    pub fn param_nonempty(&self, name: &str) -> Option<String> {
        self.param(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    /// A cookie value, from every `Cookie` header.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers.get_all("cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|h| {
            cookie::Cookie::split_parse(h)
                .filter_map(Result::ok)
                .find(|c| c.name() == name)
                .map(|c| c.value().to_string())
        })
    }

    /// The form fields of a urlencoded POST body; empty for any other body.
    pub fn form(&self) -> Form {
        let urlencoded = self.header("content-type").is_some_and(|t| {
            t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
        });
        let fields = if urlencoded {
            form_urlencoded::parse(&self.body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
        } else {
            Vec::new()
        };
        Form { fields }
    }

    /// Whether the request looks like a cross-site form post: a browser says so
    /// in `Sec-Fetch-Site`, or sends an `Origin` whose host is neither the
    /// request's `Host` nor `public_host` (the configured public address: a
    /// reverse proxy in front may rewrite `Host`). Requests without either
    /// header (curl, old browsers) are left to the synchronizer token, which
    /// they cannot have without a session.
    pub fn cross_site(&self, public_host: Option<&str>) -> bool {
        if self.header("sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
            return true;
        }
        let Some(origin) = self.header("origin") else { return false };
        let Some(from) = origin_host(origin) else { return true };
        let ours = [self.header("host"), public_host];
        !ours.iter().flatten().any(|h| h.eq_ignore_ascii_case(from))
    }
}

/// `host[:port]` of an `Origin` or site URL (`https://example.com:8443`).
pub fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin.split_once("://")?.1;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Decoded form fields.
pub struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// The first value of a field, untrimmed (passwords keep their spaces).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A trimmed value, `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.raw(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Every value of a repeated field (checkbox lists).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

#[cfg(test)]
pub(crate) fn test_request(method: Method, target: &str, headers: &[(&str, &str)], body: &str) -> Request {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(v).expect("header value"),
        );
    }
    Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers: map,
        body: Bytes::from(body.to_string()),
        client_ip: None,
        tls: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_cookies_and_forms() {
        let r = test_request(
            Method::POST,
            "/console/usage?model=gpt-4o&from=2026-11-01&x=a%20b",
            &[("cookie", "lang=zh; cp_session=abc"), ("content-type", "application/x-www-form-urlencoded")],
            "email=A%40b.c&password=+pw+&m=1&m=2",
        );
        assert_eq!(r.param("x").as_deref(), Some("a b"));
        assert_eq!(r.param("nope"), None);
        assert_eq!(r.cookie("cp_session").as_deref(), Some("abc"));
        assert_eq!(r.cookie("lang").as_deref(), Some("zh"));
        let f = r.form();
        assert_eq!(f.get("email"), Some("A@b.c"));
        assert_eq!(f.raw("password"), Some(" pw "));
        assert_eq!(f.all("m"), vec!["1", "2"]);
        let json = test_request(Method::POST, "/", &[("content-type", "application/json")], "email=x");
        assert_eq!(json.form().get("email"), None);
    }

    #[test]
    fn cross_site_detection() {
        let post = |headers: &[(&str, &str)]| test_request(Method::POST, "/", headers, "");
        let same = post(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")]);
        assert!(!same.cross_site(None));
        let other = post(&[("origin", "https://evil.example"), ("host", "relay.example")]);
        assert!(other.cross_site(None));
        assert!(other.cross_site(Some("relay.example")));
        // Behind a proxy that rewrites Host, the public address is ours.
        let proxied = post(&[("origin", "https://relay.example"), ("host", "10.0.0.5:8080")]);
        assert!(proxied.cross_site(None));
        assert!(!proxied.cross_site(Some("relay.example")));
        assert!(post(&[("sec-fetch-site", "cross-site")]).cross_site(None));
        assert!(post(&[("origin", "null")]).cross_site(None));
        assert!(!post(&[("sec-fetch-site", "same-origin")]).cross_site(None));
        assert!(!post(&[]).cross_site(None), "no browser headers: left to the CSRF token");
    }
}
