-- CONTRACT §10 at 1M users (docs/benchmarks.md "Experiments: latency"): one row per
-- (experiment, user) holding everything the experiment query needs for any range, kept by
-- ClickHouse itself as rows arrive in `events` and `exposures` (whoever writes them: the
-- flow, a relabel, a move, a backfill), so `GET /v1/experiments/{key}` is one scan of one
-- experiment's rows, without joining or de-duplicating events per user.
--
-- Exactly once by construction: every column is a set (groupUniqArrayArray), so a batch
-- written again after a crash, or the same fact reaching a row by two paths, adds nothing.
-- Order-free: a purchase written before its user's exposure is found by the exposure's
-- view (it reads the user's acts so far), one written after by the acts' view (it reads
-- who is exposed); the writer inserts events before exposures, so one of the two sees it.
-- A row's parts are merged by ClickHouse (or at read time: the query groups by user).

-- The purchase and add_to_cart events (the only ones an experiment metric reads), narrow
-- and by user: what the exposures' view looks up. Every version of an event is kept
-- (ReplacingMergeTree drops only exact repeats of a version); readers take the newest.
CREATE TABLE IF NOT EXISTS user_acts (
    user_id String,
    ts DateTime64(3, 'UTC'),
    event_id String,
    kind UInt8,                          -- 1 purchase, 2 add_to_cart
    is_order UInt8,
    order_id String,
    revenue Float64,                     -- EUR, 0 when absent
    version UInt64
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (user_id, ts, event_id, version);

-- Who is exposed to which experiment, by user: what the acts' view looks up.
CREATE TABLE IF NOT EXISTS exposed_users (
    user_id String,
    experiment String
) ENGINE = ReplacingMergeTree
ORDER BY (user_id, experiment);

-- exposures: (ts, variant) of every exposure, with their first and last time (a range
-- without any is skipped before the arrays are read); acts: (ts,
-- event_id, kind, is_order, order_id, revenue, version) of every version of the user's
-- purchase and add_to_cart events. The query keeps the newest version of each event_id.
CREATE TABLE IF NOT EXISTS experiment_users (
    experiment String,
    user_id String,
    first_exposure SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_exposure SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    exposures SimpleAggregateFunction(groupUniqArrayArray,
        Array(Tuple(DateTime64(3, 'UTC'), String))),
    acts SimpleAggregateFunction(groupUniqArrayArray,
        Array(Tuple(DateTime64(3, 'UTC'), String, UInt8, UInt8, String, Float64, UInt64)))
) ENGINE = AggregatingMergeTree
ORDER BY (experiment, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS user_acts_mv TO user_acts AS
SELECT user_id, ts, event_id, if(type = 'purchase', 1, 2) AS kind, is_order, order_id,
    coalesce(revenue_eur, 0) AS revenue, version
FROM events
WHERE type IN ('purchase', 'add_to_cart');

CREATE MATERIALIZED VIEW IF NOT EXISTS exposed_users_mv TO exposed_users AS
SELECT DISTINCT user_id, experiment FROM exposures;

-- An exposure: the (experiment, user) row gets it and every act of the user so far.
CREATE MATERIALIZED VIEW IF NOT EXISTS experiment_users_exposures_mv TO experiment_users AS
SELECT x.experiment AS experiment, x.user_id AS user_id, x.first_exposure AS first_exposure,
    x.last_exposure AS last_exposure, x.exposures AS exposures,
    a.acts AS acts
FROM (
    SELECT experiment, user_id, min(ts) AS first_exposure, max(ts) AS last_exposure,
        groupUniqArray((ts, variant)) AS exposures
    FROM exposures
    GROUP BY experiment, user_id
) AS x
LEFT JOIN (
    SELECT user_id,
        groupUniqArray((ts, event_id, kind, is_order, order_id, revenue, version)) AS acts
    FROM user_acts
    WHERE user_id IN (SELECT user_id FROM exposures)
    GROUP BY user_id
) AS a ON a.user_id = x.user_id;

-- An act: the rows of every experiment its user is exposed to get it.
CREATE MATERIALIZED VIEW IF NOT EXISTS experiment_users_acts_mv TO experiment_users AS
SELECT x.experiment AS experiment, a.user_id AS user_id,
    -- no exposure: neutral for min, max and the sets
    toDateTime64('2299-12-31 00:00:00', 3, 'UTC') AS first_exposure,
    toDateTime64(0, 3, 'UTC') AS last_exposure,
    CAST([], 'Array(Tuple(DateTime64(3, \'UTC\'), String))') AS exposures, a.acts AS acts
FROM (
    SELECT user_id,
        groupUniqArray((ts, event_id, kind, is_order, order_id, revenue, version)) AS acts
    FROM user_acts
    GROUP BY user_id
) AS a
INNER JOIN (
    SELECT user_id, experiment FROM exposed_users
    WHERE user_id IN (SELECT user_id FROM user_acts)
) AS x ON x.user_id = a.user_id;

-- The rows of what was written before this migration, after the views exist (a row they
-- also write meanwhile is the same set member twice: nothing changes). Who is exposed
-- first, so that the acts copied next reach their experiments' rows (the acts' view),
-- then the exposures themselves.
INSERT INTO exposed_users SELECT DISTINCT user_id, experiment FROM exposures;

INSERT INTO user_acts
SELECT user_id, ts, event_id, if(type = 'purchase', 1, 2), is_order, order_id,
    coalesce(revenue_eur, 0), version
FROM events
WHERE type IN ('purchase', 'add_to_cart');

INSERT INTO experiment_users
SELECT experiment, user_id, min(ts), max(ts), groupUniqArray((ts, variant)),
    CAST([], 'Array(Tuple(DateTime64(3, \'UTC\'), String, UInt8, UInt8, String, Float64, UInt64))')
FROM exposures
GROUP BY experiment, user_id
