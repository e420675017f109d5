//! A website response: status, headers and a body that is either complete or
//! streamed (CSV exports). The security headers every page carries are added
//! where the response is written (`web::write`), not by each handler.

use bytes::Bytes;
use maud::Markup;
use tokio::sync::mpsc;

/// The content security policy of every website response: only our own
/// scripts, styles and images, no inline code, no framing, forms post only
/// to us.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The headers every page carries: the CSP, no framing, no sniffing, the
/// referrer policy, and HSTS over TLS.
pub fn security_headers(tls: bool) -> Vec<(&'static str, &'static str)> {
    let mut h = vec![
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
    ];
    if tls {
        h.push(("strict-transport-security", "max-age=31536000"));
    }
    h
}

pub enum Body {
    Full(Bytes),
    /// Chunks produced by a background task; the response ends when the
    /// sender is dropped.
    Stream(mpsc::Receiver<Bytes>),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
        Response { status, headers: vec![("content-type", content_type.to_string())], body: Body::Full(body.into()) }
    }

    /// An HTML page. Pages depend on the session and language: never cached.
    pub fn html(status: u16, markup: Markup) -> Response {
        Response::new(status, "text/html; charset=utf-8", markup.into_string()).header("cache-control", "no-store")
    }

    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", text.into()).header("cache-control", "no-store")
    }

    /// `303 See Other` to a path of this site (the browser then GETs it).
    pub fn redirect(location: &str) -> Response {
        Response::new(303, "text/plain; charset=utf-8", Bytes::new())
            .header("location", location)
            .header("cache-control", "no-store")
    }

    pub fn stream(content_type: &str, rx: mpsc::Receiver<Bytes>) -> Response {
        Response { status: 200, headers: vec![("content-type", content_type.to_string())], body: Body::Stream(rx) }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Adds a `Set-Cookie` header (several may be set).
    pub fn cookie(self, c: &cookie::Cookie) -> Response {
        self.header("set-cookie", c.to_string())
    }

    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}
