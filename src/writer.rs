//! The writer: a bounded in-memory queue between request handlers and ClickHouse, and
//! one task per table that batches rows and inserts them.
//!
//! Handlers never wait on ClickHouse: [`EventSink::submit`] either reserves queue room
//! for all rows of a request at once and returns, or refuses the whole request with
//! [`SubmitError::QueueFull`] (the handler answers 503 + Retry-After). The queue is a
//! tokio mpsc channel of rows; `try_reserve_many` takes the room from a lock-free
//! semaphore, so a request is accepted entirely or not at all.
//!
//! The task keeps at most one insert in flight. It flushes when the batch reaches
//! `batch_rows` or when its oldest row (counted from when the task took it off the
//! queue) has waited `flush_interval_ms`. A failed insert is retried with exponential
//! backoff and jitter for as long as it takes, with the same rows and the same
//! deduplication token: rows are never dropped. While it retries the queue fills and
//! new hits get 503s, which is the back-pressure the beacon's retry logic expects.
//!
//! Every batch carries a random [`BatchId`], sent as `insert_deduplication_token`; the
//! `events` table keeps a deduplication window, so an insert that reached ClickHouse
//! but whose answer was lost (timeout, reset) is not stored twice when retried. The id
//! is random rather than a content hash because two genuinely distinct batches can be
//! equal (one visitor's identical hits in the same second) and must both count.
//!
//! Issue 4 puts a disk spool in front of this: [`EventSink::submit`] stays the seam,
//! and [`insert_batch`] is the unit a spool replays.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clickhouse::Client;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use rand::Rng;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::WriterConfig;
use crate::event::EventRow;
use crate::store;

/// Retry-After suggested when the queue is full but ClickHouse is keeping up.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why rows were not accepted. Nothing was queued in either case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the write queue is full; retry after {retry_after:?}")]
    QueueFull { retry_after: Duration },
    #[error("the writer is shutting down")]
    ShuttingDown,
    #[error("{rows} rows can never fit in a queue of {capacity}")]
    TooLarge { rows: usize, capacity: usize },
}

/// Why [`WriterHandle::shutdown`] did not complete cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("the writer did not finish within {deadline:?}; {rows} accepted rows were not stored")]
    Deadline { deadline: Duration, rows: u64 },
    #[error("the writer task failed: {0}")]
    Task(String),
}

/// What the writer stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushReport {
    /// Rows inserted over the writer's lifetime.
    pub rows_inserted: u64,
    /// Of those, rows inserted after shutdown was requested (the queue's drain).
    pub rows_drained: u64,
    /// Successful inserts over the writer's lifetime.
    pub batches: u64,
}

/// The identity of one batch: 16 random bytes, sent to ClickHouse as the insert's
/// deduplication token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchId([u8; 16]);

impl BatchId {
    pub fn random() -> Self {
        Self(rand::rng().random())
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The `insert_deduplication_token` for this batch.
    pub fn token(&self) -> String {
        format!("hush-{self}")
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchId({self})")
    }
}

/// Inserts `rows` as one INSERT tagged with `id`, within `timeout`. Inserting the same
/// id again (a retry, a spool replay) stores nothing new as long as the table's
/// deduplication window still remembers it.
pub async fn insert_batch(
    client: &Client,
    table: &str,
    id: &BatchId,
    rows: &[EventRow],
    timeout: Duration,
) -> clickhouse::error::Result<()> {
    let insert = async {
        let mut insert = client
            .insert::<EventRow>(table)
            .await?
            .with_setting("insert_deduplicate", "1")
            .with_setting("insert_deduplication_token", id.token())
            // Deduplication tokens mean what is written here only for synchronous
            // inserts; never let a server profile turn this into an async insert.
            .with_setting("async_insert", "0");
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    };
    store::timed(timeout, insert).await
}

#[derive(Clone)]
struct Metrics {
    queue_depth: Gauge,
    batch_rows: Histogram,
    insert_duration: Histogram,
    insert_failures: Counter,
    rows_inserted: Counter,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            queue_depth: Gauge::default(),
            // 1 .. 262144 rows.
            batch_rows: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            // 2 ms .. ~65 s.
            insert_duration: Histogram::new(exponential_buckets(0.002, 2.0, 16)),
            insert_failures: Counter::default(),
            rows_inserted: Counter::default(),
        };
        registry.register(
            "hush_writer_queue_depth",
            "Rows accepted and waiting for the writer",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "hush_writer_batch_rows",
            "Rows per successful insert",
            metrics.batch_rows.clone(),
        );
        registry.register_with_unit(
            "hush_writer_insert_duration",
            "Duration of successful inserts",
            Unit::Seconds,
            metrics.insert_duration.clone(),
        );
        registry.register(
            "hush_writer_insert_failures",
            "Failed insert attempts (each is retried)",
            metrics.insert_failures.clone(),
        );
        registry.register(
            "hush_writer_rows_inserted",
            "Rows stored in ClickHouse",
            metrics.rows_inserted.clone(),
        );
        metrics
    }
}

/// State shared by the sinks and the task.
struct Shared {
    /// Suggested Retry-After in milliseconds: the next retry delay while inserts fail.
    retry_after_ms: AtomicU64,
    /// Rows accepted and not yet stored (queue + the batch being inserted).
    unflushed: AtomicU64,
    /// Set by [`WriterHandle::shutdown`]: refuse rows at once, even while the task is
    /// busy retrying and has not closed the queue yet.
    closing: AtomicBool,
    queue_depth: Gauge,
}

/// Where handlers put rows. Cloning is two reference count increments.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<EventRow>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("queue_depth", &self.queue_depth())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl EventSink {
    /// Queues all `rows` or none. Never waits for ClickHouse.
    pub async fn submit(&self, rows: Vec<EventRow>) -> Result<(), SubmitError> {
        self.try_submit(rows)
    }

    fn try_submit(&self, rows: Vec<EventRow>) -> Result<(), SubmitError> {
        let n = rows.len();
        if n == 0 {
            return Ok(());
        }
        // Rows that slip past this check are still drained: the task closes the queue
        // and receives until it is empty.
        if self.shared.closing.load(Ordering::Relaxed) {
            return Err(SubmitError::ShuttingDown);
        }
        let capacity = self.tx.max_capacity();
        if n > capacity {
            return Err(SubmitError::TooLarge { rows: n, capacity });
        }
        match self.tx.try_reserve_many(n) {
            Ok(permits) => {
                // Counted before sending so the task's decrement never runs first.
                self.shared.queue_depth.inc_by(n as i64);
                self.shared.unflushed.fetch_add(n as u64, Ordering::Relaxed);
                for (permit, row) in permits.zip(rows) {
                    permit.send(row);
                }
                Ok(())
            }
            Err(TrySendError::Full(())) => Err(SubmitError::QueueFull {
                retry_after: Duration::from_millis(
                    self.shared.retry_after_ms.load(Ordering::Relaxed),
                ),
            }),
            Err(TrySendError::Closed(())) => Err(SubmitError::ShuttingDown),
        }
    }

    /// Rows waiting in the queue (not counting the batch being inserted).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The queue's capacity in rows.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

/// Starts writer tasks.
pub struct Writer;

impl Writer {
    /// Spawns the writer task for `table` (must run inside a tokio runtime) and
    /// registers its metrics. `request_timeout` bounds each insert attempt
    /// (`clickhouse.request_timeout_ms`).
    pub fn spawn(
        client: Client,
        cfg: &WriterConfig,
        request_timeout: Duration,
        table: &str,
        registry: &mut Registry,
    ) -> (EventSink, WriterHandle) {
        let metrics = Metrics::register(registry);
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            retry_after_ms: AtomicU64::new(DEFAULT_RETRY_AFTER.as_millis() as u64),
            unflushed: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            queue_depth: metrics.queue_depth.clone(),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = Task {
            // The schema is ours and covered by tests; plain RowBinary skips fetching
            // and checking column metadata on every insert.
            client: client.with_validation(false),
            table: table.to_owned(),
            rx,
            stop: stop_rx,
            batch_rows: cfg.batch_rows.max(1),
            flush_interval: Duration::from_millis(cfg.flush_interval_ms.max(1)),
            retry_base: Duration::from_millis(cfg.retry_base_ms.max(1)),
            retry_max: Duration::from_millis(cfg.retry_max_ms.max(cfg.retry_base_ms).max(1)),
            request_timeout,
            metrics,
            shared: Arc::clone(&shared),
            report: FlushReport::default(),
        };
        let join = tokio::spawn(task.run());
        (
            EventSink {
                tx,
                shared: Arc::clone(&shared),
            },
            WriterHandle {
                stop: stop_tx,
                join,
                shared,
            },
        )
    }
}

/// Owns the writer task. Dropping it detaches the task, which then runs until every
/// [`EventSink`] is gone.
pub struct WriterHandle {
    stop: oneshot::Sender<()>,
    join: JoinHandle<FlushReport>,
    shared: Arc<Shared>,
}

impl WriterHandle {
    /// Stops accepting rows (submit answers [`SubmitError::ShuttingDown`]) and stores
    /// everything already accepted, retrying failed inserts, for at most `deadline`.
    pub async fn shutdown(self, deadline: Duration) -> Result<FlushReport, ShutdownError> {
        self.shared.closing.store(true, Ordering::Relaxed);
        // An error means the task already ended (every sink dropped): join it.
        let _ = self.stop.send(());
        let mut join = self.join;
        match tokio::time::timeout(deadline, &mut join).await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(e)) => Err(ShutdownError::Task(e.to_string())),
            Err(_elapsed) => {
                join.abort();
                let rows = self.shared.unflushed.load(Ordering::Relaxed);
                tracing::error!(
                    rows,
                    ?deadline,
                    "writer shutdown deadline passed; rows lost"
                );
                Err(ShutdownError::Deadline { deadline, rows })
            }
        }
    }
}

struct Task {
    client: Client,
    table: String,
    rx: mpsc::Receiver<EventRow>,
    stop: oneshot::Receiver<()>,
    batch_rows: usize,
    flush_interval: Duration,
    retry_base: Duration,
    retry_max: Duration,
    request_timeout: Duration,
    metrics: Metrics,
    shared: Arc<Shared>,
    report: FlushReport,
}

impl Task {
    async fn run(mut self) -> FlushReport {
        let mut batch: Vec<EventRow> = Vec::with_capacity(self.batch_rows);
        // When the oldest row of `batch` must be flushed.
        let mut flush_at: Option<Instant> = None;
        let mut stop_watched = true;
        let mut stopping_since: Option<u64> = None;
        loop {
            let room = self.batch_rows - batch.len();
            tokio::select! {
                biased;
                stop = &mut self.stop, if stop_watched => {
                    stop_watched = false;
                    if stop.is_ok() {
                        // Refuse new rows; permits already reserved still deliver, and
                        // recv_many returns 0 once everything is drained.
                        self.rx.close();
                        stopping_since = Some(self.report.rows_inserted);
                    }
                }
                received = self.rx.recv_many(&mut batch, room) => {
                    if received == 0 {
                        // Closed (shutdown or every sink dropped) and drained.
                        if !batch.is_empty() {
                            self.flush(&mut batch).await;
                        }
                        break;
                    }
                    self.shared.queue_depth.dec_by(received as i64);
                    if flush_at.is_none() {
                        flush_at = Some(Instant::now() + self.flush_interval);
                    }
                    if batch.len() >= self.batch_rows {
                        self.flush(&mut batch).await;
                        flush_at = None;
                    }
                }
                () = sleep_until(flush_at), if flush_at.is_some() && stopping_since.is_none() => {
                    self.flush(&mut batch).await;
                    flush_at = None;
                }
            }
        }
        if let Some(before) = stopping_since {
            self.report.rows_drained = self.report.rows_inserted - before;
        }
        self.report
    }

    /// Inserts `batch` until it succeeds, then empties it (keeping its capacity).
    async fn flush(&mut self, batch: &mut Vec<EventRow>) {
        let id = BatchId::random();
        let rows = batch.len();
        let mut attempt: u32 = 0;
        loop {
            let started = Instant::now();
            let result =
                insert_batch(&self.client, &self.table, &id, batch, self.request_timeout).await;
            match result {
                Ok(()) => {
                    let m = &self.metrics;
                    m.insert_duration.observe(started.elapsed().as_secs_f64());
                    m.batch_rows.observe(rows as f64);
                    m.rows_inserted.inc_by(rows as u64);
                    self.shared
                        .unflushed
                        .fetch_sub(rows as u64, Ordering::Relaxed);
                    self.shared
                        .retry_after_ms
                        .store(DEFAULT_RETRY_AFTER.as_millis() as u64, Ordering::Relaxed);
                    self.report.rows_inserted += rows as u64;
                    self.report.batches += 1;
                    if attempt > 0 {
                        tracing::info!(table = %self.table, rows, attempts = attempt + 1, "insert succeeded after retries");
                    }
                    batch.clear();
                    return;
                }
                Err(error) => {
                    self.metrics.insert_failures.inc();
                    attempt = attempt.saturating_add(1);
                    let delay = backoff(self.retry_base, self.retry_max, attempt);
                    self.shared.retry_after_ms.store(
                        delay.as_millis().max(DEFAULT_RETRY_AFTER.as_millis()) as u64,
                        Ordering::Relaxed,
                    );
                    tracing::warn!(
                        table = %self.table,
                        rows,
                        attempt,
                        batch = %id,
                        retry_in_ms = delay.as_millis() as u64,
                        %error,
                        "insert failed; retrying with the same batch"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)` capped at
/// `max`, then "equal jitter": half fixed, half random, so instances that failed
/// together do not retry in lockstep and no retry comes sooner than half the step.
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base
        .checked_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
        .unwrap_or(max)
        .min(max);
    let half = exp / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_bounded_jitter() {
        let base = Duration::from_millis(200);
        let max = Duration::from_secs(30);
        for attempt in 1..40 {
            let step = (base * 2u32.saturating_pow(attempt - 1)).min(max);
            for _ in 0..20 {
                let d = backoff(base, max, attempt);
                assert!(
                    d >= step / 2 && d <= step,
                    "attempt {attempt}: {d:?} vs {step:?}"
                );
            }
        }
        // Jitter actually varies.
        let samples: std::collections::HashSet<_> =
            (0..50).map(|_| backoff(base, max, 10)).collect();
        assert!(samples.len() > 1);
    }

    #[test]
    fn batch_ids_are_unique_and_render_as_hex_tokens() {
        let a = BatchId::random();
        let b = BatchId::random();
        assert_ne!(a, b);
        let token = a.token();
        assert_eq!(token.len(), 5 + 32);
        assert!(token.starts_with("hush-"));
        assert!(
            token[5..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(BatchId::from_bytes([0xab; 16]).to_string(), "ab".repeat(16));
    }

    #[test]
    fn metrics_have_the_documented_names() {
        let mut registry = Registry::default();
        let _ = Metrics::register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "hush_writer_queue_depth",
            "hush_writer_batch_rows_bucket",
            "hush_writer_insert_duration_seconds_bucket",
            "hush_writer_insert_failures_total",
            "hush_writer_rows_inserted_total",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    fn row(i: u32) -> EventRow {
        EventRow {
            site: Arc::from("example.com"),
            timestamp: 1_700_000_000 + i,
            name: "pageview".into(),
            visitor_id: u64::from(i),
            session_id: 1,
            entry_page: "/".into(),
            hostname: "example.com".into(),
            pathname: format!("/{i}"),
            referrer_host: String::new(),
            referrer_path: String::new(),
            source: String::new(),
            channel: "direct",
            utm_source: String::new(),
            utm_medium: String::new(),
            utm_campaign: String::new(),
            utm_term: String::new(),
            utm_content: String::new(),
            browser: Arc::from("Firefox"),
            browser_version: Arc::from("128.0"),
            os: Arc::from("Linux"),
            os_version: Arc::from(""),
            device: "desktop",
            country: *b"DE",
            region: String::new(),
            city_geoname_id: 0,
            city: String::new(),
            props: Vec::new(),
            revenue_micros: None,
            revenue_currency: String::new(),
            interactive: 1,
            engagement_ms: 0,
            scroll_depth: crate::event::SCROLL_DEPTH_UNKNOWN,
        }
    }

    /// A writer pointed at a closed port: inserts fail, so rows stay queued.
    fn stalled_writer(capacity: usize) -> (EventSink, WriterHandle) {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = crate::config::ClickHouseConfig {
            url: format!("http://127.0.0.1:{port}"),
            ..Default::default()
        };
        let wcfg = WriterConfig {
            batch_rows: 2,
            flush_interval_ms: 10,
            queue_capacity: capacity,
            retry_base_ms: 5,
            retry_max_ms: 20,
        };
        Writer::spawn(
            store::client(&cfg),
            &wcfg,
            Duration::from_secs(1),
            "events",
            &mut Registry::default(),
        )
    }

    // A current-thread runtime: the writer task cannot run until the test awaits
    // something that yields, and `submit` never yields, so the queue state is exact.
    #[tokio::test(flavor = "current_thread")]
    async fn a_request_is_accepted_whole_or_not_at_all() {
        let (sink, handle) = stalled_writer(5);
        assert_eq!(sink.capacity(), 5);
        sink.submit(vec![]).await.unwrap();
        assert_eq!(sink.queue_depth(), 0);
        assert_eq!(
            sink.submit((0..6).map(row).collect()).await,
            Err(SubmitError::TooLarge {
                rows: 6,
                capacity: 5
            })
        );
        sink.submit((0..4).map(row).collect()).await.unwrap();
        assert_eq!(sink.queue_depth(), 4);
        let result = sink.submit((0..2).map(row).collect()).await;
        match result {
            Err(SubmitError::QueueFull { retry_after }) => {
                assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}")
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        assert_eq!(
            sink.queue_depth(),
            4,
            "nothing of the refused request was queued"
        );
        sink.submit(vec![row(9)]).await.unwrap();
        assert_eq!(sink.queue_depth(), 5);
        assert!(matches!(
            sink.submit(vec![row(10)]).await,
            Err(SubmitError::QueueFull { .. })
        ));

        // ClickHouse is unreachable, so the drain cannot finish: every accepted row is
        // reported as not stored, and new rows are refused from the moment of shutdown.
        let err = handle
            .shutdown(Duration::from_millis(300))
            .await
            .unwrap_err();
        match err {
            ShutdownError::Deadline { rows, .. } => assert_eq!(rows, 5),
            other => panic!("{other}"),
        }
        assert_eq!(
            sink.submit(vec![row(1)]).await,
            Err(SubmitError::ShuttingDown)
        );
    }
}
