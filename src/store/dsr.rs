//! Data-subject requests: export and erasure of the rows a selector matches, and
//! deletion of a whole site.
//!
//! hush stores no direct identifier, but a site may send custom properties (e.g. a
//! hashed user id) or know a visitor id from its own records. A [`Selector`] is a site
//! plus any of: property equalities, a visitor id, a time range. Every value reaches
//! ClickHouse as a bound parameter; the SQL text is assembled only from fixed fragments.
//!
//! Erasure and site deletion use a synchronous mutation (`ALTER TABLE ... DELETE ...
//! SETTINGS mutations_sync = 2`) rather than a lightweight delete, because a
//! lightweight delete only masks rows until the next merge of their part, and an
//! erasure request is about the bytes on disk. Both are then verified by a count of
//! zero and recorded in `purge_log` without the selector's values.
//!
//! Rows not yet in ClickHouse are covered too ([`EraseScope`]): inside `serve` an
//! erasure first waits for the writer to store every row accepted before it, and the
//! dead-letter and quarantined files of the spool are erased after the table
//! ([`crate::store::quarantine`]).
//!
//! Salts are one per UTC day for all sites, not per site, and carry no site data;
//! deleting a site therefore removes all its rows and nothing else.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;
use clickhouse::query::{BytesCursor, Query};
use jiff::Timestamp;
use serde::Deserialize;

use crate::db::timed;
use crate::enrich::row::EventRow;
use crate::pipeline::writer::WriteProgress;
use crate::store::Timeouts;
use crate::store::purge::{
    Method, PurgeError, PurgeLogRow, PurgeMetrics, StopSignal, check_stop, new_run_id, now_millis,
    to_db_seconds, write_log,
};
use crate::store::quarantine::{self, FileAction};
use crate::store::sessions;

/// Which rows a request is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub site: String,
    /// `props[key] = value`, all of them (AND).
    pub props: Vec<(String, String)>,
    pub visitor_id: Option<u64>,
    /// Inclusive lower bound.
    pub from: Option<Timestamp>,
    /// Exclusive upper bound.
    pub to: Option<Timestamp>,
}

/// The JSON body of `POST /admin/v1/erase`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorBody {
    pub site: String,
    #[serde(default)]
    pub props: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub visitor_id: Option<u64>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

/// Parses an RFC 3339 instant, or a date `YYYY-MM-DD` meaning its start in UTC.
pub fn parse_time(s: &str) -> Result<Timestamp, PurgeError> {
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    s.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            PurgeError::Invalid("time must be RFC 3339 (2025-01-31T12:00:00Z) or YYYY-MM-DD".into())
        })
}

/// Parses `k=v` (the value may contain `=`).
pub fn parse_prop(s: &str) -> Result<(String, String), PurgeError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(PurgeError::Invalid("prop must be key=value".into())),
    }
}

impl TryFrom<SelectorBody> for Selector {
    type Error = PurgeError;
    fn try_from(body: SelectorBody) -> Result<Self, PurgeError> {
        let sel = Selector {
            site: body.site,
            props: body.props.into_iter().collect(),
            visitor_id: body.visitor_id,
            from: body.from.as_deref().map(parse_time).transpose()?,
            to: body.to.as_deref().map(parse_time).transpose()?,
        };
        sel.validate()?;
        Ok(sel)
    }
}

impl Selector {
    /// Parses URL query pairs: `site`, repeated `prop=k=v`, `visitor_id`, `from`, `to`.
    /// Other keys are left to the caller (e.g. `format`).
    pub fn from_query_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, PurgeError> {
        let mut sel = Selector::default();
        for (k, v) in pairs {
            match k {
                "site" => sel.site = v.to_owned(),
                "prop" => sel.props.push(parse_prop(v)?),
                "visitor_id" => {
                    sel.visitor_id =
                        Some(v.parse().map_err(|_| {
                            PurgeError::Invalid("visitor_id must be an integer".into())
                        })?)
                }
                "from" => sel.from = Some(parse_time(v)?),
                "to" => sel.to = Some(parse_time(v)?),
                _ => {}
            }
        }
        sel.validate()?;
        Ok(sel)
    }

    pub fn validate(&self) -> Result<(), PurgeError> {
        if self.site.is_empty() {
            return Err(PurgeError::Invalid("site is required".into()));
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            return Err(PurgeError::Invalid("from must be before to".into()));
        }
        Ok(())
    }

    /// Whether anything narrows the selector below the whole site.
    pub fn is_narrowed(&self) -> bool {
        !self.props.is_empty()
            || self.visitor_id.is_some()
            || self.from.is_some()
            || self.to.is_some()
    }

    /// The WHERE condition with one `?` per bound value, in [`Self::bind`] order.
    /// `mapContains` keeps `props['k'] = ''` from matching rows without the key.
    fn condition(&self) -> String {
        let mut sql = String::from("site = ?");
        for _ in &self.props {
            sql.push_str(" AND mapContains(props, ?) AND props[?] = ?");
        }
        if self.visitor_id.is_some() {
            sql.push_str(" AND visitor_id = ?");
        }
        if self.from.is_some() {
            sql.push_str(" AND timestamp >= toDateTime(?, 'UTC')");
        }
        if self.to.is_some() {
            sql.push_str(" AND timestamp < toDateTime(?, 'UTC')");
        }
        sql
    }

    fn bind(&self, mut q: Query) -> Query {
        q = q.bind(self.site.as_str());
        for (k, v) in &self.props {
            q = q.bind(k.as_str()).bind(k.as_str()).bind(v.as_str());
        }
        if let Some(id) = self.visitor_id {
            q = q.bind(id);
        }
        if let Some(from) = self.from {
            q = q.bind(to_db_seconds(from));
        }
        if let Some(to) = self.to {
            q = q.bind(to_db_seconds(to));
        }
        q
    }

    /// The selector's shape for the audit log: keys, never values.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .props
            .iter()
            .map(|(k, _)| format!("props[{k}]"))
            .collect();
        if self.visitor_id.is_some() {
            parts.push("visitor_id".into());
        }
        if self.from.is_some() {
            parts.push("from".into());
        }
        if self.to.is_some() {
            parts.push("to".into());
        }
        parts.join(", ")
    }

    /// Whether `row` is one of the rows the selector means: the same rows as its
    /// SQL condition (for rows outside ClickHouse, such as dead letters).
    pub fn matches(&self, row: &EventRow) -> bool {
        *row.site == *self.site
            && self.props.iter().all(|(k, v)| {
                row.props
                    .iter()
                    .find(|(rk, _)| rk == k)
                    .is_some_and(|(_, rv)| rv == v)
            })
            && self.visitor_id.is_none_or(|id| row.visitor_id == id)
            && self
                .from
                .is_none_or(|from| row.timestamp >= to_db_seconds(from))
            && self.to.is_none_or(|to| row.timestamp < to_db_seconds(to))
    }

    /// Rows matching the selector, counted within `timeout`.
    pub async fn count(&self, client: &Client, timeout: Duration) -> Result<u64, PurgeError> {
        let sql = format!("SELECT count() FROM events WHERE {}", self.condition());
        Ok(timed(timeout, self.bind(client.query(&sql)).fetch_one()).await?)
    }
}

/// Output format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    JsonLines,
    Csv,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Result<Self, PurgeError> {
        match s {
            "jsonl" | "json" | "ndjson" => Ok(Self::JsonLines),
            "csv" => Ok(Self::Csv),
            _ => Err(PurgeError::Invalid("format must be jsonl or csv".into())),
        }
    }

    fn clickhouse_format(self) -> &'static str {
        match self {
            Self::JsonLines => "JSONEachRow",
            Self::Csv => "CSVWithNames",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::JsonLines => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Streams every matching row in `format`; the caller pulls chunks with
/// `export.next().await` and nothing is buffered beyond the current chunk. Each chunk
/// must arrive within `timeout` (an export may take long in total, but a server that
/// stops sending is an error, not a hang).
pub fn export(
    client: &Client,
    timeout: Duration,
    selector: &Selector,
    format: ExportFormat,
) -> Result<Export, PurgeError> {
    let sql = format!(
        "SELECT * FROM events WHERE {} ORDER BY timestamp",
        selector.condition()
    );
    let cursor = selector
        .bind(client.query(&sql))
        .fetch_bytes(format.clickhouse_format())?;
    Ok(Export { cursor, timeout })
}

/// The rows of an [`export`], chunk by chunk.
pub struct Export {
    cursor: BytesCursor,
    timeout: Duration,
}

impl Export {
    /// The next chunk, `None` at the end; [`clickhouse::error::Error::TimedOut`] when
    /// ClickHouse sent nothing for the export's timeout.
    pub async fn next(&mut self) -> Result<Option<Bytes>, PurgeError> {
        Ok(timed(self.timeout, self.cursor.next()).await?)
    }
}

/// Result of an erasure or site deletion.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EraseReport {
    pub run_id: String,
    pub site: String,
    pub rows_before: u64,
    pub rows_after: u64,
    /// Files of the spool's `quarantine/` rewritten or removed.
    pub files_changed: u64,
    /// Rows those files held that matched (0 for a file that is not rows).
    pub file_rows_erased: u64,
}

/// Deletes every row the selector matches, verifies none remain and logs the action.
/// A selector that is only a site is refused: use [`delete_site`] for that, so a
/// forgotten filter cannot wipe a site.
///
/// Counts and the audit row are bounded by `timeouts.query`, the deletion by
/// `timeouts.mutation`.
pub async fn erase(
    client: &Client,
    timeouts: Timeouts,
    selector: &Selector,
    actor: &str,
) -> Result<EraseReport, PurgeError> {
    erase_in(client, timeouts, selector, actor, EraseScope::default()).await
}

/// What an erasure or site deletion reaches beyond the `events` table, and when it
/// stops. The default is the table alone, never stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct EraseScope<'a> {
    /// Shutdown: the deletion stops at its safe point, before the mutation starts
    /// (logged as `stopped`, [`PurgeError::Stopped`]); a mutation already sent is
    /// waited for, verified and logged.
    pub stop: Option<&'a StopSignal>,
    /// The writer of the collector this runs in: before anything is counted or
    /// deleted, every row it accepted before the request must be stored (or
    /// dead-lettered, so the file step below sees it), waited for up to
    /// `timeouts.mutation`. Past that, nothing is deleted ([`PurgeError::Pending`]).
    pub writes: Option<&'a WriteProgress>,
    /// The spool's `quarantine/` directory: its dead letters and corrupt regions are
    /// erased too ([`crate::store::quarantine::erase`]), one `erase_file` row each.
    pub quarantine: Option<&'a Path>,
    /// Where the file actions are counted (`hush_purge_files_total`).
    pub metrics: Option<&'a PurgeMetrics>,
}

/// [`erase`] with a scope (see [`EraseScope`]).
pub async fn erase_in(
    client: &Client,
    timeouts: Timeouts,
    selector: &Selector,
    actor: &str,
    scope: EraseScope<'_>,
) -> Result<EraseReport, PurgeError> {
    selector.validate()?;
    if !selector.is_narrowed() {
        return Err(PurgeError::Invalid(
            "erase needs a prop, visitor_id or time range; use site deletion for a whole site"
                .into(),
        ));
    }
    delete_matching(client, timeouts, selector, Method::Erase, actor, scope).await
}

/// Deletes all rows of `site` and logs the action. Salts are global per day and hold
/// no site data, so there is nothing else to delete.
pub async fn delete_site(
    client: &Client,
    timeouts: Timeouts,
    site: &str,
    actor: &str,
) -> Result<EraseReport, PurgeError> {
    delete_site_in(client, timeouts, site, actor, EraseScope::default()).await
}

/// [`delete_site`] with a scope (see [`EraseScope`]).
pub async fn delete_site_in(
    client: &Client,
    timeouts: Timeouts,
    site: &str,
    actor: &str,
    scope: EraseScope<'_>,
) -> Result<EraseReport, PurgeError> {
    let selector = Selector {
        site: site.to_owned(),
        ..Selector::default()
    };
    selector.validate()?;
    delete_matching(
        client,
        timeouts,
        &selector,
        Method::SiteDelete,
        actor,
        scope,
    )
    .await
}

async fn delete_matching(
    client: &Client,
    timeouts: Timeouts,
    selector: &Selector,
    method: Method,
    actor: &str,
    scope: EraseScope<'_>,
) -> Result<EraseReport, PurgeError> {
    let run_id = new_run_id();
    let started = now_millis(Timestamp::now());
    let mut counted = 0;
    let mut files: Vec<(FileAction, i64, i64)> = Vec::new();
    let result = async {
        check_stop(scope.stop)?;
        if let Some(writes) = scope.writes {
            wait_for_writes(writes, timeouts.mutation, scope.stop).await?;
        }
        let before = selector.count(client, timeouts.query).await?;
        counted = before;
        // The UTC days whose visit builds hold values of the rows to delete.
        let mut days: Vec<u16> = Vec::new();
        if before > 0 && method != Method::SiteDelete {
            let sql = format!(
                "SELECT DISTINCT toUInt16(toDate(timestamp)) FROM events WHERE {}",
                selector.condition()
            );
            days = timed(
                timeouts.query,
                selector.bind(client.query(&sql)).fetch_all::<u16>(),
            )
            .await?;
        }
        if before > 0 {
            // The safe point: nothing deleted yet, so a stop loses no work.
            check_stop(scope.stop)?;
            let sql = format!("ALTER TABLE events DELETE WHERE {}", selector.condition());
            timed(
                timeouts.mutation,
                selector
                    .bind(client.query(&sql))
                    .with_setting("mutations_sync", "2")
                    .execute(),
            )
            .await?;
        }
        let after = selector.count(client, timeouts.query).await?;
        // The visits built from the deleted rows (derived data: rebuilt from the rest).
        let forgotten = if method == Method::SiteDelete {
            sessions::forget_site(client, timeouts, &selector.site).await
        } else {
            sessions::forget_days(client, timeouts, &selector.site, &days).await
        };
        forgotten?;
        if method == Method::SiteDelete {
            // The site's counts of not-counted hits (no subject data: erasures leave
            // them).
            check_stop(scope.stop)?;
            timed(
                timeouts.mutation,
                client
                    .query("ALTER TABLE dropped DELETE WHERE site = ?")
                    .bind(&selector.site)
                    .with_setting("mutations_sync", "2")
                    .execute(),
            )
            .await?;
        }
        if let Some(dir) = scope.quarantine {
            let file_started = now_millis(Timestamp::now());
            let (dir, sel) = (dir.to_owned(), selector.clone());
            let actions = tokio::task::spawn_blocking(move || quarantine::erase(&dir, &sel))
                .await
                .map_err(|e| PurgeError::Files(e.to_string()))?
                .map_err(|e| PurgeError::Files(e.to_string()))?;
            let file_finished = now_millis(Timestamp::now());
            files.extend(
                actions
                    .into_iter()
                    .map(|a| (a, file_started, file_finished)),
            );
            if let Some((failed, _, _)) = files.iter().find(|(a, _, _)| a.outcome.is_err()) {
                let n = files.iter().filter(|(a, _, _)| a.outcome.is_err()).count();
                return Err(PurgeError::Files(format!(
                    "{n} could not be erased (first: {}: {})",
                    failed.file,
                    failed.outcome.as_ref().err().map_or("", String::as_str)
                )));
            }
        }
        Ok::<_, PurgeError>((before, after))
    }
    .await;
    let (before, after, outcome, error) = match &result {
        Ok((b, 0)) => (*b, 0, "success", String::new()),
        Ok((b, a)) => (*b, *a, "error", format!("{a} matching rows remain")),
        Err(e @ PurgeError::Stopped) => (counted, counted, "stopped", e.to_string()),
        Err(e) => (counted, 0, "error", e.to_string()),
    };
    let row = |method: Method, partition: String| PurgeLogRow {
        run_id: run_id.clone(),
        method: method.as_str().into(),
        site: selector.site.clone(),
        partition,
        selector: selector.describe(),
        actor: actor.to_owned(),
        cutoff: 0,
        rows_before: 0,
        rows_after: 0,
        started,
        finished: started,
        outcome: String::new(),
        error: String::new(),
    };
    let mut log = vec![PurgeLogRow {
        rows_before: before,
        rows_after: after,
        finished: now_millis(Timestamp::now()),
        outcome: outcome.into(),
        error: error.clone(),
        ..row(method, String::new())
    }];
    for (action, started, finished) in &files {
        log.push(PurgeLogRow {
            rows_before: action.rows_before,
            rows_after: action.rows_after,
            started: *started,
            finished: *finished,
            outcome: if action.outcome.is_ok() {
                "success"
            } else {
                "error"
            }
            .into(),
            error: action.outcome.clone().err().unwrap_or_default(),
            ..row(Method::EraseFile, action.file.clone())
        });
    }
    let logged = write_log(client, timeouts.query, &log).await;
    if let Some(metrics) = scope.metrics {
        for (action, _, _) in &files {
            metrics.record_file(Method::EraseFile, action.outcome.is_ok());
        }
    }
    let changed: Vec<&FileAction> = files
        .iter()
        .map(|(a, _, _)| a)
        .filter(|a| a.outcome.is_ok())
        .collect();
    logged?;
    result?;
    if after != 0 {
        return Err(PurgeError::Verify(error));
    }
    let file_rows_erased = changed.iter().map(|a| a.rows_before - a.rows_after).sum();
    tracing::info!(%run_id, site = %selector.site, method = method.as_str(), rows = before, files = changed.len(), file_rows = file_rows_erased, actor, "rows deleted");
    Ok(EraseReport {
        run_id,
        site: selector.site.clone(),
        rows_before: before,
        rows_after: after,
        files_changed: changed.len() as u64,
        file_rows_erased,
    })
}

/// Waits until `writes` has stored every row accepted before now, at most `deadline`
/// (and not past a shutdown).
async fn wait_for_writes(
    writes: &WriteProgress,
    deadline: Duration,
    stop: Option<&StopSignal>,
) -> Result<(), PurgeError> {
    let pending = writes.pending();
    if pending > 0 {
        tracing::info!(
            rows = pending,
            "erasure waits for the rows accepted before it to be stored"
        );
    }
    let stopped = async {
        match stop {
            Some(stop) => {
                let mut stop = stop.clone();
                if stop.wait_for(|s| *s).await.is_err() {
                    // The sender is gone without a stop: none will come.
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        waited = writes.wait_for_accepted(deadline) => {
            waited.map_err(|e| PurgeError::Pending { rows: e.rows })
        }
        () = stopped => Err(PurgeError::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_build_a_selector() {
        let s = Selector::from_query_pairs([
            ("site", "a.com"),
            ("prop", "user=h=1"),
            ("prop", "plan=pro"),
            ("visitor_id", "42"),
            ("from", "2025-01-01"),
            ("to", "2025-02-01T00:00:00Z"),
            ("format", "csv"),
        ])
        .unwrap();
        assert_eq!(s.site, "a.com");
        assert_eq!(
            s.props,
            vec![("user".into(), "h=1".into()), ("plan".into(), "pro".into())]
        );
        assert_eq!(s.visitor_id, Some(42));
        assert_eq!(s.from, Some("2025-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(
            s.describe(),
            "props[user], props[plan], visitor_id, from, to"
        );
        // One `?` per bound value: site + 3 per prop + visitor + from + to.
        assert_eq!(s.condition().matches('?').count(), 1 + 6 + 1 + 1 + 1);
    }

    #[test]
    fn bad_selectors_are_refused() {
        for pairs in [
            vec![("prop", "a=b")],
            vec![("site", "a.com"), ("prop", "novalue")],
            vec![("site", "a.com"), ("prop", "=v")],
            vec![("site", "a.com"), ("visitor_id", "-1")],
            vec![("site", "a.com"), ("visitor_id", "x")],
            vec![("site", "a.com"), ("from", "yesterday")],
            vec![
                ("site", "a.com"),
                ("from", "2025-02-01"),
                ("to", "2025-01-01"),
            ],
        ] {
            assert!(
                Selector::from_query_pairs(pairs.clone()).is_err(),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn values_never_reach_the_sql_text() {
        let s = Selector {
            site: "a.com' OR 1=1 --".into(),
            props: vec![("k'".into(), "v'); DROP TABLE events; --".into())],
            visitor_id: Some(7),
            from: None,
            to: None,
        };
        let sql = s.condition();
        assert!(
            !sql.contains("DROP") && !sql.contains("a.com") && !sql.contains('\''),
            "{sql}"
        );
        assert_eq!(s.describe(), "props[k'], visitor_id");
    }

    #[test]
    fn body_parses_and_unknown_fields_fail() {
        let body: SelectorBody =
            serde_json::from_str(r#"{"site":"a.com","props":{"u":"x"},"visitor_id":5}"#).unwrap();
        let s = Selector::try_from(body).unwrap();
        assert!(s.is_narrowed());
        assert!(serde_json::from_str::<SelectorBody>(r#"{"site":"a.com","where":"1"}"#).is_err());
        let site_only: SelectorBody = serde_json::from_str(r#"{"site":"a.com"}"#).unwrap();
        assert!(!Selector::try_from(site_only).unwrap().is_narrowed());
    }

    #[test]
    fn formats() {
        assert_eq!(
            ExportFormat::parse("jsonl").unwrap(),
            ExportFormat::JsonLines
        );
        assert_eq!(ExportFormat::parse("csv").unwrap(), ExportFormat::Csv);
        assert!(ExportFormat::parse("xml").is_err());
    }
}
