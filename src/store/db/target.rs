//! Which database a process stores its state in.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// One embedded file; the default.
    Sqlite(PathBuf),
    Postgres(PgTarget),
}

/// A PostgreSQL database. The URL never holds the password: it comes from
/// the environment variable named in `password_env`, so that a config file
/// can be shared and committed.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    pub url: String,
    pub password_env: String,
    /// Where this node keeps what is its own (the dead-letter file).
    pub data_dir: PathBuf,
    /// The CA certificates (PEM) the server's must chain to when TLS is
    /// used; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl PgTarget {
    /// The connection settings, with the password read now (a rotated
    /// password is picked up by the next connection).
    pub fn config(&self) -> Result<postgres::Config, String> {
        let mut config: postgres::Config = self.url.parse().map_err(|e| format!("storage.url: {e}"))?;
        if let Ok(pw) = std::env::var(&self.password_env) {
            config.password(pw);
        }
        Ok(config)
    }

    /// A new client named `application_name`, over TLS as `sslmode` says
    /// (see `tls`).
    pub fn connect(&self, application_name: &str) -> Result<postgres::Client, super::Error> {
        let mut config = self.config().map_err(super::Error::Config)?;
        config.application_name(application_name);
        config.connect_timeout(std::time::Duration::from_secs(5));
        // A Unix socket never carries TLS: no connector to build.
        let unix_only = config.get_hosts().iter().all(|h| matches!(h, postgres::config::Host::Unix(_)));
        if unix_only || config.get_ssl_mode() == postgres::config::SslMode::Disable {
            return Ok(config.connect(postgres::NoTls)?);
        }
        let tls = super::tls::connector(self.ca_file.as_deref()).map_err(super::Error::Config)?;
        Ok(config.connect(tls)?)
    }

    /// Checks a `storage.url` as config validation does.
    pub fn check_url(url: &str) -> Result<(), String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("must start with postgres:// or postgresql://".into());
        }
        let config: postgres::Config = url.parse().map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        if config.get_password().is_some() {
            return Err("must not hold the password: set it in the environment (storage.password_env)".into());
        }
        if config.get_dbname().is_none() {
            return Err("must name the database (postgres://user@host/DATABASE)".into());
        }
        Ok(())
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTarget({}, password from ${}", self.url, self.password_env)?;
        match &self.ca_file {
            Some(ca) => write!(f, ", CA {})", ca.display()),
            None => f.write_str(")"),
        }
    }
}

impl Database {
    /// A SQLite file, for tests and tools.
    pub fn file(path: impl Into<PathBuf>) -> Database {
        Database::Sqlite(path.into())
    }

    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(p) => Some(p),
            Database::Postgres(_) => None,
        }
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(t) => f.write_str(&t.url),
        }
    }
}

impl From<&Path> for Database {
    fn from(p: &Path) -> Database {
        Database::Sqlite(p.to_path_buf())
    }
}

impl From<&PathBuf> for Database {
    fn from(p: &PathBuf) -> Database {
        Database::Sqlite(p.clone())
    }
}

impl From<PathBuf> for Database {
    fn from(p: PathBuf) -> Database {
        Database::Sqlite(p)
    }
}

impl From<&Database> for Database {
    fn from(d: &Database) -> Database {
        d.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(PgTarget::check_url("postgres://codex@db.internal:5432/codex").is_ok());
        assert!(PgTarget::check_url("postgresql://codex@/codex?host=/run/postgresql").is_ok());
        assert!(PgTarget::check_url("mysql://x/y").unwrap_err().contains("postgres://"));
        assert!(PgTarget::check_url("postgres://codex:hunter2@db/codex").unwrap_err().contains("password"));
        assert!(PgTarget::check_url("postgres://codex@db").unwrap_err().contains("database"));
    }
}
