//! Retention purge, lease and data-subject requests against a real ClickHouse.

#[path = "support/db.rs"]
mod db;
#[path = "support/retention.rs"]
mod retention;
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
use hush::store::purge::{self, LogProgress, PurgeMetrics, Purger};
use jiff::Timestamp;
use prometheus_client::registry::Registry;
use retention::{SITES_TOML, T, now, run_at_now};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn secs(s: &str) -> u32 {
    ts(s).as_second() as u32
}

/// Purge metrics registered in a registry of their own, which the test reads back.
fn registered_metrics() -> (Registry, PurgeMetrics) {
    let mut registry = Registry::default();
    let metrics = PurgeMetrics::register(&mut registry);
    (registry, metrics)
}

/// An erasure that also reaches the spool's quarantine directory `q`, counting its
/// file actions in `metrics`.
fn quarantine_scope<'a>(q: &'a std::path::Path, metrics: &'a PurgeMetrics) -> dsr::EraseScope<'a> {
    dsr::EraseScope {
        quarantine: Some(q),
        metrics: Some(metrics),
        ..dsr::EraseScope::default()
    }
}

/// The data subject most erasure tests name: visitor 1 on `utc.example`.
fn utc_visitor_one() -> Selector {
    Selector {
        site: "utc.example".into(),
        visitor_id: Some(1),
        ..Selector::default()
    }
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

    let (registry, metrics) = registered_metrics();
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
    let opts = retention::options(false);

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
    let opts = retention::options(false);
    let selector = utc_visitor_one();
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

// ---------------------------------------------------------------------------------
// rows outside ClickHouse: the spool's quarantine/ and rows still queued (issue 16,
// item 15)

/// A spool directory with an empty `quarantine/`, and `SITES_TOML` pointing at it.
fn with_spool(dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir.join("quarantine")).unwrap();
    format!("{SITES_TOML}\n[spool]\ndir = \"{}\"\n", dir.display())
}

fn encode(rows: &[EventRow]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        hush::pipeline::rowbinary::encode_event(r, &mut out);
    }
    out
}

/// Writes `path` with `content`, last modified at `at`.
fn write_at(path: &std::path::Path, content: &[u8], at: Timestamp) {
    std::fs::write(path, content).unwrap();
    let when = std::time::UNIX_EPOCH + Duration::from_secs(at.as_second() as u64);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

fn names(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn metric(registry: &Registry, line: &str) -> f64 {
    let text = hush::metrics::render(registry);
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line} not in\n{text}"))
}

/// Retention reaches the quarantine: a file older than the shortest retention of any
/// site (utc.example, 30 days) goes, a newer one stays; a dry run only lists; each
/// removal is a `purge_log` row and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_quarantine_files_past_the_shortest_retention() {
    let spool = tempfile::tempdir().unwrap();
    let (config, client) = migrated_config("purge_files", &with_spool(spool.path())).await;
    let q = spool.path().join("quarantine");
    let day = 86_400;
    let at = |days_ago: i64| Timestamp::from_second(now().as_second() - days_ago * day).unwrap();
    let dead = encode(&[
        row("utc.example", secs("2025-05-01T00:00:00Z"), 1, vec![]),
        row("la.example", secs("2025-05-01T00:00:00Z"), 2, vec![]),
    ]);
    write_at(&q.join("dead-letter-hush-a.rowbinary"), &dead, at(31));
    write_at(
        &q.join("dead-letter-hush-a.txt"),
        b"row 0: x\nrow 1: y\n",
        at(31),
    );
    write_at(&q.join("000000000001-0000000000.bad"), b"old bytes", at(45));
    write_at(&q.join("000000000009-0000000000.bad"), b"new bytes", at(29));
    write_at(&q.join("dead-letter-hush-b.rowbinary"), &dead, at(1));
    let old: std::collections::BTreeSet<String> = [
        "000000000001-0000000000.bad",
        "dead-letter-hush-a.rowbinary",
        "dead-letter-hush-a.txt",
    ]
    .map(String::from)
    .into();
    let all = names(&q);

    let (registry, metrics) = registered_metrics();
    let purger = Purger::new(client.clone(), &config, metrics).unwrap();
    let dry = run_at_now(&purger, true).await;
    let listed: std::collections::BTreeSet<String> = dry
        .expired_files
        .iter()
        .map(|f| f.strip_prefix("quarantine/").unwrap().to_owned())
        .collect();
    assert_eq!(listed, old);
    assert_eq!(names(&q), all, "a dry run removed files");

    let report = run_at_now(&purger, false).await;
    assert_eq!(report.expired_files.len(), 3, "{report:?}");
    let left: std::collections::BTreeSet<String> = all.difference(&old).cloned().collect();
    assert_eq!(names(&q), left);
    assert_eq!(
        metric(
            &registry,
            "hush_purge_files_total{method=\"expire_file\",outcome=\"success\"}"
        ),
        3.0
    );
    let log: Vec<_> = purge::history(&client, T.query, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method == "expire_file")
        .collect();
    let logged: std::collections::BTreeSet<String> = log
        .iter()
        .map(|r| r.partition.strip_prefix("quarantine/").unwrap().to_owned())
        .collect();
    assert_eq!(logged, old);
    let cutoff = (now().as_second() - 30 * day) as u32;
    for r in &log {
        assert_eq!((r.outcome.as_str(), r.cutoff), ("success", cutoff), "{r:?}");
        let rows = if r.partition.ends_with(".rowbinary") {
            2
        } else {
            0
        };
        assert_eq!((r.rows_before, r.rows_after), (rows, 0), "{r:?}");
    }
}

/// Sets or clears the immutable flag (`chattr +i`) of `path`: unlink fails then, even
/// for root. `false` when the file system does not have the flag.
fn set_immutable(path: &std::path::Path, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    const FS_IMMUTABLE_FL: libc::c_long = 0x10;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut flags: libc::c_long = 0;
    // SAFETY: both ioctls read or write one `long` through a valid pointer.
    unsafe {
        if libc::ioctl(file.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) != 0 {
            return false;
        }
        flags = if on {
            flags | FS_IMMUTABLE_FL
        } else {
            flags & !FS_IMMUTABLE_FL
        };
        libc::ioctl(file.as_raw_fd(), FS_IOC_SETFLAGS, &flags) == 0
    }
}

/// A quarantine file past retention that cannot be removed is reported (an error of
/// the run, a `purge_log` row with the error) and left as it was; the others go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_file_that_cannot_be_removed_is_reported_and_kept() {
    let spool = tempfile::tempdir().unwrap();
    let (config, client) = migrated_config("purge_files_fail", &with_spool(spool.path())).await;
    let q = spool.path().join("quarantine");
    let old = Timestamp::from_second(now().as_second() - 60 * 86_400).unwrap();
    let stuck = q.join("000000000001-0000000000.bad");
    write_at(&stuck, b"stuck bytes", old);
    write_at(&q.join("000000000002-0000000000.bad"), b"other", old);
    // Unremovable: the immutable flag (root too), else a read-only directory.
    let immutable = set_immutable(&stuck, true);
    if !immutable {
        use std::os::unix::fs::PermissionsExt;
        assert_ne!(
            unsafe { libc::geteuid() },
            0,
            "as root this test needs a file system with the immutable flag (ext4, xfs, btrfs)"
        );
        std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o500)).unwrap();
    }
    let purger = Purger::new(client.clone(), &config, PurgeMetrics::default()).unwrap();
    let result = purger.run(&retention::options(false), &LogProgress).await;
    if immutable {
        set_immutable(&stuck, false);
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let err = result.expect_err("a file that cannot be removed fails the run");
    assert!(
        matches!(&err, purge::PurgeError::Files(m) if m.contains("000000000001-0000000000.bad")),
        "{err}"
    );
    assert_eq!(std::fs::read(&stuck).unwrap(), b"stuck bytes");
    let log = purge::history(&client, T.query, 100).await.unwrap();
    let stuck_row = log
        .iter()
        .find(|r| r.method == "expire_file" && r.partition.ends_with("0001-0000000000.bad"))
        .expect("a purge_log row for the stuck file");
    assert_eq!(stuck_row.outcome, "error");
    assert!(!stuck_row.error.is_empty());
    let run = log.iter().find(|r| r.method == "run").expect("run row");
    assert_eq!(run.outcome, "error", "{run:?}");
    if immutable {
        // The other file was removed (a read-only directory keeps both).
        assert!(!q.join("000000000002-0000000000.bad").exists());
    }
}

/// The rows of the erasure test's dead letters: two sites, users and visitors.
fn dead_letter_rows(seed: u32) -> Vec<EventRow> {
    (0..12u32)
        .map(|i| {
            let site = if i % 3 == 0 {
                "la.example"
            } else {
                "utc.example"
            };
            let user = ["h-alice", "h-bob", "h-carol"][(i % 4 % 3) as usize];
            row(
                site,
                secs("2025-06-10T00:00:00Z") + seed * 100 + i,
                u64::from(i % 5),
                prop("user", user),
            )
        })
        .collect()
}

/// An erasure rewrites dead letters without exactly the matching rows (the rest kept
/// byte for byte), removes a dead letter it empties, removes an unreadable file that
/// holds the site and the value and keeps one that does not; one `erase_file` row per
/// changed file, with the selector's shape and never its values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_rewrites_dead_letters_dropping_exactly_the_matching_rows() {
    let spool = tempfile::tempdir().unwrap();
    let (_config, client) = migrated_config("erase_files", &with_spool(spool.path())).await;
    let q = spool.path().join("quarantine");
    let mixed = dead_letter_rows(0);
    std::fs::write(q.join("dead-letter-hush-m.rowbinary"), encode(&mixed)).unwrap();
    let note: String = (0..mixed.len())
        .map(|i| format!("row {}: refused {i}\n", i * 2))
        .collect();
    std::fs::write(
        q.join("dead-letter-hush-m.txt"),
        format!("table: events\n{note}"),
    )
    .unwrap();
    let alice_only = vec![row("utc.example", 1, 9, prop("user", "h-alice"))];
    std::fs::write(q.join("dead-letter-hush-a.rowbinary"), encode(&alice_only)).unwrap();
    std::fs::write(q.join("dead-letter-hush-a.txt"), "row 0: x\n").unwrap();
    // Not rows: one with the site and the value, one with the value of another site.
    std::fs::write(
        q.join("000000000003-0000000100.bad"),
        b"\x0butc.example..\x07h-alice\xff",
    )
    .unwrap();
    std::fs::write(
        q.join("000000000004-0000000100.bad"),
        b"\x0ala.example..\x07h-alice\xff",
    )
    .unwrap();
    let untouched = names(&q);

    let selector = Selector {
        site: "utc.example".into(),
        props: prop("user", "h-alice"),
        ..Selector::default()
    };
    // The expected rows, by the test's own reading of the selector.
    let is_alice_on_utc = |r: &EventRow| {
        &*r.site == "utc.example" && r.props.iter().any(|(k, v)| k == "user" && v == "h-alice")
    };
    let kept: Vec<EventRow> = mixed
        .iter()
        .filter(|r| !is_alice_on_utc(r))
        .cloned()
        .collect();
    let erased = mixed.len() - kept.len();
    assert!(erased > 0 && !kept.is_empty(), "the fixture must mix");

    let (registry, metrics) = registered_metrics();
    let scope = quarantine_scope(&q, &metrics);
    let report = dsr::erase_in(&client, T, &selector, "test", scope)
        .await
        .unwrap();
    assert_eq!(
        (report.files_changed, report.file_rows_erased),
        (3, erased as u64 + 1)
    );

    let bytes = std::fs::read(q.join("dead-letter-hush-m.rowbinary")).unwrap();
    assert_eq!(bytes, encode(&kept), "kept rows, byte for byte, in order");
    assert_eq!(
        hush::pipeline::rowbinary::decode_rows(&bytes).unwrap(),
        kept
    );
    let note = std::fs::read_to_string(q.join("dead-letter-hush-m.txt")).unwrap();
    let expected_lines: Vec<String> = mixed
        .iter()
        .enumerate()
        .filter(|(_, r)| !is_alice_on_utc(r))
        .map(|(i, _)| format!("row {}: refused {i}", i * 2))
        .collect();
    let lines: Vec<&str> = note.lines().filter(|l| l.starts_with("row ")).collect();
    assert_eq!(lines, expected_lines);
    let mut expected_names = untouched.clone();
    for gone in [
        "dead-letter-hush-a.rowbinary",
        "dead-letter-hush-a.txt",
        "000000000003-0000000100.bad",
    ] {
        expected_names.remove(gone);
    }
    assert_eq!(names(&q), expected_names);

    let log = purge::history(&client, T.query, 100).await.unwrap();
    let files: std::collections::BTreeMap<String, (u64, u64, String)> = log
        .iter()
        .filter(|r| r.method == "erase_file")
        .map(|r| {
            (
                r.partition.clone(),
                (r.rows_before, r.rows_after, r.outcome.clone()),
            )
        })
        .collect();
    let ok = || "success".to_owned();
    assert_eq!(
        files,
        [
            (
                "quarantine/000000000003-0000000100.bad".to_owned(),
                (0, 0, ok())
            ),
            (
                "quarantine/dead-letter-hush-a.rowbinary".to_owned(),
                (1, 0, ok())
            ),
            (
                "quarantine/dead-letter-hush-m.rowbinary".to_owned(),
                (mixed.len() as u64, kept.len() as u64, ok())
            ),
        ]
        .into()
    );
    for r in &log {
        assert_eq!(r.run_id, report.run_id);
        assert_eq!(r.selector, "props[user]");
        let text = format!("{r:?}");
        assert!(
            !text.contains("h-alice"),
            "a selector value in purge_log: {text}"
        );
    }
    assert_eq!(
        metric(
            &registry,
            "hush_purge_files_total{method=\"erase_file\",outcome=\"success\"}"
        ),
        3.0
    );

    // Again: nothing left to erase, nothing changed, no file row.
    let scope = dsr::EraseScope {
        quarantine: Some(&q),
        ..dsr::EraseScope::default()
    };
    let again = dsr::erase_in(&client, T, &selector, "test", scope)
        .await
        .unwrap();
    assert_eq!(again.files_changed, 0);
    assert_eq!(
        std::fs::read(q.join("dead-letter-hush-m.rowbinary")).unwrap(),
        bytes
    );
}

/// A dead letter an erasure cannot rewrite (its temporary file cannot be created,
/// even by root: a directory holds the name) is reported and left exactly as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_that_cannot_rewrite_a_dead_letter_says_so_and_leaves_it() {
    let spool = tempfile::tempdir().unwrap();
    let (_config, client) = migrated_config("erase_files_fail", &with_spool(spool.path())).await;
    let q = spool.path().join("quarantine");
    let rows = dead_letter_rows(1);
    let path = q.join("dead-letter-hush-x.rowbinary");
    std::fs::write(&path, encode(&rows)).unwrap();
    std::fs::create_dir_all(q.join("dead-letter-hush-x.rowbinary.erase-tmp/blocker")).unwrap();
    let selector = utc_visitor_one();
    assert!(
        rows.iter()
            .any(|r| &*r.site == "utc.example" && r.visitor_id == 1)
    );
    let (registry, metrics) = registered_metrics();
    let scope = quarantine_scope(&q, &metrics);
    let err = dsr::erase_in(&client, T, &selector, "test", scope)
        .await
        .expect_err("an unwritable file fails the erasure");
    assert!(
        matches!(&err, purge::PurgeError::Files(m) if m.contains("dead-letter-hush-x.rowbinary")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        encode(&rows),
        "the file changed"
    );
    let log = purge::history(&client, T.query, 100).await.unwrap();
    let (erase, file): (Vec<_>, Vec<_>) = log.iter().partition(|r| r.method == "erase");
    assert_eq!(erase.len(), 1);
    assert_eq!(erase[0].outcome, "error");
    assert_eq!(file.len(), 1, "{log:?}");
    assert_eq!(
        (file[0].method.as_str(), file[0].outcome.as_str()),
        ("erase_file", "error")
    );
    assert!(!file[0].error.is_empty());
    assert_eq!(
        metric(
            &registry,
            "hush_purge_files_total{method=\"erase_file\",outcome=\"error\"}"
        ),
        1.0
    );
}

fn slow_writer_config(flush_interval_ms: u64) -> hush::config::WriterConfig {
    hush::config::WriterConfig {
        batch_rows: 10_000,
        flush_interval_ms,
        queue_capacity: 10_000,
        queue_max_bytes: 1 << 30,
        retry_base_ms: 20,
        retry_max_ms: 100,
        ..Default::default()
    }
}

/// An erasure issued while the rows it is about are still queued in the writer waits
/// for them to be stored, then deletes them too: none lands after "0 remain".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_waits_for_rows_still_queued_and_erases_them() {
    let (config, client) = migrated_config("erase_queued", SITES_TOML).await;
    let base = secs("2025-06-01T00:00:00Z");
    let stored: Vec<EventRow> = (0..20u32)
        .map(|i| row("utc.example", base + i, u64::from(i % 2), vec![]))
        .collect();
    insert_events(&client, &stored).await;
    // Held: a batch is cut only after 3 s, so the erasure comes while they wait.
    let (sink, handle) = hush::pipeline::writer::Writer::spawn(
        hush::db::client(&config.clickhouse),
        &slow_writer_config(3_000),
        Duration::from_secs(30),
        "events",
        &mut Registry::default(),
    );
    let queued: Vec<EventRow> = (0..30u32)
        .map(|i| row("utc.example", base + 100 + i, u64::from(i % 3), vec![]))
        .collect();
    sink.submit(&queued).await.unwrap();
    let progress = handle.progress();
    assert_eq!(progress.pending(), 30);
    let selector = utc_visitor_one();
    assert_eq!(
        selector.count(&client, T.query).await.unwrap(),
        10,
        "queued rows not stored yet"
    );
    let expected = (stored.iter().chain(&queued))
        .filter(|r| r.visitor_id == 1)
        .count() as u64;

    let scope = dsr::EraseScope {
        writes: Some(&progress),
        ..dsr::EraseScope::default()
    };
    let report = dsr::erase_in(&client, T, &selector, "test", scope)
        .await
        .unwrap();
    assert_eq!(
        report.rows_before, expected,
        "the queued rows were counted too"
    );
    assert_eq!(progress.pending(), 0);
    let flushed = handle.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(flushed.rows_inserted, 30);
    assert_eq!(
        selector.count(&client, T.query).await.unwrap(),
        0,
        "a queued row landed after the erasure"
    );
    let others = Selector {
        site: "utc.example".into(),
        from: Some(ts("2025-01-01T00:00:00Z")),
        ..Selector::default()
    };
    assert_eq!(others.count(&client, T.query).await.unwrap(), 50 - expected);
}

/// When the queued rows cannot be stored in time (ClickHouse unreachable), the erasure
/// deletes nothing and says why ([`purge::PurgeError::Pending`], a `purge_log` row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_whose_queued_rows_cannot_be_stored_deletes_nothing() {
    let (_config, client) = migrated_config("erase_queued_down", SITES_TOML).await;
    let base = secs("2025-06-01T00:00:00Z");
    let stored: Vec<EventRow> = (0..10u32)
        .map(|i| row("utc.example", base + i, 4, vec![]))
        .collect();
    insert_events(&client, &stored).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (sink, handle) = hush::pipeline::writer::Writer::spawn(
        hush::db::client(&hush::config::ClickHouseConfig {
            url: format!("http://{closed}"),
            ..Default::default()
        }),
        &slow_writer_config(10),
        Duration::from_secs(1),
        "events",
        &mut Registry::default(),
    );
    sink.submit(&[
        row("utc.example", base + 50, 4, vec![]),
        row("la.example", base, 4, vec![]),
    ])
    .await
    .unwrap();
    let selector = Selector {
        site: "utc.example".into(),
        visitor_id: Some(4),
        ..Selector::default()
    };
    let short = Timeouts {
        mutation: Duration::from_millis(300),
        ..T
    };
    let progress = handle.progress();
    let scope = dsr::EraseScope {
        writes: Some(&progress),
        ..dsr::EraseScope::default()
    };
    let err = dsr::erase_in(&client, short, &selector, "test", scope)
        .await
        .expect_err("rows could not be stored");
    assert!(
        matches!(err, purge::PurgeError::Pending { rows: 2 }),
        "{err}"
    );
    assert_eq!(
        selector.count(&client, T.query).await.unwrap(),
        10,
        "rows were deleted"
    );
    let log = purge::history(&client, T.query, 10).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (log[0].method.as_str(), log[0].outcome.as_str()),
        ("erase", "error")
    );
    assert!(log[0].error.contains("not stored"), "{:?}", log[0]);
    let _ = handle.shutdown(Duration::from_millis(100)).await;
}

/// Issue 11: what the sessions builder derives from a visitor's rows (their visits in
/// `sessions`, the `uniq` states of their hashes in the hourly rollups) goes with an
/// erasure, for the erased days and the days next to them; the other days keep
/// theirs, and a rebuild counts what is left.
#[tokio::test]
async fn an_erasure_removes_the_visits_and_rollups_built_from_the_visitor() {
    let (_config, client) = migrated_config("dsr_built", SITES_TOML).await;
    let site = "utc.example";
    let first = secs("2025-06-01T00:00:00Z");
    let erased = 4242u64;
    let mut rows = Vec::new();
    for day in 0..6u32 {
        for v in 1..=150u64 {
            let start = first + day * 86_400 + 3_600 * (1 + (v as u32 % 20)) + v as u32;
            for p in 0..3u32 {
                let mut r = row(site, start + p * 60, v * 10 + u64::from(day % 2), vec![]);
                r.session_id = u64::from(day) * 100_000 + v;
                rows.push(r);
            }
        }
    }
    // The erased visitor: one visit on 06-03.
    for p in 0..4u32 {
        let mut r = row(site, first + 2 * 86_400 + 40_000 + p * 30, erased, vec![]);
        r.session_id = 9_999_999;
        rows.push(r);
    }
    insert_events(&client, &rows).await;
    let builder = hush::store::sessions::SessionBuilder::new(client.clone(), T, 1800);
    let later = ts("2030-01-01T00:00:00Z");
    let report = builder.build_site(site, later, usize::MAX).await.unwrap();
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(report.built.len() >= 6, "{report:?}");

    let count = |sql: &'static str| {
        let client = client.clone();
        async move { client.query(sql).fetch_one::<u64>().await.unwrap() }
    };
    assert_eq!(
        count("SELECT count() FROM sessions WHERE visitor_id = 4242").await,
        1
    );
    // Days by number: 06-02 .. 06-04 are the erased day and its neighbours.
    let around = "toDate(day) BETWEEN '2025-06-02' AND '2025-06-04'";
    let hourly_around = format!("SELECT count() FROM hourly_pages WHERE {around}");
    let before_around: u64 = client.query(&hourly_around).fetch_one().await.unwrap();
    assert!(before_around > 0);
    let others = "SELECT count() FROM hourly_totals WHERE toDate(day) NOT BETWEEN '2025-06-02' AND '2025-06-04'";
    let before_others = count(others).await;

    let selector = Selector {
        site: site.into(),
        visitor_id: Some(erased),
        ..Selector::default()
    };
    let report = dsr::erase(&client, T, &selector, "test").await.unwrap();
    assert_eq!(report.rows_before, 4);
    assert_eq!(
        count("SELECT count() FROM sessions WHERE visitor_id = 4242").await,
        0
    );
    for table in ["sessions", "hourly_pages", "hourly_totals", "session_days"] {
        let left: u64 = client
            .query(&format!("SELECT count() FROM {table} WHERE {around}"))
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(left, 0, "{table} still holds rows of the erased days");
    }
    assert_eq!(
        count(others).await,
        before_others,
        "other days' rollups kept"
    );

    // Rebuilt from what is left: each day's visitors, as counted here.
    let report = builder.build_site(site, later, usize::MAX).await.unwrap();
    assert_eq!(report.built.len(), 3, "{report:?}");
    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct Day {
        day: u32,
        visitors: u64,
        pageviews: u64,
    }
    let built: Vec<Day> = client
        .query(
            "SELECT toUInt32(toUInt16(day)) AS day, uniqMerge(visitors) AS visitors, sum(pageviews) AS pageviews \
             FROM hourly_totals GROUP BY day ORDER BY day",
        )
        .fetch_all()
        .await
        .unwrap();
    let mut expected: BTreeMap<u32, (std::collections::BTreeSet<u64>, u64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.visitor_id != erased) {
        let e = expected.entry(r.timestamp / 86_400).or_default();
        e.0.insert(r.visitor_id);
        e.1 += 1;
    }
    let got: BTreeMap<u32, (u64, u64)> = built
        .iter()
        .map(|d| (d.day, (d.visitors, d.pageviews)))
        .collect();
    let want: BTreeMap<u32, (u64, u64)> = expected
        .iter()
        .map(|(d, (v, n))| (*d, (v.len() as u64, *n)))
        .collect();
    assert_eq!(got, want);
}
