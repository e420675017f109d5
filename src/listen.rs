//! Listener addresses, including `IP:0` ("let the OS pick a port", which the
//! tests and a shared machine need).
//!
//! Pingora binds listeners itself and does not report the port it got for
//! `:0`. So for a port-0 listener the gateway first binds a placeholder socket
//! with `SO_REUSEPORT` (not listening, so it never takes connections), learns
//! the port, and hands Pingora that concrete address with `SO_REUSEPORT` set:
//! only sockets of this user with the same option can share the port, so the
//! port cannot be taken in between. Fixed ports are bound by Pingora as usual,
//! without `SO_REUSEPORT` (a second gateway on the same port must fail).

use pingora::listeners::TcpSocketOptions;
use std::net::SocketAddr;

/// A concrete address for Pingora, plus the placeholder holding it.
pub struct Bound {
    pub addr: SocketAddr,
    pub reuseport: bool,
    _placeholder: Option<tokio::net::TcpSocket>,
}

impl Bound {
    /// Resolves `addr`: a fixed port is passed through; port 0 is reserved.
    pub fn reserve(addr: SocketAddr) -> std::io::Result<Bound> {
        if addr.port() != 0 {
            return Ok(Bound { addr, reuseport: false, _placeholder: None });
        }
        let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        sock.set_reuseport(true)?;
        sock.bind(addr)?;
        let actual = sock.local_addr()?;
        Ok(Bound { addr: actual, reuseport: true, _placeholder: Some(sock) })
    }

    /// Socket options Pingora must use for this address.
    pub fn socket_options(&self) -> Option<TcpSocketOptions> {
        self.reuseport.then(|| {
            let mut o = TcpSocketOptions::default();
            o.so_reuseport = Some(true);
            o
        })
    }
}

/// Waits until something accepts connections on `addr` (Pingora binds its
/// listeners on its own threads), up to `timeout`.
pub async fn wait_listening(addr: SocketAddr, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gets_a_real_port() {
        let a = Bound::reserve("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = Bound::reserve("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(a.addr.port(), 0);
        assert_ne!(a.addr.port(), b.addr.port());
        assert!(a.socket_options().is_some());
        let fixed = Bound::reserve("127.0.0.1:8080".parse().unwrap()).unwrap();
        assert_eq!(fixed.addr.port(), 8080);
        assert!(fixed.socket_options().is_none());
        // A plain bind on the reserved port fails: it is really held.
        assert!(std::net::TcpListener::bind(a.addr).is_err());
    }
}
