//! Storage against a real ClickHouse: migrations, the events schema, the writer,
//! deduplicated retries and the shared daily salts.

#[path = "support/stored.rs"]
mod stored;
mod support;
#[path = "support/wait.rs"]
mod wait;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use clickhouse::{Client, Row};
use hush::collect::client_ip::truncate;
use hush::config::{ClickHouseConfig, Compression, FsyncPolicy, SpoolConfig, WriterConfig};
use hush::db;
use hush::enrich::row::EventRow;
use hush::enrich::salt::{SALT_LEN, Salts};
use hush::enrich::visitor::visitor_id;
use hush::pipeline::spool::Spool;
use hush::pipeline::writer::{self, BatchId, EventSink, SubmitError, Writer};
use hush::store::migrate::{self, MigrateError};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use stored::StoredRow;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use wait::{count, wait_for_count};

const DEADLINE: Duration = Duration::from_secs(60);

fn config_for(db: &str) -> ClickHouseConfig {
    let ch = support::clickhouse();
    ClickHouseConfig {
        url: ch.url().to_owned(),
        user: ch.user().to_owned(),
        password: ch.password().to_owned(),
        database: db.to_owned(),
        compression: Compression::Lz4,
        request_timeout_ms: 30_000,
    }
}

/// A fresh database with every migration applied.
async fn migrated(prefix: &str) -> ClickHouseConfig {
    let db = support::clickhouse().fresh_database(prefix).await;
    let cfg = config_for(&db);
    migrate::run(&cfg).await.expect("migrate");
    cfg
}

/// The client multi-row reads use: the crate's default, validating reads, so every
/// row type here is also checked against the real column names and types.
fn rowbinary(client: &Client) -> Client {
    client.clone()
}

fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

// ---------------------------------------------------------------------------------
// migrations

#[tokio::test]
async fn migrate_applies_everything_once() {
    let db = support::clickhouse().fresh_database("migrate_once").await;
    let cfg = config_for(&db);
    let client = db::client(&cfg);

    match migrate::check_current(&client).await {
        Err(MigrateError::Pending(names)) => assert_eq!(names.len(), migrate::migrations().len()),
        other => panic!("expected everything pending, got {other:?}"),
    }

    let applied = migrate::run(&cfg).await.unwrap();
    let all: Vec<String> = migrate::migrations()
        .iter()
        .map(|m| m.name.to_owned())
        .collect();
    assert_eq!(applied, all);
    migrate::check_current(&client).await.unwrap();
    for table in ["events", "salts", "schema_migrations"] {
        let n = count(
            &client,
            &format!("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = '{table}'"),
        )
        .await;
        assert_eq!(n, 1, "{table} missing");
    }

    assert!(
        migrate::run(&cfg).await.unwrap().is_empty(),
        "second run applies nothing"
    );
    let records = count(&client, "SELECT count() FROM schema_migrations FINAL").await;
    assert_eq!(records, all.len() as u64);
}

#[tokio::test]
async fn migrate_creates_the_database() {
    let ch = support::clickhouse();
    // A unique name that does not exist yet: fresh_database creates it, so drop it.
    let db = ch.fresh_database("migrate_createdb").await;
    ch.base_client()
        .query(&format!("DROP DATABASE `{db}`"))
        .execute()
        .await
        .unwrap();
    let cfg = config_for(&db);
    assert_eq!(
        migrate::run(&cfg).await.unwrap().len(),
        migrate::migrations().len()
    );
    migrate::check_current(&db::client(&cfg)).await.unwrap();
}

#[tokio::test]
async fn every_migration_statement_is_idempotent() {
    let cfg = migrated("migrate_idem").await;
    let client = db::client(&cfg);
    for m in migrate::migrations() {
        for statement in m.statements() {
            client
                .query_raw(statement)
                .execute()
                .await
                .unwrap_or_else(|e| panic!("{} re-run failed: {e}\n{statement}", m.name));
        }
    }
}

#[tokio::test]
async fn an_edited_migration_is_refused_by_name() {
    let cfg = migrated("migrate_edit").await;
    let client = db::client(&cfg);
    let first = &migrate::migrations()[0];
    // What an edited file looks like from the database's side: its recorded checksum
    // no longer matches the embedded one.
    client
        .query("INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)")
        .bind(first.version)
        .bind(first.name)
        .bind("0".repeat(64))
        .execute()
        .await
        .unwrap();

    let err = migrate::run(&cfg).await.unwrap_err();
    match &err {
        MigrateError::Modified { file, .. } => assert_eq!(*file, first.file_name()),
        other => panic!("expected Modified, got {other}"),
    }
    assert!(err.to_string().contains(&first.file_name()), "{err}");
    assert!(matches!(
        migrate::check_current(&client).await,
        Err(MigrateError::Modified { .. })
    ));
}

#[tokio::test]
async fn check_current_reports_a_missing_migration() {
    let cfg = migrated("migrate_pending").await;
    let client = db::client(&cfg);
    let last = migrate::migrations().last().unwrap();
    client
        .query("ALTER TABLE schema_migrations DELETE WHERE version = ? SETTINGS mutations_sync = 1")
        .bind(last.version)
        .execute()
        .await
        .unwrap();
    match migrate::check_current(&client).await {
        Err(MigrateError::Pending(names)) => assert_eq!(names, vec![last.name.to_owned()]),
        other => panic!("expected {} pending, got {other:?}", last.name),
    }
    assert_eq!(
        migrate::run(&cfg).await.unwrap(),
        vec![last.name.to_owned()]
    );
    migrate::check_current(&client).await.unwrap();
}

#[tokio::test]
async fn concurrent_migrations_both_succeed() {
    let db = support::clickhouse().fresh_database("migrate_race").await;
    let cfg = config_for(&db);
    let (a, b) = tokio::join!(migrate::run(&cfg), migrate::run(&cfg));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(!a.is_empty() || !b.is_empty());
    let client = db::client(&cfg);
    migrate::check_current(&client).await.unwrap();
    let versions = count(&client, "SELECT uniqExact(version) FROM schema_migrations").await;
    assert_eq!(versions, migrate::migrations().len() as u64);
    assert!(migrate::run(&cfg).await.unwrap().is_empty());
}

#[tokio::test]
async fn unreachable_and_hanging_servers_fail_within_the_timeout() {
    let mut cfg = config_for("unused");
    cfg.url = closed_port_url();
    let err = migrate::run(&cfg).await.unwrap_err();
    assert!(matches!(err, MigrateError::ClickHouse { .. }), "{err}");

    // A server that accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    cfg.url = format!("http://{}", listener.local_addr().unwrap());
    cfg.request_timeout_ms = 300;
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let err = migrate::run(&cfg).await.unwrap_err();
    match err {
        MigrateError::ClickHouse { source, .. } => {
            assert!(
                matches!(source, clickhouse::error::Error::TimedOut),
                "{source}"
            )
        }
        other => panic!("expected a timeout, got {other}"),
    }
    hold.abort();
}

// ---------------------------------------------------------------------------------
// events schema and writer

/// Row `i`, with every column carrying a value derived from `i` (so a column shifted
/// or swapped with another shows up) and the edge cases spread over the rows.
fn event(i: u32) -> EventRow {
    const CHANNELS: [&str; 3] = ["direct", "search", "social"];
    const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];
    EventRow {
        site: Arc::from(if i.is_multiple_of(2) {
            "example.com"
        } else {
            "blog.example.org"
        }),
        // Spans a month boundary, so one batch lands in two partitions.
        timestamp: 1_709_251_200 - 3_600 + i * 97,
        name: if i.is_multiple_of(5) {
            "Signup".into()
        } else {
            "pageview".into()
        },
        visitor_id: u64::MAX - u64::from(i),
        session_id: 0x0123_4567_89ab_cdef ^ u64::from(i),
        entry_page: format!("/entry/{i}").into(),
        hostname: "www.example.com".into(),
        pathname: format!("/path/{i}/ünïcödé/\u{1F600}"),
        referrer_host: if i.is_multiple_of(3) {
            String::new()
        } else {
            format!("ref{i}.example.net")
        },
        referrer_path: format!("/r?{i}"),
        source: format!("Source {}", i % 4),
        channel: CHANNELS[i as usize % 3],
        utm_source: format!("utm-s-{i}"),
        utm_medium: "cpc".into(),
        utm_campaign: format!("camp'aign\"{i}\\"),
        utm_term: format!("term\t{i}\n"),
        utm_content: format!("content {i}"),
        browser: Arc::from("Firefox"),
        browser_version: Arc::from(format!("12{}.0", i % 10)),
        os: Arc::from("Linux"),
        os_version: Arc::from(""),
        device: DEVICES[i as usize % 3],
        country: if i.is_multiple_of(7) { [0, 0] } else { *b"DE" },
        region: if i.is_multiple_of(2) {
            "BE".into()
        } else {
            String::new()
        },
        city_geoname_id: 2_950_159 + i,
        city: "Berlin".into(),
        props: (0..(i % 3))
            .map(|k| (format!("key{k}"), format!("value {i}/{k}")))
            .collect(),
        revenue_micros: if i.is_multiple_of(4) {
            Some(-(i64::from(i)) * 1_000_000 - 1)
        } else {
            None
        },
        revenue_currency: if i.is_multiple_of(4) {
            "EUR".into()
        } else {
            String::new()
        },
        interactive: (i % 2) as u8,
        engagement_ms: i * 1_000,
        scroll_depth: if i.is_multiple_of(6) {
            255
        } else {
            (i % 101) as u8
        },
    }
}

async fn stored_rows(client: &Client) -> Vec<StoredRow> {
    rowbinary(client)
        .query("SELECT ?fields FROM events ORDER BY engagement_ms")
        .fetch_all::<StoredRow>()
        .await
        .unwrap()
}

fn writer_config(batch_rows: usize, flush_interval_ms: u64, queue_capacity: usize) -> WriterConfig {
    WriterConfig {
        batch_rows,
        flush_interval_ms,
        queue_capacity,
        queue_max_bytes: 1 << 30,
        retry_base_ms: 20,
        retry_max_ms: 200,
        ..Default::default()
    }
}

fn spawn_writer(
    client: Client,
    cfg: &WriterConfig,
    registry: &mut Registry,
) -> (EventSink, writer::WriterHandle) {
    Writer::spawn(client, cfg, Duration::from_secs(30), "events", registry)
}

fn encoded(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

#[tokio::test]
async fn the_events_table_matches_event_row_exactly() {
    // With validation on, the crate compares the struct's field names and types with
    // the table's columns (RowBinaryWithNamesAndTypes) and refuses any difference.
    let cfg = migrated("events_schema").await;
    let client = db::client(&cfg).with_validation(true);
    let mut insert = client.insert::<EventRow>("events").await.unwrap();
    insert.write(&event(1)).await.unwrap();
    insert.end().await.unwrap();
    assert_eq!(stored_rows(&client).await, vec![StoredRow::from(&event(1))]);
}

#[tokio::test]
async fn every_submitted_row_arrives_once_with_every_column_intact() {
    let cfg = migrated("writer_roundtrip").await;
    let client = db::client(&cfg);
    let mut registry = Registry::default();
    let (sink, handle) = spawn_writer(
        client.clone(),
        &writer_config(40, 100, 1_000),
        &mut registry,
    );

    let rows: Vec<EventRow> = (0..250).map(event).collect();
    for chunk in rows.chunks(17) {
        sink.submit(chunk).await.unwrap();
    }
    wait_for_count(&client, "SELECT count() FROM events", 250, DEADLINE).await;

    let expected: Vec<StoredRow> = rows.iter().map(StoredRow::from).collect();
    assert_eq!(stored_rows(&client).await, expected);

    let report = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.rows_inserted, 250);
    let text = encoded(&registry);
    assert_eq!(metric(&text, "hush_writer_rows_inserted_total"), 250.0);
    assert_eq!(metric(&text, "hush_writer_queue_depth"), 0.0);
    assert_eq!(metric(&text, "hush_writer_batch_rows_sum"), 250.0);
    assert_eq!(metric(&text, "hush_writer_insert_failures_total"), 0.0);
}

#[tokio::test]
async fn a_partial_batch_is_flushed_by_time() {
    let cfg = migrated("writer_interval").await;
    let client = db::client(&cfg);
    // The batch never fills: only the interval can flush these rows.
    let (sink, handle) = spawn_writer(
        client.clone(),
        &writer_config(10_000, 200, 10_000),
        &mut Registry::default(),
    );
    sink.submit(&(0..3).map(event).collect::<Vec<_>>())
        .await
        .unwrap();
    wait_for_count(&client, "SELECT count() FROM events", 3, DEADLINE).await;
    sink.submit(&[event(3)]).await.unwrap();
    wait_for_count(&client, "SELECT count() FROM events", 4, DEADLINE).await;
    let report = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!((report.rows_inserted, report.rows_drained), (4, 0));
}

#[tokio::test]
async fn shutdown_stores_everything_accepted() {
    let cfg = migrated("writer_shutdown").await;
    let client = db::client(&cfg);
    // Neither size nor time would flush within the test: only shutdown does.
    let (sink, handle) = spawn_writer(
        client.clone(),
        &writer_config(10_000, 3_600_000, 10_000),
        &mut Registry::default(),
    );
    for i in 0..7 {
        sink.submit(&[event(i)]).await.unwrap();
    }
    let report = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.rows_inserted, 7);
    assert_eq!(report.rows_drained, 7);
    assert_eq!(count(&client, "SELECT count() FROM events").await, 7);
    assert_eq!(
        sink.submit(&[event(8)]).await,
        Err(SubmitError::ShuttingDown)
    );
}

/// A TCP proxy in front of the test ClickHouse that can refuse service: while down it
/// accepts and immediately closes connections, like a server that is restarting.
struct Switch {
    addr: SocketAddr,
    up: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl Switch {
    async fn new(upstream: &str) -> Switch {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicU8::new(0));
        let state = Arc::clone(&up);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if state.load(Ordering::SeqCst) == 0 {
                    let _ = client.shutdown().await;
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Switch { addr, up, task }
    }

    /// A switch in front of `cfg`'s ClickHouse, down, and a client through it.
    async fn client(cfg: &ClickHouseConfig) -> (Switch, Client) {
        let switch = Switch::new(&cfg.url).await;
        let client = db::client(&ClickHouseConfig {
            url: switch.url(),
            ..cfg.clone()
        });
        (switch, client)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_up(&self, up: bool) {
        self.up.store(u8::from(up), Ordering::SeqCst);
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn rows_survive_an_outage_and_a_full_queue_loses_nothing_accepted() {
    let cfg = migrated("writer_outage").await;
    let client = db::client(&cfg);
    let (switch, writer_client) = Switch::client(&cfg).await;
    let mut registry = Registry::default();
    let (sink, handle) = spawn_writer(writer_client, &writer_config(5, 20, 20), &mut registry);

    // ClickHouse is "down": submit single rows until the queue refuses one.
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..1_000 {
        match sink.submit(&[event(i)]).await {
            Ok(()) => accepted.push(i),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
        // Let the writer take its batch and start failing.
        tokio::task::yield_now().await;
    }
    let (refused_i, err) = refused.expect("the queue never filled");
    assert!(matches!(err, SubmitError::QueueFull { .. }), "{err}");
    // Capacity 20 plus at most one batch of 5 taken by the writer.
    assert!((20..=25).contains(&accepted.len()), "{}", accepted.len());
    // A multi-row request is refused whole while full.
    assert!(matches!(
        sink.submit(&[event(5_000), event(5_001)]).await,
        Err(SubmitError::QueueFull { .. })
    ));

    // Wait until the writer has failed a few times, then bring ClickHouse back.
    let start = Instant::now();
    while metric(&encoded(&registry), "hush_writer_insert_failures_total") < 3.0 {
        assert!(start.elapsed() < DEADLINE, "the writer never retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&client, "SELECT count() FROM events").await, 0);
    switch.set_up(true);

    wait_for_count(
        &client,
        "SELECT count() FROM events",
        accepted.len() as u64,
        DEADLINE,
    )
    .await;
    let stored: Vec<u32> = rowbinary(&client)
        .query("SELECT engagement_ms FROM events ORDER BY engagement_ms")
        .fetch_all::<u32>()
        .await
        .unwrap();
    let expected: Vec<u32> = accepted.iter().map(|i| i * 1_000).collect();
    assert_eq!(stored, expected, "exactly the accepted rows, each once");
    assert!(!stored.contains(&(refused_i * 1_000)));

    // Accepting again once the queue drained.
    sink.submit(&[event(2_000)]).await.unwrap();
    let report = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.rows_inserted, accepted.len() as u64 + 1);
    assert_eq!(
        count(&client, "SELECT count() FROM events").await,
        accepted.len() as u64 + 1
    );
}

/// The byte bound of the memory queue counts rows until they are stored: large rows
/// fill it during an outage (503 for whole requests), and storing them frees it.
#[tokio::test]
async fn the_memory_queue_bound_in_bytes_frees_once_rows_are_stored() {
    let cfg = migrated("writer_queue_bytes").await;
    let client = db::client(&cfg);
    let (switch, writer_client) = Switch::client(&cfg).await;
    // Rows of ~40 KB; the row cap (10,000) is never what refuses them.
    let big = |i: u32| EventRow {
        referrer_path: "r".repeat(40_000),
        ..event(i)
    };
    let writer_cfg = WriterConfig {
        queue_max_bytes: 1 << 20,
        ..writer_config(5, 20, 10_000)
    };
    let (sink, handle) = spawn_writer(writer_client, &writer_cfg, &mut Registry::default());
    let mut accepted = 0u32;
    let refused = loop {
        match sink.submit(&[big(accepted), big(accepted + 1)]).await {
            Ok(()) => accepted += 2,
            Err(e) => break e,
        }
        assert!(accepted < 1_000, "the queue never filled");
    };
    assert!(
        matches!(refused, SubmitError::QueueFull { .. }),
        "{refused}"
    );
    // Bytes of every accepted row, the batch the writer holds included: the refused
    // pair did not fit in what was left.
    let mut pair = Vec::new();
    for r in [big(accepted), big(accepted + 1)] {
        hush::pipeline::rowbinary::encode_event(&r, &mut pair);
    }
    let mut all = Vec::new();
    for i in 0..accepted {
        hush::pipeline::rowbinary::encode_event(&big(i), &mut all);
    }
    assert_eq!(sink.queued_bytes(), all.len() as u64);
    assert!(all.len() <= 1 << 20 && all.len() + pair.len() > 1 << 20);

    switch.set_up(true);
    wait_for_count(
        &client,
        "SELECT count() FROM events",
        accepted.into(),
        DEADLINE,
    )
    .await;
    let start = Instant::now();
    while sink.queued_bytes() > 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "{} bytes still counted",
            sink.queued_bytes()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sink.submit(&[big(5_000), big(5_001)]).await.unwrap();
    let report = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.rows_inserted, u64::from(accepted) + 2);
}

#[tokio::test]
async fn a_batch_inserted_twice_with_one_token_is_stored_once() {
    let cfg = migrated("writer_dedup").await;
    let client = db::client(&cfg);
    // Rows in two monthly partitions: the token must cover every block of the insert.
    let rows: Vec<EventRow> = (0..60).map(event).collect();
    let id = BatchId::random();
    let timeout = Duration::from_secs(30);
    writer::insert_batch(&client, "events", &id, &rows, timeout)
        .await
        .unwrap();
    writer::insert_batch(&client, "events", &id, &rows, timeout)
        .await
        .unwrap();
    assert_eq!(count(&client, "SELECT count() FROM events").await, 60);
    assert_eq!(
        count(
            &client,
            "SELECT count() FROM (SELECT DISTINCT toYYYYMM(timestamp) FROM events)"
        )
        .await,
        2,
        "the batch should span two partitions"
    );
    // Equal content under another id is a different batch and is stored.
    writer::insert_batch(&client, "events", &BatchId::random(), &rows, timeout)
        .await
        .unwrap();
    assert_eq!(count(&client, "SELECT count() FROM events").await, 120);
}

/// A record ClickHouse refuses for its content: the first column's length says 4 GiB
/// (`TOO_LARGE_STRING_SIZE`, a permanent error).
const BAD_ROW: &[u8] = b"\xff\xff\xff\xff\x0fbad";

/// A spool in `dir` (fsync always), with its metrics in `registry`.
fn open_spool(dir: &std::path::Path, registry: &mut Registry) -> Spool {
    let cfg = SpoolConfig {
        dir: Some(dir.to_owned()),
        fsync: FsyncPolicy::Always,
        ..SpoolConfig::default()
    };
    Spool::open(&cfg, registry).expect("open spool")
}

/// A writer on `spool` (in `dir`): batches of 100 rows, flushed every 20 ms.
fn spawn_spooled(
    client: &Client,
    spool: &Spool,
    dir: &std::path::Path,
    registry: &mut Registry,
) -> (EventSink, writer::WriterHandle) {
    Writer::spawn_spooled(
        client.clone(),
        &writer_config(100, 20, 1_000),
        Duration::from_secs(30),
        "events",
        spool.clone(),
        dir,
        registry,
    )
}

/// Appends the records of `rows` to `spool` as one batch, with [`BAD_ROW`], which
/// ClickHouse refuses, as the seventh record.
async fn append_with_bad_row(spool: &Spool, rows: &[EventRow]) {
    let mut records: Vec<Vec<u8>> = rows
        .iter()
        .map(|row| {
            let mut r = Vec::new();
            hush::pipeline::rowbinary::encode_event(row, &mut r);
            r
        })
        .collect();
    records.insert(6, BAD_ROW.to_vec());
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    spool.append(&refs).await.unwrap();
}

fn dead_letters(quarantine: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(quarantine) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rowbinary"))
        .collect()
}

/// Polls `check` until it holds, failing with `what` after [`DEADLINE`].
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A refused batch leaves the spool only once its dead-letter file is on disk: with the
/// quarantine directory unwritable it stays spooled (and the rows behind it wait), and
/// once the directory can be written the file appears and the batch is acknowledged.
#[tokio::test]
async fn a_refused_batch_stays_spooled_until_its_dead_letter_file_is_written() {
    let cfg = migrated("writer_dead_letter_retry").await;
    let client = db::client(&cfg);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let mut registry = Registry::default();
    let spool = open_spool(&dir, &mut registry);
    // Unwritable even for root: a file where the directory should be.
    let quarantine = dir.join("quarantine");
    // Opening created no quarantine/ (it writes nothing); the first dead letter would.
    assert!(!quarantine.exists());
    std::fs::write(&quarantine, b"").unwrap();
    spool.append(&[BAD_ROW]).await.unwrap();
    let (sink, handle) = spawn_spooled(&client, &spool, &dir, &mut registry);

    wait_until("failed dead-letter writes", || {
        metric(
            &encoded(&registry),
            "hush_writer_dead_letter_write_failures_total",
        ) >= 2.0
    })
    .await;
    assert_eq!(
        spool.status().pending_records,
        1,
        "the batch left the spool"
    );
    let text = encoded(&registry);
    assert_eq!(metric(&text, "hush_writer_dead_letter_rows_total"), 0.0);
    // Rows behind it wait in the spool.
    sink.submit(&[event(1), event(2)]).await.unwrap();
    assert_eq!(count(&client, "SELECT count() FROM events").await, 0);

    std::fs::remove_file(&quarantine).unwrap();
    wait_for_count(&client, "SELECT count() FROM events", 2, DEADLINE).await;
    wait_until("the spool to drain", || spool.status().pending_records == 0).await;
    let dead = dead_letters(&quarantine);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(std::fs::read(&dead[0]).unwrap(), BAD_ROW);
    let note = std::fs::read_to_string(dead[0].with_extension("txt")).unwrap();
    assert!(note.contains("Code: 131"), "{note}");
    let text = encoded(&registry);
    assert_eq!(metric(&text, "hush_writer_dead_letter_rows_total"), 1.0);
    let report = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!((report.rows_inserted, report.rows_dead_lettered), (2, 1));
}

/// "Never twice" beyond the old window: a batch ClickHouse stored before a crash (its
/// acknowledgement never recorded) is replayed after more than 1,000 inserts by
/// others (the window of 0001) and still lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_more_than_a_thousand_other_inserts_lands_once() {
    const OTHER_INSERTS: u32 = 1_100;
    let cfg = migrated("writer_dedup_window").await;
    let client = db::client(&cfg);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");

    // Spooled, cut and inserted exactly as the writer does; then "crash" before the ack.
    let spool = open_spool(&dir, &mut Registry::default());
    let mut records = Vec::new();
    for i in 0..5 {
        let mut r = Vec::new();
        hush::pipeline::rowbinary::encode_event(&event(i), &mut r);
        records.push(r);
    }
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    spool.append(&refs).await.unwrap();
    let batch = spool.next_batch(100).await.unwrap().unwrap();
    writer::insert_payload(
        &client.clone().with_validation(false),
        "events",
        batch.token(),
        batch.payload().clone(),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    drop(batch);
    spool.close().await;
    drop(spool);

    // Other collectors go on inserting, one row per insert, several at a time.
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (client, next) = (client.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= OTHER_INSERTS {
                        return;
                    }
                    let row = event(10_000 + i);
                    writer::insert_batch(&client, "events", &BatchId::random(), &[row], DEADLINE)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mine = "SELECT count() FROM events WHERE engagement_ms < 5000";
    assert_eq!(count(&client, mine).await, 5);
    assert_eq!(
        count(&client, "SELECT count() FROM events").await,
        5 + u64::from(OTHER_INSERTS)
    );

    // The restart replays the batch with its token; ClickHouse still knows it.
    let mut registry = Registry::default();
    let spool = open_spool(&dir, &mut registry);
    assert_eq!(spool.status().replay_batches, 1);
    let (_sink, handle) = spawn_spooled(&client, &spool, &dir, &mut registry);
    wait_until("the replay", || spool.status().pending_records == 0).await;
    let report = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.rows_inserted, 5, "the replay did insert");
    assert_eq!(
        count(&client, mine).await,
        5,
        "the replayed batch was stored twice"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Runs a spooled writer on the spool in `dir` until the spool is drained.
async fn drain_spool(client: &Client, dir: &std::path::Path) -> writer::FlushReport {
    let mut registry = Registry::default();
    let spool = open_spool(dir, &mut registry);
    let (_sink, handle) = spawn_spooled(client, &spool, dir, &mut registry);
    wait_until("the spool to drain", || spool.status().pending_records == 0).await;
    handle.shutdown(Duration::from_secs(30)).await.unwrap()
}

/// A batch with one row ClickHouse refuses among good ones: the good rows are stored,
/// only the refused row is dead-lettered; and splitting it again after a "crash"
/// (the same batch replayed from a copy of the spool) stores nothing twice.
#[tokio::test]
async fn one_refused_row_among_good_ones_is_the_only_dead_letter() {
    let cfg = migrated("writer_split").await;
    let client = db::client(&cfg);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let spool = open_spool(&dir, &mut Registry::default());
    let good: Vec<EventRow> = (0..10).map(event).collect();
    append_with_bad_row(&spool, &good).await;
    spool.close().await;
    drop(spool);
    // The spool as it is now, for the replay below: same id, same batch, same tokens.
    let copy = tmp.path().join("copy");
    copy_dir(&dir, &copy);

    let report = drain_spool(&client, &dir).await;
    assert_eq!((report.rows_inserted, report.rows_dead_lettered), (10, 1));
    let expected: Vec<StoredRow> = good.iter().map(StoredRow::from).collect();
    assert_eq!(stored_rows(&client).await, expected);
    let dead = dead_letters(&dir.join("quarantine"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(std::fs::read(&dead[0]).unwrap(), BAD_ROW);
    let note = std::fs::read_to_string(dead[0].with_extension("txt")).unwrap();
    assert!(note.contains("rows: 1 of 11"), "{note}");
    let row_line = note
        .lines()
        .find(|l| l.starts_with("row "))
        .unwrap_or_default();
    assert!(
        row_line.starts_with("row 6: ") && row_line.contains("Code: 131"),
        "{note}"
    );

    // A crash after the good parts were stored and before the ack: the batch comes
    // back, is split the same way, and ClickHouse drops every part it already has.
    let again = drain_spool(&client, &copy).await;
    assert_eq!((again.rows_inserted, again.rows_dead_lettered), (10, 1));
    assert_eq!(
        stored_rows(&client).await,
        expected,
        "a part was stored twice"
    );
}

/// The writer's progress counts the rows of a refused batch split in parts exactly
/// once, stored or dead-lettered, so a wait for them ends (and no sooner): 10 stored and
/// 1 dead-lettered out of 11 accepted, plus 2 submitted while the batch was split.
#[tokio::test]
async fn progress_counts_a_split_batch_once_stored_or_dead_lettered() {
    let cfg = migrated("writer_progress_split").await;
    let client = db::client(&cfg);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let mut registry = Registry::default();
    let spool = open_spool(&dir, &mut registry);
    append_with_bad_row(&spool, &(0..10).map(event).collect::<Vec<_>>()).await;
    let (sink, handle) = spawn_spooled(&client, &spool, &dir, &mut registry);
    let progress = handle.progress();
    // What the spool held at start counts as accepted.
    assert_eq!(progress.counts().0, 11);
    sink.submit(&[event(20), event(21)]).await.unwrap();
    progress.wait_for_accepted(DEADLINE).await.unwrap();
    wait_until("the spool to drain", || spool.status().pending_records == 0).await;
    assert_eq!(progress.counts(), (13, 13));
    assert_eq!(count(&client, "SELECT count() FROM events").await, 12);
    assert_eq!(dead_letters(&dir.join("quarantine")).len(), 1);
    let report = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!((report.rows_inserted, report.rows_dead_lettered), (12, 1));
}

// ---------------------------------------------------------------------------------
// salts

const DAY: u32 = 19_783; // 2024-03-01

async fn salt_rows(client: &Client) -> Vec<(u16, [u8; SALT_LEN])> {
    #[derive(Row, Deserialize)]
    struct R {
        day: u16,
        salt: [u8; SALT_LEN],
    }
    rowbinary(client)
        .query("SELECT day, salt FROM salts ORDER BY day, created_at")
        .fetch_all::<R>()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.day, r.salt))
        .collect()
}

#[tokio::test]
async fn two_instances_agree_on_the_day_salt() {
    let cfg = migrated("salt_agree").await;
    let client = db::client(&cfg);
    let a = Salts::init_at(&client, DAY).await.unwrap();
    let b = Salts::init_at(&client, DAY).await.unwrap();
    let (sa, sb) = (a.current(), b.current());
    assert_eq!(sa.day, DAY);
    assert_eq!(sa.current, sb.current);
    assert_ne!(sa.current, [0u8; SALT_LEN]);
    assert_eq!(sa.previous, None, "no salt existed for the day before");
    assert_eq!(salt_rows(&client).await, vec![(DAY as u16, sa.current)]);
}

#[tokio::test]
async fn concurrent_inits_all_agree() {
    let cfg = migrated("salt_race").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        // Separate clients: separate connections, like separate instances.
        let client = db::client(&cfg);
        tasks.push(tokio::spawn(
            async move { Salts::init_at(&client, DAY).await },
        ));
    }
    let mut salts = Vec::new();
    for t in tasks {
        salts.push(t.await.unwrap().unwrap().current().current);
    }
    assert!(salts.windows(2).all(|w| w[0] == w[1]), "instances disagree");
    // The deduplication token admitted exactly one candidate.
    let rows = salt_rows(&db::client(&cfg)).await;
    assert_eq!(rows, vec![(DAY as u16, salts[0])]);
}

#[tokio::test]
async fn a_late_instance_adopts_the_earliest_candidate() {
    let cfg = migrated("salt_reconcile").await;
    let client = db::client(&cfg);
    let ours = Salts::init_at(&client, DAY).await.unwrap();
    let mine = ours.current().current;
    // Another candidate that was created earlier but became visible later (what a
    // replica race could produce), inserted without the token so it is stored.
    let earlier = [0x5a; SALT_LEN];
    let mut insert = client.insert::<EarlySalt>("salts").await.unwrap();
    insert
        .write(&EarlySalt {
            day: DAY as u16,
            salt: earlier,
            created_at: 0,
        })
        .await
        .unwrap();
    insert.end().await.unwrap();

    assert!(
        ours.reconcile(&client).await.unwrap(),
        "should adopt the earlier salt"
    );
    assert_eq!(ours.current().current, earlier);
    assert!(
        !ours.reconcile(&client).await.unwrap(),
        "stable once agreed"
    );
    let late = Salts::init_at(&client, DAY).await.unwrap();
    assert_eq!(late.current().current, earlier);
    assert_ne!(mine, earlier);
}

#[derive(Row, Serialize)]
struct EarlySalt {
    day: u16,
    salt: [u8; SALT_LEN],
    /// DateTime64(9): nanoseconds since the epoch.
    created_at: i64,
}

#[tokio::test]
async fn a_new_day_gives_new_ids_and_old_salts_are_deleted() {
    let cfg = migrated("salt_rotate").await;
    let client = db::client(&cfg);
    let salts = Salts::init_at(&client, DAY).await.unwrap();
    let day0 = salts.current();
    let ip = truncate("198.51.100.23".parse().unwrap(), 24, 48);
    let ua = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0";
    let id0 = visitor_id(&day0.current, "example.com", &ip, ua);
    assert_eq!(
        id0,
        visitor_id(&salts.current().current, "example.com", &ip, ua)
    );

    salts.rotate_to(&client, DAY + 1).await.unwrap();
    let day1 = salts.current();
    assert_eq!(day1.day, DAY + 1);
    assert_ne!(day1.current, day0.current);
    assert_eq!(day1.previous, Some(day0.current));
    let id1 = visitor_id(&day1.current, "example.com", &ip, ua);
    assert_ne!(id0, id1, "the same visitor must get a new id on a new day");

    // Another instance starting on day 1 agrees on both days' salts.
    let other = Salts::init_at(&client, DAY + 1).await.unwrap();
    assert_eq!(other.current().current, day1.current);
    assert_eq!(other.current().previous, Some(day0.current));

    // Rotating to day 2 deletes day 0 (older than the previous day) everywhere.
    salts.prepare(&client, DAY + 2).await.unwrap();
    salts.rotate_to(&client, DAY + 2).await.unwrap();
    let day2 = salts.current();
    assert_eq!(day2.previous, Some(day1.current));
    let days: Vec<u16> = salt_rows(&client)
        .await
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(days, vec![(DAY + 1) as u16, (DAY + 2) as u16]);
    assert!(
        !salt_rows(&client)
            .await
            .iter()
            .any(|(_, s)| *s == day0.current),
        "day 0's salt must be gone"
    );

    // Going back in time is ignored.
    salts.rotate_to(&client, DAY).await.unwrap();
    assert_eq!(salts.current().day, DAY + 2);
}

#[tokio::test]
async fn rotation_uses_a_prepared_salt_without_clickhouse() {
    let cfg = migrated("salt_prepared").await;
    let client = db::client(&cfg);
    let down = db::client(&ClickHouseConfig {
        url: closed_port_url(),
        ..cfg.clone()
    });
    let salts = Salts::init_at(&client, DAY).await.unwrap();
    salts.prepare(&client, DAY + 1).await.unwrap();
    let agreed: Vec<_> = salt_rows(&client).await;
    let tomorrow = agreed
        .iter()
        .find(|(d, _)| *d == (DAY + 1) as u16)
        .unwrap()
        .1;

    // ClickHouse is gone at midnight: the switch still happens, to the agreed salt.
    // (Deleting old salts fails, hence the error.)
    let _ = salts.rotate_to(&down, DAY + 1).await;
    assert_eq!(salts.current().day, DAY + 1);
    assert_eq!(salts.current().current, tomorrow);

    // Not prepared and unreachable: a fresh local salt, never yesterday's, offered to
    // ClickHouse once it answers.
    assert!(salts.rotate_to(&down, DAY + 2).await.is_err());
    let local = salts.current();
    assert_eq!(local.day, DAY + 2);
    assert_ne!(local.current, tomorrow);
    assert_eq!(local.previous, Some(tomorrow));
    assert!(
        !salts.reconcile(&client).await.unwrap(),
        "ours becomes the agreed salt"
    );
    assert!(
        salt_rows(&client)
            .await
            .contains(&((DAY + 2) as u16, local.current))
    );
}
