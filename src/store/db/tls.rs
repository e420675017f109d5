//! TLS to PostgreSQL. `sslmode` in `storage.url` decides when it is used:
//! `prefer` (the default) when the server offers it, `require` always (the
//! connection fails without it), `disable` never; a Unix socket never uses
//! it. Whenever it is used, the server's certificate must chain to
//! `storage.ca_file` (or, without one, to the system's roots) and name the
//! host: a connection is never encrypted yet unverified, which would only
//! look safe.

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector for `ca_file`, or the system's roots, built once per file:
/// reading the system's roots takes about 10 ms, which every pooled
/// connection, and every reconnection of a writer riding out an outage,
/// would pay again. (Storage settings change only with a restart.)
pub fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, String> {
    static BUILT: Lazy<Mutex<HashMap<Option<PathBuf>, MakeRustlsConnect>>> = Lazy::new(Default::default);
    let mut built = BUILT.lock();
    let key = ca_file.map(Path::to_path_buf);
    if let Some(c) = built.get(&key) {
        return Ok(c.clone());
    }
    let c = build(ca_file)?;
    built.insert(key, c.clone());
    Ok(c)
}

fn build(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, String> {
    let roots = match ca_file {
        Some(path) => roots_from_file(path)?,
        None => system_roots(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The certificates of a PEM file, every one a root; at least one.
pub fn roots_from_file(path: &Path) -> Result<rustls::RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("{} holds a certificate rustls refuses: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(roots)
}

fn system_roots() -> rustls::RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        log::warn!("reading the system's CA certificates: {e}");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(found.certs);
    if unusable > 0 {
        log::debug!("{unusable} system CA certificate(s) are not usable by rustls");
    }
    roots
}

/// Whether a connection error is the TLS handshake failing (most often the
/// certificate not verifying): worth saying how to fix.
pub fn is_handshake_failure(e: &postgres::Error) -> bool {
    e.to_string().contains("TLS handshake")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(roots_from_file(&empty).unwrap_err().ends_with("holds no certificate"));
        assert!(roots_from_file(&dir.path().join("none.pem")).unwrap_err().starts_with("cannot read"));
        let cert = rcgen::generate_simple_self_signed(vec!["db.internal".into()]).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, cert.cert.pem()).unwrap();
        assert_eq!(roots_from_file(&good).unwrap().len(), 1);
        assert!(connector(Some(&good)).is_ok());
    }
}
