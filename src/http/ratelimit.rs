//! Request rate limits of the read side: per Stats API key, and per network for
//! anonymous readers of public sites.
//!
//! Each limited party gets `per_hour` requests an hour, spendable at once (a burst of
//! `per_hour`) and refilled continuously, one every `1 h / per_hour`: the generic cell
//! rate algorithm (GCRA). Its whole state is one instant per party, the *theoretical
//! arrival time* (TAT): a request at `now` is allowed when `max(TAT, now) + interval`
//! is at most `now + 1 h`, and then becomes the new TAT; when refused, the difference
//! is the `Retry-After`, and nothing is stored (a refused request costs nothing, so
//! hammering does not push the next allowed request further away). A party whose TAT
//! has passed is in the same state as one never seen, so forgetting it changes
//! nothing: that is what bounds memory.
//!
//! Concurrency: the parties are spread over [`SHARDS`] mutex-guarded maps by a keyed
//! hash, so concurrent requests of different parties rarely meet on a lock, and a
//! lock is held for one map lookup. No lock exists only for waiting.
//!
//! Memory: at most [`DEFAULT_CAPACITY`] parties of each kind (keys, networks). Key
//! names come from the configuration, so that bound is never reached by keys. When a
//! shard is full, it forgets the parties whose allowance is full again (no change in
//! behaviour) and, in a flood of networks, the eighth of the shard nearest to a full
//! allowance (each gets back at most what it had left to refill: a flood can buy
//! some networks a little more, never lock out another), in one pass, so a flood
//! costs each request O(1) amortized.
//!
//! Privacy: an anonymous reader is tracked by its IPv4 /24 or IPv6 /48 only (an
//! IPv4-mapped IPv6 address as its IPv4 address); the rest of the address is dropped
//! before anything is stored. Pass the `TruncatedIp`'s address where there is one.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Maps the parties are spread over. A power of two, well above the core count.
pub const SHARDS: usize = 64;
/// Parties of one kind tracked at most (about 40 bytes each).
pub const DEFAULT_CAPACITY: usize = 128 * 1024;

const HOUR: Duration = Duration::from_secs(3600);

/// An anonymous reader's network: the IP family and the kept prefix bytes (IPv4: 3,
/// IPv6: 6), never more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Network {
    V4([u8; 3]),
    V6([u8; 6]),
}

impl Network {
    fn of(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Network::V4([a, b, c])
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Network::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
            }
        }
    }
}

/// The GCRA parameters.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// Time one request adds to a party's TAT: 1 h / per_hour.
    interval: Duration,
    /// How far ahead of now a TAT may run: per_hour intervals (the burst).
    burst: Duration,
}

impl Gcra {
    /// One request of a party whose TAT is `tat`, at `now`.
    fn admit(self, tat: &mut Instant, now: Instant) -> Result<(), Duration> {
        let next = (*tat).max(now) + self.interval;
        let ahead = next.saturating_duration_since(now);
        if ahead > self.burst {
            return Err(ahead - self.burst);
        }
        *tat = next;
        Ok(())
    }
}

/// One kind of party: TATs in shards.
struct Table<K> {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<K, Instant>>]>,
    per_shard: usize,
}

impl<K: Hash + Eq> Table<K> {
    fn new(capacity: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// One request of the party `key` (looked up as `lookup`, which hashes as `key`
    /// does), at `now`. Only a party seen for the first time allocates its `K`.
    fn check<Q>(
        &self,
        gcra: Gcra,
        lookup: &Q,
        key: impl FnOnce() -> K,
        now: Instant,
    ) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let index = self.hasher.hash_one(lookup) as usize % SHARDS;
        let mut map = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = map.get_mut(lookup) {
            return gcra.admit(tat, now);
        }
        if map.len() >= self.per_shard {
            // Parties whose allowance is full again are as good as never seen; if
            // that is not an eighth of the shard (a flood), the eighth nearest to a
            // full allowance go too. One pass frees room for many new parties, so a
            // flood costs O(1) per request, amortized.
            let mut tats: Vec<Instant> = map.values().copied().collect();
            let eighth = tats.len() / 8;
            let (_, nth, _) = tats.select_nth_unstable(eighth);
            let threshold = (*nth).max(now);
            map.retain(|_, tat| *tat > threshold);
        }
        // Not tracked: its allowance is full.
        let mut tat = now;
        let result = gcra.admit(&mut tat, now);
        map.insert(key(), tat);
        result
    }

    /// Whether one request of `lookup` would be allowed at `now`, spending nothing.
    fn peek<Q>(&self, gcra: Gcra, lookup: &Q, now: Instant) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let index = self.hasher.hash_one(lookup) as usize % SHARDS;
        let map = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get(lookup) {
            Some(tat) => gcra.admit(&mut tat.clone(), now),
            None => Ok(()),
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// Per-party request rate limits (see the module doc). Shared by all requests behind
/// an `Arc`; every method takes `&self`.
pub struct RateLimiter {
    gcra: Gcra,
    keys: Table<Box<str>>,
    networks: Table<Network>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("gcra", &self.gcra)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `per_hour` requests an hour per party, all of them at once if it likes
    /// (`stats.rate_limit_per_hour`; 0 is taken as 1).
    pub fn new(per_hour: u32) -> Self {
        Self::with_capacity(per_hour, DEFAULT_CAPACITY)
    }

    /// [`RateLimiter::new`] tracking at most about `capacity` parties of each kind
    /// (rounded up to a multiple of [`SHARDS`]).
    pub fn with_capacity(per_hour: u32, capacity: usize) -> Self {
        Self::spread(per_hour, HOUR, capacity)
    }

    /// `count` requests per `period` per party, all at once if it likes (the login
    /// throttle: `count` failures a minute).
    pub fn per_period(count: u32, period: Duration) -> Self {
        Self::spread(count, period, DEFAULT_CAPACITY)
    }

    /// `count` per `period` (at least one), a burst of the whole `count`, about
    /// `capacity` parties of each kind.
    fn spread(count: u32, period: Duration, capacity: usize) -> Self {
        let count = count.max(1);
        let interval = period / count;
        Self {
            gcra: Gcra {
                interval,
                burst: interval * count,
            },
            keys: Table::new(capacity),
            networks: Table::new(capacity),
        }
    }

    /// Whether [`RateLimiter::check`] of `key` at `now` would pass, spending nothing.
    pub fn peek(&self, key: &str, now: Instant) -> Result<(), Duration> {
        self.keys.peek(self.gcra, key, now)
    }

    /// Whether [`RateLimiter::check_anonymous_at`] would pass, spending nothing.
    pub fn peek_anonymous_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        self.networks.peek(self.gcra, &Network::of(ip), now)
    }

    /// One request made with the Stats API key named `key` at `now`: `Ok`, or how
    /// long until one would be allowed (for `Retry-After`).
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        self.keys.check(self.gcra, key, || Box::from(key), now)
    }

    /// One request of an anonymous reader (a public site, no key) from `ip`, now.
    /// Readers in one IPv4 /24 or IPv6 /48 share one allowance.
    pub fn check_anonymous(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_anonymous_at(ip, Instant::now())
    }

    /// [`RateLimiter::check_anonymous`] at `now`.
    pub fn check_anonymous_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let network = Network::of(ip);
        self.networks.check(self.gcra, &network, || network, now)
    }

    /// Parties tracked now (keys, networks): at most about the capacity each.
    pub fn tracked(&self) -> (usize, usize) {
        (self.keys.len(), self.networks.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// How many of `n` requests at `at` were allowed.
    fn allowed(limiter: &RateLimiter, key: &str, n: usize, at: Instant) -> usize {
        (0..n).filter(|_| limiter.check(key, at).is_ok()).count()
    }

    #[test]
    fn a_full_allowance_can_be_spent_at_once_then_refills_one_interval_at_a_time() {
        let limiter = RateLimiter::new(600);
        let t0 = Instant::now();
        // 600 an hour: one every 3600 s / 600 = 6 s.
        assert_eq!(allowed(&limiter, "k", 1000, t0), 600);
        assert_eq!(limiter.check("k", t0), Err(secs(6)));
        assert_eq!(limiter.check("k", t0 + secs(1)), Err(secs(5)));
        // Refill: one per 6 s, never more than the time allows.
        assert_eq!(allowed(&limiter, "k", 5, t0 + secs(6)), 1);
        assert_eq!(allowed(&limiter, "k", 5, t0 + secs(11)), 0);
        assert_eq!(allowed(&limiter, "k", 50, t0 + secs(66)), 10);
        // After an hour of rest the whole burst is back, and not more.
        assert_eq!(allowed(&limiter, "k", 1000, t0 + secs(66 + 3600)), 600);
    }

    #[test]
    fn retry_after_is_exactly_when_the_next_request_passes() {
        let limiter = RateLimiter::new(7);
        let t0 = Instant::now();
        let interval = Duration::from_nanos(3_600_000_000_000 / 7);
        assert_eq!(allowed(&limiter, "k", 7, t0), 7);
        let later = t0 + secs(100);
        let wait = limiter.check("k", later).unwrap_err();
        assert_eq!(wait, interval - secs(100));
        // Refused requests cost nothing: hammering does not move the answer.
        for _ in 0..100 {
            assert_eq!(limiter.check("k", later), Err(wait));
        }
        let just_before = later + wait - Duration::from_nanos(1);
        assert_eq!(
            limiter.check("k", just_before),
            Err(Duration::from_nanos(1))
        );
        assert_eq!(limiter.check("k", later + wait), Ok(()));
        assert_eq!(limiter.check("k", later + wait), Err(interval));
    }

    #[test]
    fn a_peek_spends_nothing_and_agrees_with_the_check() {
        let limiter = RateLimiter::per_period(5, Duration::from_secs(60));
        let t0 = Instant::now();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..20 {
            assert_eq!(limiter.peek("u", t0), Ok(()));
            assert_eq!(limiter.peek_anonymous_at(ip, t0), Ok(()));
        }
        assert_eq!(allowed(&limiter, "u", 5, t0), 5);
        // 5 a minute: one every 12 s.
        assert_eq!(limiter.peek("u", t0), Err(secs(12)));
        assert_eq!(limiter.check("u", t0), Err(secs(12)));
        assert_eq!(limiter.peek("u", t0 + secs(12)), Ok(()));
        assert_eq!(limiter.peek("v", t0), Ok(()));
        for _ in 0..5 {
            limiter.check_anonymous_at(ip, t0).unwrap();
        }
        assert_eq!(limiter.peek_anonymous_at(ip, t0 + secs(2)), Err(secs(10)));
    }

    #[test]
    fn keys_have_their_own_allowances() {
        let limiter = RateLimiter::new(3);
        let t0 = Instant::now();
        assert_eq!(allowed(&limiter, "a", 10, t0), 3);
        assert_eq!(allowed(&limiter, "b", 10, t0), 3);
        assert_eq!(allowed(&limiter, "a ", 10, t0), 3);
        // A key name that reads like an address is not that network.
        assert_eq!(allowed(&limiter, "192.0.2.0", 10, t0), 3);
        assert!(
            limiter
                .check_anonymous_at("192.0.2.1".parse().unwrap(), t0)
                .is_ok()
        );
        assert_eq!(limiter.tracked(), (4, 1));
    }

    #[test]
    fn anonymous_readers_share_their_network_s_allowance() {
        let limiter = RateLimiter::new(4);
        let t0 = Instant::now();
        let check = |ip: &str| limiter.check_anonymous_at(ip.parse().unwrap(), t0);
        let count = |ips: &[&str]| ips.iter().filter(|ip| check(ip).is_ok()).count();
        // One /24: four requests between its hosts, then none.
        assert_eq!(
            count(&[
                "198.51.100.1",
                "198.51.100.200",
                "198.51.100.1",
                "198.51.100.9"
            ]),
            4
        );
        assert!(check("198.51.100.77").is_err());
        // ... the same network written as IPv4-mapped IPv6.
        assert!(check("::ffff:198.51.100.5").is_err());
        // The next /24 is another network.
        assert_eq!(count(&["198.51.101.1"; 6]), 4);
        // IPv6: one /48 shares, the next /48 does not.
        assert_eq!(
            count(&[
                "2001:db8:1::1",
                "2001:db8:1:ffff::2",
                "2001:db8:1::3",
                "2001:db8:1:1::"
            ]),
            4
        );
        assert!(check("2001:db8:1:abcd::99").is_err());
        assert_eq!(count(&["2001:db8:2::1"; 6]), 4);
        // Key allowances are untouched.
        assert_eq!(allowed(&limiter, "k", 6, t0), 4);
        assert_eq!(limiter.tracked(), (1, 4));
    }

    #[test]
    fn memory_is_bounded_and_a_flood_locks_out_no_one() {
        let limiter = RateLimiter::with_capacity(2, SHARDS * 4);
        let t0 = Instant::now();
        let victim: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(limiter.check_anonymous_at(victim, t0).is_ok());
        assert!(limiter.check_anonymous_at(victim, t0).is_ok());
        assert!(limiter.check_anonymous_at(victim, t0).is_err());
        // A flood of 100,000 networks within one second.
        for i in 0..100_000u32 {
            let [_, a, b, c] = i.to_be_bytes();
            let ip = IpAddr::from([a + 20, b, c, 9]);
            let ip = if i % 2 == 0 {
                ip
            } else {
                IpAddr::from([0x2001, 0xdb8, i as u16, 0, 0, 0, 0, 1])
            };
            let at = t0 + Duration::from_micros(u64::from(i) * 10);
            // Every network's first requests pass: nobody is locked out.
            assert!(limiter.check_anonymous_at(ip, at).is_ok(), "{ip}");
        }
        let (_, networks) = limiter.tracked();
        assert!(networks <= SHARDS * 4, "{networks} networks tracked");
        // Whatever was forgotten, a party never gets more than a full allowance.
        let after = t0 + secs(2);
        let passed = (0..10)
            .filter(|_| limiter.check_anonymous_at(victim, after).is_ok())
            .count();
        assert!(passed <= 2, "{passed}");
        // A network never seen gets its first request through even now.
        assert!(
            limiter
                .check_anonymous_at("192.0.2.1".parse().unwrap(), after)
                .is_ok()
        );
    }

    #[test]
    fn forgetting_a_refilled_party_changes_nothing() {
        let limiter = RateLimiter::with_capacity(60, SHARDS);
        let t0 = Instant::now();
        assert_eq!(allowed(&limiter, "old", 60, t0), 60);
        // An hour later its allowance is full again; a crowd of new keys may push it
        // out, and it still has exactly 60.
        let later = t0 + secs(3600);
        for i in 0..(SHARDS * 8) {
            assert!(limiter.check(&format!("k{i}"), later).is_ok());
        }
        assert_eq!(allowed(&limiter, "old", 100, later), 60);
    }

    #[test]
    fn concurrent_requests_get_exactly_the_allowance() {
        let limiter = Arc::new(RateLimiter::new(5_000));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                std::thread::spawn(move || {
                    (0..4_000)
                        .filter(|i| {
                            limiter
                                .check(if i % 2 == 0 { "a" } else { "b" }, t0)
                                .is_ok()
                        })
                        .count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 2 * 5_000);
    }

    #[test]
    fn extreme_rates() {
        let t0 = Instant::now();
        let once = RateLimiter::new(1);
        assert_eq!(once.check("k", t0), Ok(()));
        assert_eq!(once.check("k", t0), Err(HOUR));
        let zero = RateLimiter::new(0);
        assert_eq!(allowed(&zero, "k", 3, t0), 1);
        let huge = RateLimiter::new(u32::MAX);
        assert_eq!(allowed(&huge, "k", 10_000, t0), 10_000);
    }
}
