//! `POST /api/hush/sites/{site}/props`: the custom property keys a site's events
//! carry in a period, so the dashboard can offer them for a breakdown by
//! `event:props:<key>` (Plausible's v2 has no such listing).
//!
//! The body is `{"date_range": ...}` with any v2 `date_range` (parsed by the v2
//! parser, resolved in the site's time zone as a query's would be). The answer is
//! `{"props": [{"key": "plan", "events": 12}, ...]}`: at most [`MAX_KEYS`] keys, the
//! most used first (ties by key). Access and rate limits are the Stats API's
//! (`app::stats`). The one statement binds every request value as a parameter and
//! runs under the stats caps (readonly, time, memory, rows), like every stats query.

use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::{Value, json};

use crate::query::engine::{Engine, EngineError, SiteInfo};
use crate::query::period;
use crate::query::request::{DateRange, Query, QueryError};
use crate::query::sql::{Param, Sql};

/// Keys listed at most.
pub const MAX_KEYS: u32 = 100;

/// The first day `all` can start on: before any stored event.
const EPOCH: Date = Date::constant(1970, 1, 2);

/// The statement: keys of the site's events in `[start, end)`, most used first.
const SQL: &str = "SELECT arrayJoin(mapKeys(props)) AS key, count() AS events FROM events \
     WHERE site = {site:String} AND timestamp >= toDateTime({start:UInt32}, 'UTC') \
     AND timestamp < toDateTime({end:UInt32}, 'UTC') \
     GROUP BY key ORDER BY events DESC, key ASC LIMIT {limit:UInt32}";

/// The period of a props request body: its `date_range`, as the v2 parser reads it.
pub fn parse(body: &[u8]) -> Result<DateRange, QueryError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| QueryError("#: the body is not a JSON object".into()))?;
    let Some(obj) = v.as_object() else {
        return Err(QueryError("#: the body is not a JSON object".into()));
    };
    if let Some(other) = obj.keys().find(|k| *k != "date_range") {
        return Err(QueryError(format!(
            "#: Schema does not allow additional properties: \"{other}\""
        )));
    }
    let Some(range) = obj.get("date_range") else {
        return Err(QueryError(
            "#: Required property date_range was not present.".into(),
        ));
    };
    let q = json!({"site_id": "-", "metrics": ["events"], "date_range": range});
    Query::from_json(q.to_string().as_bytes()).map(|q| q.date_range)
}

/// The keys of `site`'s events over `range`, read through the engine's own fetch
/// (the stats caps, the deadline, the retry and the error mapping of every stats
/// statement).
pub async fn answer(
    engine: &Engine,
    site: &SiteInfo,
    range: DateRange,
    now: Timestamp,
) -> Result<Value, EngineError> {
    let p = period::resolve(range, now, &site.timezone, Some(EPOCH))?;
    let seconds = |t: Timestamp| u32::try_from(t.as_second().max(0)).unwrap_or(u32::MAX);
    let statement = Sql {
        text: SQL.to_owned(),
        params: vec![
            ("site".into(), Param::Str(site.domain.clone())),
            ("start".into(), Param::U32(seconds(p.start))),
            ("end".into(), Param::U32(seconds(p.end))),
            ("limit".into(), Param::U32(MAX_KEYS)),
        ],
        dimensions: 1,
        total_rows: false,
    };
    let rows = engine.fetch(&statement).await?;
    Ok(json!({
        "props": rows
            .iter()
            .map(|r| json!({"key": r[0], "events": r[1]}))
            .collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_a_v2_date_range_and_nothing_else() {
        assert_eq!(
            parse(br#"{"date_range":"30d"}"#).unwrap(),
            DateRange::Days(30)
        );
        assert_eq!(parse(br#"{"date_range":"all"}"#).unwrap(), DateRange::All);
        assert!(matches!(
            parse(br#"{"date_range":["2026-01-01","2026-01-31"]}"#).unwrap(),
            DateRange::Dates(..)
        ));
        for (bad, says) in [
            (&br#"{}"#[..], "date_range"),
            (br#"{"date_range":"31x"}"#, "date_range"),
            (br#"{"date_range":"30d","filters":[]}"#, "filters"),
            (br#"[1]"#, "JSON object"),
            (b"not json", "JSON object"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.0.contains(says),
                "{}: {}",
                String::from_utf8_lossy(bad),
                e.0
            );
        }
    }

    #[test]
    fn every_request_value_is_a_bound_parameter() {
        for name in ["site", "start", "end", "limit"] {
            assert!(SQL.contains(&format!("{{{name}:")), "{name}");
        }
    }
}
