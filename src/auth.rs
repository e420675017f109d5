//! API keys: generation, format, hashing, and reading the credential a request
//! carries.
//!
//! A key is `codex_` + 8 base62 characters of lookup id + 32 base62 characters of
//! secret, all from the OS CSPRNG. Only the SHA-256 of the whole key is stored (a
//! 190-bit random secret needs no slow hash). A request's key is found by its
//! lookup id in memory, then its hash is compared in constant time, so timing
//! depends only on the public part.

use crate::error::GatewayError;
use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "codex_";
pub const LOOKUP_LEN: usize = 8;
pub const SECRET_LEN: usize = 32;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated key: the plaintext is shown once and never stored.
pub struct NewKey {
    pub plaintext: String,
    pub lookup: String,
    pub hash: KeyHash,
}

/// SHA-256 of a full key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

impl KeyHash {
    pub fn of(key: &str) -> KeyHash {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    pub fn from_hex(s: &str) -> Option<KeyHash> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        }
        Some(KeyHash(out))
    }
    /// Constant-time equality.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Random base62 text from the OS CSPRNG (rejection-free: 62 divides nothing
/// evenly, so sample uniformly with `gen_range`).
pub fn random_base62(len: usize) -> String {
    let mut rng = OsRng;
    (0..len).map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char).collect()
}

pub fn generate() -> NewKey {
    let lookup = random_base62(LOOKUP_LEN);
    let secret = random_base62(SECRET_LEN);
    let plaintext = format!("{KEY_PREFIX}{lookup}{secret}");
    let hash = KeyHash::of(&plaintext);
    NewKey { plaintext, lookup, hash }
}

/// The lookup id of a well-formed key, or `MalformedKey`.
pub fn lookup_id(key: &str) -> Result<&str, GatewayError> {
    let rest = key.strip_prefix(KEY_PREFIX).ok_or(GatewayError::MalformedKey)?;
    let ok = (SECRET_LEN..=128).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric());
    if !ok {
        return Err(GatewayError::MalformedKey);
    }
    Ok(&rest[..LOOKUP_LEN])
}

/// Extracts the presented key from `Authorization: Bearer …` or, where the
/// endpoint allows it, `x-api-key`. Bearer wins when both are present.
pub fn credential<'a>(
    authorization: Option<&'a [u8]>,
    x_api_key: Option<&'a [u8]>,
    allow_x_api_key: bool,
) -> Result<&'a str, GatewayError> {
    if let Some(v) = authorization {
        let v = std::str::from_utf8(v).map_err(|_| GatewayError::MalformedKey)?.trim();
        let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(GatewayError::MalformedKey);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(GatewayError::MissingKey);
        }
        return Ok(token);
    }
    if allow_x_api_key {
        if let Some(v) = x_api_key {
            let v = std::str::from_utf8(v).map_err(|_| GatewayError::MalformedKey)?.trim();
            if v.is_empty() {
                return Err(GatewayError::MissingKey);
            }
            return Ok(v);
        }
    }
    Err(GatewayError::MissingKey)
}

/// The prefix of a key that is safe to log and show (`codex_AbCdEfGh`).
pub fn display_prefix(lookup: &str) -> String {
    format!("{KEY_PREFIX}{lookup}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_unique() {
        let a = generate();
        let b = generate();
        assert_ne!(a.plaintext, b.plaintext);
        assert_eq!(a.plaintext.len(), KEY_PREFIX.len() + LOOKUP_LEN + SECRET_LEN);
        assert_eq!(lookup_id(&a.plaintext).unwrap(), a.lookup);
        assert!(a.hash.matches(&KeyHash::of(&a.plaintext)));
        assert!(!a.hash.matches(&b.hash));
        assert_eq!(KeyHash::from_hex(&a.hash.to_hex()), Some(a.hash));
    }

    #[test]
    fn malformed_keys() {
        assert_eq!(lookup_id("sk-abc"), Err(GatewayError::MalformedKey));
        assert_eq!(lookup_id("codex_short"), Err(GatewayError::MalformedKey));
        assert_eq!(lookup_id(&format!("codex_{}!", "a".repeat(40))), Err(GatewayError::MalformedKey));
    }

    #[test]
    fn credentials() {
        assert_eq!(credential(Some(b"Bearer codex_x"), None, false), Ok("codex_x"));
        assert_eq!(credential(Some(b"bearer  codex_x "), None, false), Ok("codex_x"));
        assert_eq!(credential(None, Some(b"codex_y"), true), Ok("codex_y"));
        assert_eq!(credential(None, Some(b"codex_y"), false), Err(GatewayError::MissingKey));
        assert_eq!(credential(None, None, true), Err(GatewayError::MissingKey));
        assert_eq!(credential(Some(b"Bearer "), None, true), Err(GatewayError::MissingKey));
        assert_eq!(credential(Some(b"Basic dXNlcg=="), None, true), Err(GatewayError::MalformedKey));
    }
}
