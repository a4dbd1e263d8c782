//! `hush::pipeline::rowbinary::encode_event` against a real ClickHouse: rows inserted from its
//! bytes and the same rows inserted through the `clickhouse` crate's own serializer
//! must be stored identically, and ClickHouse must give back exactly our bytes when
//! asked for the table in RowBinary.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use hush::config::ClickHouseConfig;
use hush::enrich::row::EventRow;
use hush::pipeline::rowbinary::{encode_event, encoded_len};

fn base(visitor_id: u64) -> EventRow {
    EventRow {
        site: Arc::from("example.com"),
        timestamp: 1_735_689_600 + (visitor_id % 1_000) as u32,
        name: "pageview".into(),
        visitor_id,
        session_id: visitor_id.wrapping_mul(31),
        entry_page: "/".into(),
        hostname: "example.com".into(),
        pathname: "/blog/post".into(),
        referrer_host: "www.google.com".into(),
        referrer_path: "/search".into(),
        source: "Google".into(),
        channel: "search",
        browser: Arc::from("Firefox"),
        browser_version: Arc::from("133.0"),
        os: Arc::from("Linux"),
        device: "desktop",
        country: *b"DE",
        region: "BE".into(),
        city_geoname_id: 2_950_159,
        city: "Berlin".into(),
        ..EventRow::default()
    }
}

/// Rows covering the encodings' edge cases; `visitor_id` orders them.
fn rows() -> Vec<EventRow> {
    let mut rows = Vec::new();

    // Everything empty, zero or unknown.
    let mut r = base(1);
    r.site = Arc::from("");
    r.timestamp = 0;
    r.name = String::new();
    r.session_id = 0;
    r.entry_page = "".into();
    r.hostname = String::new();
    r.pathname = String::new();
    r.referrer_host = String::new();
    r.referrer_path = String::new();
    r.source = String::new();
    r.channel = "";
    r.browser = Arc::from("");
    r.browser_version = Arc::from("");
    r.os = Arc::from("");
    r.device = "";
    r.country = [0, 0];
    r.region = String::new();
    r.city_geoname_id = 0;
    r.city = String::new();
    r.interactive = 0;
    rows.push(r);

    // Lengths around the LEB128 boundaries: 127/128 (1 -> 2 bytes), 16383/16384 (2 -> 3).
    let mut r = base(2);
    r.pathname = "p".repeat(127);
    r.entry_page = "e".repeat(128).into();
    r.referrer_path = "r".repeat(16_383);
    r.utm_term = "t".repeat(16_384);
    r.utm_content = "c".repeat(100_000);
    rows.push(r);

    // Unicode everywhere, control characters, and a revenue.
    let mut r = base(3);
    r.site = Arc::from("bücher.example");
    r.name = "Kauf abgeschlossen ✓".into();
    r.pathname = "/straße/日本語/😀".into();
    r.utm_campaign = "кампания 🚀".into();
    r.utm_source = "tab\there, \"quotes\", back\\slash, nul\0byte, newline\n".into();
    r.city = "São Paulo".into();
    r.region = "SP".into();
    r.country = *b"BR";
    r.revenue_micros = Some(19_990_000);
    r.revenue_currency = "BRL".into();
    r.props = vec![("ключ".into(), "значение 🎉".into())];
    rows.push(r);

    // Extreme numbers and a large props map (insertion order and duplicates kept).
    let mut r = base(u64::MAX);
    r.timestamp = u32::MAX;
    r.session_id = u64::MAX;
    r.city_geoname_id = u32::MAX;
    r.engagement_ms = u32::MAX;
    r.scroll_depth = 100;
    r.interactive = 255;
    r.revenue_micros = Some(i64::MIN);
    r.props = (0..200)
        .map(|i| (format!("key{i:03}"), "v".repeat(i * 11)))
        .chain([("dup".into(), "1".into()), ("dup".into(), "2".into())])
        .collect();
    rows.push(r);

    for (id, revenue) in [(4u64, Some(0)), (5, Some(i64::MAX)), (6, Some(-1))] {
        let mut r = base(id);
        r.name = "purchase".into();
        r.revenue_micros = revenue;
        r.revenue_currency = "EUR".into();
        r.props = vec![(String::new(), String::new())];
        r.country = [b'Z', 0];
        rows.push(r);
    }
    rows.sort_by_key(|r| r.visitor_id);
    rows
}

fn encode_all(rows: &[EventRow]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        let before = out.len();
        encode_event(r, &mut out);
        assert_eq!(out.len() - before, encoded_len(r));
    }
    out
}

async fn setup(prefix: &str) -> (clickhouse::Client, String) {
    let ch = support::clickhouse();
    let db = ch.fresh_database(prefix).await;
    let cfg = ClickHouseConfig {
        url: ch.url().into(),
        user: ch.user().into(),
        password: ch.password().into(),
        database: db.clone(),
        ..ClickHouseConfig::default()
    };
    hush::store::migrate::run(&cfg).await.expect("migrations");
    (ch.client(&db), db)
}

async fn insert_raw(client: &clickhouse::Client, table: &str, body: Vec<u8>, token: &str) {
    let mut insert = client
        .insert_formatted_with(format!("INSERT INTO {table} FORMAT RowBinary"))
        .with_setting("insert_deduplication_token", token);
    insert
        .send(Bytes::from(body))
        .await
        .expect("send RowBinary");
    insert.end().await.expect("end RowBinary insert");
}

async fn dump(client: &clickhouse::Client, table: &str, format: &str) -> Bytes {
    client
        .query(&format!("SELECT * FROM {table} ORDER BY visitor_id"))
        .fetch_bytes(format)
        .expect("query")
        .collect()
        .await
        .expect("read dump")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoder_matches_the_clickhouse_crate() {
    let (client, _db) = setup("rowbinary").await;
    client
        .query("CREATE TABLE events_crate AS events")
        .execute()
        .await
        .expect("create events_crate");
    let rows = rows();

    let ours = encode_all(&rows);
    insert_raw(&client, "events", ours.clone(), "rowbinary-test").await;

    let mut insert = client
        .insert::<EventRow>("events_crate")
        .await
        .expect("insert");
    for r in &rows {
        insert.write(r).await.expect("write row");
    }
    insert.end().await.expect("end insert");

    let count: u64 = client
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(count, rows.len() as u64);

    // Stored identically ...
    let via_ours = dump(&client, "events", "JSONEachRow").await;
    let via_crate = dump(&client, "events_crate", "JSONEachRow").await;
    assert_eq!(
        String::from_utf8_lossy(&via_ours),
        String::from_utf8_lossy(&via_crate)
    );
    // ... and ClickHouse's own RowBinary of either table is byte for byte ours.
    assert_eq!(dump(&client, "events", "RowBinary").await, ours);
    assert_eq!(dump(&client, "events_crate", "RowBinary").await, ours);

    // Spot checks that the comparison saw real values, not two empty tables.
    let (paths, props, nulls): (u64, u64, u64) = client
        .query(
            "SELECT sum(length(utm_content)), sum(length(props)), countIf(revenue_micros IS NULL) \
             FROM events",
        )
        .fetch_one()
        .await
        .expect("spot check");
    assert_eq!(paths, 100_000);
    assert_eq!(props, 202 + 1 + 3);
    assert_eq!(
        nulls,
        rows.iter().filter(|r| r.revenue_micros.is_none()).count() as u64
    );
}

/// The spool's exactly-once delivery rests on this: a batch inserted again with the
/// same `insert_deduplication_token` is dropped, a different token is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_with_the_same_token_is_dropped() {
    let (client, _db) = setup("rowbinary_dedup").await;
    let rows = rows();
    let body = encode_all(&rows);
    insert_raw(&client, "events", body.clone(), "spool-1-16-500").await;
    insert_raw(&client, "events", body.clone(), "spool-1-16-500").await;
    let count = |client: clickhouse::Client| async move {
        client
            .query("SELECT count() FROM events")
            .fetch_one::<u64>()
            .await
            .expect("count")
    };
    assert_eq!(count(client.clone()).await, rows.len() as u64);
    insert_raw(&client, "events", body, "spool-1-500-900").await;
    assert_eq!(count(client.clone()).await, 2 * rows.len() as u64);
}

/// Garbage is refused by the server as a whole, not half-inserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_body_is_refused_whole() {
    let (client, _db) = setup("rowbinary_bad").await;
    let mut body = encode_all(&rows());
    body.truncate(body.len() - 3);
    let mut insert = client.insert_formatted_with("INSERT INTO events FORMAT RowBinary");
    insert.send(Bytes::from(body)).await.expect("send");
    assert!(insert.end().await.is_err(), "a truncated row was accepted");
    let count: u64 = client
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(count, 0);
}
