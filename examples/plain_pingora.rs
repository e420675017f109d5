//! The benchmark's framework baseline: a Pingora 0.9.1 reverse proxy that does
//! nothing but relay — no auth, no body parsing, no billing, no logs — built
//! with the same Pingora features and allocator as the gateway. `scripts/bench`
//! runs it beside nginx so the report separates what Pingora itself costs per
//! request from what the gateway adds on top.
//!
//!   cargo run --release --example plain_pingora -- LISTEN UPSTREAM THREADS

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Relay {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Relay {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, threads] = args.as_slice() else {
        eprintln!("usage: plain_pingora LISTEN UPSTREAM THREADS");
        std::process::exit(2);
    };
    let conf = ServerConf { threads: threads.parse().expect("THREADS is a number"), ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Relay { upstream: upstream.clone() });
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever();
}
