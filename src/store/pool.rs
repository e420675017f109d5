//! Connections for the website and the admin API: opened once, reused, and
//! always used on the blocking thread pool so no request thread ever waits on
//! the database. (The batched writer keeps its own connection.)

use super::{open, Connection, Database, StoreError};
use parking_lot::Mutex;
use std::sync::Arc;

/// Idle connections kept for reuse; more may be open while busy.
const MAX_IDLE: usize = 4;

pub struct Pool {
    db: Database,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    pub fn new(db: impl Into<Database>) -> Arc<Pool> {
        Arc::new(Pool { db: db.into(), idle: Mutex::new(Vec::new()) })
    }

    /// Runs `f` with a connection on the blocking pool. A connection whose
    /// closure failed is dropped rather than reused (it may be mid-transaction).
    pub async fn run<T, E>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let pool = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let conn = match pool.idle.lock().pop() {
                Some(c) => c,
                None => open(&pool.db)?,
            };
            let out = f(&conn);
            if out.is_ok() && conn.is_autocommit() {
                let mut idle = pool.idle.lock();
                if idle.len() < MAX_IDLE {
                    idle.push(conn);
                }
            }
            out
        })
        .await;
        joined.unwrap_or_else(|e| Err(StoreError::Task(e.to_string()).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::SqlContext;
    use super::*;

    #[tokio::test]
    async fn reuses_connections_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(dir.path().join("db"));
        let n: i64 = pool
            .run(|c| c.query_row("SELECT count(*) FROM users", (), |r| r.get(0)).ctx("counting users"))
            .await
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(pool.idle.lock().len(), 1);
        let e: Result<(), StoreError> = pool.run(|_| Err(StoreError::Invalid("no".into()))).await;
        assert!(matches!(e, Err(StoreError::Invalid(_))));
        assert_eq!(pool.idle.lock().len(), 0, "a failed closure's connection is not reused");
    }
}
