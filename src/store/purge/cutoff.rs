//! Cutoffs: which instant a site's retention ends at, and the time arithmetic around it
//! (monthly partition bounds, ClickHouse `DateTime` seconds).

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use super::{PurgeError, time_err};
use crate::config::{RetentionConfig, SiteConfig};

/// The retention rule of one site.
#[derive(Debug, Clone)]
pub struct SitePolicy {
    pub site: String,
    pub time_zone: TimeZone,
    pub tz_name: String,
    pub retention_days: u32,
}

impl SitePolicy {
    pub fn from_config(site: &SiteConfig, retention: &RetentionConfig) -> Result<Self, PurgeError> {
        let time_zone = TimeZone::get(&site.timezone).map_err(time_err(&site.timezone))?;
        Ok(Self {
            site: site.domain.clone(),
            time_zone,
            tz_name: site.timezone.clone(),
            retention_days: site.retention_days(retention),
        })
    }

    /// Rows of sites that are no longer configured still go, after the default retention
    /// counted in UTC: removing a site from the configuration must not keep its data forever.
    pub fn unconfigured(site: &str, retention: &RetentionConfig) -> Self {
        Self {
            site: site.to_owned(),
            time_zone: TimeZone::UTC,
            tz_name: "UTC".into(),
            retention_days: retention.default_days,
        }
    }

    pub fn cutoff(&self, now: Timestamp) -> Result<Timestamp, PurgeError> {
        site_cutoff(now, &self.time_zone, self.retention_days)
    }
}

/// Start of the local day `retention_days` days before today (in `tz`), as a UTC instant.
/// Rows strictly before it are past retention. A midnight that a DST change skips is
/// resolved to the first instant of that local day.
pub fn site_cutoff(
    now: Timestamp,
    tz: &TimeZone,
    retention_days: u32,
) -> Result<Timestamp, PurgeError> {
    let today = now.to_zoned_datetime(tz.clone()).date();
    let first_kept = today
        .checked_sub(
            Span::new()
                .try_days(i64::from(retention_days))
                .map_err(time_err("retention_days"))?,
        )
        .map_err(time_err("retention_days"))?;
    let start = first_kept
        .to_zoned_datetime(tz.clone())
        .and_then(|z| z.start_of_day())
        .map_err(time_err("cutoff"))?;
    Ok(start.timestamp())
}

/// UTC bounds `[start, end)` of the monthly partition `yyyymm`.
pub fn month_bounds(yyyymm: u32) -> Option<(Timestamp, Timestamp)> {
    let year = i16::try_from(yyyymm / 100).ok()?;
    let month = i8::try_from(yyyymm % 100).ok()?;
    let start = jiff::civil::Date::new(year, month, 1).ok()?;
    let end = start.checked_add(Span::new().months(1)).ok()?;
    let utc = |d: jiff::civil::Date| {
        d.to_zoned_datetime(TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    };
    Some((utc(start)?, utc(end)?))
}

/// `DateTime` columns hold unsigned seconds; instants before 1970 clamp to 0 (nothing is older).
pub fn to_db_seconds(ts: Timestamp) -> u32 {
    u32::try_from(ts.as_second().max(0)).unwrap_or(u32::MAX)
}

pub fn now_millis(now: Timestamp) -> i64 {
    now.as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn utc_cutoff_is_start_of_day_n_days_ago() {
        let now = ts("2025-03-10T15:00:00Z");
        let c = site_cutoff(now, &TimeZone::UTC, 30).unwrap();
        assert_eq!(c, ts("2025-02-08T00:00:00Z"));
        // Just after midnight the day is already "today".
        let c = site_cutoff(ts("2025-03-10T00:00:00Z"), &TimeZone::UTC, 1).unwrap();
        assert_eq!(c, ts("2025-03-09T00:00:00Z"));
        let c = site_cutoff(ts("2025-03-09T23:59:59Z"), &TimeZone::UTC, 1).unwrap();
        assert_eq!(c, ts("2025-03-08T00:00:00Z"));
    }

    #[test]
    fn local_day_decides_not_utc_day() {
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        // 20:00 UTC on the 10th is already the 11th in Tokyo (+09:00).
        let c = site_cutoff(ts("2025-03-10T20:00:00Z"), &tokyo, 10).unwrap();
        // Local 2025-03-01T00:00+09:00 = 2025-02-28T15:00Z.
        assert_eq!(c, ts("2025-02-28T15:00:00Z"));
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        // 03:00 UTC on the 10th is still the 9th in LA.
        let c = site_cutoff(ts("2025-07-10T03:00:00Z"), &la, 9).unwrap();
        // Local 2025-06-30T00:00-07:00 = 2025-06-30T07:00Z.
        assert_eq!(c, ts("2025-06-30T07:00:00Z"));
    }

    #[test]
    fn dst_changes_are_respected() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // Winter cutoff (+01:00) computed from a summer "now" (+02:00).
        let c = site_cutoff(ts("2025-04-15T12:00:00Z"), &berlin, 30).unwrap();
        assert_eq!(c, ts("2025-03-15T23:00:00Z"));
        // A zone whose midnight was skipped: Sao Paulo 2018-11-04 began at 01:00 (-02:00).
        let sp = TimeZone::get("America/Sao_Paulo").unwrap();
        let c = site_cutoff(ts("2018-11-05T12:00:00Z"), &sp, 1).unwrap();
        assert_eq!(c, ts("2018-11-04T03:00:00Z"));
    }

    #[test]
    fn cutoff_rejects_absurd_retention() {
        assert!(site_cutoff(ts("2025-01-01T00:00:00Z"), &TimeZone::UTC, u32::MAX).is_err());
    }

    #[test]
    fn month_bounds_cover_the_month() {
        assert_eq!(
            month_bounds(202302),
            Some((ts("2023-02-01T00:00:00Z"), ts("2023-03-01T00:00:00Z")))
        );
        assert_eq!(
            month_bounds(202312),
            Some((ts("2023-12-01T00:00:00Z"), ts("2024-01-01T00:00:00Z")))
        );
        assert_eq!(month_bounds(202313), None);
        assert_eq!(month_bounds(202300), None);
    }

    #[test]
    fn db_seconds_clamp() {
        assert_eq!(to_db_seconds(ts("1969-12-31T00:00:00Z")), 0);
        assert_eq!(to_db_seconds(ts("2025-01-01T00:00:00Z")), 1_735_689_600);
    }
}
