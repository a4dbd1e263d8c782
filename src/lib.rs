//! hush: a privacy-respecting web analytics collector.

pub mod config;
pub mod event;
