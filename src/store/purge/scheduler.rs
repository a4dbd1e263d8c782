//! The daily purge in `serve`: when it runs, and the task that runs it.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use super::{LogProgress, PurgeError, PurgeOptions, Purger, run_with_lease_until};
use crate::config::RetentionConfig;

/// Delay from `now` to the next `at_utc` (today's if still ahead, else tomorrow's).
pub fn next_run_delay(now: Timestamp, at_utc: (u8, u8)) -> Duration {
    let zdt = now.to_zoned_datetime(TimeZone::UTC);
    let today = zdt
        .date()
        .at(at_utc.0 as i8, at_utc.1 as i8, 0, 0)
        .to_zoned_datetime(TimeZone::UTC)
        .map(|z| z.timestamp());
    let Ok(today) = today else {
        return Duration::from_secs(24 * 3600);
    };
    let mut next = today;
    if next <= now {
        next = next.checked_add(Span::new().hours(24)).unwrap_or(next);
    }
    let secs = next.as_second() - now.as_second();
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Starts the daily purge in the background: at `retention.at_utc` plus a random delay
/// up to `retention.jitter_secs`, under the lease. Returns `None` when
/// `retention.schedule` is off. The task ends when `shutdown` fires (or its sender goes):
/// a purge in progress stops at its next safe point and releases the lease first, so
/// await the task rather than aborting it.
pub fn spawn_scheduler(
    purger: Purger,
    retention: RetentionConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !retention.schedule {
        return None;
    }
    let at = crate::config::parse_hh_mm(&retention.at_utc).unwrap_or((3, 30));
    Some(tokio::spawn(async move {
        loop {
            let jitter = if retention.jitter_secs == 0 {
                0
            } else {
                rand::random_range(0..=retention.jitter_secs)
            };
            let delay = next_run_delay(Timestamp::now(), at) + Duration::from_secs(jitter);
            tracing::info!(in_secs = delay.as_secs(), "next purge scheduled");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let opts = PurgeOptions {
                now: Timestamp::now(),
                dry_run: false,
                actor: "scheduler".into(),
            };
            match run_with_lease_until(&purger, &opts, &LogProgress, &shutdown).await {
                Ok(report) => tracing::info!(
                    run_id = %report.run_id,
                    rows_deleted = report.rows_deleted,
                    partitions_dropped = report.dropped_partitions.len(),
                    "scheduled purge finished"
                ),
                Err(PurgeError::Busy { owner }) => {
                    tracing::info!(%owner, "purge skipped: another instance holds the lease")
                }
                Err(PurgeError::Stopped) => {
                    tracing::info!("scheduled purge stopped for shutdown; the next run continues");
                    return;
                }
                Err(e) => tracing::error!(error = %e, "scheduled purge failed"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn next_run_today_or_tomorrow() {
        assert_eq!(
            next_run_delay(ts("2025-01-01T03:00:00Z"), (3, 30)),
            Duration::from_secs(1800)
        );
        assert_eq!(
            next_run_delay(ts("2025-01-01T03:30:00Z"), (3, 30)),
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(
            next_run_delay(ts("2025-01-01T23:00:00Z"), (0, 0)),
            Duration::from_secs(3600)
        );
    }
}
