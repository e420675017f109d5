//! Usage reports: totals grouped by user, key, model or day (CLI, admin API,
//! console charts) and pages of single requests (console history, CSV export).
//!
//! Totals come from `usage_rollup`: per 15 minutes, user, key, model and
//! channel, added by the writer in the transaction that inserts the usage
//! rows, so they always agree with them. A month of a heavy user is then a
//! few thousand rollup rows instead of hundreds of thousands of requests.
//! Days stay exact because every real UTC offset is a multiple of 15
//! minutes; a report whose time bounds fall between buckets reads the
//! requests themselves.
//!
//! Queries name only the filters that are set, so SQLite can use the indexes:
//! a `(?1 IS NULL OR user_id = ?1)` clause would make it scan the whole table.

use super::writer::UsageRecord;
use super::{SqlContext, StoreError};
use crate::store::db::Value;
use crate::store::db::{params, params_from_iter, Backend, Connection, Row};
use serde::Serialize;
use std::collections::HashMap;

/// The length of a rollup period.
pub const BUCKET_MS: i64 = 900_000;

/// Where report totals are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Rollup,
    Rows,
}

impl Source {
    fn table(self) -> &'static str {
        match self {
            Source::Rollup => "usage_rollup",
            Source::Rows => "usage",
        }
    }
    fn time(self) -> &'static str {
        match self {
            Source::Rollup => "u.bucket",
            Source::Rows => "u.created_at",
        }
    }
    fn requests(self) -> &'static str {
        match self {
            Source::Rollup => "SUM(u.requests)",
            Source::Rows => "COUNT(*)",
        }
    }
}

/// Which usage rows a report covers.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub user_id: Option<i64>,
    pub key_id: Option<i64>,
    pub model: Option<String>,
    pub channel: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl UsageFilter {
    /// Whether the time bounds fall on rollup buckets (days and hours do).
    fn on_buckets(&self) -> bool {
        [self.since_ms, self.until_ms].iter().flatten().all(|t| t % BUCKET_MS == 0)
    }

    /// `WHERE …` for the filters that are set, and their parameters.
    fn clause(&self) -> (String, Vec<Value>) {
        self.clause_on("u.created_at")
    }

    fn clause_on(&self, time: &str) -> (String, Vec<Value>) {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        let mut add = |cond: &str, v: Value| {
            params.push(v);
            conds.push(cond.replace('?', &format!("?{}", params.len())));
        };
        if let Some(u) = self.user_id {
            add("u.user_id = ?", Value::Integer(u));
        }
        if let Some(k) = self.key_id {
            add("u.key_id = ?", Value::Integer(k));
        }
        if let Some(m) = &self.model {
            add("u.model = ?", Value::Text(m.clone()));
        }
        if let Some(c) = &self.channel {
            add("u.channel = ?", Value::Text(c.clone()));
        }
        if let Some(t) = self.since_ms {
            add(&format!("{time} >= ?"), Value::Integer(t));
        }
        if let Some(t) = self.until_ms {
            add(&format!("{time} < ?"), Value::Integer(t));
        }
        let clause = if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
        (clause, params)
    }
}

/// How a report groups rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    User,
    Key,
    Model,
    Channel,
    Day,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct UsageLine {
    pub group: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost: i64,
}

/// Usage grouped by `group`, days in the billing timezone (`utc_offset_secs`).
pub fn report(
    conn: &Connection,
    filter: &UsageFilter,
    group: GroupBy,
    utc_offset_secs: i32,
) -> Result<Vec<UsageLine>, StoreError> {
    // Requests before the retention horizon are gone: their totals are in the
    // rollups only (bounds between buckets then count whole buckets).
    let horizon = pruned_before(conn)?;
    let reaches_pruned = horizon > 0 && filter.since_ms.is_none_or(|s| s < horizon);
    if filter.on_buckets() {
        return report_from(conn, Source::Rollup, filter, group, utc_offset_secs);
    }
    if !reaches_pruned {
        return report_from(conn, Source::Rows, filter, group, utc_offset_secs);
    }
    let whole = UsageFilter {
        since_ms: filter.since_ms.map(|t| t - t.rem_euclid(BUCKET_MS)),
        until_ms: filter.until_ms.map(|t| t + (BUCKET_MS - t.rem_euclid(BUCKET_MS)) % BUCKET_MS),
        ..filter.clone()
    };
    report_from(conn, Source::Rollup, &whole, group, utc_offset_secs)
}

/// The time before which usage rows were deleted (0: none were).
pub fn pruned_before(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT COALESCE(MAX(before), 0) FROM usage_pruned", (), |r| r.get(0))
        .ctx("reading the usage retention horizon")
}

/// Deletes up to `limit` usage rows created before `before_ms` (rounded
/// down to a rollup bucket, so a bucket is either whole in the rows or only
/// in the rollups), in one transaction; returns how many went. Their totals
/// were added to `usage_rollup` when they were written, and stay there.
pub fn prune(conn: &Connection, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
    let before = before_ms - before_ms.rem_euclid(BUCKET_MS);
    let tx = conn.unchecked_transaction().ctx("pruning usage")?;
    let n = tx
        .execute(
            "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
            params![before, limit as i64],
        )
        .ctx("pruning usage")?;
    tx.execute(
        "INSERT INTO usage_pruned(id, before) VALUES (1, ?1)
         ON CONFLICT(id) DO UPDATE SET
            before = CASE WHEN usage_pruned.before > excluded.before THEN usage_pruned.before ELSE excluded.before END",
        [before],
    )
    .ctx("pruning usage")?;
    tx.commit().ctx("pruning usage")?;
    Ok(n)
}

fn report_from(
    conn: &Connection,
    src: Source,
    filter: &UsageFilter,
    group: GroupBy,
    utc_offset_secs: i32,
) -> Result<Vec<UsageLine>, StoreError> {
    let time = src.time();
    let key = match group {
        GroupBy::User => "COALESCE((SELECT email FROM users WHERE id = u.user_id), '-')".to_string(),
        GroupBy::Key => "COALESCE((SELECT 'codex_' || lookup FROM api_keys WHERE id = u.key_id), '-')".to_string(),
        GroupBy::Model => "COALESCE(NULLIF(u.model, ''), '-')".to_string(),
        GroupBy::Channel => "COALESCE(NULLIF(u.channel, ''), '-')".to_string(),
        GroupBy::Day => match conn.backend() {
            Backend::Sqlite => format!("date({time} / 1000 + {utc_offset_secs}, 'unixepoch')"),
            Backend::Postgres => {
                format!("to_char(to_timestamp({time} / 1000 + {utc_offset_secs}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
            }
        },
    };
    let (clause, params) = filter.clause_on(time);
    let (table, requests) = (src.table(), src.requests());
    let sql = format!(
        "SELECT {key} AS g, {requests}, SUM(input_tokens), SUM(cached_tokens), SUM(cache_write_tokens),
                SUM(output_tokens), SUM(reasoning_tokens), SUM(cost)
         FROM {table} u {clause} GROUP BY g ORDER BY g"
    );
    let mut stmt = conn.prepare(&sql).ctx("preparing usage report")?;
    let rows = stmt
        .query_map(params_from_iter(params), |r| {
            Ok(UsageLine {
                group: r.get(0)?,
                requests: r.get(1)?,
                input_tokens: r.get(2)?,
                cached_tokens: r.get(3)?,
                cache_write_tokens: r.get(4)?,
                output_tokens: r.get(5)?,
                reasoning_tokens: r.get(6)?,
                cost: r.get(7)?,
            })
        })
        .ctx("running usage report")?;
    rows.collect::<Result<_, _>>().ctx("running usage report")
}

/// The totals one rollup row adds up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    requests: i64,
    input: i64,
    cached: i64,
    cache_write: i64,
    output: i64,
    reasoning: i64,
    cost: i64,
}

/// A batch's additions to `usage_rollup`, gathered while its usage rows are
/// inserted and written in the same transaction. Borrows the batch's names:
/// the writer thread allocates nothing per record for it.
#[derive(Debug, Default)]
pub struct Rollup<'a> {
    rows: HashMap<(i64, i64, i64, &'a str, &'a str), Totals>,
}

impl<'a> Rollup<'a> {
    pub fn add(&mut self, u: &'a UsageRecord) {
        let bucket = u.created_at - u.created_at.rem_euclid(BUCKET_MS);
        let key = (
            u.user_id.unwrap_or(0),
            bucket,
            u.key_id.unwrap_or(0),
            u.model.as_deref().unwrap_or(""),
            u.channel.as_deref().unwrap_or(""),
        );
        let t = self.rows.entry(key).or_default();
        t.requests += 1;
        t.input += u.input_tokens as i64;
        t.cached += u.cached_tokens as i64;
        t.cache_write += u.cache_write_tokens as i64;
        t.output += u.output_tokens as i64;
        t.reasoning += u.reasoning_tokens as i64;
        t.cost += u.cost;
    }

    pub fn write(&self, conn: &Connection) -> Result<(), StoreError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO usage_rollup(user_id, bucket, key_id, model, channel, requests, input_tokens,
                    cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT(user_id, bucket, key_id, model, channel) DO UPDATE SET
                    requests = usage_rollup.requests + excluded.requests,
                    input_tokens = usage_rollup.input_tokens + excluded.input_tokens,
                    cached_tokens = usage_rollup.cached_tokens + excluded.cached_tokens,
                    cache_write_tokens = usage_rollup.cache_write_tokens + excluded.cache_write_tokens,
                    output_tokens = usage_rollup.output_tokens + excluded.output_tokens,
                    reasoning_tokens = usage_rollup.reasoning_tokens + excluded.reasoning_tokens,
                    cost = usage_rollup.cost + excluded.cost",
            )
            .ctx("preparing rollup upsert")?;
        for ((user, bucket, key, model, channel), t) in &self.rows {
            stmt.execute(params![
                user,
                bucket,
                key,
                model,
                channel,
                t.requests,
                t.input,
                t.cached,
                t.cache_write,
                t.output,
                t.reasoning,
                t.cost
            ])
            .ctx("adding to the usage rollup")?;
        }
        Ok(())
    }
}

/// One request. The console shows its user what they asked for; the
/// operator console also which user and channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub id: i64,
    pub request_id: String,
    pub created_at: i64,
    pub email: Option<String>,
    pub channel: Option<String>,
    pub key_id: Option<i64>,
    pub key_name: Option<String>,
    pub key_prefix: Option<String>,
    pub endpoint: String,
    pub model: Option<String>,
    pub status: i64,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost: i64,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub stream: bool,
    pub estimated: bool,
    pub billed_to: Option<String>,
}

fn usage_row(r: &Row) -> crate::store::db::Result<UsageRow> {
    Ok(UsageRow {
        id: r.get(0)?,
        request_id: r.get(1)?,
        created_at: r.get(2)?,
        email: r.get(20)?,
        channel: r.get(21)?,
        key_id: r.get(3)?,
        key_name: r.get(4)?,
        key_prefix: r.get::<_, Option<String>>(5)?.map(|l| crate::auth::display_prefix(&l)),
        endpoint: r.get(6)?,
        model: r.get(7)?,
        status: r.get(8)?,
        input_tokens: r.get(9)?,
        cached_tokens: r.get(10)?,
        cache_write_tokens: r.get(11)?,
        output_tokens: r.get(12)?,
        reasoning_tokens: r.get(13)?,
        cost: r.get(14)?,
        latency_ms: r.get(15)?,
        ttfb_ms: r.get(16)?,
        stream: r.get(17)?,
        estimated: r.get(18)?,
        billed_to: r.get(19)?,
    })
}

/// Where a page of history starts: strictly older than this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: i64,
}

impl Cursor {
    pub fn of(row: &UsageRow) -> Cursor {
        Cursor { created_at: row.created_at, id: row.id }
    }

    /// `created_at.id`, as it travels in a URL.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (t, id) = s.split_once('.')?;
        Some(Cursor { created_at: t.parse().ok()?, id: id.parse().ok()? })
    }
}

/// Up to `limit` requests, newest first, older than `before` when given
/// (keyset pagination: every page costs the same, however deep).
pub fn page(
    conn: &Connection,
    filter: &UsageFilter,
    before: Option<Cursor>,
    limit: i64,
) -> Result<Vec<UsageRow>, StoreError> {
    let (clause, mut params) = filter.clause();
    let mut sql = format!(
        "SELECT u.id, u.request_id, u.created_at, u.key_id, k.name, k.lookup, u.endpoint, u.model, u.status,
                u.input_tokens, u.cached_tokens, u.cache_write_tokens, u.output_tokens, u.reasoning_tokens,
                u.cost, u.latency_ms, u.ttfb_ms, u.stream, u.estimated, u.billed_to,
                (SELECT email FROM users WHERE id = u.user_id), u.channel
         FROM usage u LEFT JOIN api_keys k ON k.id = u.key_id {clause}"
    );
    if let Some(c) = before {
        sql.push_str(if clause.is_empty() { " WHERE " } else { " AND " });
        sql.push_str(&format!("(u.created_at, u.id) < (?{}, ?{})", params.len() + 1, params.len() + 2));
        params.push(Value::Integer(c.created_at));
        params.push(Value::Integer(c.id));
    }
    sql.push_str(&format!(" ORDER BY u.created_at DESC, u.id DESC LIMIT ?{}", params.len() + 1));
    params.push(Value::Integer(limit));
    let mut stmt = conn.prepare_cached(&sql).ctx("preparing usage page")?;
    let rows = stmt.query_map(params_from_iter(params), usage_row).ctx("reading usage page")?;
    rows.collect::<Result<_, _>>().ctx("reading usage page")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts a usage row and its rollup, as the writer does.
    fn insert(conn: &Connection, id: &str, at: i64, user: i64, model: &str, cost: i64) {
        conn.execute(
            "INSERT INTO usage(request_id, created_at, user_id, key_id, endpoint, model, output_tokens, status, latency_ms, cost)
             VALUES (?1, ?2, ?3, 1, 'chat', ?4, 10, 200, 5, ?5)",
            params![id, at, user, model, cost],
        )
        .unwrap();
        let record = UsageRecord {
            created_at: at,
            user_id: Some(user),
            key_id: Some(1),
            model: Some(model.into()),
            output_tokens: 10,
            cost,
            ..Default::default()
        };
        let mut r = Rollup::default();
        r.add(&record);
        r.write(conn).unwrap();
    }

    #[test]
    fn totals_before_and_after_a_prune_are_equal() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path().join("db")).unwrap();
        const DAY: i64 = 86_400_000;
        // Ten days of requests, some at odd minutes, two users, two models.
        for i in 0..40 {
            let at = i * DAY / 4 + (i % 7) * 61_000;
            insert(&conn, &format!("r{i}"), at, 1 + i % 2, if i % 3 == 0 { "m1" } else { "m2" }, 10 + i);
        }
        let reports = |conn: &Connection| {
            let all = UsageFilter::default();
            let one = UsageFilter { user_id: Some(2), ..Default::default() };
            // An arbitrary start: before the prune it reads the rows.
            let odd = UsageFilter { since_ms: Some(DAY + 1), ..Default::default() };
            [
                report(conn, &all, GroupBy::Day, 0).unwrap(),
                report(conn, &all, GroupBy::Model, 0).unwrap(),
                report(conn, &one, GroupBy::User, 3600).unwrap(),
                report(conn, &odd, GroupBy::Model, 0).unwrap(),
            ]
        };
        let before = reports(&conn);
        // Prune the first five days, a few rows at a time.
        let horizon = 5 * DAY + 123;
        let mut pruned = 0;
        loop {
            let n = prune(&conn, horizon, 3).unwrap();
            pruned += n;
            if n < 3 {
                break;
            }
        }
        assert_eq!(pruned, 20);
        let left: i64 = conn.query_row("SELECT count(*) FROM usage", (), |r| r.get(0)).unwrap();
        assert_eq!(left, 20);
        assert_eq!(pruned_before(&conn).unwrap(), 5 * DAY);
        assert_eq!(reports(&conn), before, "reports read the rollups for the pruned days");
        // A report wholly after the horizon still reads the rows.
        let after = UsageFilter { since_ms: Some(6 * DAY + 1), ..Default::default() };
        assert_eq!(report(&conn, &after, GroupBy::Model, 0).unwrap().iter().map(|l| l.requests).sum::<i64>(), 16);
    }

    #[test]
    fn reports_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path().join("db")).unwrap();
        const DAY: i64 = 86_400_000;
        for i in 0..5 {
            insert(&conn, &format!("a{i}"), i * DAY / 2, 1, if i % 2 == 0 { "m1" } else { "m2" }, 100);
        }
        insert(&conn, "b0", 0, 2, "m1", 7);
        let mine = UsageFilter { user_id: Some(1), ..Default::default() };
        let by_day = report(&conn, &mine, GroupBy::Day, 0).unwrap();
        let days: Vec<(&str, i64)> = by_day.iter().map(|l| (l.group.as_str(), l.requests)).collect();
        assert_eq!(days, vec![("1970-01-01", 2), ("1970-01-02", 2), ("1970-01-03", 1)]);
        let by_model = report(&conn, &UsageFilter { since_ms: Some(DAY), ..mine.clone() }, GroupBy::Model, 0).unwrap();
        assert_eq!(by_model.iter().map(|l| l.cost).sum::<i64>(), 300);
        let all = report(&conn, &UsageFilter::default(), GroupBy::User, 0).unwrap();
        assert_eq!(all.iter().map(|l| l.requests).sum::<i64>(), 6);

        // Pages of two, newest first, with no row twice and none missed.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let p = page(&conn, &mine, before, 2).unwrap();
            if p.is_empty() {
                break;
            }
            before = p.last().map(Cursor::of);
            seen.extend(p.into_iter().map(|r| r.request_id));
        }
        assert_eq!(seen, vec!["a4", "a3", "a2", "a1", "a0"]);
        assert_eq!(Cursor::decode(&Cursor { created_at: 5, id: 9 }.encode()), Some(Cursor { created_at: 5, id: 9 }));
        assert_eq!(Cursor::decode("x.1"), None);
    }

    #[test]
    fn rollups_give_the_totals_of_the_rows() {
        use crate::store::writer::{WriteOp, Writer};
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let w =
            Writer::start(super::super::open(&path).unwrap(), std::time::Duration::from_millis(5), Box::new(|_| {}))
                .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        const DAY: i64 = 86_400_000;
        for i in 0..3_000 {
            let models = [Some("a"), Some("b"), None];
            let record = UsageRecord {
                request_id: format!("r{i}"),
                created_at: rng.gen_range(0..20 * DAY),
                user_id: Some(rng.gen_range(1..4)),
                key_id: [Some(1), Some(2), None][rng.gen_range(0..3)],
                endpoint: "chat",
                model: models[rng.gen_range(0..3)].map(str::to_string),
                channel: Some(["c", "d"][rng.gen_range(0..2)].into()),
                input_tokens: rng.gen_range(0..1000),
                cached_tokens: rng.gen_range(0..100),
                output_tokens: rng.gen_range(0..500),
                cost: rng.gen_range(0..10_000),
                status: 200,
                ..Default::default()
            };
            w.send_blocking(WriteOp::Usage(Box::new(record)));
        }
        assert!(w.flush_blocking(std::time::Duration::from_secs(10)));
        let conn = super::super::open(&path).unwrap();
        // Days in three time zones, per model, per user, and with filters.
        for tz in [0, 8 * 3600, -(5 * 3600 + 1800)] {
            for group in [GroupBy::Day, GroupBy::Model, GroupBy::User, GroupBy::Key, GroupBy::Channel] {
                for f in [
                    UsageFilter::default(),
                    UsageFilter { user_id: Some(2), since_ms: Some(3 * DAY - tz as i64 * 1000), ..Default::default() },
                    UsageFilter {
                        key_id: Some(1),
                        model: Some("a".into()),
                        until_ms: Some(9 * DAY),
                        ..Default::default()
                    },
                ] {
                    let rolled = report_from(&conn, Source::Rollup, &f, group, tz).unwrap();
                    let rows = report_from(&conn, Source::Rows, &f, group, tz).unwrap();
                    assert!(!rows.is_empty());
                    assert_eq!(rolled, rows, "{group:?} {f:?} tz {tz}");
                }
            }
        }
        // A bound between buckets reads the rows themselves.
        assert!(!UsageFilter { since_ms: Some(1), ..Default::default() }.on_buckets());
        assert!(UsageFilter { since_ms: Some(DAY), until_ms: Some(2 * DAY), ..Default::default() }.on_buckets());
    }

    #[test]
    fn user_queries_use_the_user_index() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path().join("db")).unwrap();
        let f = UsageFilter { user_id: Some(1), since_ms: Some(0), ..Default::default() };
        let plan = |src: Source| -> String {
            let (clause, _) = f.clause_on(src.time());
            let sql = format!("EXPLAIN QUERY PLAN SELECT COUNT(*) FROM {} u {clause}", src.table());
            let mut stmt = conn.prepare(&sql).unwrap();
            let rows = stmt.query_map([1, 0], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        assert!(plan(Source::Rows).contains("usage_user_time"), "{}", plan(Source::Rows));
        assert!(plan(Source::Rollup).contains("PRIMARY KEY (user_id=? AND bucket>?)"), "{}", plan(Source::Rollup));
    }
}
