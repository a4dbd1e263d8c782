//! Date ranges resolved in the site's time zone, their comparison periods, and the time
//! buckets of a period.
//!
//! A range is a span of whole local days (`day`, `7d`, `month`, explicit dates, ...)
//! or two instants (explicit date-times, `24h`). Whole-day ranges run from local
//! midnight of the first day to local midnight after the last, so on a DST change a
//! "day" is 23 or 25 hours, as the site's owner lived it. Relative ranges include
//! today, as Plausible's do (`7d` on 2024-09-10 is 2024-09-04 to 2024-09-10); the
//! current period may run into the future, which simply holds no data.
//!
//! Buckets are local too: `time:hour` labels are local wall-clock hours
//! (`2024-03-31 03:00:00`), so a spring-forward day has 23 of them and a fall-back
//! day's repeated hour is one bucket. Weeks start on Monday, except that the first
//! bucket of a period starts at the period's first day (its label is that day), so a
//! week bucket never holds days outside the range.

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ToSpan, Unit, ZonedDateTime};

use super::request::{Comparison, DateRange, QueryError, TimeDimension};

/// A resolved period: `[start, end)` as instants, plus the local days it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub start: Timestamp,
    /// Exclusive.
    pub end: Timestamp,
    /// Local date of `start`.
    pub first_day: Date,
    /// Local date of the last instant in the period.
    pub last_day: Date,
    /// Whether the range was given in whole days (echoed as `T00:00:00` to `T23:59:59`).
    pub whole_days: bool,
}

fn err(message: impl std::fmt::Display) -> QueryError {
    QueryError(format!("#/date_range: {message}"))
}

/// Local midnight at the start of `day` (the first instant of the day where midnight
/// does not exist).
fn day_start(day: Date, tz: &TimeZone) -> Result<Timestamp, QueryError> {
    day.to_zoned_datetime(tz.clone())
        .map(|z| z.timestamp())
        .map_err(|e| err(format!("{day} has no start in the site's time zone: {e}")))
}

/// The period of whole local days `first ..= last`.
pub fn days(first: Date, last: Date, tz: &TimeZone) -> Result<Period, QueryError> {
    let after = last
        .checked_add(1.day())
        .map_err(|_| err("the range ends too late"))?;
    Ok(Period {
        start: day_start(first, tz)?,
        end: day_start(after, tz)?,
        first_day: first,
        last_day: last,
        whole_days: true,
    })
}

fn instants(
    start: Timestamp,
    end_inclusive: Timestamp,
    tz: &TimeZone,
) -> Result<Period, QueryError> {
    let end = end_inclusive
        .checked_add(Span::new().seconds(1))
        .map_err(|_| err("the range ends too late"))?;
    Ok(Period {
        start,
        end,
        first_day: start.to_zoned_datetime(tz.clone()).date(),
        last_day: end_inclusive.to_zoned_datetime(tz.clone()).date(),
        whole_days: false,
    })
}

fn month_start(day: Date) -> Date {
    day.first_of_month()
}

fn shift_months(day: Date, months: i32) -> Result<Date, QueryError> {
    day.checked_add(months.months())
        .map_err(|_| err("the range reaches outside the calendar"))
}

/// Resolves `range` at `now` in `tz`. `first_stats_day` is the local date of the
/// site's first stored event (for `all`; today when the site has none).
pub fn resolve(
    range: DateRange,
    now: Timestamp,
    tz: &TimeZone,
    first_stats_day: Option<Date>,
) -> Result<Period, QueryError> {
    let today = now.to_zoned_datetime(tz.clone()).date();
    match range {
        DateRange::Day => days(today, today, tz),
        DateRange::Hours24 => {
            let start = now
                .checked_sub(24.hours())
                .map_err(|_| err("out of range"))?;
            instants(start, now, tz)
        }
        DateRange::Days(n) => {
            let back = i64::from(n) - 1;
            let first = today
                .checked_sub(back.days())
                .map_err(|_| err("the range starts too early"))?;
            days(first, today, tz)
        }
        DateRange::Month => days(month_start(today), today.last_of_month(), tz),
        DateRange::Months(n) => {
            let back = i32::try_from(n).map_err(|_| err("too many months"))? - 1;
            let first = shift_months(month_start(today), -back)?;
            days(first, today.last_of_month(), tz)
        }
        DateRange::Year => days(today.first_of_year(), today.last_of_year(), tz),
        DateRange::All => {
            let first = first_stats_day.unwrap_or(today).min(today);
            days(first, today, tz)
        }
        DateRange::Dates(first, last) => days(first, last, tz),
        DateRange::Instants(start, end) => instants(start, end, tz),
    }
}

/// The period a comparison measures against. `previous_period` is the same number of
/// days (or the same length of time) just before; `year_over_year` the same dates a
/// year earlier (29 February becomes 28 February).
pub fn comparison(period: &Period, mode: Comparison, tz: &TimeZone) -> Result<Period, QueryError> {
    match mode {
        Comparison::Custom(first, last) => days(first, last, tz),
        Comparison::YearOverYear if period.whole_days => days(
            shift_years(period.first_day)?,
            shift_years(period.last_day)?,
            tz,
        ),
        Comparison::YearOverYear => {
            let shift = |t: Timestamp| -> Result<Timestamp, QueryError> {
                t.to_zoned_datetime(tz.clone())
                    .checked_sub(1.year())
                    .map(|z| z.timestamp())
                    .map_err(|_| err("out of range"))
            };
            let end_inclusive = period
                .end
                .checked_sub(Span::new().seconds(1))
                .map_err(|_| err("out of range"))?;
            instants(shift(period.start)?, shift(end_inclusive)?, tz)
        }
        Comparison::PreviousPeriod if period.whole_days => {
            let len = period
                .first_day
                .until((Unit::Day, period.last_day))
                .map_err(|_| err("out of range"))?
                .get_days();
            let last = period
                .first_day
                .checked_sub(1.day())
                .map_err(|_| err("out of range"))?;
            let first = last
                .checked_sub(i64::from(len).days())
                .map_err(|_| err("out of range"))?;
            days(first, last, tz)
        }
        Comparison::PreviousPeriod => {
            let len = period.end.as_second() - period.start.as_second();
            let start = Timestamp::from_second(period.start.as_second() - len)
                .map_err(|_| err("out of range"))?;
            let end_inclusive = Timestamp::from_second(period.start.as_second() - 1)
                .map_err(|_| err("out of range"))?;
            instants(start, end_inclusive, tz)
        }
    }
}

fn shift_years(day: Date) -> Result<Date, QueryError> {
    day.checked_sub(1.year()).map_err(|_| err("out of range"))
}

/// The bucket `time` stands for: by hour up to 48 hours, by day up to 40 days, by
/// week up to 52 weeks, by month beyond.
pub fn auto_bucket(period: &Period) -> TimeDimension {
    let secs = period.end.as_second() - period.start.as_second();
    let hours = secs / 3_600;
    let days = secs / 86_400;
    if hours <= 48 {
        TimeDimension::Hour
    } else if days <= 40 {
        TimeDimension::Day
    } else if days / 7 <= 52 {
        TimeDimension::Week
    } else {
        TimeDimension::Month
    }
}

/// The label of the bucket holding the local time `local` (the format results use).
pub fn label(bucket: TimeDimension, local: DateTime, period_first_day: Date) -> String {
    match bucket {
        TimeDimension::Minute => local.strftime("%Y-%m-%d %H:%M:00").to_string(),
        TimeDimension::Hour | TimeDimension::Auto => {
            local.strftime("%Y-%m-%d %H:00:00").to_string()
        }
        TimeDimension::Day => local.date().to_string(),
        TimeDimension::Week => week_start(local.date()).max(period_first_day).to_string(),
        TimeDimension::Month => local.date().first_of_month().to_string(),
        TimeDimension::HourOfDay => local.hour().to_string(),
        TimeDimension::Weekday => local.date().weekday().to_monday_one_offset().to_string(),
    }
}

fn week_start(day: Date) -> Date {
    let back = i64::from(day.weekday().since(Weekday::Monday));
    day.checked_sub(back.days()).unwrap_or(day)
}

/// Most labels [`time_labels`] lists (about a year of hours; minute buckets over more
/// than a week are refused).
pub const MAX_LABELS: usize = 10_000;

/// Every bucket label of `period`, in order, without repeats. `hour_of_day` and
/// `weekday` list their fixed cycles (0–23, 1–7 from Monday).
pub fn time_labels(
    period: &Period,
    bucket: TimeDimension,
    tz: &TimeZone,
) -> Result<Vec<String>, QueryError> {
    match bucket {
        TimeDimension::HourOfDay => return Ok((0..24).map(|h: u8| h.to_string()).collect()),
        TimeDimension::Weekday => return Ok((1..=7).map(|d: u8| d.to_string()).collect()),
        _ => {}
    }
    let step: Span = match bucket {
        TimeDimension::Minute => 1.minute(),
        TimeDimension::Hour | TimeDimension::Auto => 1.hour(),
        // Day, week and month labels change at most once a day.
        _ => 1.day(),
    };
    let mut labels: Vec<String> = Vec::new();
    let mut at: ZonedDateTime = period.start.to_zoned_datetime(tz.clone());
    while at.timestamp() < period.end {
        let l = label(bucket, at.datetime(), period.first_day);
        if labels.last() != Some(&l) {
            if labels.len() == MAX_LABELS {
                return Err(QueryError(format!(
                    "#/dimensions: more than {MAX_LABELS} time buckets; choose a larger bucket"
                )));
            }
            labels.push(l);
        }
        // Day steps walk local dates (a DST day is still one day); smaller steps walk
        // absolute time so a skipped or repeated local hour is handled by the label.
        at = if matches!(
            bucket,
            TimeDimension::Minute | TimeDimension::Hour | TimeDimension::Auto
        ) {
            Timestamp::checked_add(at.timestamp(), step)
                .map_err(|_| err("out of range"))?
                .to_zoned_datetime(tz.clone())
        } else {
            at.checked_add(step).map_err(|_| err("out of range"))?
        };
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }
    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    #[test]
    fn relative_ranges_include_today() {
        let now = ts("2024-09-10T15:30:00Z");
        let p = resolve(DateRange::Days(7), now, &utc(), None).unwrap();
        assert_eq!(
            (p.first_day, p.last_day),
            (d("2024-09-04"), d("2024-09-10"))
        );
        assert_eq!(p.start, ts("2024-09-04T00:00:00Z"));
        assert_eq!(p.end, ts("2024-09-11T00:00:00Z"));
        let p = resolve(DateRange::Day, now, &utc(), None).unwrap();
        assert_eq!(
            (p.first_day, p.last_day),
            (d("2024-09-10"), d("2024-09-10"))
        );
        let p = resolve(DateRange::Month, now, &utc(), None).unwrap();
        assert_eq!(
            (p.first_day, p.last_day),
            (d("2024-09-01"), d("2024-09-30"))
        );
        let p = resolve(DateRange::Months(6), now, &utc(), None).unwrap();
        assert_eq!(
            (p.first_day, p.last_day),
            (d("2024-04-01"), d("2024-09-30"))
        );
        let p = resolve(DateRange::Months(12), now, &utc(), None).unwrap();
        assert_eq!(
            (p.first_day, p.last_day),
            (d("2023-10-01"), d("2024-09-30"))
        );
        let p = resolve(DateRange::Year, now, &utc(), None).unwrap();
        assert_eq!(
            (p.first_day, p.last_day),
            (d("2024-01-01"), d("2024-12-31"))
        );
        let p = resolve(DateRange::All, now, &utc(), Some(d("2021-09-26"))).unwrap();
        assert_eq!(
            (p.first_day, p.last_day),
            (d("2021-09-26"), d("2024-09-10"))
        );
        let p = resolve(DateRange::All, now, &utc(), None).unwrap();
        assert_eq!(p.first_day, d("2024-09-10"));
        let p = resolve(DateRange::Hours24, now, &utc(), None).unwrap();
        assert_eq!(p.start, ts("2024-09-09T15:30:00Z"));
        assert_eq!(p.end, ts("2024-09-10T15:30:01Z"));
        assert!(!p.whole_days);
    }

    #[test]
    fn today_is_the_sites_today() {
        // 23:30 UTC on the 10th is already the 11th in Berlin (+02:00 in September).
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let p = resolve(DateRange::Day, ts("2024-09-10T23:30:00Z"), &berlin, None).unwrap();
        assert_eq!(p.first_day, d("2024-09-11"));
        assert_eq!(p.start, ts("2024-09-10T22:00:00Z"));
        assert_eq!(p.end, ts("2024-09-11T22:00:00Z"));
    }

    #[test]
    fn dst_days_have_their_real_length() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 2024-03-31: clocks go from 02:00 to 03:00 (23 hours).
        let p = days(d("2024-03-31"), d("2024-03-31"), &berlin).unwrap();
        assert_eq!(p.end.as_second() - p.start.as_second(), 23 * 3600);
        let hours = time_labels(&p, TimeDimension::Hour, &berlin).unwrap();
        assert_eq!(hours.len(), 23);
        assert!(!hours.contains(&"2024-03-31 02:00:00".to_owned()));
        // 2024-10-27: 02:00-03:00 happens twice (25 hours, 24 distinct labels).
        let p = days(d("2024-10-27"), d("2024-10-27"), &berlin).unwrap();
        assert_eq!(p.end.as_second() - p.start.as_second(), 25 * 3600);
        let hours = time_labels(&p, TimeDimension::Hour, &berlin).unwrap();
        assert_eq!(hours.len(), 24);
        assert_eq!(hours.first().unwrap(), "2024-10-27 00:00:00");
        assert_eq!(hours.last().unwrap(), "2024-10-27 23:00:00");
        // A day bucket over the change is still one label per local day.
        let p = days(d("2024-10-26"), d("2024-10-28"), &berlin).unwrap();
        assert_eq!(
            time_labels(&p, TimeDimension::Day, &berlin).unwrap(),
            ["2024-10-26", "2024-10-27", "2024-10-28"]
        );
    }

    #[test]
    fn week_and_month_labels() {
        // 2024-09-04 is a Wednesday: the first week bucket starts on the range's day.
        let p = days(d("2024-09-04"), d("2024-09-23"), &utc()).unwrap();
        assert_eq!(
            time_labels(&p, TimeDimension::Week, &utc()).unwrap(),
            ["2024-09-04", "2024-09-09", "2024-09-16", "2024-09-23"]
        );
        let p = days(d("2024-01-15"), d("2024-03-02"), &utc()).unwrap();
        assert_eq!(
            time_labels(&p, TimeDimension::Month, &utc()).unwrap(),
            ["2024-01-01", "2024-02-01", "2024-03-01"]
        );
        assert_eq!(
            time_labels(&p, TimeDimension::Weekday, &utc())
                .unwrap()
                .len(),
            7
        );
    }

    #[test]
    fn auto_bucket_by_length() {
        let now = ts("2024-09-10T12:00:00Z");
        let bucket = |r| auto_bucket(&resolve(r, now, &utc(), None).unwrap());
        assert_eq!(bucket(DateRange::Day), TimeDimension::Hour);
        assert_eq!(bucket(DateRange::Days(2)), TimeDimension::Hour);
        assert_eq!(bucket(DateRange::Days(7)), TimeDimension::Day);
        assert_eq!(bucket(DateRange::Days(30)), TimeDimension::Day);
        assert_eq!(bucket(DateRange::Days(91)), TimeDimension::Week);
        assert_eq!(bucket(DateRange::Months(12)), TimeDimension::Week);
        assert_eq!(bucket(DateRange::Months(24)), TimeDimension::Month);
    }

    #[test]
    fn comparisons() {
        let p = days(d("2024-09-04"), d("2024-09-10"), &utc()).unwrap();
        let prev = comparison(&p, Comparison::PreviousPeriod, &utc()).unwrap();
        assert_eq!(
            (prev.first_day, prev.last_day),
            (d("2024-08-28"), d("2024-09-03"))
        );
        let yoy = comparison(&p, Comparison::YearOverYear, &utc()).unwrap();
        assert_eq!(
            (yoy.first_day, yoy.last_day),
            (d("2023-09-04"), d("2023-09-10"))
        );
        let leap = days(d("2024-02-29"), d("2024-02-29"), &utc()).unwrap();
        let yoy = comparison(&leap, Comparison::YearOverYear, &utc()).unwrap();
        assert_eq!(yoy.first_day, d("2023-02-28"));
        let custom = comparison(
            &p,
            Comparison::Custom(d("2020-01-01"), d("2020-01-31")),
            &utc(),
        )
        .unwrap();
        assert_eq!(custom.last_day, d("2020-01-31"));
        let last24 = resolve(DateRange::Hours24, ts("2024-09-10T12:00:00Z"), &utc(), None).unwrap();
        let prev = comparison(&last24, Comparison::PreviousPeriod, &utc()).unwrap();
        assert_eq!(prev.end, last24.start);
        assert_eq!(
            prev.end.as_second() - prev.start.as_second(),
            last24.end.as_second() - last24.start.as_second()
        );
    }

    #[test]
    fn minute_buckets_over_long_ranges_are_refused() {
        let p = days(d("2024-01-01"), d("2024-01-31"), &utc()).unwrap();
        assert!(time_labels(&p, TimeDimension::Minute, &utc()).is_err());
        let p = resolve(DateRange::Hours24, ts("2024-09-10T12:00:30Z"), &utc(), None).unwrap();
        // 24 h and the started minute.
        assert_eq!(
            time_labels(&p, TimeDimension::Minute, &utc())
                .unwrap()
                .len(),
            24 * 60 + 1
        );
    }
}
