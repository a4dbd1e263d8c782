//! Prometheus metrics: one shared `Registry` that components register into when they
//! are built, rendered in the text exposition format at `GET /metrics`.
//!
//! Every label value is a fixed enum or a status code: never user input (that would let
//! a client blow up the series count) and never an address.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::logging::RateLimit;

/// The shared registry after start-up, when no component registers anymore.
pub type SharedRegistry = Arc<Registry>;

/// `Content-Type` of the metrics page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics page for a listener that starts before every component has registered
/// (the admin listener): empty until start-up [publishes](MetricsPage::publish) the
/// finished registry, then that registry rendered. Cloning shares the page.
#[derive(Debug, Clone, Default)]
pub struct MetricsPage(Arc<std::sync::OnceLock<SharedRegistry>>);

impl MetricsPage {
    /// Makes `registry` the page; only the first call counts.
    pub fn publish(&self, registry: SharedRegistry) {
        let _ = self.0.set(registry);
    }

    /// The page, or `None` before [`MetricsPage::publish`].
    pub fn render(&self) -> Option<String> {
        self.0.get().map(|registry| render(registry))
    }
}

/// Renders the registry in the Prometheus text format (with `# EOF`).
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail; an error would mean a broken encoder, and a
    // partial page is still more useful than none.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// Which endpoint served a request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Route {
    event,
    events,
    preflight,
    health,
    ready,
    metrics,
    /// The tracker script (`/js/script.js`, `/js/hush.js`).
    script,
    /// The no-JavaScript pixel (`/api/event.gif`, `/pixel.gif`).
    pixel,
    /// The Stats API (`/api/v2/query`, `/api/v1/stats/*`, goals, schema).
    stats,
    /// The dashboard (`/`, `/{site}`, `/dashboard/*`, `/api/hush/sites`).
    dashboard,
    /// Sign-in, sign-out, shared links (`/login`, `/logout`, `/share/*`, `/api/session`).
    auth,
    not_found,
}

/// What became of a pixel hit. The pixel answers its GIF whatever happened, so this
/// counter is where the outcome shows; a refusal's reason is also counted in
/// `hush_hits_rejected_total`, a drop's in `hush_hits_dropped_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PixelOutcome {
    /// Handed to the writer (spooled when there is a spool) before the GIF was sent.
    stored,
    /// Deliberately not stored (bot, DNT, GPC).
    dropped,
    /// Refused: invalid parameters, unknown site, or the writer's buffer full.
    refused,
}

/// Why a hit was deliberately not stored (answered 202 with `X-Hush-Dropped`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DropReason {
    bot,
    dnt,
    gpc,
    /// An engagement ping whose visit has expired, was forgotten or never existed.
    no_visit,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::bot => "bot",
            DropReason::dnt => "dnt",
            DropReason::gpc => "gpc",
            DropReason::no_visit => "no_visit",
        }
    }
}

/// Why a request carrying hits was refused.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RejectReason {
    malformed,
    unknown_site,
    too_large,
    unsupported_media_type,
    body_timeout,
    queue_full,
    overloaded,
    internal,
    /// Refused during a graceful shutdown (503): expected, logged at debug level only.
    shutting_down,
    /// The writer task is gone, so nothing accepted now would be stored (503).
    writer_stopped,
    /// The visitor salt is older than the hit's day: hashing with it would link
    /// visitors across days (503 until the rotation catches up).
    salt_unavailable,
    /// The spool's disk refuses writes (full or failing): 503 until it takes them
    /// again. Not `queue_full` (`spool.max_bytes` reached), not `internal`.
    spool_unwritable,
}

/// How many [`RejectReason`]s there are (one log rate limit each).
const REJECT_REASONS: usize = 12;
const _: () = assert!(RejectReason::spool_unwritable as usize + 1 == REJECT_REASONS);

impl RejectReason {
    /// How a refusal is logged, besides counted: client mistakes not at all (the
    /// status code tells the client; the counter tells the operator), the collector's
    /// own trouble as a warning or an error, at most once per [`REFUSAL_LOG_EVERY`].
    fn level(self) -> Option<tracing::Level> {
        match self {
            RejectReason::malformed
            | RejectReason::unknown_site
            | RejectReason::too_large
            | RejectReason::unsupported_media_type
            | RejectReason::body_timeout => None,
            // The spool logs when its outage starts and ends, with the count.
            RejectReason::shutting_down | RejectReason::spool_unwritable => {
                Some(tracing::Level::DEBUG)
            }
            RejectReason::queue_full
            | RejectReason::overloaded
            | RejectReason::salt_unavailable => Some(tracing::Level::WARN),
            RejectReason::internal | RejectReason::writer_stopped => Some(tracing::Level::ERROR),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RejectReason::malformed => "malformed",
            RejectReason::unknown_site => "unknown_site",
            RejectReason::too_large => "too_large",
            RejectReason::unsupported_media_type => "unsupported_media_type",
            RejectReason::body_timeout => "body_timeout",
            RejectReason::queue_full => "queue_full",
            RejectReason::overloaded => "overloaded",
            RejectReason::internal => "internal",
            RejectReason::shutting_down => "shutting_down",
            RejectReason::writer_stopped => "writer_stopped",
            RejectReason::salt_unavailable => "salt_unavailable",
            RejectReason::spool_unwritable => "spool_unwritable",
        }
    }
}

/// At most one log line per refusal reason in this interval; the next says how many
/// were held back.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: DropReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: RejectReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PixelLabels {
    outcome: PixelOutcome,
}

fn duration_histogram() -> Histogram {
    // 50 µs .. ~1.6 s: ingestion is sub-millisecond; the tail shows queueing.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Counters of the HTTP front end.
///
/// A *hit* is one event as the tracker sent it: a batch of ten is ten hits, and a hit
/// counted for two sites (`"d": "a.com,b.com"`) is one hit, stored as two rows.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    accepted: Counter,
    dropped: Family<DropLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    refusal_logs: Arc<[RateLimit; REJECT_REASONS]>,
    pixel: Family<PixelLabels, Counter>,
}

impl HttpMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            accepted: Counter::default(),
            dropped: Family::default(),
            rejected: Family::default(),
            refusal_logs: Arc::new(std::array::from_fn(|_| RateLimit::new(REFUSAL_LOG_EVERY))),
            pixel: Family::default(),
        };
        registry.register(
            "hush_http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "hush_http_request_duration",
            "Time from request head to response",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "hush_hits_accepted",
            "Hits handed to the writer for storage (a hit for several sites counts once)",
            m.accepted.clone(),
        );
        registry.register(
            "hush_hits_dropped",
            "Hits deliberately not stored (answered 202)",
            m.dropped.clone(),
        );
        registry.register(
            "hush_hits_rejected",
            "Hits refused with an error status (every event of a refused batch; a \
             request refused before its events could be counted counts as one)",
            m.rejected.clone(),
        );
        registry.register(
            "hush_pixel_hits",
            "Pixel hits by outcome (the pixel always answers its GIF)",
            m.pixel.clone(),
        );
        m
    }

    pub fn request(&self, route: Route, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.duration
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    pub fn accepted(&self, n: u64) {
        self.accepted.inc_by(n);
    }

    pub fn dropped(&self, reason: DropReason) {
        self.dropped.get_or_create(&DropLabels { reason }).inc();
    }

    pub fn pixel(&self, outcome: PixelOutcome) {
        self.pixel.get_or_create(&PixelLabels { outcome }).inc();
    }

    /// Counts `n` refused hits and logs the refusal as its reason deserves
    /// (rate-limited): one call, so the log line and the counter cannot drift apart.
    pub fn rejected(&self, reason: RejectReason, n: u64) {
        self.rejected_because(reason, n, None);
    }

    /// [`HttpMetrics::rejected`] with the error behind it, for the log line.
    pub fn rejected_because(
        &self,
        reason: RejectReason,
        n: u64,
        cause: Option<&dyn std::fmt::Display>,
    ) {
        self.rejected
            .get_or_create(&RejectLabels { reason })
            .inc_by(n);
        let Some(level) = reason.level() else {
            return;
        };
        let Some(held_back) = self
            .refusal_logs
            .get(reason as usize)
            .and_then(RateLimit::check)
        else {
            return;
        };
        let reason = reason.as_str();
        let cause = cause.map(tracing::field::display);
        match level {
            tracing::Level::ERROR => {
                tracing::error!(reason, hits = n, error = cause, held_back, "hits refused")
            }
            tracing::Level::WARN => {
                tracing::warn!(reason, hits = n, error = cause, held_back, "hits refused")
            }
            _ => tracing::debug!(reason, hits = n, error = cause, held_back, "hits refused"),
        }
    }
}

/// A background task `serve` watches.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Task {
    writer,
    salt_rotation,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: Task,
}

/// `hush_task_*`: whether each watched background task runs, and its restarts.
#[derive(Debug, Clone, Default)]
pub struct TaskMetrics {
    up: Family<TaskLabels, Gauge>,
    restarts: Family<TaskLabels, Counter>,
}

impl TaskMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "hush_task_up",
            "Whether a background task (writer, salt_rotation) is running (1) or dead (0)",
            m.up.clone(),
        );
        registry.register(
            "hush_task_restarts",
            "Background tasks restarted after they died",
            m.restarts.clone(),
        );
        m
    }

    /// `task` is running (again).
    pub fn running(&self, task: Task) {
        self.up.get_or_create(&TaskLabels { task }).set(1);
    }

    /// `task` ended while it should run: logged as an error (once per death; a task
    /// that keeps dying is restarted with a growing delay) and shown in `hush_task_up`.
    pub fn died(&self, task: Task, error: &dyn std::fmt::Display, consequence: &str) {
        self.up.get_or_create(&TaskLabels { task }).set(0);
        tracing::error!(task = ?task, %error, "background task died; {consequence}");
    }

    /// `task` was started again after dying.
    pub fn restarted(&self, task: Task) {
        self.restarts.get_or_create(&TaskLabels { task }).inc();
        self.running(task);
        tracing::warn!(task = ?task, "background task restarted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fixed_labels() {
        let mut registry = Registry::default();
        let m = HttpMetrics::new(&mut registry);
        m.request(Route::event, 202, Duration::from_micros(120));
        m.accepted(3);
        m.dropped(DropReason::gpc);
        m.rejected(RejectReason::unknown_site, 2);
        m.pixel(PixelOutcome::refused);
        let text = render(&registry);
        assert!(
            text.contains("hush_pixel_hits_total{outcome=\"refused\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hush_http_requests_total{route=\"event\",status=\"202\"} 1"),
            "{text}"
        );
        assert!(text.contains("hush_hits_accepted_total 3"), "{text}");
        assert!(
            text.contains("hush_hits_dropped_total{reason=\"gpc\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hush_hits_rejected_total{reason=\"unknown_site\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("hush_http_request_duration_seconds_count{route=\"event\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
