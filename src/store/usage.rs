//! Usage reports: totals grouped by user, key, model or day (CLI, admin API,
//! console charts) and pages of single requests (console history, CSV export).
//!
//! Queries name only the filters that are set, so SQLite can use the
//! `usage(user_id, created_at)` and `usage(created_at)` indexes: a
//! `(?1 IS NULL OR user_id = ?1)` clause would make it scan the whole table.

use super::{SqlContext, StoreError};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, Row};
use serde::Serialize;

/// Which usage rows a report covers.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub user_id: Option<i64>,
    pub key_id: Option<i64>,
    pub model: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl UsageFilter {
    /// `WHERE …` for the filters that are set, and their parameters.
    fn clause(&self) -> (String, Vec<Value>) {
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
        if let Some(t) = self.since_ms {
            add("u.created_at >= ?", Value::Integer(t));
        }
        if let Some(t) = self.until_ms {
            add("u.created_at < ?", Value::Integer(t));
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
    let key = match group {
        GroupBy::User => "COALESCE((SELECT email FROM users WHERE id = u.user_id), '-')".to_string(),
        GroupBy::Key => "COALESCE((SELECT 'codex_' || lookup FROM api_keys WHERE id = u.key_id), '-')".to_string(),
        GroupBy::Model => "COALESCE(u.model, '-')".to_string(),
        GroupBy::Day => format!("date(u.created_at / 1000 + {utc_offset_secs}, 'unixepoch')"),
    };
    let (clause, params) = filter.clause();
    let sql = format!(
        "SELECT {key} AS g, COUNT(*), SUM(input_tokens), SUM(cached_tokens), SUM(cache_write_tokens),
                SUM(output_tokens), SUM(reasoning_tokens), SUM(cost)
         FROM usage u {clause} GROUP BY g ORDER BY g"
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

/// One request as its user sees it (no channel or upstream details).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub id: i64,
    pub request_id: String,
    pub created_at: i64,
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

fn usage_row(r: &Row) -> rusqlite::Result<UsageRow> {
    Ok(UsageRow {
        id: r.get(0)?,
        request_id: r.get(1)?,
        created_at: r.get(2)?,
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
                u.cost, u.latency_ms, u.ttfb_ms, u.stream, u.estimated, u.billed_to
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

    fn insert(conn: &Connection, id: &str, at: i64, user: i64, model: &str, cost: i64) {
        conn.execute(
            "INSERT INTO usage(request_id, created_at, user_id, key_id, endpoint, model, output_tokens, status, latency_ms, cost)
             VALUES (?1, ?2, ?3, 1, 'chat', ?4, 10, 200, 5, ?5)",
            rusqlite::params![id, at, user, model, cost],
        )
        .unwrap();
    }

    #[test]
    fn reports_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(&dir.path().join("db")).unwrap();
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
    fn user_queries_use_the_user_index() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(&dir.path().join("db")).unwrap();
        let f = UsageFilter { user_id: Some(1), since_ms: Some(0), ..Default::default() };
        let (clause, _) = f.clause();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN SELECT COUNT(*) FROM usage u {clause}"))
            .unwrap()
            .query_map([1, 0], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(plan.iter().any(|p| p.contains("usage_user_time")), "{plan:?}");
    }
}
