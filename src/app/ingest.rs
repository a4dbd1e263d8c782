//! Request handling: the Plausible-compatible Events API (`POST /api/event`,
//! `POST /api/events`), CORS, the tracker script (`GET /js/script.js`, see
//! [`crate::app::tracker`]), the no-JavaScript pixel (`GET /api/event.gif`, see
//! [`pixel`]), and the operational endpoints (`/health`, `/ready`, and `/metrics` only
//! with `metrics.public`: it is on the admin listener otherwise).
//!
//! Status codes are a contract with the tracker and with monitoring: 202 only once the
//! writer took the rows (or for a deliberate drop, marked with `X-Hush-Dropped`), 400
//! with a short JSON reason for malformed hits, 403 for unknown sites, 413/415 for
//! oversized or mistyped bodies, 503 + `Retry-After` when the writer's buffer (the disk
//! spool, or the in-memory queue without one) is full.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use smallvec::SmallVec;

use crate::collect::client_ip;
use crate::collect::hit::{self, IncomingEvent};
use crate::collect::sites::{Site, SiteRegistry};
use crate::config::Config;
use crate::enrich::row::EventRow;
use crate::enrich::session::Journal;
use crate::enrich::{EnrichError, Enricher, HitContext, Outcome};
use crate::http::body::{BodyError, body_left_unread, read_limited};
use crate::http::response;
use crate::http::server::{Body, Handler, simple};
use crate::metrics::{DropReason, HttpMetrics, RejectReason, Route};
use crate::pipeline::dropped::{DropCounter, Reason};
use crate::pipeline::writer::{EventSink, SubmitError};

mod pixel;

/// Browsers cache a preflight answer this long (seconds); Chrome caps it at 2 hours.
const PREFLIGHT_MAX_AGE: &str = "86400";

/// Everything a request needs, shared by all connections.
pub struct Ingest {
    pub config: Arc<Config>,
    pub sites: Arc<SiteRegistry>,
    pub enricher: Arc<Enricher>,
    pub sink: EventSink,
    pub metrics: HttpMetrics,
    pub registry: Arc<prometheus_client::registry::Registry>,
    /// Whether the writer still runs (`app::supervise` watches it).
    pub health: Arc<crate::app::supervise::Health>,
    /// ClickHouse's state, kept by `app::store`'s task (`/ready` never waits on it).
    pub store: Arc<crate::app::store::Store>,
    /// The Stats API, when this listener serves the read side too.
    pub stats: Option<Arc<crate::app::stats::Stats>>,
    /// The dashboard, when this listener serves the read side too.
    pub dashboard: Option<Arc<crate::app::dashboard::Dashboard>>,
    /// Sign-in, sessions and shared links, with the read side.
    pub auth: Option<Arc<crate::app::auth::Auth>>,
    /// Hits not counted as a visitor's, per site, day and reason (`dropped` table).
    pub not_counted: Arc<DropCounter>,
}

/// What a request's hits were not counted as, per site: recorded in
/// [`Ingest::not_counted`] once the request is accepted (a refused request's hits are
/// refused, and a retry would count them twice).
pub(crate) type Tally = SmallVec<[(Arc<str>, Reason); 2]>;

/// A refused request: status, metric reason, short public message.
struct Reject {
    status: StatusCode,
    reason: RejectReason,
    body: serde_json::Value,
    /// Seconds for `Retry-After` on 503 (the writer's estimate when it has one).
    retry_after_secs: u64,
    /// Hits the request carried, as counted in `hush_hits_rejected_total`: 1 until a
    /// batch's events are counted.
    hits: u64,
    /// The error behind a refusal that is the collector's fault, for the log line.
    cause: Option<String>,
}

impl Reject {
    fn new(status: StatusCode, reason: RejectReason, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            body: serde_json::json!({ "error": message.into() }),
            retry_after_secs: 1,
            hits: 1,
            cause: None,
        }
    }
    fn unavailable(reason: RejectReason, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, reason, message)
    }
    /// The same refusal, counted as `hits` hits.
    fn for_hits(self, hits: u64) -> Self {
        Self { hits, ..self }
    }
    fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, RejectReason::malformed, message)
    }
    /// A batch refused because of some of its events: the one body every such refusal
    /// has, `{"error": "invalid events in batch", "items": [{"index": i, "error": ".."}]}`.
    fn invalid_batch(items: Vec<serde_json::Value>) -> Self {
        Self {
            body: serde_json::json!({ "error": "invalid events in batch", "items": items }),
            ..Self::malformed("")
        }
    }
}

fn header_is_one(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
}

/// `application/json` or `text/plain` (what `navigator.sendBeacon` sends for a string),
/// parameters such as `charset` ignored.
fn acceptable_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case("text/plain")
}

impl Ingest {
    fn route(&self, method: &Method, path: &str) -> (Route, bool) {
        let route = match path {
            "/api/event" => Route::event,
            "/api/events" => Route::events,
            "/health" => Route::health,
            "/ready" => Route::ready,
            "/metrics" if self.config.metrics.public => Route::metrics,
            "/js/script.js" | "/js/hush.js" => Route::script,
            "/api/event.gif" | "/pixel.gif" => Route::pixel,
            _ => Route::not_found,
        };
        let route = if *method == Method::OPTIONS && matches!(route, Route::event | Route::events) {
            Route::preflight
        } else {
            route
        };
        let method_ok = match route {
            Route::event | Route::events => *method == Method::POST,
            Route::preflight => true,
            Route::health | Route::ready | Route::metrics | Route::script | Route::pixel => {
                *method == Method::GET || *method == Method::HEAD
            }
            Route::not_found | Route::stats | Route::dashboard | Route::auth => true,
        };
        (route, method_ok)
    }

    /// Adds CORS headers when the request's `Origin` is one of the configured sites.
    fn cors(&self, origin: Option<&HeaderValue>, resp: &mut Response<Body>) {
        let headers = resp.headers_mut();
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin else { return };
        let allowed = origin
            .to_str()
            .is_ok_and(|o| self.sites.is_allowed_origin(o));
        if allowed {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("X-Hush-Dropped"),
            );
        }
    }

    fn preflight(&self, origin: Option<&HeaderValue>) -> Response<Body> {
        let allowed = origin
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| self.sites.is_allowed_origin(o));
        if !allowed {
            return simple(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
        let mut resp = simple(StatusCode::NO_CONTENT, "");
        *resp.body_mut() = Full::new(Bytes::new());
        let h = resp.headers_mut();
        h.remove(header::CONTENT_TYPE);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        resp
    }

    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        limit: usize,
    ) -> Result<Bytes, Reject> {
        let too_large = || {
            Reject::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                RejectReason::too_large,
                format!("body larger than {limit} bytes"),
            )
        };
        // Refuse a declared oversized body before reading any of it.
        if let Some(len) = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > limit as u64
        {
            return Err(too_large());
        }
        let read = read_limited(body, limit);
        tokio::pin!(read);
        // A beacon's body nearly always arrives with its head: then it is read without
        // arming the timer (a timer entry per request is measurable at this rate).
        let read = match read.as_mut().now_or_never() {
            Some(read) => read,
            None => {
                let deadline = self.config.server.body_read_timeout();
                match tokio::time::timeout(deadline, read).await {
                    Ok(read) => read,
                    Err(_) => {
                        return Err(Reject::new(
                            StatusCode::REQUEST_TIMEOUT,
                            RejectReason::body_timeout,
                            "body not received in time",
                        ));
                    }
                }
            }
        };
        match read {
            Err(BodyError::TooLarge) => Err(too_large()),
            Err(BodyError::Broken) => Err(Reject::malformed("body could not be read")),
            Ok(body) => Ok(body),
        }
    }

    /// Sites a hit counts for: every name of its comma-separated `domain`, each
    /// resolved to a configured site (duplicates counted once). Borrowed from the
    /// registry and kept inline: no allocation for the usual one or two names.
    fn resolve_sites(&self, ev: &IncomingEvent) -> Result<SmallVec<[&Arc<Site>; 2]>, Reject> {
        let mut sites: SmallVec<[&Arc<Site>; 2]> = SmallVec::new();
        for name in &ev.domains {
            match self.sites.resolve(name) {
                Some(site) => {
                    if !sites.iter().any(|s| Arc::ptr_eq(s, site)) {
                        sites.push(site);
                    }
                }
                None => {
                    return Err(Reject::new(
                        StatusCode::FORBIDDEN,
                        RejectReason::unknown_site,
                        "unknown site",
                    ));
                }
            }
        }
        if sites.is_empty() {
            return Err(Reject::malformed("domain is empty"));
        }
        Ok(sites)
    }

    /// Enriches one parsed hit for every site it names. Returns the rows to store and
    /// the drop reason when the hit was deliberately not stored; `journal` records
    /// what the hit changed in the visit tracker. The hit moves into the last site's
    /// row; only extra sites of a multi-domain hit copy its strings.
    fn enrich_hit(
        &self,
        ev: IncomingEvent,
        ctx: &HitContext<'_>,
        rows: &mut impl Extend<EventRow>,
        journal: &mut Journal,
        tally: &mut Tally,
    ) -> Result<Option<DropReason>, Reject> {
        let sites = self.resolve_sites(&ev)?;
        let Some((last, others)) = sites.split_last() else {
            return Err(Reject::malformed("domain is empty"));
        };
        let mut dropped = None;
        let anonymised = self.enricher.anonymised_by(ctx).map(|r| match r {
            DropReason::gpc => Reason::GpcAnonymous,
            _ => Reason::DntAnonymous,
        });
        let mut take = |site: &Arc<Site>, outcome: Result<Outcome, EnrichError>| match outcome {
            Ok(Outcome::Store(row)) => {
                if let Some(reason) = anonymised {
                    tally.push((Arc::clone(&site.domain), reason));
                }
                rows.extend(std::iter::once(row));
                Ok(())
            }
            Ok(Outcome::Dropped(reason)) => {
                tally.push((Arc::clone(&site.domain), Reason::of_drop(reason)));
                dropped = Some(reason);
                Ok(())
            }
            Err(err @ EnrichError::StaleSalt(_)) => Err(Reject {
                cause: Some(err.to_string()),
                ..Reject::unavailable(RejectReason::salt_unavailable, "not accepting hits now")
            }),
            Err(err @ EnrichError::Url(_)) => Err(Reject::malformed(enrich_message(&err))),
        };
        for site in others {
            take(
                site,
                self.enricher.enrich_journaled(&ev, site, ctx, journal),
            )?;
        }
        take(
            last,
            self.enricher.enrich_owned_journaled(ev, last, ctx, journal),
        )?;
        Ok(dropped)
    }

    /// Counts an accepted request's not-counted hits. A bot's family comes from the UA
    /// parser's cache (the hit was just parsed), so only bots pay the lookup.
    fn count_not_counted(&self, tally: &Tally, ctx: &HitContext<'_>) {
        if tally.is_empty() {
            return;
        }
        let day = ctx.now_secs / 86_400;
        let family = if tally.iter().any(|(_, r)| *r == Reason::Bot) {
            Arc::clone(&self.enricher.ua.parse(ctx.user_agent).bot_family)
        } else {
            Arc::from("")
        };
        for (site, reason) in tally {
            self.not_counted.record(site, day, *reason, &family);
        }
    }

    fn context<'a>(&self, headers: &'a HeaderMap, peer: SocketAddr) -> HitContext<'a> {
        let privacy = &self.config.privacy;
        // The full address exists only inside this expression.
        let ip = client_ip::truncate(
            client_ip::client_ip(peer, headers, &self.config.server.trusted_proxies),
            privacy.ipv4_prefix,
            privacy.ipv6_prefix,
        );
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Client hints only correct the parse; they are neither stored nor hashed.
        let hint = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        HitContext {
            ip,
            user_agent,
            hints: crate::enrich::ua::ClientHints {
                brands: hint("sec-ch-ua"),
                mobile: hint("sec-ch-ua-mobile"),
                platform: hint("sec-ch-ua-platform"),
            },
            dnt: header_is_one(headers, "dnt"),
            gpc: header_is_one(headers, "sec-gpc"),
            now_secs: crate::clock::now_secs(),
        }
    }

    /// Hands `rows` (made from `hits` hits) to the writer; counts the hits accepted.
    async fn submit(&self, rows: &[EventRow], hits: u64) -> Result<(), Reject> {
        if rows.is_empty() {
            return Ok(());
        }
        // A 202 promises storage: not while nothing drains the buffer.
        if !self.health.writer_running() {
            return Err(Reject::unavailable(
                RejectReason::writer_stopped,
                "not accepting hits",
            ));
        }
        match self.sink.submit(rows).await {
            Ok(()) => {
                self.metrics.accepted(hits);
                Ok(())
            }
            Err(SubmitError::QueueFull { retry_after }) => Err(Reject {
                retry_after_secs: retry_after.as_secs_f64().ceil() as u64,
                ..Reject::unavailable(RejectReason::queue_full, "queue full, retry later")
            }),
            Err(SubmitError::TooLarge { .. } | SubmitError::TooManyBytes { .. }) => {
                Err(Reject::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    RejectReason::too_large,
                    "more events than the queue holds",
                ))
            }
            // Expected while stopping: a debug line, not an error per request.
            Err(SubmitError::ShuttingDown) => Err(Reject::unavailable(
                RejectReason::shutting_down,
                "shutting down, retry later",
            )),
            Err(SubmitError::Unwritable { retry_after }) => Err(Reject {
                retry_after_secs: retry_after.as_secs_f64().ceil() as u64,
                ..Reject::unavailable(
                    RejectReason::spool_unwritable,
                    "cannot store hits now, retry later",
                )
            }),
            Err(err @ SubmitError::Unavailable(_)) => Err(Reject {
                cause: Some(err.to_string()),
                ..Reject::unavailable(RejectReason::internal, "not accepting hits")
            }),
        }
    }

    /// Takes back a refused request's visit changes. Not reached when the request is
    /// cancelled while its rows are being submitted: they may still be stored.
    fn undo(&self, journal: &Journal) {
        if !journal.is_empty() {
            self.enricher.sessions.undo(journal);
        }
    }

    /// The 202 of `/api/event`: marked (and counted) as dropped when the hit stored no
    /// row, so a hit is counted accepted or dropped, never both.
    fn accepted(&self, dropped: Option<DropReason>, stored: bool) -> Response<Body> {
        let mut resp = simple(StatusCode::ACCEPTED, "ok");
        if let Some(reason) = dropped {
            if !stored {
                self.metrics.dropped(reason);
            }
            resp.headers_mut()
                .insert("x-hush-dropped", HeaderValue::from_static(reason.as_str()));
        }
        resp
    }

    /// The request's headers and body, once the content type is one hits come in and
    /// the body fits in `limit` bytes (shared by `/api/event` and `/api/events`).
    async fn checked_body(
        &self,
        req: Request<Incoming>,
        limit: usize,
    ) -> Result<(HeaderMap, Bytes), Reject> {
        if !acceptable_content_type(req.headers()) {
            return Err(Reject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                RejectReason::unsupported_media_type,
                "content type must be application/json or text/plain",
            ));
        }
        // Keep the headers by taking the request apart rather than cloning the map:
        // the hit context reads them after the body, and a clone costs allocations
        // (and their frees) on every request.
        let (parts, body) = req.into_parts();
        let body = self.read_body(&parts.headers, body, limit).await?;
        Ok((parts.headers, body))
    }

    async fn event(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Reject> {
        let (headers, body) = self
            .checked_body(req, self.config.limits.max_body_bytes)
            .await?;
        let ev = hit::parse_event(&body, &self.config.limits)
            .map_err(|e| Reject::malformed(e.to_string()))?;
        let ctx = self.context(&headers, peer);
        // One hit makes one row, or one per site of a multi-domain hit: kept inline.
        let mut rows: SmallVec<[EventRow; 1]> = SmallVec::new();
        let mut journal = Journal::default();
        let mut tally = Tally::new();
        let dropped = self
            .enrich_hit(ev, &ctx, &mut rows, &mut journal, &mut tally)
            .inspect_err(|_| self.undo(&journal))?;
        // A refused hit leaves no visit behind (as for a batch, below).
        self.submit(&rows, 1)
            .await
            .inspect_err(|_| self.undo(&journal))?;
        self.count_not_counted(&tally, &ctx);
        Ok(self.accepted(dropped, !rows.is_empty()))
    }

    async fn events(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Reject> {
        let (headers, body) = self
            .checked_body(req, self.config.limits.max_batch_body_bytes)
            .await?;
        let events = hit::parse_batch(&body, &self.config.limits).map_err(|e| {
            let reject = match e {
                hit::BatchError::Items(items) => Reject::invalid_batch(
                    items
                        .iter()
                        .map(|(index, e)| batch_item_error(*index, e.to_string().into()))
                        .collect(),
                ),
                other => Reject::malformed(other.to_string()),
            };
            reject.for_hits(batch_len(&body).unwrap_or(1))
        })?;
        let hits = events.len() as u64;
        self.store_batch(events, &headers, peer)
            .await
            .map_err(|reject| reject.for_hits(hits))
    }

    /// The parsed events of a batch, all stored or none.
    async fn store_batch(
        &self,
        events: Vec<IncomingEvent>,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Reject> {
        // All or nothing, for state too: every item is checked (sites, page URL)
        // before any of them touches the session tracker, and what they changed
        // there is taken back if the batch is refused after all (a 503).
        let mut errors = Vec::new();
        for (index, ev) in events.iter().enumerate() {
            let problem = match self.resolve_sites(ev) {
                Err(reject) => Some(reject.body.get("error").cloned().unwrap_or_default()),
                Ok(_) => crate::enrich::page_url::validate(&ev.url, ev.hash_mode)
                    .err()
                    .map(|e| serde_json::Value::from(e.to_string())),
            };
            if let Some(error) = problem {
                errors.push(batch_item_error(index, error));
            }
        }
        if !errors.is_empty() {
            return Err(Reject::invalid_batch(errors));
        }
        let ctx = self.context(headers, peer);
        let accepted = events.len();
        let mut rows = Vec::with_capacity(accepted);
        // Counted only once the batch is in: a refused batch's hits are refused, not
        // dropped.
        let mut journal = Journal::default();
        let mut drops = Vec::new();
        let mut tally = Tally::new();
        for (index, ev) in events.into_iter().enumerate() {
            let before = rows.len();
            match self.enrich_hit(ev, &ctx, &mut rows, &mut journal, &mut tally) {
                Ok(Some(reason)) if rows.len() == before => drops.push(reason),
                Ok(_) => {}
                // Not the event's fault: the whole batch is refused with 503.
                Err(reject) if reject.status == StatusCode::SERVICE_UNAVAILABLE => {
                    self.undo(&journal);
                    return Err(reject);
                }
                Err(reject) => errors.push(batch_item_error(
                    index,
                    reject.body.get("error").cloned().unwrap_or_default(),
                )),
            }
        }
        // All or nothing: a batch with any bad item stores none of them, so a client
        // can fix and resend the whole batch without creating duplicates.
        if !errors.is_empty() {
            self.undo(&journal);
            return Err(Reject::invalid_batch(errors));
        }
        let stored = rows.len();
        let dropped = drops.len();
        self.submit(&rows, (accepted - dropped) as u64)
            .await
            .inspect_err(|_| self.undo(&journal))?;
        for reason in drops {
            self.metrics.dropped(reason);
        }
        self.count_not_counted(&tally, &ctx);
        Ok(response::json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "accepted": accepted, "stored": stored, "dropped": dropped }),
        ))
    }

    /// `/health`: the process answers and still stores what it accepts.
    fn health(&self) -> Response<Body> {
        if self.health.writer_running() {
            simple(StatusCode::OK, "ok\n")
        } else {
            simple(StatusCode::SERVICE_UNAVAILABLE, "writer stopped\n")
        }
    }

    /// `/ready`: whether a load balancer should send hits here (see
    /// [`crate::app::store::readiness`]); the body says why, and the store's state.
    async fn ready(&self) -> Response<Body> {
        let salt_current = self
            .enricher
            .salts
            .for_day(crate::enrich::salt::today())
            .is_ok();
        let spool_writable = self.sink.spool().map(|s| s.writable());
        let store = self.store.state();
        let verdict = crate::app::store::readiness(
            self.health.writer_running(),
            salt_current,
            spool_writable,
            store,
        );
        let mut body = serde_json::json!({
            "status": if verdict.is_ok() { "ready" } else { "not_ready" },
            "store": store.as_str(),
            "buffer": if spool_writable.is_some() { "spool" } else { "memory" },
        });
        if let Some(writable) = spool_writable {
            body["spool_writable"] = writable.into();
        }
        match verdict {
            Ok(()) => response::json(StatusCode::OK, &body),
            Err(reason) => {
                body["reason"] = reason.into();
                response::json(StatusCode::SERVICE_UNAVAILABLE, &body)
            }
        }
    }

    fn metrics_page(&self) -> Response<Body> {
        let text = crate::metrics::render(&self.registry);
        let mut resp = Response::new(Full::new(Bytes::from(text)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        );
        resp
    }

    fn reject(&self, reject: Reject) -> Response<Body> {
        let cause = reject.cause.as_ref().map(|c| c as &dyn std::fmt::Display);
        self.metrics
            .rejected_because(reject.reason, reject.hits, cause);
        response::json_retry(reject.status, &reject.body, reject.retry_after_secs)
    }
}

fn enrich_message(err: &EnrichError) -> String {
    err.to_string()
}

/// Events in a batch body that is a JSON array, however wrong its events are; `None`
/// for a body that is not one. Only on the error path: a refused batch counts as many
/// refused hits as it carried.
fn batch_len(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(body)
        .ok()
        .map(|events| events.len() as u64)
}

/// One entry of a refused batch's `items`: which event, and what is wrong with it.
fn batch_item_error(index: usize, error: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "index": index, "error": error })
}

impl Handler for Ingest {
    type Body = Body;

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        if let Some(auth) = &self.auth
            && crate::app::auth::Auth::serves(req.uri().path())
        {
            let resp = auth.handle(req, peer).await;
            self.metrics
                .request(Route::auth, resp.status().as_u16(), started.elapsed());
            return resp;
        }
        if let Some(stats) = &self.stats
            && crate::app::stats::Stats::serves(req.uri().path())
        {
            let resp = stats.handle(req, peer).await;
            self.metrics
                .request(Route::stats, resp.status().as_u16(), started.elapsed());
            return resp;
        }
        if let Some(dashboard) = &self.dashboard
            && dashboard.serves(req.uri().path())
        {
            let resp = dashboard.handle(&req);
            self.metrics
                .request(Route::dashboard, resp.status().as_u16(), started.elapsed());
            return resp;
        }
        let http1 = req.version() < http::Version::HTTP_2;
        let (route, method_ok) = self.route(req.method(), req.uri().path());
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut resp = if !method_ok {
            let allow = match route {
                Route::event | Route::events => "POST, OPTIONS",
                _ => "GET, HEAD",
            };
            let mut r = simple(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        } else {
            match route {
                Route::event => match self.event(req, peer).await {
                    Ok(r) => r,
                    Err(reject) => self.reject(reject),
                },
                Route::events => match self.events(req, peer).await {
                    Ok(r) => r,
                    Err(reject) => self.reject(reject),
                },
                Route::preflight => self.preflight(origin.as_ref()),
                Route::health => self.health(),
                Route::ready => self.ready().await,
                Route::metrics => self.metrics_page(),
                Route::script => crate::app::tracker::SCRIPT_ASSET.respond(req.headers()),
                Route::pixel => self.pixel(req, peer).await,
                Route::not_found | Route::stats | Route::dashboard | Route::auth => {
                    simple(StatusCode::NOT_FOUND, "not found\n")
                }
            }
        };
        if matches!(route, Route::event | Route::events | Route::preflight) {
            self.cors(origin.as_ref(), &mut resp);
        }
        if http1 && body_left_unread(resp.status()) {
            // hyper closes an HTTP/1 connection whose request body was not read to
            // the end; saying so stops a keep-alive client from sending its next
            // request into a socket that is about to close.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.metrics
            .request(route, resp.status().as_u16(), started.elapsed());
        resp
    }

    fn on_overload(&self) -> Response<Body> {
        self.metrics.rejected(RejectReason::overloaded, 1);
        simple(StatusCode::SERVICE_UNAVAILABLE, "overloaded\n")
    }

    fn on_panic(&self) -> Response<Body> {
        self.metrics.rejected(RejectReason::internal, 1);
        simple(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    type TestFrame = Result<hyper::body::Frame<Bytes>, std::io::Error>;
    type TestBody =
        http_body_util::StreamBody<futures_util::stream::Iter<std::vec::IntoIter<TestFrame>>>;

    /// A body delivered as these chunks, then `trailers` when set.
    fn chunked(chunks: &[&'static str], trailers: bool) -> TestBody {
        let mut frames: Vec<TestFrame> = chunks
            .iter()
            .map(|c| Ok(hyper::body::Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        if trailers {
            frames.push(Ok(hyper::body::Frame::trailers(HeaderMap::new())));
        }
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn bodies_are_read_whole_up_to_the_limit() {
        assert_eq!(read_limited(chunked(&[], false), 8).await, Ok(Bytes::new()));
        assert_eq!(
            read_limited(chunked(&["abc"], true), 8).await,
            Ok(Bytes::from_static(b"abc"))
        );
        assert_eq!(
            read_limited(chunked(&["ab", "", "cd", "efgh"], false), 8).await,
            Ok(Bytes::from_static(b"abcdefgh"))
        );
        assert_eq!(
            read_limited(chunked(&["", "abc", "d"], false), 8).await,
            Ok(Bytes::from_static(b"abcd"))
        );
        assert_eq!(
            read_limited(chunked(&["abcdefghi"], false), 8).await,
            Err(BodyError::TooLarge)
        );
        assert_eq!(
            read_limited(chunked(&["abcd", "efgh", "i"], false), 8).await,
            Err(BodyError::TooLarge)
        );
        let broken = http_body_util::StreamBody::new(futures_util::stream::iter(vec![
            Ok(hyper::body::Frame::data(Bytes::from_static(b"ab"))),
            Err(std::io::Error::other("reset")),
        ]));
        assert_eq!(read_limited(broken, 8).await, Err(BodyError::Broken));
    }

    #[tokio::test]
    async fn the_hit_context_carries_the_client_hints() {
        let s = Served::start("").await;
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(BROWSER));
        let brands = r#""Brave";v="131", "Chromium";v="131", "Not_A Brand";v="24""#;
        headers.insert("sec-ch-ua", HeaderValue::from_static(brands));
        headers.insert("sec-ch-ua-mobile", HeaderValue::from_static("?0"));
        headers.insert(
            "sec-ch-ua-platform",
            HeaderValue::from_static("\"Windows\""),
        );
        let ctx = s.ingest.context(&headers, peer);
        assert_eq!(
            (ctx.hints.brands, ctx.hints.mobile, ctx.hints.platform),
            (brands, "?0", "\"Windows\"")
        );
        let bare = HeaderMap::new();
        let ctx = s.ingest.context(&bare, peer);
        assert_eq!(ctx.hints, crate::enrich::ua::ClientHints::NONE);
    }

    /// A served [`Ingest`] on a loopback port: the real server and handler, an
    /// in-memory writer whose ClickHouse never answers (nothing listens on its port, so
    /// accepted rows just wait in the queue), fixed salts of today.
    pub(super) struct Served {
        pub addr: SocketAddr,
        pub ingest: Arc<Ingest>,
        pub writer: Option<crate::pipeline::writer::WriterHandle>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl Served {
        pub async fn start(extra_toml: &str) -> Served {
            Self::start_with_salt_day(extra_toml, crate::enrich::salt::today()).await
        }

        /// [`Served::start`] with salts of `salt_day` (a day before today: stale).
        pub async fn start_with_salt_day(extra_toml: &str, salt_day: u32) -> Served {
            let config = Config::from_toml_str(&format!(
                "[clickhouse]\nurl = \"http://127.0.0.1:1\"\n{extra_toml}\n\
                 [[sites]]\ndomain = \"a.com\"\n[[sites]]\ndomain = \"b.com\"\n"
            ))
            .unwrap();
            let mut registry = prometheus_client::registry::Registry::default();
            let metrics = HttpMetrics::new(&mut registry);
            let client = crate::db::client(&config.clickhouse);
            let (sink, writer) = crate::pipeline::writer::Writer::spawn(
                client.clone(),
                &config.writer,
                Duration::from_secs(1),
                "events",
                &mut registry,
            );
            let enricher = Enricher {
                ua: crate::enrich::ua::UaParser::new(&config.user_agent).unwrap(),
                geo: Arc::new(crate::enrich::geo::GeoDb::open(&config.geo).unwrap()),
                salts: crate::enrich::salt::Salts::fixed(crate::enrich::salt::DailySalts {
                    day: salt_day,
                    current: [7; crate::enrich::salt::SALT_LEN],
                    previous: None,
                }),
                sessions: Arc::new(crate::enrich::session::SessionTracker::new(&config.session)),
                privacy: config.privacy.clone(),
            };
            let config = Arc::new(config);
            let ingest = Arc::new(Ingest {
                config: Arc::clone(&config),
                sites: Arc::new(SiteRegistry::from_config(&config)),
                enricher: Arc::new(enricher),
                sink,
                metrics,
                registry: Arc::new(registry),
                health: Arc::new(crate::app::supervise::Health::default()),
                store: crate::app::store::Store::new(
                    &mut prometheus_client::registry::Registry::default(),
                    true,
                ),
                stats: None,
                dashboard: None,
                auth: None,
                not_counted: Arc::new(DropCounter::unregistered(&SiteRegistry::from_config(
                    &config,
                ))),
            });
            let listener = crate::http::server::bind("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server_config = config.server.clone();
            let handler = Arc::clone(&ingest);
            tokio::spawn(async move {
                crate::http::server::run(listener, &server_config, handler, async {
                    let _ = stopped.await;
                })
                .await
            });
            Served {
                addr,
                ingest,
                writer: Some(writer),
                stop: Some(stop),
            }
        }

        pub fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        pub async fn post(&self, path: &str, ua: &str, body: &str) -> reqwest::Response {
            reqwest::Client::new()
                .post(self.url(path))
                .header("content-type", "application/json")
                .header("user-agent", ua)
                .body(body.to_owned())
                .send()
                .await
                .unwrap()
        }

        /// The value of the sample `series` (name and labels) on the metrics page.
        pub fn metric(&self, series: &str) -> f64 {
            let text = crate::metrics::render(&self.ingest.registry);
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0.0)
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    pub(super) const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const BOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    const ACCEPTED: &str = "hush_hits_accepted_total";
    const MALFORMED: &str = "hush_hits_rejected_total{reason=\"malformed\"}";
    const UNKNOWN_SITE: &str = "hush_hits_rejected_total{reason=\"unknown_site\"}";

    #[tokio::test]
    async fn hit_metrics_count_hits_not_rows_or_requests() {
        let s = Served::start("").await;
        let page = |path: &str, domain: &str| {
            format!(r#"{{"n":"pageview","u":"https://a.com{path}","d":"{domain}"}}"#)
        };
        // One hit for two sites: two rows, one hit.
        let resp = s
            .post("/api/event", BROWSER, &page("/two", "a.com,b.com"))
            .await;
        assert_eq!(resp.status(), 202);
        assert_eq!(s.metric(ACCEPTED), 1.0);

        // A batch of three, two of them for two sites each: three hits.
        let batch = format!(
            "[{},{},{}]",
            page("/b1", "a.com,b.com"),
            page("/b2", "a.com"),
            page("/b3", "b.com,a.com")
        );
        let resp = s.post("/api/events", BROWSER, &batch).await;
        assert_eq!(resp.status(), 202);
        let answer: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(answer["accepted"], 3, "{answer}");
        assert_eq!(answer["stored"], 5, "five rows: {answer}");
        assert_eq!(s.metric(ACCEPTED), 4.0);

        // A batch refused for one bad event refuses all four of its hits.
        let batch = format!(
            "[{},{},{},{}]",
            page("/r1", "a.com"),
            page("/r2", "a.com"),
            page("/r3", "unknown.test"),
            page("/r4", "a.com")
        );
        let resp = s.post("/api/events", BROWSER, &batch).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(s.metric(MALFORMED), 4.0);
        // So does one whose events fail to parse (counted from the array) ...
        let resp = s
            .post(
                "/api/events",
                BROWSER,
                r#"[{"n":"pageview"},{"n":1},{"x":2}]"#,
            )
            .await;
        assert_eq!(resp.status(), 400);
        assert_eq!(s.metric(MALFORMED), 7.0);
        // ... while a body that is no array at all is one refused hit.
        let resp = s.post("/api/events", BROWSER, "{not json").await;
        assert_eq!(resp.status(), 400);
        assert_eq!(s.metric(MALFORMED), 8.0);
        // A single event for an unknown site is one hit, as before.
        let resp = s
            .post("/api/event", BROWSER, &page("/u", "unknown.test"))
            .await;
        assert_eq!(resp.status(), 403);
        assert_eq!(s.metric(UNKNOWN_SITE), 1.0);

        // Bots: dropped, once per hit, never accepted.
        let batch = format!(
            "[{},{}]",
            page("/bot1", "a.com,b.com"),
            page("/bot2", "a.com")
        );
        let resp = s.post("/api/events", BOT, &batch).await;
        assert_eq!(resp.status(), 202);
        let resp = s
            .post("/api/event", BOT, &page("/bot3", "a.com,b.com"))
            .await;
        assert_eq!(resp.headers()["x-hush-dropped"], "bot");
        assert_eq!(s.metric("hush_hits_dropped_total{reason=\"bot\"}"), 3.0);
        assert_eq!(s.metric(ACCEPTED), 4.0);
    }

    #[derive(Clone, Default)]
    pub(super) struct Captured(pub Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// Captures every event of this thread (the tests run on one thread) until the
        /// guard is dropped.
        pub fn install(&self) -> tracing::subscriber::DefaultGuard {
            let writer = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_default(subscriber)
        }

        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test]
    async fn refusals_during_shutdown_are_counted_and_not_logged_as_errors() {
        let log = Captured::default();
        let _guard = log.install();
        let mut s = Served::start("").await;
        let report = s
            .writer
            .take()
            .unwrap()
            .shutdown(Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(report.rows_inserted, 0);
        let hit = r#"{"n":"pageview","u":"https://a.com/late","d":"a.com"}"#;
        for _ in 0..5 {
            let resp = s.post("/api/event", BROWSER, hit).await;
            assert_eq!(resp.status(), 503);
            assert!(resp.headers().contains_key("retry-after"));
        }
        let batch = format!("[{hit},{hit}]");
        assert_eq!(s.post("/api/events", BROWSER, &batch).await.status(), 503);
        assert_eq!(
            s.metric("hush_hits_rejected_total{reason=\"shutting_down\"}"),
            7.0
        );
        let text = log.text();
        assert!(
            text.contains("shutting_down"),
            "the refusal is logged:\n{text}"
        );
        assert!(!text.contains("ERROR"), "{text}");
        // Rate-limited: one line for the first refusal, none for the other five.
        assert_eq!(text.matches("hits refused").count(), 1, "{text}");
    }

    #[tokio::test]
    async fn a_dead_writer_gets_hits_refused_and_fails_the_probes() {
        use crate::app::supervise::Supervisor;
        let s = Served::start("").await;
        let http = reqwest::Client::new();
        let hit = r#"{"n":"pageview","u":"https://a.com/","d":"a.com"}"#;
        assert_eq!(s.post("/api/event", BROWSER, hit).await.status(), 202);
        assert_eq!(
            http.get(s.url("/health")).send().await.unwrap().status(),
            200
        );

        let writer = s.writer.as_ref().unwrap();
        let mut supervisor = Supervisor::new(
            Arc::clone(&s.ingest.health),
            crate::metrics::TaskMetrics::default(),
            || tokio::spawn(std::future::pending::<()>()),
        );
        // The injected fault: the writer task ends as if it had panicked.
        writer.kill_for_tests();
        let health = Arc::clone(&s.ingest.health);
        supervisor
            .watch_while(|| writer.is_finished(), async {
                let deadline = Instant::now() + Duration::from_secs(30);
                while health.writer_running() {
                    assert!(Instant::now() < deadline, "the dead writer went unnoticed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;

        let resp = s.post("/api/event", BROWSER, hit).await;
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let batch = format!("[{hit},{hit},{hit}]");
        assert_eq!(s.post("/api/events", BROWSER, &batch).await.status(), 503);
        assert_eq!(
            s.metric("hush_hits_rejected_total{reason=\"writer_stopped\"}"),
            4.0
        );
        assert_eq!(s.metric(ACCEPTED), 1.0);
        let resp = http.get(s.url("/health")).send().await.unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.text().await.unwrap(), "writer stopped\n");
        let resp = http.get(s.url("/ready")).send().await.unwrap();
        assert_eq!(resp.status(), 503);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["reason"], "writer stopped", "{body}");
        assert_eq!(body["status"], "not_ready", "{body}");
        if let Some(rotation) = supervisor.into_rotation() {
            rotation.abort();
        }
    }

    #[tokio::test]
    async fn a_salt_of_an_earlier_day_is_not_used() {
        let yesterday = crate::enrich::salt::today() - 1;
        let s = Served::start_with_salt_day("", yesterday).await;
        let hit = r#"{"n":"pageview","u":"https://a.com/","d":"a.com,b.com"}"#;
        let resp = s.post("/api/event", BROWSER, hit).await;
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let batch = format!("[{hit},{hit}]");
        assert_eq!(s.post("/api/events", BROWSER, &batch).await.status(), 503);
        assert_eq!(
            s.metric("hush_hits_rejected_total{reason=\"salt_unavailable\"}"),
            3.0
        );
        // Not a client error, and nothing reached the writer.
        assert_eq!(s.metric(MALFORMED), 0.0);
        assert_eq!(s.metric(ACCEPTED), 0.0);
        // An anonymous hit is not hashed, so it is stored.
        let resp = reqwest::Client::new()
            .post(s.url("/api/event"))
            .header("content-type", "application/json")
            .header("user-agent", BROWSER)
            .header("dnt", "1")
            .body(hit)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        assert_eq!(s.metric(ACCEPTED), 1.0);
        let ready = reqwest::get(s.url("/ready")).await.unwrap();
        assert_eq!(ready.status(), 503);
        let body: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(body["reason"], "visitor salt out of date", "{body}");
        // The store is up (the test says so); the salt alone decides.
        assert_eq!(body["store"], "up", "{body}");
        assert_eq!(body["buffer"], "memory", "{body}");
    }

    #[tokio::test]
    async fn metrics_are_on_the_public_port_only_when_configured() {
        let http = reqwest::Client::new();
        let private = Served::start("").await;
        let resp = http.get(private.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        assert!(!resp.text().await.unwrap().contains("hush_"));
        let public = Served::start("[metrics]\npublic = true\n").await;
        let resp = http.get(public.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], crate::metrics::CONTENT_TYPE);
        assert!(
            resp.text()
                .await
                .unwrap()
                .contains("hush_hits_accepted_total")
        );
    }
}
