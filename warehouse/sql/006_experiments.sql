-- CONTRACT §10: one row per accepted `experiment_exposure` event, written by the flow
-- (flows.exposures). Every exposure is kept, not only a user's first: a user's variant is
-- their first exposure *in the range asked for*, and who saw more than one variant is
-- known for any range (METRICS.md "Experiments"). Keyed by experiment then user, so one
-- experiment's users are one contiguous read. A batch written again after a crash
-- repeats rows with the same key; the experiment query's min/argMin/uniqExact per user
-- give the same answer with or without them (no FINAL needed), and merges drop them.
CREATE TABLE IF NOT EXISTS exposures (
    experiment String,
    user_id String,
    ts DateTime64(3, 'UTC'),
    event_id String,
    variant String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (experiment, user_id, ts, event_id);

-- CONTRACT §10 `PUT /v1/experiments/{key}`: a declared control and expected split
-- (weights by variant; empty: equal). The newest declaration (version) wins.
CREATE TABLE IF NOT EXISTS experiment_settings (
    experiment String,
    control String,
    weights Map(String, Float64),
    updated_at DateTime64(3, 'UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY experiment
