//! The tracker in a real browser: headless Chromium (Debian's, installed by
//! `scripts/install-chromium`), driven over the DevTools protocol, loads pages from
//! a test server on another origin (`site.test`, mapped to 127.0.0.1 with
//! `--host-resolver-rules`, as is `hush.test` for the collector), and every feature
//! must leave exactly its rows in ClickHouse. The browser may talk to those two
//! hosts only (every other name resolves to nothing, and every request the page
//! makes is checked), and no page may log a console error.
//!
//! Skips, saying so, only when Chromium is not installed and cannot be.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use super::{CHROME, Collector, DEADLINE};
use crate::chromium::{Chromium, chromium_binary};
use crate::wait::count;

// ---------------------------------------------------------------------------
// The site on another origin.

/// Serves the test pages at `site.test:<port>`, recording each request's path.
async fn site(hush_port: u16) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the test site");
    let port = listener.local_addr().expect("site address").port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let path = req.uri().path().to_owned();
                    log.lock().unwrap().push(path.clone());
                    let (status, body) = match page(&path, hush_port) {
                        Some(html) => (200, html),
                        None => (404, String::new()),
                    };
                    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                    async move { Ok::<_, Infallible>(resp) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (port, seen)
}

/// The page at `path`, loading the script from hush with `attrs` on its tag.
fn page(path: &str, hush: u16) -> Option<String> {
    let script = |attrs: &str| {
        format!(
            r#"<script defer data-domain="site.test" {attrs} src="http://hush.test:{hush}/js/script.js"></script>"#
        )
    };
    let body = match path {
        "/first" | "/spa" => script("data-local"),
        "/hash" => script("data-local data-hash"),
        "/tall" => format!(
            r#"{}<div style="height:4000px">tall</div>"#,
            script("data-local")
        ),
        "/links" => format!(
            r##"{}
<a id="out" href="https://elsewhere.test/path?q=1#top">elsewhere</a>
<a id="dl" href="/files/report.pdf?token=abc">report</a>
<a id="internal" href="/first">first</a>
<button id="tag" class="big hush-event-name=Signup hush-event-plan=pro">sign up</button>
<a class="plausible-event-name=Form+Submit plausible-event-kind=demo" href="https://elsewhere.test/x"><span id="ptag">demo</span></a>
<form class="hush-event-name=Contact hush-event-source=footer"><input name="q"><button id="send">send</button></form>
<script>
  // The test stays on this page: no link or form leaves it.
  document.addEventListener('click', (e) => e.target.closest('a') && e.preventDefault());
  document.addEventListener('submit', (e) => e.preventDefault());
</script>"##,
            script("data-local")
        ),
        "/custom" => format!(
            r#"<script>
  window.plausible = window.plausible || function () {{ (window.plausible.q = window.plausible.q || []).push(arguments) }};
  plausible('Purchase', {{ props: {{ plan: 'pro' }}, revenue: {{ currency: 'EUR', amount: 12.5 }} }});
  plausible('Queued', {{ props: {{ n: 1 }}, interactive: false }});
</script>{}"#,
            script("data-local")
        ),
        "/missing" => script("data-local data-404"),
        "/blog/post" | "/docs/intro" => script(r#"data-local data-include="/blog/**""#),
        "/private/area" => script(r#"data-local data-exclude="/private/**, /admin""#),
        "/ignored" => script("data-local"),
        "/manual" => script("data-local data-manual"),
        "/automated" => script(""),
        "/noscript" => format!(
            r#"<noscript>no script</noscript><img alt="" referrerpolicy="unsafe-url" src="http://hush.test:{hush}/api/event.gif?d=site.test">"#
        ),
        "/blank" => String::new(),
        _ => return None,
    };
    Some(format!(
        "<!doctype html><html><head><meta charset=utf-8><link rel=icon href=\"data:,\"><title>{path}</title></head>\
         <body style=\"margin:0\">{body}</body></html>"
    ))
}

// ---------------------------------------------------------------------------
// The test.

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, clickhouse::Row, serde::Deserialize)]
struct Row {
    name: String,
    pathname: String,
    props: Vec<(String, String)>,
    revenue_micros: Option<i64>,
    revenue_currency: String,
    interactive: u8,
}

fn row(name: &str, pathname: &str, props: &[(&str, &str)]) -> Row {
    Row {
        name: name.into(),
        pathname: pathname.into(),
        props: props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        revenue_micros: None,
        revenue_currency: String::new(),
        interactive: 1,
    }
}

/// Waits until ClickHouse holds as many rows as `expected` (never more); on
/// failure shows what it holds and what was expected.
async fn rows_reach(ch: &clickhouse::Client, expected: &[Row]) {
    let started = Instant::now();
    loop {
        let n = count(ch, "SELECT count() FROM events").await as usize;
        if n == expected.len() {
            return;
        }
        if n > expected.len() || started.elapsed() > DEADLINE {
            let stored: Vec<Row> = ch
                .query(
                    "SELECT name, pathname, props, revenue_micros, revenue_currency, interactive \
                     FROM events ORDER BY timestamp",
                )
                .fetch_all()
                .await
                .unwrap();
            panic!(
                "{n} rows stored, {} expected\nstored: {stored:#?}\nexpected: {expected:#?}",
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feature_leaves_exactly_its_rows() {
    let binary = match chromium_binary() {
        Ok(path) => path,
        Err(why) => {
            eprintln!("SKIPPED every_feature_leaves_exactly_its_rows: no Chromium ({why})");
            return;
        }
    };
    let (c, ch) = Collector::start("tracker_browser", "[[sites]]\ndomain = \"site.test\"\n").await;
    let hush_port = c.hush.addr().port();
    let (site_port, site_requests) = site(hush_port).await;
    let origin = format!("http://site.test:{site_port}");
    let at = |path: &str| format!("{origin}{path}");

    let chromium = Chromium::launch(
        &binary,
        &[
            "--window-size=800,600".to_owned(),
            // Only the two test hosts resolve; anything else the page might reach for
            // fails (and is caught by the request check).
            "--host-resolver-rules=MAP site.test 127.0.0.1, MAP hush.test 127.0.0.1, MAP * ~NOTFOUND"
                .to_owned(),
            // HeadlessChrome is in hush's bot list: look like the browser it is.
            format!("--user-agent={CHROME}"),
        ],
    );
    let (tab, tab_id) = chromium.page().await;
    for domain in ["Page", "Runtime", "Log", "Network"] {
        tab.call(&format!("{domain}.enable"), json!({})).await;
    }
    let browser = chromium.browser().await;

    let mut expected: Vec<Row> = Vec::new();
    macro_rules! expect {
        ($($row:expr),* $(,)?) => {{
            $(expected.push($row);)*
            rows_reach(&ch, &expected).await;
        }};
    }

    // First page view; leaving a page ends its visible stretch: an engagement row.
    tab.goto(&at("/first")).await;
    assert_eq!(tab.eval("document.visibilityState").await, "visible");
    expect!(row("pageview", "/first", &[]));

    // SPA: pushState and replaceState are page views, a query change is not, and
    // going back (popstate) to another path is one. Each new page view first ends
    // the last one's engagement.
    tab.goto(&at("/spa")).await;
    expect!(
        row("engagement", "/first", &[]),
        row("pageview", "/spa", &[])
    );
    tab.eval("history.pushState({}, '', '/spa/two')").await;
    expect!(
        row("engagement", "/spa", &[]),
        row("pageview", "/spa/two", &[])
    );
    tab.eval("history.replaceState({}, '', '/spa/three')").await;
    expect!(
        row("engagement", "/spa/two", &[]),
        row("pageview", "/spa/three", &[])
    );
    tab.eval("history.pushState({}, '', '/spa/three?tab=2')")
        .await;
    let back = "new Promise((r) => { addEventListener('popstate', () => r(location.pathname), { once: true }); history.back(); })";
    assert_eq!(tab.eval(back).await, "/spa/three");
    assert_eq!(tab.eval(back).await, "/spa");
    expect!(
        row("engagement", "/spa/three", &[]),
        row("pageview", "/spa", &[])
    );

    // Hash mode: the fragment is part of the page.
    tab.goto(&at("/hash#/a")).await;
    expect!(
        row("engagement", "/spa", &[]),
        row("pageview", "/hash#/a", &[])
    );
    tab.eval("location.hash = '#/b'").await;
    expect!(
        row("engagement", "/hash#/a", &[]),
        row("pageview", "/hash#/b", &[])
    );

    // Engagement: scroll, hide the page (another tab in front), show it again.
    tab.goto(&at("/tall")).await;
    expect!(
        row("engagement", "/hash#/b", &[]),
        row("pageview", "/tall", &[])
    );
    tab.eval(
        "new Promise((r) => { addEventListener('scroll', () => r(), { once: true }); scrollTo(0, 1500); })",
    )
    .await;
    let inner = tab.eval("innerHeight").await.as_u64().expect("innerHeight");
    let height = tab
        .eval("document.body.scrollHeight")
        .await
        .as_u64()
        .expect("scrollHeight");
    let scrolled = tab.eval("scrollY").await.as_u64().expect("scrollY");
    assert_eq!(scrolled, 1500);
    let tall_depth = ((scrolled + inner) * 100 / height).min(100);
    let other = browser
        .call("Target.createTarget", json!({ "url": "about:blank" }))
        .await;
    let other_id = other["targetId"]
        .as_str()
        .expect("new target id")
        .to_owned();
    browser
        .call("Target.activateTarget", json!({ "targetId": other_id }))
        .await;
    tab.until("document.visibilityState == 'hidden'").await;
    expect!(row("engagement", "/tall", &[]));
    browser
        .call("Target.activateTarget", json!({ "targetId": tab_id }))
        .await;
    tab.until("document.visibilityState == 'visible'").await;
    browser
        .call("Target.closeTarget", json!({ "targetId": other_id }))
        .await;

    // Outbound, download and tagged clicks; a tagged form counts on submit.
    tab.goto(&at("/links")).await;
    expect!(
        row("engagement", "/tall", &[]),
        row("pageview", "/links", &[])
    );
    let click = |selector: &str| format!("document.querySelector('{selector}').click()");
    tab.eval(&click("#out")).await;
    expect!(row(
        "Outbound Link: Click",
        "/links",
        &[("url", "https://elsewhere.test/path")]
    ));
    // Middle click.
    tab.eval("document.querySelector('#out').dispatchEvent(new MouseEvent('auxclick', { button: 1, bubbles: true }))")
        .await;
    expect!(row(
        "Outbound Link: Click",
        "/links",
        &[("url", "https://elsewhere.test/path")]
    ));
    // A right click and a link on the same site count nothing.
    tab.eval("document.querySelector('#out').dispatchEvent(new MouseEvent('auxclick', { button: 2, bubbles: true }))")
        .await;
    tab.eval(&click("#internal")).await;
    tab.eval(&click("#dl")).await;
    let report = at("/files/report.pdf");
    expect!(row("File Download", "/links", &[("url", &report)]));
    tab.eval(&click("#tag")).await;
    expect!(row("Signup", "/links", &[("plan", "pro")]));
    tab.eval(&click("#ptag")).await;
    expect!(row("Form Submit", "/links", &[("kind", "demo")]));
    tab.eval(&click("#send")).await;
    expect!(row("Contact", "/links", &[("source", "footer")]));

    // Custom events queued before the script loaded, with props and revenue, and
    // one after, whose callback runs.
    tab.goto(&at("/custom")).await;
    expect!(
        row("engagement", "/links", &[]),
        row("pageview", "/custom", &[]),
        Row {
            revenue_micros: Some(12_500_000),
            revenue_currency: "EUR".into(),
            ..row("Purchase", "/custom", &[("plan", "pro")])
        },
        Row {
            interactive: 0,
            ..row("Queued", "/custom", &[("n", "1")])
        },
    );
    assert_eq!(
        tab.eval("new Promise((r) => plausible('Later', { props: { k: 'v' }, callback: () => r('called') }))")
            .await,
        "called"
    );
    expect!(row("Later", "/custom", &[("k", "v")]));

    // A 404 page.
    tab.goto(&at("/missing")).await;
    expect!(
        row("engagement", "/custom", &[]),
        row("pageview", "/missing", &[]),
        row("404", "/missing", &[]),
    );

    // Include and exclude patterns: only /blog/post counts.
    tab.goto(&at("/blog/post")).await;
    expect!(
        row("engagement", "/missing", &[]),
        row("pageview", "/blog/post", &[])
    );
    tab.goto(&at("/docs/intro")).await;
    expect!(row("engagement", "/blog/post", &[]));
    tab.goto(&at("/private/area")).await;

    // A site owner's opt-out flags.
    for flag in ["plausible_ignore", "hush_ignore"] {
        tab.goto(&at("/blank")).await;
        tab.eval(&format!("localStorage.{flag} = 'true'")).await;
        tab.goto(&at("/ignored")).await;
        tab.until("typeof window.plausible == 'function'").await;
        tab.eval("plausible('Ignored')").await;
        tab.goto(&at("/blank")).await;
        tab.eval(&format!("localStorage.removeItem('{flag}')"))
            .await;
    }

    // Manual mode: nothing until the page says so, with its own URL.
    tab.goto(&at("/manual")).await;
    tab.until("typeof window.plausible == 'function'").await;
    tab.eval("plausible('pageview', { u: location.origin + '/manual/virtual' })")
        .await;
    expect!(row("pageview", "/manual/virtual", &[]));

    // An automated browser (this one says so) without data-local: nothing.
    assert_eq!(tab.eval("navigator.webdriver").await, true);
    tab.goto(&at("/automated")).await;
    tab.until("typeof window.plausible == 'function'").await;

    // The pixel from an <img>: the page comes from the Referer.
    tab.goto(&at("/noscript")).await;
    expect!(
        row("engagement", "/manual/virtual", &[]),
        row("pageview", "/noscript", &[])
    );
    tab.goto(&at("/blank")).await;

    // Exactly the expected rows.
    let mut stored: Vec<Row> = ch
        .query(
            "SELECT name, pathname, props, revenue_micros, revenue_currency, interactive FROM events",
        )
        .fetch_all()
        .await
        .unwrap();
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected);
    // Engagement rows: some active time each, and the depth the test scrolled to.
    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct Engagement {
        pathname: String,
        engagement_ms: u32,
        scroll_depth: u8,
    }
    let engagements: Vec<Engagement> = ch
        .query("SELECT pathname, engagement_ms, scroll_depth FROM events WHERE name = 'engagement'")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        engagements.len(),
        expected.iter().filter(|r| r.name == "engagement").count()
    );
    for e in &engagements {
        assert!(e.engagement_ms > 0, "{e:?}");
        if e.pathname == "/tall" {
            assert_eq!(u64::from(e.scroll_depth), tall_depth, "{e:?}");
        } else {
            // A short page, seen whole.
            assert_eq!(e.scroll_depth, 100, "{e:?}");
        }
    }

    // The browser talked to the two test hosts only, and nothing went wrong.
    let allowed = [
        format!("http://site.test:{site_port}/"),
        format!("http://hush.test:{hush_port}/"),
    ];
    let requests: Vec<String> = tab
        .events("Network.requestWillBeSent")
        .iter()
        .map(|e| e["request"]["url"].as_str().unwrap_or("").to_owned())
        .filter(|u| !u.starts_with("data:") && u != "about:blank")
        .collect();
    let strays: Vec<&String> = requests
        .iter()
        .filter(|u| !allowed.iter().any(|a| u.starts_with(a.as_str())))
        .collect();
    assert!(strays.is_empty(), "requests to other hosts: {strays:?}");
    // The ignored and excluded pages sent nothing at all, not only nothing that
    // was stored. (Beacons sent while a page unloads are not reported to the
    // DevTools session; those show in the rows.)
    let silent = ["/docs/intro", "/private/area", "/ignored", "/automated"];
    let loud: Vec<Value> = tab
        .events("Network.requestWillBeSent")
        .into_iter()
        .filter(|e| {
            let url = e["request"]["url"].as_str().unwrap_or("");
            let page = e["documentURL"].as_str().unwrap_or("");
            url.contains("/api/event") && silent.iter().any(|p| page == at(p))
        })
        .collect();
    assert!(loud.is_empty(), "silent pages sent: {loud:#?}");
    let errors: Vec<Value> = tab
        .events("Runtime.consoleAPICalled")
        .into_iter()
        .filter(|e| e["type"] == "error" || e["type"] == "warning")
        .chain(tab.events("Runtime.exceptionThrown"))
        .chain(
            tab.events("Log.entryAdded")
                .into_iter()
                .filter(|e| e["entry"]["level"] == "error"),
        )
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    // The script wrote no storage and set no cookie.
    tab.goto(&at("/blank")).await;
    assert_eq!(tab.eval("localStorage.length").await, 0);
    assert_eq!(tab.eval("document.cookie").await, "");
    let pages = site_requests.lock().unwrap().clone();
    assert!(pages.contains(&"/noscript".to_owned()), "{pages:?}");
}
