//! Headless Chromium for the browser tests: found on `PATH` or installed by
//! `scripts/install-chromium`, started in its own process group and profile, and
//! driven over the DevTools protocol (one websocket per target: commands with ids,
//! events recorded for the test to inspect).
//!
//! Include with `#[path = "support/chromium.rs"] mod chromium;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// How long any one browser step (a navigation, a script) may take.
pub const STEP: Duration = Duration::from_secs(30);

/// The Chromium binary, installing it first when it is missing. `None` (with the
/// reason) when it cannot be had.
pub fn chromium_binary() -> Result<PathBuf, String> {
    let found = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("chromium"))
                .find(|p| p.is_file())
        })
    };
    if let Some(path) = found() {
        return Ok(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-chromium");
    let out = Command::new(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    found().ok_or_else(|| "chromium is still not on PATH".to_owned())
}

/// A headless Chromium in its own process group and profile directory.
pub struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Chromium {
    /// Starts Chromium with the common headless flags and `args` (host rules, the
    /// user agent, the window size).
    pub fn launch(binary: &Path, args: &[String]) -> Chromium {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut cmd = Command::new(binary);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--remote-debugging-port=0",
        ])
        .args(args)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start chromium");
        // Chromium writes its DevTools port here once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok())
            {
                break port;
            }
            assert!(
                started.elapsed() < STEP,
                "chromium did not open its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Chromium {
            child,
            _profile: profile,
            port,
        }
    }

    /// The DevTools targets (`/json/list`).
    pub async fn targets(&self) -> Vec<Value> {
        reqwest::get(format!("http://127.0.0.1:{}/json/list", self.port))
            .await
            .expect("DevTools /json/list")
            .json()
            .await
            .expect("DevTools target list")
    }

    /// A connection to the first page target.
    pub async fn page(&self) -> (Cdp, String) {
        let targets = self.targets().await;
        let page = targets
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let ws = page["webSocketDebuggerUrl"].as_str().expect("page ws url");
        let id = page["id"].as_str().expect("page id").to_owned();
        (Cdp::connect(ws).await, id)
    }

    /// A connection to the browser itself (targets, windows).
    pub async fn browser(&self) -> Cdp {
        let version: Value = reqwest::get(format!("http://127.0.0.1:{}/json/version", self.port))
            .await
            .expect("DevTools /json/version")
            .json()
            .await
            .expect("DevTools version");
        Cdp::connect(
            version["webSocketDebuggerUrl"]
                .as_str()
                .expect("browser ws url"),
        )
        .await
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The browser and its renderers are one process group, ours.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group of a child this test started.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

pub type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One DevTools protocol connection: commands with ids, events recorded.
pub struct Cdp {
    out: tokio::sync::Mutex<
        futures_util::stream::SplitSink<
            tokio_tungstenite::WebSocketStream<
                tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
            >,
            Message,
        >,
    >,
    next: AtomicU64,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Cdp {
    pub async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("DevTools websocket");
        let (out, mut incoming) = ws.split();
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        {
            let pending = Arc::clone(&pending);
            let events = Arc::clone(&events);
            tokio::spawn(async move {
                while let Some(Ok(msg)) = incoming.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(value) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(id) = value["id"].as_u64() {
                        if let Some(tx) = pending.lock().unwrap().remove(&id) {
                            let _ = tx.send(value);
                        }
                    } else {
                        events.lock().unwrap().push(value);
                    }
                }
            });
        }
        Cdp {
            out: tokio::sync::Mutex::new(out),
            next: AtomicU64::new(1),
            pending,
            events,
        }
    }

    /// Sends a command and returns its `result`; panics on a protocol error.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let msg = json!({ "id": id, "method": method, "params": params });
        self.out
            .lock()
            .await
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("send to DevTools");
        let answer = tokio::time::timeout(STEP, rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer"))
            .expect("DevTools connection closed");
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    pub async fn eval(&self, expr: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expr}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Polls `expr` until it is `true`.
    pub async fn until(&self, expr: &str) {
        let started = Instant::now();
        while self.eval(expr).await != Value::Bool(true) {
            assert!(started.elapsed() < STEP, "never true: {expr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Navigates and waits until the new document has loaded.
    pub async fn goto(&self, url: &str) {
        let nav = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(nav.get("errorText").is_none(), "{url}: {nav}");
        self.until(&format!(
            "location.href == {} && document.readyState == 'complete'",
            json!(url)
        ))
        .await;
    }

    pub fn events(&self, method: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["method"] == method)
            .map(|e| e["params"].clone())
            .collect()
    }
}

impl Cdp {
    /// Emulates a viewport `width` × `height` CSS pixels (a phone with `mobile`).
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
    }

    /// Saves a PNG of the whole page (beyond the viewport) to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        let data = shot["data"].as_str().expect("screenshot data");
        let bytes = base64_decode(data);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, bytes).expect("write screenshot");
    }
}

/// Standard base64 (the DevTools protocol's encoding of binary data).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { value(c) })
            .fold(0u32, |acc, v| (acc << 6) | v)
            << (6 * (4 - chunk.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}
