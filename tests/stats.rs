//! Exactness of the stats engine: a generated dataset across sites, time zones and DST
//! changes, queried through `query::engine`, each answer compared with one computed
//! here in plain Rust over the generated events (never by SQL).
//!
//! The model below restates the definitions in `src/query/sql.rs`'s module doc
//! independently: visit attributes from the visit's first page view in the period,
//! exit page its last, visit values per visit (and per time bucket), a visit counting
//! when one of its rows matches the filters, anonymous rows in page views and events
//! only. Rounded metrics are compared with the unrounded model value within half a
//! unit of the rounding.

#[path = "support/db.rs"]
mod db;
mod geo_fixture;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use hush::enrich::row::EventRow;
use hush::query::engine::{Engine, Limits, SiteInfo};
use hush::query::request::Query;
use hush::query::sql::{Goal, Plan};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

const SITES: &[(&str, &str)] = &[
    ("utc.test", "UTC"),
    ("berlin.test", "Europe/Berlin"),
    ("ny.test", "America/New_York"),
];
const PATHS: &[&str] = &[
    "/",
    "/blog",
    "/blog/a",
    "/blog/b",
    "/pricing",
    "/docs/x/y",
    "/signup",
];
/// A page visits reach after their entry and never enter on: by `event:page`, its
/// group has page views but no visits.
const NEVER_ENTERED: &str = "/thanks";
/// (source, channel, referrer host, utm_campaign)
const SOURCES: &[(&str, &str, &str, &str)] = &[
    ("", "direct", "", ""),
    ("Google", "search", "www.google.com", ""),
    ("Twitter", "social", "t.co", "launch"),
    ("news", "email", "", "april"),
    ("example.org", "referral", "example.org", ""),
];
const BROWSERS: &[(&str, &str, &str)] = &[
    ("Chrome", "Windows", "desktop"),
    ("Safari", "iOS", "mobile"),
    ("Firefox", "GNU/Linux", "desktop"),
    ("Chrome", "Android", "tablet"),
    // Unknown to the parser: no family, and a device class the labels fold into
    // "(not set)" together with the empty one.
    ("", "", "other"),
];
const COUNTRIES: &[(&[u8; 2], &str, &str)] = &[
    (b"DE", "BE", "Berlin"),
    (b"US", "CA", "San Francisco"),
    (b"EE", "", "Tallinn"),
    (b"\0\0", "", ""),
];
/// Data runs from here for `DAYS` days: it holds the US (03-10) and EU (03-31) spring
/// DST changes.
const FIRST: &str = "2024-03-07T00:00:00Z";
const DAYS: i64 = 27;

fn goals() -> Vec<Goal> {
    vec![
        Goal::event("Signup", "Signup"),
        Goal::page("Visit /blog/*", "/blog/*"),
        Goal::event("Purchase", "Purchase"),
    ]
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn generate() -> Vec<EventRow> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let first = FIRST.parse::<Timestamp>().unwrap().as_second();
    let mut rows = Vec::new();
    let mut session_id = 1u64;
    for (site, _) in SITES {
        let site: Arc<str> = Arc::from(*site);
        for visitor in 1..=120u64 {
            let visitor_id = visitor * 1_000 + rows.len() as u64 % 7 + 1;
            let (browser, os, device) = BROWSERS[rng.below(BROWSERS.len() as u64) as usize];
            let (cc, region, city) = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
            for _ in 0..=rng.below(3) {
                session_id += 1;
                // Some visits start just before a local or UTC midnight, to span it.
                let day = rng.below(DAYS as u64) as i64;
                let mut ts = first + day * 86_400 + rng.below(86_400) as i64;
                if rng.chance(15) {
                    ts = first + day * 86_400 + 86_400 - 300 - rng.below(600) as i64;
                }
                let (source, channel, ref_host, campaign) =
                    SOURCES[rng.below(SOURCES.len() as u64) as usize];
                let pages = 1 + rng.below(4);
                let entry = PATHS[rng.below(PATHS.len() as u64) as usize];
                let entry_page: Arc<str> = Arc::from(entry);
                for p in 0..pages {
                    let path = if p == 0 {
                        entry
                    } else {
                        let i = rng.below(PATHS.len() as u64 + 1) as usize;
                        PATHS.get(i).copied().unwrap_or(NEVER_ENTERED)
                    };
                    let first_view = p == 0;
                    let base = EventRow {
                        site: site.clone(),
                        visitor_id,
                        session_id,
                        entry_page: entry_page.clone(),
                        hostname: site.to_string(),
                        pathname: path.into(),
                        browser: Arc::from(browser),
                        os: Arc::from(os),
                        device,
                        country: *cc,
                        region: region.into(),
                        city: city.into(),
                        city_geoname_id: u32::from(cc[0]) * 100 + u32::from(cc[1]),
                        ..EventRow::default()
                    };
                    rows.push(EventRow {
                        timestamp: ts as u32,
                        name: "pageview".into(),
                        source: if first_view {
                            source.into()
                        } else {
                            String::new()
                        },
                        channel: if first_view { channel } else { "direct" },
                        referrer_host: if first_view {
                            ref_host.into()
                        } else {
                            String::new()
                        },
                        referrer_path: if first_view && !ref_host.is_empty() {
                            "/r".into()
                        } else {
                            String::new()
                        },
                        utm_campaign: if first_view {
                            campaign.into()
                        } else {
                            String::new()
                        },
                        ..base.clone()
                    });
                    if rng.chance(30) {
                        ts += 1 + rng.below(20) as i64;
                        let (name, interactive) = match rng.below(3) {
                            0 => ("Signup", 1),
                            1 => ("Purchase", 1),
                            _ => ("Scroll", 0),
                        };
                        let plan = if rng.chance(50) { "pro" } else { "free" };
                        let revenue = (name == "Purchase").then(|| rng.below(90_000_000) as i64);
                        let currency = if revenue.is_some() { "USD" } else { "" };
                        rows.push(EventRow {
                            timestamp: ts as u32,
                            name: name.into(),
                            interactive,
                            props: vec![("plan".into(), plan.into())],
                            revenue_micros: revenue,
                            revenue_currency: currency.into(),
                            ..base.clone()
                        });
                    }
                    ts += 1 + rng.below(30) as i64;
                    rows.push(EventRow {
                        timestamp: ts as u32,
                        name: "engagement".into(),
                        engagement_ms: rng.below(120_000) as u32,
                        scroll_depth: if rng.chance(80) {
                            rng.below(101) as u8
                        } else {
                            255
                        },
                        ..base.clone()
                    });
                    ts += 10 + rng.below(1_500) as i64;
                }
            }
        }
        // Anonymous (DNT/GPC) page views: no visitor, no visit.
        for i in 0..40 {
            let ts = first + rng.below((DAYS * 86_400) as u64) as i64;
            rows.push(EventRow {
                site: site.clone(),
                timestamp: ts as u32,
                name: "pageview".into(),
                hostname: site.to_string(),
                pathname: PATHS[i % PATHS.len()].into(),
                entry_page: Arc::from(PATHS[i % PATHS.len()]),
                source: "Google".into(),
                channel: "search",
                ..EventRow::default()
            });
        }
    }
    rows
}

// ---------------------------------------------------------------------------------
// The model.

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Row,
    Visit,
}

struct VisitAttrs {
    source: String,
    channel: String,
    campaign: String,
    referrer: String,
    entry_host: String,
    exit: String,
}

struct Model<'a> {
    rows: Vec<&'a EventRow>,
    /// Local date of the period's start.
    first_day: jiff::civil::Date,
    attrs: HashMap<u64, VisitAttrs>,
    tz: TimeZone,
    goals: Vec<Goal>,
}

fn display_channel(c: &str) -> &str {
    match c {
        "direct" | "" => "Direct",
        "search" => "Organic Search",
        "social" => "Organic Social",
        "email" => "Email",
        "referral" => "Referral",
        "paid" => "Paid Search",
        other => other,
    }
}

fn goal_matches(goal: &Goal, row: &EventRow) -> bool {
    match &goal.kind {
        hush::query::sql::GoalKind::Event(e) => row.name == *e,
        hush::query::sql::GoalKind::Page(_) => {
            // The model's own reading of "/blog/*": anything under /blog/.
            row.name == "pageview" && row.pathname.starts_with("/blog/")
        }
    }
}

impl<'a> Model<'a> {
    fn new(all: &'a [EventRow], site: &str, tz: &str, start: i64, end: i64) -> Self {
        let rows: Vec<&EventRow> = all
            .iter()
            .filter(|r| &*r.site == site && (start..end).contains(&i64::from(r.timestamp)))
            .collect();
        let mut by_visit: BTreeMap<u64, Vec<&EventRow>> = BTreeMap::new();
        for r in &rows {
            if r.session_id != 0 && r.name != "engagement" {
                by_visit.entry(r.session_id).or_default().push(r);
            }
        }
        let attrs = by_visit
            .into_iter()
            .map(|(id, mut v)| {
                v.sort_by_key(|r| (r.name != "pageview", r.timestamp));
                let first = v[0];
                let exit = v
                    .iter()
                    .max_by_key(|r| (r.name == "pageview", r.timestamp))
                    .map(|r| r.pathname.clone())
                    .unwrap_or_default();
                let referrer = if first.referrer_host.is_empty() {
                    String::new()
                } else {
                    format!("{}{}", first.referrer_host, first.referrer_path)
                };
                (
                    id,
                    VisitAttrs {
                        source: first.source.clone(),
                        channel: first.channel.to_owned(),
                        campaign: first.utm_campaign.clone(),
                        referrer,
                        entry_host: first.hostname.clone(),
                        exit,
                    },
                )
            })
            .collect();
        let zone = TimeZone::get(tz).unwrap();
        Model {
            first_day: Timestamp::from_second(start)
                .unwrap()
                .to_zoned_datetime(zone)
                .date(),
            rows,
            attrs,
            tz: TimeZone::get(tz).unwrap(),
            goals: goals(),
        }
    }

    fn attr<'r>(&'r self, row: &'r EventRow) -> Option<&'r VisitAttrs> {
        self.attrs.get(&row.session_id)
    }

    /// Display value of a dimension on a row. Goal is handled by the caller.
    fn value(&self, dim: &str, row: &EventRow, ctx: Ctx) -> String {
        let own = |s: &str| s.to_owned();
        let a = self.attr(row);
        let local = Timestamp::from_second(i64::from(row.timestamp))
            .unwrap()
            .to_zoned_datetime(self.tz.clone());
        match dim {
            "time:day" => local.date().to_string(),
            "time:hour" => local.strftime("%Y-%m-%d %H:00:00").to_string(),
            "time:minute" => local.strftime("%Y-%m-%d %H:%M:00").to_string(),
            "time:month" => local.date().first_of_month().to_string(),
            "time:week" => {
                // Monday-started weeks, the first cut at the period's first day.
                let d = local.date();
                let back = i64::from(d.weekday().to_monday_zero_offset());
                let monday = d.checked_sub(jiff::Span::new().days(back)).unwrap();
                monday.max(self.first_day).to_string()
            }
            "time:hour_of_day" => local.hour().to_string(),
            "time:weekday" => local.date().weekday().to_monday_one_offset().to_string(),
            "event:page" if ctx == Ctx::Visit => own(&row.entry_page),
            "event:page" => row.pathname.clone(),
            "event:hostname" if ctx == Ctx::Visit => a
                .map(|a| a.entry_host.clone())
                .unwrap_or_else(|| row.hostname.clone()),
            "event:hostname" => row.hostname.clone(),
            "event:name" => row.name.clone(),
            "event:props:plan" => row
                .props
                .iter()
                .find(|(k, _)| k == "plan")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "(none)".into()),
            "visit:entry_page" => own(&row.entry_page),
            "visit:exit_page" => a
                .map(|a| a.exit.clone())
                .unwrap_or_else(|| row.pathname.clone()),
            "visit:source" => {
                let s = a
                    .map(|a| a.source.clone())
                    .unwrap_or_else(|| row.source.clone());
                if s.is_empty() {
                    "Direct / None".into()
                } else {
                    s
                }
            }
            "visit:referrer" => {
                let s = a.map(|a| a.referrer.clone()).unwrap_or_default();
                if s.is_empty() {
                    "Direct / None".into()
                } else {
                    s
                }
            }
            "visit:channel" => display_channel(
                &a.map(|a| a.channel.clone())
                    .unwrap_or_else(|| row.channel.to_owned()),
            )
            .to_owned(),
            "visit:utm_campaign" => {
                let s = a
                    .map(|a| a.campaign.clone())
                    .unwrap_or_else(|| row.utm_campaign.clone());
                if s.is_empty() { "(not set)".into() } else { s }
            }
            "visit:browser" => {
                if row.browser.is_empty() {
                    "(not set)".into()
                } else {
                    own(&row.browser)
                }
            }
            "visit:os" => {
                if row.os.is_empty() {
                    "(not set)".into()
                } else {
                    own(&row.os)
                }
            }
            "visit:device" => match row.device {
                "desktop" => "Desktop",
                "mobile" => "Mobile",
                "tablet" => "Tablet",
                _ => "(not set)",
            }
            .into(),
            "visit:country" => {
                if row.country == [0, 0] {
                    String::new()
                } else {
                    String::from_utf8_lossy(&row.country).into_owned()
                }
            }
            "visit:country_name" => {
                let code = String::from_utf8_lossy(&row.country).into_owned();
                hush::query::names::country(&code).unwrap_or("").to_owned()
            }
            "visit:city_name" => row.city.clone(),
            "visit:region" if row.region.is_empty() => String::new(),
            "visit:region" => format!("{}-{}", String::from_utf8_lossy(&row.country), row.region),
            "visit:region_name" if row.region.is_empty() => String::new(),
            "visit:region_name" => geo_fixture::region_name(&row.region),
            other => panic!("model has no dimension {other}"),
        }
    }

    /// Whether a row passes a filter (JSON, Plausible's syntax).
    fn passes(&self, filter: &Value, row: &EventRow) -> bool {
        let list = filter.as_array().unwrap();
        match list[0].as_str().unwrap() {
            "and" => list[1]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| self.passes(f, row)),
            "or" => list[1]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| self.passes(f, row)),
            "not" => !self.passes(&list[1], row),
            "has_done" | "has_not_done" => {
                let done = if row.session_id == 0 {
                    self.passes(&list[1], row)
                } else {
                    self.rows.iter().any(|r| {
                        r.session_id == row.session_id
                            && r.name != "engagement"
                            && self.passes(&list[1], r)
                    })
                };
                done == (list[0] == "has_done")
            }
            op => {
                let dim = list[1].as_str().unwrap();
                let clauses: Vec<String> = list[2]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                let sensitive = list
                    .get(3)
                    .and_then(|m| m["case_sensitive"].as_bool())
                    .unwrap_or(true);
                if dim == "event:goal" {
                    return self
                        .goals
                        .iter()
                        .filter(|g| clauses.contains(&g.name))
                        .any(|g| goal_matches(g, row));
                }
                let fold = |s: &str| {
                    if sensitive {
                        s.to_owned()
                    } else {
                        s.to_lowercase()
                    }
                };
                let v = fold(&self.value(dim, row, Ctx::Row));
                let hit = match op.trim_end_matches("_not") {
                    "is" => clauses.iter().any(|c| fold(c) == v),
                    "contains" => clauses.iter().any(|c| v.contains(&fold(c))),
                    "matches" => clauses.iter().any(|c| {
                        // The test's patterns are `^prefix` or `suffix$` only.
                        if let Some(p) = c.strip_prefix('^') {
                            v.starts_with(&fold(p))
                        } else if let Some(s) = c.strip_suffix('$') {
                            v.ends_with(&fold(s))
                        } else {
                            panic!("model cannot read pattern {c}")
                        }
                    }),
                    other => panic!("model has no operator {other}"),
                };
                if op.ends_with("_not") { !hit } else { hit }
            }
        }
    }

    fn all_pass(&self, filters: &[Value], row: &EventRow) -> bool {
        filters.iter().all(|f| self.passes(f, row))
    }

    /// Group key(s) of a row for the dimensions; a row can be in several goal groups.
    fn keys(&self, dims: &[&str], row: &EventRow, ctx: Ctx) -> Vec<Vec<String>> {
        let mut keys = vec![Vec::new()];
        for d in dims {
            if *d == "event:goal" {
                let names: Vec<String> = self
                    .goals
                    .iter()
                    .filter(|g| goal_matches(g, row))
                    .map(|g| g.name.clone())
                    .collect();
                keys = keys
                    .into_iter()
                    .flat_map(|k| {
                        names.iter().map(move |n| {
                            let mut k = k.clone();
                            k.push(n.clone());
                            k
                        })
                    })
                    .collect();
            } else {
                let v = self.value(d, row, ctx);
                keys.iter_mut().for_each(|k| k.push(v.clone()));
            }
        }
        keys
    }

    /// Metric values per group, unrounded (None: null).
    fn compute(
        &self,
        metrics: &[&str],
        dims: &[&str],
        filters: &[Value],
    ) -> BTreeMap<Vec<String>, Vec<Option<f64>>> {
        let exit_dims = dims.contains(&"visit:exit_page");
        let mut event_visitors: HashMap<Vec<String>, BTreeSet<u64>> = HashMap::new();
        let mut pageviews: HashMap<Vec<String>, f64> = HashMap::new();
        let mut events: HashMap<Vec<String>, f64> = HashMap::new();
        let mut revenue: HashMap<Vec<String>, (i64, u64)> = HashMap::new();
        let mut keys_seen: BTreeSet<Vec<String>> = BTreeSet::new();
        for r in self.rows.iter().filter(|r| r.name != "engagement") {
            if !self.all_pass(filters, r) {
                continue;
            }
            for k in self.keys(dims, r, Ctx::Row) {
                if r.visitor_id != 0 {
                    event_visitors
                        .entry(k.clone())
                        .or_default()
                        .insert(r.visitor_id);
                }
                *pageviews.entry(k.clone()).or_default() +=
                    f64::from(u8::from(r.name == "pageview"));
                *events.entry(k.clone()).or_default() += 1.0;
                if let Some(m) = r.revenue_micros {
                    let e = revenue.entry(k.clone()).or_default();
                    e.0 += m;
                    e.1 += 1;
                }
                keys_seen.insert(k);
            }
        }
        // Visits: groups of (session, per-row dimension values) with a matching row.
        let by_row: Vec<&str> = dims
            .iter()
            .copied()
            .filter(|d| {
                d.starts_with("time")
                    || *d == "event:name"
                    || *d == "event:goal"
                    || d.starts_with("event:props")
            })
            .collect();
        struct V {
            visitor: u64,
            pv: u32,
            events: u32,
            interactive: u32,
            min: u32,
            max: u32,
            matched: bool,
            key: Vec<String>,
        }
        let mut visits: BTreeMap<(u64, Vec<String>), V> = BTreeMap::new();
        for r in self
            .rows
            .iter()
            .filter(|r| r.name != "engagement" && r.session_id != 0)
        {
            for part in self.keys(&by_row, r, Ctx::Visit) {
                let full_keys = self.keys(dims, r, Ctx::Visit);
                // The visit-level key: per-row dims from this row, the rest from the visit.
                let key: Vec<String> = dims
                    .iter()
                    .enumerate()
                    .map(|(i, d)| match by_row.iter().position(|b| b == d) {
                        Some(j) => part[j].clone(),
                        None => full_keys[0][i].clone(),
                    })
                    .collect();
                let v = visits.entry((r.session_id, part)).or_insert(V {
                    visitor: r.visitor_id,
                    pv: 0,
                    events: 0,
                    interactive: 0,
                    min: u32::MAX,
                    max: 0,
                    matched: false,
                    key,
                });
                v.pv += u32::from(r.name == "pageview");
                v.events += 1;
                v.interactive += u32::from(r.name != "pageview" && r.interactive == 1);
                v.min = v.min.min(r.timestamp);
                v.max = v.max.max(r.timestamp);
                v.matched |= self.all_pass(filters, r);
            }
        }
        #[derive(Default)]
        struct S {
            visits: f64,
            visitors: BTreeSet<u64>,
            pv: f64,
            events: f64,
            bounces: f64,
            duration: f64,
        }
        let mut sess: HashMap<Vec<String>, S> = HashMap::new();
        for v in visits.values().filter(|v| v.matched) {
            let s = sess.entry(v.key.clone()).or_default();
            s.visits += 1.0;
            s.visitors.insert(v.visitor);
            s.pv += f64::from(v.pv);
            s.events += f64::from(v.events);
            s.bounces += f64::from(u8::from(v.pv <= 1 && v.interactive == 0));
            s.duration += f64::from(v.max - v.min);
        }
        // Engagement.
        let mut eng: HashMap<Vec<String>, (f64, BTreeSet<u64>)> = HashMap::new();
        let mut scroll: HashMap<Vec<String>, HashMap<(u64, String), u8>> = HashMap::new();
        for r in self
            .rows
            .iter()
            .filter(|r| r.name == "engagement" && r.visitor_id != 0)
        {
            if !self.all_pass(filters, r) {
                continue;
            }
            for k in self.keys(dims, r, Ctx::Row) {
                let e = eng.entry(k.clone()).or_default();
                e.0 += f64::from(r.engagement_ms);
                e.1.insert(r.visitor_id);
                if r.scroll_depth <= 100 {
                    let m = scroll
                        .entry(k)
                        .or_default()
                        .entry((r.visitor_id, r.pathname.clone()))
                        .or_default();
                    *m = (*m).max(r.scroll_depth);
                }
            }
        }
        let wants_event = metrics.iter().any(|m| {
            [
                "visitors",
                "pageviews",
                "events",
                "total_revenue",
                "conversion_rate",
                "percentage",
            ]
            .contains(m)
        });
        // The groups do not depend on which metrics are asked for, only on which rows
        // they read: the rows matching the filters (by exit page, the visits), or the
        // engagement rows when every metric is an engagement value.
        let reads_rows = metrics
            .iter()
            .any(|m| !["time_on_page", "scroll_depth"].contains(m));
        let primary: BTreeSet<Vec<String>> = if !reads_rows {
            eng.keys().cloned().collect()
        } else if exit_dims {
            sess.keys().cloned().collect()
        } else {
            keys_seen.clone()
        };
        // Totals for percentage / conversion rate.
        let total = |filters: &[Value]| -> f64 {
            let set: BTreeSet<u64> = self
                .rows
                .iter()
                .filter(|r| {
                    r.name != "engagement" && r.visitor_id != 0 && self.all_pass(filters, r)
                })
                .map(|r| r.visitor_id)
                .collect();
            set.len() as f64
        };
        let no_goal: Vec<Value> = filters
            .iter()
            .filter(|f| f.get(1).and_then(Value::as_str) != Some("event:goal"))
            .cloned()
            .collect();
        let total_all = total(filters);
        let total_no_goal = total(&no_goal);
        let mut out = BTreeMap::new();
        for k in primary {
            let s = sess.get(&k);
            let visitors = if exit_dims || !wants_event {
                s.map(|s| s.visitors.len() as f64).unwrap_or(0.0)
            } else {
                event_visitors
                    .get(&k)
                    .map(|v| v.len() as f64)
                    .unwrap_or(0.0)
            };
            let ratio = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
            let values = metrics
                .iter()
                .map(|m| match *m {
                    "visitors" => Some(visitors),
                    "visits" => Some(s.map_or(0.0, |s| s.visits)),
                    "pageviews" if exit_dims => Some(s.map_or(0.0, |s| s.pv)),
                    "pageviews" => Some(*pageviews.get(&k).unwrap_or(&0.0)),
                    "events" if exit_dims => Some(s.map_or(0.0, |s| s.events)),
                    "events" => Some(*events.get(&k).unwrap_or(&0.0)),
                    "bounce_rate" => Some(s.map_or(0.0, |s| ratio(100.0 * s.bounces, s.visits))),
                    "visit_duration" => Some(s.map_or(0.0, |s| ratio(s.duration, s.visits))),
                    "views_per_visit" => Some(s.map_or(0.0, |s| ratio(s.pv, s.visits))),
                    "time_on_page" => Some(
                        eng.get(&k)
                            .map_or(0.0, |(ms, v)| ratio(ms / 1000.0, v.len() as f64)),
                    ),
                    "scroll_depth" => scroll
                        .get(&k)
                        .filter(|m| !m.is_empty())
                        .map(|m| m.values().map(|v| f64::from(*v)).sum::<f64>() / m.len() as f64),
                    "percentage" => Some(ratio(100.0 * visitors, total_all)),
                    "conversion_rate" => Some(ratio(100.0 * visitors, total_no_goal)),
                    "total_revenue" => revenue
                        .get(&k)
                        .filter(|r| r.1 > 0)
                        .map(|r| r.0 as f64 / 1e6),
                    other => panic!("model has no metric {other}"),
                })
                .collect();
            out.insert(k, values);
        }
        out
    }
}

/// Half a unit of the rounding each metric is reported with.
fn tolerance(metric: &str) -> f64 {
    match metric {
        "bounce_rate" | "visit_duration" | "time_on_page" | "scroll_depth" => 0.5 + 1e-6,
        "percentage" => 0.05 + 1e-6,
        "views_per_visit" | "conversion_rate" => 0.005 + 1e-6,
        "total_revenue" => 0.005 + 1e-6,
        _ => 1e-9,
    }
}

fn metric_number(v: &Value) -> Option<f64> {
    match v {
        Value::Null => None,
        Value::Object(o) => o["value"].as_f64(),
        other => Some(
            other
                .as_f64()
                .unwrap_or_else(|| panic!("not a number: {other}")),
        ),
    }
}

struct Fixture {
    rows: Vec<EventRow>,
    engine: Engine,
    /// The same data through the general statement only, so both plans are checked.
    general: Engine,
    /// The visit plan without `sessions` (`engine` reads the built days).
    events_only: Engine,
}

/// Builds `sessions` for every day of every site, then leaves some days unusable as
/// production meets them: a day never built (every fifth), and a day whose rows
/// changed after its build (every seventh: a late row, as `event_days` counts one),
/// so the queries read built and unbuilt days side by side, at the periods' edges
/// and inside them.
async fn build_sessions(client: &clickhouse::Client) {
    let builder = hush::store::sessions::SessionBuilder::new(
        client.clone(),
        hush::store::Timeouts::default(),
        1800,
    );
    let later: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let mut built = 0;
    for (domain, _) in SITES {
        let report = builder.build_site(domain, later, usize::MAX).await.unwrap();
        assert!(report.skipped.is_empty(), "{domain}: {:?}", report.skipped);
        built += report.built.len();
    }
    assert!(built > 30, "only {built} days built");
    client
        .query("ALTER TABLE session_days DELETE WHERE toUInt16(day) % 5 = 2")
        .with_setting("mutations_sync", "2")
        .execute()
        .await
        .unwrap();
    client
        .query(
            "INSERT INTO event_days SELECT site, day, 1 FROM session_days \
             WHERE toUInt16(day) % 7 = 3",
        )
        .execute()
        .await
        .unwrap();
    // Every third day as a build recorded before the hourly rollups existed: its
    // visits are read from `sessions`, its hours from `events`.
    client
        .query(
            "INSERT INTO session_days (site, day, build, built_at, rows_prev, rows_day, rows_next, hourly) \
             SELECT site, day, build, built_at + 1, rows_prev, rows_day, rows_next, 0 \
             FROM session_days FINAL WHERE toUInt16(day) % 3 = 1",
        )
        .execute()
        .await
        .unwrap();
    for table in ["hourly_pages", "hourly_totals"] {
        client
            .query(&format!(
                "ALTER TABLE {table} DELETE WHERE toUInt16(day) % 3 = 1"
            ))
            .with_setting("mutations_sync", "2")
            .execute()
            .await
            .unwrap();
    }
    let rolled: u64 = client
        .query(
            "SELECT count() FROM session_days FINAL WHERE build != 0 AND hourly = 1 \
             AND toUInt16(day) % 7 != 3",
        )
        .fetch_one()
        .await
        .unwrap();
    assert!(rolled > 10, "only {rolled} days with hourly rows");
    let usable: u64 = client
        .query("SELECT count() FROM session_days FINAL WHERE build != 0 AND toUInt16(day) % 7 != 3")
        .fetch_one()
        .await
        .unwrap();
    assert!(usable > 20, "only {usable} usable days");
}

async fn fixture() -> &'static Fixture {
    static CELL: tokio::sync::OnceCell<Fixture> = tokio::sync::OnceCell::const_new();
    CELL.get_or_init(|| async {
        let (_config, client) = db::migrated_config("stats", "").await;
        let rows = generate();
        db::insert_events(&client, &rows).await;
        build_sessions(&client).await;
        let engine = Engine::new(
            client,
            Limits {
                max_execution_time: Duration::from_secs(60),
                max_memory_usage_bytes: 4 << 30,
                max_result_rows: 1_000_000,
            },
        );
        // Region names come from a MaxMind database, as in production: one naming
        // every region the generated rows use.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        let entries: Vec<geo_fixture::Entry<'_>> = COUNTRIES
            .iter()
            .enumerate()
            .filter(|(_, (_, region, _))| !region.is_empty())
            .map(|(i, (cc, region, city))| {
                let cidr: &'static str = Box::leak(format!("10.{i}.0.0/16").into_boxed_str());
                let cc: &'static str = std::str::from_utf8(&cc[..]).unwrap();
                (cidr, cc, *region, 1000 + i as u32, *city)
            })
            .collect();
        geo_fixture::write_city_db(&path, &entries);
        let geo = hush::enrich::geo::GeoDb::open(&hush::config::GeoConfig {
            database: Some(path),
            ..Default::default()
        })
        .unwrap();
        // The mapping outlives the file.
        drop(dir);
        let engine = engine.with_geo(Arc::new(geo));
        let general = engine.clone().with_plan(Plan::General);
        let events_only = engine.clone().with_sessions(false);
        Fixture {
            rows,
            engine,
            general,
            events_only,
        }
    })
    .await
}

fn site_info(domain: &str, tz: &str) -> SiteInfo {
    SiteInfo {
        domain: domain.into(),
        timezone_name: tz.into(),
        timezone: TimeZone::get(tz).unwrap(),
        goals: goals(),
    }
}

/// Issue 11: the per-row panels (pages, goals, the graph) read the hourly rollups
/// for the whole hours of usable days and `events` for the rest, by page, name,
/// goal and every time bucket, with page and goal filters, over ranges whose ends
/// are not on an hour.
#[tokio::test]
async fn per_row_panels_read_from_hourly_rollups_match_the_model() {
    let metrics = json!(["visitors", "pageviews", "events"]);
    // A range from one row to another, both in the middle of an hour of a day whose
    // hourly rows are read (`build_sessions` leaves every fifth, seventh and third
    // day out): the ends' hours must come from `events`, split at the row.
    let f = fixture().await;
    let read = |t: u32| {
        let day = t / 86_400;
        // Neither in a day's first or last hour: the hour's day is one the period's
        // whole hours reach.
        let of_day = t % 86_400;
        day % 5 != 2
            && day % 7 != 3
            && day % 3 != 1
            && !t.is_multiple_of(3600)
            && (3600..82_800).contains(&of_day)
    };
    let mut stamps: Vec<u32> = f
        .rows
        .iter()
        .filter(|r| &*r.site == SITES[0].0 && r.name != "engagement" && read(r.timestamp))
        .map(|r| r.timestamp)
        .collect();
    stamps.sort_unstable();
    let at = |t: u32| {
        jiff::Timestamp::from_second(i64::from(t))
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%S+00:00")
            .to_string()
    };
    let (from, to) = (stamps[stamps.len() / 5], stamps[stamps.len() * 4 / 5]);
    for range in [
        json!("all"),
        json!(["2024-03-09", "2024-03-20"]),
        json!([at(from), at(to)]),
    ] {
        check(json!({"metrics": metrics, "date_range": range})).await;
        check(json!({"metrics": ["visitors", "pageviews", "percentage"], "date_range": range, "dimensions": ["event:page"]})).await;
        check(json!({"metrics": metrics, "date_range": range, "dimensions": ["event:name"]})).await;
        check(json!({"metrics": ["visitors", "events", "conversion_rate"], "date_range": range, "dimensions": ["event:goal"]})).await;
        check(json!({"metrics": metrics, "date_range": range, "dimensions": ["time:day"], "filters": [["contains", "event:page", ["blog"]]]})).await;
        check(json!({"metrics": ["visitors", "conversion_rate"], "date_range": range, "filters": [["is", "event:goal", ["Signup", "Visit /blog/*"]]]})).await;
        check(json!({"metrics": ["visitors", "conversion_rate"], "date_range": range, "filters": [["is", "event:goal", ["Visit /blog/*"]], ["contains", "event:page", ["/blog/"]]]})).await;
        check(json!({"metrics": metrics, "date_range": range, "filters": [["is_not", "event:hostname", ["other.test"]]], "dimensions": ["event:page"]})).await;
    }
    for dim in [
        "time:day",
        "time:week",
        "time:month",
        "time:hour_of_day",
        "time:weekday",
    ] {
        check(json!({"metrics": metrics, "date_range": ["2024-03-08", "2024-04-01"], "dimensions": [dim]})).await;
        check(json!({"metrics": ["visitors", "pageviews"], "date_range": ["2024-03-08", "2024-04-01"], "dimensions": [dim, "event:page"]})).await;
    }
    // Both DST changes, by local hour.
    for day in ["2024-03-10", "2024-03-31"] {
        check(json!({"metrics": metrics, "date_range": [day, day], "dimensions": ["time:hour"]}))
            .await;
        check(json!({"metrics": ["visitors", "events"], "date_range": [day, day], "dimensions": ["time:hour", "event:goal"]})).await;
    }
}

/// Runs `body` (without site_id) for every site and compares each answer with the
/// model. Returns the answers.
async fn check(body: Value) -> Vec<Value> {
    let f = fixture().await;
    let now: Timestamp = "2024-04-02T12:00:00Z".parse().unwrap();
    let mut answers = Vec::new();
    for (domain, tz) in SITES {
        let mut body = body.clone();
        body["site_id"] = json!(domain);
        let query =
            Query::from_json(body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        let site = site_info(domain, tz);
        let answer = f
            .engine
            .run(&query, &site, now)
            .await
            .unwrap_or_else(|e| panic!("{body}: {e:?}"));
        let general = f
            .general
            .run(&query, &site, now)
            .await
            .unwrap_or_else(|e| panic!("{body}: {e:?}"));
        assert_eq!(answer, general, "{domain} {body}: the two plans disagree");
        let events_only = f
            .events_only
            .run(&query, &site, now)
            .await
            .unwrap_or_else(|e| panic!("{body}: {e:?}"));
        assert_eq!(
            answer, events_only,
            "{domain} {body}: the answer with `sessions` differs from the one without"
        );
        let range = answer["query"]["date_range"].as_array().unwrap();
        let start = range[0]
            .as_str()
            .unwrap()
            .parse::<Timestamp>()
            .unwrap()
            .as_second();
        let end = range[1]
            .as_str()
            .unwrap()
            .parse::<Timestamp>()
            .unwrap()
            .as_second()
            + 1;
        let model = Model::new(&f.rows, domain, tz, start, end);
        let metrics: Vec<&str> = body["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        let dims: Vec<&str> = body
            .get("dimensions")
            .and_then(Value::as_array)
            .map(|d| d.iter().map(|m| m.as_str().unwrap()).collect())
            .unwrap_or_default();
        let filters: Vec<Value> = body
            .get("filters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let expected = model.compute(&metrics, &dims, &filters);
        let mut got: BTreeMap<Vec<String>, Vec<Value>> = BTreeMap::new();
        for r in answer["results"].as_array().unwrap() {
            let k: Vec<String> = r["dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_owned())
                .collect();
            assert!(
                got.insert(k.clone(), r["metrics"].as_array().unwrap().clone())
                    .is_none(),
                "{domain} {body}: duplicate group {k:?}"
            );
        }
        let (exp_keys, got_keys): (BTreeSet<_>, BTreeSet<_>) =
            (expected.keys().collect(), got.keys().collect());
        assert_eq!(exp_keys, got_keys, "{domain} {body}: groups differ");
        for (k, exp) in &expected {
            for ((m, e), g) in metrics.iter().zip(exp).zip(&got[k]) {
                let g = metric_number(g);
                match (e, g) {
                    (None, None) => {}
                    (Some(e), Some(g)) => assert!(
                        (e - g).abs() <= tolerance(m),
                        "{domain} {body}: {k:?} {m}: expected {e}, got {g}"
                    ),
                    _ => panic!("{domain} {body}: {k:?} {m}: expected {e:?}, got {g:?}"),
                }
            }
        }
        assert!(
            !expected.is_empty() || dims.is_empty(),
            "{domain} {body}: the model found no rows; the query tests nothing"
        );
        answers.push(answer);
    }
    answers
}

#[tokio::test]
async fn aggregates_match_the_model() {
    check(json!({"metrics": ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration", "views_per_visit"], "date_range": "all"})).await;
    check(json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate"], "date_range": ["2024-03-09", "2024-03-11"]})).await;
}

#[tokio::test]
async fn time_buckets_across_dst_match_the_model() {
    // US spring forward (03-10) and EU (03-31), by local day and local hour.
    check(json!({"metrics": ["visitors", "visits", "pageviews", "visit_duration"], "date_range": ["2024-03-08", "2024-03-12"], "dimensions": ["time:day"]})).await;
    check(json!({"metrics": ["visitors", "visits", "pageviews"], "date_range": ["2024-03-31", "2024-03-31"], "dimensions": ["time:hour"]})).await;
    check(json!({"metrics": ["visitors", "visits", "pageviews"], "date_range": ["2024-03-10", "2024-03-10"], "dimensions": ["time:hour"]})).await;
}

#[tokio::test]
async fn every_time_bucket_matches_the_model() {
    // A range starting mid-week (2024-03-13 is a Wednesday), across the EU change.
    for dim in [
        "time:week",
        "time:month",
        "time:hour_of_day",
        "time:weekday",
    ] {
        check(json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate"], "date_range": ["2024-03-13", "2024-04-01"], "dimensions": [dim]})).await;
        check(json!({"metrics": ["visitors", "visits"], "date_range": ["2024-03-13", "2024-04-01"], "dimensions": [dim, "visit:source"]})).await;
    }
    check(json!({"metrics": ["visitors", "pageviews"], "date_range": ["2024-03-31T00:30:00+01:00", "2024-03-31T04:00:00+02:00"], "dimensions": ["time:minute"]})).await;
}

#[tokio::test]
async fn visit_dimensions_match_the_model() {
    for dim in [
        "visit:source",
        "visit:channel",
        "visit:referrer",
        "visit:utm_campaign",
        "visit:entry_page",
        "visit:exit_page",
        "visit:browser",
        "visit:os",
        "visit:device",
        "visit:country",
        "visit:country_name",
        "visit:city_name",
        "visit:region",
        "visit:region_name",
    ] {
        check(json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], "date_range": "all", "dimensions": [dim]})).await;
        // Visitors alone take the per-row plan, which groups the stored column and
        // labels the groups afterwards; ties order by the label.
        check(
            json!({"metrics": ["visitors", "pageviews"], "date_range": "all", "dimensions": [dim]}),
        )
        .await;
        let answers = check(json!({"metrics": ["visitors"], "date_range": "all", "dimensions": [dim], "order_by": [[dim, "desc"]]})).await;
        for answer in answers {
            let rows = answer["results"].as_array().unwrap();
            let labels: Vec<&str> = rows
                .iter()
                .map(|r| r["dimensions"][0].as_str().unwrap())
                .collect();
            let mut sorted = labels.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            assert_eq!(labels, sorted, "{dim}: ordered by its label, descending");
        }
    }
}

#[tokio::test]
async fn event_dimensions_match_the_model() {
    check(json!({"metrics": ["visitors", "pageviews", "events", "bounce_rate", "time_on_page", "scroll_depth", "percentage"], "date_range": "all", "dimensions": ["event:page"]})).await;
    check(json!({"metrics": ["visitors", "events", "visits"], "date_range": "all", "dimensions": ["event:name"]})).await;
    check(json!({"metrics": ["visitors", "events"], "date_range": "all", "dimensions": ["time:day", "event:props:plan"]})).await;
    check(json!({"metrics": ["visitors", "events", "conversion_rate", "total_revenue"], "date_range": "all", "dimensions": ["event:goal"]})).await;
}

/// Issue 11: by `event:page`, metrics that read no event value used to list only the
/// pages some visit entered on. Every page with a row is a group, whichever metrics
/// are asked for; a page never entered has no visits, so a bounce rate of 0.
#[tokio::test]
async fn pages_never_entered_are_listed_whatever_the_metrics() {
    let combos: &[&[&str]] = &[
        &["bounce_rate"],
        &["time_on_page"],
        &["scroll_depth"],
        &["bounce_rate", "time_on_page"],
        &["bounce_rate", "scroll_depth"],
        &["time_on_page", "scroll_depth"],
        &["bounce_rate", "time_on_page", "scroll_depth"],
        &["visits", "visit_duration", "views_per_visit"],
    ];
    for metrics in combos {
        let answers =
            check(json!({"metrics": metrics, "date_range": "all", "dimensions": ["event:page"]}))
                .await;
        for (answer, (domain, _)) in answers.iter().zip(SITES) {
            let row = answer["results"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["dimensions"] == json!([NEVER_ENTERED]))
                .unwrap_or_else(|| panic!("{domain} {metrics:?}: {NEVER_ENTERED} is missing"));
            if let Some(i) = metrics.iter().position(|m| *m == "bounce_rate") {
                assert_eq!(row["metrics"][i], json!(0), "{domain} {metrics:?}: {row}");
            }
        }
        // The same groups with a filter, which the general plan answers.
        check(json!({"metrics": metrics, "date_range": ["2024-03-09", "2024-03-20"], "dimensions": ["event:page"], "filters": [["is_not", "visit:channel", ["Direct"]]]})).await;
    }
    check(json!({"metrics": ["bounce_rate", "visit_duration"], "date_range": "all", "dimensions": ["event:page", "event:hostname"]})).await;
    check(json!({"metrics": ["time_on_page"], "date_range": "all", "dimensions": ["event:hostname"], "filters": [["contains", "event:page", ["/blog"]]]})).await;
}

/// The other per-row dimensions with visit values only: the groups are the rows'
/// (anonymous ones included), as with `visitors`, in both plans.
#[tokio::test]
async fn per_row_dimensions_with_visit_values_only_match_the_model() {
    for dim in [
        "event:hostname",
        "event:name",
        "event:goal",
        "event:props:plan",
    ] {
        check(json!({"metrics": ["visits"], "date_range": "all", "dimensions": [dim]})).await;
    }
    check(json!({"metrics": ["visits"], "date_range": "all", "dimensions": ["time:day", "event:props:plan"]})).await;
    for dim in ["time:hour", "time:day"] {
        check(json!({"metrics": ["visits", "bounce_rate"], "date_range": ["2024-03-09", "2024-03-12"], "dimensions": [dim]})).await;
        check(json!({"metrics": ["visits", "bounce_rate"], "date_range": ["2024-03-09", "2024-03-12"], "dimensions": [dim], "filters": [["contains", "event:page", ["/"]]]})).await;
    }
}

#[tokio::test]
async fn filters_match_the_model() {
    let filters = [
        json!([["is", "visit:source", ["Google", "Twitter"]]]),
        json!([["is_not", "visit:channel", ["Direct"]]]),
        json!([["contains", "event:page", ["BLOG"], {"case_sensitive": false}]]),
        json!([["contains_not", "event:page", ["blog"]]]),
        json!([["matches", "event:page", ["^/blog"]]]),
        json!([["matches_not", "visit:entry_page", ["y$"]]]),
        json!([["is", "visit:exit_page", ["/pricing"]]]),
        json!([["is", "visit:region_name", ["be land"], {"case_sensitive": false}]]),
        json!([["contains_not", "visit:region_name", ["CA"]]]),
        json!([["matches", "visit:region_name", ["^BE"]]]),
        json!([[
            "or",
            [
                ["is", "visit:device", ["Mobile"]],
                [
                    "and",
                    [
                        ["is", "visit:country", ["DE"]],
                        ["not", ["is", "visit:browser", ["Firefox"]]]
                    ]
                ]
            ]
        ]]),
        json!([["has_done", ["is", "event:name", ["Signup"]]]]),
        json!([["has_not_done", ["is", "event:page", ["/pricing"]]]]),
        json!([["is", "event:goal", ["Signup", "Visit /blog/*"]]]),
        json!([["is", "event:props:plan", ["pro"]]]),
    ];
    for f in filters {
        check(json!({"metrics": ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration"], "date_range": "all", "filters": f})).await;
        check(json!({"metrics": ["visitors", "pageviews"], "date_range": "all", "filters": f, "dimensions": ["visit:source"]})).await;
    }
    check(json!({"metrics": ["visitors", "conversion_rate"], "date_range": "all", "filters": [["is", "event:goal", ["Signup"]]], "dimensions": ["visit:channel"]})).await;
}

#[tokio::test]
async fn pages_are_ordered_and_cut_as_asked() {
    let body = json!({"metrics": ["visitors", "pageviews"], "date_range": "all", "dimensions": ["event:page"], "include": {"total_rows": true}});
    let full = check(body.clone()).await;
    for (answer, (domain, _)) in full.iter().zip(SITES) {
        let rows = answer["results"].as_array().unwrap();
        // Default order: visitors descending, then the dimension ascending.
        let mut sorted = rows.clone();
        sorted.sort_by(|a, b| {
            b["metrics"][0]
                .as_u64()
                .cmp(&a["metrics"][0].as_u64())
                .then(
                    a["dimensions"][0]
                        .as_str()
                        .cmp(&b["dimensions"][0].as_str()),
                )
        });
        assert_eq!(*rows, sorted, "{domain}: default order");
        assert_eq!(answer["meta"]["total_rows"], json!(rows.len()), "{domain}");
        let mut paged = body.clone();
        paged["site_id"] = json!(domain);
        paged["pagination"] = json!({"limit": 2, "offset": 3});
        let query = Query::from_json(paged.to_string().as_bytes()).unwrap();
        let f = fixture().await;
        let tz = SITES.iter().find(|(d, _)| d == domain).unwrap().1;
        let page = f
            .engine
            .run(
                &query,
                &site_info(domain, tz),
                "2024-04-02T12:00:00Z".parse().unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            page["results"].as_array().unwrap().as_slice(),
            &rows[3..5],
            "{domain}: page 2 of size 2 after 3"
        );
        assert_eq!(
            page["meta"]["total_rows"],
            json!(rows.len()),
            "{domain}: total_rows ignores the page"
        );
    }
    let asc = check(json!({"metrics": ["visitors"], "date_range": "all", "dimensions": ["visit:browser"], "order_by": [["visit:browser", "desc"]]})).await;
    for answer in asc {
        let names: Vec<&str> = answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["dimensions"][0].as_str().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(names, sorted);
    }
}

#[tokio::test]
async fn time_labels_fill_gaps_and_comparisons() {
    let answers = check(json!({"metrics": ["visitors", "pageviews"], "date_range": ["2024-03-01", "2024-03-10"], "dimensions": ["time:day"], "include": {"time_labels": true}})).await;
    for a in &answers {
        let labels = a["meta"]["time_labels"].as_array().unwrap();
        assert_eq!(labels.len(), 10);
        assert_eq!(labels[0], "2024-03-01");
        assert_eq!(labels[9], "2024-03-10");
    }
    // fill_gaps: data starts 03-07, so 03-01..03-06 are zero rows.
    let f = fixture().await;
    let body = json!({"site_id": "utc.test", "metrics": ["visitors"], "date_range": ["2024-03-01", "2024-03-10"], "dimensions": ["time:day"], "include": {"fill_gaps": true, "comparisons": {"mode": "previous_period"}}});
    let query = Query::from_json(body.to_string().as_bytes()).unwrap();
    let a = f
        .engine
        .run(
            &query,
            &site_info("utc.test", "UTC"),
            "2024-04-02T12:00:00Z".parse().unwrap(),
        )
        .await
        .unwrap();
    let results = a["results"].as_array().unwrap();
    assert_eq!(results.len(), 10);
    assert_eq!(results[0]["metrics"], json!([0]));
    assert_eq!(results[0]["dimensions"], json!(["2024-03-01"]));
    let model = Model::new(
        &f.rows,
        "utc.test",
        "UTC",
        "2024-03-09T00:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_second(),
        "2024-03-10T00:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_second(),
    );
    let day9 = model
        .compute(&["visitors"], &[], &[])
        .into_values()
        .next()
        .unwrap()[0]
        .unwrap();
    assert_eq!(results[8]["metrics"][0].as_f64().unwrap(), day9);
    // The previous period (02-20..02-29) has no data: every comparison is zero.
    assert!(
        results
            .iter()
            .all(|r| r["comparison"]["metrics"] == json!([0]))
    );
    assert_eq!(
        a["meta"]["comparison_date_range"][0],
        "2024-02-20T00:00:00+00:00"
    );
}
