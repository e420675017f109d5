//! The request flow behind `request_filter`: route, authenticate, read and check
//! the body, pick channels, forward. Every failure comes back as a
//! `GatewayError` that the caller renders in the client's shape.

use super::account;
use super::ctx::RequestCtx;
use super::forward::{self, Outbound};
use super::respond;
use crate::api::body::{parse_value, Peek};
use crate::api::{self, Endpoint, Protocol, RouteInput};
use crate::app::App;
use crate::auth;
use crate::billing::estimate;
use crate::channels::{Affinity, Plan};
use crate::config::AffinityKey;
use crate::convert::context::Ctx;
use crate::convert::support::estimate_request;
use crate::convert::translate;
use crate::error::GatewayError;
use crate::limits;
use crate::store::writer::WriteOp;
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde_json::json;
use std::sync::Arc;

/// The model `/v1/embeddings` uses when the request names none.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";

fn header<'a>(session: &'a Session, name: &str) -> Option<&'a [u8]> {
    session.req_header().headers.get(name).map(|v| v.as_bytes())
}

/// What is left to do once `handle` returns.
pub enum Next {
    /// The request is answered.
    Done,
    /// An authenticated WebSocket upgrade: the connection is the caller's.
    WebSocket,
}

pub async fn handle(app: &Arc<App>, session: &mut Session, ctx: &mut RequestCtx) -> Result<Next, GatewayError> {
    let req = session.req_header();
    let websocket = req.headers.get("upgrade").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let (shape, endpoint) = api::classify(&RouteInput {
        method: req.method.as_str(),
        path: req.uri.path(),
        anthropic_version: req.headers.contains_key("anthropic-version"),
        websocket_upgrade: websocket,
    });
    ctx.shape = shape;
    connection_limits(&app.config, session)?;
    let endpoint = match (endpoint, &app.site) {
        // Not an API endpoint and not under /v1: a page of the website.
        (Err(GatewayError::RouteNotFound(path)), Some(site)) if !super::site::is_api_path(&path) => {
            super::site::serve(app, site, session, ctx).await;
            return Ok(Next::Done);
        }
        (e, _) => e?,
    };
    ctx.endpoint = Some(endpoint);
    // Off by config: 426 makes Codex fall back to HTTP at once.
    if endpoint == Endpoint::ResponsesSocket && !app.config.routing.responses_websocket {
        return Err(GatewayError::WebSocketUnsupported);
    }
    if endpoint == Endpoint::Ready {
        let (status, mut body) = match app.readiness() {
            Ok(()) => (200, json!({"status": "ready"})),
            Err(reasons) => (503, json!({"status": "not_ready", "reasons": reasons})),
        };
        if let Some(c) = app.billing.cluster() {
            body["cluster"] = crate::cluster::status_json(c);
        }
        let body = bytes::Bytes::from(body.to_string());
        respond::send(session, ctx, status, &[("cache-control", "no-store".into())], body).await;
        return Ok(Next::Done);
    }
    if endpoint == Endpoint::Health {
        respond::json(session, ctx, &json!({"status": "ok"})).await;
        return Ok(Next::Done);
    }

    let presented = auth::credential(
        header(session, "authorization"),
        header(session, "x-api-key"),
        endpoint.accepts_x_api_key(shape),
    )?;
    // Decision order (see `billing`): 1. the key...
    let identity = app.accounts.snapshot().authenticate(presented, ctx.received_ms)?;
    app.writer.send(WriteOp::KeyUsed { key_id: identity.key.id, at: ctx.received_ms }).await;
    ctx.identity = Some(identity.clone());
    // ...2. the user.
    if identity.user.banned {
        return Err(GatewayError::UserBanned);
    }

    match endpoint {
        Endpoint::Models => {
            let plan = identity.user.active_plan(&app.config, app.billing.now_ms()).map(|(_, p)| p);
            let models: Vec<_> = app
                .config
                .models
                .iter()
                .filter(|m| app.channels.serves_model(&m.id) && limits::model_visible(plan, &identity.key, &m.id))
                .collect();
            respond::json(session, ctx, &api::models::render(&models, shape, app.demo)).await;
            Ok(Next::Done)
        }
        Endpoint::Account => {
            account::account(app, session, ctx, &identity).await;
            Ok(Next::Done)
        }
        Endpoint::BillingSubscription => {
            account::legacy_subscription(app, session, ctx, &identity).await;
            Ok(Next::Done)
        }
        Endpoint::BillingUsage => {
            account::legacy_usage(app, session, ctx, &identity).await;
            Ok(Next::Done)
        }
        // Authenticated: the caller takes the connection over.
        Endpoint::ResponsesSocket => Ok(Next::WebSocket),
        Endpoint::Redeem => {
            let body = read_body(session, 64 << 10).await?;
            account::redeem(app, session, ctx, &identity, &body).await.map(|()| Next::Done)
        }
        _ => llm(app, session, ctx, endpoint, &identity).await.map(|()| Next::Done),
    }
}

/// The head's size and the connection's keep-alive. Pingora reads heads of up
/// to 1 MiB and 256 headers; the configured caps are tighter, and a head over
/// them closes the connection (nothing after it can be trusted to be framed).
fn connection_limits(cfg: &crate::config::Config, session: &mut Session) -> Result<(), GatewayError> {
    let req = session.req_header();
    let count = req.headers.len();
    let bytes = req.raw_path().len() + req.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>();
    if count > cfg.max_headers || bytes > cfg.max_header_bytes {
        session.set_keepalive(None);
        return Err(GatewayError::HeadersTooLarge { limit: cfg.max_header_bytes, max_count: cfg.max_headers });
    }
    // Pingora keeps an HTTP/1.1 connection open without a limit unless told.
    if session.get_keepalive().is_some() {
        let secs = cfg.keepalive_timeout.as_secs();
        session.set_keepalive((secs > 0).then_some(secs));
    }
    Ok(())
}

/// Reads the whole request body, refusing more than `limit` bytes.
pub(super) async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let declared = header(session, "content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    if header(session, "expect").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue")) {
        let _ = session.as_downstream_mut().write_continue_response().await;
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(16 << 10).min(limit));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(GatewayError::BodyTooLarge { limit });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => return Err(GatewayError::InvalidJson(format!("could not read the request body: {e}"))),
        }
    }
}

/// The fields each API requires before anything goes upstream.
fn check_required(endpoint: Endpoint, peek: &Peek) -> Result<(), GatewayError> {
    let missing = match endpoint {
        Endpoint::ChatCompletions if peek.messages.is_none() => Some("messages"),
        Endpoint::Messages if peek.messages.is_none() => Some("messages"),
        Endpoint::Messages if peek.max_tokens.is_none() => Some("max_tokens"),
        Endpoint::CountTokens if peek.messages.is_none() => Some("messages"),
        Endpoint::Embeddings if peek.input.is_none() => Some("input"),
        Endpoint::Responses | Endpoint::ResponsesCompact
            if peek.input.is_none() && peek.previous_response_id.is_none() =>
        {
            Some("input")
        }
        _ => None,
    };
    missing.map_or(Ok(()), |f| Err(GatewayError::MissingField(f)))
}

async fn llm(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    endpoint: Endpoint,
    identity: &crate::accounts::Identity,
) -> Result<(), GatewayError> {
    let protocol = endpoint.protocol().ok_or_else(|| GatewayError::Internal("endpoint without protocol".into()))?;
    let body = read_body(session, app.config.max_body_bytes).await?;
    let peek = Peek::parse(&body)?;
    let streams = matches!(protocol, Protocol::Chat | Protocol::Responses | Protocol::Messages);
    let stream = streams && peek.stream()?;
    ctx.stream = stream;
    let model = match peek.model()? {
        Some(m) => m.to_string(),
        None if endpoint == Endpoint::Embeddings => DEFAULT_EMBEDDING_MODEL.to_string(),
        None => return Err(GatewayError::MissingField("model")),
    };
    ctx.model = Some(model.clone());
    check_required(endpoint, &peek)?;
    let Some(model_cfg) = app.config.model(&model) else {
        return Err(GatewayError::UnknownModel(model));
    };
    let plan = app.channels.plan(&model, endpoint)?;
    // Steps 2 (model rules) to 7 (credits) of the decision order, from memory.
    let reservation =
        estimate::reservation(body.len(), peek.max_output(), protocol, &model_cfg.price, &app.config.billing);
    let ticket = app.billing.admit_request(&identity.user, &identity.key, &model, reservation, &ctx.request_id).await?;
    ctx.quota_headers = account::quota_headers(&ticket);
    ctx.ticket = Some(ticket);
    ctx.body_len = body.len();
    let routes = match plan {
        Plan::Forward(routes) => routes,
        // No Anthropic channel: the same estimate translated streams report.
        Plan::LocalCount => return count_locally(app, session, ctx, &body, &model).await,
    };
    let affinity = affinity_value(&app.config.routing.affinity_keys, session, &peek)
        .map(|v| Affinity::key(identity.user.id, &model, &v));
    let out = Outbound {
        endpoint,
        protocol,
        model: model.clone(),
        body,
        stream,
        // Chat streams only report usage when asked; ask for it, and hide the
        // extra chunk from clients that did not.
        add_include_usage: protocol == Protocol::Chat && stream,
        client_wants_usage: peek.include_usage(),
        json: Default::default(),
    };
    // Channels that speak the client's API first, translating ones after.
    let pickers = [&routes.native, &routes.translated]
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(|c| app.channels.picker(&model, c, affinity))
        .collect();
    forward::run(app, session, ctx, out, pickers).await
}

/// Answers `count_tokens` from the gateway's own estimate.
async fn count_locally(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: &Bytes,
    model: &str,
) -> Result<(), GatewayError> {
    let v = parse_value(body)?;
    let mut tctx = Ctx::new(model, model, app.ids.clone(), app.signer.clone());
    let ir = translate::parse(Protocol::CountTokens, &v, &mut tctx)?;
    ctx.translation = Some("count_tokens->estimate");
    respond::json(session, ctx, &json!({"input_tokens": estimate_request(&ir)})).await;
    Ok(())
}

/// The first configured affinity value the request carries.
fn affinity_value(keys: &[AffinityKey], session: &Session, peek: &Peek) -> Option<String> {
    keys.iter().find_map(|k| match k {
        AffinityKey::Header(h) => {
            header(session, h).and_then(|v| std::str::from_utf8(v).ok()).filter(|v| !v.is_empty()).map(str::to_string)
        }
        AffinityKey::PromptCacheKey => peek.prompt_cache_key.clone(),
        AffinityKey::MetadataUserId => peek.metadata.as_ref().and_then(|m| m.user_id.clone()),
        AffinityKey::SessionId => peek.session_id.clone(),
    })
}
