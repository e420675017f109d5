//! Console sessions and CSRF tokens.
//!
//! A session is a random 256-bit token in an `HttpOnly`, `SameSite=Lax`
//! cookie (`Secure` and `__Host-` over TLS); the database keeps only its
//! SHA-256. Sessions end on sign-out, on a password change, when idle longer
//! than `console.session_idle_timeout`, and `console.session_max_age` after
//! sign-in, whatever happens.
//!
//! CSRF: every state-changing form carries a token that is an HMAC of the
//! session (or, before sign-in, of a random pre-session cookie) under a key
//! kept in the data directory. A forged form has no way to learn it; a
//! cross-site `Origin` or `Sec-Fetch-Site` is refused before that.

use base64::Engine;
use cookie::{Cookie, SameSite};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The pre-session cookie that binds sign-in and sign-up forms.
pub const ANON_COOKIE: &str = "cp_anon";
/// The language preference cookie.
pub const LANG_COOKIE: &str = "cp_lang";

/// The operator console's session cookie (a different name from the user
/// console's: cookies do not tell ports apart).
pub fn operator_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-cp_operator"
    } else {
        "cp_operator"
    }
}

/// The session cookie's name: browsers accept `__Host-` only with `Secure`.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-cp_session"
    } else {
        "cp_session"
    }
}

/// 256 random bits from the OS CSPRNG, URL-safe Base64.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database stores for a token.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs CSRF tokens.
pub struct Csrf {
    key: [u8; 32],
}

impl Csrf {
    pub fn new(key: [u8; 32]) -> Csrf {
        Csrf { key }
    }

    fn mac(&self, binding: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(binding.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The token for forms of the session whose token hash is `session_hash`.
    pub fn for_session(&self, session_hash: &str) -> String {
        self.encode(&format!("session:{session_hash}"))
    }

    /// The token for forms of an operator console session.
    pub fn for_operator(&self, session_hash: &str) -> String {
        self.encode(&format!("operator:{session_hash}"))
    }

    /// The token for pre-sign-in forms bound to the anonymous cookie.
    pub fn for_anon(&self, anon: &str) -> String {
        self.encode(&format!("anon:{anon}"))
    }

    fn encode(&self, binding: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.mac(binding))
    }

    /// Constant-time comparison of a presented token with the expected one.
    pub fn verify(expected: &str, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| p.len() == expected.len() && bool::from(p.as_bytes().ct_eq(expected.as_bytes())))
    }
}

/// A cookie with the attributes every cookie of ours has.
pub fn cookie(name: &'static str, value: String, max_age_secs: i64, secure: bool) -> Cookie<'static> {
    cookie_with(name, value, max_age_secs, secure, SameSite::Lax)
}

/// The operator console's cookies: never sent with a request another site
/// starts, not even a link.
pub fn strict_cookie(name: &'static str, value: String, max_age_secs: i64, secure: bool) -> Cookie<'static> {
    cookie_with(name, value, max_age_secs, secure, SameSite::Strict)
}

fn cookie_with(name: &'static str, value: String, max_age_secs: i64, secure: bool, site: SameSite) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(site)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age_secs))
        .build()
}

/// A cookie that deletes `name`.
pub fn expired_cookie(name: &'static str, secure: bool) -> Cookie<'static> {
    cookie(name, String::new(), 0, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in unpadded Base64");
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }

    #[test]
    fn csrf_tokens_bind_to_their_session() {
        let c = Csrf::new([1; 32]);
        let t = c.for_session("abc");
        assert!(Csrf::verify(&t, Some(&t)));
        assert!(!Csrf::verify(&t, Some(&c.for_session("abd"))));
        assert!(!Csrf::verify(&t, Some(&c.for_anon("abc"))));
        assert!(!Csrf::verify(&t, Some(&c.for_operator("abc"))), "a user session's token is no operator's");
        assert!(!Csrf::verify(&t, None));
        assert!(!Csrf::verify(&t, Some("")));
        assert_ne!(Csrf::new([2; 32]).for_session("abc"), t, "the key matters");
    }

    #[test]
    fn cookie_attributes() {
        let c = cookie(session_cookie_name(true), "v".into(), 60, true).to_string();
        assert!(c.starts_with("__Host-cp_session=v"), "{c}");
        for part in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=60"] {
            assert!(c.contains(part), "{c} has {part}");
        }
        let plain = cookie(session_cookie_name(false), "v".into(), 60, false).to_string();
        assert!(plain.starts_with("cp_session=v") && !plain.contains("Secure"), "{plain}");
        assert!(expired_cookie(ANON_COOKIE, false).to_string().contains("Max-Age=0"));
    }
}
