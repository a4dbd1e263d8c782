//! The Stats API v2 request: parsed from JSON into a typed [`Query`], then checked
//! against the rules of which metric goes with which dimension or filter.
//!
//! Every name a request may use comes from a closed list in this file ([`Metric`],
//! [`VisitDimension`], [`TimeDimension`], [`Op`]), which is also what
//! [`schema`](super::schema) publishes, so the parser and the published schema cannot
//! drift apart. Custom property keys are free text, but only ever become bound query
//! parameters. Errors name the offending field by its JSON pointer, as Plausible's
//! do: `#/metrics/0: Invalid metric "x"`.
//!
//! Sizes are bounded here, before any SQL exists: at most [`MAX_FILTER_DEPTH`] levels
//! of `and`/`or`/`not`, [`MAX_CLAUSES`] clause values in all, [`MAX_VALUE_BYTES`] per
//! value, and a page of at most [`MAX_LIMIT`] rows.

use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::Value;

/// Deepest nesting of `and`, `or`, `not`, `has_done` and `has_not_done`.
pub const MAX_FILTER_DEPTH: usize = 8;
/// Most clause values over all filters of one query.
pub const MAX_CLAUSES: usize = 1_000;
/// Longest clause value, property key or regular expression, in bytes.
pub const MAX_VALUE_BYTES: usize = 2_048;
/// Most dimensions in one query.
pub const MAX_DIMENSIONS: usize = 8;
/// Largest page (`pagination.limit`), as Plausible's.
pub const MAX_LIMIT: u64 = 10_000;
/// Longest `Nd` / `Nmo` range, so a date range cannot ask for a millennium of buckets.
pub const MAX_RANGE_DAYS: u32 = 3_660;

/// A query request that could not be accepted: answered 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

impl QueryError {
    pub(crate) fn at(path: &str, message: impl std::fmt::Display) -> Self {
        Self(format!("{path}: {message}"))
    }
}

macro_rules! names {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($variant),+ }
        impl $name {
            /// Every value, in the order the schema lists them.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            /// The name requests and responses use.
            pub const fn name(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
            /// The value with this name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

names! {
    /// A value a query computes (Plausible's metric names).
    pub enum Metric {
        Visitors => "visitors",
        Visits => "visits",
        Pageviews => "pageviews",
        ViewsPerVisit => "views_per_visit",
        BounceRate => "bounce_rate",
        VisitDuration => "visit_duration",
        Events => "events",
        ScrollDepth => "scroll_depth",
        TimeOnPage => "time_on_page",
        Percentage => "percentage",
        ConversionRate => "conversion_rate",
        GroupConversionRate => "group_conversion_rate",
        ExitRate => "exit_rate",
        TotalRevenue => "total_revenue",
        AverageRevenue => "average_revenue",
    }
}

impl Metric {
    /// Metrics of a whole visit, which Plausible refuses beside most event dimensions.
    pub const fn is_session_only(self) -> bool {
        matches!(
            self,
            Self::BounceRate | Self::ViewsPerVisit | Self::VisitDuration
        )
    }
}

names! {
    /// Attributes of a visit, taken from its first page view (exit page: its last).
    pub enum VisitDimension {
        EntryPage => "visit:entry_page",
        EntryPageHostname => "visit:entry_page_hostname",
        ExitPage => "visit:exit_page",
        ExitPageHostname => "visit:exit_page_hostname",
        Source => "visit:source",
        Referrer => "visit:referrer",
        Channel => "visit:channel",
        UtmMedium => "visit:utm_medium",
        UtmSource => "visit:utm_source",
        UtmCampaign => "visit:utm_campaign",
        UtmContent => "visit:utm_content",
        UtmTerm => "visit:utm_term",
        Device => "visit:device",
        Browser => "visit:browser",
        BrowserVersion => "visit:browser_version",
        Os => "visit:os",
        OsVersion => "visit:os_version",
        Country => "visit:country",
        Region => "visit:region",
        City => "visit:city",
        CountryName => "visit:country_name",
        RegionName => "visit:region_name",
        CityName => "visit:city_name",
    }
}

names! {
    /// Attributes of one event.
    pub enum EventDimension {
        Goal => "event:goal",
        Page => "event:page",
        Hostname => "event:hostname",
        Name => "event:name",
    }
}

names! {
    /// Time buckets, in the site's time zone. `time` picks one from the date range;
    /// `time:minute`, `time:hour_of_day` and `time:weekday` are hush's own.
    pub enum TimeDimension {
        Auto => "time",
        Minute => "time:minute",
        Hour => "time:hour",
        Day => "time:day",
        Week => "time:week",
        Month => "time:month",
        HourOfDay => "time:hour_of_day",
        Weekday => "time:weekday",
    }
}

names! {
    /// Simple filter operators.
    pub enum Op {
        Is => "is",
        IsNot => "is_not",
        Contains => "contains",
        ContainsNot => "contains_not",
        Matches => "matches",
        MatchesNot => "matches_not",
    }
}

/// The prefix of custom property dimensions.
pub const PROP_PREFIX: &str = "event:props:";

/// What a query groups or filters by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dimension {
    Event(EventDimension),
    /// `event:props:<key>`; the key is only ever a bound parameter.
    Prop(String),
    Visit(VisitDimension),
    Time(TimeDimension),
}

impl Dimension {
    /// Parses a dimension name; `None` when it is not one.
    pub fn from_name(name: &str) -> Option<Self> {
        if let Some(key) = name.strip_prefix(PROP_PREFIX) {
            return (!key.is_empty() && key.len() <= MAX_VALUE_BYTES)
                .then(|| Self::Prop(key.to_owned()));
        }
        EventDimension::from_name(name)
            .map(Self::Event)
            .or_else(|| VisitDimension::from_name(name).map(Self::Visit))
            .or_else(|| TimeDimension::from_name(name).map(Self::Time))
    }

    /// The name requests and responses use.
    pub fn name(&self) -> String {
        match self {
            Self::Event(d) => d.name().to_owned(),
            Self::Prop(key) => format!("{PROP_PREFIX}{key}"),
            Self::Visit(d) => d.name().to_owned(),
            Self::Time(d) => d.name().to_owned(),
        }
    }

    /// An attribute of single events rather than of whole visits.
    pub fn is_event(&self) -> bool {
        matches!(self, Self::Event(_) | Self::Prop(_))
    }
}

/// A filter tree. The top-level list of a query is an implicit `and`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `[op, dimension, clauses, {case_sensitive}]`: matches when any clause does.
    Simple {
        op: Op,
        dimension: Dimension,
        clauses: Vec<String>,
        case_sensitive: bool,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    /// Visits in which some event matches the inner filter.
    HasDone(Box<Filter>),
    /// Visits in which no event matches the inner filter.
    HasNotDone(Box<Filter>),
}

impl Filter {
    /// Calls `f` on every simple filter in the tree.
    pub fn for_each_simple<'a>(&'a self, f: &mut impl FnMut(&'a Filter)) {
        match self {
            Self::Simple { .. } => f(self),
            Self::And(list) | Self::Or(list) => list.iter().for_each(|c| c.for_each_simple(f)),
            Self::Not(inner) | Self::HasDone(inner) | Self::HasNotDone(inner) => {
                inner.for_each_simple(f)
            }
        }
    }

    fn dimensions(&self) -> Vec<&Dimension> {
        let mut out = Vec::new();
        self.for_each_simple(&mut |f| {
            if let Self::Simple { dimension, .. } = f {
                out.push(dimension);
            }
        });
        out
    }
}

/// The period a query covers, before it is resolved in the site's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateRange {
    /// Today so far.
    Day,
    /// The last 24 hours up to now.
    Hours24,
    /// The last N days, today included (Plausible's `7d`, `30d`, ...).
    Days(u32),
    /// This month so far.
    Month,
    /// The last N calendar months, this month included.
    Months(u32),
    /// This year so far.
    Year,
    /// Since the first stored event of the site.
    All,
    /// Whole local days, both ends included.
    Dates(Date, Date),
    /// Two instants, both included.
    Instants(Timestamp, Timestamp),
}

/// The period to compare with (`include.comparisons`, beyond Plausible's public API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// The same length of time just before the range.
    PreviousPeriod,
    /// The same dates one year earlier.
    YearOverYear,
    /// Any date range.
    Custom(Date, Date),
}

/// `include`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Include {
    pub time_labels: bool,
    pub total_rows: bool,
    /// Accepted and answered as "no imports" (hush imports nothing).
    pub imports: bool,
    /// hush's own: empty time buckets appear in `results` with zero metrics.
    pub fill_gaps: bool,
    pub comparisons: Option<Comparison>,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

impl Direction {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// What an `order_by` entry sorts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderKey {
    Metric(Metric),
    Dimension(Dimension),
}

/// A parsed, validated Stats API v2 query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub site_id: String,
    pub metrics: Vec<Metric>,
    pub date_range: DateRange,
    pub dimensions: Vec<Dimension>,
    /// The implicit top-level `and`.
    pub filters: Vec<Filter>,
    /// As given, or the default (time dimension ascending, else first metric
    /// descending) when the request had none.
    pub order_by: Vec<(OrderKey, Direction)>,
    pub include: Include,
    pub limit: u64,
    pub offset: u64,
}

impl Query {
    /// Parses and validates a request body.
    pub fn from_json(body: &[u8]) -> Result<Self, QueryError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| QueryError(format!("#: invalid JSON: {e}")))?;
        let query = parse(&value)?;
        validate(&query)?;
        Ok(query)
    }

    /// The query's time dimension, if it has one.
    pub fn time_dimension(&self) -> Option<TimeDimension> {
        self.dimensions.iter().find_map(|d| match d {
            Dimension::Time(t) => Some(*t),
            _ => None,
        })
    }

    /// Every simple filter's dimension, at any depth.
    pub fn filter_dimensions(&self) -> Vec<&Dimension> {
        self.filters.iter().flat_map(Filter::dimensions).collect()
    }

    fn filters_on(&self, dimension: &Dimension) -> bool {
        self.filter_dimensions().contains(&dimension)
    }

    fn uses(&self, dimension: &Dimension) -> bool {
        self.dimensions.contains(dimension) || self.filters_on(dimension)
    }
}

const KEYS: &[&str] = &[
    "site_id",
    "metrics",
    "date_range",
    "dimensions",
    "filters",
    "order_by",
    "include",
    "pagination",
];

fn parse(value: &Value) -> Result<Query, QueryError> {
    let Value::Object(map) = value else {
        return Err(QueryError::at("#", "the query must be a JSON object"));
    };
    if let Some(key) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(QueryError::at(
            "#",
            format!("Schema does not allow additional properties: \"{key}\""),
        ));
    }
    for required in ["site_id", "metrics", "date_range"] {
        if !map.contains_key(required) {
            return Err(QueryError::at(
                "#",
                format!("Required property {required} was not present."),
            ));
        }
    }
    let site_id = match &map["site_id"] {
        Value::String(s) if !s.is_empty() && s.len() <= MAX_VALUE_BYTES => s.clone(),
        _ => return Err(QueryError::at("#/site_id", "expected a site domain")),
    };
    let metrics = parse_metrics(&map["metrics"])?;
    let date_range = parse_date_range(&map["date_range"], "#/date_range")?;
    let dimensions = match map.get("dimensions") {
        None => Vec::new(),
        Some(v) => parse_dimensions(v)?,
    };
    let mut budget = MAX_CLAUSES;
    let filters = match map.get("filters") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, f)| parse_filter(f, &format!("#/filters/{i}"), 1, &mut budget))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(QueryError::at("#/filters", "expected a list of filters")),
    };
    let order_by = match map.get("order_by") {
        None => None,
        Some(v) => Some(parse_order_by(v)?),
    };
    let include = match map.get("include") {
        None => Include::default(),
        Some(v) => parse_include(v)?,
    };
    let (limit, offset) = match map.get("pagination") {
        None => (MAX_LIMIT, 0),
        Some(v) => parse_pagination(v)?,
    };
    let mut query = Query {
        site_id,
        metrics,
        date_range,
        dimensions,
        filters,
        order_by: Vec::new(),
        include,
        limit,
        offset,
    };
    query.order_by = match order_by {
        Some(given) => given,
        None => default_order(&query),
    };
    Ok(query)
}

/// Plausible's default order: the time dimension ascending if there is one, then the
/// first metric descending.
fn default_order(query: &Query) -> Vec<(OrderKey, Direction)> {
    let mut order = Vec::new();
    if let Some(t) = query.time_dimension() {
        order.push((OrderKey::Dimension(Dimension::Time(t)), Direction::Asc));
    }
    if let Some(m) = query.metrics.first() {
        order.push((OrderKey::Metric(*m), Direction::Desc));
    }
    order
}

fn parse_metrics(value: &Value) -> Result<Vec<Metric>, QueryError> {
    let Value::Array(list) = value else {
        return Err(QueryError::at("#/metrics", "expected a list of metrics"));
    };
    if list.is_empty() {
        return Err(QueryError::at(
            "#/metrics",
            "Expected a minimum of 1 items, got 0",
        ));
    }
    let mut metrics = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let path = format!("#/metrics/{i}");
        let metric = item
            .as_str()
            .and_then(Metric::from_name)
            .ok_or_else(|| QueryError::at(&path, format!("Invalid metric {item}")))?;
        if metrics.contains(&metric) {
            return Err(QueryError::at(
                &path,
                format!("Metric \"{}\" is listed twice", metric.name()),
            ));
        }
        metrics.push(metric);
    }
    Ok(metrics)
}

fn parse_dimensions(value: &Value) -> Result<Vec<Dimension>, QueryError> {
    let Value::Array(list) = value else {
        return Err(QueryError::at(
            "#/dimensions",
            "expected a list of dimensions",
        ));
    };
    if list.len() > MAX_DIMENSIONS {
        return Err(QueryError::at(
            "#/dimensions",
            format!("at most {MAX_DIMENSIONS} dimensions"),
        ));
    }
    let mut dimensions: Vec<Dimension> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let path = format!("#/dimensions/{i}");
        let dimension = item
            .as_str()
            .and_then(Dimension::from_name)
            .ok_or_else(|| QueryError::at(&path, format!("Invalid dimension {item}")))?;
        if dimensions.contains(&dimension) {
            return Err(QueryError::at(
                &path,
                format!("Dimension \"{}\" is listed twice", dimension.name()),
            ));
        }
        dimensions.push(dimension);
    }
    Ok(dimensions)
}

fn parse_filter(
    value: &Value,
    path: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<Filter, QueryError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(QueryError::at(
            path,
            format!("filters nest deeper than {MAX_FILTER_DEPTH} levels"),
        ));
    }
    let Some(list) = value.as_array() else {
        return Err(QueryError::at(path, format!("Invalid filter {value}")));
    };
    let Some(op) = list.first().and_then(Value::as_str) else {
        return Err(QueryError::at(path, format!("Invalid filter {value}")));
    };
    match op {
        "and" | "or" => {
            let children = match list.as_slice() {
                [_, Value::Array(children)] if !children.is_empty() => children,
                _ => {
                    return Err(QueryError::at(
                        path,
                        format!("\"{op}\" takes a non-empty list of filters"),
                    ));
                }
            };
            let parsed = children
                .iter()
                .enumerate()
                .map(|(i, c)| parse_filter(c, &format!("{path}/1/{i}"), depth + 1, budget))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if op == "and" {
                Filter::And(parsed)
            } else {
                Filter::Or(parsed)
            })
        }
        "not" | "has_done" | "has_not_done" => {
            let [_, inner] = list.as_slice() else {
                return Err(QueryError::at(path, format!("\"{op}\" takes one filter")));
            };
            let inner = Box::new(parse_filter(
                inner,
                &format!("{path}/1"),
                depth + 1,
                budget,
            )?);
            Ok(match op {
                "not" => Filter::Not(inner),
                "has_done" => Filter::HasDone(inner),
                _ => Filter::HasNotDone(inner),
            })
        }
        _ => parse_simple_filter(list, path, budget),
    }
}

fn parse_simple_filter(
    list: &[Value],
    path: &str,
    budget: &mut usize,
) -> Result<Filter, QueryError> {
    let invalid = || {
        QueryError::at(
            path,
            format!("Invalid filter {}", Value::from(list.to_vec())),
        )
    };
    if !(3..=4).contains(&list.len()) {
        return Err(invalid());
    }
    let op = list[0]
        .as_str()
        .and_then(Op::from_name)
        .ok_or_else(invalid)?;
    let name = list[1]
        .as_str()
        .ok_or_else(|| QueryError::at(&format!("{path}/1"), "expected a dimension name"))?;
    let dimension = Dimension::from_name(name).ok_or_else(|| {
        QueryError::at(
            &format!("{path}/1"),
            format!("Invalid filter dimension \"{name}\""),
        )
    })?;
    let Value::Array(raw) = &list[2] else {
        return Err(QueryError::at(
            &format!("{path}/2"),
            "expected a list of values",
        ));
    };
    if raw.is_empty() {
        return Err(QueryError::at(
            &format!("{path}/2"),
            "expected at least one value",
        ));
    }
    if raw.len() > *budget {
        return Err(QueryError::at(
            &format!("{path}/2"),
            format!("more than {MAX_CLAUSES} filter values in one query"),
        ));
    }
    *budget -= raw.len();
    let mut clauses = Vec::with_capacity(raw.len());
    for (i, clause) in raw.iter().enumerate() {
        let text = match clause {
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => {
                return Err(QueryError::at(
                    &format!("{path}/2/{i}"),
                    "expected a string or an integer",
                ));
            }
        };
        if text.len() > MAX_VALUE_BYTES {
            return Err(QueryError::at(
                &format!("{path}/2/{i}"),
                format!("longer than {MAX_VALUE_BYTES} bytes"),
            ));
        }
        clauses.push(text);
    }
    let case_sensitive = match list.get(3) {
        None => true,
        Some(Value::Object(modifiers)) => {
            if let Some(key) = modifiers.keys().find(|k| *k != "case_sensitive") {
                return Err(QueryError::at(
                    &format!("{path}/3"),
                    format!("unknown filter modifier \"{key}\""),
                ));
            }
            match modifiers.get("case_sensitive") {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(QueryError::at(
                        &format!("{path}/3/case_sensitive"),
                        "expected true or false",
                    ));
                }
            }
        }
        Some(_) => {
            return Err(QueryError::at(
                &format!("{path}/3"),
                "expected an object of modifiers",
            ));
        }
    };
    Ok(Filter::Simple {
        op,
        dimension,
        clauses,
        case_sensitive,
    })
}

/// `Nd` or `Nmo` with 1 ≤ N and the span at most [`MAX_RANGE_DAYS`].
pub(crate) fn parse_relative(s: &str) -> Option<DateRange> {
    let (number, months) = if let Some(n) = s.strip_suffix("mo") {
        (n, true)
    } else if let Some(n) = s.strip_suffix('d') {
        (n, false)
    } else {
        return None;
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || number.starts_with('0') {
        return None;
    }
    let n: u32 = number.parse().ok()?;
    let days = if months { n.checked_mul(31)? } else { n };
    if days > MAX_RANGE_DAYS {
        return None;
    }
    Some(if months {
        DateRange::Months(n)
    } else {
        DateRange::Days(n)
    })
}

enum Bound {
    Date(Date),
    Instant(Timestamp),
}

fn parse_bound(value: &Value, path: &str) -> Result<Bound, QueryError> {
    let Some(s) = value.as_str() else {
        return Err(QueryError::at(
            path,
            "expected an ISO 8601 date or date-time",
        ));
    };
    if s.len() == 10 {
        return s
            .parse::<Date>()
            .map(Bound::Date)
            .map_err(|_| QueryError::at(path, format!("Invalid date \"{s}\"")));
    }
    s.parse::<Timestamp>().map(Bound::Instant).map_err(|_| {
        QueryError::at(
            path,
            format!("Invalid date-time \"{s}\" (it needs an offset)"),
        )
    })
}

pub(crate) fn parse_date_range(value: &Value, path: &str) -> Result<DateRange, QueryError> {
    match value {
        Value::String(s) => match s.as_str() {
            "day" => Ok(DateRange::Day),
            "24h" => Ok(DateRange::Hours24),
            "month" => Ok(DateRange::Month),
            "year" => Ok(DateRange::Year),
            "all" => Ok(DateRange::All),
            other => parse_relative(other)
                .ok_or_else(|| QueryError::at(path, format!("Invalid date_range \"{other}\""))),
        },
        Value::Array(pair) if pair.len() == 2 => {
            let start = parse_bound(&pair[0], &format!("{path}/0"))?;
            let end = parse_bound(&pair[1], &format!("{path}/1"))?;
            let range = match (start, end) {
                (Bound::Date(a), Bound::Date(b)) => {
                    if a > b {
                        return Err(QueryError::at(path, "the range ends before it starts"));
                    }
                    DateRange::Dates(a, b)
                }
                (Bound::Instant(a), Bound::Instant(b)) => {
                    if a > b {
                        return Err(QueryError::at(path, "the range ends before it starts"));
                    }
                    DateRange::Instants(a, b)
                }
                _ => {
                    return Err(QueryError::at(
                        path,
                        "both ends must be dates, or both date-times",
                    ));
                }
            };
            Ok(range)
        }
        other => Err(QueryError::at(path, format!("Invalid date_range {other}"))),
    }
}

fn parse_order_by(value: &Value) -> Result<Vec<(OrderKey, Direction)>, QueryError> {
    let Value::Array(list) = value else {
        return Err(QueryError::at(
            "#/order_by",
            "expected a list of [name, direction]",
        ));
    };
    let mut order = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let path = format!("#/order_by/{i}");
        let [Value::String(name), Value::String(dir)] =
            entry.as_array().map(Vec::as_slice).unwrap_or(&[])
        else {
            return Err(QueryError::at(
                &path,
                format!("Invalid order_by entry {entry}"),
            ));
        };
        let key = if let Some(m) = Metric::from_name(name) {
            OrderKey::Metric(m)
        } else if let Some(d) = Dimension::from_name(name) {
            OrderKey::Dimension(d)
        } else {
            return Err(QueryError::at(
                &path,
                format!("Invalid order_by entry {entry}"),
            ));
        };
        let direction = match dir.as_str() {
            "asc" => Direction::Asc,
            "desc" => Direction::Desc,
            _ => {
                return Err(QueryError::at(
                    &format!("{path}/1"),
                    format!("Invalid direction \"{dir}\""),
                ));
            }
        };
        order.push((key, direction));
    }
    Ok(order)
}

fn parse_include(value: &Value) -> Result<Include, QueryError> {
    let Value::Object(map) = value else {
        return Err(QueryError::at("#/include", "expected an object"));
    };
    let mut include = Include::default();
    for (key, v) in map {
        let path = format!("#/include/{key}");
        let flag = || {
            v.as_bool()
                .ok_or_else(|| QueryError::at(&path, "expected true or false"))
        };
        match key.as_str() {
            "time_labels" => include.time_labels = flag()?,
            "total_rows" => include.total_rows = flag()?,
            "imports" => include.imports = flag()?,
            "fill_gaps" => include.fill_gaps = flag()?,
            "comparisons" => include.comparisons = parse_comparison(v, &path)?,
            other => {
                return Err(QueryError::at(
                    "#/include",
                    format!("Schema does not allow additional properties: \"{other}\""),
                ));
            }
        }
    }
    Ok(include)
}

fn parse_comparison(value: &Value, path: &str) -> Result<Option<Comparison>, QueryError> {
    let map = match value {
        Value::Null => return Ok(None),
        Value::Object(map) => map,
        _ => return Err(QueryError::at(path, "expected {\"mode\": ...}")),
    };
    let mode = map.get("mode").and_then(Value::as_str).unwrap_or("");
    match mode {
        "previous_period" | "year_over_year" if map.len() == 1 => {
            Ok(Some(if mode == "previous_period" {
                Comparison::PreviousPeriod
            } else {
                Comparison::YearOverYear
            }))
        }
        "custom" => match map
            .get("date_range")
            .map(|v| parse_date_range(v, &format!("{path}/date_range")))
        {
            Some(Ok(DateRange::Dates(a, b))) if map.len() == 2 => {
                Ok(Some(Comparison::Custom(a, b)))
            }
            Some(Err(e)) => Err(e),
            _ => Err(QueryError::at(
                path,
                "a custom comparison takes \"date_range\": [first date, last date]",
            )),
        },
        _ => Err(QueryError::at(
            &format!("{path}/mode"),
            "expected \"previous_period\", \"year_over_year\" or \"custom\"",
        )),
    }
}

fn parse_pagination(value: &Value) -> Result<(u64, u64), QueryError> {
    let Value::Object(map) = value else {
        return Err(QueryError::at("#/pagination", "expected an object"));
    };
    let mut limit = MAX_LIMIT;
    let mut offset = 0;
    for (key, v) in map {
        let path = format!("#/pagination/{key}");
        let n = v
            .as_u64()
            .ok_or_else(|| QueryError::at(&path, "expected a non-negative integer"))?;
        match key.as_str() {
            "limit" => {
                if !(1..=MAX_LIMIT).contains(&n) {
                    return Err(QueryError::at(
                        &path,
                        format!("must be between 1 and {MAX_LIMIT}"),
                    ));
                }
                limit = n;
            }
            "offset" => {
                if n > u64::from(u32::MAX) {
                    return Err(QueryError::at(&path, "too large"));
                }
                offset = n;
            }
            other => {
                return Err(QueryError::at(
                    "#/pagination",
                    format!("Schema does not allow additional properties: \"{other}\""),
                ));
            }
        }
    }
    Ok((limit, offset))
}

/// The rules of which metric, dimension, filter and option go together (Plausible's,
/// plus hush's for its own options). A query that breaks one gets a 400 naming it,
/// never a silently wrong number.
pub fn validate(query: &Query) -> Result<(), QueryError> {
    let page = Dimension::Event(EventDimension::Page);
    let goal = Dimension::Event(EventDimension::Goal);
    let hostname = Dimension::Event(EventDimension::Hostname);

    let times = query
        .dimensions
        .iter()
        .filter(|d| matches!(d, Dimension::Time(_)))
        .count();
    if times > 1 {
        return Err(QueryError::at("#/dimensions", "at most one time dimension"));
    }
    for (i, filter) in query.filters.iter().enumerate() {
        validate_filter(filter, &format!("#/filters/{i}"), false)?;
    }
    for metric in &query.metrics {
        let name = metric.name();
        let err = |why: &str| Err(QueryError(format!("Metric `{name}` {why}")));
        match metric {
            Metric::ScrollDepth | Metric::TimeOnPage if !query.uses(&page) => {
                return err("can only be queried with event:page filters or dimensions.");
            }
            Metric::Percentage if query.dimensions.is_empty() => {
                return err("requires a non-empty list of dimensions.");
            }
            Metric::ConversionRate | Metric::GroupConversionRate if !query.uses(&goal) => {
                return err("can only be queried with event:goal filters or dimensions.");
            }
            Metric::ExitRate
                if !query
                    .dimensions
                    .contains(&Dimension::Visit(VisitDimension::ExitPage)) =>
            {
                return err("requires a `\"visit:exit_page\"` dimension.");
            }
            Metric::ViewsPerVisit if query.filters_on(&page) => {
                return err("cannot be queried with a filter on `event:page`.");
            }
            m if m.is_session_only() => {
                let event_dims: Vec<&Dimension> =
                    query.dimensions.iter().filter(|d| d.is_event()).collect();
                let allowed = event_dims
                    .iter()
                    .all(|d| **d == page || (**d == hostname && query.dimensions.contains(&page)));
                if !allowed {
                    return err("cannot be queried with event dimensions other than event:page.");
                }
            }
            _ => {}
        }
    }
    for (i, (key, _)) in query.order_by.iter().enumerate() {
        let listed = match key {
            OrderKey::Metric(m) => query.metrics.contains(m),
            OrderKey::Dimension(d) => query.dimensions.contains(d),
        };
        if !listed {
            let name = match key {
                OrderKey::Metric(m) => m.name().to_owned(),
                OrderKey::Dimension(d) => d.name(),
            };
            return Err(QueryError::at(
                &format!("#/order_by/{i}"),
                format!(
                    "Invalid order_by entry: \"{name}\" is not in the query's metrics or dimensions"
                ),
            ));
        }
    }
    if (query.include.time_labels || query.include.fill_gaps) && times == 0 {
        return Err(QueryError::at(
            "#/include",
            "time_labels and fill_gaps require a time dimension",
        ));
    }
    if query.include.comparisons.is_some() && matches!(query.date_range, DateRange::All) {
        return Err(QueryError::at(
            "#/include/comparisons",
            "a comparison needs a bounded date_range, not \"all\"",
        ));
    }
    Ok(())
}

fn validate_filter(filter: &Filter, path: &str, in_behavioral: bool) -> Result<(), QueryError> {
    match filter {
        Filter::Simple { op, dimension, .. } => {
            if let Dimension::Time(_) = dimension {
                return Err(QueryError::at(
                    path,
                    "time dimensions cannot be filtered on; set date_range instead",
                ));
            }
            if *dimension == Dimension::Event(EventDimension::Goal)
                && !matches!(op, Op::Is | Op::Contains)
            {
                return Err(QueryError::at(
                    path,
                    "event:goal filters take only the is and contains operators",
                ));
            }
            if in_behavioral && !dimension.is_event() {
                return Err(QueryError::at(
                    path,
                    "has_done and has_not_done take only event:* dimensions",
                ));
            }
            Ok(())
        }
        Filter::And(list) | Filter::Or(list) => list
            .iter()
            .enumerate()
            .try_for_each(|(i, c)| validate_filter(c, &format!("{path}/1/{i}"), in_behavioral)),
        Filter::Not(inner) => validate_filter(inner, &format!("{path}/1"), in_behavioral),
        Filter::HasDone(inner) | Filter::HasNotDone(inner) => {
            if in_behavioral {
                return Err(QueryError::at(
                    path,
                    "has_done and has_not_done cannot nest",
                ));
            }
            validate_filter(inner, &format!("{path}/1"), true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(json: &str) -> Query {
        Query::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn parse_err(json: &str) -> String {
        match Query::from_json(json.as_bytes()) {
            Ok(q) => panic!("{json} was accepted: {q:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn every_name_round_trips() {
        for m in Metric::ALL {
            assert_eq!(Metric::from_name(m.name()), Some(*m));
        }
        for d in VisitDimension::ALL {
            assert_eq!(Dimension::from_name(d.name()), Some(Dimension::Visit(*d)));
        }
        for d in EventDimension::ALL {
            assert_eq!(Dimension::from_name(d.name()), Some(Dimension::Event(*d)));
        }
        for d in TimeDimension::ALL {
            assert_eq!(Dimension::from_name(d.name()), Some(Dimension::Time(*d)));
        }
        assert_eq!(
            Dimension::from_name("event:props:plan").map(|d| d.name()),
            Some("event:props:plan".to_owned())
        );
        assert_eq!(Dimension::from_name("event:props:"), None);
        assert_eq!(Dimension::from_name("visit:screen_size"), None);
    }

    #[test]
    fn minimal_query_gets_defaults() {
        let q = parse_ok(r#"{"site_id":"a.com","metrics":["visitors"],"date_range":"7d"}"#);
        assert_eq!(q.date_range, DateRange::Days(7));
        assert_eq!(q.limit, MAX_LIMIT);
        assert_eq!(q.offset, 0);
        assert_eq!(
            q.order_by,
            vec![(OrderKey::Metric(Metric::Visitors), Direction::Desc)]
        );
    }

    #[test]
    fn time_dimension_orders_first_by_default() {
        let q = parse_ok(
            r#"{"site_id":"a.com","metrics":["visitors","pageviews"],"date_range":"month",
                "dimensions":["visit:source","time:day"]}"#,
        );
        assert_eq!(
            q.order_by,
            vec![
                (
                    OrderKey::Dimension(Dimension::Time(TimeDimension::Day)),
                    Direction::Asc
                ),
                (OrderKey::Metric(Metric::Visitors), Direction::Desc),
            ]
        );
    }

    #[test]
    fn full_query_parses() {
        let q = parse_ok(
            r#"{"site_id":"a.com","metrics":["visitors","conversion_rate"],
                "date_range":["2024-01-01","2024-01-31"],
                "dimensions":["event:goal","event:props:plan"],
                "filters":[["is","visit:country",["DE","FR"]],
                           ["or",[["contains","event:page",["/blog"],{"case_sensitive":false}],
                                  ["not",["matches","event:page",["^/x/\\d+$"]]]]],
                           ["has_done",["is","event:name",["Signup"]]]],
                "order_by":[["visitors","asc"]],
                "include":{"total_rows":true,"imports":true,"comparisons":{"mode":"previous_period"}},
                "pagination":{"limit":50,"offset":100}}"#,
        );
        assert_eq!(
            q.date_range,
            DateRange::Dates("2024-01-01".parse().unwrap(), "2024-01-31".parse().unwrap())
        );
        assert_eq!(q.filters.len(), 3);
        assert!(matches!(
            &q.filters[1],
            Filter::Or(list) if matches!(&list[0], Filter::Simple { case_sensitive: false, .. })
        ));
        assert_eq!(q.include.comparisons, Some(Comparison::PreviousPeriod));
        assert_eq!((q.limit, q.offset), (50, 100));
        assert_eq!(q.filter_dimensions().len(), 4);
    }

    #[test]
    fn date_ranges() {
        for (text, want) in [
            ("\"day\"", DateRange::Day),
            ("\"24h\"", DateRange::Hours24),
            ("\"28d\"", DateRange::Days(28)),
            ("\"91d\"", DateRange::Days(91)),
            ("\"6mo\"", DateRange::Months(6)),
            ("\"12mo\"", DateRange::Months(12)),
            ("\"year\"", DateRange::Year),
            ("\"all\"", DateRange::All),
        ] {
            let q = parse_ok(&format!(
                r#"{{"site_id":"a.com","metrics":["visits"],"date_range":{text}}}"#
            ));
            assert_eq!(q.date_range, want, "{text}");
        }
        let q = parse_ok(
            r#"{"site_id":"a.com","metrics":["visits"],
                "date_range":["2024-01-01T12:00:00+02:00","2024-01-01T15:59:59+02:00"]}"#,
        );
        assert_eq!(
            q.date_range,
            DateRange::Instants(
                "2024-01-01T10:00:00Z".parse().unwrap(),
                "2024-01-01T13:59:59Z".parse().unwrap()
            )
        );
        for bad in [
            "\"0d\"",
            "\"07d\"",
            "\"d\"",
            "\"-3d\"",
            "\"99999d\"",
            "\"500mo\"",
            "\"week\"",
            "[\"2024-02-01\",\"2024-01-01\"]",
            "[\"2024-01-01\",\"2024-01-02T00:00:00Z\"]",
            "[\"2024-01-01T00:00:00\",\"2024-01-02T00:00:00\"]",
            "[\"2024-13-01\",\"2024-12-01\"]",
            "[\"2024-01-01\"]",
            "7",
        ] {
            let err = parse_err(&format!(
                r#"{{"site_id":"a.com","metrics":["visits"],"date_range":{bad}}}"#
            ));
            assert!(err.starts_with("#/date_range"), "{bad}: {err}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"metrics":["visitors"],"date_range":"7d"}"#,
                "#: Required property site_id",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visitors","x"],"date_range":"7d"}"#,
                "#/metrics/1: Invalid metric \"x\"",
            ),
            (
                r#"{"site_id":"a.com","metrics":[],"date_range":"7d"}"#,
                "#/metrics:",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits","visits"],"date_range":"7d"}"#,
                "#/metrics/1:",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","dimensions":["visit:nope"]}"#,
                "#/dimensions/0: Invalid dimension",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","filters":[["is","visit:nope",["x"]]]}"#,
                "#/filters/0/1:",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","filters":[["like","event:page",["x"]]]}"#,
                "#/filters/0: Invalid filter",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","filters":[["is","event:page",[]]]}"#,
                "#/filters/0/2:",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","filters":[["is","event:page",[1.5]]]}"#,
                "#/filters/0/2/0:",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","filters":[["is","event:page",["/"],{"fuzzy":true}]]}"#,
                "#/filters/0/3:",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","filters":[["and",[]]]}"#,
                "#/filters/0:",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","order_by":[["visits","up"]]}"#,
                "#/order_by/0/1:",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","pagination":{"limit":10001}}"#,
                "#/pagination/limit:",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","pagination":{"limit":0}}"#,
                "#/pagination/limit:",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","include":{"everything":true}}"#,
                "#/include:",
            ),
            (
                r#"{"site_id":"a.com","metrics":["visits"],"date_range":"7d","sql":"1"}"#,
                "#: Schema does not allow additional properties",
            ),
            (r#"[1,2]"#, "#: the query must be a JSON object"),
            (r#"{"#, "#: invalid JSON"),
        ];
        for (json, want) in cases {
            let err = parse_err(json);
            assert!(err.starts_with(want), "{json}\n got: {err}\nwant: {want}");
        }
    }

    #[test]
    fn metric_rules() {
        let cases = [
            (
                r#""metrics":["scroll_depth"]"#,
                "Metric `scroll_depth` can only be queried with event:page",
            ),
            (
                r#""metrics":["time_on_page"],"dimensions":["visit:source"]"#,
                "Metric `time_on_page`",
            ),
            (
                r#""metrics":["percentage"]"#,
                "Metric `percentage` requires a non-empty list",
            ),
            (
                r#""metrics":["conversion_rate"],"dimensions":["visit:source"]"#,
                "Metric `conversion_rate` can only be queried with event:goal",
            ),
            (
                r#""metrics":["group_conversion_rate"]"#,
                "Metric `group_conversion_rate`",
            ),
            (
                r#""metrics":["exit_rate"],"dimensions":["event:page"]"#,
                "Metric `exit_rate` requires",
            ),
            (
                r#""metrics":["views_per_visit"],"filters":[["is","event:page",["/"]]]"#,
                "Metric `views_per_visit` cannot be queried with a filter",
            ),
            (
                r#""metrics":["bounce_rate"],"dimensions":["event:name"]"#,
                "Metric `bounce_rate` cannot be queried with event dimensions",
            ),
            (
                r#""metrics":["visit_duration"],"dimensions":["event:hostname"]"#,
                "Metric `visit_duration`",
            ),
            (
                r#""metrics":["visits"],"dimensions":["time:day","time:hour"]"#,
                "#/dimensions: at most one time dimension",
            ),
            (
                r#""metrics":["visits"],"order_by":[["pageviews","desc"]]"#,
                "#/order_by/0: Invalid order_by entry",
            ),
            (
                r#""metrics":["visits"],"include":{"time_labels":true}"#,
                "#/include: time_labels",
            ),
            (
                r#""metrics":["visits"],"filters":[["is","time:day",["2024-01-01"]]]"#,
                "#/filters/0: time dimensions",
            ),
            (
                r#""metrics":["visits"],"filters":[["is_not","event:goal",["Signup"]]]"#,
                "#/filters/0: event:goal",
            ),
            (
                r#""metrics":["visits"],"filters":[["has_done",["is","visit:country",["DE"]]]]"#,
                "#/filters/0/1: has_done",
            ),
            (
                r#""metrics":["visits"],"filters":[["has_done",["has_not_done",["is","event:page",["/"]]]]]"#,
                "#/filters/0/1: has_done and has_not_done cannot nest",
            ),
        ];
        for (body, want) in cases {
            let json = format!(r#"{{"site_id":"a.com","date_range":"7d",{body}}}"#);
            let err = parse_err(&json);
            assert!(err.starts_with(want), "{json}\n got: {err}\nwant: {want}");
        }
        // The allowed neighbours of those rules.
        for body in [
            r#""metrics":["scroll_depth","time_on_page"],"dimensions":["event:page"]"#,
            r#""metrics":["scroll_depth"],"filters":[["is","event:page",["/"]]]"#,
            r#""metrics":["conversion_rate"],"filters":[["is","event:goal",["Signup"]]]"#,
            r#""metrics":["bounce_rate","visit_duration"],"dimensions":["event:page","event:hostname"]"#,
            r#""metrics":["exit_rate"],"dimensions":["visit:exit_page"]"#,
            r#""metrics":["percentage"],"dimensions":["visit:browser"]"#,
            r#""metrics":["visits"],"dimensions":["time:week"],"include":{"time_labels":true,"fill_gaps":true}"#,
        ] {
            parse_ok(&format!(
                r#"{{"site_id":"a.com","date_range":"7d",{body}}}"#
            ));
        }
    }

    #[test]
    fn sizes_are_bounded() {
        let mut deep = r#"["is","event:page",["/"]]"#.to_owned();
        for _ in 0..MAX_FILTER_DEPTH {
            deep = format!(r#"["not",{deep}]"#);
        }
        let err = parse_err(&format!(
            r#"{{"site_id":"a.com","metrics":["visits"],"date_range":"7d","filters":[{deep}]}}"#
        ));
        assert!(err.contains("nest deeper"), "{err}");

        let many: Vec<String> = (0..=MAX_CLAUSES).map(|i| format!("\"/{i}\"")).collect();
        let err = parse_err(&format!(
            r#"{{"site_id":"a.com","metrics":["visits"],"date_range":"7d","filters":[["is","event:page",[{}]]]}}"#,
            many.join(",")
        ));
        assert!(err.contains("more than"), "{err}");
        // Spread over several filters, the budget is for the whole query.
        let half: Vec<String> = (0..=MAX_CLAUSES / 2).map(|i| format!("\"/{i}\"")).collect();
        let f = format!(r#"["is","event:page",[{}]]"#, half.join(","));
        let err = parse_err(&format!(
            r#"{{"site_id":"a.com","metrics":["visits"],"date_range":"7d","filters":[{f},{f}]}}"#
        ));
        assert!(err.contains("more than"), "{err}");

        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        let err = parse_err(&format!(
            r#"{{"site_id":"a.com","metrics":["visits"],"date_range":"7d","filters":[["is","event:page",["{long}"]]]}}"#
        ));
        assert!(err.starts_with("#/filters/0/2/0"), "{err}");
    }

    #[test]
    fn comparisons() {
        let q = parse_ok(
            r#"{"site_id":"a.com","metrics":["visits"],"date_range":"30d",
                "include":{"comparisons":{"mode":"custom","date_range":["2023-01-01","2023-01-30"]}}}"#,
        );
        assert_eq!(
            q.include.comparisons,
            Some(Comparison::Custom(
                "2023-01-01".parse().unwrap(),
                "2023-01-30".parse().unwrap()
            ))
        );
        for bad in [
            r#"{"mode":"previous_year"}"#,
            r#"{"mode":"custom"}"#,
            r#"{"mode":"custom","date_range":"7d"}"#,
            r#""previous_period""#,
        ] {
            let err = parse_err(&format!(
                r#"{{"site_id":"a.com","metrics":["visits"],"date_range":"30d","include":{{"comparisons":{bad}}}}}"#
            ));
            assert!(err.starts_with("#/include/comparisons"), "{bad}: {err}");
        }
        let err = parse_err(
            r#"{"site_id":"a.com","metrics":["visits"],"date_range":"all","include":{"comparisons":{"mode":"year_over_year"}}}"#,
        );
        assert!(err.starts_with("#/include/comparisons"), "{err}");
    }
}
