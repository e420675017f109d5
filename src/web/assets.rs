//! Static files compiled into the binary. Each is served under a name that
//! carries a hash of its content (`/assets/site.3f2a9c1b04.css`), so browsers
//! may cache it forever and a new release is fetched at once.

use super::response::Response;
use once_cell::sync::Lazy;
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// `stem.hash.ext`.
    hashed: String,
}

static ASSETS: Lazy<Vec<Asset>> = Lazy::new(|| {
    [
        ("site.css", "text/css; charset=utf-8", include_bytes!("assets/site.css").as_slice()),
        ("site.js", "text/javascript; charset=utf-8", include_bytes!("assets/site.js").as_slice()),
        ("logo.svg", "image/svg+xml", include_bytes!("assets/logo.svg").as_slice()),
    ]
    .into_iter()
    .map(|(name, content_type, bytes)| {
        let hash: String = Sha256::digest(bytes).iter().take(5).map(|b| format!("{b:02x}")).collect();
        let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
        Asset { name, content_type, bytes, hashed: format!("{stem}.{hash}.{ext}") }
    })
    .collect()
});

/// The URL of an asset by its plain name (`site.css`).
pub fn url(name: &str) -> String {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => format!("/assets/{}", a.hashed),
        None => format!("/assets/{name}"),
    }
}

/// Serves `/assets/<hashed name>`; the plain name works too, uncached.
pub fn serve(file: &str) -> Option<Response> {
    let a = ASSETS.iter().find(|a| a.hashed == file || a.name == file)?;
    let cache = if a.hashed == file { "public, max-age=31536000, immutable" } else { "no-cache" };
    Some(Response::new(200, a.content_type, a.bytes).header("cache-control", cache))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_resolve() {
        let u = url("site.css");
        assert!(u.starts_with("/assets/site.") && u.ends_with(".css") && u.len() > "/assets/site.css".len());
        let r = serve(u.trim_start_matches("/assets/")).unwrap();
        assert_eq!(r.header_value("cache-control"), Some("public, max-age=31536000, immutable"));
        assert_eq!(serve("site.css").unwrap().header_value("cache-control"), Some("no-cache"));
        assert!(serve("../Cargo.toml").is_none());
        let total: usize = ASSETS.iter().map(|a| a.bytes.len()).sum();
        assert!(total < 40_000, "every page loads all of them: {total} bytes");
    }
}
