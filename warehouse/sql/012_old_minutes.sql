-- Old sparse minutes left to their hours (warehouse.rollups.refresh, `minutes_from`): on a
-- shop's history, weeks of a few events a minute, minute rows are as many as the events
-- and cost most of a backlog's refresh, while old ranges are read at hour and day grains.
-- The hour is recomputed from the raw rows; such a minute stays dirty (its rows are not
-- current: readers take it from the raw rows) and `rolled` records the dirty version its
-- hour took. A later refresh without `minutes_from` (a retention pass before raw rows go,
-- a rebuild) computes it as any other.
ALTER TABLE rollup_marks ADD COLUMN IF NOT EXISTS rolled SimpleAggregateFunction(max, UInt64) DEFAULT 0
