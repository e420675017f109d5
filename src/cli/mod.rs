//! The command line: `serve`, `check`, `fake-upstream`, and the account
//! commands (`users`, `keys`, …) that write SQLite directly; a running gateway
//! notices their changes within a second (`PRAGMA data_version`).

mod accounts;
mod channels;
mod orders;

use crate::config::{self, Config};
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "codex-proxy", version, about = "LLM API gateway on Pingora")]
pub struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long = "config", global = true, default_value = "conf/codex-proxy.yaml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Detach into the background (pid file in the data directory).
        #[arg(short, long)]
        daemon: bool,
        /// Take over the listeners of a running instance (graceful upgrade:
        /// start this, then send SIGQUIT to the old process).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a configuration file and print every error with its field path.
    Check,
    /// Make the running gateway re-read its configuration file (as SIGHUP
    /// does), after checking it here; prints what the gateway made of it.
    Reload,
    /// Run the fake OpenAI/Anthropic upstream (demo, tests, benchmarks).
    FakeUpstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Answer /v1/responses with 404 (a chat-only OpenAI-compatible server).
        #[arg(long)]
        chat_only: bool,
        /// Require this API key.
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: accounts::UsersCommand,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: accounts::KeysCommand,
    },
    /// Add or remove credits.
    Credits {
        #[command(subcommand)]
        command: accounts::CreditsCommand,
    },
    /// List, assign and revoke plans.
    Plans {
        #[command(subcommand)]
        command: accounts::PlansCommand,
    },
    /// Create, list and disable redemption codes.
    Codes {
        #[command(subcommand)]
        command: accounts::CodesCommand,
    },
    /// Usage totals and cost, grouped by user, key, model or day.
    Usage(accounts::UsageArgs),
    /// A user's ledger entries and balance.
    Ledger {
        email: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Channel health of the running gateway (through the admin API).
    Channels {
        #[command(subcommand)]
        command: channels::ChannelsCommand,
    },
    /// Credits bought online: list, refund, confirm paid.
    Orders {
        #[command(subcommand)]
        command: orders::OrdersCommand,
    },
    /// The admin audit trail (every account change, who and when).
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Copy a single node's SQLite file into an empty PostgreSQL database
    /// (stop the gateway first), checking every balance on both sides:
    /// `migrate --from sqlite://data/codex-proxy.db --to postgres://codex@db/codex`.
    Migrate {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// The environment variable holding PostgreSQL's password.
        #[arg(long, default_value = crate::config::PASSWORD_ENV)]
        password_env: String,
        /// CA certificates (PEM) PostgreSQL's must chain to over TLS
        /// (default: the system's roots).
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Database maintenance.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Rewrites the database file without its free pages and turns on
    /// incremental auto-vacuum, so that pages freed by later usage pruning
    /// go back to the file system. Takes the write lock while it runs: the
    /// gateway's writes wait (and are retried), so run it at a quiet hour.
    Vacuum,
}

fn load(path: &std::path::Path) -> Result<Config, String> {
    config::load(path).map_err(|e| format!("{}: invalid configuration:\n{e}", path.display()))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        Command::Serve { daemon, upgrade } => load(&cli.config).and_then(|cfg| {
            // Absolute: a reload re-reads it, whatever the working directory is then.
            let config_path = std::fs::canonicalize(&cli.config).unwrap_or_else(|_| cli.config.clone());
            let opts = crate::server::ServeOptions { daemon, upgrade, config_path };
            crate::server::serve(cfg, opts).map_err(|e| e.to_string())
        }),
        Command::Check => match config::load(&cli.config) {
            Ok(cfg) => {
                println!(
                    "{}: OK ({} listener(s), {} channel(s), {} model(s), {} plan(s))",
                    cli.config.display(),
                    cfg.listeners.len(),
                    cfg.channels.len(),
                    cfg.models.len(),
                    cfg.plans.len()
                );
                Ok(())
            }
            Err(e) => {
                for err in &e.0 {
                    eprintln!("{}: {}: {}", cli.config.display(), err.path, err.message);
                }
                Err(format!("{} error(s)", e.0.len()))
            }
        },
        Command::Reload => load(&cli.config).and_then(|cfg| reload(&cfg)),
        Command::FakeUpstream { listen, chat_only, key, threads } => fake_upstream(listen, chat_only, key, threads),
        Command::Users { command } => load(&cli.config).and_then(|cfg| accounts::users(&cfg, command)),
        Command::Keys { command } => load(&cli.config).and_then(|cfg| accounts::keys(&cfg, command)),
        Command::Credits { command } => load(&cli.config).and_then(|cfg| accounts::credits(&cfg, command)),
        Command::Plans { command } => load(&cli.config).and_then(|cfg| accounts::plans(&cfg, command)),
        Command::Codes { command } => load(&cli.config).and_then(|cfg| accounts::codes(&cfg, command)),
        Command::Usage(args) => load(&cli.config).and_then(|cfg| accounts::usage(&cfg, args)),
        Command::Ledger { email, limit } => load(&cli.config).and_then(|cfg| accounts::ledger(&cfg, &email, limit)),
        Command::Channels { command } => load(&cli.config).and_then(|cfg| channels::channels(&cfg, command)),
        Command::Orders { command } => load(&cli.config).and_then(|cfg| orders::orders(&cfg, command)),
        Command::Audit { limit } => load(&cli.config).and_then(|cfg| accounts::audit(&cfg, limit)),
        Command::Migrate { from, to, password_env, ca_file } => migrate(&from, &to, password_env, ca_file),
        Command::Db { command: DbCommand::Vacuum } => load(&cli.config).and_then(|cfg| vacuum(&cfg)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reloads through the admin API, which answers with the outcome; without
/// an admin listener, sends SIGHUP to the pid in the data directory (the
/// outcome is then in the gateway's log).
fn reload(cfg: &Config) -> Result<(), String> {
    if cfg.admin.listen.is_none() {
        let path = crate::server::pid_file(cfg);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let pid: i32 = text.trim().parse().map_err(|_| format!("{} does not hold a pid", path.display()))?;
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            return Err(format!("cannot signal process {pid}: {}", std::io::Error::last_os_error()));
        }
        println!("sent SIGHUP to {pid}: the gateway's log says how the reload went");
        return Ok(());
    }
    let (status, v) = channels::admin_request(cfg, "POST", "/admin/config/reload")?;
    for name in v["needs_upgrade"].as_array().into_iter().flatten() {
        println!("{}: changed, needs an upgrade (the running value stays)", name.as_str().unwrap_or(""));
    }
    match status {
        200 => {
            println!("reloaded: configuration version {}", v["version"]);
            Ok(())
        }
        422 => {
            let errors: Vec<&str> = v["errors"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            Err(format!("the gateway refused the file and keeps version {}:\n{}", v["version"], errors.join("\n")))
        }
        _ => Err(format!("admin API answered {status}: {}", v["error"])),
    }
}

fn migrate(from: &str, to: &str, password_env: String, ca_file: Option<std::path::PathBuf>) -> Result<(), String> {
    let file = from.strip_prefix("sqlite://").ok_or("--from: must be sqlite://FILE")?;
    if !std::path::Path::new(file).is_file() {
        return Err(format!("--from: no SQLite file at {file}"));
    }
    crate::store::db::PgTarget::check_url(to).map_err(|e| format!("--to: {e}"))?;
    let target = crate::store::db::PgTarget { url: to.to_string(), password_env, data_dir: ".".into(), ca_file };
    let source = crate::store::open(std::path::Path::new(file)).map_err(|e| e.to_string())?;
    let dest = crate::store::open(crate::store::Database::Postgres(target)).map_err(|e| e.to_string())?;
    let copied = crate::store::copy::copy(&source, &dest).map_err(|e| format!("migrate: {e}"))?;
    for (table, n) in &copied.rows {
        println!("{table:<22} {n:>10} rows");
    }
    println!(
        "balances equal on both sides: {} users, {} credits in all",
        copied.users_with_credits,
        crate::config::units::format_credits(copied.credits)
    );
    Ok(())
}

fn vacuum(cfg: &Config) -> Result<(), String> {
    let conn = crate::store::open(&cfg.database).map_err(|e| e.to_string())?;
    let Some(conn) = conn.as_sqlite() else {
        return Err("`db vacuum` is for SQLite; PostgreSQL's autovacuum looks after itself".into());
    };
    let size = |c: &rusqlite::Connection| -> rusqlite::Result<i64> {
        c.query_row("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()", [], |r| r.get(0))
    };
    let before = size(conn).map_err(|e| e.to_string())?;
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;").map_err(|e| format!("vacuum failed: {e}"))?;
    let after = size(conn).map_err(|e| e.to_string())?;
    println!("{}: {} -> {} bytes; auto_vacuum is incremental", cfg.database, before, after);
    Ok(())
}

fn fake_upstream(
    listen: std::net::SocketAddr,
    chat_only: bool,
    key: Option<String>,
    threads: usize,
) -> Result<(), String> {
    let opts = crate::fake_upstream::FakeOptions { chat_only, expected_key: key, ..Default::default() };
    let fake = crate::fake_upstream::FakeUpstream::start_on(listen, opts, threads)
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!("{}", serde_json::json!({"event": "ready", "listen": fake.addr.to_string()}));
    log::info!("fake upstream on http://{} (chat_only={chat_only})", fake.addr);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    });
    drop(fake);
    Ok(())
}
