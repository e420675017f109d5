//! The certificates of the TLS listeners. Each listener resolves its
//! certificate per handshake from a swappable slot, so a reload that re-reads
//! the PEM files changes what new connections get without touching the
//! connections already open.

use crate::config::TlsFiles;
use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {cert} or {key}: {message}")]
    Unreadable { cert: String, key: String, message: String },
    #[error("{0} holds no certificate, or the key file holds no private key")]
    Missing(String),
    #[error("the private key in {key} is not usable: {message}")]
    Key { key: String, message: String },
}

/// One listener's certificate chain and key.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<CertifiedKey>,
}

impl Certificates {
    pub fn load(files: &TlsFiles) -> Result<Arc<Certificates>, CertError> {
        Ok(Arc::new(Certificates { current: ArcSwap::new(read(files)?) }))
    }

    /// Serves `key` to handshakes from now on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Reads and checks a certificate chain and its private key (PEM).
pub fn read(files: &TlsFiles) -> Result<Arc<CertifiedKey>, CertError> {
    let (cert, key) = (files.cert.display().to_string(), files.key.display().to_string());
    pingora::tls::install_default_crypto_provider();
    let (chain, private) = pingora::tls::load_certs_and_key_files(&cert, &key)
        .map_err(|e| CertError::Unreadable { cert: cert.clone(), key: key.clone(), message: e.to_string() })?
        .ok_or_else(|| CertError::Missing(cert.clone()))?;
    let provider = pingora::tls::CryptoProvider::get_default()
        .ok_or_else(|| CertError::Key { key: key.clone(), message: "no TLS crypto provider".into() })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| CertError::Key { key: key.clone(), message: e.to_string() })?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}
