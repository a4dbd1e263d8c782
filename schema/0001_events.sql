-- One row per accepted hit. Columns are exactly `hush::event::EventRow`, in order:
-- the writer sends RowBinary, which is positional.
--
-- Every statement here must be idempotent (IF NOT EXISTS): two instances may run the
-- same migration at the same time (see src/migrate.rs).
--
-- Sort key (site, toDate(timestamp), visitor_id, timestamp):
--  * every stats query filters one site and a time range, so (site, day) as the key
--    prefix lets the primary index skip everything outside that site and those days;
--    the exact time bounds are then applied to the few granules of the first and
--    last day only;
--  * within a site's day, rows of one visitor sit together in time order. Visitors,
--    visits, bounce rate and visit duration are all "group by visitor/session, then
--    aggregate", which reads contiguous runs, and can use aggregation in order
--    (optimize_aggregation_in_order) for GROUP BY site, day, visitor_id;
--  * the same clustering makes the per-visitor columns (session_id, entry_page,
--    browser, os, device, country, region, city, source, utm_*) repeat row after row,
--    so they compress to almost nothing;
--  * top pages / sources / browsers / countries are GROUP BY over low-cardinality or
--    well-compressed columns of the selected (site, day) ranges; no key order helps a
--    GROUP BY on a non-key column, so the key serves the filter and compression.
-- A timestamp-first key (site, timestamp) would scatter each visitor's hits across the
-- day and lose both the clustering and the compression; an hour-level prefix would
-- do the same within each hour.
--
-- Codecs (the default is LZ4). Chosen by measuring 2M synthetic rows in this sort
-- order (ratio uncompressed/compressed):
--  * timestamp: within a visitor the values ascend, across visitors they jump by less
--    than a day. Delta(4)+ZSTD 1.55, ZSTD 1.39, DoubleDelta+ZSTD 1.20 (DoubleDelta
--    pays only on a monotonic column, which this is not).
--  * visitor_id: a uniform 64-bit hash, repeated along each visitor's run. ZSTD 8.8,
--    Delta(8)+ZSTD 7.7, LZ4 6.1. T64 cannot gain on values that use all 64 bits.
--  * session_id: a hash too, repeating along the visitor run: ZSTD finds the repeats.
--  * city_geoname_id: repeats along visitor runs; ZSTD 18.7 against T64+ZSTD 7.9
--    (T64's bit transposition hides the repeats). engagement_ms: mostly zero;
--    ZSTD and T64+ZSTD tie (2.9), LZ4 2.2.
--  * free-form strings (paths, referrer paths, campaign terms, prop values): ZSTD(3).
--    ZSTD decompresses at about the same speed at any level; the level costs CPU
--    only on insert and merges.
--  * low-cardinality strings (site, names, browser, os, source, ...) use
--    LowCardinality(String): a per-part dictionary plus small integer keys, and
--    GROUP BY on the keys.
CREATE TABLE IF NOT EXISTS events
(
    site LowCardinality(String),
    timestamp DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    name LowCardinality(String),
    visitor_id UInt64 CODEC(ZSTD(1)),
    session_id UInt64 CODEC(ZSTD(1)),
    entry_page String CODEC(ZSTD(3)),
    hostname LowCardinality(String),
    pathname String CODEC(ZSTD(3)),
    referrer_host String CODEC(ZSTD(3)),
    referrer_path String CODEC(ZSTD(3)),
    source LowCardinality(String),
    channel LowCardinality(String),
    utm_source LowCardinality(String),
    utm_medium LowCardinality(String),
    utm_campaign String CODEC(ZSTD(3)),
    utm_term String CODEC(ZSTD(3)),
    utm_content String CODEC(ZSTD(3)),
    browser LowCardinality(String),
    browser_version LowCardinality(String),
    os LowCardinality(String),
    os_version LowCardinality(String),
    device LowCardinality(String),
    country FixedString(2),
    region LowCardinality(String),
    city_geoname_id UInt32 CODEC(ZSTD(1)),
    city LowCardinality(String),
    props Map(String, String) CODEC(ZSTD(3)),
    revenue_micros Nullable(Int64),
    revenue_currency LowCardinality(String),
    interactive UInt8,
    engagement_ms UInt32 CODEC(ZSTD(1)),
    scroll_depth UInt8
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (site, toDate(timestamp), visitor_id, timestamp)
-- The writer tags every batch with insert_deduplication_token; the window makes a
-- retried or replayed batch with a token seen among the last 1000 inserts a no-op.
SETTINGS non_replicated_deduplication_window = 1000;
