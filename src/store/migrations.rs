//! Schema migrations, one list per backend, applied in order inside one
//! transaction each. A migration is never edited once released; changes go
//! in a new one, on both backends.

use super::db::Connection;
use super::StoreError;
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
    // 2: plans, credits and codes. Every movement of money is a ledger entry;
    // a user's credit balance is the sum of their `credits` entries and their
    // plan usage of a day the sum of their `plan` entries that day.
    r#"
    CREATE TABLE subscriptions (
        id         INTEGER PRIMARY KEY,
        user_id    INTEGER NOT NULL REFERENCES users(id),
        plan_id    TEXT NOT NULL,
        starts_at  INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'replaced', 'revoked')),
        reference  TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL
    );
    CREATE INDEX subscriptions_user ON subscriptions(user_id, status);
    CREATE TABLE ledger (
        id         INTEGER PRIMARY KEY,
        user_id    INTEGER NOT NULL REFERENCES users(id),
        account    TEXT NOT NULL DEFAULT 'credits' CHECK (account IN ('credits', 'plan')),
        amount     INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        reason     TEXT NOT NULL DEFAULT '',
        reference  TEXT NOT NULL DEFAULT '',
        origin     TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX ledger_user ON ledger(user_id, account, created_at);
    CREATE INDEX ledger_reference ON ledger(reference);
    CREATE TABLE redemption_codes (
        id         INTEGER PRIMARY KEY,
        code_hash  TEXT NOT NULL UNIQUE,
        prefix     TEXT NOT NULL,
        kind       TEXT NOT NULL CHECK (kind IN ('credits', 'plan')),
        credits    INTEGER,
        plan_id    TEXT,
        max_uses   INTEGER NOT NULL DEFAULT 1,
        uses       INTEGER NOT NULL DEFAULT 0,
        expires_at INTEGER,
        status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
        batch      TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL
    );
    CREATE TABLE code_redemptions (
        id         INTEGER PRIMARY KEY,
        code_id    INTEGER NOT NULL REFERENCES redemption_codes(id),
        user_id    INTEGER NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL,
        UNIQUE (code_id, user_id)
    );
    CREATE TABLE admin_audit (
        id         INTEGER PRIMARY KEY,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        target     TEXT NOT NULL DEFAULT '',
        detail     TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL
    );
    "#,
    // 3: nothing looks ledger entries up by reference, and every request's
    // charge paid for that index in the batched writer.
    "DROP INDEX IF EXISTS ledger_reference;",
    // 4: the website. Console sessions are stored by the SHA-256 of their
    // token only; form tokens make a double-submitted form act once; a
    // deleted key keeps its row (its usage still names it) but never
    // authenticates again.
    r#"
    CREATE TABLE web_sessions (
        id           INTEGER PRIMARY KEY,
        token_hash   TEXT NOT NULL UNIQUE,
        user_id      INTEGER NOT NULL REFERENCES users(id),
        created_at   INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        ip           TEXT,
        user_agent   TEXT
    );
    CREATE INDEX web_sessions_user ON web_sessions(user_id);
    CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);
    CREATE TABLE form_tokens (
        token      TEXT PRIMARY KEY,
        user_id    INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX form_tokens_time ON form_tokens(created_at);
    ALTER TABLE api_keys ADD COLUMN deleted_at INTEGER;
    "#,
    // 5: usage totals per 15 minutes, per user, key, model and channel,
    // written with the usage rows. Reports and charts read these instead of
    // scanning every request (a heavy user has hundreds of thousands a
    // month); 15 minutes keeps days exact in every time zone. Missing ids are
    // 0 and missing names '' so that they can be part of the key.
    r#"
    CREATE TABLE usage_rollup (
        user_id            INTEGER NOT NULL,
        bucket             INTEGER NOT NULL,
        key_id             INTEGER NOT NULL,
        model              TEXT NOT NULL,
        channel            TEXT NOT NULL,
        requests           INTEGER NOT NULL,
        input_tokens       INTEGER NOT NULL,
        cached_tokens      INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        output_tokens      INTEGER NOT NULL,
        reasoning_tokens   INTEGER NOT NULL,
        cost               INTEGER NOT NULL,
        PRIMARY KEY (user_id, bucket, key_id, model, channel)
    ) WITHOUT ROWID;
    CREATE INDEX usage_rollup_bucket ON usage_rollup(bucket);
    INSERT INTO usage_rollup
        SELECT COALESCE(user_id, 0), created_at - created_at % 900000, COALESCE(key_id, 0), COALESCE(model, ''),
               COALESCE(channel, ''), COUNT(*), SUM(input_tokens), SUM(cached_tokens), SUM(cache_write_tokens),
               SUM(output_tokens), SUM(reasoning_tokens), SUM(cost)
        FROM usage GROUP BY 1, 2, 3, 4, 5;
    "#,
    // 6: credits bought online, the provider notifications already handled
    // (each is acted on once however often it is repeated), operators who are
    // users, and the operator console's sessions.
    r#"
    CREATE TABLE orders (
        id            TEXT PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users(id),
        provider      TEXT NOT NULL,
        method        TEXT NOT NULL DEFAULT '',
        status        TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'expired', 'refunded')),
        amount        INTEGER NOT NULL CHECK (amount > 0),
        currency      TEXT NOT NULL,
        credits       INTEGER NOT NULL DEFAULT 0,
        plan_id       TEXT,
        package       TEXT,
        provider_ref  TEXT,
        checkout_url  TEXT,
        ledger_id     INTEGER,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        paid_at       INTEGER,
        updated_at    INTEGER NOT NULL,
        note          TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID;
    CREATE INDEX orders_user ON orders(user_id, created_at);
    CREATE INDEX orders_time ON orders(created_at);
    CREATE INDEX orders_pending ON orders(status, expires_at);
    CREATE TABLE payment_events (
        provider   TEXT NOT NULL,
        event_id   TEXT NOT NULL,
        order_id   TEXT,
        kind       TEXT NOT NULL,
        outcome    TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        PRIMARY KEY (provider, event_id)
    ) WITHOUT ROWID;
    ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin'));
    CREATE TABLE operator_sessions (
        id           INTEGER PRIMARY KEY,
        token_hash   TEXT NOT NULL UNIQUE,
        actor        TEXT NOT NULL,
        user_id      INTEGER REFERENCES users(id),
        created_at   INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL
    );
    "#,
    // 7: an operator's enable/disable of a channel outlives the process.
    r#"
    CREATE TABLE channel_switches (
        name       TEXT PRIMARY KEY,
        disabled   INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 8: usage charges are one ledger row per user, account and minute of a
    // writer batch; each usage row names the ledger row that charged it.
    // Rows from before keep NULL: their charge is the ledger row whose
    // reference is their request id.
    "ALTER TABLE usage ADD COLUMN ledger_id INTEGER;",
    // 9: credit totals per user up to a ledger id, so that a start reads them
    // and the entries after, not the whole ledger (see `snapshot`).
    r#"
    CREATE TABLE ledger_snapshot (
        user_id INTEGER PRIMARY KEY,
        balance INTEGER NOT NULL,
        spent   INTEGER NOT NULL
    );
    CREATE TABLE ledger_snapshot_meta (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        through_id INTEGER NOT NULL,
        taken_at   INTEGER NOT NULL
    );
    "#,
    // 10: usage rows older than `storage.usage_retention` are deleted (their
    // totals stay in usage_rollup); reports over that time read the rollups.
    "CREATE TABLE usage_pruned (id INTEGER PRIMARY KEY CHECK (id = 1), before INTEGER NOT NULL);",
    // 11: which gateway process wrote a `gateway` entry. During an upgrade
    // two share the file, and each must apply the other's charges.
    "ALTER TABLE ledger ADD COLUMN instance TEXT NOT NULL DEFAULT '';",
    // 12: keys every node of a cluster must share (CSRF tokens, thinking
    // signatures), so a form or a signature made on one node checks on another.
    "CREATE TABLE shared_keys (name TEXT PRIMARY KEY, key TEXT NOT NULL);",
];

/// The schema version this binary writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

pub fn migrate(conn: &rusqlite::Connection, path: &Path) -> Result<(), StoreError> {
    let version_of =
        |c: &rusqlite::Connection| -> rusqlite::Result<u32> { c.query_row("PRAGMA user_version", [], |r| r.get(0)) };
    let current = version_of(conn).map_err(|source| StoreError::Migrate { version: 0, source: source.into() })?;
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
        apply().map_err(|source| StoreError::Migrate { version, source: source.into() })?;
    }
    Ok(())
}

/// PostgreSQL's schema starts where SQLite's stands at version 12, with the
/// types PostgreSQL checks: BIGINT for every integer (SQLite's are 64-bit),
/// identities for ids.
///
/// Two things SQLite's single writer gives for free are built in:
/// - Ledger ids are taken under a lock held to the commit, so that ids grow
///   in commit order and a node that has read up to id N has seen every
///   entry below N (see `Billing::apply_external`).
/// - Every change notifies `codex_proxy_changes` with the writer's
///   `application_name`, which other nodes listen to (see `db::changes`).
const PG_MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE users (
        id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        email         TEXT NOT NULL UNIQUE,
        status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'banned')),
        password_hash TEXT,
        created_at    BIGINT NOT NULL,
        role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin'))
    );
    CREATE TABLE api_keys (
        id             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        user_id        BIGINT NOT NULL REFERENCES users(id),
        lookup         TEXT NOT NULL UNIQUE,
        key_hash       TEXT NOT NULL,
        name           TEXT NOT NULL DEFAULT '',
        status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
        expires_at     BIGINT,
        allowed_models TEXT,
        created_at     BIGINT NOT NULL,
        last_used_at   BIGINT,
        deleted_at     BIGINT
    );
    CREATE INDEX api_keys_user ON api_keys(user_id);
    CREATE TABLE usage (
        id                 BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        request_id         TEXT NOT NULL UNIQUE,
        created_at         BIGINT NOT NULL,
        key_id             BIGINT,
        user_id            BIGINT,
        endpoint           TEXT NOT NULL,
        model              TEXT,
        channel            TEXT,
        input_tokens       BIGINT NOT NULL DEFAULT 0,
        cached_tokens      BIGINT NOT NULL DEFAULT 0,
        cache_write_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens      BIGINT NOT NULL DEFAULT 0,
        reasoning_tokens   BIGINT NOT NULL DEFAULT 0,
        status             BIGINT NOT NULL,
        upstream_status    BIGINT,
        latency_ms         BIGINT NOT NULL,
        ttfb_ms            BIGINT,
        stream             BIGINT NOT NULL DEFAULT 0,
        estimated          BIGINT NOT NULL DEFAULT 0,
        cost               BIGINT NOT NULL DEFAULT 0,
        billed_to          TEXT,
        attempts           TEXT,
        translation        TEXT,
        ledger_id          BIGINT
    );
    CREATE INDEX usage_user_time ON usage(user_id, created_at);
    CREATE INDEX usage_time ON usage(created_at);
    CREATE TABLE subscriptions (
        id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        user_id    BIGINT NOT NULL REFERENCES users(id),
        plan_id    TEXT NOT NULL,
        starts_at  BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'replaced', 'revoked')),
        reference  TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL
    );
    CREATE INDEX subscriptions_user ON subscriptions(user_id, status);
    CREATE SEQUENCE ledger_id_seq;
    CREATE TABLE ledger (
        id         BIGINT PRIMARY KEY,
        user_id    BIGINT NOT NULL REFERENCES users(id),
        account    TEXT NOT NULL DEFAULT 'credits' CHECK (account IN ('credits', 'plan')),
        amount     BIGINT NOT NULL,
        kind       TEXT NOT NULL,
        reason     TEXT NOT NULL DEFAULT '',
        reference  TEXT NOT NULL DEFAULT '',
        origin     TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        instance   TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX ledger_user ON ledger(user_id, account, created_at);
    CREATE FUNCTION ledger_next_id() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(7401, 2);
        IF NEW.id IS NULL THEN
            NEW.id := nextval('ledger_id_seq');
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER ledger_next_id BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION ledger_next_id();
    CREATE TABLE redemption_codes (
        id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        code_hash  TEXT NOT NULL UNIQUE,
        prefix     TEXT NOT NULL,
        kind       TEXT NOT NULL CHECK (kind IN ('credits', 'plan')),
        credits    BIGINT,
        plan_id    TEXT,
        max_uses   BIGINT NOT NULL DEFAULT 1,
        uses       BIGINT NOT NULL DEFAULT 0,
        expires_at BIGINT,
        status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
        batch      TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL
    );
    CREATE TABLE code_redemptions (
        id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        code_id    BIGINT NOT NULL REFERENCES redemption_codes(id),
        user_id    BIGINT NOT NULL REFERENCES users(id),
        created_at BIGINT NOT NULL,
        UNIQUE (code_id, user_id)
    );
    CREATE TABLE admin_audit (
        id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        target     TEXT NOT NULL DEFAULT '',
        detail     TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL
    );
    CREATE TABLE web_sessions (
        id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        token_hash   TEXT NOT NULL UNIQUE,
        user_id      BIGINT NOT NULL REFERENCES users(id),
        created_at   BIGINT NOT NULL,
        last_seen_at BIGINT NOT NULL,
        expires_at   BIGINT NOT NULL,
        ip           TEXT,
        user_agent   TEXT
    );
    CREATE INDEX web_sessions_user ON web_sessions(user_id);
    CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);
    CREATE TABLE form_tokens (
        token      TEXT PRIMARY KEY,
        user_id    BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX form_tokens_time ON form_tokens(created_at);
    CREATE TABLE usage_rollup (
        user_id            BIGINT NOT NULL,
        bucket             BIGINT NOT NULL,
        key_id             BIGINT NOT NULL,
        model              TEXT NOT NULL,
        channel            TEXT NOT NULL,
        requests           BIGINT NOT NULL,
        input_tokens       BIGINT NOT NULL,
        cached_tokens      BIGINT NOT NULL,
        cache_write_tokens BIGINT NOT NULL,
        output_tokens      BIGINT NOT NULL,
        reasoning_tokens   BIGINT NOT NULL,
        cost               BIGINT NOT NULL,
        PRIMARY KEY (user_id, bucket, key_id, model, channel)
    );
    CREATE INDEX usage_rollup_bucket ON usage_rollup(bucket);
    CREATE TABLE orders (
        id            TEXT PRIMARY KEY,
        user_id       BIGINT NOT NULL REFERENCES users(id),
        provider      TEXT NOT NULL,
        method        TEXT NOT NULL DEFAULT '',
        status        TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'expired', 'refunded')),
        amount        BIGINT NOT NULL CHECK (amount > 0),
        currency      TEXT NOT NULL,
        credits       BIGINT NOT NULL DEFAULT 0,
        plan_id       TEXT,
        package       TEXT,
        provider_ref  TEXT,
        checkout_url  TEXT,
        ledger_id     BIGINT,
        created_at    BIGINT NOT NULL,
        expires_at    BIGINT NOT NULL,
        paid_at       BIGINT,
        updated_at    BIGINT NOT NULL,
        note          TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX orders_user ON orders(user_id, created_at);
    CREATE INDEX orders_time ON orders(created_at);
    CREATE INDEX orders_pending ON orders(status, expires_at);
    CREATE TABLE payment_events (
        provider   TEXT NOT NULL,
        event_id   TEXT NOT NULL,
        order_id   TEXT,
        kind       TEXT NOT NULL,
        outcome    TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL,
        PRIMARY KEY (provider, event_id)
    );
    CREATE TABLE operator_sessions (
        id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        token_hash   TEXT NOT NULL UNIQUE,
        actor        TEXT NOT NULL,
        user_id      BIGINT REFERENCES users(id),
        created_at   BIGINT NOT NULL,
        last_seen_at BIGINT NOT NULL,
        expires_at   BIGINT NOT NULL
    );
    CREATE TABLE channel_switches (
        name       TEXT PRIMARY KEY,
        disabled   BIGINT NOT NULL,
        actor      TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE ledger_snapshot (
        user_id BIGINT PRIMARY KEY,
        balance BIGINT NOT NULL,
        spent   BIGINT NOT NULL
    );
    CREATE TABLE ledger_snapshot_meta (
        id         BIGINT PRIMARY KEY CHECK (id = 1),
        through_id BIGINT NOT NULL,
        taken_at   BIGINT NOT NULL
    );
    CREATE TABLE usage_pruned (id BIGINT PRIMARY KEY CHECK (id = 1), before BIGINT NOT NULL);
    CREATE TABLE shared_keys (name TEXT PRIMARY KEY, key TEXT NOT NULL);
    CREATE FUNCTION notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('codex_proxy_changes', current_setting('application_name'));
        RETURN NULL;
    END $$;
    DO $$
    DECLARE t text;
    BEGIN
        FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() LOOP
            EXECUTE format('CREATE TRIGGER notify_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I
                            FOR EACH STATEMENT EXECUTE FUNCTION notify_change()', t);
        END LOOP;
    END $$;
"#];

pub const PG_LATEST: u32 = PG_MIGRATIONS.len() as u32;

/// Brings a PostgreSQL database up to date. A lock held for the whole run
/// makes nodes that start together apply each migration once.
pub fn migrate_pg(conn: &Connection, url: &str) -> Result<(), StoreError> {
    let fail = |version| move |source| StoreError::Migrate { version, source };
    let tx = conn.write_transaction().map_err(fail(0))?;
    tx.execute_batch(
        "SET LOCAL client_min_messages = warning;
         SELECT pg_advisory_xact_lock(7401, 0);
         CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);",
    )
    .map_err(fail(0))?;
    let current: Option<u32> =
        tx.query_row("SELECT MAX(version) FROM schema_version", (), |r| r.get(0)).map_err(fail(0))?;
    let current = current.unwrap_or(0);
    if current > PG_LATEST {
        return Err(StoreError::TooNew { path: url.into(), found: current, supported: PG_LATEST });
    }
    for (i, sql) in PG_MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as u32 + 1;
        tx.execute_batch(sql).map_err(fail(version))?;
        tx.execute("INSERT INTO schema_version(version) VALUES (?1)", [version]).map_err(fail(version))?;
    }
    tx.commit().map_err(fail(current))
}
