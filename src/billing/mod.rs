//! Plans, credits and per-user limits, decided from memory on the request path.
//!
//! Each user has one small state behind its own mutex: the credit balance (sum
//! of the ledger's `credits` entries), credits reserved by requests in flight,
//! today's plan usage and plan reservations, requests in flight, and a
//! one-minute request window. Admission reserves an estimate; settlement
//! charges the upstream's reported cost and releases the reservation, and turns
//! the charge into a ledger entry written together with the usage record.
//!
//! A request is admitted while the plan has quota left today or the balance
//! has anything available (`balance - reserved > 0`), and holds the smaller
//! of its estimate and what is available: a user with 0.30 credits is served,
//! not refused because one request *might* cost 0.48. Only when nothing is
//! available does a request get 402.
//!
//! Invariant: `balance - reserved` never drops below zero at admission, so the
//! balance goes negative only by what settled requests cost beyond what they
//! held. The estimate is the worst case (input bytes / 3 and the full output
//! cap) unless `billing.max_reservation` caps it, so one request overdraws at
//! most its estimate minus what it held — and concurrent requests cannot hold
//! the same credits twice.

pub mod estimate;

use crate::accounts::{KeyEntry, UserEntry};
use crate::clock::{Clock, Days};
use crate::cluster::{AdmitRequest, Cluster, Health};
use crate::config::Config;
use crate::config::RedisDown;
use crate::error::GatewayError;
use crate::limits::{self, MinuteWindow};
use crate::store::Connection;
use crate::store::{self, writer::LedgerEntry, StoreError};
use crate::throttle::Throttle;
use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;

/// Window of the redemption brute-force guard.
const REDEEM_WINDOW_MS: i64 = 600_000;

#[derive(Debug, Default)]
struct UserState {
    balance: i64,
    /// Credits ever charged for usage (for the OpenAI-legacy billing endpoints).
    spent: i64,
    reserved: i64,
    plan_day: i64,
    plan_used: i64,
    plan_reserved: i64,
    inflight: u32,
    minute: MinuteWindow,
}

impl UserState {
    /// Starts a new plan day when the clock passed midnight.
    fn roll_day(&mut self, day: i64) {
        if self.plan_day != day {
            self.plan_day = day;
            self.plan_used = 0;
        }
    }
}

/// The concurrency limit of a user on `plan` (or on none).
fn concurrency_of(plan: Option<&crate::config::PlanConfig>, cfg: &Config) -> u32 {
    plan.and_then(|p| p.concurrency).unwrap_or(cfg.billing.default_concurrency)
}

/// What pays for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Plan,
    Credits,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Plan => "plan",
            Source::Credits => "credits",
        }
    }
}

pub struct Billing {
    /// Plans and billing parameters; replaced by a reload (the day boundary,
    /// `days`, is fixed for the life of the process).
    cfg: ArcSwap<Config>,
    days: Days,
    clock: Arc<dyn Clock>,
    users: RwLock<HashMap<i64, Arc<Mutex<UserState>>>>,
    /// Highest ledger id already reflected in memory.
    last_ledger_id: Mutex<i64>,
    /// The other nodes' share of every limit, when this node is one of several.
    cluster: once_cell::sync::OnceCell<Arc<Cluster>>,
    /// Failed redemptions per user (`billing.redeem_failures_per_10min`).
    redeem_failures: Throttle,
}

/// An admitted request: its concurrency slot and reservation, released on
/// settlement or, if never settled, on drop.
pub struct Ticket {
    billing: Arc<Billing>,
    pub user_id: i64,
    pub source: Source,
    pub reserved: i64,
    /// Balance and remaining plan quota at admission (for response headers).
    pub balance: i64,
    pub plan_remaining: Option<i64>,
    settled: bool,
    /// Admitted through the cluster: the request id its lease is under,
    /// released there too.
    lease: Option<String>,
}

/// A user's account as shown by `/v1/account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub balance: i64,
    pub spent: i64,
    pub reserved: i64,
    pub plan_used_today: i64,
    pub inflight: u32,
    pub concurrency_limit: u32,
    pub next_reset_ms: i64,
}

/// The credit totals a start loaded, to check against the whole ledger.
pub struct LedgerCheck {
    loaded: HashMap<i64, store::snapshot::Totals>,
    through: i64,
}

impl LedgerCheck {
    /// Sums the whole ledger up to the position loaded, corrects every user
    /// whose loaded totals differ (logged: it means the snapshot was wrong),
    /// and rewrites the snapshot from those sums. Returns how many differed.
    pub fn run(self, conn: &Connection, billing: &Billing) -> Result<usize, StoreError> {
        let ledger = store::snapshot::full(conn, self.through)?;
        let diffs = store::snapshot::differences(&self.loaded, &ledger);
        for (user, by) in &diffs {
            log::error!(
                "ledger snapshot was wrong for user {user}: balance off by {}, spent by {}; corrected from the ledger",
                by.balance,
                by.spent
            );
            billing.correct(*user, *by);
        }
        store::snapshot::rebuild(conn, &ledger, self.through)?;
        Ok(diffs.len())
    }
}

impl Billing {
    /// Loads balances and today's plan usage from the ledger.
    pub fn load(cfg: Arc<Config>, clock: Arc<dyn Clock>, conn: &Connection) -> Result<Billing, StoreError> {
        Ok(Self::load_checked(cfg, clock, conn)?.0)
    }

    /// `load`, plus the check to run off the start-up path: the credit
    /// totals come from the ledger snapshot and the entries after it.
    pub fn load_checked(
        cfg: Arc<Config>,
        clock: Arc<dyn Clock>,
        conn: &Connection,
    ) -> Result<(Billing, LedgerCheck), StoreError> {
        let days = Days { utc_offset_secs: cfg.billing.utc_offset_secs };
        let now = clock.now_ms();
        let today = days.day_of(now);
        let (credits, last) = store::snapshot::load(conn)?;
        let plan = store::billing::plan_usage_since(conn, days.start_of_day(now))?;
        let mut users: HashMap<i64, Arc<Mutex<UserState>>> = HashMap::new();
        for id in credits.keys().chain(plan.keys()) {
            let totals = credits.get(id).copied().unwrap_or_default();
            let st = UserState {
                balance: totals.balance,
                spent: totals.spent,
                plan_day: today,
                plan_used: plan.get(id).copied().unwrap_or(0),
                ..Default::default()
            };
            users.insert(*id, Arc::new(Mutex::new(st)));
        }
        let redeem_limit = cfg.billing.redeem_failures_per_10min;
        let billing = Billing {
            cfg: ArcSwap::new(cfg),
            days,
            clock,
            users: RwLock::new(users),
            last_ledger_id: Mutex::new(last),
            cluster: once_cell::sync::OnceCell::new(),
            redeem_failures: Throttle::new("redeem", redeem_limit, REDEEM_WINDOW_MS, None),
        };
        Ok((billing, LedgerCheck { loaded: credits, through: last }))
    }

    /// Plans and billing parameters for requests admitted from now on.
    pub fn set_config(&self, cfg: Arc<Config>) {
        self.redeem_failures.set_limit(cfg.billing.redeem_failures_per_10min);
        self.cfg.store(cfg);
    }

    /// Applies a correction found by checking the loaded totals against the
    /// whole ledger (`store::snapshot`).
    pub fn correct(&self, user_id: i64, by: store::snapshot::Totals) {
        let st = self.state(user_id);
        let mut st = st.lock();
        st.balance += by.balance;
        st.spent += by.spent;
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn days(&self) -> Days {
        self.days
    }

    fn state(&self, user_id: i64) -> Arc<Mutex<UserState>> {
        if let Some(s) = self.users.read().get(&user_id) {
            return s.clone();
        }
        let today = self.days.day_of(self.now_ms());
        self.users
            .write()
            .entry(user_id)
            .or_insert_with(|| Arc::new(Mutex::new(UserState { plan_day: today, ..Default::default() })))
            .clone()
    }

    /// Applies ledger entries written by other processes (CLI) or the admin
    /// API since the last look. Runs on the writer thread after a change.
    pub fn apply_external(&self, conn: &Connection) {
        let mut last = self.last_ledger_id.lock();
        // One read transaction: the entries and the position they reach come
        // from the same snapshot, so an entry committed in between is read
        // next time instead of skipped (the cluster relies on the position).
        let read = conn.unchecked_transaction().map_err(|e| StoreError::Sql { context: "reading ledger", source: e });
        let read = read.and_then(|tx| {
            let entries = store::billing::external_entries_after(&tx, *last)?;
            let max = store::billing::max_ledger_id(&tx)?;
            Ok((entries, max))
        });
        let (entries, max) = match read {
            Ok(r) => r,
            Err(e) => {
                log::error!("reading new ledger entries failed: {e}");
                return;
            }
        };
        for e in &entries {
            let st = self.state(e.user_id);
            let mut st = st.lock();
            match e.account.as_str() {
                "credits" => st.balance += e.amount,
                _ => {
                    let day = self.days.day_of(e.created_at);
                    st.roll_day(self.days.day_of(self.now_ms()));
                    if day == st.plan_day {
                        st.plan_used -= e.amount;
                    }
                }
            }
        }
        *last = max.max(*last);
    }

    /// The ledger position this process reflects: every entry up to it is in
    /// the balances and plan usage in memory.
    pub fn position(&self) -> i64 {
        *self.last_ledger_id.lock()
    }

    /// The cluster this node is one of, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Makes this node one of a cluster: admission goes through `cluster`.
    pub fn join(&self, cluster: Arc<Cluster>) {
        self.redeem_failures.join(cluster.clone());
        let _ = self.cluster.set(cluster);
    }

    /// Admission of one LLM request: the decision order, steps 2-7, for
    /// `model` with a reservation of `reservation` micro-credits. Through the
    /// cluster when this node is one of several, else from memory.
    pub async fn admit_request(
        self: &Arc<Self>,
        user: &UserEntry,
        key: &KeyEntry,
        model: &str,
        reservation: i64,
        request_id: &str,
    ) -> Result<Ticket, GatewayError> {
        let Some(cluster) = self.cluster.get() else {
            return self.admit(user, key, model, reservation);
        };
        if cluster.health() == Health::Up {
            let mut tries = 0;
            loop {
                match self.admit_in_cluster(cluster, user, key, model, reservation, request_id).await {
                    // A slot another node frees is released right after its
                    // response: a client that sends its next request at once
                    // may beat that release by a few hundred microseconds.
                    Ok(Err(GatewayError::ConcurrencyLimit { .. })) if tries < 2 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    Ok(verdict) => return verdict,
                    Err(()) => break,
                }
            }
        }
        match cluster.config().on_redis_down {
            RedisDown::FailClosed => Err(GatewayError::LimitsUnavailable),
            RedisDown::LocalLimits => self.admit_share(user, key, model, reservation, cluster.config().nodes),
        }
    }

    /// `Err(())`: Redis did not answer (the caller applies the policy).
    async fn admit_in_cluster(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        user: &UserEntry,
        key: &KeyEntry,
        model: &str,
        reservation: i64,
        request_id: &str,
    ) -> Result<Result<Ticket, GatewayError>, ()> {
        let now = self.now_ms();
        let cfg = self.cfg.load();
        let plan = user.active_plan(&cfg, now).map(|(_, p)| p);
        if let Err(e) = limits::check_model(plan, key, model) {
            return Ok(Err(e));
        }
        // The position first: an entry loaded between the two reads is then
        // counted twice (refusing a little early), never missed.
        let position = self.position();
        let st = self.state(user.id);
        let (plan_used, balance) = {
            let mut st = st.lock();
            st.roll_day(self.days.day_of(now));
            (st.plan_used, st.balance)
        };
        let req = AdmitRequest {
            user_id: user.id,
            request_id,
            concurrency: concurrency_of(plan, &cfg),
            rpm: plan.and_then(|p| p.requests_per_minute),
            quota: plan.map(|p| p.daily_quota),
            plan_used,
            day_start_ms: self.days.start_of_day(now),
            balance,
            estimate: reservation,
            position,
            reset_secs: self.days.secs_to_reset(now),
        };
        let admitted = match cluster.admit(&req).await {
            Ok(Ok(a)) => a,
            Ok(Err(refused)) => return Ok(Err(refused)),
            Err(_) => return Err(()),
        };
        let mut st = st.lock();
        st.inflight += 1;
        match admitted.source {
            Source::Plan => st.plan_reserved += admitted.held,
            Source::Credits => st.reserved += admitted.held,
        }
        Ok(Ok(Ticket {
            billing: self.clone(),
            user_id: user.id,
            source: admitted.source,
            reserved: admitted.held,
            balance: admitted.balance,
            plan_remaining: plan.map(|p| (p.daily_quota - admitted.plan_used).max(0)),
            settled: false,
            lease: Some(request_id.to_string()),
        }))
    }

    /// The decision order from this node's memory alone.
    pub fn admit(
        self: &Arc<Self>,
        user: &UserEntry,
        key: &KeyEntry,
        model: &str,
        reservation: i64,
    ) -> Result<Ticket, GatewayError> {
        self.admit_share(user, key, model, reservation, 1)
    }

    /// `admit` with concurrency and requests per minute divided among
    /// `nodes` (rounded up): one node's share while the cluster cannot agree.
    fn admit_share(
        self: &Arc<Self>,
        user: &UserEntry,
        key: &KeyEntry,
        model: &str,
        reservation: i64,
        nodes: u32,
    ) -> Result<Ticket, GatewayError> {
        let now = self.now_ms();
        let cfg = self.cfg.load();
        let plan = user.active_plan(&cfg, now).map(|(_, p)| p);
        limits::check_model(plan, key, model)?;
        let concurrency = concurrency_of(plan, &cfg);
        let st = self.state(user.id);
        let mut st = st.lock();
        if st.inflight >= concurrency.div_ceil(nodes) {
            return Err(GatewayError::ConcurrencyLimit { limit: concurrency });
        }
        let rpm = plan.and_then(|p| p.requests_per_minute);
        if let Some(rpm) = rpm.map(|r| r.div_ceil(nodes)) {
            st.minute.check(now, rpm).map_err(|retry_after| GatewayError::RateLimit { rpm, retry_after })?;
        }
        st.roll_day(self.days.day_of(now));
        let available = st.balance - st.reserved;
        let (source, held) = match plan {
            Some(p) if st.plan_used + st.plan_reserved < p.daily_quota => {
                st.plan_reserved += reservation;
                (Source::Plan, reservation)
            }
            _ if available > 0 => {
                let held = reservation.min(available);
                st.reserved += held;
                (Source::Credits, held)
            }
            Some(_) => return Err(GatewayError::DailyQuotaExhausted { retry_after: self.days.secs_to_reset(now) }),
            // Credits exist but requests in flight hold all of them.
            None if st.balance > 0 => return Err(GatewayError::CreditsHeld),
            None => return Err(GatewayError::InsufficientCredits),
        };
        st.inflight += 1;
        if rpm.is_some() {
            st.minute.record(now, 60_000);
        }
        Ok(Ticket {
            billing: self.clone(),
            user_id: user.id,
            source,
            reserved: held,
            balance: st.balance,
            plan_remaining: plan.map(|p| (p.daily_quota - st.plan_used).max(0)),
            settled: false,
            lease: None,
        })
    }

    /// The user's account now.
    pub fn view(&self, user: &UserEntry) -> AccountView {
        let now = self.now_ms();
        let cfg = self.cfg.load();
        let plan = user.active_plan(&cfg, now).map(|(_, p)| p);
        let st = self.state(user.id);
        let mut st = st.lock();
        st.roll_day(self.days.day_of(now));
        AccountView {
            balance: st.balance,
            spent: st.spent,
            reserved: st.reserved,
            plan_used_today: st.plan_used,
            inflight: st.inflight,
            concurrency_limit: concurrency_of(plan, &cfg),
            next_reset_ms: self.days.next_reset(now),
        }
    }

    /// Refuses a redemption attempt while the user is over the failure limit
    /// (counted on every node of a cluster).
    pub async fn redeem_allowed(&self, user_id: i64) -> Result<(), GatewayError> {
        let check = self.redeem_failures.check(&user_id.to_string(), self.now_ms()).await;
        check.map_err(|retry_after| GatewayError::RedeemThrottled { retry_after })
    }

    pub async fn redeem_failed(&self, user_id: i64) {
        self.redeem_failures.hit(&user_id.to_string(), self.now_ms()).await;
    }

    /// Releases a ticket, charging `cost` (0: nothing to charge).
    fn release(&self, t: &Ticket, cost: i64, now: i64) {
        let st = self.state(t.user_id);
        let mut st = st.lock();
        st.inflight = st.inflight.saturating_sub(1);
        match t.source {
            Source::Plan => {
                st.plan_reserved -= t.reserved;
                // The charge is dated now: it belongs to today's plan usage
                // even if the request started yesterday.
                st.roll_day(self.days.day_of(now));
                st.plan_used += cost;
            }
            Source::Credits => {
                st.reserved -= t.reserved;
                st.balance -= cost;
                st.spent += cost;
            }
        }
    }
}

impl Ticket {
    /// Charges `cost` micro-credits and returns the ledger entry to persist
    /// (`None` when the request cost nothing).
    pub fn settle(mut self, cost: i64, request_id: &str, model: &str) -> Option<LedgerEntry> {
        self.settled = true;
        let now = self.billing.now_ms();
        let cost = cost.max(0);
        self.billing.release(&self, cost, now);
        self.release_lease(cost);
        (cost > 0).then(|| LedgerEntry {
            user_id: self.user_id,
            account: self.source.as_str(),
            amount: -cost,
            kind: "usage",
            reason: model.to_string(),
            reference: request_id.to_string(),
            created_at: now,
        })
    }
}

impl Ticket {
    /// Ends the request's cluster lease, charging `cost` there.
    fn release_lease(&mut self, cost: i64) {
        if let (Some(request_id), Some(c)) = (self.lease.take(), self.billing.cluster.get()) {
            c.release(self.user_id, request_id, self.source, cost);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            let now = self.billing.now_ms();
            self.billing.release(self, 0, now);
            self.release_lease(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Subscription;
    use crate::auth::KeyHash;
    use crate::clock::ManualClock;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z

    fn cfg() -> Arc<Config> {
        let text = r#"
server: {listen: ["127.0.0.1:0"]}
billing: {default_concurrency: 2, max_reservation: 100}
models: [{id: m, price: {input: 1, output: 1}}]
channels: [{name: c, kind: openai, base_url: "http://127.0.0.1:1/v1", api_key: k, models: [m]}]
plans:
  - {id: p, daily_quota: 0.001, concurrency: 3, requests_per_minute: 5, blocked_models: ["x-*"], duration_days: 30}
"#;
        Arc::new(crate::config::parse(text, std::path::Path::new("."), &|_| None).unwrap())
    }

    fn user(plan: bool) -> UserEntry {
        UserEntry {
            id: 7,
            email: "u@x".into(),
            banned: false,
            subscription: plan.then(|| Subscription { plan_id: "p".into(), starts_at: 0, expires_at: T0 + 30 * DAY }),
        }
    }

    fn key() -> KeyEntry {
        KeyEntry {
            id: 1,
            user_id: 7,
            lookup: "l".into(),
            hash: KeyHash([0; 32]),
            name: String::new(),
            active: true,
            expires_at: None,
            allowed_models: None,
        }
    }

    fn billing(clock: Arc<ManualClock>) -> (tempfile::TempDir, Arc<Billing>, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open(dir.path().join("db")).unwrap();
        conn.execute("INSERT INTO users(id, email, created_at) VALUES (7, 'u@x', 0)", ()).unwrap();
        let b = Arc::new(Billing::load(cfg(), clock, &conn).unwrap());
        (dir, b, conn)
    }

    fn topup(b: &Billing, conn: &Connection, amount: i64) {
        let e = store::billing::NewEntry {
            user_id: 7,
            account: crate::store::kinds::Account::Credits,
            amount,
            kind: "topup",
            reason: "",
            reference: "",
            origin: "cli",
        };
        store::billing::insert_ledger(conn, &e).unwrap();
        b.apply_external(conn);
    }

    #[test]
    fn a_start_reads_the_snapshot_and_the_check_corrects_a_wrong_one() {
        let clock = Arc::new(ManualClock::new(T0));
        let (_dir, b, conn) = billing(clock.clone());
        topup(&b, &conn, 5_000);
        assert_eq!(store::snapshot::advance(&conn, 1).unwrap(), 1);
        topup(&b, &conn, 700);
        // The snapshot says 5,000 + 3 through entry 1; entry 2 is newer.
        conn.execute("UPDATE ledger_snapshot SET balance = 5_003 WHERE user_id = 7", ()).unwrap();
        let (b2, check) = Billing::load_checked(cfg(), clock, &conn).unwrap();
        assert_eq!(b2.view(&user(false)).balance, 5_703, "snapshot + the entry after it");
        assert_eq!(check.run(&conn, &b2).unwrap(), 1);
        assert_eq!(b2.view(&user(false)).balance, 5_700, "corrected from the ledger");
        assert_eq!(store::snapshot::load(&conn).unwrap().0[&7].balance, 5_700, "and the snapshot rebuilt");
    }

    #[test]
    fn decision_order_without_plan() {
        let clock = Arc::new(ManualClock::new(T0));
        let (_d, b, conn) = billing(clock);
        let (u, k) = (user(false), key());
        assert_eq!(b.admit(&u, &k, "m", 10).err(), Some(GatewayError::InsufficientCredits));
        topup(&b, &conn, 25);
        let t1 = b.admit(&u, &k, "m", 10).unwrap();
        let t2 = b.admit(&u, &k, "m", 10).unwrap();
        assert_eq!(t1.source, Source::Credits);
        // Concurrency (default 2) comes before money.
        assert_eq!(b.admit(&u, &k, "m", 1).err(), Some(GatewayError::ConcurrencyLimit { limit: 2 }));
        assert!(t1.settle(4, "r1", "m").is_some());
        // 25 - 4 = 21 balance, 10 still reserved: 11 available, so a request
        // estimated at 12 is served and holds the 11.
        let t3 = b.admit(&u, &k, "m", 12).unwrap();
        assert_eq!(t3.reserved, 11);
        drop(t2); // released without a charge
                  // It cost 15, 4 more than it held: the balance goes to 21 - 15 = 6.
        t3.settle(15, "r3", "m");
        let v = b.view(&u);
        assert_eq!((v.balance, v.reserved, v.inflight), (6, 0, 0));
    }

    #[test]
    fn plan_first_then_credits_then_quota_error_and_daily_reset() {
        let clock = Arc::new(ManualClock::new(T0));
        let (_d, b, conn) = billing(clock.clone());
        let (u, k) = (user(true), key());
        // Quota is 0.001 credits = 1000 micro.
        let t = b.admit(&u, &k, "m", 50).unwrap();
        assert_eq!((t.source, t.plan_remaining), (Source::Plan, Some(1000)));
        let entry = t.settle(1000, "r1", "m").unwrap();
        assert_eq!((entry.account, entry.amount), ("plan", -1000));
        // Plan used up, no credits: 429 with seconds to 00:00 UTC.
        let e = b.admit(&u, &k, "m", 50).err().unwrap();
        assert_eq!(e, GatewayError::DailyQuotaExhausted { retry_after: 6400 });
        // With credits the request is served on credits instead.
        topup(&b, &conn, 500);
        let t = b.admit(&u, &k, "m", 50).unwrap();
        assert_eq!(t.source, Source::Credits);
        drop(t);
        // Blocked model on the plan.
        assert!(matches!(b.admit(&u, &k, "x-large", 1), Err(GatewayError::ModelNotAllowed { .. })));
        // Next day: the plan serves again.
        clock.advance(6_400_000);
        let t = b.admit(&u, &k, "m", 50).unwrap();
        assert_eq!((t.source, t.plan_remaining), (Source::Plan, Some(1000)));
    }

    #[test]
    fn small_balances_are_served_and_overdraw_is_bounded() {
        let clock = Arc::new(ManualClock::new(T0));
        let (_d, b, conn) = billing(clock);
        let (u, k) = (user(false), key());
        // 0.30 credits; each request may cost up to 0.48 (Claude Code's
        // max_tokens on sonnet). The first is admitted holding everything.
        topup(&b, &conn, 300_000);
        let t1 = b.admit(&u, &k, "m", 480_000).unwrap();
        assert_eq!((t1.source, t1.reserved), (Source::Credits, 300_000));
        // The second (concurrency 2 allows it) finds nothing available.
        assert_eq!(b.admit(&u, &k, "m", 480_000).err(), Some(GatewayError::CreditsHeld));
        // Worst case: it costs its whole estimate. The overdraw is the
        // estimate minus what it held.
        t1.settle(480_000, "r1", "m");
        assert_eq!(b.view(&u).balance, -180_000);
        assert_eq!(b.admit(&u, &k, "m", 1).err(), Some(GatewayError::InsufficientCredits));
    }

    #[test]
    fn requests_per_minute() {
        let clock = Arc::new(ManualClock::new(T0));
        let (_d, b, _conn) = billing(clock.clone());
        let (u, k) = (user(true), key());
        for _ in 0..5 {
            b.admit(&u, &k, "m", 1).unwrap().settle(0, "r", "m");
        }
        assert_eq!(b.admit(&u, &k, "m", 1).err(), Some(GatewayError::RateLimit { rpm: 5, retry_after: 60 }));
        clock.advance(60_001);
        assert!(b.admit(&u, &k, "m", 1).is_ok());
    }

    #[test]
    fn restart_reloads_balance_and_todays_plan_usage() {
        let clock = Arc::new(ManualClock::new(T0));
        let (_d, b, conn) = billing(clock.clone());
        topup(&b, &conn, 1_000);
        let now = clock.now_ms();
        // Yesterday's plan usage must not count today.
        conn.execute(
            "INSERT INTO ledger(user_id, account, amount, kind, origin, created_at) VALUES (7, 'plan', -900, 'usage', 'gateway', ?1), (7, 'plan', -100, 'usage', 'gateway', ?2), (7, 'credits', -30, 'usage', 'gateway', ?2)",
            [now - DAY, now],
        )
        .unwrap();
        let b2 = Billing::load(cfg(), clock, &conn).unwrap();
        let v = b2.view(&user(true));
        assert_eq!((v.balance, v.plan_used_today), (970, 100));
    }

    #[tokio::test]
    async fn redeem_guard() {
        let clock = Arc::new(ManualClock::new(T0));
        let (_d, b, _conn) = billing(clock.clone());
        for _ in 0..10 {
            assert!(b.redeem_allowed(7).await.is_ok());
            b.redeem_failed(7).await;
        }
        assert_eq!(b.redeem_allowed(7).await.err(), Some(GatewayError::RedeemThrottled { retry_after: 600 }));
        clock.advance(600_001);
        assert!(b.redeem_allowed(7).await.is_ok());
    }
}
