//! Codex's WebSocket transport for the Responses API: `GET /v1/responses`
//! with an upgrade. The client sends `{"type":"response.create", …}` text
//! messages, each a Responses request body; the gateway answers each with the
//! stream's events, one JSON text message per event, ending with
//! `response.completed` (or an `error` event). One connection carries many
//! turns, one at a time.
//!
//! Each turn runs through the gateway's own HTTP path, in process: the turn
//! becomes a `POST /v1/responses` on an in-memory HTTP/1.1 connection that
//! `handler::handle` and `settle` serve exactly like a request from the
//! network. So authentication, limits, billing, channel choice, failover,
//! translation, the usage record and the access-log line are those of HTTP,
//! by construction, and the turn's SSE answer is cut into messages here.
//!
//! Three parts, because a Pingora session cannot be shared between tasks: the
//! request task pumps bytes between the client connection and an in-memory
//! pipe; the conversation task speaks WebSocket (tungstenite) on the other end
//! of the pipe; each turn is an HTTP exchange (hyper's client) with an
//! internal session.

use super::ctx::RequestCtx;
use super::{handler, respond, settle};
use crate::app::{App, InFlight, Live};
use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A connection with no message for this long is closed (a turn in progress
/// never counts as idle).
const IDLE: Duration = Duration::from_secs(30 * 60);
/// The in-memory pipe's buffer each way.
const PIPE: usize = 256 << 10;
/// Client bytes held for the conversation before the client is read again.
const BACKLOG: usize = 1 << 20;

/// Client headers that do not belong on a turn's request: the connection's
/// own, the handshake's, and framing the turn sets itself.
fn turn_drops(name: &str) -> bool {
    matches!(
        name,
        "connection" | "upgrade" | "content-length" | "transfer-encoding" | "accept-encoding" | "keep-alive" | "te"
    ) || name.starts_with("sec-websocket-")
}

/// Accepts the upgrade (the caller has authenticated the key) and serves the
/// conversation until either side closes it.
pub(super) async fn serve(live: &Arc<Live>, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
    let accept = accept_key(session)?;
    let template = TurnTemplate::from_upgrade(session, ctx.app().config.max_body_bytes);
    let mut resp = ResponseHeader::build(101, Some(4)).map_err(|e| GatewayError::Internal(e.to_string()))?;
    for (k, v) in [("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-accept", accept.as_str())] {
        resp.insert_header(k, v).map_err(|e| GatewayError::Internal(e.to_string()))?;
    }
    let _ = resp.insert_header("x-request-id", ctx.request_id.as_str());
    ctx.status = 101;
    if session.write_response_header(Box::new(resp), false).await.is_err() {
        ctx.failure = Some(super::ctx::Failure::ClientGone);
        return Ok(());
    }
    let (near, far) = tokio::io::duplex(PIPE);
    let conversation = tokio::spawn(converse(live.clone(), far, template));
    pump(session, near, conversation).await;
    Ok(())
}

/// `Sec-WebSocket-Accept` for the request's key (RFC 6455, version 13 only).
fn accept_key(session: &Session) -> Result<String, GatewayError> {
    let headers = &session.req_header().headers;
    let version = headers.get("sec-websocket-version").map(|v| v.as_bytes());
    if version != Some(b"13") {
        let message = "WebSocket version 13 is required".to_string();
        return Err(GatewayError::InvalidField { field: "sec-websocket-version", message });
    }
    let key = headers.get("sec-websocket-key").map(|v| v.as_bytes()).filter(|k| !k.is_empty()).ok_or_else(|| {
        GatewayError::InvalidField { field: "sec-websocket-key", message: "the WebSocket handshake needs a key".into() }
    })?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key))
}

/// Moves bytes between the client and the conversation until the
/// conversation ends, then delivers what it wrote last (a close frame).
async fn pump(session: &mut Session, pipe: DuplexStream, mut conversation: tokio::task::JoinHandle<()>) {
    let (mut from_conv, mut to_conv) = tokio::io::split(pipe);
    let mut backlog = BytesMut::new();
    let mut buf = vec![0u8; 16 << 10];
    let mut client_open = true;
    let mut conv_open = true;
    loop {
        tokio::select! {
            _ = &mut conversation, if conv_open => conv_open = false,
            r = session.read_request_body(), if client_open && backlog.len() < BACKLOG => match r {
                Ok(Some(bytes)) => backlog.extend_from_slice(&bytes),
                // The client is gone: the conversation reads the end of its
                // stream, and a turn in progress is cut short (and billed for
                // what it used).
                _ => {
                    client_open = false;
                    let _ = to_conv.shutdown().await;
                }
            },
            n = to_conv.write(&backlog), if !backlog.is_empty() => match n {
                Ok(n) => {
                    let _ = backlog.split_to(n);
                }
                Err(_) => backlog.clear(),
            },
            n = from_conv.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) if client_open => {
                    let out = Bytes::copy_from_slice(&buf[..n]);
                    if session.write_response_body(Some(out), false).await.is_err() {
                        client_open = false;
                        backlog.clear();
                        let _ = to_conv.shutdown().await;
                    }
                }
                // Nobody to deliver to: drained so the conversation never blocks.
                Ok(_) => {}
            },
        }
    }
    if client_open {
        let _ = session.write_response_body(None, true).await;
    }
}

/// What every turn's request carries from the upgrade request.
struct TurnTemplate {
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    client_ip: Option<IpAddr>,
    max_message: usize,
}

impl TurnTemplate {
    fn from_upgrade(session: &Session, max_message: usize) -> TurnTemplate {
        let headers = session
            .req_header()
            .headers
            .iter()
            .filter(|(name, _)| !turn_drops(name.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let client_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        TurnTemplate { headers, client_ip, max_message }
    }
}

type Socket = WebSocketStream<DuplexStream>;

/// The conversation: reads `response.create` messages and runs each as a
/// turn, on the configuration current when the turn starts (a conversation
/// may outlive several reloads).
async fn converse(live: Arc<Live>, pipe: DuplexStream, template: TurnTemplate) {
    let config = WebSocketConfig::default().max_message_size(Some(template.max_message));
    let mut ws = WebSocketStream::from_raw_socket(pipe, Role::Server, Some(config)).await;
    loop {
        let msg = match tokio::time::timeout(IDLE, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                log::debug!("websocket closed: {e}");
                return;
            }
            Ok(None) => return,
            Err(_) => {
                let _ = ws.close(None).await;
                return;
            }
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                if send_error(&mut ws, 400, "invalid_request_error", "Messages must be JSON text").await.is_err() {
                    return;
                }
                continue;
            }
            Message::Close(_) => {
                // tungstenite answers the close; flush it before leaving.
                let _ = ws.flush().await;
                return;
            }
            _ => continue,
        };
        let body = match turn_body(text.as_str()) {
            Ok(Some(Turn::Run(b))) => b,
            Ok(Some(Turn::Prewarm(model))) => {
                if prewarm(&mut ws, &model).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => continue,
            Err(message) => {
                if send_error(&mut ws, 400, "invalid_request_error", &message).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if run_turn(&live.current(), &template, body, &mut ws).await.is_err() {
            return;
        }
    }
}

/// What a `response.create` asks for.
#[derive(Debug, PartialEq)]
enum Turn {
    /// A Responses request body, to run.
    Run(Bytes),
    /// `generate: false`, for this model: Codex warms the connection up
    /// before its first turn and discards the answer.
    Prewarm(String),
}

/// The turn a client message asks for: `Ok(None)` for messages that need no
/// answer (`response.processed`).
fn turn_body(text: &str) -> Result<Option<Turn>, String> {
    let mut v: Value = serde_json::from_str(text).map_err(|e| format!("Invalid JSON message: {e}"))?;
    let Some(obj) = v.as_object_mut() else { return Err("A message must be a JSON object".into()) };
    match obj.remove("type").as_ref().and_then(Value::as_str) {
        Some("response.create") => {}
        Some("response.processed") => return Ok(None),
        Some(other) => return Err(format!("Unsupported message type '{other}': send 'response.create'")),
        None => return Err("A message needs a 'type': send 'response.create'".into()),
    }
    if obj.get("generate") == Some(&Value::Bool(false)) {
        let model = obj.get("model").and_then(Value::as_str).unwrap_or_default();
        return Ok(Some(Turn::Prewarm(model.to_string())));
    }
    obj.remove("generate");
    // Events are what the transport carries: the turn always streams.
    obj.insert("stream".into(), Value::Bool(true));
    serde_json::to_vec(&v).map(|b| Some(Turn::Run(Bytes::from(b)))).map_err(|e| e.to_string())
}

/// Answers a warm-up at once with an empty completed response. Forwarded, it
/// would make an upstream generate a whole answer (and the user pay for it)
/// that Codex throws away.
async fn prewarm(ws: &mut Socket, model: &str) -> Result<(), Closed> {
    let id = format!("resp_{}", &super::ctx::new_request_id()[4..]);
    let response = |status: &str| {
        json!({"id": id, "object": "response", "created_at": crate::clock::now_ms() / 1000, "status": status,
               "model": model, "output": [], "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
               "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}})
    };
    for (n, (kind, status)) in
        [("response.created", "in_progress"), ("response.completed", "completed")].iter().enumerate()
    {
        let event = json!({"type": kind, "sequence_number": n, "response": response(status)});
        ws.feed(Message::text(event.to_string())).await.map_err(|_| Closed)?;
    }
    ws.flush().await.map_err(|_| Closed)
}

/// The socket failed or closed: the conversation ends.
struct Closed;

async fn send_error(ws: &mut Socket, status: u16, kind: &str, message: &str) -> Result<(), Closed> {
    let event = json!({"type": "error", "status": status, "error": {"type": kind, "message": message}});
    ws.send(Message::text(event.to_string())).await.map_err(|_| Closed)
}

/// One turn: the request on an internal connection served by the gateway's
/// HTTP path, its events relayed as messages.
async fn run_turn(app: &Arc<App>, template: &TurnTemplate, body: Bytes, ws: &mut Socket) -> Result<(), Closed> {
    let (client_io, server_io) = tokio::io::duplex(PIPE);
    let server = serve_internal(app, server_io, template.client_ip);
    let client = exchange(template, body, client_io, ws);
    let ((), outcome) = tokio::join!(server, client);
    outcome
}

/// Serves one request on an in-memory connection, as `request_filter` and
/// `logging` do for a network one.
async fn serve_internal(app: &Arc<App>, io: DuplexStream, client_ip: Option<IpAddr>) {
    let mut session = Session::new_h1(Box::new(io));
    match session.read_request().await {
        Ok(true) => {}
        _ => return,
    }
    let mut ctx = RequestCtx::new(InFlight::new(app.clone()));
    ctx.client_ip = client_ip;
    // A turn is a POST: never another upgrade.
    if let Err(e) = handler::handle(app, &mut session, &mut ctx).await {
        respond::error(&mut session, &mut ctx, &e).await;
    }
    settle::settle(app, &session, &mut ctx).await;
    let _ = session.downstream_session.finish().await;
}

/// Sends the turn's request and relays the answer: each SSE event's data as a
/// text message, or an `error` event for a refused request.
async fn exchange(template: &TurnTemplate, body: Bytes, io: DuplexStream, ws: &mut Socket) -> Result<(), Closed> {
    let io = hyper_util::rt::TokioIo::new(io);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io).await else {
        return send_error(ws, 500, "server_error", "The gateway could not start the turn").await;
    };
    let mut req = http::Request::post("/v1/responses");
    for (n, v) in &template.headers {
        req = req.header(n, v);
    }
    let req = req.header("content-type", "application/json").header("accept", "text/event-stream");
    let Ok(req) = req.body(Full::new(body)) else {
        return send_error(ws, 400, "invalid_request_error", "The upgrade request's headers are invalid").await;
    };
    let relay = async move {
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return send_error(ws, 500, "server_error", &format!("The turn failed: {e}")).await,
        };
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status >= 400 {
            let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return send_refusal(ws, status, &bytes).await;
        }
        relay_events(&mut body, ws).await
    };
    // The connection task ends when the server side closes or the request is
    // dropped (the client left): both end the turn.
    let (_, outcome) = tokio::join!(conn, relay);
    outcome
}

/// A refused turn (401, 402, 429, …): the gateway's error body, as the
/// `error` event Codex reads (with the HTTP status it would have had).
async fn send_refusal(ws: &mut Socket, status: u16, body: &[u8]) -> Result<(), Closed> {
    let error = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("error").map(Value::take))
        .unwrap_or_else(|| json!({"type": "server_error", "message": String::from_utf8_lossy(body)}));
    let event = json!({"type": "error", "status": status, "error": error});
    ws.send(Message::text(event.to_string())).await.map_err(|_| Closed)
}

/// Relays the SSE body; a client that closes the socket mid-turn ends the
/// turn (dropping the body tells the internal request the client is gone).
async fn relay_events(body: &mut hyper::body::Incoming, ws: &mut Socket) -> Result<(), Closed> {
    let mut events = crate::sse::Splitter::new();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            m = ws.next() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Err(Closed),
                // One turn at a time: anything else waits for the answer's end.
                _ => continue,
            },
        };
        let chunk = match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Some(Err(_)) | None => break,
        };
        for raw in events.push(&chunk) {
            send_event(ws, &raw).await?;
        }
        ws.flush().await.map_err(|_| Closed)?;
    }
    if let Some(raw) = events.finish() {
        send_event(ws, &raw).await?;
    }
    ws.flush().await.map_err(|_| Closed)
}

async fn send_event(ws: &mut Socket, raw: &[u8]) -> Result<(), Closed> {
    let ev = crate::sse::parse(raw);
    if ev.is_comment || ev.data.is_empty() || ev.data == "[DONE]" {
        return Ok(());
    }
    // Fed, then flushed once per chunk: a burst of events leaves in one write.
    ws.feed(Message::text(ev.data.into_owned())).await.map_err(|_| Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_message_becomes_a_streaming_request() {
        let turn = turn_body(r#"{"type":"response.create","model":"m","input":"hi","stream":false}"#).unwrap();
        let Some(Turn::Run(body)) = turn else { panic!("{turn:?}") };
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"model": "m", "input": "hi", "stream": true}));
        let warm = turn_body(r#"{"type":"response.create","model":"m","input":[],"generate":false}"#).unwrap();
        assert_eq!(warm, Some(Turn::Prewarm("m".into())));
        assert_eq!(turn_body(r#"{"type":"response.processed","response_id":"r"}"#), Ok(None));
        assert!(turn_body(r#"{"type":"session.update"}"#).unwrap_err().contains("session.update"));
        assert!(turn_body("[1]").is_err());
        assert!(turn_body("{").unwrap_err().starts_with("Invalid JSON"));
    }

    #[test]
    fn handshake_headers_stay_off_the_turn() {
        assert!(turn_drops("sec-websocket-key") && turn_drops("upgrade") && turn_drops("connection"));
        assert!(!turn_drops("authorization") && !turn_drops("session_id") && !turn_drops("originator"));
    }
}
