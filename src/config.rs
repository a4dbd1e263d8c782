//! Configuration: TOML files with `HUSH_`-prefixed environment overrides.
//!
//! Every key has a default (see `config/default.toml`, which documents them), so an
//! empty file plus one `[[sites]]` entry is a working configuration. Validation runs
//! once at start and names the key, the value and the reason, so a bad deployment
//! fails loudly instead of silently dropping hits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Smallest `writer.queue_max_bytes`: room for a few of the largest requests.
const MIN_QUEUE_BYTES: u64 = 1024 * 1024;

/// A configuration that could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: `{key}` = {value}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

fn invalid(
    key: impl Into<String>,
    value: impl std::fmt::Debug,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: format!("{value:?}"),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub privacy: PrivacyConfig,
    pub session: SessionConfig,
    pub user_agent: UserAgentConfig,
    pub geo: GeoConfig,
    pub clickhouse: ClickHouseConfig,
    pub writer: WriterConfig,
    pub spool: SpoolConfig,
    pub retention: RetentionConfig,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
    pub stats: StatsConfig,
    pub log: LogConfig,
    pub dashboard: DashboardConfig,
    /// Analyst accounts (`hush user add`).
    pub users: Vec<UserConfig>,
    pub sites: Vec<SiteConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Public ingestion listener.
    pub listen: SocketAddr,
    /// Connections beyond this wait in the kernel backlog instead of costing memory.
    pub max_connections: usize,
    /// Requests being handled at once across all connections (HTTP/2 multiplexes many).
    pub max_in_flight_requests: usize,
    /// Requests in flight on one connection at once: its fair share of
    /// `max_in_flight_requests`, so a few HTTP/2 connections with stalled streams
    /// cannot take every slot.
    pub max_in_flight_per_connection: usize,
    /// A client must send its complete request head within this time (slowloris guard).
    pub header_read_timeout_ms: u64,
    /// A client must send its complete body within this time.
    pub body_read_timeout_ms: u64,
    /// Idle keep-alive connections are closed after this time.
    pub keep_alive_timeout_ms: u64,
    /// Maximum concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Peers allowed to set X-Forwarded-For / Forwarded (CIDRs). Empty: trust no header.
    pub trusted_proxies: Vec<IpNet>,
    /// How long a graceful shutdown may take to flush before giving up.
    pub shutdown_timeout_ms: u64,
    /// Without `spool.dir`: start (and queue hits in memory) while ClickHouse is down
    /// instead of refusing to start. Hits queued then are lost if the process ends
    /// before ClickHouse answers. With a spool, hush always starts.
    pub start_without_store: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            max_connections: 10_000,
            max_in_flight_requests: 4_096,
            max_in_flight_per_connection: 32,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            keep_alive_timeout_ms: 60_000,
            h2_max_concurrent_streams: 100,
            trusted_proxies: Vec::new(),
            shutdown_timeout_ms: 30_000,
            start_without_store: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_batch_body_bytes: usize,
    pub max_batch_events: usize,
    pub max_url_chars: usize,
    pub max_referrer_chars: usize,
    pub max_event_name_chars: usize,
    pub max_props: usize,
    pub max_prop_key_bytes: usize,
    pub max_prop_value_bytes: usize,
    pub max_json_depth: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024,
            max_batch_body_bytes: 256 * 1024,
            max_batch_events: 100,
            max_url_chars: 2_000,
            max_referrer_chars: 2_000,
            max_event_name_chars: 120,
            max_props: 30,
            max_prop_key_bytes: 300,
            max_prop_value_bytes: 2_000,
            max_json_depth: 8,
        }
    }
}

/// What to do with a hit that carries `DNT: 1` or `Sec-GPC: 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptOutPolicy {
    /// Count the hit with no visitor id and no session: totals stay right, nothing links it to a person.
    Anonymous,
    /// Do not store the hit at all (answered 202 with a reason header).
    Drop,
    /// Treat it like any other hit.
    Ignore,
}

/// The longest IPv4 prefix that still anonymises: a /24 is the smallest block routed
/// on the internet and holds up to 254 hosts; anything longer keeps bits of the host
/// byte (a /32 keeps the whole address).
pub const MAX_IPV4_PREFIX: u8 = 24;
/// The longest IPv6 prefix that still anonymises: a /48 is the usual end-site
/// assignment of a whole organisation (RFC 6177) and holds 256 /56s, the usual
/// household assignment; anything longer can single out one customer.
pub const MAX_IPV6_PREFIX: u8 = 48;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// IPv4 addresses are cut to this many leading bits before anything else sees them
    /// (8 ..= [`MAX_IPV4_PREFIX`]).
    pub ipv4_prefix: u8,
    /// IPv6 addresses are cut to this many leading bits before anything else sees them
    /// (16 ..= [`MAX_IPV6_PREFIX`]).
    pub ipv6_prefix: u8,
    pub dnt: OptOutPolicy,
    pub gpc: OptOutPolicy,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            dnt: OptOutPolicy::Anonymous,
            gpc: OptOutPolicy::Anonymous,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A visit ends after this long without a hit from the same visitor.
    pub timeout_secs: u64,
    /// Upper bound on tracked visitors; the least recently seen are forgotten first.
    pub max_tracked: usize,
    /// Upper bound on the memory of the visit tracker, bytes (its table and every
    /// visit's entry page); the least recently seen visitors are forgotten first.
    pub max_bytes: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 30 * 60,
            max_tracked: 1_000_000,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The smallest `session.max_bytes` accepted: a few thousand visits.
pub const MIN_SESSION_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserAgentConfig {
    /// Distinct User-Agent strings whose parse result is cached (and as many
    /// User-Agent + client-hint combinations, in a second cache).
    pub cache_entries: usize,
    /// Extra case-insensitive substrings that mark a User-Agent as a bot.
    pub extra_bot_patterns: Vec<String>,
    /// Case-insensitive substrings of User-Agents never taken for a bot (a site's own
    /// monitoring, counted on purpose): they win over every bot rule.
    pub allowed_patterns: Vec<String>,
}

impl Default for UserAgentConfig {
    fn default() -> Self {
        Self {
            cache_entries: 20_000,
            extra_bot_patterns: Vec::new(),
            allowed_patterns: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeoConfig {
    /// Path to a GeoLite2-City / GeoIP2-City mmdb file. Unset: no geo columns.
    pub database: Option<PathBuf>,
    /// Reload the database when the file changes (SIGHUP always reloads).
    pub watch: bool,
    /// How often the file is checked for changes when `watch` is on.
    pub watch_interval_ms: u64,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self {
            database: None,
            watch: true,
            watch_interval_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Lz4,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: String,
    pub compression: Compression,
    /// Timeout of each request to ClickHouse.
    pub request_timeout_ms: u64,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            user: "default".into(),
            password: String::new(),
            database: "hush".into(),
            compression: Compression::Lz4,
            request_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// A batch is inserted when it reaches this many rows ...
    pub batch_rows: usize,
    /// ... or when its oldest row has waited this long, whichever comes first.
    pub flush_interval_ms: u64,
    /// Hits waiting for the writer; when full, new hits get 503 + Retry-After.
    pub queue_capacity: usize,
    /// Bytes (RowBinary-encoded) of the hits accepted into the in-memory queue and not
    /// yet stored, including the batch being built and the one being inserted; when a
    /// request does not fit, it is refused whole with 503 + Retry-After. With a spool,
    /// `spool.max_bytes` bounds instead.
    pub queue_max_bytes: u64,
    /// First retry delay after a failed insert; doubles up to `retry_max_ms`, with jitter.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// The counts of hits not counted as visitors (bots, opted out) are inserted into
    /// `dropped` this often; a crash loses at most this interval of them.
    pub dropped_flush_interval_ms: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            batch_rows: 10_000,
            flush_interval_ms: 1_000,
            queue_capacity: 200_000,
            queue_max_bytes: 256 * 1024 * 1024,
            retry_base_ms: 200,
            retry_max_ms: 30_000,
            dropped_flush_interval_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    Always,
    Interval,
    Never,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the write-ahead spool. Unset: hits are buffered in memory only.
    pub dir: Option<PathBuf>,
    pub fsync: FsyncPolicy,
    pub fsync_interval_ms: u64,
    pub segment_bytes: u64,
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: None,
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 50,
            segment_bytes: 16 * 1024 * 1024,
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Sites without their own `retention_days` keep data this long. 395 days covers a
    /// full year plus a month, so year-over-year comparisons of the last month still work.
    pub default_days: u32,
    /// No site may keep data longer; the table TTL is set here as a backstop.
    pub max_days: u32,
    /// Run the built-in purge scheduler in `serve`.
    pub schedule: bool,
    /// UTC time of day ("HH:MM") of the daily purge.
    pub at_utc: String,
    /// Random delay added to the purge start so instances do not start together.
    pub jitter_secs: u64,
    /// Longest one deleting statement may take: a purge's delete or partition drop, an
    /// erasure, a site deletion, a salt cleanup. Each waits until ClickHouse has
    /// finished (`mutations_sync = 2`), and a mutation rewrites every part holding a
    /// matching row, so this is far above `clickhouse.request_timeout_ms`, which
    /// bounds every other store request. An admin erasure or site deletion also
    /// waits this long for the rows accepted before it to be stored (else 503).
    pub mutation_timeout_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            default_days: 395,
            max_days: 1_100,
            schedule: true,
            at_utc: "03:30".into(),
            jitter_secs: 600,
            mutation_timeout_ms: 3_600_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin API listener; keep it off the public interface.
    pub listen: Option<SocketAddr>,
    pub tokens: Vec<AdminToken>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            tokens: Vec::new(),
        }
    }
}

/// Where `GET /metrics` is served.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Also serve `/metrics` on the public ingestion listener, without a token. Off by
    /// default: the page is then on the admin listener only, behind an admin token.
    pub public: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    /// Hex SHA-256 of the token (`hush token new` prints both).
    pub sha256: String,
}

/// The Stats API (the read side): who may read, and how much one request may cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    /// Stats API keys (`hush key new`); only their SHA-256 is configured.
    pub keys: Vec<StatsKey>,
    /// Requests per hour one key may make (Plausible's limit: 600), with a burst of
    /// as many; anonymous readers of a public site share one allowance per network
    /// (IPv4 /24, IPv6 /48). Over it: 429 with `Retry-After`.
    pub rate_limit_per_hour: u32,
    /// ClickHouse `max_execution_time` of every stats query, milliseconds.
    pub max_execution_time_ms: u64,
    /// ClickHouse `max_memory_usage` of every stats query, bytes.
    pub max_memory_usage_bytes: u64,
    /// ClickHouse `max_result_rows` of every stats query.
    pub max_result_rows: u64,
    /// Seconds between two runs of the `sessions` builder in `serve`
    /// (`hush::store::sessions`); 0: never built, every query reads `events`.
    pub sessions_build_interval_secs: u64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            rate_limit_per_hour: 600,
            max_execution_time_ms: 10_000,
            max_memory_usage_bytes: 2 * 1024 * 1024 * 1024,
            max_result_rows: 100_000,
            sessions_build_interval_secs: 300,
        }
    }
}

/// Smallest `stats.max_memory_usage_bytes`: below it ordinary queries fail.
pub const MIN_STATS_MEMORY_BYTES: u64 = 16 * 1024 * 1024;
/// Smallest `stats.max_result_rows`: one Stats API page holds up to this many rows.
pub const MIN_STATS_RESULT_ROWS: u64 = 10_000;

/// One Stats API key (`[[stats.keys]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsKey {
    /// Logged with every call made with this key (never the key itself).
    pub name: String,
    /// Hex SHA-256 of the key (`hush key new` prints both).
    pub sha256: String,
    /// Domains of the sites this key may read (each a configured `sites.domain`), or
    /// `["*"]` for every site.
    pub sites: Vec<String>,
}

/// The `sites` entry of a [`StatsKey`] that allows every site.
pub const ALL_SITES: &str = "*";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The domain hits name in `domain`/`d`; also the site's key in every table.
    pub domain: String,
    /// Other host names that count as this site (e.g. `www.` variants, staging).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Days of data kept; defaults to `retention.default_days`.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// IANA time zone for day boundaries of this site's retention and reports.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Its stats can be read without a key (rate-limited per network).
    #[serde(default)]
    pub public: bool,
    /// Conversion goals (`[[sites.goals]]`), for `event:goal` and conversion rates.
    #[serde(default)]
    pub goals: Vec<GoalConfig>,
    /// Shared links (`hush share new`); removing an entry revokes its link.
    #[serde(default)]
    pub shares: Vec<ShareConfig>,
}

/// The dashboard: where it is served, and the analysts' side of it (sessions,
/// cookies, login throttling).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// A listener of its own for the dashboard and the Stats API (the read side);
    /// the ingestion listener then serves neither. Unset: both are on the ingestion
    /// listener (`server.listen`).
    pub listen: Option<SocketAddr>,
    /// A session ends this many hours after the login (or the shared link was
    /// opened); fractions allowed (0.5 = 30 minutes).
    pub session_ttl_hours: f64,
    /// When the session cookie is marked `Secure`.
    pub secure_cookie: SecureCookie,
    /// Failed logins allowed per minute for one user name and for one client network
    /// (IPv4 /24, IPv6 /48); then 429 with `Retry-After`.
    pub login_attempts_per_minute: u32,
    /// Stats API requests per hour one signed-in session (an analyst's or a shared
    /// link's) may make, with a burst of as many; its own allowance, apart from the
    /// keys' `stats.rate_limit_per_hour` (a dashboard view makes a dozen calls).
    pub session_rate_limit_per_hour: u32,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            listen: None,
            session_ttl_hours: 12.0,
            secure_cookie: SecureCookie::Auto,
            login_attempts_per_minute: 5,
            session_rate_limit_per_hour: 3600,
        }
    }
}

/// Longest session, hours (a year).
pub const MAX_SESSION_TTL_HOURS: f64 = 8_784.0;

/// `dashboard.secure_cookie`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecureCookie {
    /// `Secure` when the request came over TLS: from a trusted proxy saying
    /// `X-Forwarded-Proto: https` (or `Forwarded: proto=https`).
    Auto,
    /// Always `Secure` (browsers then keep it only over HTTPS or on localhost).
    Always,
    /// Never `Secure` (plain HTTP on a private network).
    Never,
}

/// An analyst account (`[[users]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The login name; also logged with each of the user's stats requests.
    pub name: String,
    /// Argon2id PHC string (`$argon2id$v=19$m=...`), as `hush user add` prints it.
    pub password_hash: String,
    /// Domains of the sites this user may read (configured `sites.domain`s), or
    /// `["*"]` for every site.
    pub sites: Vec<String>,
}

/// A shared link of one site (`[[sites.shares]]`): `/share/{site}?auth={slug}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareConfig {
    /// Logged with each request made through the link; unique per site.
    pub name: String,
    /// Hex SHA-256 of the link's slug (`hush share new` prints both).
    pub slug_sha256: String,
    /// Argon2id PHC string: the link also asks for this password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// A JSON array of Stats API v2 filters AND-ed into every query made through the
    /// link; the viewer cannot remove them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<String>,
}

/// Largest Argon2 memory cost accepted in a configured hash, KiB (1 GiB): more would
/// let one login take the machine's memory.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;

/// Why `hash` is not an acceptable Argon2id PHC string.
pub fn check_argon2id(hash: &str) -> Result<(), String> {
    let parsed = argon2::PasswordHash::new(hash)
        .map_err(|e| format!("is not a PHC password hash string ({e})"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "is a {} hash; only argon2id is accepted (`hush user add` makes one)",
            parsed.algorithm
        ));
    }
    let params = argon2::Params::try_from(&parsed)
        .map_err(|e| format!("has invalid Argon2 parameters ({e})"))?;
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB {
        return Err("asks for more than 1 GiB of memory per login".into());
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("has no salt or no hash".into());
    }
    Ok(())
}

/// A conversion goal: a custom event by name, or page views of matching paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalConfig {
    /// A custom event name (exact, case-sensitive). Exactly one of `event` and `page`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// A page path; `*` matches any run of characters, `/` included (so `/blog*`
    /// matches `/blog` and `/blog/a/b`; `**` means the same), everything else
    /// matches itself, and the whole path must match, as in Plausible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// The name shown and used in `event:goal`; see [`GoalConfig::name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// Longest goal event name, page pattern or display name, bytes.
pub const MAX_GOAL_CHARS: usize = 2_000;

impl GoalConfig {
    /// The goal's name: `display_name` when set, else the event name, else
    /// `Visit <page>` (Plausible's default for page goals).
    pub fn name(&self) -> String {
        match (&self.display_name, &self.event, &self.page) {
            (Some(name), _, _) => name.clone(),
            (None, Some(event), _) => event.clone(),
            (None, None, Some(page)) => format!("Visit {page}"),
            (None, None, None) => String::new(),
        }
    }

    /// The RE2 (ClickHouse `match`) pattern of a page goal: anchored, every `*` run
    /// as `.*`, every other character literal (RE2's metacharacters escaped). `None`
    /// for an event goal. Pass it as a bound parameter like any other value.
    pub fn page_regex(&self) -> Option<String> {
        self.page.as_deref().map(page_pattern_regex)
    }

    pub fn matches_page(&self, path: &str) -> bool {
        let Some(page) = self.page.as_deref() else {
            return false;
        };
        wildcard_match(page.as_bytes(), path.as_bytes())
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match (&self.event, &self.page) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(
                    key,
                    self.name(),
                    "needs exactly one of `event` (a custom event name) and `page` (a path)",
                ));
            }
            (Some(event), None) => {
                if event.trim().is_empty() || event.len() > MAX_GOAL_CHARS {
                    return Err(invalid(
                        format!("{key}.event"),
                        event,
                        "must be a non-empty event name of at most 2000 bytes",
                    ));
                }
                if event == "pageview" || event == "engagement" {
                    return Err(invalid(
                        format!("{key}.event"),
                        event,
                        "is not a custom event; a goal on page views is set with `page`",
                    ));
                }
            }
            (None, Some(page)) => {
                if !page.starts_with('/') || page.len() > MAX_GOAL_CHARS {
                    return Err(invalid(
                        format!("{key}.page"),
                        page,
                        "must be a path starting with `/`, at most 2000 bytes",
                    ));
                }
            }
        }
        if let Some(name) = &self.display_name
            && (name.trim().is_empty() || name.len() > MAX_GOAL_CHARS)
        {
            return Err(invalid(
                format!("{key}.display_name"),
                name,
                "must be non-empty, at most 2000 bytes",
            ));
        }
        Ok(())
    }
}

/// `pattern` (where a run of `*` matches any bytes) matches all of `text`. Greedy
/// with backtracking to the last star only: linear in practice, never exponential.
/// The anchored RE2 pattern of a page goal's path: `*` (any run of them) matches any
/// characters, `/` included, everything else literally.
pub fn page_pattern_regex(page: &str) -> String {
    let mut regex = String::with_capacity(page.len() + 8);
    regex.push('^');
    let mut stars = false;
    for c in page.chars() {
        if c == '*' {
            if !stars {
                regex.push_str(".*");
            }
            stars = true;
            continue;
        }
        stars = false;
        if r"\.+*?()|[]{}^$".contains(c) {
            regex.push('\\');
        }
        regex.push(c);
    }
    regex.push('$');
    regex
}

fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

fn default_timezone() -> String {
    "UTC".into()
}

impl SiteConfig {
    pub fn retention_days(&self, retention: &RetentionConfig) -> u32 {
        self.retention_days.unwrap_or(retention.default_days)
    }
}

impl ServerConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

impl Config {
    /// Loads defaults, then the TOML file (if any), then `HUSH_*` environment variables
    /// (`HUSH_CLICKHOUSE__URL` sets `clickhouse.url`), and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, Env::prefixed("HUSH_").split("__"))
    }

    fn load_with_env(path: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(invalid(
                    "--config",
                    path.display().to_string(),
                    "file does not exist",
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment.merge(env).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML string (no environment), for tests and `check-config`.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(toml))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.privacy;
        if !(8..=MAX_IPV4_PREFIX).contains(&p.ipv4_prefix) {
            return Err(invalid(
                "privacy.ipv4_prefix",
                p.ipv4_prefix,
                "must be between 8 and 24: a longer prefix keeps part of the host \
                 byte, so the address is no longer anonymised",
            ));
        }
        if !(16..=MAX_IPV6_PREFIX).contains(&p.ipv6_prefix) {
            return Err(invalid(
                "privacy.ipv6_prefix",
                p.ipv6_prefix,
                "must be between 16 and 48: a longer prefix can single out one \
                 customer's network, so the address is no longer anonymised",
            ));
        }
        if let Some(listen) = self.dashboard.listen
            && listen.port() != 0
            && (listen == self.server.listen || Some(listen) == self.admin.listen)
        {
            return Err(invalid(
                "dashboard.listen",
                listen,
                "must differ from server.listen and admin.listen (unset it to serve the \
                 dashboard on the ingestion listener)",
            ));
        }
        if self.session.max_bytes < MIN_SESSION_BYTES {
            return Err(invalid(
                "session.max_bytes",
                self.session.max_bytes,
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if self.writer.batch_rows == 0 {
            return Err(invalid(
                "writer.batch_rows",
                self.writer.batch_rows,
                "must be at least 1",
            ));
        }
        if self.writer.queue_capacity < self.writer.batch_rows {
            return Err(invalid(
                "writer.queue_capacity",
                self.writer.queue_capacity,
                "must be at least writer.batch_rows",
            ));
        }
        if self.writer.queue_max_bytes < MIN_QUEUE_BYTES {
            return Err(invalid(
                "writer.queue_max_bytes",
                self.writer.queue_max_bytes,
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if self.writer.flush_interval_ms == 0 {
            return Err(invalid("writer.flush_interval_ms", 0, "must be positive"));
        }
        if self.writer.dropped_flush_interval_ms == 0 {
            return Err(invalid(
                "writer.dropped_flush_interval_ms",
                0,
                "must be positive",
            ));
        }
        if self.limits.max_batch_events == 0 || self.limits.max_batch_events > 10_000 {
            return Err(invalid(
                "limits.max_batch_events",
                self.limits.max_batch_events,
                "must be 1..=10000",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", 0, "must be positive"));
        }
        if self.server.max_in_flight_requests == 0 {
            return Err(invalid(
                "server.max_in_flight_requests",
                0,
                "must be positive",
            ));
        }
        if self.server.max_in_flight_per_connection == 0 {
            return Err(invalid(
                "server.max_in_flight_per_connection",
                0,
                "must be positive",
            ));
        }
        let url = &self.clickhouse.url;
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url::Url::parse(url).is_err()
        {
            return Err(invalid(
                "clickhouse.url",
                redact_url(url),
                "must be an http:// or https:// URL",
            ));
        }
        let db = &self.clickhouse.database;
        if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(
                "clickhouse.database",
                db,
                "must be a plain identifier [A-Za-z0-9_]",
            ));
        }
        let r = &self.retention;
        if r.default_days == 0 || r.default_days > r.max_days {
            return Err(invalid(
                "retention.default_days",
                r.default_days,
                "must be 1..=retention.max_days",
            ));
        }
        if r.mutation_timeout_ms == 0 {
            return Err(invalid(
                "retention.mutation_timeout_ms",
                0,
                "must be positive",
            ));
        }
        if parse_hh_mm(&r.at_utc).is_none() {
            return Err(invalid(
                "retention.at_utc",
                &r.at_utc,
                "must be HH:MM (UTC)",
            ));
        }
        if self.spool.dir.is_some() && self.spool.max_bytes < self.spool.segment_bytes {
            return Err(invalid(
                "spool.max_bytes",
                self.spool.max_bytes,
                "must be at least spool.segment_bytes",
            ));
        }
        for (i, token) in self.admin.tokens.iter().enumerate() {
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    format!("admin.tokens[{i}].sha256"),
                    "<hidden>",
                    "must be 64 hex digits",
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, site) in self.sites.iter().enumerate() {
            let key = format!("sites[{i}]");
            if !is_host_name(&site.domain) {
                return Err(invalid(
                    format!("{key}.domain"),
                    &site.domain,
                    "must be a lower-case host name",
                ));
            }
            for alias in &site.aliases {
                if !is_host_name(alias) {
                    return Err(invalid(
                        format!("{key}.aliases"),
                        alias,
                        "must be a lower-case host name",
                    ));
                }
            }
            for name in std::iter::once(&site.domain).chain(&site.aliases) {
                if !seen.insert(name.clone()) {
                    return Err(invalid(
                        format!("{key}.domain"),
                        name,
                        "is configured twice",
                    ));
                }
            }
            let days = site.retention_days(r);
            if days == 0 || days > r.max_days {
                return Err(invalid(
                    format!("{key}.retention_days"),
                    days,
                    "must be 1..=retention.max_days",
                ));
            }
            if jiff::tz::TimeZone::get(&site.timezone).is_err() {
                return Err(invalid(
                    format!("{key}.timezone"),
                    &site.timezone,
                    "unknown IANA time zone",
                ));
            }
            let mut names = std::collections::HashSet::new();
            let mut definitions = std::collections::HashSet::new();
            for (j, goal) in site.goals.iter().enumerate() {
                let goal_key = format!("{key}.goals[{j}]");
                goal.validate(&goal_key)?;
                if !names.insert(goal.name()) {
                    return Err(invalid(
                        goal_key,
                        goal.name(),
                        "another goal of this site has the same name",
                    ));
                }
                if !definitions.insert((goal.event.clone(), goal.page.clone())) {
                    return Err(invalid(
                        goal_key,
                        goal.name(),
                        "another goal of this site has the same event or page",
                    ));
                }
            }
        }
        self.validate_stats()?;
        self.validate_dashboard()
    }

    /// `sites` of a user: configured domains or `["*"]` alone, none twice.
    fn check_sites(&self, key: &str, sites: &[String]) -> Result<(), ConfigError> {
        if sites.is_empty() {
            return Err(invalid(
                key,
                sites,
                "must name at least one site, or be [\"*\"] for all",
            ));
        }
        for (i, site) in sites.iter().enumerate() {
            if site == ALL_SITES {
                if sites.len() > 1 {
                    return Err(invalid(
                        key,
                        sites,
                        "\"*\" (every site) must be the only entry",
                    ));
                }
            } else if !self.sites.iter().any(|c| &c.domain == site) {
                let reason = match self.sites.iter().find(|c| c.aliases.contains(site)) {
                    Some(c) => format!("is an alias: name the site's domain {:?}", c.domain),
                    None => "is not a configured site domain".to_owned(),
                };
                return Err(invalid(key, site, reason));
            }
            if sites[..i].contains(site) {
                return Err(invalid(key, site, "is listed twice"));
            }
        }
        Ok(())
    }

    fn validate_dashboard(&self) -> Result<(), ConfigError> {
        let d = &self.dashboard;
        let ttl = d.session_ttl_hours;
        if !(ttl.is_finite() && ttl * 3600.0 >= 1.0 && ttl <= MAX_SESSION_TTL_HOURS) {
            return Err(invalid(
                "dashboard.session_ttl_hours",
                ttl,
                "must be at least one second (1/3600) and at most 8784 (a year)",
            ));
        }
        if d.login_attempts_per_minute == 0 {
            return Err(invalid(
                "dashboard.login_attempts_per_minute",
                0,
                "must be at least 1",
            ));
        }
        if d.session_rate_limit_per_hour == 0 {
            return Err(invalid(
                "dashboard.session_rate_limit_per_hour",
                0,
                "must be at least 1",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let key = format!("users[{i}]");
            let name = &user.name;
            if name.trim() != name
                || name.is_empty()
                || name.chars().count() > 100
                || name.chars().any(char::is_control)
            {
                return Err(invalid(
                    format!("{key}.name"),
                    name,
                    "must be 1 to 100 characters, no control characters, no surrounding spaces",
                ));
            }
            if !names.insert(name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    name,
                    "another user has the same name",
                ));
            }
            check_argon2id(&user.password_hash)
                .map_err(|reason| invalid(format!("{key}.password_hash"), "<hidden>", reason))?;
            self.check_sites(&format!("{key}.sites"), &user.sites)?;
        }
        let mut slugs = std::collections::HashSet::new();
        for (i, site) in self.sites.iter().enumerate() {
            let mut names = std::collections::HashSet::new();
            for (j, share) in site.shares.iter().enumerate() {
                let key = format!("sites[{i}].shares[{j}]");
                if share.name.trim().is_empty() || share.name.chars().any(char::is_control) {
                    return Err(invalid(
                        format!("{key}.name"),
                        &share.name,
                        "must be non-empty, no control characters",
                    ));
                }
                if !names.insert(share.name.as_str()) {
                    return Err(invalid(
                        format!("{key}.name"),
                        &share.name,
                        "another shared link of this site has the same name",
                    ));
                }
                let slug = &share.slug_sha256;
                if slug.len() != 64 || !slug.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(
                        format!("{key}.slug_sha256"),
                        "<hidden>",
                        "must be 64 hex digits (`hush share new` prints it)",
                    ));
                }
                if !slugs.insert(slug.to_ascii_lowercase()) {
                    return Err(invalid(
                        format!("{key}.slug_sha256"),
                        "<hidden>",
                        "another shared link has the same slug",
                    ));
                }
                if let Some(hash) = &share.password_hash {
                    check_argon2id(hash).map_err(|reason| {
                        invalid(format!("{key}.password_hash"), "<hidden>", reason)
                    })?;
                }
                if let Some(filters) = &share.filters {
                    match serde_json::from_str::<serde_json::Value>(filters) {
                        Ok(serde_json::Value::Array(list)) if !list.is_empty() => {}
                        _ => {
                            return Err(invalid(
                                format!("{key}.filters"),
                                filters,
                                "must be a non-empty JSON array of Stats API v2 filters",
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_stats(&self) -> Result<(), ConfigError> {
        let s = &self.stats;
        if s.rate_limit_per_hour == 0 {
            return Err(invalid(
                "stats.rate_limit_per_hour",
                0,
                "must be at least 1",
            ));
        }
        if s.max_execution_time_ms == 0 {
            return Err(invalid(
                "stats.max_execution_time_ms",
                0,
                "must be positive",
            ));
        }
        if s.max_memory_usage_bytes < MIN_STATS_MEMORY_BYTES {
            return Err(invalid(
                "stats.max_memory_usage_bytes",
                s.max_memory_usage_bytes,
                "must be at least 16777216 (16 MiB)",
            ));
        }
        if s.max_result_rows < MIN_STATS_RESULT_ROWS {
            return Err(invalid(
                "stats.max_result_rows",
                s.max_result_rows,
                "must be at least 10000: one Stats API page holds up to 10000 rows",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, k) in s.keys.iter().enumerate() {
            let key = format!("stats.keys[{i}]");
            if k.name.trim().is_empty() {
                return Err(invalid(format!("{key}.name"), &k.name, "must not be empty"));
            }
            if !names.insert(k.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    &k.name,
                    "another key has the same name (names identify keys in the logs)",
                ));
            }
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    format!("{key}.sha256"),
                    "<hidden>",
                    "must be 64 hex digits",
                ));
            }
            if k.sites.is_empty() {
                return Err(invalid(
                    format!("{key}.sites"),
                    &k.sites,
                    "must name at least one site, or be [\"*\"] for all",
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for site in &k.sites {
                if site == ALL_SITES {
                    if k.sites.len() > 1 {
                        return Err(invalid(
                            format!("{key}.sites"),
                            &k.sites,
                            "\"*\" (every site) must be the only entry",
                        ));
                    }
                } else if !self.sites.iter().any(|c| &c.domain == site) {
                    let alias = self.sites.iter().find(|c| c.aliases.contains(site));
                    let reason = match alias {
                        Some(c) => format!("is an alias: name the site's domain {:?}", c.domain),
                        None => "is not a configured site domain".to_owned(),
                    };
                    return Err(invalid(format!("{key}.sites"), site, reason));
                }
                if !seen.insert(site.as_str()) {
                    return Err(invalid(format!("{key}.sites"), site, "is listed twice"));
                }
            }
        }
        Ok(())
    }
}

/// What replaces a secret wherever a configuration value is shown.
pub const REDACTED: &str = "<redacted>";

/// `url` fit to print: the whole `user:password@` part and the value of every query
/// parameter whose name looks like a secret (`password`, `key`, `token`, `secret`, any
/// case, also within a longer name) replaced by [`REDACTED`]. Works on text that is not
/// a valid URL too (a config error shows exactly such a value), and keeps everything
/// else as written.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(REDACTED);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = tail.split_at(tail.find('#').unwrap_or(tail.len()));
    let Some((path, query)) = before_fragment.split_once('?') else {
        out.push_str(tail);
        return out;
    };
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let lower = name.to_ascii_lowercase();
        if pair.contains('=')
            && ["pass", "key", "token", "secret"]
                .iter()
                .any(|secret| lower.contains(secret))
        {
            out.push_str(name);
            out.push('=');
            out.push_str(REDACTED);
        } else {
            out.push_str(pair);
        }
    }
    out.push_str(fragment);
    out
}

/// Parses "HH:MM" into (hour, minute).
pub fn parse_hh_mm(s: &str) -> Option<(u8, u8)> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u8, u8) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Config::from_toml_str("[privacy]\nipv4_prefix = 40\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("privacy.ipv4_prefix") && err.contains("40"),
            "{err}"
        );
        let err =
            Config::from_toml_str("[[sites]]\ndomain = \"a.com\"\ntimezone = \"Mars/Base\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("sites[0].timezone"), "{err}");
        let err = Config::from_toml_str("[[sites]]\ndomain = \"A.com\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sites[0].domain"), "{err}");
        let err = Config::from_toml_str("[writer]\nbatch_rowz = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_rowz"), "{err}");
        let err = Config::from_toml_str("[session]\nmax_bytes = 1000\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("session.max_bytes") && err.contains("1000"),
            "{err}"
        );
        let err = Config::from_toml_str("[server]\nmax_in_flight_per_connection = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.max_in_flight_per_connection"), "{err}");
        let err = Config::from_toml_str("[writer]\nqueue_max_bytes = 1000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("writer.queue_max_bytes"), "{err}");
    }

    #[test]
    fn the_dashboard_listens_where_told_never_on_another_listener() {
        assert_eq!(Config::default().dashboard.listen, None);
        let c = Config::from_toml_str("[dashboard]\nlisten = \"127.0.0.1:8001\"\n").unwrap();
        assert_eq!(c.dashboard.listen, Some("127.0.0.1:8001".parse().unwrap()));
        for clash in ["127.0.0.1:8000", "127.0.0.1:9090"] {
            let err = Config::from_toml_str(&format!("[dashboard]\nlisten = \"{clash}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("dashboard.listen"), "{err}");
        }
        // Port 0 (a free port, as tests use) never clashes.
        Config::from_toml_str(
            "[server]\nlisten = \"127.0.0.1:0\"\n[dashboard]\nlisten = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let err = Config::from_toml_str("[dashboard]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn truncation_prefixes_are_capped_at_what_anonymises() {
        for (key, value, ok) in [
            ("ipv4_prefix", 8, true),
            ("ipv4_prefix", 24, true),
            ("ipv4_prefix", 25, false),
            ("ipv4_prefix", 32, false),
            ("ipv4_prefix", 7, false),
            ("ipv6_prefix", 16, true),
            ("ipv6_prefix", 48, true),
            ("ipv6_prefix", 49, false),
            ("ipv6_prefix", 64, false),
            ("ipv6_prefix", 128, false),
            ("ipv6_prefix", 15, false),
        ] {
            let result = Config::from_toml_str(&format!("[privacy]\n{key} = {value}\n"));
            match (result, ok) {
                (Ok(_), true) => {}
                (Err(e), false) => {
                    let err = e.to_string();
                    assert!(
                        err.contains(&format!("privacy.{key}"))
                            && err.contains(&value.to_string())
                            && err.contains("no longer anonymised"),
                        "{err}"
                    );
                }
                (Ok(_), false) => panic!("{key} = {value} was accepted"),
                (Err(e), true) => panic!("{key} = {value} was refused: {e}"),
            }
        }
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        for (url, shown) in [
            ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
            (
                "https://alice:s3cret@ch.example.com:8443/",
                "https://<redacted>@ch.example.com:8443/",
            ),
            // An `@` in the password: everything up to the last one is userinfo.
            ("http://bob:p@ss@host:8123", "http://<redacted>@host:8123"),
            ("https://tokenonly@host", "https://<redacted>@host"),
            (
                "https://host/?user=u&password=qp&database=hush&API_KEY=k&x_token=t#frag",
                "https://host/?user=u&password=<redacted>&database=hush&API_KEY=<redacted>\
                 &x_token=<redacted>#frag",
            ),
            // An `@` after the authority is not userinfo.
            ("http://host/a@b?password", "http://host/a@b?password"),
            ("not a url at all", "not a url at all"),
            ("ftp://carol:hunter2@host", "ftp://<redacted>@host"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn a_bad_url_is_reported_without_its_credentials() {
        let err = Config::from_toml_str(
            "[clickhouse]\nurl = \"ftp://carol:hunter2@ch.example.com/?password=qp-secret\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("clickhouse.url"), "{err}");
        assert!(err.contains("ch.example.com"), "{err}");
        assert!(
            !err.contains("hunter2") && !err.contains("carol") && !err.contains("qp-secret"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_site_names_are_rejected() {
        let toml =
            "[[sites]]\ndomain = \"a.com\"\n[[sites]]\ndomain = \"b.com\"\naliases = [\"a.com\"]\n";
        let err = Config::from_toml_str(toml).unwrap_err().to_string();
        assert!(err.contains("configured twice"), "{err}");
    }

    fn error_of(toml: &str) -> String {
        match Config::from_toml_str(toml) {
            Ok(_) => panic!("accepted:\n{toml}"),
            Err(e) => e.to_string(),
        }
    }

    const SITES: &str = "[[sites]]\ndomain = \"a.com\"\naliases = [\"www.a.com\"]\n\
                         [[sites]]\ndomain = \"b.com\"\n";

    fn key_toml(name: &str, sha256: &str, sites: &str) -> String {
        format!("{SITES}[[stats.keys]]\nname = {name:?}\nsha256 = {sha256:?}\nsites = {sites}\n")
    }

    #[test]
    fn stats_keys_are_validated() {
        let hash = "0123456789abcdef".repeat(4);
        let config = Config::from_toml_str(&key_toml("ci", &hash, r#"["a.com", "b.com"]"#))
            .expect("a valid key");
        assert_eq!(config.stats.keys[0].sites, ["a.com", "b.com"]);
        assert_eq!(config.stats.rate_limit_per_hour, 600);
        Config::from_toml_str(&key_toml("all", &hash.to_uppercase(), r#"["*"]"#))
            .expect("every site, upper-case hex");

        for (toml, needles) in [
            (
                key_toml("ci", &hash[1..], r#"["a.com"]"#),
                &["stats.keys[0].sha256", "64 hex"][..],
            ),
            (
                key_toml("ci", &format!("{}g", &hash[1..]), r#"["a.com"]"#),
                &["64 hex"][..],
            ),
            (
                key_toml(" ", &hash, r#"["a.com"]"#),
                &["stats.keys[0].name", "empty"][..],
            ),
            (
                key_toml("ci", &hash, "[]"),
                &["stats.keys[0].sites", "at least one"][..],
            ),
            (
                key_toml("ci", &hash, r#"["c.com"]"#),
                &["\"c.com\"", "not a configured"][..],
            ),
            (
                key_toml("ci", &hash, r#"["www.a.com"]"#),
                &["alias", "\"a.com\""][..],
            ),
            (
                key_toml("ci", &hash, r#"["*", "a.com"]"#),
                &["only entry"][..],
            ),
            (
                key_toml("ci", &hash, r#"["a.com", "a.com"]"#),
                &["twice"][..],
            ),
            (
                format!(
                    "{}[[stats.keys]]\nname = \"ci\"\nsha256 = \"{hash}\"\nsites = [\"*\"]\n",
                    key_toml("ci", &hash, r#"["a.com"]"#)
                ),
                &["stats.keys[1].name", "same name"][..],
            ),
            (
                format!("{SITES}[[stats.keys]]\nname = \"ci\"\nsha256 = \"{hash}\"\n"),
                &["sites"][..],
            ),
            (
                "[stats]\nrate_limit_per_hour = 0\n".to_owned(),
                &["stats.rate_limit_per_hour"][..],
            ),
            (
                "[stats]\nmax_execution_time_ms = 0\n".to_owned(),
                &["stats.max_execution_time_ms"][..],
            ),
            (
                "[stats]\nmax_memory_usage_bytes = 1000\n".to_owned(),
                &["stats.max_memory_usage_bytes"][..],
            ),
            (
                "[stats]\nmax_result_rows = 9999\n".to_owned(),
                &["stats.max_result_rows", "9999"][..],
            ),
            ("[stats]\nrate_limit = 5\n".to_owned(), &["rate_limit"][..]),
        ] {
            let err = error_of(&toml);
            for needle in needles {
                assert!(err.contains(needle), "{toml}\n=> {err}\n(lacks {needle:?})");
            }
            assert!(!err.contains(&hash[8..]), "the hash is shown: {err}");
        }
    }

    /// An Argon2id hash of "password" with the smallest parameters (validation only
    /// reads them).
    const HASH: &str = "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$Lq5MzcUGsmqYaVqtAjM+4nUCnNa2EZ7QOYWGAdEDiPk";

    #[test]
    fn users_and_shares_are_validated() {
        let slug = "ab".repeat(32);
        let user = |name: &str, hash: &str, sites: &str| {
            format!(
                "{SITES}[[users]]\nname = {name:?}\npassword_hash = {hash:?}\nsites = {sites}\n"
            )
        };
        let share = |body: &str| format!("{SITES}[[sites.shares]]\n{body}");
        let config = Config::from_toml_str(&user("alice", HASH, r#"["a.com"]"#)).unwrap();
        assert_eq!(config.users[0].sites, ["a.com"]);
        assert_eq!(config.dashboard.session_ttl_hours, 12.0);
        assert_eq!(config.dashboard.secure_cookie, SecureCookie::Auto);
        assert_eq!(config.dashboard.login_attempts_per_minute, 5);
        let config = Config::from_toml_str(&share(&format!(
            "name = \"press\"\nslug_sha256 = \"{slug}\"\npassword_hash = \"{HASH}\"\n\
             filters = '[[\"is\", \"event:page\", [\"/\"]]]'\n"
        )))
        .unwrap();
        assert_eq!(config.sites[1].shares[0].name, "press");
        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        let argon2i = HASH.replace("argon2id", "argon2i");
        let greedy = HASH.replace("m=64", "m=2000000");
        for (toml, needles) in [
            (user("", HASH, r#"["a.com"]"#), &["users[0].name"][..]),
            (
                user(" bob", HASH, r#"["a.com"]"#),
                &["surrounding spaces"][..],
            ),
            (user("a\tb", HASH, r#"["a.com"]"#), &["control"][..]),
            (
                user("alice", "plain text", r#"["a.com"]"#),
                &["users[0].password_hash", "PHC"][..],
            ),
            (user("alice", bcrypt, r#"["a.com"]"#), &["PHC"][..]),
            (
                user("alice", &argon2i, r#"["a.com"]"#),
                &["argon2i hash"][..],
            ),
            (user("alice", &greedy, r#"["a.com"]"#), &["1 GiB"][..]),
            (
                user("alice", HASH, "[]"),
                &["users[0].sites", "at least one"][..],
            ),
            (
                user("alice", HASH, r#"["c.com"]"#),
                &["users[0].sites", "not a configured"][..],
            ),
            (user("alice", HASH, r#"["www.a.com"]"#), &["alias"][..]),
            (
                user("alice", HASH, r#"["*", "a.com"]"#),
                &["only entry"][..],
            ),
            (user("alice", HASH, r#"["a.com", "a.com"]"#), &["twice"][..]),
            (
                format!(
                    "{}[[users]]\nname = \"alice\"\npassword_hash = \"{HASH}\"\nsites = [\"*\"]\n",
                    user("alice", HASH, r#"["a.com"]"#)
                ),
                &["users[1].name", "same name"][..],
            ),
            (
                share("name = \"x\"\nslug_sha256 = \"abc\"\n"),
                &["sites[1].shares[0].slug_sha256", "64 hex"][..],
            ),
            (
                share(&format!("name = \" \"\nslug_sha256 = \"{slug}\"\n")),
                &["sites[1].shares[0].name"][..],
            ),
            (
                share(&format!(
                    "name = \"x\"\nslug_sha256 = \"{slug}\"\npassword_hash = \"pw\"\n"
                )),
                &["shares[0].password_hash"][..],
            ),
            (
                share(&format!(
                    "name = \"x\"\nslug_sha256 = \"{slug}\"\nfilters = '{{\"a\": 1}}'\n"
                )),
                &["shares[0].filters", "JSON array"][..],
            ),
            (
                share(&format!(
                    "name = \"x\"\nslug_sha256 = \"{slug}\"\nfilters = '[]'\n"
                )),
                &["non-empty"][..],
            ),
            (
                share(&format!(
                    "name = \"x\"\nslug_sha256 = \"{slug}\"\n[[sites.shares]]\nname = \"y\"\nslug_sha256 = \"{}\"\n",
                    slug.to_uppercase()
                )),
                &["shares[1].slug_sha256", "same slug"][..],
            ),
            (
                share(&format!(
                    "name = \"x\"\nslug_sha256 = \"{slug}\"\n[[sites.shares]]\nname = \"x\"\nslug_sha256 = \"{}\"\n",
                    "cd".repeat(32)
                )),
                &["shares[1].name", "same name"][..],
            ),
            (
                "[dashboard]\nsession_ttl_hours = 0.0\n".to_owned(),
                &["dashboard.session_ttl_hours"][..],
            ),
            (
                "[dashboard]\nsession_ttl_hours = 9000.0\n".to_owned(),
                &["a year"][..],
            ),
            (
                "[dashboard]\nsession_ttl_hours = nan\n".to_owned(),
                &["session_ttl_hours"][..],
            ),
            (
                "[dashboard]\nlogin_attempts_per_minute = 0\n".to_owned(),
                &["dashboard.login_attempts_per_minute"][..],
            ),
            (
                "[dashboard]\nsession_rate_limit_per_hour = 0\n".to_owned(),
                &["dashboard.session_rate_limit_per_hour"][..],
            ),
            (
                "[dashboard]\nsecure_cookie = \"sometimes\"\n".to_owned(),
                &["sometimes"][..],
            ),
        ] {
            let err = error_of(&toml);
            for needle in needles {
                assert!(err.contains(needle), "{toml}\n=> {err}\n(lacks {needle:?})");
            }
            assert!(
                !err.contains("Lq5MzcUGsmqYaVqt"),
                "the hash is shown: {err}"
            );
            assert!(!err.contains(&slug[..20]), "the slug hash is shown: {err}");
        }
    }

    fn site_with_goals(goals: &str) -> String {
        format!("[[sites]]\ndomain = \"a.com\"\npublic = true\n{goals}")
    }

    #[test]
    fn goals_and_public_sites_parse() {
        let config = Config::from_toml_str(&site_with_goals(
            "[[sites.goals]]\nevent = \"Signup\"\n\
             [[sites.goals]]\npage = \"/blog*\"\n\
             [[sites.goals]]\npage = \"/checkout/done\"\ndisplay_name = \"Purchase\"\n",
        ))
        .unwrap();
        let site = &config.sites[0];
        assert!(site.public);
        let names: Vec<String> = site.goals.iter().map(GoalConfig::name).collect();
        assert_eq!(names, ["Signup", "Visit /blog*", "Purchase"]);
        assert_eq!(site.goals[0].page_regex(), None);
        assert!(!site.goals[0].matches_page("/Signup"));
        let plain = Config::from_toml_str("[[sites]]\ndomain = \"a.com\"\n").unwrap();
        assert!(!plain.sites[0].public && plain.sites[0].goals.is_empty());
    }

    #[test]
    fn bad_goals_name_the_goal_and_the_reason() {
        for (goals, needles) in [
            (
                "[[sites.goals]]\nevent = \"a\"\npage = \"/a\"\n",
                &["sites[0].goals[0]", "exactly one"][..],
            ),
            (
                "[[sites.goals]]\ndisplay_name = \"x\"\n",
                &["exactly one"][..],
            ),
            (
                "[[sites.goals]]\nevent = \" \"\n",
                &["sites[0].goals[0].event"][..],
            ),
            ("[[sites.goals]]\nevent = \"pageview\"\n", &["`page`"][..]),
            (
                "[[sites.goals]]\nevent = \"engagement\"\n",
                &["not a custom event"][..],
            ),
            (
                "[[sites.goals]]\npage = \"blog\"\n",
                &["sites[0].goals[0].page", "`/`"][..],
            ),
            (
                "[[sites.goals]]\nevent = \"a\"\ndisplay_name = \"\"\n",
                &["display_name"][..],
            ),
            (
                "[[sites.goals]]\nevent = \"a\"\n[[sites.goals]]\nevent = \"a\"\ndisplay_name = \"b\"\n",
                &["sites[0].goals[1]", "same event or page"][..],
            ),
            (
                "[[sites.goals]]\nevent = \"Visit /x\"\n[[sites.goals]]\npage = \"/x\"\n",
                &["sites[0].goals[1]", "same name"][..],
            ),
            (
                "[[sites.goals]]\nevent = \"a\"\nurl = \"/x\"\n",
                &["url"][..],
            ),
        ] {
            let err = error_of(&site_with_goals(goals));
            for needle in needles {
                assert!(
                    err.contains(needle),
                    "{goals}\n=> {err}\n(lacks {needle:?})"
                );
            }
        }
    }

    #[test]
    fn page_goal_wildcards_match_as_their_regex_does() {
        let goal = |page: &str| GoalConfig {
            event: None,
            page: Some(page.to_owned()),
            display_name: None,
        };
        // What Plausible's docs promise, stated here.
        assert!(goal("/blog*").matches_page("/blog/2024/hello"));
        assert!(goal("/checkout/order-received/*").matches_page("/checkout/order-received/81"));
        assert!(!goal("/pricing").matches_page("/pricing/"));
        // And the matcher agrees with the RE2 pattern the query engine gets, on
        // patterns with metacharacters, repeated and adjacent stars.
        let patterns = [
            "/",
            "/*",
            "/**",
            "/blog*",
            "/blog/*/edit",
            "*/edit",
            "/a*b*c",
            "/a.b",
            "/(x)+?",
            "/[v1]/{id}",
            "/a|b",
            "/$^",
            "/a**b",
            "/docs/*.pdf",
            "/é*",
        ];
        let paths = [
            "",
            "/",
            "/blog",
            "/blog/",
            "/blog/a/b",
            "/blog/a/edit",
            "/blog/edit",
            "/x/edit",
            "/abc",
            "/aXbYc",
            "/acb",
            "/a.b",
            "/aXb",
            "/(x)+?",
            "/(x)",
            "/[v1]/{id}",
            "/a|b",
            "/a",
            "/$^",
            "/ab",
            "/a/b",
            "/docs/x.pdf",
            "/docs/x/y.pdf",
            "/docs/xpdf",
            "/é/ü",
        ];
        let mut matched = 0;
        for pattern in patterns {
            let g = goal(pattern);
            let re = regex::Regex::new(&g.page_regex().unwrap()).unwrap();
            for path in paths {
                assert_eq!(
                    g.matches_page(path),
                    re.is_match(path),
                    "{pattern} on {path:?}"
                );
                matched += usize::from(re.is_match(path));
            }
        }
        assert!(matched > 20, "too few matches ({matched}) to test anything");
    }

    #[test]
    // figment::Jail's closure signature fixes the (large) error type.
    #[allow(clippy::result_large_err)]
    fn environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("hush.toml", "[clickhouse]\nurl = \"http://file:8123\"\n")?;
            jail.set_env("HUSH_CLICKHOUSE__URL", "http://env:8123");
            jail.set_env("HUSH_WRITER__BATCH_ROWS", "77");
            let config = Config::load(Some(Path::new("hush.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.clickhouse.url, "http://env:8123");
            assert_eq!(config.writer.batch_rows, 77);
            Ok(())
        });
    }
}
