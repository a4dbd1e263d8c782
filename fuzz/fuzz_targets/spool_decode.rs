//! The spool's record decoder (what recovery and `hush spool status` run over segment
//! files after a crash or media damage).
//!
//! First input byte, bit 0:
//! - 0: the rest is a segment file as found on disk; with bit 1 set, an `.ack` file's
//!   text comes first, up to a NUL byte. Any bytes must decode without panicking and
//!   give consistent offsets.
//! - 1: the rest describes records (length byte with the "continues" flag in its top
//!   bit, then that many payload bytes); they are framed as the format documents and
//!   must decode to exactly the records of complete appends.
#![no_main]

use hush::spool::{DecodedSegment, decode_segment};
use libfuzzer_sys::fuzz_target;

const HEADER_LEN: u64 = 16;
const CONTINUES: u32 = 1 << 31;

fn header(created_ms: u64) -> Vec<u8> {
    let mut h = b"HUSHSPL\x01".to_vec();
    h.extend_from_slice(&created_ms.to_le_bytes());
    h
}

fn check_offsets(d: &DecodedSegment, start: u64, len: u64) {
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

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let (ack, segment) = if mode & 2 != 0 {
            match rest.iter().position(|&b| b == 0) {
                Some(nul) => (std::str::from_utf8(&rest[..nul]).ok(), &rest[nul + 1..]),
                None => return,
            }
        } else {
            (None, rest)
        };
        let Some(d) = decode_segment(segment, ack) else {
            assert!(segment.len() < 16 || &segment[..8] != b"HUSHSPL\x01");
            return;
        };
        let len = segment.len() as u64;
        // Decoding starts after the header, or later where an .ack file says.
        check_offsets(&d, HEADER_LEN.min(len), len);
        return;
    }

    // Structured: frame records the way the format documents, then decode.
    let mut segment = header(1_700_000_000_000);
    let mut records = 0u64;
    let mut complete_records = 0u64;
    let mut complete_end = HEADER_LEN;
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
        let word = (payload.len() as u32) | if continues { CONTINUES } else { 0 };
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
});
