//! Stage 1, the socket: listeners and the HTTP vocabulary every service shares.
//!
//! Owns the accept loop (HTTP/1.1 keep-alive and h2c on one port), the limits that
//! keep a public edge standing (connections, requests in flight, header, body and
//! keep-alive timeouts, HTTP/2 flood limits), graceful shutdown, and the small pieces
//! each handler would otherwise write again: reading a body within a limit and
//! building plain-text and JSON answers, and serving static files from memory
//! (ETag, conditional GET, precompressed codings: [`asset`]).
//!
//! Receives: TCP connections. Hands on: each request to a [`server::Handler`] chosen
//! by the caller (the ingestion routes in `app::ingest`, later the stats API), with
//! the TCP peer for client-address resolution only. Knows nothing about hits.

pub mod asset;
pub mod body;
pub mod ratelimit;
pub mod response;
pub mod server;
