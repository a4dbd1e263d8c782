//! The writer: takes accepted hits from the request handlers to ClickHouse, in batches,
//! never losing or duplicating one.
//!
//! # One path for both buffers
//!
//! Handlers call [`EventSink::submit`]; the sink encodes each row exactly once into
//! RowBinary ([`crate::pipeline::rowbinary`]) and hands the bytes to one of two buffers:
//!
//! - the **disk spool** ([`crate::pipeline::spool`], when `spool.dir` is set): the rows of a
//!   request are appended together and `submit` returns once they are durable per
//!   `spool.fsync`, so a 202 means the hit survives a crash of the collector and any
//!   ClickHouse outage. When the spool holds `spool.max_bytes`, `submit` refuses the
//!   request ([`SubmitError::QueueFull`], 503 + Retry-After) and nothing spooled is
//!   dropped.
//! - an **in-memory queue** (no `spool.dir`): a channel of encoded rows bounded in rows
//!   (`writer.queue_capacity`) and in bytes (`writer.queue_max_bytes`, counting rows
//!   until they are stored, so the batch being inserted too); `submit` reserves room
//!   for all rows and bytes of a request at once or refuses the request.
//!   Accepted rows survive ClickHouse outages while the process runs, not a crash.
//!
//! The writer task does not care which: a [`Source`] hands out batches with a payload
//! (the RowBinary body), a row count and a stable deduplication token, and takes them
//! back as acknowledged. The one insert loop ([`Task::deliver`]) streams the payload as
//! `INSERT INTO events FORMAT RowBinary` with `insert_deduplication_token`, retries a
//! failed insert with exponential backoff and jitter for as long as it takes, with the
//! same payload and token, and acknowledges only after ClickHouse confirmed the insert.
//! The spool deletes a segment only once every batch in it is acknowledged.
//!
//! # Exactly once
//!
//! The `events` table keeps a `non_replicated_deduplication_window` (100,000 inserts,
//! schema 0004), so an insert that reached ClickHouse but whose answer was lost
//! (timeout, reset, a crash before the acknowledgement) stores nothing new when the
//! same batch is inserted again with the same token. This task inserts nothing else
//! between a batch's first insert and its retry (it retries until stored) or its
//! replay (a previous run's batches go first), so the window only has to outlast the
//! other collectors' inserts meanwhile (the bound is in README's Durability section). Spool batches keep their identity across restarts (spool id, segment,
//! byte range: see [`crate::pipeline::spool`]); in-memory batches get a random [`BatchId`], kept
//! across retries. The id is random rather than a content hash because two genuinely
//! distinct batches can be equal (one visitor's identical hits in the same second) and
//! must both count.
//!
//! # Start
//!
//! A writer spawned with a closed [`StartGate`] ([`Writer::spawn_gated`]) accepts rows
//! into its buffer but inserts nothing until the gate opens: `serve` starting while
//! ClickHouse is down opens it once the schema migrations are applied.
//!
//! # Batching
//!
//! At most one insert is in flight. A batch is cut when `batch_rows` rows are waiting
//! or when the oldest waiting row has waited `flush_interval_ms`; batches recovered
//! from before a restart are replayed first, at once, with their original bounds.
//! While ClickHouse is down rows pile up (in the spool, or the queue until it is full
//! and new hits get 503s: the back-pressure the beacon's retry logic expects).
//!
//! # Rejected batches (dead letters)
//!
//! A batch ClickHouse refuses because of its content (a parse or type error: see
//! [`is_permanent`]) would otherwise block the pipeline forever. After
//! [`PERMANENT_ATTEMPTS`] such refusals it is split by halving ([`Task::split`]) until
//! the refused rows are isolated: every row ClickHouse accepts is stored (each part
//! with a token derived from the batch's and the part's row range, so exactly once
//! holds when a split is repeated after a crash), and only the refused rows are moved
//! to the spool's `quarantine/` directory (`dead-letter-<token>.rowbinary`, their
//! RowBinary bytes, plus a `.txt` with each row's error), counted in
//! `hush_writer_dead_letter_rows_total` and logged as an error. The batch is then
//! acknowledged so the rows behind it flow again; only then: while the file cannot be
//! written (and synced, with its directory) the batch stays in the spool and the
//! write is retried with backoff (`hush_writer_dead_letter_write_failures_total`).
//! Without a spool there is no disk to keep the refused rows on: they are counted and
//! logged as lost. Network errors, timeouts, 5xx-class server errors, authentication
//! and schema errors are transient: an operator can fix them, so they are retried
//! forever.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clickhouse::Client;
use futures_util::FutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use rand::Rng;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::WriterConfig;
use crate::db;
use crate::enrich::row::EventRow;
use crate::logging::RateLimit;
use crate::pipeline::rowbinary;
use crate::pipeline::spool::{Spool, SpoolBatch, SpoolError};

/// The spool's directory for what cannot be inserted: corrupt spool regions
/// (`*.bad`, written by the spool) and dead letters (`dead-letter-<token>.rowbinary`
/// and its `.txt`, written here).
pub const QUARANTINE_DIR: &str = "quarantine";
/// Retry-After suggested when the buffer is full but ClickHouse is keeping up.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Retry-After suggested while the spool's disk refuses writes: space comes back as
/// the spool drains (or an operator frees it), rarely within a second.
const UNWRITABLE_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Refusals of a batch's content before it becomes a dead letter. More than one, so a
/// misclassified hiccup does not cost rows.
pub const PERMANENT_ATTEMPTS: u32 = 3;
/// Attempts to record an acknowledgement in the spool before moving on (the batch is
/// then replayed at the next start, and deduplicated by ClickHouse).
const ACK_ATTEMPTS: u32 = 5;
/// At most one log line per this interval while a dead-letter file cannot be written.
const DEAD_LETTER_LOG_EVERY: Duration = Duration::from_secs(60);
/// A thread's encode buffer larger than this after a request is released.
const KEEP_SCRATCH_BYTES: usize = 1 << 20;

/// Why rows were not accepted. Nothing was queued or spooled in any case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the write buffer is full; retry after {retry_after:?}")]
    QueueFull { retry_after: Duration },
    #[error("the writer is shutting down")]
    ShuttingDown,
    #[error("{rows} rows can never fit in a queue of {capacity}")]
    TooLarge { rows: usize, capacity: usize },
    /// The request's encoded rows exceed `writer.queue_max_bytes` on their own.
    #[error("{bytes} bytes of rows can never fit in a queue of {max} bytes")]
    TooManyBytes { bytes: u64, max: u64 },
    /// The spool could not store the rows (an I/O error; details are logged).
    #[error("the spool cannot store rows: {0}")]
    Unavailable(String),
    /// The spool's disk refuses writes (full or failing); the spool logs when that
    /// starts and ends, and probes the disk until it takes writes again.
    #[error("the spool's disk refuses writes; retry after {retry_after:?}")]
    Unwritable { retry_after: Duration },
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
    /// Of those, rows inserted after shutdown was requested (the drain).
    pub rows_drained: u64,
    /// Successful inserts over the writer's lifetime.
    pub batches: u64,
    /// Rows ClickHouse refused for their content, moved to the dead-letter files.
    pub rows_dead_lettered: u64,
    /// Rows still in the spool at exit (deadline passed): inserted at the next start.
    pub rows_left_in_spool: u64,
}

/// How far the writer has come: rows accepted and rows it is done with (stored in
/// ClickHouse, or refused by it and moved to a synced dead-letter file, or counted as
/// lost without a spool). An erasure waits on it ([`WriteProgress::wait_for_accepted`])
/// so that rows answered 202 before the request are stored, and so erased, rather than
/// landing after it. Cloning shares the counters.
///
/// Exact, without a lock on the request path: a request's rows are counted in *before*
/// they enter the buffer (and taken back out when the buffer refuses them), and the
/// writer counts a batch out once every row of it is stored or dead-lettered (a
/// refused batch split in parts counts once, at the end), in buffer order. So when
/// `done` reaches what `accepted` was at some instant, every row in the buffer at that
/// instant is out; and when `done` equals `accepted`, nothing is in flight at all.
#[derive(Clone, Default)]
pub struct WriteProgress(Arc<ProgressState>);

#[derive(Default)]
struct ProgressState {
    accepted: AtomicU64,
    done: AtomicU64,
    changed: Notify,
}

/// [`WriteProgress::wait_for_accepted`] ran out of time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rows} rows accepted before the request are not stored yet")]
pub struct NotStored {
    /// Rows accepted before the wait began and still not stored (at most; rows
    /// accepted since may be counted too).
    pub rows: u64,
}

impl WriteProgress {
    /// Rows about to enter the buffer.
    fn enter(&self, rows: u64) {
        self.0.accepted.fetch_add(rows, Ordering::SeqCst);
    }

    /// Rows [`WriteProgress::enter`]ed that the buffer refused: they never entered it.
    fn refused(&self, rows: u64) {
        self.0.accepted.fetch_sub(rows, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }

    /// The rows of a batch, all stored or dead-lettered.
    fn done(&self, rows: u64) {
        self.0.done.fetch_add(rows, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }

    /// Rows accepted (refused requests not counted) and rows stored or dead-lettered,
    /// over the writer's lifetime.
    pub fn counts(&self) -> (u64, u64) {
        let done = self.0.done.load(Ordering::SeqCst);
        (self.0.accepted.load(Ordering::SeqCst), done)
    }

    /// Rows accepted and not yet stored or dead-lettered.
    pub fn pending(&self) -> u64 {
        let done = self.0.done.load(Ordering::SeqCst);
        self.0.accepted.load(Ordering::SeqCst).saturating_sub(done)
    }

    /// Waits until every row accepted before this call is stored or dead-lettered, for
    /// at most `deadline`. Rows a crashed run left in the spool count as accepted
    /// (they are inserted first).
    pub async fn wait_for_accepted(&self, deadline: Duration) -> Result<(), NotStored> {
        let state = &*self.0;
        let target = state.accepted.load(Ordering::SeqCst);
        let until = Instant::now() + deadline;
        loop {
            let changed = state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // `done` first: equal to `accepted` read after it means nothing in flight.
            let done = state.done.load(Ordering::SeqCst);
            if done >= target || done == state.accepted.load(Ordering::SeqCst) {
                return Ok(());
            }
            if tokio::time::timeout_at(until, changed).await.is_err() {
                let done = state.done.load(Ordering::SeqCst);
                if done >= target || done == state.accepted.load(Ordering::SeqCst) {
                    return Ok(());
                }
                return Err(NotStored {
                    rows: target.saturating_sub(done),
                });
            }
        }
    }
}

impl std::fmt::Debug for WriteProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteProgress")
            .field("accepted", &self.0.accepted.load(Ordering::Relaxed))
            .field("done", &self.0.done.load(Ordering::Relaxed))
            .finish()
    }
}

/// The identity of one in-memory batch: 16 random bytes, sent to ClickHouse as the
/// insert's deduplication token.
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
/// id again stores nothing new as long as the table's deduplication window still
/// remembers it. (The writer sends pre-encoded bytes with [`insert_payload`]; this is
/// the typed form for tools and tests.)
pub async fn insert_batch(
    client: &Client,
    table: &str,
    id: &BatchId,
    rows: &[EventRow],
    timeout: Duration,
) -> clickhouse::error::Result<()> {
    let mut payload = Vec::with_capacity(rows.iter().map(rowbinary::encoded_len).sum());
    for row in rows {
        rowbinary::encode_event(row, &mut payload);
    }
    insert_payload(client, table, &id.token(), Bytes::from(payload), timeout).await
}

/// Inserts a RowBinary `payload` (rows of `table`, in column order) as one INSERT with
/// `token` as its `insert_deduplication_token`, within `timeout`.
pub async fn insert_payload(
    client: &Client,
    table: &str,
    token: &str,
    payload: Bytes,
    timeout: Duration,
) -> clickhouse::error::Result<()> {
    let insert = async {
        let mut insert = client
            .insert_formatted_with(format!("INSERT INTO {table} FORMAT RowBinary"))
            .with_setting("insert_deduplicate", "1")
            .with_setting("insert_deduplication_token", token)
            // Deduplication tokens mean what is written here only for synchronous
            // inserts; never let a server profile turn this into an async insert.
            .with_setting("async_insert", "0");
        insert.send(payload).await?;
        insert.end().await
    };
    db::timed(timeout, insert).await
}

/// ClickHouse error codes that blame the inserted data itself: retrying the same bytes
/// can never succeed. Everything else (network, timeouts, overload, read-only
/// replicas, missing tables, permissions) may heal and is retried.
///
/// Not here on purpose: `ATTEMPT_TO_READ_AFTER_EOF` (32) and `CANNOT_READ_ALL_DATA`
/// (33). ClickHouse answers them for a body that ended early, which is what a proxy or
/// a connection reset mid-upload produces as well as a truncated row; the same bytes
/// sent again usually go through, so they are retried like any network error. A
/// batch that really is truncated fails with a parse or type error on its other rows
/// or keeps failing and is visible in `hush_writer_insert_failures_total`.
const PERMANENT_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349, // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
];

/// Whether an insert error blames the batch's content (see [`PERMANENT_CODES`]) rather
/// than the connection or the server's state.
pub fn is_permanent(error: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error;
    match error {
        Error::BadResponse(text) => {
            exception_code(text).is_some_and(|c| PERMANENT_CODES.contains(&c))
        }
        Error::Compression(_) => true,
        _ => false,
    }
}

/// The `N` of a server exception text `Code: N. DB::Exception: ...`.
fn exception_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

#[derive(Clone)]
struct Metrics {
    queue_depth: Gauge,
    queue_bytes: Gauge,
    batch_rows: Histogram,
    insert_duration: Histogram,
    insert_failures: Counter,
    rows_inserted: Counter,
    dead_letter_batches: Counter,
    dead_letter_rows: Counter,
    dead_letter_write_failures: Counter,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            queue_depth: Gauge::default(),
            queue_bytes: Gauge::default(),
            // 1 .. 262144 rows.
            batch_rows: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            // 2 ms .. ~65 s.
            insert_duration: Histogram::new(exponential_buckets(0.002, 2.0, 16)),
            insert_failures: Counter::default(),
            rows_inserted: Counter::default(),
            dead_letter_batches: Counter::default(),
            dead_letter_rows: Counter::default(),
            dead_letter_write_failures: Counter::default(),
        };
        registry.register(
            "hush_writer_queue_depth",
            "Rows accepted and waiting in the in-memory queue (0 with a spool)",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "hush_writer_queue_bytes",
            "Encoded bytes of rows accepted into the in-memory queue and not yet stored (0 with a spool)",
            metrics.queue_bytes.clone(),
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
        registry.register(
            "hush_writer_dead_letter_batches",
            "Batches ClickHouse refused for their content, moved to quarantine/",
            metrics.dead_letter_batches.clone(),
        );
        registry.register(
            "hush_writer_dead_letter_rows",
            "Rows of dead-letter batches (kept in quarantine/ with a spool, lost without)",
            metrics.dead_letter_rows.clone(),
        );
        registry.register(
            "hush_writer_dead_letter_write_failures",
            "Failed attempts to write a dead-letter file (the batch stays in the spool; retried)",
            metrics.dead_letter_write_failures.clone(),
        );
        metrics
    }
}

/// State shared by the sinks, the task and the handle.
struct Shared {
    /// Suggested Retry-After in milliseconds: the next retry delay while inserts fail.
    retry_after_ms: AtomicU64,
    /// Rows accepted in this process and not yet stored or dead-lettered.
    unflushed: AtomicU64,
    /// Set by [`WriterHandle::shutdown`]: refuse rows at once, even while the task is
    /// busy retrying and has not closed the buffer yet.
    closing: AtomicBool,
    /// Signalled after each spool append, so the task learns of rows without polling.
    appended: Notify,
    rows_inserted: AtomicU64,
    batches: AtomicU64,
    rows_dead_lettered: AtomicU64,
    queue_depth: Gauge,
    /// In-memory queue: encoded bytes accepted and not yet stored or dead-lettered
    /// (queued, in the batch being built, in the batch being inserted).
    queued_bytes: AtomicU64,
    /// Bound of `queued_bytes` (`writer.queue_max_bytes`).
    queue_max_bytes: u64,
    queue_bytes: Gauge,
    progress: WriteProgress,
}

impl Shared {
    /// Rows replayed from a previous run were never counted in, so this saturates.
    fn forget_unflushed(&self, rows: u64) {
        let _ = self
            .unflushed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(rows))
            });
    }

    /// Memory batches stored or dead-lettered: their bytes leave the queue's budget.
    fn release_bytes(&self, bytes: u64) {
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.queue_bytes.dec_by(bytes as i64);
    }

    fn retry_after(&self) -> Duration {
        Duration::from_millis(self.retry_after_ms.load(Ordering::Relaxed))
    }
}

#[derive(Clone)]
enum Buffer {
    Memory(mpsc::Sender<Bytes>),
    Spool(Spool),
}

/// Where handlers put rows. Cloning is two reference count increments.
#[derive(Clone)]
pub struct EventSink {
    buffer: Buffer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("spooled", &matches!(self.buffer, Buffer::Spool(_)))
            .field("queue_depth", &self.queue_depth())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// A per-thread encode buffer, reused by the next request: the spool copies records
/// while `append` is called, and the in-memory queue gets one copy of exactly the
/// encoded bytes, so the bytes need not outlive the call.
#[derive(Default)]
struct Scratch {
    buf: Vec<u8>,
    /// Where each row ends in `buf`.
    ends: Vec<usize>,
}

impl Scratch {
    /// Encodes `rows` back to back into `buf`.
    fn encode(&mut self, rows: &[EventRow]) {
        self.buf.clear();
        self.ends.clear();
        for row in rows {
            rowbinary::encode_event(row, &mut self.buf);
            self.ends.push(self.buf.len());
        }
    }

    /// Where each encoded row lies in `buf`, in order.
    fn ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| start..end)
    }

    /// Gives back the memory of an unusually large request.
    fn trim(&mut self) {
        if self.buf.capacity() > KEEP_SCRATCH_BYTES {
            self.buf = Vec::new();
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl EventSink {
    /// Buffers all `rows` or none. Never waits for ClickHouse; with a spool, waits
    /// until the rows are durable per `spool.fsync`.
    pub async fn submit(&self, rows: &[EventRow]) -> Result<(), SubmitError> {
        if rows.is_empty() {
            return Ok(());
        }
        // Rows that slip past this check are still stored: the task drains the buffer.
        if self.shared.closing.load(Ordering::Relaxed) {
            return Err(SubmitError::ShuttingDown);
        }
        let n = rows.len() as u64;
        // Counted in before the rows enter the buffer (see `WriteProgress`).
        self.shared.progress.enter(n);
        let (result, queued) = match &self.buffer {
            // Nothing of a refused request was queued.
            Buffer::Memory(tx) => (self.submit_memory(tx, rows), false),
            Buffer::Spool(spool) => self.submit_spool(spool, rows).await,
        };
        if result.is_err() && !queued {
            self.shared.progress.refused(n);
        }
        result
    }

    /// How far the writer has come with the rows this sink accepted.
    pub fn progress(&self) -> WriteProgress {
        self.shared.progress.clone()
    }

    fn submit_memory(
        &self,
        tx: &mpsc::Sender<Bytes>,
        rows: &[EventRow],
    ) -> Result<(), SubmitError> {
        let n = rows.len();
        let capacity = tx.max_capacity();
        if n > capacity {
            return Err(SubmitError::TooLarge { rows: n, capacity });
        }
        // Refused before encoding when the rows cannot fit anyway.
        if tx.capacity() < n {
            return Err(SubmitError::QueueFull {
                retry_after: self.shared.retry_after(),
            });
        }
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.encode(rows);
            let queued = self.enqueue_memory(tx, scratch);
            scratch.trim();
            queued
        })
    }

    /// Queues the rows encoded in `scratch`: room for all their bytes and all their
    /// rows, or nothing.
    fn enqueue_memory(
        &self,
        tx: &mpsc::Sender<Bytes>,
        scratch: &Scratch,
    ) -> Result<(), SubmitError> {
        let shared = &self.shared;
        let n = scratch.ends.len();
        let bytes = scratch.buf.len() as u64;
        let max = shared.queue_max_bytes;
        if bytes > max {
            return Err(SubmitError::TooManyBytes { bytes, max });
        }
        // Bytes first, then rows; the bytes go back when the rows have no room.
        let before = shared.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        let refused = if before + bytes > max {
            Some(SubmitError::QueueFull {
                retry_after: shared.retry_after(),
            })
        } else {
            match tx.try_reserve_many(n) {
                Ok(mut permits) => {
                    // One allocation per request; each row is a slice of it (a lone
                    // row is sent whole: slicing would allocate a shared header).
                    let all = Bytes::copy_from_slice(&scratch.buf);
                    // Counted before sending so the task's decrement never runs first.
                    shared.queue_depth.inc_by(n as i64);
                    shared.queue_bytes.inc_by(bytes as i64);
                    shared.unflushed.fetch_add(n as u64, Ordering::Relaxed);
                    if n == 1 {
                        if let Some(permit) = permits.next() {
                            permit.send(all);
                        }
                    } else {
                        for (permit, range) in permits.zip(scratch.ranges()) {
                            permit.send(all.slice(range));
                        }
                    }
                    None
                }
                Err(TrySendError::Full(())) => Some(SubmitError::QueueFull {
                    retry_after: shared.retry_after(),
                }),
                Err(TrySendError::Closed(())) => Some(SubmitError::ShuttingDown),
            }
        };
        match refused {
            None => Ok(()),
            Some(err) => {
                shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                Err(err)
            }
        }
    }

    /// Appends the rows to the spool. Also says whether a refused request may have
    /// been queued all the same: an append that failed after its records were queued
    /// (an I/O error, the spool closing under it). Such rows stay counted in
    /// [`WriteProgress`]: delivered, they are counted out; if not, a wait for them
    /// runs into its deadline, the safe way to be wrong.
    async fn submit_spool(
        &self,
        spool: &Spool,
        rows: &[EventRow],
    ) -> (Result<(), SubmitError>, bool) {
        let append = SCRATCH.with_borrow_mut(|scratch| {
            scratch.encode(rows);
            let append = if let [_] = rows {
                spool.append(&[&scratch.buf])
            } else {
                let records: Vec<&[u8]> = scratch.ranges().map(|r| &scratch.buf[r]).collect();
                spool.append(&records)
            };
            scratch.trim();
            append
        });
        match append.await {
            Ok(()) => {
                self.shared
                    .unflushed
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                self.shared.appended.notify_one();
                (Ok(()), true)
            }
            // Counted by the spool (`hush_spool_full_rejections_total`).
            Err(SpoolError::Full { .. }) => (
                Err(SubmitError::QueueFull {
                    retry_after: self.shared.retry_after(),
                }),
                false,
            ),
            Err(err @ (SpoolError::EmptyRecord | SpoolError::RecordTooLarge { .. })) => {
                (Err(SubmitError::Unavailable(err.to_string())), false)
            }
            Err(SpoolError::Closed) => (Err(SubmitError::ShuttingDown), true),
            // Counted by the spool (`hush_spool_unwritable_rejections_total`); nothing
            // was appended, so nothing stays counted in.
            Err(SpoolError::Unwritable) => (
                Err(SubmitError::Unwritable {
                    retry_after: UNWRITABLE_RETRY_AFTER,
                }),
                false,
            ),
            Err(err) => (Err(SubmitError::Unavailable(err.to_string())), true),
        }
    }

    /// Rows waiting in the in-memory queue (not counting the batch being inserted);
    /// 0 with a spool (see the `hush_spool_*` metrics).
    pub fn queue_depth(&self) -> usize {
        match &self.buffer {
            Buffer::Memory(tx) => tx.max_capacity() - tx.capacity(),
            Buffer::Spool(_) => 0,
        }
    }

    /// Encoded bytes accepted into the in-memory queue and not yet stored (the batch
    /// being built and the one being inserted included); 0 with a spool.
    pub fn queued_bytes(&self) -> u64 {
        self.shared.queued_bytes.load(Ordering::Acquire)
    }

    /// The spool rows go to; `None` with the in-memory queue.
    pub fn spool(&self) -> Option<&Spool> {
        match &self.buffer {
            Buffer::Spool(spool) => Some(spool),
            Buffer::Memory(_) => None,
        }
    }

    /// The in-memory queue's capacity in rows; 0 with a spool (bounded in bytes).
    pub fn capacity(&self) -> usize {
        match &self.buffer {
            Buffer::Memory(tx) => tx.max_capacity(),
            Buffer::Spool(_) => 0,
        }
    }
}

/// Holds the writer's first insert back until the store is ready for it (`serve`
/// starting while ClickHouse is down opens it once the schema migrations are applied):
/// rows are accepted into the buffer meanwhile, and nothing is inserted into a table
/// whose schema is not current.
#[derive(Debug, Clone)]
pub struct StartGate(Option<tokio::sync::watch::Receiver<bool>>);

impl StartGate {
    /// A gate that is open from the start.
    pub fn open() -> Self {
        Self(None)
    }

    /// A gate that opens when `ready` turns `true`.
    pub fn when(ready: tokio::sync::watch::Receiver<bool>) -> Self {
        Self(Some(ready))
    }

    /// Resolves once the gate is open (never, when its sender went away closed).
    async fn wait(self) {
        if let Some(mut ready) = self.0
            && ready.wait_for(|open| *open).await.is_err()
        {
            std::future::pending::<()>().await;
        }
    }
}

/// Starts writer tasks.
pub struct Writer;

impl Writer {
    /// Spawns the writer task for `table` with an in-memory queue (must run inside a
    /// tokio runtime) and registers its metrics. `request_timeout` bounds each insert
    /// attempt (`clickhouse.request_timeout_ms`).
    pub fn spawn(
        client: Client,
        cfg: &WriterConfig,
        request_timeout: Duration,
        table: &str,
        registry: &mut Registry,
    ) -> (EventSink, WriterHandle) {
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let source = Source::Memory(MemorySource {
            rx,
            rows: Vec::new(),
            flush_at: None,
        });
        Self::start(
            client,
            cfg,
            request_timeout,
            table,
            Buffer::Memory(tx),
            source,
            None,
            StartGate::open(),
            registry,
        )
    }

    /// Spawns the writer task for `table` reading from `spool` (opened with
    /// [`Spool::open`] on `spool_dir`). Batches left from before a restart are
    /// inserted first.
    pub fn spawn_spooled(
        client: Client,
        cfg: &WriterConfig,
        request_timeout: Duration,
        table: &str,
        spool: Spool,
        spool_dir: &Path,
        registry: &mut Registry,
    ) -> (EventSink, WriterHandle) {
        let source = Source::Spool(SpoolSource {
            spool: spool.clone(),
            first_seen: None,
            draining: false,
        });
        Self::start(
            client,
            cfg,
            request_timeout,
            table,
            Buffer::Spool(spool),
            source,
            Some(spool_dir.join(QUARANTINE_DIR)),
            StartGate::open(),
            registry,
        )
    }

    /// [`Writer::spawn_spooled`] (with `Some(spool, spool_dir)`) or [`Writer::spawn`]
    /// (with `None`) whose task inserts nothing before `gate` opens.
    pub fn spawn_gated(
        client: Client,
        cfg: &WriterConfig,
        request_timeout: Duration,
        table: &str,
        spool: Option<(Spool, &Path)>,
        gate: StartGate,
        registry: &mut Registry,
    ) -> (EventSink, WriterHandle) {
        let (buffer, source, dead_letter_dir) = match spool {
            Some((spool, dir)) => (
                Buffer::Spool(spool.clone()),
                Source::Spool(SpoolSource {
                    spool,
                    first_seen: None,
                    draining: false,
                }),
                Some(dir.join(QUARANTINE_DIR)),
            ),
            None => {
                let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
                let source = Source::Memory(MemorySource {
                    rx,
                    rows: Vec::new(),
                    flush_at: None,
                });
                (Buffer::Memory(tx), source, None)
            }
        };
        Self::start(
            client,
            cfg,
            request_timeout,
            table,
            buffer,
            source,
            dead_letter_dir,
            gate,
            registry,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        client: Client,
        cfg: &WriterConfig,
        request_timeout: Duration,
        table: &str,
        buffer: Buffer,
        source: Source,
        dead_letter_dir: Option<PathBuf>,
        gate: StartGate,
        registry: &mut Registry,
    ) -> (EventSink, WriterHandle) {
        let metrics = Metrics::register(registry);
        let shared = Arc::new(Shared {
            retry_after_ms: AtomicU64::new(DEFAULT_RETRY_AFTER.as_millis() as u64),
            unflushed: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            appended: Notify::new(),
            rows_inserted: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            rows_dead_lettered: AtomicU64::new(0),
            queue_depth: metrics.queue_depth.clone(),
            queued_bytes: AtomicU64::new(0),
            queue_max_bytes: cfg.queue_max_bytes,
            queue_bytes: metrics.queue_bytes.clone(),
            progress: WriteProgress::default(),
        });
        if let Buffer::Spool(spool) = &buffer {
            // What a previous run left is inserted first: accepted before anything new.
            shared.progress.enter(spool.status().pending_records);
        }
        let spool = match &buffer {
            Buffer::Spool(spool) => Some(spool.clone()),
            Buffer::Memory(_) => None,
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = Task {
            // The schema is ours and covered by tests; plain RowBinary skips fetching
            // and checking column metadata on every insert.
            client: client.with_validation(false),
            table: table.to_owned(),
            source,
            stop: Stop {
                rx: stop_rx,
                watched: true,
                requested: false,
            },
            pace: Pace {
                batch_rows: cfg.batch_rows.max(1),
                flush_interval: Duration::from_millis(cfg.flush_interval_ms.max(1)),
            },
            retry_base: Duration::from_millis(cfg.retry_base_ms.max(1)),
            retry_max: Duration::from_millis(cfg.retry_max_ms.max(cfg.retry_base_ms).max(1)),
            request_timeout,
            dead_letter_dir,
            metrics,
            shared: Arc::clone(&shared),
            report: FlushReport::default(),
        };
        let join = tokio::spawn(async move {
            // A shutdown before the gate opened ends here by the handle's deadline:
            // spooled rows stay for the next start, queued ones are reported lost.
            gate.wait().await;
            task.run().await
        });
        (
            EventSink {
                buffer,
                shared: Arc::clone(&shared),
            },
            WriterHandle {
                stop: stop_tx,
                join,
                shared,
                spool,
            },
        )
    }
}

/// Owns the writer task. Dropping it detaches the task, which then runs until every
/// [`EventSink`] is gone (in-memory queue) or for the rest of the process (spool).
pub struct WriterHandle {
    stop: oneshot::Sender<()>,
    join: JoinHandle<FlushReport>,
    shared: Arc<Shared>,
    spool: Option<Spool>,
}

impl WriterHandle {
    /// Whether the writer task has ended. Before [`WriterHandle::shutdown`] that means
    /// it died (a panic): nothing drains the buffer any more.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// How far the writer has come (see [`WriteProgress`]).
    pub fn progress(&self) -> WriteProgress {
        self.shared.progress.clone()
    }

    /// Test seam: ends the writer task the way a panic does, for supervision tests.
    #[cfg(test)]
    pub(crate) fn kill_for_tests(&self) {
        self.join.abort();
    }

    /// Stops accepting rows (submit answers [`SubmitError::ShuttingDown`]) and stores
    /// everything already accepted, retrying failed inserts, for at most `deadline`.
    ///
    /// With a spool, rows not stored by the deadline stay in the spool for the next
    /// start (reported in [`FlushReport::rows_left_in_spool`]); without one they are
    /// lost ([`ShutdownError::Deadline`]).
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
                let _ = join.await;
                let shared = &self.shared;
                if let Some(spool) = &self.spool {
                    // Everything accepted is in the spool; make it durable and leave
                    // it for the next start, which replays the unacknowledged batches
                    // with their original tokens.
                    spool.close().await;
                    let left = spool.status().pending_records;
                    tracing::warn!(
                        rows = left,
                        ?deadline,
                        "writer shutdown deadline passed; the rows stay in the spool and are inserted at the next start"
                    );
                    return Ok(FlushReport {
                        rows_inserted: shared.rows_inserted.load(Ordering::Relaxed),
                        rows_drained: 0,
                        batches: shared.batches.load(Ordering::Relaxed),
                        rows_dead_lettered: shared.rows_dead_lettered.load(Ordering::Relaxed),
                        rows_left_in_spool: left,
                    });
                }
                let rows = shared.unflushed.load(Ordering::Relaxed);
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

/// When to cut a batch.
struct Pace {
    batch_rows: usize,
    flush_interval: Duration,
}

/// Longest a source waits before looking again at rows that arrived while a batch is
/// filling. Sources do not wake for every row: that is one more task poll per request
/// on the runtime that serves the requests, while a batch only needs cutting when it
/// is full or due, which a look every few milliseconds notices in time.
const LOOK_EVERY_MAX: Duration = Duration::from_millis(25);

impl Pace {
    /// How often a filling batch is looked at: often enough that a batch fills at most
    /// a few milliseconds past `batch_rows` time, at most an eighth of the flush delay.
    fn look_every(&self) -> Duration {
        (self.flush_interval / 8).clamp(Duration::from_millis(1), LOOK_EVERY_MAX)
    }
}

/// The shutdown request as the sources see it.
struct Stop {
    rx: oneshot::Receiver<()>,
    /// Still listening (the handle neither sent nor was dropped).
    watched: bool,
    /// Shutdown was requested: drain, without waiting for batches to fill.
    requested: bool,
}

impl Stop {
    /// Resolves when a shutdown is requested (never after that, or when the handle was
    /// dropped without one).
    async fn wait(&mut self) {
        if !self.watched {
            return std::future::pending().await;
        }
        let result = (&mut self.rx).await;
        self.watched = false;
        if result.is_ok() {
            self.requested = true;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// A batch handed out by a [`Source`].
enum Batch {
    Memory {
        payload: Bytes,
        /// Where each row ends in `payload`.
        ends: Vec<usize>,
        token: String,
    },
    Spool(SpoolBatch),
}

impl Batch {
    fn payload(&self) -> &Bytes {
        match self {
            Batch::Memory { payload, .. } => payload,
            Batch::Spool(b) => b.payload(),
        }
    }

    fn rows(&self) -> u64 {
        self.row_ends().len() as u64
    }

    /// Where each row ends in the payload.
    fn row_ends(&self) -> &[usize] {
        match self {
            Batch::Memory { ends, .. } => ends,
            Batch::Spool(b) => b.record_ends(),
        }
    }

    fn token(&self) -> &str {
        match self {
            Batch::Memory { token, .. } => token,
            Batch::Spool(b) => b.token(),
        }
    }
}

/// Where batches come from: the same cut/acknowledge interface over both buffers.
enum Source {
    Memory(MemorySource),
    Spool(SpoolSource),
}

impl Source {
    /// The next batch, `None` once shut down and drained.
    async fn next(&mut self, pace: &Pace, stop: &mut Stop, shared: &Shared) -> Option<Batch> {
        match self {
            Source::Memory(m) => m.next(pace, stop, shared).await,
            Source::Spool(s) => s.next(pace, stop, shared).await,
        }
    }

    /// Marks `batch` as stored (or dead-lettered).
    async fn ack(&mut self, batch: &Batch) {
        let (Source::Spool(s), Batch::Spool(b)) = (self, batch) else {
            return;
        };
        for attempt in 1..=ACK_ATTEMPTS {
            match s.spool.ack(b).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::error!(batch = b.token(), attempt, %error, "cannot record a batch as stored in the spool");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                }
            }
        }
        // Still safe: the batch is replayed at the next start with the same token and
        // ClickHouse drops it as a duplicate.
        tracing::error!(
            batch = b.token(),
            "giving up recording the batch as stored; it is replayed (and deduplicated) at the next start"
        );
    }
}

struct MemorySource {
    rx: mpsc::Receiver<Bytes>,
    rows: Vec<Bytes>,
    /// When the oldest row of `rows` must be flushed.
    flush_at: Option<Instant>,
}

impl MemorySource {
    async fn next(&mut self, pace: &Pace, stop: &mut Stop, shared: &Shared) -> Option<Batch> {
        loop {
            let room = pace.batch_rows.saturating_sub(self.rows.len());
            if room == 0 {
                return Some(self.cut());
            }
            if let Some(flush_at) = self.flush_at
                && !stop.requested
            {
                // A batch is filling: look again shortly (or at its deadline) and take
                // what arrived meanwhile, rather than waking for every row.
                let look_at = flush_at.min(Instant::now() + pace.look_every());
                tokio::select! {
                    biased;
                    () = stop.wait() => {
                        self.rx.close();
                        continue;
                    }
                    () = tokio::time::sleep_until(look_at) => {}
                }
                // Ready at once when rows are queued or the queue is closed.
                if let Some(received) = self.rx.recv_many(&mut self.rows, room).now_or_never() {
                    if received == 0 {
                        return Some(self.cut());
                    }
                    shared.queue_depth.dec_by(received as i64);
                }
                // A full batch is cut at the top of the loop.
                if Instant::now() >= flush_at {
                    return Some(self.cut());
                }
                continue;
            }
            tokio::select! {
                biased;
                () = stop.wait() => {
                    // Refuse new rows; permits already reserved still deliver, and
                    // recv_many returns 0 once everything is drained.
                    self.rx.close();
                }
                received = self.rx.recv_many(&mut self.rows, room) => {
                    if received == 0 {
                        // Closed (shutdown or every sink dropped) and drained.
                        return (!self.rows.is_empty()).then(|| self.cut());
                    }
                    shared.queue_depth.dec_by(received as i64);
                    if self.flush_at.is_none() {
                        self.flush_at = Some(Instant::now() + pace.flush_interval);
                    }
                }
                () = sleep_until(self.flush_at), if self.flush_at.is_some() && !stop.requested => {
                    return Some(self.cut());
                }
            }
        }
    }

    fn cut(&mut self) -> Batch {
        self.flush_at = None;
        let mut payload = BytesMut::with_capacity(self.rows.iter().map(Bytes::len).sum());
        let mut ends = Vec::with_capacity(self.rows.len());
        for row in &self.rows {
            payload.extend_from_slice(row);
            ends.push(payload.len());
        }
        self.rows.clear();
        Batch::Memory {
            payload: payload.freeze(),
            ends,
            token: BatchId::random().token(),
        }
    }
}

struct SpoolSource {
    spool: Spool,
    /// When rows were first seen waiting since the last cut.
    first_seen: Option<Instant>,
    /// Shutdown requested and the spool closed: hand out everything, then `None`.
    draining: bool,
}

impl SpoolSource {
    async fn next(&mut self, pace: &Pace, stop: &mut Stop, shared: &Shared) -> Option<Batch> {
        let mut failures = 0u32;
        loop {
            if self.draining {
                match self.spool.next_batch(pace.batch_rows).await {
                    Ok(batch) => return batch.map(Batch::Spool),
                    Err(error) => {
                        failures += 1;
                        tracing::error!(%error, "cannot read the spool");
                        tokio::time::sleep(backoff(
                            Duration::from_millis(50),
                            Duration::from_secs(5),
                            failures,
                        ))
                        .await;
                        continue;
                    }
                }
            }
            let status = self.spool.status();
            let ready = status.replay_batches > 0
                || status.pending_records >= pace.batch_rows as u64
                || self
                    .first_seen
                    .is_some_and(|t| t.elapsed() >= pace.flush_interval);
            if ready {
                self.first_seen = None;
                match self.spool.try_next_batch(pace.batch_rows).await {
                    Ok(Some(batch)) => return Some(Batch::Spool(batch)),
                    // Pending rows that are not readable yet (an append being
                    // synced): the append's notification wakes us.
                    Ok(None) => {}
                    Err(error) => {
                        failures += 1;
                        tracing::error!(%error, "cannot read the spool");
                        tokio::time::sleep(backoff(
                            Duration::from_millis(50),
                            Duration::from_secs(5),
                            failures,
                        ))
                        .await;
                        continue;
                    }
                }
            } else if status.pending_records > 0 && self.first_seen.is_none() {
                self.first_seen = Some(Instant::now());
            }
            // Rows are waiting: look again shortly (or at the flush deadline) instead
            // of waking for every append; with nothing waiting, the first append wakes.
            let look_at = self
                .first_seen
                .map(|t| (t + pace.flush_interval).min(Instant::now() + pace.look_every()));
            tokio::select! {
                biased;
                () = stop.wait() => {
                    // Appends already accepted are written (and synced) by close;
                    // from then on next_batch ends once everything is handed out.
                    self.spool.close().await;
                    self.draining = true;
                }
                () = shared.appended.notified(), if look_at.is_none() => {}
                () = sleep_until(look_at), if look_at.is_some() => {}
            }
        }
    }
}

struct Task {
    client: Client,
    table: String,
    source: Source,
    stop: Stop,
    pace: Pace,
    retry_base: Duration,
    retry_max: Duration,
    request_timeout: Duration,
    dead_letter_dir: Option<PathBuf>,
    metrics: Metrics,
    shared: Arc<Shared>,
    report: FlushReport,
}

impl Task {
    async fn run(mut self) -> FlushReport {
        let mut stopping_since: Option<u64> = None;
        while let Some(batch) = self
            .source
            .next(&self.pace, &mut self.stop, &self.shared)
            .await
        {
            if self.stop.requested && stopping_since.is_none() {
                stopping_since = Some(self.report.rows_inserted);
            }
            self.deliver(&batch).await;
            // Every row of it is now stored or dead-lettered (split parts included).
            self.shared.progress.done(batch.rows());
            self.source.ack(&batch).await;
            if let Batch::Memory { payload, .. } = &batch {
                self.shared.release_bytes(payload.len() as u64);
            }
        }
        if let Some(before) = stopping_since {
            self.report.rows_drained = self.report.rows_inserted - before;
        }
        self.report
    }

    /// Stores `batch`: inserts it until ClickHouse confirms it; if ClickHouse refuses
    /// its content [`PERMANENT_ATTEMPTS`] times, splits it to store every row it
    /// accepts and sets the rest aside as a dead letter ([`Task::split`]).
    async fn deliver(&mut self, batch: &Batch) {
        let rows = batch.rows();
        let Err(error) = self
            .insert(
                batch.token(),
                batch.payload().clone(),
                rows,
                PERMANENT_ATTEMPTS,
            )
            .await
        else {
            return;
        };
        let bad = if rows > 1 {
            self.split(batch, &error).await
        } else {
            vec![(0, error)]
        };
        if !bad.is_empty() {
            self.dead_letter(batch, &bad).await;
        }
    }

    /// Inserts `payload` (`rows` rows) with `token` until ClickHouse confirms it
    /// (`Ok`) or has refused its content `refusals` times (`Err` with the last
    /// refusal). Every other failure is retried, forever, with backoff.
    async fn insert(
        &mut self,
        token: &str,
        payload: Bytes,
        rows: u64,
        refusals: u32,
    ) -> Result<(), clickhouse::error::Error> {
        let mut attempt: u32 = 0;
        let mut refused: u32 = 0;
        loop {
            let started = Instant::now();
            let result = insert_payload(
                &self.client,
                &self.table,
                token,
                payload.clone(),
                self.request_timeout,
            )
            .await;
            match result {
                Ok(()) => {
                    let m = &self.metrics;
                    m.insert_duration.observe(started.elapsed().as_secs_f64());
                    m.batch_rows.observe(rows as f64);
                    m.rows_inserted.inc_by(rows);
                    let s = &self.shared;
                    s.forget_unflushed(rows);
                    s.rows_inserted.fetch_add(rows, Ordering::Relaxed);
                    s.batches.fetch_add(1, Ordering::Relaxed);
                    s.retry_after_ms
                        .store(DEFAULT_RETRY_AFTER.as_millis() as u64, Ordering::Relaxed);
                    self.report.rows_inserted += rows;
                    self.report.batches += 1;
                    if attempt > 0 {
                        tracing::info!(table = %self.table, rows, attempts = attempt + 1, batch = token, "insert succeeded after retries");
                    }
                    return Ok(());
                }
                Err(error) => {
                    self.metrics.insert_failures.inc();
                    attempt = attempt.saturating_add(1);
                    if is_permanent(&error) {
                        refused += 1;
                        if refused >= refusals {
                            return Err(error);
                        }
                    }
                    let delay = backoff(self.retry_base, self.retry_max, attempt);
                    self.shared.retry_after_ms.store(
                        delay.as_millis().max(DEFAULT_RETRY_AFTER.as_millis()) as u64,
                        Ordering::Relaxed,
                    );
                    tracing::warn!(
                        table = %self.table,
                        rows,
                        attempt,
                        batch = token,
                        retry_in_ms = delay.as_millis() as u64,
                        %error,
                        "insert failed; retrying with the same batch"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Finds the rows of a refused batch that ClickHouse refuses, storing the others:
    /// the batch is halved, each half inserted, a refused half halved again, until
    /// the refused parts are single rows. Returns those rows (index in the batch, with
    /// ClickHouse's answer), in order.
    ///
    /// A part is inserted with its own token, derived from the batch's token and the
    /// part's row range ([`part_token`]). Halving is deterministic, so when the batch
    /// is split again (replayed after a crash mid-way, or a restart) every part gets
    /// the same token, and ClickHouse drops the parts it already stored.
    ///
    /// The whole batch was refused [`PERMANENT_ATTEMPTS`] times, which tells content
    /// from a hiccup; a part is split (or, a single row, set aside) at its first
    /// refusal. A misjudged hiccup then costs extra inserts, or a row that goes to the
    /// dead-letter file (kept, re-insertable) rather than to ClickHouse. Cost: about
    /// 2 log2(rows) inserts per refused row, 2 × rows at worst (every row refused).
    async fn split(
        &mut self,
        batch: &Batch,
        first: &clickhouse::error::Error,
    ) -> Vec<(usize, clickhouse::error::Error)> {
        let ends = batch.row_ends();
        let n = ends.len();
        tracing::warn!(
            table = %self.table,
            rows = n,
            batch = batch.token(),
            error = %first,
            "ClickHouse refused a batch {PERMANENT_ATTEMPTS} times for its content; splitting it to store the rows it accepts"
        );
        let mut bad = Vec::new();
        // Depth first, first half first: parts are tried in row order.
        let mut parts = vec![n / 2..n, 0..n / 2];
        while let Some(part) = parts.pop() {
            let token = part_token(batch.token(), &part);
            let payload = batch.payload().slice(byte_range(ends, &part));
            match self.insert(&token, payload, part.len() as u64, 1).await {
                Ok(()) => {}
                Err(error) if part.len() == 1 => bad.push((part.start, error)),
                Err(_) => {
                    let mid = part.start + part.len() / 2;
                    parts.push(mid..part.end);
                    parts.push(part.start..mid);
                }
            }
        }
        tracing::info!(
            table = %self.table,
            rows = n,
            refused_rows = bad.len(),
            batch = batch.token(),
            "refused batch split: every row ClickHouse accepts is stored"
        );
        bad
    }

    /// Keeps the refused rows of `batch` (`bad`: index in the batch and ClickHouse's
    /// answer) out of the way: on disk next to the spool's quarantined records when
    /// there is a spool, else only counted and logged. Returns once the batch may be
    /// acknowledged: its dead-letter file is durably written. Until then the batch
    /// stays unacknowledged in the spool (a restart replays it), and the write is
    /// retried with backoff; the rows behind it wait in the spool meanwhile.
    async fn dead_letter(&mut self, batch: &Batch, bad: &[(usize, clickhouse::error::Error)]) {
        let rows = bad.len() as u64;
        let error = &bad[0].1;
        let Some(dir) = self.dead_letter_dir.clone() else {
            self.count_dead_letter(rows);
            tracing::error!(
                table = %self.table,
                rows,
                batch_rows = batch.rows(),
                batch = batch.token(),
                %error,
                "ClickHouse refuses rows for their content; without spool.dir there is nowhere to keep them: rows lost"
            );
            return;
        };
        let ends = batch.row_ends();
        let mut payload = BytesMut::new();
        let mut note = format!(
            "table: {}\nrows: {rows} of {}\ntoken: {}\n",
            self.table,
            batch.rows(),
            batch.token()
        );
        for (row, error) in bad {
            payload.extend_from_slice(&batch.payload()[byte_range(ends, &(*row..row + 1))]);
            note.push_str(&format!("row {row}: {error}\n"));
        }
        let payload = payload.freeze();
        let token = batch.token().to_owned();
        let mut failures = 0u32;
        let log = RateLimit::new(DEAD_LETTER_LOG_EVERY);
        loop {
            let (target, token, payload, note) =
                (dir.clone(), token.clone(), payload.clone(), note.clone());
            let written = tokio::task::spawn_blocking(move || {
                write_dead_letter(&target, &token, &payload, note.as_bytes())
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match written {
                Ok(path) => {
                    self.count_dead_letter(rows);
                    tracing::error!(
                        table = %self.table,
                        rows,
                        batch_rows = batch.rows(),
                        batch = batch.token(),
                        file = %path.display(),
                        failed_writes = failures,
                        %error,
                        "ClickHouse refuses rows for their content; moved to the dead-letter file"
                    );
                    return;
                }
                Err(io) => {
                    failures = failures.saturating_add(1);
                    self.metrics.dead_letter_write_failures.inc();
                    let delay = backoff(self.retry_base, self.retry_max, failures);
                    if let Some(unlogged) = log.check() {
                        tracing::error!(
                            table = %self.table,
                            rows,
                            batch = batch.token(),
                            dir = %dir.display(),
                            %error,
                            io_error = %io,
                            failed_writes = failures,
                            unlogged,
                            retry_in_ms = delay.as_millis() as u64,
                            "ClickHouse refuses rows for their content and their dead-letter file cannot be written; the batch stays in the spool and the write is retried"
                        );
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn count_dead_letter(&mut self, rows: u64) {
        self.metrics.dead_letter_batches.inc();
        self.metrics.dead_letter_rows.inc_by(rows);
        self.shared.forget_unflushed(rows);
        self.shared
            .rows_dead_lettered
            .fetch_add(rows, Ordering::Relaxed);
        self.report.rows_dead_lettered += rows;
    }
}

/// Writes `dir/dead-letter-<token>.rowbinary` (the payload) and `.txt` (the reason),
/// each synced and renamed into place, then syncs `dir` (and its parent when `dir`
/// had to be created), so the file survives a power loss once this returns: only then
/// may the batch leave the spool.
fn write_dead_letter(
    dir: &Path,
    token: &str,
    payload: &[u8],
    note: &[u8],
) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    let created = !dir.is_dir();
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("dead-letter-{token}.rowbinary"));
    for (target, content) in [(path.with_extension("txt"), note), (path.clone(), payload)] {
        let tmp = target.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)?;
    }
    std::fs::File::open(dir)?.sync_all()?;
    if created && let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(path)
}

/// The deduplication token of rows `part` of the batch with `token`: stable, so a
/// batch split again inserts each part with the token it had before.
fn part_token(token: &str, part: &std::ops::Range<usize>) -> String {
    format!("{token}-rows-{}-{}", part.start, part.end)
}

/// The bytes of rows `part` in a payload whose rows end at `ends`.
fn byte_range(ends: &[usize], part: &std::ops::Range<usize>) -> std::ops::Range<usize> {
    let start = part.start.checked_sub(1).map_or(0, |i| ends[i]);
    start..ends[part.end - 1]
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
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
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
    fn parts_of_a_split_batch_have_stable_tokens_and_exact_bytes() {
        assert_eq!(
            part_token("hush-ab-1-16-900", &(5..10)),
            "hush-ab-1-16-900-rows-5-10"
        );
        assert_ne!(part_token("t", &(0..5)), part_token("t", &(0..50)));
        // Rows of 3, 1 and 4 bytes.
        let ends = [3, 4, 8];
        assert_eq!(byte_range(&ends, &(0..1)), 0..3);
        assert_eq!(byte_range(&ends, &(1..2)), 3..4);
        assert_eq!(byte_range(&ends, &(1..3)), 3..8);
        assert_eq!(byte_range(&ends, &(0..3)), 0..8);
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
            "hush_writer_queue_bytes",
            "hush_writer_batch_rows_bucket",
            "hush_writer_insert_duration_seconds_bucket",
            "hush_writer_insert_failures_total",
            "hush_writer_rows_inserted_total",
            "hush_writer_dead_letter_batches_total",
            "hush_writer_dead_letter_rows_total",
            "hush_writer_dead_letter_write_failures_total",
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
            browser: Arc::from("Firefox"),
            browser_version: Arc::from("128.0"),
            os: Arc::from("Linux"),
            device: "desktop",
            country: *b"DE",
            ..EventRow::default()
        }
    }

    /// A client for a port nothing listens on: every insert fails fast.
    fn closed_port_client() -> Client {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        db::client(&crate::config::ClickHouseConfig {
            url: format!("http://127.0.0.1:{port}"),
            ..Default::default()
        })
    }

    /// Small batches and quick retries, so a stalled writer keeps retrying.
    fn stalled_writer_config(queue_capacity: usize) -> WriterConfig {
        WriterConfig {
            batch_rows: 2,
            flush_interval_ms: 10,
            queue_capacity,
            queue_max_bytes: 1 << 30,
            retry_base_ms: 5,
            retry_max_ms: 20,
            ..WriterConfig::default()
        }
    }

    /// A writer pointed at a closed port: inserts fail, so rows stay queued.
    fn stalled_writer(capacity: usize) -> (EventSink, WriterHandle) {
        Writer::spawn(
            closed_port_client(),
            &stalled_writer_config(capacity),
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
        sink.submit(&[]).await.unwrap();
        assert_eq!(sink.queue_depth(), 0);
        assert_eq!(
            sink.submit(&(0..6).map(row).collect::<Vec<_>>()).await,
            Err(SubmitError::TooLarge {
                rows: 6,
                capacity: 5
            })
        );
        sink.submit(&(0..4).map(row).collect::<Vec<_>>())
            .await
            .unwrap();
        assert_eq!(sink.queue_depth(), 4);
        let result = sink.submit(&(0..2).map(row).collect::<Vec<_>>()).await;
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
        sink.submit(&[row(9)]).await.unwrap();
        assert_eq!(sink.queue_depth(), 5);
        assert!(matches!(
            sink.submit(&[row(10)]).await,
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
        assert_eq!(sink.submit(&[row(1)]).await, Err(SubmitError::ShuttingDown));
    }

    // Current-thread, as above: nothing is stored, so the counts are exact.
    #[tokio::test(flavor = "current_thread")]
    async fn progress_counts_accepted_rows_and_not_refused_ones() {
        let (sink, handle) = stalled_writer(5);
        let progress = handle.progress();
        // Nothing accepted: nothing to wait for.
        progress
            .wait_for_accepted(Duration::from_secs(5))
            .await
            .unwrap();
        sink.submit(&(0..3).map(row).collect::<Vec<_>>())
            .await
            .unwrap();
        assert_eq!(progress.pending(), 3);
        // Refused whole (too many for the room left): counted back out at once.
        assert!(matches!(
            sink.submit(&(0..3).map(row).collect::<Vec<_>>()).await,
            Err(SubmitError::QueueFull { .. })
        ));
        assert!(matches!(
            sink.submit(&(0..9).map(row).collect::<Vec<_>>()).await,
            Err(SubmitError::TooLarge { .. })
        ));
        assert_eq!(sink.progress().pending(), 3);
        // ClickHouse never answers: the wait ends at its deadline and says how many.
        assert_eq!(
            progress.wait_for_accepted(Duration::from_millis(50)).await,
            Err(NotStored { rows: 3 })
        );
        let _ = handle.shutdown(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn progress_of_a_spool_counts_what_the_last_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, handle, spool) = stalled_spooled_writer(dir.path(), 1 << 20);
        sink.submit(&(0..4).map(row).collect::<Vec<_>>())
            .await
            .unwrap();
        assert_eq!(handle.progress().pending(), 4);
        handle.shutdown(Duration::from_millis(100)).await.unwrap();
        drop((sink, spool));
        // The next run owes the 4 rows before anything it accepts.
        let spool = reopen_when_released(dir.path(), 1 << 20).await;
        let (sink, handle) = Writer::spawn_spooled(
            closed_port_client(),
            &stalled_writer_config(10),
            Duration::from_secs(1),
            "events",
            spool.clone(),
            dir.path(),
            &mut Registry::default(),
        );
        assert_eq!(handle.progress().pending(), 4);
        sink.submit(&[row(9)]).await.unwrap();
        assert_eq!(handle.progress().pending(), 5);
        assert_eq!(
            handle
                .progress()
                .wait_for_accepted(Duration::from_millis(50))
                .await,
            Err(NotStored { rows: 5 })
        );
        let _ = handle.shutdown(Duration::from_millis(100)).await;
    }

    /// A row whose pathname makes it `pad` bytes longer than `row(i)`.
    fn big_row(i: u32, pad: usize) -> EventRow {
        EventRow {
            pathname: format!("/{i}{}", "x".repeat(pad)),
            ..row(i)
        }
    }

    fn encoded_len(rows: &[EventRow]) -> u64 {
        let mut buf = Vec::new();
        for r in rows {
            rowbinary::encode_event(r, &mut buf);
        }
        buf.len() as u64
    }

    // Current-thread, as above: the stalled writer cannot take rows meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn the_memory_queue_is_bounded_in_bytes_and_refuses_whole_requests() {
        // Room for three rows of 20 KB and a half, whatever the row cap says.
        let one = encoded_len(&[big_row(1, 20_000)]);
        let cfg = WriterConfig {
            queue_max_bytes: one * 7 / 2,
            ..stalled_writer_config(1_000)
        };
        let (sink, handle) = Writer::spawn(
            closed_port_client(),
            &cfg,
            Duration::from_secs(1),
            "events",
            &mut Registry::default(),
        );
        sink.submit(&[big_row(1, 20_000), big_row(2, 20_000)])
            .await
            .unwrap();
        assert_eq!(sink.queued_bytes(), 2 * one);
        // Two more do not fit: refused whole, nothing of them queued.
        let refused = sink.submit(&[big_row(3, 20_000), big_row(4, 20_000)]).await;
        assert!(
            matches!(refused, Err(SubmitError::QueueFull { .. })),
            "{refused:?}"
        );
        assert_eq!((sink.queue_depth(), sink.queued_bytes()), (2, 2 * one));
        // One more fits; then a row as large as one of them does not.
        sink.submit(&[big_row(5, 20_000)]).await.unwrap();
        assert_eq!((sink.queue_depth(), sink.queued_bytes()), (3, 3 * one));
        assert!(matches!(
            sink.submit(&[big_row(6, one as usize)]).await,
            Err(SubmitError::QueueFull { .. })
        ));
        // Small rows still fit in what is left.
        sink.submit(&[row(7)]).await.unwrap();
        assert_eq!(sink.queued_bytes(), 3 * one + encoded_len(&[row(7)]));
        // A request larger than the whole budget can never fit.
        let huge: Vec<EventRow> = (10..14).map(|i| big_row(i, 20_000)).collect();
        assert_eq!(
            sink.submit(&huge).await,
            Err(SubmitError::TooManyBytes {
                bytes: encoded_len(&huge),
                max: one * 7 / 2
            })
        );
        assert_eq!(sink.queue_depth(), 4);
        let _ = handle.shutdown(Duration::from_millis(100)).await;
    }

    #[test]
    fn only_content_errors_are_permanent() {
        use clickhouse::error::Error;
        let bad = |t: &str| Error::BadResponse(t.to_owned());
        for text in [
            "Code: 53. DB::Exception: Type mismatch (TYPE_MISMATCH)",
            "  Code: 27. DB::Exception: Cannot parse input (CANNOT_PARSE_INPUT_ASSERTION_FAILED)",
        ] {
            assert!(is_permanent(&bad(text)), "{text}");
        }
        for text in [
            "Code: 241. DB::Exception: Memory limit exceeded (MEMORY_LIMIT_EXCEEDED)",
            "Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)",
            "Code: 60. DB::Exception: Table x.events does not exist (UNKNOWN_TABLE)",
            "Code: 516. DB::Exception: default: Authentication failed (AUTHENTICATION_FAILED)",
            "Code: 330. something",
            // A body cut short on the way (a proxy, a reset): the same bytes may pass.
            "Code: 33. DB::Exception: Cannot read all data. Bytes read: 3. Bytes expected: 8.: (at row 1): While executing BinaryRowInputFormat. (CANNOT_READ_ALL_DATA) (version 25.8.1)",
            "Code: 32. DB::Exception: Attempt to read after eof: (at row 3): While executing BinaryRowInputFormat. (ATTEMPT_TO_READ_AFTER_EOF) (version 25.8.1)",
            "503 Service Unavailable",
            "Code: ",
            "",
        ] {
            assert!(!is_permanent(&bad(text)), "{text}");
        }
        assert!(!is_permanent(&Error::TimedOut));
        assert!(!is_permanent(&Error::Network("reset".into())));
        assert_eq!(exception_code("x Code: 123. y"), Some(123));
        assert_eq!(exception_code("Code: x"), None);
    }

    fn spool_config(dir: &std::path::Path, max_bytes: u64) -> crate::config::SpoolConfig {
        crate::config::SpoolConfig {
            dir: Some(dir.to_owned()),
            fsync: crate::config::FsyncPolicy::Always,
            fsync_interval_ms: 10,
            segment_bytes: max_bytes / 2,
            max_bytes,
        }
    }

    /// A spooled writer pointed at a closed port: rows stay in the spool.
    fn stalled_spooled_writer(
        dir: &std::path::Path,
        max_bytes: u64,
    ) -> (EventSink, WriterHandle, Spool) {
        let mut registry = Registry::default();
        let spool = Spool::open(&spool_config(dir, max_bytes), &mut registry).unwrap();
        let (sink, handle) = Writer::spawn_spooled(
            closed_port_client(),
            &stalled_writer_config(10),
            Duration::from_secs(1),
            "events",
            spool.clone(),
            dir,
            &mut registry,
        );
        (sink, handle, spool)
    }

    #[tokio::test]
    async fn a_full_spool_refuses_whole_requests_and_keeps_what_it_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, handle, spool) = stalled_spooled_writer(dir.path(), 8 * 1024);
        assert_eq!((sink.capacity(), sink.queue_depth()), (0, 0));
        let mut accepted = 0u64;
        let refused = loop {
            match sink.submit(&[row(accepted as u32), row(1)]).await {
                Ok(()) => accepted += 2,
                Err(e) => break e,
            }
            assert!(accepted < 1_000, "the spool never filled");
        };
        match refused {
            SubmitError::QueueFull { retry_after } => {
                assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}")
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        assert!(accepted >= 2);
        assert_eq!(spool.status().pending_records, accepted);

        // ClickHouse never answers: the deadline passes, and every accepted row is
        // reported as left in the spool, not lost.
        let report = handle.shutdown(Duration::from_millis(300)).await.unwrap();
        assert_eq!(report.rows_inserted, 0);
        assert_eq!(report.rows_left_in_spool, accepted);
        assert_eq!(sink.submit(&[row(1)]).await, Err(SubmitError::ShuttingDown));
        drop((sink, spool));
        let on_disk = Spool::inspect(dir.path()).unwrap();
        assert_eq!(on_disk.pending_records, accepted);
    }

    /// Opens the spool again once the last run let go of it: a blocking read the
    /// aborted writer had started can hold a handle for a moment after the abort (seen
    /// on a loaded machine as `Locked`). Waits with a deadline, never on luck.
    async fn reopen_when_released(dir: &std::path::Path, max_bytes: u64) -> Spool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Spool::open(&spool_config(dir, max_bytes), &mut Registry::default()) {
                Err(SpoolError::Locked(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return other.unwrap(),
            }
        }
    }

    #[tokio::test]
    async fn spooled_rows_are_encoded_once_per_row_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, handle, spool) = stalled_spooled_writer(dir.path(), 1 << 20);
        sink.submit(&(0..3).map(row).collect::<Vec<_>>())
            .await
            .unwrap();
        sink.submit(&[row(7)]).await.unwrap();
        handle.shutdown(Duration::from_millis(100)).await.unwrap();
        // The aborted writer's batch is handed out again after a restart, then the rest.
        drop((sink, spool));
        let spool = reopen_when_released(dir.path(), 1 << 20).await;
        let mut payload = Vec::new();
        let mut records = 0;
        while let Some(batch) = spool.try_next_batch(100).await.unwrap() {
            payload.extend_from_slice(batch.payload());
            records += batch.records();
        }
        let mut expected = Vec::new();
        for i in [0, 1, 2, 7] {
            crate::pipeline::rowbinary::encode_event(&row(i), &mut expected);
        }
        assert_eq!(records, 4);
        assert_eq!(payload, expected);
    }
}
