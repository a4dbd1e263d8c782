//! On-disk format of spool segments: a header, then framed records.
//!
//! ```text
//! segment = header record*
//! header  = "HUSHSPL\x01" (8 bytes) | created_unix_ms: u64 LE
//! record  = word: u32 LE | crc: u32 LE | payload (word & 0x7fff_ffff bytes)
//! word    = payload length | 0x8000_0000 when the next record belongs to the same append
//! crc     = CRC32C(word bytes ++ payload)
//! ```
//!
//! The "continues" bit makes an append (all records of one request) all-or-none across
//! a crash: a torn tail that ends inside an append is cut back to the append's start.
//! The CRC covers the length word too, so a damaged length or flag is detected like a
//! damaged payload, and a resynchronising scan cannot mistake garbage for a frame
//! without a matching checksum. Empty records are not allowed: the CRC of an all-zero
//! frame header over nothing is 0, so a zero-filled region (what some file systems
//! leave after a power loss) would otherwise parse as valid records.

use std::ops::Range;

pub(crate) const MAGIC: [u8; 8] = *b"HUSHSPL\x01";
pub(crate) const HEADER_LEN: u64 = 16;
pub(crate) const FRAME_OVERHEAD: usize = 8;
/// Largest payload a record may have. RowBinary rows are a few KiB at most; the bound
/// keeps a corrupt length from sending the recovery scan over gigabytes.
pub const MAX_RECORD_BYTES: usize = 16 << 20;
const CONTINUES: u32 = 1 << 31;

pub(crate) fn header(created_ms: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..].copy_from_slice(&created_ms.to_le_bytes());
    h
}

/// The creation time of a segment, or `None` when `bytes` is not a segment header.
pub(crate) fn parse_header(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < HEADER_LEN as usize || bytes[..8] != MAGIC {
        return None;
    }
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&bytes[8..16]);
    Some(u64::from_le_bytes(ms))
}

/// Appends one framed record. `payload` must be 1..=MAX_RECORD_BYTES long.
pub(crate) fn put_frame(out: &mut Vec<u8>, payload: &[u8], continues: bool) {
    debug_assert!(!payload.is_empty() && payload.len() <= MAX_RECORD_BYTES);
    let word = payload.len() as u32 | if continues { CONTINUES } else { 0 };
    let word = word.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&word), payload);
    out.extend_from_slice(&word);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A valid record with this payload length.
    Valid { len: usize, continues: bool },
    /// The buffer ends before the frame does (it may be valid once complete).
    Incomplete,
    /// Not a valid frame.
    Invalid,
}

impl Frame {
    pub(crate) fn total(len: usize) -> usize {
        FRAME_OVERHEAD + len
    }
}

/// The payload length a frame header claims (`buf` holds at least the header).
pub(crate) fn frame_len(buf: &[u8]) -> usize {
    (u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) & !CONTINUES) as usize
}

/// Parses the frame at the start of `buf`.
pub(crate) fn parse_frame(buf: &[u8]) -> Frame {
    if buf.len() < FRAME_OVERHEAD {
        return Frame::Incomplete;
    }
    let word = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = (word & !CONTINUES) as usize;
    if len == 0 || len > MAX_RECORD_BYTES {
        return Frame::Invalid;
    }
    if buf.len() < FRAME_OVERHEAD + len {
        return Frame::Incomplete;
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let payload = &buf[FRAME_OVERHEAD..FRAME_OVERHEAD + len];
    if crc32c::crc32c_append(crc32c::crc32c(&buf[..4]), payload) != crc {
        return Frame::Invalid;
    }
    Frame::Valid {
        len,
        continues: word & CONTINUES != 0,
    }
}

/// The first position at or after `from` where a valid frame starts that is confirmed
/// by what follows it: the end of `buf`, or another valid frame. The confirmation makes
/// a chance CRC match inside garbage (2^-32 per position) practically impossible.
pub(crate) fn resync(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len().saturating_sub(FRAME_OVERHEAD)).find(|&p| match parse_frame(&buf[p..]) {
        Frame::Valid { len, .. } => {
            let next = p + Frame::total(len);
            next == buf.len() || matches!(parse_frame(&buf[next..]), Frame::Valid { .. })
        }
        _ => false,
    })
}

/// What a scan of a segment region found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Records kept: in complete appends, or around corrupt regions.
    pub records: u64,
    /// Corrupt regions that valid records follow (absolute offsets), in order.
    pub corrupt: Vec<Range<u64>>,
    /// End of what is kept (absolute). `end..base+buf.len()` is a tail that is either
    /// torn (a write cut short, or an append whose last record is missing) or garbage.
    pub end: u64,
}

/// Scans `buf`, which holds the segment bytes from absolute offset `base` on.
/// `skips` are already known corrupt regions (absolute, sorted): stepped over, not
/// reported again.
pub(crate) fn scan(buf: &[u8], base: u64, skips: &[Range<u64>]) -> Scan {
    let mut out = Scan {
        end: base,
        ..Scan::default()
    };
    let mut pos = 0usize;
    // Records seen of the append in progress (its last record not reached yet).
    let mut open_append = 0u64;
    while pos < buf.len() {
        let abs = base + pos as u64;
        if let Some(skip) = skips.iter().find(|s| s.contains(&abs)) {
            // A known corrupt region ends whatever append was in progress: its records
            // before the region are kept, as for a newly found one.
            out.records += open_append;
            open_append = 0;
            pos = usize::try_from(skip.end - base)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            out.end = base + pos as u64;
            continue;
        }
        match parse_frame(&buf[pos..]) {
            Frame::Valid { len, continues } => {
                pos += Frame::total(len);
                open_append += 1;
                if !continues {
                    out.records += open_append;
                    open_append = 0;
                    out.end = base + pos as u64;
                }
            }
            Frame::Incomplete | Frame::Invalid => match resync(buf, pos + 1) {
                Some(next) => {
                    // Media damage, not a crash: keep the records around it.
                    out.records += open_append;
                    open_append = 0;
                    out.corrupt.push(abs..base + next as u64);
                    pos = next;
                    out.end = base + pos as u64;
                }
                None => break,
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(records: &[(&[u8], bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (payload, continues) in records {
            put_frame(&mut out, payload, *continues);
        }
        out
    }

    #[test]
    fn frame_round_trip_and_damage() {
        let buf = frames(&[(b"hello", true)]);
        assert_eq!(buf.len(), 13);
        assert_eq!(
            parse_frame(&buf),
            Frame::Valid {
                len: 5,
                continues: true
            }
        );
        assert_eq!(parse_frame(&buf[..12]), Frame::Incomplete);
        assert_eq!(parse_frame(&buf[..7]), Frame::Incomplete);
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(
                parse_frame(&bad),
                parse_frame(&buf),
                "flipped bit {bit} went unnoticed"
            );
        }
        assert_eq!(parse_frame(&[0u8; 64]), Frame::Invalid);
    }

    #[test]
    fn scan_keeps_complete_appends_and_reports_the_torn_tail() {
        let mut buf = frames(&[(b"a", false), (b"b1", true), (b"b2", false)]);
        let complete = buf.len() as u64;
        // An append whose last record never made it.
        put_frame(&mut buf, b"c1", true);
        let s = scan(&buf, 100, &[]);
        assert_eq!(s.records, 3);
        assert_eq!(s.end, 100 + complete);
        assert!(s.corrupt.is_empty());
        // A half-written frame.
        let mut buf = frames(&[(b"a", false)]);
        let full = frames(&[(b"bbbbbbbb", false)]);
        buf.extend_from_slice(&full[..10]);
        let s = scan(&buf, 0, &[]);
        assert_eq!((s.records, s.end), (1, 9));
    }

    #[test]
    fn scan_skips_a_corrupt_middle_and_keeps_what_follows() {
        let mut buf = frames(&[(b"one", false)]);
        let bad_at = buf.len();
        buf.extend_from_slice(&frames(&[(b"two", false)]));
        let after = buf.len();
        buf.extend_from_slice(&frames(&[(b"three", false), (b"four", false)]));
        buf[bad_at + 9] ^= 0x40;
        let s = scan(&buf, 16, &[]);
        assert_eq!(s.records, 3);
        assert_eq!(s.corrupt, vec![16 + bad_at as u64..16 + after as u64]);
        assert_eq!(s.end, 16 + buf.len() as u64);
        // The same region given as known is stepped over silently.
        let s2 = scan(&buf, 16, &s.corrupt);
        assert_eq!((s2.records, s2.end), (3, s.end));
        assert!(s2.corrupt.is_empty());
    }

    #[test]
    fn zero_fill_is_not_records() {
        let mut buf = frames(&[(b"x", false)]);
        buf.extend_from_slice(&[0u8; 4096]);
        let s = scan(&buf, 0, &[]);
        assert_eq!((s.records, s.end), (1, 9));
        assert!(s.corrupt.is_empty());
    }

    #[test]
    fn header_round_trip() {
        let h = header(1_700_000_000_123);
        assert_eq!(parse_header(&h), Some(1_700_000_000_123));
        assert_eq!(parse_header(&h[..15]), None);
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(parse_header(&bad), None);
    }
}
