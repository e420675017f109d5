//! Operators' channel switches. A channel an operator disabled stays out of
//! service across restarts until one enables it; the YAML file's `enabled`
//! is the other, static switch.

use super::{SqlContext, StoreError};
use crate::store::db::{params, Connection};

pub fn set_disabled(conn: &Connection, name: &str, disabled: bool, actor: &str, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO channel_switches (name, disabled, actor, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET disabled = excluded.disabled, actor = excluded.actor, updated_at = excluded.updated_at",
        params![name, disabled, actor, now],
    )
    .ctx("saving a channel switch")?;
    Ok(())
}

/// The channels operators have disabled, with who did it.
pub fn disabled(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT name, actor FROM channel_switches WHERE disabled = 1 ORDER BY name")
        .ctx("reading channel switches")?;
    let rows = stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?))).ctx("reading channel switches")?;
    rows.collect::<Result<_, _>>().ctx("reading channel switches")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_switch_wins() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::store::open(dir.path().join("t.db")).unwrap();
        set_disabled(&c, "oa", true, "operator:token", 1).unwrap();
        set_disabled(&c, "an", true, "admin-api", 2).unwrap();
        set_disabled(&c, "an", false, "admin-api", 3).unwrap();
        assert_eq!(disabled(&c).unwrap(), vec![("oa".to_string(), "operator:token".to_string())]);
    }
}
