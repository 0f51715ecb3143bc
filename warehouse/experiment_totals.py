"""The whole-experiment question from kept per-variant sums (docs/experiments.md, "Kept
sums"; warehouse/sql/010_experiment_totals.sql).

:func:`refresh` (the flow's refresh, every few seconds, beside the rollups') takes, for
every experiment written since its sums were last taken, the array query's answer over
all the data its write count counted — per variant n and the sums of
:data:`warehouse.experiments.SUM_COLUMNS` — with what a range must cover for it to be
that range's answer, and the experiment's write count (``experiment_marks``) it was taken
at (read before the take, which leaves out the data after the counted writes' newest time:
warehouse/sql/011_experiment_live.sql).

:func:`kept_sums` answers ``[from, to)`` from them when nothing was written to the
experiment since (the write count is unchanged: replays, late events, moves, relabels,
erasures and retention all add to it) and the range covers every user's history: every
exposure in ``[from, to)``, every purchase and cart (any version) before ``to``, the
retention's horizon at least 14 days before the first exposure (no pre-period is cut), and
no event whose versions differ in time. Each user's values over such a range are those
over all their data, so the sums are the array query's. Otherwise None: the caller runs
the array query.

:func:`whole_sums` answers the question without a range (docs/experiments.md, "Live
experiments"): from the kept sums over ``[first exposure, now)`` when nothing was written
since, and otherwise — a live experiment — over ``[first exposure, end)``, ``end`` just
after the newest exposure or act the sums hold, when they were taken at most
:data:`LIVE_BOUND` ago and every write since lies at or after ``end`` (so none changes
that range: an erasure or retention pass never does). The refresh takes the sums of an
experiment still being written at most every :data:`LIVE_EVERY`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from ingest.times import as_utc
from warehouse.clock import next_version
from warehouse.experiments_sql import PER_USER_SQL, PRE_PERIOD, SUMS_SQL

__all__ = [
    "LIVE_BOUND",
    "LIVE_EVERY",
    "Refreshed",
    "WholeSums",
    "kept_span",
    "kept_sums",
    "mark_written",
    "refresh",
    "whole_sums",
]

# A live experiment's sums are taken at most this often: a take reads every user's row
# (0.6-0.8 s of CPU at 1M users, docs/benchmarks.md), so a busy 1M-user experiment costs
# the flow <= ~2.5 % of a core, while a reader sees data at most ~LIVE_EVERY old.
LIVE_EVERY = timedelta(seconds=30)
# Kept sums older than this are never read while writes continue: LIVE_EVERY, plus the
# flow's refresh interval (5 s, spaced out to 4x a slow refresh) and the take's own time,
# with room to spare; beyond it the array query answers.
LIVE_BOUND = timedelta(seconds=60)
_MS = timedelta(milliseconds=1)

# The array query over one experiment's data before `cut` (every exposure, every act the
# counted writes hold; a write committed after the count adds after it, unless late), with,
# per variant, the span a range must cover and the users with moved events.
_TAKE_SQL = """
SELECT __SUMS__, min(first_ts), max(last_ts), max(last_act), sum(moved)
FROM (
    SELECT __PER_USER__,
        ex[-1].1 AS last_ts,
        if(empty(all_acts), toDateTime64(0, 3, 'UTC'), arrayMax(a -> a.1, all_acts)) AS last_act,
        arrayUniq(arrayMap(a -> (a.2, a.1), all_acts)) != arrayUniq(arrayMap(a -> a.2, all_acts))
            AS moved
    FROM (
        SELECT arraySort(arrayFilter(x -> x.1 < {cut:DateTime64(3)}, exposures)) AS ex,
            arrayFilter(a -> a.1 < {cut:DateTime64(3)}, acts) AS all_acts
        FROM experiment_users FINAL
        WHERE experiment = {e:String}
    )
    WHERE notEmpty(ex)
)
GROUP BY variant
ORDER BY variant
LIMIT {limit:UInt32}
""".replace("__SUMS__", SUMS_SQL).replace(
    "__PER_USER__", PER_USER_SQL.replace("__ACTS__", "all_acts")
)

# Per experiment: its write count, whether its newest write is older than `settle` (a
# quiet experiment is taken at once; a live one at most every LIVE_EVERY), and the time.
_MARKS_SQL = """
SELECT experiment, sum(writes),
    max(written) < toUnixTimestamp64Nano(now64(9)) - {settle_ns:UInt64},
    toUnixTimestamp64Nano(now64(9))
FROM experiment_marks
GROUP BY experiment
"""
# The write count a take's sums hold (read before the take: every write it counts is
# visible to the take's snapshot), the newest time those writes hold, and when it was read
_WRITES_SQL = """
SELECT sum(writes), max(until), toUnixTimestamp64Nano(now64(9))
FROM experiment_marks WHERE experiment = {e:String}
"""
_KEPT_WRITES_SQL = "SELECT experiment, writes, taken FROM experiment_totals FINAL"
# The writes counted after the kept sums' count was read, and the earliest time they add
_SINCE_SQL = """
SELECT sum(writes), min(since), toUnixTimestamp64Nano(now64(9))
FROM experiment_writes
WHERE experiment = {e:String} AND written > {taken:UInt64}
"""
_KEPT_SQL = """
SELECT writes, first_exposure, last_exposure, last_act, moved, variants, counts, sums,
    (SELECT sum(writes) FROM experiment_marks WHERE experiment = {e:String}),
    (SELECT toDateTime64(max(until), 3, 'UTC') FROM purged_until),
    taken
FROM experiment_totals FINAL
WHERE experiment = {e:String}
"""
_COLUMNS = ["experiment", "version", "writes", "first_exposure", "last_exposure", "last_act",
            "moved", "variants", "counts", "sums", "taken"]  # fmt: skip


@dataclass(frozen=True)
class WholeSums:
    """The whole-experiment answer from kept sums: the range they are exact for, the
    array query's rows (variant, users, sums) over it, and whether writes came since
    (``live``: ``end`` is then the end of the data they hold)."""

    start: datetime
    end: datetime
    rows: list[tuple[Any, ...]]
    live: bool


@dataclass(frozen=True)
class Refreshed:
    """What one :func:`refresh` did: the experiments whose sums it took."""

    experiments: list[str]


def refresh(
    client: Client,
    *,
    settle: timedelta = timedelta(0),
    live_every: timedelta = LIVE_EVERY,
    max_variants: int = 100,
) -> Refreshed:
    """Take the sums of every experiment written since they were last taken: at once
    when its newest write is older than ``settle``, else (a live experiment) when they
    were taken at least ``live_every`` ago."""
    kept = {str(e): (int(w), int(t)) for e, w, t in client.query(_KEPT_WRITES_SQL).result_rows}
    settle_ns = int(settle.total_seconds() * 1e9)
    every_ns = int(live_every.total_seconds() * 1e9)
    taken = []
    for experiment, writes, settled, now_ns in client.query(
        _MARKS_SQL, parameters={"settle_ns": settle_ns}
    ).result_rows:
        had_writes, had_taken = kept.get(str(experiment), (-1, 0))
        due = settled or int(now_ns) - had_taken >= every_ns
        if had_writes != int(writes) and due and _take(client, str(experiment), max_variants):
            taken.append(str(experiment))
    return Refreshed(taken)


def _take(client: Client, experiment: str, max_variants: int) -> bool:
    # the count first: every write it counts is committed, so in the take's snapshot; the
    # data a write the snapshot holds beyond it adds after the counted writes' newest time
    # is left out (a late one is not: whole_sums then waits for the next take)
    writes, until, taken = client.query(_WRITES_SQL, parameters={"e": experiment}).result_rows[0]
    cut = as_utc(until) + _MS
    rows = client.query(
        _TAKE_SQL, parameters={"e": experiment, "cut": cut, "limit": max_variants + 2}
    ).result_rows
    if not rows or len(rows) > max_variants + 1:
        return False
    row = [
        experiment,
        next_version(),
        int(writes),
        min(as_utc(r[-4]) for r in rows),
        max(as_utc(r[-3]) for r in rows),
        max(as_utc(r[-2]) for r in rows),
        sum(int(r[-1]) for r in rows),
        [str(r[0]) for r in rows],
        [int(r[1]) for r in rows],
        [[float(x) for x in r[2:-4]] for r in rows],
        int(taken),
    ]
    client.insert("experiment_totals", [row], column_names=_COLUMNS)
    return True


def mark_written(client: Client, experiments: list[str]) -> None:
    """Count a write to ``experiments`` that their rows' view does not see (an erasure, a
    retention pass): their kept sums are no longer used, and the refresh takes them
    again. Call it after the change."""
    if experiments:
        now = next_version()
        client.insert(
            "experiment_marks",
            [[e, 1, now, datetime.fromtimestamp(0, UTC)] for e in experiments],
            column_names=["experiment", "writes", "written", "since"],
        )


def kept_sums(
    client: Client, experiment: str, start: datetime, end: datetime
) -> list[tuple[Any, ...]] | None:
    """The array query's rows (variant, users, sums) for ``[start, end)`` from the kept
    sums, when they answer it (see the module's docstring), else None."""
    found = client.query(_KEPT_SQL, parameters={"e": experiment}).result_rows
    if not found:
        return None
    writes, first, last_exposure, last_act, moved, variants, counts, sums, now, horizon, _ = found[
        0
    ]
    if now is None or int(writes) != int(now) or int(moved):
        return None
    first = as_utc(first)
    if not (
        as_utc(start) <= first
        and as_utc(horizon) <= first - PRE_PERIOD
        and as_utc(last_exposure) < as_utc(end)
        and as_utc(last_act) < as_utc(end)
    ):
        return None
    return [(v, c, *s) for v, c, s in zip(variants, counts, sums, strict=True)]


def whole_sums(
    client: Client, experiment: str, now: datetime, *, bound: timedelta = LIVE_BOUND
) -> WholeSums | None:
    """The answer without a range from the kept sums (see the module's docstring): over
    ``[first exposure, max(now, last exposure + 1 ms))`` when nothing was written since
    they were taken, over ``[first exposure, end of their data)`` when every write since
    lies at or after that end and they are at most ``bound`` old; else None."""
    found = client.query(_KEPT_SQL, parameters={"e": experiment}).result_rows
    if not found:
        return None
    writes, first, last_exposure, last_act, moved, variants, counts, sums, count, horizon, taken = (
        found[0]
    )
    first, last_exposure, last_act = as_utc(first), as_utc(last_exposure), as_utc(last_act)
    if count is None or int(moved) or as_utc(horizon) > first - PRE_PERIOD:
        return None
    rows = [(v, c, *s) for v, c, s in zip(variants, counts, sums, strict=True)]
    if int(count) == int(writes):
        end = max(as_utc(now), last_exposure + _MS)
        return WholeSums(first, end, rows, live=False) if last_act < end else None
    end = max(last_exposure, last_act) + _MS
    after, since, now_ns = client.query(
        _SINCE_SQL, parameters={"e": experiment, "taken": int(taken)}
    ).result_rows[0]
    # every write not counted by the sums was counted after their count was read (none
    # in flight then), adds nothing before their end, and they are young enough
    if (
        not int(taken)
        or int(after) != int(count) - int(writes)
        or as_utc(since) < end
        or int(now_ns) - int(taken) > bound.total_seconds() * 1e9
    ):
        return None
    return WholeSums(first, end, rows, live=True)


def kept_span(client: Client, experiment: str) -> tuple[datetime, datetime] | None:
    """The first and last exposure of ``experiment`` from its kept sums, when they are
    current and nothing of it is before the retention's horizon (then they are those of
    ``exposures``), else None."""
    found = client.query(_KEPT_SQL, parameters={"e": experiment}).result_rows
    if not found:
        return None
    writes, first, last_exposure, *_, now, horizon, _taken = found[0]
    if now is None or int(writes) != int(now) or as_utc(horizon) > as_utc(first):
        return None
    return as_utc(first), as_utc(last_exposure)
