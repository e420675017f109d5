//! A fake Stripe API on loopback: `POST /v1/checkout/sessions` as Stripe
//! answers it (bearer secret key required, one session per idempotency key),
//! with every request recorded. Tests then play Stripe's side of the webhook
//! with `event` and `signed`.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

pub const SECRET_KEY: &str = "sk_test_fake_0123456789";
pub const WEBHOOK_SECRET: &str = "whsec_fake_0123456789";

/// A checkout session request as the fake received it.
#[derive(Debug, Clone)]
pub struct Created {
    pub idempotency_key: String,
    pub form: HashMap<String, String>,
    pub session_id: String,
}

#[derive(Default)]
struct State {
    created: Vec<Created>,
    by_key: HashMap<String, String>,
    /// Answer the next create with this status and message.
    refuse: Option<(u16, String)>,
}

pub struct FakeStripe {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _rt: std::thread::JoinHandle<()>,
}

impl FakeStripe {
    pub fn start() -> FakeStripe {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let rt = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    let st = st.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(st.clone(), addr, req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        FakeStripe { addr, state, _rt: rt }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn created(&self) -> Vec<Created> {
        self.state.lock().created.clone()
    }

    pub fn refuse_next(&self, status: u16, message: &str) {
        self.state.lock().refuse = Some((status, message.to_string()));
    }
}

async fn handle(
    st: Arc<Mutex<State>>,
    addr: SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let reply = |status: u16, v: Value| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap()
    };
    if parts.method != hyper::Method::POST || parts.uri.path() != "/v1/checkout/sessions" {
        return Ok(reply(404, json!({"error": {"message": "Unrecognized request URL"}})));
    }
    let auth = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth != format!("Bearer {SECRET_KEY}") {
        return Ok(reply(401, json!({"error": {"message": "Invalid API Key provided"}})));
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let key = parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut s = st.lock();
    if let Some((status, message)) = s.refuse.take() {
        return Ok(reply(status, json!({"error": {"type": "invalid_request_error", "message": message}})));
    }
    let id = match s.by_key.get(&key) {
        Some(id) => id.clone(),
        None => {
            let id = format!("cs_test_{}", s.created.len() + 1);
            s.by_key.insert(key.clone(), id.clone());
            id
        }
    };
    s.created.push(Created { idempotency_key: key, form: form.clone(), session_id: id.clone() });
    Ok(reply(
        200,
        json!({
            "id": id, "object": "checkout.session", "status": "open", "payment_status": "unpaid",
            "url": format!("http://{addr}/pay/{id}"),
            "client_reference_id": form.get("client_reference_id"),
            "amount_total": form.get("line_items[0][price_data][unit_amount]").and_then(|a| a.parse::<i64>().ok()),
            "currency": form.get("line_items[0][price_data][currency]"),
        }),
    ))
}

/// A `checkout.session.*` event as Stripe sends it.
pub fn event(id: &str, kind: &str, session: &str, order: &str, paid: bool, amount: i64, currency: &str) -> String {
    json!({
        "id": id, "object": "event", "type": kind, "api_version": "2024-06-20",
        "data": {"object": {
            "id": session, "object": "checkout.session", "client_reference_id": order,
            "payment_status": if paid { "paid" } else { "unpaid" }, "status": "complete",
            "amount_total": amount, "currency": currency, "metadata": {"order_id": order},
        }},
    })
    .to_string()
}

/// The `Stripe-Signature` header for `body` at unix time `t`.
pub fn signed(body: &str, t: i64, secret: &str) -> String {
    format!("t={t},v1={}", codex_proxy::payments::stripe::sign(secret, t, body.as_bytes()))
}
