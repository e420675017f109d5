//! The admin API: its own listener (loopback by default), bearer-token auth,
//! JSON in and out. Every change goes through `accounts::ops` (the code the CLI
//! uses, with an audit record) on a blocking thread, then waits for the
//! gateway's writer to load it, so the change is live when the call returns.

pub mod routes;
mod settings;

use crate::app::App;
use crate::reload::Reloader;
use async_trait::async_trait;
use bytes::Bytes;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest admin request body.
const MAX_BODY: usize = 1 << 20;

pub struct Admin {
    reloader: Arc<Reloader>,
    token: String,
}

impl Admin {
    pub fn new(reloader: Arc<Reloader>, token: String) -> Admin {
        Admin { reloader, token }
    }

    /// The configuration generation a new admin request runs on.
    fn app(&self) -> Arc<App> {
        self.reloader.live().current()
    }
}

/// The token the admin API requires: the configured one, or one generated at
/// start and written to `data_dir/admin.token` (mode 0600) so nothing is ever
/// open without a token.
pub fn resolve_token(app: &App) -> std::io::Result<String> {
    let configured = app.config.admin.token.expose();
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let token = format!("cpa_{}", crate::auth::random_base62(40));
    let path = app.config.data_dir.join("admin.token");
    crate::store::secret::write_private(&path, token.as_bytes())?;
    log::info!("admin API token generated in {}", path.display());
    Ok(token)
}

/// An admin failure: status and message.
#[derive(Debug)]
pub struct AdminError(pub StatusCode, pub String);

impl From<crate::store::StoreError> for AdminError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError::*;
        let status = match &e {
            NoSuchUser(_) | NoSuchKey(_) => StatusCode::NOT_FOUND,
            UserExists(_) => StatusCode::CONFLICT,
            Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AdminError(status, e.to_string())
    }
}

pub type AdminResult = Result<Reply, AdminError>;

/// A successful answer: JSON or plain text.
pub enum Reply {
    Json(StatusCode, Value),
    Text(String),
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_response(status: StatusCode, v: &Value) -> Response<Vec<u8>> {
    respond(status, "application/json", serde_json::to_vec(v).unwrap_or_default())
}

/// A parsed admin request.
pub struct Req {
    /// Who acts, for the audit trail: `admin-api` for a bearer token, the
    /// operator console's signed-in operator otherwise.
    pub actor: String,
    pub method: String,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Bytes,
}

impl Req {
    /// A query parameter; an empty value counts as absent (`?status=` is
    /// what a form sends for "any").
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Result<Value, AdminError> {
        if self.body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| AdminError(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))
    }
}

/// A decoded path segment. `+` stays a plus: it is only a space in query
/// strings, and emails such as `bob+tag@example.com` use it.
pub fn path_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Reads a request body up to `limit` bytes; `None` when it is larger.
async fn read_body(s: &mut ServerSession, limit: usize) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        match s.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Ok(None);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Some(body)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

impl Admin {
    /// `POST /admin/config/reload`: reloads the file now and answers with
    /// the outcome (422 with every error when the file was refused).
    async fn reload(&self) -> AdminResult {
        let reloader = self.reloader.clone();
        let outcome = tokio::task::spawn_blocking(move || reloader.reload())
            .await
            .map_err(|e| AdminError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let status = if outcome.ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
        Ok(Reply::Json(status, json!(outcome)))
    }

    /// The operator console: every path outside `/admin/`.
    async fn operator(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let app = self.app();
        let Some(site) = &app.site else {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "the website is off (console.enabled)"}));
        };
        let h = s.req_header();
        let (method, headers) = (h.method.clone(), h.headers.clone());
        let (path, query) = (h.uri.path().to_string(), h.uri.query().unwrap_or("").to_string());
        let tls = s.digest().is_some_and(|d| d.ssl_digest.is_some());
        let client_ip = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let body = match read_body(s, crate::web::body_limit(&path)).await {
            Ok(Some(b)) => bytes::Bytes::from(b),
            Ok(None) => return respond(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", b"Form too large".to_vec()),
            Err(e) => return respond(StatusCode::BAD_REQUEST, "text/plain", e.into_bytes()),
        };
        let req = crate::web::Request { method, path, query, headers, body, client_ip, tls };
        let resp = site.handle_operator(&app, &req, &self.token).await;
        let mut out = Response::builder().status(resp.status);
        for (k, v) in &resp.headers {
            out = out.header(*k, v.as_str());
        }
        for (k, v) in crate::web::security_headers(tls) {
            out = out.header(k, v);
        }
        let body = match resp.body {
            crate::web::Body::Full(b) => b.to_vec(),
            crate::web::Body::Stream(mut rx) => {
                let mut all = Vec::new();
                while let Some(chunk) = rx.recv().await {
                    all.extend_from_slice(&chunk);
                }
                all
            }
        };
        out.header("content-length", body.len()).body(body).unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let path = s.req_header().uri.path();
        // For Prometheus: no token, like the health endpoints. The admin
        // listener is meant to stay private (loopback by default).
        if path == "/metrics" {
            let app = self.app();
            return respond(StatusCode::OK, "text/plain; version=0.0.4", app.metrics.render(&app));
        }
        if path != "/admin" && !path.starts_with("/admin/") {
            return self.operator(s).await;
        }
        let header = s.req_header();
        let presented = header
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let authorized: bool = presented.as_bytes().ct_eq(self.token.as_bytes()).into();
        if !authorized {
            let msg = if presented.is_empty() { "missing admin token" } else { "invalid admin token" };
            return json_response(StatusCode::UNAUTHORIZED, &json!({"error": msg}));
        }
        let method = header.method.to_string();
        let segments: Vec<String> = header.uri.path().split('/').filter(|p| !p.is_empty()).map(path_segment).collect();
        let query = form_urlencoded::parse(header.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
        let body = match read_body(s, MAX_BODY).await {
            Ok(Some(b)) => b,
            Ok(None) => return json_response(StatusCode::PAYLOAD_TOO_LARGE, &json!({"error": "body too large"})),
            Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": e})),
        };
        let req = Req { actor: "admin-api".into(), method, segments, query, body: Bytes::from(body) };
        let answer = match (req.method.as_str(), req.segments.as_slice()) {
            ("POST", [a, c, r]) if a == "admin" && c == "config" && r == "reload" => self.reload().await,
            _ => routes::route(&self.app(), req).await,
        };
        match answer {
            Ok(Reply::Json(status, v)) => json_response(status, &v),
            Ok(Reply::Text(t)) => respond(StatusCode::OK, "text/plain; charset=utf-8", t.into_bytes()),
            Err(AdminError(status, msg)) => json_response(status, &json!({"error": msg})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_paths() {
        assert_eq!(path_segment("a%40b.c"), "a@b.c");
        assert_eq!(path_segment("bob+tag@x.io"), "bob+tag@x.io");
        assert_eq!(path_segment("100%"), "100%");
    }
}
