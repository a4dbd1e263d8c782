//! The dashboard, served by the built `hush` binary against the real ClickHouse.
//!
//! Over HTTP: the shell, its CSP and the hashed assets, on the ingestion listener
//! and on a listener of its own (`dashboard.listen`, which takes the read side
//! off the ingestion listener). In a real browser (headless Chromium over the
//! DevTools protocol): on rows this test inserts, the top stats equal the Stats
//! API's answer for the same query and the counts taken from the rows themselves;
//! changing the period, choosing a tab and clicking a source update the URL and
//! filter every panel; the empty, no-access, site-list and realtime views; no
//! console error, no request to any host but hush. Screenshots (1280 and 390 CSS
//! pixels wide, light and dark) go to `<target>/test-artefacts/dashboard/`.
//!
//! The browser part skips, saying so, only when Chromium is not installed and
//! cannot be.

#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/db.rs"]
mod db;
#[path = "support/hush.rs"]
mod hush_process;
mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use chromium::{Cdp, Chromium, chromium_binary};
use hush::enrich::row::EventRow;
use hush_process::{HushProcess, test_config};
use serde_json::{Value, json};

const SITE: &str = "open.example";
const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// Noon (UTC) `days` days before today.
fn noon(days: u32) -> u32 {
    (now_secs() / 86_400 - days) * 86_400 + 43_200
}

/// The visitors of the test: who came from where, on which day, seeing what.
struct Kind {
    source: &'static str,
    channel: &'static str,
    browser: &'static str,
    version: &'static str,
    os: &'static str,
    device: &'static str,
    country: [u8; 2],
    pages: &'static [&'static str],
}

const GOOGLE: Kind = Kind {
    source: "Google",
    channel: "search",
    browser: "Firefox",
    version: "120",
    os: "Linux",
    device: "desktop",
    country: *b"DE",
    pages: &["/", "/pricing"],
};
const DIRECT: Kind = Kind {
    source: "",
    channel: "direct",
    browser: "Chrome",
    version: "131",
    os: "Windows",
    device: "mobile",
    country: *b"US",
    pages: &["/blog"],
};
const TWITTER: Kind = Kind {
    source: "Twitter",
    channel: "social",
    browser: "Safari",
    version: "17",
    os: "iOS",
    device: "mobile",
    country: *b"FR",
    pages: &["/old"],
};

/// One visit of `visitor` starting at `at`: a page view a minute for each page.
fn visit(visitor: u64, at: u32, kind: &Kind) -> Vec<EventRow> {
    kind.pages
        .iter()
        .enumerate()
        .map(|(i, page)| EventRow {
            site: Arc::from(SITE),
            timestamp: at + 60 * i as u32,
            name: "pageview".into(),
            visitor_id: visitor,
            session_id: visitor + 1000,
            entry_page: Arc::from(kind.pages[0]),
            hostname: SITE.into(),
            pathname: (*page).into(),
            source: kind.source.into(),
            channel: kind.channel,
            browser: Arc::from(kind.browser),
            browser_version: Arc::from(kind.version),
            os: Arc::from(kind.os),
            device: kind.device,
            country: kind.country,
            props: if kind.source == "Google" {
                vec![("plan".to_owned(), "pro".to_owned())]
            } else {
                Vec::new()
            },
            ..EventRow::default()
        })
        .collect()
}

fn rows() -> Vec<EventRow> {
    let mut rows = Vec::new();
    for v in 1..=3 {
        rows.extend(visit(v, noon(1) + v as u32 * 10, &GOOGLE));
    }
    for v in 4..=5 {
        rows.extend(visit(v, noon(3) + v as u32 * 10, &DIRECT));
    }
    for v in 6..=9 {
        rows.extend(visit(v, noon(20) + v as u32 * 10, &TWITTER));
    }
    rows
}

/// What the rows say for the last `days` days (today included), with only the rows
/// `keep` keeps: (visitors, visits, pageviews, bounce rate in %).
fn expected(rows: &[EventRow], days: u32, keep: impl Fn(&EventRow) -> bool) -> [f64; 4] {
    let from = (now_secs() / 86_400 - (days - 1)) * 86_400;
    let kept: Vec<&EventRow> = rows
        .iter()
        .filter(|r| r.timestamp >= from && keep(r))
        .collect();
    let visitors: HashSet<u64> = kept.iter().map(|r| r.visitor_id).collect();
    let visits: HashSet<u64> = kept.iter().map(|r| r.session_id).collect();
    let bounces = visits
        .iter()
        .filter(|s| kept.iter().filter(|r| r.session_id == **s).count() == 1)
        .count();
    let rate = if visits.is_empty() {
        0.0
    } else {
        (bounces as f64 * 100.0 / visits.len() as f64).round()
    };
    [
        visitors.len() as f64,
        visits.len() as f64,
        kept.len() as f64,
        rate,
    ]
}

struct Served {
    // Declared first so it is dropped (killed) before its directory is removed.
    hush: HushProcess,
    _dir: tempfile::TempDir,
    client: clickhouse::Client,
    rows: Vec<EventRow>,
}

async fn serve(prefix: &str, extra: &str) -> Served {
    let ch = support::clickhouse();
    let (_config, client) = db::migrated_config(prefix, "").await;
    let database = db::current_database(&client).await;
    let rows = rows();
    db::insert_events(&client, &rows).await;
    let dir = tempfile::tempdir().unwrap();
    let login = (!ch.is_local()).then(|| (ch.user(), ch.password()));
    let config = test_config(
        ch.url(),
        login,
        &database,
        &format!(
            r#"
[stats]
rate_limit_per_hour = 100000
{extra}
[[sites]]
domain = "{SITE}"
public = true
goals = [{{ page = "/pricing" }}]

[[sites]]
domain = "empty.example"
public = true

[[sites]]
domain = "closed.example"
"#
        ),
    );
    let hush = HushProcess::start(dir.path(), &config);
    Served {
        hush,
        _dir: dir,
        client,
        rows,
    }
}

async fn query(url: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("POST /api/v2/query");
    assert_eq!(resp.status(), 200, "{body}");
    resp.json().await.expect("query answer")
}

#[tokio::test]
async fn the_read_side_moves_to_its_own_listener() {
    let s = serve(
        "dashboard_listen",
        "[dashboard]\nlisten = \"127.0.0.1:0\"\n",
    )
    .await;
    let http = reqwest::Client::new();
    // The dashboard listener: the shell, the assets it names, the stats API.
    let resp = http
        .get(s.hush.dashboard_url(&format!("/{SITE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-security-policy"],
        hush::app::dashboard::CSP
    );
    let html = resp.text().await.unwrap();
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the shell names its script");
    assert!(
        script.starts_with("/dashboard/app.") && script.ends_with(".js"),
        "{script}"
    );
    let resp = http
        .get(s.hush.dashboard_url(script))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "br");
    assert_eq!(
        resp.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let sites: Value = http
        .get(s.hush.dashboard_url("/api/hush/sites"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sites,
        json!({"sites": [
            {"domain": SITE, "timezone": "UTC"},
            {"domain": "empty.example", "timezone": "UTC"},
        ]})
    );
    let answer = query(
        &s.hush.dashboard_url("/api/v2/query"),
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "30d"}),
    )
    .await;
    assert_eq!(answer["results"][0]["metrics"][0], json!(9));
    // Nothing of ingestion there.
    let resp = http
        .get(s.hush.dashboard_url("/js/script.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // The ingestion listener serves neither the dashboard nor the stats API now...
    for path in [
        "/",
        "/open.example",
        "/api/hush/sites",
        "/api/hush/sites/open.example/policy",
        "/api/v2/sites/open.example/goals",
    ] {
        let resp = http.get(s.hush.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    let resp = http
        .post(s.hush.url("/api/v2/query"))
        .json(&json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "30d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // ...and still takes hits.
    let resp = http
        .post(s.hush.url("/api/event"))
        .header("user-agent", CHROME)
        .json(&json!({"n": "pageview", "u": format!("https://{SITE}/x"), "d": SITE}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    drop(s.client);
}

#[tokio::test]
async fn on_the_ingestion_listener_by_default() {
    let s = serve("dashboard_default", "").await;
    let http = reqwest::Client::new();
    let resp = http.get(s.hush.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert!(resp.text().await.unwrap().contains("hush-csrf"));
    // An unknown site is not a dashboard; a POST to one is refused.
    let resp = http
        .get(s.hush.url("/nobody.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = http
        .post(s.hush.url(&format!("/{SITE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let metrics = s.hush.metrics().await;
    assert!(
        metrics.contains(r#"route="dashboard",status="200""#),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------
// In the browser.

fn artefacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-artefacts").join("dashboard")
}

/// Waits until every query of the view has answered.
async fn settled(tab: &Cdp) {
    tab.until(
        "document.body.dataset.state == 'ready' && !document.querySelector('.loading') \
         && !!document.querySelector('#top-stats [data-metric], #details table, #details .empty, #install, .notice, .sites a, .sites li')",
    )
    .await;
}

/// The top stats on screen: metric name → the value it shows (raw).
async fn top_stats(tab: &Cdp) -> Vec<(String, f64)> {
    let v = tab
        .eval(
            "[...document.querySelectorAll('#top-stats [data-metric]')].map(e => \
             [e.dataset.metric, e.querySelector('.value').dataset.value])",
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_owned(),
                pair[1].as_str().unwrap().parse().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// The labels of a panel's rows.
async fn panel_rows(tab: &Cdp, panel: &str) -> Vec<String> {
    let v = tab
        .eval(&format!(
            "[...document.querySelectorAll('#panel-{panel} ol .label')].map(e => e.textContent)"
        ))
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The same top-stats query through the API, as numbers in the page's order.
async fn api_top(
    hush: &HushProcess,
    metrics: &[(String, f64)],
    date_range: &str,
    filters: Value,
) -> Vec<f64> {
    let names: Vec<&str> = metrics.iter().map(|(m, _)| m.as_str()).collect();
    let answer = query(
        &hush.url("/api/v2/query"),
        json!({"site_id": SITE, "metrics": names, "date_range": date_range, "filters": filters}),
    )
    .await;
    answer["results"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn shown(stats: &[(String, f64)], metric: &str) -> f64 {
    stats
        .iter()
        .find(|(m, _)| m == metric)
        .unwrap_or_else(|| panic!("no {metric} in {stats:?}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_read_filter_and_drill_down_in_a_real_browser() {
    let binary = match chromium_binary() {
        Ok(path) => path,
        Err(why) => {
            eprintln!(
                "SKIPPED analysts_read_filter_and_drill_down_in_a_real_browser: no Chromium ({why})"
            );
            return;
        }
    };
    let s = serve("dashboard_browser", "").await;
    let port = s.hush.addr().port();
    let origin = format!("http://hush.test:{port}");
    let at = |path: &str| format!("{origin}{path}");
    let shots = artefacts();

    let chromium = Chromium::launch(
        &binary,
        &[
            "--window-size=1280,900".to_owned(),
            // Only hush resolves: a request anywhere else fails, and is caught below.
            "--host-resolver-rules=MAP hush.test 127.0.0.1, MAP * ~NOTFOUND".to_owned(),
            format!("--user-agent={CHROME}"),
        ],
    );
    let (tab, _) = chromium.page().await;
    for domain in ["Page", "Runtime", "Log", "Network"] {
        tab.call(&format!("{domain}.enable"), json!({})).await;
    }
    tab.viewport(1280, 900, false).await;
    // Focus and blur events as in a focused window (keyboard use of the map).
    tab.call(
        "Emulation.setFocusEmulationEnabled",
        json!({ "enabled": true }),
    )
    .await;

    // The default view: the last 30 days.
    tab.goto(&at(&format!("/{SITE}"))).await;
    settled(&tab).await;
    let stats = top_stats(&tab).await;
    let names: Vec<&str> = stats.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        names,
        [
            "visitors",
            "visits",
            "pageviews",
            "views_per_visit",
            "bounce_rate",
            "visit_duration"
        ]
    );
    let api = api_top(&s.hush, &stats, "30d", json!([])).await;
    let on_screen: Vec<f64> = stats.iter().map(|(_, v)| *v).collect();
    assert_eq!(on_screen, api, "the page shows what the API answers");
    let [visitors, visits, pageviews, bounce] = expected(&s.rows, 30, |_| true);
    assert_eq!(shown(&stats, "visitors"), visitors);
    assert_eq!(shown(&stats, "visits"), visits);
    assert_eq!(shown(&stats, "pageviews"), pageviews);
    assert_eq!(shown(&stats, "bounce_rate"), bounce);
    assert_eq!(
        panel_rows(&tab, "sources").await,
        ["Organic Social", "Organic Search", "Direct"]
    );
    assert_eq!(
        tab.eval("document.querySelector('#graph svg path.main') != null")
            .await,
        true,
        "the graph is drawn"
    );
    tab.screenshot(&shots.join("desktop-30d.png")).await;
    // The page marks the moment every panel was filled, once.
    assert_eq!(
        tab.eval("performance.getEntriesByName('hush:filled').length")
            .await,
        1
    );

    // The world map: the countries of the rows shaded, the others not.
    tab.eval("document.getElementById('tab-locations-map').click()")
        .await;
    settled(&tab).await;
    tab.until("!!document.querySelector('#panel-locations svg.map path[data-code=FR]')")
        .await;
    assert_eq!(tab.eval("location.search").await, "?locations=map");
    let shaded = tab
        .eval(
            "[...document.querySelectorAll('#panel-locations path.country')].filter(p => !p.classList.contains('l0'))              .map(p => [p.dataset.code, Number(p.getAttribute('class').match(/l(\\d)/)[1]), p.getAttribute('tabindex')])",
        )
        .await;
    let mut by_country: std::collections::BTreeMap<String, HashSet<u64>> = Default::default();
    for r in &s.rows {
        by_country
            .entry(String::from_utf8_lossy(&r.country).into_owned())
            .or_default()
            .insert(r.visitor_id);
    }
    let mut codes: Vec<String> = shaded
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap().to_owned())
        .collect();
    codes.sort();
    assert_eq!(codes, by_country.keys().cloned().collect::<Vec<_>>());
    let level = |code: &str| {
        shaded
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c[0] == code)
            .unwrap()[1]
            .as_u64()
            .unwrap()
    };
    // More visitors, a darker shade (never lighter); every shaded one focusable.
    let mut ranked: Vec<(&String, usize)> = by_country.iter().map(|(c, v)| (c, v.len())).collect();
    ranked.sort_by_key(|(_, n)| *n);
    for pair in ranked.windows(2) {
        assert!(level(pair[0].0) <= level(pair[1].0), "{ranked:?} {shaded}");
    }
    assert_eq!(level(ranked.last().unwrap().0), 5);
    assert!(shaded.as_array().unwrap().iter().all(|c| c[2] == "0"));
    tab.eval("document.querySelector('#panel-locations path[data-code=FR]').focus()")
        .await;
    tab.until("!document.querySelector('.map-tip').hidden")
        .await;
    assert_eq!(
        tab.eval("document.querySelector('.map-tip').textContent")
            .await,
        format!("France: {} visitors", by_country["FR"].len())
    );
    tab.screenshot(&shots.join("desktop-map.png")).await;
    tab.call(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
    )
    .await;
    tab.screenshot(&shots.join("desktop-map-dark.png")).await;
    tab.call(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "light" }] }),
    )
    .await;
    // Enter on a country filters by it.
    tab.eval(
        "document.querySelector('#panel-locations path[data-code=FR]').dispatchEvent(\
         new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }))",
    )
    .await;
    settled(&tab).await;
    assert_eq!(
        tab.eval("location.search").await,
        "?locations=map&f=is,visit:country,FR"
    );
    assert_eq!(
        shown(&top_stats(&tab).await, "visitors"),
        expected(&s.rows, 30, |r| r.country == *b"FR")[0]
    );

    // The expanded Pages view: every page with its rates, sortable.
    tab.goto(&at(&format!("/{SITE}"))).await;
    settled(&tab).await;
    tab.eval("document.getElementById('expand-pages').click()")
        .await;
    settled(&tab).await;
    assert_eq!(tab.eval("location.search").await, "?expand=top");
    let table = tab
        .eval(
            "[...document.querySelectorAll('#details tbody tr')].map(tr => [tr.querySelector('th').textContent, \
             ...[...tr.querySelectorAll('td')].map(td => [td.dataset.metric, td.dataset.value])])",
        )
        .await;
    // From the rows: each page's visitors and pageviews, and its exit rate (visits
    // that ended on it per view of it).
    let mut pages: std::collections::BTreeMap<&str, (HashSet<u64>, u64, u64)> = Default::default();
    let mut last: std::collections::HashMap<u64, (u32, &str)> = Default::default();
    for r in &s.rows {
        let e = pages.entry(r.pathname.as_str()).or_default();
        e.0.insert(r.visitor_id);
        e.1 += 1;
        let l = last
            .entry(r.session_id)
            .or_insert((r.timestamp, r.pathname.as_str()));
        if r.timestamp >= l.0 {
            *l = (r.timestamp, r.pathname.as_str());
        }
    }
    for (_, page) in last.values() {
        pages.get_mut(page).unwrap().2 += 1;
    }
    let rows_shown = table.as_array().unwrap();
    assert_eq!(rows_shown.len(), pages.len(), "{table}");
    // The rates the rows cannot say simply: the API's, for the same query.
    let rates = query(
        &s.hush.url("/api/v2/query"),
        json!({"site_id": SITE, "metrics": ["visitors", "pageviews", "bounce_rate", "time_on_page", "scroll_depth"],
               "date_range": "30d", "dimensions": ["event:page"]}),
    )
    .await;
    let rates: std::collections::HashMap<String, Vec<Option<f64>>> = rates["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dimensions"][0].as_str().unwrap().to_owned(),
                r["metrics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(Value::as_f64)
                    .collect(),
            )
        })
        .collect();
    let mut previous = u64::MAX;
    for row in rows_shown {
        let page = row[0].as_str().unwrap();
        let (visitors, views, exits) = &pages[page];
        let shown = |m: &str| -> Option<f64> {
            row.as_array().unwrap()[1..]
                .iter()
                .find(|c| c[0] == m)
                .unwrap_or_else(|| panic!("no {m} in {row}"))[1]
                .as_str()
                .unwrap()
                .parse()
                .ok()
        };
        let cell = |m: &str| shown(m).unwrap_or_else(|| panic!("{m} empty in {row}"));
        assert_eq!(cell("visitors"), visitors.len() as f64, "{page}");
        assert_eq!(cell("pageviews"), *views as f64, "{page}");
        assert_eq!(
            cell("exit_rate"),
            (*exits as f64 * 100.0 / *views as f64).round(),
            "{page}"
        );
        for (i, m) in ["bounce_rate", "time_on_page", "scroll_depth"]
            .iter()
            .enumerate()
        {
            let api = rates
                .get(page)
                .unwrap_or_else(|| panic!("{page} not in {rates:?}"));
            assert_eq!(shown(m), api[i + 2], "{m} of {page}");
        }
        // Sorted by visitors, most first.
        assert!(visitors.len() as u64 <= previous, "{table}");
        previous = visitors.len() as u64;
    }
    assert_eq!(
        tab.eval("document.getElementById('page-of').textContent")
            .await,
        format!("Page 1 of 1 · {} rows", pages.len())
    );
    assert_eq!(
        tab.eval("document.getElementById('next-page').disabled")
            .await,
        true
    );
    tab.screenshot(&shots.join("desktop-details.png")).await;
    // By pageviews: most first on the first click, fewest first on the second.
    for dir in ["desc", "asc"] {
        tab.eval("document.querySelector('#details button.sort[data-sort=pageviews]').click()")
            .await;
        settled(&tab).await;
        assert_eq!(
            tab.eval("location.search").await,
            format!("?expand=top&sort=pageviews:{dir}")
        );
    }
    assert_eq!(
        tab.eval("document.querySelector('#details th[aria-sort=ascending] button').dataset.sort")
            .await,
        "pageviews"
    );
    let views: Vec<f64> = tab
        .eval("[...document.querySelectorAll('#details td[data-metric=pageviews]')].map(td => Number(td.dataset.value))")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut sorted = views.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(views, sorted);
    assert_eq!(views.len(), pages.len());
    tab.viewport(390, 844, true).await;
    settled(&tab).await;
    tab.screenshot(&shots.join("phone-details.png")).await;
    tab.goto(&at(&format!("/{SITE}?locations=map"))).await;
    settled(&tab).await;
    tab.until("!!document.querySelector('#panel-locations svg.map path')")
        .await;
    assert_eq!(
        tab.eval("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await,
        0
    );
    tab.screenshot(&shots.join("phone-map.png")).await;
    tab.viewport(1280, 900, false).await;

    // The property keys of the period, offered to pick from.
    tab.goto(&at(&format!("/{SITE}"))).await;
    settled(&tab).await;
    tab.until("!!document.querySelector('#panel-props .prop-keys button[data-key=plan]')")
        .await;
    tab.eval("document.querySelector('#panel-props .prop-keys button[data-key=plan]').click()")
        .await;
    settled(&tab).await;
    assert_eq!(tab.eval("location.search").await, "?prop=plan");
    // By visitors: those whose hits had no plan are "(none)", as in Plausible.
    let with: HashSet<u64> = s
        .rows
        .iter()
        .filter(|r| !r.props.is_empty())
        .map(|r| r.visitor_id)
        .collect();
    let without: HashSet<u64> = s
        .rows
        .iter()
        .filter(|r| r.props.is_empty())
        .map(|r| r.visitor_id)
        .collect();
    assert!(without.len() > with.len());
    assert_eq!(panel_rows(&tab, "props").await, ["(none)", "pro"]);
    tab.screenshot(&shots.join("desktop-props.png")).await;
    tab.goto(&at(&format!("/{SITE}"))).await;
    settled(&tab).await;

    // Another period: the URL says so, the numbers follow.
    tab.eval("(() => { const s = document.getElementById('period'); s.value = '7d'; s.dispatchEvent(new Event('change')); })()")
        .await;
    settled(&tab).await;
    assert_eq!(tab.eval("location.search").await, "?period=7d");
    let stats = top_stats(&tab).await;
    let api = api_top(&s.hush, &stats, "7d", json!([])).await;
    assert_eq!(stats.iter().map(|(_, v)| *v).collect::<Vec<_>>(), api);
    let [visitors, visits, pageviews, bounce] = expected(&s.rows, 7, |_| true);
    assert_eq!(
        [
            shown(&stats, "visitors"),
            shown(&stats, "visits"),
            shown(&stats, "pageviews"),
            shown(&stats, "bounce_rate")
        ],
        [visitors, visits, pageviews, bounce]
    );
    assert_eq!(
        panel_rows(&tab, "devices").await,
        ["Firefox", "Chrome"],
        "browsers of the last 7 days"
    );

    // Against the previous 7 days: each change is the API's.
    tab.eval("(() => { const s = document.getElementById('compare'); s.value = 'previous_period'; s.dispatchEvent(new Event('change')); })()")
        .await;
    settled(&tab).await;
    assert_eq!(
        tab.eval("location.search").await,
        "?period=7d&compare=previous_period"
    );
    let names: Vec<&str> = stats.iter().map(|(m, _)| m.as_str()).collect();
    let answer = query(
        &s.hush.url("/api/v2/query"),
        json!({"site_id": SITE, "metrics": names, "date_range": "7d",
               "include": {"comparisons": {"mode": "previous_period"}}}),
    )
    .await;
    let changes = tab
        .eval(
            "[...document.querySelectorAll('#top-stats [data-metric]')].map(e => \
             e.querySelector('.change')?.textContent ?? null)",
        )
        .await;
    let arrows: Vec<Value> = answer["results"][0]["comparison"]["change"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&names)
        .map(|(c, m)| match c.as_f64() {
            None => Value::Null,
            Some(0.0) => json!("0%"),
            Some(c) => {
                let unit = if m.ends_with("_rate") { " pp" } else { "%" };
                json!(format!(
                    "{} {}{unit}",
                    if c > 0.0 { "↑" } else { "↓" },
                    c.abs()
                ))
            }
        })
        .collect();
    assert_eq!(changes, Value::Array(arrows));
    // The visitors of the 7 days before (the Twitter ones are older still): none.
    assert_eq!(changes[0], "↑ 100%");
    assert_eq!(
        tab.eval("document.querySelector('#graph path.cmp') != null")
            .await,
        true,
        "the comparison is drawn"
    );
    tab.screenshot(&shots.join("desktop-compare.png")).await;
    tab.eval("(() => { const s = document.getElementById('compare'); s.value = ''; s.dispatchEvent(new Event('change')); })()")
        .await;
    settled(&tab).await;

    // The Sources tab, then a click on Google: every panel is filtered.
    tab.eval("document.getElementById('tab-sources-sources').click()")
        .await;
    settled(&tab).await;
    assert_eq!(
        panel_rows(&tab, "sources").await,
        ["Google", "Direct / None"]
    );
    tab.eval("document.querySelector('#panel-sources button.row[data-value=\"Google\"]').click()")
        .await;
    settled(&tab).await;
    assert_eq!(
        tab.eval("location.search").await,
        "?period=7d&sources=sources&f=is,visit:source,Google"
    );
    assert_eq!(
        tab.eval("document.querySelector('.filters .chip').textContent")
            .await,
        "Source is Google×"
    );
    let stats = top_stats(&tab).await;
    let filter = json!([["is", "visit:source", ["Google"]]]);
    let api = api_top(&s.hush, &stats, "7d", filter).await;
    assert_eq!(stats.iter().map(|(_, v)| *v).collect::<Vec<_>>(), api);
    let [visitors, _, pageviews, _] = expected(&s.rows, 7, |r| r.source == "Google");
    assert_eq!(shown(&stats, "visitors"), visitors);
    assert_eq!(shown(&stats, "pageviews"), pageviews);
    let mut pages = panel_rows(&tab, "pages").await;
    pages.sort();
    assert_eq!(pages, ["/", "/pricing"]);
    assert_eq!(panel_rows(&tab, "locations").await, ["Germany"]);
    assert_eq!(panel_rows(&tab, "devices").await, ["Firefox"]);
    assert_eq!(panel_rows(&tab, "goals").await, ["Visit /pricing"]);
    tab.screenshot(&shots.join("desktop-filtered.png")).await;

    // Dark, as the system says.
    tab.call(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
    )
    .await;
    tab.screenshot(&shots.join("desktop-filtered-dark.png"))
        .await;
    tab.call(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "light" }] }),
    )
    .await;

    // Browser versions, still filtered.
    tab.eval("document.getElementById('tab-devices-browser_version').click()")
        .await;
    settled(&tab).await;
    assert_eq!(panel_rows(&tab, "devices").await, ["Firefox 120"]);

    // Removing the filter; back and forward walk the history.
    tab.eval("document.querySelector('.filters .remove').click()")
        .await;
    settled(&tab).await;
    assert_eq!(
        tab.eval("location.search").await,
        "?period=7d&sources=sources&devices=browser_version"
    );
    assert_eq!(
        panel_rows(&tab, "devices").await,
        ["Firefox 120", "Chrome 131"]
    );
    assert_eq!(
        shown(&top_stats(&tab).await, "visitors"),
        expected(&s.rows, 7, |_| true)[0]
    );
    tab.eval("history.back()").await;
    tab.until("location.search.includes('f=is,visit:source,Google')")
        .await;
    settled(&tab).await;
    assert_eq!(shown(&top_stats(&tab).await, "visitors"), visitors);

    // The filter editor: page contains "pri".
    tab.goto(&at(&format!("/{SITE}?period=7d"))).await;
    settled(&tab).await;
    tab.eval(
        "(() => { document.getElementById('add-filter').click(); const f = document.getElementById('editor'); \
         f.elements.dim.value = 'event:page'; f.elements.op.value = 'contains'; f.elements.value.value = 'pri'; \
         f.requestSubmit(); })()",
    )
    .await;
    settled(&tab).await;
    assert_eq!(
        tab.eval("location.search").await,
        "?period=7d&f=contains,event:page,pri"
    );
    let stats = top_stats(&tab).await;
    assert!(stats.iter().any(|(m, _)| m == "time_on_page"), "{stats:?}");
    assert_eq!(
        shown(&stats, "visitors"),
        expected(&s.rows, 7, |r| r.pathname.contains("pri"))[0]
    );

    // A phone.
    tab.viewport(390, 844, true).await;
    tab.goto(&at(&format!("/{SITE}?period=7d"))).await;
    settled(&tab).await;
    let overflow = tab
        .eval("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        .await;
    let wide = tab
        .eval(
            "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > \
             document.documentElement.clientWidth + 0.5).map(e => e.tagName + '.' + e.className + '#' + e.id)",
        )
        .await;
    assert_eq!(overflow, 0, "no sideways scrolling on a phone: {wide}");
    tab.screenshot(&shots.join("phone-7d.png")).await;
    tab.viewport(1280, 900, false).await;

    // A site without hits says how to install the tracker.
    tab.goto(&at("/empty.example")).await;
    settled(&tab).await;
    let snippet = tab
        .eval("document.querySelector('#install pre').textContent")
        .await;
    assert_eq!(
        snippet,
        format!(
            r#"<script defer data-domain="empty.example" src="{origin}/js/script.js"></script>"#
        )
    );
    tab.screenshot(&shots.join("desktop-empty.png")).await;

    // A site that is not public, without a session: the sign-in form, which brings
    // the analyst back to the site afterwards.
    tab.call("Page.navigate", json!({ "url": at("/closed.example") }))
        .await;
    tab.until(
        "location.pathname == '/login' && !!document.querySelector('form input[type=password]')",
    )
    .await;
    let at_login = tab.eval("location.pathname + location.search").await;
    assert_eq!(at_login, "/login?next=%2Fclosed.example");

    // The site list: the public sites only.
    tab.goto(&at("/")).await;
    settled(&tab).await;
    assert_eq!(
        tab.eval("[...document.querySelectorAll('.sites a')].map(a => a.textContent)")
            .await,
        json!([SITE, "empty.example"])
    );
    tab.screenshot(&shots.join("desktop-sites.png")).await;

    // Realtime: two visitors a moment ago.
    let now = now_secs();
    let fresh: Vec<EventRow> = (50..52).flat_map(|v| visit(v, now - 30, &GOOGLE)).collect();
    db::insert_events(&s.client, &fresh).await;
    tab.goto(&at(&format!("/{SITE}?period=realtime"))).await;
    settled(&tab).await;
    tab.until("document.querySelector('[data-metric=current] .value').dataset.value !== ''")
        .await;
    let stats = top_stats(&tab).await;
    assert_eq!(shown(&stats, "current"), 2.0, "{stats:?}");
    assert_eq!(
        tab.eval("document.querySelector('#current .current-n').dataset.value")
            .await,
        "2"
    );
    tab.screenshot(&shots.join("desktop-realtime.png")).await;
    // It refreshes on its own (every minute), without reloading the page.
    tab.eval("window.sameDocument = true").await;
    let later: Vec<EventRow> = visit(52, now_secs(), &GOOGLE);
    db::insert_events(&s.client, &later).await;
    let started = std::time::Instant::now();
    while tab
        .eval("document.querySelector('[data-metric=current] .value')?.dataset.value")
        .await
        != "3"
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(100),
            "the realtime view did not refresh"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(tab.eval("window.sameDocument").await, true);

    // Every request went to hush, every API call with the CSRF header; no errors.
    let requests = tab.events("Network.requestWillBeSent");
    let strays: Vec<&str> = requests
        .iter()
        .map(|e| e["request"]["url"].as_str().unwrap_or(""))
        .filter(|u| !u.starts_with(&format!("{origin}/")) && !u.starts_with("data:"))
        .collect();
    assert!(strays.is_empty(), "requests to other hosts: {strays:?}");
    let api_calls: Vec<&Value> = requests
        .iter()
        .filter(|e| e["request"]["url"].as_str().unwrap_or("").contains("/api/"))
        .collect();
    assert!(api_calls.len() > 20, "{} API calls", api_calls.len());
    for call in &api_calls {
        assert_eq!(
            call["request"]["headers"]["X-Hush-CSRF"],
            json!(""),
            "{}",
            call["request"]
        );
    }
    let errors: Vec<Value> = tab
        .events("Runtime.consoleAPICalled")
        .into_iter()
        .filter(|e| e["type"] == "error" || e["type"] == "warning")
        .chain(tab.events("Runtime.exceptionThrown"))
        .chain(
            tab.events("Log.entryAdded")
                .into_iter()
                .filter(|e| e["entry"]["level"] == "error" || e["entry"]["level"] == "warning"),
        )
        // The closed site's refused calls are the expected 401s.
        .filter(|e| {
            let text = e["entry"]["text"].as_str().unwrap_or("");
            let page_closed = e["entry"]["url"].as_str().is_some_and(|u| {
                u.ends_with("/api/v2/query")
                    || u.ends_with("/api/v2/sites/closed.example/goals")
                    || u.ends_with("/api/hush/dropped")
                    || u.ends_with("/api/hush/sites/closed.example/policy")
            });
            !(page_closed && text.contains("status of 401"))
        })
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    eprintln!("screenshots in {}", shots.display());
}

/// Sends a page view of [`SITE`] through the Events API; returns `X-Hush-Dropped`.
async fn send_hit(hush: &HushProcess, headers: &[(&str, &str)]) -> Option<String> {
    let mut req = reqwest::Client::new()
        .post(hush.url("/api/event"))
        .header("content-type", "text/plain")
        .body(json!({"n": "pageview", "u": format!("https://{SITE}/"), "d": SITE}).to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 202);
    resp.headers()
        .get("x-hush-dropped")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_not_counted_and_what_we_collect_panels_show_what_hush_did() {
    let binary = match chromium_binary() {
        Ok(path) => path,
        Err(why) => {
            eprintln!("SKIPPED the_not_counted_and_what_we_collect_panels: no Chromium ({why})");
            return;
        }
    };
    let s = serve(
        "dashboard_dropped",
        "[writer]\ndropped_flush_interval_ms = 100\n[privacy]\ngpc = \"drop\"\n",
    )
    .await;
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    // What the test sends: reason -> hits, bot family -> hits.
    let mut reasons: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut families: std::collections::BTreeMap<&str, u64> = Default::default();
    for _ in 0..3 {
        send_hit(&s.hush, &[("user-agent", GOOGLEBOT)]).await;
        *reasons.entry("bot").or_default() += 1;
        *families.entry("Googlebot").or_default() += 1;
    }
    send_hit(&s.hush, &[("user-agent", "curl/8.5.0")]).await;
    *reasons.entry("bot").or_default() += 1;
    *families.entry("curl").or_default() += 1;
    for _ in 0..2 {
        send_hit(&s.hush, &[("user-agent", CHROME), ("sec-gpc", "1")]).await;
        *reasons.entry("gpc").or_default() += 1;
    }
    send_hit(&s.hush, &[("user-agent", CHROME), ("dnt", "1")]).await;
    *reasons.entry("dnt_anonymous").or_default() += 1;
    let total: u64 = reasons.values().sum();
    let started = std::time::Instant::now();
    loop {
        let n: u64 = s
            .client
            .query("SELECT sum(hits) FROM dropped")
            .fetch_one()
            .await
            .unwrap();
        if n == total {
            break;
        }
        assert!(n < total, "{n} counted, more than the {total} sent");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{n} of {total} counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let port = s.hush.addr().port();
    let origin = format!("http://hush.test:{port}");
    let chromium = Chromium::launch(
        &binary,
        &[
            "--window-size=1280,900".to_owned(),
            "--host-resolver-rules=MAP hush.test 127.0.0.1, MAP * ~NOTFOUND".to_owned(),
            format!("--user-agent={CHROME}"),
        ],
    );
    let (tab, _) = chromium.page().await;
    for domain in ["Page", "Runtime", "Log"] {
        tab.call(&format!("{domain}.enable"), json!({})).await;
    }
    tab.viewport(1280, 900, false).await;
    tab.goto(&format!("{origin}/{SITE}?period=7d")).await;
    settled(&tab).await;
    tab.until(
        "!document.querySelector('#panel-not-counted[aria-busy], #panel-policy[aria-busy]') \
         && !!document.querySelector('#panel-policy dl')",
    )
    .await;
    let shown = |key: &'static str| {
        let tab = &tab;
        async move {
            let v = tab
                .eval(&format!(
                    "[...document.querySelectorAll('#panel-not-counted [data-{key}]')].map(e => \
                     [e.dataset.{key}, e.querySelector('[data-hits]').dataset.hits, e.querySelector('.num').textContent])"
                ))
                .await;
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let hits: u64 = r[1].as_str().unwrap().parse().unwrap();
                    assert_eq!(
                        r[2].as_str().unwrap(),
                        hits.to_string(),
                        "the number on screen"
                    );
                    (r[0].as_str().unwrap().to_owned(), hits)
                })
                .collect::<std::collections::BTreeMap<String, u64>>()
        }
    };
    let want = |m: &std::collections::BTreeMap<&str, u64>| {
        m.iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect::<std::collections::BTreeMap<String, u64>>()
    };
    assert_eq!(shown("reason").await, want(&reasons));
    assert_eq!(shown("family").await, want(&families));
    let policy = |key: &str| {
        let tab = &tab;
        let expr =
            format!("document.querySelector('#panel-policy [data-policy={key}]').textContent");
        async move { tab.eval(&expr).await.as_str().unwrap().to_owned() }
    };
    assert!(policy("retention").await.contains("395 days"));
    assert!(policy("ip").await.contains("/24") && policy("ip").await.contains("/48"));
    assert!(policy("gpc").await.contains("not stored"));
    assert!(policy("dnt").await.contains("anonymously"));
    // Both are labelled regions (their headings), like every panel.
    let labelled = tab
        .eval("['panel-not-counted','panel-policy'].every(id => document.getElementById(id).getAttribute('aria-labelledby'))")
        .await;
    assert_eq!(labelled, true);
    let shots = artefacts();
    tab.eval("document.getElementById('panel-not-counted').scrollIntoView()")
        .await;
    tab.screenshot(&shots.join("desktop-not-counted.png")).await;
    let errors: Vec<Value> = tab
        .events("Runtime.exceptionThrown")
        .into_iter()
        .chain(
            tab.events("Log.entryAdded")
                .into_iter()
                .filter(|e| e["entry"]["level"] == "error"),
        )
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
