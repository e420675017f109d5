//! Buying credits through the real gateway with a fake Stripe API and a fake
//! EPay gateway (signatures made with the test secrets): a paid checkout
//! credits once; repeated, racing and replayed notifications credit nothing
//! more; forged, short, foreign-currency and unknown-order notifications
//! change nothing; and the ledger stays the sum of the paid orders.

mod common;

use common::browser::*;
use common::fake_stripe::{self, FakeStripe, SECRET_KEY, WEBHOOK_SECRET};
use common::*;
use serde_json::{json, Value};

const EPAY_KEY: &str = "epay-merchant-key-0123";

fn conf(fake: &codex_proxy::fake_upstream::FakeUpstream, stripe: &FakeStripe, extra: &str) -> String {
    format!(
        "{}\nplans:\n  - {{id: pro, name: Pro, daily_quota: 50, duration_days: 30}}\npayments:
  stripe: {{secret_key: {SECRET_KEY}, webhook_secret: {WEBHOOK_SECRET}, api_base: \"{}\"}}
  epay: {{gateway_url: \"https://pay.example.com\", pid: \"1001\", key: {EPAY_KEY}}}
  packages:
    - {{id: ten, name: 10 credits, credits: 10, prices: {{usd: 10, cny: \"72.00\"}}}}
    - {{id: pro, name: Pro month, plan: pro, prices: {{usd: 20}}}}
  custom: {{min_credits: 5, max_credits: 500, credit_price: {{usd: \"1.05\", cny: 7.3}}}}
{extra}",
        conf_with_admin(fake),
        stripe.url()
    )
}

fn conf_with_admin(fake: &codex_proxy::fake_upstream::FakeUpstream) -> String {
    common::conf(fake)
        .replace("admin:\n  listen: \"off\"", &format!("admin:\n  listen: 127.0.0.1:0\n  token: {ADMIN_TOKEN}"))
}

/// Buys on the console; returns the hand-over page and the new order's id.
async fn buy(gw: &Gateway, b: &Browser, item: &str, pay: &str, credits: Option<&str>) -> (Page, Option<String>) {
    let form = b.get("/console/billing").await;
    assert_eq!(form.status, 200, "{}", form.body);
    let (csrf, once) = (form.field("csrf"), form.field("once"));
    let mut f = vec![("csrf", csrf.as_str()), ("once", once.as_str()), ("item", item), ("pay", pay)];
    if let Some(c) = credits {
        f.push(("credits", c));
    }
    let page = b.post("/console/billing/orders", &f).await;
    let id =
        gw.db().query_row("SELECT id FROM orders ORDER BY created_at DESC, id DESC LIMIT 1", (), |r| r.get(0)).ok();
    (page, id)
}

async fn webhook(gw: &Gateway, body: &str, signature: &str) -> (u16, String) {
    let r = client()
        .post(gw.url("/payments/stripe/webhook"))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn now() -> i64 {
    codex_proxy::clock::now_ms() / 1000
}

fn balance(gw: &Gateway, email: &str) -> i64 {
    gw.db()
        .query_row(
            "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE account = 'credits' AND user_id = (SELECT id FROM users WHERE email = ?1)",
            [email],
            |r| r.get(0),
        )
        .unwrap()
}

fn status(gw: &Gateway, order: &str) -> String {
    gw.db().query_row("SELECT status FROM orders WHERE id = ?1", [order], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn stripe_checkout_is_credited_exactly_once() {
    let (fake, stripe) = (fake(), FakeStripe::start());
    let gw = Gateway::start(&conf(&fake, &stripe, ""));
    let b = signed_up(&gw, "buyer@x.io").await;
    let page = b.get("/console/billing").await;
    assert!(page.body.contains("10 credits") && page.body.contains("10.00 USD") && page.body.contains("72.00 CNY"));
    assert!(page.body.contains("Card (Stripe)") && page.body.contains("Alipay") && page.body.contains("WeChat Pay"));

    let (hand_over, order) = buy(&gw, &b, "ten", "stripe:card", None).await;
    let order = order.unwrap();
    assert_eq!(hand_over.status, 200, "{}", hand_over.body);
    // The page refreshes to Stripe's checkout (a form may only post to us).
    let pay_url = format!("{}/pay/cs_test_1", stripe.url());
    assert!(hand_over.body.contains(&format!("content=\"0;url={pay_url}\"")), "{}", hand_over.body);
    let created = stripe.created();
    assert_eq!(created.len(), 1);
    let c = &created[0];
    assert_eq!(c.idempotency_key, order, "the order is the idempotency key");
    for (k, v) in [
        ("mode", "payment"),
        ("line_items[0][price_data][currency]", "usd"),
        ("line_items[0][price_data][unit_amount]", "1000"),
        ("line_items[0][price_data][product_data][name]", "10 credits"),
        ("line_items[0][quantity]", "1"),
        ("client_reference_id", order.as_str()),
        ("metadata[order_id]", order.as_str()),
        ("customer_email", "buyer@x.io"),
    ] {
        assert_eq!(c.form.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(c.form["success_url"], gw.url(&format!("/console/billing/orders/{order}")));
    assert_eq!(status(&gw, &order), "pending");
    let waiting = b.get(&format!("/console/billing/orders/{order}")).await;
    assert!(
        waiting.body.contains("Waiting for the payment provider") && waiting.body.contains("http-equiv=\"refresh\"")
    );

    // Paid: credited, once however often Stripe repeats itself.
    let paid = fake_stripe::event("evt_1", "checkout.session.completed", "cs_test_1", &order, true, 1000, "usd");
    assert_eq!(
        webhook(&gw, &paid, &fake_stripe::signed(&paid, now(), WEBHOOK_SECRET)).await,
        (200, r#"{"received":true}"#.into())
    );
    assert_eq!(balance(&gw, "buyer@x.io"), 10_000_000);
    for _ in 0..3 {
        assert_eq!(webhook(&gw, &paid, &fake_stripe::signed(&paid, now(), WEBHOOK_SECRET)).await.0, 200);
    }
    let again =
        fake_stripe::event("evt_2", "checkout.session.async_payment_succeeded", "cs_test_1", &order, true, 1000, "usd");
    assert_eq!(webhook(&gw, &again, &fake_stripe::signed(&again, now(), WEBHOOK_SECRET)).await.0, 200);
    assert_eq!(balance(&gw, "buyer@x.io"), 10_000_000);
    assert_eq!(status(&gw, &order), "paid");
    let (reference, kind): (String, String) = gw
        .db()
        .query_row(
            "SELECT reference, kind FROM ledger WHERE ledger.id = (SELECT ledger_id FROM orders WHERE id = ?1)",
            [&order],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((reference, kind), (format!("order:{order}"), "payment".to_string()));
    // The user sees it, and the credits work at once.
    let done = b.get(&format!("/console/billing/orders/{order}")).await;
    assert!(done.body.contains("Paid. 10.00 credits added to your account."), "{}", done.body);
    let (_, key) = b.create_key(&[("name", "k")]).await;
    let (s, _, _) = post(
        &gw,
        "/v1/chat/completions",
        &key.unwrap(),
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn racing_replayed_forged_and_mismatched_webhooks_change_nothing() {
    let (fake, stripe) = (fake(), FakeStripe::start());
    let gw = Gateway::start(&conf(&fake, &stripe, ""));
    let b = signed_up(&gw, "race@x.io").await;
    let (_, order) = buy(&gw, &b, "ten", "stripe:card", None).await;
    let order = order.unwrap();

    // Forged: another secret, a changed body, no signature.
    let paid = fake_stripe::event("evt_a", "checkout.session.completed", "cs_test_1", &order, true, 1000, "usd");
    let forged = fake_stripe::signed(&paid, now(), "whsec_wrong");
    let (s, body) = webhook(&gw, &paid, &forged).await;
    assert_eq!((s, body.contains("signature")), (400, true), "{body}");
    let tampered = paid.replace("1000", "100000");
    assert_eq!(webhook(&gw, &tampered, &fake_stripe::signed(&paid, now(), WEBHOOK_SECRET)).await.0, 400);
    let r = client().post(gw.url("/payments/stripe/webhook")).body(paid.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Replayed: a genuine signature, ten minutes old.
    let old = now() - 600;
    assert_eq!(webhook(&gw, &paid, &fake_stripe::signed(&paid, old, WEBHOOK_SECRET)).await.0, 400);
    // Short and in another currency: refused, logged, the order failed.
    let short = fake_stripe::event("evt_b", "checkout.session.completed", "cs_test_1", &order, true, 999, "usd");
    assert_eq!(webhook(&gw, &short, &fake_stripe::signed(&short, now(), WEBHOOK_SECRET)).await.0, 400);
    assert_eq!(balance(&gw, "race@x.io"), 0);
    assert_eq!(status(&gw, &order), "failed");
    assert!(gw.stderr_text().contains(&format!(
        "payment evt_b for order {order} refused: stripe reported 9.99 USD, the order is 10.00 USD"
    )));

    let (_, order2) = buy(&gw, &b, "ten", "stripe:card", None).await;
    let order2 = order2.unwrap();
    let eur = fake_stripe::event("evt_c", "checkout.session.completed", "cs_test_2", &order2, true, 1000, "eur");
    assert_eq!(webhook(&gw, &eur, &fake_stripe::signed(&eur, now(), WEBHOOK_SECRET)).await.0, 400);
    assert_eq!(status(&gw, &order2), "failed");
    // An order nobody made: acknowledged (so Stripe stops), nothing changes.
    let stranger = fake_stripe::event("evt_d", "checkout.session.completed", "cs_x", "ORDNOPE", true, 1000, "usd");
    assert_eq!(webhook(&gw, &stranger, &fake_stripe::signed(&stranger, now(), WEBHOOK_SECRET)).await.0, 200);
    assert_eq!(balance(&gw, "race@x.io"), 0);

    // Two webhooks racing for one order (two event ids, like completed and
    // async_payment_succeeded arriving together), each sent four times.
    let (_, order3) = buy(&gw, &b, "ten", "stripe:card", None).await;
    let order3 = order3.unwrap();
    let mut sends = Vec::new();
    for i in 0..8 {
        let body = fake_stripe::event(
            &format!("evt_r{}", i % 2),
            "checkout.session.completed",
            "cs_test_3",
            &order3,
            true,
            1000,
            "usd",
        );
        let sig = fake_stripe::signed(&body, now(), WEBHOOK_SECRET);
        let url = gw.url("/payments/stripe/webhook");
        sends.push(tokio::spawn(async move {
            client().post(url).header("stripe-signature", sig).body(body).send().await.unwrap().status().as_u16()
        }));
    }
    for s in sends {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert_eq!(balance(&gw, "race@x.io"), 10_000_000, "credited once");
    let events: i64 =
        gw.db().query_row("SELECT count(*) FROM payment_events WHERE order_id = ?1", [&order3], |r| r.get(0)).unwrap();
    assert_eq!(events, 2, "one record per event id");

    // Expired checkouts expire their order.
    let (_, order4) = buy(&gw, &b, "ten", "stripe:card", None).await;
    let order4 = order4.unwrap();
    let expired = fake_stripe::event("evt_e", "checkout.session.expired", "cs_test_4", &order4, false, 1000, "usd");
    assert_eq!(webhook(&gw, &expired, &fake_stripe::signed(&expired, now(), WEBHOOK_SECRET)).await.0, 200);
    assert_eq!(status(&gw, &order4), "expired");

    // The ledger holds exactly the paid orders.
    let (paid_credits, ledger): (i64, i64) = gw
        .db()
        .query_row(
            "SELECT (SELECT SUM(credits) FROM orders WHERE status = 'paid'), (SELECT SUM(amount) FROM ledger WHERE kind = 'payment')",
            (),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((paid_credits, ledger), (10_000_000, 10_000_000));
}

#[tokio::test]
async fn epay_orders_are_signed_and_notifications_verified() {
    let (fake, stripe) = (fake(), FakeStripe::start());
    let gw = Gateway::start(&conf(&fake, &stripe, ""));
    let b = signed_up(&gw, "cn@x.io").await;
    let (hand_over, order) = buy(&gw, &b, "ten", "epay:alipay", None).await;
    let order = order.unwrap();
    let at = hand_over
        .body
        .find("id=\"pay-link\"")
        .map(|_| ())
        .and(hand_over.body.find("https://pay.example.com/submit.php?"));
    let start = at.expect("a link to the gateway");
    let link = &hand_over.body[start..hand_over.body[start..].find('"').unwrap() + start].replace("&amp;", "&");
    let params: Vec<(String, String)> =
        form_urlencoded::parse(link.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(
        (get("pid"), get("type"), get("out_trade_no"), get("money")),
        ("1001".into(), "alipay".into(), order.clone(), "72.00".into())
    );
    assert_eq!(get("notify_url"), gw.url("/payments/epay/notify"));
    assert_eq!(get("sign"), codex_proxy::payments::epay::sign(&params, EPAY_KEY), "signed with the merchant key");

    // The gateway's notification, as GET and as POST.
    let notification = |order: &str, money: &str, trade: &str, key: &str| {
        let mut p: Vec<(String, String)> = [
            ("pid", "1001"),
            ("trade_no", trade),
            ("out_trade_no", order),
            ("type", "alipay"),
            ("name", "10 credits"),
            ("money", money),
            ("trade_status", "TRADE_SUCCESS"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sign = codex_proxy::payments::epay::sign(&p, key);
        p.push(("sign".into(), sign));
        p.push(("sign_type".into(), "MD5".into()));
        form_urlencoded::Serializer::new(String::new()).extend_pairs(&p).finish()
    };
    let notify_get = |q: String| {
        let url = gw.url(&format!("/payments/epay/notify?{q}"));
        async move {
            let r = client().get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // Forged, short, another merchant's: "fail", nothing credited.
    assert_eq!(notify_get(notification(&order, "72.00", "T1", "wrong-key")).await, (400, "fail".into()));
    assert_eq!(notify_get(notification(&order, "7.20", "T2", EPAY_KEY)).await, (400, "fail".into()));
    assert_eq!(balance(&gw, "cn@x.io"), 0);
    assert_eq!(status(&gw, &order), "failed");
    // A new order, paid: "success", once.
    let (_, order) = buy(&gw, &b, "ten", "epay:wxpay", None).await;
    let order = order.unwrap();
    for _ in 0..3 {
        assert_eq!(notify_get(notification(&order, "72.00", "T3", EPAY_KEY)).await, (200, "success".into()));
    }
    assert_eq!(balance(&gw, "cn@x.io"), 10_000_000);
    // POST, for a free amount of 12 credits at 7.30 CNY each.
    let (_, order) = buy(&gw, &b, "custom", "epay:alipay", Some("12")).await;
    let order = order.unwrap();
    let r = client()
        .post(gw.url("/payments/epay/notify"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(notification(&order, "87.60", "T4", EPAY_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "success".into()));
    assert_eq!(balance(&gw, "cn@x.io"), 22_000_000);
    // An unknown order changes nothing.
    assert_eq!(notify_get(notification("ORDNOPE", "72.00", "T5", EPAY_KEY)).await.0, 200);
    assert_eq!(balance(&gw, "cn@x.io"), 22_000_000);
}

#[tokio::test]
async fn choices_limits_failures_and_operators() {
    let (fake, stripe) = (fake(), FakeStripe::start());
    let gw = Gateway::start(&conf(&fake, &stripe, ""));
    let b = signed_up(&gw, "ops@x.io").await;
    // What cannot be bought or paid that way: 400, no order.
    for (item, pay, credits, msg) in [
        ("pro", "epay:alipay", None, "cannot be paid with that method"),
        ("custom", "stripe:card", Some("4"), "cannot be paid with that method"),
        ("custom", "stripe:card", Some("many"), "whole number of credits"),
        ("nope", "stripe:card", None, "cannot be paid with that method"),
        ("ten", "paypal:card", None, "cannot be paid with that method"),
        ("ten", "", None, "Choose how to pay"),
    ] {
        let (page, _) = buy(&gw, &b, item, pay, credits).await;
        assert_eq!(page.status, 400, "{item} {pay}");
        assert!(page.body.contains(msg), "{item} {pay}: {msg}");
    }
    assert_eq!(gw.db().query_row("SELECT count(*) FROM orders", (), |r| r.get::<_, i64>(0)).unwrap(), 0);
    // Stripe refuses: the user is told, the order fails, nothing is charged.
    stripe.refuse_next(400, "Invalid currency: usd");
    let (page, order) = buy(&gw, &b, "ten", "stripe:card", None).await;
    assert_eq!(page.status, 502);
    assert!(page.body.contains("Invalid currency: usd"));
    assert_eq!(status(&gw, &order.unwrap()), "failed");
    // Submitting the same form twice makes one order.
    let form = b.get("/console/billing").await;
    let f = [
        ("csrf", form.field("csrf")),
        ("once", form.field("once")),
        ("item", "ten".into()),
        ("pay", "stripe:card".into()),
    ];
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let pages = futures_util::future::join_all((0..4).map(|_| b.post("/console/billing/orders", &f))).await;
    assert_eq!(pages.iter().filter(|p| p.status == 200).count(), 1);
    assert_eq!(gw.db().query_row("SELECT count(*) FROM orders", (), |r| r.get::<_, i64>(0)).unwrap(), 2);

    // A plan package starts the plan when paid.
    let (_, order) = buy(&gw, &b, "pro", "stripe:card", None).await;
    let order = order.unwrap();
    let session = stripe.created().last().unwrap().session_id.clone();
    let paid = fake_stripe::event("evt_p", "checkout.session.completed", &session, &order, true, 2000, "usd");
    assert_eq!(webhook(&gw, &paid, &fake_stripe::signed(&paid, now(), WEBHOOK_SECRET)).await.0, 200);
    assert!(b.get("/console/dashboard").await.body.contains("<div class=\"stat\">Pro</div>"));

    // Operators see orders and refund them through the admin API; the CLI lists them.
    let (s, body) = gw.admin("GET", "/admin/orders?status=paid", None).await;
    assert_eq!(s, 200);
    let orders: Value = json(&body);
    assert_eq!(orders["orders"].as_array().unwrap().len(), 1);
    assert_eq!(orders["orders"][0]["amount"], "20.00");
    let (s, body) = gw.admin("POST", &format!("/admin/orders/{order}/refund"), Some(json!({}))).await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = gw.admin("POST", &format!("/admin/orders/{order}/refund"), Some(json!({"reason": "asked"}))).await;
    assert_eq!((s, json(&body)["status"].as_str()), (200, Some("refunded")), "{body}");
    let (s, _) = gw.admin("POST", &format!("/admin/orders/{order}/refund"), Some(json!({"reason": "again"}))).await;
    assert_eq!(s, 409);
    assert!(!b.get("/console/dashboard").await.body.contains("<div class=\"stat\">Pro</div>"), "plan revoked");
    let out = gw.cli(&["orders", "list"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&order) && listing.contains("refunded") && listing.contains("20.00 USD"), "{listing}");
    let audit: i64 =
        gw.db().query_row("SELECT count(*) FROM admin_audit WHERE action = 'order.refund'", (), |r| r.get(0)).unwrap();
    assert_eq!(audit, 1);
}

#[tokio::test]
async fn operators_mark_paid_and_refund_in_the_console() {
    let (fake, stripe) = (fake(), FakeStripe::start());
    let gw = Gateway::start(&conf(&fake, &stripe, ""));
    let b = signed_up(&gw, "buyer@x.io").await;
    let (_, order) = buy(&gw, &b, "ten", "stripe:card", None).await;
    let order = order.unwrap();
    let op = operator_signed_in(&gw).await;

    let list = op.get("/orders?status=pending").await;
    assert!(list.body.contains(&order) && list.body.contains("buyer@x.io"), "{}", list.body);
    // Both actions want a reason.
    let bare = op.submit("/orders", &format!("/orders/{order}/complete"), &[("reason", "")]).await;
    assert_eq!(bare.status, 400, "{}", bare.body);
    assert_eq!(status(&gw, &order), "pending");
    let paid = op.submit("/orders", &format!("/orders/{order}/complete"), &[("reason", "paid by bank transfer")]).await;
    assert_eq!(paid.location(), "/orders?done=complete", "{}", paid.body);
    assert_eq!((status(&gw, &order), balance(&gw, "buyer@x.io")), ("paid".to_string(), 10_000_000));
    // Marking it paid again changes nothing.
    let twice = op.submit("/orders", &format!("/orders/{order}/complete"), &[("reason", "again")]).await;
    assert_eq!(twice.status, 409, "{}", twice.body);
    assert_eq!(balance(&gw, "buyer@x.io"), 10_000_000);

    let refunded = op.submit("/orders", &format!("/orders/{order}/refund"), &[("reason", "customer asked")]).await;
    assert_eq!(refunded.location(), "/orders?done=refund", "{}", refunded.body);
    assert_eq!((status(&gw, &order), balance(&gw, "buyer@x.io")), ("refunded".to_string(), 0));
    let audit = op.get("/audit").await.body;
    assert!(audit.contains("order.complete") && audit.contains("order.refund") && audit.contains("customer asked"));
    assert_eq!(op.submit("/orders", "/orders/nope/refund", &[("reason", "x")]).await.status, 404);
}
