//! Hits hush does not count as a visitor's, counted (`pipeline::dropped`, the
//! `dropped` table), against `hush serve` and the real ClickHouse: bots by family and
//! DNT/GPC hits by policy reach the table with the right reason after a flush; the
//! counts survive a ClickHouse outage during a flush (and are not summed twice) and
//! are flushed at a graceful shutdown; `POST /api/hush/dropped` and
//! `GET /api/hush/sites/{site}/policy` answer their shapes, 400 with a reason and 401
//! like the Stats API; the retention purge and a site deletion remove the rows.
//!
//! Expected numbers are the hits this test sent, counted as it sends them.

#[path = "support/db.rs"]
mod db;
#[path = "support/hush.rs"]
mod hush_process;
#[path = "support/retention.rs"]
mod retention;
mod support;
#[path = "support/wait.rs"]
mod wait;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hush::store::dsr;
use hush::store::purge::{PurgeMetrics, Purger};
use hush_process::{
    HushProcess, OTHER_STATS_KEY as OTHER_KEY, STATS_KEY as KEY, stats_keys, test_config,
};
use serde_json::{Value, json};
use support::LocalClickHouse;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const CURL: &str = "curl/8.5.0";
const WAIT: Duration = Duration::from_secs(60);

fn today_utc() -> String {
    let now = jiff::Timestamp::now();
    now.to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date()
        .to_string()
}

/// Sends one page view of `site` with `headers`; returns the `X-Hush-Dropped` value.
async fn hit(hush: &HushProcess, site: &str, headers: &[(&str, &str)]) -> Option<String> {
    let mut req = reqwest::Client::new()
        .post(hush.url("/api/event"))
        .header("content-type", "text/plain")
        .body(json!({"n": "pageview", "u": format!("https://{site}/"), "d": site}).to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 202, "hit with {headers:?}");
    resp.headers()
        .get("x-hush-dropped")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// (reason, family) → hits, as stored.
async fn stored(client: &clickhouse::Client, site: &str) -> BTreeMap<(String, String), u64> {
    client
        .query(
            "SELECT toString(reason), toString(family), sum(hits) FROM dropped \
             WHERE site = ? GROUP BY reason, family",
        )
        .bind(site)
        .fetch_all::<(String, String, u64)>()
        .await
        .unwrap()
        .into_iter()
        .map(|(r, f, n)| ((r, f), n))
        .collect()
}

/// The collector's configuration: counts flushed every `flush_ms`, DNT anonymous,
/// GPC dropped; `extra` is TOML appended (tables other than `[writer]`).
fn config(
    database: &str,
    url: &str,
    login: Option<(&str, &str)>,
    flush_ms: u64,
    extra: &str,
) -> String {
    test_config(
        url,
        login,
        database,
        &format!(
            r#"
[writer]
dropped_flush_interval_ms = {flush_ms}

[privacy]
dnt = "anonymous"
gpc = "drop"

[stats]
{keys}

[[sites]]
domain = "example.com"
retention_days = 90

[[sites]]
domain = "other.example"

[[sites]]
domain = "open.example"
public = true
{extra}
"#,
            keys = stats_keys(),
        ),
    )
}

async fn shared_hush(
    prefix: &str,
    extra: &str,
) -> (HushProcess, clickhouse::Client, tempfile::TempDir) {
    let ch = support::clickhouse();
    let (_config, client) = db::migrated_config(prefix, "").await;
    let database = db::current_database(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let login = (!ch.is_local()).then(|| (ch.user(), ch.password()));
    let hush = HushProcess::start(dir.path(), &config(&database, ch.url(), login, 100, extra));
    (hush, client, dir)
}

async fn post(hush: &HushProcess, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(hush.url("/api/hush/dropped"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}

async fn get(hush: &HushProcess, key: Option<&str>, path: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(hush.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
    )
}

/// Polls the metrics page until `line` (a whole sample line) is on it.
async fn wait_for_metric(hush: &HushProcess, pred: impl Fn(&str) -> bool, what: &str) {
    let started = Instant::now();
    loop {
        let page = hush.metrics().await;
        if page.lines().any(&pred) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "no {what} within {WAIT:?}:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bots_and_opted_out_hits_are_counted_and_read_through_the_api() {
    let (hush, client, _dir) = shared_hush("dropped_api", "").await;
    // What the test sends, and so expects: (reason, family) → hits.
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut expect = |reason: &str, family: &str| {
        *want.entry((reason.into(), family.into())).or_default() += 1;
    };
    for _ in 0..3 {
        assert_eq!(
            hit(&hush, "example.com", &[("user-agent", GOOGLEBOT)])
                .await
                .as_deref(),
            Some("bot")
        );
        expect("bot", "Googlebot");
    }
    assert_eq!(
        hit(&hush, "example.com", &[("user-agent", CURL)])
            .await
            .as_deref(),
        Some("bot")
    );
    expect("bot", "curl");
    for _ in 0..2 {
        // Stored, with no visitor: not dropped, but not a visitor's either.
        assert_eq!(
            hit(
                &hush,
                "example.com",
                &[("user-agent", CHROME), ("dnt", "1")]
            )
            .await,
            None
        );
        expect("dnt_anonymous", "");
    }
    assert_eq!(
        hit(
            &hush,
            "example.com",
            &[("user-agent", CHROME), ("sec-gpc", "1")]
        )
        .await
        .as_deref(),
        Some("gpc")
    );
    expect("gpc", "");
    // Both signals: GPC is looked at first, and drops.
    assert_eq!(
        hit(
            &hush,
            "example.com",
            &[("user-agent", CHROME), ("sec-gpc", "1"), ("dnt", "1")]
        )
        .await
        .as_deref(),
        Some("gpc")
    );
    expect("gpc", "");
    // A visitor's hit counts nowhere here; another site's bot counts for that site.
    assert_eq!(
        hit(&hush, "example.com", &[("user-agent", CHROME)]).await,
        None
    );
    assert_eq!(
        hit(&hush, "other.example", &[("user-agent", GOOGLEBOT)])
            .await
            .as_deref(),
        Some("bot")
    );

    let total: u64 = want.values().sum();
    wait::wait_for_count(
        &client,
        "SELECT sum(hits) FROM dropped WHERE site = 'example.com'",
        total,
        WAIT,
    )
    .await;
    assert_eq!(stored(&client, "example.com").await, want);
    let other = stored(&client, "other.example").await;
    assert_eq!(
        other,
        BTreeMap::from([(("bot".into(), "Googlebot".into()), 1)])
    );
    // The table holds no visitor data: these columns and no others.
    let columns: Vec<String> = client
        .query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'dropped' ORDER BY position")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(columns, ["site", "day", "reason", "family", "hits"]);
    // /metrics keeps counting drops by reason (5 bots on two sites, 2 GPC).
    let page = hush.metrics().await;
    assert!(
        page.lines()
            .any(|l| l == r#"hush_hits_dropped_total{reason="bot"} 5"#),
        "{page}"
    );
    assert!(
        page.lines()
            .any(|l| l == r#"hush_hits_dropped_total{reason="gpc"} 2"#),
        "{page}"
    );

    // The API answers the same, per UTC day.
    let (status, answer) = post(
        &hush,
        Some(KEY),
        r#"{"site_id":"example.com","date_range":"7d"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["meta"]["day"], "utc");
    let today = today_utc();
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    for row in answer["results"].as_array().unwrap() {
        let keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["date", "family", "hits", "reason"], "{row}");
        assert_eq!(row["date"], today.as_str(), "{row}");
        got.insert(
            (
                row["reason"].as_str().unwrap().into(),
                row["family"].as_str().unwrap().into(),
            ),
            row["hits"].as_u64().unwrap(),
        );
    }
    assert_eq!(got, want);
    // The v2 forms of date_range: a range of dates that excludes today finds nothing.
    let (status, answer) = post(
        &hush,
        Some(KEY),
        r#"{"site_id":"example.com","date_range":["2020-01-01","2020-01-31"]}"#,
    )
    .await;
    assert_eq!(
        (status, answer["results"].clone()),
        (200, json!([])),
        "{answer}"
    );
    let (status, answer) = post(
        &hush,
        Some(KEY),
        r#"{"site_id":"example.com","date_range":"all"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["results"].as_array().unwrap().len(), want.len());

    // 400 with the reason.
    for (body, reason) in [
        ("not json", "not JSON"),
        (r#"{"site_id":"example.com"}"#, "date_range was not present"),
        (
            r#"{"site_id":"example.com","date_range":"fortnight"}"#,
            "#/date_range: Invalid date_range",
        ),
        (
            r#"{"site_id":"example.com","date_range":"7d","metrics":["visitors"]}"#,
            "unknown property metrics",
        ),
        (r#"{"date_range":"7d"}"#, "site_id was not present"),
    ] {
        let (status, answer) = post(&hush, Some(KEY), body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(reason), "{body}: {error}");
    }
    // 401 as the Stats API: no key, a wrong key, another site's key, an unknown site.
    for (key, site) in [
        (None, "example.com"),
        (Some("wrong"), "example.com"),
        (Some(OTHER_KEY), "example.com"),
        (Some(KEY), "nowhere.example"),
    ] {
        let body = json!({"site_id": site, "date_range": "7d"}).to_string();
        let (status, answer) = post(&hush, key, &body).await;
        assert_eq!(status, 401, "{key:?} {site}: {answer}");
        assert!(answer["results"].is_null());
    }
    // A public site needs no key; an SQL-looking site id is just an unknown site.
    let (status, answer) = post(
        &hush,
        None,
        r#"{"site_id":"open.example","date_range":"day"}"#,
    )
    .await;
    assert_eq!((status, answer["results"].clone()), (200, json!([])));
    let (status, _) = post(
        &hush,
        Some(KEY),
        r#"{"site_id":"x' OR 1=1 --","date_range":"day"}"#,
    )
    .await;
    assert_eq!(status, 401);
    let resp = reqwest::Client::new()
        .get(hush.url("/api/hush/dropped"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");

    // What we collect: the live configuration.
    let (status, policy) = get(&hush, Some(KEY), "/api/hush/sites/example.com/policy").await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["retention_days"], 90);
    assert_eq!(policy["ipv4_prefix"], 24);
    assert_eq!(policy["ipv6_prefix"], 48);
    assert_eq!(policy["dnt"], "anonymous");
    assert_eq!(policy["gpc"], "drop");
    assert_eq!(policy["cookies"], false);
    assert!(
        policy["never_stored"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "the full IP address")
    );
    let (status, policy) = get(&hush, None, "/api/hush/sites/open.example/policy").await;
    assert_eq!(
        (status, policy["retention_days"].clone()),
        (200, json!(395))
    );
    for (key, site) in [
        (None, "example.com"),
        (Some(OTHER_KEY), "example.com"),
        (Some(KEY), "nowhere.example"),
    ] {
        let (status, _) = get(&hush, key, &format!("/api/hush/sites/{site}/policy")).await;
        assert_eq!(status, 401, "{key:?} {site}");
    }
}

#[tokio::test]
async fn counts_survive_a_clickhouse_outage_and_are_flushed_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let ch = LocalClickHouse::start(dir.path().join("clickhouse"), 0);
    let database = "hush_dropped_outage";
    let hush_dir = dir.path().join("hush");
    std::fs::create_dir_all(&hush_dir).unwrap();
    let mut hush = HushProcess::start(
        &hush_dir,
        &config(
            database,
            ch.url(),
            None,
            100,
            "\n[clickhouse]\nrequest_timeout_ms = 1000\n",
        ),
    );
    let client = ch.client().with_database(database);
    let sum = "SELECT sum(hits) FROM dropped WHERE site = 'example.com'";
    for _ in 0..2 {
        hit(&hush, "example.com", &[("user-agent", GOOGLEBOT)]).await;
    }
    wait::wait_for_count(&client, sum, 2, WAIT).await;

    // Frozen: every flush fails (times out); the counts are kept and retried.
    ch.pause();
    for _ in 0..3 {
        hit(&hush, "example.com", &[("user-agent", GOOGLEBOT)]).await;
    }
    wait_for_metric(
        &hush,
        |l| {
            l.strip_prefix("hush_dropped_flush_failures_total ")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= 2)
        },
        "failed flushes",
    )
    .await;
    ch.resume();
    // All of them, once: the batch retried with its token is not summed twice (a
    // count past 5 fails at once).
    wait::wait_for_count(&client, sum, 5, WAIT).await;
    wait_for_metric(
        &hush,
        |l| l == "hush_dropped_pending_rows 0",
        "no pending rows",
    )
    .await;
    wait::wait_for_count(&client, sum, 5, WAIT).await;

    // A graceful shutdown flushes what was counted since the last flush.
    hush.terminate(WAIT);
    let mut hush = HushProcess::start(&hush_dir, &config(database, ch.url(), None, 3_600_000, ""));
    for _ in 0..4 {
        hit(
            &hush,
            "example.com",
            &[("user-agent", CHROME), ("sec-gpc", "1")],
        )
        .await;
    }
    assert_eq!(
        wait::count(
            &client,
            "SELECT sum(hits) FROM dropped WHERE reason = 'gpc'"
        )
        .await,
        0
    );
    let status = hush.terminate(WAIT);
    assert!(status.success(), "{status:?}: {}", hush.log());
    assert_eq!(
        wait::count(
            &client,
            "SELECT sum(hits) FROM dropped WHERE reason = 'gpc'"
        )
        .await,
        4
    );
    assert_eq!(wait::count(&client, sum).await, 9);
}

async fn days_left(client: &clickhouse::Client) -> Vec<(String, String)> {
    client
        .query("SELECT toString(site), toString(day) FROM dropped GROUP BY site, day ORDER BY site, day")
        .fetch_all()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_purge_and_a_site_deletion_remove_the_counts() {
    let (config, client) = db::migrated_config("dropped_purge", retention::SITES_TOML).await;
    // Now: 2025-06-15 10:00 UTC. Cutoffs by hand: utc.example 2025-05-16 00:00Z;
    // tokyo.example local 2025-06-15 - 400 d = 2024-05-11 00:00 JST = 2024-05-10
    // 15:00Z, so UTC day 2024-05-10 still has hours to keep; gone.example (not
    // configured) the default 395 d in UTC = 2024-05-16.
    client
        .query(
            "INSERT INTO dropped VALUES \
             ('utc.example', '2025-05-15', 'bot', 'Googlebot', 3), \
             ('utc.example', '2025-05-16', 'bot', 'Googlebot', 2), \
             ('utc.example', '2025-06-15', 'dnt', '', 1), \
             ('tokyo.example', '2024-05-09', 'gpc', '', 4), \
             ('tokyo.example', '2024-05-10', 'gpc', '', 5), \
             ('gone.example', '2024-05-15', 'bot', '', 6), \
             ('gone.example', '2024-05-16', 'bot', '', 7)",
        )
        .execute()
        .await
        .unwrap();
    let all = days_left(&client).await;
    assert_eq!(all.len(), 7);
    let purger = Purger::new(client.clone(), &config, PurgeMetrics::default()).unwrap();
    retention::run_at_now(&purger, true).await;
    assert_eq!(days_left(&client).await, all, "a dry run deletes nothing");
    retention::run_at_now(&purger, false).await;
    let pair = |s: &str, d: &str| (s.to_owned(), d.to_owned());
    assert_eq!(
        days_left(&client).await,
        [
            pair("gone.example", "2024-05-16"),
            pair("tokyo.example", "2024-05-10"),
            pair("utc.example", "2025-05-16"),
            pair("utc.example", "2025-06-15"),
        ]
    );
    let logged: Vec<(u64, u64, String)> = client
        .query("SELECT rows_before, rows_after, toString(outcome) FROM purge_log WHERE method = 'delete_counts'")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(logged, [(3 + 4 + 6, 0, "success".to_owned())]);

    dsr::delete_site(&client, retention::T, "utc.example", "test")
        .await
        .unwrap();
    assert_eq!(
        days_left(&client).await,
        [
            pair("gone.example", "2024-05-16"),
            pair("tokyo.example", "2024-05-10")
        ]
    );
}
