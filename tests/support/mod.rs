//! Shared test fixture: a ClickHouse to test against.
//!
//! Use from any integration test with `mod support;`:
//!
//! ```ignore
//! let ch = support::clickhouse();
//! let db = ch.fresh_database("sessions").await;
//! let client = ch.client(&db);
//! ```
//!
//! If `CLICKHOUSE_URL` is set (with optional `CLICKHOUSE_USER` and
//! `CLICKHOUSE_PASSWORD`), tests use that server. Otherwise the first call
//! starts one `scripts/local-clickhouse` per test binary, on a free port with
//! a temporary data directory; it exits with the test process. Every test
//! works in its own database, so tests run in parallel without interfering.
//!
//! Nothing is left behind: the local launcher's data directory goes with it, and on
//! an external server every database [`ClickHouse::fresh_database`] created is
//! dropped when the test binary exits (set `HUSH_TEST_KEEP_DATABASES=1` to keep them
//! for a post-mortem; their names are printed then).
//!
//! [`LocalClickHouse`] starts a separate launcher that a test owns and can
//! stop, kill, pause (SIGSTOP) and restart, for persistence and fault tests.
//!
//! Free of hush types on purpose: it compiles into every test binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// First start may install the engine into scripts/.venv (a ~180 MB wheel).
const FIRST_START_TIMEOUT: Duration = Duration::from_secs(600);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Connection details of the ClickHouse the tests talk to.
pub struct ClickHouse {
    url: String,
    user: String,
    password: String,
    /// The per-binary launcher; `None` for an external server.
    local: Option<LocalClickHouse>,
}

static SHARED: OnceLock<ClickHouse> = OnceLock::new();
static DB_COUNTER: AtomicU64 = AtomicU64::new(0);
/// Databases created on an external server, dropped at exit.
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The ClickHouse for this test binary (started on first use).
pub fn clickhouse() -> &'static ClickHouse {
    SHARED.get_or_init(|| {
        if let Some(url) = external_url() {
            // SAFETY: registers a plain `extern "C" fn()`; it runs once, at exit.
            unsafe { libc::atexit(drop_created_databases) };
            return ClickHouse {
                url,
                user: std::env::var("CLICKHOUSE_USER").unwrap_or_else(|_| "default".into()),
                password: std::env::var("CLICKHOUSE_PASSWORD").unwrap_or_default(),
                local: None,
            };
        }
        // Statics are never dropped, so the launcher removes this directory
        // itself when it exits (--ephemeral), which it does when we do.
        let dir = tempfile::Builder::new()
            .prefix("hush-clickhouse-")
            .tempdir()
            .expect("create a temp dir for the test ClickHouse")
            .keep();
        let server = LocalClickHouse::start_with(dir, 0, true);
        ClickHouse {
            url: server.url().to_owned(),
            user: "default".into(),
            password: String::new(),
            local: Some(server),
        }
    })
}

/// `CLICKHOUSE_URL`, when the tests should use an external server.
pub fn external_url() -> Option<String> {
    std::env::var("CLICKHOUSE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

impl ClickHouse {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Whether this is the launcher this binary started (not an external server).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The launcher's pid, when it is local.
    pub fn local_pid(&self) -> Option<u32> {
        self.local.as_ref().map(LocalClickHouse::pid)
    }

    /// A client with credentials and no default database.
    pub fn base_client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(&self.password)
    }

    /// A client for `database`.
    pub fn client(&self, database: &str) -> clickhouse::Client {
        self.base_client().with_database(database)
    }

    /// Creates a database with a unique name starting with `prefix` and
    /// returns the name.
    pub async fn fresh_database(&self, prefix: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let clean: String = prefix
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let name = format!(
            "{clean}_{}_{}_{nanos:x}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        self.base_client()
            .query(&format!("CREATE DATABASE `{name}`"))
            .execute()
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {}: {e}", self.url));
        if !self.is_local() {
            CREATED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(name.clone());
        }
        name
    }
}

/// At exit of a test binary that used an external server: drops the databases it
/// created, on a thread of its own with a runtime of its own (the tests' runtimes are
/// gone), within a bound so a hanging server cannot hang the exit.
extern "C" fn drop_created_databases() {
    let names = std::mem::take(
        &mut *CREATED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let Some(ch) = SHARED.get() else { return };
    if names.is_empty() {
        return;
    }
    if std::env::var_os("HUSH_TEST_KEEP_DATABASES").is_some() {
        eprintln!("kept test databases on {}: {}", ch.url, names.join(", "));
        return;
    }
    let client = ch.base_client();
    let dropper = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            for name in &names {
                let drop = client
                    .query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                    .execute();
                match tokio::time::timeout(Duration::from_secs(10), drop).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("could not drop test database {name}: {e}"),
                    Err(_) => eprintln!("dropping test database {name} timed out"),
                }
            }
        });
    });
    let _ = dropper.join();
}

/// A launcher process owned by one test.
pub struct LocalClickHouse {
    child: Option<Child>,
    url: String,
    port: u16,
    data_dir: PathBuf,
}

impl LocalClickHouse {
    /// Path of the launcher script in this checkout.
    pub fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-clickhouse")
    }

    /// Starts a launcher on `data_dir` (created if missing) and `port` (0 for
    /// a free one); returns once it answers `/ping`. Panics with the log tail
    /// if it does not come up.
    pub fn start(data_dir: impl Into<PathBuf>, port: u16) -> LocalClickHouse {
        Self::start_with(data_dir.into(), port, false)
    }

    fn start_with(data_dir: PathBuf, port: u16, ephemeral: bool) -> LocalClickHouse {
        std::fs::create_dir_all(&data_dir).expect("create the ClickHouse data dir");
        let log = log_path(&data_dir);
        let mut child = Command::new(Self::script())
            .arg("run")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--log-file")
            .arg(&log)
            .args(["--exit-with-parent", &std::process::id().to_string()])
            .args(ephemeral.then_some("--ephemeral"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // First-run venv installation reports progress here.
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", Self::script().display()));

        // The launcher prints its URL as the one line on stdout once it
        // listens. Read it on a thread so the wait has a deadline.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let deadline = Instant::now() + FIRST_START_TIMEOUT;
        let url = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.trim().starts_with("http://") => break line.trim().to_owned(),
                Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    panic!(
                        "local-clickhouse exited during start-up ({status:?}){}",
                        log_tail(&log)
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "local-clickhouse exited during start-up ({status}){}",
                            log_tail(&log)
                        );
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        panic!(
                            "local-clickhouse did not start within {FIRST_START_TIMEOUT:?}{}",
                            log_tail(&log)
                        );
                    }
                }
            }
        };
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the launcher's URL");
        let server = LocalClickHouse {
            child: Some(child),
            url,
            port,
            data_dir,
        };
        server.wait_ping(Duration::from_secs(30));
        server
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// A client for this instance (default user, no password).
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default().with_url(&self.url)
    }

    /// Whether `/ping` answers right now.
    pub fn ping(&self) -> bool {
        ping(self.port, Duration::from_secs(1))
    }

    fn wait_ping(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.ping() {
            assert!(
                Instant::now() < deadline,
                "local-clickhouse at {} does not answer /ping{}",
                self.url,
                log_tail(&log_path(&self.data_dir))
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            assert_eq!(rc, 0, "kill({}, {signal}) failed", child.id());
        }
    }

    /// Graceful stop: SIGTERM, then wait for the process to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: see `signal`.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    assert!(
                        status.success(),
                        "local-clickhouse exited with {status} on SIGTERM{}",
                        log_tail(&log_path(&self.data_dir))
                    );
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("local-clickhouse did not exit within {STOP_TIMEOUT:?} of SIGTERM");
                }
            }
        }
    }

    /// Hard kill (SIGKILL), as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections hang as with a stuck server.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Undoes [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Stops (gracefully) and starts again on the same data dir and port.
    pub fn restart(&mut self) {
        self.stop();
        let fresh = LocalClickHouse::start(self.data_dir.clone(), self.port);
        *self = fresh;
    }

    /// Starts again after [`kill`](Self::kill) or [`stop`](Self::stop).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        let fresh = LocalClickHouse::start(self.data_dir.clone(), self.port);
        *self = fresh;
    }
}

impl Drop for LocalClickHouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: see `signal`. A paused server must be resumed to exit.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("local-clickhouse.log")
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
    format!("\n--- {} ---\n{tail}", path.display())
}

/// Blocking `GET /ping` on 127.0.0.1:`port`.
fn ping(port: u16, timeout: Duration) -> bool {
    let Some(addr) = ("127.0.0.1", port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    if stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response.starts_with(b"HTTP/1.1 200") && response.ends_with(b"Ok.\n")
}
