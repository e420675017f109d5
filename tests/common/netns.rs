//! Network namespaces for cluster nodes, where the machine allows them (as
//! root, or with CAP_SYS_ADMIN). A node in a namespace of its own has only a
//! loopback of its own: it cannot reach another node's ports, so the nodes
//! share nothing but the database and Redis (reached through Unix sockets),
//! as nodes on separate machines share nothing but those servers.
//!
//! A namespace here is a thread that entered it and runs a small runtime:
//! sockets made on that thread, and processes started from it, live in the
//! namespace. The test reaches a node through a forwarder listening on the
//! test's own loopback; the node reaches the fake upstream through a
//! listener bound inside its namespace on the fake's own port, so every
//! node's configuration names the same upstream URL.

use codex_proxy::fake_upstream::{serve, FakeUpstream};
use std::net::SocketAddr;
use std::process::{Child, Command};

type Job = Box<dyn FnOnce() + Send>;

pub struct Netns {
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Set by `scripts/test` when the machine allows namespaces: the cluster
/// tests then fail instead of falling back to one shared namespace.
const REQUIRED: &str = "CODEX_PROXY_TEST_NETNS";

impl Netns {
    /// One namespace per node, or `None` (said on stderr) where the machine
    /// refuses them and the suite does not require them.
    pub fn for_nodes(n: usize) -> Option<Vec<Netns>> {
        match (0..n).map(|_| Netns::new()).collect::<Result<Vec<_>, String>>() {
            Ok(all) => Some(all),
            Err(e) if std::env::var_os(REQUIRED).is_some() => panic!("{REQUIRED} is set, but {e}"),
            Err(e) => {
                eprintln!("the nodes share one network namespace: {e}");
                None
            }
        }
    }

    /// A new namespace with its loopback up, or why the machine refuses one.
    pub fn new() -> Result<Netns, String> {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                let runtime = enter_new_namespace().and_then(|()| {
                    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())
                });
                let runtime = match runtime {
                    Ok(rt) => rt,
                    Err(e) => return drop(entered_tx.send(Err(e))),
                };
                let _ = entered_tx.send(Ok(()));
                // Runs until the `Netns` is dropped; dropping the runtime
                // then ends the forwarders and the upstream listener.
                runtime.block_on(async move {
                    while let Some(job) = queue.recv().await {
                        job();
                    }
                });
            })
            .map_err(|e| e.to_string())?;
        entered.recv().map_err(|e| e.to_string())??;
        Ok(Netns { jobs: Some(jobs), thread: Some(thread) })
    }

    /// Runs `f` on the namespace's thread (inside its runtime) and returns
    /// what it returned.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move || drop(tx.send(f())));
        self.jobs.as_ref().expect("namespace thread").send(job).expect("namespace thread");
        rx.recv().expect("namespace job")
    }

    /// Starts `cmd` inside the namespace.
    pub fn spawn(&self, mut cmd: Command) -> std::io::Result<Child> {
        self.run(move || cmd.spawn())
    }

    /// Serves `fake` inside the namespace too, on the port it has outside.
    pub fn serve_upstream(&self, fake: &FakeUpstream) {
        let (port, state) = (fake.addr.port(), fake.state.clone());
        self.run(move || {
            let listener =
                std::net::TcpListener::bind(("127.0.0.1", port)).expect("the fake's port, inside the namespace");
            tokio::spawn(serve(listener, state, std::future::pending()));
        });
    }

    /// A port on the caller's loopback whose connections are forwarded to
    /// `inside`, an address in the namespace.
    pub fn forward(&self, inside: SocketAddr) -> SocketAddr {
        // Bound here: in the caller's namespace.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("forwarder port");
        let outside = listener.local_addr().expect("forwarder address");
        self.run(move || {
            listener.set_nonblocking(true).expect("nonblocking listener");
            let listener = tokio::net::TcpListener::from_std(listener).expect("forwarder listener");
            tokio::spawn(async move {
                while let Ok((mut from, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        // Connected from the namespace's thread: inside it.
                        let Ok(mut to) = tokio::net::TcpStream::connect(inside).await else { return };
                        let _ = to.set_nodelay(true);
                        let _ = from.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut from, &mut to).await;
                    });
                }
            });
        });
        outside
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves the calling thread into a new network namespace and brings its
/// loopback up, as `ip link set lo up` would.
fn enter_new_namespace() -> Result<(), String> {
    let os_error = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain system calls on this thread; `req` is a zeroed ifreq
    // whose name is a NUL-terminated "lo".
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(os_error("unshare(CLONE_NEWNET)"));
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(os_error("socket"));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (to, from) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *to = *from as libc::c_char;
        }
        let mut ok = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) == 0;
        if ok {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            ok = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) == 0;
        }
        let result = if ok { Ok(()) } else { Err(os_error("bringing the loopback up")) };
        libc::close(fd);
        result
    }
}
