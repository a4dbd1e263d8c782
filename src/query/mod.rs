//! Stage 6, the read side: Plausible-compatible stats queries answered from ClickHouse.
//!
//! Owns the Stats API v2 request grammar and its rules ([`request`]: which metric goes
//! with which dimension or filter, every size bounded) and the JSON schema published
//! from the same definitions ([`schema`]), and date ranges resolved in the site's time
//! zone with their comparison periods and time buckets ([`period`]). The legacy v1
//! parameters become the same query ([`v1`]). A validated query becomes one bound-
//! parameter statement per period ([`sql`]), run under the stats caps and shaped into
//! Plausible's response ([`engine`]); display names come from [`names`].
//!
//! Receives: a request body and the site's configuration. Hands on: the response
//! JSON. Knows nothing of HTTP: the routes that answer with it parse the request and
//! map [`request::QueryError`] to a 400 and [`engine::EngineError`] to its status.

pub mod dropped;
pub mod engine;
pub mod names;
pub mod period;
pub mod request;
pub mod schema;
mod sessions;
pub mod sql;
pub mod v1;
