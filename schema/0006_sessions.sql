-- Finished visits, one row each, built from `events` by `hush::store::sessions` so
-- that visit queries read one row per visit instead of grouping every event of the
-- period by visit at query time (10M events, 2M visits: top stats 7-10x faster).
--
-- A *build* of (site, UTC day D) holds every visit whose first non-engagement row is
-- on D, computed from the rows of D and D+1 (a visit may cross midnight), plus one row
-- per anonymous (DNT/GPC) row of D (`session_id = 0`, as the query plans count them).
-- Columns are the visit plan's per-visit values (`hush::query::sql`): counts, first
-- and last time, the attributes of the first page view (`a_*`, the last one for
-- `a_exit_*`), the visitor's own columns. A day is built only once D+1 is over.
--
-- `event_days` counts the rows inserted into `events` per site and UTC day (a
-- materialized view: every insert adds its rows; a block that deduplication skips
-- adds nothing). It is a change detector, not a census: rows stored before this
-- migration are not in it, and deletions do not lower it.
--
-- `session_days` records each build with the `event_days` counts of D-1, D and D+1
-- when it was built. A query uses a day's build only while the three counts are
-- unchanged (checked per query, a read of a few rows): a late row (a spool replayed
-- after an outage) changes a count, and a purge or an erasure records the days it
-- touched as not usable (`build = 0`); such a day is answered from `events` until
-- the builder has built it again. Rows of an older build of a day are deleted
-- after a newer one is recorded; a query reads only the recorded build, so a row of a
-- failed or superseded build is never counted.
--
-- Retention (store::purge), erasure and site deletion (store::dsr) reach both tables.
CREATE TABLE IF NOT EXISTS sessions
(
    site LowCardinality(String),
    day Date,
    build UInt64,
    session_id UInt64,
    visitor_id UInt64 CODEC(ZSTD(1)),
    start DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    end DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    pageviews UInt64 CODEC(T64, ZSTD(1)),
    events UInt64 CODEC(T64, ZSTD(1)),
    interactive UInt64 CODEC(T64, ZSTD(1)),
    entry_page String CODEC(ZSTD(3)),
    browser LowCardinality(String),
    browser_version LowCardinality(String),
    os LowCardinality(String),
    os_version LowCardinality(String),
    device LowCardinality(String),
    country FixedString(2),
    region LowCardinality(String),
    city_geoname_id UInt32 CODEC(ZSTD(1)),
    city LowCardinality(String),
    a_source LowCardinality(String),
    a_referrer String CODEC(ZSTD(3)),
    a_channel LowCardinality(String),
    a_utm_medium LowCardinality(String),
    a_utm_source LowCardinality(String),
    a_utm_campaign String CODEC(ZSTD(3)),
    a_utm_content String CODEC(ZSTD(3)),
    a_utm_term String CODEC(ZSTD(3)),
    a_entry_hostname LowCardinality(String),
    a_exit_page String CODEC(ZSTD(3)),
    a_exit_hostname LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (site, day, build, start);

CREATE TABLE IF NOT EXISTS session_days
(
    site LowCardinality(String),
    day Date,
    build UInt64,
    built_at DateTime('UTC'),
    rows_prev UInt64,
    rows_day UInt64,
    rows_next UInt64
)
ENGINE = ReplacingMergeTree(built_at)
ORDER BY (site, day);

CREATE TABLE IF NOT EXISTS event_days
(
    site LowCardinality(String),
    day Date,
    rows UInt64
)
ENGINE = SummingMergeTree(rows)
ORDER BY (site, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS event_days_mv TO event_days AS
SELECT site, toDate(timestamp) AS day, count() AS rows FROM events GROUP BY site, day;
