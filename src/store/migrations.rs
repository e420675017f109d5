//! Schema migrations, applied in order inside one transaction each. A migration
//! is never edited once released; changes go in a new one.

use super::StoreError;
use rusqlite::Connection;
use std::path::Path;

const MIGRATIONS: &[&str] = &[
    // 1: users, API keys, usage records.
    r#"
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
        status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'banned')),
        password_hash TEXT,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id             INTEGER PRIMARY KEY,
        user_id        INTEGER NOT NULL REFERENCES users(id),
        lookup         TEXT NOT NULL UNIQUE,
        key_hash       TEXT NOT NULL,
        name           TEXT NOT NULL DEFAULT '',
        status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
        expires_at     INTEGER,
        allowed_models TEXT,
        created_at     INTEGER NOT NULL,
        last_used_at   INTEGER
    );
    CREATE INDEX api_keys_user ON api_keys(user_id);
    -- One row per request that reached billing. Token columns follow the
    -- gateway's usage model: input_tokens excludes cached and cache-write tokens.
    CREATE TABLE usage (
        id                 INTEGER PRIMARY KEY,
        request_id         TEXT NOT NULL UNIQUE,
        created_at         INTEGER NOT NULL,
        key_id             INTEGER,
        user_id            INTEGER,
        endpoint           TEXT NOT NULL,
        model              TEXT,
        channel            TEXT,
        input_tokens       INTEGER NOT NULL DEFAULT 0,
        cached_tokens      INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens      INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens   INTEGER NOT NULL DEFAULT 0,
        status             INTEGER NOT NULL,
        upstream_status    INTEGER,
        latency_ms         INTEGER NOT NULL,
        ttfb_ms            INTEGER,
        stream             INTEGER NOT NULL DEFAULT 0,
        estimated          INTEGER NOT NULL DEFAULT 0,
        cost               INTEGER NOT NULL DEFAULT 0,
        billed_to          TEXT,
        attempts           TEXT,
        translation        TEXT
    );
    CREATE INDEX usage_user_time ON usage(user_id, created_at);
    CREATE INDEX usage_time ON usage(created_at);
    "#,
];

/// The schema version this binary writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

pub fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let version_of = |c: &Connection| -> rusqlite::Result<u32> { c.query_row("PRAGMA user_version", [], |r| r.get(0)) };
    let current = version_of(conn).map_err(|source| StoreError::Migrate { version: 0, source })?;
    if current > LATEST {
        return Err(StoreError::TooNew { path: path.to_path_buf(), found: current, supported: LATEST });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as u32 + 1;
        // IMMEDIATE takes the write lock first, so a CLI and a starting server
        // that race on a fresh file apply each migration exactly once.
        let apply = || -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let result = (|| {
                if version_of(conn)? < version {
                    conn.execute_batch(sql)?;
                    conn.pragma_update(None, "user_version", version)?;
                }
                Ok(())
            })();
            match result {
                Ok(()) => conn.execute_batch("COMMIT"),
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(e)
                }
            }
        };
        apply().map_err(|source| StoreError::Migrate { version, source })?;
    }
    Ok(())
}
