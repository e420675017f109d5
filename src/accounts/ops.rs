//! Account operations shared by the CLI and the admin API, so both do exactly
//! the same thing. Each change runs in one transaction together with its audit
//! record (who, when, what). They write SQLite; a running gateway loads the
//! result on its next database-change check (within a second, or at once when
//! the admin API asks its writer to flush).

use crate::auth;
use crate::config::units::format_credits;
use crate::config::Config;
use crate::error::GatewayError;
use crate::store::accounts::{self as sql, KeyRow, UserRow};
use crate::store::billing::{self, CodeRow, Grant, NewEntry, SubscriptionRow};
use crate::store::{now_ms, StoreError};
use argon2::password_hash::{PasswordHasher, SaltString};
use rusqlite::Connection;
use serde_json::json;

/// Crockford's base32 alphabet: no I, L, O, U to misread.
const CODE_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CODE_PREFIX: &str = "CPX";
const CODE_CHARS: usize = 20;

/// Generates a redemption code: `CPX-XXXXX-XXXXX-XXXXX-XXXXX` (100 random bits).
pub fn generate_code() -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    let chars: Vec<char> = (0..CODE_CHARS).map(|_| CODE_ALPHABET[rng.gen_range(0..32)] as char).collect();
    let groups: Vec<String> = chars.chunks(5).map(|c| c.iter().collect()).collect();
    format!("{CODE_PREFIX}-{}", groups.join("-"))
}

/// The canonical form of a presented code (case, dashes and spaces ignored),
/// or `None` when it cannot be a code.
pub fn normalize_code(presented: &str) -> Option<String> {
    let cleaned: String =
        presented.chars().filter(|c| !matches!(c, '-' | ' ' | '\t')).map(|c| c.to_ascii_uppercase()).collect();
    let body = cleaned.strip_prefix(CODE_PREFIX)?;
    (body.len() == CODE_CHARS && body.bytes().all(|b| CODE_ALPHABET.contains(&b)))
        .then(|| format!("{CODE_PREFIX}{body}"))
}

fn code_hash(normalized: &str) -> String {
    auth::KeyHash::of(normalized).to_hex()
}

pub fn hash_password(password: &str) -> Result<String, StoreError> {
    if password.len() < 8 {
        return Err(StoreError::Invalid("passwords must have at least 8 characters".into()));
    }
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Invalid(format!("hashing password: {e}")))
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Operations performed by `actor` (`cli:$USER`, `admin-api`).
pub struct Ops<'a> {
    pub conn: &'a Connection,
    pub cfg: &'a Config,
    pub actor: &'a str,
}

impl Ops<'_> {
    /// Runs `f` and its audit record in one transaction.
    fn change<T>(
        &self,
        action: &str,
        target: &str,
        f: impl FnOnce(&Connection) -> Result<(T, serde_json::Value), StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|source| StoreError::Sql { context: "begin", source })?;
        let (out, detail) = f(&tx)?;
        billing::audit(&tx, self.actor, action, target, &detail.to_string())?;
        tx.commit().map_err(|source| StoreError::Sql { context: "commit", source })?;
        Ok(out)
    }

    pub fn user(&self, email: &str) -> Result<UserRow, StoreError> {
        sql::user(self.conn, email)
    }

    pub fn add_user(&self, email: &str, password: Option<&str>) -> Result<UserRow, StoreError> {
        let hash = password.map(hash_password).transpose()?;
        self.change("user.create", email, |c| {
            let u = sql::add_user(c, email)?;
            if let Some(h) = &hash {
                sql::set_password(c, u.id, h)?;
            }
            Ok((u, json!({"password": hash.is_some()})))
        })
    }

    pub fn set_password(&self, email: &str, password: &str) -> Result<(), StoreError> {
        let hash = hash_password(password)?;
        let u = self.user(email)?;
        self.change("user.password", &u.email, |c| Ok((sql::set_password(c, u.id, &hash)?, json!({}))))
    }

    pub fn set_banned(&self, email: &str, banned: bool) -> Result<UserRow, StoreError> {
        let u = self.user(email)?;
        let action = if banned { "user.ban" } else { "user.unban" };
        self.change(action, &u.email, |c| {
            sql::set_user_status(c, u.id, if banned { "banned" } else { "active" })?;
            Ok((self.user(email)?, json!({})))
        })
    }

    /// Creates a key; returns its row and the plaintext (shown once).
    pub fn create_key(
        &self,
        email: &str,
        name: &str,
        expires_at: Option<i64>,
        models: Option<&[String]>,
    ) -> Result<(KeyRow, String), StoreError> {
        let u = self.user(email)?;
        self.change("key.create", &u.email, |c| {
            let (row, key) = sql::create_key(c, u.id, name)?;
            if expires_at.is_some() {
                sql::set_key_expiry(c, row.id, expires_at)?;
            }
            if models.is_some() {
                sql::set_key_models(c, row.id, models)?;
            }
            let row = sql::key_by_id(c, row.id)?;
            let detail = json!({"key_id": row.id, "prefix": row.prefix(), "name": name, "expires_at": expires_at, "models": models});
            Ok(((row, key.plaintext), detail))
        })
    }

    pub fn set_key_active(&self, key_id: i64, active: bool) -> Result<KeyRow, StoreError> {
        let action = if active { "key.enable" } else { "key.disable" };
        self.change(action, &key_id.to_string(), |c| {
            Ok((sql::set_key_status(c, key_id, if active { "active" } else { "disabled" })?, json!({})))
        })
    }

    pub fn set_key_expiry(&self, key_id: i64, expires_at: Option<i64>) -> Result<KeyRow, StoreError> {
        self.change("key.expiry", &key_id.to_string(), |c| {
            Ok((sql::set_key_expiry(c, key_id, expires_at)?, json!({"expires_at": expires_at})))
        })
    }

    pub fn set_key_models(&self, key_id: i64, models: Option<&[String]>) -> Result<KeyRow, StoreError> {
        self.change("key.models", &key_id.to_string(), |c| {
            Ok((sql::set_key_models(c, key_id, models)?, json!({"models": models})))
        })
    }

    /// Adds (or with a negative amount, removes) credits; returns the new
    /// balance as stored.
    pub fn add_credits(&self, email: &str, amount: i64, reason: &str) -> Result<i64, StoreError> {
        if amount == 0 {
            return Err(StoreError::Invalid("the amount must not be zero".into()));
        }
        let u = self.user(email)?;
        let kind = if amount > 0 { "topup" } else { "adjust" };
        self.change("credits.adjust", &u.email, |c| {
            let reference = format!("{}:{}", self.actor, now_ms());
            let e = NewEntry {
                user_id: u.id,
                account: "credits",
                amount,
                kind,
                reason,
                reference: &reference,
                origin: self.actor,
            };
            let id = billing::insert_ledger(c, &e)?;
            let balance = billing::credit_balance(c, u.id)?;
            Ok((balance, json!({"amount": format_credits(amount), "reason": reason, "ledger_id": id})))
        })
    }

    pub fn assign_plan(&self, email: &str, plan_id: &str) -> Result<SubscriptionRow, StoreError> {
        let plan = self.cfg.plan(plan_id).ok_or_else(|| {
            let known: Vec<&str> = self.cfg.plans.iter().map(|p| p.id.as_str()).collect();
            StoreError::Invalid(format!("no plan {plan_id:?} in the configuration (plans: {})", known.join(", ")))
        })?;
        let u = self.user(email)?;
        self.change("plan.assign", &u.email, |c| {
            let s = billing::grant_plan(c, u.id, &plan.id, plan.duration_days, now_ms(), self.actor)?;
            Ok((s.clone(), json!({"plan": plan.id, "expires_at": s.expires_at})))
        })
    }

    pub fn revoke_plan(&self, email: &str) -> Result<bool, StoreError> {
        let u = self.user(email)?;
        self.change("plan.revoke", &u.email, |c| Ok((billing::revoke_subscription(c, u.id)?, json!({}))))
    }

    /// Creates `count` codes; returns each row with its plaintext (shown once).
    pub fn create_codes(
        &self,
        grant: &Grant,
        count: u32,
        max_uses: u32,
        expires_at: Option<i64>,
    ) -> Result<Vec<(CodeRow, String)>, StoreError> {
        match grant {
            Grant::Credits(c) if *c <= 0 => return Err(StoreError::Invalid("credits must be positive".into())),
            Grant::Plan(p) if self.cfg.plan(p).is_none() => {
                return Err(StoreError::Invalid(format!("no plan {p:?} in the configuration")))
            }
            _ => {}
        }
        if !(1..=10_000).contains(&count) || max_uses == 0 {
            return Err(StoreError::Invalid("count must be 1-10000 and uses at least 1".into()));
        }
        let batch = format!("b{}", now_ms());
        self.change("codes.create", &batch, |c| {
            let mut out = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let code = generate_code();
                let norm =
                    normalize_code(&code).ok_or_else(|| StoreError::Invalid("generated an invalid code".into()))?;
                let prefix = code[..9].to_string();
                let row =
                    billing::insert_code(c, &code_hash(&norm), &prefix, grant, max_uses as i64, expires_at, &batch)?;
                out.push((row, code));
            }
            let what = match grant {
                Grant::Credits(v) => json!({"credits": format_credits(*v)}),
                Grant::Plan(p) => json!({"plan": p}),
            };
            Ok((out, json!({"grant": what, "count": count, "uses": max_uses, "expires_at": expires_at})))
        })
    }

    pub fn disable_code(&self, id: i64) -> Result<CodeRow, StoreError> {
        self.change("codes.disable", &id.to_string(), |c| Ok((billing::set_code_status(c, id, "disabled")?, json!({}))))
    }
}

/// What a redemption did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    Credits(i64),
    Plan(SubscriptionRow),
}

/// Redeems `presented` for `user_id` in one immediate transaction, so two
/// concurrent redemptions of a single-use code cannot both succeed.
pub fn redeem(conn: &Connection, cfg: &Config, user_id: i64, presented: &str) -> Result<Redeemed, GatewayError> {
    let invalid = || GatewayError::RedeemInvalid("Invalid redemption code".into());
    let norm = normalize_code(presented).ok_or_else(invalid)?;
    let internal = |e: StoreError| GatewayError::Internal(e.to_string());
    let sql_err = |e: rusqlite::Error| GatewayError::Internal(e.to_string());
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_err)?;
    let result = (|| {
        let code = billing::code_by_hash(conn, &code_hash(&norm)).map_err(internal)?.ok_or_else(invalid)?;
        let now = now_ms();
        if code.status != "active" {
            return Err(GatewayError::RedeemConflict("This code has been disabled".into()));
        }
        if code.expires_at.is_some_and(|t| t <= now) {
            return Err(GatewayError::RedeemConflict("This code has expired".into()));
        }
        if code.uses >= code.max_uses {
            return Err(GatewayError::RedeemConflict("This code has already been used".into()));
        }
        if !billing::record_redemption(conn, code.id, user_id).map_err(internal)? {
            return Err(GatewayError::RedeemConflict("You have already redeemed this code".into()));
        }
        let reference = format!("code:{}", code.id);
        match (code.kind.as_str(), code.credits, code.plan_id) {
            ("credits", Some(amount), _) => {
                let e = NewEntry {
                    user_id,
                    account: "credits",
                    amount,
                    kind: "redeem",
                    reason: &code.prefix,
                    reference: &reference,
                    origin: "redeem",
                };
                billing::insert_ledger(conn, &e).map_err(internal)?;
                Ok(Redeemed::Credits(amount))
            }
            ("plan", _, Some(plan_id)) => {
                let plan = cfg
                    .plan(&plan_id)
                    .ok_or_else(|| GatewayError::RedeemConflict("The plan of this code is no longer offered".into()))?;
                let s = billing::grant_plan(conn, user_id, &plan.id, plan.duration_days, now, &reference)
                    .map_err(internal)?;
                Ok(Redeemed::Plan(s))
            }
            _ => Err(GatewayError::Internal(format!("code {} is corrupt", code.id))),
        }
    })();
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end).map_err(sql_err)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Connection, Config) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(&dir.path().join("db")).unwrap();
        let cfg = crate::config::parse(
            "server: {listen: [\"127.0.0.1:0\"]}\nplans: [{id: pro, daily_quota: 5, duration_days: 30}]\n",
            std::path::Path::new("."),
            &|_| None,
        )
        .unwrap();
        (dir, conn, cfg)
    }

    #[test]
    fn codes_normalize() {
        let c = generate_code();
        assert_eq!(c.len(), 3 + 4 * 6);
        let n = normalize_code(&c).unwrap();
        assert_eq!(normalize_code(&c.to_lowercase().replace('-', " ")), Some(n));
        assert_eq!(normalize_code("CPX-ABC"), None);
        assert_eq!(normalize_code("CPX-IIIII-IIIII-IIIII-IIIII"), None);
    }

    #[test]
    fn redeem_each_outcome() {
        let (_d, conn, cfg) = setup();
        let ops = Ops { conn: &conn, cfg: &cfg, actor: "test" };
        let a = ops.add_user("a@x.io", Some("correct horse")).unwrap();
        let b = ops.add_user("b@x.io", None).unwrap();
        let credits = ops.create_codes(&Grant::Credits(2_500_000), 1, 1, None).unwrap();
        let plan = ops.create_codes(&Grant::Plan("pro".into()), 1, 2, None).unwrap();
        let expired = ops.create_codes(&Grant::Credits(1), 1, 1, Some(1)).unwrap();
        let disabled = ops.create_codes(&Grant::Credits(1), 1, 1, None).unwrap();
        ops.disable_code(disabled[0].0.id).unwrap();

        assert_eq!(redeem(&conn, &cfg, a.id, &credits[0].1), Ok(Redeemed::Credits(2_500_000)));
        assert_eq!(billing::credit_balance(&conn, a.id).unwrap(), 2_500_000);
        let used = redeem(&conn, &cfg, b.id, &credits[0].1).unwrap_err();
        assert_eq!((used.status(), used.to_string().as_str()), (409, "This code has already been used"));
        assert!(matches!(redeem(&conn, &cfg, a.id, &plan[0].1), Ok(Redeemed::Plan(_))));
        assert_eq!(
            redeem(&conn, &cfg, a.id, &plan[0].1).unwrap_err().to_string(),
            "You have already redeemed this code"
        );
        assert!(matches!(redeem(&conn, &cfg, b.id, &plan[0].1), Ok(Redeemed::Plan(_))));
        assert_eq!(redeem(&conn, &cfg, a.id, &expired[0].1).unwrap_err().to_string(), "This code has expired");
        assert_eq!(redeem(&conn, &cfg, a.id, &disabled[0].1).unwrap_err().to_string(), "This code has been disabled");
        let unknown = redeem(&conn, &cfg, a.id, "CPX-00000-00000-00000-00000").unwrap_err();
        assert_eq!((unknown.status(), unknown.to_string().as_str()), (400, "Invalid redemption code"));
        // Codes are stored hashed: the plaintext is nowhere in the database.
        let stored: String =
            conn.query_row("SELECT group_concat(code_hash || prefix) FROM redemption_codes", [], |r| r.get(0)).unwrap();
        assert!(!stored.contains(&credits[0].1[10..]));
        // Every change left an audit record.
        let actions: Vec<String> = billing::audit_log(&conn, 100).unwrap().into_iter().map(|a| a.action).collect();
        assert!(actions.contains(&"codes.disable".to_string()) && actions.contains(&"user.create".to_string()));
    }

    #[test]
    fn passwords_are_argon2id() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong horse"));
        assert!(hash_password("short").is_err());
    }
}
