//! ClickHouse SQL for a validated [`Query`]: one statement per period, every value
//! from the request a bound `{name:Type}` parameter.
//!
//! # What is counted, and from which rows
//!
//! All rows come from `events` for one site and the period's instants. A *visit* is
//! the rows sharing a `session_id`; anonymous rows (DNT/GPC, `session_id = 0`) belong
//! to no visit: they count in `pageviews` and `events`, never in `visitors` or
//! `visits`. Engagement rows (`name = 'engagement'`) feed `time_on_page` and
//! `scroll_depth` only.
//!
//! - **Visit attributes** (`visit:source`, `visit:channel`, `visit:referrer`,
//!   `visit:utm_*`, `visit:entry_page_hostname`) are those of the visit's first page
//!   view in the period (its first event if it has none), and `visit:exit_page` is its
//!   last page view; each row is joined to its visit's attributes, so a filter or
//!   dimension on them means "rows of visits that entered (or left) this way".
//!   `visit:entry_page` is stored on every row by the collector. Device, browser, OS
//!   and location are constant within a visitor (the visitor id hashes the User-Agent
//!   and the truncated address) and are read off each row.
//! - **Visit values** (`visits`, `bounce_rate`, `visit_duration`, `views_per_visit`)
//!   are computed per visit from its non-engagement rows in the period, and per time
//!   bucket when the query has a time dimension: a visit counts in every bucket (and
//!   every period) it was active in, with the rows it had there. A visit qualifies
//!   when at least one of those rows matches the filters. By `event:page` (or
//!   `event:hostname`) a visit is counted under its entry page, as Plausible's top
//!   pages panel does.
//! - **Event values** (`visitors`, `pageviews`, `events`, revenue) count the rows that
//!   match the filters.
//!
//! # Shape
//!
//! The statement is a `WITH` list of aggregates, each grouped by the same dimension
//! columns `d0..dn`, joined on them from the primary one, which holds the groups: the
//! values of the rows matching the filters (engagement rows when the query asks for
//! engagement values only; by exit page, the visits'), whichever metrics are asked
//! for, so a page that was never an entry page is listed with no visits (bounce rate
//! 0) rather than left out. Then come the metric expressions
//! `m0..mk` over their components, ordered (with the dimensions as tie-breakers, so
//! pages are stable) and paged. Which aggregates appear depends only on the metrics
//! and dimensions, never on a value.

use std::fmt::Write as _;

use crate::enrich::geo::RegionNames;
use crate::store::sessions::{VISIT_ATTRIBUTES as JOINED, VISITOR_COLUMNS};

use super::period::Period;
use super::request::{
    Dimension, Direction, EventDimension, Filter, Metric, Op, OrderKey, Query, QueryError,
    TimeDimension, VisitDimension,
};

/// A site's goal: a custom event name, or page views of paths matching a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    pub name: String,
    pub kind: GoalKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoalKind {
    /// Custom events with this name.
    Event(String),
    /// Page views whose path matches this anchored RE2 pattern.
    Page(String),
}

impl Goal {
    /// A page goal from a path pattern: `*` (or `**`) matches any characters, `/`
    /// included, as Plausible's page goals do; everything else literally.
    pub fn page(name: impl Into<String>, pattern: &str) -> Self {
        Self {
            name: name.into(),
            kind: GoalKind::Page(crate::config::page_pattern_regex(pattern)),
        }
    }

    pub fn event(name: impl Into<String>, event: impl Into<String>) -> Self {
        let event = event.into();
        Self {
            name: name.into(),
            kind: GoalKind::Event(event),
        }
    }
}

/// What the statement needs to know about the site beyond the query.
#[derive(Debug, Clone)]
pub struct Site<'a> {
    pub domain: &'a str,
    /// IANA time zone name.
    pub timezone: &'a str,
    pub goals: &'a [Goal],
    /// Region names for `visit:region_name` filters (empty: filter on the codes).
    pub regions: &'a RegionNames,
}

/// Most regions one `visit:region_name` filter may name, as a bound list of codes.
const MAX_REGION_CODES: usize = 5000;

/// A bound parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Str(String),
    Strs(Vec<String>),
    U32(u32),
    U64(u64),
    U64s(Vec<u64>),
}

/// The built days of `sessions` a statement may read (`query::sessions` checks them
/// against `events`): each UTC day with its recorded build, in day order; and those
/// of them whose build also wrote `hourly`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionDays {
    pub days: Vec<(jiff::civil::Date, u64)>,
    pub hourly: Vec<(jiff::civil::Date, u64)>,
}

/// A statement and its parameters, in the order they were bound.
#[derive(Debug, Clone)]
pub struct Sql {
    pub text: String,
    pub params: Vec<(String, Param)>,
    /// How many dimension columns (`d0..`) lead each result row; metrics follow.
    pub dimensions: usize,
    /// Whether a trailing `total_rows` column follows the metrics.
    pub total_rows: bool,
}

/// Countries' ISO codes and English names, for `visit:country_name` (bound as two
/// arrays when a query uses it).
pub type CountryNames<'a> = &'a [(&'a str, &'a str)];

struct Builder<'a> {
    query: &'a Query,
    site: &'a Site<'a>,
    period: &'a Period,
    countries: CountryNames<'a>,
    params: Vec<(String, Param)>,
    tz: String,
    goal_names: Option<String>,
    plan: Plan,
    sessions: Option<&'a SessionDays>,
}

/// The two sides of a visit plan that reads `sessions` (`Builder::stored_visits`):
/// the table's condition and the condition on the `events` rows grouped beside it.
struct StoredVisits {
    table: String,
    raw_rows: String,
}

/// Which hourly rollup a per-row query reads (`Builder::rollup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rollup {
    /// `hourly_totals`: no dimension but time, no filter.
    Totals,
    /// `hourly_pages`: by or filtered on page, hostname, event name or goal.
    Pages,
}

/// The per-row plan's split of the period between an hourly rollup and `events`:
/// the rollup's rows as `hits`-like columns (`timestamp` is the hour; `st` the
/// visitors' `uniq` state, `pv` and `ev` the page views and events), and the
/// condition on an `events` row whose hour is read from the rollup instead.
struct Rolled {
    rows: String,
    /// The same from `hourly_totals`, for totals over every row (`percentage`,
    /// `conversion_rate` without filters beside the goal's).
    totals: String,
    covered: String,
}

/// Whether `tz`'s offset is a whole number of hours at every instant of
/// [`start`, `end`): then every local time bucket is a union of whole UTC hours.
fn whole_hour_offsets(
    tz: &jiff::tz::TimeZone,
    start: jiff::Timestamp,
    end: jiff::Timestamp,
) -> bool {
    let whole = |o: jiff::tz::Offset| o.seconds() % 3600 == 0;
    if !whole(tz.to_offset(start)) {
        return false;
    }
    for t in tz.following(start) {
        if t.timestamp() >= end {
            break;
        }
        if !whole(t.offset()) {
            return false;
        }
    }
    true
}

/// The UTC date of the instant `secs` seconds after the epoch (`None` out of range).
fn utc_date(secs: i64) -> Option<jiff::civil::Date> {
    jiff::Timestamp::from_second(secs)
        .ok()
        .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date())
}

/// Which statement shape answers a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Plan {
    /// The one-pass visit statement when the query fits it, else the general one.
    #[default]
    Auto,
    /// Always the general statement (tests compare both shapes on the same data).
    General,
}

/// Builds the statement for `query` over `period`.
pub fn build(
    query: &Query,
    site: &Site<'_>,
    period: &Period,
    countries: CountryNames<'_>,
    plan: Plan,
    sessions: Option<&SessionDays>,
) -> Result<Sql, QueryError> {
    let mut b = Builder {
        query,
        site,
        period,
        countries,
        params: Vec::new(),
        tz: String::new(),
        goal_names: None,
        plan,
        sessions,
    };
    b.tz = b.bind(Param::Str(site.timezone.to_owned()), "String");
    b.statement()
}

/// Whether `query` is answered by the visit plan without a time dimension, the one
/// shape that reads `sessions` when days of the period are built.
pub fn may_read_sessions(query: &Query, site: &Site<'_>, period: &Period, plan: Plan) -> bool {
    let b = Builder {
        query,
        site,
        period,
        countries: &[],
        params: Vec::new(),
        tz: String::new(),
        goal_names: None,
        plan,
        sessions: None,
    };
    // Asked as if days were usable: whether the visit plan would then take the query.
    let day = (jiff::civil::Date::constant(1970, 1, 1), 0);
    let any = SessionDays {
        days: vec![day],
        hourly: vec![day],
    };
    let b = Builder {
        sessions: Some(&any),
        ..b
    };
    plan == Plan::Auto
        && ((query.time_dimension().is_none() && b.fits_visit_plan()) || b.rollup().is_some())
}

/// Where an aggregate's rows come from and how dimensions read there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// One row per event.
    Row,
    /// One row per visit (and bucket / event-dimension value).
    Visit,
}

/// The row's own value of a joined attribute, for anonymous rows (no visit).
fn joined_own(col: &str) -> &'static str {
    match col {
        "a_source" => "source",
        "a_referrer" => "if(referrer_host = '', '', concat(referrer_host, referrer_path))",
        "a_channel" => "channel",
        "a_utm_medium" => "utm_medium",
        "a_utm_source" => "utm_source",
        "a_utm_campaign" => "utm_campaign",
        "a_utm_content" => "utm_content",
        "a_utm_term" => "utm_term",
        "a_entry_hostname" | "a_exit_hostname" => "hostname",
        _ => "pathname",
    }
}

fn joined_column(d: VisitDimension) -> Option<&'static str> {
    use VisitDimension as V;
    Some(match d {
        V::Source => "a_source",
        V::Referrer => "a_referrer",
        V::Channel => "a_channel",
        V::UtmMedium => "a_utm_medium",
        V::UtmSource => "a_utm_source",
        V::UtmCampaign => "a_utm_campaign",
        V::UtmContent => "a_utm_content",
        V::UtmTerm => "a_utm_term",
        V::EntryPageHostname => "a_entry_hostname",
        V::ExitPage => "a_exit_page",
        V::ExitPageHostname => "a_exit_hostname",
        _ => return None,
    })
}

/// `(not set)` for an empty value, as Plausible labels it.
fn not_set(col: &str) -> String {
    format!("if({col} = '', '(not set)', {col})")
}

const COUNTRY: &str = "if(country = '\\0\\0', '', toString(country))";

/// Builds the label expression of a group key column.
type Label = fn(&str) -> String;

/// A dimension that groups by its stored column and is labelled once per group, in
/// the outer statement, rather than on every row: the key and the label of the key
/// column `d{i}`. Each label is one-to-one on its key (device folds its unknown
/// classes into one key first), so no two groups share a label.
fn stored_key(d: &Dimension) -> Option<(&'static str, Label)> {
    use VisitDimension as V;
    let Dimension::Visit(v) = d else {
        return None;
    };
    Some(match v {
        V::Country => ("country", |c| {
            format!("if({c} = '\\0\\0', '', toString({c}))")
        }),
        V::Browser => ("browser", not_set),
        V::BrowserVersion => ("browser_version", not_set),
        V::Os => ("os", not_set),
        V::OsVersion => ("os_version", not_set),
        V::Device => (
            "if(device IN ('desktop', 'mobile', 'tablet'), device, '')",
            |c| {
                format!(
                    "multiIf({c} = 'desktop', 'Desktop', {c} = 'mobile', 'Mobile', {c} = 'tablet', 'Tablet', '(not set)')"
                )
            },
        ),
        V::City => ("city_geoname_id", |c| {
            format!("if({c} = 0, '', toString({c}))")
        }),
        _ => return None,
    })
}

/// Whether `sql` names the column `col` (as a whole identifier).
fn mentions(sql: &str, col: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    sql.match_indices(col).any(|(at, _)| {
        let before = sql[..at].chars().next_back();
        let after = sql[at + col.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

fn contains_behavioral(f: &Filter) -> bool {
    match f {
        Filter::HasDone(_) | Filter::HasNotDone(_) => true,
        Filter::And(l) | Filter::Or(l) => l.iter().any(contains_behavioral),
        Filter::Not(inner) => contains_behavioral(inner),
        Filter::Simple { .. } => false,
    }
}

fn is_exit(d: &Dimension) -> bool {
    matches!(
        d,
        Dimension::Visit(VisitDimension::ExitPage | VisitDimension::ExitPageHostname)
    )
}

impl<'a> Builder<'a> {
    fn bind(&mut self, value: Param, ty: &str) -> String {
        let name = format!("p{}", self.params.len());
        self.params.push((name.clone(), value));
        format!("{{{name}:{ty}}}")
    }

    fn bind_str(&mut self, s: &str) -> String {
        self.bind(Param::Str(s.to_owned()), "String")
    }

    fn local_time(&self) -> String {
        format!("toTimeZone(timestamp, {})", self.tz)
    }

    fn goal_names(&mut self) -> String {
        if let Some(g) = &self.goal_names {
            return g.clone();
        }
        let names = self.site.goals.iter().map(|g| g.name.clone()).collect();
        let p = self.bind(Param::Strs(names), "Array(String)");
        self.goal_names = Some(p.clone());
        p
    }

    /// The condition under which a row completes goal `goal`.
    fn goal_condition(&mut self, goal: &Goal) -> String {
        match &goal.kind {
            GoalKind::Event(event) => {
                let p = self.bind_str(event);
                format!("(name = {p})")
            }
            GoalKind::Page(regex) => {
                let p = self.bind_str(regex);
                format!("(name = 'pageview' AND match(pathname, {p}))")
            }
        }
    }

    /// The display value of `dimension` in `ctx`.
    fn dimension(&mut self, dimension: &Dimension, ctx: Ctx) -> Result<String, QueryError> {
        use VisitDimension as V;
        let lt = self.local_time();
        Ok(match dimension {
            Dimension::Time(t) => match t {
                TimeDimension::Minute => format!("formatDateTime(toStartOfMinute({lt}), '%Y-%m-%d %H:%i:00')"),
                TimeDimension::Hour | TimeDimension::Auto => {
                    format!("formatDateTime(toStartOfHour({lt}), '%Y-%m-%d %H:00:00')")
                }
                TimeDimension::Day => format!("toString(toDate({lt}))"),
                TimeDimension::Week => {
                    let first = self.bind_str(&self.period.first_day.to_string());
                    format!("toString(greatest(toMonday({lt}), toDate({first})))")
                }
                TimeDimension::Month => format!("toString(toStartOfMonth({lt}))"),
                TimeDimension::HourOfDay => format!("toString(toHour({lt}))"),
                TimeDimension::Weekday => format!("toString(toDayOfWeek({lt}))"),
            },
            Dimension::Event(EventDimension::Page) if ctx == Ctx::Visit => "entry_page".into(),
            Dimension::Event(EventDimension::Hostname) if ctx == Ctx::Visit => {
                "a_entry_hostname".into()
            }
            Dimension::Event(EventDimension::Page) => "pathname".into(),
            Dimension::Event(EventDimension::Hostname) => "hostname".into(),
            Dimension::Event(EventDimension::Name) => "name".into(),
            Dimension::Event(EventDimension::Goal) => {
                let names = self.goal_names();
                format!("{names}[goal]")
            }
            Dimension::Prop(key) => {
                let k = self.bind_str(key);
                format!("if(mapContains(props, {k}), props[{k}], '(none)')")
            }
            Dimension::Visit(v) => match v {
                V::EntryPage => "entry_page".into(),
                V::Source => "if(a_source = '', 'Direct / None', a_source)".into(),
                V::Referrer => "if(a_referrer = '', 'Direct / None', a_referrer)".into(),
                V::Channel => "multiIf(a_channel = 'direct', 'Direct', a_channel = 'search', 'Organic Search', \
                     a_channel = 'social', 'Organic Social', a_channel = 'email', 'Email', \
                     a_channel = 'paid', 'Paid Search', a_channel = 'referral', 'Referral', \
                     a_channel = '', 'Direct', a_channel)"
                    .into(),
                V::UtmMedium => not_set("a_utm_medium"),
                V::UtmSource => not_set("a_utm_source"),
                V::UtmCampaign => not_set("a_utm_campaign"),
                V::UtmContent => not_set("a_utm_content"),
                V::UtmTerm => not_set("a_utm_term"),
                V::EntryPageHostname => "a_entry_hostname".into(),
                V::ExitPage => "a_exit_page".into(),
                V::ExitPageHostname => "a_exit_hostname".into(),
                V::Device => "multiIf(device = 'desktop', 'Desktop', device = 'mobile', 'Mobile', \
                     device = 'tablet', 'Tablet', '(not set)')"
                    .into(),
                V::Browser => not_set("browser"),
                V::BrowserVersion => not_set("browser_version"),
                V::Os => not_set("os"),
                V::OsVersion => not_set("os_version"),
                V::Country => COUNTRY.into(),
                V::Region | V::RegionName => {
                    format!("if(region = '', '', concat({COUNTRY}, '-', region))")
                }
                V::City => "if(city_geoname_id = 0, '', toString(city_geoname_id))".into(),
                V::CityName => "city".into(),
                V::CountryName => {
                    let codes = self.bind(
                        Param::Strs(self.countries.iter().map(|(c, _)| (*c).to_owned()).collect()),
                        "Array(String)",
                    );
                    let names = self.bind(
                        Param::Strs(self.countries.iter().map(|(_, n)| (*n).to_owned()).collect()),
                        "Array(String)",
                    );
                    format!("transform({COUNTRY}, {codes}, {names}, '')")
                }
            },
        })
    }

    /// The condition of a filter tree on one row (visit attributes joined).
    fn condition(&mut self, filter: &Filter) -> Result<String, QueryError> {
        Ok(match filter {
            Filter::And(list) => {
                let parts = list
                    .iter()
                    .map(|f| self.condition(f))
                    .collect::<Result<Vec<_>, _>>()?;
                format!("({})", parts.join(" AND "))
            }
            Filter::Or(list) => {
                let parts = list
                    .iter()
                    .map(|f| self.condition(f))
                    .collect::<Result<Vec<_>, _>>()?;
                format!("({})", parts.join(" OR "))
            }
            Filter::Not(inner) => format!("(NOT {})", self.condition(inner)?),
            Filter::HasDone(inner) => self.has_done(inner)?,
            Filter::HasNotDone(inner) => format!("(NOT {})", self.has_done(inner)?),
            Filter::Simple {
                op,
                dimension,
                clauses,
                case_sensitive,
            } => self.simple(*op, dimension, clauses, *case_sensitive)?,
        })
    }

    /// The row's visit has a row matching `inner` (an anonymous row: the row itself).
    fn has_done(&mut self, inner: &Filter) -> Result<String, QueryError> {
        let cond = self.condition(inner)?;
        Ok(format!(
            "(if(session_id = 0, {cond}, session_id IN (SELECT session_id FROM hits WHERE session_id != 0 AND name != 'engagement' AND {cond})))"
        ))
    }

    fn simple(
        &mut self,
        op: Op,
        dimension: &Dimension,
        clauses: &[String],
        case_sensitive: bool,
    ) -> Result<String, QueryError> {
        if *dimension == Dimension::Event(EventDimension::Goal) {
            return self.goal_filter(op, clauses, case_sensitive);
        }
        if *dimension == Dimension::Visit(VisitDimension::RegionName)
            && !self.site.regions.is_empty()
        {
            return self.region_name_filter(op, clauses, case_sensitive);
        }
        let expr = self.dimension(dimension, Ctx::Row)?;
        let subject = if case_sensitive {
            expr.clone()
        } else {
            format!("lowerUTF8({expr})")
        };
        let positive = match op {
            Op::Is | Op::IsNot => {
                let values = clauses
                    .iter()
                    .map(|c| fold_case(c, case_sensitive))
                    .collect();
                let p = self.bind(Param::Strs(values), "Array(String)");
                format!("has({p}, {subject})")
            }
            Op::Contains | Op::ContainsNot => {
                let parts: Vec<String> = clauses
                    .iter()
                    .map(|c| {
                        let p = self.bind_str(&fold_case(c, case_sensitive));
                        format!("position({subject}, {p}) > 0")
                    })
                    .collect();
                format!("({})", parts.join(" OR "))
            }
            Op::Matches | Op::MatchesNot => {
                let mut parts = Vec::with_capacity(clauses.len());
                for c in clauses {
                    check_regex(c)?;
                    let pattern = if case_sensitive {
                        c.clone()
                    } else {
                        format!("(?i){c}")
                    };
                    let p = self.bind_str(&pattern);
                    parts.push(format!("match({expr}, {p})"));
                }
                format!("({})", parts.join(" OR "))
            }
        };
        Ok(match op {
            Op::IsNot | Op::ContainsNot | Op::MatchesNot => format!("(NOT {positive})"),
            _ => positive,
        })
    }

    /// A `visit:region_name` filter: rows store region codes, so the names matching
    /// the filter are found here, in the geo database's table, and the statement
    /// tests the row's code against that bound list.
    fn region_name_filter(
        &mut self,
        op: Op,
        clauses: &[String],
        case_sensitive: bool,
    ) -> Result<String, QueryError> {
        let wanted: Vec<String> = clauses
            .iter()
            .map(|c| fold_case(c, case_sensitive))
            .collect();
        let mut patterns = Vec::new();
        if matches!(op, Op::Matches | Op::MatchesNot) {
            for c in clauses {
                check_regex(c)?;
                let re = regex::RegexBuilder::new(c)
                    .case_insensitive(!case_sensitive)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|_| {
                        QueryError(format!("Invalid regular expression \"{c}\": too large"))
                    })?;
                patterns.push(re);
            }
        }
        let mut codes: Vec<String> = self
            .site
            .regions
            .iter()
            .filter(|(_, name)| match op {
                Op::Is | Op::IsNot => wanted.contains(&fold_case(name, case_sensitive)),
                Op::Contains | Op::ContainsNot => {
                    let name = fold_case(name, case_sensitive);
                    wanted.iter().any(|w| name.contains(w.as_str()))
                }
                Op::Matches | Op::MatchesNot => patterns.iter().any(|re| re.is_match(name)),
            })
            .map(|(code, _)| code.to_owned())
            .collect();
        if codes.len() > MAX_REGION_CODES {
            return Err(QueryError(format!(
                "#/filters: the visit:region_name filter matches {} regions, more than {MAX_REGION_CODES}; narrow it",
                codes.len()
            )));
        }
        codes.sort_unstable();
        let expr = self.dimension(&Dimension::Visit(VisitDimension::Region), Ctx::Row)?;
        let list = self.bind(Param::Strs(codes), "Array(String)");
        Ok(match op {
            Op::IsNot | Op::ContainsNot | Op::MatchesNot => format!("(NOT has({list}, {expr}))"),
            _ => format!("has({list}, {expr})"),
        })
    }

    fn goal_filter(
        &mut self,
        op: Op,
        clauses: &[String],
        case_sensitive: bool,
    ) -> Result<String, QueryError> {
        let goals = self.site.goals;
        let mut chosen: Vec<&Goal> = Vec::new();
        for clause in clauses {
            let matching: Vec<&Goal> = goals
                .iter()
                .filter(|g| {
                    let name = fold_case(&g.name, case_sensitive);
                    let c = fold_case(clause, case_sensitive);
                    match op {
                        Op::Contains => name.contains(&c),
                        _ => name == c,
                    }
                })
                .collect();
            if matching.is_empty() && op == Op::Is {
                return Err(QueryError(format!(
                    "The goal `{clause}` is not configured for this site. Find out how to configure goals here: /api/v2/sites/{{site}}/goals"
                )));
            }
            for g in matching {
                if !chosen.contains(&g) {
                    chosen.push(g);
                }
            }
        }
        if chosen.is_empty() {
            return Ok("0".into());
        }
        let parts: Vec<String> = chosen.iter().map(|g| self.goal_condition(g)).collect();
        Ok(format!("({})", parts.join(" OR ")))
    }

    fn uses_joined(&self) -> bool {
        let mut joined = false;
        let mut check = |d: &Dimension| {
            if let Dimension::Visit(v) = d {
                joined |= joined_column(*v).is_some();
            }
        };
        for d in &self.query.dimensions {
            check(d);
        }
        for d in self.query.filter_dimensions() {
            check(d);
        }
        // Visits by event:hostname are counted under their entry host.
        joined |= self
            .query
            .dimensions
            .contains(&Dimension::Event(EventDimension::Hostname));
        joined
    }

    fn statement(&mut self) -> Result<Sql, QueryError> {
        let q = self.query;
        let site = self.bind_str(self.site.domain);
        let start = self.bind(
            Param::U32(u32::try_from(self.period.start.as_second().max(0)).unwrap_or(u32::MAX)),
            "UInt32",
        );
        let end = self.bind(
            Param::U32(u32::try_from(self.period.end.as_second().max(0)).unwrap_or(u32::MAX)),
            "UInt32",
        );
        let range = format!(
            "site = {site} AND timestamp >= toDateTime({start}, 'UTC') AND timestamp < toDateTime({end}, 'UTC')"
        );

        let rolled = self.rolled(&site, (&start, &end));
        if rolled.is_none() && self.plan == Plan::Auto && self.fits_visit_plan() {
            let with = self.visit_plan(&range, &site, (&start, &end))?;
            return self.finish(&with, "agg_s", "s_visitors", "s_pageviews", "s_events");
        }
        let mut with: Vec<String> = Vec::new();
        let joined = self.uses_joined();
        if joined {
            let cols: Vec<String> = JOINED
                .iter()
                .map(|(c, e)| format!("{e} AS j_{c}"))
                .collect();
            with.push(format!(
                "visit_attrs AS (SELECT session_id, {} FROM events WHERE {range} AND session_id != 0 AND name != 'engagement' GROUP BY session_id)",
                cols.join(", ")
            ));
            let own: Vec<String> = JOINED
                .iter()
                .map(|(c, _)| format!("if(session_id = 0, {}, j_{c}) AS {c}", joined_own(c)))
                .collect();
            with.push(format!(
                "hits AS (SELECT * EXCEPT ({names}), {own} FROM (SELECT * FROM events WHERE {range}) AS e LEFT JOIN visit_attrs USING (session_id))",
                names = JOINED.iter().map(|(c, _)| format!("j_{c}")).collect::<Vec<_>>().join(", "),
                own = own.join(", "),
            ));
        } else if let Some(r) = &rolled {
            with.push(format!(
                "hits AS (SELECT * FROM events WHERE {range} AND NOT ({}))",
                r.covered
            ));
            with.push(format!("roll AS ({})", r.rows));
            with.push(format!("roll_t AS ({})", r.totals));
        } else {
            with.push(format!("hits AS (SELECT * FROM events WHERE {range})"));
        }

        let has_goal_dim = q
            .dimensions
            .contains(&Dimension::Event(EventDimension::Goal));
        let source = if has_goal_dim {
            let mut conds = Vec::new();
            for goal in self.site.goals {
                conds.push(self.goal_condition(goal));
            }
            let list = if conds.is_empty() {
                "CAST([], 'Array(UInt32)')".to_owned()
            } else {
                let items: Vec<String> = conds
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("if({c}, {}, 0)", i + 1))
                    .collect();
                format!("arrayFilter(x -> x > 0, [{}])", items.join(", "))
            };
            with.push(format!(
                "goal_hits AS (SELECT *, arrayJoin({list}) AS goal FROM hits)"
            ));
            if rolled.is_some() {
                with.push(format!(
                    "goal_roll AS (SELECT *, arrayJoin({list}) AS goal FROM roll)"
                ));
            }
            "goal_hits"
        } else {
            "hits"
        };
        let roll_source = if has_goal_dim { "goal_roll" } else { "roll" };

        let filter = if q.filters.is_empty() {
            "1".to_owned()
        } else {
            self.condition(&Filter::And(q.filters.clone()))?
        };

        let exit_dims = q.dimensions.iter().any(is_exit);
        let metrics = &q.metrics;
        let wants = |m: Metric| metrics.contains(&m);
        let event_metric = |m: &Metric| {
            matches!(
                m,
                Metric::Visitors
                    | Metric::Pageviews
                    | Metric::Events
                    | Metric::TotalRevenue
                    | Metric::AverageRevenue
                    | Metric::Percentage
                    | Metric::ConversionRate
                    | Metric::GroupConversionRate
            )
        };
        let visit_metric = |m: &Metric| {
            matches!(
                m,
                Metric::Visits
                    | Metric::BounceRate
                    | Metric::VisitDuration
                    | Metric::ViewsPerVisit
                    | Metric::ExitRate
            )
        };
        let need_e = !exit_dims && metrics.iter().any(event_metric);
        let need_s =
            metrics.iter().any(visit_metric) || (exit_dims && metrics.iter().any(event_metric));
        let need_g = wants(Metric::TimeOnPage);
        let need_sd = wants(Metric::ScrollDepth);

        let n = q.dimensions.len();
        let dcols: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
        let group = if n == 0 {
            String::new()
        } else {
            format!(" GROUP BY {}", dcols.join(", "))
        };

        let mut row_dims = Vec::with_capacity(n);
        for d in &q.dimensions {
            row_dims.push(self.group_key(d, Ctx::Row)?);
        }
        let row_select = |extra: &str| -> String {
            let mut cols: Vec<String> = row_dims
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{e} AS d{i}"))
                .collect();
            if !extra.is_empty() {
                cols.push(extra.to_owned());
            }
            cols.join(", ")
        };

        // (name, columns it provides)
        let mut parts: Vec<&str> = Vec::new();
        // The groups are those of the rows the metrics read, whichever metrics they
        // are: the rows matching the filters (engagement rows when only engagement
        // values are asked for), or by exit page the visits. agg_e and agg_g group
        // exactly those; without them the primary side lists the groups on its own,
        // because agg_s groups visits by their entry page (a page never entered would
        // be missing) and has no anonymous rows, and agg_sd only rows with a depth.
        let reads_rows = metrics
            .iter()
            .any(|m| !matches!(m, Metric::TimeOnPage | Metric::ScrollDepth));
        let group_rows = if n == 0 || exit_dims {
            None
        } else if reads_rows {
            (!need_e).then_some("name != 'engagement'")
        } else {
            (!need_g).then_some("name = 'engagement'")
        };
        if let Some(rows) = group_rows {
            with.push(format!(
                "agg_k AS (SELECT {} FROM {source} WHERE {rows} AND {filter}{group})",
                row_select("")
            ));
            parts.push("agg_k");
        }
        if need_e {
            // Revenue columns are read only when a revenue metric is asked for.
            let revenue = if wants(Metric::TotalRevenue) || wants(Metric::AverageRevenue) {
                ", sumIf(revenue_micros, revenue_micros IS NOT NULL) AS e_rev_sum, \
                 countIf(revenue_micros IS NOT NULL) AS e_rev_count, \
                 uniqExactIf(revenue_currency, revenue_micros IS NOT NULL) AS e_rev_currencies, \
                 anyIf(revenue_currency, revenue_micros IS NOT NULL) AS e_rev_currency"
            } else {
                ""
            };
            if rolled.is_some() {
                // Both sides as states and counts, merged per group.
                with.push(format!(
                    "agg_e AS (SELECT {dims}{sep}uniqMerge(st) AS e_visitors, sum(pv) AS e_pageviews, \
                     sum(ev) AS e_events FROM (SELECT {raw} FROM {source} WHERE name != 'engagement' \
                     AND {filter}{group} UNION ALL SELECT {rolled} FROM {roll_source} WHERE {filter}){group})",
                    dims = dcols.join(", "),
                    sep = if n == 0 { "" } else { ", " },
                    raw = row_select(
                        "uniqStateIf(visitor_id, visitor_id != 0) AS st, countIf(name = 'pageview') AS pv, count() AS ev"
                    ),
                    rolled = row_select("st, pv, ev"),
                ));
            } else {
                with.push(format!(
                    "agg_e AS (SELECT {} FROM {source} WHERE name != 'engagement' AND {filter}{group})",
                    row_select(&format!(
                        "uniqIf(visitor_id, visitor_id != 0) AS e_visitors, \
                         countIf(name = 'pageview') AS e_pageviews, count() AS e_events{revenue}"
                    ))
                ));
            }
            parts.push("agg_e");
        }
        if need_s {
            let mut keys = vec!["session_id".to_owned()];
            let mut dim_cols = Vec::with_capacity(n);
            for (i, d) in q.dimensions.iter().enumerate() {
                let e = self.group_key(d, Ctx::Visit)?;
                let by_row = matches!(d, Dimension::Time(_))
                    || matches!(
                        d,
                        Dimension::Event(EventDimension::Name | EventDimension::Goal)
                            | Dimension::Prop(_)
                    );
                if by_row {
                    keys.push(e.clone());
                    dim_cols.push(format!("{e} AS d{i}"));
                } else if matches!(d, Dimension::Event(EventDimension::Page)) {
                    dim_cols.push(format!("any(entry_page) AS d{i}"));
                } else {
                    dim_cols.push(format!("any({e}) AS d{i}"));
                }
            }
            with.push(format!(
                "visit_rows AS (SELECT {dims}{sep}any(visitor_id) AS v_visitor, \
                 countIf(name = 'pageview') AS v_pageviews, count() AS v_events, \
                 countIf(name != 'pageview' AND interactive = 1) AS v_interactive, \
                 max(timestamp) - min(timestamp) AS v_duration \
                 FROM {source} WHERE session_id != 0 AND name != 'engagement' \
                 GROUP BY {keys} HAVING countIf({filter}) > 0)",
                dims = dim_cols.join(", "),
                sep = if dim_cols.is_empty() { "" } else { ", " },
                keys = keys.join(", "),
            ));
            let dsel: Vec<String> = dcols.to_vec();
            with.push(format!(
                "agg_s AS (SELECT {dims}{sep}count() AS s_visits, uniq(v_visitor) AS s_visitors, \
                 sum(v_pageviews) AS s_pageviews, sum(v_events) AS s_events, \
                 sum(v_pageviews) AS s_visit_pageviews, \
                 countIf(v_pageviews <= 1 AND v_interactive = 0) AS s_bounces, \
                 sum(v_duration) AS s_duration FROM visit_rows{group})",
                dims = dsel.join(", "),
                sep = if dsel.is_empty() { "" } else { ", " },
            ));
            parts.push("agg_s");
        }
        if need_g {
            with.push(format!(
                "agg_g AS (SELECT {} FROM {source} WHERE name = 'engagement' AND {filter}{group})",
                row_select(
                    "sumIf(engagement_ms, visitor_id != 0) AS g_ms, uniqIf(visitor_id, visitor_id != 0) AS g_visitors"
                )
            ));
            parts.push("agg_g");
        }
        if need_sd {
            let mut keys: Vec<String> = dcols.to_vec();
            keys.push("visitor_id".into());
            keys.push("sd_path".into());
            with.push(format!(
                "scrolls AS (SELECT {}, max(scroll_depth) AS sd_max FROM {source} \
                 WHERE name = 'engagement' AND scroll_depth <= 100 AND visitor_id != 0 AND {filter} \
                 GROUP BY {})",
                row_select("visitor_id, pathname AS sd_path"),
                keys.join(", ")
            ));
            let dsel = dcols.join(", ");
            with.push(format!(
                "agg_sd AS (SELECT {dsel}{sep}avg(sd_max) AS sd_avg, count() AS sd_n FROM scrolls{group})",
                sep = if n == 0 { "" } else { ", " },
            ));
            parts.push("agg_sd");
        }
        let needs_total = wants(Metric::Percentage) || wants(Metric::ConversionRate);
        if needs_total {
            // Total visitors of the query without its dimensions; for conversion rate,
            // also without its goal filters.
            let base_filter = self.without_goal_filters()?;
            let f = if wants(Metric::ConversionRate) {
                base_filter
            } else {
                filter.clone()
            };
            if rolled.is_some() {
                // Over every row, the hours' own states: each holds a visitor once,
                // where the per-page ones hold it once per page.
                let roll = if f == "1" { "roll_t" } else { "roll" };
                with.push(format!(
                    "agg_t AS (SELECT uniqMerge(st) AS t_visitors FROM (SELECT uniqStateIf(visitor_id, visitor_id != 0) AS st \
                     FROM hits WHERE name != 'engagement' AND {f} UNION ALL SELECT st FROM {roll} WHERE {f}))"
                ));
            } else {
                with.push(format!(
                    "agg_t AS (SELECT uniqIf(visitor_id, visitor_id != 0) AS t_visitors FROM hits WHERE name != 'engagement' AND {f})"
                ));
            }
        }
        let group_dims: Vec<usize> = q
            .dimensions
            .iter()
            .enumerate()
            .filter(|(_, d)| **d != Dimension::Event(EventDimension::Goal))
            .map(|(i, _)| i)
            .collect();
        if wants(Metric::GroupConversionRate) {
            let base_filter = self.without_goal_filters()?;
            let cols: Vec<String> = group_dims
                .iter()
                .map(|&i| format!("{} AS d{i}", row_dims[i]))
                .collect();
            let g = if group_dims.is_empty() {
                String::new()
            } else {
                format!(
                    " GROUP BY {}",
                    group_dims
                        .iter()
                        .map(|i| format!("d{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            with.push(format!(
                "agg_b AS (SELECT {cols}{sep}uniqIf(visitor_id, visitor_id != 0) AS b_visitors FROM hits WHERE name != 'engagement' AND {base_filter}{g})",
                cols = cols.join(", "),
                sep = if cols.is_empty() { "" } else { ", " },
            ));
        }
        if wants(Metric::ExitRate) {
            // Page views of each exit page's path, under the same filters.
            with.push(format!(
                "agg_x AS (SELECT pathname AS d0, countIf(name = 'pageview') AS x_pageviews FROM hits WHERE name != 'engagement' AND {filter} GROUP BY d0)"
            ));
        }

        // FROM the primary aggregate, LEFT JOIN the others on the dimensions.
        let Some(primary) = parts.first().copied() else {
            return Err(QueryError("#/metrics: nothing to compute".into()));
        };
        let mut from = primary.to_owned();
        for name in parts.iter().skip(1) {
            if n == 0 {
                let _ = write!(from, " CROSS JOIN {name}");
            } else {
                let _ = write!(from, " LEFT JOIN {name} USING ({})", dcols.join(", "));
            }
        }
        if needs_total {
            from.push_str(" CROSS JOIN agg_t");
        }
        if wants(Metric::GroupConversionRate) {
            if group_dims.is_empty() {
                from.push_str(" CROSS JOIN agg_b");
            } else {
                let _ = write!(
                    from,
                    " LEFT JOIN agg_b USING ({})",
                    group_dims
                        .iter()
                        .map(|i| format!("d{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        if wants(Metric::ExitRate) {
            from.push_str(" LEFT JOIN agg_x USING (d0)");
        }

        let visitors = if exit_dims || !need_e {
            "s_visitors"
        } else {
            "e_visitors"
        };
        let pageviews = if exit_dims {
            "s_pageviews"
        } else {
            "e_pageviews"
        };
        let events = if exit_dims { "s_events" } else { "e_events" };
        self.finish(&with, &from, visitors, pageviews, events)
    }

    /// The outer statement over the aggregates: metric expressions, order, page.
    fn finish(
        &mut self,
        with: &[String],
        from: &str,
        visitors: &str,
        pageviews: &str,
        events: &str,
    ) -> Result<Sql, QueryError> {
        let q = self.query;
        let metrics = &q.metrics;
        let n = q.dimensions.len();
        let mut select: Vec<String> = q
            .dimensions
            .iter()
            .enumerate()
            .map(|(i, d)| match stored_key(d) {
                Some((_, label)) => format!("{} AS l{i}", label(&format!("d{i}"))),
                None => format!("d{i}"),
            })
            .collect();
        for (i, m) in metrics.iter().enumerate() {
            let e = match m {
                Metric::Visitors => format!("toUInt64({visitors})"),
                Metric::Visits => "toUInt64(s_visits)".into(),
                Metric::Pageviews => format!("toUInt64({pageviews})"),
                Metric::Events => format!("toUInt64({events})"),
                Metric::ViewsPerVisit => {
                    "if(s_visits = 0, 0, round(s_visit_pageviews / s_visits, 2))".into()
                }
                Metric::BounceRate => {
                    "toInt64(if(s_visits = 0, 0, round(100 * s_bounces / s_visits)))".into()
                }
                Metric::VisitDuration => {
                    "toInt64(if(s_visits = 0, 0, round(s_duration / s_visits)))".into()
                }
                Metric::TimeOnPage => {
                    "toInt64(if(g_visitors = 0, 0, round(g_ms / 1000 / g_visitors)))".into()
                }
                Metric::ScrollDepth => "if(sd_n = 0, NULL, toInt64(round(sd_avg)))".into(),
                Metric::Percentage => {
                    format!("if(t_visitors = 0, 0, round(100 * {visitors} / t_visitors, 1))")
                }
                Metric::ConversionRate => {
                    format!("if(t_visitors = 0, 0, round(100 * {visitors} / t_visitors, 2))")
                }
                Metric::GroupConversionRate => {
                    format!("if(b_visitors = 0, 0, round(100 * {visitors} / b_visitors, 2))")
                }
                Metric::ExitRate => {
                    "if(x_pageviews = 0, NULL, round(100 * s_visits / x_pageviews, 1))".into()
                }
                Metric::TotalRevenue | Metric::AverageRevenue => {
                    // Sum and count travel as one tuple; the engine builds the object.
                    "tuple(toInt64(e_rev_sum), toUInt64(e_rev_count), toUInt64(e_rev_currencies), toString(e_rev_currency))".to_owned()
                }
            };
            select.push(format!("{e} AS m{i}"));
        }
        if q.include.total_rows {
            select.push("count() OVER () AS total_rows".into());
        }

        let mut order: Vec<String> = Vec::new();
        for (key, dir) in &q.order_by {
            let col = match key {
                OrderKey::Metric(m) => {
                    let i = metrics.iter().position(|x| x == m).unwrap_or(0);
                    if matches!(m, Metric::TotalRevenue | Metric::AverageRevenue) {
                        format!("m{i}.1")
                    } else {
                        format!("m{i}")
                    }
                }
                OrderKey::Dimension(d) => {
                    let i = q.dimensions.iter().position(|x| x == d).unwrap_or(0);
                    self.dimension_order(d, i)
                }
            };
            order.push(format!(
                "{col} {}",
                match dir {
                    Direction::Asc => "ASC",
                    Direction::Desc => "DESC",
                }
            ));
        }
        for (i, d) in q.dimensions.iter().enumerate() {
            let col = self.dimension_order(d, i);
            if !order.iter().any(|o| o.starts_with(&format!("{col} "))) {
                order.push(format!("{col} ASC"));
            }
        }
        let limit = self.bind(Param::U64(q.limit), "UInt64");
        let offset = self.bind(Param::U64(q.offset), "UInt64");
        let mut text = format!(
            "WITH {} SELECT {} FROM {from}",
            with.join(", "),
            select.join(", ")
        );
        if !order.is_empty() {
            let _ = write!(text, " ORDER BY {}", order.join(", "));
        }
        let _ = write!(text, " LIMIT {limit} OFFSET {offset}");
        Ok(Sql {
            text,
            params: std::mem::take(&mut self.params),
            dimensions: n,
            total_rows: q.include.total_rows,
        })
    }

    /// Whether the query's filters are row conditions (no `has_done`) on dimensions
    /// `fits` accepts only.
    fn filters_only_on(&self, fits: impl Fn(&Dimension) -> bool) -> bool {
        let mut all = true;
        for f in &self.query.filters {
            all &= !contains_behavioral(f);
            f.for_each_simple(&mut |s| {
                if let Filter::Simple { dimension, .. } = s {
                    all &= fits(dimension);
                }
            });
        }
        all
    }

    /// Whether one pass over the period's rows, grouped by visit, answers the query:
    /// only visit-level metrics, visit and time dimensions, visit filters.
    fn fits_visit_plan(&self) -> bool {
        let q = self.query;
        let metrics_fit = q.metrics.iter().all(|m| {
            matches!(
                m,
                Metric::Visitors
                    | Metric::Visits
                    | Metric::Pageviews
                    | Metric::Events
                    | Metric::BounceRate
                    | Metric::VisitDuration
                    | Metric::ViewsPerVisit
            )
        });
        let visit_or_time = |d: &Dimension| matches!(d, Dimension::Visit(_) | Dimension::Time(_));
        let filters_fit = self.filters_only_on(|d| matches!(d, Dimension::Visit(_)));
        // Visit attributes are the period's, not each bucket's: with a time dimension
        // they need the general plan's join.
        let attrs_per_period = q.time_dimension().is_none() || !self.uses_joined();
        // Without a visit value or a visit attribute, grouping by visit first only
        // costs: the general plan's single GROUP BY over the rows is the cheaper one.
        let needs_visits = q.metrics.iter().any(|m| {
            matches!(
                m,
                Metric::Visits | Metric::BounceRate | Metric::VisitDuration | Metric::ViewsPerVisit
            )
        }) || self.uses_joined();
        // With usable `sessions` days the visit plan reads one row per visit, cheaper
        // than the general plan's pass over every row even when no visit value is asked.
        if !needs_visits && self.sessions.is_none_or(|d| d.days.is_empty()) {
            return false;
        }
        metrics_fit && filters_fit && attrs_per_period && q.dimensions.iter().all(visit_or_time)
    }

    /// The visit plan: every row of the period grouped by visit (and time bucket), an
    /// anonymous row on its own; visit attributes and counts per group, then the
    /// dimensions over the groups that pass the filters.
    fn visit_plan(
        &mut self,
        range: &str,
        site: &str,
        bounds: (&str, &str),
    ) -> Result<Vec<String>, QueryError> {
        let q = self.query;
        let mut keys = vec![
            "session_id".to_owned(),
            "if(session_id = 0, rowNumberInAllBlocks(), 0)".to_owned(),
        ];
        if let Some(t) = q.time_dimension() {
            keys.push(self.dimension(&Dimension::Time(t), Ctx::Row)?);
        }
        let mut inner = vec![
            "session_id AS x_session_id".to_owned(),
            "any(visitor_id) AS x_visitor_id".to_owned(),
            "min(timestamp) AS x_timestamp".to_owned(),
            "countIf(name = 'pageview') AS v_pageviews".to_owned(),
            "count() AS v_events".to_owned(),
            "countIf(name != 'pageview' AND interactive = 1) AS v_interactive".to_owned(),
            "max(timestamp) - min(timestamp) AS v_duration".to_owned(),
        ];
        let mut outer = vec![
            "x_session_id AS session_id".to_owned(),
            "x_visitor_id AS visitor_id".to_owned(),
            "x_timestamp AS timestamp".to_owned(),
            "v_pageviews".to_owned(),
            "v_events".to_owned(),
            "v_interactive".to_owned(),
            "v_duration".to_owned(),
        ];
        let filter = if q.filters.is_empty() {
            "1".to_owned()
        } else {
            self.condition(&Filter::And(q.filters.clone()))?
        };
        let n = q.dimensions.len();
        let mut dims = Vec::with_capacity(n);
        for (i, d) in q.dimensions.iter().enumerate() {
            dims.push(format!("{} AS d{i}", self.group_key(d, Ctx::Row)?));
        }
        // Only the attributes the dimensions and filters read: each is an aggregate
        // over every row of the period.
        let used = format!("{} {filter}", dims.join(" "));
        for col in VISITOR_COLUMNS.iter().filter(|c| mentions(&used, c)) {
            inner.push(format!("any({col}) AS x_{col}"));
            outer.push(format!("x_{col} AS {col}"));
        }
        for (col, expr) in JOINED.iter().filter(|(c, _)| mentions(&used, c)) {
            inner.push(format!("{expr} AS {col}"));
            outer.push((*col).to_owned());
        }
        let group = if n == 0 {
            String::new()
        } else {
            format!(
                " GROUP BY {}",
                (0..n)
                    .map(|i| format!("d{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let stored = match self.sessions {
            Some(days) if q.time_dimension().is_none() => self.stored_visits(days, site, bounds),
            _ => None,
        };
        let (only_rows, from_table) = match &stored {
            Some(s) => (format!(" AND ({})", s.raw_rows), s.table.as_str()),
            None => (String::new(), ""),
        };
        let table_rows = if stored.is_some() {
            let mut cols = vec![
                "session_id",
                "visitor_id",
                "start AS timestamp",
                "pageviews AS v_pageviews",
                "events AS v_events",
                "interactive AS v_interactive",
                "end - start AS v_duration",
            ];
            cols.extend(VISITOR_COLUMNS.iter().filter(|c| mentions(&used, c)));
            cols.extend(
                JOINED
                    .iter()
                    .map(|(c, _)| *c)
                    .filter(|c| mentions(&used, c)),
            );
            format!(
                " UNION ALL SELECT {} FROM sessions WHERE {from_table}",
                cols.join(", ")
            )
        } else {
            String::new()
        };
        Ok(vec![
            format!(
                "visit_groups AS (SELECT {} FROM events WHERE {range} AND name != 'engagement'{only_rows} GROUP BY {})",
                inner.join(", "),
                keys.join(", ")
            ),
            format!(
                "visit_rows AS (SELECT {} FROM visit_groups{table_rows})",
                outer.join(", ")
            ),
            format!(
                "agg_s AS (SELECT {dims}{sep}countIf(session_id != 0) AS s_visits, \
                 uniqIf(visitor_id, session_id != 0) AS s_visitors, \
                 sum(v_pageviews) AS s_pageviews, sum(v_events) AS s_events, \
                 sumIf(v_pageviews, session_id != 0) AS s_visit_pageviews, \
                 countIf(session_id != 0 AND v_pageviews <= 1 AND v_interactive = 0) AS s_bounces, \
                 sumIf(v_duration, session_id != 0) AS s_duration \
                 FROM visit_rows WHERE {visits_only}{filter}{group})",
                // By exit page, anonymous rows (no visit, so no exit) count nowhere, as
                // in the general plan.
                visits_only = if q.dimensions.iter().any(is_exit) {
                    "session_id != 0 AND "
                } else {
                    ""
                },
                dims = dims.join(", "),
                sep = if n == 0 { "" } else { ", " },
            ),
        ])
    }

    /// The hourly rollup that answers the query beside `events`, if one does: only
    /// the rows' visitors, page views and events (and their shares), by page, name,
    /// goal or time bucket, filtered on page, hostname, name or goal; time buckets
    /// only where they are whole UTC hours.
    fn rollup(&self) -> Option<Rollup> {
        let q = self.query;
        if self.plan != Plan::Auto || self.sessions.is_none_or(|d| d.hourly.is_empty()) {
            return None;
        }
        let metrics_fit = q.metrics.iter().all(|m| {
            matches!(
                m,
                Metric::Visitors
                    | Metric::Pageviews
                    | Metric::Events
                    | Metric::Percentage
                    | Metric::ConversionRate
            )
        });
        let mut timed = false;
        let mut by_rows = false;
        for d in &q.dimensions {
            match d {
                Dimension::Time(TimeDimension::Minute) => return None,
                Dimension::Time(_) => timed = true,
                Dimension::Event(
                    EventDimension::Page | EventDimension::Name | EventDimension::Goal,
                ) => by_rows = true,
                _ => return None,
            }
        }
        let filters_fit = self.filters_only_on(|d| {
            matches!(
                d,
                Dimension::Event(
                    EventDimension::Page
                        | EventDimension::Hostname
                        | EventDimension::Name
                        | EventDimension::Goal
                )
            )
        });
        if !metrics_fit || !filters_fit {
            return None;
        }
        if timed {
            let tz = jiff::tz::TimeZone::get(self.site.timezone).ok()?;
            if !whole_hour_offsets(&tz, self.period.start, self.period.end) {
                return None;
            }
        }
        Some(if by_rows || !q.filters.is_empty() {
            Rollup::Pages
        } else {
            Rollup::Totals
        })
    }

    /// Splits the period for [`Self::rollup`]: the hours of usable days that lie
    /// wholly in [`start`, `end`) from the rollup, every other row from `events`.
    fn rolled(&mut self, site: &str, (start, end): (&str, &str)) -> Option<Rolled> {
        let kind = self.rollup()?;
        let days = self.sessions?;
        let hour = 3600;
        let (a, b) = (self.period.start.as_second(), self.period.end.as_second());
        // The first and last whole UTC hours of the period.
        let first_hour = a.div_euclid(hour) * hour + if a.rem_euclid(hour) == 0 { 0 } else { hour };
        let last_hour = b.div_euclid(hour) * hour - hour;
        let (first, last) = (utc_date(first_hour)?, utc_date(last_hour)?);
        let usable: Vec<&(jiff::civil::Date, u64)> = days
            .hourly
            .iter()
            .filter(|(d, _)| *d >= first && *d <= last)
            .collect();
        if last_hour < first_hour || usable.is_empty() {
            return None;
        }
        let dates = self.bind(
            Param::Strs(usable.iter().map(|(d, _)| d.to_string()).collect()),
            "Array(Date)",
        );
        let builds = self.bind(
            Param::U64s(usable.iter().map(|(_, b)| *b).collect()),
            "Array(UInt64)",
        );
        let lo = self.bind(Param::Str(first.to_string()), "Date");
        let hi = self.bind(Param::Str(last.to_string()), "Date");
        let from = format!("toDateTime({start}, 'UTC')");
        let to = format!("toDateTime({end}, 'UTC')");
        let hours = format!("hour >= {from} AND hour + 3600 <= {to}");
        let built = format!(
            "site = {site} AND day >= {lo} AND day <= {hi} AND build IN {builds} AND {hours}"
        );
        let totals = format!(
            "SELECT hour AS timestamp, visitors AS st, pageviews AS pv, events AS ev \
             FROM hourly_totals WHERE {built}"
        );
        let rows = match kind {
            Rollup::Totals => totals.clone(),
            Rollup::Pages => format!(
                "SELECT hour AS timestamp, name, hostname, pathname, visitors AS st, \
                 if(name = 'pageview', rows, 0) AS pv, rows AS ev FROM hourly_pages WHERE {built}"
            ),
        };
        let covered = format!(
            "has({dates}, toDate(timestamp)) AND toStartOfHour(timestamp) >= {from} \
             AND toStartOfHour(timestamp) + 3600 <= {to}"
        );
        Some(Rolled {
            rows,
            totals,
            covered,
        })
    }

    /// How the visit plan splits the period's visits between `sessions` and `events`
    /// (see `query::sessions` for why it is exact), or `None` when no built day helps.
    ///
    /// From `sessions`: the visits of a usable day that lie wholly in the period. From
    /// `events`, grouped per visit as without the table: every other visit with rows in
    /// the period, whose rows are those of
    /// - a day not usable, except the rows of visits of a usable day before it (a
    ///   visit reaches at most the day after its first, and those are in the table);
    /// - a usable day after one that is not, except the visits of that day itself
    ///   (the rest started the day before);
    /// - the table's visits that cross the period's start or end, on the days next to
    ///   them (a visit's rows lie on its first day and the next).
    fn stored_visits(
        &mut self,
        days: &SessionDays,
        site: &str,
        (start, end): (&str, &str),
    ) -> Option<StoredVisits> {
        use jiff::civil::Date;
        let secs = |t: jiff::Timestamp| t.as_second();
        let first = utc_date(secs(self.period.start))?;
        let last = utc_date(secs(self.period.end) - 1)?;
        if last < first {
            return None;
        }
        let usable = |d: Date| days.days.iter().any(|(day, _)| *day == d);
        let day_before = first.yesterday().ok()?;
        let in_period = |d: &Date| *d >= first && *d <= last;
        let mut period_days = Vec::new();
        let mut d = first;
        while d <= last {
            period_days.push(d);
            d = d.tomorrow().ok()?;
        }
        if !period_days.iter().any(|d| usable(*d)) {
            return None;
        }
        let builds: Vec<u64> = days
            .days
            .iter()
            .filter(|(d, _)| *d >= day_before && *d <= last)
            .map(|(_, b)| *b)
            .collect();
        let crossing: Vec<Date> = [
            Some(first),
            first.tomorrow().ok(),
            last.yesterday().ok(),
            Some(last),
        ]
        .into_iter()
        .flatten()
        .filter(in_period)
        .collect();
        let after_unusable: Vec<Date> = period_days
            .iter()
            .copied()
            .filter(|d| usable(*d) && d.yesterday().is_ok_and(|y| !usable(y)))
            .collect();
        let scan: Vec<Date> = period_days
            .iter()
            .copied()
            .filter(|d| !usable(*d) || crossing.contains(d) || after_unusable.contains(d))
            .collect();
        let dates = |v: &[Date]| Param::Strs(v.iter().map(Date::to_string).collect());
        let usable_days: Vec<Date> = days.days.iter().map(|(d, _)| *d).collect();
        let usable_p = self.bind(dates(&usable_days), "Array(Date)");
        let builds_p = self.bind(Param::U64s(builds), "Array(UInt64)");
        let crossing_p = self.bind(dates(&crossing), "Array(Date)");
        let after_p = self.bind(dates(&after_unusable), "Array(Date)");
        let scan_p = self.bind(dates(&scan), "Array(Date)");
        let lo = self.bind(Param::Str(day_before.to_string()), "Date");
        let hi = self.bind(Param::Str(last.to_string()), "Date");
        // Rows of recorded builds only: a build id is a random 64-bit number per day.
        let built =
            format!("site = {site} AND day >= {lo} AND day <= {hi} AND build IN {builds_p}");
        let from = format!("toDateTime({start}, 'UTC')");
        let to = format!("toDateTime({end}, 'UTC')");
        let table = format!("{built} AND start >= {from} AND end < {to}");
        let raw_rows = format!(
            "toDate(timestamp) IN {scan_p} AND (\
             (has({crossing_p}, toDate(timestamp)) AND session_id IN (SELECT session_id FROM sessions \
             WHERE {built} AND session_id != 0 AND start < {to} AND end >= {from} \
             AND NOT (start >= {from} AND end < {to}))) \
             OR (NOT has({usable_p}, toDate(timestamp)) AND (NOT has({usable_p}, toDate(timestamp) - 1) \
             OR session_id NOT IN (SELECT session_id FROM sessions WHERE {built} AND session_id != 0 \
             AND toDate(end) > day))) \
             OR (has({after_p}, toDate(timestamp)) AND session_id != 0 AND session_id NOT IN \
             (SELECT session_id FROM sessions WHERE {built} AND has({after_p}, day) AND session_id != 0)))"
        );
        Some(StoredVisits { table, raw_rows })
    }

    /// How a dimension column sorts: time buckets, hours and weekdays by their number.
    fn dimension_order(&self, d: &Dimension, i: usize) -> String {
        match d {
            Dimension::Time(TimeDimension::HourOfDay | TimeDimension::Weekday) => {
                format!("toUInt8OrZero(d{i})")
            }
            _ if stored_key(d).is_some() => format!("l{i}"),
            _ => format!("d{i}"),
        }
    }

    /// What a dimension groups by: its stored column where [`stored_key`] labels the
    /// groups afterwards, else its value.
    fn group_key(&mut self, d: &Dimension, ctx: Ctx) -> Result<String, QueryError> {
        match stored_key(d) {
            Some((key, _)) => Ok(key.to_owned()),
            None => self.dimension(d, ctx),
        }
    }

    /// The query's filters with every `event:goal` filter taken out (conversion
    /// rates divide by the visitors before the goal).
    fn without_goal_filters(&mut self) -> Result<String, QueryError> {
        let kept: Vec<Filter> = self
            .query
            .filters
            .iter()
            .filter(|f| {
                !matches!(
                    f,
                    Filter::Simple {
                        dimension: Dimension::Event(EventDimension::Goal),
                        ..
                    }
                )
            })
            .cloned()
            .collect();
        if kept.is_empty() {
            Ok("1".into())
        } else {
            self.condition(&Filter::And(kept))
        }
    }
}

/// A filter value as it is compared: as given when the filter is case-sensitive,
/// else lower-cased (the statement lower-cases the column with `lowerUTF8`).
fn fold_case(s: &str, case_sensitive: bool) -> String {
    if case_sensitive {
        s.to_owned()
    } else {
        s.to_lowercase()
    }
}

/// Refuses a pattern RE2 would not compile, so a bad `matches` is a 400 naming it
/// rather than an engine error.
fn check_regex(pattern: &str) -> Result<(), QueryError> {
    regex_syntax::Parser::new()
        .parse(pattern)
        .map(|_| ())
        .map_err(|e| {
            let first = e.to_string();
            let reason = first.lines().last().unwrap_or("invalid pattern").trim();
            QueryError(format!(
                "Invalid regular expression \"{pattern}\": {reason}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_patterns_anchor_and_escape() {
        let regex = |p: &str| crate::config::page_pattern_regex(p);
        assert_eq!(regex("/blog/*"), "^/blog/.*$");
        assert_eq!(regex("/docs/**"), "^/docs/.*$");
        assert_eq!(regex("/a.b?(c)"), "^/a\\.b\\?\\(c\\)$");
    }

    /// The statement `body` gets for a site in `tz` over March 2024, with every
    /// day's build usable and, with `hourly`, its hourly rows too.
    fn statement_for(body: serde_json::Value, tz: &str, hourly: bool) -> String {
        let mut body = body;
        body["site_id"] = "a.test".into();
        body["date_range"] = serde_json::json!(["2024-03-01", "2024-03-31"]);
        let query = Query::from_json(body.to_string().as_bytes()).unwrap();
        let zone = jiff::tz::TimeZone::get(tz).unwrap();
        let now: jiff::Timestamp = "2024-04-10T00:00:00Z".parse().unwrap();
        let period = super::super::period::resolve(query.date_range, now, &zone, None).unwrap();
        let regions = RegionNames::default();
        let goals = [Goal::event("Signup", "Signup")];
        let site = Site {
            domain: "a.test",
            timezone: tz,
            goals: &goals,
            regions: &regions,
        };
        let days: Vec<(jiff::civil::Date, u64)> = (1..=31)
            .map(|d| (jiff::civil::date(2024, 3, d), u64::from(d as u8)))
            .collect();
        let stored = SessionDays {
            hourly: if hourly { days.clone() } else { Vec::new() },
            days,
        };
        let text = build(&query, &site, &period, &[], Plan::Auto, Some(&stored))
            .unwrap()
            .text;
        // The engine reads the usable days whenever the statement may use them.
        assert!(!text.contains("hourly_") || may_read_sessions(&query, &site, &period, Plan::Auto));
        text
    }

    #[test]
    fn per_row_panels_read_the_rollup_that_fits_them() {
        use serde_json::json;
        let pages = json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"]});
        let graph = json!({"metrics": ["visitors"], "dimensions": ["time:day"]});
        let goals = json!({"metrics": ["visitors", "events", "conversion_rate"], "dimensions": ["event:goal"]});
        let berlin = "Europe/Berlin";
        assert!(statement_for(pages.clone(), berlin, true).contains("FROM hourly_pages"));
        let g = statement_for(goals, berlin, true);
        // The conversion rate's total over every row reads the hours' own states.
        assert!(
            g.contains("FROM hourly_pages") && g.contains("FROM roll_t"),
            "{g}"
        );
        let g = statement_for(graph.clone(), berlin, true);
        assert!(
            g.contains("FROM hourly_totals") && !g.contains("hourly_pages"),
            "{g}"
        );
        // Not without hourly rows, not for minutes, not where a local day starts
        // on a half hour (time buckets only), not with a visit value or filter.
        assert!(!statement_for(pages.clone(), berlin, false).contains("hourly_"));
        let minutes = json!({"metrics": ["visitors"], "dimensions": ["time:minute"]});
        assert!(!statement_for(minutes, berlin, true).contains("hourly_"));
        assert!(!statement_for(graph, "Asia/Kolkata", true).contains("hourly_"));
        assert!(statement_for(pages, "Asia/Kolkata", true).contains("hourly_pages"));
        let visits = json!({"metrics": ["visitors", "bounce_rate"], "dimensions": ["event:page"]});
        assert!(!statement_for(visits, berlin, true).contains("hourly_"));
        let by_source = json!({"metrics": ["visitors"], "dimensions": ["event:page"], "filters": [["is", "visit:source", ["Google"]]]});
        assert!(!statement_for(by_source, berlin, true).contains("hourly_"));
    }

    #[test]
    fn whole_hour_offsets_follow_the_zone_over_the_period() {
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let tz = |n: &str| jiff::tz::TimeZone::get(n).unwrap();
        let (a, b) = (at("2024-01-01T00:00:00Z"), at("2025-01-01T00:00:00Z"));
        assert!(whole_hour_offsets(&tz("Europe/Berlin"), a, b));
        assert!(whole_hour_offsets(&tz("America/New_York"), a, b));
        assert!(!whole_hour_offsets(&tz("Asia/Kolkata"), a, b));
        // Lord Howe is +10:30 in winter and +11 in summer: whole for part of the
        // year only, so the check must follow the transitions.
        assert!(!whole_hour_offsets(&tz("Australia/Lord_Howe"), a, b));
        assert!(whole_hour_offsets(&tz("UTC"), a, b));
    }

    #[test]
    fn bad_regex_is_refused_with_its_pattern() {
        let e = check_regex("(unclosed").unwrap_err();
        assert!(e.0.contains("(unclosed"), "{e}");
        assert!(check_regex("^/blog/.*$").is_ok());
    }
}
