//! Rate limiting for log lines of conditions that can repeat (a failing disk, a
//! directory that cannot be written): the first occurrence is logged, then at most one
//! line per interval, saying how many occurrences it stands for.

use std::time::{Duration, Instant};

/// Which occurrences of one repeating condition get a log line.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// At most one line per `every` (the first occurrence always gets one).
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Records an occurrence. `Some(n)` when this one should be logged, `n` being the
    /// occurrences since the last line that were not; `None` to stay quiet.
    pub fn hit(&mut self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    fn hit_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// The condition ended: the next occurrence is logged at once. Returns the
    /// occurrences not logged since the last line.
    pub fn reset(&mut self) -> u64 {
        self.last = None;
        std::mem::take(&mut self.suppressed)
    }

    /// Whether an occurrence was seen since the last [`reset`](Self::reset).
    pub fn active(&self) -> bool {
        self.last.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_one_per_interval_with_the_count() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert!(!t.active());
        assert_eq!(t.hit_at(start), Some(0));
        assert!(t.active());
        for s in 1..10 {
            assert_eq!(t.hit_at(start + Duration::from_secs(s)), None);
        }
        assert_eq!(t.hit_at(start + Duration::from_secs(10)), Some(9));
        assert_eq!(t.hit_at(start + Duration::from_secs(11)), None);
        assert_eq!(t.reset(), 1);
        assert!(!t.active());
        assert_eq!(t.hit_at(start + Duration::from_secs(12)), Some(0));
    }
}
