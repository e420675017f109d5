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

/// One access-log line.
#[derive(Debug, Clone, Serialize, Default)]
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

enum Msg {
    Line(String),
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

    pub async fn write(&self, line: &AccessLine) {
        let Some(tx) = &self.tx else { return };
        match serde_json::to_string(line) {
            Ok(s) => {
                let _ = tx.send(Msg::Line(s)).await;
            }
            Err(e) => log::error!("cannot serialise access log line: {e}"),
        }
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
                        let _ = w.write_all(line.as_bytes());
                        let _ = w.write_all(b"\n");
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
        rt.block_on(log.write(&line));
        assert!(log.flush_blocking(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["request_id"], "r1");
        // logrotate: move the file away, reopen, new lines go to a new file.
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        log.reopen();
        rt.block_on(log.write(&AccessLine { request_id: "r2".into(), ..Default::default() }));
        assert!(log.flush_blocking(Duration::from_secs(5)));
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"r2\""));
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
    }
}
