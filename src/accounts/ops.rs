//! Account operations shared by the CLI and the admin API, so both do exactly
//! the same thing. Each change runs in one transaction together with its audit
//! record (who, when, what). They write SQLite; a running gateway loads the
//! result on its next database-change check (within a second, or at once when
//! the admin API asks its writer to flush).

use super::password;
use crate::auth;
use crate::clock::now_ms;
use crate::config::units::format_credits;
use crate::config::Config;
use crate::error::GatewayError;
use crate::store::accounts::{self as sql, KeyRow, UserRow};
use crate::store::billing::{self, CodeRow, Grant, NewEntry, SubscriptionRow};
use crate::store::db::{Connection, Transaction};
use crate::store::kinds::{Account, Role, Switch, UserStatus};
use crate::store::{sessions, StoreError};
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

/// Operations performed by `actor` (`cli:$USER`, `admin-api`).
pub struct Ops<'a> {
    pub conn: &'a Connection,
    pub cfg: &'a Config,
    pub actor: &'a str,
}

impl Ops<'_> {
    /// Runs `f` and its audit record in one transaction. The transaction
    /// takes the write lock first (`BEGIN IMMEDIATE`), so checks made inside
    /// `f` (a key limit, a form token) still hold when it commits.
    fn change<T, E: From<StoreError>>(
        &self,
        action: &str,
        target: &str,
        f: impl FnOnce(&Connection) -> Result<(T, serde_json::Value), E>,
    ) -> Result<T, E> {
        let tx = immediate(self.conn)?;
        let (out, detail) = f(&tx)?;
        billing::audit(&tx, self.actor, action, target, &detail.to_string())?;
        tx.commit().map_err(|source| StoreError::Sql { context: "commit", source })?;
        Ok(out)
    }

    pub fn user(&self, email: &str) -> Result<UserRow, StoreError> {
        sql::user(self.conn, email)
    }

    pub fn add_user(&self, email: &str, password: Option<&str>) -> Result<UserRow, StoreError> {
        let hash = password.map(password::hash).transpose()?;
        self.change("user.create", email, |c| {
            let u = sql::add_user(c, email)?;
            if let Some(h) = &hash {
                sql::set_password(c, u.id, h)?;
            }
            Ok((u, json!({"password": hash.is_some()})))
        })
    }

    /// Sets a console password and ends every console session of the user
    /// (whoever knew the old password is signed out).
    pub fn set_password(&self, email: &str, password: &str) -> Result<(), StoreError> {
        let hash = password::hash(password)?;
        let u = self.user(email)?;
        self.change("user.password", &u.email, |c| {
            sql::set_password(c, u.id, &hash)?;
            let ended = sessions::delete_for_user(c, u.id, None)?;
            Ok(((), json!({"sessions_ended": ended})))
        })
    }

    /// Makes a user an operator (`admin`: they sign in to the operator
    /// console with their password) or a plain user again.
    pub fn set_role(&self, email: &str, role: &str) -> Result<UserRow, StoreError> {
        let role = Role::parse(role)
            .ok_or_else(|| StoreError::Invalid(format!("role must be admin or user, got {role:?}")))?;
        let u = self.user(email)?;
        self.change("user.role", &u.email, |c| {
            sql::set_role(c, u.id, role)?;
            if role == Role::User {
                // An operator demoted now is not one a minute from now.
                c.execute("DELETE FROM operator_sessions WHERE user_id = ?1", [u.id])
                    .map_err(|source| StoreError::Sql { context: "ending operator sessions", source })?;
            }
            Ok((self.user(email)?, json!({"role": role})))
        })
    }

    pub fn set_banned(&self, email: &str, banned: bool) -> Result<UserRow, StoreError> {
        let u = self.user(email)?;
        let action = if banned { "user.ban" } else { "user.unban" };
        self.change(action, &u.email, |c| {
            sql::set_user_status(c, u.id, if banned { UserStatus::Banned } else { UserStatus::Active })?;
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
        let spec = KeySpec { name: name.to_string(), expires_at, models: models.map(<[String]>::to_vec) };
        self.create_user_key(u.id, &spec, None, None).map_err(|e| match e {
            KeyError::Store(e) => e,
            other => StoreError::Invalid(other.to_string()),
        })
    }

    /// Creates a key for `user_id`, refusing when the user already has
    /// `max_keys` keys or when `once` (a form's one-time token) was used:
    /// both checked in the transaction that creates the key.
    pub fn create_user_key(
        &self,
        user_id: i64,
        spec: &KeySpec,
        max_keys: Option<u32>,
        once: Option<&str>,
    ) -> Result<(KeyRow, String), KeyError> {
        self.change("key.create", &format!("user:{user_id}"), |c| {
            if let Some(token) = once {
                if !sessions::claim_form(c, token, user_id, now_ms())? {
                    return Err(KeyError::AlreadySubmitted);
                }
            }
            if max_keys.is_some_and(|max| sql::count_live_keys(c, user_id).is_ok_and(|n| n >= max as i64)) {
                return Err(KeyError::LimitReached);
            }
            let (row, key) = sql::create_key(c, user_id, &spec.name)?;
            if spec.expires_at.is_some() {
                sql::set_key_expiry(c, row.id, spec.expires_at)?;
            }
            if spec.models.is_some() {
                sql::set_key_models(c, row.id, spec.models.as_deref())?;
            }
            let row = sql::key_by_id(c, row.id)?;
            let detail = json!({"key_id": row.id, "prefix": row.prefix(), "name": spec.name,
                "expires_at": spec.expires_at, "models": spec.models});
            Ok(((row, key.plaintext), detail))
        })
    }

    /// The key `key_id` when it belongs to `user_id` and is not deleted;
    /// `NoSuchKey` otherwise (someone else's key looks like no key at all).
    pub fn owned_key(&self, user_id: i64, key_id: i64) -> Result<KeyRow, StoreError> {
        match sql::key_by_id(self.conn, key_id) {
            Ok(k) if k.user_id == user_id && k.deleted_at.is_none() => Ok(k),
            Ok(_) | Err(StoreError::NoSuchKey(_)) => Err(StoreError::NoSuchKey(key_id)),
            Err(e) => Err(e),
        }
    }

    pub fn delete_key(&self, key_id: i64) -> Result<(), StoreError> {
        self.change("key.delete", &key_id.to_string(), |c| {
            Ok((sql::delete_key(c, key_id, now_ms()).map(|_| ())?, json!({})))
        })
    }

    pub fn set_key_active(&self, key_id: i64, active: bool) -> Result<KeyRow, StoreError> {
        let action = if active { "key.enable" } else { "key.disable" };
        self.change(action, &key_id.to_string(), |c| {
            Ok((sql::set_key_status(c, key_id, if active { Switch::Active } else { Switch::Disabled })?, json!({})))
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
                account: Account::Credits,
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
        self.change("codes.disable", &id.to_string(), |c| {
            Ok((billing::set_code_status(c, id, Switch::Disabled)?, json!({})))
        })
    }
}

/// What a redemption did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    Credits(i64),
    Plan(SubscriptionRow),
}

/// Takes the write lock at once: checks made inside the transaction hold
/// until it commits (a deferred transaction could read, then lose the race
/// to write).
fn immediate(conn: &Connection) -> Result<Transaction<'_>, StoreError> {
    conn.write_transaction().map_err(|source| StoreError::Sql { context: "begin", source })
}

/// What a new key asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    pub expires_at: Option<i64>,
    /// `None`: every model the user may use.
    pub models: Option<Vec<String>>,
}

/// Why a key was not created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the user has reached the limit of keys")]
    LimitReached,
    #[error("this form was already submitted")]
    AlreadySubmitted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a code could not be redeemed. Each has its own message for the user.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("Invalid redemption code")]
    Unknown,
    #[error("This code has been disabled")]
    Disabled,
    #[error("This code has expired")]
    Expired,
    #[error("This code has already been used")]
    UsedUp,
    #[error("You have already redeemed this code")]
    AlreadyRedeemed,
    #[error("The plan of this code is no longer offered")]
    PlanGone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RedeemError> for GatewayError {
    fn from(e: RedeemError) -> GatewayError {
        match e {
            RedeemError::Unknown => GatewayError::RedeemInvalid(e.to_string()),
            RedeemError::Store(s) => GatewayError::Internal(s.to_string()),
            other => GatewayError::RedeemConflict(other.to_string()),
        }
    }
}

/// Redeems `presented` for `user_id` in one immediate transaction, so two
/// concurrent redemptions of a single-use code cannot both succeed.
pub fn redeem(conn: &Connection, cfg: &Config, user_id: i64, presented: &str) -> Result<Redeemed, RedeemError> {
    let tx = immediate(conn)?;
    let out = redeem_in(&tx, cfg, user_id, presented)?;
    tx.commit().map_err(|source| StoreError::Sql { context: "commit", source })?;
    Ok(out)
}

/// The redemption itself, inside the caller's transaction.
fn redeem_in(conn: &Connection, cfg: &Config, user_id: i64, presented: &str) -> Result<Redeemed, RedeemError> {
    let norm = normalize_code(presented).ok_or(RedeemError::Unknown)?;
    let code = billing::code_by_hash(conn, &code_hash(&norm))?.ok_or(RedeemError::Unknown)?;
    let now = now_ms();
    if code.status != Switch::Active {
        return Err(RedeemError::Disabled);
    }
    if code.expires_at.is_some_and(|t| t <= now) {
        return Err(RedeemError::Expired);
    }
    // "You already did" tells the user more than "used up" when both hold.
    if billing::has_redeemed(conn, code.id, user_id)? {
        return Err(RedeemError::AlreadyRedeemed);
    }
    if code.uses >= code.max_uses {
        return Err(RedeemError::UsedUp);
    }
    if !billing::record_redemption(conn, code.id, user_id)? {
        return Err(RedeemError::AlreadyRedeemed);
    }
    let reference = format!("code:{}", code.id);
    match (code.kind, code.credits, code.plan_id) {
        (Account::Credits, Some(amount), _) => {
            let e = NewEntry {
                user_id,
                account: Account::Credits,
                amount,
                kind: "redeem",
                reason: &code.prefix,
                reference: &reference,
                origin: "redeem",
            };
            billing::insert_ledger(conn, &e)?;
            Ok(Redeemed::Credits(amount))
        }
        (Account::Plan, _, Some(plan_id)) => {
            let plan = cfg.plan(&plan_id).ok_or(RedeemError::PlanGone)?;
            let s = billing::grant_plan(conn, user_id, &plan.id, plan.duration_days, now, &reference)?;
            Ok(Redeemed::Plan(s))
        }
        _ => Err(StoreError::Invalid(format!("code {} is corrupt", code.id)).into()),
    }
}

/// Why a sign-up failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("an account with this email exists")]
    EmailTaken,
    #[error(transparent)]
    Code(RedeemError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a console account in one transaction: the user with their
/// password hash, the redemption of `code` when given, and `credits` to
/// start with. Any failure leaves nothing behind (no user without their code).
pub fn register(
    conn: &Connection,
    cfg: &Config,
    email: &str,
    password_hash: &str,
    code: Option<&str>,
    credits: i64,
) -> Result<UserRow, RegisterError> {
    let tx = immediate(conn)?;
    let u = match sql::add_user(&tx, email) {
        Ok(u) => u,
        Err(StoreError::UserExists(_)) => return Err(RegisterError::EmailTaken),
        Err(e) => return Err(e.into()),
    };
    sql::set_password(&tx, u.id, password_hash)?;
    if let Some(c) = code {
        redeem_in(&tx, cfg, u.id, c).map_err(|e| match e {
            RedeemError::Store(s) => RegisterError::Store(s),
            other => RegisterError::Code(other),
        })?;
    }
    if credits > 0 {
        let e = NewEntry {
            user_id: u.id,
            account: Account::Credits,
            amount: credits,
            kind: "topup",
            reason: "sign-up credits",
            reference: &format!("signup:{}", u.id),
            origin: "console",
        };
        billing::insert_ledger(&tx, &e)?;
    }
    billing::audit(
        &tx,
        "console",
        "user.register",
        &u.email,
        &json!({"code": code.is_some(), "credits": format_credits(credits)}).to_string(),
    )?;
    tx.commit().map_err(|source| StoreError::Sql { context: "commit", source })?;
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Connection, Config) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(dir.path().join("db")).unwrap();
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

        assert_eq!(redeem(&conn, &cfg, a.id, &credits[0].1).unwrap(), Redeemed::Credits(2_500_000));
        assert_eq!(billing::credit_balance(&conn, a.id).unwrap(), 2_500_000);
        let used = GatewayError::from(redeem(&conn, &cfg, b.id, &credits[0].1).unwrap_err());
        assert_eq!((used.status(), used.to_string().as_str()), (409, "This code has already been used"));
        assert!(matches!(redeem(&conn, &cfg, a.id, &plan[0].1), Ok(Redeemed::Plan(_))));
        assert_eq!(
            redeem(&conn, &cfg, a.id, &plan[0].1).unwrap_err().to_string(),
            "You have already redeemed this code"
        );
        assert!(matches!(redeem(&conn, &cfg, b.id, &plan[0].1), Ok(Redeemed::Plan(_))));
        assert_eq!(redeem(&conn, &cfg, a.id, &expired[0].1).unwrap_err().to_string(), "This code has expired");
        assert_eq!(redeem(&conn, &cfg, a.id, &disabled[0].1).unwrap_err().to_string(), "This code has been disabled");
        let unknown = GatewayError::from(redeem(&conn, &cfg, a.id, "CPX-00000-00000-00000-00000").unwrap_err());
        assert_eq!((unknown.status(), unknown.to_string().as_str()), (400, "Invalid redemption code"));
        // Codes are stored hashed: the plaintext is nowhere in the database.
        let stored: String =
            conn.query_row("SELECT group_concat(code_hash || prefix) FROM redemption_codes", (), |r| r.get(0)).unwrap();
        assert!(!stored.contains(&credits[0].1[10..]));
        // Every change left an audit record.
        let actions: Vec<String> = billing::audit_log(&conn, 100).unwrap().into_iter().map(|a| a.action).collect();
        assert!(actions.contains(&"codes.disable".to_string()) && actions.contains(&"user.create".to_string()));
    }

    #[test]
    fn register_is_all_or_nothing() {
        let (_d, conn, cfg) = setup();
        let ops = Ops { conn: &conn, cfg: &cfg, actor: "test" };
        let code = ops.create_codes(&Grant::Credits(3_000_000), 1, 1, None).unwrap().remove(0).1;
        let hash = password::hash("correct horse").unwrap();
        // A bad code leaves no account behind.
        let e = register(&conn, &cfg, "new@x.io", &hash, Some("CPX-00000-00000-00000-00000"), 0).unwrap_err();
        assert!(matches!(e, RegisterError::Code(RedeemError::Unknown)), "{e:?}");
        assert!(sql::find_user(&conn, "new@x.io").unwrap().is_none());
        let u = register(&conn, &cfg, "New@X.io", &hash, Some(&code), 500_000).unwrap();
        assert_eq!(u.email, "new@x.io");
        assert_eq!(billing::credit_balance(&conn, u.id).unwrap(), 3_500_000);
        assert!(matches!(register(&conn, &cfg, "new@x.io", &hash, None, 0), Err(RegisterError::EmailTaken)));
        let login = sql::find_login(&conn, "new@x.io").unwrap().unwrap();
        assert!(password::verify(login.password_hash.as_deref(), "correct horse"));
    }

    #[test]
    fn key_limits_and_form_tokens_hold_in_the_transaction() {
        let (_d, conn, cfg) = setup();
        let ops = Ops { conn: &conn, cfg: &cfg, actor: "test" };
        let u = ops.add_user("k@x.io", None).unwrap();
        let spec = KeySpec { name: "a".into(), ..Default::default() };
        ops.create_user_key(u.id, &spec, Some(2), Some("t1")).unwrap();
        assert!(matches!(ops.create_user_key(u.id, &spec, Some(2), Some("t1")), Err(KeyError::AlreadySubmitted)));
        ops.create_user_key(u.id, &spec, Some(2), Some("t2")).unwrap();
        assert!(matches!(ops.create_user_key(u.id, &spec, Some(2), Some("t3")), Err(KeyError::LimitReached)));
        // A refused creation rolled back its token: the same form may retry.
        let keys = sql::list_keys(&conn, Some(u.id)).unwrap();
        ops.delete_key(keys[0].id).unwrap();
        ops.create_user_key(u.id, &spec, Some(2), Some("t3")).unwrap();
        assert!(matches!(ops.owned_key(u.id + 1, keys[1].id), Err(StoreError::NoSuchKey(_))));
        assert!(matches!(ops.owned_key(u.id, keys[0].id), Err(StoreError::NoSuchKey(_))), "deleted");
        assert_eq!(ops.owned_key(u.id, keys[1].id).unwrap().id, keys[1].id);
    }
}
