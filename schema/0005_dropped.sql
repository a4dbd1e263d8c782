-- Hits hush did not count as a visitor's, counted (`hush::pipeline::dropped`, same
-- column order): per site, UTC day, reason (bot, dnt, gpc, no_visit: dropped;
-- dnt_anonymous, gpc_anonymous: stored with no visitor) and bot family (a label of
-- hush's own rules, e.g. `Googlebot` or a matched pattern; empty when unknown).
--
-- No visitor data: no id, no address, no User-Agent, no time finer than the day.
-- SummingMergeTree adds up the rows of one key as parts merge, so a reader must
-- still `sum(hits) ... GROUP BY` (unmerged parts hold several rows per key). Each
-- flush is one insert with an insert_deduplication_token, so a retried flush whose
-- first answer was lost is not summed twice.
--
-- Retention (store::purge) and site deletion (store::dsr) delete from it; erasures
-- have nothing to find here.
CREATE TABLE IF NOT EXISTS dropped
(
    site LowCardinality(String),
    day Date,
    reason LowCardinality(String),
    family LowCardinality(String),
    hits UInt64
)
ENGINE = SummingMergeTree(hits)
PARTITION BY toYYYYMM(day)
ORDER BY (site, day, reason, family)
SETTINGS non_replicated_deduplication_window = 1000;
