//! The website's side of the proxy: a request outside `/v1` that is no API
//! endpoint goes to `web::Site`; its answer is written here with the headers
//! every page carries (CSP, no framing, no sniffing, referrer policy, HSTS
//! over TLS).

use super::ctx::RequestCtx;
use super::handler::read_body;
use crate::app::App;
use crate::error::GatewayError;
use crate::web::{self, Body, Request, Response};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::sync::Arc;

/// Whether a path belongs to the API (its misses stay JSON errors).
pub fn is_api_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

pub async fn serve(app: &Arc<App>, site: &web::Site, session: &mut Session, ctx: &mut RequestCtx) {
    let resp = match request(session).await {
        Ok(req) => site.handle(app, &req).await,
        Err(resp) => resp,
    };
    write(session, ctx, resp).await;
}

/// The request as the website sees it; a form body over the limit is
/// answered 413 without being read further.
async fn request(session: &mut Session) -> Result<Request, Response> {
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let client_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let h = session.req_header();
    let (method, headers) = (h.method.clone(), h.headers.clone());
    let (path, query) = (h.uri.path().to_string(), h.uri.query().unwrap_or("").to_string());
    let body = if method == http::Method::POST {
        match read_body(session, web::body_limit(&path)).await {
            Ok(b) => b,
            Err(GatewayError::BodyTooLarge { .. }) => {
                session.set_keepalive(None);
                return Err(Response::text(413, "Form too large"));
            }
            Err(_) => return Err(Response::text(400, "Could not read the form")),
        }
    } else {
        Bytes::new()
    };
    Ok(Request { method, path, query, headers, body, client_ip, tls })
}

async fn write(session: &mut Session, ctx: &mut RequestCtx, resp: Response) {
    let Response { status, headers, body } = resp;
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let mut head = match ResponseHeader::build(status, Some(headers.len() + 8)) {
        Ok(h) => h,
        Err(e) => {
            log::error!("cannot build a {status} response: {e}");
            return;
        }
    };
    for (k, v) in &headers {
        let _ = head.append_header(*k, v.as_str());
    }
    for (k, v) in web::security_headers(tls) {
        let _ = head.insert_header(k, v);
    }
    let _ = head.insert_header("x-request-id", ctx.request_id.as_str());
    match &body {
        Body::Full(b) => {
            let _ = head.insert_header("content-length", b.len().to_string());
        }
        Body::Stream(_) => {
            let _ = head.insert_header("transfer-encoding", "chunked");
        }
    }
    ctx.status = status;
    let is_head = session.req_header().method == http::Method::HEAD;
    if session.write_response_header(Box::new(head), is_head).await.is_err() || is_head {
        return;
    }
    match body {
        Body::Full(b) => {
            let _ = session.write_response_body(Some(b), true).await;
        }
        Body::Stream(mut rx) => {
            while let Some(chunk) = rx.recv().await {
                if session.write_response_body(Some(chunk), false).await.is_err() {
                    // The client left; dropping `rx` stops the producer.
                    return;
                }
            }
            let _ = session.write_response_body(None, true).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths() {
        assert!(is_api_path("/v1/chat/completions"));
        assert!(is_api_path("/v1"));
        assert!(!is_api_path("/v1beta"));
        assert!(!is_api_path("/"));
        assert!(!is_api_path("/console/keys"));
    }
}
