//! The disk spool: a write-ahead log of accepted hits, so a hit is durable before the
//! collector answers 202 and survives a crash or a ClickHouse outage.
//!
//! Handlers encode each hit once into RowBinary ([`crate::pipeline::rowbinary`]) and
//! [`Spool::append`] the bytes of one request together; the writer takes
//! [`SpoolBatch`]es with [`Spool::next_batch`], streams their payload unchanged as the
//! body of `INSERT INTO events FORMAT RowBinary` with the batch's
//! [`token`](SpoolBatch::token) as `insert_deduplication_token`, and [`Spool::ack`]s them.
//!
//! # Layout
//!
//! Segment files `NNNNNNNNNNNN.seg` (12-digit, never reused sequence numbers) of framed,
//! CRC32C-checked records, rolled at `spool.segment_bytes`; next to each a small
//! `.ack` file with the reader's progress; `spool.meta` with the spool's random id;
//! `quarantine/` with corrupt bytes found on recovery. See `format` and `files`.
//!
//! # Durability (`spool.fsync`) and what a crash can lose
//!
//! Every policy survives a crash of the process alone (kill -9, panic, OOM kill): an
//! append returns only after its bytes were written to the file, and the kernel keeps
//! them. The policies differ in what an operating-system crash or power loss loses:
//!
//! - `always`: an append returns after `fdatasync`. Nothing acknowledged is lost.
//!   Appends arriving while a sync runs are written and synced together by the next one
//!   (group commit), so throughput stays high while each request waits about one or two
//!   sync times.
//! - `interval`: an append returns after the write; a background thread syncs every
//!   `spool.fsync_interval_ms`. A power loss loses at most the hits of the last interval
//!   (plus the sync's own duration). A failed sync abandons the segment as under
//!   `always` (see [`syncer`]): the next append starts a new one.
//! - `never`: the kernel writes back when it likes (typically within ~30 s on Linux);
//!   a power loss can lose that much, and segment metadata can be inconsistent after
//!   one (recovery still cuts what does not verify).
//!
//! Under `always` and `interval` a batch is handed to the writer only once its records
//! and its bounds are on disk, so a record is never in ClickHouse without being
//! recoverable from the spool as part of exactly that batch.
//!
//! # Exactly-once into ClickHouse
//!
//! A batch is identified by (spool id, segment, start offset, end offset). Its bounds are
//! written to the segment's `.ack` file before the batch is handed out, and after a
//! restart the unacknowledged batches are handed out again with exactly the same
//! bounds, so the same token: ClickHouse drops a re-inserted batch it already has (within
//! the table's `non_replicated_deduplication_window`). Batches never span segments.
//!
//! # Recovery
//!
//! [`Spool::open`] scans the unacknowledged part of every segment. A torn tail of the
//! last segment (a write cut short by a crash; an append whose last record is missing)
//! is truncated, so a request is stored whole or not at all; a corrupt region that valid
//! records follow (media damage) is copied to `quarantine/` and skipped. Both are logged
//! and counted (`hush_spool_torn_tail_total`, `hush_spool_quarantined_records_total`);
//! nothing is skipped silently. New appends always go to a new segment.
//!
//! # Bounds
//!
//! When the segment files (plus appends in flight) would exceed `spool.max_bytes`,
//! appends fail fast with [`SpoolError::Full`] and nothing spooled is dropped. Space is
//! freed a whole segment at a time, when every record in it is acknowledged and it is
//! no longer appended to, and only once its file is really deleted (a failed deletion
//! is retried at the next read or acknowledgement, the bytes still counted); a rejected append makes the current segment roll so that a
//! drained spool always frees space.
//!
//! # Full disk
//!
//! A write the disk refuses (full, read-only, failing) fails its appends with
//! [`SpoolError::Unwritable`] and blocks the spool: later appends are refused at once,
//! without reaching the disk, until the appender's probe (every [`PROBE_EVERY`]: a
//! segment to append to, the reserve, a page written and synced) finds it writable,
//! with no append or restart needed to trigger it. The outage is logged once when it
//! starts and once when it ends, with the appends refused meanwhile, and counted
//! (`hush_spool_unwritable_rejections_total`, `hush_spool_writable`).
//!
//! Draining is what frees a full spool's disk, so the reader never needs new room:
//! [`Spool::open`] creates and rewrites nothing (`spool.meta` is read, not rewritten;
//! the first append creates the segment new appends go to), a replayed batch leaves
//! its `.ack` file as it is, and the `.ack` rewrites a new cut or an acknowledgement
//! needs take the room of `spool.reserve` (64 KiB, outside `max_bytes`), deleted when
//! such a write meets a full disk and made again by the appender when there is room.
//!
//! The spool holds RowBinary rows only: truncated, hashed data, never an address.

mod files;
mod format;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io;
use std::mem;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, oneshot};
use tracing::{error, info, warn};

use crate::config::{FsyncPolicy, SpoolConfig};
use crate::logging::RateLimit;
use files::{AckState, Meta};
use format::{FRAME_OVERHEAD, Frame, HEADER_LEN};

pub use format::MAX_RECORD_BYTES;

/// Bytes read from a segment at a time when cutting a batch.
const READ_CHUNK: usize = 256 * 1024;
/// Granularity of the append-time bookkeeping behind the oldest-pending age.
const CHECKPOINT_MS: u64 = 1_000;
/// A drained append buffer larger than this is released instead of kept for reuse.
const KEEP_BUFFER_BYTES: usize = 8 << 20;
/// While the disk refuses writes, how often the appender probes it.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// At most one "cannot write" line per this interval, however often the disk flaps.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(60);
/// Test seam for the full-disk tests of a machine where no small filesystem can be
/// mounted: while the file this environment variable names exists, every write of
/// the appender (segment data, a new segment, its probe) fails as on a full disk.
/// Read once, at open; unset in production, where it costs nothing. Not `HUSH_`: that
/// prefix is configuration.
pub const FAULT_ENV: &str = "HUSHTEST_SPOOL_WRITE_FAULT_FILE";

/// Why the spool could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds `max_bytes`; retry later (503 + Retry-After).
    #[error("spool is full: {used} of {max} bytes in use")]
    Full { used: u64, max: u64 },
    /// The spool's disk refuses writes (full, read-only, failing): appends are refused
    /// at once, without touching the disk, until the appender's probe finds it
    /// writable again (503 + Retry-After, `reason="spool_unwritable"`).
    #[error("the spool's disk refuses writes (full or failing)")]
    Unwritable,
    #[error("spool is closed")]
    Closed,
    #[error("spool records must not be empty")]
    EmptyRecord,
    #[error("spool record of {len} bytes exceeds the limit of {MAX_RECORD_BYTES}")]
    RecordTooLarge { len: usize },
    #[error("spool.dir is not set")]
    NotConfigured,
    #[error("spool directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("batch {0} is not outstanding in this spool")]
    UnknownBatch(String),
    #[error("spool I/O failed ({what} {path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |e| SpoolError::Io {
        what,
        path: path.to_owned(),
        source: Arc::new(e),
    }
}

/// A run of consecutive records of one segment, handed to the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolBatch {
    segment: u64,
    range: Range<u64>,
    records: u64,
    payload: Bytes,
    /// Where each record ends in `payload`.
    ends: Vec<usize>,
    token: String,
}

impl SpoolBatch {
    /// Segment sequence number.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Byte offsets of the batch in its segment; with the segment and the spool id,
    /// its identity, equal across restarts.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// Number of records (rows) in the payload.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The records' payloads, concatenated: a RowBinary body.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Where each record ends in [`payload`](Self::payload), in order (one entry per
    /// record), so a batch can be split between records.
    pub fn record_ends(&self) -> &[usize] {
        &self.ends
    }

    /// `insert_deduplication_token` for this batch: identical whenever the same
    /// batch is handed out again, here or after a restart; unique to this spool.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// A snapshot for `hush spool status` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolStatus {
    /// Segment files on disk.
    pub segments: usize,
    /// Bytes of the segment files plus appends in flight (what `max_bytes` bounds).
    pub bytes: u64,
    pub max_bytes: u64,
    /// Records not yet acknowledged by the writer.
    pub pending_records: u64,
    /// How long the oldest unacknowledged record has been spooled (1 s granularity;
    /// for segments recovered at start-up, since the segment was created).
    pub oldest_pending_age: Option<Duration>,
    /// Batches handed out and not yet acknowledged.
    pub in_flight_batches: usize,
    /// Batches from before the last restart still to be handed out again.
    pub replay_batches: usize,
    /// `fdatasync` calls on segment files since the spool was opened.
    pub fsyncs: u64,
}

/// What [`decode_segment`] found in the bytes of one segment file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedSegment {
    /// Creation time from the segment header.
    pub created_ms: u64,
    /// Unacknowledged records recovery would keep.
    pub records: u64,
    /// Newly found corrupt regions (absolute offsets) that recovery would quarantine.
    pub corrupt: Vec<Range<u64>>,
    /// End of the kept bytes (absolute); anything after it is a torn tail or garbage.
    pub end: u64,
}

/// Decodes one segment file and (optionally) the text of its `.ack` file with the
/// same record decoder recovery and [`Spool::inspect`] use, without touching disk.
/// `None` when `segment` has no valid header. Pure and must not panic on any input;
/// it exists for the fuzz targets in `fuzz/` and their regression tests.
pub fn decode_segment(segment: &[u8], ack: Option<&str>) -> Option<DecodedSegment> {
    let created_ms = format::parse_header(segment)?;
    let state = ack.and_then(AckState::parse).unwrap_or_default();
    let len = segment.len() as u64;
    let start = state.acked.max(HEADER_LEN).min(len);
    let scan = format::scan(&segment[start as usize..], start, &state.skips);
    Some(DecodedSegment {
        created_ms,
        records: scan.records,
        corrupt: scan.corrupt,
        end: scan.end,
    })
}

/// The spool. Cheap to clone; all clones share one spool. Dropping the last clone
/// closes it (see [`Spool::close`]).
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Holds the directory lock for the spool's lifetime.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        shutdown(&self.shared, &self.threads);
    }
}

struct Shared {
    dir: PathBuf,
    policy: FsyncPolicy,
    segment_bytes: u64,
    max_bytes: u64,
    fsync_interval: Duration,
    id: String,
    /// Segment file bytes plus bytes reserved by appends not yet written.
    used: AtomicU64,
    fsyncs: AtomicU64,
    /// `interval`: the segment whose background fdatasync failed (0: none), for the
    /// appender to abandon at its next write.
    sync_failed: AtomicU64,
    /// Test seam: while set, every fdatasync of a segment fails.
    #[cfg(test)]
    fail_syncs: std::sync::atomic::AtomicBool,
    /// Write-failure seam ([`FAULT_ENV`]): while this file exists, appender writes fail.
    fault: Option<PathBuf>,
    /// Set while the disk refuses writes: appends are refused at once, without I/O,
    /// until the appender's probe finds the disk writable (see "Full disk").
    blocked: AtomicBool,
    /// Appends refused since the current outage began (at once, or by a failed write).
    refused_in_outage: AtomicU64,
    /// "Released the reserve" lines.
    reserve_log: RateLimit,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    index: Mutex<Index>,
    /// Serialises the reader side (cutting, acknowledging, deleting), whose file I/O
    /// runs without holding `index`, so the appender never waits for it.
    reader: Mutex<()>,
    readable: Notify,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    metrics: Metrics,
}

impl Shared {
    fn durable(&self) -> bool {
        self.policy != FsyncPolicy::Never
    }

    fn seg_path(&self, seq: u64) -> PathBuf {
        self.dir.join(files::segment_name(seq))
    }

    fn ack_path(&self, seq: u64) -> PathBuf {
        self.dir.join(files::ack_name(seq))
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.metrics.fsyncs.inc();
        #[cfg(test)]
        if self.fail_syncs.load(Ordering::Relaxed) {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        file.sync_data()
    }

    fn token(&self, seq: u64, range: &Range<u64>) -> String {
        format!("hush-{}-{seq}-{}-{}", self.id, range.start, range.end)
    }

    /// The seam's injected failure, while its file exists.
    fn fault(&self) -> io::Result<()> {
        match &self.fault {
            Some(path) if path.exists() => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            _ => Ok(()),
        }
    }

    /// Writes segment `seq`'s `.ack` file. On a full disk the reserve is released and
    /// the write tried once more: recording progress is what lets the spool drain, and
    /// draining is what frees the disk.
    fn write_ack(&self, seq: u64, state: &AckState) -> Result<(), SpoolError> {
        let path = self.ack_path(seq);
        let content = state.encode();
        let write = || files::write_atomic(&path, content.as_bytes(), self.durable());
        match write() {
            Err(e) if files::out_of_space(&e) && self.release_reserve() => write(),
            other => other,
        }
        .map_err(io_err("write", &path))
    }

    /// Deletes the reserve file, if there is one; whether it did.
    fn release_reserve(&self) -> bool {
        let path = self.dir.join(files::RESERVE);
        if fs::remove_file(&path).is_err() {
            return false;
        }
        if let Some(held_back) = self.reserve_log.check() {
            warn!(
                dir = %self.dir.display(),
                held_back,
                "the spool's disk is full: released its reserve so it can drain"
            );
        }
        true
    }

    /// Counts `n` appends refused because the disk refuses writes.
    fn refused_unwritable(&self, n: u64) {
        self.metrics.unwritable_rejections.inc_by(n);
        self.refused_in_outage.fetch_add(n, Ordering::Relaxed);
    }
}

/// Appends waiting for the appender thread: their frames, back to back.
#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    appends: Vec<PendingAppend>,
    closing: bool,
    roll_requested: bool,
}

struct PendingAppend {
    /// End of this append's frames in the queue buffer.
    end: usize,
    records: u64,
    bytes: u64,
    done: Option<oneshot::Sender<Result<(), SpoolError>>>,
    result: Result<(), SpoolError>,
}

#[derive(Default)]
struct Index {
    segments: BTreeMap<u64, Segment>,
    /// The segment being appended to.
    active: u64,
    /// The appender thread has exited: nothing becomes readable any more.
    finished: bool,
}

struct Segment {
    file: Arc<File>,
    /// File length as far as this process wrote it.
    size: u64,
    /// End of what the reader may consume: complete appends, durable under `always`.
    readable: u64,
    /// End of what is known to be on disk.
    synced: u64,
    /// No longer appended to.
    sealed: bool,
    /// Records in `acked..readable` at recovery plus those appended since.
    records: u64,
    /// Records acknowledged since then.
    acked_records: u64,
    /// Everything before this offset is acknowledged.
    acked: u64,
    /// End of the last batch handed out.
    issued: u64,
    /// Handed out in this process, not yet acknowledged, in order from `acked`.
    outstanding: VecDeque<Cut>,
    /// Handed out before the last restart, not acknowledged, not handed out again yet.
    replay: VecDeque<Range<u64>>,
    /// Quarantined regions.
    skips: Vec<Range<u64>>,
    /// (offset, unix ms): records from `offset` on were appended at or after `ms`.
    checkpoints: VecDeque<(u64, u64)>,
    /// Fully acknowledged, but deleting the file failed (logged once; retried).
    delete_failed: bool,
}

struct Cut {
    range: Range<u64>,
    records: u64,
    acked: bool,
}

impl Segment {
    fn ack_state(&self) -> AckState {
        AckState {
            acked: self.acked,
            cuts: self
                .outstanding
                .iter()
                .map(|c| c.range.clone())
                .chain(self.replay.iter().cloned())
                .collect(),
            skips: self.skips.clone(),
        }
    }

    fn pending_records(&self) -> u64 {
        if self.acked >= self.readable {
            0
        } else {
            self.records.saturating_sub(self.acked_records)
        }
    }

    fn fully_acked(&self) -> bool {
        self.sealed
            && self.outstanding.is_empty()
            && self.replay.is_empty()
            && self.acked >= self.readable
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the spool down with it; every critical section
    // leaves the state consistent before anything that can panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone)]
struct Metrics {
    torn_tail: Counter,
    quarantined: Counter,
    full_rejections: Counter,
    unwritable_rejections: Counter,
    fsyncs: Counter,
    fsync_errors: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            torn_tail: Counter::default(),
            quarantined: Counter::default(),
            full_rejections: Counter::default(),
            unwritable_rejections: Counter::default(),
            fsyncs: Counter::default(),
            fsync_errors: Counter::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "hush_spool_torn_tail",
            "Torn spool tails (crash mid-write) truncated at start-up",
            self.torn_tail.clone(),
        );
        registry.register(
            "hush_spool_quarantined_records",
            "Corrupt spool regions copied to quarantine/ and skipped",
            self.quarantined.clone(),
        );
        registry.register(
            "hush_spool_full_rejections",
            "Appends refused because the spool reached spool.max_bytes",
            self.full_rejections.clone(),
        );
        registry.register(
            "hush_spool_unwritable_rejections",
            "Appends refused because the spool's disk refuses writes (full or failing)",
            self.unwritable_rejections.clone(),
        );
        registry.register(
            "hush_spool_fsyncs",
            "fdatasync calls on spool segments",
            self.fsyncs.clone(),
        );
        registry.register(
            "hush_spool_fsync_errors",
            "Failed fdatasync calls on spool segments",
            self.fsync_errors.clone(),
        );
    }
}

/// The spool gauges, computed at scrape time.
#[derive(Debug)]
struct Gauges(std::sync::Weak<Shared>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("dir", &self.dir).finish()
    }
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(shared) = self.0.upgrade() else {
            return Ok(());
        };
        let s = status(&shared);
        let age = s.oldest_pending_age.map_or(0.0, |d| d.as_secs_f64());
        let writable = !shared.blocked.load(Ordering::Relaxed);
        let gauges: [(&str, &str, ConstGauge<f64>); 7] = [
            (
                "hush_spool_writable",
                "Whether the spool's disk takes appends (0 while it refuses writes)",
                ConstGauge::new(f64::from(u8::from(writable))),
            ),
            (
                "hush_spool_bytes",
                "Bytes of spool segment files and appends in flight",
                ConstGauge::new(s.bytes as f64),
            ),
            (
                "hush_spool_segments",
                "Spool segment files",
                ConstGauge::new(s.segments as f64),
            ),
            (
                "hush_spool_pending_records",
                "Spooled records not yet acknowledged by the writer",
                ConstGauge::new(s.pending_records as f64),
            ),
            (
                "hush_spool_oldest_age_seconds",
                "Age of the oldest unacknowledged spooled record",
                ConstGauge::new(age),
            ),
            (
                "hush_spool_replay_batches",
                "Batches from before the last restart still to be inserted",
                ConstGauge::new(s.replay_batches as f64),
            ),
            (
                "hush_spool_in_flight_batches",
                "Spool batches being inserted and not yet acknowledged",
                ConstGauge::new(s.in_flight_batches as f64),
            ),
        ];
        for (name, help, gauge) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir`, recovers what is in it, starts the
    /// appender thread and registers the metrics. Blocking: call it before serving, or
    /// from `spawn_blocking`.
    pub fn open(cfg: &SpoolConfig, registry: &mut Registry) -> Result<Spool, SpoolError> {
        let fault = std::env::var_os(FAULT_ENV).map(PathBuf::from);
        Self::open_with_fault(cfg, registry, fault)
    }

    /// [`Spool::open`] with the write-failure seam set explicitly (see [`FAULT_ENV`]).
    fn open_with_fault(
        cfg: &SpoolConfig,
        registry: &mut Registry,
        fault: Option<PathBuf>,
    ) -> Result<Spool, SpoolError> {
        let dir = cfg.dir.clone().ok_or(SpoolError::NotConfigured)?;
        let durable = cfg.fsync != FsyncPolicy::Never;
        // Opening writes nothing an existing spool lacks room for: the directory and
        // lock file exist, `spool.meta` is read, not rewritten, and the segment new
        // appends go to is created by the first append (see "Full disk").
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;

        let lock_path = dir.join("spool.lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        if lock_file.try_lock().is_err() {
            return Err(SpoolError::Locked(dir));
        }

        let mut seg_seqs = Vec::new();
        let mut ack_seqs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = files::parse_seq(name, "seg") {
                seg_seqs.push(seq);
            } else if let Some(seq) = files::parse_seq(name, "ack") {
                ack_seqs.push(seq);
            } else if name.ends_with(".tmp") {
                // A metadata file whose rename never happened: the old one is current.
                let _ = fs::remove_file(entry.path());
            }
        }
        seg_seqs.sort_unstable();
        let max_seq = seg_seqs.last().copied().unwrap_or(0);

        let meta_path = dir.join(files::META);
        // A new id must be on disk before a batch is inserted under it.
        let mut new_id = false;
        let mut meta = match fs::read_to_string(&meta_path) {
            Ok(text) => Meta::parse(&text).unwrap_or_else(|| {
                warn!(path = %meta_path.display(), "unreadable spool.meta; the spool gets a new id, so batches in flight before now may be inserted twice");
                new_id = true;
                Meta::new_random()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !seg_seqs.is_empty() {
                    warn!(path = %meta_path.display(), "spool.meta is missing; the spool gets a new id, so batches in flight before now may be inserted twice");
                    new_id = true;
                }
                Meta::new_random()
            }
            Err(e) => return Err(io_err("read", &meta_path)(e)),
        };
        meta.next_segment = meta.next_segment.max(max_seq + 1);
        if new_id && let Err(e) = files::write_atomic(&meta_path, meta.encode().as_bytes(), durable)
        {
            // Replayed batches get tokens under an id a restart would not know; the
            // warning above already says they may be stored twice.
            warn!(path = %meta_path.display(), error = %e, "cannot write the new spool.meta yet; written with the first new segment");
        }

        let metrics = Metrics::new();
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            policy: cfg.fsync,
            segment_bytes: cfg.segment_bytes.max(HEADER_LEN + 1),
            max_bytes: cfg.max_bytes,
            fsync_interval: Duration::from_millis(cfg.fsync_interval_ms.max(1)),
            id: meta.id.clone(),
            used: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            sync_failed: AtomicU64::new(0),
            #[cfg(test)]
            fail_syncs: std::sync::atomic::AtomicBool::new(false),
            fault,
            blocked: AtomicBool::new(false),
            refused_in_outage: AtomicU64::new(0),
            reserve_log: RateLimit::new(Duration::from_secs(60)),
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            index: Mutex::new(Index::default()),
            reader: Mutex::new(()),
            readable: Notify::new(),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            metrics: metrics.clone(),
        });

        let mut used = 0u64;
        let mut recovered = BTreeMap::new();
        for (i, &seq) in seg_seqs.iter().enumerate() {
            let is_last = i + 1 == seg_seqs.len();
            if let Some(seg) = recover_segment(&shared, seq, is_last)? {
                used += seg.size;
                recovered.insert(seq, seg);
            }
        }
        for seq in ack_seqs {
            if !recovered.contains_key(&seq) {
                let _ = fs::remove_file(shared.ack_path(seq));
            }
        }

        // New appends always start a new segment (created by the first of them):
        // recovered ones stay as they are, so no offset a batch identity refers to is
        // ever written twice.
        shared.used.store(used, Ordering::Relaxed);
        let pending: u64 = recovered.values().map(Segment::pending_records).sum();
        lock(&shared.index).segments = recovered;
        info!(
            dir = %dir.display(),
            segments = seg_seqs.len(),
            pending_records = pending,
            "spool opened"
        );

        let appender = Appender {
            shared: shared.clone(),
            meta,
            meta_path,
            seq: 0,
            file: None,
            len: HEADER_LEN,
            synced: HEADER_LEN,
            poisoned: false,
            unsynced: 0..0,
            unpublished_records: 0,
            unpublished_from: HEADER_LEN,
            outage: None,
            outage_log: RateLimit::new(OUTAGE_LOG_EVERY),
            roll_log: RateLimit::new(OUTAGE_LOG_EVERY),
        };
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(io_err("spawn thread for", &dir))
        };
        threads.push(spawn(
            "hush-spool-append",
            Box::new(move || appender.run()),
        )?);
        if cfg.fsync == FsyncPolicy::Interval {
            let s = shared.clone();
            threads.push(spawn("hush-spool-sync", Box::new(move || syncer(&s)))?);
        }

        metrics.register(registry);
        registry.register_collector(Box::new(Gauges(Arc::downgrade(&shared))));
        Ok(Spool {
            inner: Arc::new(Inner {
                shared,
                threads: Mutex::new(threads),
                _lock: lock_file,
            }),
        })
    }

    /// Appends the records of one request: all of them or none. The returned future
    /// resolves once they are durable per `spool.fsync`; the records are copied before
    /// this returns, so the future borrows nothing.
    ///
    /// Fails at once with [`SpoolError::Full`] when the spool is at `max_bytes`.
    pub fn append(
        &self,
        records: &[&[u8]],
    ) -> impl Future<Output = Result<(), SpoolError>> + Send + 'static + use<> {
        let enqueued = self.enqueue(records);
        async move {
            match enqueued? {
                None => Ok(()),
                Some(rx) => rx.await.unwrap_or(Err(SpoolError::Closed)),
            }
        }
    }

    fn enqueue(
        &self,
        records: &[&[u8]],
    ) -> Result<Option<oneshot::Receiver<Result<(), SpoolError>>>, SpoolError> {
        if records.is_empty() {
            return Ok(None);
        }
        let mut bytes = 0u64;
        for r in records {
            if r.is_empty() {
                return Err(SpoolError::EmptyRecord);
            }
            if r.len() > MAX_RECORD_BYTES {
                return Err(SpoolError::RecordTooLarge { len: r.len() });
            }
            bytes += Frame::total(r.len()) as u64;
        }
        let shared = &self.inner.shared;
        if shared.blocked.load(Ordering::Relaxed) {
            shared.refused_unwritable(1);
            return Err(SpoolError::Unwritable);
        }
        let before = shared.used.fetch_add(bytes, Ordering::AcqRel);
        // Room for one more segment header stays free, so rolling never pushes the
        // spool past `max_bytes`.
        if before + bytes + HEADER_LEN > shared.max_bytes {
            shared.used.fetch_sub(bytes, Ordering::AcqRel);
            shared.metrics.full_rejections.inc();
            let mut q = lock(&shared.queue);
            if !q.roll_requested {
                q.roll_requested = true;
                shared.queue_cv.notify_one();
            }
            return Err(SpoolError::Full {
                used: before,
                max: shared.max_bytes,
            });
        }
        let (tx, rx) = oneshot::channel();
        let mut q = lock(&shared.queue);
        if q.closing {
            drop(q);
            shared.used.fetch_sub(bytes, Ordering::AcqRel);
            return Err(SpoolError::Closed);
        }
        let last = records.len() - 1;
        for (i, r) in records.iter().enumerate() {
            format::put_frame(&mut q.buf, r, i < last);
        }
        let end = q.buf.len();
        q.appends.push(PendingAppend {
            end,
            records: records.len() as u64,
            bytes,
            done: Some(tx),
            result: Ok(()),
        });
        // The appender sleeps only on an empty queue, so only the first append after
        // a drain needs to wake it. Woken after the lock is released: woken under it,
        // the appender (on the same core, it preempts us) would find the lock held,
        // spin and sleep again, two context switches for nothing.
        let wake = q.appends.len() == 1;
        drop(q);
        if wake {
            shared.queue_cv.notify_one();
        }
        Ok(Some(rx))
    }

    /// Waits for records and cuts the next batch of at most `max_records` (batches
    /// recovered from before a restart are handed out first, with their original
    /// bounds, whatever `max_records` is). `None` once the spool is closed and
    /// everything readable was handed out.
    pub async fn next_batch(&self, max_records: usize) -> Result<Option<SpoolBatch>, SpoolError> {
        loop {
            // Read before looking for records: the appender publishes its last
            // records before it sets this.
            let finished = lock(&self.inner.shared.index).finished;
            // `notify_one` stores a permit, so a wake-up between the check and the
            // await is not lost.
            if let Some(batch) = self.try_next_batch(max_records).await? {
                return Ok(Some(batch));
            }
            if finished {
                return Ok(None);
            }
            self.inner.shared.readable.notified().await;
        }
    }

    /// Cuts the next batch if records are available, without waiting for more.
    pub async fn try_next_batch(
        &self,
        max_records: usize,
    ) -> Result<Option<SpoolBatch>, SpoolError> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || spool.try_next_batch_blocking(max_records))
            .await
            .unwrap_or(Err(SpoolError::Closed))
    }

    /// Blocking form of [`try_next_batch`](Self::try_next_batch).
    pub fn try_next_batch_blocking(
        &self,
        max_records: usize,
    ) -> Result<Option<SpoolBatch>, SpoolError> {
        let shared = &self.inner.shared;
        let _reader = lock(&shared.reader);
        reap(shared);
        loop {
            match cut_batch(shared, max_records.max(1))? {
                CutOutcome::Batch(b) => return Ok(Some(b)),
                CutOutcome::Nothing => return Ok(None),
                CutOutcome::Empty => continue,
            }
        }
    }

    /// Marks `batch` as stored. Acknowledging it twice is harmless.
    pub async fn ack(&self, batch: &SpoolBatch) -> Result<(), SpoolError> {
        let spool = self.clone();
        let batch = batch.clone();
        tokio::task::spawn_blocking(move || spool.ack_blocking(&batch))
            .await
            .unwrap_or(Err(SpoolError::Closed))
    }

    /// Blocking form of [`ack`](Self::ack).
    pub fn ack_blocking(&self, batch: &SpoolBatch) -> Result<(), SpoolError> {
        let shared = &self.inner.shared;
        let _reader = lock(&shared.reader);
        let state = {
            let mut index = lock(&shared.index);
            let Some(seg) = index.segments.get_mut(&batch.segment) else {
                // Deleted: everything in it was acknowledged.
                return Ok(());
            };
            if batch.range.end <= seg.acked {
                return Ok(());
            }
            let Some(cut) = seg.outstanding.iter_mut().find(|c| c.range == batch.range) else {
                return Err(SpoolError::UnknownBatch(batch.token.clone()));
            };
            cut.acked = true;
            advance_acked(seg);
            if seg.fully_acked() {
                None
            } else {
                Some(seg.ack_state())
            }
        };
        if let Some(state) = state {
            shared.write_ack(batch.segment, &state)?;
        }
        reap(shared);
        Ok(())
    }

    /// Counts, sizes and the age of the oldest pending record. Cheap: no I/O.
    pub fn status(&self) -> SpoolStatus {
        status(&self.inner.shared)
    }

    /// Whether appends are taken: `false` while the disk refuses writes and appends
    /// are refused with [`SpoolError::Unwritable`].
    pub fn writable(&self) -> bool {
        !self.inner.shared.blocked.load(Ordering::Relaxed)
    }

    /// The spool's random id (the first part of every batch token).
    pub fn id(&self) -> &str {
        &self.inner.shared.id
    }

    /// Status of the spool in `dir` without opening it: no lock, no recovery, no
    /// writes, so it works while a collector has the spool open (`hush spool status`).
    /// Records of an append being written at that moment are not counted, and the age
    /// is an upper bound: the time since the segment holding the oldest pending record
    /// was created (append times are kept in memory only).
    pub fn inspect(dir: &Path) -> Result<SpoolStatus, SpoolError> {
        let mut seqs = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let entry = entry.map_err(io_err("list", dir))?;
            if let Some(seq) = entry
                .file_name()
                .to_str()
                .and_then(|n| files::parse_seq(n, "seg"))
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let now = now_ms();
        let mut s = SpoolStatus {
            segments: 0,
            bytes: 0,
            max_bytes: 0,
            pending_records: 0,
            oldest_pending_age: None,
            in_flight_batches: 0,
            replay_batches: 0,
            fsyncs: 0,
        };
        for seq in seqs {
            let path = dir.join(files::segment_name(seq));
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Deleted since the listing: acknowledged meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read", &path)(e)),
            };
            s.segments += 1;
            s.bytes += bytes.len() as u64;
            let Some(created) = format::parse_header(&bytes) else {
                continue;
            };
            let state = fs::read_to_string(dir.join(files::ack_name(seq)))
                .ok()
                .and_then(|t| AckState::parse(&t))
                .unwrap_or_default();
            let start = state.acked.max(HEADER_LEN).min(bytes.len() as u64);
            let scan = format::scan(&bytes[start as usize..], start, &state.skips);
            s.pending_records += scan.records;
            s.replay_batches += state.cuts.len();
            if scan.records > 0 && s.oldest_pending_age.is_none() {
                s.oldest_pending_age = Some(Duration::from_millis(now.saturating_sub(created)));
            }
        }
        Ok(s)
    }

    /// Whether [`close`](Self::close) ran.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.shared.queue).closing
    }

    /// Stops accepting appends, writes (and under `always`/`interval` syncs) those
    /// already accepted, and stops the spool's threads. Reading and acknowledging keep
    /// working, so a writer can drain what is readable.
    pub async fn close(&self) {
        let spool = self.clone();
        let _ = tokio::task::spawn_blocking(move || spool.close_blocking()).await;
    }

    /// Blocking form of [`close`](Self::close).
    pub fn close_blocking(&self) {
        shutdown(&self.inner.shared, &self.inner.threads);
    }
}

fn shutdown(shared: &Shared, threads: &Mutex<Vec<JoinHandle<()>>>) {
    {
        let mut q = lock(&shared.queue);
        q.closing = true;
        shared.queue_cv.notify_one();
    }
    {
        *lock(&shared.stop) = true;
        shared.stop_cv.notify_all();
    }
    let handles = mem::take(&mut *lock(threads));
    for h in handles {
        let _ = h.join();
    }
    shared.readable.notify_one();
}

fn new_segment(file: Arc<File>, created_ms: u64) -> Segment {
    Segment {
        file,
        size: HEADER_LEN,
        readable: HEADER_LEN,
        synced: HEADER_LEN,
        sealed: false,
        records: 0,
        acked_records: 0,
        acked: HEADER_LEN,
        issued: HEADER_LEN,
        outstanding: VecDeque::new(),
        replay: VecDeque::new(),
        skips: Vec::new(),
        checkpoints: VecDeque::from([(HEADER_LEN, created_ms)]),
        delete_failed: false,
    }
}

fn status(shared: &Shared) -> SpoolStatus {
    let index = lock(&shared.index);
    let now = now_ms();
    let mut s = SpoolStatus {
        segments: index.segments.len(),
        bytes: shared.used.load(Ordering::Relaxed),
        max_bytes: shared.max_bytes,
        pending_records: 0,
        oldest_pending_age: None,
        in_flight_batches: 0,
        replay_batches: 0,
        fsyncs: shared.fsyncs.load(Ordering::Relaxed),
    };
    for seg in index.segments.values() {
        let pending = seg.pending_records();
        s.pending_records += pending;
        s.in_flight_batches += seg.outstanding.iter().filter(|c| !c.acked).count();
        s.replay_batches += seg.replay.len();
        if pending > 0 && s.oldest_pending_age.is_none() {
            let appended = seg
                .checkpoints
                .iter()
                .take_while(|(off, _)| *off <= seg.acked)
                .last()
                .or(seg.checkpoints.front())
                .map_or(now, |&(_, ms)| ms);
            s.oldest_pending_age = Some(Duration::from_millis(now.saturating_sub(appended)));
        }
    }
    s
}

/// Moves `acked` over the acknowledged batches at the front.
fn advance_acked(seg: &mut Segment) {
    while seg.outstanding.front().is_some_and(|c| c.acked) {
        if let Some(cut) = seg.outstanding.pop_front() {
            seg.acked = cut.range.end;
            seg.acked_records += cut.records;
        }
    }
    while seg.checkpoints.len() > 1 && seg.checkpoints[1].0 <= seg.acked {
        seg.checkpoints.pop_front();
    }
}

/// Deletes sealed segments whose records are all acknowledged. Caller holds `reader`.
///
/// A segment leaves the index, and its bytes leave `used`, only once its file is gone:
/// a segment whose deletion failed still takes room on disk, so it keeps counting
/// against `max_bytes` and is deleted again at the next call. Its `.ack` file is then
/// rewritten as fully acknowledged, so a restart before the deletion succeeds does not
/// replay what ClickHouse already has.
fn reap(shared: &Shared) {
    let victims: Vec<(u64, u64, bool, AckState)> = {
        let index = lock(&shared.index);
        index
            .segments
            .iter()
            .filter(|(_, s)| s.fully_acked())
            .map(|(&seq, s)| {
                let done = AckState {
                    acked: s.readable.max(s.acked),
                    cuts: Vec::new(),
                    skips: s.skips.clone(),
                };
                (seq, s.size, s.delete_failed, done)
            })
            .collect()
    };
    for (seq, size, failed_before, done) in victims {
        // The segment first: an `.ack` file without its segment is removed at start-up,
        // while a segment without its `.ack` would be replayed from the start.
        let path = shared.seg_path(seq);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                if failed_before {
                    tracing::debug!(path = %path.display(), error = %e, "acknowledged spool segment still cannot be deleted");
                } else {
                    error!(path = %path.display(), error = %e, "cannot delete an acknowledged spool segment; it keeps its room in spool.max_bytes and is deleted again later");
                    if let Err(e) = shared.write_ack(seq, &done) {
                        error!(error = %e, "cannot record the undeletable segment as acknowledged; a restart before it is deleted replays it (deduplicated by ClickHouse)");
                    }
                    if let Some(seg) = lock(&shared.index).segments.get_mut(&seq) {
                        seg.delete_failed = true;
                    }
                }
                continue;
            }
        }
        if failed_before {
            info!(path = %path.display(), "acknowledged spool segment deleted after all");
        }
        let _ = fs::remove_file(shared.ack_path(seq));
        lock(&shared.index).segments.remove(&seq);
        shared.used.fetch_sub(size, Ordering::AcqRel);
    }
}

enum CutOutcome {
    Batch(SpoolBatch),
    /// A batch whose records were all quarantined: nothing to hand out, try again.
    Empty,
    Nothing,
}

/// What to read next, decided under the index lock, read without it.
struct Plan {
    seq: u64,
    file: Arc<File>,
    start: u64,
    /// End of the bytes to read.
    limit: u64,
    /// Fixed end of a replayed batch; `None` for a new cut.
    replay_end: Option<u64>,
    synced: u64,
    skips: Vec<Range<u64>>,
}

fn plan_next(shared: &Shared) -> Option<Plan> {
    let index = lock(&shared.index);
    for (&seq, seg) in &index.segments {
        let plan = |start: u64, limit: u64, replay_end: Option<u64>| Plan {
            seq,
            file: seg.file.clone(),
            start,
            limit,
            replay_end,
            synced: seg.synced,
            skips: seg.skips.clone(),
        };
        if let Some(r) = seg.replay.front() {
            return Some(plan(r.start, r.end.min(seg.readable), Some(r.end)));
        }
        if seg.issued < seg.readable {
            return Some(plan(seg.issued, seg.readable, None));
        }
        if !seg.sealed {
            return None;
        }
    }
    None
}

/// Cuts (or re-issues) one batch. Caller holds `reader`.
fn cut_batch(shared: &Shared, max_records: usize) -> Result<CutOutcome, SpoolError> {
    let Some(plan) = plan_next(shared) else {
        return Ok(CutOutcome::Nothing);
    };
    let path = shared.seg_path(plan.seq);
    let max = if plan.replay_end.is_some() {
        usize::MAX
    } else {
        max_records
    };
    let mut skips = plan.skips.clone();
    let read = read_records(shared, &plan, max, &mut skips).map_err(io_err("read", &path))?;
    // A replayed batch whose reading found no new damage leaves the `.ack` file as it
    // is: its bounds are there already (moving it from "to replay" to "handed out"
    // keeps the file's list of cuts), so a full disk does not stop a replay.
    let unchanged = plan.replay_end.is_some() && skips == plan.skips;
    let end = plan.replay_end.unwrap_or(read.end);
    let range = plan.start..end;

    // The batch must be recoverable exactly as handed out: its records on disk ...
    let mut synced = None;
    if shared.durable() && plan.synced < read.end {
        shared.sync(&plan.file).map_err(|e| {
            shared.metrics.fsync_errors.inc();
            io_err("fdatasync", &path)(e)
        })?;
        synced = Some(read.end);
    }

    let state = {
        let mut index = lock(&shared.index);
        let Some(seg) = index.segments.get_mut(&plan.seq) else {
            return Ok(CutOutcome::Empty);
        };
        if let Some(s) = synced {
            seg.synced = seg.synced.max(s);
        }
        seg.skips = skips;
        if plan.replay_end.is_some() {
            seg.replay.pop_front();
        }
        seg.issued = seg.issued.max(end);
        seg.outstanding.push_back(Cut {
            range: range.clone(),
            records: read.records,
            acked: read.records == 0,
        });
        if read.records == 0 {
            advance_acked(seg);
        }
        seg.ack_state()
    };
    // ... and its bounds, before anything can insert it.
    if !unchanged {
        shared.write_ack(plan.seq, &state)?;
    }

    if read.records == 0 {
        return Ok(CutOutcome::Empty);
    }
    Ok(CutOutcome::Batch(SpoolBatch {
        segment: plan.seq,
        token: shared.token(plan.seq, &range),
        range,
        records: read.records,
        payload: Bytes::from(read.payload),
        ends: read.ends,
    }))
}

struct Read {
    payload: Vec<u8>,
    ends: Vec<usize>,
    records: u64,
    end: u64,
}

/// Reads up to `max` records from `plan.start` to `plan.limit`, verifying each. A
/// corrupt region found here (damage after recovery) is quarantined and added to
/// `skips`, like at start-up.
fn read_records(
    shared: &Shared,
    plan: &Plan,
    max: usize,
    skips: &mut Vec<Range<u64>>,
) -> io::Result<Read> {
    let mut out = Read {
        payload: Vec::new(),
        ends: Vec::new(),
        records: 0,
        end: plan.start,
    };
    let mut chunk: Vec<u8> = Vec::new();
    let mut chunk_at = plan.start;
    let mut pos = plan.start;
    // Fills `chunk` so it holds [at, at + need) when the file has it below `limit`.
    let fill = |chunk: &mut Vec<u8>, chunk_at: &mut u64, at: u64, need: usize| -> io::Result<()> {
        let have = *chunk_at <= at && at + need as u64 <= *chunk_at + chunk.len() as u64;
        if have {
            return Ok(());
        }
        let len = (need.max(READ_CHUNK) as u64).min(plan.limit - at) as usize;
        chunk.resize(len, 0);
        plan.file.read_exact_at(chunk, at)?;
        *chunk_at = at;
        Ok(())
    };
    while pos < plan.limit && (out.records as usize) < max {
        if let Some(skip) = skips.iter().find(|s| s.contains(&pos)) {
            pos = skip.end.min(plan.limit);
            out.end = pos;
            continue;
        }
        let mut frame = Frame::Incomplete;
        if plan.limit - pos >= FRAME_OVERHEAD as u64 {
            fill(&mut chunk, &mut chunk_at, pos, FRAME_OVERHEAD)?;
            let at = (pos - chunk_at) as usize;
            let len = format::frame_len(&chunk[at..]);
            let need = FRAME_OVERHEAD + len;
            if len == 0 || len > MAX_RECORD_BYTES {
                frame = Frame::Invalid;
            } else if (need as u64) <= plan.limit - pos {
                fill(&mut chunk, &mut chunk_at, pos, need)?;
                frame = format::parse_frame(&chunk[(pos - chunk_at) as usize..]);
            }
        }
        match frame {
            Frame::Valid { len, .. } => {
                let at = (pos - chunk_at) as usize + FRAME_OVERHEAD;
                out.payload.extend_from_slice(&chunk[at..at + len]);
                out.ends.push(out.payload.len());
                out.records += 1;
                pos += Frame::total(len) as u64;
                out.end = pos;
            }
            Frame::Incomplete | Frame::Invalid => {
                // Everything below `limit` was written whole, so this is damage.
                let mut rest = vec![0u8; (plan.limit - pos) as usize];
                plan.file.read_exact_at(&mut rest, pos)?;
                let next = format::resync(&rest, 1).unwrap_or(rest.len());
                let region = pos..pos + next as u64;
                quarantine(shared, plan.seq, region.clone(), &rest[..next]);
                skips.push(region.clone());
                skips.sort_by_key(|r| r.start);
                pos = region.end;
                out.end = pos;
            }
        }
    }
    Ok(out)
}

fn quarantine(shared: &Shared, seq: u64, region: Range<u64>, bytes: &[u8]) {
    shared.metrics.quarantined.inc();
    match files::write_quarantine(&shared.dir, seq, region.start, bytes, shared.durable()) {
        Ok(path) => warn!(
            segment = seq,
            offset = region.start,
            bytes = bytes.len(),
            copy = %path.display(),
            "corrupt spool records quarantined and skipped"
        ),
        Err(e) => error!(
            segment = seq,
            offset = region.start,
            bytes = bytes.len(),
            error = %e,
            "corrupt spool records skipped; copying them to quarantine/ failed"
        ),
    }
}

/// Recovers one segment found at start-up; `None` when nothing of it remains.
fn recover_segment(
    shared: &Shared,
    seq: u64,
    is_last: bool,
) -> Result<Option<Segment>, SpoolError> {
    let path = shared.seg_path(seq);
    let ack_path = shared.ack_path(seq);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    let len = file.metadata().map_err(io_err("stat", &path))?.len();
    let mut head = [0u8; HEADER_LEN as usize];
    let created = if len >= HEADER_LEN {
        file.read_exact_at(&mut head, 0)
            .map_err(io_err("read", &path))?;
        format::parse_header(&head)
    } else {
        None
    };
    let Some(created) = created else {
        if is_last && len < HEADER_LEN {
            // Created, then the crash came before its header was written: no records.
            shared.metrics.torn_tail.inc();
            warn!(
                segment = seq,
                bytes = len,
                "spool segment torn before its header; removed"
            );
        } else {
            shared.metrics.quarantined.inc();
            let quarantine = shared.dir.join(files::QUARANTINE);
            fs::create_dir_all(&quarantine).map_err(io_err("create", &quarantine))?;
            let target = quarantine.join(files::quarantine_name(seq, 0));
            fs::rename(&path, &target).map_err(io_err("quarantine", &path))?;
            warn!(segment = seq, bytes = len, copy = %target.display(), "spool segment without a valid header quarantined");
        }
        let _ = fs::remove_file(&path);
        let _ = fs::remove_file(&ack_path);
        return Ok(None);
    };

    let mut state = match fs::read_to_string(&ack_path) {
        Ok(text) => AckState::parse(&text).unwrap_or_else(|| {
            warn!(segment = seq, "unreadable spool .ack file; replaying the whole segment (rows may be inserted twice)");
            AckState::default()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => AckState::default(),
        Err(e) => return Err(io_err("read", &ack_path)(e)),
    };
    let start = state.acked.max(HEADER_LEN);
    state.acked = start;
    if let Some(first) = state.cuts.first()
        && first.start != start
    {
        state.cuts.clear();
    }

    let mut buf = vec![0u8; len.saturating_sub(start) as usize];
    file.read_exact_at(&mut buf, start)
        .map_err(io_err("read", &path))?;
    let scan = format::scan(&buf, start, &state.skips);
    let mut changed = false;
    for region in &scan.corrupt {
        let bytes = &buf[(region.start - start) as usize..(region.end - start) as usize];
        quarantine(shared, seq, region.clone(), bytes);
        state.skips.push(region.clone());
        changed = true;
    }
    let mut size = len.max(HEADER_LEN);
    if scan.end < len {
        let tail = &buf[(scan.end - start) as usize..];
        if is_last {
            shared.metrics.torn_tail.inc();
            warn!(
                segment = seq,
                offset = scan.end,
                bytes = tail.len(),
                "torn spool tail (crash mid-write) truncated"
            );
            file.set_len(scan.end).map_err(io_err("truncate", &path))?;
            if shared.durable() {
                shared.sync(&file).map_err(io_err("fdatasync", &path))?;
            }
            size = scan.end;
        } else {
            quarantine(shared, seq, scan.end..len, tail);
            state.skips.push(scan.end..len);
            changed = true;
        }
    }
    state.skips.sort_by_key(|r| r.start);
    if changed
        && let Err(e) = files::write_atomic(&ack_path, state.encode().as_bytes(), shared.durable())
    {
        // Not fatal (a full disk must not stop the start): the skips are kept in
        // memory and written with the segment's next cut; a crash before that finds
        // the same damage again.
        warn!(path = %ack_path.display(), error = %e, "cannot record the quarantined regions yet");
    }

    let issued = state.cuts.last().map_or(start, |c| c.end);
    let seg = Segment {
        file: Arc::new(file),
        size,
        readable: scan.end,
        synced: scan.end,
        sealed: true,
        records: scan.records,
        acked_records: 0,
        acked: start,
        issued,
        outstanding: VecDeque::new(),
        replay: state.cuts.into_iter().collect(),
        skips: state.skips,
        checkpoints: VecDeque::from([(HEADER_LEN, created)]),
        delete_failed: false,
    };
    if seg.fully_acked() {
        // Acknowledged before the crash, deleted after it: finish the deletion.
        let _ = fs::remove_file(&path);
        let _ = fs::remove_file(&ack_path);
        return Ok(None);
    }
    Ok(Some(seg))
}

/// The one thread that writes segment files.
struct Appender {
    shared: Arc<Shared>,
    meta: Meta,
    meta_path: PathBuf,
    /// The segment being appended to (0 and `None` until the first append creates
    /// one, or while none can be created).
    seq: u64,
    file: Option<Arc<File>>,
    /// Write position (file length).
    len: u64,
    synced: u64,
    /// A failed write could not be undone, or a sync failed: the file's content is
    /// unknown past `len`, so the next append starts a new segment.
    poisoned: bool,
    /// Under `always`: appends of the current batch written since the last sync.
    unsynced: Range<usize>,
    /// Under `always`: records written since the last sync, not yet visible to the
    /// reader, and where they start.
    unpublished_records: u64,
    unpublished_from: u64,
    /// Since when the disk refuses writes, and whether that was logged.
    outage: Option<Outage>,
    /// "Cannot write" lines: one per [`OUTAGE_LOG_EVERY`] however often the disk flaps.
    outage_log: RateLimit,
    /// "Cannot start a new segment" while the current one still takes appends.
    roll_log: RateLimit,
}

/// The disk refused an append and none has been written since.
struct Outage {
    since: Instant,
    /// Its start was logged (else its end is not either).
    logged: bool,
}

/// Makes the calling thread `SCHED_BATCH`: when woken it does not preempt the thread
/// that woke it, and runs once that thread blocks or its time slice ends.
///
/// Why the appender wants this: where it shares a core with the runtime's worker (a
/// one-core machine, or a pinned process), a woken appender that preempts the worker
/// at once finds a single append queued, writes it alone and sleeps again: two context
/// switches per request. Not preempting, it runs when the worker has handled every
/// request that was ready, and writes all their appends with one `pwrite` (group
/// commit). With a core of its own it runs at once either way.
fn disfavour_wakeup_preemption() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain system call on the calling thread (pid 0) with a valid,
        // initialised parameter; it reads `param` and keeps no pointer to it.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            tracing::debug!(
                error = %io::Error::last_os_error(),
                "spool appender keeps the default scheduling policy"
            );
        }
    }
}

impl Appender {
    fn run(mut self) {
        disfavour_wakeup_preemption();
        let mut buf = Vec::new();
        let mut appends = Vec::new();
        loop {
            let (roll, closing, probe) = {
                let mut q = lock(&self.shared.queue);
                let mut probe = false;
                while q.appends.is_empty() && !q.closing && !q.roll_requested {
                    if !self.shared.blocked.load(Ordering::Relaxed) {
                        q = self
                            .shared
                            .queue_cv
                            .wait(q)
                            .unwrap_or_else(PoisonError::into_inner);
                        continue;
                    }
                    // Appends are refused without reaching this thread: look at the
                    // disk again every PROBE_EVERY.
                    let (guard, wait) = self
                        .shared
                        .queue_cv
                        .wait_timeout(q, PROBE_EVERY)
                        .unwrap_or_else(PoisonError::into_inner);
                    q = guard;
                    if wait.timed_out() {
                        probe = true;
                        break;
                    }
                }
                mem::swap(&mut q.buf, &mut buf);
                mem::swap(&mut q.appends, &mut appends);
                (mem::take(&mut q.roll_requested), q.closing, probe)
            };
            if probe {
                self.probe();
            }
            // A refused append rolls the segment when it holds a good part of the
            // budget: it cannot be deleted while appended to, so with a small
            // `max_bytes` a drained spool would otherwise never free space.
            if roll
                && self.file.is_some()
                && self.len > HEADER_LEN
                && self.len >= self.shared.max_bytes / 4
            {
                if let Err(e) = self.roll(&mut []) {
                    self.roll_failed(&e);
                }
                self.shared.readable.notify_one();
            }
            if !appends.is_empty() {
                self.commit(&buf, &mut appends);
            }
            buf.clear();
            if buf.capacity() > KEEP_BUFFER_BYTES {
                buf = Vec::new();
            }
            if closing && lock(&self.shared.queue).appends.is_empty() {
                break;
            }
        }
        if self.shared.policy == FsyncPolicy::Interval && self.len > self.synced {
            let _ = self.sync_interval();
        }
        lock(&self.shared.index).finished = true;
        self.shared.readable.notify_one();
    }

    /// The disk refused `err`: refuse appends at once from now on (when `block`; a
    /// failed sync only costs the appends it covered, the next append rolls), and log
    /// the start of the outage (once; see [`OUTAGE_LOG_EVERY`]).
    fn disk_refused(&mut self, err: &SpoolError, refused: u64, block: bool) {
        self.shared.refused_unwritable(refused);
        if block {
            self.shared.blocked.store(true, Ordering::Relaxed);
        }
        if self.outage.is_some() {
            return;
        }
        let logged = match self.outage_log.check() {
            Some(held_back) => {
                error!(
                    dir = %self.shared.dir.display(),
                    error = %err,
                    earlier_outages_not_logged = held_back,
                    "the spool cannot write to its disk; hits are refused with 503 \
                     (reason spool_unwritable) until it can, probed every second"
                );
                true
            }
            None => false,
        };
        self.outage = Some(Outage {
            since: Instant::now(),
            logged,
        });
    }

    /// An append was written: an outage is over.
    fn disk_writes(&mut self) {
        let Some(outage) = self.outage.take() else {
            return;
        };
        let refused = self.shared.refused_in_outage.swap(0, Ordering::Relaxed);
        if outage.logged {
            info!(
                dir = %self.shared.dir.display(),
                refused_appends = refused,
                outage_ms = outage.since.elapsed().as_millis() as u64,
                "the spool writes to its disk again"
            );
        }
    }

    /// While appends are refused: whether the disk takes writes again. A new segment
    /// when there is none to append to, the reserve when it is missing, and a page
    /// written and synced; appends are let through when all of that worked.
    fn probe(&mut self) {
        let durable = self.shared.durable();
        let ok = (|| {
            if self.file.is_none() || self.poisoned {
                self.roll(&mut [])?;
            }
            let io = |e| io_err("probe", &self.shared.dir)(e);
            self.shared.fault().map_err(io)?;
            files::ensure_reserve(&self.shared.dir, durable).map_err(io)?;
            files::probe(&self.shared.dir, durable).map_err(io)
        })();
        match ok {
            Ok(()) => self.shared.blocked.store(false, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "the spool's disk still refuses writes"),
        }
    }

    /// A roll failed while the current segment still takes appends (it grows past
    /// `segment_bytes` meanwhile).
    fn roll_failed(&self, e: &SpoolError) {
        if let Some(held_back) = self.roll_log.check() {
            error!(error = %e, held_back, "cannot start a new spool segment");
        }
    }

    fn commit(&mut self, buf: &[u8], appends: &mut Vec<PendingAppend>) {
        let now = now_ms();
        self.unsynced = 0..0;
        // A background sync of this segment failed: like `always`, write nothing more
        // into a file whose cached state cannot be trusted.
        if self.shared.sync_failed.swap(0, Ordering::AcqRel) == self.seq {
            self.poisoned = true;
        }
        let mut start = 0usize;
        let mut i = 0;
        let mut written = false;
        while i < appends.len() {
            let first = (appends[i].end - start) as u64;
            let must_roll = self.file.is_none()
                || self.poisoned
                || (self.len > HEADER_LEN && self.len + first > self.shared.segment_bytes);
            if must_roll && let Err(e) = self.roll(&mut appends[..i]) {
                if self.file.is_none() || self.poisoned {
                    let refused = (appends.len() - i) as u64;
                    for a in &mut appends[i..] {
                        a.result = Err(SpoolError::Unwritable);
                        self.shared.used.fetch_sub(a.bytes, Ordering::AcqRel);
                    }
                    self.disk_refused(&e, refused, true);
                    break;
                }
                // The current segment still works; it just grows past its size.
                self.roll_failed(&e);
            }
            let Some(file) = self.file.clone() else {
                break;
            };
            let room = self.shared.segment_bytes.saturating_sub(self.len);
            let mut j = i + 1;
            while j < appends.len() && (appends[j].end - start) as u64 <= room {
                j += 1;
            }
            let end = appends[j - 1].end;
            let write = self
                .shared
                .fault()
                .and_then(|()| file.write_all_at(&buf[start..end], self.len));
            match write {
                Ok(()) => {
                    written = true;
                    let records = appends[i..j].iter().map(|a| a.records).sum();
                    let from = self.len;
                    self.len += (end - start) as u64;
                    if self.shared.policy == FsyncPolicy::Always {
                        if self.unsynced.is_empty() {
                            self.unsynced = i..j;
                            self.unpublished_from = from;
                        } else {
                            self.unsynced.end = j;
                        }
                        self.unpublished_records += records;
                    } else {
                        self.publish(from, records, now);
                    }
                }
                Err(e) => {
                    let path = self.shared.seg_path(self.seq);
                    let err = io_err("write", &path)(e);
                    for a in &mut appends[i..j] {
                        a.result = Err(SpoolError::Unwritable);
                        self.shared.used.fetch_sub(a.bytes, Ordering::AcqRel);
                    }
                    // Cut off whatever part of it reached the file.
                    if file.set_len(self.len).is_err() {
                        self.poisoned = true;
                    }
                    self.disk_refused(&err, (j - i) as u64, true);
                }
            }
            start = end;
            i = j;
        }
        if self.shared.policy == FsyncPolicy::Always {
            self.sync_always(appends, now);
        }
        if written && appends.iter().any(|a| a.result.is_ok()) {
            self.disk_writes();
        }
        for a in appends.drain(..) {
            if let Some(done) = a.done {
                let _ = done.send(a.result);
            }
        }
        self.shared.readable.notify_one();
    }

    /// Makes the records written so far visible to the reader.
    fn publish(&mut self, from: u64, records: u64, now: u64) {
        let mut index = lock(&self.shared.index);
        if let Some(seg) = index.segments.get_mut(&self.seq) {
            seg.readable = self.len;
            seg.size = self.len;
            seg.records += records;
            if seg
                .checkpoints
                .back()
                .is_none_or(|&(_, ms)| now >= ms + CHECKPOINT_MS)
            {
                seg.checkpoints.push_back((from, now));
            }
        }
    }

    /// `always`: one fdatasync for everything written since the last; only then are
    /// those appends acknowledged and readable. On failure they fail, are cut off
    /// again, and the file is abandoned (after a failed fsync its cached state cannot
    /// be trusted).
    fn sync_always(&mut self, appends: &mut [PendingAppend], now: u64) {
        if self.len == self.synced {
            return;
        }
        let Some(file) = self.file.clone() else {
            return;
        };
        match self.shared.sync(&file) {
            Ok(()) => {
                self.synced = self.len;
                let records = mem::take(&mut self.unpublished_records);
                self.publish(self.unpublished_from, records, now);
            }
            Err(e) => {
                self.shared.metrics.fsync_errors.inc();
                let err = io_err("fdatasync", &self.shared.seg_path(self.seq))(e);
                let mut refused = 0;
                for a in appends[self.unsynced.clone()]
                    .iter_mut()
                    .filter(|a| a.result.is_ok())
                {
                    a.result = Err(SpoolError::Unwritable);
                    self.shared.used.fetch_sub(a.bytes, Ordering::AcqRel);
                    refused += 1;
                }
                let _ = file.set_len(self.synced);
                self.len = self.synced;
                self.unpublished_records = 0;
                self.poisoned = true;
                // Not blocked: the next append starts a new segment, and only if that
                // fails are appends refused at once.
                self.disk_refused(&err, refused, false);
            }
        }
        self.unsynced = appends.len()..appends.len();
    }

    fn sync_interval(&mut self) -> io::Result<()> {
        let Some(file) = self.file.clone() else {
            return Ok(());
        };
        let r = self.shared.sync(&file);
        match &r {
            Ok(()) => {
                self.synced = self.len;
                let mut index = lock(&self.shared.index);
                if let Some(seg) = index.segments.get_mut(&self.seq) {
                    seg.synced = seg.synced.max(self.len);
                }
            }
            Err(e) => {
                self.shared.metrics.fsync_errors.inc();
                self.poisoned = true;
                error!(segment = self.seq, error = %e, "spool fdatasync failed; the segment is abandoned and new appends go to a new one");
            }
        }
        r
    }

    /// Seals the current segment, if any (synced per policy), and starts the next
    /// one. `appends` are this batch's appends already written (failed under
    /// `always` if the sealing sync fails).
    fn roll(&mut self, appends: &mut [PendingAppend]) -> Result<(), SpoolError> {
        if self.file.is_some() {
            match self.shared.policy {
                FsyncPolicy::Always => self.sync_always(appends, now_ms()),
                FsyncPolicy::Interval => {
                    let _ = self.sync_interval();
                }
                FsyncPolicy::Never => {}
            }
        }
        let durable = self.shared.durable();
        self.shared
            .fault()
            .map_err(io_err("create a segment in", &self.shared.dir))?;
        let seq = self.meta.next_segment;
        self.meta.next_segment += 1;
        files::write_atomic(&self.meta_path, self.meta.encode().as_bytes(), durable)
            .map_err(io_err("write", &self.meta_path))?;
        let created = now_ms();
        let path = self.shared.seg_path(seq);
        let file = files::create_segment(&path, &format::header(created), durable)
            .map_err(io_err("create", &path))?;
        let file = Arc::new(file);
        self.shared.used.fetch_add(HEADER_LEN, Ordering::AcqRel);
        {
            let mut index = lock(&self.shared.index);
            if let Some(old) = index.segments.get_mut(&self.seq) {
                old.sealed = true;
                old.size = self.len;
            }
            index
                .segments
                .insert(seq, new_segment(file.clone(), created));
            index.active = seq;
        }
        self.seq = seq;
        self.file = Some(file);
        self.len = HEADER_LEN;
        self.synced = HEADER_LEN;
        self.poisoned = false;
        self.unpublished_from = HEADER_LEN;
        // Room kept for the reader's metadata on a full disk; failing is fine.
        let _ = files::ensure_reserve(&self.shared.dir, durable);
        // The sealed segment may be acknowledged already. Deleting it needs the reader
        // lock; when the reader is busy it reaps on its next call anyway.
        if let Ok(_reader) = self.shared.reader.try_lock() {
            reap(&self.shared);
        }
        Ok(())
    }
}

/// `interval`: syncs the segment being appended to every `fsync_interval`.
///
/// A failed sync poisons the segment, as under `always`: after a failed fdatasync
/// the kernel may have dropped the dirty pages it could not write and later syncs
/// report success, so nothing more is appended to that file; the appender starts a
/// new segment at its next write (and refuses appends if it cannot). Hits appended
/// since the last good sync were already answered; they are readable while the
/// process runs, but may not survive a power loss (the `interval` loss window).
fn syncer(shared: &Shared) {
    let failures = RateLimit::new(Duration::from_secs(10));
    let mut stop = lock(&shared.stop);
    loop {
        let (guard, _) = shared
            .stop_cv
            .wait_timeout(stop, shared.fsync_interval)
            .unwrap_or_else(PoisonError::into_inner);
        stop = guard;
        if *stop {
            return;
        }
        let target = {
            let index = lock(&shared.index);
            index
                .segments
                .get(&index.active)
                .filter(|s| s.readable > s.synced)
                .map(|s| (index.active, s.file.clone(), s.readable))
        };
        let Some((seq, file, upto)) = target else {
            continue;
        };
        match shared.sync(&file) {
            Ok(()) => {
                let mut index = lock(&shared.index);
                if let Some(seg) = index.segments.get_mut(&seq) {
                    seg.synced = seg.synced.max(upto);
                }
                drop(index);
                if failures.active() {
                    let unlogged = failures.reset();
                    info!(
                        segment = seq,
                        unlogged_failures = unlogged,
                        "spool fdatasync succeeds again"
                    );
                }
            }
            Err(e) => {
                // Before the count, so whoever sees the count sees the poison too.
                shared.sync_failed.store(seq, Ordering::Release);
                shared.metrics.fsync_errors.inc();
                if let Some(unlogged) = failures.check() {
                    error!(
                        segment = seq,
                        error = %e,
                        unlogged_failures = unlogged,
                        "spool fdatasync failed; the segment is abandoned and new appends go to a new one; hits of the last interval may not survive a power loss"
                    );
                }
            }
        }
    }
}
