//! Stats API latency against the best hand-written SQL for the same answer on raw
//! `events`, measured in the same run and interleaved (API, SQL, API, SQL, ...) so
//! both see the same machine. Run by `benches/query/run`, which loads the data and
//! starts hush; this binary only measures.
//!
//! Environment: `HUSH_URL` (the running collector), `CLICKHOUSE_URL`, `BENCH_DB`,
//! `BENCH_SITE`, `BENCH_TZ`, `BENCH_FIRST`/`BENCH_LAST` (the 30-day range, local dates),
//! `BENCH_ROUNDS` (default 7).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Case {
    name: &'static str,
    body: Value,
    sql: String,
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let hush = env("HUSH_URL", "http://127.0.0.1:18200");
    let ch = env("CLICKHOUSE_URL", "http://127.0.0.1:18123");
    let db = env("BENCH_DB", "bench");
    let site = env("BENCH_SITE", "demo.example");
    let tz = env("BENCH_TZ", "Europe/Berlin");
    let first = env("BENCH_FIRST", "2024-11-01");
    let last = env("BENCH_LAST", "2024-11-30");
    let rounds: usize = env("BENCH_ROUNDS", "7").parse().unwrap_or(7);
    let http = reqwest::Client::new();

    // The period's instants, as the engine resolves them (local midnights).
    let zone = jiff::tz::TimeZone::get(&tz).expect("time zone");
    let start = first
        .parse::<jiff::civil::Date>()
        .unwrap()
        .to_zoned_datetime(zone.clone())
        .unwrap()
        .timestamp()
        .as_second();
    let end = last
        .parse::<jiff::civil::Date>()
        .unwrap()
        .tomorrow()
        .unwrap()
        .to_zoned_datetime(zone)
        .unwrap()
        .timestamp()
        .as_second();
    let range = format!(
        "site = '{site}' AND timestamp >= toDateTime({start}, 'UTC') AND timestamp < toDateTime({end}, 'UTC')"
    );
    let body = |extra: Value| {
        let mut b = json!({"site_id": site, "date_range": [first, last]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let per_visit = |attr: &str, metrics: &str| {
        format!(
            "SELECT k, {metrics} FROM (SELECT session_id, any(visitor_id) AS v, {attr} AS k, \
             countIf(name = 'pageview') AS pv, countIf(name != 'pageview' AND interactive = 1) AS ie \
             FROM {db}.events WHERE {range} AND session_id != 0 AND name != 'engagement' GROUP BY session_id) \
             GROUP BY k ORDER BY 2 DESC, k LIMIT 10"
        )
    };
    let per_row = |col: &str| {
        format!(
            "SELECT {col} AS k, uniq(visitor_id) FROM {db}.events WHERE {range} AND name != 'engagement' \
             AND visitor_id != 0 GROUP BY k ORDER BY 2 DESC, k LIMIT 10"
        )
    };
    let cases = vec![
        Case {
            name: "top stats",
            body: body(
                json!({"metrics": ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration"]}),
            ),
            sql: format!(
                "SELECT uniqIf(v, s != 0), countIf(s != 0), sum(pv), sumIf(pv, s != 0) / countIf(s != 0), \
                 countIf(s != 0 AND pv <= 1 AND ie = 0) / countIf(s != 0), sumIf(d, s != 0) / countIf(s != 0) \
                 FROM (SELECT session_id AS s, any(visitor_id) AS v, countIf(name = 'pageview') AS pv, \
                 countIf(name != 'pageview' AND interactive = 1) AS ie, max(timestamp) - min(timestamp) AS d \
                 FROM {db}.events WHERE {range} AND name != 'engagement' \
                 GROUP BY session_id, if(session_id = 0, rowNumberInAllBlocks(), 0))"
            ),
        },
        Case {
            name: "visitors by day",
            body: body(json!({"metrics": ["visitors"], "dimensions": ["time:day"]})),
            sql: format!(
                "SELECT toDate(toTimeZone(timestamp, '{tz}')) AS d, uniq(visitor_id) FROM {db}.events \
                 WHERE {range} AND name != 'engagement' AND visitor_id != 0 GROUP BY d ORDER BY d"
            ),
        },
        Case {
            name: "top sources",
            body: body(
                json!({"metrics": ["visitors"], "dimensions": ["visit:source"], "pagination": {"limit": 10}}),
            ),
            sql: per_visit(
                "argMin(source, bitShiftLeft(toUInt64(name != 'pageview'), 32) + toUInt32(timestamp))",
                "uniq(v)",
            ),
        },
        Case {
            name: "top pages",
            body: body(
                json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "pagination": {"limit": 10}}),
            ),
            sql: format!(
                "SELECT pathname, uniqIf(visitor_id, visitor_id != 0) AS v, countIf(name = 'pageview') FROM {db}.events \
                 WHERE {range} AND name != 'engagement' GROUP BY pathname ORDER BY v DESC, pathname LIMIT 10"
            ),
        },
        Case {
            name: "entry pages",
            body: body(
                json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:entry_page"], "pagination": {"limit": 10}}),
            ),
            sql: per_visit("any(entry_page)", "uniq(v), count()"),
        },
        Case {
            name: "exit pages",
            body: body(
                json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:exit_page"], "pagination": {"limit": 10}}),
            ),
            sql: per_visit(
                "argMax(pathname, bitShiftLeft(toUInt64(name = 'pageview'), 32) + toUInt32(timestamp))",
                "uniq(v), count()",
            ),
        },
        Case {
            name: "countries",
            body: body(
                json!({"metrics": ["visitors"], "dimensions": ["visit:country"], "pagination": {"limit": 10}}),
            ),
            sql: per_row("country"),
        },
        Case {
            name: "browsers",
            body: body(
                json!({"metrics": ["visitors"], "dimensions": ["visit:browser"], "pagination": {"limit": 10}}),
            ),
            sql: per_row("browser"),
        },
        Case {
            name: "operating systems",
            body: body(
                json!({"metrics": ["visitors"], "dimensions": ["visit:os"], "pagination": {"limit": 10}}),
            ),
            sql: per_row("os"),
        },
        Case {
            name: "devices",
            body: body(
                json!({"metrics": ["visitors"], "dimensions": ["visit:device"], "pagination": {"limit": 10}}),
            ),
            sql: per_row("device"),
        },
        Case {
            name: "goals",
            body: body(
                json!({"metrics": ["visitors", "events"], "dimensions": ["event:goal"], "pagination": {"limit": 10}}),
            ),
            sql: format!(
                "SELECT g, uniqIf(visitor_id, visitor_id != 0) AS v, count() FROM {db}.events \
                 ARRAY JOIN arrayFilter(x -> x != '', [if(name = 'Signup', 'Signup', ''), \
                 if(name = 'pageview' AND match(pathname, '^/blog/.*$'), 'Visit /blog/**', '')]) AS g \
                 WHERE {range} GROUP BY g ORDER BY v DESC, g LIMIT 10"
            ),
        },
    ];

    let api_url = format!("{hush}/api/v2/query");
    let api_http = http.clone();
    let api = move |b: &Value| {
        let http = api_http.clone();
        let url = api_url.clone();
        let b = b.clone();
        async move {
            let t = Instant::now();
            let resp = http.post(url).json(&b).send().await.expect("hush answers");
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            assert!(status.is_success(), "{status}: {text} for {b}");
            t.elapsed()
        }
    };
    let sql = |q: &str| {
        let http = http.clone();
        let url = ch.clone();
        let q = q.to_owned();
        async move {
            let t = Instant::now();
            let resp = http
                .post(url)
                .body(q.clone())
                .send()
                .await
                .expect("ClickHouse answers");
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            assert!(status.is_success(), "{status}: {text} for {q}");
            t.elapsed()
        }
    };

    println!("| query | API median ms | API p95 ms | SQL median ms | SQL p95 ms | API / SQL |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for case in &cases {
        // One warm-up each, not counted.
        api(&case.body).await;
        sql(&case.sql).await;
        let (mut a, mut s) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            a.push(api(&case.body).await);
            s.push(sql(&case.sql).await);
        }
        a.sort();
        s.sort();
        let (am, sm) = (percentile(&a, 0.5), percentile(&s, 0.5));
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            case.name,
            ms(am),
            ms(percentile(&a, 0.95)),
            ms(sm),
            ms(percentile(&s, 0.95)),
            am.as_secs_f64() / sm.as_secs_f64()
        );
    }

    // The whole default dashboard: every panel's query at once, as the page sends them.
    let mut whole = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let futures: Vec<_> = cases.iter().map(|c| api(&c.body)).collect();
        futures_util::future::join_all(futures).await;
        whole.push(t.elapsed());
    }
    whole.sort();
    println!(
        "\nwhole dashboard ({} panels at once): median {:.0} ms, p95 {:.0} ms",
        cases.len(),
        ms(percentile(&whole, 0.5)),
        ms(percentile(&whole, 0.95))
    );

    // Queries per second at 8 concurrent clients, top stats, for 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let b = cases[0].body.clone();
        let api = api.clone();
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                api(&b).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap_or(0);
    }
    println!(
        "top stats at 8 concurrent clients: {:.1} queries/s",
        total as f64 / 10.0
    );
}
