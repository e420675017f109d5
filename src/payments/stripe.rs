//! Stripe Checkout, as Stripe documents it: a Checkout Session created over
//! the REST API (form-encoded, the secret key as bearer, the order id as
//! idempotency key and `client_reference_id`), and fulfilment from the
//! `checkout.session.*` webhooks only, each verified by its
//! `Stripe-Signature` (HMAC-SHA256 of `t.payload` under the endpoint secret,
//! compared in constant time, five minutes of clock tolerance).

use super::{Checkout, CheckoutRequest, Notice, Notification, PaymentError, Provider};
use crate::config::StripeConfig;
use crate::store::orders::OrderStatus;
use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Signatures older (or newer) than this are refused: a replayed old event
/// does nothing even if it was once genuine.
const TOLERANCE_SECS: i64 = 300;

pub struct Stripe {
    cfg: StripeConfig,
    http: reqwest::Client,
    methods: Vec<String>,
}

impl Stripe {
    pub fn new(cfg: StripeConfig) -> Stripe {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("codex-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Stripe { cfg, http, methods: vec!["card".into()] }
    }
}

/// The signature of `t.payload` under `secret`, as Stripe computes it.
pub fn sign(secret: &str, t: i64, payload: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a `Stripe-Signature` header (`t=…,v1=…[,v1=…]`) against the raw body.
/// Any `v1` may match (several appear while a secret is rolled).
pub fn verify(secret: &str, header: &str, payload: &[u8], now_secs: i64) -> Result<(), PaymentError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(PaymentError::BadSignature)?;
    if (now_secs - t).abs() > TOLERANCE_SECS {
        return Err(PaymentError::BadSignature);
    }
    let expected = sign(secret, t, payload);
    let ok = sigs.iter().any(|s| s.len() == expected.len() && bool::from(s.as_bytes().ct_eq(expected.as_bytes())));
    if ok {
        Ok(())
    } else {
        Err(PaymentError::BadSignature)
    }
}

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: Session,
}

#[derive(Deserialize)]
struct Session {
    id: String,
    client_reference_id: Option<String>,
    payment_status: Option<String>,
    amount_total: Option<i64>,
    currency: Option<String>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

impl Session {
    /// The order: `client_reference_id`, else `metadata.order_id`.
    fn order_id(&self) -> Result<String, PaymentError> {
        self.client_reference_id
            .clone()
            .or_else(|| self.metadata.get("order_id").cloned())
            .ok_or_else(|| PaymentError::Malformed("the session names no order".into()))
    }
}

#[derive(Deserialize)]
struct Created {
    id: String,
    url: String,
}

#[async_trait]
impl Provider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn currency(&self) -> &str {
        &self.cfg.currency
    }

    fn methods(&self) -> &[String] {
        &self.methods
    }

    async fn checkout(&self, req: &CheckoutRequest<'_>) -> Result<Checkout, PaymentError> {
        let o = req.order;
        let amount = o.amount.to_string();
        let expires = (o.expires_at / 1000).to_string();
        let mut form = vec![
            ("mode", "payment"),
            ("line_items[0][price_data][currency]", o.currency.as_str()),
            ("line_items[0][price_data][unit_amount]", amount.as_str()),
            ("line_items[0][price_data][product_data][name]", req.product),
            ("line_items[0][quantity]", "1"),
            ("success_url", req.return_url),
            ("cancel_url", req.return_url),
            ("client_reference_id", o.id.as_str()),
            ("metadata[order_id]", o.id.as_str()),
            ("expires_at", expires.as_str()),
        ];
        if !req.email.is_empty() {
            form.push(("customer_email", req.email));
        }
        let r = self
            .http
            .post(format!("{}/v1/checkout/sessions", self.cfg.api_base))
            .bearer_auth(self.cfg.secret_key.expose())
            // A retried create returns the first session instead of a second one.
            .header("Idempotency-Key", o.id.as_str())
            .form(&form)
            .send()
            .await
            .map_err(|e| PaymentError::Provider(format!("cannot reach Stripe: {e}")))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| PaymentError::Provider(e.to_string()))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(PaymentError::Provider(message));
        }
        let created: Created =
            serde_json::from_slice(&body).map_err(|e| PaymentError::Provider(format!("unexpected answer: {e}")))?;
        Ok(Checkout { url: created.url, reference: Some(created.id) })
    }

    fn read(&self, n: &Notification, now_ms: i64) -> Result<Notice, PaymentError> {
        if n.method != "POST" {
            return Err(PaymentError::Malformed("webhooks are POSTed".into()));
        }
        let header = n.signature.ok_or(PaymentError::BadSignature)?;
        verify(self.cfg.webhook_secret.expose(), header, n.body, now_ms / 1000)?;
        let event: Event = serde_json::from_slice(n.body).map_err(|e| PaymentError::Malformed(e.to_string()))?;
        let s = &event.data.object;
        let paid = |s: &Session| -> Result<Notice, PaymentError> {
            Ok(Notice::Paid {
                event_id: event.id.clone(),
                order_id: s.order_id()?,
                amount: s.amount_total.ok_or_else(|| PaymentError::Malformed("no amount_total".into()))?,
                currency: s.currency.clone().ok_or_else(|| PaymentError::Malformed("no currency".into()))?,
                reference: Some(s.id.clone()),
            })
        };
        let closed = |status, note: &str| -> Result<Notice, PaymentError> {
            Ok(Notice::Closed { event_id: event.id.clone(), order_id: s.order_id()?, status, note: note.into() })
        };
        match event.kind.as_str() {
            // Delayed methods complete unpaid and succeed (or fail) later.
            "checkout.session.completed" if s.payment_status.as_deref() == Some("paid") => paid(s),
            "checkout.session.completed" => Ok(Notice::Ignored(format!("{} completed unpaid; waiting", s.id))),
            "checkout.session.async_payment_succeeded" => paid(s),
            "checkout.session.async_payment_failed" => closed(OrderStatus::Failed, "the payment failed"),
            "checkout.session.expired" => closed(OrderStatus::Expired, "the checkout expired"),
            other => Ok(Notice::Ignored(format!("event type {other}"))),
        }
    }

    fn answer(&self, outcome: &Result<(), PaymentError>) -> (u16, &'static str, String) {
        match outcome {
            Ok(()) => (200, "application/json", r#"{"received":true}"#.into()),
            Err(PaymentError::Store(_)) => (500, "application/json", r#"{"error":"try again"}"#.into()),
            Err(e) => (400, "application/json", serde_json::json!({ "error": e.to_string() }).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_own_test_vector() {
        // From the reference: secret whsec_test, t=1700000000, body {"id":"evt_1"}.
        let sig = sign("whsec_test", 1_700_000_000, br#"{"id":"evt_1"}"#);
        assert_eq!(sig, "c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925");
        let header = format!("t=1700000000,v1=deadbeef,v1={sig},v0=ignored");
        assert!(verify("whsec_test", &header, br#"{"id":"evt_1"}"#, 1_700_000_100).is_ok(), "any v1 may match");
        // Too old, a changed body, another secret, no timestamp: refused.
        for (secret, header, body, now) in [
            ("whsec_test", header.as_str(), &br#"{"id":"evt_1"}"#[..], 1_700_000_301),
            ("whsec_test", header.as_str(), &br#"{"id":"evt_2"}"#[..], 1_700_000_000),
            ("whsec_other", header.as_str(), &br#"{"id":"evt_1"}"#[..], 1_700_000_000),
            ("whsec_test", &format!("v1={sig}"), &br#"{"id":"evt_1"}"#[..], 1_700_000_000),
        ] {
            assert!(matches!(verify(secret, header, body, now), Err(PaymentError::BadSignature)));
        }
    }

    fn stripe() -> Stripe {
        Stripe::new(StripeConfig {
            secret_key: crate::config::Secret::new("sk_test"),
            webhook_secret: crate::config::Secret::new("whsec_test"),
            api_base: "http://127.0.0.1:9".into(),
            currency: "usd".into(),
        })
    }

    fn read(kind: &str, status: &str, now_ms: i64) -> Result<Notice, PaymentError> {
        let body = Bytes::from(
            serde_json::json!({"id": "evt_9", "type": kind, "data": {"object": {
                "id": "cs_1", "client_reference_id": "ORD1", "payment_status": status,
                "amount_total": 1000, "currency": "usd"}}})
            .to_string(),
        );
        let header = format!("t={},v1={}", now_ms / 1000, sign("whsec_test", now_ms / 1000, &body));
        let n = Notification { method: "POST", query: "", signature: Some(&header), content_type: None, body: &body };
        stripe().read(&n, now_ms)
    }

    use bytes::Bytes;

    #[test]
    fn events_become_notices() {
        let now = 1_700_000_000_000;
        let paid = read("checkout.session.completed", "paid", now).unwrap();
        assert_eq!(
            paid,
            Notice::Paid {
                event_id: "evt_9".into(),
                order_id: "ORD1".into(),
                amount: 1000,
                currency: "usd".into(),
                reference: Some("cs_1".into())
            }
        );
        assert!(matches!(read("checkout.session.completed", "unpaid", now).unwrap(), Notice::Ignored(_)));
        assert!(matches!(read("checkout.session.async_payment_succeeded", "paid", now).unwrap(), Notice::Paid { .. }));
        assert!(matches!(
            read("checkout.session.expired", "unpaid", now).unwrap(),
            Notice::Closed { status: OrderStatus::Expired, .. }
        ));
        assert!(matches!(read("charge.refunded", "paid", now).unwrap(), Notice::Ignored(_)));
    }
}
