//! Per-request state, created by `new_ctx`, filled by the handler, read by
//! `logging` to settle usage and write the access-log line.

use crate::access_log::AttemptLog;
use crate::accounts::Identity;
use crate::api::{Endpoint, ErrorShape};
use crate::app::InFlight;
use crate::usage::Usage;
use rand::Rng;
use std::time::{Duration, Instant};

pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    pub received_ms: i64,
    pub shape: ErrorShape,
    pub endpoint: Option<Endpoint>,
    pub identity: Option<Identity>,
    pub model: Option<String>,
    pub stream: bool,
    /// The channel that produced the response the client got.
    pub channel: Option<String>,
    pub upstream_status: Option<u16>,
    pub attempts: Vec<AttemptLog>,
    pub usage: Option<Usage>,
    /// Usage was estimated (the upstream never reported it).
    pub estimated: bool,
    pub ttfb: Option<Duration>,
    /// Status sent to the client (0: nothing was sent).
    pub status: u16,
    /// Why the request failed, when it did (`GatewayError::kind` or a stream
    /// failure kind).
    pub error_kind: Option<&'static str>,
    pub error_detail: Option<String>,
    pub translation: Option<&'static str>,
    pub inflight: Option<InFlight>,
}

/// `req_` + 24 random base62 characters.
pub fn new_request_id() -> String {
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(28);
    s.push_str("req_");
    for _ in 0..24 {
        s.push(A[rng.gen_range(0..A.len())] as char);
    }
    s
}

impl RequestCtx {
    pub fn new() -> RequestCtx {
        RequestCtx {
            request_id: new_request_id(),
            started: Instant::now(),
            received_ms: crate::store::now_ms(),
            shape: ErrorShape::OpenAi,
            endpoint: None,
            identity: None,
            model: None,
            stream: false,
            channel: None,
            upstream_status: None,
            attempts: Vec::new(),
            usage: None,
            estimated: false,
            ttfb: None,
            status: 0,
            error_kind: None,
            error_detail: None,
            translation: None,
            inflight: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
