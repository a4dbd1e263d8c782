//! A `hush serve` child process for integration tests: started on an ephemeral port
//! (and its admin API on another) with a given configuration, its output captured,
//! stoppable gracefully (SIGTERM) or hard (SIGKILL). `/metrics` is read from the admin
//! listener with [`ADMIN_TOKEN`], which [`test_config`] configures.
//!
//! Include with `#[path = "support/hush.rs"] mod hush_process;` (it needs only the
//! built binary, not the `support` fixture).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The admin API token of every collector started from [`test_config`].
pub const ADMIN_TOKEN: &str = "hush-integration-test-admin-token";

/// The `sha256` config value of [`ADMIN_TOKEN`].
pub fn admin_token_sha256() -> String {
    sha256_hex(ADMIN_TOKEN)
}

/// A token's `sha256` config value: its SHA-256, lower-case hex.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A Stats API key that [`stats_keys`] lets read `example.com` (key name `ci`).
pub const STATS_KEY: &str = "stats-key-for-example-com";
/// A Stats API key that [`stats_keys`] lets read `other.example` only (name `other`).
pub const OTHER_STATS_KEY: &str = "stats-key-for-other-site";

/// The `keys` entry of a `[stats]` table with [`STATS_KEY`] and [`OTHER_STATS_KEY`],
/// for a test's config to put under its own `[stats]` (the sites are the test's).
pub fn stats_keys() -> String {
    format!(
        r#"keys = [
  {{ name = "ci", sha256 = "{}", sites = ["example.com"] }},
  {{ name = "other", sha256 = "{}", sites = ["other.example"] }},
]"#,
        sha256_hex(STATS_KEY),
        sha256_hex(OTHER_STATS_KEY)
    )
}

/// A running `hush serve`.
pub struct HushProcess {
    child: Option<Child>,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    dashboard_addr: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
}

fn capture(stream: impl std::io::Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut log) = log.lock() {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
}

impl HushProcess {
    /// Writes `config` to `dir/hush.toml` and starts `hush serve` with it; returns once
    /// it listens. `dir` may be reused by the next start (a restart).
    pub fn start(dir: &Path, config: &str) -> HushProcess {
        Self::start_with_log_filter(dir, config, "info,hush=debug")
    }

    /// [`HushProcess::start`] with `RUST_LOG` set to `log_filter` (e.g. `debug`, so a
    /// test scanning the log also sees the dependencies' debug lines).
    pub fn start_with_log_filter(dir: &Path, config: &str, log_filter: &str) -> HushProcess {
        Self::start_with_env(dir, config, log_filter, &[])
    }

    /// [`HushProcess::start_with_log_filter`] with extra environment variables.
    pub fn start_with_env(
        dir: &Path,
        config: &str,
        log_filter: &str,
        env: &[(&str, &Path)],
    ) -> HushProcess {
        std::fs::create_dir_all(dir).expect("create the hush dir");
        let config_path = dir.join("hush.toml");
        std::fs::write(&config_path, config).expect("write config");
        let port_file = dir.join("port");
        let admin_port_file = dir.join("admin-port");
        let dashboard_port_file = dir.join("dashboard-port");
        let _ = std::fs::remove_file(&port_file);
        let _ = std::fs::remove_file(&admin_port_file);
        let _ = std::fs::remove_file(&dashboard_port_file);
        let mut child = Command::new(env!("CARGO_BIN_EXE_hush"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(["--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .arg("--admin-port-file")
            .arg(&admin_port_file)
            .arg("--dashboard-port-file")
            .arg(&dashboard_port_file)
            .env("RUST_LOG", log_filter)
            .envs(env.iter().copied())
            .env_remove("HUSH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hush");
        let log = Arc::new(Mutex::new(String::new()));
        capture(child.stdout.take().expect("stdout"), Arc::clone(&log));
        capture(child.stderr.take().expect("stderr"), Arc::clone(&log));
        let started = Instant::now();
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("hush exited early ({status}):\n{}", log.lock().unwrap());
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "hush did not start listening:\n{}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Written before the port file, when there is an admin listener at all.
        let admin_addr = std::fs::read_to_string(&admin_port_file)
            .ok()
            .map(|text| text.trim().parse().expect("admin port file holds ip:port"));
        let dashboard_addr = std::fs::read_to_string(&dashboard_port_file)
            .ok()
            .map(|text| {
                text.trim()
                    .parse()
                    .expect("dashboard port file holds ip:port")
            });
        HushProcess {
            child: Some(child),
            addr,
            admin_addr,
            dashboard_addr,
            log,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The admin listener's URL for `path`; panics when the config has none.
    pub fn admin_url(&self, path: &str) -> String {
        let addr = self
            .admin_addr
            .expect("this collector has no admin listener");
        format!("http://{addr}{path}")
    }

    /// The dashboard listener's URL for `path` (with `dashboard.listen`); panics
    /// when the config has none.
    pub fn dashboard_url(&self, path: &str) -> String {
        let addr = self
            .dashboard_addr
            .expect("this collector has no dashboard listener");
        format!("http://{addr}{path}")
    }

    /// The metrics page, from the admin listener with [`ADMIN_TOKEN`].
    pub async fn metrics(&self) -> String {
        let resp = reqwest::Client::new()
            .get(self.admin_url("/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200, "GET /metrics on the admin listener");
        resp.text().await.expect("metrics body")
    }

    /// Waits (up to `timeout`) until the captured output contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                started.elapsed() < timeout,
                "no `{needle}` in the output within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status if the process has exited (or was stopped by this handle).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().expect("wait for hush"))
    }

    /// SIGTERM, then waits (up to `timeout`) for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("hush is running");
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to hush failed");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for hush") {
                return status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hush did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as in a crash; waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for HushProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The configuration every collector test starts from: the given ClickHouse database
/// (`login` = user and password; the defaults without it), writer batches small enough
/// to flush within a test, retention not scheduled, the admin API on an ephemeral port
/// (collectors run side by side, so none may claim a fixed one) accepting
/// [`ADMIN_TOKEN`], one site `example.com`.
///
/// `overrides` is TOML merged over it, so a test spells out only what it changes: its
/// tables add keys to the base's or replace them; arrays (`[[sites]]`) replace whole.
pub fn test_config(
    url: &str,
    login: Option<(&str, &str)>,
    database: &str,
    overrides: &str,
) -> String {
    let mut config: toml::Table = r#"
[writer]
batch_rows = 50
flush_interval_ms = 100
queue_capacity = 10000

[retention]
schedule = false

[admin]
listen = "127.0.0.1:0"
tokens = [{ name = "tests", sha256 = "ADMIN_TOKEN_SHA256" }]

[[sites]]
domain = "example.com"
"#
    .replace("ADMIN_TOKEN_SHA256", &admin_token_sha256())
    .parse()
    .expect("base test config");
    let mut clickhouse = toml::Table::new();
    clickhouse.insert("url".into(), url.into());
    if let Some((user, password)) = login {
        clickhouse.insert("user".into(), user.into());
        clickhouse.insert("password".into(), password.into());
    }
    clickhouse.insert("database".into(), database.into());
    config.insert("clickhouse".into(), clickhouse.into());
    merge(
        &mut config,
        overrides.parse().expect("test config overrides"),
    );
    toml::to_string(&config).expect("serialize test config")
}

fn merge(base: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(overrides)) => {
                merge(base, overrides);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Runs `hush <args>` to completion; returns (success, stdout, stderr).
pub fn run_hush(args: &[&str], config: Option<&PathBuf>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hush"));
    cmd.args(args).env_remove("HUSH_CONFIG");
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let out = cmd.output().expect("run hush");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
