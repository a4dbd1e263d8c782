//! First render of the dashboard in headless Chromium: from navigation start to the
//! page's `performance.mark('hush:filled')` (set once every panel of the first view
//! has its answer), over N loads of the same view. Run by `benches/dashboard/run`,
//! which loads the data and starts hush (or uses a running one); this binary only
//! measures. Not run in CI.
//!
//! Environment: `HUSH_URL` (the running collector), `BENCH_PATH` (the view, e.g.
//! `/demo.example?period=30d`), `BENCH_LOADS` (default 15).
//!
//! The first load is reported apart (nothing cached); the others reuse the cached
//! assets (hashed names, immutable), as an analyst's next visit does, and every load
//! asks the Stats API afresh (the page sends `cache: no-store`).

#[path = "../../tests/support/chromium.rs"]
mod chromium;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Loads `url` and returns the page's fill mark, ms after navigation start.
async fn load(tab: &chromium::Cdp, url: &str) -> f64 {
    tab.goto("about:blank").await;
    tab.call("Page.navigate", json!({ "url": url })).await;
    let started = Instant::now();
    loop {
        let v = tab
            .eval(
                "(() => { const m = performance.getEntriesByName('hush:filled')[0]; \
                 return location.href.startsWith('about:') || !m ? null : m.startTime; })()",
            )
            .await;
        if let Value::Number(n) = v {
            return n.as_f64().unwrap_or(f64::NAN);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{url}: never filled (no hush:filled mark in 120 s)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() {
    let hush = env("HUSH_URL", "http://127.0.0.1:8000");
    let path = env("BENCH_PATH", "/demo.example?period=30d");
    let loads: usize = env("BENCH_LOADS", "15").parse().unwrap_or(15).max(2);
    let url = format!("{}{path}", hush.trim_end_matches('/'));
    let binary = chromium::chromium_binary().expect("a Chromium");
    let browser = chromium::Chromium::launch(&binary, &["--window-size=1280,900".to_owned()]);
    let (tab, _) = browser.page().await;
    tab.call("Page.enable", json!({})).await;
    tab.viewport(1280, 900, false).await;
    let cold = load(&tab, &url).await;
    let mut warm = Vec::with_capacity(loads - 1);
    for _ in 1..loads {
        warm.push(load(&tab, &url).await);
    }
    let panels = tab
        .eval("document.querySelectorAll('#main .card').length")
        .await;
    warm.sort_by(f64::total_cmp);
    println!("dashboard first render (navigation start to hush:filled), {url}");
    println!("  cold load (nothing cached): {cold:.0} ms");
    println!(
        "  {} warm loads: median {:.0} ms, p95 {:.0} ms, min {:.0} ms, max {:.0} ms ({panels} cards)",
        warm.len(),
        percentile(&warm, 0.5),
        percentile(&warm, 0.95),
        warm[0],
        warm[warm.len() - 1]
    );
}
