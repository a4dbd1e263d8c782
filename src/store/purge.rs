//! Retention: deletes every hit older than its site's retention, checks the salt
//! lifecycle, and records every action in `purge_log`.
//!
//! # Cutoffs
//! A site keeps `retention_days` whole local days before today: the cutoff is the start
//! of the local day `retention_days` days ago in the site's time zone, converted to UTC,
//! and every row with `timestamp < cutoff` goes. Day precision in the site's zone means a
//! report for "the oldest kept day" is always complete, never half a day.
//!
//! # Methods
//! * A monthly partition (`toYYYYMM(timestamp)`, UTC) whose whole time range ends at or
//!   before every site's cutoff is dropped (`ALTER TABLE events DROP PARTITION`): cheap,
//!   and no row that could ever land in it is still within anyone's retention.
//! * Elsewhere, per site and month, a lightweight `DELETE ... IN PARTITION` of the rows
//!   older than the cutoff (falling back to a synchronous `ALTER TABLE ... DELETE`
//!   mutation where the table cannot take lightweight deletes), then a count that must
//!   be zero.
//!
//! Both only touch rows with `timestamp < cutoff`, in partitions that existed when the
//! statement started; hits arriving during a purge are newer than every cutoff and land
//! in new parts, so ingestion is neither blocked nor loses rows.
//!
//! The table TTL at `retention.max_days` is only a backstop for a purge that stopped
//! running; it is set here (not in a migration) because it depends on configuration.
//!
//! # One run at a time
//! See [`Lease`]: several collectors may schedule the purge; a lease row in ClickHouse
//! lets one of them run it. Every step is idempotent, so even a double run (which the
//! lease makes unlikely, not impossible) deletes nothing twice and loses nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clickhouse::Client;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::config::{Config, RetentionConfig, SiteConfig};

/// A purge, erasure or site deletion that failed.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("time computation for `{what}`: {source}")]
    Time {
        what: String,
        #[source]
        source: jiff::Error,
    },
    #[error("another purge is running (lease held by {owner})")]
    Busy { owner: String },
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The process is shutting down; the run stopped between two steps. Every step is
    /// idempotent, so the next run simply continues where this one stopped.
    #[error("stopped for shutdown before finishing")]
    Stopped,
}

/// A shutdown signal a purge checks between steps (never in the middle of one).
pub type StopSignal = tokio::sync::watch::Receiver<bool>;

/// `Err(Stopped)` once `stop` says so; the safe point between two purge steps.
fn check_stop(stop: Option<&StopSignal>) -> Result<(), PurgeError> {
    if stop.is_some_and(|s| *s.borrow()) {
        Err(PurgeError::Stopped)
    } else {
        Ok(())
    }
}

fn time_err(what: impl Into<String>) -> impl FnOnce(jiff::Error) -> PurgeError {
    let what = what.into();
    move |source| PurgeError::Time { what, source }
}

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

/// Random hex id of one run, shared by its `purge_log` rows.
pub fn new_run_id() -> String {
    let bytes: [u8; 16] = rand::random();
    crate::hex::encode(&bytes)
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// One summary row per purge run.
    Run,
    DryRun,
    DropPartition,
    Delete,
    Erase,
    SiteDelete,
    SaltCleanup,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Run => "run",
            Method::DryRun => "dry_run",
            Method::DropPartition => "drop_partition",
            Method::Delete => "delete",
            Method::Erase => "erase",
            Method::SiteDelete => "site_delete",
            Method::SaltCleanup => "salt_cleanup",
        }
    }
}

/// One row of `purge_log` (column order = table order). It never holds the values of a
/// data-subject selector (those may be a hashed user id): only which keys were used.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct PurgeLogRow {
    pub run_id: String,
    pub method: String,
    pub site: String,
    /// Monthly partition (`YYYYMM`) or empty.
    pub partition: String,
    /// Selector shape of an erasure (`props[plan], visitor_id`), empty otherwise.
    pub selector: String,
    /// `cli`, `scheduler`, or `admin:<token name>`.
    pub actor: String,
    /// Unix seconds; 0 when not applicable.
    pub cutoff: u32,
    pub rows_before: u64,
    pub rows_after: u64,
    /// Unix milliseconds.
    pub started: i64,
    pub finished: i64,
    /// `success`, `error`, `stopped` (shutdown between steps), `busy`.
    pub outcome: String,
    pub error: String,
}

/// Appends audit rows. A failure is returned, not swallowed: an action that could not be
/// recorded must not look recorded.
pub async fn write_log(client: &Client, rows: &[PurgeLogRow]) -> Result<(), PurgeError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<PurgeLogRow>("purge_log").await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}

/// The most recent `purge_log` rows, newest first.
pub async fn history(client: &Client, limit: u64) -> Result<Vec<PurgeLogRow>, PurgeError> {
    Ok(client
        .query("SELECT ?fields FROM purge_log ORDER BY started DESC, run_id, method LIMIT ?")
        .bind(limit)
        .fetch_all::<PurgeLogRow>()
        .await?)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErasureLabels {
    method: &'static str,
    outcome: &'static str,
}

/// `hush_purge_*` and `hush_erasures_*` metrics.
#[derive(Debug, Clone, Default)]
pub struct PurgeMetrics {
    runs: Family<OutcomeLabels, Counter>,
    rows_deleted: Counter,
    last_success: Gauge,
    erasures: Family<ErasureLabels, Counter>,
}

impl PurgeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "hush_purge_runs",
            "Retention purge runs by outcome (success, error, stopped, busy)",
            metrics.runs.clone(),
        );
        registry.register(
            "hush_purge_rows_deleted",
            "Rows removed by retention purges, erasures and site deletions",
            metrics.rows_deleted.clone(),
        );
        registry.register(
            "hush_purge_last_success_timestamp_seconds",
            "Unix time of the last successful purge run",
            metrics.last_success.clone(),
        );
        registry.register(
            "hush_erasures",
            "Data-subject erasures and site deletions by method (erase, site_delete) and \
             outcome (success, error)",
            metrics.erasures.clone(),
        );
        metrics
    }

    /// One erasure or site deletion (`method`: `erase` or `site_delete`): counted by
    /// outcome, and the rows it removed added to `hush_purge_rows_deleted_total`.
    pub fn record_erasure(&self, method: &'static str, removed: Result<u64, ()>) {
        let outcome = match removed {
            Ok(rows) => {
                self.rows_deleted.inc_by(rows);
                "success"
            }
            Err(()) => "error",
        };
        self.erasures
            .get_or_create(&ErasureLabels { method, outcome })
            .inc();
    }

    pub fn record_run(&self, outcome: &str) {
        self.runs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn record_deleted(&self, rows: u64) {
        self.rows_deleted.inc_by(rows);
    }

    pub fn record_success(&self, at: Timestamp) {
        self.last_success.set(at.as_second());
    }
}

/// Progress of a long run: a bar on a terminal, log lines otherwise.
pub trait Progress: Send + Sync {
    fn start(&self, steps: u64);
    fn step(&self, message: &str);
    fn finish(&self);
}

/// Progress as `tracing` lines (scheduler, admin API, non-terminal CLI).
pub struct LogProgress;

impl Progress for LogProgress {
    fn start(&self, steps: u64) {
        tracing::info!(steps, "purge started");
    }
    fn step(&self, message: &str) {
        tracing::info!("purge: {message}");
    }
    fn finish(&self) {}
}

/// Options of one purge run.
#[derive(Debug, Clone)]
pub struct PurgeOptions {
    /// The instant cutoffs are computed from; injectable so tests are deterministic.
    pub now: Timestamp,
    pub dry_run: bool,
    /// Recorded in `purge_log`: `cli`, `scheduler`, `admin:<name>`.
    pub actor: String,
}

/// Rows that go (or went) for one site in one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthAction {
    pub site: String,
    pub month: u32,
    pub method: Method,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteCutoff {
    pub site: String,
    pub timezone: String,
    pub retention_days: u32,
    pub cutoff: String,
    pub configured: bool,
}

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct PurgeReport {
    pub run_id: String,
    pub dry_run: bool,
    pub now: String,
    pub cutoffs: Vec<SiteCutoff>,
    pub actions: Vec<MonthAction>,
    pub dropped_partitions: Vec<u32>,
    pub rows_deleted: u64,
    /// Salts older than yesterday found (and, unless dry, deleted).
    pub stale_salts: u64,
    pub ttl_changed: bool,
}

impl PurgeReport {
    /// Human-readable summary for the CLI.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let _ = writeln!(out, "purge run {} at {}", self.run_id, self.now);
        for c in &self.cutoffs {
            let _ = writeln!(
                out,
                "  site {} ({} days, {}): rows before {} go",
                c.site, c.retention_days, c.timezone, c.cutoff
            );
        }
        for a in &self.actions {
            let _ = writeln!(
                out,
                "  {} {}: {verb} {} rows ({})",
                a.site,
                a.month,
                a.rows,
                a.method.as_str()
            );
        }
        let _ = writeln!(
            out,
            "total: {verb} {} rows; partitions dropped: {:?}; stale salts: {}",
            self.rows_deleted, self.dropped_partitions, self.stale_salts
        );
        out
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct MonthStat {
    site: String,
    month: u32,
    total: u64,
    expired: u64,
}

/// Runs retention purges against one database.
#[derive(Clone)]
pub struct Purger {
    client: Client,
    retention: RetentionConfig,
    sites: Vec<SitePolicy>,
    metrics: PurgeMetrics,
}

impl Purger {
    pub fn new(client: Client, config: &Config, metrics: PurgeMetrics) -> Result<Self, PurgeError> {
        let sites = config
            .sites
            .iter()
            .map(|s| SitePolicy::from_config(s, &config.retention))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            client: client.clone(),
            retention: config.retention.clone(),
            sites,
            metrics,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn metrics(&self) -> &PurgeMetrics {
        &self.metrics
    }

    /// Sets the backstop TTL to `retention.max_days` when the table has another (or none).
    /// Existing parts are not rewritten for it (`materialize_ttl_after_modify = 0`): the
    /// purge itself removes old rows; the TTL applies as parts merge.
    pub async fn ensure_ttl(&self) -> Result<bool, PurgeError> {
        let engine: String = self
            .client
            .query(
                "SELECT engine_full FROM system.tables \
                 WHERE database = currentDatabase() AND name = 'events'",
            )
            .fetch_one()
            .await?;
        if has_ttl_days(&engine, self.retention.max_days) {
            return Ok(false);
        }
        self.client
            .query("ALTER TABLE events MODIFY TTL timestamp + INTERVAL ? DAY")
            .bind(self.retention.max_days)
            .with_setting("materialize_ttl_after_modify", "0")
            .execute()
            .await?;
        tracing::info!(max_days = self.retention.max_days, "events table TTL set");
        Ok(true)
    }

    /// One purge run; records the summary in `purge_log` and the metrics, success or not.
    pub async fn run(
        &self,
        opts: &PurgeOptions,
        progress: &dyn Progress,
    ) -> Result<PurgeReport, PurgeError> {
        self.run_stoppable(opts, progress, None).await
    }

    /// [`Purger::run`] that ends with [`PurgeError::Stopped`] at the first safe point
    /// (between two steps) after `stop` turns true. What was done until then is logged.
    pub async fn run_until(
        &self,
        opts: &PurgeOptions,
        progress: &dyn Progress,
        stop: &StopSignal,
    ) -> Result<PurgeReport, PurgeError> {
        self.run_stoppable(opts, progress, Some(stop)).await
    }

    async fn run_stoppable(
        &self,
        opts: &PurgeOptions,
        progress: &dyn Progress,
        stop: Option<&StopSignal>,
    ) -> Result<PurgeReport, PurgeError> {
        let run_id = new_run_id();
        let started = now_millis(Timestamp::now());
        let mut log = Vec::new();
        let result = self
            .run_inner(&run_id, opts, progress, stop, &mut log)
            .await;
        progress.finish();
        let finished = now_millis(Timestamp::now());
        let (outcome, error, rows) = match &result {
            Ok(report) => ("success", String::new(), report.rows_deleted),
            Err(e @ PurgeError::Stopped) => ("stopped", e.to_string(), 0),
            Err(e) => ("error", e.to_string(), 0),
        };
        log.push(PurgeLogRow {
            run_id: run_id.clone(),
            method: if opts.dry_run {
                Method::DryRun
            } else {
                Method::Run
            }
            .as_str()
            .into(),
            site: String::new(),
            partition: String::new(),
            selector: String::new(),
            actor: opts.actor.clone(),
            cutoff: 0,
            rows_before: rows,
            rows_after: 0,
            started,
            finished,
            outcome: outcome.into(),
            error,
        });
        let logged = write_log(&self.client, &log).await;
        if !opts.dry_run {
            self.metrics.record_run(outcome);
            if result.is_ok() && logged.is_ok() {
                self.metrics.record_success(Timestamp::now());
            }
        }
        let report = result?;
        logged?;
        Ok(report)
    }

    async fn run_inner(
        &self,
        run_id: &str,
        opts: &PurgeOptions,
        progress: &dyn Progress,
        stop: Option<&StopSignal>,
        log: &mut Vec<PurgeLogRow>,
    ) -> Result<PurgeReport, PurgeError> {
        let ttl_changed = if opts.dry_run {
            false
        } else {
            self.ensure_ttl().await?
        };

        // Sites present in the table but not configured get the default retention.
        let present: Vec<String> = self
            .client
            .query("SELECT DISTINCT toString(site) FROM events")
            .fetch_all()
            .await?;
        let mut policies: BTreeMap<String, (SitePolicy, bool)> = self
            .sites
            .iter()
            .map(|p| (p.site.clone(), (p.clone(), true)))
            .collect();
        for site in present {
            policies
                .entry(site.clone())
                .or_insert_with(|| (SitePolicy::unconfigured(&site, &self.retention), false));
        }
        let mut cutoffs = BTreeMap::new();
        let mut report_cutoffs = Vec::new();
        for (site, (policy, configured)) in &policies {
            let cutoff = policy.cutoff(opts.now)?;
            cutoffs.insert(site.clone(), to_db_seconds(cutoff));
            report_cutoffs.push(SiteCutoff {
                site: site.clone(),
                timezone: policy.tz_name.clone(),
                retention_days: policy.retention_days,
                cutoff: cutoff.to_string(),
                configured: *configured,
            });
        }
        // A partition may go whole only if its entire month is before every cutoff.
        let min_cutoff = cutoffs.values().copied().min();

        let site_names: Vec<&str> = cutoffs.keys().map(String::as_str).collect();
        let site_cutoffs: Vec<u32> = cutoffs.values().copied().collect();
        let stats = self
            .client
            .query(
                "SELECT toString(site) AS site, toYYYYMM(timestamp) AS month, \
                 count() AS total, \
                 countIf(timestamp < toDateTime(transform(toString(site), ?, ?, toUInt32(0)), 'UTC')) AS expired \
                 FROM events GROUP BY site, month ORDER BY month, site",
            )
            .bind(&site_names)
            .bind(&site_cutoffs)
            .fetch_all::<MonthStat>()
            .await?;

        let parts: Vec<String> = self
            .client
            .query(
                "SELECT DISTINCT partition FROM system.parts \
                 WHERE database = currentDatabase() AND table = 'events' AND active",
            )
            .fetch_all()
            .await?;
        let mut partitions: BTreeSet<u32> = parts.iter().filter_map(|p| p.parse().ok()).collect();
        partitions.extend(stats.iter().map(|s| s.month));
        let droppable: BTreeSet<u32> = partitions
            .iter()
            .copied()
            .filter(|&m| match (month_bounds(m), min_cutoff) {
                (Some((_, end)), Some(min)) => to_db_seconds(end) <= min,
                _ => false,
            })
            .collect();
        let deletes: Vec<&MonthStat> = stats
            .iter()
            .filter(|s| s.expired > 0 && !droppable.contains(&s.month))
            .collect();

        let mut report = PurgeReport {
            run_id: run_id.to_owned(),
            dry_run: opts.dry_run,
            now: opts.now.to_string(),
            cutoffs: report_cutoffs,
            actions: Vec::new(),
            dropped_partitions: Vec::new(),
            rows_deleted: 0,
            stale_salts: 0,
            ttl_changed,
        };
        progress.start((droppable.len() + deletes.len() + 1) as u64);

        for &month in &droppable {
            let in_month: Vec<&MonthStat> = stats.iter().filter(|s| s.month == month).collect();
            let rows: u64 = in_month.iter().map(|s| s.total).sum();
            for s in &in_month {
                report.actions.push(MonthAction {
                    site: s.site.clone(),
                    month,
                    method: Method::DropPartition,
                    rows: s.total,
                });
            }
            report.rows_deleted += rows;
            progress.step(&format!("partition {month}: {rows} rows"));
            if opts.dry_run {
                continue;
            }
            check_stop(stop)?;
            let started = now_millis(Timestamp::now());
            self.drop_partition(month).await?;
            let finished = now_millis(Timestamp::now());
            report.dropped_partitions.push(month);
            self.metrics.record_deleted(rows);
            let per_site: Vec<(String, u64)> = if in_month.is_empty() {
                vec![(String::new(), 0)]
            } else {
                in_month.iter().map(|s| (s.site.clone(), s.total)).collect()
            };
            for (site, before) in per_site {
                log.push(PurgeLogRow {
                    run_id: run_id.to_owned(),
                    method: Method::DropPartition.as_str().into(),
                    cutoff: cutoffs.get(&site).copied().unwrap_or(0),
                    site,
                    partition: month.to_string(),
                    selector: String::new(),
                    actor: opts.actor.clone(),
                    rows_before: before,
                    rows_after: 0,
                    started,
                    finished,
                    outcome: "success".into(),
                    error: String::new(),
                });
            }
        }

        for s in deletes {
            let cutoff = cutoffs.get(&s.site).copied().unwrap_or(0);
            report.actions.push(MonthAction {
                site: s.site.clone(),
                month: s.month,
                method: Method::Delete,
                rows: s.expired,
            });
            progress.step(&format!("{} {}: {} rows", s.site, s.month, s.expired));
            if opts.dry_run {
                report.rows_deleted += s.expired;
                continue;
            }
            check_stop(stop)?;
            let started = now_millis(Timestamp::now());
            let before = self.count_expired(&s.site, s.month, cutoff).await?;
            self.delete_expired(&s.site, s.month, cutoff).await?;
            let after = self.count_expired(&s.site, s.month, cutoff).await?;
            let finished = now_millis(Timestamp::now());
            let ok = after == 0;
            log.push(PurgeLogRow {
                run_id: run_id.to_owned(),
                method: Method::Delete.as_str().into(),
                site: s.site.clone(),
                partition: s.month.to_string(),
                selector: String::new(),
                actor: opts.actor.clone(),
                cutoff,
                rows_before: before,
                rows_after: after,
                started,
                finished,
                outcome: if ok { "success" } else { "error" }.into(),
                error: String::new(),
            });
            let deleted = before.saturating_sub(after);
            report.rows_deleted += deleted;
            self.metrics.record_deleted(deleted);
            if !ok {
                return Err(PurgeError::Verify(format!(
                    "{after} rows of {} in {} older than the cutoff remain",
                    s.site, s.month
                )));
            }
        }

        check_stop(stop)?;
        progress.step("salts");
        report.stale_salts = self.check_salts(opts, run_id, log).await?;
        Ok(report)
    }

    async fn drop_partition(&self, month: u32) -> Result<(), PurgeError> {
        self.client
            .query("ALTER TABLE events DROP PARTITION ?")
            .bind(month)
            .execute()
            .await?;
        let left: u64 = self
            .client
            .query(
                "SELECT count() FROM system.parts WHERE database = currentDatabase() \
                 AND table = 'events' AND active AND partition = ?",
            )
            .bind(month.to_string())
            .fetch_one()
            .await?;
        if left != 0 {
            return Err(PurgeError::Verify(format!(
                "partition {month} still has {left} active parts after DROP PARTITION"
            )));
        }
        tracing::info!(partition = month, "partition dropped");
        Ok(())
    }

    async fn count_expired(&self, site: &str, month: u32, cutoff: u32) -> Result<u64, PurgeError> {
        Ok(self
            .client
            .query(
                "SELECT count() FROM events WHERE site = ? AND toYYYYMM(timestamp) = ? \
                 AND timestamp < toDateTime(?, 'UTC')",
            )
            .bind(site)
            .bind(month)
            .bind(cutoff)
            .fetch_one()
            .await?)
    }

    async fn delete_expired(&self, site: &str, month: u32, cutoff: u32) -> Result<(), PurgeError> {
        let lightweight = self
            .client
            .query(
                "DELETE FROM events IN PARTITION ? WHERE site = ? AND timestamp < toDateTime(?, 'UTC')",
            )
            .bind(month)
            .bind(site)
            .bind(cutoff)
            .with_setting("lightweight_deletes_sync", "2")
            .execute()
            .await;
        if let Err(e) = lightweight {
            tracing::warn!(error = %e, "lightweight delete refused; using a mutation");
            self.client
                .query(
                    "ALTER TABLE events DELETE IN PARTITION ? \
                     WHERE site = ? AND timestamp < toDateTime(?, 'UTC')",
                )
                .bind(month)
                .bind(site)
                .bind(cutoff)
                .with_setting("mutations_sync", "2")
                .execute()
                .await?;
        }
        Ok(())
    }

    /// Salts older than yesterday (UTC) should have been deleted at rotation; any found
    /// here are deleted and reported, since they would let old visitor ids be recomputed.
    async fn check_salts(
        &self,
        opts: &PurgeOptions,
        run_id: &str,
        log: &mut Vec<PurgeLogRow>,
    ) -> Result<u64, PurgeError> {
        let yesterday = opts
            .now
            .to_zoned_datetime(TimeZone::UTC)
            .date()
            .checked_sub(Span::new().days(1))
            .map_err(time_err("salt day"))?
            .to_string();
        let count_stale = || {
            self.client
                .query("SELECT count() FROM salts WHERE day < toDate(?)")
                .bind(yesterday.as_str())
                .fetch_one::<u64>()
        };
        let stale = count_stale().await?;
        if stale == 0 || opts.dry_run {
            if stale > 0 {
                tracing::warn!(stale, "salts older than yesterday exist (dry run: kept)");
            }
            return Ok(stale);
        }
        tracing::warn!(stale, "salts older than yesterday found; deleting them");
        let started = now_millis(Timestamp::now());
        self.client
            // A mutation, not a lightweight delete: a salt must be gone from disk, not
            // just hidden until a merge.
            .query("ALTER TABLE salts DELETE WHERE day < toDate(?)")
            .bind(yesterday.as_str())
            .with_setting("mutations_sync", "2")
            .execute()
            .await?;
        let after = count_stale().await?;
        log.push(PurgeLogRow {
            run_id: run_id.to_owned(),
            method: Method::SaltCleanup.as_str().into(),
            site: String::new(),
            partition: String::new(),
            selector: String::new(),
            actor: opts.actor.clone(),
            cutoff: 0,
            rows_before: stale,
            rows_after: after,
            started,
            finished: now_millis(Timestamp::now()),
            outcome: if after == 0 { "success" } else { "error" }.into(),
            error: String::new(),
        });
        if after != 0 {
            return Err(PurgeError::Verify(format!(
                "{after} stale salts remain after deletion"
            )));
        }
        Ok(stale)
    }
}

/// Whether `engine_full` of `events` already carries `TTL timestamp + toIntervalDay(days)`.
fn has_ttl_days(engine_full: &str, days: u32) -> bool {
    let Some(ttl) = engine_full.split(" TTL ").nth(1) else {
        return false;
    };
    let ttl = ttl.split(" SETTINGS ").next().unwrap_or(ttl).trim();
    ttl == format!("timestamp + toIntervalDay({days})")
}

/// A lease on the purge: mutual exclusion between collectors sharing one ClickHouse.
///
/// ClickHouse has no compare-and-set, so the lease is a claim row plus a read-back:
/// each claimant inserts `(owner, claimed_at = now64() on the server, expires_at)`, waits
/// `settle`, then reads the live claims; the earliest `(claimed_at, owner)` holds the
/// lease, the others withdraw their claim. Guarantees, on a single ClickHouse server (or
/// replicas written with `insert_quorum` and read with `select_sequential_consistency`):
/// * two claimants whose inserts both complete before either reads back agree on one
///   holder (the ordering comes from one clock, the server's);
/// * a claimant that arrives while a live lease exists never wins (its `claimed_at` is later);
/// * a crashed holder blocks others at most until `expires_at`.
///
/// It is not a fence: an insert delayed longer than `settle`, or a run outliving its
/// expiry, can let two runs overlap. That is acceptable because every purge step is
/// idempotent: the lease saves work, correctness does not depend on it.
pub struct Lease {
    client: Client,
    owner: String,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct LeaseHolder {
    owner: String,
}

impl Lease {
    pub const NAME: &'static str = "purge";

    pub async fn acquire(
        client: &Client,
        owner: &str,
        ttl: Duration,
        settle: Duration,
    ) -> Result<Lease, PurgeError> {
        client
            .query(
                "INSERT INTO purge_lease (name, owner, claimed_at, expires_at) \
                 SELECT ?, ?, now64(6, 'UTC'), now64(6, 'UTC') + toIntervalSecond(?)",
            )
            .bind(Self::NAME)
            .bind(owner)
            .bind(ttl.as_secs())
            .execute()
            .await?;
        tokio::time::sleep(settle).await;
        let holder = client
            .query(
                "SELECT ?fields FROM purge_lease WHERE name = ? AND expires_at > now64(6, 'UTC') \
                 ORDER BY claimed_at, owner LIMIT 1",
            )
            .bind(Self::NAME)
            .fetch_optional::<LeaseHolder>()
            .await?;
        let lease = Lease {
            client: client.clone(),
            owner: owner.to_owned(),
        };
        match holder {
            Some(h) if h.owner == owner => Ok(lease),
            other => {
                lease.release().await?;
                Err(PurgeError::Busy {
                    owner: other.map(|h| h.owner).unwrap_or_default(),
                })
            }
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Withdraws this owner's claims.
    pub async fn release(self) -> Result<(), PurgeError> {
        self.client
            .query("DELETE FROM purge_lease WHERE name = ? AND owner = ?")
            .bind(Self::NAME)
            .bind(&self.owner)
            .with_setting("lightweight_deletes_sync", "2")
            .execute()
            .await?;
        Ok(())
    }
}

/// A unique id for this process's lease claims.
pub fn lease_owner_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "hush".into());
    format!("{host}:{}:{}", std::process::id(), new_run_id())
}

/// Runs a purge under the lease; `Busy` when another instance holds it.
pub async fn run_with_lease(
    purger: &Purger,
    opts: &PurgeOptions,
    progress: &dyn Progress,
) -> Result<PurgeReport, PurgeError> {
    lease_and_run(purger, opts, progress, None).await
}

/// [`run_with_lease`] that stops at the next safe point once `stop` turns true, and
/// releases the lease before returning either way: a lease left behind by a stopped
/// process would hold off every other instance's purge until it expires.
pub async fn run_with_lease_until(
    purger: &Purger,
    opts: &PurgeOptions,
    progress: &dyn Progress,
    stop: &StopSignal,
) -> Result<PurgeReport, PurgeError> {
    lease_and_run(purger, opts, progress, Some(stop)).await
}

async fn lease_and_run(
    purger: &Purger,
    opts: &PurgeOptions,
    progress: &dyn Progress,
    stop: Option<&StopSignal>,
) -> Result<PurgeReport, PurgeError> {
    check_stop(stop)?;
    let owner = lease_owner_id();
    let lease = match Lease::acquire(purger.client(), &owner, LEASE_TTL, LEASE_SETTLE).await {
        Ok(lease) => lease,
        Err(e) => {
            if matches!(e, PurgeError::Busy { .. }) && !opts.dry_run {
                purger.metrics().record_run("busy");
            }
            return Err(e);
        }
    };
    // Stopped during the settle wait: nothing done yet, nothing to log.
    let result = match check_stop(stop) {
        Ok(()) => purger.run_stoppable(opts, progress, stop).await,
        Err(e) => Err(e),
    };
    if let Err(e) = lease.release().await {
        // The claim expires by itself; a failed release only delays the next run.
        tracing::warn!(error = %e, "could not release the purge lease");
    }
    result
}

/// How long a purge lease is valid; a run is expected to finish well within it.
pub const LEASE_TTL: Duration = Duration::from_secs(6 * 3600);
/// Wait between claiming and reading back (see [`Lease`]).
pub const LEASE_SETTLE: Duration = Duration::from_secs(2);

/// Delay from `now` to the next `at_utc` (today's if still ahead, else tomorrow's).
pub fn next_run_delay(now: Timestamp, at_utc: (u8, u8)) -> Duration {
    let zdt = now.to_zoned_datetime(TimeZone::UTC);
    let today = zdt
        .date()
        .at(at_utc.0 as i8, at_utc.1 as i8, 0, 0)
        .to_zoned_datetime(TimeZone::UTC)
        .map(|z| z.timestamp());
    let Ok(today) = today else {
        return Duration::from_secs(24 * 3600);
    };
    let mut next = today;
    if next <= now {
        next = next.checked_add(Span::new().hours(24)).unwrap_or(next);
    }
    let secs = next.as_second() - now.as_second();
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Starts the daily purge in the background: at `retention.at_utc` plus a random delay
/// up to `retention.jitter_secs`, under the lease. Returns `None` when
/// `retention.schedule` is off. The task ends when `shutdown` fires (or its sender goes):
/// a purge in progress stops at its next safe point and releases the lease first, so
/// await the task rather than aborting it.
pub fn spawn_scheduler(
    purger: Purger,
    retention: RetentionConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !retention.schedule {
        return None;
    }
    let at = crate::config::parse_hh_mm(&retention.at_utc).unwrap_or((3, 30));
    Some(tokio::spawn(async move {
        loop {
            let jitter = if retention.jitter_secs == 0 {
                0
            } else {
                rand::random_range(0..=retention.jitter_secs)
            };
            let delay = next_run_delay(Timestamp::now(), at) + Duration::from_secs(jitter);
            tracing::info!(in_secs = delay.as_secs(), "next purge scheduled");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let opts = PurgeOptions {
                now: Timestamp::now(),
                dry_run: false,
                actor: "scheduler".into(),
            };
            match run_with_lease_until(&purger, &opts, &LogProgress, &shutdown).await {
                Ok(report) => tracing::info!(
                    run_id = %report.run_id,
                    rows_deleted = report.rows_deleted,
                    partitions_dropped = report.dropped_partitions.len(),
                    "scheduled purge finished"
                ),
                Err(PurgeError::Busy { owner }) => {
                    tracing::info!(%owner, "purge skipped: another instance holds the lease")
                }
                Err(PurgeError::Stopped) => {
                    tracing::info!("scheduled purge stopped for shutdown; the next run continues");
                    return;
                }
                Err(e) => tracing::error!(error = %e, "scheduled purge failed"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn erasures_are_counted_with_the_rows_they_removed() {
        let mut registry = Registry::default();
        let metrics = PurgeMetrics::register(&mut registry);
        metrics.record_erasure("erase", Ok(12));
        metrics.record_erasure("erase", Ok(0));
        metrics.record_erasure("site_delete", Ok(30));
        metrics.record_erasure("erase", Err(()));
        let text = crate::metrics::render(&registry);
        for line in [
            "hush_erasures_total{method=\"erase\",outcome=\"success\"} 2",
            "hush_erasures_total{method=\"erase\",outcome=\"error\"} 1",
            "hush_erasures_total{method=\"site_delete\",outcome=\"success\"} 1",
            "hush_purge_rows_deleted_total 42",
        ] {
            assert!(text.contains(line), "{line}:\n{text}");
        }
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

    #[test]
    fn ttl_detection() {
        let e = "MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (site, timestamp) \
                 TTL timestamp + toIntervalDay(1100) SETTINGS index_granularity = 8192";
        assert!(has_ttl_days(e, 1100));
        assert!(!has_ttl_days(e, 1000));
        assert!(!has_ttl_days(
            "MergeTree ORDER BY site SETTINGS index_granularity = 8192",
            1100
        ));
    }

    #[test]
    fn next_run_today_or_tomorrow() {
        assert_eq!(
            next_run_delay(ts("2025-01-01T03:00:00Z"), (3, 30)),
            Duration::from_secs(1800)
        );
        assert_eq!(
            next_run_delay(ts("2025-01-01T03:30:00Z"), (3, 30)),
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(
            next_run_delay(ts("2025-01-01T23:00:00Z"), (0, 0)),
            Duration::from_secs(3600)
        );
    }
}
