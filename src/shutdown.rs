//! Signals. SIGTERM and SIGINT both shut down gracefully: listeners close, the
//! requests in flight finish (for at most the configured grace period), pending
//! database and log writes are flushed, and the process exits — as soon as the
//! last request is done, not after Pingora's fixed grace sleep. SIGQUIT is
//! Pingora's graceful upgrade: the listeners go to the new process (started
//! with `serve --upgrade`), then this one drains and flushes the same way.
//! SIGUSR1 reopens the access log. (SIGHUP reloads the configuration, see
//! `reload`; SIGUSR2 starts the new binary and upgrades to it, see `upgrade`.)

use crate::app::App;
use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

/// Flushes the writers; used on every exit path.
pub fn flush(app: &App) {
    if !app.writer.flush_blocking(Duration::from_secs(10)) {
        log::error!("database writer did not flush within 10s");
    }
    if !app.access_log.flush_blocking(Duration::from_secs(5)) {
        log::error!("access log did not flush within 5s");
    }
}

pub struct Signals {
    pub app: Arc<App>,
    pub grace: Duration,
    /// Pingora's execution phases: an upgrade may only exit once the
    /// listeners are handed over and closed here.
    pub phases: parking_lot::Mutex<Option<tokio::sync::broadcast::Receiver<ExecutionPhase>>>,
    /// Removed at exit while it still names this process (after an upgrade
    /// it names the new one).
    pub pid_file: std::path::PathBuf,
}

/// How long a connection accepted before the listeners closed may take to
/// send its request: one in transit arrives within milliseconds, while an
/// idle pre-opened one (browsers do that) would never send and must not hold
/// the exit for the whole grace period.
const OPENING_WAIT: Duration = Duration::from_secs(2);

/// Waits for the requests in flight (at most `grace`), flushes the writers
/// and exits, as soon as the last request is done rather than after
/// Pingora's fixed grace sleep.
fn drain_and_exit(app: Arc<App>, grace: Duration, pid_file: std::path::PathBuf) {
    let started = Instant::now();
    let busy = || {
        let opening = app.opening() > 0 && started.elapsed() < OPENING_WAIT;
        app.inflight() > 0 || opening
    };
    while busy() && started.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    if app.inflight() > 0 {
        log::warn!("grace period over with {} request(s) still running", app.inflight());
    }
    flush(&app);
    let ours = std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(&pid_file);
    }
    log::info!("shutdown complete");
    std::process::exit(0);
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::quit()))
        else {
            log::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = quit.recv() => "SIGQUIT",
        };
        let (app, grace, pid_file) = (self.app.clone(), self.grace, self.pid_file.clone());
        if name == "SIGQUIT" {
            // Pingora hands the listeners to the new process, keeps
            // accepting for a few seconds while it takes over, then closes
            // them: only then may the drain end the process.
            let phases = self.phases.lock().take();
            log::info!("SIGQUIT: handing the listeners over to the new process");
            std::thread::spawn(move || {
                if let Some(mut phases) = phases {
                    while !matches!(
                        phases.blocking_recv(),
                        Ok(ExecutionPhase::ShutdownStarted) | Err(tokio::sync::broadcast::error::RecvError::Closed)
                    ) {}
                }
                log::info!("listeners handed over; draining {} request(s) for at most {grace:?}", app.inflight());
                drain_and_exit(app, grace, pid_file);
            });
            return ShutdownSignal::GracefulUpgrade;
        }
        log::info!("{name}: draining {} request(s) for at most {grace:?}", app.inflight());
        std::thread::spawn(move || drain_and_exit(app, grace, pid_file));
        ShutdownSignal::GracefulTerminate
    }
}

/// Runs `on` for each `kind` signal until the server shuts down, or until
/// `on` says to stop. `unavailable` is logged when the signal cannot be
/// listened for (it says what to do instead).
pub async fn on_each_signal<F, Fut>(kind: SignalKind, unavailable: &str, mut shutdown: ShutdownWatch, mut on: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::ops::ControlFlow<()>>,
{
    let Ok(mut signals) = signal(kind) else {
        log::error!("{unavailable}");
        return;
    };
    loop {
        tokio::select! {
            _ = signals.recv() => {
                if on().await.is_break() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Reopens the access log on SIGUSR1 (logrotate's `postrotate`).
pub struct LogReopener(pub Arc<App>);

#[async_trait]
impl BackgroundService for LogReopener {
    async fn start(&self, shutdown: ShutdownWatch) {
        let unavailable = "cannot listen for SIGUSR1; the access log will not reopen on rotation";
        on_each_signal(SignalKind::user_defined1(), unavailable, shutdown, || async {
            log::info!("SIGUSR1: reopening the access log");
            self.0.access_log.reopen();
            std::ops::ControlFlow::Continue(())
        })
        .await;
    }
}
