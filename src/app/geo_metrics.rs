//! The geo database's counters in `/metrics`. `enrich::geo` keeps them as atomics
//! (a stage does not know the registry's shape); this collector reads them at scrape
//! time, so a lookup costs no more than it did.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

use crate::enrich::geo::GeoDb;

/// Registers `hush_geo_*` for `geo`.
pub fn register(registry: &mut Registry, geo: &Arc<GeoDb>) {
    registry.register_collector(Box::new(GeoCounters(Arc::clone(geo))));
}

#[derive(Debug)]
struct GeoCounters(Arc<GeoDb>);

impl Collector for GeoCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let geo = &self.0;
        let counters: [(&str, &str, ConstCounter<u64>); 3] = [
            (
                "hush_geo_lookup_errors",
                "Geo lookups whose record could not be decoded (the hit is stored with \
                 no location)",
                ConstCounter::new(geo.lookup_errors()),
            ),
            (
                "hush_geo_reloads",
                "Geo database reloads that succeeded",
                ConstCounter::new(geo.reloads()),
            ),
            (
                "hush_geo_reload_failures",
                "Geo database reloads that failed (the previous database stayed in service)",
                ConstCounter::new(geo.reload_failures()),
            ),
        ];
        for (name, help, counter) in counters {
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

// The geo tests load the same fixture; a private module there cannot be shared.
#[cfg(test)]
#[allow(clippy::duplicate_mod)]
#[path = "../../tests/geo_fixture/mod.rs"]
mod geo_fixture;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GeoConfig;

    #[test]
    fn reloads_and_their_failures_are_exported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        geo_fixture::write_city_db(&path, &[("81.2.69.0/24", "GB", "ENG", 2643743, "London")]);
        let geo = Arc::new(
            GeoDb::open(&GeoConfig {
                database: Some(path.clone()),
                watch: false,
                ..GeoConfig::default()
            })
            .unwrap(),
        );
        let mut registry = Registry::default();
        register(&mut registry, &geo);
        let text = crate::metrics::render(&registry);
        for zero in [
            "hush_geo_reloads_total 0",
            "hush_geo_reload_failures_total 0",
            "hush_geo_lookup_errors_total 0",
        ] {
            assert!(text.contains(zero), "{zero}:\n{text}");
        }
        geo.reload().unwrap();
        geo_fixture::write_atomically(&path, b"not a database");
        assert!(geo.reload().is_err());
        assert!(geo.reload().is_err());
        let text = crate::metrics::render(&registry);
        assert!(text.contains("hush_geo_reloads_total 1"), "{text}");
        assert!(text.contains("hush_geo_reload_failures_total 2"), "{text}");
        assert!(
            text.contains("# TYPE hush_geo_reload_failures counter"),
            "{text}"
        );
    }
}
