//! The Pingora `ProxyHttp` implementation: a thin dispatcher. `request_filter`
//! runs the whole request (see `handler`) and always answers itself;
//! `logging` settles usage and writes the access log.

mod account;
pub mod ctx;
mod forward;
mod handler;
mod relay;
mod respond;
mod settle;
mod site;
mod upstream;
mod websocket;

use crate::app::{InFlight, Live};
use async_trait::async_trait;
use ctx::RequestCtx;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use std::sync::Arc;

pub use handler::DEFAULT_EMBEDDING_MODEL;

pub struct Gateway {
    live: Arc<Live>,
}

impl Gateway {
    pub fn new(live: Arc<Live>) -> Gateway {
        Gateway { live }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        // The request runs on the configuration current now, to its end. It
        // counts as in flight before its connection stops counting as
        // opening, so a shutdown never sees neither.
        let ctx = RequestCtx::new(InFlight::new(self.live.current()));
        crate::connections::head_read();
        ctx
    }

    /// Answers every request itself (`Ok(true)`): forwarding happens inside, through
    /// the shared connector, so Pingora's own proxy phase never runs.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // While a response is relayed the gateway polls the client connection
        // to notice a hang-up. A keep-alive client that already has the whole
        // body may send its next request meanwhile: with pipelining on, those
        // bytes are kept for the next request instead of being eaten.
        session.as_downstream_mut().set_pipelining_enabled(true);
        let app = ctx.app().clone();
        let served = match handler::handle(&app, session, ctx).await {
            Ok(handler::Next::WebSocket) => websocket::serve(&self.live, session, ctx).await,
            other => other.map(|_| ()),
        };
        if let Err(e) = served {
            respond::error(session, ctx, &e).await;
        }
        Ok(true)
    }

    /// Never reached: `request_filter` always answers.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        Error::e_explain(InternalError, "codex-proxy forwards from request_filter; upstream_peer is unused")
    }

    async fn logging(&self, session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut RequestCtx) {
        let app = ctx.app().clone();
        settle::settle(&app, session, ctx).await;
    }
}
