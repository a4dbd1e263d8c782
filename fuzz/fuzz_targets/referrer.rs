//! Referrer classification: arbitrary referrers, page URLs and UTM values never
//! panic and always yield a consistent host / path / source / channel.
//!
//! Input lines: referrer, page URL, utm_source, utm_medium, one more same-site host.
#![no_main]

use hush::page_url::{self, Utm};
use hush::referrer;
use libfuzzer_sys::fuzz_target;

const CHANNELS: &[&str] = &["direct", "search", "social", "email", "paid", "referral"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let referrer = lines.next();
    let page = page_url::parse(lines.next().unwrap_or(""), false).ok();
    let mut utm = page.as_ref().map(|p| p.utm.clone()).unwrap_or_default();
    if let Some(source) = lines.next() {
        utm.source = source.to_owned();
    }
    if let Some(medium) = lines.next() {
        utm.medium = medium.to_owned();
    }
    let mut same_site: Vec<&str> = Vec::new();
    if let Some(p) = &page {
        same_site.push(&p.hostname);
    }
    if let Some(extra) = lines.next() {
        same_site.push(extra);
    }
    let info = referrer::classify(referrer, &same_site, &utm);
    assert!(CHANNELS.contains(&info.channel), "{info:?}");
    if info.host.is_empty() {
        assert!(info.path.is_empty(), "path without host: {info:?}");
    }
    assert!(
        info.path.len() <= 1_000,
        "path not capped: {}",
        info.path.len()
    );
    if info.channel == "direct" {
        assert!(info.source.is_empty() && info.host.is_empty(), "{info:?}");
    }
    // No referrer and no campaign: always direct.
    if referrer.is_none_or(|r| r.trim().is_empty()) && utm == Utm::default() {
        assert_eq!(info.channel, "direct", "{info:?}");
    }
});
