use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use super::*;

fn config(dir: &Path, fsync: FsyncPolicy) -> SpoolConfig {
    SpoolConfig {
        dir: Some(dir.to_owned()),
        fsync,
        fsync_interval_ms: 5,
        segment_bytes: 1 << 20,
        max_bytes: 64 << 20,
    }
}

fn open(cfg: &SpoolConfig) -> (Spool, Registry) {
    let mut registry = Registry::default();
    let spool = Spool::open(cfg, &mut registry).expect("open spool");
    (spool, registry)
}

/// A test record: producer, sequence number, and a variable-length filler, so that
/// payloads can be split again and checked.
fn rec(producer: u32, seq: u32) -> Vec<u8> {
    let filler = (seq % 13) as usize;
    let mut v = Vec::with_capacity(12 + filler);
    v.extend_from_slice(&producer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&(filler as u32).to_le_bytes());
    v.extend(std::iter::repeat_n(b'a' + (seq % 26) as u8, filler));
    v
}

/// Splits a batch payload back into (producer, seq) pairs, checking every filler.
fn split(payload: &[u8]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut p = payload;
    while !p.is_empty() {
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let (producer, seq, filler) = (word(&p[0..]), word(&p[4..]), word(&p[8..]) as usize);
        assert_eq!(
            filler,
            (seq % 13) as usize,
            "damaged record {producer}/{seq}"
        );
        assert!(
            p[12..12 + filler]
                .iter()
                .all(|&b| b == b'a' + (seq % 26) as u8)
        );
        out.push((producer, seq));
        p = &p[12 + filler..];
    }
    out
}

fn append_blocking(spool: &Spool, records: &[Vec<u8>]) -> Result<(), SpoolError> {
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    let fut = spool.append(&refs);
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(fut)
}

/// Every batch available now.
fn drain(spool: &Spool, max: usize) -> Vec<SpoolBatch> {
    let mut out = Vec::new();
    while let Some(b) = spool.try_next_batch_blocking(max).expect("next batch") {
        out.push(b);
    }
    out
}

fn records_of(batches: &[SpoolBatch]) -> Vec<(u32, u32)> {
    batches.iter().flat_map(|b| split(b.payload())).collect()
}

fn metric(registry: &Registry, name: &str) -> f64 {
    let text = crate::metrics::render(registry);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_read_ack_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, registry) = open(&config(dir.path(), FsyncPolicy::Always));
    let (a, b, c) = (rec(1, 1), rec(1, 2), rec(1, 3));
    spool.append(&[&a]).await.unwrap();
    spool.append(&[&b, &c]).await.unwrap();
    assert_eq!(spool.status().pending_records, 3);
    assert!(spool.status().oldest_pending_age.is_some());

    let batch = spool.next_batch(100).await.unwrap().unwrap();
    assert_eq!(batch.records(), 3);
    assert_eq!(batch.payload().as_ref(), [a, b, c].concat().as_slice());
    assert!(batch.token().contains(spool.id()), "{}", batch.token());
    assert_eq!(spool.status().in_flight_batches, 1);
    assert_eq!(metric(&registry, "hush_spool_in_flight_batches"), 1.0);
    assert!(spool.try_next_batch(100).await.unwrap().is_none());

    spool.ack(&batch).await.unwrap();
    spool.ack(&batch).await.unwrap(); // twice is harmless
    let s = spool.status();
    assert_eq!((s.pending_records, s.in_flight_batches), (0, 0));
    assert_eq!(s.oldest_pending_age, None);
    assert_eq!(metric(&registry, "hush_spool_pending_records"), 0.0);
    assert_eq!(metric(&registry, "hush_spool_in_flight_batches"), 0.0);
    assert_eq!(metric(&registry, "hush_spool_segments"), 1.0);
    assert!(metric(&registry, "hush_spool_fsyncs_total") >= 1.0);

    drop(spool);
    let (spool, _r) = open(&config(dir.path(), FsyncPolicy::Always));
    assert!(
        drain(&spool, 100).is_empty(),
        "acknowledged records came back"
    );
    assert_eq!(spool.status().pending_records, 0);
}

#[test]
fn restart_replays_unacknowledged_batches_with_the_same_identity() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Interval);
    let (spool, _r) = open(&cfg);
    let id = spool.id().to_owned();
    for i in 0..10 {
        append_blocking(&spool, &[rec(0, i)]).unwrap();
    }
    let first = spool.try_next_batch_blocking(3).unwrap().unwrap();
    let second = spool.try_next_batch_blocking(3).unwrap().unwrap();
    let third = spool.try_next_batch_blocking(3).unwrap().unwrap();
    assert_eq!(
        records_of(std::slice::from_ref(&first)),
        [(0, 0), (0, 1), (0, 2)]
    );
    spool.ack_blocking(&first).unwrap();
    // `third` acknowledged, `second` not: only the contiguous prefix counts as done.
    spool.ack_blocking(&third).unwrap();
    assert_eq!(spool.status().pending_records, 7);
    drop(spool);

    let (spool, registry) = open(&cfg);
    assert_eq!(spool.id(), id);
    assert_eq!(spool.status().replay_batches, 2);
    assert_eq!(metric(&registry, "hush_spool_replay_batches"), 2.0);
    // Handed out again exactly as before, whatever the batch size asked for now.
    let again = spool.try_next_batch_blocking(100).unwrap().unwrap();
    assert_eq!(again, second);
    let again3 = spool.try_next_batch_blocking(1).unwrap().unwrap();
    assert_eq!(again3, third);
    // Then the records never handed out, in a new batch after them.
    let rest = spool.try_next_batch_blocking(100).unwrap().unwrap();
    assert_eq!(records_of(std::slice::from_ref(&rest)), [(0, 9)]);
    assert_eq!(rest.range().start, third.range().end);
    assert_eq!(rest.segment(), third.segment());
    assert!(spool.try_next_batch_blocking(100).unwrap().is_none());
    assert_ne!(rest.token(), third.token());

    for b in [&again, &again3, &rest] {
        spool.ack_blocking(b).unwrap();
    }
    drop(spool);
    let (spool, _r) = open(&cfg);
    assert!(drain(&spool, 100).is_empty());
    // The old segment is gone; opening created none (the first append does) ...
    assert!(segment_files(dir.path()).is_empty());
    // ... and its number is not reused.
    append_blocking(&spool, &[rec(1, 0)]).unwrap();
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 1);
    let seq = files::parse_seq(segs[0].file_name().unwrap().to_str().unwrap(), "seg").unwrap();
    assert!(seq > third.segment(), "{seq}");
}

/// Appends, closes, and returns the path of the (single) segment holding them and the
/// offsets where each append starts.
fn spool_with(dir: &Path, cfg: &SpoolConfig, appends: &[Vec<Vec<u8>>]) -> (PathBuf, Vec<u64>) {
    let (spool, _r) = open(cfg);
    let mut offsets = Vec::new();
    let mut at = HEADER_LEN;
    for a in appends {
        offsets.push(at);
        at += a
            .iter()
            .map(|r| (FRAME_OVERHEAD + r.len()) as u64)
            .sum::<u64>();
        append_blocking(&spool, a).unwrap();
    }
    drop(spool);
    let segs = segment_files(dir);
    assert_eq!(segs.len(), 1);
    assert_eq!(fs::metadata(&segs[0]).unwrap().len(), at);
    (segs[0].clone(), offsets)
}

#[test]
fn torn_tail_is_truncated_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Interval);
    let appends: Vec<Vec<Vec<u8>>> = (0..5).map(|i| vec![rec(0, i)]).collect();
    let (seg, offsets) = spool_with(dir.path(), &cfg, &appends);
    // A crash in the middle of writing the last record.
    let cut_at = offsets[4] + 5;
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut_at)
        .unwrap();

    let (spool, registry) = open(&cfg);
    assert_eq!(metric(&registry, "hush_spool_torn_tail_total"), 1.0);
    assert_eq!(
        metric(&registry, "hush_spool_quarantined_records_total"),
        0.0
    );
    assert_eq!(fs::metadata(&seg).unwrap().len(), offsets[4]);
    let batches = drain(&spool, 100);
    assert_eq!(
        records_of(&batches),
        (0..4).map(|i| (0, i)).collect::<Vec<_>>()
    );
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Never);
    let appends: Vec<Vec<Vec<u8>>> = (0..3).map(|i| vec![rec(0, i)]).collect();
    let (seg, _) = spool_with(dir.path(), &cfg, &appends);
    let clean_len = fs::metadata(&seg).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    io::Write::write_all(&mut f, &[0x5a; 100]).unwrap();
    io::Write::write_all(&mut f, &[0; 4000]).unwrap();
    drop(f);

    let (spool, registry) = open(&cfg);
    assert_eq!(metric(&registry, "hush_spool_torn_tail_total"), 1.0);
    assert_eq!(fs::metadata(&seg).unwrap().len(), clean_len);
    assert_eq!(records_of(&drain(&spool, 100)), [(0, 0), (0, 1), (0, 2)]);
}

#[test]
fn a_request_cut_short_by_a_crash_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Interval);
    let appends = vec![vec![rec(0, 0)], vec![rec(1, 0), rec(1, 1), rec(1, 2)]];
    let (seg, offsets) = spool_with(dir.path(), &cfg, &appends);
    // The first two records of the second request made it to disk, the third did not.
    let third = offsets[1]
        + appends[1][..2]
            .iter()
            .map(|r| (FRAME_OVERHEAD + r.len()) as u64)
            .sum::<u64>();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(third)
        .unwrap();

    let (spool, registry) = open(&cfg);
    assert_eq!(metric(&registry, "hush_spool_torn_tail_total"), 1.0);
    assert_eq!(records_of(&drain(&spool, 100)), [(0, 0)]);
    assert_eq!(fs::metadata(&seg).unwrap().len(), offsets[1]);
}

#[test]
fn corrupt_middle_record_is_quarantined_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Interval);
    let appends: Vec<Vec<Vec<u8>>> = (0..5).map(|i| vec![rec(0, i)]).collect();
    let (seg, offsets) = spool_with(dir.path(), &cfg, &appends);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[offsets[2] as usize + FRAME_OVERHEAD + 5] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();

    let (spool, registry) = open(&cfg);
    assert_eq!(
        metric(&registry, "hush_spool_quarantined_records_total"),
        1.0
    );
    assert_eq!(metric(&registry, "hush_spool_torn_tail_total"), 0.0);
    let q = dir
        .path()
        .join("quarantine")
        .join(files::quarantine_name(1, offsets[2]));
    let copied = fs::read(&q).unwrap_or_else(|e| panic!("{}: {e}", q.display()));
    assert_eq!(copied, &bytes[offsets[2] as usize..offsets[3] as usize]);
    assert_eq!(
        records_of(&drain(&spool, 2)),
        [(0, 0), (0, 1), (0, 3), (0, 4)]
    );
    drop(spool);

    // Remembered: not quarantined again, nothing lost or repeated.
    let dir2 = dir.path().to_owned();
    let (spool, registry) = open(&config(&dir2, FsyncPolicy::Interval));
    assert_eq!(
        metric(&registry, "hush_spool_quarantined_records_total"),
        0.0
    );
    // The batches above were not acknowledged: they come back, around the hole.
    assert_eq!(
        records_of(&drain(&spool, 100)),
        [(0, 0), (0, 1), (0, 3), (0, 4)]
    );
}

#[test]
fn damage_found_while_reading_is_quarantined_too() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Never);
    let (spool, registry) = open(&cfg);
    let mut offsets = Vec::new();
    let mut at = HEADER_LEN;
    for i in 0..4 {
        offsets.push(at);
        let r = rec(0, i);
        at += (FRAME_OVERHEAD + r.len()) as u64;
        append_blocking(&spool, &[r]).unwrap();
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0xff], offsets[1] + FRAME_OVERHEAD as u64)
        .unwrap();
    drop(f);
    assert_eq!(records_of(&drain(&spool, 100)), [(0, 0), (0, 2), (0, 3)]);
    assert_eq!(
        metric(&registry, "hush_spool_quarantined_records_total"),
        1.0
    );
    assert!(
        dir.path()
            .join("quarantine")
            .join(files::quarantine_name(1, offsets[1]))
            .exists()
    );
}

#[test]
fn full_spool_refuses_fast_and_recovers_after_acks() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Interval);
    cfg.segment_bytes = 512;
    cfg.max_bytes = 2048;
    let (spool, registry) = open(&cfg);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        match append_blocking(&spool, &[rec(0, i)]) {
            Ok(()) => accepted.push((0, i)),
            Err(SpoolError::Full { used, max }) => {
                assert_eq!(max, 2048);
                assert!(used <= max);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0 && accepted.len() > 10, "{refused} {accepted:?}");
    assert_eq!(
        metric(&registry, "hush_spool_full_rejections_total"),
        refused as f64
    );
    assert!(spool.status().bytes <= 2048);

    // Nothing accepted was dropped.
    let batches = drain(&spool, 5);
    assert_eq!(records_of(&batches), accepted);
    assert!(batches.iter().all(|b| b.records() <= 5));
    assert!(matches!(
        append_blocking(&spool, &[rec(1, 0)]),
        Err(SpoolError::Full { .. })
    ));
    for b in &batches {
        spool.ack_blocking(b).unwrap();
    }
    // The segment being appended to cannot be deleted; a refused append rolls it.
    let mut ok = false;
    wait_until("space after acknowledging everything", || {
        let _ = spool.try_next_batch_blocking(5).unwrap();
        ok = append_blocking(&spool, &[rec(2, 0)]).is_ok();
        ok
    });
    assert_eq!(records_of(&drain(&spool, 5)), [(2, 0)]);
}

#[test]
fn a_spool_of_one_segment_still_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Never);
    cfg.segment_bytes = 1024;
    cfg.max_bytes = 1024;
    let (spool, _r) = open(&cfg);
    let mut i = 0;
    let full = loop {
        match append_blocking(&spool, &[rec(0, i)]) {
            Ok(()) => i += 1,
            Err(e) => break e,
        }
    };
    // The loop ended because the spool was full, after filling it: not on another
    // error, and not before anything was appended.
    assert!(matches!(full, SpoolError::Full { .. }), "{full}");
    assert!(i > 10, "only {i} records fit in {} bytes", cfg.max_bytes);
    let batches = drain(&spool, 1000);
    assert_eq!(
        records_of(&batches),
        (0..i).map(|seq| (0, seq)).collect::<Vec<_>>()
    );
    for b in batches {
        spool.ack_blocking(&b).unwrap();
    }
    wait_until("space in a one-segment spool", || {
        let _ = spool.try_next_batch_blocking(5).unwrap();
        append_blocking(&spool, &[rec(1, 0)]).is_ok()
    });
    assert_eq!(records_of(&drain(&spool, 5)), [(1, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, registry) = open(&config(dir.path(), FsyncPolicy::Always));
    let tasks = 32;
    let per_task = 40;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let spool = spool.clone();
        handles.push(tokio::spawn(async move {
            // Several appends in flight per task, as with concurrent requests.
            let futs: Vec<_> = (0..per_task).map(|i| spool.append(&[&rec(t, i)])).collect();
            for f in futs {
                f.await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let appends = u64::from(tasks * per_task);
    let s = spool.status();
    assert_eq!(s.pending_records, appends);
    assert!(s.fsyncs >= 1);
    assert!(
        s.fsyncs < appends,
        "{} fsyncs for {appends} appends",
        s.fsyncs
    );
    assert_eq!(
        metric(&registry, "hush_spool_fsyncs_total"),
        s.fsyncs as f64
    );
    let mut got = records_of(&drain(&spool, 10_000));
    got.sort_unstable();
    let mut want: Vec<_> = (0..tasks)
        .flat_map(|t| (0..per_task).map(move |i| (t, i)))
        .collect();
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn segments_roll_and_are_deleted_once_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Interval);
    cfg.segment_bytes = 256;
    let (spool, registry) = open(&cfg);
    for i in 0..60 {
        append_blocking(&spool, &[rec(0, i)]).unwrap();
    }
    // A request larger than a segment still goes in whole, into its own segment.
    let big: Vec<Vec<u8>> = (100..130).map(|i| rec(0, i)).collect();
    append_blocking(&spool, &big).unwrap();
    let segments = spool.status().segments;
    assert!(segments > 3, "{segments}");
    assert_eq!(segment_files(dir.path()).len(), segments);
    assert_eq!(metric(&registry, "hush_spool_segments"), segments as f64);

    let batches = drain(&spool, 1000);
    // Batches never span segments.
    assert!(batches.len() >= segments - 1);
    for w in batches.windows(2) {
        assert!(w[0].segment() < w[1].segment());
    }
    let want: Vec<_> = (0..60).chain(100..130).map(|i| (0, i)).collect();
    assert_eq!(records_of(&batches), want);
    assert!(batches.iter().any(|b| b.records() == 30));

    let bytes_before = spool.status().bytes;
    for b in &batches {
        spool.ack_blocking(b).unwrap();
    }
    // Only the segment still appended to remains.
    let left = segment_files(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    let acks: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ack"))
        .collect();
    assert!(acks.len() <= 1, "{acks:?}");
    let s = spool.status();
    assert_eq!((s.segments, s.pending_records), (1, 0));
    assert!(s.bytes < bytes_before);
    assert_eq!(s.bytes, fs::metadata(&left[0]).unwrap().len());
}

#[test]
fn a_segment_that_cannot_be_deleted_keeps_its_room_until_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Interval);
    cfg.segment_bytes = 256;
    let (spool, registry) = open(&cfg);
    for i in 0..30 {
        append_blocking(&spool, &[rec(0, i)]).unwrap();
    }
    let batches = drain(&spool, 1000);
    let first = batches[0].segment();
    assert!(
        batches.iter().any(|b| b.segment() != first),
        "one segment only"
    );
    let path = dir.path().join(files::segment_name(first));
    let first_len = fs::metadata(&path).unwrap().len();

    // Deleting the segment fails (even as root): a non-empty directory stands where
    // its file was. The spool keeps reading the file through its open handle.
    let moved = dir.path().join("moved-away");
    fs::rename(&path, &moved).unwrap();
    fs::create_dir(&path).unwrap();
    fs::write(path.join("keep"), b"").unwrap();

    let before = spool.status();
    for b in batches.iter().filter(|b| b.segment() == first) {
        spool.ack_blocking(b).unwrap();
    }
    let s = spool.status();
    assert_eq!(
        (s.bytes, s.segments),
        (before.bytes, before.segments),
        "a segment still on disk still counts"
    );
    assert_eq!(metric(&registry, "hush_spool_bytes"), before.bytes as f64);
    // A restart before the deletion succeeds must not replay it.
    let ack = fs::read_to_string(dir.path().join(files::ack_name(first))).unwrap();
    let state = files::AckState::parse(&ack).unwrap();
    assert!(state.cuts.is_empty(), "{ack}");
    assert!(state.acked >= first_len, "{ack}");

    // The obstacle goes away: the next reader call finishes the deletion.
    fs::remove_dir_all(&path).unwrap();
    let _ = spool.try_next_batch_blocking(10).unwrap();
    let s = spool.status();
    assert_eq!(s.segments, before.segments - 1);
    assert_eq!(s.bytes, before.bytes - first_len);
    assert!(!dir.path().join(files::ack_name(first)).exists());
}

#[test]
fn a_failed_interval_sync_abandons_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, registry) = open(&config(dir.path(), FsyncPolicy::Interval));
    let shared = &spool.inner.shared;
    shared.fail_syncs.store(true, Ordering::Relaxed);
    append_blocking(&spool, &[rec(0, 0)]).unwrap();
    wait_until("the background sync to fail", || {
        metric(&registry, "hush_spool_fsync_errors_total") >= 1.0
    });
    shared.fail_syncs.store(false, Ordering::Relaxed);
    // Written after the failure: not into the file whose sync failed.
    append_blocking(&spool, &[rec(0, 2)]).unwrap();
    append_blocking(&spool, &[rec(0, 3)]).unwrap();

    let batches = drain(&spool, 100);
    assert_eq!(records_of(&batches), [(0, 0), (0, 2), (0, 3)]);
    let segment_of = |seq: u32| {
        batches
            .iter()
            .find(|b| split(b.payload()).contains(&(0, seq)))
            .map(SpoolBatch::segment)
            .unwrap()
    };
    assert!(
        segment_of(2) > segment_of(0),
        "appended into the segment whose fdatasync failed"
    );
    assert_eq!(
        segment_of(2),
        segment_of(3),
        "one new segment, not one per append"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Interval);
    cfg.segment_bytes = 8 * 1024;
    let (spool, _r) = open(&cfg);
    let producers = 8u32;
    let per_producer = 300u32;

    let reader = {
        let spool = spool.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(batch) = spool.next_batch(97).await.unwrap() {
                seen.extend(split(batch.payload()));
                spool.ack(&batch).await.unwrap();
            }
            seen
        })
    };
    let mut handles = Vec::new();
    for p in 0..producers {
        let spool = spool.clone();
        handles.push(tokio::spawn(async move {
            let mut i = 0;
            while i < per_producer {
                // 1-3 records per request.
                let n = (1 + (i + p) % 3).min(per_producer - i);
                let records: Vec<Vec<u8>> = (i..i + n).map(|s| rec(p, s)).collect();
                let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                spool.append(&refs).await.unwrap();
                i += n;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    spool.close().await;
    let seen = reader.await.unwrap();

    let mut per: HashMap<u32, Vec<u32>> = HashMap::new();
    for (p, s) in seen {
        per.entry(p).or_default().push(s);
    }
    assert_eq!(per.len(), producers as usize);
    for (p, seqs) in per {
        // Each producer's records arrive once each, in the order it appended them.
        assert_eq!(seqs, (0..per_producer).collect::<Vec<_>>(), "producer {p}");
    }
    let s = spool.status();
    assert_eq!((s.pending_records, s.in_flight_batches), (0, 0));
    assert!(spool.status().segments >= 1);
}

#[test]
fn inspect_reads_a_spool_in_use_without_changing_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Interval);
    cfg.segment_bytes = 256;
    let (spool, _r) = open(&cfg);
    for i in 0..40 {
        append_blocking(&spool, &[rec(0, i)]).unwrap();
    }
    let first = spool.try_next_batch_blocking(10).unwrap().unwrap();
    spool.ack_blocking(&first).unwrap();
    let _in_flight = spool.try_next_batch_blocking(10).unwrap().unwrap();

    let listing = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (p.clone(), fs::read(&p).unwrap_or_default())
            })
            .collect();
        v.sort();
        v
    };
    let before = listing(dir.path());
    let seen = Spool::inspect(dir.path()).unwrap();
    assert_eq!(listing(dir.path()), before);
    let live = spool.status();
    assert_eq!(seen.pending_records, live.pending_records);
    assert_eq!(seen.pending_records, 40 - first.records());
    assert_eq!(seen.segments, live.segments);
    assert_eq!(seen.bytes, live.bytes);
    // The batch in flight would be replayed after a crash now.
    assert_eq!(seen.replay_batches, 1);
    assert!(seen.oldest_pending_age.is_some());

    assert!(matches!(
        Spool::inspect(&dir.path().join("missing")),
        Err(SpoolError::Io { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_misuse() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Never);
    let (spool, _r) = open(&cfg);
    assert!(matches!(
        spool.append(&[b"ok".as_slice(), b"".as_slice()]).await,
        Err(SpoolError::EmptyRecord)
    ));
    let huge = vec![0u8; MAX_RECORD_BYTES + 1];
    assert!(matches!(
        spool.append(&[&huge]).await,
        Err(SpoolError::RecordTooLarge { .. })
    ));
    spool.append(&[]).await.unwrap();
    // Refused requests left nothing behind.
    assert_eq!(spool.status().pending_records, 0);
    assert!(spool.try_next_batch(10).await.unwrap().is_none());

    // A second spool on the same directory is refused.
    let mut registry = Registry::default();
    assert!(matches!(
        Spool::open(&cfg, &mut registry),
        Err(SpoolError::Locked(_))
    ));
    let mut no_dir = cfg.clone();
    no_dir.dir = None;
    assert!(matches!(
        Spool::open(&no_dir, &mut registry),
        Err(SpoolError::NotConfigured)
    ));

    spool.append(&[b"x".as_slice()]).await.unwrap();
    let batch = spool.next_batch(10).await.unwrap().unwrap();
    let mut forged = batch.clone();
    forged.range.end += 1;
    assert!(matches!(
        spool.ack(&forged).await,
        Err(SpoolError::UnknownBatch(_))
    ));
    spool.ack(&batch).await.unwrap();

    spool.close().await;
    assert!(matches!(
        spool.append(&[b"late".as_slice()]).await,
        Err(SpoolError::Closed)
    ));
    assert!(spool.next_batch(10).await.unwrap().is_none());
}

#[test]
fn segments_without_a_valid_header() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Interval);
    let (seg, _) = spool_with(dir.path(), &cfg, &[vec![rec(0, 0)]]);
    // A later segment created just before a crash, header not yet written ...
    let empty = dir.path().join(files::segment_name(7));
    fs::write(&empty, b"HUSH").unwrap();
    // ... and an earlier one that is not a segment at all.
    let foreign = dir.path().join(files::segment_name(0));
    fs::write(&foreign, b"not a spool segment, but long enough").unwrap();
    let (spool, registry) = open(&cfg);
    assert_eq!(metric(&registry, "hush_spool_torn_tail_total"), 1.0);
    assert_eq!(
        metric(&registry, "hush_spool_quarantined_records_total"),
        1.0
    );
    assert!(!empty.exists() && !foreign.exists());
    assert!(
        dir.path()
            .join("quarantine")
            .join(files::quarantine_name(0, 0))
            .exists()
    );
    assert_eq!(records_of(&drain(&spool, 10)), [(0, 0)]);
    assert!(seg.exists());
    // New segments are numbered after every one seen.
    append_blocking(&spool, &[rec(1, 0)]).unwrap();
    let segs = segment_files(dir.path());
    assert!(
        segs.last().unwrap().ends_with(files::segment_name(8)),
        "{segs:?}"
    );
}

/// Throughput probe, not a pass/fail test: `[HUSH_TEST_FSYNC=always|never] cargo test
/// --lib append_throughput -- --ignored --nocapture` (debug builds are several times
/// slower than release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn append_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let policy = match std::env::var("HUSH_TEST_FSYNC").as_deref() {
        Ok("always") => FsyncPolicy::Always,
        Ok("never") => FsyncPolicy::Never,
        _ => FsyncPolicy::Interval,
    };
    let mut cfg = config(dir.path(), policy);
    cfg.fsync_interval_ms = 50;
    cfg.segment_bytes = 16 << 20;
    cfg.max_bytes = 1 << 30;
    let (spool, _r) = open(&cfg);
    let row = vec![7u8; 300];
    let tasks: u32 = 64;
    let per_task: u32 = 2_000;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let spool = spool.clone();
            let row = row.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    spool.append(&[&row]).await.unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = f64::from(tasks * per_task);
    println!(
        "{n} appends of 300 bytes in {secs:.2}s: {:.0}/s, {} fsyncs",
        n / secs,
        spool.status().fsyncs
    );
    assert_eq!(spool.status().pending_records, u64::from(tasks * per_task));
}

/// Scheduling policy (`/proc` stat field 41) of every thread of this process named
/// `name` (as the kernel truncates it, 15 bytes).
#[cfg(target_os = "linux")]
fn thread_policies(name: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for task in fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .flatten()
    {
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let after_comm = &stat[stat.rfind(')').expect("stat has a comm") + 1..];
        let policy = after_comm
            .split_whitespace()
            .nth(38)
            .expect("stat has a policy");
        out.push(policy.parse().expect("numeric policy"));
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn the_appender_does_not_preempt_the_thread_that_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _registry) = open(&config(dir.path(), FsyncPolicy::Interval));
    append_blocking(&spool, &[rec(1, 1)]).unwrap();
    // The policy is set as the thread starts; other tests' appenders may be starting
    // too, so wait (bounded) until every one of them has it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let policies = thread_policies("hush-spool-appe");
        assert!(!policies.is_empty(), "no appender thread found");
        if policies.iter().all(|&p| p == libc::SCHED_BATCH) {
            break;
        }
        assert!(Instant::now() < deadline, "appender policies: {policies:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    spool.close_blocking();
}

// A disk that refuses writes (full, failing), through the write-failure seam
// (`FAULT_ENV`): the real filesystem case runs in `tests/durability.rs` on a tmpfs.

fn open_faulty(cfg: &SpoolConfig, fault: &Path) -> (Spool, Registry) {
    let mut registry = Registry::default();
    let spool =
        Spool::open_with_fault(cfg, &mut registry, Some(fault.to_owned())).expect("open spool");
    (spool, registry)
}

/// Every file of the spool directory (not `quarantine/`) with its content.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn a_disk_that_refuses_writes_refuses_appends_at_once_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let fault = dir.path().join("disk-full");
    let cfg = config(&dir.path().join("spool"), FsyncPolicy::Always);
    let (spool, registry) = open_faulty(&cfg, &fault);
    append_blocking(&spool, &[rec(0, 0)]).unwrap();
    assert!(spool.writable());

    fs::write(&fault, b"").unwrap();
    // The first append reaches the disk and fails; from then on appends are refused
    // without reaching the appender at all.
    assert!(matches!(
        append_blocking(&spool, &[rec(0, 1)]),
        Err(SpoolError::Unwritable)
    ));
    assert!(!spool.writable());
    for i in 2..50 {
        assert!(matches!(
            append_blocking(&spool, &[rec(0, i), rec(0, i + 100)]),
            Err(SpoolError::Unwritable)
        ));
    }
    // The one that failed on the disk and the 48 refused at once.
    assert_eq!(
        metric(&registry, "hush_spool_unwritable_rejections_total"),
        49.0
    );
    assert_eq!(metric(&registry, "hush_spool_writable"), 0.0);
    assert_eq!(metric(&registry, "hush_spool_full_rejections_total"), 0.0);
    // Nothing of the refused appends is spooled or counted against max_bytes.
    let s = spool.status();
    assert_eq!(s.pending_records, 1);
    // Still refused while the disk is: the probe keeps failing.
    std::thread::sleep(PROBE_EVERY * 2);
    assert!(!spool.writable());

    // Space comes back: the probe notices, with no append (nor restart) to trigger it.
    fs::remove_file(&fault).unwrap();
    wait_until("the probe to find the disk writable", || spool.writable());
    assert_eq!(metric(&registry, "hush_spool_writable"), 1.0);
    append_blocking(&spool, &[rec(0, 200)]).unwrap();
    assert_eq!(records_of(&drain(&spool, 100)), [(0, 0), (0, 200)]);
    assert_eq!(
        spool.inner.shared.refused_in_outage.load(Ordering::Relaxed),
        0
    );
}

#[test]
fn opening_writes_nothing_and_a_replay_needs_no_room() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let fault = dir.path().join("disk-full");
    let cfg = config(&spool_dir, FsyncPolicy::Always);
    {
        let (spool, _r) = open(&cfg);
        for i in 0..6 {
            append_blocking(&spool, &[rec(0, i)]).unwrap();
        }
        // Two batches handed out, never acknowledged: the crash.
        spool.try_next_batch_blocking(3).unwrap().unwrap();
        spool.try_next_batch_blocking(3).unwrap().unwrap();
    }
    let before = snapshot(&spool_dir);
    assert!(before.contains_key(files::META), "{:?}", before.keys());

    // The disk is full: opening, and handing out the replayed batches, write nothing.
    fs::write(&fault, b"").unwrap();
    let (spool, _r) = open_faulty(&cfg, &fault);
    assert_eq!(
        snapshot(&spool_dir),
        before,
        "opening changed the spool's files"
    );
    let replayed = drain(&spool, 100);
    assert_eq!(replayed.len(), 2);
    assert_eq!(
        snapshot(&spool_dir),
        before,
        "replaying changed the spool's files"
    );
    // Appends are refused meanwhile, and nothing replayed is lost for it.
    assert!(matches!(
        append_blocking(&spool, &[rec(1, 0)]),
        Err(SpoolError::Unwritable)
    ));
    // The writer stores them and acknowledges: the drained segment is deleted.
    for b in &replayed {
        spool.ack_blocking(b).unwrap();
    }
    assert_eq!(
        records_of(&replayed),
        (0..6).map(|i| (0, i)).collect::<Vec<_>>()
    );
    assert_eq!(spool.status().pending_records, 0);
    assert!(segment_files(&spool_dir).is_empty());

    fs::remove_file(&fault).unwrap();
    wait_until("appends to be taken again", || spool.writable());
    append_blocking(&spool, &[rec(1, 1)]).unwrap();
    assert_eq!(records_of(&drain(&spool, 100)), [(1, 1)]);
}
