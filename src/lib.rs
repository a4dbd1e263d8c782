//! hush: a privacy-respecting web analytics collector.
//!
//! The tree follows a hit from the socket to ClickHouse, one folder per stage. A stage
//! uses the stages before it and the shared modules, never one after it
//! (`tests/layout.rs` checks every `crate::` path):
//!
//! ```text
//! beacon ─▶ http      accept loop, limits, timeouts, body and response helpers
//!        ─▶ collect   body → IncomingEvent, client address truncated, site resolved
//!        ─▶ enrich    → EventRow: UA, page URL, referrer, geo, salt + visitor id, visit
//!        ─▶ pipeline  RowBinary once, disk spool or memory queue, writer → ClickHouse
//!        ─▶ store     schema migrations, retention purge, data-subject requests
//!        ─▶ query     (read side) Stats API requests validated, answered from ClickHouse
//! ```
//!
//! The dashboard lands after `query`.
//!
//! Shared by every stage: [`config`] (load and validate), [`db`] (the ClickHouse
//! client and its request bounds), [`metrics`], [`logging`], [`token`] (admin tokens),
//! [`clock`] (Unix seconds) and [`hex`].
//!
//! Assembly, which may use everything: [`app`] (`hush serve`: wiring, and the Events
//! API handler that runs a hit through the stages), [`admin`] (the admin API), [`cli`]
//! (subcommands: clap types end there; library functions take plain values).

// Assembly.
pub mod admin;
pub mod app;
pub mod cli;

// Shared.
pub mod clock;
pub mod config;
pub mod db;
pub mod hex;
pub mod logging;
pub mod metrics;
pub mod token;

// Stages (their order is in the crate doc above).
pub mod collect;
pub mod enrich;
pub mod http;
pub mod pipeline;
pub mod query;
pub mod store;
