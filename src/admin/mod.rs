//! The admin API: its own listener (loopback by default), bearer-token auth,
//! JSON in and out. Every change goes through `accounts::ops` (the code the CLI
//! uses, with an audit record) on a blocking thread, then waits for the
//! gateway's writer to load it, so the change is live when the call returns.

mod routes;

use crate::app::App;
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
    app: Arc<App>,
    token: String,
}

impl Admin {
    pub fn new(app: Arc<App>, token: String) -> Admin {
        Admin { app, token }
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
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Result<Value, AdminError> {
        if self.body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| AdminError(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
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
        let segments: Vec<String> =
            header.uri.path().split('/').filter(|p| !p.is_empty()).map(percent_decode).collect();
        let query = header
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let mut body = Vec::new();
        loop {
            match s.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return json_response(StatusCode::PAYLOAD_TOO_LARGE, &json!({"error": "body too large"}));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
            }
        }
        let req = Req { actor: "admin-api".into(), method, segments, query, body: Bytes::from(body) };
        match routes::route(&self.app, req).await {
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
        assert_eq!(percent_decode("a%40b.c"), "a@b.c");
        assert_eq!(percent_decode("x+y"), "x y");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
