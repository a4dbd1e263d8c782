//! Country, region and city of a (truncated) address from a MaxMind City database.
//!
//! The database is memory-mapped and swapped atomically on reload (SIGHUP, or a change
//! of the file's size, mtime or inode when `geo.watch` is on), so lookups never wait
//! for a reload and a broken new file leaves the old database in service.
//!
//! Replace the file by renaming a new one over it, as `geoipupdate` does: the mapping
//! of the old file stays valid until the last lookup on it ends. Rewriting the file in
//! place while it is mapped can crash the process (the OS cannot keep truncated pages).
//!
//! Only the fields stored per hit are decoded, into structs that borrow strings from
//! the mapping, so a lookup allocates just the two output strings.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use maxminddb::{MaxMindDbError, Mmap, Reader, WithinOptions};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};

use crate::config::GeoConfig;

/// Where a hit came from; every part may be unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 code, `[0, 0]` when unknown.
    pub country: [u8; 2],
    /// ISO 3166-2 subdivision code without the country prefix (`CA` for US-CA), or "".
    pub region: String,
    /// GeoNames id of the city, 0 when unknown.
    pub city_geoname_id: u32,
    /// English city name, or "".
    pub city: String,
}

impl GeoInfo {
    pub const UNKNOWN_COUNTRY: [u8; 2] = [0, 0];

    pub fn unknown() -> Self {
        Self {
            country: Self::UNKNOWN_COUNTRY,
            region: String::new(),
            city_geoname_id: 0,
            city: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read geo database {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open geo database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
    #[error(
        "geo database {} is of type {database_type:?}; a City or Country database is needed",
        path.display()
    )]
    WrongType {
        path: PathBuf,
        database_type: String,
    },
    #[error("geo database {} has records hush cannot decode: {source}", path.display())]
    Undecodable {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
    #[error("geo database reload task failed: {0}")]
    Task(String),
}

/// File identity used to notice a replaced or rewritten database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.modified().ok(),
        }
    }
}

struct Loaded {
    reader: Reader<Mmap>,
    stamp: Stamp,
    /// Built on first use (the stats API's `visit:region_name`), once per file.
    regions: OnceLock<Arc<RegionNames>>,
}

/// English names of a database's first-level subdivisions by ISO 3166-2 code
/// (`DE-BE` → `Berlin`): the names behind the stats API's `visit:region_name`, whose
/// rows store only the code.
#[derive(Debug, Default)]
pub struct RegionNames(HashMap<Box<str>, Box<str>>);

impl RegionNames {
    /// The English name of `code` (`DE-BE`), if the database names it.
    pub fn name(&self, code: &str) -> Option<&str> {
        self.0.get(code).map(|n| &**n)
    }

    /// Every (code, name) pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(c, n)| (&**c, &**n))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads every distinct record of the database once (networks share records, so
    /// a City file's millions of networks come to a few hundred thousand records).
    fn walk(reader: &Reader<Mmap>) -> Self {
        let mut names = HashMap::new();
        let Ok(networks) = reader.networks(WithinOptions::default()) else {
            return Self::default();
        };
        let mut seen = HashSet::new();
        for found in networks.flatten() {
            if found.offset().is_some_and(|at| !seen.insert(at)) {
                continue;
            }
            let Ok(Some(record)) = found.decode::<RegionRecord<'_>>() else {
                continue;
            };
            let country = record
                .country
                .and_then(|c| c.iso_code)
                .and_then(country_code);
            if let (Some(cc), First(Some(sub))) = (country, record.subdivisions)
                && let (Some(code), Some(name)) = (sub.iso_code, sub.names.and_then(|n| n.en))
            {
                let key = format!("{}{}-{code}", cc[0] as char, cc[1] as char);
                names
                    .entry(key.into_boxed_str())
                    .or_insert_with(|| name.into());
            }
        }
        Self(names)
    }
}

/// A reloadable City database; `lookup` is lock-free. Share it behind an `Arc`.
pub struct GeoDb {
    path: Option<PathBuf>,
    watch: bool,
    watch_interval: Duration,
    current: ArcSwapOption<Loaded>,
    lookup_errors: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}

impl GeoDb {
    /// Opens the configured database. No database configured is not an error: every
    /// lookup then answers unknown. A configured but unreadable one is.
    pub fn open(cfg: &GeoConfig) -> Result<Self, GeoError> {
        let current = match &cfg.database {
            Some(path) => Some(Arc::new(load(path)?)),
            None => None,
        };
        Ok(Self {
            path: cfg.database.clone(),
            watch: cfg.watch,
            // A zero interval would spin; 100 ms is already far more often than needed.
            watch_interval: Duration::from_millis(cfg.watch_interval_ms.max(100)),
            current: ArcSwapOption::new(current),
            lookup_errors: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// Looks up an address; the caller passes only truncated addresses.
    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        let guard = self.current.load();
        let Some(db) = guard.as_deref() else {
            return GeoInfo::unknown();
        };
        // Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_ipv6() && db.reader.metadata().ip_version == 4 {
            return GeoInfo::unknown();
        }
        match db
            .reader
            .lookup(ip)
            .and_then(|r| r.decode::<CityRecord<'_>>())
        {
            Ok(Some(record)) => record.into_info(),
            Ok(None) => GeoInfo::unknown(),
            Err(_) => {
                // Counted, not logged: a bad record would otherwise log on every hit,
                // and the address must never appear in a log line.
                self.lookup_errors.fetch_add(1, Ordering::Relaxed);
                GeoInfo::unknown()
            }
        }
    }

    /// The English names of the current database's regions, read from the file on
    /// the first call for that file (one walk over its distinct records). Empty
    /// without a database. Blocking: call from a blocking context.
    pub fn region_names(&self) -> Arc<RegionNames> {
        let guard = self.current.load();
        match guard.as_deref() {
            Some(db) => Arc::clone(
                db.regions
                    .get_or_init(|| Arc::new(RegionNames::walk(&db.reader))),
            ),
            None => Arc::new(RegionNames::default()),
        }
    }

    /// Reopens the configured file and swaps it in. On error the current database
    /// stays in service. Blocking: call from a blocking context.
    pub fn reload(&self) -> Result<(), GeoError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        match load(path) {
            Ok(loaded) => {
                let meta = loaded.reader.metadata();
                tracing::info!(
                    path = %path.display(),
                    database_type = %meta.database_type,
                    build_epoch = meta.build_epoch,
                    "geo database loaded"
                );
                self.current.store(Some(Arc::new(loaded)));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Starts the reload triggers on the current tokio runtime: SIGHUP always, and a
    /// poll of the file every `watch_interval_ms` when `watch` is on. The tasks end
    /// when the last `Arc<GeoDb>` is dropped (the SIGHUP task at the next signal).
    pub fn spawn_watch(self: &Arc<Self>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        // Registered before returning so a SIGHUP right after start-up is not lost
        // (or fatal: the default action of SIGHUP is to terminate).
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hangup) => {
                let weak = Arc::downgrade(self);
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        let Some(db) = weak.upgrade() else { break };
                        if let Err(e) = reload_in_background(db).await {
                            tracing::warn!(error = %e, "geo database reload on SIGHUP failed; keeping the previous one");
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; geo reload on signal disabled")
            }
        }
        if !self.watch {
            return;
        }
        let weak = Arc::downgrade(self);
        let interval = self.watch_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            // A file that failed to load is not retried until it changes again.
            let mut failed: Option<Stamp> = None;
            loop {
                tick.tick().await;
                let Some(db) = weak.upgrade() else { break };
                let stamp = match tokio::fs::metadata(&path).await {
                    Ok(meta) => Stamp::of(&meta),
                    // Missing for a moment while being replaced, or deleted: keep serving.
                    Err(_) => continue,
                };
                let loaded = db.current.load().as_ref().map(|l| l.stamp);
                if Some(stamp) == loaded || Some(stamp) == failed {
                    continue;
                }
                match reload_in_background(db).await {
                    Ok(()) => failed = None,
                    Err(e) => {
                        tracing::warn!(error = %e, "changed geo database could not be loaded; keeping the previous one");
                        failed = Some(stamp);
                    }
                }
            }
        });
    }

    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// `database_type` and `build_epoch` of the database in service.
    pub fn database_info(&self) -> Option<(String, u64)> {
        self.current.load().as_ref().map(|l| {
            let meta = l.reader.metadata();
            (meta.database_type.clone(), meta.build_epoch)
        })
    }

    /// Lookups that failed to decode (answered unknown).
    pub fn lookup_errors(&self) -> u64 {
        self.lookup_errors.load(Ordering::Relaxed)
    }

    /// Successful reloads since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Reloads that failed (the previous database stayed in service).
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }
}

/// Opening maps and parses the file: keep it off the async worker threads.
async fn reload_in_background(db: Arc<GeoDb>) -> Result<(), GeoError> {
    tokio::task::spawn_blocking(move || db.reload())
        .await
        .map_err(|e| GeoError::Task(e.to_string()))?
}

fn load(path: &Path) -> Result<Loaded, GeoError> {
    let io = |source| GeoError::Io {
        path: path.to_owned(),
        source,
    };
    // Taken before opening: if the file is replaced in between, the stamp is the old
    // one and the watcher simply loads the new file once more.
    let stamp = Stamp::of(&std::fs::metadata(path).map_err(io)?);
    // SAFETY: the mapping is only read. Databases are replaced by renaming a new file
    // over the old one (documented above), which leaves this mapping valid.
    let reader = unsafe { Reader::open_mmap(path) }.map_err(|source| GeoError::Open {
        path: path.to_owned(),
        source,
    })?;
    let database_type = &reader.metadata().database_type;
    if !["City", "Country", "Enterprise"]
        .iter()
        .any(|t| database_type.contains(t))
    {
        return Err(GeoError::WrongType {
            path: path.to_owned(),
            database_type: database_type.clone(),
        });
    }
    // Decode a few well-populated networks so a database whose records do not have the
    // expected shape is refused now rather than answering "unknown" for every hit.
    let probes = [
        IpAddr::from([8, 8, 8, 8]),
        IpAddr::from([1, 1, 1, 1]),
        IpAddr::from([81, 2, 69, 160]),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888)),
    ];
    for ip in probes {
        if ip.is_ipv6() && reader.metadata().ip_version == 4 {
            continue;
        }
        reader
            .lookup(ip)
            .and_then(|r| r.decode::<CityRecord<'_>>())
            .map_err(|source| GeoError::Undecodable {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(Loaded {
        reader,
        stamp,
        regions: OnceLock::new(),
    })
}

#[derive(Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow, default)]
    country: Option<CountryRecord<'a>>,
    #[serde(borrow, default)]
    registered_country: Option<CountryRecord<'a>>,
    #[serde(borrow, default)]
    subdivisions: First<SubdivisionCode<'a>>,
    #[serde(borrow, default)]
    city: Option<CityName<'a>>,
}

/// What [`RegionNames`] reads of a record.
#[derive(Deserialize)]
struct RegionRecord<'a> {
    #[serde(borrow, default)]
    country: Option<CountryRecord<'a>>,
    #[serde(borrow, default)]
    subdivisions: First<SubdivisionName<'a>>,
}

#[derive(Deserialize)]
struct SubdivisionName<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
    #[serde(borrow, default)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Names<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct CityName<'a> {
    #[serde(default)]
    geoname_id: Option<u32>,
    #[serde(borrow, default)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct SubdivisionCode<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

/// The first (most general) subdivision; the rest are skipped without collecting
/// them into a `Vec`.
struct First<T>(Option<T>);

impl<T> Default for First<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Seq<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Seq<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of subdivisions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element::<T>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        deserializer.deserialize_seq(Seq(PhantomData))
    }
}

impl CityRecord<'_> {
    fn into_info(self) -> GeoInfo {
        let country = self
            .country
            .and_then(|c| c.iso_code)
            .or_else(|| self.registered_country.and_then(|c| c.iso_code))
            .and_then(country_code)
            .unwrap_or(GeoInfo::UNKNOWN_COUNTRY);
        let (city_geoname_id, city) = match self.city {
            Some(c) => (
                c.geoname_id.unwrap_or(0),
                c.names.and_then(|n| n.en).unwrap_or(""),
            ),
            None => (0, ""),
        };
        GeoInfo {
            country,
            region: self
                .subdivisions
                .0
                .and_then(|s| s.iso_code)
                .unwrap_or("")
                .to_owned(),
            city_geoname_id,
            city: city.to_owned(),
        }
    }
}

/// Two ASCII upper-case letters, or nothing.
fn country_code(iso: &str) -> Option<[u8; 2]> {
    match iso.as_bytes() {
        &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Some([a, b]),
        _ => None,
    }
}

#[cfg(test)]
#[path = "../../tests/geo_fixture/mod.rs"]
mod geo_fixture;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const ENTRIES: &[geo_fixture::Entry<'static>] = &[
        ("81.2.69.0/24", "GB", "ENG", 2643743, "London"),
        ("8.8.8.0/24", "US", "CA", 5375480, "Mountain View"),
        ("203.0.113.0/24", "JP", "", 0, ""),
        ("2001:db8:1::/48", "DE", "BE", 2950159, "Berlin"),
        ("2a02:1234::/32", "FR", "IDF", 2988507, "Paris"),
    ];

    fn cfg(path: &Path) -> GeoConfig {
        GeoConfig {
            database: Some(path.to_owned()),
            watch: true,
            watch_interval_ms: 100,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn info(country: &str, region: &str, id: u32, city: &str) -> GeoInfo {
        GeoInfo {
            country: country.as_bytes().try_into().unwrap(),
            region: region.into(),
            city_geoname_id: id,
            city: city.into(),
        }
    }

    #[test]
    fn no_database_configured_is_always_unknown() {
        let db = GeoDb::open(&GeoConfig::default()).unwrap();
        assert!(!db.is_loaded());
        assert_eq!(db.lookup(ip("81.2.69.0")), GeoInfo::unknown());
        db.reload().unwrap();
        assert!(!db.is_loaded());
    }

    #[test]
    fn region_names_come_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        geo_fixture::write_city_db(&path, ENTRIES);
        let db = GeoDb::open(&cfg(&path)).unwrap();
        let names = db.region_names();
        // Every entry with a country and a subdivision, and nothing else.
        let expected: HashMap<String, String> = ENTRIES
            .iter()
            .filter(|e| !e.1.is_empty() && !e.2.is_empty())
            .map(|e| (format!("{}-{}", e.1, e.2), geo_fixture::region_name(e.2)))
            .collect();
        let got: HashMap<String, String> = names
            .iter()
            .map(|(c, n)| (c.to_owned(), n.to_owned()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(names.name("GB-ENG"), Some("ENG Land"));
        assert_eq!(names.name("JP-"), None);
        // Built once per file: the same table on the next call.
        assert!(Arc::ptr_eq(&names, &db.region_names()));
        // A reloaded file gets its own table.
        geo_fixture::write_city_db(&path, &[("81.2.69.0/24", "IE", "D", 2964574, "Dublin")]);
        db.reload().unwrap();
        let after = db.region_names();
        assert_eq!(after.iter().collect::<Vec<_>>(), vec![("IE-D", "D Land")]);
        // No database: no names.
        let none = GeoDb::open(&GeoConfig::default()).unwrap();
        assert!(none.region_names().is_empty());
    }

    #[test]
    fn lookups_for_v4_and_v6() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        geo_fixture::write_city_db(&path, ENTRIES);
        let db = GeoDb::open(&cfg(&path)).unwrap();
        assert!(db.is_loaded());
        assert_eq!(
            db.database_info().map(|(t, _)| t).as_deref(),
            Some("GeoIP2-City")
        );
        assert_eq!(
            db.lookup(ip("81.2.69.0")),
            info("GB", "ENG", 2643743, "London")
        );
        assert_eq!(
            db.lookup(ip("81.2.69.255")),
            info("GB", "ENG", 2643743, "London")
        );
        assert_eq!(
            db.lookup(ip("8.8.8.0")),
            info("US", "CA", 5375480, "Mountain View")
        );
        // Country only: no region, no city.
        assert_eq!(db.lookup(ip("203.0.113.0")), info("JP", "", 0, ""));
        assert_eq!(
            db.lookup(ip("2001:db8:1::")),
            info("DE", "BE", 2950159, "Berlin")
        );
        assert_eq!(
            db.lookup(ip("2a02:1234:ff::")),
            info("FR", "IDF", 2988507, "Paris")
        );
        // An IPv4 client seen through a dual-stack socket.
        assert_eq!(
            db.lookup(ip("::ffff:81.2.69.0")),
            info("GB", "ENG", 2643743, "London")
        );
        assert_eq!(db.lookup_errors(), 0);
    }

    #[test]
    fn no_match_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        geo_fixture::write_city_db(&path, ENTRIES);
        let db = GeoDb::open(&cfg(&path)).unwrap();
        for miss in ["81.2.70.0", "10.0.0.0", "0.0.0.0", "2001:db8:2::", "::"] {
            assert_eq!(db.lookup(ip(miss)), GeoInfo::unknown(), "{miss}");
        }
        assert_eq!(db.lookup_errors(), 0);
    }

    #[test]
    fn open_refuses_missing_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.mmdb");
        let err = GeoDb::open(&cfg(&missing)).unwrap_err();
        assert!(matches!(err, GeoError::Io { .. }), "{err}");
        assert!(err.to_string().contains("missing.mmdb"), "{err}");

        let corrupt = dir.path().join("corrupt.mmdb");
        std::fs::write(&corrupt, b"definitely not a maxmind database").unwrap();
        let err = GeoDb::open(&cfg(&corrupt)).unwrap_err();
        assert!(matches!(err, GeoError::Open { .. }), "{err}");

        let empty = dir.path().join("empty.mmdb");
        std::fs::write(&empty, b"").unwrap();
        assert!(GeoDb::open(&cfg(&empty)).is_err());

        // A valid database cut short loses its metadata section.
        let full = geo_fixture::city_db_bytes(ENTRIES);
        let truncated = dir.path().join("truncated.mmdb");
        std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
        assert!(GeoDb::open(&cfg(&truncated)).is_err());
    }

    #[test]
    fn reload_swaps_and_a_broken_file_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        geo_fixture::write_city_db(&path, ENTRIES);
        let db = GeoDb::open(&cfg(&path)).unwrap();
        assert_eq!(db.lookup(ip("81.2.69.1")).city, "London");

        geo_fixture::write_city_db(&path, &[("81.2.69.0/24", "IE", "D", 2964574, "Dublin")]);
        db.reload().unwrap();
        assert_eq!(
            db.lookup(ip("81.2.69.1")),
            info("IE", "D", 2964574, "Dublin")
        );
        assert_eq!(db.lookup(ip("8.8.8.8")), GeoInfo::unknown());
        assert_eq!(db.reloads(), 1);

        geo_fixture::write_atomically(&path, b"garbage");
        assert!(db.reload().is_err());
        assert_eq!(db.reload_failures(), 1);
        assert_eq!(db.lookup(ip("81.2.69.1")).city, "Dublin");

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(db.reload(), Err(GeoError::Io { .. })));
        assert_eq!(db.lookup(ip("81.2.69.1")).city, "Dublin");
    }

    /// Polls `cond` until it holds or the deadline passes.
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_reloads_changed_files_and_survives_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        geo_fixture::write_city_db(&path, ENTRIES);
        let db = Arc::new(GeoDb::open(&cfg(&path)).unwrap());
        db.spawn_watch();

        geo_fixture::write_city_db(&path, &[("81.2.69.0/24", "IE", "D", 2964574, "Dublin")]);
        eventually("new database in service", || {
            db.lookup(ip("81.2.69.1")).city == "Dublin"
        })
        .await;

        geo_fixture::write_atomically(&path, b"this is not a database");
        eventually("broken file attempted", || db.reload_failures() >= 1).await;
        assert_eq!(db.lookup(ip("81.2.69.1")).city, "Dublin");

        // The broken file is not retried on every tick, but a fixed file is picked up.
        geo_fixture::write_city_db(&path, &[("81.2.69.0/24", "FR", "IDF", 2988507, "Paris")]);
        eventually("fixed database in service", || {
            db.lookup(ip("81.2.69.1")).city == "Paris"
        })
        .await;
        assert_eq!(db.reload_failures(), 1);
    }

    #[test]
    fn country_codes_are_validated() {
        assert_eq!(country_code("US"), Some(*b"US"));
        assert_eq!(country_code("us"), None);
        assert_eq!(country_code("USA"), None);
        assert_eq!(country_code(""), None);
        assert_eq!(country_code("É"), None);
    }
}
