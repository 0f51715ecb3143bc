-- CONTRACT §10 at 1M users, the whole-experiment question (docs/experiments.md, "Kept
-- sums"): per experiment, the per-variant sums of the array query over all its data, kept
-- by the flow's refresh (warehouse.experiment_totals), so `GET /v1/experiments/{key}` with
-- a range that covers every user's history reads a handful of rows instead of running the
-- array functions of `experiment_users` over every user.
--
-- Valid like the rollups' rows: every write to `experiment_users` (whoever makes it: the
-- flow, a relabel, a move, a backfill; through the view below) adds its row count to the
-- experiment's `writes`, erasures and retention add one, and kept sums are used only while
-- the experiment's `writes` equals the `writes` they were taken at. A sum never decreases
-- and merges keep it, so a change is never missed, whatever the order of merges.
CREATE TABLE IF NOT EXISTS experiment_marks (
    experiment String,
    writes SimpleAggregateFunction(sum, UInt64),
    written SimpleAggregateFunction(max, UInt64)   -- the newest write's time, ns
) ENGINE = AggregatingMergeTree
ORDER BY experiment;

-- The sums of every variant ('' : the users exposed to two variants), in the order of
-- warehouse.experiments.SUM_COLUMNS, with what a range must cover for them to be its
-- answer: the first and last exposure, the newest purchase or cart (any version), and how
-- many users have an event whose versions differ in time (moved: a range could keep
-- another version than the newest, so the kept sums are never used while there is one).
CREATE TABLE IF NOT EXISTS experiment_totals (
    experiment String,
    version UInt64,
    writes UInt64,
    first_exposure DateTime64(3, 'UTC'),
    last_exposure DateTime64(3, 'UTC'),
    last_act DateTime64(3, 'UTC'),
    moved UInt64,
    variants Array(String),
    counts Array(UInt64),
    sums Array(Array(Float64))
) ENGINE = ReplacingMergeTree(version)
ORDER BY experiment;

CREATE MATERIALIZED VIEW IF NOT EXISTS experiment_marks_mv TO experiment_marks AS
SELECT experiment, count() AS writes, toUnixTimestamp64Nano(now64(9)) AS written
FROM experiment_users
GROUP BY experiment;

-- The experiments already there: one write each, so the first refresh takes their sums
-- (docs/benchmarks.md: its time at 1M users).
INSERT INTO experiment_marks (experiment, writes, written)
SELECT DISTINCT experiment, 1, 0 FROM experiment_users
