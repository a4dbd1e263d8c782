//! An `events` row as read back from ClickHouse, in owned types, for tests that
//! check stored columns.
//!
//! Include with `#[path = "support/stored.rs"] mod stored;`.
#![allow(dead_code)]

use hush::enrich::row::EventRow;
use serde::{Deserialize, Serialize};

/// An `events` row read back, with owned types.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize, Serialize)]
pub struct StoredRow {
    pub site: String,
    pub timestamp: u32,
    pub name: String,
    pub visitor_id: u64,
    pub session_id: u64,
    pub entry_page: String,
    pub hostname: String,
    pub pathname: String,
    pub referrer_host: String,
    pub referrer_path: String,
    pub source: String,
    pub channel: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub os_version: String,
    pub device: String,
    pub country: [u8; 2],
    pub region: String,
    pub city_geoname_id: u32,
    pub city: String,
    pub props: Vec<(String, String)>,
    pub revenue_micros: Option<i64>,
    pub revenue_currency: String,
    pub interactive: u8,
    pub engagement_ms: u32,
    pub scroll_depth: u8,
}

impl From<&EventRow> for StoredRow {
    fn from(r: &EventRow) -> Self {
        StoredRow {
            site: r.site.to_string(),
            timestamp: r.timestamp,
            name: r.name.clone(),
            visitor_id: r.visitor_id,
            session_id: r.session_id,
            entry_page: r.entry_page.to_string(),
            hostname: r.hostname.clone(),
            pathname: r.pathname.clone(),
            referrer_host: r.referrer_host.clone(),
            referrer_path: r.referrer_path.clone(),
            source: r.source.clone(),
            channel: r.channel.to_owned(),
            utm_source: r.utm_source.clone(),
            utm_medium: r.utm_medium.clone(),
            utm_campaign: r.utm_campaign.clone(),
            utm_term: r.utm_term.clone(),
            utm_content: r.utm_content.clone(),
            browser: r.browser.to_string(),
            browser_version: r.browser_version.to_string(),
            os: r.os.to_string(),
            os_version: r.os_version.to_string(),
            device: r.device.to_owned(),
            country: r.country,
            region: r.region.clone(),
            city_geoname_id: r.city_geoname_id,
            city: r.city.clone(),
            props: r.props.clone(),
            revenue_micros: r.revenue_micros,
            revenue_currency: r.revenue_currency.clone(),
            interactive: r.interactive,
            engagement_ms: r.engagement_ms,
            scroll_depth: r.scroll_depth,
        }
    }
}

impl StoredRow {
    /// The ISO country code, or "" for unknown (two zero bytes).
    pub fn country_str(&self) -> String {
        String::from_utf8_lossy(&self.country)
            .trim_end_matches('\0')
            .to_owned()
    }
}
