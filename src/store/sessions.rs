//! Finished visits, one row each, in `sessions` (schema `0006_sessions.sql`): built
//! here from `events` so that the visit queries of `query::sql` read one row per
//! visit instead of grouping every event of the period by visit.
//!
//! # What a build holds, and when a query may use it
//!
//! A build of (site, UTC day D) is every visit whose first non-engagement row is on
//! D (none on D-1), computed from the non-engagement rows of D and D+1, and one row
//! per anonymous row of D; each with the values the visit plan computes per visit
//! ([`VISIT_ATTRIBUTES`], [`VISITOR_COLUMNS`], counts, first and last time). It is
//! recorded in `session_days` with the `event_days` counts (rows inserted per UTC
//! day, a materialized view) of D-1, D and D+1 when it was built, and the query side
//! (`query::sessions`) uses it only while the three are unchanged, so a stored
//! answer never differs from the one `events` gives:
//!
//! - A day is built once D+1 is over (UTC), so live traffic no longer changes it.
//! - Rows that arrive later (a spool replayed after an outage) change a count: the
//!   day is read from `events` until it is built again. A purge, an erasure or a
//!   site deletion deletes the builds of the days it touched ([`expire`],
//!   [`forget_days`], [`forget_site`]).
//! - The counts are taken before and after the build; a build that saw them move is
//!   not recorded.
//! - A visit of D must end before D+2 minus the visit timeout (so that it cannot
//!   continue into D+2 without a new row on D+1, which would change a count), and no
//!   visit may have rows on both D-1 and D+1 (so a visit reaches at most the day
//!   after the one it started on, which the query's split of rows relies on). A day
//!   that breaks either is recorded as not usable (`build = 0`) until its counts
//!   change.
//!
//! Rows of a superseded or unrecorded build are deleted in the background; a query
//! reads only the recorded build of each day, so they are never counted meanwhile.
//!
//! A build also writes the day's hourly rollups of its non-engagement rows
//! (`hourly_pages` and `hourly_totals`, schema `0007_hourly.sql`: per UTC hour, and
//! per event name, hostname and path, the `uniq` state of the visitors and the row
//! counts), under the same build id and the same
//! record, so the per-row panels (pages, goals, the visitors graph) read a usable
//! day's hours from there by the same checks (`query::sql`, `Builder::rolled`).
//!
//! Receives: a ClickHouse client and plain values. Runs in `serve` every
//! `stats.sessions_build_interval_secs` ([`spawn_scheduler`]), and from
//! `hush sessions build`.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;

use super::Timeouts;
use crate::db::timed;

/// Visit attributes that are joined from the visit's first (or last) page view. The
/// order key is one `UInt64` (page views first, then time) rather than a tuple:
/// ClickHouse compares it three times faster (measured: 3.0 s against 8.6 s for
/// 8M rows grouped into 2M visits).
pub const VISIT_ATTRIBUTES: &[(&str, &str)] = &[
    (
        "a_source",
        "argMin(source, bitShiftLeft(toUInt64(name != 'pageview'), 32) + toUInt32(timestamp))",
    ),
    (
        "a_referrer",
        "argMin(if(referrer_host = '', '', concat(referrer_host, referrer_path)), bitShiftLeft(toUInt64(name != 'pageview'), 32) + toUInt32(timestamp))",
    ),
    (
        "a_channel",
        "argMin(channel, bitShiftLeft(toUInt64(name != 'pageview'), 32) + toUInt32(timestamp))",
    ),
    (
        "a_utm_medium",
        "argMin(utm_medium, bitShiftLeft(toUInt64(name != 'pageview'), 32) + toUInt32(timestamp))",
    ),
    (
        "a_utm_source",
        "argMin(utm_source, bitShiftLeft(toUInt64(name != 'pageview'), 32) + toUInt32(timestamp))",
    ),
    (
        "a_utm_campaign",
        "argMin(utm_campaign, bitShiftLeft(toUInt64(name != 'pageview'), 32) + toUInt32(timestamp))",
    ),
    (
        "a_utm_content",
        "argMin(utm_content, bitShiftLeft(toUInt64(name != 'pageview'), 32) + toUInt32(timestamp))",
    ),
    (
        "a_utm_term",
        "argMin(utm_term, bitShiftLeft(toUInt64(name != 'pageview'), 32) + toUInt32(timestamp))",
    ),
    (
        "a_entry_hostname",
        "argMin(hostname, bitShiftLeft(toUInt64(name != 'pageview'), 32) + toUInt32(timestamp))",
    ),
    (
        "a_exit_page",
        "argMax(pathname, bitShiftLeft(toUInt64(name = 'pageview'), 32) + toUInt32(timestamp))",
    ),
    (
        "a_exit_hostname",
        "argMax(hostname, bitShiftLeft(toUInt64(name = 'pageview'), 32) + toUInt32(timestamp))",
    ),
];

/// Columns constant within a visitor (and so within a visit), read off any of its rows.
pub const VISITOR_COLUMNS: &[&str] = &[
    "entry_page",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
    "country",
    "region",
    "city_geoname_id",
    "city",
];

/// The columns of `sessions` after `site, day, build`, in order, each with the
/// aggregate over a visit's rows that fills it.
fn visit_columns() -> Vec<(&'static str, &'static str)> {
    let mut cols = vec![
        ("session_id", "session_id"),
        ("visitor_id", "any(visitor_id)"),
        ("start", "min(timestamp)"),
        ("end", "max(timestamp)"),
        ("pageviews", "countIf(name = 'pageview')"),
        ("events", "count()"),
        (
            "interactive",
            "countIf(name != 'pageview' AND interactive = 1)",
        ),
    ];
    for col in VISITOR_COLUMNS {
        // Constant within a visitor: any row's value.
        cols.push((col, ""));
    }
    cols.extend(VISIT_ATTRIBUTES.iter().copied());
    cols
}

/// The statement that writes a build of `{site}`'s `{day}` as `{build}`.
fn build_statement() -> String {
    let cols = visit_columns();
    let names: Vec<&str> = cols.iter().map(|(c, _)| *c).collect();
    let exprs: Vec<String> = cols
        .iter()
        .map(|(c, e)| match *e {
            "" => format!("any({c}) AS {c}"),
            e if e == *c => (*c).to_owned(),
            e => format!("{e} AS {c}"),
        })
        .collect();
    format!(
        "INSERT INTO sessions (site, day, build, {names}) \
         SELECT {{site:String}}, {{day:Date}}, {{build:UInt64}}, {names} FROM (\
         SELECT {exprs} FROM events \
         WHERE site = {{site:String}} AND toDate(timestamp) IN ({{day:Date}}, {{day:Date}} + 1) \
         AND name != 'engagement' \
         AND session_id NOT IN (SELECT session_id FROM events WHERE site = {{site:String}} \
         AND toDate(timestamp) = {{day:Date}} - 1 AND name != 'engagement' AND session_id != 0) \
         GROUP BY session_id, if(session_id = 0, rowNumberInAllBlocks(), 0) \
         HAVING toDate(start) = {{day:Date}})",
        names = names.join(", "),
        exprs = exprs.join(", "),
    )
}

/// The tables a build writes, beside its record in `session_days`.
const BUILT: &[&str] = &["sessions", "hourly_pages", "hourly_totals"];

/// The statements that write the hourly rows of a build of `{site}`'s `{day}`.
const HOURLY_STATEMENTS: [&str; 2] = [
    "INSERT INTO hourly_pages (site, day, build, hour, name, hostname, pathname, visitors, rows) \
     SELECT {site:String}, {day:Date}, {build:UInt64}, toStartOfHour(timestamp) AS h, name, hostname, pathname, \
     uniqStateIf(visitor_id, visitor_id != 0), count() FROM events \
     WHERE site = {site:String} AND toDate(timestamp) = {day:Date} AND name != 'engagement' \
     GROUP BY h, name, hostname, pathname",
    "INSERT INTO hourly_totals (site, day, build, hour, visitors, pageviews, events) \
     SELECT {site:String}, {day:Date}, {build:UInt64}, toStartOfHour(timestamp) AS h, \
     uniqStateIf(visitor_id, visitor_id != 0), countIf(name = 'pageview'), count() FROM events \
     WHERE site = {site:String} AND toDate(timestamp) = {day:Date} AND name != 'engagement' \
     GROUP BY h",
];

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    /// ClickHouse refused or did not answer; the day is tried again next run.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

impl From<SessionsError> for super::purge::PurgeError {
    fn from(e: SessionsError) -> Self {
        match e {
            SessionsError::ClickHouse(e) => Self::ClickHouse(e),
        }
    }
}

/// Why a day was not recorded as usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its rows changed while it was built (tried again next run).
    Changed,
    /// A visit lasts too long for a build (recorded as not usable until the day's
    /// rows change).
    LongVisit,
}

/// What one run did for one site.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BuildReport {
    /// Days built and recorded.
    pub built: Vec<Date>,
    /// Days not recorded as usable, and why.
    pub skipped: Vec<(Date, Skip)>,
    /// Days that were due but left for the next run (`max_days`).
    pub left: usize,
}

/// Builds and records the `sessions` of the days that need it.
#[derive(Clone)]
pub struct SessionBuilder {
    client: clickhouse::Client,
    timeouts: Timeouts,
    /// `session.timeout_secs`: how long a visit goes on without a row.
    visit_timeout_secs: u32,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct DayCount {
    n: u16,
    rows: u64,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Recorded {
    n: u16,
    rows_prev: u64,
    rows_day: u64,
    rows_next: u64,
    hourly: u8,
}

/// The rows of the day before `day`, of `day` and of the day after, in `counts`.
fn rows_around(counts: &HashMap<u16, u64>, day: u16) -> [u64; 3] {
    let at = |d: Option<u16>| d.and_then(|d| counts.get(&d)).copied().unwrap_or(0);
    [
        at(day.checked_sub(1)),
        at(Some(day)),
        at(day.checked_add(1)),
    ]
}

/// The date `days` after 1970-01-01 (ClickHouse's `Date` as a number).
pub fn date_of(days: u16) -> Date {
    Date::constant(1970, 1, 1)
        .checked_add(jiff::Span::new().days(i64::from(days)))
        .unwrap_or(Date::constant(1970, 1, 1))
}

/// ClickHouse's `Date` number of `date` (0 before 1970, saturated after 2149).
pub fn days_of(date: Date) -> u16 {
    let days = date
        .since(Date::constant(1970, 1, 1))
        .map(|s| s.get_days())
        .unwrap_or(0);
    u16::try_from(days.max(0)).unwrap_or(u16::MAX)
}

impl SessionBuilder {
    pub fn new(client: clickhouse::Client, timeouts: Timeouts, visit_timeout_secs: u64) -> Self {
        Self {
            client,
            timeouts,
            visit_timeout_secs: u32::try_from(visit_timeout_secs).unwrap_or(u32::MAX),
        }
    }

    /// `event_days` counts of `site` per UTC day, for the days from `from` (all when
    /// `None`).
    async fn day_counts(
        &self,
        site: &str,
        from: Option<u16>,
    ) -> Result<HashMap<u16, u64>, SessionsError> {
        let rows = timed(
            self.timeouts.query,
            self.client
                .query(
                    "SELECT toUInt16(day) AS n, sum(rows) AS rows FROM event_days \
                     WHERE site = {site:String} AND day >= toDate({from:UInt16}) GROUP BY n",
                )
                .param("site", site)
                .param("from", from.unwrap_or(0))
                .fetch_all::<DayCount>(),
        )
        .await?;
        Ok(rows.into_iter().map(|r| (r.n, r.rows)).collect())
    }

    /// The latest record of each built day of `site`.
    async fn recorded(&self, site: &str) -> Result<HashMap<u16, Recorded>, SessionsError> {
        let rows = timed(
            self.timeouts.query,
            self.client
                .query(
                    "SELECT toUInt16(day) AS n, argMax(rows_prev, built_at) AS rows_prev, argMax(rows_day, built_at) AS rows_day, argMax(rows_next, built_at) AS rows_next, \
                     argMax(hourly, built_at) AS hourly \
                     FROM session_days WHERE site = {site:String} GROUP BY n",
                )
                .param("site", site)
                .fetch_all::<Recorded>(),
        )
        .await?;
        Ok(rows.into_iter().map(|r| (r.n, r)).collect())
    }

    /// Builds every day of `site` that is over (with the day after it) as of `now`
    /// and has no build for its current rows, oldest first, at most `max_days`.
    pub async fn build_site(
        &self,
        site: &str,
        now: Timestamp,
        max_days: usize,
    ) -> Result<BuildReport, SessionsError> {
        let today = days_of(now.to_zoned_datetime(jiff::tz::TimeZone::UTC).date());
        // The days come from `events` itself: rows stored before `event_days` existed
        // are not counted there.
        let stored = timed(
            self.timeouts.query,
            self.client
                .query(
                    "SELECT DISTINCT toUInt16(toDate(timestamp)) FROM events WHERE site = {site:String}",
                )
                .param("site", site)
                .fetch_all::<u16>(),
        )
        .await?;
        let counts = self.day_counts(site, None).await?;
        let recorded = self.recorded(site).await?;
        // And the empty day before each stored one: a built day after an unbuilt one
        // costs the query a scan of it.
        let mut days: Vec<u16> = stored
            .iter()
            .flat_map(|d| [d.saturating_sub(1), *d])
            .collect();
        days.sort_unstable();
        days.dedup();
        let mut due: Vec<(u16, [u64; 3])> = days
            .iter()
            .filter(|day| u32::from(**day) + 2 <= u32::from(today))
            .map(|day| (*day, rows_around(&counts, *day)))
            .filter(|(day, rows)| {
                // Builds recorded before `hourly` existed are made again.
                recorded.get(day).is_none_or(|r| {
                    [r.rows_prev, r.rows_day, r.rows_next] != *rows || r.hourly == 0
                })
            })
            .collect();
        due.sort_unstable();
        let mut report = BuildReport {
            left: due.len().saturating_sub(max_days),
            ..BuildReport::default()
        };
        for (day, rows) in due.into_iter().take(max_days) {
            match self.build_day(site, day, rows).await? {
                None => report.built.push(date_of(day)),
                Some(skip) => report.skipped.push((date_of(day), skip)),
            }
        }
        Ok(report)
    }

    /// Builds `day` of `site`, expected to have `rows` rows on the day before, the
    /// day and the day after, and records it; `Some` when it is not recorded as
    /// usable.
    async fn build_day(
        &self,
        site: &str,
        day: u16,
        rows: [u64; 3],
    ) -> Result<Option<Skip>, SessionsError> {
        let date = date_of(day).to_string();
        let build = loop {
            let b = rand::random::<u64>();
            if b != 0 {
                break b;
            }
        };
        timed(
            self.timeouts.mutation,
            self.client
                .query(&build_statement())
                .param("site", site)
                .param("day", &date)
                .param("build", build)
                .execute(),
        )
        .await?;
        for statement in HOURLY_STATEMENTS {
            timed(
                self.timeouts.mutation,
                self.client
                    .query(statement)
                    .param("site", site)
                    .param("day", &date)
                    .param("build", build)
                    .execute(),
            )
            .await?;
        }
        let after = self.day_counts(site, Some(day.saturating_sub(1))).await?;
        let unchanged = rows_around(&after, day) == rows;
        let skip = if !unchanged {
            Some(Skip::Changed)
        } else if self.long_visit(site, day).await? {
            Some(Skip::LongVisit)
        } else {
            None
        };
        if skip != Some(Skip::Changed) {
            let recorded_build = if skip.is_none() { build } else { 0 };
            timed(
                self.timeouts.query,
                self.client
                    .query(
                        "INSERT INTO session_days (site, day, build, built_at, rows_prev, rows_day, rows_next, hourly) \
                         SELECT {site:String}, {day:Date}, {build:UInt64}, now(), {prev:UInt64}, {rows:UInt64}, {next:UInt64}, 1",
                    )
                    .param("site", site)
                    .param("day", &date)
                    .param("build", recorded_build)
                    .param("prev", rows[0])
                    .param("rows", rows[1])
                    .param("next", rows[2])
                    .execute(),
            )
            .await?;
        }
        let keep = if skip.is_none() { build } else { 0 };
        // Older builds of the day (and this one, if not recorded): never read again.
        // A background mutation: queries already ignore them.
        for table in BUILT {
            delete_where(
                &self.client,
                self.timeouts.query,
                table,
                "site = {site:String} AND day = {day:Date} AND build != {keep:UInt64}",
                false,
                |q| {
                    q.param("site", site)
                        .param("day", &date)
                        .param("keep", keep)
                },
            )
            .await?;
        }
        Ok(skip)
    }

    /// Whether a visit with rows on `day` may continue past the day after it (it has
    /// a row, of any kind, within the visit timeout of that day's end), or a visit
    /// has rows on both the day before and the day after `day`.
    async fn long_visit(&self, site: &str, day: u16) -> Result<bool, SessionsError> {
        let late = timed(
            self.timeouts.query,
            self.client
                .query(
                    "SELECT count() FROM events WHERE site = {site:String} \
                     AND toDate(timestamp) = toDate({day:UInt16}) + 1 AND session_id != 0 \
                     AND toUInt32(timestamp) + {timeout:UInt32} >= toUInt32(toDateTime(toDate({day:UInt16}) + 2, 'UTC')) \
                     AND session_id IN (SELECT session_id FROM events WHERE site = {site:String} \
                     AND toDate(timestamp) = toDate({day:UInt16}) AND session_id != 0)",
                )
                .param("site", site)
                .param("day", day)
                .param("timeout", self.visit_timeout_secs)
                .fetch_one::<u64>(),
        )
        .await?;
        if late > 0 || day == 0 {
            return Ok(late > 0);
        }
        let spanning = timed(
            self.timeouts.query,
            self.client
                .query(
                    "SELECT count() FROM events WHERE site = {site:String} \
                     AND toDate(timestamp) = toDate({day:UInt16}) + 1 AND session_id != 0 \
                     AND session_id IN (SELECT session_id FROM events WHERE site = {site:String} \
                     AND toDate(timestamp) = toDate({day:UInt16}) - 1 AND session_id != 0)",
                )
                .param("site", site)
                .param("day", day)
                .fetch_one::<u64>(),
        )
        .await?;
        Ok(spanning > 0)
    }
}

/// Deletes the rows of `table` where `cond` holds, its parameters bound by `bind`;
/// with `wait`, once the mutation has run on every replica (`mutations_sync = 2`).
async fn delete_where(
    client: &clickhouse::Client,
    timeout: Duration,
    table: &str,
    cond: &str,
    wait: bool,
    bind: impl Fn(clickhouse::query::Query) -> clickhouse::query::Query,
) -> Result<(), SessionsError> {
    timed(
        timeout,
        bind(client.query(&format!("ALTER TABLE {table} DELETE WHERE {cond}")))
            .with_setting("mutations_sync", if wait { "2" } else { "0" })
            .execute(),
    )
    .await?;
    Ok(())
}

/// Makes the builds of `days` (UTC days of `site`), and of the days next to them,
/// unusable and deletes their rows, after rows of those days were deleted from
/// `events` (an erasure): a build holds values of the rows it was made from. The
/// builder makes them again from what is left.
pub async fn forget_days(
    client: &clickhouse::Client,
    timeouts: Timeouts,
    site: &str,
    days: &[u16],
) -> Result<(), SessionsError> {
    if days.is_empty() {
        return Ok(());
    }
    let mut around: Vec<u16> = days
        .iter()
        .flat_map(|d| [d.saturating_sub(1), *d, d.saturating_add(1)])
        .collect();
    around.sort_unstable();
    around.dedup();
    // The record first: a query that reads between two deletes finds the day unusable.
    for table in ["session_days"].iter().chain(BUILT) {
        delete_where(
            client,
            timeouts.mutation,
            table,
            "site = {site:String} AND has({days:Array(UInt16)}, toUInt16(day))",
            true,
            |q| q.param("site", site).param("days", &around),
        )
        .await?;
    }
    Ok(())
}

/// Deletes every build and count of `site` (site deletion).
pub async fn forget_site(
    client: &clickhouse::Client,
    timeouts: Timeouts,
    site: &str,
) -> Result<(), SessionsError> {
    for table in ["session_days"].iter().chain(BUILT).chain(&["event_days"]) {
        delete_where(
            client,
            timeouts.mutation,
            table,
            "site = {site:String}",
            true,
            |q| q.param("site", site),
        )
        .await?;
    }
    Ok(())
}

/// Deletes the builds and counts of the days up to each site's retention cutoff
/// (`expired_day`: an expression of the row's `site`, its parameters bound by
/// `bind`), and the builds of the day after (its visits' values included rows now
/// purged), for the purge.
pub async fn expire(
    client: &clickhouse::Client,
    timeouts: Timeouts,
    expired_day: &str,
    bind: impl Fn(clickhouse::query::Query) -> clickhouse::query::Query,
) -> Result<(), SessionsError> {
    let built = format!("day <= {expired_day} + 1");
    let counts = format!("day < {expired_day}");
    let tables = ["session_days"].iter().chain(BUILT).map(|t| (*t, &built));
    for (table, cond) in tables.chain([("event_days", &counts)]) {
        delete_where(client, timeouts.mutation, table, cond, true, &bind).await?;
    }
    Ok(())
}

/// Builds the due days of every site in `sites` every `interval`, from the first
/// tick once `schema_current` is true; `None` when `interval` is zero. The task ends when `shutdown` fires; a
/// build in progress is simply abandoned (an unrecorded build is never read).
pub fn spawn_scheduler(
    builder: SessionBuilder,
    sites: Vec<String>,
    interval: Duration,
    mut schema_current: tokio::sync::watch::Receiver<bool>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        // The tables may not exist before the migrations ran (a degraded start).
        tokio::select! {
            r = schema_current.wait_for(|current| *current) => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            for site in &sites {
                let run = builder.build_site(site, Timestamp::now(), MAX_DAYS_PER_RUN);
                let report = tokio::select! {
                    r = run => r,
                    _ = shutdown.changed() => return,
                };
                match report {
                    Ok(r) if r.built.is_empty() && r.skipped.is_empty() => {}
                    Ok(r) => tracing::info!(
                        site = %site,
                        built = r.built.len(),
                        skipped = r.skipped.len(),
                        left = r.left,
                        "sessions built"
                    ),
                    Err(e) => {
                        tracing::warn!(site = %site, error = %e, "sessions build failed; retried next run")
                    }
                }
            }
        }
    }))
}

/// Days one scheduled run builds per site at most: a first start over a long history
/// catches up over several runs instead of holding ClickHouse for one long one.
pub const MAX_DAYS_PER_RUN: usize = 62;
