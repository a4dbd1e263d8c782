//! The tracker script and the pixel, served by the built `hush` binary, against a
//! real ClickHouse.
//!
//! Over HTTP: the script's headers, encodings, ETags and 304s (the bytes compared
//! with `tracker/dist/` read from disk), and pixel hits with and without a
//! `Referer`, bad ones (still a GIF, nothing stored) and their counts in
//! `/metrics`. In a real browser (`browser` below): headless Chromium loads pages
//! from another origin that load the script from hush, and every feature must
//! leave exactly its rows in ClickHouse.

#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/hush.rs"]
mod hush_process;
mod support;
#[path = "support/wait.rs"]
mod wait;

#[path = "tracker/browser.rs"]
mod browser;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hush_process::{HushProcess, test_config};
use wait::{count, wait_for_count};

const DEADLINE: Duration = Duration::from_secs(120);
const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// A running `hush serve` in a temporary directory that lives as long as it does.
pub struct Collector {
    // Declared first so it is dropped (killed) before its directory is removed.
    pub hush: HushProcess,
    _dir: tempfile::TempDir,
}

impl Collector {
    /// A collector on a fresh database with a disk spool (so a stored pixel hit is
    /// also a spooled one), serving `sites` (TOML `[[sites]]` tables).
    pub async fn start(prefix: &str, sites: &str) -> (Collector, clickhouse::Client) {
        let ch = support::clickhouse();
        let db = ch.fresh_database(prefix).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let spool = dir.path().join("spool");
        let config = test_config(
            ch.url(),
            Some((ch.user(), ch.password())),
            &db,
            &format!("[spool]\ndir = \"{}\"\n\n{sites}", spool.display()),
        );
        let hush = HushProcess::start(&dir.path().join("hush"), &config);
        (Collector { hush, _dir: dir }, ch.client(&db))
    }

    pub fn url(&self, path: &str) -> String {
        self.hush.url(path)
    }
}

fn dist(file: &str) -> Vec<u8> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tracker/dist")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header: {:?}", resp.headers()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_is_served_with_encodings_etags_and_cors() {
    let (c, _) = Collector::start("tracker_script", "").await;
    // No automatic decompression: the bytes on the wire are compared.
    let client = reqwest::Client::new();
    let get = |path: &str, accept: Option<&str>, inm: Option<&str>| {
        let mut req = client.get(c.url(path));
        if let Some(a) = accept {
            req = req.header("accept-encoding", a);
        }
        if let Some(t) = inm {
            req = req.header("if-none-match", t);
        }
        req.send()
    };

    let mut etags = Vec::new();
    for (accept, encoding, file) in [
        (None, None, "script.js"),
        (Some("gzip, deflate"), Some("gzip"), "script.js.gz"),
        (Some("gzip, deflate, br, zstd"), Some("br"), "script.js.br"),
        (Some("br;q=0, gzip;q=0.5"), Some("gzip"), "script.js.gz"),
        (Some("identity"), None, "script.js"),
    ] {
        let resp = get("/js/script.js", accept, None).await.unwrap();
        assert_eq!(resp.status(), 200, "{accept:?}");
        assert_eq!(
            header(&resp, "content-type"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            resp.headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            encoding,
            "{accept:?}"
        );
        assert_eq!(header(&resp, "vary"), "Accept-Encoding");
        assert_eq!(
            header(&resp, "cache-control"),
            "public, max-age=3600, stale-while-revalidate=86400"
        );
        assert_eq!(header(&resp, "access-control-allow-origin"), "*");
        assert_eq!(
            header(&resp, "cross-origin-resource-policy"),
            "cross-origin"
        );
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        let etag = header(&resp, "etag").to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "strong ETag: {etag}"
        );
        let body = resp.bytes().await.unwrap();
        assert!(
            body == dist(file),
            "{accept:?}: body is not tracker/dist/{file}"
        );
        etags.push((accept, etag));
    }
    // One tag per representation, the same for the same representation.
    assert_ne!(etags[0].1, etags[1].1);
    assert_ne!(etags[1].1, etags[2].1);
    assert_eq!(etags[1].1, etags[3].1);
    assert_eq!(etags[0].1, etags[4].1);

    // Revalidation: 304 with the caching and CORS headers, no body.
    let (accept, gz_tag) = &etags[1];
    let resp = get("/js/hush.js", *accept, Some(gz_tag)).await.unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(header(&resp, "etag"), gz_tag);
    assert_eq!(
        header(&resp, "cache-control"),
        "public, max-age=3600, stale-while-revalidate=86400"
    );
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");
    assert!(resp.bytes().await.unwrap().is_empty());
    // A tag of another representation (or release) gets the full answer.
    let resp = get("/js/script.js", Some("br"), Some(gz_tag))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = get("/js/script.js", None, Some("\"0123\"")).await.unwrap();
    assert_eq!(resp.status(), 200);

    // HEAD: the headers, no body; other methods are refused.
    let resp = client.head(c.url("/js/script.js")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "etag"), etags[0].1);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = client.post(c.url("/js/script.js")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(header(&resp, "allow"), "GET, HEAD");
}

/// The metrics page, from the admin listener (`/metrics` is not public by default).
async fn metrics(c: &Collector) -> String {
    c.hush.metrics().await
}

/// The value of the sample named exactly `sample` (with its labels), 0 if absent.
fn sample(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct PixelRow {
    name: String,
    hostname: String,
    pathname: String,
    referrer_host: String,
    props: Vec<(String, String)>,
    utm_source: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pixel_always_answers_a_gif_and_stores_valid_hits() {
    let (c, ch) = Collector::start(
        "tracker_pixel",
        "[[sites]]\ndomain = \"example.com\"\n\n[[sites]]\ndomain = \"news.example.org\"\n",
    )
    .await;
    let client = reqwest::Client::new();
    let pixel = |path: &str, referer: Option<&str>, ua: &str| {
        let mut req = client.get(c.url(path)).header("user-agent", ua);
        if let Some(r) = referer {
            req = req.header("referer", r);
        }
        req.send()
    };
    let gif = dist_gif();
    let check_gif = |resp: &reqwest::Response| {
        assert_eq!(resp.status(), 200);
        assert_eq!(header(resp, "content-type"), "image/gif");
        assert_eq!(header(resp, "cache-control"), "no-store");
        assert_eq!(header(resp, "content-length"), "43");
    };

    // Bad pixels first: each still gets the GIF, none may be stored.
    for (path, referer, ua) in [
        // No page URL at all.
        ("/api/event.gif?d=example.com", None, CHROME),
        // No domain.
        ("/api/event.gif", Some("https://example.com/a"), CHROME),
        // Unknown site.
        (
            "/pixel.gif?d=other.example",
            Some("https://example.com/b"),
            CHROME,
        ),
        // Props that are not a JSON object.
        (
            "/api/event.gif?d=example.com&p=%5B1%2C2%5D",
            Some("https://example.com/c"),
            CHROME,
        ),
        // A parameter twice.
        (
            "/api/event.gif?d=example.com&d=example.com",
            Some("https://example.com/d"),
            CHROME,
        ),
        // A URL that is not one.
        ("/api/event.gif?d=example.com&u=not%20a%20url", None, CHROME),
        // A bot: answered, dropped.
        (
            "/api/event.gif?d=example.com",
            Some("https://example.com/bot"),
            GOOGLEBOT,
        ),
    ] {
        let resp = pixel(path, referer, ua).await.unwrap();
        check_gif(&resp);
        assert!(resp.bytes().await.unwrap() == gif, "{path}");
    }
    // HEAD answers the headers and counts nothing.
    let resp = client
        .head(c.url("/api/event.gif?d=example.com&u=https%3A%2F%2Fexample.com%2Fhead"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "image/gif");

    // Good pixels: the page from the Referer (a <noscript> image), or given in `u`
    // with a name and props (an e-mail open), on both paths.
    for (path, referer) in [
        (
            "/api/event.gif?d=example.com&r=https%3A%2F%2Fwww.google.com%2F",
            Some("https://example.com/pricing?utm_source=ads&token=secret"),
        ),
        (
            "/pixel.gif?d=news.example.org&n=Email+open&u=https%3A%2F%2Fnews.example.org%2Fissues%2F42&p=%7B%22list%22%3A%22weekly%22%7D&cb=123",
            None,
        ),
    ] {
        let resp = pixel(path, referer, CHROME).await.unwrap();
        check_gif(&resp);
        assert!(resp.bytes().await.unwrap() == gif);
    }

    // The good rows are the last ones sent: once both are in, the bad ones (sent
    // before, on the same path through the spool) would be too.
    wait_for_count(&ch, "SELECT count() FROM events", 2, DEADLINE).await;
    let rows = ch
        .query(
            "SELECT name, hostname, pathname, referrer_host, props, utm_source \
             FROM events ORDER BY pathname",
        )
        .fetch_all::<PixelRow>()
        .await
        .unwrap();
    assert_eq!(
        rows,
        [
            PixelRow {
                name: "Email open".into(),
                hostname: "news.example.org".into(),
                pathname: "/issues/42".into(),
                referrer_host: String::new(),
                props: vec![("list".into(), "weekly".into())],
                utm_source: String::new(),
            },
            PixelRow {
                name: "pageview".into(),
                hostname: "example.com".into(),
                pathname: "/pricing".into(),
                referrer_host: "google.com".into(),
                props: vec![],
                utm_source: "ads".into(),
            },
        ]
    );
    assert_eq!(count(&ch, "SELECT count() FROM events").await, 2);

    let text = metrics(&c).await;
    assert_eq!(
        sample(&text, "hush_pixel_hits_total{outcome=\"stored\"}"),
        2.0
    );
    assert_eq!(
        sample(&text, "hush_pixel_hits_total{outcome=\"dropped\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "hush_pixel_hits_total{outcome=\"refused\"}"),
        6.0
    );
    assert_eq!(
        sample(&text, "hush_hits_dropped_total{reason=\"bot\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "hush_hits_rejected_total{reason=\"malformed\"}"),
        5.0
    );
    assert_eq!(
        sample(&text, "hush_hits_rejected_total{reason=\"unknown_site\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "hush_http_requests_total{route=\"pixel\",status=\"200\"}"
        ),
        10.0
    );
}

/// The 43 bytes of a 1×1 transparent GIF89a, spelled out here rather than taken
/// from hush.
fn dist_gif() -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[1, 0, 1, 0, 0x80, 0, 0]); // 1×1, global table of 2 colours
    gif.extend_from_slice(&[0, 0, 0, 0xff, 0xff, 0xff]); // black, white
    gif.extend_from_slice(&[0x21, 0xf9, 4, 1, 0, 0, 0, 0]); // transparent index 0
    gif.extend_from_slice(&[0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0]); // the image, 1×1
    gif.extend_from_slice(&[2, 2, 0x44, 1, 0]); // LZW data: one pixel of colour 0
    gif.push(0x3b);
    assert_eq!(gif.len(), 43);
    gif
}
