//! `POST /api/event` bodies: any bytes must parse or be refused, never panic, and an
//! accepted event must satisfy the limits it was parsed with.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|body: &[u8]| {
    for limits in common::limit_sets() {
        match hush::hit::parse_event(body, &limits) {
            Ok(ev) => common::check_event(&ev, &limits),
            // The message goes into a 400 body: it must render.
            Err(err) => drop(err.to_string()),
        }
    }
});
