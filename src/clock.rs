//! The wall clock as the rows store it: whole seconds since the Unix epoch, UTC.
//!
//! One home for the conversion, so every caller saturates the same way: a clock before
//! 1970 reads 0, and a clock past 2106 (the end of ClickHouse `DateTime`) reads
//! `u32::MAX`, never a wrapped value.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch of `time`, saturated to `u32`.
pub fn secs_of(time: SystemTime) -> u32 {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Now, in seconds since the Unix epoch (see [`secs_of`]).
pub fn now_secs() -> u32 {
    secs_of(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn seconds_saturate_at_both_ends() {
        assert_eq!(secs_of(UNIX_EPOCH), 0);
        assert_eq!(secs_of(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(secs_of(UNIX_EPOCH + Duration::from_millis(1_999)), 1);
        assert_eq!(
            secs_of(UNIX_EPOCH + Duration::from_secs(1_709_251_200)),
            1_709_251_200
        );
        assert_eq!(
            secs_of(UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) + 1)),
            u32::MAX
        );
    }
}
