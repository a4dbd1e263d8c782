//! `hush demo` against a real ClickHouse: the rows it stores are the generator's,
//! written once, for the requested site and days only, and they keep every invariant
//! the collector's own rows keep (checked here from the stored rows, in plain Rust).

#[path = "support/db.rs"]
mod db;
#[path = "support/stored.rs"]
mod stored;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;

use hush::enrich::row::EventRow;
use hush::store::demo::{self, DemoOptions};
use jiff::civil::date;
use jiff::tz::TimeZone;
use stored::StoredRow;

const SITE: &str = "demo.example";
const TZ: &str = "America/New_York";
/// US daylight saving time starts on 2026-03-08: the range has a 23-hour day.
const FIRST: (i16, i8, i8) = (2026, 3, 1);
const DAYS: u32 = 12;
const VISITORS: u32 = 40;

fn options() -> DemoOptions {
    DemoOptions {
        site: SITE.into(),
        timezone: TZ.into(),
        days: DAYS,
        visitors_per_day: VISITORS,
        seed: 11,
        last_day: date(2026, 3, 12),
        not_after: u32::MAX,
    }
}

const COLUMNS: &str = "site, timestamp, name, visitor_id, session_id, entry_page, hostname, \
     pathname, referrer_host, referrer_path, source, channel, utm_source, utm_medium, \
     utm_campaign, utm_term, utm_content, browser, browser_version, os, os_version, device, \
     country, region, city_geoname_id, city, props, revenue_micros, revenue_currency, \
     interactive, engagement_ms, scroll_depth";

async fn stored_rows(client: &clickhouse::Client, site: &str) -> Vec<StoredRow> {
    client
        .query(&format!("SELECT {COLUMNS} FROM events WHERE site = ?"))
        .bind(site)
        .fetch_all::<StoredRow>()
        .await
        .unwrap()
}

/// A total order on whole rows (two rows may agree on every column but one).
fn sort_key(r: &StoredRow) -> (u32, String) {
    (r.timestamp, format!("{r:?}"))
}

/// Local midnight of `(y, m, d)` in `TZ`, Unix seconds.
fn midnight(y: i16, m: i8, d: i8) -> i64 {
    date(y, m, d)
        .to_zoned_datetime(TimeZone::get(TZ).unwrap())
        .unwrap()
        .timestamp()
        .as_second()
}

#[tokio::test]
async fn demo_rows_are_stored_once_for_the_site_and_keep_the_collector_s_invariants() {
    let (config, client) = db::migrated_config("demo", "").await;
    // Another site's row, which the demo must leave alone.
    let other = EventRow {
        site: "other.example".into(),
        timestamp: 1_772_400_000,
        name: "pageview".into(),
        visitor_id: 5,
        session_id: 6,
        ..EventRow::default()
    };
    db::insert_events(&client, &[other]).await;

    let mut progress = Vec::new();
    let summary = demo::write(&config.clickhouse, &options(), 2, &mut |rows| {
        progress.push(rows)
    })
    .await
    .unwrap();
    let mut rows = stored_rows(&client, SITE).await;

    // Exactly the generator's rows, once each, whatever the threads did.
    let (generated, generated_summary) = demo::generate(&options()).unwrap();
    assert_eq!(summary.rows, generated.len() as u64);
    assert_eq!(
        (summary.visits, summary.pageviews),
        (generated_summary.visits, generated_summary.pageviews)
    );
    assert_eq!(progress.last().copied(), Some(summary.rows));
    let mut expected: Vec<StoredRow> = generated.iter().map(StoredRow::from).collect();
    rows.sort_by_cached_key(sort_key);
    expected.sort_by_cached_key(sort_key);
    assert_eq!(rows.len(), expected.len());
    assert!(
        rows == expected,
        "stored rows differ from the generated ones"
    );
    let other_rows = stored_rows(&client, "other.example").await;
    assert_eq!(other_rows.len(), 1);
    let sites: u64 = client
        .query("SELECT uniqExact(site) FROM events")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(sites, 2);

    check_invariants(&rows);
}

fn check_invariants(rows: &[StoredRow]) {
    let start = midnight(FIRST.0, FIRST.1, FIRST.2);
    let end = midnight(2026, 3, 13);
    // Twelve days, one of them 23 hours long.
    assert_eq!(end - start, i64::from(DAYS) * 86_400 - 3_600);

    let mut sessions: HashMap<u64, Vec<&StoredRow>> = HashMap::new();
    let mut anonymous = 0;
    for r in rows {
        let ts = i64::from(r.timestamp);
        assert!((start..end).contains(&ts), "row outside the days: {r:?}");
        assert_eq!((r.site.as_str(), r.hostname.as_str()), (SITE, SITE));
        assert!(r.pathname.starts_with('/'), "{r:?}");
        // No bots, and what the collector's parser gives for real browsers.
        assert!(!r.browser.is_empty() && !r.os.is_empty(), "{r:?}");
        assert!(
            ["desktop", "mobile", "tablet"].contains(&r.device.as_str()),
            "{r:?}"
        );
        assert!(
            ["direct", "search", "social", "email", "paid", "referral"]
                .contains(&r.channel.as_str()),
            "{r:?}"
        );
        // Places: a country code or none; a city only with its id.
        assert!(
            r.country == [0, 0] || r.country.iter().all(u8::is_ascii_uppercase),
            "{r:?}"
        );
        assert_eq!(r.city.is_empty(), r.city_geoname_id == 0, "{r:?}");
        // Revenue only with a currency, only on purchases at the checkout.
        assert_eq!(
            r.revenue_micros.is_some(),
            !r.revenue_currency.is_empty(),
            "{r:?}"
        );
        if let Some(micros) = r.revenue_micros {
            assert!(micros > 0 && ["USD", "EUR", "GBP"].contains(&r.revenue_currency.as_str()));
            assert_eq!(
                (r.name.as_str(), r.pathname.as_str()),
                ("Purchase", "/checkout/success")
            );
        }
        match r.name.as_str() {
            "engagement" => {
                assert!(r.engagement_ms > 0 && r.scroll_depth <= 100, "{r:?}");
                assert!(r.props.is_empty(), "{r:?}");
            }
            _ => assert_eq!((r.engagement_ms, r.scroll_depth), (0, 255), "{r:?}"),
        }
        if r.name == "Purchase" {
            assert!(r.revenue_micros.is_some(), "{r:?}");
        }
        // Anonymous (DNT) rows have neither id, and are their own entry page.
        assert_eq!(r.visitor_id == 0, r.session_id == 0, "{r:?}");
        if r.session_id == 0 {
            anonymous += 1;
            assert_eq!(r.entry_page, r.pathname, "{r:?}");
        } else {
            sessions.entry(r.session_id).or_default().push(r);
        }
    }
    assert!(anonymous > 0, "no anonymous rows");

    let tz = TimeZone::get(TZ).unwrap();
    let mut visits_by_day: BTreeMap<jiff::civil::Date, u64> = BTreeMap::new();
    let mut starts_by_hour = [0u64; 24];
    let mut visitor_days: HashMap<u64, BTreeSet<i64>> = HashMap::new();
    let mut with_source = 0;
    for (id, visit) in &mut sessions {
        visit.sort_by_key(|r| (r.timestamp, r.name != "pageview"));
        let first = visit[0];
        assert_eq!(first.name, "pageview", "session {id} starts with {first:?}");
        assert!(
            visit[1..].iter().all(|r| r.timestamp > first.timestamp),
            "session {id}: a row at its first page view's second"
        );
        let second_view = visit[1..]
            .iter()
            .find(|r| r.name == "pageview")
            .map_or(u32::MAX, |r| r.timestamp);
        for pair in visit.windows(2) {
            assert!(
                pair[1].timestamp - pair[0].timestamp < 30 * 60,
                "session {id}: a 30-minute gap"
            );
        }
        let visitor = first.visitor_id;
        let source = |r: &StoredRow| {
            (
                r.referrer_host.clone(),
                r.referrer_path.clone(),
                r.source.clone(),
                r.channel.clone(),
                [
                    r.utm_source.clone(),
                    r.utm_medium.clone(),
                    r.utm_campaign.clone(),
                    r.utm_term.clone(),
                    r.utm_content.clone(),
                ],
            )
        };
        let landing = source(first);
        with_source += u32::from(!landing.2.is_empty());
        for r in visit.iter() {
            assert_eq!(r.entry_page, first.pathname, "session {id}: {r:?}");
            assert_eq!(r.visitor_id, visitor, "session {id}");
            assert_eq!(
                (&r.browser, &r.os, &r.country),
                (&first.browser, &first.os, &first.country)
            );
            if r.timestamp < second_view {
                // The first page's rows carry the visit's referrer and UTM tags ...
                assert_eq!(source(r), landing, "session {id}: {r:?}");
            } else {
                // ... and later pages' rows, whose referrer is the site itself, none.
                let none = (
                    String::new(),
                    String::new(),
                    String::new(),
                    "direct".to_owned(),
                    Default::default(),
                );
                assert_eq!(source(r), none, "session {id}: {r:?}");
            }
        }
        let zoned = jiff::Timestamp::from_second(i64::from(first.timestamp))
            .unwrap()
            .to_zoned_datetime(tz.clone());
        *visits_by_day.entry(zoned.date()).or_default() += 1;
        starts_by_hour[zoned.hour() as usize] += 1;
        visitor_days
            .entry(visitor)
            .or_default()
            .insert(i64::from(first.timestamp).div_euclid(86_400));
    }
    // A visitor id is one UTC day's (the daily salt): its visits all start that day.
    for (visitor, days) in &visitor_days {
        assert_eq!(
            days.len(),
            1,
            "visitor {visitor} starts visits on days {days:?}"
        );
    }
    // About two visits in three come with a referrer or UTM tags.
    let visits = sessions.len() as u32;
    assert!(
        with_source * 10 > visits * 4 && with_source * 10 < visits * 9,
        "{with_source} of {visits}"
    );

    // Every day has visits, about as many as asked for (weekday, trend and noise
    // factors are within 0.7 ..= 1.4, and a visitor makes 1 to 3 visits).
    assert_eq!(visits_by_day.len(), DAYS as usize, "{visits_by_day:?}");
    for (day, visits) in &visits_by_day {
        let visits = *visits as f64;
        let n = f64::from(VISITORS);
        assert!(
            (0.6 * n..=2.0 * n).contains(&visits),
            "{day}: {visits} visits"
        );
    }
    // Busier in the (local) day than at night.
    let day: u64 = starts_by_hour[9..=17].iter().sum();
    let night: u64 = starts_by_hour[0..=5].iter().sum();
    assert!(day > 4 * night, "{starts_by_hour:?}");
}

fn hush(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hush"))
        .arg("demo")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("HUSH_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run hush")
}

#[tokio::test]
async fn the_command_writes_configured_sites_and_refuses_others_unless_forced() {
    let (config, client) = db::migrated_config("demo_cli", "").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hush.toml");
    let ch = &config.clickhouse;
    std::fs::write(
        &path,
        format!(
            "[clickhouse]\nurl = {:?}\nuser = {:?}\npassword = {:?}\ndatabase = {:?}\n\
             [log]\nlevel = \"warn\"\n\
             [[sites]]\ndomain = \"demo.example\"\naliases = [\"www.demo.example\"]\n\
             timezone = \"Europe/Berlin\"\n",
            ch.url, ch.user, ch.password, ch.database
        ),
    )
    .unwrap();
    let count = |site: &'static str| {
        let client = client.clone();
        async move {
            client
                .query("SELECT count() FROM events WHERE site = ?")
                .bind(site)
                .fetch_one::<u64>()
                .await
                .unwrap()
        }
    };

    for (site, needle) in [
        ("unknown.example", "--force"),
        ("www.demo.example", "alias of \"demo.example\""),
    ] {
        let out = hush(
            &path,
            &["--site", site, "--days", "2", "--visitors-per-day", "5"],
        );
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{stderr}");
        assert_eq!(count(site).await, 0);
    }
    let out = hush(&path, &["--site", "demo.example", "--days", "0"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("days"),
        "{out:?}"
    );

    let args = [
        "--days",
        "3",
        "--visitors-per-day",
        "20",
        "--seed",
        "5",
        "--until",
        "2026-01-20",
    ];
    let out = hush(
        &path,
        &[&["--site", "demo.example"][..], &args[..]].concat(),
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = demo::generate(&DemoOptions {
        site: "demo.example".into(),
        timezone: "Europe/Berlin".into(),
        days: 3,
        visitors_per_day: 20,
        seed: 5,
        last_day: date(2026, 1, 20),
        not_after: u32::MAX,
    })
    .unwrap()
    .0
    .len() as u64;
    assert!(stdout.contains(&format!("{expected} rows")), "{stdout}");
    assert_eq!(count("demo.example").await, expected);

    let out = hush(
        &path,
        &[&["--site", "unknown.example", "--force"][..], &args[..]].concat(),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(count("unknown.example").await > 0);
    assert_eq!(count("demo.example").await, expected);
}
