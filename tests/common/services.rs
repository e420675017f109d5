//! Servers the cluster tests run beside the gateway: a private Redis on a
//! Unix socket in a temporary directory (no port to pick, nothing shared
//! with another test), stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// Where it also serves TLS (`serve_tls`).
    tls_port: Option<u16>,
}

impl Redis {
    /// Starts `redis-server` (Debian's package; `scripts/test` installs it).
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Redis { child: None, dir, tls_port: None };
        r.restart();
        r
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Restarts the server serving TLS on 127.0.0.1 too, on a port the OS
    /// picked, with `cert` and `key` (PEM); `rediss://localhost:PORT`.
    pub fn serve_tls(&mut self, cert: &str, key: &str) -> String {
        let port = free_port();
        write_private(&self.dir.path().join("tls.crt"), cert);
        write_private(&self.dir.path().join("tls.key"), key);
        self.stop();
        self.tls_port = Some(port);
        self.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not open port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        format!("rediss://localhost:{port}")
    }

    /// Starts the server again on the same socket (empty: it keeps nothing
    /// on disk, as a restarted cache would).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is running");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(port) = self.tls_port {
            cmd.args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(self.dir.path().join("tls.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.path().join("tls.key"));
        }
        let child = cmd
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
    /// The TCP port it also serves TLS on (`serve_tls`); its socket's name
    /// carries the port too.
    tls_port: Option<u16>,
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
        let pg = Postgres { dir, bin, running: false, tls_port: None };
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

    fn port(&self) -> u16 {
        self.tls_port.unwrap_or(5432)
    }

    /// `postgres://…` for a database on this server, through its socket.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://codex@localhost:{}/{db}?host={}", self.port(), self.dir.path().display())
    }

    /// `postgres://…` for a database on this server, over TCP (`serve_tls`).
    pub fn tcp_url(&self, db: &str) -> String {
        format!("postgres://codex@localhost:{}/{db}", self.tls_port.expect("serving TCP"))
    }

    /// Restarts the server serving TLS on 127.0.0.1 too, on a port the OS
    /// picked, with `cert` and `key` (PEM).
    pub fn serve_tls(&mut self, cert: &str, key: &str) {
        for (name, pem) in [("server.crt", cert), ("server.key", key)] {
            let path = self.dir.path().join(name);
            write_private(&path, pem);
            if unsafe { libc::geteuid() } == 0 {
                assert!(Command::new("chown").arg("postgres").arg(&path).status().expect("chown").success());
            }
        }
        self.stop();
        self.tls_port = Some(free_port());
        self.restart();
    }

    /// A new empty database; its URL.
    pub fn database(&self, name: &str) -> String {
        let mut createdb = self.command("createdb");
        createdb.arg("-h").arg(self.dir.path()).args(["-p", &self.port().to_string(), "-U", "codex", name]);
        let out = createdb.output();
        let out = out.expect("createdb");
        assert!(out.status.success(), "createdb: {}", String::from_utf8_lossy(&out.stderr));
        self.url(name)
    }

    /// Starts the server (again), with what it had on disk.
    pub fn restart(&mut self) {
        assert!(!self.running, "postgres is running");
        let mut opts = format!(
            "-k {} -p {} -c fsync=off -c full_page_writes=off -c max_connections=100",
            self.dir.path().display(),
            self.port()
        );
        match self.tls_port {
            Some(_) => opts += &format!(
                " -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                self.dir.path().display()
            ),
            None => opts += " -c listen_addresses=''",
        }
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

/// A port the OS picked on 127.0.0.1, free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Writes a file only its owner may read (servers refuse a readable key).
fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A link to a Unix socket that can be cut, as a network partition cuts
/// one machine off: connections to `path` are relayed to the target until
/// `cut`; then every connection, open or new, stays open and silent (the
/// client times out, as across a partition) until `heal` closes them.
pub struct UnixLink {
    pub path: PathBuf,
    cut: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl UnixLink {
    pub fn to(target: PathBuf) -> UnixLink {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("link.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = {
            let _in = runtime.enter();
            tokio::net::UnixListener::bind(&path).expect("link socket")
        };
        let (cut, state) = tokio::sync::watch::channel(false);
        runtime.spawn(async move {
            while let Ok((from, _)) = listener.accept().await {
                tokio::spawn(relay(from, target.clone(), state.clone()));
            }
        });
        UnixLink { path, cut, _dir: dir, runtime: Some(runtime) }
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for UnixLink {
    fn drop(&mut self) {
        // Tests drop it inside their own runtime, where a runtime may not
        // wait for its tasks.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Relays one connection until it ends or the link is cut; a cut one is
/// held open, silent, until the link heals.
async fn relay(mut from: tokio::net::UnixStream, target: PathBuf, mut state: tokio::sync::watch::Receiver<bool>) {
    if !*state.borrow() {
        let Ok(mut to) = tokio::net::UnixStream::connect(&target).await else { return };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut from, &mut to) => return,
            _ = state.wait_for(|cut| *cut) => {}
        }
    }
    let _ = state.wait_for(|cut| !*cut).await;
}
