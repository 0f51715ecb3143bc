"""Retention (CONTRACT §11, ``PULSE_RETENTION``): raw events, sessions and the flow's
duplicates older than the horizon are dropped; the rollups' aggregate counts are kept.

A scheduled pass rather than ClickHouse TTLs: a TTL acts at merges, at a time nobody
chooses, on the server's clock, and a rollup minute recomputed after its raw rows went
would lose its counts. A pass, with the clock as an argument:

1. brings every rollup period before the horizon up to date from the raw rows still there
   (:func:`warehouse.rollups.refresh` up to the end of the hour holding the horizon: that
   hour is then current from its minutes and is never read from its half-dropped raw rows;
   with a retention close to the allowed lateness, or a flow far behind, periods not
   complete yet are computed too, and again once their last events come: more work, the
   same answers);
2. records the horizon (``purged_until``): the rollups never recompute a minute before it
   from raw rows again (a late event there is not counted and goes at the next pass);
3. deletes the raw rows before it: events by time, sessions that ended before it,
   duplicates, experiment exposures and the experiments' copy of purchases and carts
   (``user_acts``) by time, and the experiments' per-user rows left with nothing after it.

Distinct counts (visitors, sessions) of old ranges stay answerable from the rollups'
exact sets; everything needing raw rows (category slices, the funnel, top products,
experiments) covers only the retained span.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from warehouse.experiment_totals import mark_written
from warehouse.rollups import PASSES, refresh

__all__ = ["Purged", "expunge", "horizon_of", "purge"]

_WHERE = {"events": "ts < {h:DateTime64(3)}", "sessions": "end < {h:DateTime64(3)}",
          "duplicates": "ts < {h:DateTime64(3)}",
          "bot_events": "ts < {h:DateTime64(3)}",
          "exposures": "ts < {h:DateTime64(3)}",
          "user_acts": "ts < {h:DateTime64(3)}"}  # fmt: skip
# The experiment query's per-user rows (warehouse/sql/008_experiment_users.sql) hold sets
# of times, not one: the query ignores what lies before the horizon (it reads
# `purged_until`), and a pass drops the rows with nothing after it, and who is exposed
# where no exposure is left.
_EXPERIMENT_DELETES = (
    "DELETE FROM experiment_users WHERE last_exposure < {h:DateTime64(3)} "
    "AND arrayAll(a -> a.1 < {h:DateTime64(3)}, acts)",
    "DELETE FROM exposed_users WHERE (user_id, experiment) NOT IN "
    "(SELECT user_id, experiment FROM exposures)",
)
_MASKED = (*_WHERE, "experiment_users", "exposed_users")


@dataclass(frozen=True)
class Purged:
    """What one pass dropped."""

    horizon: datetime
    rows: dict[str, int]


def expunge(client: Client) -> list[str]:
    """Rewrite the parts holding deleted rows without them, in the background; the
    tables that had some.

    A lightweight ``DELETE`` (erasures, retention) masks rows at once; their bytes stay in
    their parts until ClickHouse merges them, which for an old part may be never. ``APPLY
    DELETED MASK`` is a mutation that rewrites those parts now: the flow's sink runs it
    at every pass (hourly), so an erased user is off the disk within the hour."""
    masked = [
        str(t)
        for (t,) in client.query(
            "SELECT DISTINCT table FROM system.parts WHERE database = currentDatabase() "
            "AND active AND has_lightweight_delete AND table IN {t:Array(String)}",
            parameters={"t": list(_MASKED)},
        ).result_rows
    ]
    for table in masked:
        client.command(f"ALTER TABLE {table} APPLY DELETED MASK")
    return masked


def horizon_of(now: datetime, retention: timedelta) -> datetime:
    """The retention's horizon at ``now``: whole minutes (the rollups' grain)."""
    return (now - retention).astimezone(UTC).replace(second=0, microsecond=0)


def purge(client: Client, retention: timedelta, now: datetime) -> Purged:
    """Drop the raw rows older than ``retention`` before ``now``, keeping the rollups. No
    refresh of this process runs meanwhile: one reading raw rows as they go would lose
    them (warehouse.rollups.PASSES)."""
    with PASSES:
        return _purge(client, retention, now)


def _purge(client: Client, retention: timedelta, now: datetime) -> Purged:
    horizon = horizon_of(now, retention)
    hour = horizon.replace(minute=0)
    refresh(client, hour if hour == horizon else hour + timedelta(hours=1))
    params = {"h": horizon}
    rows = {}
    for table, where in _WHERE.items():
        found = client.query(f"SELECT count() FROM {table} WHERE {where}", parameters=params)
        rows[table] = int(found.result_rows[0][0])
    client.insert(
        "purged_until",
        [[horizon, now.astimezone(UTC), rows["events"], rows["sessions"], rows["duplicates"]]],
        column_names=["until", "at", "events", "sessions", "duplicates"],
    )
    for table, where in _WHERE.items():
        if rows[table]:
            client.command(f"DELETE FROM {table} WHERE {where}", parameters=params)
    if rows["exposures"] or rows["user_acts"]:
        for sql in _EXPERIMENT_DELETES:
            client.command(sql, parameters=params)
        # the kept sums of every experiment are taken again (warehouse.experiment_totals)
        marked = client.query("SELECT DISTINCT experiment FROM experiment_marks").result_rows
        mark_written(client, [str(e) for (e,) in marked])
    return Purged(horizon, rows)
