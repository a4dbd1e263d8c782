//! `POST /api/hush/dropped`: the hits hush did not count as a visitor's (the
//! `dropped` table: bots by family, DNT/GPC dropped or anonymised, engagement pings
//! without a visit), per UTC day, reason and family.
//!
//! Request: `{"site_id": "...", "date_range": ...}`, the `date_range` in every form
//! of the v2 query (parsed by the same code), resolved in **UTC**, because the counts
//! are per UTC day: `7d` is the last seven UTC days, a pair of date-times covers the
//! UTC days they fall on, `all` has no lower bound. Answer:
//! `{"results": [{"date", "reason", "family", "hits"}], "meta": {"day": "utc",
//! "date_range": [first, last]}}`, sorted by date, reason, most hits first. Run with
//! the stats caps like every stats query ([`Engine::fetch`]); the site and the days
//! are bound parameters.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::query::engine::{Engine, EngineError};
use crate::query::period;
use crate::query::request::{DateRange, QueryError, parse_date_range};
use crate::query::sql::{Param, Sql};

/// A checked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedQuery {
    pub site_id: String,
    pub date_range: DateRange,
}

impl DroppedQuery {
    /// Parses and checks a request body; the error says where and why (a 400).
    pub fn from_json(body: &[u8]) -> Result<Self, QueryError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| QueryError(format!("#: the body is not JSON: {e}")))?;
        let Some(map) = value.as_object() else {
            return Err(QueryError::at("#", "the body must be an object"));
        };
        if let Some(other) = map.keys().find(|k| *k != "site_id" && *k != "date_range") {
            return Err(QueryError::at("#", format!("unknown property {other}")));
        }
        let site_id = match map.get("site_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(QueryError::at("#/site_id", "must be a non-empty string")),
            None => {
                return Err(QueryError::at(
                    "#",
                    "Required property site_id was not present.",
                ));
            }
        };
        let date_range = match map.get("date_range") {
            Some(v) => parse_date_range(v, "#/date_range")?,
            None => {
                return Err(QueryError::at(
                    "#",
                    "Required property date_range was not present.",
                ));
            }
        };
        Ok(Self {
            site_id,
            date_range,
        })
    }

    /// The first and last UTC day the range covers at `now`.
    pub fn days(&self, now: Timestamp) -> Result<(Date, Date), QueryError> {
        let epoch = Date::constant(1970, 1, 1);
        let period = period::resolve(self.date_range, now, &TimeZone::UTC, Some(epoch))?;
        Ok((period.first_day, period.last_day))
    }
}

/// The statement for `site` from `first` to `last` (UTC days, both included).
pub fn statement(site: &str, first: Date, last: Date) -> Sql {
    Sql {
        text: "SELECT toString(day), toString(reason), toString(family), sum(hits) AS n \
               FROM dropped \
               WHERE site = {p0:String} AND day >= {p1:Date} AND day <= {p2:Date} \
               GROUP BY day, reason, family \
               ORDER BY day, reason, n DESC, family"
            .into(),
        params: vec![
            ("p0".into(), Param::Str(site.to_owned())),
            ("p1".into(), Param::Str(first.to_string())),
            ("p2".into(), Param::Str(last.to_string())),
        ],
        dimensions: 3,
        total_rows: false,
    }
}

impl Engine {
    /// Answers a [`DroppedQuery`] for `site` (the configured domain) at `now`.
    pub async fn dropped(
        &self,
        q: &DroppedQuery,
        site: &str,
        now: Timestamp,
    ) -> Result<Value, EngineError> {
        let (first, last) = q.days(now)?;
        let rows = self.fetch(&statement(site, first, last)).await?;
        let results: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "date": r[0],
                    "reason": r[1],
                    "family": r[2],
                    "hits": r[3],
                })
            })
            .collect();
        Ok(json!({
            "results": results,
            "meta": { "day": "utc", "date_range": [first.to_string(), last.to_string()] },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<DroppedQuery, String> {
        DroppedQuery::from_json(body.as_bytes()).map_err(|e| e.0)
    }

    #[test]
    fn takes_the_v2_date_range_forms_and_resolves_them_in_utc() {
        // 23:30 UTC: in a zone ahead of UTC it is already the next day; here it is not.
        let now: Timestamp = "2024-03-10T23:30:00Z".parse().unwrap();
        let q = parse(r#"{"site_id":"a.com","date_range":"7d"}"#).unwrap();
        assert_eq!(
            q.days(now).unwrap(),
            (Date::constant(2024, 3, 4), Date::constant(2024, 3, 10))
        );
        let q = parse(r#"{"site_id":"a.com","date_range":["2024-02-01","2024-02-29"]}"#).unwrap();
        assert_eq!(
            q.days(now).unwrap(),
            (Date::constant(2024, 2, 1), Date::constant(2024, 2, 29))
        );
        let q = parse(
            r#"{"site_id":"a.com","date_range":["2024-01-01T23:00:00+02:00","2024-01-02T00:30:00Z"]}"#,
        )
        .unwrap();
        assert_eq!(
            q.days(now).unwrap(),
            (Date::constant(2024, 1, 1), Date::constant(2024, 1, 2))
        );
        let q = parse(r#"{"site_id":"a.com","date_range":"day"}"#).unwrap();
        assert_eq!(
            q.days(now).unwrap(),
            (Date::constant(2024, 3, 10), Date::constant(2024, 3, 10))
        );
        let q = parse(r#"{"site_id":"a.com","date_range":"all"}"#).unwrap();
        assert_eq!(q.days(now).unwrap().0, Date::constant(1970, 1, 1));
    }

    #[test]
    fn bad_requests_say_where_and_why() {
        for (body, want) in [
            ("nope", "#: the body is not JSON"),
            ("[]", "#: the body must be an object"),
            (r#"{"date_range":"7d"}"#, "site_id was not present"),
            (r#"{"site_id":"","date_range":"7d"}"#, "#/site_id: must be"),
            (r#"{"site_id":"a.com"}"#, "date_range was not present"),
            (
                r#"{"site_id":"a.com","date_range":"7x"}"#,
                "#/date_range: Invalid date_range",
            ),
            (
                r#"{"site_id":"a.com","date_range":["2024-02-02","2024-02-01"]}"#,
                "ends before it starts",
            ),
            (
                r#"{"site_id":"a.com","date_range":"7d","metrics":[]}"#,
                "unknown property metrics",
            ),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn every_request_value_is_a_bound_parameter() {
        let site = "a.com' OR 1=1 --";
        let sql = statement(site, Date::constant(2024, 1, 1), Date::constant(2024, 1, 2));
        assert!(!sql.text.contains(site) && !sql.text.contains("2024"));
        assert!(matches!(&sql.params[0].1, Param::Str(s) if s == site));
    }
}
