//! Secrets the gateway generates for itself and keeps in the data directory
//! (the thinking-signature key, the console's CSRF key, the admin token):
//! created once with mode 0600, read back on every start so what was signed
//! stays valid across restarts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `contents` to a new or truncated file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
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
}
