//! Stage 6, the read side: Plausible-compatible stats queries answered from ClickHouse.
//!
//! Owns the Stats API v2 request grammar and its rules ([`request`]: which metric goes
//! with which dimension or filter, every size bounded) and the JSON schema published
//! from the same definitions ([`schema`]), and date ranges resolved in the site's time
//! zone with their comparison periods and time buckets ([`period`]). The legacy v1
//! parameters become the same query ([`v1`]).
//!
//! Receives: a request body and the site's configuration. Hands on: a validated
//! [`request::Query`]. Knows nothing of HTTP: the routes that answer with it parse the
//! request and map [`request::QueryError`] to a 400.

pub mod period;
pub mod request;
pub mod schema;
pub mod v1;
