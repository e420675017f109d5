//! The upstream side of an attempt: the request head a channel gets (the
//! client's headers minus credentials, hop-by-hop and foreign ones, plus the
//! channel's own), connecting through the shared connector, and sending the
//! head and body in one write where the body is small.

use crate::api::Endpoint;
use crate::app::App;
use crate::channels::Channel;
use crate::convert::translate::Pair;
use bytes::{Bytes, BytesMut};
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use std::time::Duration;

/// Request headers never forwarded upstream: hop-by-hop headers, the client's
/// credentials (replaced by the channel's), framing we recompute, and
/// compression (the gateway reads the bodies).
const DROP_REQUEST_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "accept-encoding",
    "cookie",
];

/// Whether a client header belongs to the other vendor's API and must not
/// reach an upstream that speaks a translated one (an `anthropic-beta` flag
/// means nothing to an OpenAI server, and may make a strict one refuse).
fn foreign_header(name: &str, translated_to: Option<Pair>) -> bool {
    match translated_to.map(Pair::upstream_endpoint) {
        Some(Endpoint::ChatCompletions) => name.starts_with("anthropic-") || name.starts_with("x-stainless-helper"),
        Some(_) => name.starts_with("openai-"),
        None => false,
    }
}

pub(super) fn request_header(
    session: &Session,
    channel: &Channel,
    endpoint: Endpoint,
    translated_to: Option<Pair>,
    body_len: usize,
) -> Result<RequestHeader, String> {
    let path = channel.path_for(endpoint);
    // No case-preserving name map (HTTP header names are case-insensitive):
    // keeping one copied every header name once more per request.
    let size = session.req_header().headers.len() + 3;
    let mut req = RequestHeader::build_no_case("POST", path.as_bytes(), Some(size)).map_err(|e| e.to_string())?;
    for (name, value) in session.req_header().headers.iter() {
        if !DROP_REQUEST_HEADERS.contains(&name.as_str()) && !foreign_header(name.as_str(), translated_to) {
            req.append_header(name.clone(), value.clone()).map_err(|e| e.to_string())?;
        }
    }
    channel.apply_auth(&mut req).map_err(|e| e.to_string())?;
    req.insert_header("host", channel.base_url().authority()).map_err(|e| e.to_string())?;
    req.insert_header("content-length", body_len.to_string()).map_err(|e| e.to_string())?;
    req.insert_header("accept-encoding", "identity").map_err(|e| e.to_string())?;
    Ok(req)
}

/// Connects (trying each resolved address in turn) and sends the request; on
/// a stale pooled connection (the upstream closed it while idle) retries once
/// on a fresh one, which is safe: nothing was read. Returns the session and
/// the peer it is connected to.
pub(super) async fn send_request(
    app: &App,
    peers: Vec<HttpPeer>,
    header: &RequestHeader,
    body: &Bytes,
    write_timeout: Duration,
) -> Result<(HttpSession, HttpPeer), String> {
    let mut last = String::from("no address");
    for peer in peers {
        match send_to(app, &peer, header, body, write_timeout).await {
            Ok(up) => return Ok((up, peer)),
            Err((e, connected)) => {
                last = e;
                if connected {
                    break;
                }
            }
        }
    }
    Err(last)
}

/// One address; the error says whether a connection was made (then another
/// address would not help).
async fn send_to(
    app: &App,
    peer: &HttpPeer,
    header: &RequestHeader,
    body: &Bytes,
    write_timeout: Duration,
) -> Result<HttpSession, (String, bool)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let (up, reused) = connect(app, peer).await.map_err(|e| (format!("connect: {e}"), false))?;
        // A failed session is dropped (closed) inside `write_request`.
        match write_request(up, peer, header, body, write_timeout).await {
            Ok(up) => return Ok(up),
            Err(e) if reused && tries == 1 => log::debug!("stale pooled connection ({e}); reconnecting"),
            Err(e) => return Err((format!("sending request: {e}"), true)),
        }
    }
}

/// A pooled connection when there is one, else a new one. Upstreams speak
/// HTTP/1.1, so the HTTP/1 connector is used directly: its pool lookup is a
/// small future, while a new connection's (TCP and TLS) is about 9 KB. That
/// one is boxed: inline it made every request's future that much larger,
/// and Pingora copies the whole future into its box on each request.
async fn connect(app: &App, peer: &HttpPeer) -> pingora::Result<(HttpSession, bool)> {
    if let Some(h1) = app.connector.reused_http_session(peer).await {
        return Ok((HttpSession::H1(h1), true));
    }
    let (h1, reused) = Box::pin(app.connector.get_http_session(peer)).await?;
    Ok((HttpSession::H1(h1), reused))
}

/// Returns a connection whose response ended cleanly to the pool.
pub(super) async fn release(app: &App, up: HttpSession, peer: &HttpPeer, idle: Duration) {
    match up {
        HttpSession::H1(h1) => app.connector.release_http_session(h1, peer, Some(idle)).await,
        mut other => other.shutdown().await,
    }
}

/// Bodies up to this size leave in the same write as the request head.
const COALESCE_BODY_MAX: usize = 64 << 10;

/// Writes the request head and body. Pingora's HTTP/1 client flushes the head
/// on its own, so every request cost two sends and woke the upstream twice;
/// for bodies up to [`COALESCE_BODY_MAX`] the head and body go out in one
/// write on the pooled stream, which is then wrapped in a fresh client session
/// to read the response. That session has no record of the request head, which
/// only matters for HEAD and upgrade requests: never sent here (every
/// forwarded request is a POST with a Content-Length, see [`request_header`]).
async fn write_request(
    mut up: HttpSession,
    peer: &HttpPeer,
    header: &RequestHeader,
    body: &Bytes,
    write_timeout: Duration,
) -> pingora::Result<HttpSession> {
    use pingora::protocols::http::v1::client::{http_req_header_to_wire, HttpSession as Http1Session};
    use pingora::{Error, ErrorType, OrErr};
    use tokio::io::AsyncWriteExt;
    match up {
        HttpSession::H1(h1) if body.len() <= COALESCE_BODY_MAX => {
            let mut wire = http_req_header_to_wire(header)
                .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "unsendable request head"))?;
            wire.extend_from_slice(body);
            let mut stream = h1.into_inner();
            let write = async {
                stream.write_all(&wire).await?;
                stream.flush().await
            };
            match tokio::time::timeout(write_timeout, write).await {
                Ok(done) => done.or_err(ErrorType::WriteError, "writing request")?,
                Err(_) => return Error::e_explain(ErrorType::WriteTimedout, "writing request"),
            }
            Ok(HttpSession::H1(Http1Session::new_with_options(stream, peer)))
        }
        _ => {
            up.set_write_timeout(Some(write_timeout));
            up.write_request_header(Box::new(header.clone())).await?;
            up.write_request_body(body.clone(), true).await?;
            up.finish_request_body().await?;
            Ok(up)
        }
    }
}

/// Reads at most `limit` bytes of a (small) error body.
pub(super) async fn read_small_body(up: &mut HttpSession, limit: usize) -> Bytes {
    let mut buf = BytesMut::new();
    let read = async {
        while buf.len() < limit {
            match up.read_response_body().await {
                Ok(Some(b)) => buf.extend_from_slice(&b),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    buf.freeze()
}

pub(super) fn error_message(body: &[u8]) -> String {
    let parsed = crate::convert::passthrough::parse_error(&String::from_utf8_lossy(body));
    parsed.message.chars().take(300).collect()
}
