//! Page URLs (`hush::enrich::page_url::parse`) against the url crate; first byte: mode.
//! The invariants live in `fuzz/checks.rs`, shared with `tests/fuzz_checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Each target uses one of the shared checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::page_url(data);
});
