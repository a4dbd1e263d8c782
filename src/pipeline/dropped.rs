//! What hush did not count as a visitor, counted: hits dropped (bots, DNT/GPC with
//! the `drop` policy, engagement pings without a visit) and hits stored anonymously
//! (DNT/GPC with the `anonymous` policy), per site, UTC day, reason and bot family,
//! flushed into the `dropped` table (schema 0005, a `SummingMergeTree`).
//!
//! # No visitor data
//!
//! A count is `(site, day, reason, family, hits)`. `family` is a label of hush's own
//! rule set ([`crate::enrich::ua::UaInfo::bot_family`]: woothee's crawler name or the
//! pattern that matched), never text of the User-Agent; there is no id, address or
//! time finer than the day. So an erasure has nothing to find here; retention and
//! site deletion still reach the table (`store::purge`, `store::dsr`).
//!
//! # The request path
//!
//! [`DropCounter::record`] takes no lock shared by sites: the counter's site table is
//! built once from the configuration and never changes; each site has two day slots
//! (today and yesterday by `day & 1`) of one atomic per reason, and the bots of a slot
//! by family in a small map behind the slot's own mutex, bounded at
//! [`MAX_FAMILIES`] (more families count as `other`). The flusher takes the counts
//! out with `swap(0)`; an increment that races with it lands in the next flush.
//!
//! # Flushing, and what can be lost
//!
//! [`spawn_flusher`] inserts the counts every `writer.dropped_flush_interval_ms`
//! (RowBinary, one INSERT, a deduplication token per batch, so a retried batch whose
//! first answer was lost is not summed twice). A failed insert keeps its batch and is
//! retried with the same token at the next interval; what is counted meanwhile waits
//! beside it, at most [`MAX_PENDING_ROWS`] rows (further new rows are lost and counted
//! in `hush_dropped_counts_lost_total`; that takes days of outage with many sites). At
//! a graceful shutdown the counts are flushed once more. A crash loses what was
//! counted since the last successful flush: at most one interval, or the whole
//! outage when ClickHouse was down. These are statistics, not hits, so they are not
//! spooled.
//!
//! A slot is reused two days later: a slot still holding counts of an older day when
//! a hit of a new day arrives hands them to the pending rows first. Days are UTC.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::collect::sites::SiteRegistry;
use crate::pipeline::rowbinary::put_str;
use crate::pipeline::writer::insert_payload;

/// Distinct bot families kept per site and day slot between two flushes; more count
/// as [`OTHER_FAMILY`].
pub const MAX_FAMILIES: usize = 64;
/// The family of bots past [`MAX_FAMILIES`] in one flush interval.
pub const OTHER_FAMILY: &str = "other";
/// Rows waiting to be stored at most (about 100 bytes each).
pub const MAX_PENDING_ROWS: usize = 100_000;
/// A slot that never held a day.
const NO_DAY: u32 = u32::MAX;

/// Why a hit is not counted as a visitor's, as stored in `dropped.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A crawler, monitor, tool or headless browser: dropped.
    Bot,
    /// `DNT: 1` under `privacy.dnt = "drop"`.
    Dnt,
    /// `Sec-GPC: 1` under `privacy.gpc = "drop"`.
    Gpc,
    /// An engagement ping whose visit expired or never was: dropped.
    NoVisit,
    /// `DNT: 1` under `privacy.dnt = "anonymous"`: stored, with no visitor.
    DntAnonymous,
    /// `Sec-GPC: 1` under `privacy.gpc = "anonymous"`: stored, with no visitor.
    GpcAnonymous,
}

impl Reason {
    /// Every reason, in slot order.
    pub const ALL: [Reason; 6] = [
        Reason::Bot,
        Reason::Dnt,
        Reason::Gpc,
        Reason::NoVisit,
        Reason::DntAnonymous,
        Reason::GpcAnonymous,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Bot => "bot",
            Reason::Dnt => "dnt",
            Reason::Gpc => "gpc",
            Reason::NoVisit => "no_visit",
            Reason::DntAnonymous => "dnt_anonymous",
            Reason::GpcAnonymous => "gpc_anonymous",
        }
    }

    /// The reason of a dropped hit (`hush_hits_dropped_total`'s label).
    pub fn of_drop(reason: crate::metrics::DropReason) -> Self {
        use crate::metrics::DropReason;
        match reason {
            DropReason::bot => Reason::Bot,
            DropReason::dnt => Reason::Dnt,
            DropReason::gpc => Reason::Gpc,
            DropReason::no_visit => Reason::NoVisit,
        }
    }
}

/// One day's counts of one site.
struct Slot {
    day: AtomicU32,
    /// By `Reason as usize`; bots are counted in `families` instead.
    reasons: [AtomicU64; Reason::ALL.len()],
    families: Mutex<HashMap<Arc<str>, u64>>,
}

impl Slot {
    fn new() -> Self {
        Self {
            day: AtomicU32::new(NO_DAY),
            reasons: std::array::from_fn(|_| AtomicU64::new(0)),
            families: Mutex::new(HashMap::new()),
        }
    }
}

struct SiteCounts {
    site: Arc<str>,
    slots: [Slot; 2],
}

/// One row of the `dropped` table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DroppedKey {
    pub site: Arc<str>,
    /// Days since 1970-01-01, UTC.
    pub day: u32,
    pub reason: Reason,
    pub family: Arc<str>,
}

/// Counts waiting to be inserted: what the flusher took out of the slots and has not
/// stored yet.
#[derive(Default)]
struct Pending {
    rows: HashMap<DroppedKey, u64>,
}

impl Pending {
    /// Adds `hits` to a row; a new row past [`MAX_PENDING_ROWS`] is lost (returned).
    fn add(&mut self, key: DroppedKey, hits: u64) -> u64 {
        if hits == 0 {
            return 0;
        }
        if let Some(n) = self.rows.get_mut(&key) {
            *n += hits;
            return 0;
        }
        if self.rows.len() >= MAX_PENDING_ROWS {
            return hits;
        }
        self.rows.insert(key, hits);
        0
    }
}

#[derive(Clone, Default)]
struct Metrics {
    flush_failures: Counter,
    lost: Counter,
    pending_rows: Gauge,
}

/// The counts of every configured site. Share it behind an `Arc`.
pub struct DropCounter {
    sites: HashMap<Arc<str>, SiteCounts>,
    pending: Mutex<Pending>,
    metrics: Metrics,
}

impl std::fmt::Debug for DropCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropCounter")
            .field("sites", &self.sites.len())
            .finish_non_exhaustive()
    }
}

impl DropCounter {
    /// Counters for the configured sites; registers `hush_dropped_*` metrics.
    pub fn new(sites: &SiteRegistry, registry: &mut Registry) -> Self {
        let counter = Self::unregistered(sites);
        registry.register(
            "hush_dropped_flush_failures",
            "Failed inserts of the not-counted hit counts (retried, counts kept)",
            counter.metrics.flush_failures.clone(),
        );
        registry.register(
            "hush_dropped_counts_lost",
            "Not-counted hits whose count was lost: pending rows full during a long outage",
            counter.metrics.lost.clone(),
        );
        registry.register(
            "hush_dropped_pending_rows",
            "Rows of not-counted hit counts waiting to be stored",
            counter.metrics.pending_rows.clone(),
        );
        counter
    }

    /// [`DropCounter::new`] without metrics (tests, benchmarks).
    pub fn unregistered(sites: &SiteRegistry) -> Self {
        let sites = sites
            .all()
            .iter()
            .map(|s| {
                let counts = SiteCounts {
                    site: Arc::clone(&s.domain),
                    slots: [Slot::new(), Slot::new()],
                };
                (Arc::clone(&s.domain), counts)
            })
            .collect();
        Self {
            sites,
            pending: Mutex::new(Pending::default()),
            metrics: Metrics::default(),
        }
    }

    /// Counts one hit of `site` (a configured domain; others are ignored) on `day`
    /// (UTC days since the epoch). `family` matters for bots only; empty when unknown.
    pub fn record(&self, site: &str, day: u32, reason: Reason, family: &Arc<str>) {
        let Some(counts) = self.sites.get(site) else {
            return;
        };
        let slot = &counts.slots[(day & 1) as usize];
        if slot.day.load(Ordering::Acquire) != day {
            self.claim(counts, slot, day);
        }
        if reason != Reason::Bot {
            slot.reasons[reason as usize].fetch_add(1, Ordering::Relaxed);
        } else {
            let mut families = slot.families.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = families.get_mut(family) {
                *n += 1;
            } else if families.len() < MAX_FAMILIES {
                families.insert(Arc::clone(family), 1);
            } else {
                *families.entry(Arc::from(OTHER_FAMILY)).or_insert(0) += 1;
            }
        }
    }

    /// Gives `slot` to `day`, moving what it holds of an older day to the pending rows.
    /// Cold: once per site and day.
    #[cold]
    fn claim(&self, counts: &SiteCounts, slot: &Slot, day: u32) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let held = slot.day.load(Ordering::Acquire);
        if held == day {
            return;
        }
        if held != NO_DAY {
            let lost = drain_slot(&counts.site, held, slot, &mut pending);
            self.metrics.lost.inc_by(lost);
        }
        slot.day.store(day, Ordering::Release);
    }

    /// Moves every slot's counts into the pending rows and returns them all, sorted
    /// (the next batch to insert). The pending rows are empty afterwards.
    fn take(&self) -> Vec<(DroppedKey, u64)> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lost = 0;
        for counts in self.sites.values() {
            for slot in &counts.slots {
                let day = slot.day.load(Ordering::Acquire);
                if day != NO_DAY {
                    lost += drain_slot(&counts.site, day, slot, &mut pending);
                }
            }
        }
        self.metrics.lost.inc_by(lost);
        let mut rows: Vec<(DroppedKey, u64)> = pending.rows.drain().collect();
        rows.sort_unstable();
        rows
    }

    /// Rows taken out of the slots and not in a batch yet.
    fn pending_rows(&self) -> i64 {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        i64::try_from(pending.rows.len()).unwrap_or(i64::MAX)
    }

    /// Hits counted and not stored yet (tests, the shutdown log line).
    pub fn pending_hits(&self) -> u64 {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let slots: u64 = self
            .sites
            .values()
            .flat_map(|c| &c.slots)
            .map(|s| {
                let families = s.families.lock().unwrap_or_else(PoisonError::into_inner);
                families.values().sum::<u64>()
                    + s.reasons
                        .iter()
                        .map(|n| n.load(Ordering::Relaxed))
                        .sum::<u64>()
            })
            .sum();
        pending.rows.values().sum::<u64>() + slots
    }
}

/// Moves one slot's counts (of `day`) into `pending`; returns the hits lost to the bound.
fn drain_slot(site: &Arc<str>, day: u32, slot: &Slot, pending: &mut Pending) -> u64 {
    let mut lost = 0;
    let families: Vec<(Arc<str>, u64)> = slot
        .families
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .collect();
    for (family, hits) in families {
        let key = DroppedKey {
            site: Arc::clone(site),
            day,
            reason: Reason::Bot,
            family,
        };
        lost += pending.add(key, hits);
    }
    for reason in Reason::ALL.into_iter().filter(|r| *r != Reason::Bot) {
        let hits = slot.reasons[reason as usize].swap(0, Ordering::AcqRel);
        let key = DroppedKey {
            site: Arc::clone(site),
            day,
            reason,
            family: Arc::from(""),
        };
        lost += pending.add(key, hits);
    }
    lost
}

/// The rows as RowBinary in the column order of `dropped`:
/// `site, day, reason, family, hits`.
pub fn encode(rows: &[(DroppedKey, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 48);
    for (key, hits) in rows {
        put_str(&mut out, &key.site);
        // `Date` is a UInt16 of days; a day past 2149 cannot be counted.
        out.extend_from_slice(&u16::try_from(key.day).unwrap_or(u16::MAX).to_le_bytes());
        put_str(&mut out, key.reason.as_str());
        put_str(&mut out, &key.family);
        out.extend_from_slice(&hits.to_le_bytes());
    }
    out
}

/// One flush: takes the counts (with what a failed flush kept) and inserts them
/// under a token fixed for this batch; on failure they go back, to be retried with
/// the same token next time (`batch` keeps it).
async fn flush(
    counter: &DropCounter,
    client: &Client,
    timeout: Duration,
    instance: &str,
    batch: &mut Option<(String, Vec<(DroppedKey, u64)>)>,
    seq: &mut u64,
) -> bool {
    let (token, rows) = match batch.take() {
        Some(kept) => kept,
        None => {
            let rows = counter.take();
            if rows.is_empty() {
                counter.metrics.pending_rows.set(0);
                return true;
            }
            *seq += 1;
            (format!("hush-dropped-{instance}-{seq}"), rows)
        }
    };
    let payload = Bytes::from(encode(&rows));
    match insert_payload(client, "dropped", &token, payload, timeout).await {
        Ok(()) => {
            counter.metrics.pending_rows.set(counter.pending_rows());
            true
        }
        Err(error) => {
            counter.metrics.flush_failures.inc();
            tracing::warn!(
                error = %error,
                rows = rows.len(),
                "cannot store the counts of not-counted hits; kept for the next flush"
            );
            counter
                .metrics
                .pending_rows
                .set(i64::try_from(rows.len()).unwrap_or(i64::MAX));
            *batch = Some((token, rows));
            false
        }
    }
}

/// Flushes `counter` into `dropped` every `every` until `stop` resolves, then once
/// more within `final_timeout`. A kept batch is retried (same token) before new counts
/// are taken, so a batch is never stored twice.
pub fn spawn_flusher(
    counter: Arc<DropCounter>,
    client: Client,
    every: Duration,
    request_timeout: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let instance = crate::hex::encode(&rand::random::<[u8; 8]>());
        let mut batch = None;
        let mut seq = 0;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = tick.tick() => {
                    flush(&counter, &client, request_timeout, &instance, &mut batch, &mut seq).await;
                }
            }
        }
        // The kept batch first, then whatever was counted until the listener closed.
        for _ in 0..2 {
            if !flush(
                &counter,
                &client,
                request_timeout,
                &instance,
                &mut batch,
                &mut seq,
            )
            .await
            {
                break;
            }
        }
        let left = counter.pending_hits()
            + batch
                .as_ref()
                .map_or(0, |(_, rows)| rows.iter().map(|(_, n)| n).sum());
        if left > 0 {
            tracing::warn!(hits = left, "counts of not-counted hits lost at shutdown");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn counter() -> DropCounter {
        let config =
            Config::from_toml_str("[[sites]]\ndomain = \"a.com\"\n[[sites]]\ndomain = \"b.com\"\n")
                .unwrap();
        DropCounter::unregistered(&SiteRegistry::from_config(&config))
    }

    fn totals(rows: &[(DroppedKey, u64)]) -> Vec<(String, u32, &'static str, String, u64)> {
        rows.iter()
            .map(|(k, n)| {
                (
                    k.site.to_string(),
                    k.day,
                    k.reason.as_str(),
                    k.family.to_string(),
                    *n,
                )
            })
            .collect()
    }

    #[test]
    fn counts_per_site_day_reason_and_family() {
        let c = counter();
        let google: Arc<str> = Arc::from("Googlebot");
        let none: Arc<str> = Arc::from("");
        for _ in 0..3 {
            c.record("a.com", 100, Reason::Bot, &google);
        }
        c.record("a.com", 100, Reason::Bot, &none);
        c.record("a.com", 100, Reason::DntAnonymous, &none);
        c.record("b.com", 101, Reason::Gpc, &none);
        c.record("unknown.com", 100, Reason::Bot, &google);
        assert_eq!(c.pending_hits(), 6);
        let rows = c.take();
        assert_eq!(
            totals(&rows),
            vec![
                ("a.com".into(), 100, "bot", "".into(), 1),
                ("a.com".into(), 100, "bot", "Googlebot".into(), 3),
                ("a.com".into(), 100, "dnt_anonymous", "".into(), 1),
                ("b.com".into(), 101, "gpc", "".into(), 1),
            ]
        );
        assert!(c.take().is_empty(), "taken once");
        assert_eq!(c.pending_hits(), 0);
    }

    #[test]
    fn a_slot_reused_two_days_later_keeps_the_older_day() {
        let c = counter();
        let none: Arc<str> = Arc::from("");
        c.record("a.com", 100, Reason::Dnt, &none);
        c.record("a.com", 101, Reason::Dnt, &none);
        // Same slot as day 100: its count moves to the pending rows first.
        c.record("a.com", 102, Reason::Dnt, &none);
        c.record("a.com", 102, Reason::Dnt, &none);
        let rows = c.take();
        let days: Vec<(u32, u64)> = rows.iter().map(|(k, n)| (k.day, *n)).collect();
        assert_eq!(days, vec![(100, 1), (101, 1), (102, 2)]);
    }

    #[test]
    fn families_are_bounded() {
        let c = counter();
        for i in 0..MAX_FAMILIES + 10 {
            let family: Arc<str> = Arc::from(format!("bot{i}").as_str());
            c.record("a.com", 7, Reason::Bot, &family);
        }
        let rows = c.take();
        assert_eq!(rows.len(), MAX_FAMILIES + 1);
        let other = rows
            .iter()
            .find(|(k, _)| &*k.family == OTHER_FAMILY)
            .map(|(_, n)| *n);
        assert_eq!(other, Some(10));
        assert_eq!(
            rows.iter().map(|(_, n)| n).sum::<u64>(),
            (MAX_FAMILIES + 10) as u64
        );
    }

    #[test]
    fn pending_rows_are_bounded() {
        let mut p = Pending::default();
        let key = |day| DroppedKey {
            site: Arc::from("a.com"),
            day,
            reason: Reason::Bot,
            family: Arc::from(""),
        };
        for day in 0..MAX_PENDING_ROWS as u32 {
            assert_eq!(p.add(key(day), 1), 0);
        }
        assert_eq!(
            p.add(key(u32::MAX - 1), 5),
            5,
            "a new row past the bound is lost"
        );
        assert_eq!(p.add(key(0), 5), 0, "an existing row still counts");
        assert_eq!(p.rows.len(), MAX_PENDING_ROWS);
    }

    #[test]
    fn rows_encode_as_rowbinary_in_column_order() {
        let rows = vec![(
            DroppedKey {
                site: Arc::from("a.com"),
                day: 0x0102,
                reason: Reason::Bot,
                family: Arc::from("X"),
            },
            3,
        )];
        let mut want = vec![5];
        want.extend_from_slice(b"a.com");
        want.extend_from_slice(&[0x02, 0x01, 3]);
        want.extend_from_slice(b"bot");
        want.extend_from_slice(&[1, b'X']);
        want.extend_from_slice(&3u64.to_le_bytes());
        assert_eq!(encode(&rows), want);
    }
}
