-- CONTRACT §10 at 1M users, the whole-experiment question (docs/experiments.md, "The fast
-- paths"): each exposed user's metric values over all their data, kept as scalars, and
-- per experiment the per-variant sums of them, so that `GET /v1/experiments/{key}` without
-- a range that cuts a user's history sums scalars (or reads a handful of rows) instead of
-- running the array functions of `experiment_users` over every user.
--
-- Kept like the rollups: every write to `experiment_users` (whoever makes it: the flow, a
-- relabel, a move, a backfill) marks its users dirty here (the view below: a row with
-- dirty = 1, version = 2 × the write's time in ns); the flow's refresh
-- (warehouse.experiment_values.refresh) recomputes a dirty user's values from the user's
-- whole `experiment_users` row and writes them at the mark's version + 1, so a user written
-- again meanwhile stays dirty (a newer, even version). A user whose row is gone (erased,
-- retained away) gets `gone` = 1 and vanishes from FINAL. Queries read FINAL: the newest
-- row of each user, and compute the dirty ones' values from `experiment_users` instead.
CREATE TABLE IF NOT EXISTS experiment_values (
    experiment String,
    user_id String,
    version UInt64,
    dirty UInt8,                          -- 1: written since, the values below not yet set
    gone UInt8,                           -- 1: no exposure left (ReplacingMergeTree's is_deleted)
    variant LowCardinality(String),       -- '' for a user exposed to two variants
    first_exposure DateTime64(3, 'UTC'),
    last_exposure DateTime64(3, 'UTC'),
    last_act DateTime64(3, 'UTC'),        -- the newest purchase or cart, any version
    moved UInt8,                          -- 1: an event whose versions differ in time
    conv UInt8,
    atc UInt8,
    orders UInt64,
    revenue Float64,
    conv_p UInt8,
    atc_p UInt8,
    orders_p UInt64,
    revenue_p Float64
) ENGINE = ReplacingMergeTree(version, gone)
ORDER BY (experiment, user_id);

-- Per experiment, the per-variant sums of its users' values when none was dirty, with the
-- fingerprint of the `experiment_values` rows they came from (users: count; stamp: the sum
-- of their versions, modulo 2^64): any write, recompute, erasure or retention of a user of
-- the experiment changes it, so a query uses the sums only while it is unchanged.
CREATE TABLE IF NOT EXISTS experiment_totals (
    experiment String,
    version UInt64,
    users UInt64,
    stamp UInt64,
    first_exposure DateTime64(3, 'UTC'),
    last_exposure DateTime64(3, 'UTC'),
    last_act DateTime64(3, 'UTC'),
    variants Array(String),
    counts Array(UInt64),
    sums Array(Array(Float64))
) ENGINE = ReplacingMergeTree(version)
ORDER BY experiment;

CREATE MATERIALIZED VIEW IF NOT EXISTS experiment_values_mv TO experiment_values AS
SELECT DISTINCT experiment, user_id, 2 * toUnixTimestamp64Nano(now64(9)) AS version,
    1 AS dirty
FROM experiment_users;

-- The users already there: marked dirty at the lowest version (any later mark is newer);
-- the first refresh computes their values (docs/benchmarks.md: its time at 1M users).
INSERT INTO experiment_values (experiment, user_id, version, dirty)
SELECT DISTINCT experiment, user_id, 2, 1 FROM experiment_users
