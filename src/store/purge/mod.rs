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
//!
//! # Files
//! This module runs the purge ([`Purger`]); `cutoff` computes when each site's
//! retention ends, `lease` keeps runs apart, `scheduler` starts the daily run in
//! `serve`, and `log` holds the audit trail (`purge_log`), metrics and progress.

mod cutoff;
mod lease;
mod log;
mod scheduler;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clickhouse::Client;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::{Config, RetentionConfig};
use crate::db::timed;
use crate::store::Timeouts;

pub use cutoff::{SitePolicy, month_bounds, now_millis, site_cutoff, to_db_seconds};
pub use lease::{
    LEASE_SETTLE, LEASE_TTL, Lease, lease_owner_id, run_with_lease, run_with_lease_until,
};
pub use log::{
    LogProgress, Method, Progress, PurgeLogRow, PurgeMetrics, history, new_run_id, write_log,
};
pub use scheduler::{next_run_delay, spawn_scheduler};

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
    /// An erasure waited `retention.mutation_timeout_ms` for the rows the collector
    /// accepted before it to be stored (ClickHouse down or slow), and deleted nothing.
    /// The admin API answers 503: retry once ClickHouse is back.
    #[error("{rows} accepted rows are not stored yet; nothing was deleted")]
    Pending { rows: u64 },
    /// Files of the spool's `quarantine/` could not be read, rewritten or removed
    /// (each is in `purge_log` with its error); the rest of the step was done.
    #[error("quarantine files: {0}")]
    Files(String),
}

/// A shutdown signal a purge checks between steps (never in the middle of one).
pub type StopSignal = tokio::sync::watch::Receiver<bool>;

/// `Err(Stopped)` once `stop` says so; the safe point between two purge steps.
pub(crate) fn check_stop(stop: Option<&StopSignal>) -> Result<(), PurgeError> {
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
    /// Files of the spool's `quarantine/` past the shortest retention: removed (or,
    /// dry, to be removed). Their rows are not in `rows_deleted`.
    pub expired_files: Vec<String>,
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
        for file in &self.expired_files {
            let _ = writeln!(out, "  {file}: past retention, {verb}");
        }
        let _ = writeln!(
            out,
            "total: {verb} {} rows; partitions dropped: {:?}; stale salts: {}; quarantine files: {}",
            self.rows_deleted,
            self.dropped_partitions,
            self.stale_salts,
            self.expired_files.len()
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
    timeouts: Timeouts,
    /// The spool's `quarantine/`, whose files fall under retention too.
    quarantine: Option<PathBuf>,
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
            timeouts: Timeouts::from_config(config),
            quarantine: config
                .spool
                .dir
                .as_ref()
                .map(|d| d.join(crate::pipeline::writer::QUARANTINE_DIR)),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bounds of this purger's ClickHouse requests (from the configuration).
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub fn metrics(&self) -> &PurgeMetrics {
        &self.metrics
    }

    /// Sets the backstop TTL to `retention.max_days` when the table has another (or none).
    /// Existing parts are not rewritten for it (`materialize_ttl_after_modify = 0`): the
    /// purge itself removes old rows; the TTL applies as parts merge. Without
    /// materialising, the change is metadata only, so both statements get the query
    /// bound: `serve` runs this at start-up and must not hang on a stuck server.
    pub async fn ensure_ttl(&self) -> Result<bool, PurgeError> {
        let query = self.timeouts.query;
        let engine: String = timed(
            query,
            self.client
                .query(
                    "SELECT engine_full FROM system.tables \
                     WHERE database = currentDatabase() AND name = 'events'",
                )
                .fetch_one(),
        )
        .await?;
        if has_ttl_days(&engine, self.retention.max_days) {
            return Ok(false);
        }
        timed(
            query,
            self.client
                .query("ALTER TABLE events MODIFY TTL timestamp + INTERVAL ? DAY")
                .bind(self.retention.max_days)
                .with_setting("materialize_ttl_after_modify", "0")
                .execute(),
        )
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
        let logged = write_log(&self.client, self.timeouts.query, &log).await;
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
        let query = self.timeouts.query;
        let present: Vec<String> = timed(
            query,
            self.client
                .query("SELECT DISTINCT toString(site) FROM events")
                .fetch_all(),
        )
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
        let stats = timed(
            query,
            self.client
                .query(
                    "SELECT toString(site) AS site, toYYYYMM(timestamp) AS month, \
                     count() AS total, \
                     countIf(timestamp < toDateTime(transform(toString(site), ?, ?, toUInt32(0)), 'UTC')) AS expired \
                     FROM events GROUP BY site, month ORDER BY month, site",
                )
                .bind(&site_names)
                .bind(&site_cutoffs)
                .fetch_all::<MonthStat>(),
        )
        .await?;

        let parts: Vec<String> = timed(
            query,
            self.client
                .query(
                    "SELECT DISTINCT partition FROM system.parts \
                     WHERE database = currentDatabase() AND table = 'events' AND active",
                )
                .fetch_all(),
        )
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
            expired_files: Vec::new(),
        };
        let file_step = u64::from(self.quarantine.is_some());
        progress.start((droppable.len() + deletes.len()) as u64 + file_step + 2);

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
        progress.step("not-counted hit counts");
        let default_cutoff =
            to_db_seconds(SitePolicy::unconfigured("", &self.retention).cutoff(opts.now)?);
        self.expire_counts(opts, run_id, log, &cutoffs, default_cutoff)
            .await?;
        if !opts.dry_run {
            check_stop(stop)?;
            progress.step("visit builds");
            let names: Vec<&str> = cutoffs.keys().map(String::as_str).collect();
            let values: Vec<u32> = cutoffs.values().copied().collect();
            crate::store::sessions::expire(
                &self.client,
                self.timeouts,
                "toDate(toDateTime(transform(toString(site), ?, ?, ?), 'UTC'))",
                |q| q.bind(&names).bind(&values).bind(default_cutoff),
            )
            .await?;
        }

        if let Some(dir) = &self.quarantine {
            check_stop(stop)?;
            progress.step("quarantine files");
            self.expire_files(dir, opts, run_id, log, &mut report)
                .await?;
        }

        check_stop(stop)?;
        progress.step("salts");
        report.stale_salts = self.check_salts(opts, run_id, log).await?;
        Ok(report)
    }

    async fn drop_partition(&self, month: u32) -> Result<(), PurgeError> {
        timed(
            self.timeouts.mutation,
            self.client
                .query("ALTER TABLE events DROP PARTITION ?")
                .bind(month)
                .execute(),
        )
        .await?;
        let left: u64 = timed(
            self.timeouts.query,
            self.client
                .query(
                    "SELECT count() FROM system.parts WHERE database = currentDatabase() \
                     AND table = 'events' AND active AND partition = ?",
                )
                .bind(month.to_string())
                .fetch_one(),
        )
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
        Ok(timed(
            self.timeouts.query,
            self.client
                .query(
                    "SELECT count() FROM events WHERE site = ? AND toYYYYMM(timestamp) = ? \
                     AND timestamp < toDateTime(?, 'UTC')",
                )
                .bind(site)
                .bind(month)
                .bind(cutoff)
                .fetch_one(),
        )
        .await?)
    }

    async fn delete_expired(&self, site: &str, month: u32, cutoff: u32) -> Result<(), PurgeError> {
        let lightweight = timed(
            self.timeouts.mutation,
            self.client
                .query(
                    "DELETE FROM events IN PARTITION ? WHERE site = ? AND timestamp < toDateTime(?, 'UTC')",
                )
                .bind(month)
                .bind(site)
                .bind(cutoff)
                .with_setting("lightweight_deletes_sync", "2")
                .execute(),
        )
        .await;
        match lightweight {
            Ok(()) => Ok(()),
            // Only a refusal by the server means the table cannot take lightweight
            // deletes; a timeout or a lost connection is an error of this step (the
            // delete may still be running: starting a mutation beside it would only
            // double the work).
            Err(e @ clickhouse::error::Error::BadResponse(_)) => {
                tracing::warn!(error = %e, "lightweight delete refused; using a mutation");
                timed(
                    self.timeouts.mutation,
                    self.client
                        .query(
                            "ALTER TABLE events DELETE IN PARTITION ? \
                             WHERE site = ? AND timestamp < toDateTime(?, 'UTC')",
                        )
                        .bind(month)
                        .bind(site)
                        .bind(cutoff)
                        .with_setting("mutations_sync", "2")
                        .execute(),
                )
                .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the rows of `dropped` (counts of not-counted hits, per UTC day) of the
    /// days wholly before their site's cutoff; a site not configured has the default
    /// retention. One `delete_counts` row in `purge_log` when there was any.
    async fn expire_counts(
        &self,
        opts: &PurgeOptions,
        run_id: &str,
        log: &mut Vec<PurgeLogRow>,
        cutoffs: &BTreeMap<String, u32>,
        default_cutoff: u32,
    ) -> Result<(), PurgeError> {
        // A UTC day is past retention when it ends by the cutoff: before its UTC date.
        const EXPIRED: &str = "day < toDate(toDateTime(transform(toString(site), ?, ?, ?), 'UTC'))";
        let names: Vec<&str> = cutoffs.keys().map(String::as_str).collect();
        let values: Vec<u32> = cutoffs.values().copied().collect();
        let count = || async {
            timed(
                self.timeouts.query,
                self.client
                    .query(&format!("SELECT sum(hits) FROM dropped WHERE {EXPIRED}"))
                    .bind(&names)
                    .bind(&values)
                    .bind(default_cutoff)
                    .fetch_one::<u64>(),
            )
            .await
        };
        let started = now_millis(Timestamp::now());
        let before = count().await?;
        if before == 0 || opts.dry_run {
            return Ok(());
        }
        timed(
            self.timeouts.mutation,
            self.client
                .query(&format!("ALTER TABLE dropped DELETE WHERE {EXPIRED}"))
                .bind(&names)
                .bind(&values)
                .bind(default_cutoff)
                .with_setting("mutations_sync", "2")
                .execute(),
        )
        .await?;
        let after = count().await?;
        log.push(PurgeLogRow {
            run_id: run_id.to_owned(),
            method: Method::DeleteCounts.as_str().into(),
            site: String::new(),
            partition: String::new(),
            selector: String::new(),
            actor: opts.actor.clone(),
            cutoff: default_cutoff,
            rows_before: before,
            rows_after: after,
            started,
            finished: now_millis(Timestamp::now()),
            outcome: if after == 0 { "success" } else { "error" }.into(),
            error: String::new(),
        });
        if after > 0 {
            return Err(PurgeError::Verify(format!(
                "{after} not-counted hits older than the cutoff remain"
            )));
        }
        Ok(())
    }

    /// Removes the files of the spool's `quarantine/` (dead letters, corrupt regions)
    /// modified before the shortest retention of any site: they hold rows of any site
    /// and no day of their own. One `expire_file` row per file; a file that cannot be
    /// removed is logged with its error and fails the run once the others are done.
    async fn expire_files(
        &self,
        dir: &std::path::Path,
        opts: &PurgeOptions,
        run_id: &str,
        log: &mut Vec<PurgeLogRow>,
        report: &mut PurgeReport,
    ) -> Result<(), PurgeError> {
        let days = self
            .sites
            .iter()
            .map(|p| p.retention_days)
            .chain([self.retention.default_days])
            .min()
            .unwrap_or(self.retention.default_days);
        let cutoff = opts
            .now
            .as_second()
            .saturating_sub(i64::from(days) * 86_400)
            .max(0) as u64;
        let cutoff_time = SystemTime::UNIX_EPOCH + Duration::from_secs(cutoff);
        let started = now_millis(Timestamp::now());
        let (target, dry_run) = (dir.to_owned(), opts.dry_run);
        let actions = tokio::task::spawn_blocking(move || {
            crate::store::quarantine::expire(&target, cutoff_time, dry_run)
        })
        .await
        .map_err(|e| PurgeError::Files(e.to_string()))?
        .map_err(|e| PurgeError::Files(format!("{}: {e}", dir.display())))?;
        let finished = now_millis(Timestamp::now());
        let mut failed = Vec::new();
        for action in actions {
            if opts.dry_run {
                report.expired_files.push(action.file);
                continue;
            }
            self.metrics
                .record_file(Method::ExpireFile, action.outcome.is_ok());
            let error = action.outcome.clone().err().unwrap_or_default();
            log.push(PurgeLogRow {
                run_id: run_id.to_owned(),
                method: Method::ExpireFile.as_str().into(),
                site: String::new(),
                partition: action.file.clone(),
                selector: String::new(),
                actor: opts.actor.clone(),
                cutoff: u32::try_from(cutoff).unwrap_or(u32::MAX),
                rows_before: action.rows_before,
                rows_after: if error.is_empty() {
                    0
                } else {
                    action.rows_before
                },
                started,
                finished,
                outcome: if error.is_empty() { "success" } else { "error" }.into(),
                error: error.clone(),
            });
            if error.is_empty() {
                tracing::info!(file = %action.file, days, "quarantine file past retention removed");
                report.expired_files.push(action.file);
            } else {
                tracing::error!(file = %action.file, %error, "cannot remove a quarantine file past retention");
                failed.push(format!("{}: {error}", action.file));
            }
        }
        match failed.first() {
            None => Ok(()),
            Some(first) => Err(PurgeError::Files(format!(
                "{} past retention could not be removed (first: {first})",
                failed.len()
            ))),
        }
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
            timed(
                self.timeouts.query,
                self.client
                    .query("SELECT count() FROM salts WHERE day < toDate(?)")
                    .bind(yesterday.as_str())
                    .fetch_one::<u64>(),
            )
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
        timed(
            self.timeouts.mutation,
            self.client
                // A mutation, not a lightweight delete: a salt must be gone from disk,
                // not just hidden until a merge.
                .query("ALTER TABLE salts DELETE WHERE day < toDate(?)")
                .bind(yesterday.as_str())
                .with_setting("mutations_sync", "2")
                .execute(),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
