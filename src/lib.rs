//! codex-proxy: an LLM API gateway on Pingora. Clients speak the OpenAI or
//! Anthropic APIs with `codex_…` keys; the gateway authenticates, meters and
//! limits them per account and forwards to upstream channels.
//!
//! Module map (one concern each):
//! - `config`: the YAML file, interpolation, validation;
//! - `api`: endpoints, error shapes, request bodies, `/v1/models`;
//! - `auth`, `accounts`: keys and the in-memory account state;
//! - `channels`: upstreams, their addresses and selection;
//! - `convert`: response relays (pass-through and translation);
//! - `proxy`: the Pingora hooks and the upstream exchange;
//! - `store`: the schema (SQLite or PostgreSQL), queries and the batched writer;
//! - `access_log`, `usage`, `sse`: logging, token accounting, SSE framing;
//! - `server`, `listen`, `shutdown`: process wiring;
//! - `connections`: per-address connection limits and the request-head deadline;
//! - `cluster`: limits shared by several nodes through Redis;
//! - `throttle`: attempt counters (sign-in, sign-up, redemption failures);
//! - `reload`: re-reading the YAML file into a running gateway;
//! - `upgrade`: handing the listeners to a new binary on SIGUSR2, and sd_notify;
//! - `tls`: the listeners' certificates (swapped on reload);
//! - `metrics`: Prometheus counters and their `/metrics` text;
//! - `clock`: the one source of the current time, and billing days;
//! - `web`: the website beside `/v1`: public docs and the user console;
//! - `payments`: orders and the payment providers (Stripe, EPay);
//! - `fake_upstream`: the scriptable fake OpenAI/Anthropic server;
//! - `cli`: the command line.
//!
//! Only what the binary, the examples and the black-box tests use is public:
//! `cli`, `clock`, `config`, `convert`, `api`, `payments`, `fake_upstream`,
//! and `storage`, the store's connection over either backend.

pub(crate) mod access_log;
pub(crate) mod accounts;
pub(crate) mod admin;
pub mod api;
pub(crate) mod app;
pub(crate) mod auth;
pub(crate) mod billing;
pub(crate) mod channels;
pub mod cli;
pub mod clock;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod connections;
pub mod convert;
pub(crate) mod error;
pub mod fake_upstream;
pub(crate) mod limits;
pub(crate) mod listen;
pub(crate) mod metrics;
pub mod payments;
pub(crate) mod proxy;
pub(crate) mod reload;
pub(crate) mod server;
pub(crate) mod shutdown;
pub(crate) mod sse;
pub(crate) mod store;

/// The store's connection over either backend, as the black-box tests read
/// a gateway's database.
pub mod storage {
    pub use crate::store::db::{Connection, Database, PgTarget, Value};
    pub use crate::store::{open, StoreError};
}
pub(crate) mod throttle;
pub(crate) mod tls;
pub(crate) mod traffic;
pub(crate) mod upgrade;
pub(crate) mod usage;
pub(crate) mod web;
