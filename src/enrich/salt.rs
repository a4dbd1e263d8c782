//! Daily salts for visitor ids, shared by all instances through the `salts` table.
//!
//! A visitor id is a hash of the salt, the site, the truncated address and the
//! User-Agent (see [`crate::enrich::visitor`]). The salt changes every UTC day and is deleted
//! once the previous day is over, so ids of different days cannot be linked and,
//! after deletion, an id cannot be recomputed from a guessed address.
//!
//! # Agreement
//!
//! Instances behind one load balancer must hash with the same salt, or one visitor
//! counts once per instance. Per day:
//!
//! 1. read the day's salt; if there is one, use it;
//! 2. otherwise generate a candidate from the OS RNG and insert it with
//!    `insert_deduplication_token = hush-salt-<day>`. The table's deduplication log
//!    admits only the first insert carrying that token, so on one server a second
//!    candidate is silently discarded: an atomic "insert if absent";
//! 3. read again and adopt the winner: the earliest row by server time
//!    (`ORDER BY created_at, salt LIMIT 1`).
//!
//! Step 3's ordering is a second line of defence: if two candidates ever get stored
//! (replicas, a forgotten token), every reader still picks the same one, and a late
//! instance adopts the early one. The rotation task re-reads the winner every
//! [`TICK`], so an instance that adopted a candidate while a competing insert was
//! still becoming visible converges within one tick.
//!
//! # Rotation
//!
//! [`Salts::spawn_rotation`] prepares tomorrow's salt during the last
//! [`PREPARE_LEAD`] before UTC midnight (so the switch needs no round trip), swaps at
//! midnight (current becomes previous), and deletes salts older than the previous day
//! from ClickHouse. In memory, a [`DailySalts`] zeroizes its salts when the last
//! reader drops it. If ClickHouse is unreachable at midnight and tomorrow was not
//! prepared, a local salt is used (yesterday's is never carried into a new day) and
//! the task offers it as the candidate once ClickHouse answers.
//!
//! # Starting without ClickHouse
//!
//! When `serve` starts while ClickHouse is down (hits go to the spool), there is no
//! agreed salt to load: [`Salts::local`] makes a fresh random salt for today, held in
//! memory only, exactly like the fallback of a rotation that cannot reach ClickHouse.
//! Hits are hashed with it at once (a hit is never stored unhashed, and never waits
//! on disk with its address or User-Agent). Once ClickHouse answers,
//! [`Salts::connect`] offers it as the day's candidate: when no instance agreed on one
//! yet it becomes the day's salt and nothing changes; when another instance did, that
//! salt is adopted (logged), so the visitors this instance saw meanwhile get a second
//! id for the rest of the day (counted twice at most, never linked across days).
//!
//! # A salt never outlives its day
//!
//! The hit path asks for the salts of the hit's own day ([`Salts::for_day`]). If the
//! current salt is of an earlier day (the rotation task is late, stuck or dead), a salt
//! prepared for the hit's day is switched in right there; without one the hit is
//! refused ([`StaleSalt`], answered 503) rather than hashed with yesterday's salt,
//! which would give a visitor the same id on two days. The serve wiring restarts a
//! rotation task that died.
//!
//! Days are whole days since the Unix epoch in UTC; every method that depends on the
//! date takes the day as an argument, so tests can move time without waiting.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use clickhouse::Client;
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use zeroize::{Zeroize, Zeroizing};

use crate::db;
use crate::logging::RateLimit;

/// Bytes in one salt.
pub const SALT_LEN: usize = 32;
/// How often the rotation task wakes to check the date and re-read today's winner.
pub const TICK: Duration = Duration::from_secs(30);
/// How long before UTC midnight the rotation task starts preparing tomorrow's salt.
pub const PREPARE_LEAD: Duration = Duration::from_secs(10 * 60);
/// At most one line per kind of failed rotation step in this interval.
const TICK_LOG_EVERY: Duration = Duration::from_secs(10 * 60);
/// Bound on each salt request: salt work runs at start and in the background, never
/// on the hit path.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const SECONDS_PER_DAY: u64 = 86_400;

/// The salts in use: today's and, when known, yesterday's (for visits that cross
/// midnight). Zeroized when dropped; `Debug` never prints them.
pub struct DailySalts {
    /// Days since 1970-01-01, UTC.
    pub day: u32,
    pub current: [u8; SALT_LEN],
    pub previous: Option<[u8; SALT_LEN]>,
}

impl Drop for DailySalts {
    fn drop(&mut self) {
        self.current.zeroize();
        if let Some(previous) = &mut self.previous {
            previous.zeroize();
        }
    }
}

impl fmt::Debug for DailySalts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DailySalts")
            .field("day", &self.day)
            .field("current", &"<redacted>")
            .field("previous", &self.previous.map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SaltError {
    #[error("ClickHouse request failed while {context}: {source}")]
    ClickHouse {
        context: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("day {0} is outside the range of the ClickHouse Date type")]
    DayOutOfRange(u32),
    #[error("the OS random number generator failed: {0}")]
    Rng(String),
    #[error("no salt for day {0} could be read back after inserting one")]
    Missing(u32),
}

/// The salt in use is of an earlier day than the hit, and no salt for the hit's day is
/// at hand: hashing would link visitors across days, so the hit is not hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the visitor salt is of day {salt_day}, the hit of day {day}; salt rotation is behind")]
pub struct StaleSalt {
    pub salt_day: u32,
    pub day: u32,
}

fn ch(context: &'static str) -> impl FnOnce(clickhouse::error::Error) -> SaltError {
    move |source| SaltError::ClickHouse { context, source }
}

/// The UTC day of `time`, in days since the Unix epoch.
pub fn day_of(time: SystemTime) -> u32 {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs / SECONDS_PER_DAY).unwrap_or(u32::MAX)
}

/// Today, UTC, by the system clock.
pub fn today() -> u32 {
    day_of(SystemTime::now())
}

fn time_until_next_midnight(now: SystemTime) -> Duration {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let next =
        (secs / SECONDS_PER_DAY as f64).floor() * SECONDS_PER_DAY as f64 + SECONDS_PER_DAY as f64;
    Duration::from_secs_f64((next - secs).max(0.0))
}

/// 32 fresh bytes from the operating system's RNG.
pub fn generate() -> Result<Zeroizing<[u8; SALT_LEN]>, SaltError> {
    let mut salt = Zeroizing::new([0u8; SALT_LEN]);
    OsRng
        .try_fill_bytes(salt.as_mut())
        .map_err(|e| SaltError::Rng(e.to_string()))?;
    Ok(salt)
}

fn date_of(day: u32) -> Result<u16, SaltError> {
    u16::try_from(day).map_err(|_| SaltError::DayOutOfRange(day))
}

#[derive(clickhouse::Row, Serialize)]
struct Candidate {
    /// ClickHouse `Date`: days since the epoch.
    day: u16,
    salt: [u8; SALT_LEN],
}

#[derive(clickhouse::Row, Deserialize)]
struct SaltRow {
    salt: [u8; SALT_LEN],
}

/// Reads the agreed salt of `day`, if any.
async fn read_winner(
    client: &Client,
    day: u32,
) -> Result<Option<Zeroizing<[u8; SALT_LEN]>>, SaltError> {
    let date = date_of(day)?;
    let row: Option<SaltRow> = db::timed(
        REQUEST_TIMEOUT,
        client
            .query("SELECT salt FROM salts WHERE day = toDate(?) ORDER BY created_at, salt LIMIT 1")
            .bind(date_string(date))
            .fetch_optional(),
    )
    .await
    .map_err(ch("reading a salt"))?;
    Ok(row.map(|mut r| {
        let salt = Zeroizing::new(r.salt);
        r.salt.zeroize();
        salt
    }))
}

/// `YYYY-MM-DD` of a ClickHouse `Date` value: binding the date as text avoids any
/// doubt about how the server converts a bare number.
fn date_string(date: u16) -> String {
    let civil = jiff::civil::date(1970, 1, 1)
        .checked_add(jiff::Span::new().days(i64::from(date)))
        .unwrap_or(jiff::civil::date(1970, 1, 1));
    civil.to_string()
}

/// Returns the agreed salt of `day`, offering `candidate` if the day has none yet.
async fn agree(
    client: &Client,
    day: u32,
    candidate: &[u8; SALT_LEN],
) -> Result<Zeroizing<[u8; SALT_LEN]>, SaltError> {
    if let Some(winner) = read_winner(client, day).await? {
        return Ok(winner);
    }
    let row = Candidate {
        day: date_of(day)?,
        salt: *candidate,
    };
    // The salt travels in the RowBinary body, never in query text, so it cannot end
    // up in the server's query log.
    let insert = async {
        let mut insert = client
            .insert::<Candidate>("salts")
            .await?
            .with_setting("insert_deduplicate", "1")
            .with_setting("insert_deduplication_token", format!("hush-salt-{day}"))
            .with_setting("async_insert", "0");
        insert.write(&row).await?;
        insert.end().await
    };
    let result = db::timed(REQUEST_TIMEOUT, insert).await;
    let Candidate { mut salt, .. } = row;
    salt.zeroize();
    result.map_err(ch("inserting a salt candidate"))?;
    read_winner(client, day)
        .await?
        .ok_or(SaltError::Missing(day))
}

/// Deletes salts of days before `keep_from`. A mutation rewrites (here: drops) the
/// parts, so the bytes leave the table's live data, unlike a lightweight DELETE.
async fn delete_before(client: &Client, keep_from: u32) -> Result<u64, SaltError> {
    let date = date_string(date_of(keep_from)?);
    let old: u64 = db::timed(
        REQUEST_TIMEOUT,
        client
            .query("SELECT count() FROM salts WHERE day < toDate(?)")
            .bind(&date)
            .fetch_one(),
    )
    .await
    .map_err(ch("counting old salts"))?;
    if old == 0 {
        return Ok(0);
    }
    db::timed(
        REQUEST_TIMEOUT,
        client
            .query("ALTER TABLE salts DELETE WHERE day < toDate(?) SETTINGS mutations_sync = 1")
            .bind(&date)
            .execute(),
    )
    .await
    .map_err(ch("deleting old salts"))?;
    Ok(old)
}

struct Prepared {
    day: u32,
    salt: Zeroizing<[u8; SALT_LEN]>,
}

/// The salts of this instance. [`Salts::current`] is lock-free and is what the hit
/// path calls; everything else runs at start or in the rotation task.
pub struct Salts {
    state: ArcSwap<DailySalts>,
    /// Tomorrow's agreed salt, fetched ahead of midnight. Touched only by the rotation
    /// task, so the mutex is never contended.
    prepared: Mutex<Option<Prepared>>,
}

impl fmt::Debug for Salts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Salts")
            .field("state", &*self.state.load())
            .finish_non_exhaustive()
    }
}

impl Salts {
    /// Loads or creates today's salt (UTC, system clock) and loads yesterday's.
    pub async fn init(client: &Client) -> Result<Arc<Salts>, SaltError> {
        Self::init_at(client, today()).await
    }

    /// [`Salts::init`] for a given day. Also deletes salts older than `day - 1`, in
    /// case no instance was running at the last rotation.
    pub async fn init_at(client: &Client, day: u32) -> Result<Arc<Salts>, SaltError> {
        let current = agree(client, day, &*generate()?).await?;
        let previous = match day.checked_sub(1) {
            Some(yesterday) => read_winner(client, yesterday).await?,
            None => None,
        };
        let salts = DailySalts {
            day,
            current: *current,
            previous: previous.map(|p| *p),
        };
        if let Some(yesterday) = day.checked_sub(1)
            && let Err(error) = delete_before(client, yesterday).await
        {
            tracing::warn!(%error, "could not delete old salts; retrying at rotation");
        }
        Ok(Arc::new(Salts {
            state: ArcSwap::from_pointee(salts),
            prepared: Mutex::new(None),
        }))
    }

    /// A fresh random salt for `day`, agreed with no one yet, for a start while
    /// ClickHouse is down; [`Salts::connect`] agrees on it once ClickHouse answers (see
    /// the module doc). The rotation task reconciles it too.
    pub fn local(day: u32) -> Result<Arc<Salts>, SaltError> {
        let current = generate()?;
        Ok(Salts::fixed(DailySalts {
            day,
            current: *current,
            previous: None,
        }))
    }

    /// After a start on [`Salts::local`]: agrees on today's salt (offering ours, or
    /// adopting the one ClickHouse has) and loads yesterday's if we have none. Returns
    /// whether our salt was replaced.
    pub async fn connect(&self, client: &Client) -> Result<bool, SaltError> {
        let changed = self.reconcile(client).await?;
        let now = self.state.load_full();
        if now.previous.is_none()
            && let Some(yesterday) = now.day.checked_sub(1)
            && let Some(previous) = read_winner(client, yesterday).await?
        {
            // Only replace the state we read: a rotation in between wins.
            let _ = self.state.compare_and_swap(
                &now,
                Arc::new(DailySalts {
                    day: now.day,
                    current: now.current,
                    previous: Some(*previous),
                }),
            );
        }
        Ok(changed)
    }

    /// Salts held in memory only, with no ClickHouse agreement behind them: for
    /// benchmarks and tests of the hit path that must not depend on a server. A
    /// collector never uses this (instances would disagree on visitor ids).
    pub fn fixed(salts: DailySalts) -> Arc<Salts> {
        Arc::new(Salts {
            state: ArcSwap::from_pointee(salts),
            prepared: Mutex::new(None),
        })
    }

    /// The salts in use. Lock-free: one atomic load and a reference count increment.
    pub fn current(&self) -> Arc<DailySalts> {
        self.state.load_full()
    }

    /// The salts to hash a hit of `day` with: the current ones when they are of that
    /// day or later (a clock stepping back keeps the newer salt). When they are older,
    /// the salt prepared for `day` is switched in (no round trip; the rotation task
    /// finds the day done); without one, [`StaleSalt`]. Lock-free unless the salt is
    /// stale, and then it never waits for the rotation task.
    pub fn for_day(&self, day: u32) -> Result<Arc<DailySalts>, StaleSalt> {
        let salts = self.state.load_full();
        if salts.day >= day {
            return Ok(salts);
        }
        self.switch_to_prepared(&salts, day).ok_or(StaleSalt {
            salt_day: salts.day,
            day,
        })
    }

    /// Makes the salt prepared for `day` current in place of `old`, if there is one.
    fn switch_to_prepared(&self, old: &Arc<DailySalts>, day: u32) -> Option<Arc<DailySalts>> {
        let mut prepared = match self.prepared.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // The rotation task holds it for a moment; this hit is refused, the next
            // one finds the day switched.
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        if prepared.as_ref().is_none_or(|p| p.day != day) {
            return None;
        }
        let salt = prepared.take()?.salt;
        drop(prepared);
        let next = Arc::new(DailySalts {
            day,
            current: *salt,
            previous: (day == old.day + 1).then_some(old.current),
        });
        let before = self.state.compare_and_swap(old, Arc::clone(&next));
        if Arc::ptr_eq(&before, old) {
            tracing::info!(
                day,
                "switched to the prepared visitor salt at the first hit of the day"
            );
            return Some(next);
        }
        // Someone else switched first: theirs stands, if it is of this day.
        let now = self.state.load_full();
        (now.day >= day).then_some(now)
    }

    /// Agrees on `day`'s salt ahead of time, so that [`Salts::rotate_to`] for that
    /// day needs no ClickHouse round trip.
    pub async fn prepare(&self, client: &Client, day: u32) -> Result<(), SaltError> {
        if self.prepared_day() == Some(day) {
            return Ok(());
        }
        let salt = agree(client, day, &*generate()?).await?;
        self.lock_prepared().replace(Prepared { day, salt });
        Ok(())
    }

    fn lock_prepared(&self) -> std::sync::MutexGuard<'_, Option<Prepared>> {
        // A panic while holding this lock cannot leave the Option inconsistent.
        self.prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn prepared_day(&self) -> Option<u32> {
        self.lock_prepared().as_ref().map(|p| p.day)
    }

    /// Switches to `day`: its salt becomes current, the old current becomes previous
    /// when the days are consecutive, and salts older than `day - 1` are deleted from
    /// ClickHouse. A day not after the current one is ignored (a clock stepping back
    /// must not resurrect an old salt). If ClickHouse cannot be reached and the day was
    /// not prepared, a local salt is used and offered to ClickHouse by
    /// [`Salts::reconcile`] later; the error is still returned so the caller logs it.
    pub async fn rotate_to(&self, client: &Client, day: u32) -> Result<(), SaltError> {
        let old = self.state.load_full();
        if day <= old.day {
            if day < old.day {
                tracing::warn!(
                    day,
                    current = old.day,
                    "clock is behind the salt day; keeping the salt"
                );
            }
            return Ok(());
        }
        let prepared = self.lock_prepared().take().filter(|p| p.day == day);
        let (current, agreed) = match prepared {
            Some(p) => (p.salt, Ok(())),
            None => match agree(client, day, &*generate()?).await {
                Ok(salt) => (salt, Ok(())),
                Err(error) => (generate()?, Err(error)),
            },
        };
        let previous = if day == old.day + 1 {
            Some(old.current)
        } else {
            // Skipped days (instance was stopped over midnight): the previous day's
            // salt comes from ClickHouse if anyone made one.
            read_winner(client, day - 1)
                .await
                .ok()
                .flatten()
                .map(|s| *s)
        };
        self.state.store(Arc::new(DailySalts {
            day,
            current: *current,
            previous,
        }));
        drop(old);
        tracing::info!(day, "rotated the visitor salt");
        agreed?;
        delete_before(client, day - 1).await?;
        Ok(())
    }

    /// Re-reads today's agreed salt and adopts it if it differs from ours (offering ours
    /// when the day has none, e.g. after rotating without ClickHouse). Returns whether
    /// the salt changed.
    pub async fn reconcile(&self, client: &Client) -> Result<bool, SaltError> {
        let ours = self.state.load_full();
        let winner = agree(client, ours.day, &ours.current).await?;
        if *winner == ours.current {
            return Ok(false);
        }
        // Only replace the state we read: a rotation in between wins.
        let replacement = Arc::new(DailySalts {
            day: ours.day,
            current: *winner,
            previous: ours.previous,
        });
        let prev = self.state.compare_and_swap(&ours, replacement);
        let changed = Arc::ptr_eq(&prev, &ours);
        if changed {
            tracing::warn!(
                day = ours.day,
                "adopted the salt agreed in ClickHouse; visitor ids of this instance changed"
            );
        }
        Ok(changed)
    }

    /// Runs rotation until `shutdown` completes: wakes every [`TICK`] and at UTC
    /// midnight, rotates when the date changed, prepares tomorrow's salt within
    /// [`PREPARE_LEAD`] of midnight, and otherwise reconciles today's salt. Errors are
    /// logged and retried on the next tick.
    pub fn spawn_rotation(
        self: &Arc<Self>,
        client: Client,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let salts = Arc::clone(self);
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            loop {
                let now = SystemTime::now();
                salts.tick(&client, now).await;
                // Wake just after midnight rather than up to a tick late.
                let wait = TICK.min(time_until_next_midnight(now) + Duration::from_millis(50));
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        })
    }

    async fn tick(&self, client: &Client, now: SystemTime) {
        // Every tick retries while ClickHouse is down (for hours, after a start
        // without it): one line per kind every TICK_LOG_EVERY, not one per tick.
        static ROTATE: RateLimit = RateLimit::new(TICK_LOG_EVERY);
        static CONFIRM: RateLimit = RateLimit::new(TICK_LOG_EVERY);
        static DELETE: RateLimit = RateLimit::new(TICK_LOG_EVERY);
        static PREPARE: RateLimit = RateLimit::new(TICK_LOG_EVERY);
        let today = day_of(now);
        if today > self.state.load().day {
            if let Err(error) = self.rotate_to(client, today).await
                && let Some(held_back) = ROTATE.check()
            {
                tracing::warn!(%error, held_back, "salt rotation incomplete; retrying");
            }
            return;
        }
        if let Err(error) = self.reconcile(client).await
            && let Some(held_back) = CONFIRM.check()
        {
            tracing::warn!(%error, held_back, "could not confirm today's salt; retrying");
        }
        // Normally a no-op count; finishes a deletion that failed at rotation.
        if let Some(yesterday) = today.checked_sub(1)
            && let Err(error) = delete_before(client, yesterday).await
            && let Some(held_back) = DELETE.check()
        {
            tracing::warn!(%error, held_back, "could not delete old salts; retrying");
        }
        if time_until_next_midnight(now) <= PREPARE_LEAD
            && let Err(error) = self.prepare(client, today + 1).await
            && let Some(held_back) = PREPARE.check()
        {
            tracing::warn!(%error, held_back, "could not prepare tomorrow's salt; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_days_since_the_epoch() {
        assert_eq!(day_of(UNIX_EPOCH), 0);
        assert_eq!(day_of(UNIX_EPOCH + Duration::from_secs(86_399)), 0);
        assert_eq!(day_of(UNIX_EPOCH + Duration::from_secs(86_400)), 1);
        // 2024-03-01T00:00:00Z
        assert_eq!(
            day_of(UNIX_EPOCH + Duration::from_secs(1_709_251_200)),
            19_783
        );
        assert_eq!(date_string(19_783), "2024-03-01");
        assert_eq!(date_string(0), "1970-01-01");
    }

    #[test]
    fn midnight_is_computed_in_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_200 - 90);
        assert_eq!(time_until_next_midnight(t).as_secs(), 90);
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_200);
        assert_eq!(time_until_next_midnight(t).as_secs(), 86_400);
    }

    #[test]
    fn generated_salts_are_random() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(*a, *b);
        assert_ne!(*a, [0u8; SALT_LEN]);
    }

    #[test]
    fn debug_output_never_contains_salt_bytes() {
        let s = DailySalts {
            day: 5,
            current: [0xAB; SALT_LEN],
            previous: Some([0xCD; SALT_LEN]),
        };
        let text = format!("{s:?}");
        assert!(text.contains("redacted") && text.contains('5'), "{text}");
        assert!(
            !text.contains("171") && !text.contains("ab") && !text.contains("AB"),
            "{text}"
        );
        assert!(
            !text.contains("205") && !text.contains("cd") && !text.contains("CD"),
            "{text}"
        );
    }

    fn salts_of(day: u32, byte: u8) -> Arc<Salts> {
        Salts::fixed(DailySalts {
            day,
            current: [byte; SALT_LEN],
            previous: None,
        })
    }

    #[test]
    fn a_salt_is_never_used_for_a_later_day() {
        let salts = salts_of(100, 1);
        assert_eq!(salts.for_day(100).unwrap().current, [1; SALT_LEN]);
        // A clock behind the salt keeps the newer salt.
        assert_eq!(salts.for_day(99).unwrap().day, 100);
        // The next day without a prepared salt: refused, and nothing changed.
        assert_eq!(
            salts.for_day(101).unwrap_err(),
            StaleSalt {
                salt_day: 100,
                day: 101
            }
        );
        assert_eq!(salts.current().day, 100);
        // A salt prepared for another day does not help either.
        *salts.lock_prepared() = Some(Prepared {
            day: 102,
            salt: Zeroizing::new([2; SALT_LEN]),
        });
        assert!(salts.for_day(101).is_err());
        assert_eq!(salts.prepared_day(), Some(102));
    }

    #[test]
    fn the_first_hit_of_a_day_switches_to_the_prepared_salt() {
        let salts = salts_of(100, 1);
        *salts.lock_prepared() = Some(Prepared {
            day: 101,
            salt: Zeroizing::new([3; SALT_LEN]),
        });
        let now = salts.for_day(101).unwrap();
        assert_eq!((now.day, now.current), (101, [3; SALT_LEN]));
        assert_eq!(
            now.previous,
            Some([1; SALT_LEN]),
            "yesterday's stays previous"
        );
        assert_eq!(salts.current().day, 101);
        assert_eq!(salts.prepared_day(), None, "used up");
        // A prepared salt two days on has no previous: the day between is unknown.
        *salts.lock_prepared() = Some(Prepared {
            day: 103,
            salt: Zeroizing::new([4; SALT_LEN]),
        });
        let later = salts.for_day(103).unwrap();
        assert_eq!((later.day, later.previous), (103, None));
    }

    #[test]
    fn days_beyond_the_date_type_are_rejected() {
        assert!(matches!(
            date_of(70_000),
            Err(SaltError::DayOutOfRange(70_000))
        ));
        assert_eq!(date_of(65_535).unwrap(), 65_535);
    }
}
