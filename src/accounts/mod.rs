//! In-memory account state the request path reads: keys and users as an
//! immutable snapshot swapped atomically on reload (`ArcSwap`: one atomic load
//! per request, no lock). Loaded from SQLite at start and again whenever the
//! database changes under the gateway (CLI, admin API).

pub mod ops;
pub mod password;

use crate::auth::{self, KeyHash};
use crate::config::{Config, PlanConfig};
use crate::error::GatewayError;
use crate::store::kinds::{Switch, UserStatus};
use crate::store::Connection;
use crate::store::{self, StoreError};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct KeyEntry {
    pub id: i64,
    pub user_id: i64,
    pub lookup: String,
    pub hash: KeyHash,
    pub name: String,
    pub active: bool,
    pub expires_at: Option<i64>,
    pub allowed_models: Option<Vec<String>>,
}

impl KeyEntry {
    pub fn prefix(&self) -> String {
        auth::display_prefix(&self.lookup)
    }
}

#[derive(Debug)]
pub struct UserEntry {
    pub id: i64,
    pub email: String,
    pub banned: bool,
    pub subscription: Option<Subscription>,
}

/// A user's latest subscription (possibly expired by now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub plan_id: String,
    pub starts_at: i64,
    pub expires_at: i64,
}

impl UserEntry {
    /// The user's plan when a subscription is running at `now` and its plan is
    /// still offered in the configuration.
    pub fn active_plan<'c>(&self, cfg: &'c Config, now: i64) -> Option<(&Subscription, &'c PlanConfig)> {
        let sub = self.subscription.as_ref().filter(|s| s.starts_at <= now && now < s.expires_at)?;
        cfg.plan(&sub.plan_id).map(|p| (sub, p))
    }
}

/// One consistent view of keys and users.
#[derive(Debug, Default)]
pub struct Directory {
    keys: HashMap<String, Arc<KeyEntry>>,
    users: HashMap<i64, Arc<UserEntry>>,
}

/// A request's authenticated identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: Arc<KeyEntry>,
    pub user: Arc<UserEntry>,
}

impl Directory {
    pub fn load(conn: &Connection) -> Result<Directory, StoreError> {
        let mut subs: HashMap<i64, Subscription> = store::billing::active_subscriptions(conn)?
            .into_iter()
            .map(|s| (s.user_id, Subscription { plan_id: s.plan_id, starts_at: s.starts_at, expires_at: s.expires_at }))
            .collect();
        let users = store::accounts::list_users(conn)?
            .into_iter()
            .map(|u| {
                let entry = UserEntry {
                    id: u.id,
                    email: u.email,
                    banned: u.status == UserStatus::Banned,
                    subscription: subs.remove(&u.id),
                };
                (u.id, Arc::new(entry))
            })
            .collect();
        let mut keys = HashMap::new();
        for k in store::accounts::list_keys(conn, None)? {
            if k.deleted_at.is_some() {
                continue;
            }
            let Some(hash) = store::accounts::parse_hash(&k) else {
                log::error!("API key {} has a corrupt hash and cannot authenticate", k.id);
                continue;
            };
            keys.insert(
                k.lookup.clone(),
                Arc::new(KeyEntry {
                    id: k.id,
                    user_id: k.user_id,
                    lookup: k.lookup,
                    hash,
                    name: k.name,
                    active: k.status == Switch::Active,
                    expires_at: k.expires_at,
                    allowed_models: k.allowed_models,
                }),
            );
        }
        Ok(Directory { keys, users })
    }

    pub fn user(&self, id: i64) -> Option<&Arc<UserEntry>> {
        self.users.get(&id)
    }

    pub fn users(&self) -> impl Iterator<Item = &Arc<UserEntry>> {
        self.users.values()
    }

    /// Authenticates a presented key. Each failure names its cause (the 401
    /// message tells the user which).
    pub fn authenticate(&self, presented: &str, now_ms: i64) -> Result<Identity, GatewayError> {
        let lookup = auth::lookup_id(presented)?;
        let key = self.keys.get(lookup).ok_or(GatewayError::UnknownKey)?;
        if !key.hash.matches(&KeyHash::of(presented)) {
            return Err(GatewayError::UnknownKey);
        }
        if !key.active {
            return Err(GatewayError::DisabledKey);
        }
        if key.expires_at.is_some_and(|t| t <= now_ms) {
            return Err(GatewayError::ExpiredKey);
        }
        let user = self.users.get(&key.user_id).ok_or(GatewayError::UnknownKey)?;
        Ok(Identity { key: key.clone(), user: user.clone() })
    }
}

/// The live, swappable directory.
pub struct Accounts {
    current: ArcSwap<Directory>,
}

impl Accounts {
    pub fn new(dir: Directory) -> Accounts {
        Accounts { current: ArcSwap::from_pointee(dir) }
    }

    /// The current snapshot (one atomic load).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Directory>> {
        self.current.load()
    }

    /// Reloads from the database; on error the old snapshot stays.
    pub fn reload(&self, conn: &Connection) {
        match Directory::load(conn) {
            Ok(dir) => self.current.store(Arc::new(dir)),
            Err(e) => log::error!("reloading accounts failed, keeping the previous state: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticate_each_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open(dir.path().join("db")).unwrap();
        let u = store::accounts::add_user(&conn, "a@b.c").unwrap();
        let (row, key) = store::accounts::create_key(&conn, u.id, "k").unwrap();
        let (row2, key2) = store::accounts::create_key(&conn, u.id, "k2").unwrap();
        store::accounts::set_key_status(&conn, row2.id, crate::store::kinds::Switch::Disabled).unwrap();
        let d = Directory::load(&conn).unwrap();
        let id = d.authenticate(&key.plaintext, 0).unwrap();
        assert_eq!((id.key.id, id.user.email.as_str()), (row.id, "a@b.c"));
        assert_eq!(d.authenticate(&key2.plaintext, 0).unwrap_err(), GatewayError::DisabledKey);
        // Right lookup id, wrong secret.
        let forged = format!("{}{}", &key.plaintext[..14], "x".repeat(32));
        assert_eq!(d.authenticate(&forged, 0).unwrap_err(), GatewayError::UnknownKey);
        let unknown = format!("codex_{}", "Z".repeat(40));
        assert_eq!(d.authenticate(&unknown, 0).unwrap_err(), GatewayError::UnknownKey);
        assert_eq!(d.authenticate("sk-openai", 0).unwrap_err(), GatewayError::MalformedKey);
        store::accounts::set_key_expiry(&conn, row.id, Some(1000)).unwrap();
        let d = Directory::load(&conn).unwrap();
        assert_eq!(d.authenticate(&key.plaintext, 1000).unwrap_err(), GatewayError::ExpiredKey);
        assert!(d.authenticate(&key.plaintext, 999).is_ok());
    }
}
