//! The audit trail and what a run reports as it goes: `purge_log` rows, the
//! `hush_purge_*` metrics and progress reporting.

use std::time::Duration;

use clickhouse::Client;
use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use super::PurgeError;
use crate::db::timed;

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
    /// A file in the spool's `quarantine/` past retention, removed.
    ExpireFile,
    /// A file in the spool's `quarantine/` rewritten or removed by an erasure or a
    /// site deletion.
    EraseFile,
    /// The counts of not-counted hits (`dropped`) past each site's retention, deleted.
    DeleteCounts,
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
            Method::ExpireFile => "expire_file",
            Method::EraseFile => "erase_file",
            Method::DeleteCounts => "delete_counts",
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
    /// Monthly partition (`YYYYMM`), the file of a file action
    /// (`quarantine/<name>`), or empty.
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
/// recorded must not look recorded. The whole insert gets `timeout`.
pub async fn write_log(
    client: &Client,
    timeout: Duration,
    rows: &[PurgeLogRow],
) -> Result<(), PurgeError> {
    if rows.is_empty() {
        return Ok(());
    }
    let insert = async {
        let mut insert = client.insert::<PurgeLogRow>("purge_log").await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    };
    timed(timeout, insert).await?;
    Ok(())
}

/// The most recent `purge_log` rows, newest first, within `timeout`.
pub async fn history(
    client: &Client,
    timeout: Duration,
    limit: u64,
) -> Result<Vec<PurgeLogRow>, PurgeError> {
    Ok(timed(
        timeout,
        client
            .query("SELECT ?fields FROM purge_log ORDER BY started DESC, run_id, method LIMIT ?")
            .bind(limit)
            .fetch_all::<PurgeLogRow>(),
    )
    .await?)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    method: &'static str,
    outcome: &'static str,
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
    files: Family<FileLabels, Counter>,
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
        registry.register(
            "hush_purge_files",
            "Files of the spool's quarantine/ (dead letters, corrupt regions) removed by \
             retention (method expire_file) or rewritten or removed by an erasure or site \
             deletion (erase_file), by outcome (success, error)",
            metrics.files.clone(),
        );
        metrics
    }

    /// One file action (`method`: `expire_file` or `erase_file`).
    pub fn record_file(&self, method: Method, ok: bool) {
        self.files
            .get_or_create(&FileLabels {
                method: method.as_str(),
                outcome: if ok { "success" } else { "error" },
            })
            .inc();
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn file_actions_are_counted_by_method_and_outcome() {
        let mut registry = Registry::default();
        let metrics = PurgeMetrics::register(&mut registry);
        metrics.record_file(Method::ExpireFile, true);
        metrics.record_file(Method::ExpireFile, true);
        metrics.record_file(Method::EraseFile, true);
        metrics.record_file(Method::EraseFile, false);
        let text = crate::metrics::render(&registry);
        assert!(text.contains("# HELP hush_purge_files "), "{text}");
        for line in [
            "hush_purge_files_total{method=\"expire_file\",outcome=\"success\"} 2",
            "hush_purge_files_total{method=\"erase_file\",outcome=\"success\"} 1",
            "hush_purge_files_total{method=\"erase_file\",outcome=\"error\"} 1",
        ] {
            assert!(text.contains(line), "{line}:\n{text}");
        }
    }
}
