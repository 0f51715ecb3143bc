-- A live experiment answered from its kept sums (docs/experiments.md, "Live experiments";
-- warehouse.experiment_totals.whole_sums). Sums taken while writes continue are exact for
-- the writes counted before their read began (ClickHouse reads a snapshot of parts): they
-- are the array query's answer over [first exposure, the data's end they hold). They still
-- answer that range after later writes when every later write lies at or after that end
-- (none can change the range), so each write also records the earliest time it adds
-- (`since`: its exposures' earliest, or its acts' when it has no exposure; an erasure or a
-- retention pass adds 1970, so no kept sums are read across it).
-- A take reads the write count first (every write it counts is committed, so in its
-- snapshot), with the newest time those writes hold (`until`), and takes the sums of the
-- data before it + 1 ms: a write its snapshot holds beyond the count adds after that end
-- (it is left out), unless it is a late one (then the sums wait for the next take).
ALTER TABLE experiment_marks
    ADD COLUMN IF NOT EXISTS since SimpleAggregateFunction(min, DateTime64(3, 'UTC'));

ALTER TABLE experiment_marks
    ADD COLUMN IF NOT EXISTS until SimpleAggregateFunction(max, DateTime64(3, 'UTC'));

-- Every write, by the time it was counted (ns), kept an hour: sums older than
-- warehouse.experiment_totals.LIVE_BOUND are never read stale, so older writes are not
-- asked about. Filled from every insert into experiment_marks (same rows, same times).
CREATE TABLE IF NOT EXISTS experiment_writes (
    experiment String,
    written UInt64,
    writes SimpleAggregateFunction(sum, UInt64),
    since SimpleAggregateFunction(min, DateTime64(3, 'UTC'))
) ENGINE = AggregatingMergeTree
ORDER BY (experiment, written)
TTL toDateTime(intDiv(written, 1000000000)) + INTERVAL 1 HOUR;

CREATE MATERIALIZED VIEW IF NOT EXISTS experiment_writes_mv TO experiment_writes AS
SELECT experiment, written, writes, since FROM experiment_marks;

-- the marks' view again, with `since` (a write the old view counted has since = 1970)
DROP VIEW IF EXISTS experiment_marks_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS experiment_marks_mv TO experiment_marks AS
SELECT experiment, count() AS writes, toUnixTimestamp64Nano(now64(9)) AS written,
    min(if(notEmpty(exposures), arrayMin(x -> x.1, exposures),
        if(notEmpty(acts), arrayMin(a -> a.1, acts), toDateTime64(0, 3, 'UTC')))) AS since,
    max(greatest(
        if(notEmpty(exposures), arrayMax(x -> x.1, exposures), toDateTime64(0, 3, 'UTC')),
        if(notEmpty(acts), arrayMax(a -> a.1, acts), toDateTime64(0, 3, 'UTC')))) AS until
FROM experiment_users
GROUP BY experiment;

-- the newest time of the experiments already there (no write: the count is unchanged)
INSERT INTO experiment_marks (experiment, writes, written, since, until)
SELECT experiment, 0, 0, toDateTime64(0, 3, 'UTC'),
    max(greatest(last_exposure,
        if(notEmpty(acts), arrayMax(a -> a.1, acts), toDateTime64(0, 3, 'UTC'))))
FROM experiment_users
GROUP BY experiment;

-- when the kept sums' write count was read (ns, ClickHouse's clock like `written`); 0:
-- taken before this migration, never read stale
ALTER TABLE experiment_totals ADD COLUMN IF NOT EXISTS taken UInt64 DEFAULT 0
