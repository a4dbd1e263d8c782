//! Tells the test binaries whether they run against an external ClickHouse.
//!
//! With `CLICKHOUSE_URL` set, tests use that server; the few that need a ClickHouse of
//! their own to stop, kill or freeze cannot, and carry
//! `#[cfg_attr(hush_external_clickhouse, ignore = "...")]`, so the test summary reports
//! them as ignored instead of passing them without running. The variable is read at
//! build time, and `cargo test` rebuilds when it changes.

fn main() {
    println!("cargo::rerun-if-env-changed=CLICKHOUSE_URL");
    println!("cargo::rustc-check-cfg=cfg(hush_external_clickhouse)");
    if std::env::var("CLICKHOUSE_URL").is_ok_and(|url| !url.trim().is_empty()) {
        println!("cargo::rustc-cfg=hush_external_clickhouse");
    }
}
