//! Retention purge, lease and data-subject requests against a real ClickHouse.

#[path = "support/db.rs"]
mod db;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clickhouse::Client;
use db::{insert_events, migrated_config};
use hush::enrich::row::EventRow;
use hush::store::Timeouts;
use hush::store::dsr::{self, ExportFormat, Selector};
use hush::store::purge::{self, LogProgress, PurgeMetrics, PurgeOptions, PurgeReport, Purger};
use jiff::Timestamp;

/// Bounds of every store call in these tests: generous, they only stop a hang.
const T: Timeouts = Timeouts {
    query: Duration::from_secs(60),
    mutation: Duration::from_secs(600),
};

const SITES_TOML: &str = r#"
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
fn now() -> Timestamp {
    ts("2025-06-15T10:00:00Z")
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn secs(s: &str) -> u32 {
    ts(s).as_second() as u32
}

/// Cutoffs worked out by hand (not with the code under test):
/// * utc: 2025-06-15 − 30 d = 2025-05-16, midnight UTC;
/// * tokyo: local today 2025-06-15 (19:00 JST) − 400 d = 2024-05-11, 00:00 JST = 05-10 15:00Z;
/// * la: local today 2025-06-15 (03:00 PDT) − 800 d = 2023-04-07, 00:00 PDT = 07:00Z;
/// * gone (not configured): default 395 d in UTC = 2024-05-16.
fn expected_cutoffs() -> BTreeMap<&'static str, u32> {
    BTreeMap::from([
        ("utc.example", secs("2025-05-16T00:00:00Z")),
        ("tokyo.example", secs("2024-05-10T15:00:00Z")),
        ("la.example", secs("2023-04-07T07:00:00Z")),
        ("gone.example", secs("2024-05-16T00:00:00Z")),
    ])
}

pub fn row(site: &str, timestamp: u32, visitor_id: u64, props: Vec<(String, String)>) -> EventRow {
    EventRow {
        site: Arc::from(site),
        timestamp,
        name: "pageview".into(),
        visitor_id,
        session_id: visitor_id ^ 1,
        entry_page: "/".into(),
        hostname: site.into(),
        pathname: format!("/p/{}", timestamp % 7),
        browser: Arc::from("Firefox"),
        browser_version: Arc::from("128.0"),
        os: Arc::from("Linux"),
        device: "desktop",
        country: *b"DE",
        props,
        ..EventRow::default()
    }
}

/// One purge run at [`now`], with the test's actor name, logging its progress.
async fn run_at_now(purger: &Purger, dry_run: bool) -> PurgeReport {
    purger
        .run(
            &PurgeOptions {
                now: now(),
                dry_run,
                actor: "test".into(),
            },
            &LogProgress,
        )
        .await
        .unwrap()
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct DayCount {
    site: String,
    day: u32,
    n: u64,
}

async fn counts_by_site_day(client: &Client) -> BTreeMap<(String, u32), u64> {
    client
        .query(
            "SELECT toString(site) AS site, toUInt32(toStartOfDay(timestamp)) AS day, count() AS n \
             FROM events GROUP BY site, day",
        )
        .fetch_all::<DayCount>()
        .await
        .unwrap()
        .into_iter()
        .map(|r| ((r.site, r.day), r.n))
        .collect()
}

fn expected_by_site_day(
    rows: &[(String, u32)],
    keep: impl Fn(&str, u32) -> bool,
) -> BTreeMap<(String, u32), u64> {
    let mut map = BTreeMap::new();
    for (site, t) in rows {
        if keep(site, *t) {
            *map.entry((site.clone(), t - t % 86_400)).or_insert(0) += 1;
        }
    }
    map
}

async fn active_partitions(client: &Client) -> Vec<u32> {
    let parts: Vec<String> = client
        .query(
            "SELECT DISTINCT partition FROM system.parts \
             WHERE database = currentDatabase() AND table = 'events' AND active ORDER BY partition",
        )
        .fetch_all()
        .await
        .unwrap();
    parts.iter().map(|p| p.parse().unwrap()).collect()
}

fn month_of(t: u32) -> u32 {
    let d = Timestamp::from_second(i64::from(t))
        .unwrap()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC);
    d.year() as u32 * 100 + d.month() as u32
}

/// Three years of hits: every day, for each site, ten rows 2.4 h apart (so every local
/// midnight has rows just before and after it), plus rows one second around each cutoff.
fn history_rows() -> Vec<EventRow> {
    let start = secs("2022-06-15T00:00:00Z");
    let end = secs("2025-06-15T09:00:00Z");
    let mut rows = Vec::new();
    let mut vid = 1u64;
    for site in ["utc.example", "tokyo.example", "la.example", "gone.example"] {
        let mut day = start;
        while day < end {
            let per_day = if site == "gone.example" { 2 } else { 10 };
            for i in 0..per_day {
                let t = day + i * (86_400 / per_day) + 61;
                if t < end {
                    rows.push(row(site, t, vid, vec![]));
                    vid += 1;
                }
            }
            day += 86_400;
        }
    }
    for (site, cutoff) in expected_cutoffs() {
        for delta in [-3_601i64, -1, 0, 1, 3_600] {
            let t = (i64::from(cutoff) + delta) as u32;
            rows.push(row(site, t, vid, vec![]));
            vid += 1;
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_keeps_exactly_the_retained_days() {
    let (config, client) = migrated_config("purge", SITES_TOML).await;
    let rows = history_rows();
    assert!(rows.len() > 30_000, "{}", rows.len());
    for chunk in rows.chunks(20_000) {
        insert_events(&client, chunk).await;
    }
    // Stale and current salts: the purge must remove only the stale one.
    for day in ["2025-06-10", "2025-06-14", "2025-06-15"] {
        client
            .query("INSERT INTO salts (day, salt) VALUES (toDate(?), ?)")
            .bind(day)
            .bind("0123456789abcdef0123456789abcdef")
            .execute()
            .await
            .unwrap();
    }
    let all: Vec<(String, u32)> = rows
        .iter()
        .map(|r| (r.site.to_string(), r.timestamp))
        .collect();
    let cutoffs = expected_cutoffs();

    // The library's cutoffs agree with the hand-computed ones.
    for site in &config.sites {
        let policy = purge::SitePolicy::from_config(site, &config.retention).unwrap();
        assert_eq!(
            purge::to_db_seconds(policy.cutoff(now()).unwrap()),
            cutoffs[site.domain.as_str()],
            "{}",
            site.domain
        );
    }

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = PurgeMetrics::register(&mut registry);
    let purger = Purger::new(client.clone(), &config, metrics).unwrap();

    // Dry run: reports per site and month exactly the rows older than the cutoff, changes nothing.
    let parts_before = active_partitions(&client).await;
    let dry = run_at_now(&purger, true).await;
    let mut expected_dry: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for (site, t) in &all {
        if *t < cutoffs[site.as_str()] {
            *expected_dry
                .entry((site.clone(), month_of(*t)))
                .or_insert(0) += 1;
        }
    }
    let got_dry: BTreeMap<(String, u32), u64> = dry
        .actions
        .iter()
        .map(|a| ((a.site.clone(), a.month), a.rows))
        .collect();
    assert_eq!(got_dry, expected_dry);
    assert_eq!(dry.rows_deleted, expected_dry.values().sum::<u64>());
    assert_eq!(dry.stale_salts, 1);
    assert_eq!(
        counts_by_site_day(&client).await,
        expected_by_site_day(&all, |_, _| true)
    );
    assert_eq!(active_partitions(&client).await, parts_before);

    // Real run, with hits arriving all along.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut written = Vec::new();
            let mut vid = 10_000_000u64;
            let base = secs("2025-06-15T09:30:00Z");
            while !stop.load(Ordering::Relaxed) || written.len() < 500 {
                let batch: Vec<EventRow> = (0..100)
                    .map(|i| {
                        vid += 1;
                        let site = ["utc.example", "tokyo.example", "la.example"][i % 3];
                        row(site, base + (vid % 1_800) as u32, vid, vec![])
                    })
                    .collect();
                insert_events(&client, &batch).await;
                written.extend(batch.iter().map(|r| (r.site.to_string(), r.timestamp)));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            written
        })
    };
    let report = run_at_now(&purger, false).await;
    stop.store(true, Ordering::Relaxed);
    let concurrent = writer.await.unwrap();
    assert!(concurrent.len() >= 500);

    let mut expected_all = all.clone();
    expected_all.extend(concurrent);
    assert_eq!(
        counts_by_site_day(&client).await,
        expected_by_site_day(&expected_all, |site, t| t >= cutoffs[site]),
        "rows per site and day after the purge"
    );
    assert_eq!(report.rows_deleted, expected_dry.values().sum::<u64>());
    assert_eq!(report.stale_salts, 1);

    // Whole months before every cutoff (the earliest is la's, 2023-04-07) were dropped.
    let parts = active_partitions(&client).await;
    let expected_dropped: Vec<u32> = parts_before
        .iter()
        .copied()
        .filter(|&p| p < 202304)
        .collect();
    assert!(!expected_dropped.is_empty());
    assert_eq!(report.dropped_partitions, expected_dropped);
    assert!(parts.iter().all(|&p| p >= 202304), "{parts:?}");
    assert!(
        parts.contains(&202304) && parts.contains(&202506),
        "{parts:?}"
    );

    // Salts: only yesterday's and today's remain.
    let salt_days: Vec<String> = client
        .query("SELECT toString(day) FROM salts ORDER BY day")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(salt_days, vec!["2025-06-14", "2025-06-15"]);

    // The backstop TTL is in place.
    let engine: String = client
        .query("SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'events'")
        .fetch_one()
        .await
        .unwrap();
    assert!(engine.contains("toIntervalDay(1100)"), "{engine}");

    // Audit rows.
    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct LogCount {
        method: String,
        outcome: String,
        n: u64,
        before: u64,
        after: u64,
    }
    let log: Vec<LogCount> = client
        .query(
            "SELECT toString(method) AS method, toString(outcome) AS outcome, count() AS n, \
             sum(rows_before) AS before, sum(rows_after) AS after \
             FROM purge_log WHERE run_id = ? GROUP BY method, outcome ORDER BY method",
        )
        .bind(&report.run_id)
        .fetch_all()
        .await
        .unwrap();
    let by_method: BTreeMap<&str, &LogCount> = log.iter().map(|l| (l.method.as_str(), l)).collect();
    assert!(log.iter().all(|l| l.outcome == "success"), "{log:?}");
    assert_eq!(by_method["run"].n, 1);
    assert_eq!(by_method["salt_cleanup"].before, 1);
    let logged_rows = by_method["drop_partition"].before + by_method["delete"].before;
    assert_eq!(logged_rows, report.rows_deleted);
    assert_eq!(by_method["delete"].after, 0);
    let dry_logged: u64 = client
        .query("SELECT count() FROM purge_log WHERE run_id = ? AND method = 'dry_run'")
        .bind(&dry.run_id)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(dry_logged, 1);

    // Metrics.
    let text = hush::metrics::render(&registry);
    assert!(
        text.contains("hush_purge_runs_total{outcome=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "hush_purge_rows_deleted_total {}",
            report.rows_deleted
        )),
        "{text}"
    );
    assert!(
        !text.contains("hush_purge_last_success_timestamp_seconds 0\n"),
        "{text}"
    );

    // A second run deletes nothing.
    let again = run_at_now(&purger, false).await;
    assert_eq!(again.rows_deleted, 0, "{again:?}");
    assert!(again.actions.is_empty() && again.dropped_partitions.is_empty());
    assert_eq!(again.stale_salts, 0);
    assert!(!again.ttl_changed);

    let history = purge::history(&client, T.query, 1000).await.unwrap();
    assert!(
        history
            .iter()
            .any(|r| r.run_id == again.run_id && r.method == "run")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_admits_one_holder_at_a_time() {
    let (_config, client) = migrated_config("lease", SITES_TOML).await;
    let settle = Duration::from_millis(100);
    let ttl = Duration::from_secs(60);
    let a = purge::Lease::acquire(&client, "a", ttl, settle, T.query)
        .await
        .unwrap();
    let err = purge::Lease::acquire(&client, "b", ttl, settle, T.query)
        .await
        .err()
        .expect("b must not get the lease while a holds it");
    assert!(
        matches!(err, purge::PurgeError::Busy { ref owner } if owner == "a"),
        "{err}"
    );
    a.release().await.unwrap();
    let b = purge::Lease::acquire(&client, "b", ttl, settle, T.query)
        .await
        .unwrap();
    // Simultaneous claimants: exactly one wins.
    b.release().await.unwrap();
    let (x, y) = tokio::join!(
        purge::Lease::acquire(&client, "x", ttl, settle, T.query),
        purge::Lease::acquire(&client, "y", ttl, settle, T.query),
    );
    assert_eq!(
        u8::from(x.is_ok()) + u8::from(y.is_ok()),
        1,
        "x: {:?}, y: {:?}",
        x.as_ref().err(),
        y.as_ref().err()
    );
    // An expired lease frees itself.
    for held in [x, y].into_iter().flatten() {
        held.release().await.unwrap();
    }
    let short = purge::Lease::acquire(&client, "short", Duration::from_secs(1), settle, T.query)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match purge::Lease::acquire(&client, "next", ttl, settle, T.query).await {
            Ok(_) => break,
            Err(purge::PurgeError::Busy { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("lease never expired: {e}"),
        }
    }
    drop(short);
}

/// Sends the shutdown signal when the purge reports its `at`-th step, i.e. while the
/// run holds the lease and is between two steps.
struct StopAtStep {
    seen: std::sync::atomic::AtomicUsize,
    at: usize,
    stop: tokio::sync::watch::Sender<bool>,
}

impl purge::Progress for StopAtStep {
    fn start(&self, _steps: u64) {}
    fn step(&self, _message: &str) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            let _ = self.stop.send(true);
        }
    }
    fn finish(&self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_purge_between_steps_and_releases_the_lease() {
    let (config, client) = migrated_config("purge_stop", SITES_TOML).await;
    // Three months older than every site's cutoff: three DROP PARTITION steps.
    let rows: Vec<EventRow> = [
        "2022-01-10T12:00:00Z",
        "2022-02-10T12:00:00Z",
        "2022-03-10T12:00:00Z",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| row("utc.example", secs(t), i as u64 + 1, vec![]))
    .collect();
    insert_events(&client, &rows).await;
    assert_eq!(active_partitions(&client).await, [202201, 202202, 202203]);
    let purger = Purger::new(client.clone(), &config, PurgeMetrics::default()).unwrap();
    let opts = PurgeOptions {
        now: now(),
        dry_run: false,
        actor: "test".into(),
    };

    // Already shutting down: no lease is taken and nothing is touched.
    let (stopped_tx, stopped_rx) = tokio::sync::watch::channel(true);
    let err = purge::run_with_lease_until(&purger, &opts, &LogProgress, &stopped_rx)
        .await
        .expect_err("a stopped process must not purge");
    assert!(matches!(err, purge::PurgeError::Stopped), "{err}");
    assert_eq!(active_partitions(&client).await, [202201, 202202, 202203]);
    drop(stopped_tx);

    // Shutdown arrives while the first partition's step is done and the second's is
    // about to start: the task ends on its own, like serve awaits it.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let progress = StopAtStep {
        seen: Default::default(),
        at: 2,
        stop: stop_tx,
    };
    let task = tokio::spawn(async move {
        purge::run_with_lease_until(&purger, &opts, &progress, &stop_rx).await
    });
    let result = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("the purge must end after the shutdown signal")
        .unwrap();
    let err = result.expect_err("the run must stop, not finish");
    assert!(matches!(err, purge::PurgeError::Stopped), "{err}");
    // Stopped between steps: the first month went, the others wait for the next run.
    assert_eq!(active_partitions(&client).await, [202202, 202203]);

    // The lease (6 h TTL) was released: another instance gets it on its first try.
    let other = purge::Lease::acquire(
        &client,
        "other-instance",
        Duration::from_secs(60),
        Duration::from_millis(100),
        T.query,
    )
    .await
    .expect("the stopped run must have released its lease");
    other.release().await.unwrap();

    // The audit log says the run stopped (not success), next to the step it completed.
    let log = purge::history(&client, T.query, 20).await.unwrap();
    let run = log
        .iter()
        .find(|r| r.method == "run" && r.actor == "test")
        .expect("the stopped run is logged");
    assert_eq!(run.outcome, "stopped", "{run:?}");
    let drops: Vec<&str> = log
        .iter()
        .filter(|r| r.run_id == run.run_id && r.method == "drop_partition")
        .map(|r| r.partition.as_str())
        .collect();
    assert_eq!(drops, ["202201"]);
}

fn prop(k: &str, v: &str) -> Vec<(String, String)> {
    vec![(k.to_owned(), v.to_owned())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_erase_by_property_and_visitor() {
    let (_config, client) = migrated_config("dsr", SITES_TOML).await;
    let base = secs("2025-06-01T00:00:00Z");
    let mut rows = Vec::new();
    for i in 0..3_000u32 {
        let site = if i % 2 == 0 {
            "utc.example"
        } else {
            "la.example"
        };
        let props = match i % 5 {
            0 => prop("user", "h-alice"),
            1 => prop("user", "h-bob"),
            2 => prop("other", "h-alice"),
            3 => prop("user", ""),
            _ => vec![],
        };
        let visitor = if i % 7 == 0 {
            4242
        } else {
            u64::from(i) + 10_000
        };
        rows.push(row(site, base + i * 60, visitor, props));
    }
    insert_events(&client, &rows).await;

    let alice = Selector {
        site: "utc.example".into(),
        props: prop("user", "h-alice"),
        ..Selector::default()
    };
    let is_alice = |r: &EventRow| {
        &*r.site == "utc.example" && r.props.iter().any(|(k, v)| k == "user" && v == "h-alice")
    };
    let expected_alice = rows.iter().filter(|r| is_alice(r)).count();
    assert!(expected_alice > 100);

    // Export, JSON lines: exactly the matching rows.
    let mut cursor = dsr::export(&client, T.query, &alice, ExportFormat::JsonLines).unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = cursor.next().await.unwrap() {
        out.extend_from_slice(&chunk);
    }
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), expected_alice);
    assert!(
        lines
            .iter()
            .all(|l| l["site"] == "utc.example" && l["props"]["user"] == "h-alice")
    );

    // CSV: header plus one line per row.
    let mut cursor = dsr::export(&client, T.query, &alice, ExportFormat::Csv).unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = cursor.next().await.unwrap() {
        out.extend_from_slice(&chunk);
    }
    let csv = String::from_utf8(out).unwrap();
    assert!(
        csv.starts_with("\"site\",\"timestamp\""),
        "{}",
        &csv[..80.min(csv.len())]
    );
    assert_eq!(csv.lines().count(), expected_alice + 1);

    // An empty value matches only rows that have the key with an empty value.
    let empty = Selector {
        site: "utc.example".into(),
        props: prop("user", ""),
        ..Selector::default()
    };
    let expected_empty = rows
        .iter()
        .filter(|r| &*r.site == "utc.example" && r.props == prop("user", ""))
        .count() as u64;
    assert_eq!(empty.count(&client, T.query).await.unwrap(), expected_empty);

    // Erase by property: exactly those rows go.
    let total = rows.len() as u64;
    let report = dsr::erase(&client, T, &alice, "test").await.unwrap();
    assert_eq!(report.rows_before, expected_alice as u64);
    assert_eq!(report.rows_after, 0);
    let left: u64 = client
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(left, total - expected_alice as u64);
    assert_eq!(alice.count(&client, T.query).await.unwrap(), 0);

    // Erase by visitor id and time range on the other site.
    let from = base + 600 * 60;
    let visitor = Selector {
        site: "la.example".into(),
        visitor_id: Some(4242),
        from: Some(Timestamp::from_second(i64::from(from)).unwrap()),
        ..Selector::default()
    };
    let expected_visitor = rows
        .iter()
        .filter(|r| &*r.site == "la.example" && r.visitor_id == 4242 && r.timestamp >= from)
        .count() as u64;
    assert!(expected_visitor > 10);
    let report = dsr::erase(&client, T, &visitor, "test").await.unwrap();
    assert_eq!(report.rows_before, expected_visitor);
    let still_4242: u64 = client
        .query("SELECT count() FROM events WHERE visitor_id = 4242")
        .fetch_one()
        .await
        .unwrap();
    let expected_still = rows
        .iter()
        .filter(|r| r.visitor_id == 4242 && !is_alice(r))
        .count() as u64
        - expected_visitor;
    assert_eq!(still_4242, expected_still);

    // A site-only selector is refused by erase; site deletion removes just that site.
    let site_only = Selector {
        site: "utc.example".into(),
        ..Selector::default()
    };
    assert!(matches!(
        dsr::erase(&client, T, &site_only, "test").await,
        Err(purge::PurgeError::Invalid(_))
    ));
    let before_la = Selector {
        site: "la.example".into(),
        ..Selector::default()
    }
    .count(&client, T.query)
    .await
    .unwrap();
    let report = dsr::delete_site(&client, T, "utc.example", "test")
        .await
        .unwrap();
    assert_eq!(report.rows_after, 0);
    assert_eq!(site_only.count(&client, T.query).await.unwrap(), 0);
    let left: u64 = client
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(left, before_la);

    // Logged without the selector's values.
    let log = purge::history(&client, T.query, 100).await.unwrap();
    let methods: Vec<&str> = log.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        methods.iter().filter(|m| **m == "erase").count(),
        2,
        "{methods:?}"
    );
    assert!(methods.contains(&"site_delete"));
    for r in &log {
        assert!(
            !r.selector.contains("h-alice") && !r.selector.contains("4242"),
            "{r:?}"
        );
    }
    assert!(log.iter().any(|r| r.selector == "props[user]"));
}

/// A ClickHouse that accepts connections and never answers: every store call must end
/// with a timeout instead of hanging (issue 16, item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_against_a_hanging_server_time_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = hush::config::Config::from_toml_str(SITES_TOML).unwrap();
    config.clickhouse.url = format!("http://{}", listener.local_addr().unwrap());
    config.clickhouse.request_timeout_ms = 300;
    config.retention.mutation_timeout_ms = 300;
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = hush::db::client(&config.clickhouse);
    let timeouts = Timeouts::from_config(&config);
    let purger = Purger::new(client.clone(), &config, PurgeMetrics::default()).unwrap();
    let opts = PurgeOptions {
        now: now(),
        dry_run: false,
        actor: "test".into(),
    };
    let selector = Selector {
        site: "utc.example".into(),
        visitor_id: Some(1),
        ..Selector::default()
    };
    must_time_out("ensure_ttl", purger.ensure_ttl()).await;
    must_time_out("purge run", purger.run(&opts, &LogProgress)).await;
    must_time_out(
        "purge under the lease",
        purge::run_with_lease(&purger, &opts, &LogProgress),
    )
    .await;
    must_time_out("erase", dsr::erase(&client, timeouts, &selector, "test")).await;
    must_time_out(
        "site deletion",
        dsr::delete_site(&client, timeouts, "utc.example", "test"),
    )
    .await;
    must_time_out("history", purge::history(&client, timeouts.query, 10)).await;
    let mut export = dsr::export(&client, timeouts.query, &selector, ExportFormat::Csv).unwrap();
    must_time_out("export", export.next()).await;
    hold.abort();
}

/// `call` ends with a ClickHouse timeout; the outer bound only turns a hang into a
/// failure (it is not what is tested).
async fn must_time_out<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, purge::PurgeError>>,
) {
    match tokio::time::timeout(Duration::from_secs(60), call).await {
        Err(_) => panic!("{what} hung"),
        Ok(Err(purge::PurgeError::ClickHouse(clickhouse::error::Error::TimedOut))) => {}
        Ok(other) => panic!("{what}: expected a timeout, got {other:?}"),
    }
}

/// An erasure asked to stop (shutdown) stops at its safe point, before the mutation:
/// nothing deleted, the stop logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_erasure_deletes_nothing_and_says_so() {
    let (_config, client) = migrated_config("erase_stop", SITES_TOML).await;
    let base = secs("2025-06-01T00:00:00Z");
    let rows: Vec<EventRow> = (0..10u32)
        .map(|i| row("utc.example", base + i, 5, vec![]))
        .collect();
    insert_events(&client, &rows).await;
    let selector = Selector {
        site: "utc.example".into(),
        visitor_id: Some(5),
        ..Selector::default()
    };
    let (_stop_tx, stop) = tokio::sync::watch::channel(true);
    let scope = dsr::EraseScope {
        stop: Some(&stop),
        ..dsr::EraseScope::default()
    };
    let err = dsr::erase_in(&client, T, &selector, "test", scope)
        .await
        .expect_err("a stopped erasure must not run");
    assert!(matches!(err, purge::PurgeError::Stopped), "{err}");
    assert_eq!(selector.count(&client, T.query).await.unwrap(), 10);
    let log = purge::history(&client, T.query, 10).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (log[0].method.as_str(), log[0].outcome.as_str()),
        ("erase", "stopped")
    );
}
