//! Checks shared by the fuzz targets: what a successful parse promises callers.

use hush::config::LimitsConfig;
use hush::hit::{IncomingEvent, MAX_DOMAIN_BYTES, MAX_DOMAINS};

/// The configured defaults and a tight set, so both ordinary inputs and the limit
/// boundaries (depth, counts, lengths) are reached by short inputs.
pub fn limit_sets() -> [LimitsConfig; 2] {
    let tight = LimitsConfig {
        max_body_bytes: 512,
        max_batch_body_bytes: 2_048,
        max_batch_events: 3,
        max_url_chars: 48,
        max_referrer_chars: 32,
        max_event_name_chars: 8,
        max_props: 2,
        max_prop_key_bytes: 6,
        max_prop_value_bytes: 10,
        max_json_depth: 3,
    };
    [LimitsConfig::default(), tight]
}

/// Panics when a parsed event breaks a documented guarantee of `hit`.
pub fn check_event(ev: &IncomingEvent, limits: &LimitsConfig) {
    assert!(!ev.name.is_empty(), "empty name accepted");
    assert!(ev.name.chars().count() <= limits.max_event_name_chars);
    assert!(!ev.url.is_empty(), "empty url accepted");
    assert!(ev.url.chars().count() <= limits.max_url_chars);
    assert!(!ev.domains.is_empty() && ev.domains.len() <= MAX_DOMAINS);
    for d in &ev.domains {
        assert!(!d.is_empty() && d.len() <= MAX_DOMAIN_BYTES, "domain {d:?}");
        assert_eq!(d.trim(), d, "untrimmed domain {d:?}");
        assert_eq!(&d.to_lowercase(), d, "domain not lower-cased {d:?}");
    }
    if let Some(r) = &ev.referrer {
        assert!(!r.is_empty(), "empty referrer kept");
        assert!(r.chars().count() <= limits.max_referrer_chars);
    }
    assert!(ev.props.len() <= limits.max_props);
    for (i, (k, v)) in ev.props.iter().enumerate() {
        assert!(
            !k.is_empty() && k.len() <= limits.max_prop_key_bytes,
            "key {k:?}"
        );
        assert!(v.len() <= limits.max_prop_value_bytes, "value of {k:?}");
        assert!(
            ev.props[..i].iter().all(|(other, _)| other != k),
            "duplicate prop {k:?}"
        );
    }
    if let Some(rev) = &ev.revenue {
        assert!(rev.currency.iter().all(u8::is_ascii_uppercase), "{rev:?}");
        assert_eq!(rev.currency_str().len(), 3);
    }
    if let Some(sd) = ev.scroll_depth {
        assert!(sd <= 100, "scroll depth {sd}");
    }
}
