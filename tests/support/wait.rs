//! Reading counts from ClickHouse and polling them until they reach a value.
//!
//! Include with `#[path = "support/wait.rs"] mod wait;`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// The single `UInt64` that `sql` (a count) returns; panics naming the query on error.
pub async fn count(client: &clickhouse::Client, sql: &str) -> u64 {
    client
        .query(sql)
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Polls `sql` (a count) until it equals `expected` (never sleeps a fixed time and
/// hopes). Panics at once when the count passes `expected`, and with the last value
/// when `deadline` has elapsed.
pub async fn wait_for_count(
    client: &clickhouse::Client,
    sql: &str,
    expected: u64,
    deadline: Duration,
) {
    let start = Instant::now();
    loop {
        let n = count(client, sql).await;
        if n == expected {
            return;
        }
        assert!(
            n < expected,
            "{sql}: {n} rows, more than the {expected} expected"
        );
        assert!(
            start.elapsed() < deadline,
            "{sql}: {n} rows after {deadline:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
