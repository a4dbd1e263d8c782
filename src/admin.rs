//! Admin API: a listener of its own (`admin.listen`, loopback by default), apart from
//! the public ingestion port, for data-subject requests and purges.
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
//! | `POST /admin/v1/erase` (JSON selector) | deletes matching rows, verified, logged |
//! | `POST /admin/v1/purge[?dry_run=true]` | runs the retention purge now (under the lease) |
//! | `GET /admin/v1/purge/history[?limit=N]` | recent `purge_log` rows |
//! | `DELETE /admin/v1/sites/{domain}/data` | deletes every row of a site |
//! | `GET /metrics` | the Prometheus metrics page (also public with `metrics.public`) |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use tokio::net::TcpListener;

use crate::metrics::MetricsPage;
use crate::store::dsr::{self, ExportFormat, Selector, SelectorBody};
use crate::store::purge::{self, LogProgress, PurgeError, PurgeOptions, Purger};
use crate::token::TokenSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Largest accepted request body (an erasure selector is a few hundred bytes).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the admin handlers need.
pub struct AdminState {
    pub client: Client,
    pub purger: Purger,
    pub tokens: TokenSet,
    /// `GET /metrics`; answers 503 until `serve` publishes the registry.
    pub metrics: MetricsPage,
}

impl AdminState {
    pub fn new(purger: Purger, tokens: TokenSet) -> Self {
        Self {
            client: purger.client().clone(),
            purger,
            tokens,
            metrics: MetricsPage::default(),
        }
    }
}

/// Serves the admin API on `listener` until `shutdown` turns true (or its sender is
/// dropped); connections in progress are then given `drain` to finish.
pub async fn run_admin(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
) -> std::io::Result<()> {
    if state.tokens.is_empty() {
        tracing::warn!("admin API has no tokens configured: every request will get 401");
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
        };
        let (stream, _peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin connections still open after the drain timeout");
    }
    Ok(())
}

/// `serve` wiring: registers the purge metrics, sets the TTL backstop, starts the
/// daily purge scheduler and the admin listener (when `admin.listen` is set). The
/// admin API ends when `stop` turns true; the scheduler when `purge_stop` does (serve
/// fires it at the signal, so a running purge gets the whole shutdown budget to reach a
/// safe point and release its lease). Await the scheduler task; do not abort it.
///
/// An admin address that cannot be bound is logged, not fatal: ingestion matters more
/// than the admin API, and several collectors on one host would otherwise fight over
/// the default port. The admin API serves `metrics_page` at `/metrics`; its bound address
/// is returned with its task.
pub async fn start_in_serve(
    config: &crate::config::Config,
    client: &Client,
    registry: &mut prometheus_client::registry::Registry,
    metrics_page: MetricsPage,
    stop: tokio::sync::watch::Receiver<bool>,
    purge_stop: purge::StopSignal,
) -> Result<
    (
        Option<tokio::task::JoinHandle<()>>,
        Option<(
            std::net::SocketAddr,
            tokio::task::JoinHandle<std::io::Result<()>>,
        )>,
    ),
    PurgeError,
> {
    let metrics = purge::PurgeMetrics::register(registry);
    let purger = Purger::new(client.clone(), config, metrics)?;
    if let Err(err) = purger.ensure_ttl().await {
        tracing::warn!(error = %err, "cannot set the events TTL backstop");
    }
    let scheduler = purge::spawn_scheduler(purger.clone(), config.retention.clone(), purge_stop);
    let admin = match config.admin.listen {
        None => None,
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => {
                let state = Arc::new(AdminState {
                    metrics: metrics_page,
                    ..AdminState::new(purger, TokenSet::from_config(&config.admin.tokens))
                });
                let bound = listener.local_addr().unwrap_or(addr);
                let task = tokio::spawn(run_admin(listener, state, stop, Duration::from_secs(5)));
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
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
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
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    tokens.verify(token.trim())
}

async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let Some(token_name) = authenticate(&state.tokens, &req).map(str::to_owned) else {
        tracing::warn!(%method, %path, status = 401, "admin call refused");
        return unauthorized();
    };
    let resp = route(state, &token_name, req).await;
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

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large or unreadable",
        )),
    }
}

async fn route(state: &AdminState, token_name: &str, req: Request<Incoming>) -> Response<Body> {
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
            let body = match read_body(req).await {
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
            let result =
                dsr::erase(&state.client, state.purger.timeouts(), &selector, &actor).await;
            count_erasure(state, "erase", &result);
            match result {
                Ok(report) => json(StatusCode::OK, &report),
                Err(e) => from_purge_error(&e),
            }
        }
        (&Method::POST, ["admin", "v1", "purge"]) => {
            let mut dry_run = query_pairs(&req)
                .iter()
                .any(|(k, v)| k == "dry_run" && (v == "true" || v == "1"));
            let body = match read_body(req).await {
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
            // A dry run changes nothing, so it needs no lease.
            let result = if dry_run {
                state.purger.run(&opts, &LogProgress).await
            } else {
                purge::run_with_lease(&state.purger, &opts, &LogProgress).await
            };
            match result {
                Ok(report) => json(StatusCode::OK, &report),
                Err(e) => from_purge_error(&e),
            }
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
            let result =
                dsr::delete_site(&state.client, state.purger.timeouts(), domain, &actor).await;
            count_erasure(state, "site_delete", &result);
            match result {
                Ok(report) => json(StatusCode::OK, &report),
                Err(e) => from_purge_error(&e),
            }
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
    state: &AdminState,
    method: &'static str,
    result: &Result<dsr::EraseReport, PurgeError>,
) {
    let removed = match result {
        Ok(report) => Ok(report.rows_before),
        Err(PurgeError::Invalid(_)) => return,
        Err(_) => Err(()),
    };
    state.purger.metrics().record_erasure(method, removed);
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
    let body = BodyExt::boxed_unsync(StreamBody::new(head.chain(rest)));
    let mut resp = Response::new(body);
    if let Ok(v) = header::HeaderValue::from_str(format.content_type()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}
