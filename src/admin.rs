//! Admin API: a listener of its own (`admin.listen`, loopback by default), apart from
//! the public ingestion port, for data-subject requests and purges. It is served by
//! [`crate::http::server::run`] like the public port, so it has the same header, body
//! and keep-alive timeouts, HTTP/2 limits and graceful shutdown, with a small
//! connection cap of its own ([`server_config`]).
//!
//! Every request needs `Authorization: Bearer <token>` where the token's SHA-256 is in
//! `admin.tokens`; anything else gets a bare 401, before routing, so the API reveals
//! nothing (not even which paths exist) without a token. Each call is logged with the
//! token's name, method, path and status: never the token, never the query string
//! (it holds selector values).
//!
//! | endpoint | does |
//! | --- | --- |
//! | `GET /admin/v1/export?site=&prop=k=v&visitor_id=&from=&to=&format=jsonl\|csv` | streams matching rows |
//! | `POST /admin/v1/erase` (JSON selector) | waits for the rows accepted before it, deletes matching rows (also in quarantine files), verified, logged; 503 when the rows cannot be stored in time |
//! | `POST /admin/v1/purge[?dry_run=true]` | runs the retention purge now (under the lease) |
//! | `GET /admin/v1/purge/history[?limit=N]` | recent `purge_log` rows |
//! | `DELETE /admin/v1/sites/{domain}/data` | deletes every row of a site |
//! | `GET /metrics` | the Prometheus metrics page (also public with `metrics.public`) |

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming, SizeHint};
use jiff::Timestamp;
use tokio::net::TcpListener;

use crate::config::{Config, ServerConfig};
use crate::http::body::{BodyError, read_limited};
use crate::http::server::{self, BoxError, Drained, Handler};
use crate::metrics::MetricsPage;
use crate::pipeline::writer::{QUARANTINE_DIR, WriteProgress};
use crate::store::dsr::{self, EraseScope, ExportFormat, Selector, SelectorBody};
use crate::store::purge::{self, LogProgress, PurgeError, PurgeOptions, Purger};
use crate::token::TokenSet;

/// Largest accepted request body (an erasure selector is a few hundred bytes).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Connections the admin listener serves at once (operators and their scripts, not the
/// public); more wait in the kernel backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Requests in flight on the admin listener at once, and per connection.
pub const MAX_IN_FLIGHT: usize = 64;
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 8;
/// How long open admin connections get to finish at shutdown.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The response body of the admin API: whole answers, or an export streamed from
/// ClickHouse as it arrives.
pub struct AdminBody(UnsyncBoxBody<Bytes, BoxError>);

impl AdminBody {
    fn stream(body: UnsyncBoxBody<Bytes, BoxError>) -> Self {
        Self(body)
    }
}

impl From<Full<Bytes>> for AdminBody {
    fn from(body: Full<Bytes>) -> Self {
        Self(body.map_err(|never| match never {}).boxed_unsync())
    }
}

impl hyper::body::Body for AdminBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

type Body = AdminBody;

/// Everything the admin handlers need.
pub struct AdminState {
    pub client: Client,
    pub purger: Purger,
    pub tokens: TokenSet,
    /// `GET /metrics`; answers 503 until `serve` publishes the registry.
    pub metrics: MetricsPage,
    /// Shutdown as the purges and deletions see it: they stop at their next safe point.
    stop: purge::StopSignal,
    jobs: Jobs,
    /// The collector's writer, when the API runs inside `serve`: erasures and site
    /// deletions first wait for the rows it accepted before them.
    writer: Option<WriterSlot>,
    /// The spool's `quarantine/`, whose files erasures and site deletions reach too.
    quarantine: Option<PathBuf>,
}

/// The writer's progress for the admin API, which `serve` starts before the writer:
/// empty until [`WriterSlot::publish`]; an erasure meanwhile is answered 503 (it
/// could not wait for the rows being replayed). Cloning shares the slot.
#[derive(Debug, Clone, Default)]
pub struct WriterSlot(Arc<OnceLock<WriteProgress>>);

impl WriterSlot {
    /// Makes `progress` the writer's; only the first call counts.
    pub fn publish(&self, progress: WriteProgress) {
        let _ = self.0.set(progress);
    }
}

impl AdminState {
    /// State whose jobs are never asked to stop (see [`AdminState::with_stop`]).
    pub fn new(purger: Purger, tokens: TokenSet) -> Self {
        let (_never, stop) = tokio::sync::watch::channel(false);
        Self {
            client: purger.client().clone(),
            purger,
            tokens,
            metrics: MetricsPage::default(),
            stop,
            jobs: Jobs::default(),
            writer: None,
            quarantine: None,
        }
    }

    /// Erasures and site deletions wait for the rows `writer` accepted before them
    /// (see [`WriterSlot`]).
    pub fn with_writer(mut self, writer: WriterSlot) -> Self {
        self.writer = Some(writer);
        self
    }

    /// Erasures and site deletions also reach the files of `spool_dir/quarantine/`.
    pub fn with_spool_dir(mut self, spool_dir: Option<&std::path::Path>) -> Self {
        self.quarantine = spool_dir.map(|d| d.join(QUARANTINE_DIR));
        self
    }

    /// What an erasure started now waits for and reaches: `None` (answer
    /// [`starting_up`]) while the writer it should wait for has not started.
    fn erase_reach(&self) -> Option<(Option<WriteProgress>, Option<PathBuf>)> {
        let writes = match &self.writer {
            None => None,
            Some(slot) => Some(slot.0.get()?.clone()),
        };
        Some((writes, self.quarantine.clone()))
    }

    /// Purges, erasures and site deletions stop at their next safe point once `stop`
    /// turns true (`serve` fires it at the shutdown signal).
    pub fn with_stop(mut self, stop: purge::StopSignal) -> Self {
        self.stop = stop;
        self
    }

    /// Purges, erasures and site deletions still running (their requests may be gone).
    pub fn running_jobs(&self) -> usize {
        *self.jobs.0.borrow()
    }
}

/// The purges, erasures and site deletions the admin API started. Each runs as a task
/// of its own, not inside its request: a client that disconnects (or a connection
/// dropped at the end of the shutdown drain) cancels only its wait for the answer,
/// never the work half-way (a lease left for hours, a deletion without its
/// `purge_log` row). The count of running jobs lets shutdown wait for them.
#[derive(Clone, Default)]
struct Jobs(Arc<tokio::sync::watch::Sender<usize>>);

/// Counts a job out when its task ends, also by panic.
struct JobGuard(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for JobGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Jobs {
    fn spawn<T: Send + 'static>(
        &self,
        job: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.0.send_modify(|n| *n += 1);
        let guard = JobGuard(Arc::clone(&self.0));
        tokio::spawn(async move {
            let _guard = guard;
            job.await
        })
    }

    /// Resolves once no job is running.
    async fn idle(&self) {
        let _ = self.0.subscribe().wait_for(|n| *n == 0).await;
    }
}

/// Waits for a job's answer; the job goes on if this wait is dropped.
async fn answer<T: serde::Serialize>(
    job: tokio::task::JoinHandle<Result<T, PurgeError>>,
) -> Response<Body> {
    match job.await {
        Ok(Ok(report)) => json(StatusCode::OK, &report),
        Ok(Err(e)) => from_purge_error(&e),
        Err(e) => {
            tracing::error!(error = %e, "admin job failed");
            error_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the collector log",
            )
        }
    }
}

/// The admin API as an [`http::server`](crate::http::server) handler: the admin
/// listener gets the same accept loop, connection cap, header, body and keep-alive
/// timeouts and graceful shutdown as the public one (with the admin's own limits).
struct AdminApi {
    state: Arc<AdminState>,
    body_read_timeout: Duration,
}

impl Handler for AdminApi {
    type Body = AdminBody;

    async fn handle(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<AdminBody> {
        handle(self, req).await
    }
}

/// The server settings of the admin listener: the public server's timeouts, the
/// admin's own address and small limits ([`MAX_CONNECTIONS`], [`MAX_IN_FLIGHT`]).
pub fn server_config(config: &Config) -> ServerConfig {
    ServerConfig {
        listen: config.admin.listen.unwrap_or(config.server.listen),
        max_connections: MAX_CONNECTIONS,
        max_in_flight_requests: MAX_IN_FLIGHT,
        max_in_flight_per_connection: MAX_IN_FLIGHT_PER_CONNECTION,
        h2_max_concurrent_streams: MAX_IN_FLIGHT_PER_CONNECTION as u32,
        shutdown_timeout_ms: DRAIN.as_millis() as u64,
        trusted_proxies: Vec::new(),
        ..config.server.clone()
    }
}

/// Serves the admin API on `listener` with `config`'s limits (see [`server_config`])
/// until `shutdown` turns true (or its sender is dropped); connections in progress are
/// then given `config.shutdown_timeout_ms` to finish.
pub async fn run_admin(
    listener: TcpListener,
    state: Arc<AdminState>,
    config: &ServerConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Drained {
    if state.tokens.is_empty() {
        tracing::warn!("admin API has no tokens configured: every request will get 401");
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    let api = Arc::new(AdminApi {
        state,
        body_read_timeout: config.body_read_timeout(),
    });
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let drained = server::run(listener, config, Arc::clone(&api), stop).await;
    if !drained.complete {
        tracing::warn!("admin connections still open after the drain timeout");
    }
    // Jobs were told to stop with the shutdown signal (see `AdminState::with_stop`):
    // each ends at its next safe point, lease released and `purge_log` written. The
    // caller bounds this wait (`serve` by its shutdown budget).
    let running = api.state.running_jobs();
    if running > 0 {
        tracing::info!(running, "waiting for admin jobs to reach a safe point");
    }
    api.state.jobs.idle().await;
    drained
}

/// `serve` wiring: registers the purge metrics, sets the TTL backstop, starts the
/// daily purge scheduler and the admin listener (when `admin.listen` is set). The
/// scheduler and the admin API's jobs stop when `purge_stop` turns true (serve fires it
/// at the signal, so a running purge gets the whole shutdown budget to reach a safe
/// point and release its lease); the admin listener when `stop` does, and its task
/// ends once its jobs have. Await both tasks; do not abort them early.
///
/// An admin address that cannot be bound is logged, not fatal: ingestion matters more
/// than the admin API, and several collectors on one host would otherwise fight over
/// the default port. The admin API serves `metrics_page` at `/metrics`, and its
/// erasures wait for the writer `serve` publishes in `writer`; its bound address is
/// returned with its task.
#[allow(clippy::too_many_arguments)]
pub async fn start_in_serve(
    config: &crate::config::Config,
    client: &Client,
    registry: &mut prometheus_client::registry::Registry,
    metrics_page: MetricsPage,
    writer: WriterSlot,
    stop: tokio::sync::watch::Receiver<bool>,
    purge_stop: purge::StopSignal,
) -> Result<
    (
        Option<tokio::task::JoinHandle<()>>,
        Option<(SocketAddr, tokio::task::JoinHandle<Drained>)>,
    ),
    PurgeError,
> {
    let metrics = purge::PurgeMetrics::register(registry);
    let purger = Purger::new(client.clone(), config, metrics)?;
    if let Err(err) = purger.ensure_ttl().await {
        tracing::warn!(error = %err, "cannot set the events TTL backstop");
    }
    let scheduler =
        purge::spawn_scheduler(purger.clone(), config.retention.clone(), purge_stop.clone());
    let admin = match config.admin.listen {
        None => None,
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => {
                let state = Arc::new(AdminState {
                    metrics: metrics_page,
                    ..AdminState::new(purger, TokenSet::from_config(&config.admin.tokens))
                        .with_stop(purge_stop)
                        .with_writer(writer)
                        .with_spool_dir(config.spool.dir.as_deref())
                });
                let bound = listener.local_addr().unwrap_or(addr);
                let server = server_config(config);
                let task =
                    tokio::spawn(async move { run_admin(listener, state, &server, stop).await });
                Some((bound, task))
            }
            Err(err) => {
                tracing::error!(%addr, error = %err, "cannot bind the admin API; running without it");
                None
            }
        },
    };
    Ok((scheduler, admin))
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(AdminBody::from(Full::new(body.into())));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => full(status, "application/json", body),
        Err(_) => full(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "internal error",
        ),
    }
}

fn error_json(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// 503 for an erasure that arrives before the writer it must wait for has started.
fn starting_up() -> Response<Body> {
    crate::http::response::json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({ "error": "the collector is starting; retry" }),
    )
    .map(AdminBody::from)
}

fn unauthorized() -> Response<Body> {
    let mut resp = full(StatusCode::UNAUTHORIZED, "text/plain", Bytes::new());
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

fn from_purge_error(e: &PurgeError) -> Response<Body> {
    match e {
        PurgeError::Invalid(msg) => error_json(StatusCode::BAD_REQUEST, msg),
        PurgeError::Busy { .. } => error_json(StatusCode::CONFLICT, "another purge is running"),
        PurgeError::Pending { .. } => crate::http::response::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({
                "error": format!("{e}: the writer could not store them in time (is ClickHouse down?); retry")
            }),
        )
        .map(AdminBody::from),
        PurgeError::Files(_) => {
            tracing::error!(error = %e, "admin request failed");
            error_json(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
        PurgeError::Stopped => crate::http::response::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "error": "the collector is shutting down; retry" }),
        )
        .map(AdminBody::from),
        other => {
            tracing::error!(error = %other, "admin request failed");
            error_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the collector log",
            )
        }
    }
}

/// The token's name, or `None` for a missing, malformed or unknown token.
fn authenticate<'a>(tokens: &'a TokenSet, req: &Request<Incoming>) -> Option<&'a str> {
    tokens.verify(crate::token::bearer(req.headers())?)
}

async fn handle(api: &AdminApi, req: Request<Incoming>) -> Response<Body> {
    let state = &*api.state;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let Some(token_name) = authenticate(&state.tokens, &req).map(str::to_owned) else {
        tracing::warn!(%method, %path, status = 401, "admin call refused");
        return unauthorized();
    };
    let resp = route(api, &token_name, req).await;
    let status = resp.status().as_u16();
    if path == "/metrics" && status == 200 {
        // A scrape every few seconds is not an event worth a line.
        tracing::debug!(token = %token_name, %method, %path, status, "admin call");
    } else {
        tracing::info!(token = %token_name, %method, %path, status, "admin call");
    }
    resp
}

fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The whole request body, at most [`MAX_BODY_BYTES`], within the server's body read
/// timeout.
async fn read_body(api: &AdminApi, req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let read = read_limited(req.into_body(), MAX_BODY_BYTES);
    match tokio::time::timeout(api.body_read_timeout, read).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(BodyError::TooLarge)) => {
            Err(error_json(StatusCode::PAYLOAD_TOO_LARGE, "body too large"))
        }
        Ok(Err(BodyError::Broken)) => Err(error_json(
            StatusCode::BAD_REQUEST,
            "body could not be read",
        )),
        Err(_) => Err(error_json(
            StatusCode::REQUEST_TIMEOUT,
            "body not received in time",
        )),
    }
}

async fn route(api: &AdminApi, token_name: &str, req: Request<Incoming>) -> Response<Body> {
    let state = &*api.state;
    let actor = format!("admin:{token_name}");
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["metrics"]) => match state.metrics.render() {
            Some(page) => full(StatusCode::OK, crate::metrics::CONTENT_TYPE, page),
            None => error_json(StatusCode::SERVICE_UNAVAILABLE, "starting up"),
        },
        (&Method::GET, ["admin", "v1", "export"]) => export(state, &req).await,
        (&Method::POST, ["admin", "v1", "erase"]) => {
            let body = match read_body(api, req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let selector = match serde_json::from_slice::<SelectorBody>(&body) {
                Ok(b) => match Selector::try_from(b) {
                    Ok(s) => s,
                    Err(e) => return from_purge_error(&e),
                },
                Err(e) => return error_json(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            let Some((writes, quarantine)) = state.erase_reach() else {
                return starting_up();
            };
            let (client, timeouts, stop) = (
                state.client.clone(),
                state.purger.timeouts(),
                state.stop.clone(),
            );
            let metrics = state.purger.metrics().clone();
            answer(state.jobs.spawn(async move {
                let scope = EraseScope {
                    stop: Some(&stop),
                    writes: writes.as_ref(),
                    quarantine: quarantine.as_deref(),
                    metrics: Some(&metrics),
                };
                let result = dsr::erase_in(&client, timeouts, &selector, &actor, scope).await;
                count_erasure(&metrics, "erase", &result);
                result
            }))
            .await
        }
        (&Method::POST, ["admin", "v1", "purge"]) => {
            let mut dry_run = query_pairs(&req)
                .iter()
                .any(|(k, v)| k == "dry_run" && (v == "true" || v == "1"));
            let body = match read_body(api, req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            if !body.iter().all(u8::is_ascii_whitespace) {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct PurgeBody {
                    #[serde(default)]
                    dry_run: bool,
                }
                match serde_json::from_slice::<PurgeBody>(&body) {
                    Ok(b) => dry_run |= b.dry_run,
                    Err(e) => return error_json(StatusCode::BAD_REQUEST, &e.to_string()),
                }
            }
            let opts = PurgeOptions {
                now: Timestamp::now(),
                dry_run,
                actor,
            };
            let (purger, stop) = (state.purger.clone(), state.stop.clone());
            answer(state.jobs.spawn(async move {
                // A dry run changes nothing, so it needs no lease.
                if dry_run {
                    purger.run_until(&opts, &LogProgress, &stop).await
                } else {
                    purge::run_with_lease_until(&purger, &opts, &LogProgress, &stop).await
                }
            }))
            .await
        }
        (&Method::GET, ["admin", "v1", "purge", "history"]) => {
            let limit = query_pairs(&req)
                .iter()
                .find(|(k, _)| k == "limit")
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(100)
                .min(10_000);
            match purge::history(&state.client, state.purger.timeouts().query, limit).await {
                Ok(rows) => json(StatusCode::OK, &rows),
                Err(e) => from_purge_error(&e),
            }
        }
        (&Method::DELETE, ["admin", "v1", "sites", domain, "data"]) => {
            let (client, timeouts, stop) = (
                state.client.clone(),
                state.purger.timeouts(),
                state.stop.clone(),
            );
            let site = (*domain).to_owned();
            let metrics = state.purger.metrics().clone();
            let Some((writes, quarantine)) = state.erase_reach() else {
                return starting_up();
            };
            answer(state.jobs.spawn(async move {
                let scope = EraseScope {
                    stop: Some(&stop),
                    writes: writes.as_ref(),
                    quarantine: quarantine.as_deref(),
                    metrics: Some(&metrics),
                };
                let result = dsr::delete_site_in(&client, timeouts, &site, &actor, scope).await;
                count_erasure(&metrics, "site_delete", &result);
                result
            }))
            .await
        }
        (_, ["metrics"])
        | (_, ["admin", "v1", "export"])
        | (_, ["admin", "v1", "erase"])
        | (_, ["admin", "v1", "purge"])
        | (_, ["admin", "v1", "purge", "history"])
        | (_, ["admin", "v1", "sites", _, "data"]) => {
            error_json(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error_json(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Counts an erasure or site deletion that ran (a refused selector did not).
fn count_erasure(
    metrics: &purge::PurgeMetrics,
    method: &'static str,
    result: &Result<dsr::EraseReport, PurgeError>,
) {
    let removed = match result {
        Ok(report) => Ok(report.rows_before),
        Err(PurgeError::Invalid(_)) => return,
        Err(_) => Err(()),
    };
    metrics.record_erasure(method, removed);
}

async fn export(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    let pairs = query_pairs(req);
    let format = match pairs.iter().find(|(k, _)| k == "format") {
        Some((_, f)) => match ExportFormat::parse(f) {
            Ok(f) => f,
            Err(e) => return from_purge_error(&e),
        },
        None => ExportFormat::JsonLines,
    };
    let selector =
        match Selector::from_query_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(s) => s,
            Err(e) => return from_purge_error(&e),
        };
    let mut cursor = match dsr::export(
        &state.client,
        state.purger.timeouts().query,
        &selector,
        format,
    ) {
        Ok(c) => c,
        Err(e) => return from_purge_error(&e),
    };
    // The first chunk is awaited before the status is sent, so a failing query is a
    // 500, not a 200 with an empty body. Later failures abort the response mid-stream,
    // which a client sees as a truncated transfer rather than a complete export.
    let first = match cursor.next().await {
        Ok(chunk) => chunk,
        Err(e) => return from_purge_error(&e),
    };
    let head = futures_util::stream::iter(first.map(|b| Ok::<_, BoxError>(Frame::data(b))));
    let rest = futures_util::stream::unfold(Some(cursor), |cursor| async move {
        let mut cursor = cursor?;
        match cursor.next().await {
            Ok(Some(chunk)) => Some((Ok(Frame::data(chunk)), Some(cursor))),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "export aborted");
                Some((Err(BoxError::from(e)), None))
            }
        }
    });
    let body = AdminBody::stream(BodyExt::boxed_unsync(StreamBody::new(head.chain(rest))));
    let mut resp = Response::new(body);
    if let Ok(v) = header::HeaderValue::from_str(format.content_type()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}
