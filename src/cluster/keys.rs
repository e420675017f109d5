//! Redis key names. Every key of one user shares the hash tag `{u:ID}`, so a
//! script touching them all runs on one shard of a Redis Cluster too.

pub struct User {
    pub leases: String,
    pub holds: String,
    pub minute: String,
    pub pending: String,
    pub pending_values: String,
}

impl User {
    pub fn new(user_id: i64) -> User {
        let tag = format!("codex-proxy:{{u:{user_id}}}");
        User {
            leases: format!("{tag}:leases"),
            holds: format!("{tag}:holds"),
            minute: format!("{tag}:minute"),
            pending: format!("{tag}:pending"),
            pending_values: format!("{tag}:pending-values"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_hash_tag_per_user() {
        let k = super::User::new(42);
        for key in [&k.leases, &k.holds, &k.minute, &k.pending, &k.pending_values] {
            assert!(key.starts_with("codex-proxy:{u:42}:"), "{key}");
        }
    }
}
