//! Demo traffic: realistic rows for one site, written straight into `events`, so a
//! new installation shows numbers at once and the benchmarks have data.
//!
//! The rows are what the collector would have stored for the hits of hush's own
//! tracker on a small software company's site (home, pricing, docs, a blog, a signup
//! and checkout funnel):
//!
//! - **Visits** of one to fifteen page views (about 45 % bounce), 2 s to 29 min apart
//!   (never the 30 min that would end a visit), each page view followed by one
//!   engagement row (two when the tab was hidden in between) holding its time on page
//!   and scroll depth, sent when the page is left, as the tracker does.
//! - **Sources as stored:** the tracker sends `document.referrer`, and the collector
//!   classifies each hit on its own; so every row of a visit's first page (its page
//!   view, engagement and custom events) carries the external referrer, its source and
//!   channel and the landing URL's UTM tags, and the rows of every later page carry
//!   none (their referrer is the site itself: channel `direct`). Referrers and landing
//!   URLs are classified by the collector's own code ([`crate::enrich::referrer`],
//!   [`crate::enrich::page_url`]): organic Google, Bing and DuckDuckGo, X, Reddit,
//!   Facebook, Hacker News, LinkedIn, GitHub and other referrals, ChatGPT, a weekly
//!   newsletter (UTM, no referrer), webmail, paid search and social campaigns, direct.
//! - **Browsers, OS and devices** from real User-Agent strings parsed by the
//!   collector's parser; none is a bot. **Places** from a table of countries,
//!   regions and cities (GeoNames ids), some known to the country only.
//! - **Custom events with props** (`Signup`, `Purchase` with revenue in USD, EUR or
//!   GBP by country, `Newsletter Signup`, `File Download`, `Outbound Link: Click`,
//!   `Video Play`, `404`), on the pages where a site would send them.
//! - **When:** visits start on a diurnal curve in the site's time zone (DST-true day
//!   lengths), fewer on weekends, with a slow upward trend and day-to-day noise; the
//!   day's mean is `visitors_per_day`. Visitor ids are random per UTC day (as the
//!   daily salt makes them), session ids random per visit; about 1.5 % of visitors
//!   send DNT and are stored anonymously (ids 0, each row its own entry page).
//!
//! Deterministic: the rows depend only on the options (each day has its own random
//! stream from the seed, [`SplitMix64`] so no library update changes them), not on
//! threads or timing. Rows after `not_after` (normally now) are not written.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::config::{ClickHouseConfig, UserAgentConfig};
use crate::enrich::page_url;
use crate::enrich::referrer;
use crate::enrich::row::{EventRow, SCROLL_DEPTH_UNKNOWN};
use crate::enrich::ua::{UaError, UaInfo, UaParser};
use crate::pipeline::rowbinary;
use crate::pipeline::writer::insert_payload;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// The site's domain: `site` and `hostname` of every row.
    pub site: String,
    /// IANA time zone of the site's days.
    pub timezone: String,
    /// Whole local days, ending with `last_day`.
    pub days: u32,
    /// Mean visitors a day.
    pub visitors_per_day: u32,
    pub seed: u64,
    pub last_day: Date,
    /// No row later than this (Unix seconds): normally now.
    pub not_after: u32,
}

/// Most days one run generates (ten years).
pub const MAX_DAYS: u32 = 3_660;
/// Most mean visitors a day.
pub const MAX_VISITORS_PER_DAY: u32 = 10_000_000;
/// Rows per insert.
pub const BATCH_ROWS: usize = 200_000;
/// Inserts sent at once: the engine's insert path is the bound, and two keep both
/// of a small machine's cores busy.
pub const INSERTS_IN_FLIGHT: usize = 2;

/// What was generated (or written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemoSummary {
    pub rows: u64,
    pub visits: u64,
    pub pageviews: u64,
    pub engagements: u64,
    pub custom_events: u64,
    pub inserts: u64,
}

impl DemoSummary {
    fn add(&mut self, other: &DemoSummary) {
        self.rows += other.rows;
        self.visits += other.visits;
        self.pageviews += other.pageviews;
        self.engagements += other.engagements;
        self.custom_events += other.custom_events;
        self.inserts += other.inserts;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The options are out of range (the message says which and how).
    #[error("{0}")]
    Options(String),
    /// The User-Agent parser could not be built.
    #[error(transparent)]
    Ua(#[from] UaError),
    /// ClickHouse refused or did not answer an insert; earlier inserts stay stored.
    #[error("insert {insert} of the demo rows failed after {stored} rows were stored: {source}")]
    Insert {
        insert: u64,
        stored: u64,
        source: clickhouse::error::Error,
    },
}

/// A small, fast, fixed generator (SplitMix64): the same seed gives the same numbers
/// on every platform and in every version of hush.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Log-normal with the given median and spread (sigma of the log).
    fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        // Box-Muller; 1 - unit() is in (0, 1], so the log is finite.
        let (u1, u2) = (1.0 - self.unit(), self.unit());
        let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        median * (sigma * normal).exp()
    }

    /// A non-zero id (0 means "anonymous" in `events`).
    fn id(&mut self) -> u64 {
        loop {
            let id = self.next_u64();
            if id != 0 {
                return id;
            }
        }
    }
}

/// Picks from `(weight, value)` pairs.
fn pick<'a, T>(rng: &mut SplitMix64, table: &'a [(u32, T)]) -> &'a T {
    let total: u64 = table.iter().map(|(w, _)| u64::from(*w)).sum();
    let mut at = rng.below(total);
    for (weight, value) in table {
        let w = u64::from(*weight);
        if at < w {
            return value;
        }
        at -= w;
    }
    &table[table.len() - 1].1
}

const USER_AGENTS: &[(u32, &str)] = &[
    (
        22,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        4,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        12,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        5,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    ),
    (
        4,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    ),
    (
        14,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    ),
    (
        2,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
    ),
    (
        3,
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    ),
    (
        12,
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    ),
    (
        2,
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
    ),
    (
        1,
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        5,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    ),
    (
        2,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0",
    ),
    (
        2,
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    ),
    (
        3,
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        6,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    ),
    (
        1,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
    ),
];

/// (weight, country, region, GeoNames id, city); region and city empty and id 0 when
/// only the country is known; country "\0\0" when nothing is.
type Place = ([u8; 2], &'static str, u32, &'static str);
const PLACES: &[(u32, Place)] = &[
    (70, (*b"US", "CA", 5391959, "San Francisco")),
    (50, (*b"US", "CA", 5368361, "Los Angeles")),
    (60, (*b"US", "NY", 5128581, "New York")),
    (30, (*b"US", "IL", 4887398, "Chicago")),
    (30, (*b"US", "WA", 5809844, "Seattle")),
    (25, (*b"US", "TX", 4671654, "Austin")),
    (20, (*b"US", "MA", 4930956, "Boston")),
    (40, (*b"US", "", 0, "")),
    (45, (*b"DE", "BE", 2950159, "Berlin")),
    (25, (*b"DE", "BY", 2867714, "Munich")),
    (20, (*b"DE", "HH", 2911298, "Hamburg")),
    (15, (*b"DE", "", 0, "")),
    (50, (*b"GB", "ENG", 2643743, "London")),
    (15, (*b"GB", "", 0, "")),
    (35, (*b"FR", "IDF", 2988507, "Paris")),
    (10, (*b"FR", "", 0, "")),
    (25, (*b"CA", "ON", 6167865, "Toronto")),
    (15, (*b"CA", "BC", 6173331, "Vancouver")),
    (10, (*b"CA", "QC", 6077243, "Montreal")),
    (25, (*b"NL", "NH", 2759794, "Amsterdam")),
    (20, (*b"IN", "KA", 1277333, "Bengaluru")),
    (15, (*b"IN", "MH", 1275339, "Mumbai")),
    (15, (*b"IN", "", 0, "")),
    (12, (*b"ES", "MD", 3117735, "Madrid")),
    (10, (*b"ES", "CT", 3128760, "Barcelona")),
    (10, (*b"IT", "25", 3173435, "Milan")),
    (8, (*b"IT", "62", 3169070, "Rome")),
    (12, (*b"SE", "AB", 2673730, "Stockholm")),
    (10, (*b"CH", "ZH", 2657896, "Zurich")),
    (8, (*b"AT", "9", 2761369, "Vienna")),
    (8, (*b"IE", "L", 2964574, "Dublin")),
    (6, (*b"FI", "18", 658225, "Helsinki")),
    (6, (*b"DK", "84", 2618425, "Copenhagen")),
    (6, (*b"NO", "03", 3143244, "Oslo")),
    (8, (*b"PL", "14", 756135, "Warsaw")),
    (6, (*b"CZ", "10", 3067696, "Prague")),
    (5, (*b"PT", "11", 2267057, "Lisbon")),
    (15, (*b"JP", "13", 1850147, "Tokyo")),
    (12, (*b"AU", "NSW", 2147714, "Sydney")),
    (8, (*b"AU", "VIC", 2158177, "Melbourne")),
    (15, (*b"BR", "SP", 3448439, "São Paulo")),
    (10, (*b"SG", "", 1880252, "Singapore")),
    (6, (*b"KR", "11", 1835848, "Seoul")),
    (5, (*b"MX", "CMX", 3530597, "Mexico City")),
    (5, (*b"ZA", "WC", 3369157, "Cape Town")),
    (4, (*b"NG", "LA", 2332459, "Lagos")),
    (5, (*b"UA", "30", 703448, "Kyiv")),
    (6, (*b"TR", "34", 745044, "Istanbul")),
    (8, ([0, 0], "", 0, "")),
];

/// Where a visit comes from: the referrer the browser sends and the query string of
/// the landing URL, plus which pages it lands on.
struct SourceSpec {
    referrer: Option<&'static str>,
    query: &'static str,
    lands: Landing,
}

#[derive(Debug, Clone, Copy)]
enum Landing {
    Home,
    Content,
    Blog,
    Pricing,
}

const SOURCES: &[(u32, SourceSpec)] = &[
    (
        300,
        SourceSpec {
            referrer: None,
            query: "",
            lands: Landing::Home,
        },
    ),
    (
        60,
        SourceSpec {
            referrer: None,
            query: "",
            lands: Landing::Content,
        },
    ),
    (
        190,
        SourceSpec {
            referrer: Some("https://www.google.com/"),
            query: "",
            lands: Landing::Content,
        },
    ),
    (
        25,
        SourceSpec {
            referrer: Some("https://www.google.de/"),
            query: "",
            lands: Landing::Content,
        },
    ),
    (
        20,
        SourceSpec {
            referrer: Some("https://www.google.co.uk/"),
            query: "",
            lands: Landing::Content,
        },
    ),
    (
        15,
        SourceSpec {
            referrer: Some("android-app://com.google.android.googlequicksearchbox/"),
            query: "",
            lands: Landing::Content,
        },
    ),
    (
        45,
        SourceSpec {
            referrer: Some("https://www.bing.com/"),
            query: "",
            lands: Landing::Content,
        },
    ),
    (
        35,
        SourceSpec {
            referrer: Some("https://duckduckgo.com/"),
            query: "",
            lands: Landing::Content,
        },
    ),
    (
        8,
        SourceSpec {
            referrer: Some("https://www.ecosia.org/"),
            query: "",
            lands: Landing::Content,
        },
    ),
    (
        35,
        SourceSpec {
            referrer: Some("https://t.co/"),
            query: "",
            lands: Landing::Blog,
        },
    ),
    (
        30,
        SourceSpec {
            referrer: Some("https://www.reddit.com/r/programming/"),
            query: "",
            lands: Landing::Blog,
        },
    ),
    (
        10,
        SourceSpec {
            referrer: Some("https://www.reddit.com/r/selfhosted/"),
            query: "",
            lands: Landing::Blog,
        },
    ),
    (
        20,
        SourceSpec {
            referrer: Some("https://m.facebook.com/"),
            query: "",
            lands: Landing::Blog,
        },
    ),
    (
        25,
        SourceSpec {
            referrer: Some("https://news.ycombinator.com/"),
            query: "",
            lands: Landing::Blog,
        },
    ),
    (
        12,
        SourceSpec {
            referrer: Some("https://www.linkedin.com/"),
            query: "",
            lands: Landing::Home,
        },
    ),
    (
        6,
        SourceSpec {
            referrer: Some("https://bsky.app/"),
            query: "",
            lands: Landing::Blog,
        },
    ),
    (
        25,
        SourceSpec {
            referrer: Some("https://github.com/hush-demo/hush"),
            query: "",
            lands: Landing::Home,
        },
    ),
    (
        12,
        SourceSpec {
            referrer: Some("https://chatgpt.com/"),
            query: "",
            lands: Landing::Content,
        },
    ),
    (
        10,
        SourceSpec {
            referrer: Some("https://awesome-selfhosted.example.net/analytics"),
            query: "",
            lands: Landing::Home,
        },
    ),
    (
        8,
        SourceSpec {
            referrer: Some("https://weekly.example.org/issues/212"),
            query: "",
            lands: Landing::Blog,
        },
    ),
    (
        6,
        SourceSpec {
            referrer: Some("https://dev.to/"),
            query: "",
            lands: Landing::Blog,
        },
    ),
    (
        40,
        SourceSpec {
            referrer: None,
            query: "utm_source=newsletter&utm_medium=email&utm_campaign=weekly",
            lands: Landing::Blog,
        },
    ),
    (
        8,
        SourceSpec {
            referrer: Some("https://mail.google.com/"),
            query: "",
            lands: Landing::Blog,
        },
    ),
    (
        20,
        SourceSpec {
            referrer: Some("https://www.google.com/"),
            query: "utm_source=google&utm_medium=cpc&utm_campaign=brand&utm_term=privacy+analytics",
            lands: Landing::Pricing,
        },
    ),
    (
        8,
        SourceSpec {
            referrer: Some("https://www.bing.com/"),
            query: "utm_source=bing&utm_medium=cpc&utm_campaign=brand&utm_term=web+analytics",
            lands: Landing::Pricing,
        },
    ),
    (
        10,
        SourceSpec {
            referrer: Some("https://t.co/"),
            query: "utm_source=twitter&utm_medium=social&utm_campaign=launch-week&utm_content=video",
            lands: Landing::Home,
        },
    ),
    (
        6,
        SourceSpec {
            referrer: Some("https://www.producthunt.com/"),
            query: "utm_source=producthunt&utm_campaign=launch",
            lands: Landing::Home,
        },
    ),
];

const BLOG_POSTS: &[&str] = &[
    "/blog/privacy-first-analytics",
    "/blog/clickhouse-in-production",
    "/blog/why-we-dropped-cookies",
    "/blog/gdpr-checklist",
    "/blog/self-hosting-guide",
    "/blog/utm-tags-explained",
    "/blog/bounce-rate-myths",
    "/blog/rust-at-the-edge",
    "/blog/measuring-what-matters",
    "/blog/page-speed-and-conversions",
    "/blog/open-source-sustainability",
    "/blog/2025-year-in-review",
];

const DOCS: &[&str] = &[
    "/docs",
    "/docs/getting-started",
    "/docs/installation",
    "/docs/tracker",
    "/docs/api",
    "/docs/api/authentication",
    "/docs/api/events",
    "/docs/goals",
    "/docs/custom-events",
    "/docs/self-hosting",
    "/docs/faq",
];

const INTEGRATIONS: &[&str] = &[
    "/integrations/wordpress",
    "/integrations/nextjs",
    "/integrations/shopify",
    "/integrations/ghost",
];

const MISSING: &[&str] = &["/old-pricing", "/blog/deleted-post", "/docs/v1/api"];

const OUTBOUND: &[(u32, &str)] = &[
    (5, "https://github.com/hush-demo/hush"),
    (2, "https://x.com/hushdemo"),
    (2, "https://clickhouse.com/docs"),
    (1, "https://www.rfc-editor.org/rfc/rfc6177"),
];

/// Zipf-like weights for `n` items: the first is the most popular.
fn zipf(n: usize) -> Vec<u32> {
    (0..n).map(|i| (1200 / (i + 1)) as u32).collect()
}

/// Pages and their URLs prepared once: every path is an `Arc<str>` to share as
/// `entry_page`.
struct Site {
    domain: Arc<str>,
    paths: Vec<Arc<str>>,
}

impl Site {
    fn new(domain: &str) -> Self {
        let mut paths: Vec<Arc<str>> = Vec::new();
        for p in [
            "/",
            "/pricing",
            "/features",
            "/about",
            "/contact",
            "/signup",
            "/login",
            "/checkout",
            "/checkout/success",
            "/blog",
            "/changelog",
            "/integrations",
        ]
        .iter()
        .chain(BLOG_POSTS)
        .chain(DOCS)
        .chain(INTEGRATIONS)
        .chain(MISSING)
        {
            paths.push(Arc::from(*p));
        }
        Self {
            domain: Arc::from(domain),
            paths,
        }
    }

    fn path(&self, p: &str) -> Arc<str> {
        self.paths
            .iter()
            .find(|x| &***x == p)
            .map_or_else(|| Arc::from(p), Arc::clone)
    }
}

/// A source, classified once as the collector would store it.
struct Source {
    referrer: referrer::ReferrerInfo,
    utm: page_url::Utm,
    lands: Landing,
}

/// A person's device and place, fixed for all their visits.
struct Person {
    ua: Arc<UaInfo>,
    place: Place,
    anonymous: bool,
}

/// Generates the demo rows day by day; shared by the worker threads.
pub struct Generator {
    options: DemoOptions,
    tz: TimeZone,
    first_day: Date,
    /// Unix seconds of the first local midnight, and of the one after the last day.
    range: (i64, i64),
    site: Site,
    uas: Vec<(u32, Arc<UaInfo>)>,
    sources: Vec<(u32, Source)>,
    blog_weights: Vec<(u32, usize)>,
    docs_weights: Vec<(u32, usize)>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Weekday factors, Monday first; their mean is 1.
const WEEKDAY: [f64; 7] = [1.08, 1.12, 1.10, 1.06, 0.98, 0.80, 0.86];
/// Visit starts by local hour (relative weights).
const HOURLY: [u32; 24] = [
    30, 20, 15, 12, 12, 20, 40, 70, 100, 120, 130, 130, 125, 130, 135, 130, 120, 110, 100, 100, 95,
    85, 65, 45,
];
/// The collector's visit timeout; every gap inside a generated visit is below it.
const MAX_GAP_SECS: f64 = 29.0 * 60.0;

impl Generator {
    pub fn new(options: &DemoOptions) -> Result<Self, DemoError> {
        if options.days == 0 || options.days > MAX_DAYS {
            return Err(DemoError::Options(format!(
                "days must be 1..={MAX_DAYS}, not {}",
                options.days
            )));
        }
        if options.visitors_per_day == 0 || options.visitors_per_day > MAX_VISITORS_PER_DAY {
            return Err(DemoError::Options(format!(
                "visitors per day must be 1..={MAX_VISITORS_PER_DAY}, not {}",
                options.visitors_per_day
            )));
        }
        let tz = TimeZone::get(&options.timezone).map_err(|e| {
            DemoError::Options(format!("unknown time zone {:?}: {e}", options.timezone))
        })?;
        let date_error = |e: jiff::Error| DemoError::Options(format!("date out of range: {e}"));
        let first_day = options
            .last_day
            .checked_sub(jiff::Span::new().days(i64::from(options.days) - 1))
            .map_err(date_error)?;
        let start = midnight(first_day, &tz).map_err(date_error)?;
        let end =
            midnight(options.last_day.tomorrow().map_err(date_error)?, &tz).map_err(date_error)?;

        let parser = UaParser::new(&UserAgentConfig::default())?;
        let mut uas = Vec::new();
        for (weight, ua) in USER_AGENTS {
            let info = parser.parse(ua);
            if info.is_bot || info.browser.is_empty() {
                return Err(DemoError::Options(format!(
                    "the demo User-Agent {ua:?} does not parse as a browser"
                )));
            }
            uas.push((*weight, info));
        }
        let site = Site::new(&options.site);
        let hosts = [options.site.as_str()];
        let mut sources = Vec::new();
        for (weight, spec) in SOURCES {
            let url = format!("https://{}/?{}", options.site, spec.query);
            let page = page_url::parse(&url, false)
                .map_err(|e| DemoError::Options(format!("site {:?}: {e}", options.site)))?;
            let info = referrer::classify(spec.referrer, &hosts, &page.utm);
            sources.push((
                *weight,
                Source {
                    referrer: info,
                    utm: page.utm,
                    lands: spec.lands,
                },
            ));
        }
        Ok(Self {
            options: options.clone(),
            tz,
            first_day,
            range: (start, end),
            site,
            uas,
            sources,
            blog_weights: zipf(BLOG_POSTS.len()).into_iter().zip(0..).collect(),
            docs_weights: zipf(DOCS.len()).into_iter().zip(0..).collect(),
        })
    }

    /// Days to generate.
    pub fn days(&self) -> u32 {
        self.options.days
    }

    /// The first and last local day.
    pub fn day_range(&self) -> (Date, Date) {
        (self.first_day, self.options.last_day)
    }

    /// The rows of the visits starting on day `index` (0 = the first day), page by
    /// page, handed to `emit` one by one (a reused row: copy what you keep). Rows
    /// after the last day or `not_after` are left out.
    pub fn day(&self, index: u32, emit: &mut dyn FnMut(&EventRow)) -> DemoSummary {
        let mut summary = DemoSummary::default();
        let Ok(date) = self
            .first_day
            .checked_add(jiff::Span::new().days(i64::from(index)))
        else {
            return summary;
        };
        let (Ok(start), Ok(end)) = (
            midnight(date, &self.tz),
            date.tomorrow().and_then(|d| midnight(d, &self.tz)),
        ) else {
            return summary;
        };
        let limit = self.range.1.min(i64::from(self.options.not_after) + 1);
        let mut rng = SplitMix64::new(
            self.options
                .seed
                .wrapping_mul(0x2545_F491_4F6C_DD1D)
                .wrapping_add(u64::from(index)),
        );
        let days = f64::from(self.options.days.max(2) - 1);
        let trend = 0.92 + 0.16 * f64::from(index) / days;
        let weekday = WEEKDAY[usize::from(date.weekday().to_monday_zero_offset() as u8)];
        let noise = 0.9 + 0.2 * rng.unit();
        let visitors =
            (f64::from(self.options.visitors_per_day) * trend * weekday * noise).round() as u64;
        let day_len = (end - start) as f64;
        let hourly: Vec<(u32, usize)> = HOURLY.iter().copied().zip(0..).collect();

        let mut row = EventRow {
            site: Arc::clone(&self.site.domain),
            hostname: self.site.domain.to_string(),
            ..EventRow::default()
        };
        for _ in 0..visitors {
            let person = Person {
                ua: Arc::clone(pick(&mut rng, &self.uas)),
                place: *pick(&mut rng, PLACES),
                anonymous: rng.chance(0.015),
            };
            let hour = *pick(&mut rng, &hourly) as f64;
            let mut visit_start = start + ((hour + rng.unit()) * day_len / 24.0) as i64;
            let visits = match rng.below(100) {
                0..88 => 1,
                88..98 => 2,
                _ => 3,
            };
            let mut visitor_id = rng.id();
            let mut id_day = visit_start.div_euclid(86_400);
            for n in 0..visits {
                if n > 0 {
                    visit_start += 3_600 + rng.below(7 * 3_600) as i64;
                    if visit_start >= end {
                        break;
                    }
                    // A new visit on another UTC day hashes under another salt.
                    if visit_start.div_euclid(86_400) != id_day {
                        visitor_id = rng.id();
                        id_day = visit_start.div_euclid(86_400);
                    }
                }
                let ids = if person.anonymous {
                    (0, 0)
                } else {
                    (visitor_id, rng.id())
                };
                // Rows past the limit are generated (so the random stream, and with it
                // every other row, does not depend on the limit) but not emitted.
                let mut counted = false;
                self.visit(&mut rng, &person, ids, visit_start, &mut row, &mut |r| {
                    if i64::from(r.timestamp) >= limit {
                        return;
                    }
                    if !counted {
                        summary.visits += 1;
                        counted = true;
                    }
                    summary.rows += 1;
                    match r.name.as_str() {
                        "pageview" => summary.pageviews += 1,
                        crate::enrich::ENGAGEMENT => summary.engagements += 1,
                        _ => summary.custom_events += 1,
                    }
                    emit(r)
                });
            }
        }
        summary
    }

    /// One visit's rows, each emitted before the next is built.
    #[allow(clippy::too_many_arguments)]
    fn visit(
        &self,
        rng: &mut SplitMix64,
        person: &Person,
        (visitor_id, session_id): (u64, u64),
        start: i64,
        row: &mut EventRow,
        emit: &mut dyn FnMut(&EventRow),
    ) {
        let source = pick(rng, &self.sources);
        let ua = &person.ua;
        row.visitor_id = visitor_id;
        row.session_id = session_id;
        row.browser = Arc::clone(&ua.browser);
        row.browser_version = Arc::clone(&ua.browser_version);
        row.os = Arc::clone(&ua.os);
        row.os_version = Arc::clone(&ua.os_version);
        row.device = ua.device;
        let (country, region, city_id, city) = person.place;
        row.country = country;
        set(&mut row.region, region);
        row.city_geoname_id = city_id;
        set(&mut row.city, city);

        let mut page: Arc<str> = self.landing(rng, source.lands);
        let entry = Arc::clone(&page);
        let pages = page_count(rng);
        let mut at = start;
        let mut previous: Option<Arc<str>> = None;
        for n in 0..pages {
            let first = n == 0;
            let last = n + 1 == pages;
            // Page views of a bounce last a little; reading pages take longer.
            let dwell = rng
                .log_normal(if last { 25.0 } else { 45.0 }, 1.0)
                .clamp(2.0, MAX_GAP_SECS) as i64;
            row.entry_page = if session_id == 0 {
                Arc::clone(&page)
            } else {
                Arc::clone(&entry)
            };
            set(&mut row.pathname, &page);
            if first {
                let r = &source.referrer;
                set(&mut row.referrer_host, &r.host);
                set(&mut row.referrer_path, &r.path);
                set(&mut row.source, &r.source);
                row.channel = r.channel;
                let u = &source.utm;
                set(&mut row.utm_source, &u.source);
                set(&mut row.utm_medium, &u.medium);
                set(&mut row.utm_campaign, &u.campaign);
                set(&mut row.utm_term, &u.term);
                set(&mut row.utm_content, &u.content);
            } else if n == 1 {
                for s in [
                    &mut row.referrer_host,
                    &mut row.referrer_path,
                    &mut row.source,
                    &mut row.utm_source,
                    &mut row.utm_medium,
                    &mut row.utm_campaign,
                    &mut row.utm_term,
                    &mut row.utm_content,
                ] {
                    s.clear();
                }
                row.channel = referrer::Channel::Direct.as_str();
            }

            // The page view.
            row.timestamp = at as u32;
            set(&mut row.name, "pageview");
            plain(row);
            emit(row);

            // Custom events while on the page, then the engagement sent on leaving.
            let leave = at + dwell;
            let event_at =
                |rng: &mut SplitMix64| at + 1 + rng.below((dwell - 1).max(1) as u64) as i64;
            let mut events: Vec<(i64, Custom)> = Vec::new();
            self.customs(rng, &page, previous.as_deref(), person, &mut |c, rng| {
                events.push((event_at(rng), c));
            });
            events.sort_by_key(|(t, _)| *t);
            for (t, custom) in events {
                row.timestamp = t as u32;
                custom.fill(row);
                emit(row);
            }
            let hidden_twice = rng.chance(0.08);
            let engaged_ms = (dwell as f64 * 1000.0 * (0.45 + 0.55 * rng.unit())) as u32;
            let depth = scroll_depth(rng, dwell);
            if hidden_twice {
                let mid = at + 1 + (dwell - 1) / 2;
                row.timestamp = mid as u32;
                engagement(row, engaged_ms / 2, depth / 2);
                emit(row);
            }
            let engagement_at = (leave - 1).max(at + 1);
            if !rng.chance(0.06) {
                row.timestamp = engagement_at as u32;
                let ms = if hidden_twice {
                    engaged_ms - engaged_ms / 2
                } else {
                    engaged_ms
                };
                engagement(row, ms.max(1), depth);
                emit(row);
            }

            previous = Some(Arc::clone(&page));
            at = leave.max(engagement_at + 1);
            page = self.next_page(rng, &page);
        }
    }

    fn landing(&self, rng: &mut SplitMix64, lands: Landing) -> Arc<str> {
        let blog = |rng: &mut SplitMix64| BLOG_POSTS[*pick(rng, &self.blog_weights)];
        let docs = |rng: &mut SplitMix64| DOCS[*pick(rng, &self.docs_weights)];
        let path = match lands {
            Landing::Home => {
                if rng.chance(0.8) {
                    "/"
                } else {
                    *pick(
                        rng,
                        &[
                            (3, "/features"),
                            (2, "/pricing"),
                            (2, "/login"),
                            (1, "/about"),
                        ],
                    )
                }
            }
            Landing::Content => match rng.below(10) {
                0..4 => blog(rng),
                4..8 => docs(rng),
                8 => "/",
                _ => INTEGRATIONS[rng.below(INTEGRATIONS.len() as u64) as usize],
            },
            Landing::Blog => {
                if rng.chance(0.9) {
                    blog(rng)
                } else {
                    "/blog"
                }
            }
            Landing::Pricing => {
                if rng.chance(0.7) {
                    "/pricing"
                } else {
                    "/"
                }
            }
        };
        let path = if rng.chance(0.003) {
            MISSING[rng.below(MISSING.len() as u64) as usize]
        } else {
            path
        };
        self.site.path(path)
    }

    fn next_page(&self, rng: &mut SplitMix64, current: &str) -> Arc<str> {
        let blog = |rng: &mut SplitMix64| BLOG_POSTS[*pick(rng, &self.blog_weights)];
        let docs = |rng: &mut SplitMix64| DOCS[*pick(rng, &self.docs_weights)];
        let next = match current {
            "/" => *pick(
                rng,
                &[
                    (25, "/pricing"),
                    (20, "/features"),
                    (15, "/blog"),
                    (15, "/docs"),
                    (8, "/signup"),
                    (7, "/login"),
                    (5, "/about"),
                    (5, "/integrations"),
                ],
            ),
            "/features" => *pick(
                rng,
                &[
                    (40, "/pricing"),
                    (20, "/integrations"),
                    (15, "/signup"),
                    (15, "/"),
                    (10, "/docs"),
                ],
            ),
            "/pricing" => *pick(
                rng,
                &[
                    (35, "/signup"),
                    (20, "/checkout"),
                    (15, "/features"),
                    (10, "/docs"),
                    (10, "/"),
                    (10, "/contact"),
                ],
            ),
            "/signup" => *pick(
                rng,
                &[
                    (40, "/docs/getting-started"),
                    (30, "/checkout"),
                    (20, "/pricing"),
                    (10, "/"),
                ],
            ),
            "/checkout" => *pick(rng, &[(45, "/checkout/success"), (55, "/pricing")]),
            "/checkout/success" => *pick(rng, &[(60, "/docs/getting-started"), (40, "/")]),
            "/blog" => {
                if rng.chance(0.9) {
                    blog(rng)
                } else {
                    "/"
                }
            }
            "/integrations" => {
                if rng.chance(0.75) {
                    INTEGRATIONS[rng.below(INTEGRATIONS.len() as u64) as usize]
                } else {
                    "/pricing"
                }
            }
            p if p.starts_with("/blog/") => match rng.below(100) {
                0..40 => blog(rng),
                40..55 => "/blog",
                55..70 => "/",
                70..85 => "/pricing",
                _ => "/features",
            },
            p if p.starts_with("/docs") => match rng.below(100) {
                0..70 => docs(rng),
                70..80 => "/pricing",
                80..90 => "/",
                _ => "/changelog",
            },
            _ => *pick(
                rng,
                &[(50, "/"), (20, "/pricing"), (15, "/blog"), (15, "/docs")],
            ),
        };
        self.site.path(next)
    }

    /// The custom events a page view of `page` sends (each with its props).
    fn customs(
        &self,
        rng: &mut SplitMix64,
        page: &str,
        previous: Option<&str>,
        person: &Person,
        add: &mut dyn FnMut(Custom, &mut SplitMix64),
    ) {
        if MISSING.contains(&page) {
            add(Custom::new("404", &[]), rng);
            return;
        }
        match page {
            "/signup" if rng.chance(0.35) => {
                let plan = *pick(rng, &[(60, "free"), (30, "pro"), (10, "team")]);
                add(Custom::new("Signup", &[("plan", plan)]), rng);
            }
            "/checkout/success" if previous == Some("/checkout") => {
                let plan = *pick(rng, &[(75, "pro"), (25, "team")]);
                let billing = *pick(rng, &[(65, "monthly"), (35, "yearly")]);
                let (currency, table): (&str, [i64; 4]) = match &person.place.0 {
                    b"GB" => ("GBP", [16, 160, 42, 420]),
                    b"DE" | b"FR" | b"NL" | b"ES" | b"IT" | b"AT" | b"IE" | b"FI" | b"PT" => {
                        ("EUR", [18, 180, 45, 450])
                    }
                    _ => ("USD", [19, 190, 49, 490]),
                };
                let amount =
                    table[usize::from(plan == "team") * 2 + usize::from(billing == "yearly")];
                let mut custom = Custom::new("Purchase", &[("plan", plan), ("billing", billing)]);
                custom.revenue = Some((amount * 1_000_000, currency));
                add(custom, rng);
            }
            "/" if rng.chance(0.06) => {
                add(Custom::new("Video Play", &[("video", "product-tour")]), rng);
            }
            p if p.starts_with("/blog/") => {
                if rng.chance(0.03) {
                    add(
                        Custom::new("Newsletter Signup", &[("location", "blog")]),
                        rng,
                    );
                }
                if rng.chance(0.08) {
                    let url = *pick(rng, OUTBOUND);
                    add(Custom::new("Outbound Link: Click", &[("url", url)]), rng);
                }
            }
            p if p.starts_with("/docs") => {
                if rng.chance(0.05) {
                    let files = ["/files/hush-cheatsheet.pdf", "/files/hush-architecture.pdf"];
                    let url = format!(
                        "https://{}{}",
                        self.options.site,
                        files[rng.below(2) as usize]
                    );
                    add(
                        Custom::owned("File Download", vec![("url".into(), url)]),
                        rng,
                    );
                }
                if rng.chance(0.06) {
                    let url = *pick(rng, OUTBOUND);
                    add(Custom::new("Outbound Link: Click", &[("url", url)]), rng);
                }
            }
            _ => {}
        }
        if page != "/signup" && rng.chance(0.004) {
            add(
                Custom::new("Newsletter Signup", &[("location", "footer")]),
                rng,
            );
        }
    }
}

/// A custom event to store on the current page.
struct Custom {
    name: &'static str,
    props: Vec<(String, String)>,
    revenue: Option<(i64, &'static str)>,
}

impl Custom {
    fn new(name: &'static str, props: &[(&str, &str)]) -> Self {
        Self::owned(
            name,
            props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn owned(name: &'static str, props: Vec<(String, String)>) -> Self {
        Self {
            name,
            props,
            revenue: None,
        }
    }

    fn fill(self, row: &mut EventRow) {
        set(&mut row.name, self.name);
        row.props = self.props;
        match self.revenue {
            Some((micros, currency)) => {
                row.revenue_micros = Some(micros);
                set(&mut row.revenue_currency, currency);
            }
            None => {
                row.revenue_micros = None;
                row.revenue_currency.clear();
            }
        }
        row.interactive = 1;
        row.engagement_ms = 0;
        row.scroll_depth = SCROLL_DEPTH_UNKNOWN;
    }
}

/// A page view's own fields: no props, revenue or engagement.
fn plain(row: &mut EventRow) {
    row.props.clear();
    row.revenue_micros = None;
    row.revenue_currency.clear();
    row.interactive = 1;
    row.engagement_ms = 0;
    row.scroll_depth = SCROLL_DEPTH_UNKNOWN;
}

/// An engagement row as the tracker's ping is stored: no props, `interactive` as
/// the tracker leaves it (unset: true).
fn engagement(row: &mut EventRow, ms: u32, depth: u8) {
    set(&mut row.name, crate::enrich::ENGAGEMENT);
    plain(row);
    row.engagement_ms = ms;
    row.scroll_depth = depth;
}

fn set(field: &mut String, value: &str) {
    field.clear();
    field.push_str(value);
}

/// Page views in a visit: 45 % one, then each further page with probability 0.62,
/// at most 15.
fn page_count(rng: &mut SplitMix64) -> u32 {
    if rng.chance(0.45) {
        return 1;
    }
    let mut n = 2;
    while n < 15 && rng.chance(0.62) {
        n += 1;
    }
    n
}

/// How far down the page a reader got: a quarter read to the end, the rest deeper the
/// longer they stayed.
fn scroll_depth(rng: &mut SplitMix64, dwell: i64) -> u8 {
    if rng.chance(0.25) {
        return 100;
    }
    let base = 15.0 + 70.0 * (1.0 - (-(dwell as f64) / 60.0).exp());
    (base + 20.0 * (rng.unit() - 0.5)).clamp(0.0, 100.0) as u8
}

/// Unix seconds of the start of `date` in `tz` (the first instant of the day, also
/// on a DST day whose midnight does not exist).
fn midnight(date: Date, tz: &TimeZone) -> Result<i64, jiff::Error> {
    Ok(date.to_zoned_datetime(tz.clone())?.timestamp().as_second())
}

/// Every row of the demo, in memory (tests, small sizes), with its summary.
pub fn generate(options: &DemoOptions) -> Result<(Vec<EventRow>, DemoSummary), DemoError> {
    let generator = Generator::new(options)?;
    let mut rows = Vec::new();
    let mut summary = DemoSummary::default();
    for day in 0..generator.days() {
        summary.add(&generator.day(day, &mut |r| rows.push(r.clone())));
    }
    Ok((rows, summary))
}

/// Rows encoded for one insert.
struct Batch {
    bytes: Vec<u8>,
    rows: u64,
}

/// Generates the demo on `threads` worker threads and inserts it into `events` in
/// batches of [`BATCH_ROWS`], [`INSERTS_IN_FLIGHT`] at a time, each under its own deduplication
/// token (fresh per run: running twice writes the rows twice). `progress` sees the
/// rows stored so far after every insert. Stops at the first failed insert (the rows
/// stored so far stay).
pub async fn write(
    clickhouse: &ClickHouseConfig,
    options: &DemoOptions,
    threads: usize,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<DemoSummary, DemoError> {
    let generator = Arc::new(Generator::new(options)?);
    let client = crate::db::client(clickhouse);
    let timeout = crate::db::request_timeout(clickhouse).max(Duration::from_secs(300));
    let run: u64 = rand::random();
    // At most two batches waiting per worker: the workers run ahead of the inserts,
    // never far (each batch is ~50 MB).
    let threads = threads.max(1);
    let (tx, rx) = mpsc::sync_channel::<Batch>(threads * 2);
    let next_day = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (generator, tx, next_day, stop) = (
                Arc::clone(&generator),
                tx.clone(),
                Arc::clone(&next_day),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || work(&generator, &tx, &next_day, &stop))
        })
        .collect();
    drop(tx);

    // The channel is std's (the workers block on it); wait on it on a blocking thread.
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let (mut inserts, mut stored) = (0u64, 0u64);
    let mut failed = None;
    let mut in_flight: tokio::task::JoinSet<(u64, u64, clickhouse::error::Result<()>)> =
        tokio::task::JoinSet::new();
    let in_flight_max = INSERTS_IN_FLIGHT;
    loop {
        // A full window: wait for an insert to finish first.
        if in_flight.len() >= in_flight_max
            && let Some(Ok((n, rows, result))) = in_flight.join_next().await
        {
            match result {
                Ok(()) => {
                    stored += rows;
                    progress(stored);
                }
                Err(source) => {
                    failed = Some(DemoError::Insert {
                        insert: n,
                        stored,
                        source,
                    });
                    break;
                }
            }
        }
        let rx = Arc::clone(&rx);
        let batch = tokio::task::spawn_blocking(move || {
            rx.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .recv()
                .ok()
        })
        .await
        .ok()
        .flatten();
        let Some(batch) = batch else { break };
        let token = format!("hush-demo-{run:016x}-{inserts}");
        inserts += 1;
        let (client, n, rows) = (client.clone(), inserts, batch.rows);
        in_flight.spawn(async move {
            let result =
                insert_payload(&client, "events", &token, Bytes::from(batch.bytes), timeout).await;
            (n, rows, result)
        });
    }
    while let Some(joined) = in_flight.join_next().await {
        if let Ok((n, rows, result)) = joined {
            match result {
                Ok(()) => {
                    stored += rows;
                    progress(stored);
                }
                Err(source) => {
                    failed.get_or_insert(DemoError::Insert {
                        insert: n,
                        stored,
                        source,
                    });
                }
            }
        }
    }
    // Unblock and end the workers (after a failure they may be waiting to send).
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    let mut total = DemoSummary::default();
    for worker in workers {
        if let Ok(Ok(summary)) = tokio::task::spawn_blocking(move || worker.join()).await {
            total.add(&summary);
        }
    }
    match failed {
        Some(error) => Err(error),
        None => {
            total.inserts = inserts;
            Ok(total)
        }
    }
}

/// A worker: takes the next day not taken, encodes its rows, sends a batch whenever
/// [`BATCH_ROWS`] are encoded, and the rest at the end. Returns what it generated.
fn work(
    generator: &Generator,
    tx: &mpsc::SyncSender<Batch>,
    next_day: &AtomicU32,
    stop: &AtomicBool,
) -> DemoSummary {
    let fresh = || Batch {
        bytes: Vec::with_capacity(BATCH_ROWS * 256),
        rows: 0,
    };
    let mut total = DemoSummary::default();
    let mut batch = fresh();
    let mut full: Vec<Batch> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let day = next_day.fetch_add(1, Ordering::Relaxed);
        if day >= generator.days() {
            if batch.rows > 0 {
                let _ = tx.send(batch);
            }
            break;
        }
        let summary = generator.day(day, &mut |row| {
            rowbinary::encode_event(row, &mut batch.bytes);
            batch.rows += 1;
            if batch.rows == BATCH_ROWS as u64 {
                full.push(std::mem::replace(&mut batch, fresh()));
            }
        });
        total.add(&summary);
        for b in full.drain(..) {
            if tx.send(b).is_err() {
                return total;
            }
        }
    }
    total
}

/// The site's day of `unix_secs` (for callers choosing `last_day`).
pub fn local_day(unix_secs: i64, timezone: &str) -> Result<Date, DemoError> {
    let tz = TimeZone::get(timezone)
        .map_err(|e| DemoError::Options(format!("unknown time zone {timezone:?}: {e}")))?;
    let ts = jiff::Timestamp::from_second(unix_secs)
        .map_err(|e| DemoError::Options(format!("time out of range: {e}")))?;
    Ok(ts.to_zoned_datetime(tz).date())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> DemoOptions {
        DemoOptions {
            site: "demo.example".into(),
            timezone: "Europe/Berlin".into(),
            days: 5,
            visitors_per_day: 60,
            seed: 3,
            last_day: jiff::civil::date(2026, 3, 31),
            not_after: u32::MAX,
        }
    }

    #[test]
    fn splitmix64_is_the_reference_generator() {
        // The reference implementation's first outputs for seed 0 (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn the_same_options_give_the_same_rows_and_another_seed_others() {
        let (a, summary) = generate(&options()).unwrap();
        let (b, _) = generate(&options()).unwrap();
        assert_eq!(a, b);
        assert_eq!(summary.rows, a.len() as u64);
        assert!(summary.visits > 200, "{summary:?}");
        let (c, _) = generate(&DemoOptions {
            seed: 4,
            ..options()
        })
        .unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn not_after_cuts_rows_and_changes_none_before_it() {
        let (all, _) = generate(&options()).unwrap();
        // 2026-03-29 12:00 UTC, in the middle of the range (which has the DST change).
        let cut = 1_774_785_600;
        let (some, summary) = generate(&DemoOptions {
            not_after: cut,
            ..options()
        })
        .unwrap();
        let expected: Vec<&EventRow> = all.iter().filter(|r| r.timestamp <= cut).collect();
        assert!(expected.len() < all.len() && !expected.is_empty());
        assert_eq!(some.iter().collect::<Vec<_>>(), expected);
        assert_eq!(summary.rows, some.len() as u64);
    }

    #[test]
    fn bad_options_are_refused() {
        for (bad, needle) in [
            (
                DemoOptions {
                    days: 0,
                    ..options()
                },
                "days",
            ),
            (
                DemoOptions {
                    days: MAX_DAYS + 1,
                    ..options()
                },
                "days",
            ),
            (
                DemoOptions {
                    visitors_per_day: 0,
                    ..options()
                },
                "visitors",
            ),
            (
                DemoOptions {
                    timezone: "Mars/Olympus".into(),
                    ..options()
                },
                "time zone",
            ),
        ] {
            let err = Generator::new(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
