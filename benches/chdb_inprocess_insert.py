"""chDB's own insert speed, in-process: the baseline for benches/launcher_insert.rs.

Inserts the same event shape (30 columns) in the same 10k-row RowBinary
batches, straight through chDB's streaming-insert API, with no HTTP and no
launcher. The batch is generated once by the engine (mirroring the Rust
generator) and not timed.

    scripts/local-clickhouse install
    scripts/.venv/bin/python benches/chdb_inprocess_insert.py [ROWS] [BATCH]
"""

from __future__ import annotations

import sys
import tempfile
import time

from chdb import _chdb

DDL = """CREATE TABLE events (
    ts DateTime, site_id LowCardinality(String), hostname LowCardinality(String),
    event_name LowCardinality(String), visitor_id UInt64, session_id UInt64,
    pathname String, referrer String, referrer_source LowCardinality(String),
    utm_source LowCardinality(String), utm_medium LowCardinality(String),
    utm_campaign LowCardinality(String), utm_content String, utm_term String,
    country FixedString(2), region LowCardinality(String), city LowCardinality(String),
    browser LowCardinality(String), browser_version LowCardinality(String),
    os LowCardinality(String), os_version LowCardinality(String), device LowCardinality(String),
    screen_width UInt16, screen_height UInt16, is_bounce UInt8, duration_ms UInt32,
    revenue UInt64, props Map(String, String), entry_page String, exit_page String
) ENGINE = MergeTree PARTITION BY toYYYYMM(ts) ORDER BY (site_id, toDate(ts), visitor_id)"""

# Same columns and value distributions as `event()` in launcher_insert.rs.
GENERATE = """
WITH number * 11400714819323198485 AS h,
     (arr, salt) -> arr[(bitShiftRight(h, salt) % length(arr)) + 1] AS pick
SELECT
    toDateTime(1735689600 + intDiv(number, 10)),
    concat('site-', toString(h % 20)),
    concat('www.example', toString(h % 20), '.org'),
    pick(['pageview', 'pageview', 'pageview', 'signup', 'click'], 3),
    h, bitXor(h, 21845),
    concat('/blog/', toString(h % 50), '/post-', toString(h % 5000)),
    concat('https://news', toString(h % 30), '.example.com/item?id=', toString(h % 100000)),
    pick(['Google', 'Direct', 'Hacker News', 'Twitter', 'Bing'], 7),
    pick(['', '', 'newsletter', 'twitter'], 11),
    pick(['', 'email', 'social'], 13),
    pick(['', 'spring', 'launch'], 17),
    '', '',
    toFixedString(['DE', 'FR', 'US', 'GB', 'NL'][h % 5 + 1], 2),
    pick(['DE-BE', 'FR-IDF', 'US-CA', 'GB-ENG', 'NL-NH'], 19),
    pick(['Berlin', 'Paris', 'San Francisco', 'London', 'Amsterdam'], 23),
    pick(['Firefox', 'Chrome', 'Safari', 'Edge'], 29),
    pick(['128', '131', '18.1', '130'], 31),
    pick(['Linux', 'Windows', 'macOS', 'iOS', 'Android'], 37),
    pick(['', '11', '14.5', '17'], 41),
    pick(['Desktop', 'Mobile', 'Tablet'], 43),
    toUInt16([1920, 1440, 390, 768][h % 4 + 1]),
    toUInt16([1080, 900, 844, 1024][h % 4 + 1]),
    toUInt8(h % 2),
    toUInt32(h % 600000),
    toUInt64(if(h % 50 = 0, h % 10000, 0)),
    if(h % 3 = 0, map('plan', concat('p', toString(h % 4)), 'ab', 'b'), map()),
    concat('/blog/', toString(h % 50)),
    concat('/blog/', toString(h % 50), '/post-', toString(h % 5000))
FROM numbers({rows})
"""


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    batch_rows = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    batches = rows // batch_rows
    with tempfile.TemporaryDirectory(prefix="chdb-bench-") as path:
        # The launcher's server baseline (async_insert=0) so both measure
        # synchronous inserts.
        conn = _chdb.connect(f"file:{path}?async_insert=0")
        conn.query(DDL, "TSV")
        # Generated through a table of the same schema, so the RowBinary bytes
        # have exactly the column types of `events`.
        conn.query(DDL.replace("TABLE events", "TABLE source"), "TSV")
        conn.query("INSERT INTO source " + GENERATE.format(rows=batch_rows), "TSV")
        batch = conn.query("SELECT * FROM source FORMAT RowBinary", "RowBinary").bytes()

        def insert() -> None:
            inserter = conn.send_insert("INSERT INTO events", "RowBinary")
            conn.insert_append(inserter, batch)
            conn.insert_done(inserter)

        insert()  # warm-up, not timed
        started = time.monotonic()
        for _ in range(batches):
            insert()
        secs = time.monotonic() - started
        total = int(conn.query("SELECT count() FROM events", "TSV").bytes())
        assert total == (batches + 1) * batch_rows, total
        inserted = batches * batch_rows
        print(
            f"chdb_inprocess rows={inserted} batch={batch_rows} batch_bytes={len(batch)} "
            f"seconds={secs:.2f} rows_per_sec={inserted / secs:.0f}"
        )
        conn.close()


if __name__ == "__main__":
    main()
