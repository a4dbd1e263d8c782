//! The HTTP accept loop: HTTP/1.1 with keep-alive and HTTP/2 over cleartext (prior
//! knowledge) on one port, with the limits that keep a public collector standing.
//!
//! - `server.max_connections`: a semaphore permit is taken *before* `accept`, so at the
//!   limit new connections wait in the kernel backlog instead of costing memory here.
//! - `server.max_in_flight_requests`: requests beyond it get 503 at once (the handler
//!   decides the body), so HTTP/2 multiplexing cannot queue unbounded work.
//! - `server.max_in_flight_per_connection`: each connection's fair share of those
//!   slots. A request over it gets the same 503 without touching the shared pool, and
//!   while fewer than a quarter of the shared slots are free (`PRESSURE_DIVISOR`), a
//!   connection already holding half its share is refused before the pool runs dry.
//!   Otherwise a few HTTP/2 connections whose streams send headers and then stall the
//!   body (each holding a slot until the body read timeout) starve every other client.
//! - `server.header_read_timeout_ms`: hyper's HTTP/1 head timer. In hyper 1.x it also
//!   runs while an idle keep-alive connection waits for its next request, so idle HTTP/1
//!   connections close after min(header timeout, keep-alive timeout).
//! - `server.keep_alive_timeout_ms`: a per-connection watchdog closes connections with
//!   no request in flight for that long (HTTP/2 has no head timer, so this is what
//!   reaps idle h2 connections); a connection that never sent a request gets only the
//!   header timeout, which also covers clients that connect and say nothing.
//! - A connection the watchdog asked to close must be gone within `CLOSE_GRACE` (at
//!   least the header timeout), or it is dropped: an HTTP/2 graceful close waits for
//!   the peer to acknowledge a PING, which a hostile peer never does.
//! - HTTP/1 half-close is allowed: a client that shuts down its sending side after its
//!   request still gets the answer, and hyper does not read on while a handler works
//!   (which cost a `recv` and often a read-buffer reallocation per request).
//! - Shutdown: stop accepting, ask every connection to finish its in-flight requests
//!   (HTTP/1 closes after the current response, HTTP/2 sends GOAWAY), wait until all
//!   are gone or the deadline passes.
//!
//! Memory per connection is bounded: HTTP/1 buffers at most `MAX_HEADER_BYTES` of
//! unparsed input (a longer head gets 431); HTTP/2 accepts at most
//! `H2_CONNECTION_WINDOW` bytes of request body that nobody has read yet, header
//! lists of `MAX_HEADER_BYTES`, frames of `H2_MAX_FRAME_BYTES`, and
//! `h2_max_concurrent_streams` streams. Floods of streams the client resets before
//! they are served (CVE-2023-44487, "rapid reset") or that it makes the server reset
//! (protocol errors, "MadeYouReset") end the connection with GOAWAY
//! (`H2_MAX_PENDING_ACCEPT_RESETS`, `H2_MAX_LOCAL_ERROR_RESETS`). Request bodies are
//! capped by the handler (it reads at most its limit), requests in flight by
//! `max_in_flight_requests`, connections by `max_connections`.
//!
//! A panic in a handler is caught per request and answered by `Handler::on_panic`, so
//! neither the connection nor the server goes down with it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::ServerConfig;

/// The response body type of every handler.
pub use super::response::{Body, simple};

/// Largest request head (request line plus headers) accepted, in bytes. Beacons carry a
/// handful of short headers; cookies of a first-party proxy setup fit comfortably.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields in one HTTP/1 request head.
pub const MAX_HEADERS: usize = 100;
/// HTTP/2 flow-control window of one stream: body bytes a client may send before the
/// handler reads them. A beacon body is well under this; batches take a few window
/// updates.
pub const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 flow-control window of a whole connection (hyper's default is 1 MiB, which
/// at `max_connections` would allow gigabytes of unread bodies).
pub const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// Largest HTTP/2 frame payload accepted (the protocol's minimum maximum).
pub const H2_MAX_FRAME_BYTES: u32 = 16 * 1024;
/// Streams a client may reset before the server accepted them, at once; beyond it the
/// connection gets GOAWAY (rapid reset, CVE-2023-44487).
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server may reset because of client errors, per connection, before it
/// sends GOAWAY ("MadeYouReset"-style floods).
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;
/// How long a connection asked to close by the idle watchdog may take to go; at least
/// the header read timeout.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The shared in-flight pool is "under pressure" when fewer than 1/`PRESSURE_DIVISOR`
/// of its slots are free; then connections already holding half their share are
/// refused first, which keeps the last slots for connections holding few.
const PRESSURE_DIVISOR: usize = 4;

/// Errors a streaming response body may end with (the connection is then reset, which
/// a client sees as a truncated transfer).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the server calls for every request.
pub trait Handler: Send + Sync + 'static {
    /// The response body. Handlers that answer from memory use [`Body`]
    /// (`Full<Bytes>`: the ingestion path pays for no indirection); one that streams
    /// (the admin export) uses its own type, which must also hold the server's own
    /// answers ([`Handler::on_overload`], [`Handler::on_panic`]): hence `From<Body>`.
    type Body: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + From<Body> + Send + 'static;

    /// Answers one request. `peer` is the TCP peer; it is used only for client address
    /// resolution and must not be stored or logged.
    fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Self::Body>> + Send;

    /// Answer when `max_in_flight_requests` are already being handled.
    fn on_overload(&self) -> Response<Body> {
        simple(StatusCode::SERVICE_UNAVAILABLE, "overloaded\n")
    }

    /// Answer when `handle` panicked.
    fn on_panic(&self) -> Response<Body> {
        simple(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the listener (separately from `run` so the caller can learn the port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// How a server run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// All connections finished before the deadline.
    pub complete: bool,
}

/// Per-connection activity, for the idle watchdog.
struct ConnActivity {
    active: AtomicUsize,
    /// Shared in-flight slots this connection holds (its fair-share counter).
    slots: AtomicUsize,
    served: AtomicU64,
    /// Milliseconds since `epoch` of the last request start or end.
    last_ms: AtomicU64,
    epoch: Instant,
}

impl ConnActivity {
    fn new() -> Self {
        ConnActivity {
            active: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Decrements the active count even if the handler future is dropped mid-way.
struct ActiveGuard<'a>(&'a ConnActivity);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The per-connection and shared in-flight limits, checked for every request.
///
/// The shared pool is a counter, not a semaphore: requests never wait for a slot (over
/// the limit they are refused at once), and releasing a `tokio::sync::Semaphore` permit
/// takes the semaphore's waiter-list lock, a cost paid on every request for waiting
/// that never happens.
struct InFlight {
    /// Slots of the shared pool in use.
    used: AtomicUsize,
    total: usize,
    per_connection: usize,
}

/// One connection's claim on a slot: counted per connection first, so a connection at
/// its cap is refused without touching the shared pool.
struct SlotClaim<'a>(&'a ConnActivity);

impl Drop for SlotClaim<'_> {
    fn drop(&mut self) {
        self.0.slots.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A slot of the shared pool, given back on drop.
struct PoolSlot<'a>(&'a AtomicUsize);

impl Drop for PoolSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    fn new(total: usize, per_connection: usize) -> Self {
        InFlight {
            used: AtomicUsize::new(0),
            total,
            per_connection: per_connection.max(1),
        }
    }

    /// Free slots of the shared pool.
    fn available(&self) -> usize {
        self.total.saturating_sub(self.used.load(Ordering::Acquire))
    }

    /// A slot for one request on `conn`, or `None` when the connection is over its
    /// share or the shared pool is (nearly) exhausted. Lock-free: one atomic add on
    /// the connection, one on the pool (taken back when over the limit).
    fn acquire<'a>(&'a self, conn: &'a ConnActivity) -> Option<(SlotClaim<'a>, PoolSlot<'a>)> {
        let held = conn.slots.fetch_add(1, Ordering::AcqRel);
        let claim = SlotClaim(conn);
        if held >= self.per_connection {
            return None;
        }
        // Under pressure, a connection already holding half its share goes first, so
        // a handful of greedy connections cannot take the last slots either.
        if held >= (self.per_connection / 2).max(1)
            && self.available() < self.total / PRESSURE_DIVISOR
        {
            return None;
        }
        // Taken optimistically; the guard gives it back when it was one too many.
        let slot = PoolSlot(&self.used);
        if self.used.fetch_add(1, Ordering::AcqRel) >= self.total {
            return None;
        }
        Some((claim, slot))
    }
}

fn builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout())
        // While a handler waits (for the spool), hyper otherwise reads the socket to
        // notice a client that went away mid-request: one more `recv` per request,
        // and a read buffer still shared with the request is reallocated for it.
        // Nothing is gained by noticing: an accepted hit is stored either way, and a
        // client that closed only its sending side still gets its answer.
        .half_close(true)
        .keep_alive(true)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .max_frame_size(H2_MAX_FRAME_BYTES)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .adaptive_window(false)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        // Pings find dead peers whose FIN never arrived.
        .keep_alive_interval(Some(Duration::from_millis(
            config.keep_alive_timeout_ms.max(1_000),
        )))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves `listener` until `shutdown` resolves, then drains connections for at most
/// `config.shutdown_timeout_ms`.
pub async fn run<H: Handler>(
    listener: TcpListener,
    config: &ServerConfig,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let builder = Arc::new(builder(config));
    let max_conns = config.max_connections;
    let conn_limit = Arc::new(Semaphore::new(max_conns));
    let in_flight = Arc::new(InFlight::new(
        config.max_in_flight_requests,
        config.max_in_flight_per_connection,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let header_timeout = config.header_read_timeout();
    let idle_timeout = Duration::from_millis(config.keep_alive_timeout_ms);
    let close_grace = header_timeout.max(CLOSE_GRACE);

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = conn_limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // semaphore closed: cannot happen, we never close it
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let handler = handler.clone();
        let in_flight = in_flight.clone();
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Arc::new(ConnActivity::new());
            let svc_activity = activity.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                let in_flight = in_flight.clone();
                let activity = svc_activity.clone();
                async move {
                    activity.active.fetch_add(1, Ordering::AcqRel);
                    activity.served.fetch_add(1, Ordering::Relaxed);
                    let _guard = ActiveGuard(&activity);
                    let Some(_slot) = in_flight.acquire(&activity) else {
                        return Ok::<_, Infallible>(handler.on_overload().map(H::Body::from));
                    };
                    let resp = AssertUnwindSafe(handler.handle(req, peer))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            tracing::error!("request handler panicked");
                            handler.on_panic().map(H::Body::from)
                        });
                    Ok(resp)
                }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let tick_every = (header_timeout.min(idle_timeout) / 4).max(Duration::from_millis(50));
            let mut tick = tokio::time::interval(tick_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut closing = *stop_rx.borrow();
            if closing {
                conn.as_mut().graceful_shutdown();
            }
            // Set when the watchdog asked the connection to close: past it, it is dropped.
            let mut close_by: Option<Instant> = None;
            loop {
                tokio::select! {
                    res = conn.as_mut() => {
                        if let Err(err) = res {
                            // Client resets and timeouts are routine on the public internet.
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                        break;
                    }
                    changed = stop_rx.changed(), if !closing => {
                        if changed.is_err() || *stop_rx.borrow() {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                    _ = tick.tick(), if !closing || close_by.is_some() => {
                        if let Some(deadline) = close_by {
                            if Instant::now() >= deadline {
                                tracing::debug!("connection ignored a graceful close; dropped");
                                break;
                            }
                        } else if activity.active.load(Ordering::Acquire) == 0 {
                            let limit = if activity.served.load(Ordering::Relaxed) == 0 {
                                header_timeout
                            } else {
                                idle_timeout
                            };
                            let idle_ms = activity
                                .now_ms()
                                .saturating_sub(activity.last_ms.load(Ordering::Relaxed));
                            if Duration::from_millis(idle_ms) >= limit {
                                closing = true;
                                close_by = Some(Instant::now() + close_grace);
                                conn.as_mut().graceful_shutdown();
                            }
                        }
                    }
                }
            }
        });
    }

    // Stop accepting: the listener closes here, new connections are refused.
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = config.shutdown_timeout();
    let all = u32::try_from(max_conns).unwrap_or(u32::MAX);
    // Every live connection holds one permit; getting all of them back means all closed.
    let complete = tokio::time::timeout(deadline, conn_limit.acquire_many(all))
        .await
        .is_ok_and(|r| r.is_ok());
    if !complete {
        tracing::warn!(
            open = max_conns - conn_limit.available_permits(),
            "shutdown deadline reached with connections still open"
        );
    }
    Drained { complete }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default)]
    struct Echo {
        started: tokio::sync::Notify,
    }

    impl Handler for Echo {
        type Body = Body;

        async fn handle(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
            match req.uri().path() {
                "/panic" => panic!("handler bug"),
                "/slow" => {
                    self.started.notify_one();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    simple(StatusCode::OK, "slow\n")
                }
                _ => simple(StatusCode::OK, "ok\n"),
            }
        }
    }

    async fn start(
        config: ServerConfig,
        handler: Arc<Echo>,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Drained>,
    ) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            run(listener, &config, handler, async {
                let _ = rx.await;
            })
            .await
        });
        (addr, tx, task)
    }

    async fn raw(addr: SocketAddr, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn panics_are_contained_and_keep_alive_works() {
        let (addr, stop, task) = start(ServerConfig::default(), Arc::default()).await;
        let resp = raw(
            addr,
            "GET /panic HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 500"), "{resp}");
        // Two requests on one connection: keep-alive.
        let resp = raw(
            addr,
            "GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(resp.matches("HTTP/1.1 200").count(), 2, "{resp}");
        stop.send(()).unwrap();
        assert!(task.await.unwrap().complete);
    }

    #[tokio::test]
    async fn silent_clients_are_disconnected() {
        let config = ServerConfig {
            header_read_timeout_ms: 200,
            ..ServerConfig::default()
        };
        let (addr, stop, task) = start(config, Arc::default()).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        // The server closes (EOF) instead of waiting forever; the outer timeout only
        // bounds a broken implementation.
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("server kept a silent connection open");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        // Half a request head, then silence: the head timer answers or closes.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("server kept a slow-header connection open")
            .ok();
        assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
        stop.send(()).unwrap();
        assert!(task.await.unwrap().complete);
    }

    #[tokio::test]
    async fn shutdown_finishes_in_flight_requests() {
        let handler = Arc::new(Echo::default());
        let (addr, stop, task) = start(ServerConfig::default(), handler.clone()).await;
        let started = handler.started.notified();
        let client = tokio::spawn(raw(addr, "GET /slow HTTP/1.1\r\nhost: x\r\n\r\n"));
        // Shut down only once the request is inside the handler.
        started.await;
        stop.send(()).unwrap();
        let resp = client.await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(task.await.unwrap().complete);
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_client_that_half_closes_still_gets_its_answer() {
        let (addr, stop, task) = start(ServerConfig::default(), Arc::default()).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // A whole request, then the client's sending side closes while the handler
        // is still working (it sleeps): the answer must still come.
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        let out = read_until_closed(&mut s)
            .await
            .expect("server kept the half-closed connection open");
        let resp = String::from_utf8_lossy(&out);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
        stop.send(()).unwrap();
        assert!(task.await.unwrap().complete);
    }

    #[test]
    fn a_connection_gets_its_share_and_refusals_cost_the_pool_nothing() {
        let limits = InFlight::new(100, 4);
        let greedy = ConnActivity::new();
        let held: Vec<_> = (0..10).map_while(|_| limits.acquire(&greedy)).collect();
        assert_eq!(held.len(), 4);
        // Refused requests take no shared slot and leave the connection's count as is.
        assert!(limits.acquire(&greedy).is_none());
        assert_eq!(limits.available(), 96);
        assert_eq!(greedy.slots.load(Ordering::Acquire), 4);
        drop(held);
        assert_eq!(limits.available(), 100);
        assert_eq!(greedy.slots.load(Ordering::Acquire), 0);
    }

    #[test]
    fn under_pressure_connections_holding_half_their_share_go_first() {
        let limits = InFlight::new(100, 4);
        // 80 of 100 slots busy elsewhere: fewer than a quarter free.
        limits.used.fetch_add(80, Ordering::AcqRel);
        let greedy = ConnActivity::new();
        let first = limits.acquire(&greedy);
        let second = limits.acquire(&greedy);
        assert!(first.is_some() && second.is_some());
        // Holding 2 of 4 under pressure: refused, while a fresh connection is served.
        assert!(limits.acquire(&greedy).is_none());
        let fresh = ConnActivity::new();
        let served = limits.acquire(&fresh);
        assert!(served.is_some());
        assert_eq!(limits.available(), 17);
    }

    #[test]
    fn the_shared_pool_never_goes_over_its_total() {
        let limits = InFlight::new(3, 4);
        let conns: Vec<_> = (0..5).map(|_| ConnActivity::new()).collect();
        let held: Vec<_> = conns.iter().filter_map(|c| limits.acquire(c)).collect();
        assert_eq!(held.len(), 3);
        // The two refused took their optimistic slot back.
        assert_eq!(limits.used.load(Ordering::Acquire), 3);
        assert_eq!(limits.available(), 0);
        drop(held);
        assert_eq!(limits.available(), 3);
        assert!(conns.iter().all(|c| c.slots.load(Ordering::Acquire) == 0));
    }

    /// HTTP/2 connection preface plus an empty SETTINGS frame.
    const H2_PREFACE: &[u8] =
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

    /// Reads until EOF or error; `None` when the server kept the connection open.
    async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let read_all = async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        };
        // The bound only stops a broken implementation from hanging the test.
        tokio::time::timeout(Duration::from_secs(20), read_all)
            .await
            .ok()?;
        Some(out)
    }

    #[tokio::test]
    async fn silent_h2_clients_are_disconnected() {
        let config = ServerConfig {
            header_read_timeout_ms: 200,
            ..ServerConfig::default()
        };
        let (addr, stop, task) = start(config, Arc::default()).await;
        // A preface, then silence: never acknowledges our SETTINGS or PING, so a
        // graceful GOAWAY alone would wait forever.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(H2_PREFACE).await.unwrap();
        assert!(
            read_until_closed(&mut s).await.is_some(),
            "server kept a silent h2 connection open"
        );
        // A HEADERS frame without END_HEADERS, then silence (CONTINUATION never comes).
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(H2_PREFACE).await.unwrap();
        // length 1, type HEADERS, flags END_STREAM only, stream 1, block: ":method GET".
        s.write_all(b"\x00\x00\x01\x01\x01\x00\x00\x00\x01\x82")
            .await
            .unwrap();
        assert!(
            read_until_closed(&mut s).await.is_some(),
            "server kept a half-headers h2 connection open"
        );
        stop.send(()).unwrap();
        assert!(task.await.unwrap().complete);
    }

    #[tokio::test]
    async fn h2c_prior_knowledge_is_served() {
        let (addr, stop, task) = start(ServerConfig::default(), Arc::default()).await;
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let resp = client.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        drop(client);
        stop.send(()).unwrap();
        assert!(task.await.unwrap().complete);
    }
}
