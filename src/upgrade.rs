//! Upgrades started from inside the gateway, and systemd's view of them.
//!
//! `SIGUSR2` makes the running gateway start the binary now installed at its
//! own path with `serve --upgrade` as its child, and hand its listening
//! sockets over to it (Pingora's upgrade, as `SIGQUIT` does). Being a child,
//! the new process lives in the same service cgroup, so under systemd
//! (`Type=notify`, `NotifyAccess=all`) it can announce itself as the
//! service's main process once it serves: `systemctl kill -s USR2
//! --kill-whom=main codex-proxy` upgrades without the unit ever stopping.
//! Outside systemd `kill -USR2 PID` does the same.

use crate::shutdown::on_each_signal;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::signal::unix::SignalKind;

/// How long the new process may take to start listening for the sockets.
const STARTUP: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot find the binary to start: {0}")]
    Binary(std::io::Error),
    #[error("the new binary refuses the configuration: {0}")]
    Check(String),
    #[error("cannot start {path}: {source}")]
    Spawn { path: String, source: std::io::Error },
    #[error("the new process exited before taking over ({0})")]
    Exited(std::process::ExitStatus),
    #[error("the new process did not get ready for the sockets within {0:?}")]
    Slow(Duration),
}

/// Starts the new process on `SIGUSR2` and hands the listeners over.
pub struct OnUpgradeSignal {
    pub config_path: PathBuf,
    /// Where the new process waits for the listening sockets.
    pub upgrade_sock: PathBuf,
}

#[async_trait]
impl BackgroundService for OnUpgradeSignal {
    async fn start(&self, shutdown: ShutdownWatch) {
        let unavailable = "cannot listen for SIGUSR2; upgrade with scripts/upgrade instead";
        on_each_signal(SignalKind::user_defined2(), unavailable, shutdown, || async {
            log::info!("SIGUSR2: starting the new binary to take the listeners over");
            let (conf, sock) = (self.config_path.clone(), self.upgrade_sock.clone());
            match tokio::task::spawn_blocking(move || start_successor(&conf, &sock)).await {
                Ok(Ok(pid)) => {
                    log::info!("process {pid} is ready for the listeners: handing them over");
                    // SAFETY: kill(2) on our own pid with a signal we handle.
                    unsafe { libc::kill(std::process::id() as i32, libc::SIGQUIT) };
                    return ControlFlow::Break(());
                }
                Ok(Err(e)) => log::error!("upgrade abandoned, this process keeps serving: {e}"),
                Err(e) => log::error!("upgrade abandoned, this process keeps serving: {e}"),
            }
            ControlFlow::Continue(())
        })
        .await;
    }
}

/// The binary at the path this process was started from (after a package
/// upgrade, the new one: the kernel reports the old file as deleted).
fn own_binary() -> std::io::Result<PathBuf> {
    Ok(installed_path(std::env::current_exe()?))
}

fn installed_path(exe: PathBuf) -> PathBuf {
    match exe.to_string_lossy().strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

/// Checks the configuration with the new binary, starts it with
/// `serve --upgrade` and waits until it listens for the sockets. Returns its
/// pid.
fn start_successor(conf: &Path, sock: &Path) -> Result<u32, UpgradeError> {
    let bin = own_binary().map_err(UpgradeError::Binary)?;
    let check = Command::new(&bin)
        .args(["check", "-c"])
        .arg(conf)
        .stdout(Stdio::null())
        .output()
        .map_err(|source| UpgradeError::Spawn { path: bin.display().to_string(), source })?;
    if !check.status.success() {
        return Err(UpgradeError::Check(String::from_utf8_lossy(&check.stderr).trim().to_string()));
    }
    // The new process replaces a stale socket file with its own.
    let stale = socket_identity(sock);
    let mut child = Command::new(&bin)
        .args(["serve", "--upgrade", "-c"])
        .arg(conf)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| UpgradeError::Spawn { path: bin.display().to_string(), source })?;
    wait_listening(&mut child, sock, stale)?;
    Ok(child.id())
}

fn socket_identity(path: &Path) -> Option<(u64, i64, i64)> {
    std::fs::metadata(path).ok().map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
}

fn wait_listening(child: &mut Child, sock: &Path, stale: Option<(u64, i64, i64)>) -> Result<(), UpgradeError> {
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(UpgradeError::Exited(status));
        }
        let now = socket_identity(sock);
        if now.is_some() && now != stale {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(UpgradeError::Slow(STARTUP));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Tells systemd (when it started us with `NOTIFY_SOCKET`) that this process
/// serves and is the service's main process, which after an upgrade moves
/// the unit over to the new process.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    if let Err(e) = notify(&path, message.as_bytes()) {
        log::warn!("cannot notify systemd through {}: {e}", path.to_string_lossy());
    }
}

fn notify(path: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    // A leading '@' names a socket in the abstract namespace.
    match bytes.strip_prefix(b"@") {
        Some(name) => socket.send_to_addr(message, &SocketAddr::from_abstract_name(name)?),
        None => socket.send_to(message, path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifies_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify(path.as_os_str(), b"READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[test]
    fn a_replaced_binary_is_found_at_its_path() {
        let replaced = PathBuf::from("/usr/local/bin/codex-proxy (deleted)");
        assert_eq!(installed_path(replaced), Path::new("/usr/local/bin/codex-proxy"));
        assert!(own_binary().unwrap().exists());
    }
}
