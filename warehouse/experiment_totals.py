"""The whole-experiment question from kept per-variant sums (docs/experiments.md, "Kept
sums"; warehouse/sql/010_experiment_totals.sql).

:func:`refresh` (the flow's refresh, every few seconds, beside the rollups') takes, for
every experiment written since its sums were last taken, the array query's answer over
all its data — per variant n and the sums of :data:`warehouse.experiments.SUM_COLUMNS` —
with what a range must cover for it to be that range's answer, and the experiment's write
count (``experiment_marks``) it was taken at.

:func:`kept_sums` answers ``[from, to)`` from them when nothing was written to the
experiment since (the write count is unchanged: replays, late events, moves, relabels,
erasures and retention all add to it) and the range covers every user's history: every
exposure in ``[from, to)``, every purchase and cart (any version) before ``to``, the
retention's horizon at least 14 days before the first exposure (no pre-period is cut), and
no event whose versions differ in time. Each user's values over such a range are those
over all their data, so the sums are the array query's. Otherwise None: the caller runs
the array query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from warehouse.clock import next_version
from warehouse.experiments_sql import PER_USER_SQL, SUMS_SQL

__all__ = ["Refreshed", "kept_span", "kept_sums", "mark_written", "refresh"]

PRE_PERIOD = timedelta(days=14)

# The array query over all of one experiment's data (no range: every exposure, every act),
# with, per variant, the span a range must cover and the users with moved events.
_TAKE_SQL = """
SELECT __SUMS__, min(first_ts), max(last_ts), max(last_act), sum(moved)
FROM (
    SELECT __PER_USER__,
        ex[-1].1 AS last_ts,
        if(empty(all_acts), toDateTime64(0, 3, 'UTC'), arrayMax(a -> a.1, all_acts)) AS last_act,
        arrayUniq(arrayMap(a -> (a.2, a.1), all_acts)) != arrayUniq(arrayMap(a -> a.2, all_acts))
            AS moved
    FROM (
        SELECT arraySort(exposures) AS ex, acts AS all_acts
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

# Per experiment: its write count, and whether its newest write is older than `settle` (a
# write still committing is not read half done).
_MARKS_SQL = """
SELECT experiment, sum(writes),
    max(written) < toUnixTimestamp64Nano(now64(9)) - {settle_ns:UInt64}
FROM experiment_marks
GROUP BY experiment
"""
_WRITES_SQL = "SELECT sum(writes) FROM experiment_marks WHERE experiment = {e:String}"
_KEPT_WRITES_SQL = "SELECT experiment, writes FROM experiment_totals FINAL"
_KEPT_SQL = """
SELECT writes, first_exposure, last_exposure, last_act, moved, variants, counts, sums,
    (SELECT sum(writes) FROM experiment_marks WHERE experiment = {e:String}),
    (SELECT toDateTime64(max(until), 3, 'UTC') FROM purged_until)
FROM experiment_totals FINAL
WHERE experiment = {e:String}
"""
_COLUMNS = ["experiment", "version", "writes", "first_exposure", "last_exposure", "last_act",
            "moved", "variants", "counts", "sums"]  # fmt: skip


@dataclass(frozen=True)
class Refreshed:
    """What one :func:`refresh` did: the experiments whose sums it took."""

    experiments: list[str]


def refresh(
    client: Client, *, settle: timedelta = timedelta(0), max_variants: int = 100
) -> Refreshed:
    """Take the sums of every experiment written since they were last taken (and not
    within ``settle``)."""
    kept = {str(e): int(w) for e, w in client.query(_KEPT_WRITES_SQL).result_rows}
    settle_ns = int(settle.total_seconds() * 1e9)
    taken = []
    for experiment, writes, settled in client.query(
        _MARKS_SQL, parameters={"settle_ns": settle_ns}
    ).result_rows:
        stale = settled and kept.get(str(experiment)) != int(writes)
        if stale and _take(client, str(experiment), int(writes), max_variants):
            taken.append(str(experiment))
    return Refreshed(taken)


def _take(client: Client, experiment: str, writes: int, max_variants: int) -> bool:
    rows = client.query(
        _TAKE_SQL, parameters={"e": experiment, "limit": max_variants + 2}
    ).result_rows
    # written meanwhile: what was read may hold more than `writes` says; the next refresh
    # takes them again (a write seen by the query whose count is not is only ever extra)
    after = client.query(_WRITES_SQL, parameters={"e": experiment}).result_rows[0][0]
    if int(after) != writes or not rows or len(rows) > max_variants + 1:
        return False
    row = [
        experiment,
        next_version(),
        writes,
        min(_utc(r[-4]) for r in rows),
        max(_utc(r[-3]) for r in rows),
        max(_utc(r[-2]) for r in rows),
        sum(int(r[-1]) for r in rows),
        [str(r[0]) for r in rows],
        [int(r[1]) for r in rows],
        [[float(x) for x in r[2:-4]] for r in rows],
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
            [[e, 1, now] for e in experiments],
            column_names=["experiment", "writes", "written"],
        )


def kept_sums(
    client: Client, experiment: str, start: datetime, end: datetime
) -> list[tuple[Any, ...]] | None:
    """The array query's rows (variant, users, sums) for ``[start, end)`` from the kept
    sums, when they answer it (see the module's docstring), else None."""
    found = client.query(_KEPT_SQL, parameters={"e": experiment}).result_rows
    if not found:
        return None
    writes, first, last_exposure, last_act, moved, variants, counts, sums, now, horizon = found[0]
    if now is None or int(writes) != int(now) or int(moved):
        return None
    first = _utc(first)
    if not (
        _utc(start) <= first
        and _utc(horizon) <= first - PRE_PERIOD
        and _utc(last_exposure) < _utc(end)
        and _utc(last_act) < _utc(end)
    ):
        return None
    return [(v, c, *s) for v, c, s in zip(variants, counts, sums, strict=True)]


def kept_span(client: Client, experiment: str) -> tuple[datetime, datetime] | None:
    """The first and last exposure of ``experiment`` from its kept sums, when they are
    current and nothing of it is before the retention's horizon (then they are those of
    ``exposures``), else None."""
    found = client.query(_KEPT_SQL, parameters={"e": experiment}).result_rows
    if not found:
        return None
    writes, first, last_exposure, *_, now, horizon = found[0]
    if now is None or int(writes) != int(now) or _utc(horizon) > _utc(first):
        return None
    return _utc(first), _utc(last_exposure)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
