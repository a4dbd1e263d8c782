//! Stage 5, the store: what hush does to its own data once it is in ClickHouse.
//!
//! Owns the schema ([`migrate`]: `schema/NNNN_name.sql`, embedded, applied in order,
//! checksummed), the retention purge ([`purge`]: per-site cutoffs, partition drops
//! and deletes, the lease that keeps instances from purging at once, the daily
//! scheduler and the `purge_log` audit trail), and data-subject requests ([`dsr`]:
//! export, erasure and site deletion by selector, every value a bound parameter).
//!
//! Receives: a ClickHouse client from [`crate::db`] and plain values (selectors,
//! options, the configuration); never command-line or HTTP types, which stay in
//! `cli` and `admin`. Hands on: rows (exports), reports and `purge_log` records. The
//! read side (`query`, then `dashboard`) comes after this stage.

pub mod dsr;
pub mod migrate;
pub mod purge;
