//! The per-hit enrichment modules against the committed real-world corpora, and the
//! geo database's SIGHUP reload (a separate test binary, so the signal handler it
//! installs cannot interfere with other tests).

mod geo_fixture;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hush::config::{GeoConfig, UserAgentConfig};
use hush::enrich::geo::GeoDb;
use hush::enrich::page_url::{self, Utm};
use hush::enrich::referrer;
use hush::enrich::ua::UaParser;

/// (weight, text) rows of a corpus TSV, header skipped.
fn corpus(name: &str) -> Vec<(u64, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/corpus")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("weight\t")));
    lines
        .map(|line| {
            let (weight, value) = line.split_once('\t').expect("weight<TAB>value");
            (weight.parse().expect("integer weight"), value.to_owned())
        })
        .collect()
}

#[test]
fn user_agent_corpus_parses_like_real_traffic() {
    let rows = corpus("user_agents.tsv");
    assert!(rows.len() >= 1_000, "{} rows", rows.len());
    let parser = UaParser::new(&UserAgentConfig::default()).unwrap();
    let total: u64 = rows.iter().map(|(w, _)| w).sum();
    let mut bot_weight = 0;
    let mut unnamed_weight = 0;
    let mut by_device: HashMap<&str, u64> = HashMap::new();
    let mut by_browser: HashMap<String, u64> = HashMap::new();
    for (weight, ua) in &rows {
        let info = parser.parse(ua);
        assert!(
            ["desktop", "mobile", "tablet", "other"].contains(&info.device),
            "{ua}"
        );
        if info.is_bot {
            bot_weight += weight;
            assert_eq!(info.device, "other", "{ua}");
            continue;
        }
        if info.browser.is_empty() {
            unnamed_weight += weight;
        }
        *by_device.entry(info.device).or_default() += weight;
        *by_browser.entry(info.browser.to_string()).or_default() += weight;
        // Versions are major.minor at most.
        assert!(
            info.browser_version.split('.').count() <= 2,
            "{ua} -> {}",
            info.browser_version
        );
    }
    let share = |w: u64| w as f64 / total as f64;
    assert!(
        (0.04..0.12).contains(&share(bot_weight)),
        "bot share {}",
        share(bot_weight)
    );
    assert!(
        share(unnamed_weight) < 0.01,
        "unnamed browsers {}",
        share(unnamed_weight)
    );
    for browser in [
        "Chrome",
        "Safari",
        "Firefox",
        "Microsoft Edge",
        "Samsung Internet",
        "Opera",
        "Facebook",
        "Instagram",
        "WebView",
    ] {
        assert!(
            by_browser.contains_key(browser),
            "no {browser} in {by_browser:?}"
        );
    }
    assert!(!by_browser.contains_key("Edge") && !by_browser.contains_key("SamsungBrowser"));
    assert!(share(by_device["mobile"]) > 0.3, "{by_device:?}");
    assert!(share(by_device["desktop"]) > 0.25, "{by_device:?}");
    assert!(
        by_device.get("tablet").is_some_and(|&w| w > 0),
        "{by_device:?}"
    );
    // The corpus has more distinct strings than a small cache: it must stay bounded.
    let small = UaParser::new(&UserAgentConfig {
        cache_entries: 100,
        ..Default::default()
    })
    .unwrap();
    for (_, ua) in &rows {
        small.parse(ua);
    }
    assert!(small.cached_entries() <= 120, "{}", small.cached_entries());
}

#[test]
fn referrer_corpus_classifies_into_channels() {
    let rows = corpus("referrers.tsv");
    assert!(rows.len() >= 1_000, "{} rows", rows.len());
    let page = page_url::parse("https://shop.example.com/landing", false).unwrap();
    let same_site = [page.hostname.as_str(), "example.com"];
    let total: u64 = rows.iter().map(|(w, _)| w).sum();
    let mut by_channel: HashMap<&str, u64> = HashMap::new();
    for (weight, r) in &rows {
        let info = referrer::classify(Some(r), &same_site, &Utm::default());
        *by_channel.entry(info.channel).or_default() += weight;
        if r.is_empty() {
            assert_eq!(info.channel, "direct");
            continue;
        }
        assert_ne!(info.channel, "direct", "{r}");
        assert!(!info.source.is_empty(), "{r}");
        // Every Google country domain in the corpus (`https://www.google.<tld>/`).
        if let Some(tld) = r.strip_prefix("https://www.google.")
            && tld.find('/') == Some(tld.len() - 1)
        {
            assert_eq!((&*info.source, info.channel), ("Google", "search"), "{r}");
        }
        if r.starts_with("https://t.co/") {
            assert_eq!((&*info.source, info.channel), ("X", "social"), "{r}");
        }
        assert!(!info.path.contains('?'), "{r}");
    }
    let share = |c: &str| by_channel.get(c).copied().unwrap_or(0) as f64 / total as f64;
    assert!((0.35..0.5).contains(&share("direct")), "{by_channel:?}");
    assert!(share("search") > 0.25, "{by_channel:?}");
    assert!(share("social") > 0.05, "{by_channel:?}");
    assert!(share("referral") > 0.05, "{by_channel:?}");
    assert!(share("email") > 0.005, "{by_channel:?}");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_database_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("GeoLite2-City.mmdb");
    geo_fixture::write_city_db(&path, &[("81.2.69.0/24", "GB", "ENG", 2643743, "London")]);
    let db = Arc::new(
        GeoDb::open(&GeoConfig {
            database: Some(path.clone()),
            // Only the signal may trigger the reload in this test.
            watch: false,
            watch_interval_ms: 100,
        })
        .unwrap(),
    );
    db.spawn_watch();
    assert_eq!(db.lookup(ip("81.2.69.7")).city, "London");

    geo_fixture::write_city_db(&path, &[("81.2.69.0/24", "IE", "D", 2964574, "Dublin")]);
    // Without a trigger nothing changes (watch is off).
    assert_eq!(db.lookup(ip("81.2.69.7")).city, "London");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    // The reload swaps the database in, then counts itself: wait for both.
    while db.lookup(ip("81.2.69.7")).city != "Dublin" || db.reloads() == 0 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(&db.lookup(ip("81.2.69.7")).country, b"IE");
    assert_eq!(db.reloads(), 1);
}
