//! Buying credits online. A user picks a package or an amount and a way to
//! pay; an order is created (pending) and the user is sent to the provider;
//! the provider's server-to-server notification credits the account once
//! (`orders`), and the order page shows it paid.
//!
//! A provider is one file behind the small [`Provider`] trait: how to start a
//! checkout, how to read (and verify) a notification, how to answer it.
//! Stripe Checkout (`stripe.rs`) and the EPay (易支付) protocol (`epay.rs`)
//! are the two there are.

pub mod epay;
pub mod orders;
pub mod stripe;

use crate::app::App;
use crate::config::units::MICROS_PER_CREDIT;
use crate::config::{PaymentsConfig, Purchase};
use crate::store::orders::{NewOrder, OrderRow, OrderStatus};
use crate::store::StoreError;
use async_trait::async_trait;
use bytes::Bytes;
use orders::{Fulfilment, Payment};

/// Where the provider returns the user, and what it shows them.
pub struct CheckoutRequest<'a> {
    pub order: &'a OrderRow,
    /// What the user sees on the provider's page (`10 credits`).
    pub product: &'a str,
    pub email: &'a str,
    /// The order's page in the console.
    pub return_url: &'a str,
    /// The provider's server-to-server notification URL.
    pub notify_url: &'a str,
}

/// Where to send the user to pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub url: String,
    /// The provider's id of the checkout (Stripe's session id), if it has one now.
    pub reference: Option<String>,
}

/// A notification as it arrived: every part a provider may sign.
pub struct Notification<'a> {
    pub method: &'a str,
    pub query: &'a str,
    /// `Stripe-Signature`, for Stripe.
    pub signature: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a Bytes,
}

/// What a verified notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Paid {
        event_id: String,
        order_id: String,
        amount: i64,
        currency: String,
        reference: Option<String>,
    },
    /// The payment failed or the checkout expired: the order will not be paid.
    Closed {
        event_id: String,
        order_id: String,
        status: OrderStatus,
        note: String,
    },
    /// Nothing to do (another event type, a payment still in progress).
    Ignored(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("payments are not set up")]
    NotConfigured,
    #[error("no such payment method")]
    UnknownMethod,
    #[error("nothing to buy here: {0}")]
    BadChoice(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("malformed notification: {0}")]
    Malformed(String),
    #[error("the payment provider refused: {0}")]
    Provider(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One payment provider.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Its name in URLs, orders and the ledger (`stripe`, `epay`).
    fn name(&self) -> &'static str;
    /// The currency it charges in (lower-case ISO code).
    fn currency(&self) -> &str;
    /// The payment methods it offers (EPay's `alipay`, `wxpay`; Stripe's `card`).
    fn methods(&self) -> &[String];
    /// Starts paying an order: the page to send the user to.
    async fn checkout(&self, req: &CheckoutRequest<'_>) -> Result<Checkout, PaymentError>;
    /// Verifies and reads a notification.
    fn read(&self, n: &Notification, now_ms: i64) -> Result<Notice, PaymentError>;
    /// The answer the provider expects: status, content type, body.
    fn answer(&self, outcome: &Result<(), PaymentError>) -> (u16, &'static str, String);
}

/// The providers this gateway is set up with.
pub struct Payments {
    providers: Vec<Box<dyn Provider>>,
}

impl Payments {
    /// `None` when nothing can be bought.
    pub fn from_config(cfg: &PaymentsConfig) -> Option<Payments> {
        if !cfg.enabled() {
            return None;
        }
        let mut providers: Vec<Box<dyn Provider>> = Vec::new();
        if let Some(s) = &cfg.stripe {
            providers.push(Box::new(stripe::Stripe::new(s.clone())));
        }
        if let Some(e) = &cfg.epay {
            providers.push(Box::new(epay::Epay::new(e.clone())));
        }
        Some(Payments { providers })
    }

    pub fn get(&self, name: &str) -> Option<&dyn Provider> {
        self.providers.iter().find(|p| p.name() == name).map(|p| p.as_ref())
    }

    pub fn all(&self) -> impl Iterator<Item = &dyn Provider> {
        self.providers.iter().map(|p| p.as_ref())
    }
}

/// What the user asked to buy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Package(String),
    /// Whole credits.
    Credits(i64),
}

/// The price of a choice in a currency, and what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub amount: i64,
    pub currency: String,
    pub credits: i64,
    pub plan: Option<String>,
    pub package: Option<String>,
    /// What the provider's page calls it.
    pub name: String,
}

/// Prices a choice in `currency` from the configuration.
pub fn quote(cfg: &PaymentsConfig, choice: &Choice, currency: &str) -> Result<Quote, PaymentError> {
    match choice {
        Choice::Package(id) => {
            let p = cfg.package(id).ok_or_else(|| PaymentError::BadChoice(format!("no package {id:?}")))?;
            let amount = *p
                .prices
                .get(currency)
                .ok_or_else(|| PaymentError::BadChoice(format!("{id} has no {currency} price")))?;
            let (credits, plan) = match &p.grant {
                Purchase::Credits(c) => (*c, None),
                Purchase::Plan(id) => (0, Some(id.clone())),
            };
            Ok(Quote {
                amount,
                currency: currency.into(),
                credits,
                plan,
                package: Some(p.id.clone()),
                name: p.name.clone(),
            })
        }
        Choice::Credits(n) => {
            let c = cfg.custom.as_ref().ok_or_else(|| PaymentError::BadChoice("no free amounts here".into()))?;
            if *n < c.min_credits || *n > c.max_credits {
                return Err(PaymentError::BadChoice(format!(
                    "between {} and {} credits",
                    c.min_credits, c.max_credits
                )));
            }
            let unit =
                *c.credit_price.get(currency).ok_or_else(|| PaymentError::BadChoice(format!("no {currency} price")))?;
            let amount = unit.checked_mul(*n).ok_or_else(|| PaymentError::BadChoice("too large".into()))?;
            Ok(Quote {
                amount,
                currency: currency.into(),
                credits: n * MICROS_PER_CREDIT,
                plan: None,
                package: None,
                name: format!("{n} credits"),
            })
        }
    }
}

/// A user's purchase: the order is created, then the provider's checkout
/// started. A checkout the provider refuses fails the order.
pub struct Buy<'a> {
    pub user_id: i64,
    pub email: &'a str,
    pub choice: Choice,
    pub provider: &'a str,
    pub method: &'a str,
    /// The site root users reach (`https://relay.example.com`).
    pub root: &'a str,
    /// The form's one-time token: a second submit makes no second order.
    pub once: &'a str,
}

/// Why an order could not be started, besides the provider refusing.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("this form was already submitted")]
    AlreadySubmitted,
    #[error(transparent)]
    Payment(#[from] PaymentError),
}

/// Creates the order and starts its checkout; returns the order and the
/// provider page to send the user to.
pub async fn start(app: &App, p: Buy<'_>) -> Result<(OrderRow, String), StartError> {
    let payments = app.payments.as_ref().ok_or(PaymentError::NotConfigured)?;
    let provider = payments.get(p.provider).ok_or(PaymentError::UnknownMethod)?;
    if !provider.methods().iter().any(|m| m == p.method) {
        return Err(PaymentError::UnknownMethod.into());
    }
    let quote = quote(&app.config.payments, &p.choice, provider.currency())?;
    let now = app.billing.now_ms();
    let id = orders::new_id(now);
    let ttl = app.config.payments.order_ttl.as_millis() as i64;
    let (user_id, once, name, method) = (p.user_id, p.once.to_string(), provider.name(), p.method.to_string());
    let (q, order_id) = (quote.clone(), id.clone());
    let order = app
        .db
        .run(move |c| {
            let tx = c.write_transaction().map_err(|source| StoreError::Sql { context: "begin", source })?;
            if !crate::store::sessions::claim_form(&tx, &once, user_id, now)? {
                return Ok(None);
            }
            let o = orders::create(
                &tx,
                &NewOrder {
                    id: &order_id,
                    user_id,
                    provider: name,
                    method: &method,
                    amount: q.amount,
                    currency: &q.currency,
                    credits: q.credits,
                    plan_id: q.plan.as_deref(),
                    package: q.package.as_deref(),
                    now,
                    expires_at: now + ttl,
                },
            )?;
            tx.commit().map_err(|source| StoreError::Sql { context: "commit", source })?;
            Ok::<_, StoreError>(Some(o))
        })
        .await
        .map_err(PaymentError::from)?
        .ok_or(StartError::AlreadySubmitted)?;
    let return_url = format!("{}/console/billing/orders/{}", p.root, order.id);
    let notify_url = format!("{}/payments/{}/notify", p.root, provider.name());
    let req = CheckoutRequest {
        order: &order,
        product: &quote.name,
        email: p.email,
        return_url: &return_url,
        notify_url: &notify_url,
    };
    let checkout = match provider.checkout(&req).await {
        Ok(c) => c,
        Err(e) => {
            let (oid, note) = (order.id.clone(), e.to_string());
            let _ = app
                .db
                .run(move |c| {
                    crate::store::orders::transition(c, &oid, &[OrderStatus::Pending], OrderStatus::Failed, &note, now)
                })
                .await;
            log::error!("checkout of order {} with {} failed: {e}", order.id, provider.name());
            return Err(e.into());
        }
    };
    let (oid, url, reference) = (order.id.clone(), checkout.url.clone(), checkout.reference.clone());
    app.db
        .run(move |c| crate::store::orders::set_checkout(c, &oid, reference.as_deref(), &url, now))
        .await
        .map_err(PaymentError::from)?;
    Ok((order, checkout.url))
}

/// Handles a provider's notification; returns its answer (status, content
/// type, body). Credits are loaded into the gateway before it answers.
pub async fn notify(app: &App, provider: &str, n: &Notification<'_>) -> (u16, &'static str, String) {
    let Some(p) = app.payments.as_ref().and_then(|ps| ps.get(provider)) else {
        return (404, "text/plain; charset=utf-8", "no such payment provider".into());
    };
    let now = app.billing.now_ms();
    let notice = p.read(n, now);
    let outcome = match notice {
        Err(e) => {
            log::warn!("{provider} notification refused: {e}");
            Err(e)
        }
        Ok(notice) => act(app, p.name(), notice, now).await,
    };
    p.answer(&outcome)
}

async fn act(app: &App, provider: &'static str, notice: Notice, now: i64) -> Result<(), PaymentError> {
    let cfg = app.config.clone();
    match notice {
        Notice::Ignored(why) => {
            log::debug!("{provider} notification ignored: {why}");
            Ok(())
        }
        Notice::Closed { event_id, order_id, status, note } => {
            app.db.run(move |c| orders::close(c, provider, &event_id, &order_id, status, &note, now)).await?;
            Ok(())
        }
        Notice::Paid { event_id, order_id, amount, currency, reference } => {
            let done = app
                .db
                .run(move |c| {
                    let p = Payment {
                        provider,
                        event_id: &event_id,
                        order_id: &order_id,
                        amount,
                        currency: &currency,
                        reference: reference.as_deref(),
                    };
                    orders::fulfil(c, &cfg, &p, now)
                })
                .await?;
            match done {
                Fulfilment::Credited { .. } => {
                    // The balance is live before the provider hears back.
                    app.writer.flush().await;
                    Ok(())
                }
                Fulfilment::Mismatch(why) => Err(PaymentError::Malformed(why)),
                Fulfilment::AlreadyDone(_) | Fulfilment::Duplicate | Fulfilment::UnknownOrder => Ok(()),
            }
        }
    }
}

/// Expires the pending orders whose time is up (a background loop calls it).
pub async fn expire_due(app: &App) -> Result<usize, StoreError> {
    let now = app.billing.now_ms();
    app.db.run(move |c| crate::store::orders::expire_due(c, now)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PaymentsConfig {
        crate::config::parse(
            r#"
server: {listen: ["127.0.0.1:0"]}
plans: [{id: pro, daily_quota: 5, duration_days: 30}]
payments:
  stripe: {secret_key: sk_test, webhook_secret: whsec_test}
  epay: {gateway_url: "https://pay.example.com/", pid: "1001", key: k}
  packages:
    - {id: ten, name: 10 credits, credits: 10, prices: {usd: 10, cny: "72.00"}}
    - {id: pro, plan: pro, prices: {usd: 20}}
  custom: {min_credits: 5, max_credits: 1000, credit_price: {usd: "1.05", cny: 7.3}}
"#,
            std::path::Path::new("."),
            &|_| None,
        )
        .unwrap()
        .payments
    }

    #[test]
    fn quotes_from_the_configuration() {
        let c = cfg();
        let q = quote(&c, &Choice::Package("ten".into()), "cny").unwrap();
        assert_eq!((q.amount, q.credits, q.plan.as_deref()), (7200, 10_000_000, None));
        let q = quote(&c, &Choice::Package("pro".into()), "usd").unwrap();
        assert_eq!((q.amount, q.credits, q.plan.as_deref()), (2000, 0, Some("pro")));
        assert!(quote(&c, &Choice::Package("pro".into()), "cny").is_err(), "no cny price");
        let q = quote(&c, &Choice::Credits(12), "usd").unwrap();
        assert_eq!((q.amount, q.credits, q.name.as_str()), (1260, 12_000_000, "12 credits"));
        assert_eq!(quote(&c, &Choice::Credits(12), "cny").unwrap().amount, 8760);
        assert!(quote(&c, &Choice::Credits(4), "usd").is_err());
        assert!(quote(&c, &Choice::Credits(1001), "usd").is_err());
        assert!(quote(&c, &Choice::Package("nope".into()), "usd").is_err());
        let p = Payments::from_config(&c).unwrap();
        assert_eq!(p.all().map(|p| p.name()).collect::<Vec<_>>(), vec!["stripe", "epay"]);
        assert_eq!(p.get("epay").unwrap().currency(), "cny");
    }
}
