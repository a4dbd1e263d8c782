-- Daily visitor-id salts, shared by every instance through this table.
--
-- Agreement (see src/salt.rs): an instance that finds no salt for a day inserts a
-- random candidate with insert_deduplication_token = 'hush-salt-<day>'. On one
-- server the deduplication log admits only the first insert with that token, so at
-- most one candidate per day is stored; readers take the earliest-created row
-- (ORDER BY created_at, salt LIMIT 1), which still gives one answer if a second
-- candidate ever slips in (a replica, or a window that forgot the token).
-- created_at is the server's clock, so instances with skewed clocks still agree.
--
-- PARTITION BY day keeps each day's salt in its own parts, so deleting old days
-- rewrites nothing else. Salts older than the previous day are deleted with a
-- synchronous mutation (a lightweight DELETE would only hide the row until a merge).
CREATE TABLE IF NOT EXISTS salts
(
    day Date,
    salt FixedString(32),
    created_at DateTime64(9, 'UTC') DEFAULT now64(9)
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (day, created_at, salt)
SETTINGS non_replicated_deduplication_window = 1000;
