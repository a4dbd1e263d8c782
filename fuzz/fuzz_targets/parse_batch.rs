//! `POST /api/events` bodies: all-or-nothing batches within the configured count.
#![no_main]

use hush::hit::BatchError;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|body: &[u8]| {
    for limits in common::limit_sets() {
        match hush::hit::parse_batch(body, &limits) {
            Ok(events) => {
                assert!(!events.is_empty(), "empty batch accepted");
                assert!(events.len() <= limits.max_batch_events);
                for ev in &events {
                    common::check_event(ev, &limits);
                }
            }
            Err(err) => {
                if let BatchError::Items(items) = &err {
                    assert!(!items.is_empty(), "Items error without items");
                    // Indexes are positions in the batch, ascending.
                    assert!(items.windows(2).all(|w| w[0].0 < w[1].0), "{items:?}");
                    assert!(items.iter().all(|(i, _)| *i < limits.max_batch_events));
                }
                drop(err.to_string());
            }
        }
    }
});
