-- CONTRACT §9: events sent by known crawlers, bots and monitors (flagged at the edge by
-- their user agent, or by the flow for records that bypassed it). Stored here and nowhere
-- else, so no METRICS.md number sees them (METRICS.md, "What every number leaves out").
-- A record read again after a crash is written again with a newer `version`.
CREATE TABLE IF NOT EXISTS bot_events (
    ts DateTime64(3, 'UTC'),
    event_id String,
    type LowCardinality(String),
    user_id String,
    user_agent String,
    page String,
    version UInt64,
    topic LowCardinality(String),
    partition UInt16,
    offset UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, event_id)
