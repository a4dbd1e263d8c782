//! Stage 5, the store: what hush does to its own data once it is in ClickHouse.
//!
//! Owns the schema ([`migrate`]: `schema/NNNN_name.sql`, embedded, applied in order,
//! checksummed), the retention purge ([`purge`]: per-site cutoffs, partition drops
//! and deletes, the lease that keeps instances from purging at once, the daily
//! scheduler and the `purge_log` audit trail), data-subject requests ([`dsr`]:
//! export, erasure and site deletion by selector, every value a bound parameter),
//! which also reach the rows kept outside ClickHouse, in the spool's `quarantine/`
//! ([`quarantine`]: dead letters and corrupt regions, expired and erased), and demo
//! traffic written straight into `events` ([`demo`]).
//!
//! Receives: a ClickHouse client from [`crate::db`] and plain values (selectors,
//! options, the configuration); never command-line or HTTP types, which stay in
//! `cli` and `admin`. Hands on: rows (exports), reports and `purge_log` records. The
//! read side (`query`, then `dashboard`) comes after this stage.

pub mod demo;
pub mod dsr;
pub mod migrate;
pub mod purge;
pub mod quarantine;
pub mod sessions;

use std::time::Duration;

use crate::config::Config;

/// The bounds of the store's ClickHouse requests: every call is wrapped in
/// [`crate::db::timed`] with one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Counts, selects, audit-log inserts, lease rows, metadata changes
    /// (`clickhouse.request_timeout_ms`).
    pub query: Duration,
    /// One deleting statement that waits for ClickHouse to finish it (a mutation with
    /// `mutations_sync = 2`, a synchronous lightweight delete, a partition drop):
    /// `retention.mutation_timeout_ms`. When it expires the statement may still be
    /// running in ClickHouse; the caller reports an error and the count that follows
    /// every deletion (in this or the next run) tells what is left.
    pub mutation: Duration,
}

impl Timeouts {
    pub fn from_config(config: &Config) -> Self {
        Self {
            query: crate::db::request_timeout(&config.clickhouse),
            mutation: Duration::from_millis(config.retention.mutation_timeout_ms),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}
