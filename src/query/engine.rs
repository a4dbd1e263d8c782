//! Runs a validated [`Query`] on ClickHouse and shapes Plausible's v2 response.
//!
//! One statement per period ([`sql::build`]), run with `readonly` and the configured
//! execution-time, memory and result-row caps, so no stats request can hurt
//! ingestion. Engine errors never reach the client as text: a pattern RE2 refuses is
//! a 400, a cap reached is a 503 that says which, anything else a 500 whose detail
//! goes to the log only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde_json::{Value, json};

use crate::enrich::geo::{GeoDb, RegionNames};

use super::period::{self, Period};
use super::request::{
    Comparison, DateRange, Dimension, Direction, Filter, Metric, OrderKey, Query, QueryError,
    TimeDimension, VisitDimension,
};
use super::sql::{self, Goal, Param, Plan, Site, Sql};

/// Caps every stats statement runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_execution_time: Duration,
    pub max_memory_usage_bytes: u64,
    pub max_result_rows: u64,
}

/// A site as the engine reads it.
#[derive(Debug, Clone)]
pub struct SiteInfo {
    pub domain: String,
    pub timezone_name: String,
    pub timezone: TimeZone,
    pub goals: Vec<Goal>,
}

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is at fault: 400 with this message.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A cap was reached (time, memory, rows): 503 with this message.
    #[error("{0}")]
    Limit(&'static str),
    /// ClickHouse failed: 503/500, detail for the log only.
    #[error("ClickHouse query failed: {0}")]
    Store(#[source] clickhouse::error::Error),
    /// ClickHouse did not answer within the execution cap.
    #[error("ClickHouse did not answer in time")]
    Timeout,
}

/// Runs stats queries.
#[derive(Clone)]
pub struct Engine {
    client: clickhouse::Client,
    limits: Limits,
    plan: Plan,
    /// Whether visit queries read the built days of `sessions` (`query::sessions`).
    sessions: bool,
    /// Where `visit:region_name` finds its names (none: regions show their codes).
    geo: Option<Arc<GeoDb>>,
}

/// One result row: dimension labels, then metric values.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    dims: Vec<String>,
    metrics: Vec<Value>,
}

struct Answer {
    rows: Vec<Row>,
    total_rows: Option<u64>,
    warnings: serde_json::Map<String, Value>,
}

impl Engine {
    pub fn new(client: clickhouse::Client, limits: Limits) -> Self {
        Self {
            client,
            limits,
            plan: Plan::Auto,
            sessions: true,
            geo: None,
        }
    }

    /// The same engine, naming regions from `geo`'s database.
    pub fn with_geo(mut self, geo: Arc<GeoDb>) -> Self {
        self.geo = Some(geo);
        self
    }

    /// The region names a query needs: only a query that shows or filters
    /// `visit:region_name` reads the table (built on a blocking thread on first use).
    async fn region_names(&self, query: &Query) -> Arc<RegionNames> {
        let region_name = Dimension::Visit(VisitDimension::RegionName);
        let mut used = query.dimensions.contains(&region_name);
        for f in &query.filters {
            f.for_each_simple(&mut |s| {
                if let Filter::Simple { dimension, .. } = s {
                    used |= *dimension == region_name;
                }
            });
        }
        match &self.geo {
            Some(geo) if used => {
                let geo = Arc::clone(geo);
                tokio::task::spawn_blocking(move || geo.region_names())
                    .await
                    .unwrap_or_default()
            }
            _ => Arc::default(),
        }
    }

    /// The same engine, building every statement with `plan` (tests run both shapes).
    pub fn with_plan(self, plan: Plan) -> Self {
        Self { plan, ..self }
    }

    /// The same engine, reading `sessions` for built days or never (tests compare
    /// both; the answers are the same).
    pub fn with_sessions(self, sessions: bool) -> Self {
        Self { sessions, ..self }
    }

    /// Answers `query` for `site` as of `now`.
    pub async fn run(
        &self,
        query: &Query,
        site: &SiteInfo,
        now: Timestamp,
    ) -> Result<Value, EngineError> {
        let first_day = if matches!(query.date_range, DateRange::All) {
            self.first_day(site).await?
        } else {
            None
        };
        let period = period::resolve(query.date_range, now, &site.timezone, first_day)?;
        let resolved = resolve_time(query, &period);
        if resolved.include.fill_gaps
            && !(resolved.dimensions.len() == 1 && resolved.time_dimension().is_some())
        {
            return Err(QueryError(
                "#/include/fill_gaps: only with a time dimension as the only dimension".into(),
            )
            .into());
        }
        let labels = match resolved.time_dimension() {
            Some(t) if query.include.time_labels || query.include.fill_gaps => {
                Some(period::time_labels(&period, t, &site.timezone)?)
            }
            _ => None,
        };
        let mut answer = self.answer(&resolved, site, &period).await?;
        if let Some(labels) = labels.as_ref().filter(|_| resolved.include.fill_gaps) {
            fill_gaps(&mut answer.rows, labels, &resolved);
        }

        let comparison = match query.include.comparisons {
            None => None,
            Some(mode) => Some(self.compare(&resolved, site, &period, mode).await?),
        };

        let results: Vec<Value> = answer
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let mut out = json!({ "metrics": row.metrics, "dimensions": row.dims });
                if let Some((_, cmp)) = &comparison {
                    out["comparison"] = comparison_entry(row, i, &resolved, cmp);
                }
                out
            })
            .collect();

        let mut meta = serde_json::Map::new();
        if let Some(labels) = labels.filter(|_| query.include.time_labels) {
            meta.insert("time_labels".into(), json!(labels));
        }
        if query.include.total_rows {
            meta.insert("total_rows".into(), json!(answer.total_rows.unwrap_or(0)));
        }
        if query.include.imports {
            meta.insert("imports_included".into(), json!(false));
            meta.insert("imports_skip_reason".into(), json!("no_imported_data"));
        }
        if !answer.warnings.is_empty() {
            meta.insert("metric_warnings".into(), Value::Object(answer.warnings));
        }
        if let Some((cmp_period, _)) = &comparison {
            meta.insert(
                "comparison_date_range".into(),
                date_range_echo(cmp_period, &site.timezone),
            );
        }
        Ok(json!({
            "results": results,
            "meta": meta,
            "query": echo(query, &period, &site.timezone),
        }))
    }

    async fn compare(
        &self,
        query: &Query,
        site: &SiteInfo,
        period: &Period,
        mode: Comparison,
    ) -> Result<(Period, Vec<Row>), EngineError> {
        let cmp_period = period::comparison(period, mode, &site.timezone)?;
        let mut cmp_query = query.clone();
        // Every row of the main page must find its counterpart: no paging here.
        cmp_query.limit = super::request::MAX_LIMIT;
        cmp_query.offset = 0;
        cmp_query.include.total_rows = false;
        if let Some(t) = query.time_dimension() {
            // Time buckets are matched by position, so both lists start at the first.
            cmp_query.order_by = vec![(OrderKey::Dimension(Dimension::Time(t)), Direction::Asc)];
            let labels = period::time_labels(&cmp_period, t, &site.timezone)?;
            let mut rows = self.answer(&cmp_query, site, &cmp_period).await?.rows;
            fill_gaps(&mut rows, &labels, &cmp_query);
            return Ok((cmp_period, rows));
        }
        let rows = self.answer(&cmp_query, site, &cmp_period).await?.rows;
        Ok((cmp_period, rows))
    }

    async fn answer(
        &self,
        query: &Query,
        site: &SiteInfo,
        period: &Period,
    ) -> Result<Answer, EngineError> {
        let regions = self.region_names(query).await;
        let sql_site = Site {
            domain: &site.domain,
            timezone: &site.timezone_name,
            goals: &site.goals,
            regions: &regions,
        };
        let region_dims: Vec<usize> = query
            .dimensions
            .iter()
            .enumerate()
            .filter(|(_, d)| **d == Dimension::Visit(VisitDimension::RegionName))
            .map(|(i, _)| i)
            .collect();
        let stored = if self.sessions && sql::may_read_sessions(query, &sql_site, period, self.plan)
        {
            Some(super::sessions::usable_days(self, &site.domain, period).await?)
        } else {
            None
        };
        let statement = sql::build(
            query,
            &sql_site,
            period,
            super::names::COUNTRIES,
            self.plan,
            stored.as_ref(),
        )?;
        let lines = self.fetch(&statement).await?;
        let mut rows = Vec::with_capacity(lines.len());
        let mut total_rows = None;
        let mut warnings = serde_json::Map::new();
        for line in lines {
            let Value::Array(mut cells) = line else {
                return Err(EngineError::Limit("unexpected result shape"));
            };
            if statement.total_rows {
                total_rows = cells.pop().and_then(|v| v.as_u64());
            }
            let metrics_at = statement.dimensions.min(cells.len());
            let metric_cells = cells.split_off(metrics_at);
            let mut dims: Vec<String> = cells
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect();
            // Rows hold region codes; a region the database does not name keeps its code.
            for &i in &region_dims {
                if let Some(name) = dims.get(i).and_then(|code| regions.name(code)) {
                    dims[i] = name.to_owned();
                }
            }
            let mut metrics = Vec::with_capacity(metric_cells.len());
            for (m, cell) in query.metrics.iter().zip(metric_cells) {
                if matches!(m, Metric::TotalRevenue | Metric::AverageRevenue) {
                    let (value, warning) = revenue(*m, &cell);
                    if let Some(w) = warning {
                        warnings.insert(m.name().into(), w);
                    }
                    metrics.push(value);
                } else {
                    metrics.push(cell);
                }
            }
            rows.push(Row { dims, metrics });
        }
        Ok(Answer {
            rows,
            total_rows,
            warnings,
        })
    }

    pub(crate) async fn fetch(&self, statement: &Sql) -> Result<Vec<Value>, EngineError> {
        tracing::debug!(target: "hush::query::sql", sql = %statement.text, params = ?statement.params, "stats statement");
        let limits = self.limits;
        let build = || {
            let mut q = self
                .client
                .query(&statement.text)
                .with_setting(
                    "max_execution_time",
                    limits.max_execution_time.as_secs().max(1).to_string(),
                )
                .with_setting(
                    "max_memory_usage",
                    limits.max_memory_usage_bytes.to_string(),
                )
                .with_setting("max_result_rows", limits.max_result_rows.to_string())
                .with_setting("result_overflow_mode", "throw")
                .with_setting("output_format_json_quote_64bit_integers", "0")
                .with_setting("output_format_json_quote_denormals", "0")
                .with_setting("join_use_nulls", "0")
                .with_setting("readonly", "2");
            for (name, value) in &statement.params {
                q = match value {
                    Param::Str(s) => q.param(name, s),
                    Param::Strs(v) => q.param(name, v),
                    Param::U32(n) => q.param(name, n),
                    Param::U64(n) => q.param(name, n),
                    Param::U64s(v) => q.param(name, v),
                };
            }
            q
        };
        // The crate has no query timeout: bound the whole exchange a little beyond
        // ClickHouse's own cap, so a stuck connection cannot hold the request.
        let deadline = limits.max_execution_time + Duration::from_secs(2);
        let fetched = tokio::time::timeout(deadline, async {
            // A read is safe to repeat: once more when the pooled connection turned
            // out to be closed by the server (a network error before any answer).
            let mut retried = false;
            loop {
                let attempt = async {
                    let mut cursor = build().fetch_bytes("JSONCompactEachRow")?;
                    cursor.collect().await
                };
                match attempt.await {
                    Err(clickhouse::error::Error::Network(_)) if !retried => retried = true,
                    other => break other,
                }
            }
        })
        .await
        .map_err(|_| EngineError::Timeout)?
        .map_err(classify)?;
        let mut out = Vec::new();
        for line in fetched.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let value: Value = serde_json::from_slice(line)
                .map_err(|_| EngineError::Limit("unexpected result from ClickHouse"))?;
            out.push(value);
        }
        Ok(out)
    }

    /// The local date of the site's first stored event, for `all`.
    async fn first_day(&self, site: &SiteInfo) -> Result<Option<jiff::civil::Date>, EngineError> {
        let sql = Sql {
            text: "SELECT toUInt32(min(timestamp)), count() > 0 FROM events WHERE site = {site:String}"
                .into(),
            params: vec![("site".into(), Param::Str(site.domain.clone()))],
            dimensions: 0,
            total_rows: false,
        };
        let lines = self.fetch(&sql).await?;
        let Some(Value::Array(cells)) = lines.first() else {
            return Ok(None);
        };
        let any = cells.get(1).and_then(Value::as_u64).unwrap_or(0) > 0;
        let secs = cells.first().and_then(Value::as_i64).unwrap_or(0);
        if !any {
            return Ok(None);
        }
        Ok(Timestamp::from_second(secs)
            .ok()
            .map(|t| t.to_zoned_datetime(site.timezone.clone()).date()))
    }
}

/// Maps an engine error: patterns RE2 refuses are the request's fault; caps reached
/// say which; the rest is the store's.
fn classify(err: clickhouse::error::Error) -> EngineError {
    let text = err.to_string();
    let code = |c: &str| text.contains(&format!("Code: {c}."));
    if code("427") {
        EngineError::Query(QueryError(
            "Invalid regular expression in a matches filter".into(),
        ))
    } else if code("159") {
        EngineError::Limit("the query took longer than the stats API allows")
    } else if code("241") {
        EngineError::Limit("the query needed more memory than the stats API allows")
    } else if code("396") {
        EngineError::Limit("the query's result is larger than the stats API allows")
    } else {
        EngineError::Store(err)
    }
}

/// `time` becomes the bucket Plausible would choose for the period.
fn resolve_time(query: &Query, period: &Period) -> Query {
    let mut q = query.clone();
    let bucket = period::auto_bucket(period);
    let swap = |d: &mut Dimension| {
        if *d == Dimension::Time(TimeDimension::Auto) {
            *d = Dimension::Time(bucket);
        }
    };
    q.dimensions.iter_mut().for_each(swap);
    for (key, _) in &mut q.order_by {
        if let OrderKey::Dimension(d) = key {
            swap(d);
        }
    }
    q
}

/// The metrics of a group with no rows: counts and rates are 0; revenue, scroll depth
/// and exit rate have no value (null), as in a query's own answer.
fn empty_metrics(query: &Query) -> Vec<Value> {
    query
        .metrics
        .iter()
        .map(|m| match m {
            Metric::TotalRevenue
            | Metric::AverageRevenue
            | Metric::ScrollDepth
            | Metric::ExitRate => Value::Null,
            _ => json!(0),
        })
        .collect()
}

/// Puts a zero row in every time bucket that has none, in label order.
fn fill_gaps(rows: &mut Vec<Row>, labels: &[String], query: &Query) {
    let mut by_label: HashMap<String, Row> =
        rows.drain(..).map(|r| (r.dims[0].clone(), r)).collect();
    let zero = empty_metrics(query);
    let descending = query.order_by.first().is_some_and(|(k, d)| {
        matches!(k, OrderKey::Dimension(Dimension::Time(_))) && *d == Direction::Desc
    });
    let mut ordered: Vec<Row> = labels
        .iter()
        .map(|l| {
            by_label.remove(l).unwrap_or_else(|| Row {
                dims: vec![l.clone()],
                metrics: zero.clone(),
            })
        })
        .collect();
    if descending {
        ordered.reverse();
    }
    *rows = ordered;
}

/// A result row's counterpart in the comparison period: by position for time buckets,
/// by dimension labels otherwise.
fn comparison_entry(row: &Row, index: usize, query: &Query, cmp: &[Row]) -> Value {
    let other = if query.time_dimension().is_some() {
        let pos = query
            .dimensions
            .iter()
            .position(|d| matches!(d, Dimension::Time(_)))
            .unwrap_or(0);
        // Only time: the index in the (filled) list; with other dimensions, the
        // bucket's position among the labels is not known here, so match the rest.
        if query.dimensions.len() == 1 {
            cmp.get(index)
        } else {
            cmp.iter().find(|c| {
                c.dims
                    .iter()
                    .enumerate()
                    .all(|(i, d)| i == pos || *d == row.dims[i])
            })
        }
    } else {
        cmp.iter().find(|c| c.dims == row.dims)
    };
    let metrics: Vec<Value> = match other {
        Some(o) => o.metrics.clone(),
        None => empty_metrics(query),
    };
    let change: Vec<Value> = row
        .metrics
        .iter()
        .zip(&metrics)
        .zip(&query.metrics)
        .map(|((now, then), m)| change(*m, now, then))
        .collect();
    json!({
        "dimensions": other.map(|o| o.dims.clone()).unwrap_or_else(|| row.dims.clone()),
        "metrics": metrics,
        "change": change,
    })
}

/// Plausible's change: percentage points for rates, else the relative change in
/// percent (100 when growing from zero, null when both are zero... as 0).
fn change(metric: Metric, now: &Value, then: &Value) -> Value {
    let (Some(a), Some(b)) = (number(now), number(then)) else {
        return Value::Null;
    };
    match metric {
        Metric::BounceRate
        | Metric::ConversionRate
        | Metric::GroupConversionRate
        | Metric::ExitRate => {
            json!(((a - b) * 10.0).round() / 10.0)
        }
        _ if b == 0.0 => {
            if a > 0.0 {
                json!(100)
            } else {
                json!(0)
            }
        }
        _ => json!(((a - b) / b * 100.0).round() as i64),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Object(o) => o.get("value").and_then(Value::as_f64),
        _ => None,
    }
}

/// A revenue cell `[sum_micros, count, currencies, currency]` as Plausible's money
/// object, or null with a warning when the rows mix currencies.
fn revenue(metric: Metric, cell: &Value) -> (Value, Option<Value>) {
    let parts = cell.as_array().cloned().unwrap_or_default();
    let sum = parts.first().and_then(Value::as_i64).unwrap_or(0);
    let count = parts.get(1).and_then(Value::as_u64).unwrap_or(0);
    let currencies = parts.get(2).and_then(Value::as_u64).unwrap_or(0);
    let currency = parts.get(3).and_then(Value::as_str).unwrap_or("");
    if currencies > 1 {
        return (
            Value::Null,
            Some(json!({
                "code": "no_single_revenue_currency",
                "warning": "Revenue metrics are null as there are multiple currencies in the selected events.",
            })),
        );
    }
    if count == 0 || currencies == 0 {
        return (Value::Null, None);
    }
    let micros = match metric {
        Metric::AverageRevenue => sum as f64 / count as f64,
        _ => sum as f64,
    };
    let value = (micros / 10_000.0).round() / 100.0;
    (money(value, currency), None)
}

fn money(value: f64, currency: &str) -> Value {
    let symbol = match currency {
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "JPY" => "¥",
        "INR" => "₹",
        _ => "",
    };
    let prefix = if symbol.is_empty() {
        format!("{currency} ")
    } else {
        symbol.to_owned()
    };
    let long = format!("{prefix}{}", grouped(value));
    let abs = value.abs();
    let short = if abs >= 1e9 {
        format!("{prefix}{:.1}B", value / 1e9)
    } else if abs >= 1e6 {
        format!("{prefix}{:.1}M", value / 1e6)
    } else if abs >= 1e3 {
        format!("{prefix}{:.1}K", value / 1e3)
    } else {
        format!("{prefix}{value:.2}")
    };
    json!({ "short": short, "long": long, "value": value, "currency": currency })
}

/// `1234567.5` as `1,234,567.50`.
fn grouped(value: f64) -> String {
    let cents = (value.abs() * 100.0).round() as u64;
    let (whole, frac) = (cents / 100, cents % 100);
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    let sign = if value < 0.0 { "-" } else { "" };
    format!("{sign}{out}.{frac:02}")
}

/// The period's first and last instant in the site's time zone, as Plausible echoes.
fn date_range_echo(period: &Period, tz: &TimeZone) -> Value {
    let fmt = |t: Timestamp| {
        t.to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    };
    let last = period.end.checked_sub(1.second()).unwrap_or(period.end);
    json!([fmt(period.start), fmt(last)])
}

/// The query as executed: the resolved range, the order used, the page.
pub fn echo(query: &Query, period: &Period, tz: &TimeZone) -> Value {
    let mut include = serde_json::Map::new();
    let inc = &query.include;
    for (name, on) in [
        ("time_labels", inc.time_labels),
        ("total_rows", inc.total_rows),
        ("imports", inc.imports),
        ("fill_gaps", inc.fill_gaps),
    ] {
        if on {
            include.insert(name.into(), json!(true));
        }
    }
    if let Some(c) = inc.comparisons {
        include.insert(
            "comparisons".into(),
            match c {
                Comparison::PreviousPeriod => json!({"mode": "previous_period"}),
                Comparison::YearOverYear => json!({"mode": "year_over_year"}),
                Comparison::Custom(a, b) => {
                    json!({"mode": "custom", "date_range": [a.to_string(), b.to_string()]})
                }
            },
        );
    }
    json!({
        "site_id": query.site_id,
        "metrics": query.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "date_range": date_range_echo(period, tz),
        "filters": query.filters.iter().map(filter_echo).collect::<Vec<_>>(),
        "dimensions": query.dimensions.iter().map(Dimension::name).collect::<Vec<_>>(),
        "order_by": query.order_by.iter().map(|(k, d)| {
            let name = match k {
                OrderKey::Metric(m) => m.name().to_owned(),
                OrderKey::Dimension(d) => d.name(),
            };
            json!([name, d.name()])
        }).collect::<Vec<_>>(),
        "include": include,
        "pagination": {"limit": query.limit, "offset": query.offset},
    })
}

fn filter_echo(filter: &Filter) -> Value {
    match filter {
        Filter::Simple {
            op,
            dimension,
            clauses,
            case_sensitive,
        } => {
            let mut v = vec![json!(op.name()), json!(dimension.name()), json!(clauses)];
            if !case_sensitive {
                v.push(json!({"case_sensitive": false}));
            }
            Value::Array(v)
        }
        Filter::And(list) => json!(["and", list.iter().map(filter_echo).collect::<Vec<_>>()]),
        Filter::Or(list) => json!(["or", list.iter().map(filter_echo).collect::<Vec<_>>()]),
        Filter::Not(inner) => json!(["not", filter_echo(inner)]),
        Filter::HasDone(inner) => json!(["has_done", filter_echo(inner)]),
        Filter::HasNotDone(inner) => json!(["has_not_done", filter_echo(inner)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_objects_read_as_plausible_does() {
        let v = money(96_336_315.0, "USD");
        assert_eq!(v["long"], "$96,336,315.00");
        assert_eq!(v["short"], "$96.3M");
        assert_eq!(money(12.5, "SEK")["long"], "SEK 12.50");
    }

    #[test]
    fn mixed_currencies_give_null_and_a_warning() {
        let (v, w) = revenue(Metric::TotalRevenue, &json!([5_000_000, 2, 2, "USD"]));
        assert!(v.is_null());
        assert_eq!(w.unwrap()["code"], "no_single_revenue_currency");
        let (v, w) = revenue(Metric::AverageRevenue, &json!([5_000_000, 2, 1, "EUR"]));
        assert_eq!(v["value"], 2.5);
        assert!(w.is_none());
    }

    #[test]
    fn change_is_relative_except_for_rates() {
        assert_eq!(
            change(Metric::Visitors, &json!(150), &json!(100)),
            json!(50)
        );
        assert_eq!(change(Metric::Visitors, &json!(5), &json!(0)), json!(100));
        assert_eq!(
            change(Metric::BounceRate, &json!(40), &json!(45)),
            json!(-5.0)
        );
    }
}
