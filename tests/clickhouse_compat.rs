//! The test ClickHouse (scripts/local-clickhouse, or the server named by
//! CLICKHOUSE_URL) behaves like a ClickHouse server for everything hush does
//! through the `clickhouse` crate and over raw HTTP.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clickhouse::error::Error;
use clickhouse::{Client, Compression, Row};
use serde::{Deserialize, Serialize};

const BOTH: [Compression; 2] = [Compression::None, Compression::Lz4];

/// Every column type the hush schema uses.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
struct AllTypes {
    ts: u32, // DateTime
    site: String,
    u8_: u8,
    u16_: u16,
    u32_: u32,
    u64_: u64,
    path: String,
    country: [u8; 2],
    props: Vec<(String, String)>,
    tags: Vec<String>,
    referrer: Option<String>,
    screen: Option<u16>,
}

const ALL_TYPES_DDL: &str = "CREATE TABLE all_types (
    ts DateTime,
    site LowCardinality(String),
    u8_ UInt8,
    u16_ UInt16,
    u32_ UInt32,
    u64_ UInt64,
    path String,
    country FixedString(2),
    props Map(String, String),
    tags Array(String),
    referrer Nullable(String),
    screen Nullable(UInt16)
) ENGINE = MergeTree PARTITION BY toYYYYMM(ts) ORDER BY (site, ts, u64_)";

fn sample_row(i: u64) -> AllTypes {
    AllTypes {
        ts: 1_700_000_000 + i as u32,
        site: format!("site{}", i % 3),
        u8_: (i % 256) as u8,
        u16_: (i * 7 % 65_536) as u16,
        u32_: (i * 1_000_003 % (1 << 32)) as u32,
        u64_: u64::MAX - i,
        path: format!("/page/{i}?q=\u{e9}t\u{e9}"),
        country: if i.is_multiple_of(2) { *b"DE" } else { *b"FR" },
        props: if i.is_multiple_of(4) {
            vec![]
        } else {
            vec![("plan".into(), format!("p{i}")), ("utm".into(), "x".into())]
        },
        tags: (0..i % 3).map(|t| format!("t{t}")).collect(),
        referrer: (!i.is_multiple_of(5)).then(|| format!("https://ref{i}.example/")),
        screen: i.is_multiple_of(2).then_some((i % 4000) as u16),
    }
}

async fn exec(client: &Client, sql: &str) {
    client
        .query(sql)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(client: &Client, table: &str) -> u64 {
    client
        .query(&format!("SELECT count() FROM {table}"))
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
}

fn bad_response(err: Error) -> String {
    match err {
        Error::BadResponse(text) => text,
        other => panic!("expected Error::BadResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn every_hush_column_type_round_trips_with_and_without_lz4() {
    let ch = support::clickhouse();
    for compression in BOTH {
        let db = ch.fresh_database("types").await;
        let client = ch.client(&db).with_compression(compression);
        exec(&client, ALL_TYPES_DDL).await;

        let rows: Vec<AllTypes> = (0..2_000).map(sample_row).collect();
        let mut insert = client.insert::<AllTypes>("all_types").await.unwrap();
        for row in &rows {
            insert.write(row).await.unwrap();
        }
        insert.end().await.unwrap();

        let back = client
            .query("SELECT ?fields FROM all_types ORDER BY u64_ DESC")
            .fetch_all::<AllTypes>()
            .await
            .unwrap();
        assert_eq!(back.len(), rows.len(), "{compression:?}");
        assert_eq!(back, rows, "{compression:?}");

        // Client-side binding and server-side parameters (multipart body).
        let site: u64 = client
            .query("SELECT count() FROM all_types WHERE site = ? AND country = {c:FixedString(2)}")
            .bind("site1")
            .param("c", "DE")
            .fetch_one()
            .await
            .unwrap();
        let expected = rows
            .iter()
            .filter(|r| r.site == "site1" && &r.country == b"DE")
            .count() as u64;
        assert_eq!(site, expected, "{compression:?}");
    }
}

#[tokio::test]
async fn server_defaults_not_chdb_defaults() {
    let ch = support::clickhouse();
    let client = ch.base_client();
    let (async_insert, mutations_sync): (String, String) = client
        .query(
            "SELECT toString(getSetting('async_insert')), toString(getSetting('mutations_sync'))",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (async_insert.as_str(), mutations_sync.as_str()),
        ("false", "0")
    );
}

#[tokio::test]
async fn partitions_deletes_and_mutations() {
    let ch = support::clickhouse();
    let db = ch.fresh_database("mutations").await;
    let client = ch.client(&db);
    exec(&client, ALL_TYPES_DDL).await;
    // Two months: 2023-11 (ts 1_700_000_000..) and 2024-01.
    let mut insert = client.insert::<AllTypes>("all_types").await.unwrap();
    for i in 0..300 {
        let mut row = sample_row(i);
        if i >= 200 {
            row.ts = 1_705_000_000 + i as u32;
        }
        insert.write(&row).await.unwrap();
    }
    insert.end().await.unwrap();
    assert_eq!(count(&client, "all_types").await, 300);

    exec(&client, "ALTER TABLE all_types DROP PARTITION 202401").await;
    assert_eq!(count(&client, "all_types").await, 200);

    // Lightweight delete is synchronous by default (lightweight_deletes_sync=2).
    exec(&client, "DELETE FROM all_types WHERE site = 'site0'").await;
    let left = (0..200).filter(|i| i % 3 != 0).count() as u64;
    assert_eq!(count(&client, "all_types").await, left);

    // A mutation with mutations_sync=2 is done when the statement returns.
    let sync = client.clone().with_setting("mutations_sync", "2");
    exec(&sync, "ALTER TABLE all_types DELETE WHERE country = 'DE'").await;
    let left = (0..200).filter(|i| i % 3 != 0 && i % 2 == 1).count() as u64;
    assert_eq!(count(&client, "all_types").await, left);
    let pending: u64 = client
        .query("SELECT count() FROM system.mutations WHERE database = currentDatabase() AND NOT is_done")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn ttl_removes_expired_rows() {
    let ch = support::clickhouse();
    let db = ch.fresh_database("ttl").await;
    let client = ch.client(&db);
    exec(
        &client,
        "CREATE TABLE t (ts DateTime, id UInt64) ENGINE = MergeTree ORDER BY id TTL ts + INTERVAL 1 DAY",
    )
    .await;
    exec(
        &client,
        "INSERT INTO t SELECT if(number % 2 = 0, now() - INTERVAL 10 DAY, now()), number FROM numbers(100)",
    )
    .await;
    exec(&client, "OPTIMIZE TABLE t FINAL").await;
    assert_eq!(count(&client, "t").await, 50);
}

#[tokio::test]
async fn errors_are_typed_like_a_server() {
    let ch = support::clickhouse();
    let db = ch.fresh_database("errors").await;
    for compression in BOTH {
        let client = ch.client(&db).with_compression(compression);
        let err = client
            .query("SELECT * FROM no_such_table")
            .fetch_all::<u64>()
            .await
            .unwrap_err();
        let text = bad_response(err);
        assert!(
            text.starts_with("Code: 60.") && text.contains("UNKNOWN_TABLE"),
            "{text}"
        );

        let err = client.query("SELEC 1").execute().await.unwrap_err();
        let text = bad_response(err);
        assert!(
            text.starts_with("Code: 62.") && text.contains("SYNTAX_ERROR"),
            "{text}"
        );

        let err = client
            .clone()
            .with_user("nobody")
            .with_password("wrong")
            .query("SELECT 1")
            .fetch_one::<u8>()
            .await
            .unwrap_err();
        let text = bad_response(err);
        assert!(
            text.starts_with("Code: 516.") && text.contains("AUTHENTICATION_FAILED"),
            "{text}"
        );

        // An insert into a missing table fails at the schema lookup or the insert.
        let err = match client.insert::<AllTypes>("missing").await {
            Err(e) => e,
            Ok(mut insert) => {
                let _ = insert.write(&sample_row(1)).await;
                insert.end().await.unwrap_err()
            }
        };
        assert!(bad_response(err).contains("UNKNOWN_TABLE"));
    }
}

#[tokio::test]
async fn an_error_in_the_middle_of_a_result_is_reported() {
    let ch = support::clickhouse();
    for compression in BOTH {
        let client = ch.base_client().with_compression(compression);
        let result = client
            .query("SELECT number, throwIf(number = 150000) FROM numbers(300000)")
            .fetch_all::<(u64, u8)>()
            .await;
        let text = bad_response(result.unwrap_err());
        assert!(text.contains("Code: 395."), "{compression:?}: {text}");
    }
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct Hit {
    writer: u8,
    seq: u64,
    payload: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserters_and_a_reader_lose_nothing() {
    const WRITERS: u8 = 4;
    const BATCH: u64 = 2_000;
    const MAX_BATCHES: u64 = 200;
    let ch = support::clickhouse();
    let db = ch.fresh_database("concurrent").await;
    let client = ch.client(&db);
    exec(
        &client,
        "CREATE TABLE hits (writer UInt8, seq UInt64, payload String) ENGINE = MergeTree ORDER BY (writer, seq)",
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(3);
    let done = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone().with_compression(if w % 2 == 0 {
            Compression::Lz4
        } else {
            Compression::None
        });
        let written = written.clone();
        writers.push(tokio::spawn(async move {
            let mut batches = 0;
            // Bounded by a deadline and a batch cap, whichever comes first.
            while Instant::now() < deadline && batches < MAX_BATCHES {
                let mut insert = client.insert::<Hit>("hits").await.unwrap();
                for i in 0..BATCH {
                    let seq = batches * BATCH + i;
                    let payload = format!("w{w}-{seq}");
                    insert
                        .write(&Hit {
                            writer: w,
                            seq,
                            payload,
                        })
                        .await
                        .unwrap();
                }
                insert.end().await.unwrap();
                written.fetch_add(BATCH, Ordering::SeqCst);
                batches += 1;
            }
            batches
        }));
    }
    let reader = {
        let client = client.clone();
        let done = done.clone();
        let written = written.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) {
                // Inserts are synchronous: whatever finished before this read
                // started is visible, and counts never go down.
                let floor = written.load(Ordering::SeqCst);
                let now = count(&client, "hits").await;
                assert!(now >= last, "count went down: {last} -> {now}");
                assert!(
                    now >= floor,
                    "finished inserts not visible: {now} < {floor}"
                );
                assert_eq!(now % BATCH, 0, "a partial batch is visible");
                last = now;
                reads += 1;
            }
            reads
        })
    };
    let mut total = 0;
    for w in writers {
        total += w.await.unwrap() * BATCH;
    }
    done.store(true, Ordering::SeqCst);
    let reads = reader.await.unwrap();
    assert!(reads > 0);
    assert!(total >= u64::from(WRITERS) * BATCH);
    assert_eq!(count(&client, "hits").await, total);
    let per_writer: Vec<(u8, u64, u64)> = client
        .query("SELECT writer, count(), uniqExact(seq) FROM hits GROUP BY writer ORDER BY writer")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(per_writer.len(), usize::from(WRITERS));
    for (_, rows, distinct) in per_writer {
        assert_eq!(rows, distinct, "duplicated rows");
    }
}

/// Tests the launcher itself: with `CLICKHOUSE_URL` set there may be none to start, so
/// it is compiled as ignored (see `build.rs`) and reported so.
#[tokio::test]
#[cfg_attr(
    hush_external_clickhouse,
    ignore = "tests the local launcher, and CLICKHOUSE_URL is set"
)]
async fn data_survives_stop_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = support::LocalClickHouse::start(dir.path().join("data"), 0);
    let client = server.client();
    exec(&client, "CREATE DATABASE keep").await;
    exec(
        &client,
        "CREATE TABLE keep.t (id UInt64, s LowCardinality(String)) ENGINE = MergeTree ORDER BY id",
    )
    .await;
    exec(
        &client,
        "INSERT INTO keep.t SELECT number, toString(number % 7) FROM numbers(12345)",
    )
    .await;
    let port = server.port();
    server.restart();
    assert_eq!(server.port(), port);
    let client = server.client();
    assert_eq!(count(&client, "keep.t").await, 12345);

    // And after a hard kill, committed inserts are still there.
    server.kill();
    assert!(!server.ping());
    server.start_again();
    assert_eq!(count(&server.client(), "keep.t").await, 12345);
    server.stop();
}

// --- raw HTTP ---------------------------------------------------------------------

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn authed(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let ch = support::clickhouse();
    req.header("X-ClickHouse-User", ch.user())
        .header("X-ClickHouse-Key", ch.password())
}

#[tokio::test]
async fn ping() {
    let ch = support::clickhouse();
    let resp = http()
        .get(format!("{}/ping", ch.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "Ok.\n");
}

#[tokio::test]
async fn success_headers() {
    let ch = support::clickhouse();
    let resp = authed(http().post(ch.url()))
        .query(&[("query_id", "compat-query-id")])
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["x-clickhouse-query-id"], "compat-query-id");
    let summary: serde_json::Value =
        serde_json::from_str(h["x-clickhouse-summary"].to_str().unwrap()).unwrap();
    assert!(summary.get("read_rows").is_some(), "{summary}");
    assert_eq!(resp.text().await.unwrap(), "1\n");
}

#[tokio::test]
async fn auth_failure_status_and_headers() {
    let ch = support::clickhouse();
    for req in [
        http()
            .post(ch.url())
            .header("X-ClickHouse-User", "default")
            .header("X-ClickHouse-Key", "definitely-wrong"),
        http().post(ch.url()).basic_auth("intruder", Some("x")),
        http()
            .post(ch.url())
            .query(&[("user", "default"), ("password", "nope")]),
    ] {
        let resp = req.body("SELECT 1").send().await.unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()["x-clickhouse-exception-code"], "516");
        let body = resp.text().await.unwrap();
        assert!(
            body.starts_with("Code: 516. DB::Exception:")
                && body.contains("(AUTHENTICATION_FAILED)"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn error_status_codes() {
    let ch = support::clickhouse();
    for (sql, status, code) in [
        ("SELECT * FROM nowhere_table", 404, "60"),
        ("SELEC 1", 400, "62"),
        ("SELECT throwIf(1)", 500, "395"),
    ] {
        let resp = authed(http().post(ch.url()))
            .body(sql)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{sql}");
        assert_eq!(resp.headers()["x-clickhouse-exception-code"], code, "{sql}");
        let body = resp.text().await.unwrap();
        assert!(
            body.starts_with(&format!("Code: {code}. DB::Exception:")),
            "{body}"
        );
    }
}

/// A native compressed block with method NONE (0x02): valid framing, and the
/// checksum computed as ClickHouse does (CityHash128 v1.0.2).
fn native_block(data: &[u8], corrupt: bool) -> Vec<u8> {
    let mut framed = vec![0x02];
    framed.extend_from_slice(&(9 + data.len() as u32).to_le_bytes());
    framed.extend_from_slice(&(data.len() as u32).to_le_bytes());
    framed.extend_from_slice(data);
    let hash = cityhash_rs::cityhash_102_128(&framed).rotate_right(64);
    let mut out = hash.to_le_bytes().to_vec();
    if corrupt {
        out[3] ^= 0x55;
    }
    out.extend_from_slice(&framed);
    out
}

#[tokio::test]
async fn decompress_checks_native_block_checksums() {
    let ch = support::clickhouse();
    let db = ch.fresh_database("checksum").await;
    exec(
        &ch.client(&db),
        "CREATE TABLE t (a UInt32, s String) ENGINE = MergeTree ORDER BY a",
    )
    .await;
    let url = format!("{}/?database={db}&decompress=1", ch.url());
    let query = "INSERT INTO t FORMAT TSV";

    let resp = authed(http().post(&url))
        .query(&[("query", query)])
        .body(native_block(b"1\tone\n2\ttwo\n", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    let resp = authed(http().post(&url))
        .query(&[("query", query)])
        .body(native_block(b"3\tthree\n", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["x-clickhouse-exception-code"], "40");
    let body = resp.text().await.unwrap();
    assert!(body.contains("(CHECKSUM_DOESNT_MATCH)"), "{body}");
    assert_eq!(count(&ch.client(&db), "t").await, 2, "no garbage rows");
}

#[tokio::test]
async fn compress_returns_native_lz4_blocks() {
    let ch = support::clickhouse();
    let resp = authed(http().post(ch.url()))
        .query(&[("compress", "1")])
        .body("SELECT number FROM numbers(100000) FORMAT TSV")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    let mut rest = &body[..];
    let mut text = Vec::new();
    while !rest.is_empty() {
        let checksum = u128::from_le_bytes(rest[..16].try_into().unwrap());
        assert_eq!(rest[16], 0x82, "LZ4 method byte");
        let compressed = u32::from_le_bytes(rest[17..21].try_into().unwrap()) as usize;
        let size = u32::from_le_bytes(rest[21..25].try_into().unwrap()) as usize;
        let framed = &rest[16..16 + compressed];
        assert_eq!(
            checksum,
            cityhash_rs::cityhash_102_128(framed).rotate_right(64)
        );
        text.extend(lz4_flex::block::decompress(&framed[9..], size).unwrap());
        rest = &rest[16 + compressed..];
    }
    let expected: String = (0..100_000).map(|n| format!("{n}\n")).collect();
    assert_eq!(String::from_utf8(text).unwrap(), expected);
}

#[tokio::test]
async fn accept_encoding_gzip() {
    let ch = support::clickhouse();
    let resp = authed(http().post(ch.url()))
        .query(&[("enable_http_compression", "1")])
        .header("Accept-Encoding", "gzip")
        .body("SELECT number FROM numbers(1000)")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let body = resp.bytes().await.unwrap();
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip magic");

    // With compression disabled the same request is answered in plain text.
    let resp = authed(http().post(ch.url()))
        .query(&[("enable_http_compression", "0")])
        .header("Accept-Encoding", "gzip")
        .body("SELECT 7")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(resp.text().await.unwrap(), "7\n");
}

#[tokio::test]
async fn multipart_query_and_parameters() {
    let ch = support::clickhouse();
    let boundary = "compat-boundary-7d3";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n\
         SELECT {{a:UInt32}} + 1, {{s:String}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"param_a\"\r\n\r\n41\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"param_s\"\r\n\r\nit's\r\n\
         --{boundary}--\r\n"
    );
    let resp = authed(http().post(ch.url()))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "42\tit\\'s\n");
}

#[tokio::test]
async fn settings_do_not_leak_between_requests() {
    let ch = support::clickhouse();
    let db = ch.fresh_database("leak").await;
    let get = |params: Vec<(&'static str, String)>, sql: &'static str| {
        authed(http().post(ch.url()))
            .query(&params)
            .body(sql)
            .send()
    };
    let sql = "SELECT getSetting('max_block_size'), currentDatabase()";
    let baseline = get(vec![], sql).await.unwrap().text().await.unwrap();
    assert!(baseline.ends_with("\tdefault\n"), "{baseline}");

    let changed = get(
        vec![("max_block_size", "1234".into()), ("database", db.clone())],
        sql,
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert_eq!(changed, format!("1234\t{db}\n"));

    // SET and USE in a request without session_id end with that request.
    let resp = get(vec![], "SET max_block_size = 777").await.unwrap();
    assert_eq!(resp.status(), 200);
    for _ in 0..4 {
        let again = get(vec![], sql).await.unwrap().text().await.unwrap();
        assert_eq!(again, baseline);
    }
}

#[tokio::test]
async fn sessions_keep_settings() {
    let ch = support::clickhouse();
    let session = format!("compat-{}", std::process::id());
    let run = |sql: &'static str| {
        authed(http().post(ch.url()))
            .query(&[("session_id", session.as_str())])
            .body(sql)
            .send()
    };
    assert_eq!(
        run("SET max_block_size = 4321").await.unwrap().status(),
        200
    );
    let v = run("SELECT getSetting('max_block_size')")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(v, "4321\n");
}

#[derive(Row, Serialize)]
struct Blob {
    id: u64,
    data: String,
}

/// 50 MB through one INSERT, streamed by the crate with a chunked body.
#[tokio::test]
async fn a_large_streamed_insert_completes() {
    let ch = support::clickhouse();
    let db = ch.fresh_database("large").await;
    for compression in BOTH {
        let client = ch.client(&db).with_compression(compression);
        exec(&client, "DROP TABLE IF EXISTS blobs").await;
        exec(
            &client,
            "CREATE TABLE blobs (id UInt64, data String) ENGINE = MergeTree ORDER BY id",
        )
        .await;
        const ROWS: u64 = 50_000;
        let mut insert = client.insert::<Blob>("blobs").await.unwrap();
        for id in 0..ROWS {
            // 1 KiB of poorly compressible text per row.
            let mut data: String = (0..64)
                .map(|k| format!("{:016x}|", id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k))
                .collect();
            data.truncate(1024);
            insert.write(&Blob { id, data }).await.unwrap();
        }
        insert.end().await.unwrap();
        let (rows, bytes): (u64, u64) = client
            .query("SELECT count(), sum(length(data)) FROM blobs")
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(rows, ROWS);
        assert_eq!(bytes, ROWS * 1024);
    }
    if let Some(pid) = ch.local_pid() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm = status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("");
        eprintln!("launcher peak memory after 2x50 MB inserts: {hwm}");
    }
}

// --- results that span many blocks, and empty results --------------------------------
//
// The engine formats every block on its own; the launcher must still answer with
// exactly one document: one header, totals once at the end, a header even when
// there are no rows, whole-document formats (JSON, ...) as one document.

const MANY_ROWS: u64 = 200_000;
/// Small blocks, so that every result below spans many of them.
const SMALL_BLOCKS: (&str, &str) = ("max_block_size", "1000");

#[derive(Debug, PartialEq, Row, Deserialize)]
struct Numbered {
    n: u64,
    s: String,
}

fn numbered(rows: u64) -> Vec<Numbered> {
    (0..rows)
        .map(|n| Numbered {
            n,
            s: n.to_string(),
        })
        .collect()
}

/// `fetch` with the crate's default validation (RowBinaryWithNamesAndTypes: a
/// names-and-types header the crate reads once, before the rows).
#[tokio::test]
async fn validated_fetch_over_many_blocks() {
    let ch = support::clickhouse();
    for compression in BOTH {
        let client = ch
            .base_client()
            .with_compression(compression)
            .with_setting(SMALL_BLOCKS.0, SMALL_BLOCKS.1);
        let rows = client
            .query("SELECT number AS n, toString(number) AS s FROM numbers(?)")
            .bind(MANY_ROWS)
            .fetch_all::<Numbered>()
            .await
            .unwrap_or_else(|e| panic!("{compression:?}: {e}"));
        assert_eq!(rows.len() as u64, MANY_ROWS, "{compression:?}");
        assert!(rows == numbered(MANY_ROWS), "{compression:?}: rows differ");

        // Streamed row by row, too.
        let mut cursor = client
            .query("SELECT number AS n, toString(number) AS s FROM numbers(?)")
            .bind(MANY_ROWS)
            .fetch::<Numbered>()
            .unwrap();
        let mut next = 0;
        while let Some(row) = cursor.next().await.unwrap() {
            assert_eq!(
                row,
                Numbered {
                    n: next,
                    s: next.to_string()
                }
            );
            next += 1;
        }
        assert_eq!(next, MANY_ROWS, "{compression:?}");
    }
}

#[tokio::test]
async fn validated_fetch_of_an_empty_result() {
    let ch = support::clickhouse();
    for compression in BOTH {
        let client = ch.base_client().with_compression(compression);
        let sql = "SELECT number AS n, toString(number) AS s FROM numbers(10) WHERE 0";
        let rows = client
            .query(sql)
            .fetch_all::<Numbered>()
            .await
            .unwrap_or_else(|e| panic!("{compression:?}: {e}"));
        assert!(rows.is_empty(), "{compression:?}: {rows:?}");
        let row = client
            .query(sql)
            .fetch_optional::<Numbered>()
            .await
            .unwrap_or_else(|e| panic!("{compression:?}: {e}"));
        assert_eq!(row, None, "{compression:?}");
        let err = client.query(sql).fetch_one::<Numbered>().await.unwrap_err();
        assert!(
            matches!(err, Error::RowNotFound),
            "{compression:?}: {err:?}"
        );
    }
}

/// The raw body of a successful query.
async fn raw_result(sql: &str, params: &[(&str, &str)]) -> Vec<u8> {
    let ch = support::clickhouse();
    let resp = authed(http().post(ch.url()))
        .query(params)
        .body(sql.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{sql}");
    resp.bytes().await.unwrap().to_vec()
}

async fn text_result(sql: &str, params: &[(&str, &str)]) -> String {
    String::from_utf8(raw_result(sql, params).await).unwrap()
}

fn many(format: &str) -> String {
    format!("SELECT number AS n, toString(number) AS s FROM numbers({MANY_ROWS}) FORMAT {format}")
}

fn empty(format: &str) -> String {
    format!("SELECT number AS n, toString(number) AS s FROM numbers(10) WHERE 0 FORMAT {format}")
}

#[tokio::test]
async fn header_formats_have_one_header_over_many_blocks() {
    let rows = |sep: char, quote: &str| -> String {
        (0..MANY_ROWS)
            .map(|n| format!("{n}{sep}{quote}{n}{quote}\n"))
            .collect()
    };
    let cases = [
        ("CSVWithNames", "\"n\",\"s\"\n", rows(',', "\"")),
        (
            "CSVWithNamesAndTypes",
            "\"n\",\"s\"\n\"UInt64\",\"String\"\n",
            rows(',', "\""),
        ),
        ("TSVWithNames", "n\ts\n", rows('\t', "")),
        (
            "TSVWithNamesAndTypes",
            "n\ts\nUInt64\tString\n",
            rows('\t', ""),
        ),
        (
            "TabSeparatedWithNamesAndTypes",
            "n\ts\nUInt64\tString\n",
            rows('\t', ""),
        ),
        (
            "JSONCompactEachRowWithNamesAndTypes",
            "[\"n\", \"s\"]\n[\"UInt64\", \"String\"]\n",
            (0..MANY_ROWS)
                .map(|n| format!("[{n}, \"{n}\"]\n"))
                .collect(),
        ),
    ];
    for (format, header, body) in cases {
        let got = text_result(&many(format), &[SMALL_BLOCKS]).await;
        assert_eq!(
            got.matches(header).count(),
            1,
            "{format}: the header appears once"
        );
        assert!(got == format!("{header}{body}"), "{format}: body differs");
    }
}

#[tokio::test]
async fn rowbinary_with_names_and_types_has_one_header_over_many_blocks() {
    let got = raw_result(&many("RowBinaryWithNamesAndTypes"), &[SMALL_BLOCKS]).await;
    let mut expected = b"\x02\x01n\x01s\x06UInt64\x06String".to_vec();
    for n in 0..MANY_ROWS {
        let s = n.to_string();
        expected.extend_from_slice(&n.to_le_bytes());
        expected.push(s.len() as u8);
        expected.extend_from_slice(s.as_bytes());
    }
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "bytes differ");
}

#[tokio::test]
async fn empty_results_carry_the_header() {
    for (format, expected) in [
        ("CSVWithNames", &b"\"n\",\"s\"\n"[..]),
        ("TSVWithNamesAndTypes", b"n\ts\nUInt64\tString\n"),
        ("JSONCompactEachRowWithNames", b"[\"n\", \"s\"]\n"),
        ("RowBinaryWithNames", b"\x02\x01n\x01s"),
        (
            "RowBinaryWithNamesAndTypes",
            b"\x02\x01n\x01s\x06UInt64\x06String",
        ),
        ("TSV", b""),
        ("RowBinary", b""),
    ] {
        assert_eq!(raw_result(&empty(format), &[]).await, expected, "{format}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&text_result(&empty("JSON"), &[]).await).unwrap();
    assert_eq!(json["rows"], 0);
    assert_eq!(json["meta"][1]["name"], "s");
    assert_eq!(json["data"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn whole_document_formats_are_one_document_over_many_blocks() {
    for format in ["JSON", "JSONCompact", "JSONStrings"] {
        let text = text_result(&many(format), &[SMALL_BLOCKS]).await;
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{format} is not one JSON document: {e}"));
        assert_eq!(json["rows"], MANY_ROWS, "{format}");
        let data = json["data"].as_array().unwrap();
        assert_eq!(data.len() as u64, MANY_ROWS, "{format}");
        let last = &data[data.len() - 1];
        let s = last.get("s").or_else(|| last.get(1)).unwrap();
        assert_eq!(
            s,
            &serde_json::json!((MANY_ROWS - 1).to_string()),
            "{format}"
        );
    }

    // JSONEachRow is a row format, until output_format_json_array_of_rows
    // makes it one JSON array.
    let text = text_result(
        &many("JSONEachRow"),
        &[SMALL_BLOCKS, ("output_format_json_array_of_rows", "1")],
    )
    .await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(rows.len() as u64, MANY_ROWS);

    // Vertical numbers its rows across the whole result (up to
    // output_format_pretty_max_rows, 1000 by default).
    let text = text_result(
        "SELECT number FROM numbers(900) FORMAT Vertical",
        &[("max_block_size", "100")],
    )
    .await;
    assert_eq!(text.matches("Row 1:\n").count(), 1, "{text}");
    assert!(text.contains("Row 900:\n"), "{text}");

    // Values separates every row with a comma, across blocks too.
    let text = text_result(
        "SELECT number FROM numbers(3000) FORMAT Values",
        &[SMALL_BLOCKS],
    )
    .await;
    let expected: Vec<String> = (0..3000).map(|n| format!("({n})")).collect();
    assert_eq!(text, expected.join(","));
}

#[tokio::test]
async fn totals_and_extremes_come_once_after_the_rows() {
    let sql = "SELECT number % 3 AS k, count() AS c FROM numbers(3000) GROUP BY k \
               WITH TOTALS ORDER BY k FORMAT TSVWithNames";
    let got = text_result(sql, &[("extremes", "1"), ("max_block_size", "1")]).await;
    assert_eq!(
        got,
        "k\tc\n0\t1000\n1\t1000\n2\t1000\n\n0\t3000\n\n0\t1000\n2\t1000\n"
    );
    // With no rows at all, the header and the totals still come.
    let sql = "SELECT number % 3 AS k, count() AS c FROM numbers(3000) WHERE 0 GROUP BY k \
               WITH TOTALS FORMAT CSVWithNames";
    let got = text_result(sql, &[]).await;
    assert_eq!(got.matches("\"k\",\"c\"\n").count(), 1, "{got:?}");
    assert!(got.contains("\n0,0\n"), "totals: {got:?}");
}
