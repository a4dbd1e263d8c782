//! The legacy Stats API v1 (`/api/v1/stats/{aggregate,timeseries,breakdown}`): its
//! query-string parameters turned into the same [`Query`] the v2 API runs, so both
//! answer from one engine.
//!
//! Filters use v1's syntax: `;` joins conditions with AND, `==` and `!=` compare,
//! `|` lists alternatives (`\|` is a literal bar), and `*` in a value matches any run
//! of characters (the value then becomes an anchored regular expression, every other
//! character taken literally). Periods are relative to the `date` parameter (default:
//! today in the site's zone): `day`, `7d`/`30d`/any `Nd`, `month`, `6mo`/`12mo`/any
//! `Nmo`, and `custom` with `date=first,last`.

use jiff::ToSpan;
use jiff::civil::Date;

use super::request::{
    DateRange, Dimension, Direction, EventDimension, Filter, Include, MAX_CLAUSES, MAX_DIMENSIONS,
    MAX_VALUE_BYTES, Metric, Op, OrderKey, Query, QueryError, TimeDimension, validate,
};

/// Largest `limit` of a v1 breakdown, as Plausible's.
pub const MAX_BREAKDOWN_LIMIT: u64 = 1_000;
/// Default `limit` of a v1 breakdown.
pub const DEFAULT_BREAKDOWN_LIMIT: u64 = 100;

fn err(param: &str, message: impl std::fmt::Display) -> QueryError {
    QueryError(format!("{param}: {message}"))
}

/// Splits on unescaped `sep`, turning `\sep` into a literal `sep`.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&sep) {
            current.push(sep);
            chars.next();
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

/// `*` → `.*`, everything else escaped, anchored at both ends.
fn wildcard_regex(value: &str) -> String {
    let mut re = String::with_capacity(value.len() + 8);
    re.push('^');
    for c in value.chars() {
        match c {
            '*' => re.push_str(".*"),
            c if c.is_ascii_punctuation() => {
                re.push('\\');
                re.push(c);
            }
            c => re.push(c),
        }
    }
    re.push('$');
    re
}

/// Parses v1's `filters` parameter.
pub fn parse_filters(text: &str) -> Result<Vec<Filter>, QueryError> {
    let mut filters = Vec::new();
    let mut budget = MAX_CLAUSES;
    for condition in text.split(';').map(str::trim).filter(|c| !c.is_empty()) {
        let (name, negated, values) = if let Some((n, v)) = condition.split_once("!=") {
            (n, true, v)
        } else if let Some((n, v)) = condition.split_once("==") {
            (n, false, v)
        } else {
            return Err(err(
                "filters",
                format!("\"{condition}\" needs == or != between a property and its values"),
            ));
        };
        let name = name.trim();
        let dimension = Dimension::from_name(name)
            .filter(|d| !matches!(d, Dimension::Time(_)))
            .ok_or_else(|| err("filters", format!("Invalid filter property \"{name}\"")))?;
        let values = split_unescaped(values, '|');
        if values.len() > budget {
            return Err(err("filters", format!("more than {MAX_CLAUSES} values")));
        }
        budget -= values.len();
        if let Some(v) = values.iter().find(|v| v.len() > MAX_VALUE_BYTES) {
            return Err(err(
                "filters",
                format!(
                    "a value of {} bytes is longer than {MAX_VALUE_BYTES}",
                    v.len()
                ),
            ));
        }
        let wildcard = values.iter().any(|v| v.contains('*'));
        if dimension == Dimension::Event(EventDimension::Goal) && negated {
            return Err(err("filters", "!= is not supported for event:goal"));
        }
        let (op, clauses) = match (wildcard, negated) {
            (false, false) => (Op::Is, values),
            (false, true) => (Op::IsNot, values),
            (true, negated) => {
                if dimension == Dimension::Event(EventDimension::Goal) {
                    return Err(err("filters", "wildcards are not supported for event:goal"));
                }
                let op = if negated { Op::MatchesNot } else { Op::Matches };
                (op, values.iter().map(|v| wildcard_regex(v)).collect())
            }
        };
        filters.push(Filter::Simple {
            op,
            dimension,
            clauses,
            case_sensitive: true,
        });
    }
    Ok(filters)
}

/// v1's `period` and `date` as a date range of whole days. `today` is the site's
/// today; `period` defaults to `30d`.
pub fn parse_period(
    period: Option<&str>,
    date: Option<&str>,
    today: Date,
) -> Result<DateRange, QueryError> {
    let period = period.unwrap_or("30d");
    let one_date = |d: Option<&str>| -> Result<Date, QueryError> {
        match d {
            None => Ok(today),
            Some(s) => s
                .parse()
                .map_err(|_| err("date", format!("Invalid date \"{s}\" (YYYY-MM-DD)"))),
        }
    };
    let out_of_range = || err("period", "out of the calendar's range");
    match period {
        "custom" => {
            let Some((a, b)) = date.and_then(|d| d.split_once(',')) else {
                return Err(err(
                    "date",
                    "period=custom needs date=YYYY-MM-DD,YYYY-MM-DD",
                ));
            };
            let (first, last) = (one_date(Some(a.trim()))?, one_date(Some(b.trim()))?);
            if first > last {
                return Err(err("date", "the range ends before it starts"));
            }
            Ok(DateRange::Dates(first, last))
        }
        "day" => {
            let d = one_date(date)?;
            Ok(DateRange::Dates(d, d))
        }
        "month" => {
            let d = one_date(date)?;
            Ok(DateRange::Dates(d.first_of_month(), d.last_of_month()))
        }
        other => {
            let relative = super::request::parse_relative(other)
                .ok_or_else(|| err("period", format!("Invalid period \"{other}\"")))?;
            let d = one_date(date)?;
            match relative {
                DateRange::Days(n) => {
                    let first = d
                        .checked_sub((i64::from(n) - 1).days())
                        .map_err(|_| out_of_range())?;
                    Ok(DateRange::Dates(first, d))
                }
                DateRange::Months(n) => {
                    let back = i32::try_from(n).map_err(|_| out_of_range())? - 1;
                    let first = d
                        .first_of_month()
                        .checked_sub(back.months())
                        .map_err(|_| out_of_range())?;
                    Ok(DateRange::Dates(first, d.last_of_month()))
                }
                _ => Err(err("period", format!("Invalid period \"{other}\""))),
            }
        }
    }
}

/// v1's `metrics`: a comma list; `default` when absent.
pub fn parse_metrics(text: Option<&str>, default: Metric) -> Result<Vec<Metric>, QueryError> {
    let Some(text) = text else {
        return Ok(vec![default]);
    };
    let mut metrics = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let metric = Metric::from_name(name)
            .ok_or_else(|| err("metrics", format!("The metric `{name}` is not recognized")))?;
        if !metrics.contains(&metric) {
            metrics.push(metric);
        }
    }
    if metrics.is_empty() {
        return Err(err("metrics", "at least one metric"));
    }
    Ok(metrics)
}

/// What a v1 endpoint asks for, before it becomes a [`Query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Aggregate,
    Timeseries,
    Breakdown,
}

/// v1's query-string parameters, as given.
#[derive(Debug, Clone, Default)]
pub struct Params<'a> {
    pub site_id: Option<&'a str>,
    pub period: Option<&'a str>,
    pub date: Option<&'a str>,
    pub metrics: Option<&'a str>,
    pub filters: Option<&'a str>,
    pub property: Option<&'a str>,
    pub interval: Option<&'a str>,
    pub limit: Option<&'a str>,
    pub page: Option<&'a str>,
    pub compare: Option<&'a str>,
}

/// Builds the engine query for a v1 call. `today` is the site's today.
pub fn to_query(endpoint: Endpoint, p: &Params<'_>, today: Date) -> Result<Query, QueryError> {
    let site_id = p
        .site_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("site_id", "required"))?
        .to_owned();
    let date_range = parse_period(p.period, p.date, today)?;
    let metrics = parse_metrics(p.metrics, Metric::Visitors)?;
    let filters = match p.filters {
        None => Vec::new(),
        Some(f) => parse_filters(f)?,
    };
    let mut include = Include::default();
    match p.compare {
        None => {}
        Some("previous_period") => {
            include.comparisons = Some(super::request::Comparison::PreviousPeriod)
        }
        Some(other) => return Err(err("compare", format!("Invalid value \"{other}\""))),
    }
    let mut dimensions = Vec::new();
    let (mut limit, mut offset) = (super::request::MAX_LIMIT, 0);
    match endpoint {
        Endpoint::Aggregate => {}
        Endpoint::Timeseries => {
            // v1's default: by month for month-long periods (`6mo`, `12mo`), else by day.
            let monthly = p.period.is_some_and(|p| p.ends_with("mo"));
            let bucket = match p.interval.unwrap_or(if monthly { "month" } else { "date" }) {
                "date" | "day" => TimeDimension::Day,
                "month" => TimeDimension::Month,
                "week" => TimeDimension::Week,
                "hour" => TimeDimension::Hour,
                "minute" => TimeDimension::Minute,
                other => return Err(err("interval", format!("Invalid interval \"{other}\""))),
            };
            dimensions.push(Dimension::Time(bucket));
            include.fill_gaps = true;
            include.time_labels = true;
        }
        Endpoint::Breakdown => {
            let name = p.property.ok_or_else(|| err("property", "required"))?;
            let dimension = Dimension::from_name(name)
                .filter(|d| !matches!(d, Dimension::Time(_)))
                .ok_or_else(|| err("property", format!("Invalid property \"{name}\"")))?;
            dimensions.push(dimension);
            limit = match p.limit {
                None => DEFAULT_BREAKDOWN_LIMIT,
                Some(l) => l
                    .parse::<u64>()
                    .ok()
                    .filter(|l| (1..=MAX_BREAKDOWN_LIMIT).contains(l))
                    .ok_or_else(|| err("limit", format!("between 1 and {MAX_BREAKDOWN_LIMIT}")))?,
            };
            let page = match p.page {
                None => 1,
                Some(n) => n
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| err("page", "a page number from 1"))?,
            };
            offset = (page - 1) * limit;
        }
    }
    debug_assert!(dimensions.len() <= MAX_DIMENSIONS);
    let mut order_by = Vec::new();
    if let Some(Dimension::Time(t)) = dimensions.first() {
        order_by.push((OrderKey::Dimension(Dimension::Time(*t)), Direction::Asc));
    }
    order_by.push((OrderKey::Metric(metrics[0]), Direction::Desc));
    let query = Query {
        site_id,
        metrics,
        date_range,
        dimensions,
        filters,
        order_by,
        include,
        limit,
        offset,
    };
    validate(&query)?;
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    fn simple(op: Op, dim: &str, clauses: &[&str]) -> Filter {
        Filter::Simple {
            op,
            dimension: Dimension::from_name(dim).unwrap(),
            clauses: clauses.iter().map(|s| (*s).to_owned()).collect(),
            case_sensitive: true,
        }
    }

    #[test]
    fn filter_syntax() {
        assert_eq!(
            parse_filters("visit:country==DE|FR;event:page!=/pricing").unwrap(),
            vec![
                simple(Op::Is, "visit:country", &["DE", "FR"]),
                simple(Op::IsNot, "event:page", &["/pricing"]),
            ]
        );
        assert_eq!(
            parse_filters(r"visit:utm_campaign==campaign\|one").unwrap(),
            vec![simple(Op::Is, "visit:utm_campaign", &["campaign|one"])]
        );
        assert_eq!(
            parse_filters("event:page==/blog/*;event:props:plan==pro").unwrap(),
            vec![
                simple(Op::Matches, "event:page", &[r"^\/blog\/.*$"]),
                simple(Op::Is, "event:props:plan", &["pro"]),
            ]
        );
        assert_eq!(
            parse_filters("event:hostname!=*.example.com").unwrap(),
            vec![simple(
                Op::MatchesNot,
                "event:hostname",
                &[r"^.*\.example\.com$"]
            )]
        );
        for bad in [
            "visit:country=DE",
            "visit:nope==x",
            "time:day==2024-01-01",
            "event:goal!=Signup",
            "event:goal==Sign*",
        ] {
            assert!(parse_filters(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_regex_takes_everything_else_literally() {
        assert_eq!(wildcard_regex("/a.b(c)*"), r"^\/a\.b\(c\).*$");
        assert_eq!(wildcard_regex("/ü"), "^\\/ü$");
    }

    #[test]
    fn periods_are_relative_to_date() {
        let today = d("2024-09-10");
        let range = |p: Option<&str>, date: Option<&str>| parse_period(p, date, today).unwrap();
        assert_eq!(
            range(None, None),
            DateRange::Dates(d("2024-08-12"), d("2024-09-10"))
        );
        assert_eq!(
            range(Some("7d"), Some("2024-01-03")),
            DateRange::Dates(d("2023-12-28"), d("2024-01-03"))
        );
        assert_eq!(
            range(Some("day"), Some("2024-02-29")),
            DateRange::Dates(d("2024-02-29"), d("2024-02-29"))
        );
        assert_eq!(
            range(Some("month"), Some("2024-02-10")),
            DateRange::Dates(d("2024-02-01"), d("2024-02-29"))
        );
        assert_eq!(
            range(Some("6mo"), None),
            DateRange::Dates(d("2024-04-01"), d("2024-09-30"))
        );
        assert_eq!(
            range(Some("custom"), Some("2021-01-01,2021-01-31")),
            DateRange::Dates(d("2021-01-01"), d("2021-01-31"))
        );
        for (p, date) in [
            (Some("custom"), None),
            (Some("custom"), Some("2021-02-01,2021-01-01")),
            (Some("week"), None),
            (Some("7d"), Some("yesterday")),
            (Some("all"), None),
        ] {
            assert!(parse_period(p, date, today).is_err(), "{p:?} {date:?}");
        }
    }

    #[test]
    fn endpoints_become_queries() {
        let today = d("2024-09-10");
        let q = to_query(
            Endpoint::Breakdown,
            &Params {
                site_id: Some("a.com"),
                property: Some("visit:source"),
                metrics: Some("visitors,bounce_rate"),
                limit: Some("5"),
                page: Some("3"),
                ..Params::default()
            },
            today,
        )
        .unwrap();
        assert_eq!(
            q.dimensions,
            vec![Dimension::Visit(
                super::super::request::VisitDimension::Source
            )]
        );
        assert_eq!((q.limit, q.offset), (5, 10));
        let q = to_query(
            Endpoint::Timeseries,
            &Params {
                site_id: Some("a.com"),
                period: Some("day"),
                ..Params::default()
            },
            today,
        )
        .unwrap();
        assert_eq!(q.dimensions, vec![Dimension::Time(TimeDimension::Day)]);
        assert!(q.include.fill_gaps);
        let q = to_query(
            Endpoint::Timeseries,
            &Params {
                site_id: Some("a.com"),
                period: Some("12mo"),
                ..Params::default()
            },
            today,
        )
        .unwrap();
        assert_eq!(q.dimensions, vec![Dimension::Time(TimeDimension::Month)]);
        let q = to_query(
            Endpoint::Aggregate,
            &Params {
                site_id: Some("a.com"),
                compare: Some("previous_period"),
                ..Params::default()
            },
            today,
        )
        .unwrap();
        assert!(q.include.comparisons.is_some());
        assert_eq!(q.metrics, vec![Metric::Visitors]);
        // The v2 rules hold for v1 too.
        let e = to_query(
            Endpoint::Aggregate,
            &Params {
                site_id: Some("a.com"),
                metrics: Some("time_on_page"),
                ..Params::default()
            },
            today,
        )
        .unwrap_err();
        assert!(e.0.contains("time_on_page"), "{e}");
        for p in [
            Params {
                property: Some("visit:source"),
                ..Params::default()
            },
            Params {
                site_id: Some("a.com"),
                ..Params::default()
            },
            Params {
                site_id: Some("a.com"),
                property: Some("visit:source"),
                limit: Some("1001"),
                ..Params::default()
            },
            Params {
                site_id: Some("a.com"),
                property: Some("visit:source"),
                page: Some("0"),
                ..Params::default()
            },
            Params {
                site_id: Some("a.com"),
                property: Some("time:day"),
                ..Params::default()
            },
        ] {
            assert!(to_query(Endpoint::Breakdown, &p, today).is_err(), "{p:?}");
        }
    }
}
