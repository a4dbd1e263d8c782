//! ClickHouse RowBinary encoding of [`EventRow`], by hand.
//!
//! Each accepted hit is encoded exactly once, on the request path; the bytes are the
//! spool record and later, unchanged, the body of `INSERT INTO events FORMAT
//! RowBinary`. Encoding by hand instead of through the `clickhouse` crate's serde
//! serializer lets the handler append straight into a reused buffer with no
//! intermediate `Insert` and no per-row allocation, and makes the on-disk bytes
//! independent of the client library version.
//!
//! RowBinary is positional: fields are written in `EventRow` order, which is the
//! `events` column order. `tests/rowbinary.rs` proves the output identical to what the
//! `clickhouse` crate sends for the same rows, against a real server.
//!
//! Type encodings used here:
//! - `String`, `LowCardinality(String)`: unsigned LEB128 byte length, then the bytes;
//! - `UInt8/32/64`, `Int64`, `DateTime`: little-endian fixed width (`DateTime` is a
//!   `UInt32` of Unix seconds);
//! - `FixedString(2)`: the two bytes;
//! - `Nullable(T)`: `0x00` then `T`, or `0x01` alone for NULL;
//! - `Map(String, String)`: LEB128 entry count, then key, value, key, value, ...

use crate::enrich::row::EventRow;

/// Appends the RowBinary encoding of `row` to `out`. Never allocates except to grow
/// `out`. It does not reserve: the request path encodes into a reused buffer that has
/// room already, and measuring the row first costs as much as a third of encoding it;
/// callers building a fresh buffer reserve [`encoded_len`] themselves.
pub fn encode_event(row: &EventRow, out: &mut Vec<u8>) {
    put_str(out, &row.site);
    out.extend_from_slice(&row.timestamp.to_le_bytes());
    put_str(out, &row.name);
    out.extend_from_slice(&row.visitor_id.to_le_bytes());
    out.extend_from_slice(&row.session_id.to_le_bytes());
    put_str(out, &row.entry_page);
    put_str(out, &row.hostname);
    put_str(out, &row.pathname);
    put_str(out, &row.referrer_host);
    put_str(out, &row.referrer_path);
    put_str(out, &row.source);
    put_str(out, row.channel);
    put_str(out, &row.utm_source);
    put_str(out, &row.utm_medium);
    put_str(out, &row.utm_campaign);
    put_str(out, &row.utm_term);
    put_str(out, &row.utm_content);
    put_str(out, &row.browser);
    put_str(out, &row.browser_version);
    put_str(out, &row.os);
    put_str(out, &row.os_version);
    put_str(out, row.device);
    out.extend_from_slice(&row.country);
    put_str(out, &row.region);
    out.extend_from_slice(&row.city_geoname_id.to_le_bytes());
    put_str(out, &row.city);
    put_leb128(out, row.props.len() as u64);
    for (key, value) in &row.props {
        put_str(out, key);
        put_str(out, value);
    }
    match row.revenue_micros {
        Some(micros) => {
            out.push(0);
            out.extend_from_slice(&micros.to_le_bytes());
        }
        None => out.push(1),
    }
    put_str(out, &row.revenue_currency);
    out.push(row.interactive);
    out.extend_from_slice(&row.engagement_ms.to_le_bytes());
    out.push(row.scroll_depth);
}

/// Exact number of bytes [`encode_event`] appends for `row`.
pub fn encoded_len(row: &EventRow) -> usize {
    let strings = [
        row.site.len(),
        row.name.len(),
        row.entry_page.len(),
        row.hostname.len(),
        row.pathname.len(),
        row.referrer_host.len(),
        row.referrer_path.len(),
        row.source.len(),
        row.channel.len(),
        row.utm_source.len(),
        row.utm_medium.len(),
        row.utm_campaign.len(),
        row.utm_term.len(),
        row.utm_content.len(),
        row.browser.len(),
        row.browser_version.len(),
        row.os.len(),
        row.os_version.len(),
        row.device.len(),
        row.region.len(),
        row.city.len(),
        row.revenue_currency.len(),
    ];
    let strings: usize = strings.iter().map(|&n| str_len(n)).sum();
    let props: usize = row
        .props
        .iter()
        .map(|(k, v)| str_len(k.len()) + str_len(v.len()))
        .sum();
    let revenue = if row.revenue_micros.is_some() { 9 } else { 1 };
    // timestamp, visitor_id, session_id, country, city_geoname_id, interactive,
    // engagement_ms, scroll_depth
    let fixed = 4 + 8 + 8 + 2 + 4 + 1 + 4 + 1;
    strings + leb128_len(row.props.len() as u64) + props + revenue + fixed
}

#[inline]
fn str_len(n: usize) -> usize {
    leb128_len(n as u64) + n
}

#[inline]
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_leb128(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Unsigned LEB128: 7 bits per byte, low group first, high bit set on all but the last.
#[inline]
fn put_leb128(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[inline]
fn leb128_len(n: u64) -> usize {
    // One byte per started group of 7 significant bits; zero still takes one byte.
    let bits = 64 - (n | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn small_row() -> EventRow {
        EventRow {
            site: Arc::from("a.io"),
            timestamp: 0x0102_0304,
            name: "pageview".into(),
            visitor_id: 0x1122_3344_5566_7788,
            session_id: 1,
            entry_page: "/".into(),
            hostname: "a.io".into(),
            pathname: "/x".into(),
            browser: Arc::from("Firefox"),
            browser_version: Arc::from("1.2"),
            device: "desktop",
            country: *b"DE",
            region: "BE".into(),
            city_geoname_id: 2_950_159,
            city: "Berlin".into(),
            props: vec![("k".into(), "vé".into())],
            revenue_micros: Some(-2),
            revenue_currency: "EUR".into(),
            engagement_ms: 300,
            ..EventRow::default()
        }
    }

    #[test]
    fn small_row_matches_hand_computed_bytes() {
        let mut expected: Vec<u8> = Vec::new();
        expected.extend_from_slice(b"\x04a.io");
        expected.extend_from_slice(&[0x04, 0x03, 0x02, 0x01]);
        expected.extend_from_slice(b"\x08pageview");
        expected.extend_from_slice(&[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        expected.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(b"\x01/");
        expected.extend_from_slice(b"\x04a.io");
        expected.extend_from_slice(b"\x02/x");
        expected.extend_from_slice(&[0, 0, 0]); // referrer_host, referrer_path, source
        expected.extend_from_slice(b"\x06direct");
        expected.extend_from_slice(&[0, 0, 0, 0, 0]); // utm_*
        expected.extend_from_slice(b"\x07Firefox");
        expected.extend_from_slice(b"\x031.2");
        expected.extend_from_slice(&[0, 0]); // os, os_version
        expected.extend_from_slice(b"\x07desktop");
        expected.extend_from_slice(b"DE");
        expected.extend_from_slice(b"\x02BE");
        // 2_950_159 = 0x002D_040F
        expected.extend_from_slice(&[0x0F, 0x04, 0x2D, 0x00]);
        expected.extend_from_slice(b"\x06Berlin");
        expected.extend_from_slice(&[0x01, 0x01, b'k', 0x03, b'v', 0xC3, 0xA9]);
        expected.push(0x00);
        expected.extend_from_slice(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        expected.extend_from_slice(b"\x03EUR");
        expected.push(1);
        expected.extend_from_slice(&[0x2C, 0x01, 0, 0]); // 300
        expected.push(255);

        let mut out = Vec::new();
        encode_event(&small_row(), &mut out);
        assert_eq!(out, expected);
        assert_eq!(encoded_len(&small_row()), expected.len());
    }

    #[test]
    fn null_revenue_is_one_byte() {
        let mut row = small_row();
        row.revenue_micros = None;
        let mut with_null = Vec::new();
        encode_event(&row, &mut with_null);
        let mut with_value = Vec::new();
        encode_event(&small_row(), &mut with_value);
        assert_eq!(with_value.len() - with_null.len(), 8);
        // The byte after the props map (1 entry: k -> vé) is the NULL marker.
        let props_at = with_null
            .windows(7)
            .position(|w| w == [0x01, 0x01, b'k', 0x03, b'v', 0xC3, 0xA9])
            .expect("props encoded");
        assert_eq!(with_null[props_at + 7], 0x01);
        assert_eq!(&with_null[props_at + 8..props_at + 12], b"\x03EUR");
    }

    #[test]
    fn appends_without_touching_existing_bytes() {
        let mut out = b"prefix".to_vec();
        encode_event(&small_row(), &mut out);
        let mut alone = Vec::new();
        encode_event(&small_row(), &mut alone);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(&out[6..], &alone[..]);
    }

    #[test]
    fn leb128_boundaries() {
        for (n, bytes) in [
            (0u64, vec![0x00]),
            (1, vec![0x01]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xAC, 0x02]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (u64::from(u32::MAX), vec![0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
        ] {
            let mut out = Vec::new();
            put_leb128(&mut out, n);
            assert_eq!(out, bytes, "{n}");
            assert_eq!(leb128_len(n), bytes.len(), "{n}");
        }
        assert_eq!(leb128_len(u64::MAX), 10);
    }

    #[test]
    fn long_strings_get_multi_byte_lengths() {
        let mut row = small_row();
        row.pathname = "p".repeat(20_000);
        let mut out = Vec::new();
        encode_event(&row, &mut out);
        assert_eq!(out.len(), encoded_len(&row));
        // 20_000 = 0b1_0011100_0100000 -> 0xA0 0x9C 0x01
        let at = out
            .windows(4)
            .position(|w| w == [0xA0, 0x9C, 0x01, b'p'])
            .expect("3-byte length before the path");
        assert_eq!(&out[at - 5..at], b"\x04a.io");
    }
}
