//! Tells the test binaries whether they run against an external ClickHouse.
//!
//! With `CLICKHOUSE_URL` set, tests use that server; the few that need a ClickHouse of
//! their own to stop, kill or freeze cannot, and carry
//! `#[cfg_attr(hush_external_clickhouse, ignore = "...")]`, so the test summary reports
//! them as ignored instead of passing them without running. The variable is read at
//! build time, and `cargo test` rebuilds when it changes.
//!
//! `hush_external_clickhouse_tls` is set as well when that URL is not plain HTTP: a
//! test that puts a TCP relay of its own in front of ClickHouse (to cut the network)
//! runs against an external `http://` server, but not against `https://` (the
//! certificate names the server, not the relay), and is ignored then.

fn main() {
    println!("cargo::rerun-if-env-changed=CLICKHOUSE_URL");
    println!("cargo::rustc-check-cfg=cfg(hush_external_clickhouse)");
    println!("cargo::rustc-check-cfg=cfg(hush_external_clickhouse_tls)");
    if let Ok(url) = std::env::var("CLICKHOUSE_URL")
        && !url.trim().is_empty()
    {
        println!("cargo::rustc-cfg=hush_external_clickhouse");
        if !url.trim().starts_with("http://") {
            println!("cargo::rustc-cfg=hush_external_clickhouse_tls");
        }
    }
}
