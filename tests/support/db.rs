//! A fresh database with hush's schema and a `Config` pointing at it, and inserting
//! `EventRow`s into it directly, for tests that drive library code (not the binary).
//!
//! Include with `#[path = "support/db.rs"] mod db;` next to `mod support;`.
#![allow(dead_code)]

use clickhouse::Client;
use hush::config::Config;
use hush::enrich::row::EventRow;

use super::support;

/// Parses `toml`, points its `[clickhouse]` at a fresh database (named from `prefix`)
/// on the test ClickHouse, applies every migration, and returns the config with a
/// client for that database.
pub async fn migrated_config(prefix: &str, toml: &str) -> (Config, Client) {
    let ch = support::clickhouse();
    let db = ch.fresh_database(prefix).await;
    let mut config = Config::from_toml_str(toml).unwrap();
    config.clickhouse.url = ch.url().to_owned();
    config.clickhouse.user = ch.user().to_owned();
    config.clickhouse.password = ch.password().to_owned();
    config.clickhouse.database = db.clone();
    hush::store::migrate::run(&config.clickhouse).await.unwrap();
    (config, ch.client(&db))
}

/// Inserts `rows` into `events` in one insert.
pub async fn insert_events(client: &Client, rows: &[EventRow]) {
    let mut insert = client.insert::<EventRow>("events").await.unwrap();
    for r in rows {
        insert.write(r).await.unwrap();
    }
    insert.end().await.unwrap();
}

/// The database `client` works in.
pub async fn current_database(client: &Client) -> String {
    client
        .query("SELECT currentDatabase()")
        .fetch_one::<String>()
        .await
        .unwrap()
}

/// Noon (UTC) of yesterday, as a row timestamp: inside every period that ends today.
pub fn yesterday_noon() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ((now / 86_400 - 1) * 86_400 + 43_200) as u32
}
