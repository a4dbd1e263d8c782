//! hush: a privacy-respecting web analytics collector.

pub mod admin;
pub mod client_ip;
pub mod config;
pub mod dsr;
pub mod event;
pub mod logging;
pub mod metrics;
pub mod page_url;
pub mod purge;
pub mod referrer;
pub mod server;
pub mod token;
pub mod ua;
