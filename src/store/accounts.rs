//! SQL for users and API keys: used by the CLI, the admin API and the gateway's
//! in-memory reload. Never called on the request path.

use super::kinds::{Role, Switch, UserStatus};
use super::{SqlContext, StoreError};
use crate::auth::{self, KeyHash, NewKey};
use crate::clock::now_ms;
use crate::store::db::{params, Connection, OptionalExtension, Row};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub status: UserStatus,
    pub created_at: i64,
    /// Admins are operators who sign in with their password.
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: i64,
    pub user_id: i64,
    pub lookup: String,
    pub key_hash: String,
    pub name: String,
    pub status: Switch,
    pub expires_at: Option<i64>,
    /// `None`: every model the user may use; otherwise only these (patterns).
    pub allowed_models: Option<Vec<String>>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// Set once the key is deleted: it never authenticates again.
    pub deleted_at: Option<i64>,
}

impl KeyRow {
    pub fn prefix(&self) -> String {
        auth::display_prefix(&self.lookup)
    }
}

/// The stored form of an email address: trimmed and lower-cased, so that
/// `Alice@Example.com` and `alice@example.com` are one account.
pub fn validate_email(email: &str) -> Result<String, StoreError> {
    normalize_email(email).ok_or_else(|| StoreError::Invalid(format!("{email:?} is not an email address")))
}

/// `validate_email` for callers that only need to know whether it is one.
pub fn normalize_email(email: &str) -> Option<String> {
    let e = email.trim();
    let ok = e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    ok.then(|| e.to_lowercase())
}

const USER_COLS: &str = "id, email, status, created_at, role";

fn user_row(r: &Row) -> crate::store::db::Result<UserRow> {
    Ok(UserRow { id: r.get(0)?, email: r.get(1)?, status: r.get(2)?, created_at: r.get(3)?, role: r.get(4)? })
}

pub fn add_user(conn: &Connection, email: &str) -> Result<UserRow, StoreError> {
    let email = validate_email(email)?;
    if find_user(conn, &email)?.is_some() {
        return Err(StoreError::UserExists(email));
    }
    conn.execute("INSERT INTO users(email, created_at) VALUES (?1, ?2)", params![email, now_ms()])
        .ctx("inserting user")?;
    user(conn, &email)
}

pub fn find_user(conn: &Connection, email: &str) -> Result<Option<UserRow>, StoreError> {
    conn.query_row(&format!("SELECT {USER_COLS} FROM users WHERE email = ?1"), [email.trim().to_lowercase()], user_row)
        .optional()
        .ctx("reading user")
}

pub fn user(conn: &Connection, email: &str) -> Result<UserRow, StoreError> {
    find_user(conn, email)?.ok_or_else(|| StoreError::NoSuchUser(email.to_string()))
}

pub fn user_by_id(conn: &Connection, id: i64) -> Result<UserRow, StoreError> {
    conn.query_row(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"), [id], user_row)
        .optional()
        .ctx("reading user")?
        .ok_or_else(|| StoreError::NoSuchUser(format!("#{id}")))
}

/// What signing in needs to know about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub id: i64,
    pub email: String,
    pub banned: bool,
    /// `None` for accounts made without a console password.
    pub password_hash: Option<String>,
}

const LOGIN_COLS: &str = "id, email, status = 'banned', password_hash";

fn login_row(r: &Row) -> crate::store::db::Result<Login> {
    Ok(Login { id: r.get(0)?, email: r.get(1)?, banned: r.get(2)?, password_hash: r.get(3)? })
}

pub fn find_login(conn: &Connection, email: &str) -> Result<Option<Login>, StoreError> {
    conn.query_row(
        &format!("SELECT {LOGIN_COLS} FROM users WHERE email = ?1"),
        [email.trim().to_lowercase()],
        login_row,
    )
    .optional()
    .ctx("reading login")
}

pub fn login_by_id(conn: &Connection, id: i64) -> Result<Login, StoreError> {
    conn.query_row(&format!("SELECT {LOGIN_COLS} FROM users WHERE id = ?1"), [id], login_row)
        .optional()
        .ctx("reading login")?
        .ok_or_else(|| StoreError::NoSuchUser(format!("#{id}")))
}

pub fn list_users(conn: &Connection) -> Result<Vec<UserRow>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY id")).ctx("listing users")?;
    let rows = stmt.query_map((), user_row).ctx("listing users")?;
    rows.collect::<Result<_, _>>().ctx("listing users")
}

/// Up to `limit` users whose email contains `q` (any case), by id, after
/// `after` (keyset pages).
pub fn search_users(conn: &Connection, q: &str, after: i64, limit: i64) -> Result<Vec<UserRow>, StoreError> {
    // Emails are stored lower-cased (`validate_email`), so a lower-cased
    // pattern finds any case on either backend.
    let q = q.to_lowercase();
    let pattern = format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {USER_COLS} FROM users WHERE email LIKE ?1 ESCAPE '\\' AND id > ?2 ORDER BY id LIMIT ?3"
        ))
        .ctx("searching users")?;
    let rows = stmt.query_map(params![pattern, after, limit], user_row).ctx("searching users")?;
    rows.collect::<Result<_, _>>().ctx("searching users")
}

pub fn count_users(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT COUNT(*) FROM users", (), |r| r.get(0)).ctx("counting users")
}

pub fn set_role(conn: &Connection, user_id: i64, role: Role) -> Result<(), StoreError> {
    conn.execute("UPDATE users SET role = ?1 WHERE id = ?2", params![role, user_id]).ctx("setting role")?;
    Ok(())
}

pub fn set_password(conn: &Connection, user_id: i64, hash: &str) -> Result<(), StoreError> {
    conn.execute("UPDATE users SET password_hash = ?1 WHERE id = ?2", params![hash, user_id])
        .ctx("setting password")?;
    Ok(())
}

pub fn set_user_status(conn: &Connection, user_id: i64, status: UserStatus) -> Result<(), StoreError> {
    conn.execute("UPDATE users SET status = ?1 WHERE id = ?2", params![status, user_id]).ctx("updating user")?;
    Ok(())
}

const KEY_COLS: &str =
    "id, user_id, lookup, key_hash, name, status, expires_at, allowed_models, created_at, last_used_at, deleted_at";

fn key_row(r: &Row) -> crate::store::db::Result<KeyRow> {
    let models: Option<String> = r.get(7)?;
    Ok(KeyRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        lookup: r.get(2)?,
        key_hash: r.get(3)?,
        name: r.get(4)?,
        status: r.get(5)?,
        expires_at: r.get(6)?,
        allowed_models: models.and_then(|m| serde_json::from_str(&m).ok()),
        created_at: r.get(8)?,
        last_used_at: r.get(9)?,
        deleted_at: r.get(10)?,
    })
}

/// Creates a key for a user; the returned plaintext must be shown once and dropped.
pub fn create_key(conn: &Connection, user_id: i64, name: &str) -> Result<(KeyRow, NewKey), StoreError> {
    let key = auth::generate();
    let id = conn
        .insert(
            "INSERT INTO api_keys(user_id, lookup, key_hash, name, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![user_id, key.lookup, key.hash.to_hex(), name, now_ms()],
        )
        .ctx("inserting API key")?;
    let row = key_by_id(conn, id)?;
    Ok((row, key))
}

pub fn key_by_id(conn: &Connection, id: i64) -> Result<KeyRow, StoreError> {
    conn.query_row(&format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ?1"), [id], key_row)
        .optional()
        .ctx("reading API key")?
        .ok_or(StoreError::NoSuchKey(id))
}

pub fn list_keys(conn: &Connection, user_id: Option<i64>) -> Result<Vec<KeyRow>, StoreError> {
    let sql = match user_id {
        Some(_) => format!("SELECT {KEY_COLS} FROM api_keys WHERE user_id = ?1 ORDER BY id"),
        None => format!("SELECT {KEY_COLS} FROM api_keys ORDER BY id"),
    };
    let mut stmt = conn.prepare(&sql).ctx("listing API keys")?;
    let rows = stmt.query_map(crate::store::db::params_from_iter(user_id), key_row).ctx("listing API keys")?;
    rows.collect::<Result<_, _>>().ctx("listing API keys")
}

/// Sets one column of a key; `column` is one of a fixed set of names.
fn update_key(
    conn: &Connection,
    key_id: i64,
    column: &'static str,
    value: &dyn crate::store::db::ToSql,
) -> Result<KeyRow, StoreError> {
    let n = conn
        .execute(&format!("UPDATE api_keys SET {column} = ?1 WHERE id = ?2"), params![value, key_id])
        .ctx("updating API key")?;
    if n == 0 {
        return Err(StoreError::NoSuchKey(key_id));
    }
    key_by_id(conn, key_id)
}

pub fn set_key_status(conn: &Connection, key_id: i64, status: Switch) -> Result<KeyRow, StoreError> {
    update_key(conn, key_id, "status", &status)
}

/// Deletes a key: disabled, marked deleted, kept for the usage that names it.
pub fn delete_key(conn: &Connection, key_id: i64, now: i64) -> Result<KeyRow, StoreError> {
    let n = conn
        .execute(
            "UPDATE api_keys SET status = 'disabled', deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
            params![key_id, now],
        )
        .ctx("deleting API key")?;
    if n == 0 {
        return Err(StoreError::NoSuchKey(key_id));
    }
    key_by_id(conn, key_id)
}

/// Keys of a user that are not deleted.
pub fn count_live_keys(conn: &Connection, user_id: i64) -> Result<i64, StoreError> {
    conn.query_row("SELECT COUNT(*) FROM api_keys WHERE user_id = ?1 AND deleted_at IS NULL", [user_id], |r| r.get(0))
        .ctx("counting API keys")
}

pub fn set_key_expiry(conn: &Connection, key_id: i64, expires_at: Option<i64>) -> Result<KeyRow, StoreError> {
    update_key(conn, key_id, "expires_at", &expires_at)
}

pub fn set_key_models(conn: &Connection, key_id: i64, models: Option<&[String]>) -> Result<KeyRow, StoreError> {
    let json = models.map(|m| serde_json::to_string(m).unwrap_or_default());
    update_key(conn, key_id, "allowed_models", &json)
}

/// Records last-used times (batched by the writer; only moves forward).
pub fn touch_keys(conn: &Connection, stamps: &[(i64, i64)]) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
        )
        .ctx("touching keys")?;
    for (id, at) in stamps {
        stmt.execute(params![id, at]).ctx("touching keys")?;
    }
    Ok(())
}

/// Parses a stored hash; a corrupt row can never authenticate.
pub fn parse_hash(row: &KeyRow) -> Option<KeyHash> {
    KeyHash::from_hex(&row.key_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path().join("db")).unwrap();
        (dir, conn)
    }

    #[test]
    fn users_and_keys() {
        let (_d, conn) = db();
        let u = add_user(&conn, "Alice@Example.com").unwrap();
        assert!(matches!(add_user(&conn, "alice@example.com"), Err(StoreError::UserExists(_))));
        assert!(matches!(add_user(&conn, "not an email"), Err(StoreError::Invalid(_))));
        let (row, key) = create_key(&conn, u.id, "laptop").unwrap();
        assert_eq!(row.lookup, key.lookup);
        assert_eq!(row.status, Switch::Active);
        // Only the hash is stored.
        let stored: String = conn.query_row("SELECT group_concat(key_hash) FROM api_keys", (), |r| r.get(0)).unwrap();
        assert!(!stored.contains(&key.plaintext[6..]));
        assert_eq!(parse_hash(&row), Some(KeyHash::of(&key.plaintext)));
        let row = set_key_status(&conn, row.id, Switch::Disabled).unwrap();
        assert_eq!(row.status, Switch::Disabled);
        assert!(matches!(set_key_status(&conn, 999, Switch::Active), Err(StoreError::NoSuchKey(999))));
        touch_keys(&conn, &[(row.id, 5), (row.id, 3)]).unwrap();
        assert_eq!(key_by_id(&conn, row.id).unwrap().last_used_at, Some(5));
        assert_eq!(list_keys(&conn, Some(u.id)).unwrap().len(), 1);
        assert_eq!(list_keys(&conn, None).unwrap().len(), 1);
        assert_eq!(count_live_keys(&conn, u.id).unwrap(), 1);
        let deleted = delete_key(&conn, row.id, 9).unwrap();
        assert_eq!((deleted.deleted_at, deleted.status.as_str()), (Some(9), "disabled"));
        assert!(matches!(delete_key(&conn, row.id, 10), Err(StoreError::NoSuchKey(_))), "deleted once");
        assert_eq!(count_live_keys(&conn, u.id).unwrap(), 0);
    }

    #[test]
    fn emails_are_normalized() {
        assert_eq!(normalize_email("  Alice@Example.COM "), Some("alice@example.com".into()));
        assert_eq!(normalize_email("demo@localhost"), Some("demo@localhost".into()));
        for bad in ["", "no-at", "@x", "x@", "a b@c.d", "a@b@c", &format!("{}@x.y", "a".repeat(260))] {
            assert_eq!(normalize_email(bad), None, "{bad:?}");
        }
        let (_d, conn) = db();
        let u = add_user(&conn, "Bob@Example.com").unwrap();
        assert_eq!(u.email, "bob@example.com");
        let login = find_login(&conn, "bob@example.com").unwrap().unwrap();
        assert_eq!((login.id, login.banned, login.password_hash), (u.id, false, None));
        assert_eq!(login_by_id(&conn, u.id).unwrap().email, "bob@example.com");
        assert_eq!(user_by_id(&conn, u.id).unwrap(), u);
        add_user(&conn, "a_b@x.io").unwrap();
        add_user(&conn, "axb@x.io").unwrap();
        let found: Vec<String> = search_users(&conn, "a_b", 0, 10).unwrap().into_iter().map(|u| u.email).collect();
        assert_eq!(found, vec!["a_b@x.io"], "_ is a character, not a wildcard");
        let page1 = search_users(&conn, "", 0, 2).unwrap();
        let page2 = search_users(&conn, "", page1[1].id, 2).unwrap();
        assert_eq!((page1.len(), page2.len(), count_users(&conn).unwrap()), (2, 1, 3));
        set_role(&conn, u.id, Role::Admin).unwrap();
        assert_eq!(user_by_id(&conn, u.id).unwrap().role, Role::Admin);
    }
}
