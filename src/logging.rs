//! Process-wide logging: `tracing` events to stderr, as text or JSON lines.
//!
//! `RUST_LOG` wins over `log.level` so an operator can raise verbosity for one run
//! without editing the deployed configuration. Nothing in hush passes a client address
//! to a log macro; the privacy end-to-end test scans debug output to keep it that way.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter `{directive}`: {source}")]
    Filter {
        directive: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Builds the filter: `RUST_LOG` when set and non-empty, else `log.level`.
pub fn filter(config: &LogConfig) -> Result<EnvFilter, LoggingError> {
    filter_from(std::env::var("RUST_LOG").ok().as_deref(), config)
}

/// [`filter`] with the value of `RUST_LOG` passed in, so tests do not depend on the
/// environment they run in.
fn filter_from(rust_log: Option<&str>, config: &LogConfig) -> Result<EnvFilter, LoggingError> {
    let directive = match rust_log {
        Some(v) if !v.trim().is_empty() => v.to_owned(),
        _ => config.level.clone(),
    };
    EnvFilter::try_new(&directive).map_err(|source| LoggingError::Filter { directive, source })
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(config: &LogConfig) -> Result<(), LoggingError> {
    let filter = filter(config)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    result.map_err(|_| LoggingError::AlreadyInstalled)
}

/// Lets one log line through per interval and counts the ones held back, for
/// anything that can repeat per request or per retry (a flood of refusals, a failing
/// disk, a directory that cannot be written: a fault must not become a flood of log
/// lines). The first occurrence is always let through; the next line says how many
/// were held back meanwhile. Lock-free; one per kind of line, usually in a `static` or
/// beside the counter the line goes with. The one rate limit of hush: every repeating
/// log line goes through it.
#[derive(Debug)]
pub struct RateLimit {
    every_ms: u64,
    /// Milliseconds since [`process_start`] before which lines are held back.
    next_ms: AtomicU64,
    held: AtomicU64,
}

/// The monotonic origin of every [`RateLimit`].
fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

impl RateLimit {
    pub const fn new(every: Duration) -> Self {
        Self {
            every_ms: every.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(held)` when a line may be logged now (`held`: lines held back since the
    /// last one, to say in it); `None` when this one is held back (and counted).
    pub fn check(&self) -> Option<u64> {
        let now = u64::try_from(process_start().elapsed().as_millis()).unwrap_or(u64::MAX);
        self.check_at(now)
    }

    /// The condition ended: the next occurrence is let through at once. Returns the
    /// occurrences held back since the last line let through.
    pub fn reset(&self) -> u64 {
        self.next_ms.store(0, Ordering::Relaxed);
        self.held.swap(0, Ordering::Relaxed)
    }

    /// Whether an occurrence was let through since the last [`reset`](Self::reset)
    /// (or ever, without one).
    pub fn active(&self) -> bool {
        self.next_ms.load(Ordering::Relaxed) != 0
    }

    fn check_at(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(level: &str) -> LogConfig {
        LogConfig {
            level: level.into(),
            ..LogConfig::default()
        }
    }

    #[test]
    fn bad_level_is_reported_with_the_directive() {
        for unset in [None, Some(""), Some("  ")] {
            let err = filter_from(unset, &level("hush=loud"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("hush=loud"), "{unset:?}: {err}");
        }
        assert!(filter_from(None, &LogConfig::default()).is_ok());
    }

    #[test]
    fn rust_log_wins_over_the_configured_level() {
        // A bad RUST_LOG is reported as such, whatever the file says ...
        let err = filter_from(Some("hush=shout"), &LogConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("hush=shout"), "{err}");
        // ... and a good one replaces a bad configured level.
        let filter = filter_from(Some("warn,hush=debug"), &level("hush=loud")).unwrap();
        assert_eq!(filter.to_string(), "hush=debug,warn");
    }

    #[test]
    fn a_rate_limit_lets_one_line_through_per_interval_and_counts_the_rest() {
        let limit = RateLimit::new(Duration::from_secs(10));
        assert_eq!(limit.check_at(5), Some(0));
        assert_eq!(limit.check_at(6), None);
        assert_eq!(limit.check_at(10_004), None);
        // The interval counts from the line let through, and that line learns how many
        // were held back meanwhile.
        assert_eq!(limit.check_at(10_005), Some(2));
        assert_eq!(limit.check_at(20_004), None);
        assert_eq!(limit.check_at(99_000), Some(1));
        assert_eq!(limit.check_at(99_001), None);
    }

    #[test]
    fn a_reset_lets_the_next_line_through_and_says_what_was_held_back() {
        let limit = RateLimit::new(Duration::from_secs(10));
        assert!(!limit.active());
        assert_eq!(limit.check_at(1_000), Some(0));
        assert!(limit.active());
        for t in 1_001..1_010 {
            assert_eq!(limit.check_at(t), None);
        }
        assert_eq!(limit.reset(), 9);
        assert!(!limit.active());
        // Well within the interval of the last line, yet let through: a new episode.
        assert_eq!(limit.check_at(1_011), Some(0));
        assert_eq!(limit.check_at(1_012), None);
        assert_eq!(limit.reset(), 1);
    }
}
