//! Connection admission in front of the HTTP service. A client address may
//! hold at most `server.max_connections_per_ip` open connections, and a new
//! HTTP/1 connection must deliver its first request head within
//! `server.header_timeout`. A client that opens connections and trickles
//! bytes into them (slowloris) therefore holds neither many slots nor any
//! for long. Pingora alone only times out each single read (60 s), so one
//! byte a minute would keep a connection forever.
//!
//! The head deadline covers the first request: later requests on a kept-alive
//! connection wait at most `server.keepalive_timeout` between reads. HTTP/2
//! connections are exempt (their idle timeout applies).

use crate::metrics::Metrics;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

tokio::task_local! {
    static HEAD: Arc<Head>;
}

/// A new HTTP/1 connection's first request head: counted in `opening`
/// until it has been read or the connection ends.
struct Head {
    read: AtomicBool,
    opening: Arc<AtomicUsize>,
}

impl Head {
    fn new(opening: &Arc<AtomicUsize>) -> Arc<Head> {
        opening.fetch_add(1, Ordering::AcqRel);
        Arc::new(Head { read: AtomicBool::new(false), opening: opening.clone() })
    }

    fn mark_read(&self) {
        if !self.read.swap(true, Ordering::AcqRel) {
            self.opening.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        self.mark_read();
    }
}

/// Marks the current connection's request head as read. The gateway calls
/// it for every request (Pingora creates the request context right after it
/// reads the head); outside a guarded connection it does nothing.
pub fn head_read() {
    let _ = HEAD.try_with(|head| head.mark_read());
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Waiting for the h2c preface when no head deadline is set.
const UNBOUNDED_PEEK: Duration = Duration::from_secs(60);
/// Longest wait at shutdown for connections whose head is on its way (an
/// idle pre-opened connection never sends one).
const CLEANUP_WAIT: Duration = Duration::from_secs(2);

/// Admission limits (`None`: off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_ip: Option<u32>,
    pub header_timeout: Option<Duration>,
    /// Plain listeners take HTTP/2 with prior knowledge.
    pub h2c: bool,
}

/// Wraps the HTTP service with the admission limits.
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: Limits,
    open: Mutex<HashMap<IpAddr, u32>>,
    /// Connections accepted whose first request head has not arrived yet
    /// (shutdown and upgrade wait for them).
    opening: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, limits: Limits, opening: Arc<AtomicUsize>, metrics: Arc<Metrics>) -> Guarded<A> {
        Guarded { inner: Arc::new(inner), limits, open: Mutex::new(HashMap::new()), opening, metrics }
    }
}

/// One open connection of a client address, counted until dropped.
struct Slot<'a, A> {
    guard: &'a Guarded<A>,
    ip: IpAddr,
}

impl<A> Drop for Slot<'_, A> {
    fn drop(&mut self) {
        let mut open = self.guard.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl<A> Guarded<A> {
    /// A slot for the connection's client address, or `Err` when the
    /// address holds its limit already. Connections without an IP address
    /// (Unix sockets) are not counted.
    fn admit(&self, stream: &Stream) -> Result<Option<Slot<'_, A>>, IpAddr> {
        let (Some(limit), Some(ip)) = (self.limits.per_ip, peer_ip(stream)) else { return Ok(None) };
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            return Err(ip);
        }
        *n += 1;
        Ok(Some(Slot { guard: self, ip }))
    }

    /// Whether the connection speaks HTTP/2 (ALPN, or the h2c preface when
    /// h2c is on); `None` when the client sent nothing in time.
    async fn is_h2(&self, stream: &mut Stream, deadline: Duration) -> Option<bool> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return Some(true);
        }
        if !self.limits.h2c || stream.get_ssl_digest().is_some() {
            return Some(false);
        }
        let mut buf = [0u8; H2_PREFACE.len()];
        match tokio::time::timeout(deadline, stream.try_peek(&mut buf)).await {
            Ok(Ok(true)) => Some(buf == H2_PREFACE),
            Ok(Ok(false)) => Some(false),
            _ => None,
        }
    }
}

fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    digest.peer_addr()?.as_inet().map(|a| a.ip())
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let _slot = match self.admit(&stream) {
            Ok(slot) => slot,
            Err(ip) => {
                self.metrics.connection_refused("per_ip");
                log::warn!("refused a connection from {ip}: it holds server.max_connections_per_ip already");
                return None;
            }
        };
        // Counted from the accept on: a shutdown waits for the first request
        // of a connection still deciding between HTTP/1 and h2c too.
        let head = Head::new(&self.opening);
        let peek_deadline = self.limits.header_timeout.unwrap_or(UNBOUNDED_PEEK);
        match self.is_h2(&mut stream, peek_deadline).await {
            Some(true) => {
                // HTTP/2 streams count as requests in flight once they start.
                head.mark_read();
                return self.inner.process_new(stream, shutdown).await;
            }
            Some(false) => {}
            None => {
                self.metrics.connection_refused("header_timeout");
                return None;
            }
        }
        let work = HEAD.scope(head.clone(), self.inner.process_new(stream, shutdown));
        let Some(deadline) = self.limits.header_timeout else { return work.await };
        tokio::pin!(work);
        tokio::select! {
            reused = &mut work => return reused,
            _ = tokio::time::sleep(deadline) => {}
        }
        if head.read.load(Ordering::Acquire) {
            return work.await;
        }
        // Dropping the work closes the connection.
        self.metrics.connection_refused("header_timeout");
        log::debug!("closed a connection that sent no complete request head within {deadline:?}");
        None
    }

    /// The listeners are closed (shutdown, or handed to a new process).
    /// Pingora would now drop every connection still waiting for a request
    /// head, including one accepted a moment ago whose request is on its
    /// way: wait for those first (at most the head deadline).
    async fn cleanup(&self) {
        let wait = self.limits.header_timeout.unwrap_or(UNBOUNDED_PEEK).min(CLEANUP_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        while self.opening.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.cleanup().await;
    }
}
