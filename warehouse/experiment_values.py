"""The whole-experiment question from kept sums (docs/experiments.md, "The fast paths").

``experiment_values`` holds each exposed user's metric values over all their data, as
scalars, and ``experiment_totals`` the per-variant sums of them
(warehouse/sql/010_experiment_values.sql). :func:`refresh` keeps both current, like the
rollups: every write to ``experiment_users`` marks its users dirty (a materialised view),
and the refresh recomputes the dirty users' values from their whole row with the array
query's own per-user SQL (``warehouse.experiments.PER_USER_SQL``), then the sums of every
experiment whose users changed.

:func:`fast_sums` answers a range that covers every user's history — every exposure in
``[from, to)``, every purchase and cart before ``to``, and nothing of the retention's
horizon in their 14-day pre-period — from them:

- **totals**: no user dirty or odd, and the rows unchanged since the sums were taken (their
  count and the sum of their versions, read in the same scan as the sums): a handful of
  rows;
- **values**: otherwise, the sum of the clean users' scalars, with the users written since
  the last refresh (dirty) and those with an event whose versions differ in time (moved:
  the range's filter could keep another version than the whole row's newest) computed
  from their rows by the array query, when they are few.

Anything else (a range that cuts some user's history, many dirty users, nothing kept yet)
is ``None``: the caller runs the array query. A user written while a request runs is
counted with its values before or after the write, or not at all, never twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from warehouse.clock import next_version
from warehouse.experiments_sql import PER_USER_SQL, RANGE_SQL, ROWS_SQL, SUMS_SQL

__all__ = ["Refreshed", "fast_sums", "refresh"]

PRE_PERIOD = timedelta(days=14)
_DIRTY_SHARE = 20  # the values path while at most 1/20 of the users need their rows read
_MIN_DIRTY = 64  # ... or this many
_CHUNK = 200_000  # dirty users recomputed per statement (bounds the join's memory)
_WRAP = 1 << 64

# The dirty users old enough (``settle``: a write still committing its parts is not read
# half done), their values from their whole row at the mark's version + 1. A user whose row
# is gone (erased, retained away) gets ``gone`` and vanishes from FINAL.
_DIRTY = """experiment_values FINAL
    WHERE experiment = {e:String} AND dirty = 1 AND version < before
        AND cityHash64(user_id) % {parts:UInt32} = {part:UInt32}"""
_COMPUTE_SQL = (
    """
INSERT INTO experiment_values (experiment, user_id, version, dirty, gone, variant,
    first_exposure, last_exposure, last_act, moved,
    conv, atc, orders, revenue, conv_p, atc_p, orders_p, revenue_p)
WITH 2 * (toUnixTimestamp64Nano(now64(9)) - {settle_ns:UInt64}) AS before
SELECT {e:String}, user_id, version + 1, 0, empty(ex), variant,
    first_ts, ex[-1].1, last_act, moved,
    conv, atc, orders, revenue, conv_p, atc_p, orders_p, revenue_p
FROM (
    SELECT user_id, version, ex,
        if(empty(all_acts), toDateTime64(0, 3, 'UTC'), arrayMax(a -> a.1, all_acts)) AS last_act,
        arrayUniq(arrayMap(a -> (a.2, a.1), all_acts)) != arrayUniq(arrayMap(a -> a.2, all_acts))
            AS moved,
        __PER_USER__
    FROM (
        SELECT d.user_id AS user_id, d.version AS version, u.ex AS ex, u.all_acts AS all_acts
        FROM (SELECT user_id, version FROM __DIRTY__) AS d
        LEFT JOIN (
            SELECT user_id, arraySort(exposures) AS ex, acts AS all_acts
            FROM experiment_users FINAL
            WHERE experiment = {e:String} AND user_id IN (SELECT user_id FROM __DIRTY__)
        ) AS u USING (user_id)
    )
)
""".replace("__PER_USER__", PER_USER_SQL.replace("__ACTS__", "all_acts"))
    .replace("__DIRTY__", _DIRTY)
)

_MARKED_SQL = """
WITH 2 * (toUnixTimestamp64Nano(now64(9)) - {settle_ns:UInt64}) AS before
SELECT experiment, count() FROM experiment_values FINAL
WHERE dirty = 1 AND version < before
GROUP BY experiment
"""

# Per experiment: its rows' fingerprint, and whether any is dirty or moved.
_STAMPS_SQL = """
SELECT experiment, count(), sum(version), countIf(dirty = 1 OR moved = 1)
FROM experiment_values FINAL
GROUP BY experiment
"""

_TOTALS_STAMPS_SQL = "SELECT experiment, users, stamp FROM experiment_totals FINAL"

_CLEAN = "NOT (dirty = 1 OR moved = 1)"
# The sums of one experiment's values, with the fingerprint and span of the same rows.
_TOTALS_SQL = f"""
SELECT {SUMS_SQL}, sum(version), countIf(dirty = 1 OR moved = 1),
    min(first_exposure), max(last_exposure), max(last_act)
FROM experiment_values FINAL
WHERE experiment = {{e:String}}
GROUP BY variant
ORDER BY variant
LIMIT {{limit:UInt32}}
"""

_PROBE_SQL = f"""
SELECT count(), sum(version), countIf(NOT ({_CLEAN})),
    minIf(first_exposure, {_CLEAN}), maxIf(last_exposure, {_CLEAN}), maxIf(last_act, {_CLEAN}),
    (SELECT toDateTime64(max(until), 3, 'UTC') FROM purged_until)
FROM experiment_values FINAL
WHERE experiment = {{e:String}}
"""

_READ_TOTALS_SQL = """
SELECT users, stamp, variants, counts, sums FROM experiment_totals FINAL
WHERE experiment = {e:String}
"""

# The users needing their rows: one set, read once, that both halves use (a user is
# summed from its scalars or from its row, never both).
_ODD = """(SELECT user_id FROM experiment_values FINAL
    WHERE experiment = {e:String} AND (dirty = 1 OR moved = 1))"""
_VALUES_SQL = f"""
WITH {RANGE_SQL}
SELECT {SUMS_SQL}
FROM (
    SELECT toString(variant) AS variant, conv, atc, orders, revenue,
        conv_p, atc_p, orders_p, revenue_p
    FROM experiment_values FINAL
    WHERE experiment = {{e:String}} AND dirty = 0 AND moved = 0
        AND user_id NOT IN {_ODD}
    UNION ALL
    {ROWS_SQL.replace("__USERS__", f"AND user_id IN {_ODD}")}
)
GROUP BY variant
ORDER BY variant
LIMIT {{limit:UInt32}}
"""


@dataclass(frozen=True)
class Refreshed:
    """What one :func:`refresh` did: users whose values were recomputed, experiments whose
    sums were taken."""

    users: int
    experiments: int


def refresh(client: Client, *, settle: timedelta = timedelta(0), max_variants: int = 100) -> Refreshed:
    """Recompute the values of the users marked dirty at least ``settle`` ago, then the
    per-variant sums of every experiment whose rows changed and have no dirty user."""
    settle_ns = int(settle.total_seconds() * 1e9)
    marked = client.query(_MARKED_SQL, parameters={"settle_ns": settle_ns}).result_rows
    users = 0
    for experiment, count in marked:
        parts = max(1, -(-int(count) // _CHUNK))
        for part in range(parts):
            client.command(
                _COMPUTE_SQL,
                parameters={"e": experiment, "settle_ns": settle_ns, "parts": parts, "part": part},
            )
        users += int(count)
    kept = {
        str(e): (int(n), int(stamp))
        for e, n, stamp in client.query(_TOTALS_STAMPS_SQL).result_rows
    }
    taken = 0
    for experiment, n, stamp, odd in client.query(_STAMPS_SQL).result_rows:
        if odd or kept.get(str(experiment)) == (int(n), int(stamp)):
            continue
        taken += _take_totals(client, str(experiment), max_variants)
    return Refreshed(users, taken)


def _take_totals(client: Client, experiment: str, max_variants: int) -> int:
    rows = client.query(
        _TOTALS_SQL, parameters={"e": experiment, "limit": max_variants + 2}
    ).result_rows
    if not rows or len(rows) > max_variants + 1 or any(r[-4] for r in rows):
        return 0  # a user turned dirty meanwhile, or not an A/B test: the values path
    n = sum(int(r[1]) for r in rows)
    stamp = sum(int(r[-5]) for r in rows) % _WRAP
    first = min(_utc(r[-3]) for r in rows)
    last_exposure = max(_utc(r[-2]) for r in rows)
    last_act = max(_utc(r[-1]) for r in rows)
    client.insert(
        "experiment_totals",
        [[experiment, next_version(), n, stamp, first, last_exposure, last_act,
          [str(r[0]) for r in rows], [int(r[1]) for r in rows],
          [[float(x) for x in r[2:-5]] for r in rows]]],
        column_names=["experiment", "version", "users", "stamp", "first_exposure",
                      "last_exposure", "last_act", "variants", "counts", "sums"],
    )  # fmt: skip
    return 1


def fast_sums(
    client: Client, experiment: str, start: datetime, end: datetime, *, cuped: bool, limit: int
) -> tuple[str, list[tuple[Any, ...]]] | None:
    """``(path, rows)`` with the array query's rows (variant, users, sums) when the kept
    values answer ``[start, end)`` (see the module's docstring), else None."""
    n, stamp, odd, first, last_exposure, last_act, horizon = client.query(
        _PROBE_SQL, parameters={"e": experiment}
    ).result_rows[0]
    n, odd = int(n), int(odd)
    if n == 0 or odd == n or not _covers(start, end, first, last_exposure, last_act, horizon):
        return None
    if odd == 0:
        kept = client.query(_READ_TOTALS_SQL, parameters={"e": experiment}).result_rows
        if kept and (int(kept[0][0]), int(kept[0][1])) == (n, int(stamp)):
            _, _, variants, counts, sums = kept[0]
            return "totals", [(v, c, *s) for v, c, s in zip(variants, counts, sums, strict=True)]
    if odd > max(_MIN_DIRTY, n // _DIRTY_SHARE):
        return None
    pre_lo = start - PRE_PERIOD if cuped else start
    rows = client.query(
        _VALUES_SQL,
        parameters={"e": experiment, "lo": start, "hi": end, "pre_lo": pre_lo, "limit": limit},
    ).result_rows
    return "values", rows


def _covers(
    start: datetime, end: datetime, first: Any, last_exposure: Any, last_act: Any, horizon: Any
) -> bool:
    """Whether ``[start, end)`` holds the whole history of every clean user: its values
    over the range are then its values over all its data."""
    first = _utc(first)
    return (
        first >= _utc(start)
        and first - PRE_PERIOD >= _utc(horizon)
        and _utc(last_exposure) < _utc(end)
        and _utc(last_act) < _utc(end)
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
