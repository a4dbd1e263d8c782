//! Hostile clients and overload against the real `hush serve` binary and ClickHouse.
//!
//! Each test starts a collector with small limits (64 connections, 1 s header read
//! timeout, 32 HTTP/2 streams per connection), runs one attack from loopback with
//! bounded counts, and while it runs sends well-behaved hits. Afterwards the collector
//! must still answer `/health`, every good hit must be in ClickHouse, and its peak
//! resident memory (VmHWM) must stay under `RSS_LIMIT`: a bound on memory, not on
//! time. Deadlines only stop a broken build from hanging the suite.

#[path = "support/hush.rs"]
mod hush_process;
mod support;
#[path = "support/wait.rs"]
mod wait;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hush_process::{HushProcess, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(120);
/// Peak resident memory allowed to the collector under any of these attacks.
const RSS_LIMIT_KIB: u64 = 300 * 1024;
const MAX_CONNECTIONS: usize = 64;
const H2_STREAMS: u32 = 32;
/// Good hits sent during each attack.
const GOOD_HITS: usize = 20;

/// The in-flight limits and body timeout a collector runs with.
struct InFlightLimits {
    total: usize,
    per_connection: usize,
    body_read_timeout_ms: u64,
}

impl Default for InFlightLimits {
    fn default() -> Self {
        InFlightLimits {
            total: 256,
            per_connection: H2_STREAMS as usize,
            body_read_timeout_ms: 2000,
        }
    }
}

/// A running `hush serve` (the shared [`HushProcess`]) in a temporary directory that
/// lives as long as it does.
struct Collector {
    // Declared first so it is dropped (killed) before its directory is removed.
    hush: HushProcess,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start(db: &str) -> Collector {
        Self::start_with(db, &InFlightLimits::default())
    }

    fn start_with(db: &str, limits: &InFlightLimits) -> Collector {
        Self::start_with_extra(db, limits, "")
    }

    /// [`Collector::start_with`] plus more config (`[section]` tables not set here).
    fn start_with_extra(db: &str, limits: &InFlightLimits, extra: &str) -> Collector {
        let InFlightLimits {
            total,
            per_connection,
            body_read_timeout_ms,
        } = limits;
        let ch = support::clickhouse();
        let config = test_config(
            ch.url(),
            Some((ch.user(), ch.password())),
            db,
            &format!(
                r#"
[server]
max_connections = {MAX_CONNECTIONS}
max_in_flight_requests = {total}
max_in_flight_per_connection = {per_connection}
header_read_timeout_ms = 1000
body_read_timeout_ms = {body_read_timeout_ms}
keep_alive_timeout_ms = 5000
h2_max_concurrent_streams = {H2_STREAMS}
trusted_proxies = ["127.0.0.1/32"]
shutdown_timeout_ms = 5000
{extra}"#
            ),
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let hush = HushProcess::start_with_log_filter(dir.path(), &config, "info");
        Collector { hush, _dir: dir }
    }

    fn addr(&self) -> SocketAddr {
        self.hush.addr()
    }

    fn url(&self, path: &str) -> String {
        self.hush.url(path)
    }

    fn pid(&self) -> u32 {
        self.hush.pid()
    }

    /// Fails the test if the process died (with its log).
    fn assert_running(&mut self) {
        if let Some(status) = self.hush.try_wait() {
            panic!(
                "hush exited during the attack ({status}):\n{}",
                self.hush.log()
            );
        }
    }

    /// Peak resident set size so far, KiB.
    fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Open sockets of the process (listeners, client connections, ClickHouse).
    fn sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

fn good_body(tag: &str, i: usize) -> String {
    serde_json::json!({
        "name": "pageview",
        "url": format!("https://example.com/good/{tag}/{i}"),
        "domain": "example.com",
    })
    .to_string()
}

/// One well-behaved tracker hit (sendBeacon-style text/plain body, a real browser).
fn good_request(
    client: &reqwest::Client,
    addr: SocketAddr,
    tag: &str,
    i: usize,
) -> reqwest::RequestBuilder {
    client
        .post(format!("http://{addr}/api/event"))
        .header("content-type", "text/plain")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        )
        .header("x-forwarded-for", "203.0.113.9")
        .body(good_body(tag, i))
}

/// Sends one good hit, like a tracker would: a 503 (overload, with Retry-After) or a
/// connection refused/reset is retried until the deadline; anything else must be 202.
async fn send_good(client: &reqwest::Client, addr: SocketAddr, tag: &str, i: usize) {
    let started = Instant::now();
    loop {
        let result = good_request(client, addr, tag, i).send().await;
        match result {
            Ok(resp) if resp.status() == 202 => return,
            Ok(resp) if resp.status() == 503 => {}
            Ok(resp) => panic!("good hit {tag}/{i}: status {}", resp.status()),
            Err(err) => assert!(
                err.is_connect() || err.is_request() || err.is_timeout(),
                "good hit {tag}/{i}: {err}"
            ),
        }
        assert!(
            started.elapsed() < DEADLINE,
            "good hit {tag}/{i} not accepted in {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `GOOD_HITS` hits one after another on fresh connections (so they queue with
/// the attackers' connections at the accept limit).
async fn send_good_hits(addr: SocketAddr, tag: &str) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    for i in 0..GOOD_HITS {
        send_good(&client, addr, tag, i).await;
    }
}

/// After an attack: still healthy, every good hit stored, memory bounded.
async fn assert_survived(c: &mut Collector, db: &str, tag: &str) {
    c.assert_running();
    let health = reqwest::get(c.url("/health")).await.expect("health");
    assert_eq!(health.status(), 200);
    let ch = support::clickhouse().client(db);
    let sql = format!("SELECT count() FROM events WHERE pathname LIKE '/good/{tag}/%'");
    let started = Instant::now();
    loop {
        let n: u64 = ch.query(&sql).fetch_one().await.expect("count good hits");
        if n == GOOD_HITS as u64 {
            break;
        }
        assert!(
            n < GOOD_HITS as u64,
            "{n} good hits stored, sent {GOOD_HITS}"
        );
        assert!(
            started.elapsed() < DEADLINE,
            "{n} of {GOOD_HITS} good hits stored after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = c.peak_rss_kib();
    eprintln!("{tag}: peak RSS {} MiB", peak / 1024);
    assert!(
        peak < RSS_LIMIT_KIB,
        "{tag}: peak RSS {peak} KiB over {RSS_LIMIT_KIB} KiB"
    );
    c.assert_running();
}

/// Reads until the server closes the connection; the bytes it sent.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) if out.len() < 64 * 1024 => out.extend_from_slice(&buf[..n]),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("server kept the connection open");
    out
}

fn status_of(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_and_good_clients_served() {
    const SLOW: usize = 200;
    let db = support::clickhouse()
        .fresh_database("hostile_slowloris")
        .await;
    let mut c = Collector::start(&db);
    let addr = c.addr();
    let connected = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let connected = Arc::clone(&connected);
        slow.push(tokio::spawn(async move {
            // Connections beyond the accept limit wait in the kernel backlog.
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return (false, Vec::new());
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let head = b"POST /api/event HTTP/1.1\r\nHost: example.com\r\nX-Slow: ";
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            let started = Instant::now();
            for i in 0.. {
                let byte = head.get(i).copied().unwrap_or(b'a');
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return (true, got),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    },
                    _ = tick.tick() => {
                        if s.write_all(&[byte]).await.is_err() {
                            return (true, read_to_close(&mut s).await);
                        }
                    }
                }
                if started.elapsed() > DEADLINE {
                    break;
                }
            }
            (false, got)
        }));
    }
    let started = Instant::now();
    while connected.load(Ordering::Relaxed) < SLOW {
        assert!(started.elapsed() < DEADLINE, "slow clients did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The attack is on: good hits queue behind it and must still get through.
    let mut max_sockets = 0;
    let good = send_good_hits(addr, "slowloris");
    tokio::pin!(good);
    loop {
        tokio::select! {
            () = &mut good => break,
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                max_sockets = max_sockets.max(c.sockets());
            }
        }
    }
    for task in slow {
        let (closed, response) = task.await.expect("slow client task");
        assert!(closed, "a slow-header connection was never closed");
        // Closed without serving anything (hyper may answer 408 first).
        assert!(
            response.is_empty() || status_of(&response) == Some(408),
            "slow client got {:?}",
            String::from_utf8_lossy(&response)
        );
    }
    eprintln!("slowloris: at most {max_sockets} sockets open");
    // Accepted connections never exceed the limit (plus listeners and ClickHouse).
    assert!(
        max_sockets <= MAX_CONNECTIONS + 16,
        "{max_sockets} sockets open, limit {MAX_CONNECTIONS}"
    );
    assert_survived(&mut c, &db, "slowloris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_are_refused_without_buffering() {
    let db = support::clickhouse()
        .fresh_database("hostile_oversized")
        .await;
    let mut c = Collector::start(&db);
    let addr = c.addr();

    // One request head far over the 32 KiB limit: 431, or the connection closes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut head = b"GET /health HTTP/1.1\r\nHost: example.com\r\nX-Big: ".to_vec();
    head.resize(head.len() + 100 * 1024, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    let _ = s.write_all(&head).await;
    let resp = read_to_close(&mut s).await;
    assert!(
        resp.is_empty() || status_of(&resp) == Some(431),
        "{:?}",
        String::from_utf8_lossy(&resp)
    );

    // A declared body over the limit is refused before it is sent.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /api/event HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\n\
          Content-Length: 104857600\r\n\r\n{\"name\":",
    )
    .await
    .unwrap();
    let resp = read_to_close(&mut s).await;
    assert_eq!(
        status_of(&resp),
        Some(413),
        "{:?}",
        String::from_utf8_lossy(&resp)
    );

    // Many clients at once stream endless headers or endless chunked bodies (up to
    // 16 MiB each, 32 MiB for batches): each is cut off, and memory stays bounded.
    let mut tasks = Vec::new();
    for i in 0..48usize {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let (mut rd, mut wr) = s.split();
            let (first, filler): (Vec<u8>, &[u8]) = match i % 3 {
                0 => (
                    b"GET /health HTTP/1.1\r\nHost: example.com\r\nX-Big: ".to_vec(),
                    &[b'h'; 16 * 1024],
                ),
                1 => (
                    b"POST /api/event HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\n\
                      Transfer-Encoding: chunked\r\n\r\n"
                        .to_vec(),
                    b"4000\r\n",
                ),
                _ => (
                    b"POST /api/events HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/json\r\n\
                      Transfer-Encoding: chunked\r\n\r\n"
                        .to_vec(),
                    b"4000\r\n",
                ),
            };
            let chunk: Vec<u8> = if filler.len() > 16 {
                filler.to_vec()
            } else {
                // A 16 KiB chunk of a JSON-ish body.
                let mut c = filler.to_vec();
                c.extend(std::iter::repeat_n(b' ', 0x4000));
                c.extend_from_slice(b"\r\n");
                c
            };
            let limit: usize = if i % 3 == 2 { 32 << 20 } else { 16 << 20 };
            let write = async {
                if wr.write_all(&first).await.is_err() {
                    return 0;
                }
                let mut sent = 0;
                while sent < limit {
                    if wr.write_all(&chunk).await.is_err() {
                        break;
                    }
                    sent += chunk.len();
                }
                sent
            };
            let mut resp = Vec::new();
            let read = async {
                let mut buf = [0u8; 4096];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => resp.extend_from_slice(&buf[..n]),
                    }
                }
            };
            let (sent, ()) = tokio::time::timeout(DEADLINE, async { tokio::join!(write, read) })
                .await
                .expect("oversized request not cut off");
            (i % 3, status_of(&resp), sent < limit)
        }));
    }
    let good = tokio::spawn(send_good_hits(addr, "oversized"));
    for task in tasks {
        let (kind, status, stopped_early) = task.await.expect("oversized client");
        match kind {
            0 => assert!(matches!(status, None | Some(431)), "head: {status:?}"),
            _ => assert_eq!(status, Some(413), "body kind {kind}"),
        }
        // The server stops reading instead of draining everything.
        assert!(
            stopped_early,
            "kind {kind}: the whole oversized request was read"
        );
    }
    good.await.expect("good hits");

    // Over HTTP/2 the body limit holds too.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(c.url("/api/event"))
        .header("content-type", "text/plain")
        .body(vec![b' '; 1 << 20])
        .send()
        .await
        .expect("h2 oversized body");
    assert_eq!(resp.status(), 413);
    assert_survived(&mut c, &db, "oversized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_flood_gets_400_while_good_hits_get_through() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 150;
    let db = support::clickhouse().fresh_database("hostile_json").await;
    let mut c = Collector::start(&db);
    let addr = c.addr();
    let mut deep = "[".repeat(200);
    deep.push_str(&"]".repeat(200));
    let bad: Arc<Vec<Vec<u8>>> = Arc::new(vec![
        b"{".to_vec(),
        b"{\"name\":".to_vec(),
        b"[1,2".to_vec(),
        b"nul".to_vec(),
        b"{\"n\":NaN,\"u\":\"https://example.com/\",\"d\":\"example.com\"}".to_vec(),
        b"{\"n\":\"pageview\",\"u\":\"https://example.com/\",\"d\":\"example.com\",}".to_vec(),
        b"{\"n\":\"x\",\"u\":\"https://example.com/\",\"d\":\"example.com\",\"p\":\"{not json\"}"
            .to_vec(),
        b"{\"n\":\"\\ud800\",\"u\":\"https://example.com/\",\"d\":\"example.com\"}".to_vec(),
        b"{\"n\":\"\xff\xfe\",\"u\":\"https://example.com/\",\"d\":\"example.com\"}".to_vec(),
        deep.into_bytes(),
        "{\"a\":".repeat(1_500).into_bytes(),
        Vec::new(),
    ]);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let bad = Arc::clone(&bad);
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            for i in 0..PER_TASK {
                let body = bad[(t + i) % bad.len()].clone();
                let resp = client
                    .post(format!("http://{addr}/api/event"))
                    .header("content-type", "application/json")
                    .header("x-forwarded-for", "198.51.100.66")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("invalid hit");
                assert_eq!(
                    resp.status(),
                    400,
                    "{:?}: {:?}",
                    String::from_utf8_lossy(&body),
                    resp.text().await
                );
            }
        }));
    }
    send_good_hits(addr, "json").await;
    for task in tasks {
        task.await.expect("flood task");
    }
    // Nothing from the flood was stored.
    let n: u64 = support::clickhouse()
        .client(&db)
        .query("SELECT count() FROM events WHERE pathname NOT LIKE '/good/%'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_survived(&mut c, &db, "json").await;
}

/// Appends one HTTP/2 frame.
fn h2_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap();
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

const H2_HEADERS: u8 = 0x1;
const H2_RST_STREAM: u8 = 0x3;
const H2_SETTINGS: u8 = 0x4;
const H2_GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// An HPACK header block from static-table entries and literals (no Huffman, no
/// dynamic table): `:method`, `:scheme http`, `:path`, `:authority`, and a
/// `content-type` for POST.
fn hpack_request(post: bool, path: &str) -> Vec<u8> {
    let mut b = vec![if post { 0x83 } else { 0x82 }, 0x86];
    // Literal without indexing, name = static index 4 (:path).
    b.push(0x04);
    b.push(u8::try_from(path.len()).unwrap());
    b.extend_from_slice(path.as_bytes());
    // Literal without indexing, name = static index 1 (:authority).
    b.push(0x01);
    b.push(11);
    b.extend_from_slice(b"example.com");
    if post {
        // Name = static index 31 (content-type): 4-bit prefix 15, then 16.
        b.extend_from_slice(&[0x0f, 0x10, 10]);
        b.extend_from_slice(b"text/plain");
    }
    b
}

/// Frames the server sent, by type.
#[derive(Debug, Default)]
struct H2Seen {
    headers: usize,
    resets: usize,
    /// Error codes of RST_STREAM frames (REFUSED_STREAM = 7, ...), deduplicated.
    reset_codes: Vec<u32>,
    /// Error code of the GOAWAY frame, if one came (ENHANCE_YOUR_CALM = 11).
    goaway: Option<u32>,
}

fn h2_parse(bytes: &[u8]) -> H2Seen {
    let mut seen = H2Seen::default();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        let code = |offset: usize| {
            bytes
                .get(at + 9 + offset..at + 13 + offset)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match bytes[at + 3] {
            H2_HEADERS => seen.headers += 1,
            H2_RST_STREAM => {
                seen.resets += 1;
                if let Some(code) = code(0)
                    && !seen.reset_codes.contains(&code)
                {
                    seen.reset_codes.push(code);
                }
            }
            H2_GOAWAY => seen.goaway = code(4),
            _ => {}
        }
        at += 9 + len;
    }
    seen
}

/// Runs one raw HTTP/2 connection: the preface, then `frames` written in pieces of
/// `piece` bytes (stopping when the server closes), then reads until the server
/// closes the connection. Returns what the server sent.
async fn h2_attack(addr: SocketAddr, frames: Vec<u8>, piece: usize) -> H2Seen {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = s.split();
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2_frame(&mut preface, H2_SETTINGS, 0, 0, &[]);
    let write = async {
        if wr.write_all(&preface).await.is_err() {
            return;
        }
        for chunk in frames.chunks(piece) {
            if wr.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) if got.len() < 16 << 20 => got.extend_from_slice(&buf[..n]),
                Ok(_) => {}
            }
        }
    };
    // The server must end the connection itself: the client never closes it and never
    // acknowledges a PING, so this also checks that idle attackers are dropped.
    tokio::time::timeout(DEADLINE, async { tokio::join!(write, read) })
        .await
        .expect("server kept an attacking h2 connection open");
    h2_parse(&got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_stream_floods_and_rapid_resets_leave_the_server_serving() {
    const CONNS: usize = 4;
    const FLOOD_STREAMS: u32 = 500;
    const RESETS: u32 = 5_000;
    let db = support::clickhouse().fresh_database("hostile_h2").await;
    let mut c = Collector::start(&db);
    let addr = c.addr();
    // Control: the same hand-made frames, used politely, are valid requests.
    let mut polite = Vec::new();
    h2_frame(
        &mut polite,
        H2_HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &hpack_request(false, "/health"),
    );
    let seen = h2_attack(addr, polite, 1024).await;
    assert_eq!((seen.headers, seen.resets), (1, 0), "{seen:?}");
    let mut attacks = Vec::new();
    for _ in 0..CONNS {
        // Far more open streams than allowed, each waiting for a body that never comes.
        let mut flood = Vec::new();
        let block = hpack_request(true, "/api/event");
        for n in 0..FLOOD_STREAMS {
            h2_frame(&mut flood, H2_HEADERS, END_HEADERS, 2 * n + 1, &block);
        }
        attacks.push((true, tokio::spawn(h2_attack(addr, flood, 64 * 1024))));
        // Rapid reset: open a stream and cancel it at once, thousands of times.
        let mut resets = Vec::new();
        let block = hpack_request(false, "/health");
        for n in 0..RESETS {
            h2_frame(
                &mut resets,
                H2_HEADERS,
                END_HEADERS | END_STREAM,
                2 * n + 1,
                &block,
            );
            h2_frame(
                &mut resets,
                H2_RST_STREAM,
                0,
                2 * n + 1,
                &8u32.to_be_bytes(),
            );
        }
        attacks.push((false, tokio::spawn(h2_attack(addr, resets, 4 * 1024))));
    }
    send_good_hits(addr, "h2").await;
    // Good HTTP/2 clients are served next to the attackers.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..5 {
        let resp = h2.get(c.url("/health")).send().await.expect("h2 health");
        assert!(
            matches!(resp.status().as_u16(), 200 | 503),
            "{}",
            resp.status()
        );
    }
    for (flood, task) in attacks {
        let seen = task.await.expect("attack task");
        eprintln!(
            "h2 {}: {seen:?}",
            if flood { "stream flood" } else { "rapid reset" }
        );
        if flood {
            // At most the stream limit was ever served; the rest were refused.
            assert!(
                seen.headers <= H2_STREAMS as usize,
                "{} streams answered, limit {H2_STREAMS}",
                seen.headers
            );
            // Excess streams are refused (REFUSED_STREAM = 7), and a client that keeps
            // making the server reset streams is sent away (ENHANCE_YOUR_CALM = 11).
            assert!(seen.reset_codes.contains(&7), "{seen:?}");
            assert_eq!(seen.goaway, Some(11), "{seen:?}");
        }
    }
    assert_survived(&mut c, &db, "h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_and_the_server_stays_up() {
    const CONNS: usize = 300;
    let db = support::clickhouse().fresh_database("hostile_conns").await;
    let mut c = Collector::start(&db);
    let addr = c.addr();
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        tasks.push(tokio::spawn(async move {
            // Connect, ask once, then hold the connection open until the server closes it.
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return None;
            };
            if s.write_all(b"GET /health HTTP/1.1\r\nHost: example.com\r\n\r\n")
                .await
                .is_err()
            {
                return None;
            }
            Some(status_of(&read_to_close(&mut s).await))
        }));
    }
    let mut max_sockets = 0;
    let good = send_good_hits(addr, "conns");
    tokio::pin!(good);
    loop {
        tokio::select! {
            () = &mut good => break,
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                max_sockets = max_sockets.max(c.sockets());
            }
        }
    }
    let mut served = 0;
    for task in tasks {
        match task.await.expect("connection task") {
            Some(Some(200)) => served += 1,
            // Refused or reset while waiting: allowed, as long as the server stays up.
            None | Some(None) => {}
            Some(other) => panic!("unexpected answer {other:?}"),
        }
    }
    eprintln!("conns: {served} of {CONNS} served, at most {max_sockets} sockets open");
    assert!(
        served >= MAX_CONNECTIONS,
        "only {served} connections served"
    );
    assert!(
        max_sockets <= MAX_CONNECTIONS + 16,
        "{max_sockets} sockets open, limit {MAX_CONNECTIONS}"
    );
    assert_survived(&mut c, &db, "conns").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_clients_that_never_read_are_dropped() {
    const CONNS: usize = 32;
    let db = support::clickhouse()
        .fresh_database("hostile_pipeline")
        .await;
    let mut c = Collector::start(&db);
    let addr = c.addr();
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            // Requests pipelined without ever reading an answer: the server's writes
            // stall, then it stops reading, then (idle, write stuck) it must drop us.
            let batch = b"GET /health HTTP/1.1\r\nHost: example.com\r\n\r\n".repeat(100);
            let mut sent = 0usize;
            let write = async {
                while sent < 256 << 20 {
                    if s.write_all(&batch).await.is_err() {
                        return true;
                    }
                    sent += batch.len();
                }
                false
            };
            tokio::time::timeout(DEADLINE, write)
                .await
                .expect("server kept a non-reading client open")
        }));
    }
    send_good_hits(addr, "pipeline").await;
    for task in tasks {
        assert!(
            task.await.expect("pipelining client"),
            "server read 256 MiB of pipelined requests nobody read answers to"
        );
    }
    assert_survived(&mut c, &db, "pipeline").await;
}

/// One HTTP/2 connection (hyper's client, which answers SETTINGS and PINGs like a real
/// client) that opens `streams` POSTs whose bodies never come. Counts the streams the
/// server answered (each must be a 503: over the connection's share or the pool) and
/// sets `closed` when the connection ends.
async fn h2_stalled_streams(
    addr: SocketAddr,
    streams: u32,
    answered: Arc<AtomicUsize>,
    closed: Arc<std::sync::atomic::AtomicBool>,
) {
    use http_body_util::StreamBody;
    use hyper::body::{Bytes, Frame};
    type Stalled =
        StreamBody<futures_util::stream::Pending<Result<Frame<Bytes>, std::convert::Infallible>>>;
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (sender, conn) = hyper::client::conn::http2::handshake::<_, _, Stalled>(
        hyper_util::rt::TokioExecutor::new(),
        io,
    )
    .await
    .expect("h2 handshake");
    let mut requests = Vec::new();
    for n in 0..streams {
        let mut sender = sender.clone();
        let answered = Arc::clone(&answered);
        let req = http::Request::post(format!("http://{addr}/api/event"))
            .header("content-type", "text/plain")
            .header("x-forwarded-for", format!("198.51.100.{}", n % 200))
            .body(StreamBody::new(futures_util::stream::pending()))
            .expect("request");
        requests.push(tokio::spawn(async move {
            if let Ok(resp) = sender.send_request(req).await {
                assert_eq!(resp.status(), 503, "stalled stream answered");
                answered.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let _ = conn.await;
    closed.store(true, Ordering::SeqCst);
    for r in requests {
        r.abort();
    }
}

/// Sends one good hit that must be accepted at once: no 503, no retry.
async fn send_good_now(client: &reqwest::Client, addr: SocketAddr, tag: &str, i: usize) {
    let resp = good_request(client, addr, tag, i)
        .send()
        .await
        .unwrap_or_else(|err| panic!("good hit {tag}/{i}: {err}"));
    assert_eq!(
        resp.status(),
        202,
        "good hit {tag}/{i} during the stalled-stream attack"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_h2_streams_cannot_take_every_in_flight_slot() {
    const CONNS: usize = 8;
    const PER_CONNECTION: usize = 4;
    const TOTAL: usize = 64;
    // Fair shares fit in the pool; streams on all connections together do not.
    const _: () = assert!(CONNS * PER_CONNECTION < TOTAL);
    const _: () = assert!(CONNS * H2_STREAMS as usize > TOTAL);
    let db = support::clickhouse().fresh_database("hostile_stall").await;
    // Stalled bodies hold their slot far longer than the good hits take, so the attack
    // is still in place while they are sent (checked below, not assumed).
    let mut c = Collector::start_with(
        &db,
        &InFlightLimits {
            total: TOTAL,
            per_connection: PER_CONNECTION,
            body_read_timeout_ms: 60_000,
        },
    );
    let addr = c.addr();
    let mut attackers = Vec::new();
    for _ in 0..CONNS {
        let answered = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(h2_stalled_streams(
            addr,
            H2_STREAMS,
            Arc::clone(&answered),
            Arc::clone(&closed),
        ));
        attackers.push((answered, closed, task));
    }
    let answered = |attackers: &[(Arc<AtomicUsize>, _, _)]| -> Vec<usize> {
        attackers
            .iter()
            .map(|(a, _, _)| a.load(Ordering::SeqCst))
            .collect()
    };
    // Wait until at most TOTAL streams are unanswered: without a per-connection share,
    // that is the moment the stalled streams hold every slot of the pool.
    let started = Instant::now();
    loop {
        let total: usize = answered(&attackers).iter().sum();
        if total + TOTAL >= CONNS * H2_STREAMS as usize {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "stalled streams never settled: {:?} answered",
            answered(&attackers)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    for i in 0..GOOD_HITS {
        send_good_now(&client, addr, "stall", i).await;
    }
    // The attack was in place all along: every attacking connection is still open.
    for (_, closed, _) in &attackers {
        assert!(
            !closed.load(Ordering::SeqCst),
            "an attacking connection ended before the good hits were sent"
        );
    }
    // No connection ever held more than its share: all its other streams got 503.
    let started = Instant::now();
    loop {
        let per_conn = answered(&attackers);
        if per_conn
            .iter()
            .all(|&n| n + PER_CONNECTION >= H2_STREAMS as usize)
        {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "a connection holds more than {PER_CONNECTION} streams: {per_conn:?} answered \
             of {H2_STREAMS} each"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (_, _, task) in attackers {
        task.abort();
    }
    assert_survived(&mut c, &db, "stall").await;
}

/// A new visitor per request (a fresh User-Agent each time), each landing on the
/// longest page the default limits allow: 1,975 emoji in the URL (8 KB of body)
/// become a 23,701-byte percent-encoded path. Without a byte bound the visit tracker
/// keeps every entry page (its count bound is a million visits): 10,000 of them are
/// 237 MB, and the collector peaked at 367 MiB that way (94 MiB with the bound). The
/// flood retries a 503 like a tracker, so every flood hit is accepted and stored in
/// the end; the memory queue is kept small, so what it holds stays small next to
/// the tracker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_visitors_with_long_entry_pages_cannot_exhaust_memory() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 1_250;
    const EMOJI: usize = 1_975;
    let db = support::clickhouse().fresh_database("hostile_visits").await;
    let mut c = Collector::start_with_extra(
        &db,
        &InFlightLimits::default(),
        "[writer]\nqueue_capacity = 1000\nbatch_rows = 500\n",
    );
    let addr = c.addr();
    let body = Arc::new(
        serde_json::json!({
            "n": "pageview",
            "u": format!("https://example.com/{}", "\u{1F600}".repeat(EMOJI)),
            "d": "example.com",
        })
        .to_string(),
    );
    assert!(body.len() <= 8 * 1024, "{} bytes of body", body.len());
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let body = Arc::clone(&body);
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            for i in 0..PER_TASK {
                let started = Instant::now();
                loop {
                    let resp = client
                        .post(format!("http://{addr}/api/event"))
                        .header("content-type", "text/plain")
                        .header(
                            "user-agent",
                            format!("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.{t}.{i}"),
                        )
                        .header("x-forwarded-for", "198.51.100.66")
                        .body(body.as_bytes().to_vec())
                        .send()
                        .await
                        .expect("flood hit");
                    match resp.status().as_u16() {
                        202 => break,
                        503 => tokio::time::sleep(Duration::from_millis(20)).await,
                        other => panic!("flood hit: status {other}"),
                    }
                    assert!(started.elapsed() < DEADLINE, "flood hit not accepted");
                }
            }
        }));
    }
    send_good_hits(addr, "visits").await;
    for task in tasks {
        task.await.expect("flood task");
    }
    let ch = support::clickhouse().client(&db);
    let flood = (TASKS * PER_TASK) as u64;
    let stored = "SELECT count() FROM events WHERE pathname NOT LIKE '/good/%'";
    wait::wait_for_count(&ch, stored, flood, DEADLINE).await;
    // Every flood hit was a new visit.
    let visits: u64 = wait::count(
        &ch,
        "SELECT uniqExact(session_id) FROM events WHERE pathname NOT LIKE '/good/%'",
    )
    .await;
    assert_eq!(visits, flood);
    assert_survived(&mut c, &db, "visits").await;
}
