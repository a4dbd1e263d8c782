//! The row hush stores for every accepted hit: the `events` table in RowBinary.
//!
//! Field order is the column order of `schema/`'s `events` table; the `clickhouse`
//! crate writes fields positionally, so the two must change together.

use std::sync::Arc;

use serde::Serialize;

/// One stored hit. Nothing in it identifies a person: the address was truncated and
/// hashed with a daily salt before this row existed, and the salt is destroyed later.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize)]
pub struct EventRow {
    /// Site domain (the configured `domain`, aliases resolved). `LowCardinality(String)`.
    pub site: Arc<str>,
    /// Seconds since the Unix epoch, UTC. `DateTime('UTC')`.
    pub timestamp: u32,
    /// `pageview`, `engagement`, or a custom event name. `LowCardinality(String)`.
    pub name: String,
    /// Daily-salted hash of site, truncated address and User-Agent; 0 for anonymous
    /// (DNT/GPC) hits. `UInt64`.
    pub visitor_id: u64,
    /// Visit identifier; 0 for anonymous hits. `UInt64`.
    pub session_id: u64,
    /// Pathname of the first page of this visit, shared with the visit's session
    /// entry (no copy per hit). `String`.
    pub entry_page: Arc<str>,
    /// Page host name, lower-case, without `www.` stripping. `LowCardinality(String)`.
    pub hostname: String,
    /// Page path (plus `#fragment` in hash mode); no query string. `String`.
    pub pathname: String,
    /// Referrer host (empty for direct / same-site). `String`.
    pub referrer_host: String,
    /// Referrer path. `String`.
    pub referrer_path: String,
    /// Source name (`Google`, `GitHub`, a UTM source, or the referrer host). `LowCardinality(String)`.
    pub source: String,
    /// `direct`, `search`, `social`, `email`, `paid`, `referral`. `LowCardinality(String)`.
    pub channel: &'static str,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    /// Browser family (`Chrome`, `Safari`, ...). `LowCardinality(String)`.
    pub browser: Arc<str>,
    /// Browser `major.minor`. `LowCardinality(String)`.
    pub browser_version: Arc<str>,
    pub os: Arc<str>,
    pub os_version: Arc<str>,
    /// `desktop`, `mobile`, `tablet`, `other`. `LowCardinality(String)`.
    pub device: &'static str,
    /// ISO 3166-1 alpha-2, or two zero bytes when unknown. `FixedString(2)`.
    pub country: [u8; 2],
    /// ISO 3166-2 subdivision code without the country (`CA` for US-CA). `LowCardinality(String)`.
    pub region: String,
    /// GeoNames id of the city, 0 when unknown. `UInt32`.
    pub city_geoname_id: u32,
    /// English city name. `LowCardinality(String)`.
    pub city: String,
    /// Custom properties. `Map(String, String)`.
    pub props: Vec<(String, String)>,
    /// Revenue in millionths of the currency unit. `Nullable(Int64)`.
    pub revenue_micros: Option<i64>,
    /// ISO 4217 currency of the revenue, empty when none. `LowCardinality(String)`.
    pub revenue_currency: String,
    /// 1 when the event counts towards bounce rate (Plausible `interactive`). `UInt8`.
    pub interactive: u8,
    /// Time engaged on the page in milliseconds (engagement events). `UInt32`.
    pub engagement_ms: u32,
    /// Maximum scroll depth in percent 0..=100, or 255 when not reported. `UInt8`.
    pub scroll_depth: u8,
}

/// Scroll depth value stored when the client reported none.
pub const SCROLL_DEPTH_UNKNOWN: u8 = 255;

/// An empty row for building rows field by field (tests, tools): empty strings, zeros,
/// `channel` `direct`, `device` `other`, unknown country (two zero bytes), interactive,
/// and scroll depth [`SCROLL_DEPTH_UNKNOWN`].
///
/// Hand-written rather than derived: a derived default would store an empty channel and
/// device and a scroll depth of 0 %, which are not what "nothing known" means here.
impl Default for EventRow {
    fn default() -> Self {
        EventRow {
            site: Arc::from(""),
            timestamp: 0,
            name: String::new(),
            visitor_id: 0,
            session_id: 0,
            entry_page: Arc::from(""),
            hostname: String::new(),
            pathname: String::new(),
            referrer_host: String::new(),
            referrer_path: String::new(),
            source: String::new(),
            channel: "direct",
            utm_source: String::new(),
            utm_medium: String::new(),
            utm_campaign: String::new(),
            utm_term: String::new(),
            utm_content: String::new(),
            browser: Arc::from(""),
            browser_version: Arc::from(""),
            os: Arc::from(""),
            os_version: Arc::from(""),
            device: "other",
            country: [0, 0],
            region: String::new(),
            city_geoname_id: 0,
            city: String::new(),
            props: Vec::new(),
            revenue_micros: None,
            revenue_currency: String::new(),
            interactive: 1,
            engagement_ms: 0,
            scroll_depth: SCROLL_DEPTH_UNKNOWN,
        }
    }
}
