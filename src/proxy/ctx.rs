//! Per-request state, created by `new_ctx`, filled by the handler, read by
//! `logging` to settle usage and write the access-log line.

use crate::access_log::AttemptLog;
use crate::accounts::Identity;
use crate::api::{Endpoint, ErrorShape};
use crate::app::{App, InFlight};
use crate::billing::Ticket;
use crate::usage::Usage;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a request went wrong: the access log's `error` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The gateway answered with this error (`GatewayError::kind`).
    Refused(&'static str),
    /// The client went away before the whole answer reached it.
    ClientGone,
    /// The upstream refused the request: its 4xx went to the client.
    UpstreamRefused,
    /// The upstream failed after the response began.
    UpstreamBroke,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Refused(kind) => kind,
            Failure::ClientGone => "client_disconnected",
            Failure::UpstreamRefused => "upstream_client_error",
            Failure::UpstreamBroke => "upstream_stream_error",
        }
    }
}

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
    /// How the request went wrong, when it did.
    pub failure: Option<Failure>,
    pub error_detail: Option<String>,
    pub translation: Option<&'static str>,
    /// The generation the request runs on, counted as in flight.
    inflight: InFlight,
    /// The admission of an LLM request: settled (charged) in `logging`.
    pub ticket: Option<Ticket>,
    /// What paid for the request, once settled.
    pub billed_to: Option<&'static str>,
    /// Remaining quota and balance for the response headers.
    pub quota_headers: Vec<(&'static str, String)>,
    /// Size of the request body (for usage estimates).
    pub body_len: usize,
    /// The client's address for a request without a socket of its own (a
    /// WebSocket turn, served on an in-memory connection).
    pub client_ip: Option<std::net::IpAddr>,
}

/// `req_` + the time in milliseconds as 9 base62 digits + 15 random base62
/// characters (89 bits). Ids sort by time, so the usage and ledger indexes on
/// the request id grow at their right edge: with random ids every record
/// dirtied a random index page, and rewriting those pages made the database
/// writer the gateway's second busiest thread.
pub fn new_request_id() -> String {
    request_id_at(crate::clock::now_ms().max(0) as u64, &mut rand::thread_rng())
}

fn request_id_at(ms: u64, rng: &mut impl Rng) -> String {
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut time = [b'0'; 9];
    let mut n = ms;
    for d in time.iter_mut().rev() {
        *d = A[(n % 62) as usize];
        n /= 62;
    }
    let mut s = String::with_capacity(28);
    s.push_str("req_");
    s.push_str(std::str::from_utf8(&time).expect("base62 is ASCII"));
    for _ in 0..15 {
        s.push(A[rng.gen_range(0..A.len())] as char);
    }
    s
}

impl RequestCtx {
    pub fn new(inflight: InFlight) -> RequestCtx {
        RequestCtx {
            request_id: new_request_id(),
            started: Instant::now(),
            received_ms: crate::clock::now_ms(),
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
            failure: None,
            error_detail: None,
            translation: None,
            inflight,
            ticket: None,
            billed_to: None,
            quota_headers: Vec::new(),
            body_len: 0,
            client_ip: None,
        }
    }

    /// The configuration generation this request runs on.
    pub fn app(&self) -> &Arc<App> {
        self.inflight.app()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_sort_by_time_and_differ() {
        let mut rng = rand::thread_rng();
        let a = request_id_at(1_700_000_000_000, &mut rng);
        let b = request_id_at(1_700_000_000_001, &mut rng);
        let c = request_id_at(1_700_000_000_001, &mut rng);
        assert_eq!(a.len(), 28);
        assert!(a < b, "{a} < {b}");
        assert_ne!(b, c);
        assert_eq!(&b[..13], &c[..13], "same millisecond, same time part");
        // 62^9 ms is about 440,000 years: the width never overflows.
        assert!(request_id_at(u64::MAX / 1_000_000, &mut rng).len() == 28);
    }
}
