//! The JSON-lines access log: one line per request, rejected ones included, on
//! its own thread. Lines reach the file within `FLUSH_EVERY` (so `tail -f` sees
//! them within a second); SIGUSR1 reopens the file for logrotate. No prompt or
//! completion text ever goes in a line.

use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::sync::mpsc;

const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Token counts as logged.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

/// One upstream attempt, as logged.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AttemptLog {
    pub channel: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub ms: u64,
}

/// One access-log line. Written as JSON by [`AccessLine::write_json`] on the
/// log thread, into a buffer it reuses: a serde pass on the request thread
/// cost 10k instructions per request.
#[derive(Debug, Clone, Default)]
#[cfg_attr(test, derive(Serialize))]
pub struct AccessLine {
    pub time: String,
    pub request_id: String,
    pub client_ip: Option<String>,
    pub key_prefix: Option<String>,
    pub user: Option<String>,
    pub method: String,
    pub path: String,
    pub model: Option<String>,
    pub channel: Option<String>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub stream: bool,
    pub tokens: Option<Tokens>,
    pub estimated: bool,
    pub cost: Option<String>,
    pub billed_to: Option<&'static str>,
    pub ttfb_ms: Option<u64>,
    pub total_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub error: Option<&'static str>,
    pub error_detail: Option<String>,
    pub attempts: Vec<AttemptLog>,
    pub translation: Option<&'static str>,
}

impl AccessLine {
    /// The line as one JSON object, fields in declaration order.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::new(out);
        o.str("time", &self.time);
        o.str("request_id", &self.request_id);
        o.opt_str("client_ip", self.client_ip.as_deref());
        o.opt_str("key_prefix", self.key_prefix.as_deref());
        o.opt_str("user", self.user.as_deref());
        o.str("method", &self.method);
        o.str("path", &self.path);
        o.opt_str("model", self.model.as_deref());
        o.opt_str("channel", self.channel.as_deref());
        o.num("status", self.status as u64);
        o.opt_num("upstream_status", self.upstream_status.map(u64::from));
        o.bool("stream", self.stream);
        match &self.tokens {
            Some(t) => {
                o.key("tokens");
                let mut n = Obj::new(o.out);
                n.num("input", t.input);
                n.num("cached", t.cached);
                n.num("cache_write", t.cache_write);
                n.num("output", t.output);
                n.num("reasoning", t.reasoning);
                n.end();
            }
            None => o.null("tokens"),
        }
        o.bool("estimated", self.estimated);
        o.opt_str("cost", self.cost.as_deref());
        o.opt_str("billed_to", self.billed_to);
        o.opt_num("ttfb_ms", self.ttfb_ms);
        o.num("total_ms", self.total_ms);
        o.num("bytes_in", self.bytes_in);
        o.num("bytes_out", self.bytes_out);
        o.opt_str("error", self.error);
        o.opt_str("error_detail", self.error_detail.as_deref());
        o.key("attempts");
        o.out.push(b'[');
        for (i, a) in self.attempts.iter().enumerate() {
            if i > 0 {
                o.out.push(b',');
            }
            let mut n = Obj::new(o.out);
            n.str("channel", &a.channel);
            n.opt_num("status", a.status.map(u64::from));
            n.opt_str("error", a.error.as_deref());
            n.num("ms", a.ms);
            n.end();
        }
        o.out.push(b']');
        o.opt_str("translation", self.translation);
        o.end();
    }
}

/// A JSON object being written: keys and values, commas between them.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, first: true }
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        json_str(self.out, k);
        self.out.push(b':');
    }
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        json_str(self.out, v);
    }
    fn opt_str(&mut self, k: &str, v: Option<&str>) {
        match v {
            Some(v) => self.str(k, v),
            None => self.null(k),
        }
    }
    fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        self.out.extend_from_slice(digits(v).as_bytes());
    }
    fn opt_num(&mut self, k: &str, v: Option<u64>) {
        match v {
            Some(v) => self.num(k, v),
            None => self.null(k),
        }
    }
    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
    }
    fn null(&mut self, k: &str) {
        self.key(k);
        self.out.extend_from_slice(b"null");
    }
    fn end(self) {
        self.out.push(b'}');
    }
}

/// A decimal number's digits.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn digits(mut v: u64) -> Digits {
    let mut d = Digits { buf: [0; 20], start: 20 };
    loop {
        d.start -= 1;
        d.buf[d.start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return d;
        }
    }
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[from..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                from = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        out.extend_from_slice(esc);
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

enum Msg {
    Line(Box<AccessLine>),
    Reopen,
    Flush(std_mpsc::Sender<()>),
}

/// Handle to the log thread (cheap to clone). A disabled log drops lines.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Msg>>,
}

/// The receiving side, started later (threads do not survive daemonisation).
pub struct AccessLogTask {
    rx: mpsc::Receiver<Msg>,
    path: PathBuf,
}

impl AccessLog {
    pub fn disabled() -> AccessLog {
        AccessLog { tx: None }
    }

    /// Creates the handle and the task that will own `path`.
    pub fn new(path: &Path) -> (AccessLog, AccessLogTask) {
        let (tx, rx) = mpsc::channel(65_536);
        (AccessLog { tx: Some(tx) }, AccessLogTask { rx, path: path.to_path_buf() })
    }

    pub async fn write(&self, line: AccessLine) {
        let Some(tx) = &self.tx else { return };
        let _ = tx.send(Msg::Line(Box::new(line))).await;
    }

    /// Reopens the file (logrotate moved it away).
    pub fn reopen(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Msg::Reopen);
        }
    }

    /// Writes out everything queued; false on timeout.
    pub fn flush_blocking(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        let (ack_tx, ack_rx) = std_mpsc::channel();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.blocking_send(Msg::Flush(ack_tx));
        });
        ack_rx.recv_timeout(timeout).is_ok()
    }
}

impl AccessLogTask {
    /// Checks that the file can be opened (for a clear start-up error).
    pub fn check(&self) -> std::io::Result<()> {
        open(&self.path).map(|_| ())
    }

    /// Runs the log thread.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("codex-proxy-access-log".into()).spawn(move || self.run())
    }

    fn run(mut self) {
        /// How long lines gather after the queue runs dry (well inside the
        /// one second in which `tail -f` must see them).
        const PACE: Duration = Duration::from_millis(20);
        let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(rt) => rt,
            Err(e) => {
                log::error!("access log cannot start its timer: {e}");
                return;
            }
        };
        let mut out = match open(&self.path) {
            Ok(f) => Some(BufWriter::with_capacity(256 << 10, f)),
            Err(e) => {
                log::error!("cannot open access log {}: {e}", self.path.display());
                None
            }
        };
        let mut dirty = false;
        let mut last_flush = std::time::Instant::now();
        let mut json = Vec::with_capacity(1024);
        loop {
            let msg = rt.block_on(async { tokio::time::timeout(FLUSH_EVERY, self.rx.recv()).await });
            let lull = msg.is_err();
            if matches!(msg, Ok(Some(Msg::Line(_)))) && self.rx.is_empty() {
                // Let lines gather: while this thread sleeps instead of
                // waiting on the queue, handlers enqueue without waking it.
                std::thread::sleep(PACE);
            }
            match msg {
                Ok(Some(Msg::Line(line))) => {
                    if let Some(w) = out.as_mut() {
                        json.clear();
                        line.write_json(&mut json);
                        json.push(b'\n');
                        let _ = w.write_all(&json);
                        dirty = true;
                    }
                }
                Ok(Some(Msg::Reopen)) => {
                    if let Some(w) = out.as_mut() {
                        let _ = w.flush();
                    }
                    out = match open(&self.path) {
                        Ok(f) => Some(BufWriter::with_capacity(256 << 10, f)),
                        Err(e) => {
                            log::error!("cannot reopen access log {}: {e}", self.path.display());
                            None
                        }
                    };
                    dirty = false;
                }
                Ok(Some(Msg::Flush(ack))) => {
                    if let Some(w) = out.as_mut() {
                        let _ = w.flush();
                    }
                    dirty = false;
                    let _ = ack.send(());
                }
                Ok(None) => {
                    if let Some(w) = out.as_mut() {
                        let _ = w.flush();
                    }
                    return;
                }
                Err(_) => {}
            }
            // Batch while lines keep coming, but never hold one longer than
            // FLUSH_EVERY.
            if dirty && (lull || last_flush.elapsed() >= FLUSH_EVERY) {
                if let Some(w) = out.as_mut() {
                    let _ = w.flush();
                }
                dirty = false;
                last_flush = std::time::Instant::now();
            }
        }
    }
}

/// The log names users and their addresses: owner-only, like the database.
fn open(path: &Path) -> std::io::Result<File> {
    crate::store::secret::open_private_append(path)
}

/// RFC 3339 UTC time with milliseconds.
pub fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_flush_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let (log, task) = AccessLog::new(&path);
        task.spawn().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let line = AccessLine { request_id: "r1".into(), status: 200, ..Default::default() };
        rt.block_on(log.write(line));
        assert!(log.flush_blocking(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["request_id"], "r1");
        // logrotate: move the file away, reopen, new lines go to a new file.
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        log.reopen();
        rt.block_on(log.write(AccessLine { request_id: "r2".into(), ..Default::default() }));
        assert!(log.flush_blocking(Duration::from_secs(5)));
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"r2\""));
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_written_json_is_what_serde_writes() {
        let line = AccessLine {
            time: timestamp(1_700_000_000_123),
            request_id: "req_1".into(),
            client_ip: Some("127.0.0.1".into()),
            key_prefix: None,
            user: Some("q\"uote\\back\nline\u{1}é😀@x.io".into()),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            model: Some("gpt-4o".into()),
            channel: Some("oa".into()),
            status: 200,
            upstream_status: Some(200),
            stream: true,
            tokens: Some(Tokens { input: 1, cached: 2, cache_write: 3, output: u64::MAX, reasoning: 0 }),
            estimated: false,
            cost: Some("0.000123".into()),
            billed_to: Some("credits"),
            ttfb_ms: None,
            total_ms: 12,
            bytes_in: 0,
            bytes_out: 9_999,
            error: None,
            error_detail: Some("\t".into()),
            attempts: vec![
                AttemptLog { channel: "a".into(), status: None, error: Some("connect: refused".into()), ms: 3 },
                AttemptLog { channel: "b".into(), status: Some(200), error: None, ms: 9 },
            ],
            translation: None,
        };
        let mut out = Vec::new();
        line.write_json(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, serde_json::to_string(&line).unwrap());
        let empty = AccessLine::default();
        let mut out = Vec::new();
        empty.write_json(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&empty).unwrap());
    }
}
