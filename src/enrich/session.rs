//! Visits: a visit ends after `session.timeout_secs` without a hit from the visitor.
//!
//! State lives in memory only, in a bounded concurrent cache keyed by (site, visitor
//! id): `quick_cache` shards the map behind many small locks, so concurrent hits for
//! different visitors rarely contend, and its eviction forgets the least recently
//! seen visitors first. A forgotten or expired visitor simply starts a new visit.
//! Visitor ids are salted daily hashes, so this cache holds nothing that identifies a
//! person either.
//!
//! # Memory bound
//!
//! The tracker holds at most `session.max_tracked` visits and at most
//! `session.max_bytes` bytes, whichever is reached first; a client that invents a new
//! visitor per request (a new User-Agent each time) only makes it forget older ones.
//! The bytes are counted, not measured:
//!
//! - the cache's table: [`TABLE_BYTES_PER_VISIT`] per visit it is sized for
//!   (`max_tracked`, or fewer if that would take more than half the budget),
//!   reserved when the tracker is built so it never grows by reallocation (its
//!   pages become resident only as visits arrive);
//! - each visit's entry page: its allocation ([`entry_page_bytes`]), and at least
//!   the budget left for pages divided by the visits the table is sized for, which
//!   makes the cache's weight bound also the count bound.
//!
//! The entry page kept for a visit is cut to [`MAX_ENTRY_PAGE_BYTES`] (a percent-
//! encoded path can be three times its URL's length), so one hit can take at most a
//! few KiB of the budget. Rows carry the visit's entry page, so their `entry_page`
//! is cut the same way; their `pathname` is not.
//!
//! # Refused hits
//!
//! A touch reports what it changed ([`Touched`]); the ingest handler collects them
//! per request in a [`Journal`] and, when the request is refused (a full spool or
//! queue), hands it to [`SessionTracker::undo`], so a refused request leaves no visit
//! behind.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::{Cache, EntryAction, EntryResult};
use smallvec::SmallVec;

use crate::config::SessionConfig;

/// Longest entry page a visit keeps, in bytes; longer ones are cut at a character
/// boundary and never inside a `%XX` escape.
pub const MAX_ENTRY_PAGE_BYTES: usize = 2048;

/// One slot of the cache: quick_cache 0.7 keeps a visit (or a ghost, the key of a
/// recently forgotten one) in a 64-byte slab entry, found through a hash table of
/// 4-byte indices plus a control byte, at most two buckets per slot: 64 + 16.
const SLOT_BYTES: u64 = 80;

/// Table bytes per visit the cache is sized for: one slot, plus half a slot for the
/// ghosts quick_cache keeps (up to half as many as the visits it expects).
pub const TABLE_BYTES_PER_VISIT: u64 = SLOT_BYTES * 3 / 2;

/// Heap bytes of an entry page of `len` bytes: an `Arc<str>` puts two 8-byte counts
/// before the text, and the allocator adds an 8-byte header and rounds up to 16
/// bytes, at least 32.
pub fn entry_page_bytes(len: usize) -> u64 {
    (len as u64 + 24).next_multiple_of(16).max(32)
}

/// The weight of a visit in the cache: its entry page's bytes, at least `floor`.
#[derive(Debug, Clone, Copy)]
struct VisitWeight {
    floor: u64,
}

impl Weighter<SessionKey, Visit> for VisitWeight {
    fn weight(&self, _: &SessionKey, visit: &Visit) -> u64 {
        entry_page_bytes(visit.entry_page.len()).max(self.floor)
    }
}

/// `pathname` cut to [`MAX_ENTRY_PAGE_BYTES`].
fn entry_page(pathname: &str) -> Arc<str> {
    if pathname.len() <= MAX_ENTRY_PAGE_BYTES {
        return Arc::from(pathname);
    }
    let mut end = MAX_ENTRY_PAGE_BYTES;
    while !pathname.is_char_boundary(end) {
        end -= 1;
    }
    // `%` plus two hex digits: a cut escape would decode to garbage.
    if let Some(percent) = pathname[..end].rfind('%')
        && end - percent < 3
    {
        end = percent;
    }
    Arc::from(&pathname[..whole_escaped_chars(pathname.as_bytes(), end)])
}

/// `end`, or less so that the `%XX` escapes just before it do not end inside one
/// UTF-8 character (`%F0%9F` without the rest of its emoji).
fn whole_escaped_chars(path: &[u8], end: usize) -> usize {
    let mut at = end;
    let mut continuation = 0;
    while at >= 3 && path[at - 3] == b'%' {
        let Some(byte) = hex_byte(path[at - 2], path[at - 1]) else {
            break;
        };
        at -= 3;
        match byte {
            0x80..=0xbf if continuation < 3 => continuation += 1,
            0xc0..=0xff => {
                let needed = match byte {
                    0xf0.. => 3,
                    0xe0.. => 2,
                    _ => 1,
                };
                return if continuation < needed { at } else { end };
            }
            _ => break,
        }
    }
    end
}

fn hex_byte(high: u8, low: u8) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    u8::try_from(digit(high)? * 16 + digit(low)?).ok()
}

/// The visit a hit belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The id the visit continues under: the current one, unless only the
    /// previous-salt id has an active visit (a visit spanning UTC midnight). Store
    /// this as the row's `visitor_id`.
    pub visitor_id: u64,
    /// Random, never 0 (0 marks anonymous rows).
    pub session_id: u64,
    /// Pathname of the visit's first page view.
    pub entry_page: Arc<str>,
    /// This hit starts a visit (no active visit was found). For an engagement hit the
    /// visit is not remembered: engagement reports on a page view whose visit has
    /// expired or was forgotten (or never existed), and such hits are dropped, as
    /// Plausible does.
    pub new_visit: bool,
    /// What this hit changed in the tracker (`None`: nothing), for
    /// [`SessionTracker::undo`] when the hit is refused after all.
    pub touched: Option<Touched>,
}

/// What one [`SessionTracker::touch`] changed: a visit started, or a visit's timer
/// restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touched {
    key: SessionKey,
    session_id: u64,
    /// The `last_seen` the touch left.
    at: u32,
    /// `None`: the touch started the visit; `Some(t)`: it moved `last_seen` from `t`.
    before: Option<u32>,
}

/// The touches made for one request, undone together if the request is refused
/// ("all or nothing" holds for visits too). Inline for the usual one or two.
#[derive(Debug, Default)]
pub struct Journal(SmallVec<[Touched; 2]>);

impl Journal {
    pub fn record(&mut self, touched: Option<Touched>) {
        self.0.extend(touched);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionKey {
    /// Hash of the site domain: the visitor id already depends on the site, so a
    /// 64-bit site hash keeps keys distinct without storing (or allocating) the name.
    site: u64,
    visitor: u64,
}

#[derive(Debug, Clone)]
struct Visit {
    session_id: u64,
    last_seen: u32,
    entry_page: Arc<str>,
}

/// Tracks active visits. Cheap to share: wrap it in an `Arc`.
pub struct SessionTracker {
    visits: Cache<SessionKey, Visit, VisitWeight>,
    /// Visits the table is sized (and reserved) for.
    max_visits: u64,
    timeout_secs: u32,
}

impl std::fmt::Debug for SessionTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTracker")
            .field("tracked", &self.visits.len())
            .field("max_visits", &self.max_visits)
            .field("page_bytes", &self.visits.weight())
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl SessionTracker {
    pub fn new(config: &SessionConfig) -> Self {
        let budget = config.max_bytes;
        // As many visits as asked for, unless their table would take more than half
        // the budget: the other half is for entry pages.
        let max_visits = u64::try_from(config.max_tracked.max(1))
            .unwrap_or(u64::MAX)
            .min(budget / (2 * TABLE_BYTES_PER_VISIT))
            .max(1);
        // A little more than `max_visits`: shard rounding can put one visit more in a
        // shard, and a full slab must not reallocate (that would double it).
        let reserved = max_visits + max_visits / 64 + 64;
        let page_budget = budget
            .saturating_sub(reserved * TABLE_BYTES_PER_VISIT)
            .max(entry_page_bytes(0));
        // Rounded up, so that the weight bound is also the count bound (give or take
        // one visit per shard, which the reserve's margin covers).
        let floor = page_budget.div_ceil(max_visits);
        let visits = Cache::with_weighter(
            usize::try_from(max_visits).unwrap_or(usize::MAX),
            page_budget,
            VisitWeight { floor },
        );
        visits.reserve(usize::try_from(reserved).unwrap_or(usize::MAX));
        Self {
            visits,
            max_visits,
            timeout_secs: u32::try_from(config.timeout_secs).unwrap_or(u32::MAX),
        }
    }

    /// Records a hit at `now_secs` (Unix seconds) on `pathname` and returns its visit.
    ///
    /// `current` is the visitor's id under today's salt. `previous` gives its id
    /// under yesterday's salt, when that salt is still known, so a visit that spans
    /// UTC midnight continues instead of splitting in two. It is called only when
    /// there is no active visit under `current`: that id is a hash the caller would
    /// otherwise compute for every hit, and almost always in vain.
    ///
    /// Within `timeout_secs` of the visitor's previous hit the visit continues (same
    /// session id and entry page) and its timer restarts; otherwise a page view starts
    /// a new visit with `pathname` as entry page. Engagement hits extend an active
    /// visit like page views but never start one (see [`SessionInfo::new_visit`]).
    /// Anonymous (DNT/GPC) hits must not call this.
    pub fn touch(
        &self,
        site: &str,
        current: u64,
        previous: impl FnOnce() -> Option<u64>,
        now_secs: u32,
        pathname: &str,
        is_engagement: bool,
    ) -> SessionInfo {
        let site = site_hash(site);
        let key = SessionKey {
            site,
            visitor: current,
        };
        // Most hits belong to an active visit under today's id: one lookup, done.
        if let Some(info) = self.extend(&key, now_secs) {
            return info;
        }
        if let Some(previous) = previous().filter(|p| *p != current) {
            let key = SessionKey {
                site,
                visitor: previous,
            };
            // Read-locked probe first: nearly no visitor has a visit under the
            // previous id, so skip the write lock then.
            if self.visits.contains_key(&key)
                && let Some(info) = self.extend(&key, now_secs)
            {
                return info;
            }
        }
        // A new visit under today's id, or one that another request for the same
        // visitor has just started or continued since the lookup above: `entry`
        // decides atomically.
        let timeout = self.timeout_secs;
        let result = self.visits.entry(&key, None, |_, visit| {
            if !is_active(visit, now_secs, timeout) {
                if is_engagement {
                    // Leave the stale visit for the sweep; this hit starts nothing.
                    return EntryAction::Retain(None);
                }
                // Replaced through the cache rather than in place: the new visit's
                // entry page may weigh more, and only an insert evicts for it.
                return EntryAction::ReplaceWithGuard;
            }
            let touched = restart(key, visit, now_secs);
            EntryAction::Retain(Some(info(current, visit, false, touched)))
        });
        match result {
            EntryResult::Retained(Some(info)) => info,
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) if !is_engagement => {
                let visit = Visit {
                    session_id: new_session_id(),
                    last_seen: now_secs,
                    entry_page: entry_page(pathname),
                };
                let touched = Touched {
                    key,
                    session_id: visit.session_id,
                    at: now_secs,
                    before: None,
                };
                let info = info(current, &visit, true, Some(touched));
                // Err only if the placeholder was already filled, which cannot happen
                // while we hold the guard; either way the visit is as good as new.
                let _ = guard.insert(visit);
                info
            }
            // Engagement without an active visit, or (impossible with no timeout) a
            // placeholder wait timeout: a one-off visit that is not remembered.
            _ => SessionInfo {
                visitor_id: current,
                session_id: new_session_id(),
                entry_page: entry_page(pathname),
                new_visit: true,
                touched: None,
            },
        }
    }

    /// Takes back what `journal`'s touches did, latest first: a visit one started
    /// is forgotten, a timer one restarted is set back. Call it when the hits they
    /// enriched were refused (not stored), so a refused request leaves no trace.
    ///
    /// A visit that another hit has touched since (its `last_seen` moved on) is left
    /// as it is: that hit may have been stored. Two hits of the same visitor in the
    /// same second, one stored and one refused, cannot be told apart; the visit is
    /// then taken back too, and the stored hit's next one starts a new visit.
    pub fn undo(&self, journal: &Journal) {
        for touched in journal.0.iter().rev() {
            // A placeholder means a new visit is being inserted by another hit
            // this instant: not ours to take back, and never worth waiting for.
            let _ = self
                .visits
                .entry(&touched.key, Some(std::time::Duration::ZERO), |_, visit| {
                    if visit.session_id != touched.session_id || visit.last_seen != touched.at {
                        return EntryAction::Retain(());
                    }
                    match touched.before {
                        None => EntryAction::Remove,
                        Some(before) => {
                            visit.last_seen = before;
                            EntryAction::Retain(())
                        }
                    }
                });
        }
    }

    /// Continues the visit under `key` if it is active; never creates one.
    fn extend(&self, key: &SessionKey, now_secs: u32) -> Option<SessionInfo> {
        let timeout = self.timeout_secs;
        match self.visits.entry(key, None, |_, visit| {
            if !is_active(visit, now_secs, timeout) {
                return EntryAction::Retain(None);
            }
            let touched = restart(*key, visit, now_secs);
            EntryAction::Retain(Some(info(key.visitor, visit, false, touched)))
        }) {
            EntryResult::Retained(info) => info,
            // Vacant: dropping the guard releases the placeholder without inserting.
            _ => None,
        }
    }

    /// Drops visits that ended before `now_secs`. Eviction bounds memory anyway; this
    /// frees it sooner and keeps `len` meaningful. Call it about once a minute.
    pub fn sweep(&self, now_secs: u32) {
        let timeout = self.timeout_secs;
        self.visits
            .retain(|_, visit| is_active(visit, now_secs, timeout));
    }

    /// Visits currently remembered (active or not yet swept).
    pub fn len(&self) -> usize {
        self.visits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.visits.is_empty()
    }
}

/// A visit is active until `timeout` full seconds have passed since its last hit. A
/// hit stamped earlier than the last one (clocks of concurrent requests) counts as
/// no time passed.
fn is_active(visit: &Visit, now_secs: u32, timeout: u32) -> bool {
    now_secs.saturating_sub(visit.last_seen) < timeout
}

fn info(visitor_id: u64, visit: &Visit, new_visit: bool, touched: Option<Touched>) -> SessionInfo {
    SessionInfo {
        visitor_id,
        session_id: visit.session_id,
        entry_page: Arc::clone(&visit.entry_page),
        new_visit,
        touched,
    }
}

/// Restarts `visit`'s timer at `now_secs` (never backwards); what changed, if anything.
fn restart(key: SessionKey, visit: &mut Visit, now_secs: u32) -> Option<Touched> {
    let before = visit.last_seen;
    visit.last_seen = before.max(now_secs);
    (visit.last_seen != before).then_some(Touched {
        key,
        session_id: visit.session_id,
        at: visit.last_seen,
        before: Some(before),
    })
}

fn site_hash(site: &str) -> u64 {
    // Fixed keys: the hash only has to separate the handful of configured sites.
    let mut h = DefaultHasher::new();
    site.hash(&mut h);
    h.finish()
}

fn new_session_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const T0: u32 = 1_700_000_000;

    fn tracker(timeout_secs: u64, max_tracked: usize) -> SessionTracker {
        SessionTracker::new(&SessionConfig {
            timeout_secs,
            max_tracked,
            ..SessionConfig::default()
        })
    }

    /// No previous day's salt (the first day, or it was lost).
    fn none() -> Option<u64> {
        None
    }

    #[test]
    fn same_visitor_within_timeout_continues_the_visit() {
        let t = tracker(1800, 1000);
        let first = t.touch("a.com", 7, none, T0, "/landing", false);
        assert!(first.new_visit);
        assert_ne!(first.session_id, 0);
        assert_eq!(&*first.entry_page, "/landing");
        assert_eq!(first.visitor_id, 7);
        let second = t.touch("a.com", 7, none, T0 + 1799, "/pricing", false);
        assert!(!second.new_visit);
        assert_eq!(second.session_id, first.session_id);
        assert_eq!(&*second.entry_page, "/landing");
        // The timer restarted at the second hit.
        let third = t.touch("a.com", 7, none, T0 + 1799 + 1799, "/buy", false);
        assert_eq!(third.session_id, first.session_id);
    }

    #[test]
    fn after_the_timeout_a_new_visit_starts() {
        let t = tracker(1800, 1000);
        let first = t.touch("a.com", 7, none, T0, "/landing", false);
        let later = t.touch("a.com", 7, none, T0 + 1800, "/again", false);
        assert!(later.new_visit);
        assert_ne!(later.session_id, first.session_id);
        assert_eq!(&*later.entry_page, "/again");
    }

    #[test]
    fn visitors_and_sites_are_separate() {
        let t = tracker(1800, 1000);
        let a = t.touch("a.com", 7, none, T0, "/a", false);
        let b = t.touch("b.com", 7, none, T0, "/b", false);
        let c = t.touch("a.com", 8, none, T0, "/c", false);
        assert_ne!(a.session_id, b.session_id);
        assert_ne!(a.session_id, c.session_id);
        assert_eq!(&*b.entry_page, "/b");
        assert_eq!(
            t.touch("a.com", 7, none, T0 + 5, "/x", false).session_id,
            a.session_id
        );
    }

    #[test]
    fn engagement_extends_but_keeps_the_entry_page() {
        let t = tracker(1800, 1000);
        let first = t.touch("a.com", 7, none, T0, "/landing", false);
        let e = t.touch("a.com", 7, none, T0 + 1000, "/other", true);
        assert_eq!(e.session_id, first.session_id);
        assert_eq!(&*e.entry_page, "/landing");
        assert!(!e.new_visit);
        // 1000 + 1500 > 1800 after the first hit, but the engagement restarted the timer.
        let next = t.touch("a.com", 7, none, T0 + 2500, "/next", false);
        assert_eq!(next.session_id, first.session_id);
    }

    #[test]
    fn engagement_never_starts_a_visit() {
        let t = tracker(1800, 1000);
        let orphan = t.touch("a.com", 9, none, T0, "/read", true);
        assert!(orphan.new_visit);
        assert_ne!(orphan.session_id, 0);
        assert!(t.is_empty());
        let pv = t.touch("a.com", 9, none, T0 + 1, "/first", false);
        assert!(pv.new_visit);
        assert_ne!(pv.session_id, orphan.session_id);
        assert_eq!(&*pv.entry_page, "/first");
        // An engagement after expiry does not revive or replace the old visit.
        let late = t.touch("a.com", 9, none, T0 + 5000, "/first", true);
        assert!(late.new_visit);
        assert_ne!(late.session_id, pv.session_id);
        let fresh = t.touch("a.com", 9, none, T0 + 5001, "/second", false);
        assert!(fresh.new_visit);
        assert_ne!(fresh.session_id, pv.session_id);
        assert_eq!(&*fresh.entry_page, "/second");
    }

    #[test]
    fn visits_spanning_midnight_continue_under_the_previous_id() {
        let t = tracker(1800, 1000);
        let before = t.touch("a.com", 100, none, T0, "/late-night", false);
        let after = t.touch(
            "a.com",
            200,
            || Some(100),
            T0 + 600,
            "/after-midnight",
            false,
        );
        assert_eq!(after.visitor_id, 100);
        assert_eq!(after.session_id, before.session_id);
        assert_eq!(&*after.entry_page, "/late-night");
        assert!(!after.new_visit);
        // The previous-id visit was extended, so it still wins later.
        let later = t.touch("a.com", 200, || Some(100), T0 + 600 + 1700, "/x", false);
        assert_eq!(later.visitor_id, 100);
        assert_eq!(later.session_id, before.session_id);
    }

    #[test]
    fn expired_previous_visit_is_not_continued() {
        let t = tracker(1800, 1000);
        let before = t.touch("a.com", 100, none, T0, "/old", false);
        let after = t.touch("a.com", 200, || Some(100), T0 + 1800, "/new", false);
        assert_eq!(after.visitor_id, 200);
        assert_ne!(after.session_id, before.session_id);
        assert_eq!(&*after.entry_page, "/new");
        assert!(after.new_visit);
        // Without any previous visit the current id is used and remembered.
        let again = t.touch("a.com", 200, || Some(100), T0 + 1900, "/more", false);
        assert_eq!(again.visitor_id, 200);
        assert_eq!(again.session_id, after.session_id);
    }

    #[test]
    fn previous_id_is_computed_only_without_an_active_current_visit() {
        use std::cell::Cell;
        let t = tracker(1800, 1000);
        let calls = Cell::new(0);
        let previous = || {
            calls.set(calls.get() + 1);
            Some(100)
        };
        // New visitor: the previous id is asked for (and has no visit).
        let first = t.touch("a.com", 200, previous, T0, "/a", false);
        assert_eq!(calls.get(), 1);
        assert!(first.new_visit);
        assert_eq!(first.visitor_id, 200);
        // Active visit under today's id: not asked again.
        let second = t.touch("a.com", 200, previous, T0 + 10, "/b", false);
        assert_eq!(calls.get(), 1);
        assert_eq!(second.session_id, first.session_id);
        let engaged = t.touch("a.com", 200, previous, T0 + 20, "/b", true);
        assert_eq!(calls.get(), 1);
        assert_eq!(engaged.session_id, first.session_id);
        // Expired: asked again, and a new visit starts under today's id.
        let later = t.touch("a.com", 200, previous, T0 + 20 + 1800, "/c", false);
        assert_eq!(calls.get(), 2);
        assert!(later.new_visit);
        assert_ne!(later.session_id, first.session_id);
        // A previous id equal to today's (salt unchanged) is not looked up twice
        // and changes nothing.
        let same = t.touch("a.com", 7, || Some(7), T0, "/s", false);
        assert!(same.new_visit);
        assert_eq!(same.visitor_id, 7);
    }

    #[test]
    fn a_visit_under_todays_id_wins_over_yesterdays() {
        // Both ids active can only happen when two requests race across midnight;
        // today's is the one kept, and it is stable.
        let t = tracker(1800, 1000);
        let old = t.touch("a.com", 100, none, T0, "/old", false);
        let new = t.touch("a.com", 200, none, T0 + 5, "/new", false);
        assert_ne!(old.session_id, new.session_id);
        for dt in [10, 20] {
            let hit = t.touch("a.com", 200, || Some(100), T0 + dt, "/x", false);
            assert_eq!(hit.visitor_id, 200);
            assert_eq!(hit.session_id, new.session_id);
        }
    }

    #[test]
    fn clock_going_backwards_does_not_shorten_a_visit() {
        let t = tracker(100, 1000);
        let a = t.touch("a.com", 1, none, T0 + 50, "/", false);
        let b = t.touch("a.com", 1, none, T0, "/", false);
        assert_eq!(a.session_id, b.session_id);
        // last_seen stayed at T0 + 50.
        let c = t.touch("a.com", 1, none, T0 + 149, "/", false);
        assert_eq!(a.session_id, c.session_id);
    }

    #[test]
    fn sweep_drops_expired_visits() {
        let t = tracker(100, 1000);
        for v in 0..10 {
            t.touch("a.com", v, none, T0, "/", false);
        }
        for v in 10..15 {
            t.touch("a.com", v, none, T0 + 50, "/", false);
        }
        assert_eq!(t.len(), 15);
        t.sweep(T0 + 99);
        assert_eq!(t.len(), 15);
        t.sweep(T0 + 100);
        assert_eq!(t.len(), 5);
        t.sweep(T0 + 150);
        assert!(t.is_empty());
    }

    #[test]
    fn size_is_bounded() {
        let t = tracker(1800, 100);
        for v in 0..10_000u64 {
            t.touch("a.com", v, none, T0, "/", false);
            assert!(t.len() <= 100, "{} tracked after {v}", t.len());
        }
        // A visitor that is seen again and again survives the churn.
        let t = tracker(1800, 100);
        let hot = t.touch("a.com", u64::MAX, none, T0, "/", false);
        for v in 0..10_000u64 {
            t.touch("a.com", v, none, T0, "/", false);
            if v % 10 == 0 {
                t.touch("a.com", u64::MAX, none, T0, "/", false);
            }
        }
        assert_eq!(
            t.touch("a.com", u64::MAX, none, T0, "/", false).session_id,
            hot.session_id
        );
    }

    fn tracker_of_bytes(max_tracked: usize, max_bytes: u64) -> SessionTracker {
        SessionTracker::new(&SessionConfig {
            timeout_secs: 1800,
            max_tracked,
            max_bytes,
        })
    }

    #[test]
    fn memory_is_bounded_by_bytes() {
        const BUDGET: u64 = 2 * 1024 * 1024;
        // A new visitor per hit, each with a 1,500-byte entry page: 10,000 of them
        // would need 15 MB of pages alone. The count bound (a million) never binds.
        let t = tracker_of_bytes(1_000_000, BUDGET);
        let path = format!("/{}", "a".repeat(1_499));
        for v in 0..10_000u64 {
            t.touch("a.com", v, none, T0, &path, false);
            // What quick_cache reports for its table, plus each page's text and the
            // 16 bytes of counts an `Arc<str>` puts before it.
            let table = t.visits.memory_used();
            let pages = t.len() as u64 * (16 + 1_500);
            let used = table.entries as u64 + table.map as u64 + pages;
            assert!(used <= BUDGET, "{used} bytes after {v}: {t:?}");
        }
        // Forgetting the oldest, not refusing the newest.
        assert!(t.len() > 500, "{t:?}");
        assert!(!t.touch("a.com", 9_999, none, T0 + 1, "/", false).new_visit);
    }

    #[test]
    fn the_table_costs_what_the_budget_counts() {
        // Sized for 10,000 visits: 3 times as many visitors fill it and its ghost
        // list; quick_cache's own figure stays within what the budget reserves.
        let t = tracker_of_bytes(10_000, 1 << 30);
        assert_eq!(t.max_visits, 10_000);
        for v in 0..30_000u64 {
            t.touch("a.com", v, none, T0, "/", false);
        }
        assert!(t.len() <= 10_000);
        let table = t.visits.memory_used();
        let reserved = (10_000 + 10_000 / 64 + 64) * TABLE_BYTES_PER_VISIT;
        assert!(
            (table.entries + table.map) as u64 <= reserved,
            "{table:?} over {reserved}"
        );
        // Without evictions (no ghosts) the slab holds one 64-byte slot per visit:
        // a bigger `Visit` or a new quick_cache layout must update SLOT_BYTES.
        let t = tracker_of_bytes(10_000, 1 << 30);
        for v in 0..1_000u64 {
            t.touch("a.com", v, none, T0, "/", false);
        }
        assert_eq!(t.len(), 1_000);
        assert!(t.visits.memory_used().entries <= 1_000 * 64);
    }

    #[test]
    fn a_small_budget_tracks_fewer_visitors() {
        // 1 MiB cannot hold a million visits: the table is sized for what fits.
        let t = tracker_of_bytes(1_000_000, 1024 * 1024);
        assert_eq!(t.max_visits, 1024 * 1024 / (2 * TABLE_BYTES_PER_VISIT));
        for v in 0..100_000u64 {
            t.touch("a.com", v, none, T0, "/", false);
        }
        // Shards round their share up: one visit more each at most.
        let shards = t.visits.num_shards() as u64;
        assert!(t.len() as u64 <= t.max_visits + shards, "{t:?}");
        let table = t.visits.memory_used();
        let used = (table.entries + table.map) as u64 + t.len() as u64 * 32;
        assert!(used <= 1024 * 1024, "{used}: {t:?}");
    }

    #[test]
    fn long_entry_pages_are_cut_between_characters() {
        let t = tracker(1800, 1000);
        // 500 percent-encoded emoji (12 bytes each) after the slash: 6,001 bytes.
        // 170 whole emoji fit in 2,048 bytes with the slash: 2,041 bytes.
        let emoji = "%F0%9F%98%80";
        let long = format!("/{}", emoji.repeat(500));
        let v = t.touch("a.com", 1, none, T0, &long, false);
        assert_eq!(&*v.entry_page, format!("/{}", emoji.repeat(170)));
        // Later hits of the visit carry the same cut entry page.
        let next = t.touch("a.com", 1, none, T0 + 1, "/next", false);
        assert_eq!(next.entry_page, v.entry_page);
        // ASCII is cut at the limit; a two-byte character is not split.
        let v = t.touch("a.com", 2, none, T0, &"/abc".repeat(1_000), false);
        assert_eq!(v.entry_page.len(), MAX_ENTRY_PAGE_BYTES);
        let v = t.touch(
            "a.com",
            3,
            none,
            T0,
            &format!("/{}", "é".repeat(2_000)),
            false,
        );
        assert_eq!(&*v.entry_page, format!("/{}", "é".repeat(1_023)));
        // An escape cut in the middle is dropped; a short path is kept whole.
        let path = format!("{}%41%42", "/".repeat(2_044));
        let v = t.touch("a.com", 4, none, T0, &path, false);
        assert_eq!(&*v.entry_page, format!("{}%41", "/".repeat(2_044)));
        let v = t.touch("a.com", 5, none, T0, "/short%F0%9F", false);
        assert_eq!(&*v.entry_page, "/short%F0%9F");
    }

    fn undo_one(t: &SessionTracker, info: &SessionInfo) {
        let mut journal = Journal::default();
        journal.record(info.touched);
        t.undo(&journal);
    }

    #[test]
    fn undo_forgets_a_started_visit() {
        let t = tracker(1800, 1000);
        let refused = t.touch("a.com", 7, none, T0, "/refused", false);
        assert!(refused.new_visit && refused.touched.is_some());
        undo_one(&t, &refused);
        assert!(t.is_empty());
        let next = t.touch("a.com", 7, none, T0 + 5, "/next", false);
        assert!(next.new_visit);
        assert_eq!(&*next.entry_page, "/next");
        assert_ne!(next.session_id, refused.session_id);
    }

    #[test]
    fn undo_sets_a_restarted_timer_back() {
        let t = tracker(100, 1000);
        let first = t.touch("a.com", 7, none, T0, "/", false);
        let refused = t.touch("a.com", 7, none, T0 + 90, "/x", false);
        assert_eq!(refused.session_id, first.session_id);
        undo_one(&t, &refused);
        // The visit is still there, but ends 100 s after the first hit, not the refused one.
        let within = t.touch("a.com", 7, none, T0 + 99, "/", false);
        assert_eq!(within.session_id, first.session_id);
        let t = tracker(100, 1000);
        let first = t.touch("a.com", 7, none, T0, "/", false);
        let refused = t.touch("a.com", 7, none, T0 + 90, "/x", false);
        undo_one(&t, &refused);
        let after = t.touch("a.com", 7, none, T0 + 100, "/", false);
        assert!(after.new_visit);
        assert_ne!(after.session_id, first.session_id);
    }

    #[test]
    fn undo_of_a_whole_batch_leaves_no_trace() {
        let t = tracker(1800, 1000);
        let existing = t.touch("a.com", 1, none, T0, "/", false);
        let mut journal = Journal::default();
        for (v, dt, path) in [(1, 10, "/a"), (2, 10, "/b"), (2, 11, "/c"), (1, 12, "/d")] {
            journal.record(t.touch("a.com", v, none, T0 + dt, path, false).touched);
        }
        // Visitor 2's second hit moved its timer; visitor 1's timer moved twice.
        assert_eq!(journal.0.len(), 4);
        t.undo(&journal);
        assert_eq!(t.len(), 1);
        // Visitor 1's visit ends 1800 s after its first hit again.
        let v1 = t.touch("a.com", 1, none, T0 + 1800, "/", false);
        assert!(v1.new_visit);
        assert_ne!(v1.session_id, existing.session_id);
    }

    #[test]
    fn undo_leaves_a_visit_a_later_hit_has_touched() {
        let t = tracker(1800, 1000);
        let refused = t.touch("a.com", 7, none, T0, "/refused", false);
        let stored = t.touch("a.com", 7, none, T0 + 1, "/stored", false);
        assert_eq!(stored.session_id, refused.session_id);
        undo_one(&t, &refused);
        let next = t.touch("a.com", 7, none, T0 + 2, "/next", false);
        assert_eq!(next.session_id, refused.session_id);
        // Nothing changed, nothing to undo.
        let same_second = t.touch("a.com", 7, none, T0 + 2, "/again", false);
        assert_eq!(same_second.touched, None);
        let orphan = t.touch("a.com", 8, none, T0, "/read", true);
        assert_eq!(orphan.touched, None);
    }

    #[test]
    fn session_ids_are_random_and_non_zero() {
        let t = tracker(1800, 10_000);
        let ids: HashSet<u64> = (0..1000)
            .map(|v| t.touch("a.com", v, none, T0, "/", false).session_id)
            .collect();
        assert_eq!(ids.len(), 1000);
        assert!(!ids.contains(&0));
    }

    #[test]
    fn concurrent_touches_agree_on_one_visit() {
        let t = Arc::new(tracker(1800, 100_000));
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let mut shared = HashSet::new();
                    let mut own = Vec::new();
                    for i in 0..500u64 {
                        shared.insert(t.touch("a.com", 42, none, T0, "/", false).session_id);
                        own.push(t.touch("a.com", 1000 * (n + 1) + i, none, T0, "/", false));
                    }
                    (shared, own)
                })
            })
            .collect();
        let mut shared = HashSet::new();
        let mut own_ids = HashSet::new();
        for handle in threads {
            let (s, own) = handle.join().unwrap();
            shared.extend(s);
            for info in own {
                assert!(info.new_visit);
                own_ids.insert(info.session_id);
            }
        }
        assert_eq!(
            shared.len(),
            1,
            "one visitor got several sessions: {shared:?}"
        );
        assert_eq!(own_ids.len(), 8 * 500);
    }
}
