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
//! - `store`: SQLite schema, queries and the batched writer;
//! - `access_log`, `usage`, `sse`: logging, token accounting, SSE framing;
//! - `server`, `listen`, `shutdown`: process wiring;
//! - `web`: the website beside `/v1`: public docs and the user console;
//! - `payments`: orders and the payment providers (Stripe, EPay);
//! - `fake_upstream`: the scriptable fake OpenAI/Anthropic server;
//! - `cli`: the command line.

pub mod access_log;
pub mod accounts;
pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod billing;
pub mod channels;
pub mod cli;
pub mod config;
pub mod convert;
pub mod error;
pub mod fake_upstream;
pub mod limits;
pub mod listen;
pub mod payments;
pub mod proxy;
pub mod server;
pub mod shutdown;
pub mod sse;
pub mod store;
pub mod traffic;
pub mod usage;
pub mod web;
