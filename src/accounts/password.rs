//! Console passwords: length bounds, argon2id hashing (the `argon2` crate's
//! defaults: m = 19 MiB, t = 2, p = 1, OWASP's minimum) and verification.
//! Hashing takes tens of milliseconds of a core: call it off the request
//! threads.

use crate::store::StoreError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use once_cell::sync::Lazy;

/// Bounds in characters: long enough to mean something, short enough that
/// hashing a submitted value stays cheap.
pub const MIN_CHARS: usize = 8;
pub const MAX_CHARS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordError {
    TooShort,
    TooLong,
}

impl std::fmt::Display for PasswordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordError::TooShort => write!(f, "passwords must have at least {MIN_CHARS} characters"),
            PasswordError::TooLong => write!(f, "passwords must have at most {MAX_CHARS} characters"),
        }
    }
}

pub fn check(password: &str) -> Result<(), PasswordError> {
    let n = password.chars().count();
    if n < MIN_CHARS {
        Err(PasswordError::TooShort)
    } else if n > MAX_CHARS {
        Err(PasswordError::TooLong)
    } else {
        Ok(())
    }
}

/// A PHC-format argon2id hash of a password within bounds.
pub fn hash(password: &str) -> Result<String, StoreError> {
    check(password).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Invalid(format!("hashing password: {e}")))
}

/// Stands in for a missing hash so that checking an unknown account costs
/// what checking a real one does.
static DUMMY: Lazy<String> = Lazy::new(|| hash("not-a-real-password").unwrap_or_default());

/// Whether `password` matches `stored`. `None` (no such user, or a user
/// without a console password) does the same work and never matches.
pub fn verify(stored: Option<&str>, password: &str) -> bool {
    if password.chars().count() > MAX_CHARS {
        return false;
    }
    let (phc, real) = match stored {
        Some(h) => (h, true),
        None => (DUMMY.as_str(), false),
    };
    let ok = PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok());
    ok && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify(Some(&h), "correct horse"));
        assert!(!verify(Some(&h), "wrong horse"));
        assert!(!verify(None, "not-a-real-password"), "the dummy never matches");
        assert!(!verify(Some("garbage"), "x"));
    }

    #[test]
    fn bounds() {
        assert_eq!(check("short"), Err(PasswordError::TooShort));
        assert_eq!(check("密码密码密码密码"), Ok(()), "characters, not bytes");
        assert_eq!(check(&"x".repeat(MAX_CHARS + 1)), Err(PasswordError::TooLong));
        assert!(hash("short").is_err());
    }
}
