//! What the fuzz targets check, as plain functions over one input.
//!
//! Two drivers share this file so the invariants are written once:
//! - the libFuzzer targets in `fuzz/fuzz_targets/` (`scripts/fuzz`, long runs with
//!   coverage feedback; their instrumented build is too slow for every CI run), and
//! - `tests/fuzz_checks.rs` in the main crate, which runs every check over the
//!   committed seeds in `fuzz/seeds/<target>/` and a bounded, deterministic set of
//!   mutations of them on every `cargo test`.
//!
//! Each function panics when a parser breaks a promise it makes to its callers and
//! returns whether the input was accepted (reached the interesting, "parsed" side),
//! so the mutation test can tell that it exercises both sides of every parser.

use hush::collect::hit::{BatchError, IncomingEvent, MAX_DOMAIN_BYTES, MAX_DOMAINS};
use hush::config::LimitsConfig;
use hush::enrich::page_url::{self, MAX_URL_BYTES, MAX_UTM_CHARS, UrlError, Utm};
use hush::enrich::referrer;
use hush::pipeline::spool::{DecodedSegment, decode_segment};
use url::Url;

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

/// `POST /api/event` bodies: any bytes must parse or be refused, never panic, and an
/// accepted event must satisfy the limits it was parsed with. Accepted: parsed under
/// at least one limit set.
pub fn parse_event(body: &[u8]) -> bool {
    let mut accepted = false;
    for limits in limit_sets() {
        match hush::collect::hit::parse_event(body, &limits) {
            Ok(ev) => {
                check_event(&ev, &limits);
                accepted = true;
            }
            // The message goes into a 400 body: it must render.
            Err(err) => drop(err.to_string()),
        }
    }
    accepted
}

/// `POST /api/events` bodies: all-or-nothing batches within the configured count.
/// Accepted: parsed under at least one limit set.
pub fn parse_batch(body: &[u8]) -> bool {
    let mut accepted = false;
    for limits in limit_sets() {
        match hush::collect::hit::parse_batch(body, &limits) {
            Ok(events) => {
                assert!(!events.is_empty(), "empty batch accepted");
                assert!(events.len() <= limits.max_batch_events);
                for ev in &events {
                    check_event(ev, &limits);
                }
                accepted = true;
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
    accepted
}

/// Page URLs: the hand-written fast path must agree with a full WHATWG parse (the url
/// crate), and nothing from the query or fragment may leak into the stored path
/// except the fragment's route in hash mode (never its query part).
///
/// Input: one mode byte (bit 0: hash mode), then the URL. Accepted: parsed.
pub fn page_url(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let Ok(input) = std::str::from_utf8(rest) else {
        return false;
    };
    let hash_mode = mode & 1 == 1;
    let got = page_url::parse(input, hash_mode);
    let trimmed = input.trim_ascii();
    if trimmed.is_empty() {
        assert_eq!(got, Err(UrlError::Empty));
        return false;
    }
    if trimmed.len() > MAX_URL_BYTES {
        assert_eq!(got, Err(UrlError::TooLong));
        return false;
    }
    // The reference: what the slow path alone would produce.
    let reference = Url::parse(trimmed).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str()
                .is_some_and(|h| !h.strip_suffix('.').unwrap_or(h).is_empty())
    });
    match (got, reference) {
        (Ok(page), Some(url)) => {
            let host = url.host_str().unwrap_or_default();
            assert_eq!(
                page.hostname,
                host.strip_suffix('.').unwrap_or(host),
                "{input:?}"
            );
            let path = if url.path().is_empty() {
                "/"
            } else {
                url.path()
            };
            // In hash mode, the fragment before its first `?`, unless that is empty
            // or a parameter list (holds `=` or `&`).
            let mut expected = path.to_owned();
            let route = url
                .fragment()
                .filter(|_| hash_mode)
                .map(|f| f.split('?').next().unwrap_or_default())
                .filter(|r| !r.is_empty() && !r.contains('=') && !r.contains('&'));
            if let Some(route) = route {
                expected.push('#');
                expected.push_str(route);
            }
            assert_eq!(page.pathname, expected, "{input:?}");
            if url.query().is_none() {
                assert!(page.utm.is_empty(), "UTM without a query: {input:?}");
            }
            for v in [
                &page.utm.source,
                &page.utm.medium,
                &page.utm.campaign,
                &page.utm.term,
                &page.utm.content,
            ] {
                assert!(v.chars().count() <= MAX_UTM_CHARS, "{v:?}");
            }
            true
        }
        (Err(_), None) => false,
        (got, reference) => panic!("{input:?}: parse gave {got:?}, url crate {reference:?}"),
    }
}

const CHANNELS: &[&str] = &["direct", "search", "social", "email", "paid", "referral"];

/// Referrer classification: arbitrary referrers, page URLs and UTM values never
/// panic and always yield a consistent host / path / source / channel.
///
/// Input lines: referrer, page URL, utm_source, utm_medium, one more same-site host.
/// Accepted: classified as anything but direct.
pub fn referrer(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let referrer = lines.next();
    let page = page_url::parse(lines.next().unwrap_or(""), false).ok();
    let mut utm = page.as_ref().map(|p| p.utm.clone()).unwrap_or_default();
    if let Some(source) = lines.next() {
        utm.source = source.to_owned();
    }
    if let Some(medium) = lines.next() {
        utm.medium = medium.to_owned();
    }
    let mut same_site: Vec<&str> = Vec::new();
    if let Some(p) = &page {
        same_site.push(&p.hostname);
    }
    if let Some(extra) = lines.next() {
        same_site.push(extra);
    }
    let info = referrer::classify(referrer, &same_site, &utm);
    assert!(CHANNELS.contains(&info.channel), "{info:?}");
    if info.host.is_empty() {
        assert!(info.path.is_empty(), "path without host: {info:?}");
    }
    assert!(
        info.path.len() <= 1_000,
        "path not capped: {}",
        info.path.len()
    );
    if info.channel == "direct" {
        assert!(info.source.is_empty() && info.host.is_empty(), "{info:?}");
    }
    // No referrer and no campaign: always direct.
    if referrer.is_none_or(|r| r.trim().is_empty()) && utm == Utm::default() {
        assert_eq!(info.channel, "direct", "{info:?}");
    }
    info.channel != "direct"
}

const SPOOL_HEADER_LEN: u64 = 16;
const SPOOL_CONTINUES: u32 = 1 << 31;

fn spool_header(created_ms: u64) -> Vec<u8> {
    let mut h = b"HUSHSPL\x01".to_vec();
    h.extend_from_slice(&created_ms.to_le_bytes());
    h
}

fn check_spool_offsets(d: &DecodedSegment, start: u64, len: u64) {
    assert!(
        start <= d.end && d.end <= len,
        "end {} outside {start}..={len}",
        d.end
    );
    let mut at = start;
    for r in &d.corrupt {
        assert!(at <= r.start && r.start < r.end && r.end <= d.end, "{d:?}");
        at = r.end;
    }
    // Every kept record has at least a 9-byte frame (8-byte frame header, 1+ byte payload).
    assert!(d.records * 9 <= len - start, "{d:?}");
}

/// The spool's record decoder (what recovery and `hush spool status` run over segment
/// files after a crash or media damage).
///
/// First input byte, bit 0:
/// - 0: the rest is a segment file as found on disk; with bit 1 set, an `.ack` file's
///   text comes first, up to a NUL byte. Any bytes must decode without panicking and
///   give consistent offsets.
/// - 1: the rest describes records (length byte with the "continues" flag in its top
///   bit, then that many payload bytes); they are framed as the format documents and
///   must decode to exactly the records of complete appends.
///
/// Accepted: a segment header was recognised and at least one record kept.
pub fn spool_decode(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    if mode & 1 == 0 {
        let (ack, segment) = if mode & 2 != 0 {
            match rest.iter().position(|&b| b == 0) {
                Some(nul) => (std::str::from_utf8(&rest[..nul]).ok(), &rest[nul + 1..]),
                None => return false,
            }
        } else {
            (None, rest)
        };
        let Some(d) = decode_segment(segment, ack) else {
            assert!(segment.len() < 16 || &segment[..8] != b"HUSHSPL\x01");
            return false;
        };
        let len = segment.len() as u64;
        // Decoding starts after the header, or later where an .ack file says.
        check_spool_offsets(&d, SPOOL_HEADER_LEN.min(len), len);
        return d.records > 0;
    }

    // Structured: frame records the way the format documents, then decode.
    let mut segment = spool_header(1_700_000_000_000);
    let mut records = 0u64;
    let mut complete_records = 0u64;
    let mut complete_end = SPOOL_HEADER_LEN;
    let mut input = rest;
    while let Some((&word, tail)) = input.split_first() {
        let len = usize::from(word & 0x7f).max(1);
        let continues = word & 0x80 != 0;
        let take = len.min(tail.len());
        if take == 0 {
            break;
        }
        let payload = &tail[..take];
        input = &tail[take..];
        let word = (payload.len() as u32) | if continues { SPOOL_CONTINUES } else { 0 };
        let crc = crc32c::crc32c_append(crc32c::crc32c(&word.to_le_bytes()), payload);
        segment.extend_from_slice(&word.to_le_bytes());
        segment.extend_from_slice(&crc.to_le_bytes());
        segment.extend_from_slice(payload);
        records += 1;
        if !continues {
            complete_records = records;
            complete_end = segment.len() as u64;
        }
    }
    let d = decode_segment(&segment, None).expect("valid header");
    assert_eq!(d.created_ms, 1_700_000_000_000);
    assert!(d.corrupt.is_empty(), "clean frames reported corrupt: {d:?}");
    assert_eq!(d.records, complete_records, "{d:?}");
    assert_eq!(d.end, complete_end, "{d:?}");
    // Everything acknowledged: nothing left to replay.
    let ack = format!("hush-spool-ack 1\nacked {}\n", segment.len());
    let d = decode_segment(&segment, Some(&ack)).expect("valid header");
    assert_eq!((d.records, d.end), (0, segment.len() as u64), "{d:?}");
    complete_records > 0
}
