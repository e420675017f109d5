//! A fake OpenAI + Anthropic upstream on loopback: the demo upstream of `serve`
//! when no provider key is configured, the upstream of the tests, and the
//! upstream of the benchmarks (`codex-proxy fake-upstream --listen ADDR`).
//!
//! It speaks the real wire formats (chat, responses, embeddings incl. base64,
//! models; messages, count_tokens), streams included, with usage. Tests script
//! it with [`Behavior`]s (status sequences, delays, split SSE frames, cut
//! streams, hangs), in process through [`FakeUpstream`] or over HTTP
//! (`POST /_fake/script`, `GET /_fake/requests`, `POST /_fake/reset`), and read
//! back every request it received.

mod render;
pub mod script;

pub use script::{Behavior, FakeToolCall, FakeUsage, Recorded};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use parking_lot::Mutex;
use render::Reply;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// How the fake behaves when not scripted.
#[derive(Debug, Clone, Default)]
pub struct FakeOptions {
    /// Answer `/v1/responses` with 404, like chat-only OpenAI-compatible servers.
    pub chat_only: bool,
    /// Require this key (Bearer or x-api-key); others get 401.
    pub expected_key: Option<String>,
    /// Remember at most this many requests (0: the default of 10,000).
    pub max_recorded: usize,
    /// Serve HTTPS with this certificate chain and key (PEM).
    pub tls: Option<TlsIdentity>,
}

#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

fn tls_acceptor(id: &TlsIdentity) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let certs = rustls_pemfile::certs(&mut id.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut id.key_pem.as_bytes())?.ok_or_else(|| bad("no private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// State shared by every connection of one fake upstream.
pub struct FakeState {
    opts: Mutex<FakeOptions>,
    script: Mutex<VecDeque<Behavior>>,
    recorded: Mutex<VecDeque<Recorded>>,
    hits: AtomicU64,
    next_id: AtomicU64,
}

impl FakeState {
    pub fn new(opts: FakeOptions) -> Arc<FakeState> {
        Arc::new(FakeState {
            opts: Mutex::new(opts),
            script: Mutex::new(VecDeque::new()),
            recorded: Mutex::new(VecDeque::new()),
            hits: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        })
    }

    pub fn push_script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.script.lock().extend(behaviors);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().iter().cloned().collect()
    }

    /// Requests received (including unrecorded ones beyond the cap).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.script.lock().clear();
        self.recorded.lock().clear();
        self.hits.store(0, Ordering::Relaxed);
    }

    pub fn set_chat_only(&self, on: bool) {
        self.opts.lock().chat_only = on;
    }

    pub fn set_expected_key(&self, key: Option<String>) {
        self.opts.lock().expected_key = key;
    }

    fn take_behavior(&self, path: &str, body: &[u8]) -> Behavior {
        let mut script = self.script.lock();
        let body = String::from_utf8_lossy(body);
        let pos = script.iter().position(|b| {
            b.path.as_deref().is_none_or(|p| path.starts_with(p))
                && b.body_contains.as_deref().is_none_or(|s| body.contains(s))
        });
        pos.and_then(|i| script.remove(i)).unwrap_or_default()
    }
}

/// A fake upstream running on its own thread and runtime; stops when dropped.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeUpstream {
    /// Binds `127.0.0.1:0` and serves.
    pub fn start(opts: FakeOptions) -> std::io::Result<FakeUpstream> {
        Self::start_on("127.0.0.1:0".parse().expect("loopback address"), opts, 2)
    }

    pub fn start_on(addr: SocketAddr, opts: FakeOptions, threads: usize) -> std::io::Result<FakeUpstream> {
        let listener = std::net::TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = FakeState::new(opts);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new().name("fake-upstream".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()
                .expect("fake upstream runtime");
            rt.block_on(async move {
                let _ = serve(listener, st, async {
                    let _ = stop_rx.await;
                })
                .await;
            });
        })?;
        Ok(FakeUpstream { addr, state, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// `http://127.0.0.1:PORT` (`https://localhost:PORT` when serving TLS).
    pub fn url(&self) -> String {
        if self.state.opts.lock().tls.is_some() {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    pub fn script(&self, b: Behavior) {
        self.state.push_script([b]);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves on an already bound listener until `shutdown` resolves.
pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<FakeState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let tls = state.opts.lock().tls.as_ref().map(tls_acceptor).transpose()?;
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("fake upstream accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let st = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(st.clone(), req));
            let mut builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let _ =
                        builder.keep_alive(true).serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                }
                None => {
                    let _ =
                        builder.keep_alive(true).serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never: Infallible| match never {}).boxed()
}

fn json_response(status: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(v.to_string()))
        .expect("static response parts")
}

/// A body fed by a channel: each item is written as its own chunk, an `Err`
/// breaks the connection mid-body.
struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// Which API a path belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Responses,
    Embeddings,
    Messages,
    CountTokens,
    Models,
}

fn api_of(path: &str) -> Option<Api> {
    let p = path.split('?').next().unwrap_or("");
    let p = p.strip_prefix("/v1").unwrap_or(p);
    Some(match p {
        "/chat/completions" => Api::Chat,
        "/responses" | "/responses/compact" => Api::Responses,
        "/embeddings" => Api::Embeddings,
        "/messages" => Api::Messages,
        "/messages/count_tokens" => Api::CountTokens,
        "/models" => Api::Models,
        _ => return None,
    })
}

fn error_response(api: Option<Api>, status: u16, message: &str) -> Response<Body> {
    let body = match api {
        Some(Api::Messages) | Some(Api::CountTokens) => render::anthropic_error(status, message),
        _ => render::openai_error(status, message),
    };
    json_response(status, &body)
}

async fn handle(state: Arc<FakeState>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error_response(None, 400, "could not read body")),
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    if let Some(resp) = control(&state, parts.method.as_str(), &path, &body) {
        return Ok(resp);
    }
    state.hits.fetch_add(1, Ordering::Relaxed);
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let cap = match state.opts.lock().max_recorded {
        0 => 10_000,
        n => n,
    };
    {
        let mut rec = state.recorded.lock();
        if rec.len() >= cap {
            rec.pop_front();
        }
        rec.push_back(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            received_ms: crate::clock::now_ms(),
        });
    }
    let behavior = state.take_behavior(&path, &body);
    let api = api_of(&path);
    if behavior.hang {
        std::future::pending::<()>().await;
    }
    if behavior.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behavior.delay_ms)).await;
    }
    let opts = state.opts.lock().clone();
    if let Some(expected) = &opts.expected_key {
        let bearer =
            parts.headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let x_key = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok());
        if bearer != Some(expected) && x_key != Some(expected) {
            return Ok(error_response(api, 401, "Incorrect API key provided"));
        }
    }
    let mut resp = respond(&state, &opts, api, parts.method.as_str(), &body, &behavior);
    for (k, v) in &behavior.headers {
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp.headers_mut().insert("x-request-id", http::HeaderValue::from_static("req_fake_upstream"));
    Ok(resp)
}

/// The `/_fake/*` control API.
fn control(state: &FakeState, method: &str, path: &str, body: &[u8]) -> Option<Response<Body>> {
    match (method, path) {
        ("POST", "/_fake/script") => Some(match serde_json::from_slice::<Vec<Behavior>>(body) {
            Ok(list) => {
                let n = list.len();
                state.push_script(list);
                json_response(200, &json!({"queued": n}))
            }
            Err(e) => json_response(400, &json!({"error": e.to_string()})),
        }),
        ("GET", "/_fake/requests") => Some(json_response(200, &json!(state.requests()))),
        ("GET", "/_fake/hits") => Some(json_response(200, &json!({"hits": state.hits()}))),
        ("POST", "/_fake/reset") => {
            state.reset();
            Some(json_response(200, &json!({"reset": true})))
        }
        ("POST", "/_fake/options") => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if let Some(c) = v.get("chat_only").and_then(Value::as_bool) {
                state.set_chat_only(c);
            }
            if let Some(k) = v.get("expected_key") {
                state.set_expected_key(k.as_str().map(str::to_string));
            }
            Some(json_response(200, &json!({"ok": true})))
        }
        _ => None,
    }
}

/// Text of the last user turn of a request, for the default reply.
fn last_user_text(req: &Value) -> String {
    fn text_of(content: &Value) -> String {
        match content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => {
                parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
            }
            _ => String::new(),
        }
    }
    let turns = req.get("messages").or_else(|| req.get("input"));
    match turns {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|m| m.get("content"))
            .map(text_of)
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn respond(
    state: &FakeState,
    opts: &FakeOptions,
    api: Option<Api>,
    method: &str,
    body: &[u8],
    b: &Behavior,
) -> Response<Body> {
    let Some(api) = api else {
        return error_response(None, 404, "Not Found");
    };
    if opts.chat_only && api == Api::Responses {
        return error_response(Some(api), 404, "Not Found: this upstream serves chat completions only");
    }
    let status = b.status.unwrap_or(200);
    if let Some(raw) = &b.body {
        let mut r = Response::builder().status(status).header("content-type", "application/json");
        if raw.starts_with("data:") || raw.starts_with("event:") {
            r = r.header("content-type", "text/event-stream");
        }
        return r.body(full(raw.clone())).unwrap_or_else(|_| error_response(Some(api), 500, "bad script"));
    }
    if !(200..300).contains(&status) {
        let mut resp = error_response(Some(api), status, &format!("fake upstream error {status}"));
        if status == 529 || StatusCode::from_u16(status).is_err() {
            *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        }
        return resp;
    }
    if api == Api::Models {
        if method != "GET" {
            return error_response(Some(api), 405, "Method Not Allowed");
        }
        let ids = ["gpt-4o-mini", "gpt-5.1-codex", "text-embedding-3-small", "claude-sonnet-4-6", "claude-haiku-4-5"];
        let data: Vec<Value> = ids.iter().map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "fake", "type": "model", "display_name": id})).collect();
        return json_response(200, &json!({"object": "list", "data": data, "has_more": false}));
    }
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error_response(Some(api), 400, &format!("invalid JSON: {e}")),
    };
    let model = req.get("model").and_then(Value::as_str).unwrap_or("unknown").to_string();
    let approx_input = (body.len() as u64).div_ceil(4).max(1);
    if api == Api::CountTokens {
        return json_response(200, &json!({"input_tokens": approx_input}));
    }
    if api == Api::Embeddings {
        let inputs: Vec<String> = match req.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => {
                a.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect()
            }
            _ => return error_response(Some(api), 400, "'input' is a required property"),
        };
        let dims =
            req.get("dimensions").and_then(Value::as_u64).unwrap_or(if model.contains("large") { 3072 } else { 1536 })
                as usize;
        let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
        let tokens = b
            .usage
            .map(|u| u.input)
            .unwrap_or_else(|| inputs.iter().map(|s| (s.len() as u64).div_ceil(4).max(1)).sum());
        return json_response(200, &render::embeddings_json(&model, &inputs, dims.clamp(1, 8192), base64, tokens));
    }
    let said: String = last_user_text(&req).chars().take(80).collect();
    let text = b.text.clone().unwrap_or_else(|| format!("Hello from the codex-proxy demo upstream. You said: {said}"));
    let output =
        (text.len() as u64).div_ceil(4).max(1) + b.reasoning.as_ref().map_or(0, |r| (r.len() as u64).div_ceil(4));
    let usage = b.usage.unwrap_or(FakeUsage { input: approx_input, cached: 0, cache_write: 0, output, reasoning: 0 });
    let reply = Reply {
        id: format!("fake{}", state.next_id.fetch_add(1, Ordering::Relaxed)),
        created: (crate::clock::now_ms() / 1000) as u64,
        model,
        text,
        reasoning: b.reasoning.clone(),
        tool_call: b.tool_call.clone(),
        usage,
        include_usage: req.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true),
    };
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    if !stream {
        let v = match api {
            Api::Chat => render::chat_json(&reply),
            Api::Responses => render::responses_json(&reply),
            _ => render::messages_json(&reply),
        };
        return json_response(status, &v);
    }
    let mut events = match api {
        Api::Chat => render::chat_events(&reply),
        Api::Responses => render::responses_events(&reply),
        _ => render::messages_events(&reply),
    };
    if b.error_event {
        let ev = match api {
            Api::Chat => "data: {\"error\":{\"message\":\"The server is overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":\"server_is_overloaded\"}}\n\n".to_string(),
            Api::Responses => "event: error\ndata: {\"type\":\"error\",\"code\":\"server_is_overloaded\",\"message\":\"The server is overloaded\",\"param\":null,\"sequence_number\":0}\n\n".to_string(),
            _ => "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".to_string(),
        };
        events = vec![ev];
    }
    let ping = match api {
        Api::Messages => "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        _ => ": ping\n\n",
    };
    stream_response(status, events, b, ping)
}

/// Thinking: `think` of silence (or of pings every `ping`) after the first event.
async fn think(tx: &mpsc::Sender<std::io::Result<Bytes>>, think: Duration, ping: Duration, ping_event: &'static str) {
    let until = tokio::time::Instant::now() + think;
    while !ping.is_zero() && tokio::time::Instant::now() + ping < until {
        tokio::time::sleep(ping).await;
        if tx.send(Ok(Bytes::from_static(ping_event.as_bytes()))).await.is_err() {
            return;
        }
    }
    tokio::time::sleep_until(until).await;
}

fn stream_response(status: u16, events: Vec<String>, b: &Behavior, ping_event: &'static str) -> Response<Body> {
    let (tx, rx) = mpsc::channel(16);
    let split = b.split.max(1);
    let chunk_delay = Duration::from_millis(b.chunk_delay_ms);
    let (think_for, ping) = (Duration::from_millis(b.think_ms), Duration::from_millis(b.ping_ms));
    let cut_after = b.cut_after;
    tokio::spawn(async move {
        for (i, ev) in events.into_iter().enumerate() {
            if i == 1 && !think_for.is_zero() {
                think(&tx, think_for, ping, ping_event).await;
            }
            if cut_after == Some(i) {
                // Let what was sent reach the peer before the connection breaks.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(Err(std::io::Error::other("scripted cut"))).await;
                return;
            }
            if i > 0 && !chunk_delay.is_zero() {
                tokio::time::sleep(chunk_delay).await;
            }
            let bytes = ev.into_bytes();
            let step = bytes.len().div_ceil(split).max(1);
            for part in bytes.chunks(step) {
                if tx.send(Ok(Bytes::copy_from_slice(part))).await.is_err() {
                    return;
                }
                if split > 1 {
                    // Separate TCP writes: give the connection time to flush.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    });
    Response::builder()
        .status(status)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(ChannelBody(rx).boxed())
        .expect("static response parts")
}
