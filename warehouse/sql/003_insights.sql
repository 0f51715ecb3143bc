-- Insights raised by the detector (insights/store.py). One row per insight and version:
-- the detector rewrites an insight as it grows, people acknowledge, resolve and label it;
-- ReplacingMergeTree(version) keeps the newest, queries use FINAL.
CREATE TABLE IF NOT EXISTS insights (
    id String,
    status LowCardinality(String),            -- open | acknowledged | resolved
    metric LowCardinality(String),
    slice String,                             -- country=DE,device=mobile | all
    interval LowCardinality(String),          -- 1m | 1h
    direction LowCardinality(String),         -- up | down
    change Float64,                           -- relative, observed / expected - 1
    observed Float64,
    expected Float64,
    severity LowCardinality(String),          -- critical | warning | info
    impact_eur_per_hour Float64,
    explanation LowCardinality(String),       -- rate | mix | volume | ''
    started_at DateTime64(3, 'UTC'),
    detected_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    acknowledged_at Nullable(DateTime64(3, 'UTC')),
    resolved_at Nullable(DateTime64(3, 'UTC')),
    resolved_by LowCardinality(String),       -- auto | user | ''
    summary String,
    description String,
    recommendation String,
    contributors String,                      -- JSON list of drill-down contributions
    members String,                           -- JSON list of the grouped series anomalies
    feedback LowCardinality(String),          -- true_positive | false_positive | ''
    feedback_note String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id;

-- Every feedback label as given (the insight row keeps the latest).
CREATE TABLE IF NOT EXISTS insight_feedback (
    insight_id String,
    label LowCardinality(String),
    note String,
    at DateTime64(3, 'UTC')
) ENGINE = MergeTree
ORDER BY (insight_id, at);

-- Durable outbox of alert notifications: a row is written before anything is sent and
-- marked delivered only after the receiver said 2xx, so an Alertmanager or webhook outage
-- delays notifications but loses none.
CREATE TABLE IF NOT EXISTS alert_outbox (
    id String,                                -- insight_id/target/event
    insight_id String,
    target LowCardinality(String),            -- alertmanager | webhook
    event LowCardinality(String),             -- firing | resolved
    payload String,                           -- JSON body (webhook) or alert (alertmanager)
    created_at DateTime64(3, 'UTC'),
    attempts UInt32,
    last_error String,
    next_attempt_at DateTime64(3, 'UTC'),
    delivered_at Nullable(DateTime64(3, 'UTC')),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id;
