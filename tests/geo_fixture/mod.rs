//! Builds small GeoIP2-City-shaped MaxMind databases for tests.
//!
//! Use from an integration test with `mod geo_fixture;` (or
//! `#[path = "geo_fixture/mod.rs"] mod geo_fixture;`). The database is IPv6 with IPv4
//! networks in the IPv4-compatible `::/96` subtree, which is where MaxMind readers
//! look IPv4 addresses up, so both address families resolve like in a real City file.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use maxminddb_writer::Database;
use maxminddb_writer::metadata::IpVersion;
use maxminddb_writer::paths::IpAddrWithMask;
use serde::Serialize;

/// One network: (CIDR, country ISO, subdivision ISO, city GeoNames id, English city name).
/// Empty strings / 0 leave the part out of the record, as MaxMind does.
pub type Entry<'a> = (&'a str, &'a str, &'a str, u32, &'a str);

#[derive(Serialize)]
struct Names<'a> {
    en: &'a str,
    // A second language, so readers have to skip names they do not want.
    de: &'a str,
}

#[derive(Serialize)]
struct Country<'a> {
    geoname_id: u32,
    iso_code: &'a str,
    names: Names<'a>,
}

#[derive(Serialize)]
struct Subdivision<'a> {
    geoname_id: u32,
    iso_code: &'a str,
    names: OwnedNames,
}

#[derive(Serialize)]
struct OwnedNames {
    en: String,
    de: String,
}

/// The English name the fixture gives a subdivision: its code and a word, so a test
/// can tell a name from a code.
pub fn region_name(iso: &str) -> String {
    format!("{iso} Land")
}

#[derive(Serialize)]
struct City<'a> {
    geoname_id: u32,
    names: Names<'a>,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    time_zone: &'static str,
}

#[derive(Serialize)]
struct Record<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<City<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<Country<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registered_country: Option<Country<'a>>,
    location: Location,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subdivisions: Vec<Subdivision<'a>>,
}

fn names(en: &str) -> Names<'_> {
    Names { en, de: en }
}

/// The bytes of a City database holding `entries`.
pub fn city_db_bytes(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut db = Database::default();
    db.metadata.ip_version = IpVersion::V6;
    db.metadata.database_type = "GeoIP2-City".into();
    db.metadata.languages = vec!["en".into(), "de".into()];
    db.metadata.binary_format_major_version = 2;
    db.metadata.binary_format_minor_version = 0;
    db.metadata.build_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    db.metadata.description = HashMap::from([("en".into(), "hush test fixture".into())]);

    for &(cidr, country, subdivision, geoname_id, city) in entries {
        let country = (!country.is_empty()).then(|| Country {
            geoname_id: 1,
            iso_code: country,
            names: names(country),
        });
        let record = Record {
            city: (geoname_id != 0 || !city.is_empty()).then(|| City {
                geoname_id,
                names: names(city),
            }),
            registered_country: None,
            country,
            location: Location {
                latitude: 1.5,
                longitude: -2.25,
                time_zone: "Etc/UTC",
            },
            subdivisions: if subdivision.is_empty() {
                Vec::new()
            } else {
                // Real records list the most general subdivision first.
                vec![
                    Subdivision {
                        geoname_id: 2,
                        iso_code: subdivision,
                        names: OwnedNames {
                            en: region_name(subdivision),
                            de: format!("{subdivision} (de)"),
                        },
                    },
                    Subdivision {
                        geoname_id: 3,
                        iso_code: "ZZZ",
                        names: OwnedNames {
                            en: "second level".into(),
                            de: "zweite Ebene".into(),
                        },
                    },
                ]
            },
        };
        let data = db.insert_value(&record).expect("serialize fixture record");
        db.insert_node(v6_network(cidr), data);
    }
    db.write_to(Vec::new()).expect("write fixture database")
}

/// Writes a City database to `path` atomically (temporary file + rename), the way
/// geoipupdate replaces databases, so a running reader never sees a partial file.
pub fn write_city_db(path: &Path, entries: &[Entry<'_>]) {
    write_atomically(path, &city_db_bytes(entries));
}

/// Replaces `path` atomically with arbitrary bytes (e.g. a corrupt database).
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let dir = path.parent().expect("database path has a parent directory");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).expect("create temporary file");
    tmp.write_all(bytes).expect("write temporary file");
    tmp.as_file().sync_all().expect("sync temporary file");
    tmp.persist(path).expect("rename into place");
}

/// `a.b.c.d/n` becomes `::a.b.c.d/(96+n)`; IPv6 networks are kept.
fn v6_network(cidr: &str) -> IpAddrWithMask {
    let (addr, len) = cidr.split_once('/').unwrap_or((cidr, ""));
    let addr: IpAddr = addr.parse().expect("fixture CIDR address");
    match addr {
        IpAddr::V4(v4) => {
            let len: u8 = if len.is_empty() {
                32
            } else {
                len.parse().expect("fixture prefix")
            };
            assert!(len <= 32, "IPv4 prefix too long in {cidr}");
            IpAddrWithMask::new(IpAddr::V6(v4.to_ipv6_compatible()), 96 + len)
        }
        IpAddr::V6(_) => {
            let len: u8 = if len.is_empty() {
                128
            } else {
                len.parse().expect("fixture prefix")
            };
            assert!(len <= 128, "IPv6 prefix too long in {cidr}");
            IpAddrWithMask::new(addr, len)
        }
    }
}
