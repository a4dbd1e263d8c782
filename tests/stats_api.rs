//! The Stats API over HTTP, against `hush serve` and the real ClickHouse: v2 query
//! shapes, v1 endpoints, the schema, goals, access (keys, public sites, 401s), the rate
//! limit, and hostile input (injection attempts, huge lists, deep nesting, absurd
//! ranges): a 400 or 401 with a reason, never a 500, never engine text.
//!
//! Exact numbers are `tests/stats.rs`'s job; here the expected values are counted from
//! the rows this test inserts.

#[path = "support/db.rs"]
mod db;
#[path = "support/hush.rs"]
mod hush_process;
mod support;

use std::sync::Arc;
use std::time::Duration;

use hush::enrich::row::EventRow;
use hush_process::{
    HushProcess, OTHER_STATS_KEY as OTHER_KEY, STATS_KEY as KEY, stats_keys, test_config,
};
use serde_json::{Value, json};

struct Api {
    _dir: tempfile::TempDir,
    hush: HushProcess,
    http: reqwest::Client,
    /// Page views inserted for example.com yesterday (UTC).
    pageviews: u64,
    visitors: u64,
    /// The paths of those page views, each once.
    pages: std::collections::BTreeSet<String>,
}

async fn api(rate_limit: u32) -> Api {
    let ch = support::clickhouse();
    let (_config, client) = db::migrated_config("stats_api", "").await;
    let database = db::current_database(&client).await;
    let base = db::yesterday_noon();
    let mut rows = Vec::new();
    let site: Arc<str> = Arc::from("example.com");
    for v in 0..5u64 {
        for p in 0..=v {
            rows.push(EventRow {
                site: site.clone(),
                timestamp: base + (v * 100 + p) as u32,
                name: "pageview".into(),
                visitor_id: v + 1,
                session_id: v + 100,
                entry_page: Arc::from("/"),
                hostname: "example.com".into(),
                pathname: if p == 0 { "/".into() } else { format!("/p{p}") },
                source: if p == 0 && v % 2 == 0 {
                    "Google".into()
                } else {
                    String::new()
                },
                channel: if p == 0 && v % 2 == 0 {
                    "search"
                } else {
                    "direct"
                },
                browser: Arc::from("Firefox"),
                ..EventRow::default()
            });
        }
    }
    rows.push(EventRow {
        site: site.clone(),
        timestamp: base + 5,
        name: "Signup".into(),
        visitor_id: 1,
        session_id: 100,
        entry_page: Arc::from("/"),
        hostname: "example.com".into(),
        pathname: "/".into(),
        ..EventRow::default()
    });
    let pageviews = rows.iter().filter(|r| r.name == "pageview").count() as u64;
    let pages = rows
        .iter()
        .filter(|r| r.name == "pageview")
        .map(|r| r.pathname.clone())
        .collect();
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
rate_limit_per_hour = {rate_limit}
{keys}

[[sites]]
domain = "example.com"
goals = [{{ event = "Signup" }}, {{ page = "/p*" }}]

[[sites]]
domain = "other.example"

[[sites]]
domain = "open.example"
public = true
"#,
            keys = stats_keys(),
        ),
    );
    let hush = HushProcess::start(dir.path(), &config);
    Api {
        _dir: dir,
        hush,
        http: reqwest::Client::new(),
        pageviews,
        visitors: 5,
        pages,
    }
}

impl Api {
    async fn query(
        &self,
        key: Option<&str>,
        body: &Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.post(self.hush.url("/api/v2/query")).json(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, value, headers)
    }

    async fn get(&self, key: Option<&str>, path: &str) -> (u16, Value) {
        let mut req = self.http.get(self.hush.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("not JSON ({status}) for {path}: {text}")),
        )
    }
}

#[tokio::test]
async fn v2_answers_in_plausibles_shape() {
    let api = api(600).await;
    let (status, v, _) = api
        .query(Some(KEY), &json!({"site_id": "example.com", "metrics": ["visitors", "pageviews", "visits", "bounce_rate"], "date_range": "7d"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["metrics"][0], json!(api.visitors));
    assert_eq!(v["results"][0]["metrics"][1], json!(api.pageviews));
    assert_eq!(v["results"][0]["dimensions"], json!([]));
    assert_eq!(v["query"]["site_id"], "example.com");
    assert_eq!(v["query"]["order_by"], json!([["visitors", "desc"]]));
    assert_eq!(v["query"]["date_range"].as_array().unwrap().len(), 2);
    // No bounce: the one-page visit also has an interactive Signup, the rest have more
    // than one page view.
    assert_eq!(v["results"][0]["metrics"][3], json!(0));

    // Sources, with Plausible's label for no source; total_rows and paging.
    let (status, v, _) = api
        .query(Some(KEY), &json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "dimensions": ["visit:source"], "include": {"total_rows": true}, "pagination": {"limit": 1}}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["results"],
        json!([{"metrics": [3], "dimensions": ["Google"]}])
    );
    assert_eq!(v["meta"]["total_rows"], 2);

    // Goals as a dimension: Signup once, the /p* page goal by visitors 2..5.
    let (status, v, _) = api
        .query(Some(KEY), &json!({"site_id": "example.com", "metrics": ["visitors", "events"], "date_range": "7d", "dimensions": ["event:goal"]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["results"],
        json!([{"metrics": [4, 10], "dimensions": ["Visit /p*"]}, {"metrics": [1, 1], "dimensions": ["Signup"]}])
    );

    // Pages by visit values only (issue 11): every page viewed is listed, not only
    // the entry page; visits (one per visitor) count under their entry page, "/",
    // and none of them bounced.
    let (status, v, _) = api
        .query(Some(KEY), &json!({"site_id": "example.com", "metrics": ["visits", "bounce_rate"], "date_range": "7d", "dimensions": ["event:page"]}))
        .await;
    assert_eq!(status, 200, "{v}");
    let got: std::collections::BTreeMap<String, Value> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dimensions"][0].as_str().unwrap().to_owned(),
                r["metrics"].clone(),
            )
        })
        .collect();
    let expected = api
        .pages
        .iter()
        .map(|p| {
            let visits = if p == "/" { api.visitors } else { 0 };
            (p.clone(), json!([visits, 0]))
        })
        .collect();
    assert_eq!(got, expected, "{v}");

    // Time buckets with labels.
    let (status, v, _) = api
        .query(Some(KEY), &json!({"site_id": "example.com", "metrics": ["pageviews"], "date_range": "7d", "dimensions": ["time:day"], "include": {"time_labels": true}}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["meta"]["time_labels"].as_array().unwrap().len(), 7);
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn v1_endpoints_answer_v1_shapes() {
    let api = api(600).await;
    let (s, v) = api
        .get(
            Some(KEY),
            "/api/v1/stats/aggregate?site_id=example.com&period=7d&metrics=visitors,pageviews",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"]["visitors"]["value"], json!(api.visitors));
    assert_eq!(v["results"]["pageviews"]["value"], json!(api.pageviews));
    let (s, v) = api
        .get(
            Some(KEY),
            "/api/v1/stats/breakdown?site_id=example.com&period=7d&property=visit:source",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0], json!({"source": "Google", "visitors": 3}));
    let (s, v) = api
        .get(
            Some(KEY),
            "/api/v1/stats/timeseries?site_id=example.com&period=7d",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // v1 lists every day of the period, empty ones as zero.
    let days = v["results"].as_array().unwrap();
    assert_eq!(days.len(), 7, "{v}");
    assert!(days.iter().all(|d| d["date"].is_string()));
    assert_eq!(
        days.iter()
            .map(|d| d["visitors"].as_u64().unwrap())
            .sum::<u64>(),
        api.visitors
    );
    let (s, v) = api
        .get(
            Some(KEY),
            "/api/v1/stats/realtime/visitors?site_id=example.com",
        )
        .await;
    assert_eq!((s, v), (200, json!(0)), "nothing in the last five minutes");
    let (s, v) = api.get(Some(KEY), "/api/v1/stats/aggregate?site_id=example.com&period=7d&filters=visit:source%3D%3DGoogle").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"]["visitors"]["value"], json!(3));
    let (s, v) = api
        .get(
            Some(KEY),
            "/api/v1/stats/aggregate?site_id=example.com&period=fortnight",
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("period"), "{v}");
}

#[tokio::test]
async fn schema_and_goals_are_served() {
    let api = api(600).await;
    let (s, v) = api.get(None, "/api/v2/query/schema.json").await;
    assert_eq!(s, 200);
    assert!(v.to_string().contains("visit:exit_page"));
    let (s, v) = api.get(Some(KEY), "/api/v2/sites/example.com/goals").await;
    assert_eq!(s, 200, "{v}");
    let names: Vec<&str> = v["goals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Signup", "Visit /p*"]);
    let (s, _) = api
        .get(Some(OTHER_KEY), "/api/v2/sites/example.com/goals")
        .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn keys_and_public_sites_decide_who_reads() {
    let api = api(600).await;
    let body = json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d"});
    for (key, why) in [
        (None, "no key"),
        (Some("not-a-key"), "unknown key"),
        (Some(OTHER_KEY), "a key for another site"),
    ] {
        let (s, v, _) = api.query(key, &body).await;
        assert_eq!(s, 401, "{why}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("API key"),
            "{why}: {v}"
        );
    }
    let (s, _, _) = api
        .query(
            Some(KEY),
            &json!({"site_id": "nowhere.example", "metrics": ["visitors"], "date_range": "7d"}),
        )
        .await;
    assert_eq!(s, 401, "a site that is not configured");
    let (s, v, _) = api
        .query(
            None,
            &json!({"site_id": "open.example", "metrics": ["visitors"], "date_range": "7d"}),
        )
        .await;
    assert_eq!(s, 200, "a public site needs no key: {v}");
    assert_eq!(v["results"][0]["metrics"], json!([0]));
    let (s, _, _) = api.query(Some(KEY), &body).await;
    assert_eq!(s, 200);
    // The log names the key, never its value. The line is written as the answer
    // goes out, so it may land a moment after the client has read it.
    api.hush.wait_for_log("key=\"ci\"", Duration::from_secs(10));
    let log = api.hush.log();
    assert!(
        log.contains("key=\"ci\"") || log.contains("key=ci"),
        "{log}"
    );
    assert!(!log.contains(KEY));
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let api = api(3).await;
    let body = json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "day"});
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..6 {
        let (s, _, h) = api.query(Some(KEY), &body).await;
        statuses.push(s);
        if s == 429 {
            retry = h
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert_eq!(statuses[5], 429, "{statuses:?}");
    let retry = retry.expect("Retry-After on 429");
    // 3 per hour: one request back every 20 minutes.
    assert!((1..=1_200).contains(&retry), "{retry}");
    // Another key's allowance is its own.
    let (s, _, _) = api
        .query(
            Some(OTHER_KEY),
            &json!({"site_id": "other.example", "metrics": ["visitors"], "date_range": "day"}),
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn hostile_queries_get_400_never_500_or_engine_text() {
    let api = api(100_000).await;
    let injection = "x') OR 1=1; DROP TABLE events; --";
    let deep = (0..20).fold(json!(["is", "event:page", ["/"]]), |f, _| json!(["not", f]));
    let huge: Vec<String> = (0..5_000).map(|i| format!("/p{i}")).collect();
    let cases = [
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "filters": [["is", "event:page", [injection]]]}),
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "filters": [["contains", "visit:source", [injection]]]}),
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "dimensions": [format!("event:props:{injection}")]}),
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "filters": [["matches", "event:page", ["(unclosed"]]]}),
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "filters": [["matches", "event:page", [injection]]]}),
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "filters": [deep]}),
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "filters": [["is", "event:page", huge]]}),
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "99999d"}),
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": ["0001-01-01", "9999-12-31"], "dimensions": ["time:minute"]}),
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "pagination": {"limit": 100_000_000}}),
        json!({"site_id": "example.com", "metrics": ["x"], "date_range": "7d"}),
        json!({"site_id": "example.com", "metrics": ["bounce_rate"], "date_range": "7d", "dimensions": ["event:name"]}),
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "filters": [["is", "event:goal", ["No such goal"]]]}),
        json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "order_by": [["pageviews", "desc"]]}),
    ];
    for body in cases {
        let (s, v, _) = api.query(Some(KEY), &body).await;
        let text = v.to_string();
        // Injection text in a value is data, not SQL: it may match nothing (200) or be
        // refused (400); anything else is a failure.
        assert!(s == 200 || s == 400, "{s} for {body}: {text}");
        for leak in ["Code:", "DB::Exception", "SELECT", "events`", "clickhouse"] {
            assert!(
                !text.contains(leak),
                "engine text {leak:?} leaked for {body}: {text}"
            );
        }
        if s == 400 {
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{text}");
        }
    }
    // The table is still there, with everything in it.
    let (s, v, _) = api
        .query(
            Some(KEY),
            &json!({"site_id": "example.com", "metrics": ["pageviews"], "date_range": "7d"}),
        )
        .await;
    assert_eq!(
        (s, v["results"][0]["metrics"][0].clone()),
        (200, json!(api.pageviews))
    );
    // Malformed bodies.
    for raw in ["", "{", "[]", "{\"site_id\": 5}"] {
        let resp = api
            .http
            .post(api.hush.url("/api/v2/query"))
            .bearer_auth(KEY)
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{raw:?}");
    }
    let resp = api
        .http
        .get(api.hush.url("/api/v2/query"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let big = vec![b' '; 300 * 1024];
    let resp = api
        .http
        .post(api.hush.url("/api/v2/query"))
        .bearer_auth(KEY)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let _ = Duration::ZERO;
}

/// The kinds of query Plausible's docs show (written here, not copied): each answers
/// 200 with `results`, `meta` and the executed `query`, dimensions and metrics of
/// the asked lengths; segments, which hush does not have, are a 400 that says so.
#[tokio::test]
async fn plausibles_documented_query_kinds_answer_in_shape() {
    let api = api(600).await;
    let bodies = [
        json!({"metrics": ["visitors", "events"], "date_range": "7d"}),
        json!({"metrics": ["visitors"], "date_range": "all", "filters": [["is", "event:goal", ["Signup"]], ["has_done", ["is", "event:page", ["/p1"]]]]}),
        json!({"metrics": ["visitors"], "date_range": ["2024-08-01", "2024-08-15"]}),
        json!({"metrics": ["visitors"], "date_range": "7d", "filters": [["contains", "event:page", ["/p", "/q"]], ["or", [["not", ["is", "visit:utm_campaign", ["x"]]], ["is", "visit:country_name", ["Estonia"]]]]]}),
        json!({"metrics": ["visitors"], "date_range": "7d", "filters": [["contains", "event:page", ["P"], {"case_sensitive": false}]]}),
        json!({"metrics": ["visitors"], "date_range": "all", "dimensions": ["visit:source"], "include": {"imports": true}}),
        json!({"metrics": ["visitors"], "date_range": "7d", "dimensions": ["visit:utm_medium", "visit:utm_source"], "include": {"total_rows": true}, "pagination": {"offset": 1, "limit": 3}}),
        json!({"metrics": ["total_revenue", "average_revenue"], "date_range": "all", "dimensions": ["event:goal"]}),
        json!({"metrics": ["visitors"], "date_range": "day", "dimensions": ["time:hour"], "include": {"time_labels": true}}),
        json!({"metrics": ["visitors", "events"], "date_range": "7d", "dimensions": ["time:day"], "filters": [["is", "visit:os", ["GNU/Linux", "Mac"]]]}),
        json!({"metrics": ["visitors", "events", "pageviews"], "date_range": "7d", "dimensions": ["visit:utm_medium", "visit:utm_source"]}),
        json!({"metrics": ["visitors", "pageviews", "bounce_rate"], "date_range": "7d", "filters": [["is_not", "visit:country_name", [""]]], "dimensions": ["visit:country_name", "visit:city_name"]}),
        json!({"metrics": ["visitors"], "date_range": "7d", "dimensions": ["time:day", "event:props:plan"], "order_by": [["time:day", "asc"], ["event:props:plan", "desc"]]}),
        json!({"metrics": ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration", "events"], "date_range": "30d", "include": {"comparisons": {"mode": "previous_period"}}}),
        json!({"metrics": ["visitors", "conversion_rate", "group_conversion_rate"], "date_range": "7d", "dimensions": ["event:goal", "visit:source"]}),
        json!({"metrics": ["visits", "exit_rate"], "date_range": "7d", "dimensions": ["visit:exit_page"]}),
        json!({"metrics": ["time_on_page", "scroll_depth", "visitors"], "date_range": "7d", "dimensions": ["event:page"]}),
        json!({"metrics": ["visitors", "percentage"], "date_range": "7d", "dimensions": ["visit:browser"]}),
    ];
    for mut body in bodies {
        body["site_id"] = json!("example.com");
        let (s, v, _) = api.query(Some(KEY), &body).await;
        assert_eq!(s, 200, "{body}: {v}");
        assert!(v["meta"].is_object() && v["query"].is_object(), "{v}");
        let dims = body
            .get("dimensions")
            .map_or(0, |d| d.as_array().unwrap().len());
        let metrics = body["metrics"].as_array().unwrap().len();
        for r in v["results"].as_array().unwrap() {
            assert_eq!(
                r["dimensions"].as_array().unwrap().len(),
                dims,
                "{body}: {r}"
            );
            assert_eq!(
                r["metrics"].as_array().unwrap().len(),
                metrics,
                "{body}: {r}"
            );
        }
        assert_eq!(v["query"]["metrics"], body["metrics"], "{v}");
        if body["include"]["imports"] == json!(true) {
            assert_eq!(v["meta"]["imports_included"], json!(false));
        }
    }
    let (s, v, _) = api
        .query(Some(KEY), &json!({"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d", "filters": [["is", "segment", [2]]]}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("segment"), "{v}");
}
