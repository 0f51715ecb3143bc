-- One row per accepted, de-duplicated event, enriched by the flow (money in EUR, session
-- resolved, device derived). Rows are current truth: an event moved to another session by
-- a merge, or processed again after a crash, is simply written again; `version` is the
-- write time (ns), so ReplacingMergeTree(version) keeps the newest and queries use FINAL.
CREATE TABLE IF NOT EXISTS events (
    ts DateTime64(3, 'UTC'),
    event_id String,
    type LowCardinality(String),
    user_id String,
    session_key String,
    country LowCardinality(String),      -- '' when absent
    device LowCardinality(String),
    channel LowCardinality(String),
    page String,
    product_id String,
    category LowCardinality(String),
    price_eur Nullable(Float64),
    quantity UInt32,
    query String,
    cart_value_eur Nullable(Float64),
    order_id String,
    revenue_eur Nullable(Float64),
    is_order UInt8,                      -- the first purchase carrying this order_id
    items Nested(product_id String, category String, price_eur Float64, quantity UInt32),
    version UInt64,
    topic LowCardinality(String),
    partition UInt16,
    offset UInt64,
    written_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, event_id);

-- One row per session: its whole aggregate as the flow knows it (start, end, sizes, the
-- attributes of its first event), rewritten on every change (newest `version` wins); a
-- session absorbed by a merge gets a tombstone (deleted = 1). A derived session key that
-- only existed before a crash can linger here without events: queries count a session only
-- when an event of the range carries its key.
CREATE TABLE IF NOT EXISTS sessions (
    session_key String,
    user_id String,
    start DateTime64(3, 'UTC'),
    end DateTime64(3, 'UTC'),
    country LowCardinality(String),
    device LowCardinality(String),
    channel LowCardinality(String),
    n_events UInt32,
    n_pageviews UInt32,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY session_key;

-- How far the flow has read each partition, in event time (complete_until, health).
CREATE TABLE IF NOT EXISTS flow_progress (
    topic LowCardinality(String),
    partition UInt16,
    max_ts SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    offset SimpleAggregateFunction(max, UInt64),
    updated_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
) ENGINE = AggregatingMergeTree
ORDER BY (topic, partition);

-- Repeats the flow dropped (event_id seen before), for the duplicates counters.
CREATE TABLE IF NOT EXISTS duplicates (
    ts DateTime64(3, 'UTC'),
    event_id String,
    topic LowCardinality(String),
    partition UInt16,
    offset UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset);
