-- Audit trail of retention purges, data-subject erasures and site deletions
-- (`hush::purge::PurgeLogRow`, same column order). One row per action (a dropped
-- partition, a per-site/month delete, an erasure) plus one summary row per purge run.
--
-- It never records the values of an erasure selector (they may be a hashed user id,
-- the very data being erased), only its shape, e.g. `props[plan], visitor_id`.
-- No TTL: the log is small and is the evidence that retention was applied.
CREATE TABLE IF NOT EXISTS purge_log
(
    run_id String,
    method LowCardinality(String),
    site LowCardinality(String),
    partition String,
    selector String,
    actor String,
    cutoff DateTime('UTC'),
    rows_before UInt64,
    rows_after UInt64,
    started DateTime64(3, 'UTC'),
    finished DateTime64(3, 'UTC'),
    outcome LowCardinality(String),
    error String
)
ENGINE = MergeTree
ORDER BY (started, run_id);

-- Purge lease: one scheduled purge at a time across collectors (see
-- `hush::purge::Lease` for the protocol and its guarantees). Claims are tiny and
-- short-lived; the TTL clears expired ones.
CREATE TABLE IF NOT EXISTS purge_lease
(
    name LowCardinality(String),
    owner String,
    claimed_at DateTime64(6, 'UTC'),
    expires_at DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (name, claimed_at, owner)
TTL toDateTime(expires_at) + INTERVAL 1 DAY;
