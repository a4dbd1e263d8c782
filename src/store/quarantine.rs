//! The spool's `quarantine/` directory as stored data: the rows hush keeps outside
//! ClickHouse fall under retention and erasure too.
//!
//! What lies there (see [`crate::pipeline::writer`] and [`crate::pipeline::spool`]):
//! `dead-letter-<token>.rowbinary` (rows ClickHouse refused, RowBinary) with its
//! `.txt` note (the refusals), and `*.bad` (corrupt spool bytes cut out at recovery).
//!
//! - **Retention** ([`expire`]): every file older, by modification time, than the
//!   shortest retention of any site goes. Files hold rows of many sites and have no
//!   day of their own, so the shortest retention is the one that applies to all.
//! - **Erasure** ([`erase`]): a dead-letter file whose rows decode
//!   ([`rowbinary::decode_rows`]) is rewritten without the rows the selector matches
//!   (removed when none is left); its note loses the lines of the erased rows. A file
//!   that does not decode (a `.bad` region, a dead letter that is not rows at all, a
//!   leftover temporary file) cannot be read row by row: it is removed when it holds
//!   the selector's site and any of its values (property values, the visitor id as
//!   stored) as bytes, or the site alone for a selector without such values (a time
//!   range, a site deletion). An erasure errs on the side of removing.
//!
//! Every change is atomic and durable: a rewrite goes to a temporary file that is
//! synced and renamed over the old one; the directory is synced after renames and
//! removals. Functions here do blocking file I/O: call them from a blocking thread.
//! Each returns one [`FileAction`] per file it changed or failed to change; the
//! caller records them in `purge_log` (`expire_file`, `erase_file`).

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::enrich::row::EventRow;
use crate::pipeline::rowbinary;
use crate::store::dsr::Selector;

const DEAD_LETTER_PREFIX: &str = "dead-letter-";
const DEAD_LETTER_EXT: &str = "rowbinary";
/// Suffix of an erasure's temporary file (apart from the writer's `.tmp`). A leftover
/// one (a crash mid-rewrite) is an unreadable file like any other.
const REWRITE_SUFFIX: &str = ".erase-tmp";

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAction {
    /// `quarantine/<file name>`: never a row's content.
    pub file: String,
    /// Rows in the file before and after (0 and 0 for a file that is not rows).
    pub rows_before: u64,
    pub rows_after: u64,
    /// `Ok(true)` removed, `Ok(false)` rewritten, `Err` the I/O error (the file is
    /// then as it was, or, for a dead letter whose note failed, rewritten with its
    /// old note).
    pub outcome: Result<bool, String>,
}

impl FileAction {
    fn new(path: &Path) -> Self {
        FileAction {
            file: label(path),
            rows_before: 0,
            rows_after: 0,
            outcome: Ok(true),
        }
    }
}

fn label(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}/{name}", crate::pipeline::writer::QUARANTINE_DIR)
}

/// The regular files of `dir`, sorted by name; none when `dir` does not exist.
fn files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn is_dead_letter(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == DEAD_LETTER_EXT)
        && path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(DEAD_LETTER_PREFIX))
}

/// The note of a dead letter, `dead-letter-<token>.txt`.
fn note_of(path: &Path) -> PathBuf {
    path.with_extension("txt")
}

/// A `.txt` that is the note of a dead letter present in `dir`.
fn is_note_of_present_dead_letter(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "txt")
        && path.with_extension(DEAD_LETTER_EXT).is_file()
        && is_dead_letter(&path.with_extension(DEAD_LETTER_EXT))
}

fn rows_in(path: &Path) -> u64 {
    fs::read(path)
        .ok()
        .and_then(|b| rowbinary::decode_rows(&b).ok())
        .map_or(0, |rows| rows.len() as u64)
}

/// Removes every file in `dir` modified before `cutoff` (only lists them when
/// `dry_run`). A file that cannot be removed is reported and left.
pub fn expire(dir: &Path, cutoff: SystemTime, dry_run: bool) -> io::Result<Vec<FileAction>> {
    let mut actions = Vec::new();
    for path in files(dir)? {
        let modified = match fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(modified) => modified,
            // Gone meanwhile (another run, an operator): nothing to expire.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if modified >= cutoff {
            continue;
        }
        let mut action = FileAction::new(&path);
        if is_dead_letter(&path) {
            action.rows_before = rows_in(&path);
        }
        if !dry_run {
            action.outcome = fs::remove_file(&path)
                .map(|()| true)
                .map_err(|e| e.to_string());
        }
        actions.push(action);
    }
    if !dry_run && actions.iter().any(|a| a.outcome.is_ok()) {
        sync_dir(dir)?;
    }
    Ok(actions)
}

/// Erases what `selector` matches from the files in `dir` (see the module doc).
pub fn erase(dir: &Path, selector: &Selector) -> io::Result<Vec<FileAction>> {
    let needles = Needles::of(selector);
    let mut actions = Vec::new();
    let mut changed = false;
    for path in files(dir)? {
        if is_note_of_present_dead_letter(&path) {
            // Handled with its dead letter.
            continue;
        }
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Removed meanwhile: the note of a dead letter removed just before.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                let mut action = FileAction::new(&path);
                action.outcome = Err(e.to_string());
                actions.push(action);
                continue;
            }
        };
        let action = if is_dead_letter(&path)
            && let Ok(rows) = decode_with_ranges(&bytes)
        {
            erase_rows(&path, &bytes, &rows, selector)
        } else if needles.found_in(&bytes) {
            let mut action = FileAction::new(&path);
            action.outcome = remove_with_note(&path).map(|()| true);
            Some(action)
        } else {
            None
        };
        if let Some(action) = action {
            changed |= action.outcome.is_ok();
            actions.push(action);
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(actions)
}

/// Decodes `bytes` row by row, with each row's byte range.
fn decode_with_ranges(
    bytes: &[u8],
) -> Result<Vec<(EventRow, std::ops::Range<usize>)>, rowbinary::DecodeError> {
    let mut rows = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (row, len) = rowbinary::decode_row(&bytes[at..])?;
        rows.push((row, at..at + len));
        at += len;
    }
    Ok(rows)
}

/// Drops the rows `selector` matches from the dead letter at `path`; `None` when it
/// matches none.
fn erase_rows(
    path: &Path,
    bytes: &[u8],
    rows: &[(EventRow, std::ops::Range<usize>)],
    selector: &Selector,
) -> Option<FileAction> {
    let keep: Vec<bool> = rows.iter().map(|(row, _)| !selector.matches(row)).collect();
    let kept = keep.iter().filter(|k| **k).count();
    if kept == rows.len() {
        return None;
    }
    let mut action = FileAction::new(path);
    action.rows_before = rows.len() as u64;
    action.rows_after = kept as u64;
    action.outcome = if kept == 0 {
        remove_with_note(path).map(|()| true)
    } else {
        let mut payload = Vec::with_capacity(bytes.len());
        for ((_, range), keep) in rows.iter().zip(&keep) {
            if *keep {
                payload.extend_from_slice(&bytes[range.clone()]);
            }
        }
        rewrite(path, &payload)
            .and_then(|()| rewrite_note(&note_of(path), &keep))
            .map(|()| false)
            .map_err(|e| e.to_string())
    };
    Some(action)
}

/// The note without the `row N: ...` lines of erased rows (the refusal may quote
/// their values). A note whose row lines do not line up with the rows loses all of
/// them. A missing note is left missing.
fn rewrite_note(note: &Path, keep: &[bool]) -> io::Result<()> {
    let text = match fs::read_to_string(note) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let row_lines = text.lines().filter(|l| l.starts_with("row ")).count();
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    for line in text.lines() {
        if line.starts_with("row ") {
            let kept = row_lines == keep.len() && keep[index];
            index += 1;
            if !kept {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    let erased = keep.iter().filter(|k| !**k).count();
    out.push_str(&format!(
        "erased: {erased} rows by a data-subject request\n"
    ));
    rewrite(note, out.as_bytes())
}

/// Replaces `path` with `content`: a synced temporary file renamed over it.
fn rewrite(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(REWRITE_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Removes `path` and, for a dead letter, its note.
fn remove_with_note(path: &Path) -> Result<(), String> {
    fs::remove_file(path).map_err(|e| e.to_string())?;
    if is_dead_letter(path) {
        match fs::remove_file(note_of(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.to_string()),
            _ => {}
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What an unreadable file must hold, as bytes, to count as the selector's.
struct Needles {
    site: Vec<u8>,
    /// Property values and the visitor id as RowBinary stores it; empty when the
    /// selector has none (a time range or the whole site).
    values: Vec<Vec<u8>>,
}

impl Needles {
    fn of(selector: &Selector) -> Self {
        let mut values: Vec<Vec<u8>> = selector
            .props
            .iter()
            .map(|(_, v)| v.as_bytes().to_vec())
            .filter(|v| !v.is_empty())
            .collect();
        if let Some(id) = selector.visitor_id {
            values.push(id.to_le_bytes().to_vec());
        }
        Needles {
            site: selector.site.as_bytes().to_vec(),
            values,
        }
    }

    fn found_in(&self, bytes: &[u8]) -> bool {
        contains(bytes, &self.site)
            && (self.values.is_empty() || self.values.iter().any(|v| contains(bytes, v)))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn row(site: &str, visitor: u64, uid: &str) -> EventRow {
        EventRow {
            site: Arc::from(site),
            timestamp: 1_750_000_000,
            visitor_id: visitor,
            name: "pageview".into(),
            pathname: "/".into(),
            props: vec![("uid".into(), uid.into())],
            ..EventRow::default()
        }
    }

    fn encode(rows: &[EventRow]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in rows {
            rowbinary::encode_event(r, &mut out);
        }
        out
    }

    fn selector(site: &str, uid: Option<&str>, visitor: Option<u64>) -> Selector {
        Selector {
            site: site.into(),
            props: uid
                .map(|u| vec![("uid".into(), u.into())])
                .unwrap_or_default(),
            visitor_id: visitor,
            ..Selector::default()
        }
    }

    #[test]
    fn bytes_of_unreadable_files_match_by_site_and_any_value() {
        let bytes = encode(&[row("a.example", 42, "h-1")]);
        let by_uid = Needles::of(&selector("a.example", Some("h-1"), None));
        assert!(by_uid.found_in(&bytes));
        assert!(!Needles::of(&selector("b.example", Some("h-1"), None)).found_in(&bytes));
        assert!(!Needles::of(&selector("a.example", Some("h-2"), None)).found_in(&bytes));
        assert!(Needles::of(&selector("a.example", None, Some(42))).found_in(&bytes));
        assert!(!Needles::of(&selector("a.example", None, Some(43))).found_in(&bytes));
        // Only a site (or a time range): the site decides.
        assert!(Needles::of(&selector("a.example", None, None)).found_in(&bytes));
        assert!(!Needles::of(&selector("c.example", None, None)).found_in(&bytes));
    }

    #[test]
    fn a_note_loses_the_lines_of_erased_rows() {
        let dir = tempfile::tempdir().unwrap();
        let note = dir.path().join("n.txt");
        fs::write(
            &note,
            "table: events\nrows: 3 of 9\nrow 1: e1\nrow 4: e4\nrow 8: e8\n",
        )
        .unwrap();
        rewrite_note(&note, &[true, false, true]).unwrap();
        assert_eq!(
            fs::read_to_string(&note).unwrap(),
            "table: events\nrows: 3 of 9\nrow 1: e1\nrow 8: e8\n\
             erased: 1 rows by a data-subject request\n"
        );
        // Lines that do not line up with the rows: all of them go.
        rewrite_note(&note, &[true, false, true, true]).unwrap();
        let text = fs::read_to_string(&note).unwrap();
        assert!(!text.contains("row "), "{text}");
    }
}
