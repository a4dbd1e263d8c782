//! hush: a privacy-respecting web analytics collector.

pub mod admin;
pub mod client_ip;
pub mod config;
pub mod dsr;
pub mod event;
pub mod geo;
pub mod hit;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod page_url;
pub mod purge;
pub mod referrer;
pub mod salt;
pub mod server;
pub mod session;
pub mod sites;
pub mod store;
pub mod token;
pub mod ua;
pub mod visitor;
pub mod writer;
pub mod app;
pub mod cli;
pub mod enrich;
pub mod ingest;
