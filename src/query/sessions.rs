//! Which built days of `sessions` (`store::sessions`) a query may read: those whose
//! recorded build saw the `event_days` counts of now, on the day before, the day and
//! the day after (no row was added since; deletions forget the builds they touch).
//! Two reads of a few rows per query, before the query's own.
//!
//! # Why the split of a period is exact
//!
//! The visit plan needs, for every visit with a row in the period, its values over
//! its rows in the period. A build of day D holds each visit whose first row is on D
//! with its values over all its rows, which lie on D and D+1 (the builder refuses a
//! day with a visit that could reach D+2, or one with rows on D-1 and D+1). So, with
//! U the usable days (recorded, counts unchanged):
//!
//! - a visit of a usable day that starts and ends within the period has the same
//!   values in the table as over the period's rows: it is read from the table;
//! - every other visit with rows in the period is grouped from `events` exactly as
//!   without the table, from all its rows in the period, which are: the rows of the
//!   table's visits that cross the period's start or end (on the first two and last
//!   two days of the period, the only days their rows in the period can be on); all
//!   rows of a day not in U, except those of the table's visits that began on the
//!   usable day before it; and, on a usable day after one not in U, the rows of
//!   visits not in that day's build (they began the day before).
//!
//! Each visit is then counted once, from one side, with the values it has without
//! the table. `tests/stats.rs` checks every visit-plan answer both ways, with late
//! rows on built days and with days left unbuilt among built ones.
//!
//! # The hourly rollup
//!
//! The per-row plan (visitors, page views and events of rows, by page, name, goal or
//! time bucket) splits the period by UTC hour instead: an hour of a usable day that
//! lies wholly inside the period is read from `hourly_pages` or `hourly_totals` (its
//! rows are exactly the build's, which the counts guarantee), every other row of the
//! period from `events`. `uniq` states merged across the two sides count as `uniq` over all the rows. A
//! time bucket is a union of whole UTC hours only where the site's offset is a whole
//! number of hours over the period, so time dimensions take the rollup only there.

use jiff::civil::Date;
use serde_json::Value;

use super::engine::{Engine, EngineError};
use super::period::Period;
use super::sql::{Param, SessionDays, Sql};

/// The usable builds of `site` for the UTC days `period` touches and the day before.
pub(crate) async fn usable_days(
    engine: &Engine,
    site: &str,
    period: &Period,
) -> Result<SessionDays, EngineError> {
    let utc = |t: jiff::Timestamp| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let first = utc(period.start).yesterday().unwrap_or(utc(period.start));
    let last = utc(period
        .end
        .checked_sub(jiff::Span::new().seconds(1))
        .unwrap_or(period.end));
    if last < first {
        return Ok(SessionDays::default());
    }
    let params = vec![
        ("site".into(), Param::Str(site.to_owned())),
        ("first".into(), Param::Str(first.to_string())),
        ("last".into(), Param::Str(last.to_string())),
    ];
    let statement = |text: &str| Sql {
        text: text.to_owned(),
        params: params.clone(),
        dimensions: 0,
        total_rows: false,
    };
    let counts = statement(
        "SELECT toString(day), sum(rows) FROM event_days \
         WHERE site = {site:String} AND day >= {first:Date} - 1 AND day <= {last:Date} + 1 \
         GROUP BY day",
    );
    let recorded = statement(
        "SELECT toString(day), argMax(build, built_at), argMax(rows_prev, built_at), \
         argMax(rows_day, built_at), argMax(rows_next, built_at), argMax(hourly, built_at) FROM session_days \
         WHERE site = {site:String} AND day >= {first:Date} AND day <= {last:Date} GROUP BY day",
    );
    let (counts, recorded) = tokio::try_join!(engine.fetch(&counts), engine.fetch(&recorded))?;
    let date = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|s| s.parse::<Date>().ok())
    };
    let mut rows = std::collections::HashMap::new();
    for line in counts {
        if let Value::Array(cells) = line
            && let (Some(d), Some(n)) = (date(cells.first()), cells.get(1).and_then(Value::as_u64))
        {
            rows.insert(d, n);
        }
    }
    let at = |d: Result<Date, jiff::Error>| d.ok().and_then(|d| rows.get(&d)).copied().unwrap_or(0);
    let mut days = Vec::new();
    let mut hourly = Vec::new();
    for line in recorded {
        let Value::Array(cells) = line else { continue };
        let n = |i: usize| cells.get(i).and_then(Value::as_u64);
        if let (Some(day), Some(build), Some(prev), Some(on), Some(next)) =
            (date(cells.first()), n(1), n(2), n(3), n(4))
            && build != 0
            && [prev, on, next] == [at(day.yesterday()), at(Ok(day)), at(day.tomorrow())]
        {
            days.push((day, build));
            if n(5) == Some(1) {
                hourly.push((day, build));
            }
        }
    }
    days.sort_unstable();
    hourly.sort_unstable();
    Ok(SessionDays { days, hourly })
}
