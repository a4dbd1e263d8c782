//! Who may see the read side, over HTTP against `hush serve` and the real ClickHouse:
//! sign-in (good, wrong and unknown), the session cookie's attributes, throttling,
//! expiry, CSRF, sign-out, site access through the Stats API, shared links (with and
//! without a password, revoked, their filters locked on), and no cookie on any
//! ingestion route.
//!
//! Expected numbers are counted from the rows each test inserts.

#[path = "support/db.rs"]
mod db;
#[path = "support/hush.rs"]
mod hush_process;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hush::app::auth::{NewShare, hash_password_with};
use hush::enrich::row::EventRow;
use hush_process::{HushProcess, test_config};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const ALICE_PASSWORD: &str = "alice-password-1";
const BOB_PASSWORD: &str = "bob-password-22";
const SHARE_PASSWORD: &str = "share-password-333";
/// Visitors of example.com whose visit came from Google, of `VISITORS`.
const GOOGLE: u64 = 2;
const VISITORS: u64 = 6;
const OTHER_VISITORS: u64 = 3;

/// The cheapest Argon2id parameters: these tests are about access, not the cost.
fn hash(password: &str) -> String {
    hash_password_with(password, argon2::Params::new(64, 1, 1, None).unwrap()).unwrap()
}

fn rows() -> Vec<EventRow> {
    let base = db::yesterday_noon();
    let mut rows = Vec::new();
    for (site, n) in [("example.com", VISITORS), ("other.example", OTHER_VISITORS)] {
        let site: Arc<str> = Arc::from(site);
        for v in 0..n {
            let google = site.as_ref() == "example.com" && v < GOOGLE;
            rows.push(EventRow {
                site: site.clone(),
                timestamp: base + v as u32,
                name: "pageview".into(),
                visitor_id: v + 1,
                session_id: v + 100,
                entry_page: Arc::from("/"),
                hostname: site.to_string(),
                pathname: "/".into(),
                source: if google {
                    "Google".into()
                } else {
                    String::new()
                },
                channel: if google { "search" } else { "direct" },
                props: props_of(&site, v),
                ..EventRow::default()
            });
        }
    }
    rows
}

/// The custom properties of visitor `v`'s hit on `site`.
fn props_of(site: &str, v: u64) -> Vec<(String, String)> {
    let p = |k: &str, val: &str| (k.to_owned(), val.to_owned());
    match (site, v) {
        ("example.com", 0 | 3) => vec![p("plan", "pro")],
        ("example.com", 4) => vec![p("plan", "free"), p("color", "red")],
        ("other.example", _) => vec![p("secret", "x")],
        _ => Vec::new(),
    }
}

/// Counted from [`rows`], independently of hush.
fn expected_visitors(site: &str, google_only: bool) -> u64 {
    let mut ids: Vec<u64> = rows()
        .iter()
        .filter(|r| r.site.as_ref() == site && (!google_only || r.source == "Google"))
        .map(|r| r.visitor_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len() as u64
}

struct Server {
    dir: tempfile::TempDir,
    hush: HushProcess,
    http: reqwest::Client,
    setup: Setup,
    open_slug: String,
    locked_slug: String,
}

/// What the configuration is made of.
struct Setup {
    database: String,
    /// The open link (no password, filtered to Google) and the password-protected one.
    open_share: String,
    locked_share: String,
}

/// The configuration: alice reads example.com, bob other.example; example.com has
/// two shared links. `extra` is merged over it (its own `[dashboard]`, say).
fn config(setup: &Setup, extra: &str, with_shares: bool) -> String {
    let ch = support::clickhouse();
    let login = (!ch.is_local()).then(|| (ch.user(), ch.password()));
    let shares = if with_shares {
        format!("{}\n{}", setup.open_share, setup.locked_share)
    } else {
        String::new()
    };
    test_config(
        ch.url(),
        login,
        &setup.database,
        &format!(
            r#"
{extra}

[[users]]
name = "alice"
password_hash = "{alice}"
sites = ["example.com"]

[[users]]
name = "bob"
password_hash = "{bob}"
sites = ["other.example"]

[[sites]]
domain = "example.com"
{shares}

[[sites]]
domain = "other.example"
"#,
            alice = hash(ALICE_PASSWORD),
            bob = hash(BOB_PASSWORD),
        ),
    )
}

async fn start(extra: &str) -> Server {
    let (_config, client) = db::migrated_config("auth", "").await;
    let database = db::current_database(&client).await;
    db::insert_events(&client, &rows()).await;
    let open = NewShare::generate();
    let locked = NewShare::generate();
    let setup = Setup {
        database,
        open_share: format!(
            "[[sites.shares]]\nname = \"google only\"\nslug_sha256 = \"{}\"\n\
             filters = '[[\"is\", \"visit:source\", [\"Google\"]]]'\n",
            open.slug_sha256
        ),
        locked_share: format!(
            "[[sites.shares]]\nname = \"with password\"\nslug_sha256 = \"{}\"\n\
             password_hash = \"{}\"\n",
            locked.slug_sha256,
            hash(SHARE_PASSWORD)
        ),
    };
    let dir = tempfile::tempdir().unwrap();
    let hush = HushProcess::start(dir.path(), &config(&setup, extra, true));
    Server {
        dir,
        hush,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        setup,
        open_slug: open.slug,
        locked_slug: locked.slug,
    }
}

/// The `name=value` of a `Set-Cookie`, and the whole header.
fn set_cookie(headers: &HeaderMap) -> Option<(String, String)> {
    let all: Vec<&str> = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(all.len() <= 1, "more than one cookie: {all:?}");
    let header = (*all.first()?).to_owned();
    Some((header.split(';').next().unwrap().to_owned(), header))
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.body))
    }
}

impl Server {
    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.unwrap();
        Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    async fn login_from(&self, name: &str, password: &str, next: &str, client: &str) -> Answer {
        let req = self
            .http
            .post(self.hush.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", client)
            .body(form(&[
                ("name", name),
                ("password", password),
                ("next", next),
            ]));
        self.send(req).await
    }

    async fn login(&self, name: &str, password: &str) -> Answer {
        self.login_from(name, password, "/example.com", "192.0.2.10")
            .await
    }

    /// Signs in and returns the cookie pair and the CSRF token.
    async fn session(&self, name: &str, password: &str) -> (String, String) {
        let a = self.login(name, password).await;
        assert_eq!(a.status, 303, "{}", a.body);
        let (cookie, _) = set_cookie(&a.headers).expect("a session cookie");
        let info = self.whoami(&cookie).await;
        assert_eq!(info.status, 200, "{}", info.body);
        (cookie, info.json()["csrf"].as_str().unwrap().to_owned())
    }

    /// Opens the password-free shared link: its session cookie and CSRF token.
    async fn open_share(&self) -> (String, String) {
        let opened = self
            .get(&format!("/share/example.com?auth={}", self.open_slug), None)
            .await;
        let (cookie, _) = set_cookie(&opened.headers).expect("a share session");
        let csrf = self.whoami(&cookie).await.json()["csrf"]
            .as_str()
            .unwrap()
            .to_owned();
        (cookie, csrf)
    }

    async fn whoami(&self, cookie: &str) -> Answer {
        self.send(
            self.http
                .get(self.hush.url("/api/session"))
                .header("cookie", cookie),
        )
        .await
    }

    async fn query(&self, cookie: Option<&str>, csrf: Option<&str>, body: &Value) -> Answer {
        let mut req = self.http.post(self.hush.url("/api/v2/query")).json(body);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(t) = csrf {
            req = req.header("x-hush-csrf", t);
        }
        self.send(req).await
    }

    /// Visitors of `site` in the last 7 days, read with the session.
    async fn visitors(&self, cookie: &str, csrf: &str, site: &str, filters: Value) -> Answer {
        self.query(
            Some(cookie),
            Some(csrf),
            &json!({"site_id": site, "metrics": ["visitors"], "date_range": "7d", "filters": filters}),
        )
        .await
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut req = self.http.get(self.hush.url(path));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        self.send(req).await
    }
}

fn metric(a: &Answer) -> u64 {
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()["results"][0]["metrics"][0]
        .as_u64()
        .unwrap_or_else(|| panic!("no metric: {}", a.body))
}

#[tokio::test]
async fn sign_in_sessions_csrf_and_sign_out() {
    let s = start("").await;

    // The form: server-rendered, no script, nothing from another host, strict CSP.
    let page = s.get("/login?next=/example.com", None).await;
    assert_eq!(page.status, 200);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("value=\"/example.com\""),
        "{}",
        page.body
    );
    assert!(set_cookie(&page.headers).is_none());

    // Wrong password and unknown user: the same refusal, no cookie.
    let wrong = s.login("alice", "not-alices-password").await;
    let unknown = s.login("mallory", "not-alices-password").await;
    for a in [&wrong, &unknown] {
        assert_eq!(a.status, 401, "{}", a.body);
        assert!(set_cookie(&a.headers).is_none());
        assert!(
            a.body.contains("Wrong user name or password."),
            "{}",
            a.body
        );
    }
    assert_eq!(wrong.body.replace("alice", "mallory"), unknown.body);
    assert!(
        !s.hush.log().contains("mallory"),
        "an unknown name is not logged"
    );

    // Good password: a 303 to `next` and the one cookie, with its attributes.
    let good = s.login("alice", ALICE_PASSWORD).await;
    assert_eq!(good.status, 303, "{}", good.body);
    assert_eq!(good.headers["location"], "/example.com");
    let (cookie, header) = set_cookie(&good.headers).unwrap();
    let attributes: Vec<&str> = header.split("; ").skip(1).collect();
    for want in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(attributes.contains(&want), "{header}");
    }
    assert!(
        !attributes.contains(&"Secure"),
        "plain HTTP, auto: {header}"
    );
    assert!(
        cookie.starts_with("hush_session=") && cookie.len() == 13 + 64,
        "{cookie}"
    );

    // `next` must stay on this site; a cross-site form post is refused.
    for (next, location) in [
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/other.example?period=7d", "/other.example?period=7d"),
    ] {
        let a = s
            .login_from("alice", ALICE_PASSWORD, next, "192.0.2.10")
            .await;
        assert_eq!(a.headers["location"], location, "{next}");
    }
    let cross = s
        .send(
            s.http
                .post(s.hush.url("/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("origin", "https://evil.example")
                .body(form(&[("name", "alice"), ("password", ALICE_PASSWORD)])),
        )
        .await;
    assert_eq!(cross.status, 403);
    assert!(set_cookie(&cross.headers).is_none());
    // A browser's Sec-Fetch-Site decides alone: cross-site and same-site refused,
    // same-origin accepted even when a proxy rewrote Host (Origin then differs).
    for (fetch_site, status) in [
        ("cross-site", 403),
        ("same-site", 403),
        ("same-origin", 303),
    ] {
        let a = s
            .send(
                s.http
                    .post(s.hush.url("/login"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("sec-fetch-site", fetch_site)
                    .header("origin", "https://hush.example.com")
                    .body(form(&[("name", "alice"), ("password", ALICE_PASSWORD)])),
            )
            .await;
        assert_eq!(a.status, status, "{fetch_site}: {}", a.body);
        assert_eq!(
            set_cookie(&a.headers).is_some(),
            status == 303,
            "{fetch_site}"
        );
    }

    // Who is signed in, and the CSRF token.
    let info = s.whoami(&cookie).await;
    assert_eq!(info.status, 200, "{}", info.body);
    let info = info.json();
    assert_eq!(info["name"], "alice");
    assert_eq!(info["sites"], json!(["example.com"]));
    assert_eq!(info["locked_filters"], Value::Null);
    let csrf = info["csrf"].as_str().unwrap().to_owned();
    assert_eq!(csrf.len(), 64);

    // The Stats API with the session: its site, with the token.
    let all = s.visitors(&cookie, &csrf, "example.com", json!([])).await;
    assert_eq!(metric(&all), expected_visitors("example.com", false));
    assert_eq!(metric(&all), VISITORS);
    assert!(set_cookie(&all.headers).is_none(), "the API sets no cookie");
    // Without the token, or with a wrong one: 403.
    let body = json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d"});
    for token in [
        None,
        Some(""),
        Some(&csrf[1..]),
        Some("0".repeat(64).as_str()),
    ] {
        let a = s.query(Some(&cookie), token, &body).await;
        assert_eq!(a.status, 403, "{token:?}: {}", a.body);
    }
    // Another user's token is not this session's.
    let (bob_cookie, bob_csrf) = s.session("bob", BOB_PASSWORD).await;
    assert_eq!(
        s.query(Some(&cookie), Some(&bob_csrf), &body).await.status,
        403
    );
    // A site the user may not read: 401, as for a key; bob reads his.
    let a = s.visitors(&cookie, &csrf, "other.example", json!([])).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = s
        .visitors(&bob_cookie, &bob_csrf, "other.example", json!([]))
        .await;
    assert_eq!(metric(&a), expected_visitors("other.example", false));
    assert_eq!(
        s.visitors(&bob_cookie, &bob_csrf, "example.com", json!([]))
            .await
            .status,
        401
    );
    // GET endpoints need no token; access is the same.
    let v1 = "/api/v1/stats/aggregate?period=7d&metrics=visitors&site_id=";
    let a = s.get(&format!("{v1}example.com"), Some(&cookie)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["results"]["visitors"]["value"], json!(VISITORS));
    assert_eq!(
        s.get(&format!("{v1}other.example"), Some(&cookie))
            .await
            .status,
        401
    );
    // No cookie, or a made-up one: 401.
    assert_eq!(s.query(None, Some(&csrf), &body).await.status, 401);
    let fake = format!("hush_session={}", "a".repeat(64));
    assert_eq!(s.query(Some(&fake), Some(&csrf), &body).await.status, 401);
    s.hush
        .wait_for_log("key=\"user:alice\"", Duration::from_secs(10));

    // Sign-out needs the token, then ends the session for good.
    let logout = |token: Option<String>| {
        let mut req = s.http.post(s.hush.url("/logout")).header("cookie", &cookie);
        if let Some(t) = token {
            req = req.header("x-hush-csrf", t);
        }
        s.send(req)
    };
    assert_eq!(logout(None).await.status, 403);
    assert_eq!(logout(Some(bob_csrf.clone())).await.status, 403);
    assert_eq!(
        s.whoami(&cookie).await.status,
        200,
        "a refused sign-out ends nothing"
    );
    let out = logout(Some(csrf.clone())).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.headers["location"], "/login");
    let (cleared, header) = set_cookie(&out.headers).unwrap();
    assert_eq!(cleared, "hush_session=");
    assert!(header.contains("Max-Age=0"), "{header}");
    assert_eq!(s.whoami(&cookie).await.status, 401);
    assert_eq!(s.query(Some(&cookie), Some(&csrf), &body).await.status, 401);
    // Bob's session is untouched.
    assert_eq!(s.whoami(&bob_cookie).await.status, 200);
}

#[tokio::test]
async fn no_cookie_on_any_ingestion_route() {
    let s = start("").await;
    let (cookie, _) = s.session("alice", ALICE_PASSWORD).await;
    let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    let event = json!({"n": "pageview", "u": "https://example.com/", "d": "example.com"});
    let mut answers = Vec::new();
    for with_cookie in [false, true] {
        let add = |req: reqwest::RequestBuilder| {
            let req = req.header("user-agent", ua);
            if with_cookie {
                req.header("cookie", &cookie)
            } else {
                req
            }
        };
        for req in [
            s.http.post(s.hush.url("/api/event")).json(&event),
            s.http.post(s.hush.url("/api/events")).json(&json!([event])),
            s.http
                .request(reqwest::Method::OPTIONS, s.hush.url("/api/event"))
                .header("origin", "https://example.com")
                .header("access-control-request-method", "POST"),
            s.http.get(
                s.hush
                    .url("/api/event.gif?d=example.com&u=https%3A%2F%2Fexample.com%2F"),
            ),
            s.http.get(
                s.hush
                    .url("/pixel.gif?d=example.com&u=https%3A%2F%2Fexample.com%2F"),
            ),
            s.http.get(s.hush.url("/js/script.js")),
            s.http.get(s.hush.url("/js/hush.js")),
            s.http.get(s.hush.url("/health")),
            s.http.get(s.hush.url("/ready")),
            s.http.get(s.hush.url("/api/v2/query/schema.json")),
            s.http.get(s.hush.url("/nothing-here")),
        ] {
            let req = add(req).build().unwrap();
            let path = req.url().path().to_owned();
            let resp = s.http.execute(req).await.unwrap();
            answers.push((path, resp.status().as_u16(), resp.headers().clone()));
        }
    }
    let statuses: Vec<u16> = answers.iter().map(|(_, s, _)| *s).collect();
    // The routes really answered (a hit accepted, the assets served), not all 404s.
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        4,
        "{answers:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 10,
        "{answers:?}"
    );
    for (path, status, headers) in &answers {
        assert!(
            headers.get("set-cookie").is_none(),
            "{path} ({status}) set a cookie"
        );
    }
}

#[tokio::test]
async fn a_session_lists_property_keys_of_its_sites_only() {
    let s = start("").await;
    let (cookie, csrf) = s.session("alice", ALICE_PASSWORD).await;
    let props = |site: &str, cookie: Option<&str>, csrf: Option<&str>, body: Value| {
        let mut req = s
            .http
            .post(s.hush.url(&format!("/api/hush/sites/{site}/props")))
            .json(&body);
        if let Some(c) = cookie {
            req = req.header("cookie", c.to_owned());
        }
        if let Some(t) = csrf {
            req = req.header("x-hush-csrf", t.to_owned());
        }
        s.send(req)
    };
    // The keys and their counts, from the rows themselves.
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for r in rows().iter().filter(|r| r.site.as_ref() == "example.com") {
        for (k, _) in &r.props {
            *counts.entry(k.clone()).or_default() += 1;
        }
    }
    let mut want: Vec<(String, u64)> = counts.into_iter().collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let want: Vec<Value> = want
        .iter()
        .map(|(k, n)| json!({"key": k, "events": n}))
        .collect();
    assert_eq!(want.len(), 2);
    let a = props(
        "example.com",
        Some(&cookie),
        Some(&csrf),
        json!({"date_range": "7d"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json(), json!({ "props": want }));
    // Today only: the rows are yesterday's.
    let a = props(
        "example.com",
        Some(&cookie),
        Some(&csrf),
        json!({"date_range": "day"}),
    )
    .await;
    assert_eq!(a.json(), json!({"props": []}));
    // Refused: a site alice may not read, no CSRF token, no session, a bad body.
    let a = props(
        "other.example",
        Some(&cookie),
        Some(&csrf),
        json!({"date_range": "7d"}),
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(!a.body.contains("secret"));
    let a = props(
        "example.com",
        Some(&cookie),
        None,
        json!({"date_range": "7d"}),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.body);
    let a = props("example.com", None, None, json!({"date_range": "7d"})).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = props(
        "example.com",
        Some(&cookie),
        Some(&csrf),
        json!({"date_range": "7x"}),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.json()["error"].as_str().unwrap().contains("date_range"),
        "{}",
        a.body
    );
    let a = s
        .send(
            s.http
                .get(s.hush.url("/api/hush/sites/example.com/props"))
                .header("cookie", cookie.clone()),
        )
        .await;
    assert_eq!(a.status, 405);
    // A shared link locked to a filter does not list the whole site's keys.
    let (share_cookie, share_csrf) = s.open_share().await;
    let a = props(
        "example.com",
        Some(&share_cookie),
        Some(&share_csrf),
        json!({"date_range": "7d"}),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.body);
}

/// Issue 12: anyone with a shared link can open a fresh session at will, so the
/// sessions of shared links from one network share one allowance between them.
#[tokio::test]
async fn shared_link_sessions_share_one_allowance_per_network() {
    let s = start("[dashboard]\nsession_rate_limit_per_hour = 4\n").await;
    let first = s.open_share().await;
    let second = s.open_share().await;
    assert_ne!(first.0, second.0);
    let mut ok = 0;
    for (cookie, csrf) in [&first, &second, &first, &second, &first, &second] {
        let a = s.visitors(cookie, csrf, "example.com", json!([])).await;
        if a.status == 200 {
            ok += 1;
        } else {
            assert_eq!(a.status, 429, "{}", a.body);
            assert!(a.headers.contains_key("retry-after"));
        }
    }
    // Four between the two sessions, not four each.
    assert_eq!(ok, 4);
    let third = s.open_share().await;
    let a = s
        .visitors(&third.0, &third.1, "example.com", json!([]))
        .await;
    assert_eq!(
        a.status, 429,
        "a new session is no way around it: {}",
        a.body
    );
    // An analyst's own session keeps its own allowance.
    let (cookie, csrf) = s.session("alice", ALICE_PASSWORD).await;
    let a = s.visitors(&cookie, &csrf, "example.com", json!([])).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn each_session_has_its_own_allowance_apart_from_the_keys() {
    // Keys may make 2 calls an hour; a session 5, each session its own.
    let s =
        start("[stats]\nrate_limit_per_hour = 2\n[dashboard]\nsession_rate_limit_per_hour = 5\n")
            .await;
    let (first, first_csrf) = s.session("alice", ALICE_PASSWORD).await;
    for i in 0..5 {
        let a = s
            .visitors(&first, &first_csrf, "example.com", json!([]))
            .await;
        assert_eq!(
            metric(&a),
            expected_visitors("example.com", false),
            "call {i}"
        );
    }
    let a = s
        .visitors(&first, &first_csrf, "example.com", json!([]))
        .await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.headers.contains_key("retry-after"));
    assert!(
        a.body.contains("dashboard.session_rate_limit_per_hour"),
        "{}",
        a.body
    );
    // Another session of the same analyst starts with a full allowance.
    let (second, second_csrf) = s.session("alice", ALICE_PASSWORD).await;
    assert_ne!(first, second);
    for _ in 0..5 {
        let a = s
            .visitors(&second, &second_csrf, "example.com", json!([]))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let a = s
        .visitors(&second, &second_csrf, "example.com", json!([]))
        .await;
    assert_eq!(a.status, 429, "{}", a.body);
    // The first is still refused: signing in again did not refill it.
    let a = s
        .visitors(&first, &first_csrf, "example.com", json!([]))
        .await;
    assert_eq!(a.status, 429, "{}", a.body);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_user_and_per_network() {
    let s = start(
        "[dashboard]\nlogin_attempts_per_minute = 3\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    )
    .await;
    // Three failures for alice from one network...
    for i in 0..3 {
        let a = s
            .login_from("alice", "wrong-password", "/", "198.51.100.1")
            .await;
        assert_eq!(a.status, 401, "attempt {i}: {}", a.body);
    }
    // ... then alice is held back, from any network and with the right password.
    for client in ["198.51.100.1", "203.0.113.5"] {
        let a = s.login_from("alice", ALICE_PASSWORD, "/", client).await;
        assert_eq!(a.status, 429, "{client}: {}", a.body);
        assert!(set_cookie(&a.headers).is_none());
        let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    // The network is held back too, for any name.
    let a = s
        .login_from("bob", BOB_PASSWORD, "/", "198.51.100.77")
        .await;
    assert_eq!(a.status, 429, "{}", a.body);
    // Another user from another network is not.
    let a = s.login_from("bob", BOB_PASSWORD, "/", "203.0.113.5").await;
    assert_eq!(a.status, 303, "{}", a.body);
    // Unknown names count as failures too, and are throttled alike.
    for i in 0..3 {
        let a = s
            .login_from(&format!("nobody{i}"), "x", "/", "192.0.2.1")
            .await;
        assert_eq!(a.status, 401);
    }
    assert_eq!(
        s.login_from("bob", BOB_PASSWORD, "/", "192.0.2.99")
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn sessions_expire_and_secure_follows_the_proxy() {
    // Three seconds: long enough to use the session once, short enough to wait out.
    let ttl_secs = 3.0;
    let s = start(&format!(
        "[dashboard]\nsession_ttl_hours = {}\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        ttl_secs / 3600.0
    ))
    .await;
    let good = s.login("alice", ALICE_PASSWORD).await;
    let signed_in = Instant::now();
    let (cookie, header) = set_cookie(&good.headers).unwrap();
    assert!(header.contains("Max-Age=3;"), "{header}");
    assert!(!header.contains("Secure"), "no X-Forwarded-Proto: {header}");
    let first = s.whoami(&cookie).await;
    // Only a slow machine can make the first use miss the window; then skip that check.
    if signed_in.elapsed() < Duration::from_secs(2) {
        assert_eq!(first.status, 200, "{}", first.body);
    }
    let csrf = first
        .json()
        .get("csrf")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // Refused once the TTL has passed: wait for it, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if s.whoami(&cookie).await.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(csrf) = csrf {
        let a = s.visitors(&cookie, &csrf, "example.com", json!([])).await;
        assert_eq!(a.status, 401, "{}", a.body);
    }

    // Secure: behind a trusted proxy that says HTTPS.
    for (header, value, secure) in [
        ("x-forwarded-proto", "https", true),
        ("forwarded", "for=192.0.2.1;proto=https", true),
        ("x-forwarded-proto", "http", false),
    ] {
        let a = s
            .send(
                s.http
                    .post(s.hush.url("/login"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header(header, value)
                    .body(form(&[("name", "alice"), ("password", ALICE_PASSWORD)])),
            )
            .await;
        let (_, set) = set_cookie(&a.headers).unwrap();
        assert_eq!(
            set.ends_with("; Secure"),
            secure,
            "{header}: {value}: {set}"
        );
    }
}

#[tokio::test]
async fn shared_links_open_one_site_with_their_filters_locked() {
    let mut s = start("").await;
    let google = expected_visitors("example.com", true);
    assert_eq!(google, GOOGLE);

    // A link without a password: straight to the site's page, with a session.
    let open = s
        .get(&format!("/share/example.com?auth={}", s.open_slug), None)
        .await;
    assert_eq!(open.status, 303, "{}", open.body);
    assert_eq!(open.headers["location"], "/example.com");
    assert_eq!(open.headers["referrer-policy"], "no-referrer");
    let (cookie, _) = set_cookie(&open.headers).unwrap();
    let info = s.whoami(&cookie).await.json();
    assert_eq!(info["name"], "google only");
    assert_eq!(info["sites"], json!(["example.com"]));
    assert_eq!(
        info["locked_filters"],
        json!([["is", "visit:source", ["Google"]]])
    );
    let csrf = info["csrf"].as_str().unwrap().to_owned();

    // Every query is filtered, whatever the viewer sends.
    let a = s.visitors(&cookie, &csrf, "example.com", json!([])).await;
    assert_eq!(metric(&a), google);
    assert_eq!(
        a.json()["query"]["filters"],
        json!([["is", "visit:source", ["Google"]]])
    );
    for own in [
        json!([["is_not", "visit:source", ["Google"]]]),
        json!([[
            "or",
            [
                ["is_not", "visit:source", ["Google"]],
                ["is", "visit:source", ["Google"]]
            ]
        ]]),
        json!([["not", ["is", "visit:source", ["Google"]]]]),
    ] {
        let a = s.visitors(&cookie, &csrf, "example.com", own.clone()).await;
        assert_eq!(a.status, 200, "{own}: {}", a.body);
        let got = a.json()["results"]
            .as_array()
            .unwrap()
            .first()
            .map_or(0, |r| r["metrics"][0].as_u64().unwrap());
        let expected = if own.to_string().contains("\"or\"") {
            google
        } else {
            0
        };
        assert_eq!(got, expected, "{own}");
    }
    let a = s
        .query(
            Some(&cookie),
            Some(&csrf),
            &json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "dimensions": ["visit:source"]}),
        )
        .await;
    assert_eq!(
        a.json()["results"],
        json!([{"metrics": [google], "dimensions": ["Google"]}])
    );
    // v1 too.
    let v1 = s
        .get(
            "/api/v1/stats/aggregate?site_id=example.com&period=7d&metrics=visitors",
            Some(&cookie),
        )
        .await;
    assert_eq!(
        v1.json()["results"]["visitors"]["value"],
        json!(google),
        "{}",
        v1.body
    );
    // The link reads its site only; without the token the query is refused.
    assert_eq!(
        s.visitors(&cookie, &csrf, "other.example", json!([]))
            .await
            .status,
        401
    );
    assert_eq!(
        s.query(
            Some(&cookie),
            None,
            &json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d"})
        )
        .await
        .status,
        403
    );

    // Wrong slugs, and a right slug on another site: not valid, no session.
    for path in [
        "/share/example.com?auth=wrong".to_owned(),
        "/share/example.com".to_owned(),
        format!("/share/other.example?auth={}", s.open_slug),
        format!("/share/example.com?auth={}x", s.open_slug),
    ] {
        let a = s.get(&path, None).await;
        assert_eq!(a.status, 404, "{path}");
        assert!(set_cookie(&a.headers).is_none());
    }

    // A link with a password: a form first, then the password.
    let path = format!("/share/example.com?auth={}", s.locked_slug);
    let page = s.get(&path, None).await;
    assert_eq!(page.status, 200);
    assert!(set_cookie(&page.headers).is_none());
    assert!(page.body.contains("type=\"password\"") && !page.body.contains("<script"));
    let post = |password: &str| {
        s.send(
            s.http
                .post(s.hush.url("/share/example.com"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&[("auth", &s.locked_slug), ("password", password)])),
        )
    };
    let wrong = post("not-the-password").await;
    assert_eq!(wrong.status, 401);
    assert!(set_cookie(&wrong.headers).is_none());
    let right = post(SHARE_PASSWORD).await;
    assert_eq!(right.status, 303, "{}", right.body);
    assert_eq!(right.headers["location"], "/example.com");
    let (locked_cookie, _) = set_cookie(&right.headers).unwrap();
    let info = s.whoami(&locked_cookie).await.json();
    assert_eq!(info["locked_filters"], Value::Null);
    let a = s
        .visitors(
            &locked_cookie,
            info["csrf"].as_str().unwrap(),
            "example.com",
            json!([]),
        )
        .await;
    assert_eq!(metric(&a), VISITORS);
    // The open slug does not open the password link's form, nor the reverse.
    let a = s
        .send(
            s.http
                .post(s.hush.url("/share/example.com"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&[("auth", "wrong"), ("password", SHARE_PASSWORD)])),
        )
        .await;
    assert_eq!(a.status, 404);

    // Revoked: the entry removed from the configuration, hush restarted.
    s.hush.terminate(Duration::from_secs(30));
    let text = config(&s.setup, "", false);
    s.hush = HushProcess::start(s.dir.path(), &text);
    for slug in [&s.open_slug, &s.locked_slug] {
        let a = s
            .get(&format!("/share/example.com?auth={slug}"), None)
            .await;
        assert_eq!(a.status, 404, "a revoked link");
        assert!(set_cookie(&a.headers).is_none());
    }
    // And the restart ended every session.
    assert_eq!(s.whoami(&cookie).await.status, 401);
}
