//! Account subcommands: `users`, `keys`, `credits`, `plans`, `codes`, `usage`,
//! `ledger`, `audit`. Changes go through `accounts::ops` (the same code as the
//! admin API) and reach a running gateway within a second.

use crate::access_log::timestamp;
use crate::accounts::ops::Ops;
use crate::clock::parse_time;
use crate::config::units::{format_credits, parse_credits};
use crate::config::Config;
use crate::store::billing::{self, Grant};
use crate::store::usage::{self, GroupBy, UsageFilter};
use crate::store::{self, accounts as sql};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user.
    Add {
        email: String,
        /// Read a console password from stdin (hashed with argon2id).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Ban a user: every request with their keys gets 403.
    Ban { email: String },
    /// Lift a ban.
    Unban { email: String },
    /// Set a user's console password (read from stdin) and sign them out of
    /// every browser: for a user who forgot theirs.
    Password { email: String },
    /// Make a user an admin (who may sign in to the operator console) or a
    /// regular user again (their operator sessions end).
    Role {
        email: String,
        #[arg(value_parser = ["admin", "user"])]
        role: String,
    },
}

/// One line of stdin, without its line ending.
fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key; the key is printed once, as the last line of stdout.
    Create {
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Expiry: a date (YYYY-MM-DD), an RFC 3339 time, or a duration (`30d`).
        #[arg(long)]
        expires: Option<String>,
        /// Models the key may use (comma separated, `*` patterns allowed).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
    },
    /// List a user's keys (never the keys themselves).
    List { email: String },
    /// Disable a key (takes effect within a second on a running gateway).
    Disable { key_id: i64 },
    /// Re-enable a key.
    Enable { key_id: i64 },
    /// Set (or with `never`, clear) a key's expiry.
    Expire { key_id: i64, when: String },
    /// Restrict a key to models (comma separated), or `all` to lift the limit.
    Models { key_id: i64, models: String },
}

#[derive(Subcommand, Debug)]
pub enum CreditsCommand {
    /// Add credits (a negative amount removes them); every change is a ledger entry.
    Add {
        email: String,
        #[arg(allow_hyphen_values = true)]
        amount: String,
        #[arg(long, default_value = "manual top-up")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PlansCommand {
    /// The plans of the configuration.
    List,
    /// Start a plan for a user (or extend it when already running).
    Assign { email: String, plan: String },
    /// End a user's plan now.
    Revoke { email: String },
}

#[derive(Subcommand, Debug)]
pub enum CodesCommand {
    /// Create redemption codes; prints them one per line (shown once).
    Create(CreateCodes),
    /// List codes (never the codes themselves).
    List,
    /// Disable a code.
    Disable { code_id: i64 },
}

#[derive(Args, Debug)]
pub struct CreateCodes {
    /// Credits each code grants.
    #[arg(long, conflicts_with = "plan", required_unless_present = "plan")]
    credits: Option<String>,
    /// Plan each code starts (or extends).
    #[arg(long)]
    plan: Option<String>,
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// How many users may redeem each code.
    #[arg(long, default_value_t = 1)]
    uses: u32,
    /// Expiry: YYYY-MM-DD, RFC 3339, or a duration (`90d`).
    #[arg(long)]
    expires: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum By {
    User,
    Key,
    Model,
    Channel,
    Day,
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    key: Option<i64>,
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    channel: Option<String>,
    /// From this day (YYYY-MM-DD, in the billing timezone) or time.
    #[arg(long)]
    since: Option<String>,
    /// Up to (not including) this day or time.
    #[arg(long)]
    until: Option<String>,
    #[arg(long, value_enum, default_value = "day")]
    by: By,
}

fn open(cfg: &Config) -> Result<store::Connection, String> {
    store::open(&cfg.database).map_err(|e| e.to_string())
}

pub(super) fn actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

fn when(ms: Option<i64>) -> String {
    ms.map(timestamp).unwrap_or_else(|| "-".into())
}

pub fn users(cfg: &Config, cmd: UsersCommand) -> Result<(), String> {
    let conn = open(cfg)?;
    let actor = actor();
    let ops = Ops { conn: &conn, cfg, actor: &actor };
    match cmd {
        UsersCommand::Add { email, password_stdin } => {
            let password = if password_stdin { Some(read_password()?) } else { None };
            let u = ops.add_user(&email, password.as_deref()).map_err(|e| e.to_string())?;
            println!("created user {} (id {})", u.email, u.id);
        }
        UsersCommand::List => {
            let balances = billing::balances(&conn).map_err(|e| e.to_string())?;
            let subs = billing::active_subscriptions(&conn).map_err(|e| e.to_string())?;
            println!("{:<6} {:<32} {:<8} {:>14} {:<10} CREATED", "ID", "EMAIL", "STATUS", "BALANCE", "PLAN");
            for u in sql::list_users(&conn).map_err(|e| e.to_string())? {
                let plan = subs
                    .iter()
                    .find(|s| s.user_id == u.id && s.expires_at > crate::clock::now_ms())
                    .map_or("-".to_string(), |s| s.plan_id.clone());
                let balance = format_credits(balances.get(&u.id).copied().unwrap_or(0));
                println!(
                    "{:<6} {:<32} {:<8} {:>14} {:<10} {}",
                    u.id,
                    u.email,
                    u.status,
                    balance,
                    plan,
                    when(Some(u.created_at))
                );
            }
        }
        UsersCommand::Ban { email } => {
            let u = ops.set_banned(&email, true).map_err(|e| e.to_string())?;
            println!("user {} banned", u.email);
        }
        UsersCommand::Unban { email } => {
            let u = ops.set_banned(&email, false).map_err(|e| e.to_string())?;
            println!("user {} unbanned", u.email);
        }
        UsersCommand::Password { email } => {
            let password = read_password()?;
            ops.set_password(&email, &password).map_err(|e| e.to_string())?;
            println!("password of {email} set; their console sessions ended");
        }
        UsersCommand::Role { email, role } => {
            ops.set_role(&email, &role).map_err(|e| e.to_string())?;
            println!("{email} is now {}", if role == "admin" { "an admin" } else { "a regular user" });
        }
    }
    Ok(())
}

pub fn keys(cfg: &Config, cmd: KeysCommand) -> Result<(), String> {
    let conn = open(cfg)?;
    let actor = actor();
    let ops = Ops { conn: &conn, cfg, actor: &actor };
    let tz = cfg.billing.utc_offset_secs;
    match cmd {
        KeysCommand::Create { email, name, expires, models } => {
            let expires_at = expires.map(|e| parse_time(&e, tz)).transpose()?;
            let (row, key) = ops.create_key(&email, &name, expires_at, models.as_deref()).map_err(|e| e.to_string())?;
            println!("created key {} ({}) for {email}; store it now, it is not shown again:", row.id, row.prefix());
            println!("{key}");
        }
        KeysCommand::List { email } => {
            let user = ops.user(&email).map_err(|e| e.to_string())?;
            println!(
                "{:<6} {:<16} {:<16} {:<9} {:<25} {:<25} LAST USED",
                "ID", "PREFIX", "NAME", "STATUS", "CREATED", "EXPIRES"
            );
            for k in sql::list_keys(&conn, Some(user.id)).map_err(|e| e.to_string())? {
                println!(
                    "{:<6} {:<16} {:<16} {:<9} {:<25} {:<25} {}",
                    k.id,
                    k.prefix(),
                    if k.name.is_empty() { "-" } else { &k.name },
                    k.status,
                    when(Some(k.created_at)),
                    when(k.expires_at),
                    when(k.last_used_at)
                );
            }
        }
        KeysCommand::Disable { key_id } => {
            let k = ops.set_key_active(key_id, false).map_err(|e| e.to_string())?;
            println!("key {} ({}) disabled", k.id, k.prefix());
        }
        KeysCommand::Enable { key_id } => {
            let k = ops.set_key_active(key_id, true).map_err(|e| e.to_string())?;
            println!("key {} ({}) enabled", k.id, k.prefix());
        }
        KeysCommand::Expire { key_id, when: w } => {
            let at = if w == "never" { None } else { Some(parse_time(&w, tz)?) };
            let k = ops.set_key_expiry(key_id, at).map_err(|e| e.to_string())?;
            println!("key {} ({}) expires {}", k.id, k.prefix(), when(k.expires_at));
        }
        KeysCommand::Models { key_id, models } => {
            let list: Option<Vec<String>> = (models != "all")
                .then(|| models.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect());
            let k = ops.set_key_models(key_id, list.as_deref()).map_err(|e| e.to_string())?;
            println!(
                "key {} ({}) models: {}",
                k.id,
                k.prefix(),
                k.allowed_models.map_or("all".into(), |m| m.join(","))
            );
        }
    }
    Ok(())
}

pub fn credits(cfg: &Config, cmd: CreditsCommand) -> Result<(), String> {
    let conn = open(cfg)?;
    let actor = actor();
    let ops = Ops { conn: &conn, cfg, actor: &actor };
    match cmd {
        CreditsCommand::Add { email, amount, reason } => {
            let micros = parse_credits(&amount)?;
            let balance = ops.add_credits(&email, micros, &reason).map_err(|e| e.to_string())?;
            println!("{email}: {} credits; balance {}", format_credits(micros), format_credits(balance));
        }
    }
    Ok(())
}

pub fn plans(cfg: &Config, cmd: PlansCommand) -> Result<(), String> {
    let conn = open(cfg)?;
    let actor = actor();
    let ops = Ops { conn: &conn, cfg, actor: &actor };
    match cmd {
        PlansCommand::List => {
            println!("{:<12} {:<16} {:>12} {:>6} {:>6} {:>5}  MODELS", "ID", "NAME", "DAILY", "CONC", "RPM", "DAYS");
            for p in &cfg.plans {
                let rules = format!("allow [{}] block [{}]", p.allowed_models.join(","), p.blocked_models.join(","));
                println!(
                    "{:<12} {:<16} {:>12} {:>6} {:>6} {:>5}  {rules}",
                    p.id,
                    p.name,
                    format_credits(p.daily_quota),
                    p.concurrency.map_or("-".into(), |c| c.to_string()),
                    p.requests_per_minute.map_or("-".into(), |c| c.to_string()),
                    p.duration_days
                );
            }
        }
        PlansCommand::Assign { email, plan } => {
            let s = ops.assign_plan(&email, &plan).map_err(|e| e.to_string())?;
            println!("{email}: plan {} until {}", s.plan_id, when(Some(s.expires_at)));
        }
        PlansCommand::Revoke { email } => {
            let any = ops.revoke_plan(&email).map_err(|e| e.to_string())?;
            println!("{email}: {}", if any { "plan revoked" } else { "had no plan" });
        }
    }
    Ok(())
}

pub fn codes(cfg: &Config, cmd: CodesCommand) -> Result<(), String> {
    let conn = open(cfg)?;
    let actor = actor();
    let ops = Ops { conn: &conn, cfg, actor: &actor };
    match cmd {
        CodesCommand::Create(c) => {
            let grant = match (&c.credits, &c.plan) {
                (Some(amount), _) => Grant::Credits(parse_credits(amount)?),
                (None, Some(p)) => Grant::Plan(p.clone()),
                (None, None) => return Err("give --credits N or --plan P".into()),
            };
            let expires_at = c.expires.map(|e| parse_time(&e, cfg.billing.utc_offset_secs)).transpose()?;
            let codes = ops.create_codes(&grant, c.count, c.uses, expires_at).map_err(|e| e.to_string())?;
            eprintln!("created {} code(s); they are not shown again:", codes.len());
            for (_, code) in codes {
                println!("{code}");
            }
        }
        CodesCommand::List => {
            println!(
                "{:<6} {:<10} {:<18} {:>9} {:<9} {:<25} BATCH",
                "ID", "PREFIX", "GRANT", "USES", "STATUS", "EXPIRES"
            );
            for c in billing::list_codes(&conn).map_err(|e| e.to_string())? {
                let grant = match (&c.plan_id, c.credits) {
                    (Some(p), _) => format!("plan {p}"),
                    (None, Some(v)) => format!("{} credits", format_credits(v)),
                    _ => "?".into(),
                };
                let uses = format!("{}/{}", c.uses, c.max_uses);
                println!(
                    "{:<6} {:<10} {:<18} {:>9} {:<9} {:<25} {}",
                    c.id,
                    c.prefix,
                    grant,
                    uses,
                    c.status,
                    when(c.expires_at),
                    c.batch
                );
            }
        }
        CodesCommand::Disable { code_id } => {
            let c = ops.disable_code(code_id).map_err(|e| e.to_string())?;
            println!("code {} ({}) disabled", c.id, c.prefix);
        }
    }
    Ok(())
}

pub fn usage(cfg: &Config, args: UsageArgs) -> Result<(), String> {
    let conn = open(cfg)?;
    let tz = cfg.billing.utc_offset_secs;
    let user_id = match &args.user {
        Some(e) => Some(sql::user(&conn, e).map_err(|e| e.to_string())?.id),
        None => None,
    };
    let filter = UsageFilter {
        user_id,
        key_id: args.key,
        model: args.model.clone(),
        channel: args.channel.clone(),
        since_ms: args.since.as_deref().map(|s| parse_time(s, tz)).transpose()?,
        until_ms: args.until.as_deref().map(|s| parse_time(s, tz)).transpose()?,
    };
    let group = match args.by {
        By::User => GroupBy::User,
        By::Key => GroupBy::Key,
        By::Model => GroupBy::Model,
        By::Channel => GroupBy::Channel,
        By::Day => GroupBy::Day,
    };
    let rows = usage::report(&conn, &filter, group, tz).map_err(|e| e.to_string())?;
    println!(
        "{:<32} {:>8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>14}",
        "GROUP", "REQUESTS", "INPUT", "CACHED", "CACHE_WRITE", "OUTPUT", "REASONING", "COST"
    );
    let total = rows.iter().fold(usage::UsageLine { group: "TOTAL".into(), ..Default::default() }, |mut t, r| {
        t.requests += r.requests;
        t.input_tokens += r.input_tokens;
        t.cached_tokens += r.cached_tokens;
        t.cache_write_tokens += r.cache_write_tokens;
        t.output_tokens += r.output_tokens;
        t.reasoning_tokens += r.reasoning_tokens;
        t.cost += r.cost;
        t
    });
    for r in rows.iter().chain(std::iter::once(&total)) {
        println!(
            "{:<32} {:>8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>14}",
            r.group,
            r.requests,
            r.input_tokens,
            r.cached_tokens,
            r.cache_write_tokens,
            r.output_tokens,
            r.reasoning_tokens,
            format_credits(r.cost)
        );
    }
    Ok(())
}

pub fn ledger(cfg: &Config, email: &str, limit: i64) -> Result<(), String> {
    let conn = open(cfg)?;
    let user = sql::user(&conn, email).map_err(|e| e.to_string())?;
    println!("{:<8} {:<25} {:<8} {:>14} {:<8} {:<28} REASON", "ID", "TIME", "ACCOUNT", "AMOUNT", "KIND", "REFERENCE");
    for e in billing::ledger_for_user(&conn, user.id, limit).map_err(|e| e.to_string())? {
        println!(
            "{:<8} {:<25} {:<8} {:>14} {:<8} {:<28} {}",
            e.id,
            timestamp(e.created_at),
            e.account,
            format_credits(e.amount),
            e.kind,
            e.reference,
            e.reason
        );
    }
    let balance = billing::credit_balance(&conn, user.id).map_err(|e| e.to_string())?;
    println!("balance: {} credits", format_credits(balance));
    Ok(())
}

pub fn audit(cfg: &Config, limit: i64) -> Result<(), String> {
    let conn = open(cfg)?;
    for a in billing::audit_log(&conn, limit).map_err(|e| e.to_string())? {
        println!("{} {:<20} {:<16} {:<24} {}", timestamp(a.created_at), a.actor, a.action, a.target, a.detail);
    }
    Ok(())
}
