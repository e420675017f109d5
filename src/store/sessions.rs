//! SQL for console sessions (stored by token hash only) and for the one-time
//! form tokens that make a double-submitted form act once.

use super::{SqlContext, StoreError};
use crate::store::db::{params, Connection, OptionalExtension};

/// A session joined with its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: i64,
    pub user_id: i64,
    pub email: String,
    pub banned: bool,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

/// Where a session was started from (shown to the user, never used to decide).
pub struct Origin<'a> {
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

pub fn create(
    conn: &Connection,
    token_hash: &str,
    user_id: i64,
    now: i64,
    expires_at: i64,
    origin: &Origin,
) -> Result<i64, StoreError> {
    conn.insert(
        "INSERT INTO web_sessions(token_hash, user_id, created_at, last_seen_at, expires_at, ip, user_agent)
         VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)",
        params![token_hash, user_id, now, expires_at, origin.ip, origin.user_agent.map(|u| truncate(u, 256))],
    )
    .ctx("creating session")
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub fn find(conn: &Connection, token_hash: &str) -> Result<Option<SessionRow>, StoreError> {
    conn.query_row(
        "SELECT s.id, s.user_id, u.email, u.status = 'banned', s.created_at, s.last_seen_at, s.expires_at
         FROM web_sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?1",
        [token_hash],
        |r| {
            Ok(SessionRow {
                id: r.get(0)?,
                user_id: r.get(1)?,
                email: r.get(2)?,
                banned: r.get(3)?,
                created_at: r.get(4)?,
                last_seen_at: r.get(5)?,
                expires_at: r.get(6)?,
            })
        },
    )
    .optional()
    .ctx("reading session")
}

pub fn delete(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM web_sessions WHERE id = ?1", [id]).ctx("ending session")?;
    Ok(())
}

/// Ends every session of a user (but `keep`); returns how many ended.
pub fn delete_for_user(conn: &Connection, user_id: i64, keep: Option<i64>) -> Result<usize, StoreError> {
    conn.execute("DELETE FROM web_sessions WHERE user_id = ?1 AND id IS DISTINCT FROM ?2", params![user_id, keep])
        .ctx("ending sessions")
}

/// Deletes sessions past their absolute expiry or idle longer than `idle_ms`.
pub fn purge_expired(conn: &Connection, now: i64, idle_ms: i64) -> Result<usize, StoreError> {
    conn.execute("DELETE FROM web_sessions WHERE expires_at <= ?1 OR last_seen_at <= ?2", params![now, now - idle_ms])
        .ctx("purging sessions")
}

/// Moves sessions' last-seen times forward (batched by the writer).
pub fn touch(conn: &Connection, stamps: &[(i64, i64)]) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("UPDATE web_sessions SET last_seen_at = ?2 WHERE id = ?1 AND last_seen_at < ?2")
        .ctx("touching sessions")?;
    for (id, at) in stamps {
        stmt.execute(params![id, at]).ctx("touching sessions")?;
    }
    Ok(())
}

/// An operator console session: who acts (`token` for the admin token, or
/// the email of a user whose role is admin) and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSession {
    pub id: i64,
    pub actor: String,
    pub user_id: Option<i64>,
    pub last_seen_at: i64,
    pub expires_at: i64,
    /// False when the user behind it is no longer an admin, or is banned.
    pub still_allowed: bool,
}

pub fn create_operator(
    conn: &Connection,
    token_hash: &str,
    actor: &str,
    user_id: Option<i64>,
    now: i64,
    expires_at: i64,
) -> Result<i64, StoreError> {
    conn.insert(
        "INSERT INTO operator_sessions(token_hash, actor, user_id, created_at, last_seen_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        params![token_hash, actor, user_id, now, expires_at],
    )
    .ctx("creating operator session")
}

pub fn find_operator(conn: &Connection, token_hash: &str) -> Result<Option<OperatorSession>, StoreError> {
    conn.query_row(
        "SELECT s.id, s.actor, s.user_id, s.last_seen_at, s.expires_at,
                s.user_id IS NULL OR (u.role = 'admin' AND u.status = 'active')
         FROM operator_sessions s LEFT JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?1",
        [token_hash],
        |r| {
            Ok(OperatorSession {
                id: r.get(0)?,
                actor: r.get(1)?,
                user_id: r.get(2)?,
                last_seen_at: r.get(3)?,
                expires_at: r.get(4)?,
                still_allowed: r.get(5)?,
            })
        },
    )
    .optional()
    .ctx("reading operator session")
}

/// Ends an operator session (`None`: every one past its time).
pub fn end_operator(conn: &Connection, id: Option<i64>, now: i64, idle_ms: i64) -> Result<usize, StoreError> {
    match id {
        Some(id) => conn.execute("DELETE FROM operator_sessions WHERE id = ?1", [id]),
        None => conn.execute(
            "DELETE FROM operator_sessions WHERE expires_at <= ?1 OR last_seen_at <= ?2",
            params![now, now - idle_ms],
        ),
    }
    .ctx("ending operator sessions")
}

pub fn touch_operator(conn: &Connection, id: i64, at: i64) -> Result<(), StoreError> {
    conn.execute("UPDATE operator_sessions SET last_seen_at = ?2 WHERE id = ?1 AND last_seen_at < ?2", params![id, at])
        .ctx("touching operator session")?;
    Ok(())
}

/// How long a form token is remembered: far longer than anyone double-clicks.
const FORM_TOKEN_TTL_MS: i64 = 86_400_000;

/// Claims a one-time form token for `user_id`; false when it was used
/// already (the form was submitted twice). Run it in the transaction of the
/// change it guards, so the two commit or roll back together.
pub fn claim_form(conn: &Connection, token: &str, user_id: i64, now: i64) -> Result<bool, StoreError> {
    conn.execute("DELETE FROM form_tokens WHERE created_at < ?1", [now - FORM_TOKEN_TTL_MS])
        .ctx("expiring form tokens")?;
    let n = conn
        .execute(
            "INSERT OR IGNORE INTO form_tokens(token, user_id, created_at) VALUES (?1, ?2, ?3)",
            params![token, user_id, now],
        )
        .ctx("claiming form token")?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path().join("db")).unwrap();
        let u = super::super::accounts::add_user(&conn, "a@b.c").unwrap();
        let origin = Origin { ip: Some("127.0.0.1"), user_agent: Some("test") };
        let a = create(&conn, "h1", u.id, 1_000, 10_000, &origin).unwrap();
        let b = create(&conn, "h2", u.id, 1_000, 10_000, &origin).unwrap();
        let s = find(&conn, "h1").unwrap().unwrap();
        assert_eq!((s.id, s.email.as_str(), s.banned, s.last_seen_at), (a, "a@b.c", false, 1_000));
        touch(&conn, &[(a, 5_000), (a, 4_000)]).unwrap();
        assert_eq!(find(&conn, "h1").unwrap().unwrap().last_seen_at, 5_000);
        // Idle for longer than 3 s at t=7 s: only b (last seen at 1 s) goes.
        assert_eq!(purge_expired(&conn, 7_000, 3_000).unwrap(), 1);
        assert!(find(&conn, "h2").unwrap().is_none());
        let c = create(&conn, "h3", u.id, 7_000, 20_000, &origin).unwrap();
        assert_eq!(delete_for_user(&conn, u.id, Some(c)).unwrap(), 1);
        assert!(find(&conn, "h3").unwrap().is_some());
        delete(&conn, c).unwrap();
        assert!(find(&conn, "h3").unwrap().is_none());
        let _ = b;
    }

    #[test]
    fn form_tokens_claim_once() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path().join("db")).unwrap();
        assert!(claim_form(&conn, "t", 1, 0).unwrap());
        assert!(!claim_form(&conn, "t", 1, 10).unwrap());
        // Long after, the token has been forgotten (nobody resubmits a day later).
        assert!(claim_form(&conn, "t", 1, FORM_TOKEN_TTL_MS + 11).unwrap());
    }
}
