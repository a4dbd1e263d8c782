//! Who may see the read side: analyst accounts (`[[users]]`), their login and
//! sessions, shared links (`[[sites.shares]]`), CSRF tokens and login throttling.
//!
//! Routes: `GET /login` (the form), `POST /login`, `POST /logout`,
//! `GET /share/{site}?auth={slug}` (and `POST /share/{site}` for a link with a
//! password), and `GET /api/session` (who is signed in, and the CSRF token the page
//! sends back). The Stats API asks [`Auth::viewer`] who a cookie belongs to.
//!
//! **Sessions** are 32 random bytes, kept server-side in memory (by their SHA-256)
//! for `dashboard.session_ttl_hours` from the login, at most [`MAX_SESSIONS`] at once
//! (the nearest to expiring make room). Chosen over a signed cookie because logout
//! and expiry are then the server's word, not the browser's, and there is no signing
//! secret to configure, rotate or leak. The price: a restart signs everyone out, and
//! several collectors behind one address do not share sessions (serve the dashboard
//! from one, or make the balancer sticky).
//!
//! **The cookie** `hush_session` is the only cookie hush sets, and only here (never on
//! an ingestion route): `HttpOnly; SameSite=Strict; Path=/; Max-Age=<ttl>`, `Secure`
//! per `dashboard.secure_cookie`. A new one is issued at every login (no fixation).
//!
//! **CSRF:** SameSite=Strict already keeps the cookie off cross-site requests; on top,
//! every state-changing request made with the cookie (`POST /api/v2/query`,
//! `POST /logout`) carries `X-Hush-CSRF` equal to the session's token (compared in
//! constant time), which a page on another origin cannot read; and `POST /login` and
//! `POST /share/..` refuse a cross-site `Origin` or `Sec-Fetch-Site`, so another site
//! cannot sign a browser into an account of its choosing.
//!
//! **Passwords** are Argon2id PHC strings. Verification runs on the blocking pool, at
//! most [`VERIFY_AT_ONCE`] at a time (each takes ~19 MiB), and an unknown user name
//! is verified against a dummy hash of the same cost, so the answer's timing does not
//! say whether a name exists. After `dashboard.login_attempts_per_minute` failures
//! for one user name (or shared link), or from one network (IPv4 /24, IPv6 /48), the
//! next attempts are answered 429 with `Retry-After` without being checked. Nothing
//! stores or logs a client address; a failed login with an unknown name is logged
//! without the name (people type passwords into it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use ipnet::IpNet;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::collect::client_ip;
use crate::config::{ALL_SITES, Config, SecureCookie};
use crate::hex;
use crate::http::ratelimit::RateLimiter;
use crate::http::server::Body;
use crate::logging::RateLimit;
use crate::query::request::{Filter, Query};

/// The session cookie's name.
pub const COOKIE: &str = "hush_session";
/// The header a cookie-authenticated state-changing request carries.
pub const CSRF_HEADER: &str = "x-hush-csrf";
/// Sessions kept at most; beyond, the one nearest to expiring is dropped.
pub const MAX_SESSIONS: usize = 10_000;
/// Password verifications running at once (each holds its Argon2 memory).
pub const VERIFY_AT_ONCE: usize = 2;
/// Largest login or share form body.
const MAX_FORM_BYTES: usize = 8 * 1024;
/// Random bytes in a shared link's slug.
pub const SLUG_BYTES: usize = 24;
/// Shortest password `hush user add` and `hush share new` accept.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Argon2id parameters of new hashes: OWASP's recommended minimum (19 MiB, 2 passes,
/// 1 lane). A verification took 134 ms of one core in a release build on the shared
/// development machine; the memory cost makes each guess expensive on GPUs, and
/// [`VERIFY_AT_ONCE`] bounds what a flood of logins can take.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_PASSES: u32 = 2;
pub const ARGON2_LANES: u32 = 1;

/// Who a session cookie belongs to: an analyst (`[[users]]`) or a shared link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The user name, or the shared link's `name`.
    pub name: String,
    /// Site domains this viewer may read, or `["*"]`.
    pub sites: Vec<String>,
    /// A shared link's filters (a JSON array of v2 filters), AND-ed into every query.
    pub locked_filters: Option<Value>,
    /// The token `X-Hush-CSRF` must equal.
    pub csrf: String,
}

impl Viewer {
    /// Whether this viewer may read `site` (a configured domain, compared exactly).
    pub fn may_read(&self, site: &str) -> bool {
        self.sites.iter().any(|s| s == ALL_SITES || s == site)
    }
}

/// A live session as the Stats API sees it ([`Auth::stats_session`]).
#[derive(Debug, Clone)]
pub struct StatsSession {
    pub viewer: Viewer,
    /// Its name in the logs: `user:<name>`, `share:<site>/<name>`.
    pub name: String,
    /// Its own rate-limit key, one per session: `session:` and 16 hex digits of the
    /// SHA-256 of the session table's key (nothing that leads back to the cookie).
    pub limit_key: String,
    /// Opened by a shared link: anyone with the link can open as many as they like,
    /// so the Stats API also holds them to one allowance per client network.
    pub shared: bool,
}

/// What a session is for: the log name of the Stats API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Share,
}

struct Session {
    viewer: Viewer,
    kind: Kind,
    expires: Instant,
}

struct User {
    hash: String,
    sites: Vec<String>,
}

struct Share {
    site: String,
    name: String,
    slug_sha256: [u8; 32],
    password_hash: Option<String>,
    filters: Option<Value>,
}

/// The in-memory sessions, by the SHA-256 of their id.
#[derive(Default)]
struct Sessions {
    map: HashMap<[u8; 32], Session>,
}

impl Sessions {
    fn insert(&mut self, key: [u8; 32], session: Session, now: Instant) {
        if self.map.len() >= MAX_SESSIONS {
            self.map.retain(|_, s| s.expires > now);
        }
        if self.map.len() >= MAX_SESSIONS {
            static LOG: RateLimit = RateLimit::new(Duration::from_secs(60));
            if let Some(held) = LOG.check() {
                tracing::warn!(
                    target: "hush::auth",
                    max = MAX_SESSIONS,
                    held_back = held,
                    "session table full: the session nearest to expiring was ended"
                );
            }
            let nearest = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k);
            if let Some(k) = nearest {
                self.map.remove(&k);
            }
        }
        self.map.insert(key, session);
    }
}

/// Users, shared links and sessions; built once from the configuration.
pub struct Auth {
    users: HashMap<String, User>,
    shares: Vec<Share>,
    /// Verified for unknown user names, so they cost what a known one does.
    dummy_hash: String,
    sessions: Mutex<Sessions>,
    ttl: Duration,
    secure: SecureCookie,
    trusted_proxies: Vec<IpNet>,
    /// Failed attempts: per user name (or share), and per network.
    failures: RateLimiter,
    verify_slots: tokio::sync::Semaphore,
}

/// A shared link's filters as the Stats API parses them: `Err` says why not.
pub fn parse_locked_filters(filters: &Value) -> Result<Vec<Filter>, String> {
    let body = json!({
        "site_id": "-",
        "metrics": ["visitors"],
        "date_range": "all",
        "filters": filters,
    });
    Query::from_json(body.to_string().as_bytes())
        .map(|q| q.filters)
        .map_err(|e| e.0)
}

/// Checks every shared link's `filters` with the Stats API's parser (the
/// configuration checks only that they are a JSON array).
pub fn check_shares(config: &Config) -> anyhow::Result<()> {
    for (i, site) in config.sites.iter().enumerate() {
        for (j, share) in site.shares.iter().enumerate() {
            if let Some(text) = &share.filters {
                let value: Value = serde_json::from_str(text)
                    .with_context(|| format!("sites[{i}].shares[{j}].filters"))?;
                parse_locked_filters(&value).map_err(|e| {
                    anyhow::anyhow!("invalid configuration: `sites[{i}].shares[{j}].filters`: {e}")
                })?;
            }
        }
    }
    Ok(())
}

fn argon2(params: argon2::Params) -> argon2::Argon2<'static> {
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// The parameters of new hashes ([`ARGON2_MEMORY_KIB`] and the rest).
pub fn default_params() -> argon2::Params {
    argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None).unwrap_or_default()
}

/// An Argon2id PHC string of `password` with a random salt, `params` as given.
pub fn hash_password_with(password: &str, params: argon2::Params) -> anyhow::Result<String> {
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| anyhow::anyhow!("cannot encode the salt: {e}"))?;
    argon2(params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// An Argon2id PHC string of `password` with hush's parameters.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    hash_password_with(password, default_params())
}

/// Whether `password` matches the PHC string `hash` (with the hash's own parameters).
/// Slow by design: call it on the blocking pool.
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    argon2(params)
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A new shared link: the slug (shown once, in the link) and its SHA-256 (configured).
pub struct NewShare {
    pub slug: String,
    pub slug_sha256: String,
}

impl NewShare {
    pub fn generate() -> Self {
        let bytes: [u8; SLUG_BYTES] = rand::random();
        let slug = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let slug_sha256 = hex::encode(&Sha256::digest(slug.as_bytes()));
        Self { slug, slug_sha256 }
    }
}

/// A string as a TOML basic string (JSON's escaping is valid TOML).
pub fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl Auth {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        check_shares(config)?;
        let users = config
            .users
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    User {
                        hash: u.password_hash.clone(),
                        sites: u.sites.clone(),
                    },
                )
            })
            .collect();
        let mut shares = Vec::new();
        for site in &config.sites {
            for share in &site.shares {
                let Some(slug_sha256) = hex::decode_32(&share.slug_sha256) else {
                    continue; // validation rejects it
                };
                let filters = match &share.filters {
                    Some(text) => Some(serde_json::from_str(text).context("share filters")?),
                    None => None,
                };
                shares.push(Share {
                    site: site.domain.clone(),
                    name: share.name.clone(),
                    slug_sha256,
                    password_hash: share.password_hash.clone(),
                    filters,
                });
            }
        }
        // The dummy costs what the first configured user's hash costs.
        let params = config
            .users
            .first()
            .and_then(|u| PasswordHash::new(&u.password_hash).ok())
            .and_then(|h| argon2::Params::try_from(&h).ok())
            .unwrap_or_else(default_params);
        let dummy: [u8; 16] = rand::random();
        let dummy_hash = hash_password_with(&hex::encode(&dummy), params)?;
        let d = &config.dashboard;
        Ok(Self {
            users,
            shares,
            dummy_hash,
            sessions: Mutex::new(Sessions::default()),
            ttl: Duration::from_secs_f64(d.session_ttl_hours * 3600.0),
            secure: d.secure_cookie,
            trusted_proxies: config.server.trusted_proxies.clone(),
            failures: RateLimiter::per_period(d.login_attempts_per_minute, Duration::from_secs(60)),
            verify_slots: tokio::sync::Semaphore::new(VERIFY_AT_ONCE),
        })
    }

    /// Whether `path` is one of the routes [`Auth::handle`] answers.
    pub fn serves(path: &str) -> bool {
        matches!(path, "/login" | "/logout" | "/api/session") || path.starts_with("/share/")
    }

    /// The viewer whose live session cookie `headers` carry.
    pub fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        self.viewer_at(headers, Instant::now())
    }

    fn viewer_at(&self, headers: &HeaderMap, now: Instant) -> Option<Viewer> {
        self.session_at(headers, now).map(|(v, _, _)| v)
    }

    /// The session `headers` carry, as the Stats API sees it: its viewer, its log
    /// name and its rate-limit key.
    pub fn stats_session(&self, headers: &HeaderMap) -> Option<StatsSession> {
        let (viewer, kind, id) = self.session_at(headers, Instant::now())?;
        let name = match kind {
            Kind::User => format!("user:{}", viewer.name),
            Kind::Share => format!(
                "share:{}/{}",
                viewer.sites.first().map_or("", String::as_str),
                viewer.name
            ),
        };
        // Hashed once more, so the key (kept by the limiter) is not the table's.
        let limit_key = format!("session:{}", hex::encode(&Sha256::digest(id)[..8]));
        Some(StatsSession {
            viewer,
            name,
            limit_key,
            shared: kind == Kind::Share,
        })
    }

    fn session_at(&self, headers: &HeaderMap, now: Instant) -> Option<(Viewer, Kind, [u8; 32])> {
        let key = session_key(headers)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.map.get(&key) {
            Some(s) if s.expires > now => Some((s.viewer.clone(), s.kind, key)),
            Some(_) => {
                sessions.map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Whether `headers` carry `X-Hush-CSRF` equal to the viewer's token (constant time).
    pub fn check_csrf(&self, viewer: &Viewer, headers: &HeaderMap) -> bool {
        headers
            .get(CSRF_HEADER)
            .is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(viewer.csrf.as_bytes())))
    }

    /// Sessions alive now.
    pub fn sessions(&self) -> usize {
        let now = Instant::now();
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.map.values().filter(|s| s.expires > now).count()
    }

    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let get = method == Method::GET || method == Method::HEAD;
        let post = method == Method::POST;
        match path.as_str() {
            "/login" if get => {
                let next = query_param(req.uri().query(), "next");
                page(
                    StatusCode::OK,
                    &login_form(local_path(next.as_deref()), "", None),
                )
            }
            "/login" if post => self.login(req, peer).await,
            "/logout" if post => self.logout(req),
            "/api/session" if get => self.session_info(req.headers()),
            p if p.starts_with("/share/") => {
                let site = p["/share/".len()..].to_owned();
                if site.is_empty() || site.contains('/') {
                    return not_found();
                }
                if get {
                    self.share_open(&req, &site, peer)
                } else if post {
                    self.share_password(req, &site, peer).await
                } else {
                    not_allowed("GET, HEAD, POST")
                }
            }
            "/api/session" => not_allowed("GET, HEAD"),
            "/logout" => not_allowed("POST"),
            _ => not_allowed("GET, HEAD, POST"),
        }
    }

    /// `POST /login`.
    async fn login(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if !same_origin(&req) {
            return forbidden("cross-site sign-in refused");
        }
        let network = network(peer, req.headers(), &self.trusted_proxies);
        let secure = self.secure(peer, req.headers());
        let old = session_key(req.headers());
        let form = match read_form(req).await {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        let name = form.get("name").cloned().unwrap_or_default();
        let password = form.get("password").cloned().unwrap_or_default();
        let next = local_path(form.get("next").map(String::as_str));
        let now = Instant::now();
        let throttle_key = format!("user:{name}");
        if let Err(wait) = self.throttled(&throttle_key, network, now) {
            return throttled_page(&login_form(next, &name, Some(THROTTLED)), wait);
        }
        let user = self.users.get(&name);
        let hash = user.map_or_else(|| self.dummy_hash.clone(), |u| u.hash.clone());
        let ok = self.verify(hash, password).await && user.is_some();
        let Some(user) = user.filter(|_| ok) else {
            self.failed(&throttle_key, network);
            static LOG: RateLimit = RateLimit::new(Duration::from_secs(10));
            if let Some(held) = LOG.check() {
                match user {
                    Some(_) => {
                        tracing::info!(target: "hush::auth", user = ?name, held_back = held, "login failed: wrong password")
                    }
                    None => {
                        tracing::info!(target: "hush::auth", held_back = held, "login failed: unknown user")
                    }
                }
            }
            return page(
                StatusCode::UNAUTHORIZED,
                &login_form(next, &name, Some("Wrong user name or password.")),
            );
        };
        tracing::info!(target: "hush::auth", user = ?name, "signed in");
        let viewer = Viewer {
            name: name.clone(),
            sites: user.sites.clone(),
            locked_filters: None,
            csrf: hex::encode(&rand::random::<[u8; 32]>()),
        };
        let cookie = self.start(viewer, Kind::User, old, secure);
        redirect(next, Some(cookie))
    }

    /// `POST /logout`: needs the CSRF header of the session it ends.
    fn logout(&self, req: Request<Incoming>) -> Response<Body> {
        let headers = req.headers();
        if let Some(viewer) = self.viewer(headers) {
            if !self.check_csrf(&viewer, headers) {
                return forbidden("missing or wrong X-Hush-CSRF header");
            }
            tracing::info!(target: "hush::auth", user = ?viewer.name, "signed out");
        }
        if let Some(key) = session_key(headers) {
            self.sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .map
                .remove(&key);
        }
        let secure = self.secure_cookie_flag(headers, None);
        redirect("/login", Some(clear_cookie(secure)))
    }

    /// `GET /api/session`: who is signed in, their sites, locked filters and CSRF token.
    fn session_info(&self, headers: &HeaderMap) -> Response<Body> {
        let mut resp = match self.viewer(headers) {
            Some(v) => crate::http::response::json(
                StatusCode::OK,
                &json!({
                    "name": v.name,
                    "sites": v.sites,
                    "locked_filters": v.locked_filters,
                    "csrf": v.csrf,
                }),
            ),
            None => crate::http::response::json(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "not signed in" }),
            ),
        };
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// The configured link of `site` whose slug is `slug`: every link's hash compared in
    /// constant time, no early exit.
    fn share(&self, site: &str, slug: &str) -> Option<&Share> {
        let digest = Sha256::digest(slug.as_bytes());
        let mut found = None;
        for share in &self.shares {
            if bool::from(digest.as_slice().ct_eq(&share.slug_sha256)) && share.site == site {
                found = Some(share);
            }
        }
        found
    }

    /// `GET /share/{site}?auth={slug}`.
    fn share_open(&self, req: &Request<Incoming>, site: &str, peer: SocketAddr) -> Response<Body> {
        let slug = query_param(req.uri().query(), "auth").unwrap_or_default();
        let Some(share) = self.share(site, &slug) else {
            return not_found();
        };
        let target = format!("/{site}");
        // An analyst who may read the site keeps their own session.
        if let Some((viewer, Kind::User, _)) = self.session_at(req.headers(), Instant::now())
            && viewer.may_read(site)
        {
            return redirect(&target, None);
        }
        if share.password_hash.is_some() {
            return page(StatusCode::OK, &share_form(site, &slug, None));
        }
        let secure = self.secure(peer, req.headers());
        let cookie = self.start_share(share, session_key(req.headers()), secure);
        redirect(&target, Some(cookie))
    }

    /// `POST /share/{site}`: the password of a link that has one.
    async fn share_password(
        &self,
        req: Request<Incoming>,
        site: &str,
        peer: SocketAddr,
    ) -> Response<Body> {
        if !same_origin(&req) {
            return forbidden("cross-site request refused");
        }
        let network = network(peer, req.headers(), &self.trusted_proxies);
        let secure = self.secure(peer, req.headers());
        let old = session_key(req.headers());
        let form = match read_form(req).await {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        let slug = form.get("auth").cloned().unwrap_or_default();
        let Some(share) = self.share(site, &slug) else {
            return not_found();
        };
        let throttle_key = format!("share:{site}/{}", share.name);
        if let Some(hash) = &share.password_hash {
            if let Err(wait) = self.throttled(&throttle_key, network, Instant::now()) {
                return throttled_page(&share_form(site, &slug, Some(THROTTLED)), wait);
            }
            let password = form.get("password").cloned().unwrap_or_default();
            if !self.verify(hash.clone(), password).await {
                self.failed(&throttle_key, network);
                return page(
                    StatusCode::UNAUTHORIZED,
                    &share_form(site, &slug, Some("Wrong password.")),
                );
            }
        }
        let cookie = self.start_share(share, old, secure);
        redirect(&format!("/{site}"), Some(cookie))
    }

    fn start_share(&self, share: &Share, old: Option<[u8; 32]>, secure: bool) -> String {
        tracing::info!(target: "hush::auth", site = %share.site, share = ?share.name, "shared link opened");
        let viewer = Viewer {
            name: share.name.clone(),
            sites: vec![share.site.clone()],
            locked_filters: share.filters.clone(),
            csrf: hex::encode(&rand::random::<[u8; 32]>()),
        };
        self.start(viewer, Kind::Share, old, secure)
    }

    /// A new session for `viewer` (ending the one `old` names): its `Set-Cookie`.
    fn start(&self, viewer: Viewer, kind: Kind, old: Option<[u8; 32]>, secure: bool) -> String {
        self.start_at(viewer, kind, old, secure, Instant::now())
    }

    fn start_at(
        &self,
        viewer: Viewer,
        kind: Kind,
        old: Option<[u8; 32]>,
        secure: bool,
        now: Instant,
    ) -> String {
        let id: [u8; 32] = rand::random();
        let id = hex::encode(&id);
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = old {
            sessions.map.remove(&old);
        }
        sessions.insert(
            key,
            Session {
                viewer,
                kind,
                expires: now + self.ttl,
            },
            now,
        );
        drop(sessions);
        let max_age = self.ttl.as_secs_f64().ceil() as u64;
        format!(
            "{COOKIE}={id}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
            if secure { "; Secure" } else { "" }
        )
    }

    /// Whether the session cookie gets `Secure` for a request from `peer`.
    fn secure(&self, peer: SocketAddr, headers: &HeaderMap) -> bool {
        self.secure_cookie_flag(headers, Some(peer.ip()))
    }

    fn secure_cookie_flag(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> bool {
        match self.secure {
            SecureCookie::Always => true,
            SecureCookie::Never => false,
            SecureCookie::Auto => {
                peer.is_some_and(|ip| self.trusted_proxies.iter().any(|n| n.contains(&ip)))
                    && forwarded_https(headers)
            }
        }
    }

    /// Whether attempts for `name` or from `network` are held back now.
    fn throttled(&self, name: &str, network: IpAddr, now: Instant) -> Result<(), Duration> {
        self.failures.peek(name, now)?;
        self.failures.peek_anonymous_at(network, now)
    }

    /// Counts one failed attempt for `name` and for `network`.
    fn failed(&self, name: &str, network: IpAddr) {
        let now = Instant::now();
        let _ = self.failures.check(name, now);
        let _ = self.failures.check_anonymous_at(network, now);
    }

    /// [`verify_password`] on the blocking pool, [`VERIFY_AT_ONCE`] at a time.
    async fn verify(&self, hash: String, password: String) -> bool {
        let Ok(_slot) = self.verify_slots.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false)
    }
}

/// The session cookie's id, as its SHA-256 (the session table's key).
fn session_key(headers: &HeaderMap) -> Option<[u8; 32]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|id| Sha256::digest(id.as_bytes()).into())
}

/// `X-Forwarded-Proto: https` (its first value) or `Forwarded: proto=https`.
fn forwarded_https(headers: &HeaderMap) -> bool {
    let xfp = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|first| {
            first.split(';').any(|kv| {
                kv.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("proto")
                        && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
                })
            })
        });
    xfp || forwarded
}

/// The client's network for the throttle: IPv4 /24, IPv6 /48, nothing more kept.
fn network(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    client_ip::truncate(client_ip::client_ip(peer, headers, trusted), 24, 48).addr()
}

/// A form POST from this origin. Browsers that send `Sec-Fetch-Site` are judged by it
/// alone (`same-origin`, or `none` for a typed address), so a proxy that rewrites
/// `Host` does not break sign-in; for older ones an `Origin`, when sent, must name
/// this host.
fn same_origin(req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(&h))
}

/// `next` when it is a path on this site (`/...`, not `//host` nor `/\host`), else `/`.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && p.len() <= 2000
                && !p.chars().any(char::is_control) =>
        {
            p
        }
        _ => "/",
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn read_form(req: Request<Incoming>) -> Result<HashMap<String, String>, Response<Body>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_FORM_BYTES);
    let body = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(text(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n"));
        }
        Err(_) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "the form could not be read\n",
            ));
        }
    };
    let mut form = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        form.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    Ok(form)
}

const THROTTLED: &str = "Too many failed attempts. Wait a minute, then try again.";

/// The pages' only style, allowed by its hash in the Content-Security-Policy.
const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;display:grid;\
place-items:center;min-height:100vh;background:Canvas;color:CanvasText}\
main{width:min(22rem,90vw)}h1{font-size:1.4rem}label{display:block;margin-top:.8rem}\
input{box-sizing:border-box;width:100%;padding:.5rem;font:inherit}\
button{margin-top:1.2rem;padding:.5rem 1.2rem;font:inherit}\
.error{color:#b00020;font-weight:600}@media(prefers-color-scheme:dark){.error{color:#ff8a80}}";

static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    )
});

/// `<`, `>`, `&`, `"` and `'` as entities.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{title} · hush</title><style>{STYLE}</style></head>\
         <body><main>{body}</main></body></html>\n"
    )
}

fn error_line(error: Option<&str>) -> String {
    error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))
    })
}

fn login_form(next: &str, name: &str, error: Option<&str>) -> String {
    html_page(
        "Sign in",
        &format!(
            "<h1>Sign in to hush</h1>{}<form method=\"post\" action=\"/login\">\
             <label for=\"name\">User name</label>\
             <input id=\"name\" name=\"name\" autocomplete=\"username\" required autofocus value=\"{}\">\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <input type=\"hidden\" name=\"next\" value=\"{}\">\
             <button type=\"submit\">Sign in</button></form>",
            error_line(error),
            escape(name),
            escape(next)
        ),
    )
}

fn share_form(site: &str, slug: &str, error: Option<&str>) -> String {
    html_page(
        "Shared link",
        &format!(
            "<h1>{}</h1><p>This shared link is protected by a password.</p>{}\
             <form method=\"post\" action=\"/share/{}\">\
             <input type=\"hidden\" name=\"auth\" value=\"{}\">\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
             <button type=\"submit\">Open</button></form>",
            escape(site),
            error_line(error),
            escape(site),
            escape(slug)
        ),
    )
}

/// Headers every answer of these routes carries.
fn protect(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn page(status: StatusCode, html: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(html.to_owned())));
    *resp.status_mut() = status;
    protect(&mut resp);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(csp) = HeaderValue::from_str(&CSP) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    resp
}

fn throttled_page(html: &str, wait: Duration) -> Response<Body> {
    let mut resp = page(StatusCode::TOO_MANY_REQUESTS, html);
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = crate::http::response::simple(status, body);
    protect(&mut resp);
    resp
}

fn forbidden(why: &'static str) -> Response<Body> {
    let mut resp = crate::http::response::json(StatusCode::FORBIDDEN, &json!({ "error": why }));
    protect(&mut resp);
    resp
}

fn not_found() -> Response<Body> {
    page(
        StatusCode::NOT_FOUND,
        &html_page(
            "Link not valid",
            "<h1>This link is not valid</h1><p>It may have been revoked. Ask whoever shared it for a new one.</p>",
        ),
    )
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

fn redirect(location: &str, cookie: Option<String>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    protect(&mut resp);
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/")),
    );
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, cookie);
    }
    resp
}

fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let hash = hash_password_with("correct horse", fast()).unwrap();
        Config::from_toml_str(&format!(
            "[[sites]]\ndomain = \"a.com\"\n[[sites]]\ndomain = \"b.com\"\n\
             [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nsites = [\"a.com\"]\n{extra}"
        ))
        .unwrap()
    }

    /// Cheap parameters, so the unit tests stay fast (the cost is not under test).
    fn fast() -> argon2::Params {
        argon2::Params::new(64, 1, 1, None).unwrap()
    }

    fn cookie_headers(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).unwrap(),
        );
        h
    }

    fn alice() -> Viewer {
        Viewer {
            name: "alice".into(),
            sites: vec!["a.com".into()],
            locked_filters: None,
            csrf: "c".repeat(64),
        }
    }

    #[test]
    fn hashes_verify_only_their_password_and_use_argon2id() {
        let hash = hash_password_with("correct horse", fast()).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        crate::config::check_argon2id(&hash).unwrap();
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horsE"));
        assert!(!verify_password(&hash, ""));
        assert!(!verify_password("not a hash", "correct horse"));
        assert_ne!(
            hash,
            hash_password_with("correct horse", fast()).unwrap(),
            "salted"
        );
        let full = hash_password("pw").unwrap();
        assert!(
            full.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{full}"
        );
    }

    #[test]
    fn a_session_lives_for_its_ttl_and_no_longer() {
        let mut c = config("");
        c.dashboard.session_ttl_hours = 1.0;
        let auth = Auth::new(&c).unwrap();
        let t0 = Instant::now();
        let set = auth.start_at(alice(), Kind::User, None, false, t0);
        assert!(set.contains("Max-Age=3600;"), "{set}");
        let headers = cookie_headers(&set);
        assert_eq!(auth.viewer_at(&headers, t0), Some(alice()));
        let last = t0 + Duration::from_secs(3600) - Duration::from_millis(1);
        assert_eq!(auth.viewer_at(&headers, last), Some(alice()));
        assert_eq!(
            auth.viewer_at(&headers, t0 + Duration::from_secs(3600)),
            None
        );
        // Expired is gone for good, also for an earlier clock.
        assert_eq!(auth.viewer_at(&headers, t0), None);
        // A cookie that is not a session, or a near miss of one, is nobody.
        let id = set.split(';').next().unwrap().split('=').nth(1).unwrap();
        let mut flipped = id.to_owned();
        flipped.replace_range(0..1, if id.starts_with('0') { "1" } else { "0" });
        for value in [flipped.as_str(), "", &id[..63], "zz"] {
            let mut h = HeaderMap::new();
            h.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("{COOKIE}={value}")).unwrap(),
            );
            assert_eq!(auth.viewer_at(&h, t0), None, "{value:?}");
        }
    }

    #[test]
    fn csrf_must_match_exactly() {
        let auth = Auth::new(&config("")).unwrap();
        let v = alice();
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(CSRF_HEADER, HeaderValue::from_str(value).unwrap());
            h
        };
        assert!(auth.check_csrf(&v, &with(&v.csrf)));
        assert!(!auth.check_csrf(&v, &HeaderMap::new()));
        assert!(!auth.check_csrf(&v, &with("")));
        assert!(!auth.check_csrf(&v, &with(&v.csrf[1..])));
        assert!(!auth.check_csrf(&v, &with(&format!("{}d", &v.csrf[1..]))));
    }

    #[test]
    fn the_session_table_is_bounded() {
        let auth = Auth::new(&config("")).unwrap();
        let t0 = Instant::now();
        let first = auth.start_at(alice(), Kind::User, None, false, t0);
        for i in 1..=MAX_SESSIONS {
            auth.start_at(
                alice(),
                Kind::User,
                None,
                false,
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(auth.sessions.lock().unwrap().map.len(), MAX_SESSIONS);
        // The oldest (nearest to expiring) made room.
        assert_eq!(auth.viewer_at(&cookie_headers(&first), t0), None);
    }

    #[test]
    fn next_must_stay_on_this_site() {
        for (next, kept) in [
            (Some("/a.com?period=7d"), "/a.com?period=7d"),
            (Some("/"), "/"),
            (Some("//evil.example/"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (Some("/a\nb"), "/"),
            (None, "/"),
        ] {
            assert_eq!(local_path(next), kept, "{next:?}");
        }
    }

    #[test]
    fn forms_escape_what_they_echo() {
        let html = login_form("/x\"><script>", "<b>'", Some("a&b"));
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("&quot;&gt;&lt;script&gt;") && html.contains("&lt;b&gt;&#39;"));
        assert!(html.contains("a&amp;b"));
        assert!(!html.contains("<script"), "no script at all: {html}");
    }

    #[test]
    fn share_filters_are_parsed_as_the_stats_api_does() {
        let ok = parse_locked_filters(&json!([["is", "visit:source", ["Google"]]])).unwrap();
        assert_eq!(ok.len(), 1);
        assert!(parse_locked_filters(&json!([["is", "visit:nope", ["x"]]])).is_err());
        let slug = NewShare::generate();
        let bad = config(&format!(
            "[[sites]]\ndomain = \"c.com\"\n[[sites.shares]]\nname = \"x\"\n\
             slug_sha256 = \"{}\"\nfilters = '[[\"is\", \"visit:nope\", [\"x\"]]]'\n",
            slug.slug_sha256
        ));
        let err = Auth::new(&bad).err().expect("refused").to_string();
        assert!(err.contains("sites[2].shares[0].filters"), "{err}");
    }

    #[test]
    fn secure_follows_the_setting_and_trusted_proxies_only() {
        let mut c = config("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
        let https = |name: &str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
            h
        };
        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let auth = Auth::new(&c).unwrap();
        let xfp = https("x-forwarded-proto", "https");
        assert!(auth.secure(proxy, &xfp));
        assert!(!auth.secure(stranger, &xfp));
        assert!(!auth.secure(proxy, &HeaderMap::new()));
        assert!(!auth.secure(proxy, &https("x-forwarded-proto", "http, https")));
        assert!(auth.secure(proxy, &https("forwarded", "for=1.2.3.4;proto=https")));
        c.dashboard.secure_cookie = SecureCookie::Always;
        assert!(Auth::new(&c).unwrap().secure(stranger, &HeaderMap::new()));
        c.dashboard.secure_cookie = SecureCookie::Never;
        assert!(!Auth::new(&c).unwrap().secure(proxy, &xfp));
    }

    #[test]
    fn viewers_read_their_sites_only() {
        let v = alice();
        assert!(v.may_read("a.com"));
        assert!(!v.may_read("b.com") && !v.may_read("A.com") && !v.may_read(""));
        let all = Viewer {
            sites: vec!["*".into()],
            ..alice()
        };
        assert!(all.may_read("b.com"));
    }
}
