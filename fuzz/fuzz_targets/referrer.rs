//! Referrer classification (`hush::enrich::referrer::classify`); input lines: referrer,
//! page URL, utm_source, utm_medium, one more same-site host.
//! The invariants live in `fuzz/checks.rs`, shared with `tests/fuzz_checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Each target uses one of the shared checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::referrer(data);
});
