//! Micro-benchmarks of the per-hit path, on a realistic weighted traffic mix.
//!
//!     cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 3
//!
//! Every benchmark handles ONE hit per iteration, cycling through a fixed sample of
//! hits drawn by weight (fixed seed) from `benches/corpus/*.tsv`, so criterion's time
//! is the cost per hit and a few popular User-Agents carry most of the samples, as in
//! real traffic. Bots (about 7% of the corpus weight) stay in the sample: the
//! enrichment benchmarks pay for rejecting them like the collector does.
//!
//! The geo database is a synthetic City file built at start by the test fixture
//! builder; it is far smaller than GeoLite2-City, so its lookups are an optimistic
//! bound (a few more tree levels in the real file).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use hush::collect::client_ip::{self, TruncatedIp};
use hush::collect::hit::{self, IncomingEvent};
use hush::collect::sites::{Site, SiteRegistry};
use hush::config::{Config, GeoConfig, UserAgentConfig};
use hush::enrich::geo::GeoDb;
use hush::enrich::row::EventRow;
use hush::enrich::salt::{DailySalts, SALT_LEN, Salts};
use hush::enrich::session::SessionTracker;
use hush::enrich::ua::{ClientHints, UaInfo, UaParser};
use hush::enrich::{Enricher, HitContext, Outcome};
use hush::enrich::{page_url, referrer, visitor};
use hush::pipeline::dropped::{DropCounter, Reason};
use hush::pipeline::rowbinary;

#[path = "../tests/geo_fixture/mod.rs"]
mod geo_fixture;

const SITE: &str = "bench.example";
/// Hits in the sample. Large enough that the long tail of User-Agents and referrers is
/// represented (the corpus has ~1,900 UAs and ~1,000 referrers), small enough to stay
/// in cache-friendly memory like a real working set.
const SAMPLE_HITS: usize = 8192;
/// Distinct visitors (address, User-Agent) the sample's hits come from.
const VISITORS: usize = 2000;
const SEED: u64 = 0x5eed_2025;
/// A fixed receive time: 2025-03-01 12:00:00 UTC.
const NOW_SECS: u32 = 1_740_830_400;

/// Site paths with rough popularity; a few pages carry most views.
const PATHS: &[(&str, u32)] = &[
    ("/", 300),
    ("/pricing", 60),
    ("/blog/", 50),
    ("/blog/how-we-count-visitors-without-cookies", 40),
    ("/blog/2025/02/release-notes-0-9", 25),
    ("/docs/getting-started", 45),
    ("/docs/configuration/sites", 20),
    ("/docs/api/events", 15),
    ("/about", 12),
    ("/contact", 10),
    ("/signup", 18),
    ("/login", 22),
    ("/features/privacy", 14),
    ("/changelog", 8),
    ("/careers/senior-rust-engineer", 3),
];

/// UTM query strings; most page views carry none.
const UTMS: &[(&str, u32)] = &[
    ("", 900),
    (
        "?utm_source=newsletter&utm_medium=email&utm_campaign=2025-02",
        40,
    ),
    ("?utm_source=twitter&utm_medium=social", 20),
    (
        "?utm_source=google&utm_medium=cpc&utm_campaign=brand&utm_term=privacy+analytics",
        25,
    ),
    ("?ref=producthunt", 10),
    (
        "?utm_source=github&utm_medium=referral&utm_content=readme",
        5,
    ),
];

/// One hit as the collector receives it.
struct Hit {
    body: String,
    user_agent: Arc<str>,
    ip: IpAddr,
}

/// A parsed hit, ready for the stages after body parsing.
struct Parsed {
    event: IncomingEvent,
    user_agent: Arc<str>,
    ip: TruncatedIp,
}

fn load_tsv(path: &Path) -> (Vec<String>, Vec<u64>) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read corpus {}: {e}", path.display()));
    let mut values = Vec::new();
    let mut weights = Vec::new();
    for line in text.lines().skip(1) {
        let (weight, value) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("corpus line without a tab: {line:?}"));
        weights.push(weight.parse().expect("corpus weight"));
        values.push(value.to_owned());
    }
    (values, weights)
}

fn weighted<T: Copy>(items: &[(T, u32)]) -> (Vec<T>, WeightedIndex<u32>) {
    let values = items.iter().map(|(v, _)| *v).collect();
    let index = WeightedIndex::new(items.iter().map(|(_, w)| *w)).expect("weights");
    (values, index)
}

/// JSON string literal (the corpus has no control characters, but quotes are escaped
/// properly anyway).
fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}

/// The sample: `SAMPLE_HITS` hits from `VISITORS` visitors, UAs and referrers drawn
/// by weight, with the body a Plausible tracker sends.
fn sample() -> Vec<Hit> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/corpus");
    let (uas, ua_w) = load_tsv(&corpus.join("user_agents.tsv"));
    let (refs, ref_w) = load_tsv(&corpus.join("referrers.tsv"));
    assert!(uas.len() >= 1000 && refs.len() >= 1000, "corpus too small");
    let ua_idx = WeightedIndex::new(&ua_w).expect("UA weights");
    let ref_idx = WeightedIndex::new(&ref_w).expect("referrer weights");
    let (paths, path_idx) = weighted(PATHS);
    let (utms, utm_idx) = weighted(UTMS);
    let mut rng = StdRng::seed_from_u64(SEED);

    let uas: Vec<Arc<str>> = uas.into_iter().map(Arc::from).collect();
    let visitors: Vec<(IpAddr, Arc<str>)> = (0..VISITORS)
        .map(|_| {
            let ip = IpAddr::V4(Ipv4Addr::from(
                rng.random_range(0x0100_0000u32..0xdf00_0000),
            ));
            (ip, Arc::clone(&uas[ua_idx.sample(&mut rng)]))
        })
        .collect();

    (0..SAMPLE_HITS)
        .map(|_| {
            let (ip, ua) = &visitors[rng.random_range(0..VISITORS)];
            let url = format!(
                "https://{SITE}{}{}",
                paths[path_idx.sample(&mut rng)],
                utms[utm_idx.sample(&mut rng)]
            );
            let referrer = &refs[ref_idx.sample(&mut rng)];
            let mut body = format!(r#"{{"n":"pageview","u":{},"d":"{SITE}""#, json_str(&url));
            if referrer.is_empty() {
                body.push_str(r#","r":null"#);
            } else {
                body.push_str(&format!(r#","r":{}"#, json_str(referrer)));
            }
            // A few custom events with properties, like a signup goal.
            if rng.random_ratio(1, 20) {
                body = body.replacen(r#""n":"pageview""#, r#""n":"Signup""#, 1);
                body.push_str(r#","p":{"plan":"team","seats":5}"#);
            }
            body.push('}');
            Hit {
                body,
                user_agent: Arc::clone(ua),
                ip: *ip,
            }
        })
        .collect()
}

fn bench_config() -> Config {
    Config::from_toml_str(&format!(
        "[[sites]]\ndomain = \"{SITE}\"\naliases = [\"www.{SITE}\"]\n"
    ))
    .expect("bench configuration")
}

/// A City database with networks covering the sample's address range: one /16 per
/// entry over the first octets, a country and a city each, plus gaps (unknown).
fn geo_db(dir: &Path) -> GeoDb {
    const COUNTRIES: &[(&str, &str, &str)] = &[
        ("US", "CA", "San Francisco"),
        ("DE", "BE", "Berlin"),
        ("GB", "ENG", "London"),
        ("FR", "IDF", "Paris"),
        ("IN", "MH", "Mumbai"),
        ("BR", "SP", "São Paulo"),
        ("JP", "13", "Tokyo"),
        ("CA", "ON", "Toronto"),
    ];
    let mut cidrs = Vec::new();
    for a in 1u32..223 {
        for b in (0u32..256).step_by(3) {
            cidrs.push(format!("{a}.{b}.0.0/16"));
        }
    }
    let entries: Vec<geo_fixture::Entry<'_>> = cidrs
        .iter()
        .enumerate()
        .map(|(i, cidr)| {
            let (country, region, city) = COUNTRIES[i % COUNTRIES.len()];
            (cidr.as_str(), country, region, 1000 + i as u32, city)
        })
        .collect();
    let path = dir.join("city.mmdb");
    geo_fixture::write_city_db(&path, &entries);
    GeoDb::open(&GeoConfig {
        database: Some(path),
        watch: false,
        ..GeoConfig::default()
    })
    .expect("open fixture geo database")
}

fn ua_parser(cache_entries: usize) -> UaParser {
    UaParser::new(&UserAgentConfig {
        cache_entries,
        ..UserAgentConfig::default()
    })
    .expect("UA parser")
}

/// Runs `f` on one hit per iteration, cycling through `items`.
fn per_hit<T>(c: &mut Criterion, name: &str, items: &[T], mut f: impl FnMut(&T)) {
    let mut group = c.benchmark_group("per_hit");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        let mut i = 0usize;
        b.iter(|| {
            f(&items[i]);
            i += 1;
            if i == items.len() {
                i = 0;
            }
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let config = bench_config();
    let limits = &config.limits;
    let privacy = &config.privacy;
    let hits = sample();
    let parsed: Vec<Parsed> = hits
        .iter()
        .map(|h| Parsed {
            event: hit::parse_event(h.body.as_bytes(), limits).expect("sample body parses"),
            user_agent: Arc::clone(&h.user_agent),
            ip: client_ip::truncate(h.ip, privacy.ipv4_prefix, privacy.ipv6_prefix),
        })
        .collect();
    let registry = SiteRegistry::from_config(&config);
    let site: Arc<Site> = Arc::clone(registry.resolve(SITE).expect("bench site"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let geo = Arc::new(geo_db(dir.path()));
    let salt = [7u8; SALT_LEN];

    // What `ingest` saves per request by taking the request apart instead of cloning
    // its header map (fix of the first profile): a clone and a drop of the headers a
    // browser's `sendBeacon` carries, values sharing one buffer as hyper's parser
    // leaves them.
    let headers = beacon_headers();
    let one = [()];
    per_hit(c, "request_headers_clone", &one, |()| {
        black_box(black_box(&headers).clone());
    });

    per_hit(c, "parse_event", &hits, |h| {
        black_box(hit::parse_event(black_box(h.body.as_bytes()), limits).ok());
    });

    let cached = ua_parser(UserAgentConfig::default().cache_entries);
    for h in &hits {
        cached.parse(&h.user_agent);
    }
    per_hit(c, "ua_parse_cached", &hits, |h| {
        black_box(cached.parse(black_box(&h.user_agent)));
    });
    // The cache as it was before client hints (issue 14): keyed on the User-Agent
    // alone, looked up by `&str`. Same entries, same lookup steps as the old
    // `UaParser::parse`, so the run compares the two keys on one machine state.
    let before: quick_cache::sync::Cache<Box<str>, Arc<UaInfo>> =
        quick_cache::sync::Cache::new(UserAgentConfig::default().cache_entries);
    for h in &hits {
        before.insert(Box::from(h.user_agent.trim()), cached.parse(&h.user_agent));
    }
    per_hit(c, "ua_parse_cached_ua_only_key", &hits, |h| {
        let ua = black_box(&*h.user_agent).trim();
        if ua.is_empty() || ua == "-" || ua.len() > 1024 {
            return;
        }
        black_box(before.get(ua));
    });
    // Chrome's hints with every hit: one more key shape, and still no allocation.
    let hints = ClientHints {
        brands: r#""Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24""#,
        mobile: "?0",
        platform: "\"Windows\"",
    };
    for h in &hits {
        cached.parse_with_hints(&h.user_agent, &hints);
    }
    per_hit(c, "ua_parse_cached_hints", &hits, |h| {
        black_box(cached.parse_with_hints(black_box(&h.user_agent), black_box(&hints)));
    });
    let uncached = ua_parser(0);
    per_hit(c, "ua_parse_uncached", &hits, |h| {
        black_box(uncached.parse(black_box(&h.user_agent)));
    });
    per_hit(c, "ua_parse_uncached_hints", &hits, |h| {
        black_box(uncached.parse_with_hints(black_box(&h.user_agent), &hints));
    });

    per_hit(c, "page_url_and_referrer", &parsed, |p| {
        let page =
            page_url::parse(black_box(&p.event.url), p.event.hash_mode).expect("sample URL parses");
        let hosts = [page.hostname.as_str(), SITE];
        black_box(referrer::classify(
            black_box(p.event.referrer.as_deref()),
            &hosts,
            &page.utm,
        ));
        black_box(page);
    });

    per_hit(c, "geo_lookup", &parsed, |p| {
        black_box(geo.lookup(black_box(p.ip.addr())));
    });

    per_hit(c, "truncate_and_visitor_id", &hits, |h| {
        let ip = client_ip::truncate(black_box(h.ip), privacy.ipv4_prefix, privacy.ipv6_prefix);
        black_box(visitor::visitor_id(
            &salt,
            SITE,
            &ip,
            black_box(&h.user_agent),
        ));
    });

    let enricher = Enricher {
        ua: ua_parser(UserAgentConfig::default().cache_entries),
        geo: Arc::clone(&geo),
        salts: Salts::fixed(DailySalts {
            day: NOW_SECS / 86_400,
            current: salt,
            previous: Some([9u8; SALT_LEN]),
        }),
        sessions: Arc::new(SessionTracker::new(&config.session)),
        privacy: privacy.clone(),
    };
    let enrich = |event: &IncomingEvent, user_agent: &str, ip: TruncatedIp| -> Option<EventRow> {
        let ctx = HitContext {
            ip,
            user_agent,
            hints: ClientHints::NONE,
            dnt: false,
            gpc: false,
            now_secs: NOW_SECS,
        };
        match enricher.enrich(event, &site, &ctx) {
            Ok(Outcome::Store(row)) => Some(row),
            Ok(Outcome::Dropped(_)) => None,
            Err(e) => panic!("sample hit failed enrichment: {e}"),
        }
    };
    // Warm the UA cache and the session table, as after a few seconds of traffic.
    let rows: Vec<EventRow> = parsed
        .iter()
        .filter_map(|p| enrich(&p.event, &p.user_agent, p.ip))
        .collect();
    per_hit(c, "enrich_cached_ua", &parsed, |p| {
        black_box(enrich(black_box(&p.event), &p.user_agent, p.ip));
    });

    let mut buf = Vec::with_capacity(64 * 1024);
    per_hit(c, "rowbinary_encode", &rows, |row| {
        buf.clear();
        rowbinary::encode_event(black_box(row), &mut buf);
        black_box(&buf);
    });

    // What `ingest` adds for a hit not counted as a visitor's (`pipeline::dropped`): an
    // anonymous DNT hit (one atomic add in the site's day slot) and a bot (its family
    // in the slot's small map, behind the slot's own mutex).
    let not_counted = DropCounter::unregistered(&registry);
    let none: Arc<str> = Arc::from("");
    let family: Arc<str> = Arc::from("Googlebot");
    let day = NOW_SECS / 86_400;
    per_hit(c, "not_counted_record_anonymous", &one, |()| {
        not_counted.record(black_box(SITE), day, Reason::DntAnonymous, &none);
    });
    per_hit(c, "not_counted_record_bot", &one, |()| {
        not_counted.record(black_box(SITE), day, Reason::Bot, &family);
    });

    // Everything the handler does per hit between the body bytes and the writer queue:
    // parse, truncate, enrich, encode.
    let mut buf = Vec::with_capacity(64 * 1024);
    per_hit(c, "whole_hit_body_to_rowbinary", &hits, |h| {
        let event =
            hit::parse_event(black_box(h.body.as_bytes()), limits).expect("sample body parses");
        let ip = client_ip::truncate(h.ip, privacy.ipv4_prefix, privacy.ipv6_prefix);
        buf.clear();
        let ctx = HitContext {
            ip,
            user_agent: &h.user_agent,
            hints: ClientHints::NONE,
            dnt: false,
            gpc: false,
            now_secs: NOW_SECS,
        };
        // Moved into the row, as the handler does for a hit's only site.
        match enricher.enrich_owned(event, &site, &ctx) {
            Ok(Outcome::Store(row)) => rowbinary::encode_event(&row, &mut buf),
            Ok(Outcome::Dropped(_)) => {}
            Err(e) => panic!("sample hit failed enrichment: {e}"),
        }
        black_box(&buf);
    });
}

/// The request headers of a tracker hit from Chrome (`sendBeacon`), values slices of
/// one shared buffer like those hyper's HTTP/1 parser produces.
fn beacon_headers() -> http::HeaderMap {
    let fields: &[(&str, &str)] = &[
        ("host", "stats.bench.example"),
        ("connection", "keep-alive"),
        ("content-length", "142"),
        ("sec-ch-ua-platform", "\"Windows\""),
        (
            "user-agent",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ),
        (
            "sec-ch-ua",
            "\"Google Chrome\";v=\"131\", \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"",
        ),
        ("content-type", "text/plain;charset=UTF-8"),
        ("sec-ch-ua-mobile", "?0"),
        ("accept", "*/*"),
        ("origin", "https://bench.example"),
        ("sec-fetch-site", "same-site"),
        ("sec-fetch-mode", "no-cors"),
        ("sec-fetch-dest", "empty"),
        ("referer", "https://bench.example/pricing"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-US,en;q=0.9,de;q=0.8"),
        ("x-forwarded-for", "203.0.113.77"),
    ];
    let mut raw = Vec::new();
    for (_, value) in fields {
        raw.extend_from_slice(value.as_bytes());
    }
    let raw = bytes::Bytes::from(raw);
    let mut map = http::HeaderMap::new();
    let mut at = 0;
    for (name, value) in fields {
        let slice = raw.slice(at..at + value.len());
        at += value.len();
        map.append(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_maybe_shared(slice).expect("header value"),
        );
    }
    map
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
