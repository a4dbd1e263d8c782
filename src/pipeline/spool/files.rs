//! File names and the small metadata files of the spool directory.
//!
//! ```text
//! spool.meta              spool id (part of every batch's dedup token) + next segment number
//! spool.lock              flock(2)ed by the process that has the spool open
//! spool.reserve           64 KiB kept free for the reader's metadata: deleted on a full disk
//! spool.probe             written and deleted by the appender while the disk refuses writes
//! 000000000042.seg        segment 42: header + records (see `format`)
//! 000000000042.ack        reader progress in segment 42 (acknowledged offset, cuts, skips)
//! quarantine/000000000042-0000001234.bad   corrupt bytes found at offset 1234 of segment 42
//! ```
//!
//! The metadata files are tiny text files replaced atomically (write a temporary file,
//! optionally fsync it, rename it over the old one, optionally fsync the directory), so
//! a crash leaves either the old or the new content, never a mix.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

pub(crate) const META: &str = "spool.meta";
pub(crate) const RESERVE: &str = "spool.reserve";
const PROBE: &str = "spool.probe";
/// Size of `spool.reserve`: room for many `.ack` rewrites (a page each at most).
pub(crate) const RESERVE_BYTES: usize = 64 * 1024;
/// Size of the probe write: one page.
const PROBE_BYTES: usize = 4096;

/// Whether `e` says the filesystem (or the user's quota) is full.
pub(crate) fn out_of_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Creates `spool.reserve` in `dir` if it is missing. Without `durable` it may live in
/// the page cache only, which is all a full disk needs of it.
pub(crate) fn ensure_reserve(dir: &Path, durable: bool) -> io::Result<()> {
    let path = dir.join(RESERVE);
    if path.exists() {
        return Ok(());
    }
    write_atomic(&path, &[0u8; RESERVE_BYTES], durable)
}

/// Writes a page to `spool.probe` (synced when `durable`) and deletes it: whether the
/// disk takes writes again.
pub(crate) fn probe(dir: &Path, durable: bool) -> io::Result<()> {
    let path = dir.join(PROBE);
    let written = (|| {
        let mut f = File::create(&path)?;
        f.write_all(&[0u8; PROBE_BYTES])?;
        if durable {
            f.sync_data()?;
        }
        Ok(())
    })();
    let _ = fs::remove_file(&path);
    written
}
pub(crate) const QUARANTINE: &str = "quarantine";

pub(crate) fn segment_name(seq: u64) -> String {
    format!("{seq:012}.seg")
}

pub(crate) fn ack_name(seq: u64) -> String {
    format!("{seq:012}.ack")
}

pub(crate) fn quarantine_name(seq: u64, offset: u64) -> String {
    format!("{seq:012}-{offset:010}.bad")
}

/// The sequence number of a `NNNNNNNNNNNN.<ext>` file name.
pub(crate) fn parse_seq(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    (stem.len() == 12 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// Replaces `path` with `content` atomically; with `durable`, the new content and the
/// rename survive a power loss once this returns.
pub(crate) fn write_atomic(path: &Path, content: &[u8], durable: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(content)?;
        if durable {
            f.sync_data()?;
        }
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A half-written temporary file would hold on to space a full disk needs.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if durable && let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a new segment file with its header. Fails if it exists: segment numbers
/// are never reused, since batch identities contain them.
pub(crate) fn create_segment(path: &Path, header: &[u8], durable: bool) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let written = (|| {
        f.write_all(header)?;
        if durable {
            f.sync_data()?;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        Ok(())
    })();
    if let Err(e) = written {
        // No segment without a header is left behind (a full disk would otherwise
        // leave one per attempt); its number is not used again.
        drop(f);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(f)
}

/// Copies corrupt bytes aside so an operator can inspect them.
pub(crate) fn write_quarantine(
    dir: &Path,
    seq: u64,
    offset: u64,
    bytes: &[u8],
    durable: bool,
) -> io::Result<PathBuf> {
    let quarantine = dir.join(QUARANTINE);
    fs::create_dir_all(&quarantine)?;
    let path = quarantine.join(quarantine_name(seq, offset));
    write_atomic(&path, bytes, durable)?;
    Ok(path)
}

/// `spool.meta`: identity of this spool and the next segment number to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Random, 32 hex digits; distinguishes the batch tokens of different spools (two
    /// collectors writing into one ClickHouse, or a spool directory that was wiped).
    pub id: String,
    /// Never decreases, so segment numbers are not reused even after every segment
    /// was deleted.
    pub next_segment: u64,
}

impl Meta {
    pub(crate) fn new_random() -> Meta {
        let bytes: [u8; 16] = rand::random();
        let mut id = String::with_capacity(32);
        for b in bytes {
            let _ = write!(id, "{b:02x}");
        }
        Meta {
            id,
            next_segment: 1,
        }
    }

    pub(crate) fn encode(&self) -> String {
        format!(
            "hush-spool 1\nid {}\nnext_segment {}\n",
            self.id, self.next_segment
        )
    }

    pub(crate) fn parse(text: &str) -> Option<Meta> {
        let mut lines = text.lines();
        if lines.next()? != "hush-spool 1" {
            return None;
        }
        let id = lines.next()?.strip_prefix("id ")?.to_owned();
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let next_segment = lines.next()?.strip_prefix("next_segment ")?.parse().ok()?;
        lines.next().is_none().then_some(Meta { id, next_segment })
    }
}

/// `NNN.ack`: how far the reader got in one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AckState {
    /// Every record before this offset is acknowledged (0: nothing yet).
    pub acked: u64,
    /// Batches handed out and not yet acknowledged, in order, contiguous from `acked`.
    /// After a restart they are handed out again with exactly these bounds, so their
    /// dedup tokens match whatever was already inserted.
    pub cuts: Vec<Range<u64>>,
    /// Corrupt regions already quarantined.
    pub skips: Vec<Range<u64>>,
}

impl AckState {
    pub(crate) fn encode(&self) -> String {
        let mut s = format!("hush-spool-ack 1\nacked {}\n", self.acked);
        for r in &self.skips {
            let _ = writeln!(s, "skip {} {}", r.start, r.end);
        }
        for r in &self.cuts {
            let _ = writeln!(s, "cut {} {}", r.start, r.end);
        }
        s
    }

    pub(crate) fn parse(text: &str) -> Option<AckState> {
        let mut lines = text.lines();
        if lines.next()? != "hush-spool-ack 1" {
            return None;
        }
        let acked = lines.next()?.strip_prefix("acked ")?.parse().ok()?;
        let mut state = AckState {
            acked,
            ..AckState::default()
        };
        for line in lines {
            let (kind, rest) = line.split_once(' ')?;
            let (a, b) = rest.split_once(' ')?;
            let range = a.parse().ok()?..b.parse().ok()?;
            if range.start >= range.end {
                return None;
            }
            match kind {
                "cut" => state.cuts.push(range),
                "skip" => state.skips.push(range),
                _ => return None,
            }
        }
        // Cuts continue each other from `acked`; anything else is not a file we wrote.
        let mut at = state.acked;
        for cut in &state.cuts {
            if cut.start != at {
                return None;
            }
            at = cut.end;
        }
        Some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(segment_name(42), "000000000042.seg");
        assert_eq!(parse_seq("000000000042.seg", "seg"), Some(42));
        assert_eq!(parse_seq("000000000042.ack", "seg"), None);
        assert_eq!(parse_seq("42.seg", "seg"), None);
        assert_eq!(parse_seq("00000000004x.seg", "seg"), None);
        assert_eq!(quarantine_name(42, 1234), "000000000042-0000001234.bad");
    }

    #[test]
    fn meta_round_trip() {
        let m = Meta::new_random();
        assert_eq!(Meta::parse(&m.encode()), Some(m.clone()));
        assert_ne!(Meta::new_random().id, m.id);
        assert_eq!(Meta::parse("hush-spool 1\nid zz\nnext_segment 3\n"), None);
        assert_eq!(Meta::parse(""), None);
    }

    #[test]
    fn ack_state_round_trip_and_rejects_gaps() {
        let s = AckState {
            acked: 16,
            cuts: vec![16..100, 100..180],
            skips: vec![40..50, 60..70],
        };
        assert_eq!(AckState::parse(&s.encode()), Some(s));
        assert_eq!(
            AckState::parse("hush-spool-ack 1\nacked 16\ncut 20 30\n"),
            None
        );
        assert_eq!(
            AckState::parse("hush-spool-ack 1\nacked 16\ncut 16 16\n"),
            None
        );
        assert_eq!(AckState::parse("hush-spool-ack 1\nacked x\n"), None);
        assert_eq!(AckState::parse("garbage"), None);
    }
}
