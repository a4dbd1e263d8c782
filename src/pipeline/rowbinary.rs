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
//!
//! [`decode_rows`] is the inverse, for the files hush keeps rows in outside ClickHouse
//! (dead letters), so an erasure can read and rewrite them.

use std::sync::Arc;

use crate::enrich::referrer::Channel;
use crate::enrich::row::EventRow;
use crate::enrich::ua;

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

/// Why bytes are not RowBinary `events` rows as [`encode_event`] writes them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end inside a row (`at`: offset of the row that is cut short).
    #[error("row at byte {at} is cut short")]
    Truncated { at: usize },
    /// A length or a LEB128 number that cannot be right (longer than the input, or
    /// over 64 bits).
    #[error("bad length in the row at byte {at}")]
    BadLength { at: usize },
    /// A string column that is not UTF-8.
    #[error("column {column} of the row at byte {at} is not UTF-8")]
    NotUtf8 { column: &'static str, at: usize },
    /// A `channel` or `device` hush never writes, or a nullable marker other than 0/1.
    #[error("column {column} of the row at byte {at} holds a value hush never writes")]
    UnknownValue { column: &'static str, at: usize },
}

/// Decodes every row of `bytes` (rows back to back, as in a batch or a dead-letter
/// file). All or nothing: the first row that does not decode fails the whole input.
pub fn decode_rows(bytes: &[u8]) -> Result<Vec<EventRow>, DecodeError> {
    let mut rows = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (row, len) = decode_row(&bytes[at..]).map_err(|e| e.shifted(at))?;
        rows.push(row);
        at += len;
    }
    Ok(rows)
}

/// Decodes the row at the start of `bytes`; returns it with its length in bytes.
pub fn decode_row(bytes: &[u8]) -> Result<(EventRow, usize), DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let row = EventRow {
        site: Arc::from(r.string("site")?),
        timestamp: u32::from_le_bytes(r.fixed()?),
        name: r.string("name")?.to_owned(),
        visitor_id: u64::from_le_bytes(r.fixed()?),
        session_id: u64::from_le_bytes(r.fixed()?),
        entry_page: Arc::from(r.string("entry_page")?),
        hostname: r.string("hostname")?.to_owned(),
        pathname: r.string("pathname")?.to_owned(),
        referrer_host: r.string("referrer_host")?.to_owned(),
        referrer_path: r.string("referrer_path")?.to_owned(),
        source: r.string("source")?.to_owned(),
        channel: r.known("channel", CHANNELS)?,
        utm_source: r.string("utm_source")?.to_owned(),
        utm_medium: r.string("utm_medium")?.to_owned(),
        utm_campaign: r.string("utm_campaign")?.to_owned(),
        utm_term: r.string("utm_term")?.to_owned(),
        utm_content: r.string("utm_content")?.to_owned(),
        browser: Arc::from(r.string("browser")?),
        browser_version: Arc::from(r.string("browser_version")?),
        os: Arc::from(r.string("os")?),
        os_version: Arc::from(r.string("os_version")?),
        device: r.known("device", DEVICES)?,
        country: r.fixed()?,
        region: r.string("region")?.to_owned(),
        city_geoname_id: u32::from_le_bytes(r.fixed()?),
        city: r.string("city")?.to_owned(),
        props: {
            let n = r.leb128()?;
            // Each entry takes at least two bytes: a bound before allocating.
            if n > (r.bytes.len() - r.pos) as u64 / 2 {
                return Err(DecodeError::BadLength { at: 0 });
            }
            let mut props = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let key = r.string("props")?.to_owned();
                props.push((key, r.string("props")?.to_owned()));
            }
            props
        },
        revenue_micros: match r.fixed::<1>()? {
            [0] => Some(i64::from_le_bytes(r.fixed()?)),
            [1] => None,
            _ => {
                return Err(DecodeError::UnknownValue {
                    column: "revenue_micros",
                    at: 0,
                });
            }
        },
        revenue_currency: r.string("revenue_currency")?.to_owned(),
        interactive: r.fixed::<1>()?[0],
        engagement_ms: u32::from_le_bytes(r.fixed()?),
        scroll_depth: r.fixed::<1>()?[0],
    };
    Ok((row, r.pos))
}

/// Every `channel` hush writes.
const CHANNELS: &[&str] = &[
    Channel::Direct.as_str(),
    Channel::Search.as_str(),
    Channel::Social.as_str(),
    Channel::Email.as_str(),
    Channel::Paid.as_str(),
    Channel::Referral.as_str(),
];
/// Every `device` hush writes.
const DEVICES: &[&str] = &[ua::DESKTOP, ua::MOBILE, ua::TABLET, ua::OTHER];

impl DecodeError {
    /// The error with its row offset moved by `by` (a row decoded at `by` in a larger input).
    fn shifted(self, by: usize) -> Self {
        match self {
            Self::Truncated { at } => Self::Truncated { at: at + by },
            Self::BadLength { at } => Self::BadLength { at: at + by },
            Self::NotUtf8 { column, at } => Self::NotUtf8 {
                column,
                at: at + by,
            },
            Self::UnknownValue { column, at } => Self::UnknownValue {
                column,
                at: at + by,
            },
        }
    }
}

/// A cursor over one row; errors say `at: 0` (the row's start), shifted by the caller.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::BadLength { at: 0 })?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated { at: 0 })?;
        self.pos = end;
        Ok(slice)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn leb128(&mut self) -> Result<u64, DecodeError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let [byte] = self.fixed::<1>()?;
            let group = u64::from(byte & 0x7F);
            if shift == 63 && group > 1 {
                return Err(DecodeError::BadLength { at: 0 });
            }
            n |= group << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(DecodeError::BadLength { at: 0 })
    }

    fn string(&mut self, column: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.leb128()?;
        if len > (self.bytes.len() - self.pos) as u64 {
            // Longer than what is left: a broken length, or a row cut short.
            return Err(DecodeError::Truncated { at: 0 });
        }
        let bytes = self.take(len as usize)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8 { column, at: 0 })
    }

    fn known(
        &mut self,
        column: &'static str,
        values: &[&'static str],
    ) -> Result<&'static str, DecodeError> {
        let s = self.string(column)?;
        values
            .iter()
            .find(|v| **v == s)
            .copied()
            .ok_or(DecodeError::UnknownValue { column, at: 0 })
    }
}

#[inline]
fn str_len(n: usize) -> usize {
    leb128_len(n as u64) + n
}

#[inline]
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
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

    /// A row with every column set away from its default, multi-byte lengths and a
    /// negative revenue included.
    fn full_row() -> EventRow {
        EventRow {
            site: Arc::from("shop.example"),
            timestamp: 0xFEDC_BA98,
            name: "Signup ✓".into(),
            visitor_id: u64::MAX - 7,
            session_id: 0x0102_0304_0506_0708,
            entry_page: Arc::from("/entrée"),
            hostname: "www.shop.example".into(),
            pathname: format!("/{}", "p".repeat(300)),
            referrer_host: "news.example".into(),
            referrer_path: "/item".into(),
            source: "Newsletter".into(),
            channel: "email",
            utm_source: "nl".into(),
            utm_medium: "email".into(),
            utm_campaign: "spring".into(),
            utm_term: "shoes".into(),
            utm_content: "hero".into(),
            browser: Arc::from("Safari"),
            browser_version: Arc::from("17.4"),
            os: Arc::from("macOS"),
            os_version: Arc::from("14"),
            device: "tablet",
            country: *b"JP",
            region: "13".into(),
            city_geoname_id: u32::MAX,
            city: "Tōkyō".into(),
            props: vec![
                ("plan".into(), "pro".into()),
                ("uid".into(), "h-123".into()),
                (String::new(), "v".repeat(200)),
            ],
            revenue_micros: Some(i64::MIN + 1),
            revenue_currency: "JPY".into(),
            interactive: 0,
            engagement_ms: 123_456,
            scroll_depth: 87,
        }
    }

    #[test]
    fn decode_is_the_inverse_of_encode_for_every_column() {
        let mut rows = vec![full_row(), small_row(), EventRow::default()];
        let mut none = full_row();
        none.revenue_micros = None;
        none.props.clear();
        rows.push(none);
        for (i, channel) in CHANNELS.iter().enumerate() {
            rows.push(EventRow {
                channel,
                device: DEVICES[i % DEVICES.len()],
                ..small_row()
            });
        }
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for row in &rows {
            encode_event(row, &mut bytes);
            ends.push(bytes.len());
        }
        assert_eq!(decode_rows(&bytes).unwrap(), rows);
        // One at a time: each row's length is where the encoder stopped.
        let mut at = 0;
        for (row, end) in rows.iter().zip(&ends) {
            let (decoded, len) = decode_row(&bytes[at..]).unwrap();
            assert_eq!(&decoded, row);
            assert_eq!(at + len, *end);
            at = *end;
        }
        assert_eq!(decode_rows(&[]).unwrap(), Vec::<EventRow>::new());
    }

    #[test]
    fn decode_refuses_what_the_encoder_never_writes() {
        let mut one = Vec::new();
        encode_event(&full_row(), &mut one);
        // Cut short anywhere: never a row, never a panic.
        for cut in 1..one.len() {
            assert!(
                matches!(
                    decode_rows(&one[..cut]),
                    Err(DecodeError::Truncated { at: 0 } | DecodeError::BadLength { at: 0 })
                ),
                "cut at {cut}"
            );
        }
        // A second row cut short is reported at its own offset.
        let mut two = one.clone();
        two.extend_from_slice(&one[..10]);
        assert_eq!(
            decode_rows(&two),
            Err(DecodeError::Truncated { at: one.len() })
        );
        // The dead-letter test row: a 4 GiB site length.
        assert!(decode_rows(b"\xff\xff\xff\xff\x0fbad").is_err());
        // A LEB128 number over 64 bits.
        assert_eq!(
            decode_rows(&[0xFF; 11]),
            Err(DecodeError::BadLength { at: 0 })
        );
        // A channel hush never writes.
        let mut bad = Vec::new();
        encode_event(
            &EventRow {
                channel: "weird",
                ..small_row()
            },
            &mut bad,
        );
        assert_eq!(
            decode_rows(&bad),
            Err(DecodeError::UnknownValue {
                column: "channel",
                at: 0
            })
        );
        // A site that is not UTF-8.
        let mut latin1 = one.clone();
        let at = latin1.iter().position(|b| *b == b's').unwrap();
        latin1[at] = 0xE9;
        assert_eq!(
            decode_rows(&latin1),
            Err(DecodeError::NotUtf8 {
                column: "site",
                at: 0
            })
        );
        // A nullable marker other than 0 or 1.
        let mut row = small_row();
        row.revenue_micros = None;
        let mut marker = Vec::new();
        encode_event(&row, &mut marker);
        // After the marker: "\x03EUR", interactive, engagement_ms, scroll_depth.
        let null_at = marker.len() - (1 + 4 + 1 + 4 + 1);
        assert_eq!(marker[null_at], 1);
        marker[null_at] = 2;
        assert_eq!(
            decode_rows(&marker),
            Err(DecodeError::UnknownValue {
                column: "revenue_micros",
                at: 0
            })
        );
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
