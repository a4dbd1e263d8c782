//! The Stats API routes: Plausible's v2 `POST /api/v2/query` and its schema, the v1
//! `GET /api/v1/stats/*` endpoints, and a site's goals, all answered by
//! [`query::engine`](crate::query::engine).
//!
//! Access: a stats API key (`Authorization: Bearer <key>`, `[[stats.keys]]`, checked
//! by its SHA-256) that names the site; without one, a dashboard session
//! ([`auth`](crate::app::auth)) that may read the site (a POST then needs its
//! `X-Hush-CSRF` token; a shared link's filters are AND-ed into every query); or
//! nothing for a site marked `public = true`. Each key has its own rate limit
//! (`stats.rate_limit_per_hour`), each signed-in session one of its own apart from
//! the keys' (`dashboard.session_rate_limit_per_hour`: a dashboard view makes a
//! dozen calls), and the sessions of shared links, which anyone with the link opens
//! at will, also one per network prefix between them; anonymous readers of public
//! sites share one per network prefix.
//! hush's own `POST /api/hush/sites/{site}/props` (the site's custom property keys,
//! [`props`]) is read under the same rules. A call is logged with the key's name (`user:<name>` or
//! `share:<site>/<name>` for a session), never the key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::app::auth::{self, Auth};
use crate::collect::client_ip;
use crate::config::{Config, GoalConfig};
use crate::enrich::geo::GeoDb;
use crate::http::ratelimit::RateLimiter;
use crate::http::response;
use crate::http::server::Body;
use crate::logging::RateLimit;
use crate::query::dropped::DroppedQuery;
use crate::query::engine::{Engine, EngineError, Limits, SiteInfo};
use crate::query::request::{Dimension, Filter, Metric, Query, QueryError};
use crate::query::sql::Goal;
use crate::query::{schema, v1};
use crate::token::StatsKeys;

mod props;

/// Where a site's property keys are listed: `{PROPS_PREFIX}{site}/props`.
pub const PROPS_PREFIX: &str = "/api/hush/sites/";

/// Largest v2 query body.
const MAX_QUERY_BYTES: usize = 256 * 1024;

/// Plausible's words for a key that may not read the site.
const UNAUTHORIZED: &str = "Invalid API key or site ID. Please make sure you're using a valid API key with access to the site you've requested.";

struct StatsSite {
    info: SiteInfo,
    public: bool,
    /// What hush collects for the site, from the live configuration
    /// (`GET /api/hush/sites/{site}/policy`).
    policy: Value,
}

/// Shared by every stats request.
pub struct Stats {
    engine: Engine,
    sites: HashMap<String, StatsSite>,
    keys: StatsKeys,
    limiter: RateLimiter,
    /// Signed-in sessions: one allowance each (`dashboard.session_rate_limit_per_hour`).
    session_limiter: RateLimiter,
    /// The property-key listing (`props`).
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Dashboard sessions, when the read side has them.
    auth: Option<std::sync::Arc<Auth>>,
}

/// A site's configured goals for the engine.
pub fn goals(config: &[GoalConfig]) -> Vec<Goal> {
    config
        .iter()
        .map(|g| match (&g.event, &g.page) {
            (Some(event), _) => Goal::event(g.name(), event.clone()),
            (None, Some(page)) => Goal::page(g.name(), page),
            (None, None) => Goal::event(g.name(), g.name()),
        })
        .collect()
}

/// Which stats route a path is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Query,
    Schema,
    V1(v1::Endpoint),
    Realtime,
    Goals,
    /// `POST /api/hush/dropped`: the hits not counted as a visitor's.
    Dropped,
    /// `GET /api/hush/sites/{site}/policy`: what is collected for the site.
    Policy,
    /// `POST /api/hush/sites/{site}/props`, hush's own.
    Props,
}

impl Stats {
    pub fn new(config: &Config, client: clickhouse::Client) -> anyhow::Result<Self> {
        let stats = &config.stats;
        let mut sites = HashMap::new();
        for site in &config.sites {
            let timezone = jiff::tz::TimeZone::get(&site.timezone).map_err(|e| {
                anyhow::anyhow!("site {}: time zone {}: {e}", site.domain, site.timezone)
            })?;
            sites.insert(
                site.domain.clone(),
                StatsSite {
                    info: SiteInfo {
                        domain: site.domain.clone(),
                        timezone_name: site.timezone.clone(),
                        timezone,
                        goals: goals(&site.goals),
                    },
                    public: site.public,
                    policy: policy(config, site),
                },
            );
        }
        let limits = Limits {
            max_execution_time: Duration::from_millis(stats.max_execution_time_ms),
            max_memory_usage_bytes: stats.max_memory_usage_bytes,
            max_result_rows: stats.max_result_rows,
        };
        Ok(Self {
            engine: Engine::new(client, limits),
            sites,
            keys: StatsKeys::from_config(&stats.keys),
            limiter: RateLimiter::new(stats.rate_limit_per_hour),
            session_limiter: RateLimiter::new(config.dashboard.session_rate_limit_per_hour),
            trusted_proxies: config.server.trusted_proxies.clone(),
            auth: None,
        })
    }

    /// Also let dashboard sessions read (see the module doc).
    /// Names regions (`visit:region_name`) from the collector's geo database.
    pub fn with_geo(mut self, geo: std::sync::Arc<GeoDb>) -> Self {
        self.engine = self.engine.with_geo(geo);
        self
    }

    pub fn with_auth(mut self, auth: std::sync::Arc<Auth>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Whether `path` is one of the stats routes.
    pub fn serves(path: &str) -> bool {
        endpoint(path).is_some()
    }

    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let path = req.uri().path().to_owned();
        let Some(endpoint) = endpoint(&path) else {
            return error(StatusCode::NOT_FOUND, "not found");
        };
        let post = matches!(
            endpoint,
            Endpoint::Query | Endpoint::Props | Endpoint::Dropped
        );
        let method_ok = match endpoint {
            _ if post => *req.method() == Method::POST,
            _ => *req.method() == Method::GET || *req.method() == Method::HEAD,
        };
        if !method_ok {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            let allow = if post { "POST" } else { "GET, HEAD" };
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            return r;
        }
        if endpoint == Endpoint::Schema {
            return response::json(StatusCode::OK, &schema::schema());
        }
        let (key, resp) = self.dispatch(endpoint, req, peer).await;
        tracing::info!(
            target: "hush::stats",
            key = key.as_deref().unwrap_or("-"),
            path = %path,
            status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "stats request"
        );
        resp
    }

    async fn dispatch(
        &self,
        endpoint: Endpoint,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> (Option<String>, Response<Body>) {
        let bearer = crate::token::bearer(req.headers()).map(str::to_owned);
        // Without a key: a dashboard session, and whether it sent its CSRF token.
        let session = match (&bearer, &self.auth) {
            (None, Some(auth)) => auth
                .stats_session(req.headers())
                .map(|s| (auth.check_csrf(&s.viewer, req.headers()), s)),
            _ => None,
        };
        let client = client_ip::client_ip(peer, req.headers(), &self.trusted_proxies);
        let uri = req.uri().clone();
        let (site_id, body) = match endpoint {
            Endpoint::Query | Endpoint::Dropped => {
                let body = match read_body(req).await {
                    Ok(b) => b,
                    Err(resp) => return (None, resp),
                };
                let site = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("site_id").and_then(Value::as_str).map(str::to_owned));
                (site, Some(body))
            }
            Endpoint::Goals => (site_in(uri.path(), "/api/v2/sites/", "/goals"), None),
            Endpoint::Policy => (site_in(uri.path(), "/api/hush/sites/", "/policy"), None),
            Endpoint::Props => match read_body(req).await {
                Ok(b) => (site_in(uri.path(), PROPS_PREFIX, "/props"), Some(b)),
                Err(resp) => return (None, resp),
            },
            _ => (query_param(uri.query(), "site_id"), None),
        };
        let Some(site_id) = site_id else {
            return (
                None,
                match endpoint {
                    Endpoint::Query => match body.as_deref().map(Query::from_json) {
                        Some(Err(e)) => error(StatusCode::BAD_REQUEST, &e.0),
                        _ => error(
                            StatusCode::BAD_REQUEST,
                            "#: Required property site_id was not present.",
                        ),
                    },
                    Endpoint::Dropped => match body.as_deref().map(DroppedQuery::from_json) {
                        Some(Err(e)) => error(StatusCode::BAD_REQUEST, &e.0),
                        _ => error(
                            StatusCode::BAD_REQUEST,
                            "#: Required property site_id was not present.",
                        ),
                    },
                    _ => error(StatusCode::BAD_REQUEST, "site_id: required"),
                },
            );
        };
        // Who is asking: a key that names the site, or nobody for a public site.
        let site = self.sites.get(&site_id);
        let mut locked = Vec::new();
        // Whose allowance a call spends: a session's own, else the key's.
        let mut session_limit = None;
        let key_name = match bearer {
            Some(presented) => match (site, self.keys.authorize(&presented, &site_id)) {
                (Some(_), Ok(name)) => Some(name.to_owned()),
                _ => return (None, error(StatusCode::UNAUTHORIZED, UNAUTHORIZED)),
            },
            None => match (site, session) {
                (Some(_), Some((csrf_ok, s))) if s.viewer.may_read(&site_id) => {
                    let key = s.name;
                    if matches!(
                        endpoint,
                        Endpoint::Query | Endpoint::Props | Endpoint::Dropped
                    ) && !csrf_ok
                    {
                        return (
                            Some(key),
                            error(StatusCode::FORBIDDEN, "missing or wrong X-Hush-CSRF header"),
                        );
                    }
                    if let Some(filters) = &s.viewer.locked_filters {
                        // The keys of the whole site are more than a filtered link shows.
                        if endpoint == Endpoint::Props {
                            return (
                                Some(key),
                                error(
                                    StatusCode::FORBIDDEN,
                                    "property keys are not listed through a filtered shared link",
                                ),
                            );
                        }
                        match auth::parse_locked_filters(filters) {
                            Ok(f) => locked = f,
                            Err(_) => {
                                return (
                                    Some(key),
                                    error(
                                        StatusCode::FORBIDDEN,
                                        "this shared link's filters are not valid",
                                    ),
                                );
                            }
                        }
                    }
                    session_limit = Some((s.limit_key, s.shared));
                    Some(key)
                }
                (Some(s), _) if s.public => None,
                _ => return (None, error(StatusCode::UNAUTHORIZED, UNAUTHORIZED)),
            },
        };
        let Some(site) = site else {
            return (key_name, error(StatusCode::UNAUTHORIZED, UNAUTHORIZED));
        };
        let limited = match (&session_limit, &key_name) {
            // A shared link's sessions, however many are opened, share one
            // allowance per client network on top of each session's own.
            (Some((session, shared)), _) => if *shared {
                self.session_limiter.check_anonymous(client)
            } else {
                Ok(())
            }
            .and_then(|()| self.session_limiter.check(session, Instant::now())),
            (None, Some(name)) => self.limiter.check(name, Instant::now()),
            (None, None) => self.limiter.check_anonymous(client),
        };
        if let Err(retry) = limited {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                if session_limit.is_some() {
                    "Too many requests from this session. Slow down, or ask for a higher dashboard.session_rate_limit_per_hour."
                } else {
                    "Too many API requests. Slow down, or ask for a higher stats.rate_limit_per_hour."
                },
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry.as_secs().max(1)),
            );
            return (key_name, r);
        }
        let now = Timestamp::now();
        let resp = match endpoint {
            Endpoint::Query => {
                let body = body.unwrap_or_default();
                match Query::from_json(&body) {
                    Err(e) => error(StatusCode::BAD_REQUEST, &e.0),
                    Ok(q) => self
                        .answer(&q, &site.info, &locked, now)
                        .await
                        .map_or_else(|r| r, |v| response::json(StatusCode::OK, &v)),
                }
            }
            Endpoint::Goals => response::json(
                StatusCode::OK,
                &json!({
                    "goals": site.info.goals.iter().map(|g| match &g.kind {
                        crate::query::sql::GoalKind::Event(e) => json!({"name": g.name, "goal_type": "event", "event_name": e}),
                        crate::query::sql::GoalKind::Page(_) => json!({"name": g.name, "goal_type": "page"}),
                    }).collect::<Vec<_>>(),
                }),
            ),
            Endpoint::Realtime => {
                let body = json!({
                    "site_id": site.info.domain,
                    "metrics": ["visitors"],
                    "date_range": [
                        (now - jiff::SignedDuration::from_mins(5)).to_string(),
                        now.to_string(),
                    ],
                });
                match Query::from_json(body.to_string().as_bytes()) {
                    Err(e) => error(StatusCode::BAD_REQUEST, &e.0),
                    Ok(q) => match self.answer(&q, &site.info, &locked, now).await {
                        Ok(v) => {
                            response::json(StatusCode::OK, &v["results"][0]["metrics"][0].clone())
                        }
                        Err(r) => r,
                    },
                }
            }
            Endpoint::V1(kind) => self.v1(kind, uri.query(), &site.info, &locked, now).await,
            Endpoint::Dropped => {
                let body = body.unwrap_or_default();
                match DroppedQuery::from_json(&body) {
                    Err(e) => error(StatusCode::BAD_REQUEST, &e.0),
                    Ok(q) => match self.engine.dropped(&q, &site.info.domain, now).await {
                        Ok(v) => response::json(StatusCode::OK, &v),
                        Err(e) => engine_error(e),
                    },
                }
            }
            Endpoint::Policy => response::json(StatusCode::OK, &site.policy),
            Endpoint::Props => match props::parse(&body.unwrap_or_default()) {
                Err(e) => error(StatusCode::BAD_REQUEST, &e.0),
                Ok(range) => props::answer(&self.engine, &site.info, range, now)
                    .await
                    .map_or_else(engine_error, |v| response::json(StatusCode::OK, &v)),
            },
            Endpoint::Schema => response::json(StatusCode::OK, &schema::schema()),
        };
        (key_name, resp)
    }

    /// Runs `q` with `locked` (a shared link's filters) AND-ed into its own.
    async fn answer(
        &self,
        q: &Query,
        site: &SiteInfo,
        locked: &[Filter],
        now: Timestamp,
    ) -> Result<Value, Response<Body>> {
        let with_locked;
        let q = if locked.is_empty() {
            q
        } else {
            let mut q = q.clone();
            q.filters.extend(locked.iter().cloned());
            crate::query::request::validate(&q)
                .map_err(|e| error(StatusCode::BAD_REQUEST, &e.0))?;
            with_locked = q;
            &with_locked
        };
        self.engine.run(q, site, now).await.map_err(engine_error)
    }

    async fn v1(
        &self,
        kind: v1::Endpoint,
        query: Option<&str>,
        site: &SiteInfo,
        locked: &[Filter],
        now: Timestamp,
    ) -> Response<Body> {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let params = v1::Params {
            site_id: get("site_id"),
            period: get("period"),
            date: get("date"),
            metrics: get("metrics"),
            filters: get("filters"),
            property: get("property"),
            interval: get("interval"),
            limit: get("limit"),
            page: get("page"),
            compare: get("compare"),
        };
        let today = now.to_zoned_datetime(site.timezone.clone()).date();
        let q = match v1::to_query(kind, &params, today) {
            // v1's timeseries lists every bucket of the period.
            Ok(mut q) => {
                q.include.fill_gaps = kind == v1::Endpoint::Timeseries;
                q
            }
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.0),
        };
        let answer = match self.answer(&q, site, locked, now).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        response::json(StatusCode::OK, &v1_shape(kind, &q, &answer))
    }
}

/// v2's answer in v1's shape.
fn v1_shape(kind: v1::Endpoint, q: &Query, answer: &Value) -> Value {
    let empty = Vec::new();
    let results = answer["results"].as_array().unwrap_or(&empty);
    let names: Vec<&str> = q.metrics.iter().map(|m| Metric::name(*m)).collect();
    match kind {
        v1::Endpoint::Aggregate => {
            let mut out = serde_json::Map::new();
            let row = results.first();
            for (i, name) in names.iter().enumerate() {
                let value = row.map(|r| r["metrics"][i].clone()).unwrap_or(json!(0));
                let mut entry = json!({ "value": value });
                if let Some(c) = row.and_then(|r| r.get("comparison")) {
                    entry["comparison_value"] = c["metrics"][i].clone();
                    entry["change"] = c["change"][i].clone();
                }
                out.insert((*name).to_owned(), entry);
            }
            json!({ "results": out })
        }
        v1::Endpoint::Timeseries => keyed_rows("date", results, &names),
        v1::Endpoint::Breakdown => {
            let property = q
                .dimensions
                .first()
                .map(|d| {
                    let name = d.name();
                    match d {
                        Dimension::Prop(key) => key.clone(),
                        _ => name.rsplit(':').next().unwrap_or(&name).to_owned(),
                    }
                })
                .unwrap_or_default();
            keyed_rows(&property, results, &names)
        }
    }
}

/// v1's row shape: `{<key>: first dimension, <metric>: value, ...}` per result.
fn keyed_rows(key: &str, results: &[Value], names: &[&str]) -> Value {
    json!({ "results": results.iter().map(|r| {
        let mut o = serde_json::Map::new();
        o.insert(key.to_owned(), r["dimensions"][0].clone());
        for (i, name) in names.iter().enumerate() {
            o.insert((*name).to_owned(), r["metrics"][i].clone());
        }
        Value::Object(o)
    }).collect::<Vec<_>>() })
}

/// An engine failure as the client sees it: its own fault a 400, a cap or the store a
/// 503 that never carries ClickHouse's text.
fn engine_error(e: EngineError) -> Response<Body> {
    match e {
        EngineError::Query(QueryError(msg)) => error(StatusCode::BAD_REQUEST, &msg),
        EngineError::Limit(why) => error(StatusCode::SERVICE_UNAVAILABLE, why),
        EngineError::Timeout => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store did not answer in time",
        ),
        EngineError::Store(err) => {
            static LOG: RateLimit = RateLimit::new(Duration::from_secs(10));
            if let Some(held) = LOG.check() {
                tracing::error!(error = %err, held_back = held, "stats query failed");
            }
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store could not answer",
            )
        }
    }
}

/// What hush collects for `site` and what it never stores, from the configuration
/// it runs with (the dashboard's "What we collect" panel).
fn policy(config: &Config, site: &crate::config::SiteConfig) -> Value {
    let opt_out = |p: crate::config::OptOutPolicy| match p {
        crate::config::OptOutPolicy::Anonymous => "anonymous",
        crate::config::OptOutPolicy::Drop => "drop",
        crate::config::OptOutPolicy::Ignore => "ignore",
    };
    let privacy = &config.privacy;
    json!({
        "site_id": site.domain,
        "retention_days": site.retention_days(&config.retention),
        "timezone": site.timezone,
        "ipv4_prefix": privacy.ipv4_prefix,
        "ipv6_prefix": privacy.ipv6_prefix,
        "salt_rotation": "daily (UTC); each salt is destroyed after the following day",
        "visit_timeout_minutes": config.session.timeout_secs / 60,
        "dnt": opt_out(privacy.dnt),
        "gpc": opt_out(privacy.gpc),
        "cookies": false,
        "collected": [
            "page URL (host, path, UTM tags)",
            "referrer host and path, as source and channel",
            "browser, OS and device class from the User-Agent",
            "country, region and city of the truncated address",
            "a visitor id: a hash of the day's salt, site, truncated address and User-Agent",
            "custom event names, properties and revenue the site sends",
        ],
        "never_stored": [
            "the full IP address",
            "the User-Agent string",
            "cookies or anything in the browser's storage",
            "a visitor id that links one day to another",
        ],
    })
}

fn endpoint(path: &str) -> Option<Endpoint> {
    Some(match path {
        "/api/v2/query" => Endpoint::Query,
        "/api/v2/query/schema.json" => Endpoint::Schema,
        "/api/v1/stats/aggregate" => Endpoint::V1(v1::Endpoint::Aggregate),
        "/api/v1/stats/timeseries" => Endpoint::V1(v1::Endpoint::Timeseries),
        "/api/v1/stats/breakdown" => Endpoint::V1(v1::Endpoint::Breakdown),
        "/api/v1/stats/realtime/visitors" => Endpoint::Realtime,
        p if p.starts_with("/api/v2/sites/") && p.ends_with("/goals") => Endpoint::Goals,
        "/api/hush/dropped" => Endpoint::Dropped,
        p if p.starts_with("/api/hush/sites/") && p.ends_with("/policy") => Endpoint::Policy,
        p if p.starts_with(PROPS_PREFIX) && p.ends_with("/props") => Endpoint::Props,
        _ => return None,
    })
}

/// The `{site}` of a path `{prefix}{site}{suffix}`.
fn site_in(path: &str, prefix: &str, suffix: &str) -> Option<String> {
    path.strip_prefix(prefix)
        .and_then(|p| p.strip_suffix(suffix))
        .map(str::to_owned)
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_QUERY_BYTES);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "query larger than 256 KiB",
        )),
        Err(_) => Err(error(StatusCode::BAD_REQUEST, "the body could not be read")),
    }
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    response::json(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_paths_are_recognised_and_others_not() {
        assert_eq!(endpoint("/api/v2/query"), Some(Endpoint::Query));
        assert_eq!(endpoint("/api/v2/sites/a.com/goals"), Some(Endpoint::Goals));
        assert_eq!(
            endpoint("/api/v1/stats/breakdown"),
            Some(Endpoint::V1(v1::Endpoint::Breakdown))
        );
        assert_eq!(endpoint("/api/hush/dropped"), Some(Endpoint::Dropped));
        assert_eq!(
            endpoint("/api/hush/sites/a.com/policy"),
            Some(Endpoint::Policy)
        );
        assert_eq!(
            endpoint("/api/hush/sites/a.com/props"),
            Some(Endpoint::Props)
        );
        assert_eq!(endpoint("/api/hush/sites"), None);
        assert_eq!(endpoint("/api/event"), None);
        assert_eq!(endpoint("/api/v2/queryx"), None);
    }
}
