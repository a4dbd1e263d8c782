//! Insert throughput through scripts/local-clickhouse: 1M rows of the hush
//! event shape (30 columns) in 10k-row batches, with LZ4 and without.
//!
//!     cargo bench --bench launcher_insert
//!
//! Starts its own launcher on a temporary data dir (or uses CLICKHOUSE_URL).
//! Compare with `scripts/.venv/bin/python benches/chdb_inprocess_insert.py`,
//! which inserts the same shape straight into chDB in-process.
//! ROWS / BATCH override the defaults.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use clickhouse::{Client, Compression, Row};
use serde::Serialize;

#[derive(Row, Serialize)]
struct Event {
    ts: u32,
    site_id: String,
    hostname: String,
    event_name: String,
    visitor_id: u64,
    session_id: u64,
    pathname: String,
    referrer: String,
    referrer_source: String,
    utm_source: String,
    utm_medium: String,
    utm_campaign: String,
    utm_content: String,
    utm_term: String,
    country: [u8; 2],
    region: String,
    city: String,
    browser: String,
    browser_version: String,
    os: String,
    os_version: String,
    device: String,
    screen_width: u16,
    screen_height: u16,
    is_bounce: u8,
    duration_ms: u32,
    revenue: u64,
    props: Vec<(String, String)>,
    entry_page: String,
    exit_page: String,
}

const DDL: &str = "CREATE TABLE events (
    ts DateTime, site_id LowCardinality(String), hostname LowCardinality(String),
    event_name LowCardinality(String), visitor_id UInt64, session_id UInt64,
    pathname String, referrer String, referrer_source LowCardinality(String),
    utm_source LowCardinality(String), utm_medium LowCardinality(String),
    utm_campaign LowCardinality(String), utm_content String, utm_term String,
    country FixedString(2), region LowCardinality(String), city LowCardinality(String),
    browser LowCardinality(String), browser_version LowCardinality(String),
    os LowCardinality(String), os_version LowCardinality(String), device LowCardinality(String),
    screen_width UInt16, screen_height UInt16, is_bounce UInt8, duration_ms UInt32,
    revenue UInt64, props Map(String, String), entry_page String, exit_page String
) ENGINE = MergeTree PARTITION BY toYYYYMM(ts) ORDER BY (site_id, toDate(ts), visitor_id)";

fn event(i: u64) -> Event {
    // Cheap deterministic mixing so values vary like real traffic.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let pick =
        |list: &[&str], salt: u64| list[((h >> salt) % list.len() as u64) as usize].to_owned();
    Event {
        ts: 1_735_689_600 + (i / 10) as u32,
        site_id: format!("site-{}", h % 20),
        hostname: format!("www.example{}.org", h % 20),
        event_name: pick(&["pageview", "pageview", "pageview", "signup", "click"], 3),
        visitor_id: h,
        session_id: h ^ 0x5555,
        pathname: format!("/blog/{}/post-{}", h % 50, h % 5000),
        referrer: format!("https://news{}.example.com/item?id={}", h % 30, h % 100_000),
        referrer_source: pick(&["Google", "Direct", "Hacker News", "Twitter", "Bing"], 7),
        utm_source: pick(&["", "", "newsletter", "twitter"], 11),
        utm_medium: pick(&["", "email", "social"], 13),
        utm_campaign: pick(&["", "spring", "launch"], 17),
        utm_content: String::new(),
        utm_term: String::new(),
        country: *[b"DE", b"FR", b"US", b"GB", b"NL"][(h % 5) as usize],
        region: pick(&["DE-BE", "FR-IDF", "US-CA", "GB-ENG", "NL-NH"], 19),
        city: pick(
            &["Berlin", "Paris", "San Francisco", "London", "Amsterdam"],
            23,
        ),
        browser: pick(&["Firefox", "Chrome", "Safari", "Edge"], 29),
        browser_version: pick(&["128", "131", "18.1", "130"], 31),
        os: pick(&["Linux", "Windows", "macOS", "iOS", "Android"], 37),
        os_version: pick(&["", "11", "14.5", "17"], 41),
        device: pick(&["Desktop", "Mobile", "Tablet"], 43),
        screen_width: [1920, 1440, 390, 768][(h % 4) as usize],
        screen_height: [1080, 900, 844, 1024][(h % 4) as usize],
        is_bounce: (h % 2) as u8,
        duration_ms: (h % 600_000) as u32,
        revenue: if h.is_multiple_of(50) { h % 10_000 } else { 0 },
        props: if h.is_multiple_of(3) {
            vec![
                ("plan".into(), format!("p{}", h % 4)),
                ("ab".into(), "b".into()),
            ]
        } else {
            Vec::new()
        },
        entry_page: format!("/blog/{}", h % 50),
        exit_page: format!("/blog/{}/post-{}", h % 50, h % 5000),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(client: &Client, batch: &[Event], batches: u64) -> f64 {
    let started = Instant::now();
    for _ in 0..batches {
        let mut insert = client.insert::<Event>("events").await.expect("insert");
        for row in batch {
            insert.write(row).await.expect("write");
        }
        insert.end().await.expect("end");
    }
    started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let rows = env_u64("ROWS", 1_000_000);
    let batch_rows = env_u64("BATCH", 10_000);
    let batches = rows / batch_rows;
    let ch = support::clickhouse();
    println!(
        "launcher_insert: {} rows in {batches} batches of {batch_rows}, via {}",
        batches * batch_rows,
        ch.url()
    );
    // Rows are built once, outside the timed loop: this measures transport
    // and engine, not the generator.
    let batch: Vec<Event> = (0..batch_rows).map(event).collect();

    for (name, compression) in [("lz4", Compression::Lz4), ("none", Compression::None)] {
        let db = ch.fresh_database("bench").await;
        let client = ch.client(&db).with_compression(compression);
        client.query(DDL).execute().await.expect("create table");
        // Warm-up batch (schema lookup, first part), not timed.
        run(&client, &batch, 1).await;
        let secs = run(&client, &batch, batches).await;
        let total: u64 = client
            .query("SELECT count() FROM events")
            .fetch_one()
            .await
            .expect("count");
        assert_eq!(total, (batches + 1) * batch_rows, "rows lost");
        let inserted = batches * batch_rows;
        println!(
            "compression={name:<4} rows={inserted} seconds={secs:.2} rows_per_sec={:.0}",
            inserted as f64 / secs
        );
    }
}
