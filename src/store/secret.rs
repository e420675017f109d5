//! Secrets the gateway generates for itself and keeps in the data directory
//! (the thinking-signature key, the console's CSRF key, the admin token):
//! created once with mode 0600, read back on every start so what was signed
//! stays valid across restarts.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents accessible by the owner only
/// (0700): the data directory holds emails, password and key hashes and
/// balances. An existing directory keeps its mode (the operator chose it).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates the parent directory of `path` the same way.
pub fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => create_private_dir(dir),
        None => Ok(()),
    }
}

/// Opens `path` for appending, creating it readable by its owner only (0600).
pub fn open_private_append(path: &Path) -> std::io::Result<std::fs::File> {
    create_parent(path)?;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// Creates `path` empty with mode 0600 unless it exists, so that what opens
/// it next (SQLite, which gives its -wal and -shm files the same mode) does
/// not create it world-readable.
pub fn touch_private(path: &Path) -> std::io::Result<()> {
    create_parent(path)?;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `contents` to a new or truncated file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    create_parent(path)?;
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(contents)
}

/// A 256-bit key stored as hex in `path`, created from the OS CSPRNG when
/// missing or unreadable.
pub fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    if let Ok(hex) = std::fs::read_to_string(path) {
        if let Some(h) = crate::auth::KeyHash::from_hex(hex.trim()) {
            return Ok(h.0);
        }
    }
    let key = crate::auth::KeyHash::of(&crate::auth::random_base62(64));
    write_private(path, key.to_hex().as_bytes())?;
    Ok(key.0)
}

/// The key `name` (`web.key`, `signing.key`): in `data_dir` for a single
/// node; for a node of a cluster, the one in the shared database, which the
/// first node to start put there (its own file's key, so a single node that
/// becomes a cluster keeps its signatures valid).
pub fn key_for(cfg: &crate::config::Config, name: &str) -> std::io::Result<[u8; 32]> {
    let own = load_or_create_key(&cfg.data_dir.join(name))?;
    if cfg.cluster.is_none() {
        return Ok(own);
    }
    let shared = super::open(&cfg.database).and_then(|c| shared_key(&c, name, own));
    shared.map_err(std::io::Error::other)
}

/// Stores `own` under `name` unless a key is there already; the stored key.
pub fn shared_key(conn: &super::Connection, name: &str, own: [u8; 32]) -> Result<[u8; 32], super::StoreError> {
    use super::SqlContext;
    let hex = crate::auth::KeyHash(own).to_hex();
    conn.execute("INSERT OR IGNORE INTO shared_keys(name, key) VALUES (?1, ?2)", [name, hex.as_str()])
        .ctx("storing a shared key")?;
    let stored: String = conn
        .query_row("SELECT key FROM shared_keys WHERE name = ?1", [name], |r| r.get(0))
        .ctx("reading a shared key")?;
    crate::auth::KeyHash::from_hex(&stored)
        .map(|h| h.0)
        .ok_or_else(|| super::StoreError::Invalid(format!("shared key {name} is not 64 hex digits")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_persist_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.key");
        let a = load_or_create_key(&path).unwrap();
        assert_eq!(load_or_create_key(&path).unwrap(), a);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "corrupt").unwrap();
        assert_ne!(load_or_create_key(&path).unwrap(), a, "a corrupt key is replaced");
    }

    #[test]
    fn the_first_node_s_key_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(dir.path().join("db")).unwrap();
        assert_eq!(shared_key(&conn, "web.key", [1; 32]).unwrap(), [1; 32]);
        assert_eq!(shared_key(&conn, "web.key", [2; 32]).unwrap(), [1; 32]);
        assert_eq!(shared_key(&conn, "signing.key", [3; 32]).unwrap(), [3; 32]);
    }
}
