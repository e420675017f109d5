//! `users` and `keys` subcommands.

use crate::access_log::timestamp;
use crate::config::Config;
use crate::store::{self, accounts as sql};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user.
    Add { email: String },
    /// List users.
    List,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key; the key is printed once, as the last line of stdout.
    Create {
        email: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List a user's keys (never the keys themselves).
    List { email: String },
    /// Disable a key (takes effect within a second on a running gateway).
    Disable { key_id: i64 },
    /// Re-enable a key.
    Enable { key_id: i64 },
}

fn open(cfg: &Config) -> Result<rusqlite::Connection, String> {
    store::open(&cfg.database).map_err(|e| e.to_string())
}

fn when(ms: Option<i64>) -> String {
    ms.map(timestamp).unwrap_or_else(|| "-".into())
}

pub fn users(cfg: &Config, cmd: UsersCommand) -> Result<(), String> {
    let conn = open(cfg)?;
    match cmd {
        UsersCommand::Add { email } => {
            let u = sql::add_user(&conn, &email).map_err(|e| e.to_string())?;
            println!("created user {} (id {})", u.email, u.id);
        }
        UsersCommand::List => {
            println!("{:<6} {:<32} {:<8} CREATED", "ID", "EMAIL", "STATUS");
            for u in sql::list_users(&conn).map_err(|e| e.to_string())? {
                println!("{:<6} {:<32} {:<8} {}", u.id, u.email, u.status, when(Some(u.created_at)));
            }
        }
    }
    Ok(())
}

pub fn keys(cfg: &Config, cmd: KeysCommand) -> Result<(), String> {
    let conn = open(cfg)?;
    match cmd {
        KeysCommand::Create { email, name } => {
            let user = sql::user(&conn, &email).map_err(|e| e.to_string())?;
            let (row, key) = sql::create_key(&conn, user.id, &name).map_err(|e| e.to_string())?;
            println!(
                "created key {} ({}) for {}; store it now, it is not shown again:",
                row.id,
                row.prefix(),
                user.email
            );
            println!("{}", key.plaintext);
        }
        KeysCommand::List { email } => {
            let user = sql::user(&conn, &email).map_err(|e| e.to_string())?;
            println!("{:<6} {:<16} {:<16} {:<9} {:<25} LAST USED", "ID", "PREFIX", "NAME", "STATUS", "CREATED");
            for k in sql::list_keys(&conn, Some(user.id)).map_err(|e| e.to_string())? {
                println!(
                    "{:<6} {:<16} {:<16} {:<9} {:<25} {}",
                    k.id,
                    k.prefix(),
                    if k.name.is_empty() { "-" } else { &k.name },
                    k.status,
                    when(Some(k.created_at)),
                    when(k.last_used_at)
                );
            }
        }
        KeysCommand::Disable { key_id } => {
            let k = sql::set_key_status(&conn, key_id, "disabled").map_err(|e| e.to_string())?;
            println!("key {} ({}) disabled", k.id, k.prefix());
        }
        KeysCommand::Enable { key_id } => {
            let k = sql::set_key_status(&conn, key_id, "active").map_err(|e| e.to_string())?;
            println!("key {} ({}) enabled", k.id, k.prefix());
        }
    }
    Ok(())
}
