//! The retention setup the purge tests share: sites with retentions of their own in
//! three time zones, the "now" of every purge run, and the bounds of store calls.
//!
//! Include with `#[path = "support/retention.rs"] mod retention;`.
#![allow(dead_code)]

use std::time::Duration;

use hush::store::Timeouts;
use hush::store::purge::{LogProgress, PurgeOptions, PurgeReport, Purger};
use jiff::Timestamp;

/// Bounds of every store call in these tests: generous, they only stop a hang.
pub const T: Timeouts = Timeouts {
    query: Duration::from_secs(60),
    mutation: Duration::from_secs(600),
};

/// Retention 395 days by default (at most 1100); `utc.example` 30 days in UTC,
/// `tokyo.example` 400 in Asia/Tokyo, `la.example` 800 in America/Los_Angeles.
pub const SITES_TOML: &str = r#"
[retention]
default_days = 395
max_days = 1100

[[sites]]
domain = "utc.example"
retention_days = 30
timezone = "UTC"

[[sites]]
domain = "tokyo.example"
retention_days = 400
timezone = "Asia/Tokyo"

[[sites]]
domain = "la.example"
retention_days = 800
timezone = "America/Los_Angeles"
"#;

/// "Now" of every purge in these tests: 2025-06-15 10:00 UTC.
pub fn now() -> Timestamp {
    "2025-06-15T10:00:00Z".parse().unwrap()
}

/// The options of a purge run at [`now`] by the actor `test`.
pub fn options(dry_run: bool) -> PurgeOptions {
    PurgeOptions {
        now: now(),
        dry_run,
        actor: "test".into(),
    }
}

/// One purge run at [`now`], logging its progress.
pub async fn run_at_now(purger: &Purger, dry_run: bool) -> PurgeReport {
    purger.run(&options(dry_run), &LogProgress).await.unwrap()
}
