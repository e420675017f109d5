//! Servers the cluster tests run beside the gateway: a private Redis on a
//! Unix socket in a temporary directory (no port to pick, nothing shared
//! with another test), stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl Redis {
    /// Starts `redis-server` (Debian's package; `scripts/test` installs it).
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Redis { child: None, dir };
        r.restart();
        r
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts the server again on the same socket (empty: it keeps nothing
    /// on disk, as a restarted cache would).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is running");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: scripts/test installs Debian's redis-server package");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not open {}", self.socket().display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Runs one command with redis-cli and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").arg("-s").arg(self.socket()).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private PostgreSQL: `initdb` in a temporary directory, a Unix socket
/// there (no port), durability off (test data). PostgreSQL refuses to run
/// as root, so under root it runs as the `postgres` user Debian's package
/// creates.
pub struct Postgres {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    running: bool,
}

impl Postgres {
    /// Starts a new server (Debian's `postgresql` package; `scripts/test`
    /// installs it).
    pub fn start() -> Postgres {
        let bin = pg_bindir();
        let dir = tempfile::tempdir().expect("tempdir");
        if unsafe { libc::geteuid() } == 0 {
            let chown = Command::new("chown").arg("postgres").arg(dir.path()).status().expect("chown");
            assert!(chown.success(), "chown postgres {}", dir.path().display());
        }
        let pg = Postgres { dir, bin, running: false };
        let init = pg
            .command("initdb")
            .args(["-A", "trust", "-U", "codex", "--no-sync", "-E", "UTF8", "-D"])
            .arg(pg.data())
            .output()
            .expect("initdb");
        assert!(init.status.success(), "initdb: {}", String::from_utf8_lossy(&init.stderr));
        let mut pg = pg;
        pg.restart();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        }
    }

    /// `postgres://…` for a database on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://codex@localhost/{db}?host={}", self.dir.path().display())
    }

    /// A new empty database; its URL.
    pub fn database(&self, name: &str) -> String {
        let out = self.command("createdb").args(["-h"]).arg(self.dir.path()).args(["-U", "codex", name]).output();
        let out = out.expect("createdb");
        assert!(out.status.success(), "createdb: {}", String::from_utf8_lossy(&out.stderr));
        self.url(name)
    }

    /// Starts the server (again), with what it had on disk.
    pub fn restart(&mut self) {
        assert!(!self.running, "postgres is running");
        let opts = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c full_page_writes=off -c max_connections=100",
            self.dir.path().display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-o", &opts, "start"])
            .output()
            .expect("pg_ctl start");
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
        self.running = true;
    }

    /// Stops the server the quick way: connections are cut, as a crash or a
    /// failover would cut them, but what was committed stays.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = self.command("pg_ctl").arg("-D").arg(self.data()).args(["-m", "immediate", "stop"]).output();
        self.running = false;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// PostgreSQL's server binaries: where Debian keeps them, or on PATH.
fn pg_bindir() -> PathBuf {
    let debian = std::fs::read_dir("/usr/lib/postgresql").ok().into_iter().flatten().flatten();
    if let Some(bin) = debian.map(|v| v.path().join("bin")).find(|b| b.join("pg_ctl").exists()) {
        return bin;
    }
    let out = Command::new("sh").args(["-c", "command -v pg_ctl"]).output().expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "PostgreSQL is not installed: scripts/test installs Debian's postgresql package");
    PathBuf::from(path).parent().expect("a directory").to_path_buf()
}
