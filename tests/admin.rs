//! Admin API over HTTP against a real ClickHouse: token checks and every endpoint.

#[path = "support/db.rs"]
mod db;
mod support;
#[path = "support/wait.rs"]
mod wait;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clickhouse::Client;
use db::{insert_events, migrated_config};
use hush::admin::{AdminState, run_admin, server_config};
use hush::config::{AdminToken, Config};
use hush::enrich::row::EventRow;
use hush::store::purge::{PurgeMetrics, Purger};
use hush::token::{NewToken, TokenSet};
use reqwest::StatusCode;

const TOML: &str = r#"
[[sites]]
domain = "a.example"
retention_days = 30

[[sites]]
domain = "b.example"
"#;

fn row(site: &str, timestamp: u32, visitor_id: u64, props: Vec<(String, String)>) -> EventRow {
    EventRow {
        site: Arc::from(site),
        timestamp,
        name: "pageview".into(),
        visitor_id,
        session_id: visitor_id,
        entry_page: "/".into(),
        hostname: site.into(),
        pathname: "/".into(),
        browser: Arc::from("Chrome"),
        browser_version: Arc::from("120.0"),
        os: Arc::from("Windows"),
        os_version: Arc::from("10"),
        device: "desktop",
        country: *b"FR",
        props,
        ..EventRow::default()
    }
}

struct Admin {
    addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<hush::http::server::Drained>,
}

impl Admin {
    async fn start(config: &Config, client: &Client) -> Admin {
        Self::start_with(config, client, |state| state).await
    }

    /// [`Admin::start`] with the state changed by `with` first.
    async fn start_with(
        config: &Config,
        client: &Client,
        with: impl FnOnce(AdminState) -> AdminState,
    ) -> Admin {
        let purger = Purger::new(client.clone(), config, PurgeMetrics::default()).unwrap();
        let state = Arc::new(with(AdminState::new(
            purger,
            TokenSet::from_config(&config.admin.tokens),
        )));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        let server = server_config(config);
        let task = tokio::spawn(async move { run_admin(listener, state, &server, rx).await });
        Admin {
            addr,
            shutdown,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("admin listener stops on shutdown")
            .unwrap();
    }
}

fn token_entry(t: &NewToken) -> AdminToken {
    AdminToken {
        name: t.name.clone(),
        sha256: t.sha256.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_end_to_end() {
    let (mut config, client) = migrated_config("admin", TOML).await;

    let ops = NewToken::generate("ops");
    let revoked = NewToken::generate("old");
    config.admin.tokens = vec![token_entry(&ops), token_entry(&revoked)];

    // Recent data, with a hashed user id in a property.
    let now = jiff::Timestamp::now().as_second() as u32;
    let mut rows = Vec::new();
    for i in 0..600u32 {
        let site = if i % 3 == 0 { "b.example" } else { "a.example" };
        let props = if i % 4 == 0 {
            vec![("uid".to_owned(), "h-123".to_owned())]
        } else {
            vec![]
        };
        rows.push(row(site, now - 3_600 - i * 30, u64::from(i % 50), props));
    }
    // And old rows for the purge to delete (a.example keeps 30 days).
    for i in 0..40u32 {
        rows.push(row("a.example", now - 40 * 86_400 - i * 60, 7, vec![]));
    }
    insert_events(&client, &rows).await;

    let http = reqwest::Client::new();
    let admin = Admin::start(&config, &client).await;
    let history = admin.url("/admin/v1/purge/history");

    // The revoked token works while configured ...
    let resp = http
        .get(&history)
        .bearer_auth(&revoked.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    admin.stop().await;

    // ... and not once removed from the configuration.
    config.admin.tokens = vec![token_entry(&ops)];
    let admin = Admin::start(&config, &client).await;
    let history = admin.url("/admin/v1/purge/history");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("revoked", Some(format!("Bearer {}", revoked.secret))),
        ("wrong", Some("Bearer not-a-token".into())),
        (
            "hash instead of token",
            Some(format!("Bearer {}", ops.sha256)),
        ),
        ("other scheme", Some(format!("Basic {}", ops.secret))),
        ("empty", Some("Bearer ".into())),
    ];
    for (what, header) in cases {
        for url in [history.clone(), admin.url("/nope")] {
            let mut req = http.get(&url);
            if let Some(h) = &header {
                req = req.header("authorization", h);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what} {url}");
            assert!(
                resp.bytes().await.unwrap().is_empty(),
                "{what}: 401 has no detail"
            );
        }
    }
    let resp = http
        .get(&history)
        .bearer_auth(&ops.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let auth = |r: reqwest::RequestBuilder| r.bearer_auth(&ops.secret);
    assert_eq!(
        auth(http.get(admin.url("/admin/v1/nope")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        auth(http.put(admin.url("/admin/v1/erase")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::METHOD_NOT_ALLOWED
    );

    // Export by property, both formats.
    let expected_uid = rows
        .iter()
        .filter(|r| &*r.site == "a.example" && !r.props.is_empty())
        .count();
    assert!(expected_uid > 50);
    let resp =
        auth(http.get(admin.url("/admin/v1/export?site=a.example&prop=uid%3Dh-123&format=jsonl")))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let body = resp.text().await.unwrap();
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), expected_uid);
    assert!(
        lines
            .iter()
            .all(|l| l["props"]["uid"] == "h-123" && l["site"] == "a.example")
    );
    let csv =
        auth(http.get(admin.url("/admin/v1/export?site=a.example&prop=uid=h-123&format=csv")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    assert_eq!(csv.lines().count(), expected_uid + 1);
    // Export by visitor id.
    let expected_v3 = rows
        .iter()
        .filter(|r| &*r.site == "b.example" && r.visitor_id == 3)
        .count();
    let body = auth(http.get(admin.url("/admin/v1/export?site=b.example&visitor_id=3")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.lines().count(), expected_v3);
    // Bad selectors.
    for q in [
        "/admin/v1/export?prop=uid=h-123",
        "/admin/v1/export?site=a.example&visitor_id=abc",
        "/admin/v1/export?site=a.example&format=xml",
        "/admin/v1/export?site=a.example&from=never",
    ] {
        let resp = auth(http.get(admin.url(q))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{q}");
    }

    // Erase by property.
    for bad in [
        r#"{"site":"a.example"}"#,
        r#"{"props":{"uid":"h-123"}}"#,
        r#"{"site":"a.example","sql":"1=1"}"#,
        "not json",
    ] {
        let resp = auth(http.post(admin.url("/admin/v1/erase")))
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let resp = auth(http.post(admin.url("/admin/v1/erase")))
        .body(r#"{"site":"a.example","props":{"uid":"h-123"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let report: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(report["rows_before"], expected_uid as u64);
    assert_eq!(report["rows_after"], 0);
    let left: u64 = client
        .query("SELECT count() FROM events WHERE site = 'a.example' AND mapContains(props, 'uid')")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(left, 0);
    let b_uid: u64 = client
        .query("SELECT count() FROM events WHERE site = 'b.example' AND mapContains(props, 'uid')")
        .fetch_one()
        .await
        .unwrap();
    assert!(b_uid > 0, "erasure stays within its site");

    // Purge: dry run first, then for real.
    let resp = auth(http.post(admin.url("/admin/v1/purge?dry_run=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let dry: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["rows_deleted"], 40);
    let resp = auth(http.post(admin.url("/admin/v1/purge")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let run: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(run["rows_deleted"], 40);
    let old: u64 = client
        .query("SELECT count() FROM events WHERE timestamp < now() - INTERVAL 35 DAY")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(old, 0);

    // Site deletion.
    let resp = auth(http.delete(admin.url("/admin/v1/sites/b.example/data")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let b: u64 = client
        .query("SELECT count() FROM events WHERE site = 'b.example'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(b, 0);
    let a: u64 = client
        .query("SELECT count() FROM events WHERE site = 'a.example'")
        .fetch_one()
        .await
        .unwrap();
    assert!(a > 0);

    // History shows all of it, attributed to the token's name.
    let log: Vec<serde_json::Value> = auth(http.get(admin.url("/admin/v1/purge/history?limit=50")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let methods: Vec<&str> = log.iter().filter_map(|r| r["method"].as_str()).collect();
    for m in ["erase", "dry_run", "run", "delete", "site_delete"] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }
    assert!(log.iter().all(|r| r["actor"] == "admin:ops"), "{log:?}");
    assert!(!serde_json::to_string(&log).unwrap().contains("h-123"));

    admin.stop().await;
}

/// The admin listener is served by `http::server::run`: it speaks h2c like the public
/// one and a body that never arrives gets 408 after `server.body_read_timeout_ms`
/// (its own accept loop waited for such a body forever, and spoke HTTP/1 only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_has_the_server_limits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ops = NewToken::generate("ops");
    let mut config = Config::from_toml_str(TOML).unwrap();
    config.admin.tokens = vec![token_entry(&ops)];
    config.server.body_read_timeout_ms = 300;
    // Never contacted: these requests end before any store call.
    let client = hush::db::client(&config.clickhouse);
    let admin = Admin::start(&config, &client).await;

    // Headers promising 100 bytes, 10 sent, then silence.
    let mut s = tokio::net::TcpStream::connect(admin.addr).await.unwrap();
    let head = format!(
        "POST /admin/v1/erase HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"site\":\"a",
        ops.secret
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // The bound only stops a broken implementation from hanging the test.
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while !String::from_utf8_lossy(&out).contains("\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the admin API waited forever for the body");
    let resp = String::from_utf8_lossy(&out);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");

    // HTTP/2 with prior knowledge, like the ingestion listener.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(admin.url("/admin/v1/purge/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    drop(h2);
    admin.stop().await;
}

/// Polls the count `sql` until `done` holds, for at most `deadline`.
async fn wait_until(client: &Client, sql: &str, done: impl Fn(u64) -> bool, deadline: Duration) {
    let start = std::time::Instant::now();
    loop {
        let n = wait::count(client, sql).await;
        if done(n) {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "{sql}: still {n} after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A purge or erasure started through the admin API finishes when its client goes
/// away (issue 16, item 5): it runs as a task of its own, not inside the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_jobs_outlive_their_clients() {
    use tokio::io::AsyncWriteExt;
    let (mut config, client) = migrated_config("admin_jobs", TOML).await;
    let ops = NewToken::generate("ops");
    config.admin.tokens = vec![token_entry(&ops)];
    let now = jiff::Timestamp::now().as_second() as u32;
    let mut rows = Vec::new();
    // Past a.example's 30 days: the purge deletes these.
    for i in 0..20u32 {
        rows.push(row("a.example", now - 40 * 86_400 - i * 60, 1, vec![]));
    }
    // Recent rows of one visitor: the erasure deletes these.
    for i in 0..30u32 {
        rows.push(row("b.example", now - 3_600 - i * 60, 77, vec![]));
    }
    insert_events(&client, &rows).await;
    let admin = Admin::start(&config, &client).await;
    let deadline = Duration::from_secs(60);

    // A purge over HTTP/2, whose request is dropped while the run holds the lease and
    // waits for it to settle (2 s): in the request future, this cancelled the run and
    // left the claim for 6 h, with no `purge_log` row.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let request = tokio::spawn(
        h2.post(admin.url("/admin/v1/purge"))
            .bearer_auth(&ops.secret)
            .send(),
    );
    wait_until(
        &client,
        "SELECT count() FROM purge_lease",
        |n| n > 0,
        deadline,
    )
    .await;
    request.abort();
    let _ = request.await;
    drop(h2);
    wait_until(
        &client,
        "SELECT count() FROM purge_log WHERE method = 'run' AND actor = 'admin:ops' \
         AND outcome = 'success'",
        |n| n == 1,
        deadline,
    )
    .await;
    wait_until(
        &client,
        "SELECT count() FROM purge_lease",
        |n| n == 0,
        deadline,
    )
    .await;
    assert_eq!(
        wait::count(
            &client,
            "SELECT count() FROM events WHERE site = 'a.example'"
        )
        .await,
        0
    );

    // An erasure over HTTP/1 whose client closes the connection right after sending.
    let mut s = tokio::net::TcpStream::connect(admin.addr).await.unwrap();
    let body = r#"{"site":"b.example","visitor_id":77}"#;
    let request = format!(
        "POST /admin/v1/erase HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        ops.secret,
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    drop(s);
    wait_until(
        &client,
        "SELECT count() FROM purge_log WHERE method = 'erase' AND outcome = 'success'",
        |n| n == 1,
        deadline,
    )
    .await;
    assert_eq!(
        wait::count(&client, "SELECT count() FROM events WHERE visitor_id = 77").await,
        0
    );
    admin.stop().await;
}

/// An erasure waits for the rows the collector's writer accepted before it: while the
/// writer has not started it answers 503 at once, and when the rows cannot be stored
/// within `retention.mutation_timeout_ms` it answers 503 with the reason and deletes
/// nothing (issue 16, item 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_answers_503_while_accepted_rows_are_not_stored() {
    let toml = format!("{TOML}\n[retention]\nmutation_timeout_ms = 300\n");
    let (mut config, client) = migrated_config("admin_pending", &toml).await;
    let ops = NewToken::generate("ops");
    config.admin.tokens = vec![token_entry(&ops)];
    let now = jiff::Timestamp::now().as_second() as u32;
    let rows: Vec<EventRow> = (0..5)
        .map(|i| row("b.example", now - 60 - i, 77, vec![]))
        .collect();
    insert_events(&client, &rows).await;
    let slot = hush::admin::WriterSlot::default();
    let admin = Admin::start_with(&config, &client, |state| state.with_writer(slot.clone())).await;
    let http = reqwest::Client::new();
    let erase = || {
        http.post(admin.url("/admin/v1/erase"))
            .bearer_auth(&ops.secret)
            .body(r#"{"site":"b.example","visitor_id":77}"#)
            .send()
    };

    // No writer yet (serve starts it after the admin listener).
    let resp = erase().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(resp.text().await.unwrap().contains("starting"));

    // A writer that cannot reach ClickHouse, holding two accepted rows.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (sink, handle) = hush::pipeline::writer::Writer::spawn(
        hush::db::client(&hush::config::ClickHouseConfig {
            url: format!("http://{closed}"),
            ..Default::default()
        }),
        &hush::config::WriterConfig {
            flush_interval_ms: 10,
            retry_base_ms: 20,
            retry_max_ms: 100,
            ..Default::default()
        },
        Duration::from_secs(1),
        "events",
        &mut prometheus_client::registry::Registry::default(),
    );
    slot.publish(handle.progress());
    sink.submit(&rows[..2]).await.unwrap();
    let resp = erase().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = resp.json().await.unwrap();
    let reason = body["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("2 accepted rows are not stored yet"),
        "{body}"
    );
    assert_eq!(
        wait::count(&client, "SELECT count() FROM events WHERE visitor_id = 77").await,
        5,
        "rows were deleted"
    );
    let _ = handle.shutdown(Duration::from_millis(100)).await;
    admin.stop().await;
}
