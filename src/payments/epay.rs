//! EPay (易支付), the merchant protocol of many Chinese payment gateways:
//! the user is sent to `{gateway}/submit.php` with the order and an MD5
//! signature, and the gateway notifies `notify_url` (GET or POST) with the
//! result, signed the same way. A notification is acted on only when its
//! signature, merchant id, order and amount all check out; it is answered
//! `success` so the gateway stops repeating it.
//!
//! The signature: every parameter but `sign`, `sign_type` and empty ones,
//! sorted by name, joined as raw `k=v&k=v`, with the merchant key appended,
//! MD5, lower-case hex.

use super::{Checkout, CheckoutRequest, Notice, Notification, PaymentError, Provider};
use crate::config::units::{format_money, parse_fixed};
use crate::config::{EpayConfig, EPAY_CURRENCY};
use async_trait::async_trait;
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

pub struct Epay {
    cfg: EpayConfig,
}

impl Epay {
    pub fn new(cfg: EpayConfig) -> Epay {
        Epay { cfg }
    }
}

/// The EPay signature of `params` under `key`.
pub fn sign(params: &[(String, String)], key: &str) -> String {
    let mut signed: Vec<&(String, String)> =
        params.iter().filter(|(k, v)| k != "sign" && k != "sign_type" && !v.is_empty()).collect();
    signed.sort_by(|a, b| a.0.cmp(&b.0));
    let joined = signed.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let digest = Md5::digest(format!("{joined}{key}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[async_trait]
impl Provider for Epay {
    fn name(&self) -> &'static str {
        "epay"
    }

    fn currency(&self) -> &str {
        EPAY_CURRENCY
    }

    fn methods(&self) -> &[String] {
        &self.cfg.types
    }

    async fn checkout(&self, req: &CheckoutRequest<'_>) -> Result<Checkout, PaymentError> {
        let o = req.order;
        let mut params: Vec<(String, String)> = vec![
            ("pid".into(), self.cfg.pid.clone()),
            ("type".into(), o.method.clone()),
            ("out_trade_no".into(), o.id.clone()),
            ("notify_url".into(), req.notify_url.into()),
            ("return_url".into(), req.return_url.into()),
            ("name".into(), req.product.into()),
            ("money".into(), format_money(o.amount, EPAY_CURRENCY)),
        ];
        let signature = sign(&params, self.cfg.key.expose());
        params.push(("sign".into(), signature));
        params.push(("sign_type".into(), "MD5".into()));
        let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
        Ok(Checkout { url: format!("{}/submit.php?{query}", self.cfg.gateway_url), reference: None })
    }

    fn read(&self, n: &Notification, _now_ms: i64) -> Result<Notice, PaymentError> {
        // GET carries the parameters in the query, POST in a form body.
        let raw: &[u8] = if n.method == "POST" { n.body } else { n.query.as_bytes() };
        let params: Vec<(String, String)> = form_urlencoded::parse(raw).into_owned().collect();
        let presented = param(&params, "sign").ok_or(PaymentError::BadSignature)?;
        let expected = sign(&params, self.cfg.key.expose());
        if presented.len() != expected.len() || !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(PaymentError::BadSignature);
        }
        let get = |name: &str| param(&params, name).ok_or_else(|| PaymentError::Malformed(format!("no {name}")));
        if get("pid")? != self.cfg.pid {
            return Err(PaymentError::Malformed("another merchant's notification".into()));
        }
        let status = get("trade_status")?;
        if status != "TRADE_SUCCESS" {
            return Ok(Notice::Ignored(format!("trade_status {status}")));
        }
        let amount = parse_fixed(get("money")?, 2).map_err(PaymentError::Malformed)?;
        let trade_no = get("trade_no")?.to_string();
        Ok(Notice::Paid {
            event_id: trade_no.clone(),
            order_id: get("out_trade_no")?.to_string(),
            amount,
            currency: EPAY_CURRENCY.into(),
            reference: Some(trade_no),
        })
    }

    fn answer(&self, outcome: &Result<(), PaymentError>) -> (u16, &'static str, String) {
        match outcome {
            Ok(()) => (200, "text/plain; charset=utf-8", "success".into()),
            Err(PaymentError::Store(_)) => (500, "text/plain; charset=utf-8", "fail".into()),
            Err(_) => (400, "text/plain; charset=utf-8", "fail".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use bytes::Bytes;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_reference_test_vector() {
        // go-epay's util_test.go: device=devicev&money=moneyv + 1234567.
        let p =
            pairs(&[("money", "moneyv"), ("device", "devicev"), ("sign_type", "MD5"), ("sign", "x"), ("empty", "")]);
        assert_eq!(sign(&p, "1234567"), "3854cc9f022e0fb821bd2e002260245d");
    }

    fn epay() -> Epay {
        Epay::new(EpayConfig {
            gateway_url: "https://pay.example.com".into(),
            pid: "1001".into(),
            key: Secret::new("merchant-key"),
            types: vec!["alipay".into(), "wxpay".into()],
        })
    }

    fn notify(method: &str, extra: &[(&str, &str)], tamper: bool) -> Result<Notice, PaymentError> {
        let mut p = pairs(&[
            ("pid", "1001"),
            ("trade_no", "2026120112345"),
            ("out_trade_no", "ORDX"),
            ("type", "alipay"),
            ("name", "10 credits"),
            ("money", "72.00"),
            ("trade_status", "TRADE_SUCCESS"),
        ]);
        for (k, v) in extra {
            p.retain(|(n, _)| n != k);
            p.push((k.to_string(), v.to_string()));
        }
        let s = sign(&p, "merchant-key");
        p.push(("sign".into(), if tamper { s.replace('a', "b") } else { s }));
        p.push(("sign_type".into(), "MD5".into()));
        let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(&p).finish();
        let body = Bytes::from(if method == "POST" { encoded.clone() } else { String::new() });
        let query = if method == "GET" { encoded } else { String::new() };
        epay().read(&Notification { method, query: &query, signature: None, content_type: None, body: &body }, 0)
    }

    #[test]
    fn notifications_by_get_and_post() {
        for method in ["GET", "POST"] {
            let n = notify(method, &[], false).unwrap();
            assert_eq!(
                n,
                Notice::Paid {
                    event_id: "2026120112345".into(),
                    order_id: "ORDX".into(),
                    amount: 7200,
                    currency: "cny".into(),
                    reference: Some("2026120112345".into())
                }
            );
        }
        assert!(matches!(notify("GET", &[], true), Err(PaymentError::BadSignature)));
        assert!(matches!(notify("GET", &[("pid", "9999")], false), Err(PaymentError::Malformed(_))));
        assert!(matches!(notify("GET", &[("trade_status", "WAIT_BUYER_PAY")], false), Ok(Notice::Ignored(_))));
    }

    #[tokio::test]
    async fn checkout_links_are_signed() {
        let order = crate::store::orders::OrderRow {
            id: "ORDX".into(),
            user_id: 1,
            email: String::new(),
            provider: "epay".into(),
            method: "wxpay".into(),
            status: crate::store::orders::OrderStatus::Pending,
            amount: 7200,
            currency: "cny".into(),
            credits: 10_000_000,
            plan_id: None,
            package: None,
            provider_ref: None,
            checkout_url: None,
            ledger_id: None,
            created_at: 0,
            expires_at: 0,
            paid_at: None,
            updated_at: 0,
            note: String::new(),
        };
        let req = CheckoutRequest {
            order: &order,
            product: "10 credits",
            email: "",
            return_url: "https://relay.example.com/console/billing/orders/ORDX",
            notify_url: "https://relay.example.com/payments/epay/notify",
        };
        let c = epay().checkout(&req).await.unwrap();
        let (base, query) = c.url.split_once('?').unwrap();
        assert_eq!(base, "https://pay.example.com/submit.php");
        let p: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        assert_eq!(param(&p, "money"), Some("72.00"));
        assert_eq!(param(&p, "type"), Some("wxpay"));
        assert_eq!(param(&p, "sign"), Some(sign(&p, "merchant-key").as_str()));
    }
}
