//! Redis key names. Every key of one user shares the hash tag `{u:ID}`, so a
//! script touching them all runs on one shard of a Redis Cluster too.

pub struct User {
    pub prefix: String,
    pub leases: String,
    pub holds: String,
    pub minute: String,
    pub unposted: String,
    pub held: String,
}

impl User {
    pub fn new(user_id: i64) -> User {
        let tag = format!("codex-proxy:{{u:{user_id}}}");
        User {
            leases: format!("{tag}:leases"),
            holds: format!("{tag}:holds"),
            minute: format!("{tag}:minute"),
            unposted: format!("{tag}:unposted"),
            held: format!("{tag}:held"),
            prefix: tag,
        }
    }

    /// The ledger rows `instance` committed lately (see `post.lua`).
    pub fn posted(&self, instance: &str) -> String {
        format!("{}:posted:{instance}", self.prefix)
    }
}

/// A shared window of attempts (see `window.lua`).
pub fn window(name: &str, key: &str) -> String {
    format!("codex-proxy:window:{name}:{key}")
}

/// Exists while node `instance` is alive (its heartbeat, see `upkeep`).
pub fn node(instance: &str) -> String {
    format!("codex-proxy:node:{instance}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_hash_tag_per_user() {
        let k = super::User::new(42);
        for key in [&k.leases, &k.holds, &k.minute, &k.unposted, &k.held, &k.posted("n1")] {
            assert!(key.starts_with("codex-proxy:{u:42}:"), "{key}");
        }
    }
}
