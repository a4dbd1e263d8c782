//! The dashboard: the page analysts open, and the small endpoint it needs besides
//! the Stats API.
//!
//! - `GET /` is the list of sites, `GET /{site}` a configured site's dashboard: the
//!   same HTML shell (`dashboard/src/index.html`), which loads the page's CSS and
//!   ES modules; the page reads the site from its own URL and its state from the
//!   query string, and asks `/api/v2/query` (and the site's goals) for every number,
//!   like any other Stats API client.
//! - `GET /dashboard/<name>.<sha8>.<ext>` are the assets, compiled in from
//!   `dashboard/dist/` (built by `dashboard/build`, committed; building hush needs no
//!   JavaScript tool). The name carries the first 8 hex digits of the SHA-256 of the
//!   file, recomputed here, so each release's files have new names and are cached
//!   for a year (`immutable`); the shell is revalidated on every load (`no-cache`,
//!   304 by ETag). Every file is served gzip or brotli precompressed.
//! - `GET /api/hush/sites` lists the sites the caller may read, with their time
//!   zones (today: the `public = true` ones).
//!
//! The shell carries a strict Content-Security-Policy ([`CSP`]): scripts, styles and
//! connections from hush itself only, no inline script or style, no framing. It
//! holds `<meta name="hush-csrf" content="">`, which [`shell`] fills with a
//! session's CSRF token when there is one (the page sends it as `X-Hush-CSRF` with
//! every API call); without one the precompressed shell is served as is.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::app::stats::Stats;
use crate::config::Config;
use crate::http::asset::{Coding, StaticAsset};
use crate::http::response::{self, simple};
use crate::http::server::{Body, Handler};
use crate::metrics::{HttpMetrics, Route};

/// Where the assets are served.
pub const ASSET_PREFIX: &str = "/dashboard/";
/// The list of readable sites.
pub const SITES_PATH: &str = "/api/hush/sites";

/// The Content-Security-Policy of the shell.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Headers of every HTML answer.
const PAGE_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
];
/// The shell's placeholder for the CSRF token.
const CSRF_PLACEHOLDER: &str = r#"<meta name="hush-csrf" content="">"#;
/// Hashed names never change content: a year, and no revalidation.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The shell names the current assets: always revalidated (a 304 when unchanged).
const SHELL_CACHE: &str = "no-cache";
/// The page weight budget: the shell, CSS and JS, gzipped.
pub const PAGE_WEIGHT_BUDGET: usize = 60 * 1024;

/// One file of `dashboard/dist/` with its compressed variants.
pub struct File {
    /// Its name in `dashboard/src/` and `dashboard/dist/`.
    pub name: &'static str,
    pub content_type: &'static str,
    pub identity: &'static [u8],
    pub gzip: &'static [u8],
    pub brotli: &'static [u8],
}

macro_rules! dist {
    ($name:literal, $type:expr) => {
        File {
            name: $name,
            content_type: $type,
            identity: include_bytes!(concat!("../../dashboard/dist/", $name)),
            gzip: include_bytes!(concat!("../../dashboard/dist/", $name, ".gz")),
            brotli: include_bytes!(concat!("../../dashboard/dist/", $name, ".br")),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page is made of (a test checks this is all of `dashboard/dist/`).
pub const FILES: &[File] = &[
    dist!("index.html", "text/html; charset=utf-8"),
    dist!("app.css", "text/css; charset=utf-8"),
    dist!("app.js", JS),
    dist!("api.js", JS),
    dist!("chart.js", JS),
    dist!("details.js", JS),
    dist!("dom.js", JS),
    dist!("map.js", JS),
    dist!("state.js", JS),
    dist!("panels-extra.js", JS),
    dist!("world.js", JS),
];

/// The name a file is served under: `app.js` → `app.<sha8>.js`; the shell keeps its
/// name (it is served at the page URLs).
pub fn served_name(file: &File) -> String {
    if file.name.ends_with(".html") {
        return file.name.to_owned();
    }
    let hash: String = Sha256::digest(file.identity)[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match file.name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{}.{hash}", file.name),
    }
}

fn asset(file: &File, cache_control: &'static str) -> StaticAsset {
    StaticAsset::new(file.identity, file.content_type, cache_control)
        .with_variant(Coding::Gzip, file.gzip)
        .with_variant(Coding::Brotli, file.brotli)
        .with_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .with_header(
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        )
}

/// The assets by their served names.
static ASSETS: LazyLock<HashMap<String, StaticAsset>> = LazyLock::new(|| {
    FILES
        .iter()
        .filter(|f| !f.name.ends_with(".html"))
        .map(|f| (served_name(f), asset(f, IMMUTABLE)))
        .collect()
});

fn shell_file() -> &'static File {
    &FILES[0]
}

/// The shell without a token, precompressed.
static SHELL: LazyLock<StaticAsset> = LazyLock::new(|| {
    PAGE_HEADERS.iter().fold(
        StaticAsset::new(
            shell_file().identity,
            shell_file().content_type,
            SHELL_CACHE,
        )
        .with_variant(Coding::Gzip, shell_file().gzip)
        .with_variant(Coding::Brotli, shell_file().brotli),
        |a, (name, value)| a.with_header(HeaderName::from_static(name), value),
    )
});

/// The HTML shell. With a CSRF token (a signed-in session's), the token is written
/// into its `hush-csrf` meta tag and the answer is not stored by any cache;
/// without, the precompressed shell with its ETag.
pub fn shell(headers: &HeaderMap, csrf: &str) -> Response<Body> {
    if csrf.is_empty() {
        return SHELL.respond(headers);
    }
    let text = String::from_utf8_lossy(shell_file().identity).replace(
        CSRF_PLACEHOLDER,
        &format!(
            r#"<meta name="hush-csrf" content="{}">"#,
            html_attr_escape(csrf)
        ),
    );
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(shell_file().content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in PAGE_HEADERS {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    resp
}

fn html_attr_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

struct SiteEntry {
    domain: String,
    timezone: String,
    public: bool,
}

/// The dashboard's routes, shared by every request.
pub struct Dashboard {
    sites: Vec<SiteEntry>,
    domains: HashSet<String>,
    /// Signed-in analysts and shared links (`app::auth`), when configured.
    auth: Option<Arc<crate::app::auth::Auth>>,
}

impl Dashboard {
    pub fn new(config: &Config) -> Self {
        let sites: Vec<SiteEntry> = config
            .sites
            .iter()
            .map(|s| SiteEntry {
                domain: s.domain.clone(),
                timezone: s.timezone.clone(),
                public: s.public,
            })
            .collect();
        let domains = sites.iter().map(|s| s.domain.clone()).collect();
        Self {
            sites,
            domains,
            auth: None,
        }
    }

    /// The same dashboard, showing signed-in analysts their sites and giving the page
    /// their session's CSRF token.
    pub fn with_auth(self, auth: Arc<crate::app::auth::Auth>) -> Self {
        Self {
            auth: Some(auth),
            ..self
        }
    }

    /// Whether `path` is one of the dashboard's routes: `/`, `/{configured site}`,
    /// `/dashboard/...`, `/api/hush/sites`.
    pub fn serves(&self, path: &str) -> bool {
        path == "/"
            || path == SITES_PATH
            || path.starts_with(ASSET_PREFIX)
            || path
                .strip_prefix('/')
                .is_some_and(|site| self.domains.contains(site))
    }

    pub fn handle(&self, req: &Request<Incoming>) -> Response<Body> {
        self.respond(req.method(), req.uri().path(), req.headers())
    }

    fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = simple(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if let Some(name) = path.strip_prefix(ASSET_PREFIX) {
            return match ASSETS.get(name) {
                Some(asset) => asset.respond(headers),
                None => simple(StatusCode::NOT_FOUND, "not found\n"),
            };
        }
        let viewer = self.auth.as_ref().and_then(|a| a.viewer(headers));
        if path == SITES_PATH {
            let mut r = response::json(
                StatusCode::OK,
                &json!({
                    "sites": self.readable(viewer.as_ref()).map(|s| json!({
                        "domain": s.domain,
                        "timezone": s.timezone,
                    })).collect::<Vec<_>>(),
                }),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
        // A site that is neither public nor readable by the viewer: sign in first.
        if let Some(site) = path.strip_prefix('/').filter(|s| !s.is_empty())
            && self.auth.is_some()
            && !self.readable(viewer.as_ref()).any(|s| s.domain == site)
        {
            let next: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
            let mut r = simple(StatusCode::SEE_OTHER, "sign in\n");
            if let Ok(location) = HeaderValue::from_str(&format!("/login?next={next}")) {
                r.headers_mut().insert(header::LOCATION, location);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
        shell(headers, viewer.as_ref().map_or("", |v| v.csrf.as_str()))
    }

    /// The sites the caller may read: the `public = true` ones, and those of the
    /// signed-in analyst or shared link.
    fn readable<'a>(
        &'a self,
        viewer: Option<&'a crate::app::auth::Viewer>,
    ) -> impl Iterator<Item = &'a SiteEntry> {
        self.sites
            .iter()
            .filter(move |s| s.public || viewer.is_some_and(|v| v.may_read(&s.domain)))
    }
}

/// The read side on a listener of its own (`dashboard.listen`): the dashboard and
/// the Stats API, nothing of ingestion (everything else is a 404).
pub struct ReadSide {
    pub dashboard: Arc<Dashboard>,
    pub stats: Arc<Stats>,
    pub auth: Arc<crate::app::auth::Auth>,
    pub metrics: HttpMetrics,
}

impl Handler for ReadSide {
    type Body = Body;

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let path = req.uri().path();
        let (route, resp) = if crate::app::auth::Auth::serves(path) {
            (Route::auth, self.auth.handle(req, peer).await)
        } else if Stats::serves(path) {
            (Route::stats, self.stats.handle(req, peer).await)
        } else if self.dashboard.serves(path) {
            (Route::dashboard, self.dashboard.handle(&req))
        } else {
            (
                Route::not_found,
                simple(StatusCode::NOT_FOUND, "not found\n"),
            )
        };
        self.metrics
            .request(route, resp.status().as_u16(), started.elapsed());
        resp
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use http_body_util::BodyExt;

    use super::*;

    /// The build's manifest, written by `dashboard/build`.
    const MANIFEST: &str = include_str!("../../dashboard/dist/build.json");

    macro_rules! source {
        ($name:literal) => {
            (
                $name,
                include_bytes!(concat!("../../dashboard/src/", $name)),
            )
        };
    }
    /// The sources the committed build must come from.
    const SOURCES: &[(&str, &[u8])] = &[
        source!("index.html"),
        source!("app.css"),
        source!("app.js"),
        source!("api.js"),
        source!("chart.js"),
        source!("details.js"),
        source!("dom.js"),
        source!("map.js"),
        source!("state.js"),
        source!("panels-extra.js"),
        source!("world.js"),
    ];

    fn manifest() -> serde_json::Value {
        serde_json::from_str(MANIFEST).expect("dashboard/dist/build.json is JSON")
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn body(resp: Response<Body>) -> Vec<u8> {
        futures_util::FutureExt::now_or_never(resp.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    fn config(toml: &str) -> Config {
        Config::from_toml_str(toml).expect("config")
    }

    fn get(d: &Dashboard, path: &str, headers: &[(&str, &str)]) -> Response<Body> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        d.respond(&Method::GET, path, &map)
    }

    #[test]
    fn the_committed_build_is_of_the_current_sources() {
        let m = manifest();
        let files = m["files"].as_object().expect("files");
        let mut listed: Vec<&str> = files.keys().map(String::as_str).collect();
        let mut compiled: Vec<&str> = FILES.iter().map(|f| f.name).collect();
        let mut sources: Vec<&str> = SOURCES.iter().map(|(n, _)| *n).collect();
        listed.sort();
        compiled.sort();
        sources.sort();
        assert_eq!(listed, compiled, "FILES must list every built file");
        assert_eq!(sources, compiled, "SOURCES must list every built file");
        for (name, source) in SOURCES {
            assert_eq!(
                files[*name]["source_sha256"].as_str(),
                Some(sha256_hex(source).as_str()),
                "dashboard/src/{name} changed since dashboard/dist/ was built: run dashboard/build"
            );
        }
        for file in FILES {
            let entry = &files[file.name];
            assert_eq!(entry["bytes"].as_u64(), Some(file.identity.len() as u64));
            // The name the build wrote into the importing files is the name served.
            assert_eq!(
                entry["served"].as_str(),
                Some(served_name(file).as_str()),
                "{}",
                file.name
            );
        }
    }

    #[test]
    fn every_reference_names_a_served_file() {
        // Imports between modules and the shell's links use the hashed names.
        let served: HashSet<String> = ASSETS.keys().cloned().collect();
        let mut seen = 0;
        for file in FILES {
            let text = std::str::from_utf8(file.identity).unwrap();
            for (marker, end) in [
                ("from './", '\''),
                ("import('./", '\''),
                ("\"/dashboard/", '"'),
            ] {
                for (at, _) in text.match_indices(marker) {
                    let rest = &text[at + marker.len()..];
                    let name = &rest[..rest.find(end).unwrap()];
                    assert!(
                        served.contains(name),
                        "{} refers to {name}, which is not served",
                        file.name
                    );
                    seen += 1;
                }
            }
        }
        // The shell's CSS and entry module, and the modules' imports.
        assert!(seen >= 2 + 5, "{seen} references");
    }

    #[test]
    fn the_compressed_files_hold_the_files() {
        for file in FILES {
            let mut gunzipped = Vec::new();
            flate2::read::GzDecoder::new(file.gzip)
                .read_to_end(&mut gunzipped)
                .expect("gzip");
            assert!(gunzipped == file.identity, "{}.gz", file.name);
            let mut unbrotlied = Vec::new();
            brotli_decompressor::Decompressor::new(file.brotli, 4096)
                .read_to_end(&mut unbrotlied)
                .expect("brotli");
            assert!(unbrotlied == file.identity, "{}.br", file.name);
        }
    }

    #[test]
    fn the_page_fits_its_weight_budget() {
        let weight: usize = FILES.iter().map(|f| f.gzip.len()).sum();
        assert!(
            weight <= PAGE_WEIGHT_BUDGET,
            "the dashboard is {weight} bytes gzipped, over {PAGE_WEIGHT_BUDGET}"
        );
        assert_eq!(
            manifest()["page_weight_gzip_bytes"].as_u64(),
            Some(weight as u64)
        );
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_no_other_host() {
        for file in FILES {
            // The SVG namespace is a name, not a request.
            let text = std::str::from_utf8(file.identity)
                .unwrap()
                .replace("'http://www.w3.org/2000/svg'", "");
            for bad in ["http://", "https://", "//cdn", "eval(", "new Function"] {
                assert!(!text.contains(bad), "{} contains {bad}", file.name);
            }
            if file.name.ends_with(".html") {
                assert!(!text.contains("style="), "inline style in {}", file.name);
                assert!(!text.contains(" on"), "inline handler in {}", file.name);
                for (at, _) in text.match_indices("<script") {
                    let tag = &text[at..at + text[at..].find('>').unwrap()];
                    assert!(tag.contains("src=\"/dashboard/"), "inline script: {tag}");
                }
            }
        }
    }

    #[test]
    fn routes_shell_assets_and_sites() {
        let d = Dashboard::new(&config(
            r#"
[[sites]]
domain = "open.example"
public = true
timezone = "Europe/Berlin"

[[sites]]
domain = "closed.example"
"#,
        ));
        for path in [
            "/",
            "/open.example",
            "/closed.example",
            "/dashboard/x",
            SITES_PATH,
        ] {
            assert!(d.serves(path), "{path}");
        }
        for path in [
            "/health",
            "/api/event",
            "/js/script.js",
            "/unknown.example",
            "/open.example/x",
            "/api/v2/query",
        ] {
            assert!(!d.serves(path), "{path}");
        }

        // The shell: CSP, revalidated, precompressed, with its ETag.
        let r = get(&d, "/open.example", &[("accept-encoding", "gzip")]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-security-policy"], CSP);
        assert_eq!(r.headers()["cache-control"], "no-cache");
        assert_eq!(r.headers()["content-encoding"], "gzip");
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let r = get(
            &d,
            "/",
            &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
        );
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

        // Each asset under its hashed name, for a year; other names are 404s.
        for file in FILES.iter().filter(|f| !f.name.ends_with(".html")) {
            let r = get(&d, &format!("/dashboard/{}", served_name(file)), &[]);
            assert_eq!(r.status(), StatusCode::OK, "{}", file.name);
            assert_eq!(r.headers()["cache-control"], IMMUTABLE);
            assert_eq!(r.headers()["content-type"], file.content_type);
            assert_eq!(body(r), file.identity);
            let r = get(&d, &format!("/dashboard/{}", file.name), &[]);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{}", file.name);
        }
        assert_eq!(
            get(&d, "/dashboard/index.html", &[]).status(),
            StatusCode::NOT_FOUND
        );

        // Only the public site is listed.
        let r = get(&d, SITES_PATH, &[]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let v: serde_json::Value = serde_json::from_slice(&body(r)).unwrap();
        assert_eq!(
            v,
            json!({"sites": [{"domain": "open.example", "timezone": "Europe/Berlin"}]})
        );

        let r = d.respond(&Method::POST, "/open.example", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()["allow"], "GET, HEAD");
    }

    #[test]
    fn a_csrf_token_is_written_into_the_shell_escaped() {
        let r = shell(&HeaderMap::new(), r#"t0k"en<"#);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.headers()["content-security-policy"], CSP);
        assert!(r.headers().get("etag").is_none());
        let text = String::from_utf8(body(r)).unwrap();
        assert!(
            text.contains(r#"<meta name="hush-csrf" content="t0k&quot;en&lt;">"#),
            "{text}"
        );
        assert!(!text.contains(CSRF_PLACEHOLDER));
        // The placeholder is in the committed shell exactly once.
        let shell = std::str::from_utf8(shell_file().identity).unwrap();
        assert_eq!(shell.matches(CSRF_PLACEHOLDER).count(), 1);
    }
}
