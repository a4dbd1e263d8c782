//! Durability under faults: nothing answered 202 is ever lost or stored twice.
//!
//! Each test runs the built `hush serve` with a disk spool as a child process. Several
//! client tasks send a steady, bounded load of hits, each with a unique pathname
//! `/s/<seq>`, and record which were answered 202. After the fault the test waits
//! (polling, with a deadline) until every acknowledged hit is in ClickHouse and checks
//! that no pathname is stored twice and nothing unknown was stored.
//!
//! Faults of hush itself (SIGKILL, SIGTERM, a replayed batch, a refused batch) run
//! against the test ClickHouse, so also against the external server `CLICKHOUSE_URL`
//! names ([`World::shared`], a fresh database). Faults of ClickHouse (stopped, frozen)
//! need a launcher of their own to stop ([`World::own`]); with `CLICKHOUSE_URL` set
//! they are compiled as `#[ignore]`d (see `build.rs`), so the summary reports them as
//! ignored, never as passed.

#[path = "support/hush.rs"]
mod hush_process;
mod support;
#[path = "support/wait.rs"]
mod wait;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hush::config::{FsyncPolicy, SpoolConfig};
use hush::enrich::row::EventRow;
use hush::pipeline::spool::Spool;
use hush_process::{HushProcess, test_config};
use prometheus_client::registry::Registry;
use support::LocalClickHouse;

/// Upper bound for any awaited condition; generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(90);
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// Runs blocking fixture calls (starting/stopping ClickHouse) off the async workers'
/// backs, so the load keeps running meanwhile.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

struct Opts {
    /// Where the spool lives; `World::spool_dir` when `None`.
    spool_dir: Option<PathBuf>,
    fsync: &'static str,
    segment_bytes: u64,
    max_bytes: u64,
    request_timeout_ms: u64,
    shutdown_timeout_ms: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            spool_dir: None,
            fsync: "interval",
            segment_bytes: 1 << 20,
            max_bytes: 64 << 20,
            request_timeout_ms: 2_000,
            shutdown_timeout_ms: 20_000,
        }
    }
}

fn config(w: &World, o: &Opts) -> String {
    let spool = o.spool_dir.clone().unwrap_or_else(|| w.spool_dir());
    test_config(
        &w.url,
        w.login.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        &w.db,
        &format!(
            r#"
[server]
shutdown_timeout_ms = {shutdown}

[clickhouse]
request_timeout_ms = {timeout}

[writer]
flush_interval_ms = 50
retry_base_ms = 50
retry_max_ms = 400

[spool]
dir = "{spool}"
fsync = "{fsync}"
fsync_interval_ms = 20
segment_bytes = {segment}
max_bytes = {max}
"#,
            shutdown = o.shutdown_timeout_ms,
            timeout = o.request_timeout_ms,
            spool = spool.display(),
            fsync = o.fsync,
            segment = o.segment_bytes,
            max = o.max_bytes,
        ),
    )
}

/// One test's world: its ClickHouse database (on a launcher of its own, or on the
/// test ClickHouse), a spool dir, a hush dir; all removed with it.
struct World {
    /// The launcher this test owns and may stop; `None` on the shared test ClickHouse.
    own: Option<LocalClickHouse>,
    url: String,
    login: Option<(String, String)>,
    db: String,
    dir: tempfile::TempDir,
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hush-durability-")
        .tempdir()
        .expect("temp dir")
}

impl World {
    /// A ClickHouse launcher of the test's own, to stop and freeze.
    fn own() -> World {
        let dir = temp_dir();
        let ch = LocalClickHouse::start(dir.path().join("clickhouse"), 0);
        World {
            url: ch.url().to_owned(),
            login: None,
            db: "hush_durability".into(),
            own: Some(ch),
            dir,
        }
    }

    /// A fresh database on the test ClickHouse (the external one with
    /// `CLICKHOUSE_URL`), for faults of hush only.
    async fn shared() -> World {
        let ch = support::clickhouse();
        World {
            url: ch.url().to_owned(),
            login: Some((ch.user().to_owned(), ch.password().to_owned())),
            db: ch.fresh_database("durability").await,
            own: None,
            dir: temp_dir(),
        }
    }

    /// The launcher to stop, kill or freeze.
    fn ch(&mut self) -> &mut LocalClickHouse {
        self.own
            .as_mut()
            .expect("this test needs World::own to stop ClickHouse")
    }

    fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn hush_dir(&self) -> PathBuf {
        self.dir.path().join("hush")
    }

    fn start_hush(&self, o: &Opts) -> HushProcess {
        HushProcess::start(&self.hush_dir(), &config(self, o))
    }

    fn client(&self) -> clickhouse::Client {
        let client = clickhouse::Client::default().with_url(&self.url);
        let client = match &self.login {
            Some((user, password)) => client.with_user(user).with_password(password),
            None => client,
        };
        client.with_database(&self.db)
    }
}

/// What the clients sent and what was acknowledged.
#[derive(Default)]
struct Load {
    next_seq: AtomicU64,
    acked: Mutex<BTreeSet<u64>>,
    acked_count: AtomicU64,
    /// 503 answers, and how many of them carried a valid Retry-After.
    refused: AtomicU64,
    refused_with_retry_after: AtomicU64,
    /// Connection errors (a killed collector): not acknowledged, maybe stored.
    errors: AtomicU64,
    /// Any other answer: always a test failure.
    unexpected: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn acked(&self) -> u64 {
        self.acked_count.load(Ordering::SeqCst)
    }

    fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn acked_set(&self) -> BTreeSet<u64> {
        self.acked.lock().unwrap().clone()
    }

    fn sent(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }

    /// `clients` tasks sending to `base` until [`Load::stop`] is set or `max` passed.
    fn spawn(
        self: &Arc<Self>,
        base: String,
        clients: usize,
        max: Duration,
    ) -> tokio::task::JoinHandle<()> {
        self.stop.store(false, Ordering::SeqCst);
        let load = Arc::clone(self);
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client");
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let (load, http, base) = (Arc::clone(&load), http.clone(), base.clone());
                tasks.push(tokio::spawn(async move {
                    // Paced, so the load stays bounded on a small machine.
                    let mut tick = tokio::time::interval(Duration::from_millis(4));
                    while !load.stop.load(Ordering::SeqCst) && started.elapsed() < max {
                        tick.tick().await;
                        let seq = load.next_seq.fetch_add(1, Ordering::SeqCst);
                        load.send(&http, &base, seq).await;
                    }
                }));
            }
            for t in tasks {
                t.await.expect("client task");
            }
        })
    }

    async fn send(&self, http: &reqwest::Client, base: &str, seq: u64) {
        let body =
            format!(r#"{{"n":"pageview","u":"http://example.com/s/{seq}","d":"example.com"}}"#);
        let result = http
            .post(format!("{base}/api/event"))
            .header("content-type", "text/plain")
            .header("user-agent", UA)
            .body(body)
            .send()
            .await;
        match result {
            Ok(resp) if resp.status() == 202 => {
                if let Some(reason) = resp.headers().get("x-hush-dropped") {
                    self.unexpected
                        .lock()
                        .unwrap()
                        .push(format!("seq {seq} dropped: {reason:?}"));
                    return;
                }
                self.acked.lock().unwrap().insert(seq);
                self.acked_count.fetch_add(1, Ordering::SeqCst);
            }
            Ok(resp) if resp.status() == 503 => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if retry_after.is_some_and(|s| s >= 1) {
                    self.refused_with_retry_after.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                self.unexpected
                    .lock()
                    .unwrap()
                    .push(format!("seq {seq}: {status} {text}"));
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    async fn finish(&self, task: tokio::task::JoinHandle<()>) {
        self.stop.store(true, Ordering::SeqCst);
        task.await.expect("load task");
        let unexpected = self.unexpected.lock().unwrap();
        assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    }
}

/// Polls `check` until it holds, failing with `what` after [`DEADLINE`].
async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stored `/s/<seq>` pathnames with their row counts.
async fn stored(client: &clickhouse::Client) -> HashMap<u64, u64> {
    let rows: Vec<(String, u64)> = client
        .query("SELECT pathname, count() FROM events WHERE startsWith(pathname, '/s/') GROUP BY pathname")
        .fetch_all()
        .await
        .unwrap_or_default();
    rows.into_iter()
        .map(|(path, n)| {
            let seq = path[3..]
                .parse()
                .unwrap_or_else(|_| panic!("odd pathname {path}"));
            (seq, n)
        })
        .collect()
}

/// Waits until every acknowledged hit (minus `lost`, which the test destroyed on
/// purpose) is stored, then checks: exactly once each, nothing stored that was not
/// sent. Returns the stored counts.
async fn assert_exactly_once(
    client: &clickhouse::Client,
    load: &Load,
    lost: &BTreeSet<u64>,
) -> HashMap<u64, u64> {
    let acked: BTreeSet<u64> = load.acked_set().difference(lost).copied().collect();
    assert!(!acked.is_empty(), "no hit was acknowledged");
    let mut last = HashMap::new();
    wait_for("every acknowledged hit in ClickHouse", async || {
        last = stored(client).await;
        acked.iter().all(|s| last.contains_key(s))
    })
    .await;
    // Give a duplicate a chance to show: a final read after the spool drained.
    let rows = stored(client).await;
    let dups: Vec<_> = rows.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "stored more than once: {dups:?}");
    let sent = load.sent();
    assert!(rows.keys().all(|s| *s < sent), "rows that were never sent");
    for seq in lost {
        assert!(!rows.contains_key(seq), "destroyed hit {seq} was stored");
    }
    eprintln!(
        "sent {sent}, acknowledged {}, refused {}, connection errors {}, stored {}",
        load.acked(),
        load.refused(),
        load.errors.load(Ordering::SeqCst),
        rows.len()
    );
    rows
}

async fn metrics(h: &HushProcess) -> String {
    h.metrics().await
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

async fn spool_drained(h: &HushProcess) -> bool {
    metric(&metrics(h).await, "hush_spool_pending_records") == 0.0
}

/// Waits until `load` acknowledged `n` more hits than now.
async fn wait_acked(load: &Load, n: u64, what: &str) {
    let target = load.acked() + n;
    let started = Instant::now();
    while load.acked() < target {
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting for {what}: sent {}, acknowledged {}, refused {}, errors {}",
            load.sent(),
            load.acked(),
            load.refused(),
            load.errors.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg_attr(
    hush_external_clickhouse,
    ignore = "stops or freezes ClickHouse: needs a local launcher, and CLICKHOUSE_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_stopped_under_load_then_restarted_loses_nothing() {
    let mut w = World::own();
    let h = w.start_hush(&Opts::default());
    let load = Arc::new(Load::default());
    let task = load.spawn(h.url(""), 4, Duration::from_secs(120));
    wait_acked(&load, 100, "hits before the outage").await;

    blocking(|| w.ch().stop());
    wait_acked(&load, 200, "hits accepted while ClickHouse is down").await;
    let m = metrics(&h).await;
    assert!(metric(&m, "hush_spool_pending_records") > 0.0, "{m}");
    blocking(|| w.ch().start_again());
    wait_acked(&load, 100, "hits after the restart").await;
    load.finish(task).await;

    assert_exactly_once(&w.client(), &load, &BTreeSet::new()).await;
    let m = metrics(&h).await;
    assert!(
        metric(&m, "hush_writer_insert_failures_total") >= 1.0,
        "{m}"
    );
    wait_for("the spool to drain", async || spool_drained(&h).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hush_killed_under_load_loses_nothing_acknowledged() {
    let w = World::shared().await;
    let opts = Opts {
        fsync: "always",
        ..Opts::default()
    };
    let mut h = w.start_hush(&opts);
    let load = Arc::new(Load::default());
    let task = load.spawn(h.url(""), 4, Duration::from_secs(120));
    wait_acked(&load, 300, "hits before the crash").await;
    h.kill();
    // Requests now fail to connect; stop once the clients noticed.
    wait_for("clients to see the crash", async || {
        load.errors.load(Ordering::SeqCst) > 0
    })
    .await;
    load.finish(task).await;

    // Restart on the same spool: unacknowledged batches are replayed first, and the
    // ones ClickHouse already stored are dropped as duplicates by their token.
    let h = w.start_hush(&opts);
    let task = load.spawn(h.url(""), 4, Duration::from_secs(120));
    wait_acked(&load, 100, "hits after the restart").await;
    load.finish(task).await;

    assert_exactly_once(&w.client(), &load, &BTreeSet::new()).await;
    wait_for("the spool to drain", async || spool_drained(&h).await).await;
}

#[cfg_attr(
    hush_external_clickhouse,
    ignore = "stops or freezes ClickHouse: needs a local launcher, and CLICKHOUSE_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_clickhouse_does_not_block_hits_and_the_writer_recovers() {
    let mut w = World::own();
    let h = w.start_hush(&Opts {
        request_timeout_ms: 500,
        ..Opts::default()
    });
    let load = Arc::new(Load::default());
    let task = load.spawn(h.url(""), 4, Duration::from_secs(120));
    wait_acked(&load, 100, "hits before the hang").await;

    w.ch().pause();
    let failures_before = metric(&metrics(&h).await, "hush_writer_insert_failures_total");
    // Hits keep being answered while every insert hangs until its timeout.
    wait_acked(&load, 300, "hits answered while ClickHouse hangs").await;
    wait_for("the writer to time out and back off twice", async || {
        metric(&metrics(&h).await, "hush_writer_insert_failures_total") >= failures_before + 2.0
    })
    .await;
    let m = metrics(&h).await;
    assert!(metric(&m, "hush_spool_bytes") > 0.0, "{m}");
    assert!(metric(&m, "hush_spool_pending_records") > 0.0, "{m}");
    assert!(h.log().contains("retrying with the same batch"));

    w.ch().resume();
    wait_acked(&load, 100, "hits after the hang").await;
    load.finish(task).await;
    assert_exactly_once(&w.client(), &load, &BTreeSet::new()).await;
    wait_for("the spool to drain", async || spool_drained(&h).await).await;
}

#[cfg_attr(
    hush_external_clickhouse,
    ignore = "stops or freezes ClickHouse: needs a local launcher, and CLICKHOUSE_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_with_retry_after_and_loses_nothing() {
    let mut w = World::own();
    let h = w.start_hush(&Opts {
        segment_bytes: 16 * 1024,
        max_bytes: 64 * 1024,
        ..Opts::default()
    });
    blocking(|| w.ch().stop());
    let load = Arc::new(Load::default());
    let task = load.spawn(h.url(""), 4, Duration::from_secs(120));
    wait_for("the spool to fill up", async || load.refused() >= 50).await;
    let acked_while_down = load.acked();
    assert!(acked_while_down > 0, "nothing fit into the spool");
    let m = metrics(&h).await;
    assert!(metric(&m, "hush_spool_full_rejections_total") > 0.0, "{m}");
    assert!(
        metric(&m, "hush_hits_rejected_total{reason=\"queue_full\"}") > 0.0,
        "{m}"
    );
    assert_eq!(
        load.refused_with_retry_after.load(Ordering::SeqCst),
        load.refused(),
        "every 503 carries Retry-After"
    );

    load.finish(task).await;

    // ClickHouse comes back: the spool drains and hits are accepted again.
    blocking(|| w.ch().start_again());
    wait_for("the spool to drain", async || spool_drained(&h).await).await;
    let refused = load.refused();
    let task = load.spawn(h.url(""), 4, Duration::from_secs(120));
    wait_acked(&load, 100, "hits accepted after the drain").await;
    load.finish(task).await;
    assert!(
        load.refused() - refused < 10,
        "still refusing after the drain: {}",
        load.refused() - refused
    );
    assert_exactly_once(&w.client(), &load, &BTreeSet::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_within_the_deadline_and_loses_nothing() {
    let w = World::shared().await;
    let opts = Opts {
        shutdown_timeout_ms: 30_000,
        ..Opts::default()
    };
    let mut h = w.start_hush(&opts);
    let load = Arc::new(Load::default());
    let task = load.spawn(h.url(""), 4, Duration::from_secs(120));
    wait_acked(&load, 300, "hits before SIGTERM").await;
    let status = blocking(|| h.terminate(Duration::from_secs(60)));
    load.finish(task).await;
    assert!(status.success(), "exit {status}:\n{}", h.log());
    assert!(h.log().contains("shutdown complete"), "{}", h.log());
    // Drained, not left behind: the spool holds nothing pending.
    let left = Spool::inspect(&w.spool_dir()).expect("inspect spool");
    assert_eq!(left.pending_records, 0, "{left:?}");
    assert_exactly_once(&w.client(), &load, &BTreeSet::new()).await;
}

/// A minimal stored row with pathname `/s/<seq>`.
fn row(seq: u64) -> EventRow {
    EventRow {
        site: Arc::from("example.com"),
        timestamp: 1_750_000_000,
        name: "pageview".into(),
        visitor_id: seq,
        session_id: seq,
        entry_page: format!("/s/{seq}").into(),
        hostname: "example.com".into(),
        pathname: format!("/s/{seq}"),
        browser: Arc::from("Firefox"),
        browser_version: Arc::from("133.0"),
        os: Arc::from("Linux"),
        device: "desktop",
        ..EventRow::default()
    }
}

fn encoded(seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    hush::pipeline::rowbinary::encode_event(&row(seq), &mut out);
    out
}

fn open_spool(dir: &Path) -> Spool {
    let cfg = SpoolConfig {
        dir: Some(dir.to_owned()),
        fsync: FsyncPolicy::Always,
        ..SpoolConfig::default()
    };
    Spool::open(&cfg, &mut Registry::default()).expect("open spool")
}

/// The dedup proof: a batch ClickHouse stored but whose acknowledgement never happened
/// (a crash between the insert and the ack) is replayed by the next `hush serve` with
/// the same token, and ClickHouse keeps one copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stored_before_the_crash_is_not_stored_twice_on_replay() {
    let w = World::shared().await;
    // Start once so the schema exists, then stop cleanly.
    let mut h = w.start_hush(&Opts::default());
    let status = blocking(|| h.terminate(Duration::from_secs(60)));
    assert!(status.success(), "hush exited with {status}:\n{}", h.log());

    let seqs: Vec<u64> = (1_000_000..1_000_040).collect();
    let spool = open_spool(&w.spool_dir());
    let records: Vec<Vec<u8>> = seqs.iter().map(|&s| encoded(s)).collect();
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    spool.append(&refs).await.expect("append");
    let batch = spool
        .next_batch(1_000)
        .await
        .expect("cut")
        .expect("a batch");
    assert_eq!(batch.records(), 40);
    // Exactly what the writer does, then "crash" before the ack.
    let client = w.client().with_validation(false);
    hush::pipeline::writer::insert_payload(
        &client,
        "events",
        batch.token(),
        batch.payload().clone(),
        Duration::from_secs(30),
    )
    .await
    .expect("insert");
    let token = batch.token().to_owned();
    let payload = batch.payload().clone();
    drop(batch);
    blocking(|| spool.close_blocking());
    drop(spool);
    let on_disk = Spool::inspect(&w.spool_dir()).expect("inspect");
    assert_eq!(
        (on_disk.pending_records, on_disk.replay_batches),
        (40, 1),
        "the stored batch is still pending in the spool"
    );

    let h = w.start_hush(&Opts::default());
    wait_for("the replay", async || spool_drained(&h).await).await;
    let rows = stored(&w.client()).await;
    assert_eq!(rows.len(), 40);
    assert!(rows.values().all(|&n| n == 1), "duplicates: {rows:?}");
    assert!(
        metric(&metrics(&h).await, "hush_writer_rows_inserted_total") >= 40.0,
        "the replay did insert (and ClickHouse dropped it as a duplicate)"
    );

    // The control: the same bytes under another token are a new batch and counted,
    // so the check above could fail.
    hush::pipeline::writer::insert_payload(
        &client,
        "events",
        &format!("{token}-other"),
        payload,
        Duration::from_secs(30),
    )
    .await
    .expect("insert");
    assert!(stored(&w.client()).await.values().all(|&n| n == 2));
}

/// Offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list spool")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

#[cfg_attr(
    hush_external_clickhouse,
    ignore = "stops or freezes ClickHouse: needs a local launcher, and CLICKHOUSE_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_and_a_flipped_bit_are_handled_on_restart() {
    let mut w = World::own();
    let opts = Opts {
        fsync: "always",
        ..Opts::default()
    };
    let mut h = w.start_hush(&opts);
    // ClickHouse is down, so every acknowledged hit stays in the spool.
    blocking(|| w.ch().stop());
    let load = Arc::new(Load::default());
    let http = reqwest::Client::new();
    for _ in 0..60 {
        let seq = load.next_seq.fetch_add(1, Ordering::SeqCst);
        load.send(&http, &h.url(""), seq).await;
    }
    assert_eq!(load.acked(), 60, "{:?}", load.unexpected.lock().unwrap());
    h.kill();

    // Damage the spool like a crash and a bad disk would.
    let segs = segments(&w.spool_dir());
    let with_records: Vec<&PathBuf> = segs
        .iter()
        .filter(|p| std::fs::metadata(p).map(|m| m.len() > 16).unwrap_or(false))
        .collect();
    assert_eq!(with_records.len(), 1, "{segs:?}");
    let seg = with_records[0].clone();
    let mut bytes = std::fs::read(&seg).expect("read segment");
    // A flipped bit in the pathname of a record in the middle.
    let victim = 30u64;
    // Every hit is one record; its pathname is followed by the empty referrer (0x00).
    let at = find(&bytes, format!("/s/{victim}\x00").as_bytes()).expect("victim record");
    bytes[at + 1] ^= 0x01;
    std::fs::write(&seg, &bytes).expect("write segment");
    // A torn tail on the last segment: a frame header promising 200 bytes, then 10.
    let last = segs.last().expect("a segment").clone();
    let mut tail = std::fs::read(&last).expect("read last");
    tail.extend_from_slice(&200u32.to_le_bytes());
    tail.extend_from_slice(&[0xAB; 14]);
    std::fs::write(&last, &tail).expect("write last");

    blocking(|| w.ch().start_again());
    let h = w.start_hush(&opts);
    wait_for("the replay", async || spool_drained(&h).await).await;
    let lost = BTreeSet::from([victim]);
    let rows = assert_exactly_once(&w.client(), &load, &lost).await;
    assert_eq!(rows.len(), 59, "every intact record delivered");

    let m = metrics(&h).await;
    assert!(
        metric(&m, "hush_spool_quarantined_records_total") >= 1.0,
        "{m}"
    );
    assert!(metric(&m, "hush_spool_torn_tail_total") >= 1.0, "{m}");
    let quarantined: Vec<_> = std::fs::read_dir(w.spool_dir().join("quarantine"))
        .expect("quarantine dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(!quarantined.is_empty(), "no quarantine file");

    // `hush spool status` reads the same, while serve runs.
    let (ok, out, err) = hush_process::run_hush(
        &[
            "spool",
            "status",
            "--json",
            "--dir",
            w.spool_dir().to_str().expect("utf-8 path"),
        ],
        None,
    );
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(status["pending_records"], 0, "{status}");
    assert!(status["quarantined_files"].as_u64() >= Some(1), "{status}");
    // Drained, and nothing appended since the restart: no segment (the first new
    // append creates one); whatever is there is what the status counts.
    assert_eq!(
        status["segments"].as_u64(),
        Some(segments(&w.spool_dir()).len() as u64),
        "{status}"
    );
}

/// A record ClickHouse refuses for its content: the first column's length says 4 GiB,
/// beyond any string (`TOO_LARGE_STRING_SIZE`). (A short record would be a body that
/// ends early, `CANNOT_READ_ALL_DATA`, which is retried as transient.)
const BAD_ROW: &[u8] = b"\xff\xff\xff\xff\x0fbad";

/// A batch ClickHouse refuses for its content does not block the rows behind it: it
/// becomes a dead-letter file, counted and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_clickhouse_refuses_becomes_a_dead_letter_and_the_rest_flows() {
    let w = World::shared().await;
    let mut h = w.start_hush(&Opts::default());
    let status = blocking(|| h.terminate(Duration::from_secs(60)));
    assert!(status.success(), "hush exited with {status}:\n{}", h.log());

    // A record that is not a RowBinary row, in its own segment (batches never span
    // segments), then good rows in the next one.
    let spool = open_spool(&w.spool_dir());
    spool.append(&[BAD_ROW]).await.expect("append");
    blocking(|| spool.close_blocking());
    drop(spool);
    let spool = open_spool(&w.spool_dir());
    let good: Vec<Vec<u8>> = (0..10).map(encoded).collect();
    let refs: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
    spool.append(&refs).await.expect("append");
    blocking(|| spool.close_blocking());
    drop(spool);

    let h = w.start_hush(&Opts::default());
    wait_for("the good rows", async || {
        stored(&w.client()).await.len() == 10
    })
    .await;
    wait_for("the spool to drain", async || spool_drained(&h).await).await;
    let m = metrics(&h).await;
    assert_eq!(
        metric(&m, "hush_writer_dead_letter_batches_total"),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "hush_writer_dead_letter_rows_total"), 1.0, "{m}");
    let dead: Vec<PathBuf> = std::fs::read_dir(w.spool_dir().join("quarantine"))
        .expect("quarantine dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rowbinary"))
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(std::fs::read(&dead[0]).expect("dead letter"), BAD_ROW);
    let note = std::fs::read_to_string(dead[0].with_extension("txt")).expect("note");
    assert!(note.contains("Code: "), "{note}");
    assert!(h.log().contains("dead-letter file"), "{}", h.log());
    assert!(stored(&w.client()).await.values().all(|&n| n == 1));
}

/// `/ready`'s status and JSON body.
async fn ready(h: &HushProcess) -> (u16, serde_json::Value) {
    let resp = reqwest::get(h.url("/ready")).await.expect("GET /ready");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("/ready answers JSON"))
}

/// Lines of `log` that contain every one of `words`.
fn lines_with(log: &str, words: &[&str]) -> usize {
    log.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

/// `hush erase` runs beside `serve`, so it cannot wait for the spool as the admin API
/// does: it says so when the configured spool still holds rows (they are stored after
/// the erasure), and says nothing once the spool is drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hush_erase_warns_about_rows_still_in_the_spool() {
    let w = World::shared().await;
    let mut h = w.start_hush(&Opts::default());
    let status = blocking(|| h.terminate(Duration::from_secs(60)));
    assert!(status.success(), "hush exited with {status}:\n{}", h.log());
    let config = w.hush_dir().join("hush.toml");
    let erase = || {
        hush_process::run_hush(
            &["erase", "--site", "example.com", "--visitor-id", "3"],
            Some(&config),
        )
    };
    let (ok, out, err) = erase();
    assert!(ok, "{err}");
    assert!(out.contains("erased 0 rows"), "{out}");
    assert!(!err.contains("warning"), "{err}");

    let spool = open_spool(&w.spool_dir());
    let records: Vec<Vec<u8>> = (0..3).map(encoded).collect();
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    spool.append(&refs).await.expect("append");
    blocking(|| spool.close_blocking());
    drop(spool);
    let (ok, _, err) = erase();
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: the spool in") && err.contains("holds 3 rows not yet stored"),
        "{err}"
    );
}

/// Issue 16, item 15, through `hush serve`: an erasure sent while ClickHouse is down
/// and the hits it is about wait in the spool waits for them, then erases them with
/// the rest, so none lands after "0 remain".
#[cfg_attr(
    hush_external_clickhouse,
    ignore = "stops or freezes ClickHouse: needs a local launcher, and CLICKHOUSE_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_during_an_outage_waits_for_the_spooled_hits_and_erases_them() {
    let mut w = World::own();
    let h = w.start_hush(&Opts::default());
    let http = reqwest::Client::new();
    let hit = |path: String, uid: &str| {
        let body = serde_json::json!({
            "n": "pageview", "u": format!("http://example.com{path}"), "d": "example.com",
            "p": {"uid": uid},
        });
        http.post(h.url("/api/event"))
            .header("content-type", "text/plain")
            .header("user-agent", UA)
            .body(body.to_string())
            .send()
    };
    // Stored before the outage: 3 of the subject's, 2 of someone else's.
    for i in 0..5 {
        let uid = if i < 3 { "h-subject" } else { "h-other" };
        assert_eq!(
            hit(format!("/before/{i}"), uid).await.unwrap().status(),
            202
        );
    }
    let client = w.client();
    let count = async |sql: &str| -> u64 {
        client
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or(u64::MAX)
    };
    wait_for("the first hits stored", async || {
        count("SELECT count() FROM events").await == 5
    })
    .await;

    blocking(|| w.ch().stop());
    for i in 0..4 {
        let uid = if i % 2 == 0 { "h-subject" } else { "h-other" };
        assert_eq!(
            hit(format!("/during/{i}"), uid).await.unwrap().status(),
            202
        );
    }
    let erase = tokio::spawn(
        reqwest::Client::new()
            .post(h.admin_url("/admin/v1/erase"))
            .bearer_auth(hush_process::ADMIN_TOKEN)
            .body(r#"{"site":"example.com","props":{"uid":"h-subject"}}"#)
            .send(),
    );
    h.wait_for_log("erasure waits for the rows accepted before it", DEADLINE);
    blocking(|| w.ch().start_again());
    let resp = erase.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let report: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(report["rows_before"], 3 + 2, "{report}");
    assert_eq!(report["rows_after"], 0, "{report}");
    wait_for("the spool to drain", async || spool_drained(&h).await).await;
    let subject = "SELECT count() FROM events WHERE props['uid'] = 'h-subject'";
    assert_eq!(
        count(subject).await,
        0,
        "a spooled hit landed after the erasure"
    );
    assert_eq!(count("SELECT count() FROM events").await, 2 + 2);
}

#[cfg_attr(
    hush_external_clickhouse,
    ignore = "stops or freezes ClickHouse: needs a local launcher, and CLICKHOUSE_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hush_started_while_clickhouse_is_down_spools_then_stores_every_hit_once() {
    let mut w = World::own();
    // A ClickHouse that never saw hush: no database, no schema.
    blocking(|| w.ch().stop());
    let h = w.start_hush(&Opts::default());
    assert!(
        h.log().contains("ClickHouse is not available at start"),
        "{}",
        h.log()
    );
    // Ready: the spool keeps what it is sent; the body tells the store's state.
    let (status, body) = ready(&h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["store"], &body["buffer"]),
        (&"connecting".into(), &"spool".into())
    );
    assert_eq!(metric(&metrics(&h).await, "hush_store_up"), 0.0);

    let load = Arc::new(Load::default());
    let task = load.spawn(h.url(""), 4, Duration::from_secs(120));
    wait_acked(&load, 300, "hits accepted while ClickHouse is down").await;
    let m = metrics(&h).await;
    assert!(metric(&m, "hush_spool_pending_records") > 0.0, "{m}");
    assert_eq!(metric(&m, "hush_writer_rows_inserted_total"), 0.0, "{m}");
    assert_eq!(
        metric(&m, "hush_writer_insert_failures_total"),
        0.0,
        "nothing inserted before the schema: {m}"
    );

    blocking(|| w.ch().start_again());
    wait_for("the store to be up", async || {
        metric(&metrics(&h).await, "hush_store_up") == 1.0
    })
    .await;
    wait_acked(&load, 100, "hits after ClickHouse came").await;
    load.finish(task).await;
    assert_exactly_once(&w.client(), &load, &BTreeSet::new()).await;
    wait_for("the spool to drain", async || spool_drained(&h).await).await;
    let applied = wait::count(&w.client(), "SELECT count() FROM schema_migrations FINAL").await;
    assert_eq!(applied as usize, hush::store::migrate::migrations().len());
    let (status, body) = ready(&h).await;
    assert_eq!((status, &body["store"]), (200, &"up".into()), "{body}");
    // The wait was logged, not once per attempt.
    let log = h.log();
    let waits = lines_with(&log, &["waiting for ClickHouse to apply the schema"]);
    assert!((1..=3).contains(&waits), "{waits} wait lines:\n{log}");
    assert!(log.contains("storing the hits accepted meanwhile"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_spool_hush_refuses_to_start_unless_told_to_start_without_the_store() {
    // Nothing listens on port 1: ClickHouse is down for this test.
    let dir = temp_dir();
    let plain = test_config("http://127.0.0.1:1", None, "hush_down", "");
    let path = dir.path().join("hush.toml");
    std::fs::write(&path, &plain).expect("write config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env_remove("HUSH_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start hush");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("hush without a spool started while ClickHouse is down");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(!status.success());
    assert!(err.contains("cannot apply schema migrations"), "{err}");

    let told = test_config(
        "http://127.0.0.1:1",
        None,
        "hush_down",
        "[server]\nstart_without_store = true\n",
    );
    let h = HushProcess::start(&dir.path().join("told"), &told);
    // Accepted into memory, but not ready: those hits are not durable.
    let load = Load::default();
    load.send(&reqwest::Client::new(), &h.url(""), 1).await;
    assert_eq!(load.acked(), 1, "{:?}", load.unexpected.lock().unwrap());
    let (status, body) = ready(&h).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        (&body["store"], &body["buffer"], &body["reason"]),
        (
            &"connecting".into(),
            &"memory".into(),
            &"clickhouse not ready".into()
        )
    );
}

/// A small filesystem for the spool: a 2 MiB tmpfs where the machine lets us mount
/// one (root), else the spool's write-failure seam (`FAULT_ENV`; forced with
/// `HUSHTEST_FULL_DISK_SEAM=1`). Never a silent
/// pass: either way the disk refuses writes when the test fills it.
enum SmallDisk {
    /// Filled by the spool itself while ClickHouse is down, freed by its drain.
    Tmpfs(PathBuf),
    /// Filled and freed by creating and removing the seam's file.
    Seam(PathBuf),
}

impl SmallDisk {
    fn new(root: &Path) -> SmallDisk {
        let mnt = root.join("small-disk");
        std::fs::create_dir_all(&mnt).expect("mount point");
        // HUSHTEST_FULL_DISK_SEAM=1 takes the seam even where a mount would work.
        let mounted = std::env::var_os("HUSHTEST_FULL_DISK_SEAM").is_none()
            && std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
                .arg(&mnt)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if mounted {
            SmallDisk::Tmpfs(mnt)
        } else {
            eprintln!("cannot mount a tmpfs here: the full disk is the spool's write-failure seam");
            SmallDisk::Seam(root.join("disk-full"))
        }
    }

    fn spool_dir(&self, w: &World) -> PathBuf {
        match self {
            SmallDisk::Tmpfs(mnt) => mnt.join("spool"),
            SmallDisk::Seam(_) => w.spool_dir(),
        }
    }

    fn env(&self) -> Vec<(&'static str, &Path)> {
        match self {
            SmallDisk::Tmpfs(_) => Vec::new(),
            SmallDisk::Seam(file) => vec![(hush::pipeline::spool::FAULT_ENV, file.as_path())],
        }
    }

    fn fill(&self) {
        if let SmallDisk::Seam(file) = self {
            std::fs::write(file, b"").expect("create the fault file");
        }
    }

    fn free(&self) {
        if let SmallDisk::Seam(file) = self {
            std::fs::remove_file(file).expect("remove the fault file");
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let SmallDisk::Tmpfs(mnt) = self {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&*mnt)
                .status();
        }
    }
}

/// Waits until `load` saw `n` more 503s than now.
async fn wait_refused(load: &Load, n: u64, what: &str) {
    let target = load.refused() + n;
    wait_for(what, async || load.refused() >= target).await;
}

/// Checks the state of a full disk on `h`: the new reason, never `internal` or
/// `queue_full`, Retry-After on every 503, and a handful of log lines for thousands
/// of refusals.
async fn assert_refused_as_unwritable(h: &HushProcess, load: &Load) {
    let m = metrics(h).await;
    assert!(
        metric(&m, "hush_hits_rejected_total{reason=\"spool_unwritable\"}") > 0.0,
        "{m}"
    );
    assert!(
        metric(&m, "hush_spool_unwritable_rejections_total") > 0.0,
        "{m}"
    );
    for other in ["internal", "queue_full"] {
        let series = format!("hush_hits_rejected_total{{reason=\"{other}\"}}");
        assert!(!m.lines().any(|l| l.starts_with(&series)), "{series}:\n{m}");
    }
    assert_eq!(metric(&m, "hush_spool_full_rejections_total"), 0.0, "{m}");
    assert_eq!(
        load.refused_with_retry_after.load(Ordering::SeqCst),
        load.refused(),
        "every 503 carries Retry-After"
    );
    let log = h.log();
    let starts = lines_with(&log, &["the spool cannot write to its disk"]);
    assert!((1..=2).contains(&starts), "{starts} start lines:\n{log}");
    let loud = log
        .lines()
        .filter(|l| l.contains("spool") && (l.contains("ERROR") || l.contains("WARN")))
        .count();
    assert!(
        loud <= 10,
        "{loud} error/warning lines about the spool for {} refusals:\n{log}",
        load.refused()
    );
}

#[cfg_attr(
    hush_external_clickhouse,
    ignore = "stops or freezes ClickHouse: needs a local launcher, and CLICKHOUSE_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_hits_with_503_and_recovers_without_restart_even_after_sigkill() {
    let mut w = World::own();
    let disk = SmallDisk::new(w.dir.path());
    let opts = Opts {
        spool_dir: Some(disk.spool_dir(&w)),
        segment_bytes: 64 * 1024,
        // Far beyond the disk: the disk fills first.
        max_bytes: 256 << 20,
        ..Opts::default()
    };
    let start = |w: &World| {
        HushProcess::start_with_env(
            &w.hush_dir(),
            &config(w, &opts),
            "info,hush=debug",
            &disk.env(),
        )
    };
    let mut h = start(&w);
    let load = Arc::new(Load::default());
    let task = load.spawn(h.url(""), 4, Duration::from_secs(240));
    wait_acked(&load, 100, "hits before the disk fills").await;

    // ClickHouse goes, the spool grows until the disk is full.
    blocking(|| w.ch().stop());
    disk.fill();
    wait_refused(&load, 1_000, "the disk to refuse hits").await;
    assert_refused_as_unwritable(&h, &load).await;
    wait_for("/ready to send the traffic elsewhere", async || {
        let (status, body) = ready(&h).await;
        status == 503 && body["spool_writable"] == false
    })
    .await;

    // Space comes back (the spool drains into ClickHouse): hits are taken again, by
    // the same process.
    blocking(|| w.ch().start_again());
    disk.free();
    wait_acked(&load, 300, "hits accepted once the disk has room").await;
    wait_for("the end of the outage in the log", async || {
        h.log().contains("the spool writes to its disk again")
    })
    .await;
    // Each logged start has at most one logged end, which says what was refused.
    let log = h.log();
    let ends = lines_with(
        &log,
        &["the spool writes to its disk again", "refused_appends="],
    );
    let starts = lines_with(&log, &["the spool cannot write to its disk"]);
    assert!(
        ends >= 1 && ends <= starts,
        "{starts} starts, {ends} ends:
{log}"
    );

    // Full again, and killed while full.
    blocking(|| w.ch().stop());
    disk.fill();
    wait_refused(&load, 1_000, "the disk to refuse hits again").await;
    h.kill();
    wait_for("clients to see the crash", async || {
        load.errors.load(Ordering::SeqCst) > 0
    })
    .await;
    load.finish(task).await;

    // It starts on the full disk (ClickHouse still down), refuses what does not fit ...
    let h = start(&w);
    let task = load.spawn(h.url(""), 4, Duration::from_secs(240));
    wait_refused(&load, 200, "the restarted collector to refuse hits").await;
    assert_refused_as_unwritable(&h, &load).await;
    // ... replays and drains once ClickHouse is back, and takes hits again.
    blocking(|| w.ch().start_again());
    disk.free();
    wait_acked(&load, 300, "hits accepted after the restart on a full disk").await;
    load.finish(task).await;
    assert_exactly_once(&w.client(), &load, &BTreeSet::new()).await;
    wait_for("the spool to drain", async || spool_drained(&h).await).await;
}
