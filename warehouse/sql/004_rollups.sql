-- Per-minute, per-hour and per-day (UTC) rollups: what every METRICS.md metric needs,
-- pre-aggregated so a 30-day question reads thousands of rows instead of millions.
--
-- Rows are recomputed from `events` and `sessions` (never incremented), so they are exact
-- and replay-safe: a minute is rewritten whole with a newer `version`. `level` says which
-- attributes a row is grouped by (the others are ''): 0 country+device+channel, 1 none (the
-- total), 2 country, 3 device, 4 channel. Attributes are the session's (its first event).
--
-- Two families with their own dirtiness: `rollup_*` counts the events of a minute (distinct
-- counts as exact sets of 64-bit hashes of user_id / session key, with their final counts);
-- `starts_*` measures the sessions that start in a minute, which keep changing while those
-- sessions go on and are recomputed from `sessions` alone.
CREATE TABLE IF NOT EXISTS rollup_1m (
    level UInt8,
    t DateTime('UTC'),
    country LowCardinality(String),
    device LowCardinality(String),
    channel LowCardinality(String),
    events UInt64,
    pageviews UInt64,
    orders UInt64,
    revenue Float64,
    units UInt64,
    visitors AggregateFunction(uniqExact, UInt64),
    sessions AggregateFunction(uniqExact, UInt64),
    purchase_sessions AggregateFunction(uniqExact, UInt64),
    cart_sessions AggregateFunction(uniqExact, UInt64),
    n_visitors UInt64,                  -- the same distinct counts, final (one row = one answer)
    n_sessions UInt64,
    n_purchase_sessions UInt64,
    n_cart_sessions UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(t)
ORDER BY (level, t, country, device, channel);

CREATE TABLE IF NOT EXISTS rollup_1h AS rollup_1m;

CREATE TABLE IF NOT EXISTS rollup_1d AS rollup_1m;

CREATE TABLE IF NOT EXISTS starts_1m (
    level UInt8,
    t DateTime('UTC'),
    country LowCardinality(String),
    device LowCardinality(String),
    channel LowCardinality(String),
    started UInt64,
    bounces UInt64,
    start_pageviews UInt64,
    start_duration_s Float64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(t)
ORDER BY (level, t, country, device, channel);

CREATE TABLE IF NOT EXISTS starts_1h AS starts_1m;

CREATE TABLE IF NOT EXISTS starts_1d AS starts_1m;

-- Which minutes of a family (`kind` 0: rollup_*, 1: starts_*) have new data since their
-- rows were computed: the flow raises `dirty` to its write version after each batch; a
-- refresh raises `clean` to the dirty version it read before recomputing. A minute is
-- current when clean >= dirty.
CREATE TABLE IF NOT EXISTS rollup_marks (
    kind UInt8,
    minute DateTime('UTC'),
    dirty SimpleAggregateFunction(max, UInt64),
    clean SimpleAggregateFunction(max, UInt64)
) ENGINE = AggregatingMergeTree
ORDER BY (kind, minute);

-- Events written before the rollups existed: every minute holding one starts dirty.
INSERT INTO rollup_marks (kind, minute, dirty, clean)
SELECT arrayJoin([0, 1]), toStartOfMinute(ts), 1, 0 FROM events GROUP BY toStartOfMinute(ts)
