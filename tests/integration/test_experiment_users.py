"""The experiment query's per-user rows (warehouse/sql/008_experiment_users.sql) against
the raw tables: whatever order rows arrive in, however often a batch is written again,
whatever newer versions of an event replace older ones, ``experiment_sums`` (one scan of
``experiment_users``) equals the query it replaced, which read ``exposures`` and
``events`` directly (kept here as the reference), for ranges at any millisecond; erasure
and retention cover the new tables.
"""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta

import pytest

from warehouse.client import connect
from warehouse.erasure import erase_rows
from warehouse.experiments import MAX_VARIANTS, SUM_COLUMNS, experiment_sums
from warehouse.experiments_sql import SUMS_SQL
from warehouse.migrate import SQL_DIR, migrate
from warehouse.retention import purge

T0 = datetime(2025, 6, 2, tzinfo=UTC)
EVENT_COLUMNS = ["ts", "event_id", "type", "user_id", "order_id", "revenue_eur", "is_order",
                 "version"]  # fmt: skip
EXPOSURE_COLUMNS = ["experiment", "user_id", "ts", "event_id", "variant", "version"]

# The query experiment_sums used before the per-user rows: the raw exposures and events.
_RAW_SQL = """
WITH
exposed AS (
    SELECT user_id, min(ts) AS first_ts,
        if(min(variant) = max(variant), argMin(variant, ts), '') AS variant
    FROM exposures
    WHERE experiment = {e:String} AND ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)}
    GROUP BY user_id
),
acts AS (
    SELECT r.1 AS user_id, r.2 AS type, r.3 AS ts, r.4 AS is_order, r.5 AS order_id,
        r.6 AS revenue
    FROM (
        SELECT argMax((user_id, type, ts, is_order, order_id, coalesce(revenue_eur, 0)),
            version) AS r
        FROM events
        WHERE type IN ('purchase', 'add_to_cart')
            AND ts >= {pre_lo:DateTime64(3)} AND ts < {hi:DateTime64(3)}
            -- the raw rows, not `exposed`: a CTE is computed again where it is used
            AND user_id IN (SELECT user_id FROM exposures WHERE experiment = {e:String}
                AND ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)})
        GROUP BY event_id
    )
),
per_user AS (
    SELECT x.variant AS variant,
        max(a.type = 'purchase' AND a.ts >= x.first_ts) AS conv,
        max(a.type = 'add_to_cart' AND a.ts >= x.first_ts) AS atc,
        uniqExactIf(a.order_id, a.is_order = 1 AND a.ts >= x.first_ts) AS orders,
        sumIf(a.revenue, a.is_order = 1 AND a.ts >= x.first_ts) AS revenue,
        max(a.type = 'purchase' AND a.ts < x.first_ts
            AND a.ts >= x.first_ts - INTERVAL 14 DAY) AS conv_p,
        max(a.type = 'add_to_cart' AND a.ts < x.first_ts
            AND a.ts >= x.first_ts - INTERVAL 14 DAY) AS atc_p,
        uniqExactIf(a.order_id, a.is_order = 1 AND a.ts < x.first_ts
            AND a.ts >= x.first_ts - INTERVAL 14 DAY) AS orders_p,
        sumIf(a.revenue, a.is_order = 1 AND a.ts < x.first_ts
            AND a.ts >= x.first_ts - INTERVAL 14 DAY) AS revenue_p
    FROM exposed AS x LEFT JOIN acts AS a ON a.user_id = x.user_id
    GROUP BY x.user_id, x.variant
)
SELECT __SUMS__
FROM per_user
GROUP BY variant
ORDER BY variant
LIMIT {limit:UInt32}
""".replace("__SUMS__", SUMS_SQL)  # the same sums; the per-user values from the raw rows


def _raw(client, experiment: str, start: datetime, end: datetime, cuped: bool = True):
    rows = client.query(
        _RAW_SQL,
        parameters={"e": experiment, "lo": start, "hi": end,
                    "pre_lo": start - timedelta(days=14) if cuped else start,
                    "limit": MAX_VARIANTS + 2},
    ).result_rows  # fmt: skip
    return {str(v): (int(n), [float(x) for x in xs]) for v, n, *xs in rows}


def _new(client, experiment: str, start: datetime, end: datetime, cuped: bool = True):
    got = experiment_sums(client, experiment, start, end, cuped=cuped)
    out = {v: (n, [got.sums[v][c] for c in SUM_COLUMNS]) for v, n in got.users.items()}
    if got.multiple_exposures:
        out[""] = (got.multiple_exposures, None)
    return out


def _same(client, experiment: str, start: datetime, end: datetime, cuped: bool = True) -> None:
    raw = _raw(client, experiment, start, end, cuped)
    new = _new(client, experiment, start, end, cuped)
    assert set(raw) == set(new), (start, end)
    for variant, (n, sums) in new.items():
        assert n == raw[variant][0], (variant, start, end)
        if sums is not None:
            assert sums == pytest.approx(raw[variant][1], rel=1e-9, abs=1e-9), (variant, start, end)


def _at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _random_rows(rng: random.Random, users: int):
    """Exposures (one to three per user, 3 % to two variants) and purchases, carts, views
    around them: before the exposure (the pre-period and older), after it, after ranges."""
    exposures, events = [], []
    for u in range(users):
        user = f"u{u}"
        variant = rng.choice(["control", "B", "C"])
        first = rng.uniform(0, 20 * 24)
        for k in range(rng.choice([1, 1, 2, 3])):
            v = variant if rng.random() > 0.03 else rng.choice(["control", "B", "C"])
            at = _at(first + k * rng.uniform(0, 72))
            exposures.append(["checkout", user, at, f"x{u}-{k}", v, 1])
        for j in range(rng.choice([0, 0, 1, 2, 4])):
            at = _at(first + rng.uniform(-20 * 24, 15 * 24))
            kind = rng.choice(["purchase", "purchase", "add_to_cart", "page_view"])
            order = f"o{u}-{j}" if kind == "purchase" else ""
            if kind == "purchase" and j and rng.random() < 0.2:
                order = f"o{u}-0"  # a second purchase row of an order: not an order again
            revenue = round(rng.uniform(1, 300), 2) if kind == "purchase" else None
            events.append([at, f"e{u}-{j}", kind, user, order, revenue,
                           int(kind == "purchase" and order == f"o{u}-{j}"), 1])  # fmt: skip
    return exposures, events


def _ranges(rng: random.Random) -> list[tuple[datetime, datetime]]:
    out = [(_at(0), _at(40 * 24)), (_at(24), _at(8 * 24)), (_at(5 * 24), _at(6 * 24))]
    for _ in range(6):  # at any millisecond
        lo = rng.uniform(-24, 30 * 24)
        out.append((_at(lo), _at(lo + rng.uniform(0.5, 20 * 24))))
    return out


def _insert(client, exposures, events) -> None:
    if events:
        client.insert("events", events, column_names=EVENT_COLUMNS)
    if exposures:
        client.insert("exposures", exposures, column_names=EXPOSURE_COLUMNS)


def _insert_shuffled(client, rng: random.Random, exposures, events, batch: int):
    """Arrival in small batches of shuffled rows: purchases before exposures and after.
    Returns the rows in their order of arrival, tagged ``x`` (exposure) or ``e`` (event)."""
    rows = [("x", r) for r in exposures] + [("e", r) for r in events]
    rng.shuffle(rows)
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        _insert(client, [r for k, r in chunk if k == "x"], [r for k, r in chunk if k == "e"])
    return rows


def test_equal_to_the_raw_tables_in_any_arrival_order_and_when_written_again(warehouse) -> None:
    rng = random.Random(8)
    exposures, events = _random_rows(rng, 300)
    rows = _insert_shuffled(warehouse, rng, exposures, events, 37)
    ranges = _ranges(rng)
    for start, end in ranges:
        _same(warehouse, "checkout", start, end)
        _same(warehouse, "checkout", start, end, cuped=False)
    before = [_new(warehouse, "checkout", s, e) for s, e in ranges]
    # a crash: a third of the batches written again, in another order
    again = rows[: len(rows) // 3]
    rng.shuffle(again)
    _insert(warehouse, [r for k, r in again if k == "x"], [r for k, r in again if k == "e"])
    assert [_new(warehouse, "checkout", s, e) for s, e in ranges] == before
    warehouse.command("OPTIMIZE TABLE experiment_users FINAL")  # merged: the same
    assert [_new(warehouse, "checkout", s, e) for s, e in ranges] == before


def test_the_newest_version_of_an_event_counts(warehouse) -> None:
    _insert(warehouse, [["checkout", "v1", _at(10), "x1", "B", 1]],
            [[_at(11), "p1", "purchase", "v1", "o1", 10.0, 1, 1]])  # fmt: skip
    # the event written again with a newer version (a replay, a move) and other values
    _insert(warehouse, [], [[_at(11), "p1", "purchase", "v1", "o1", 25.0, 1, 2]])
    got = experiment_sums(warehouse, "checkout", _at(0), _at(48))
    assert got.users == {"B": 1} and got.sums["B"]["revenue"] == 25.0
    _same(warehouse, "checkout", _at(0), _at(48))


def test_erasure_covers_the_per_user_rows(warehouse) -> None:
    _insert(warehouse, [["checkout", "gone", _at(10), "x1", "B", 1],
                        ["checkout", "kept", _at(10), "x2", "B", 1]],
            [[_at(11), "p1", "purchase", "gone", "o1", 10.0, 1, 1],
             [_at(11), "p2", "purchase", "kept", "o2", 20.0, 1, 1]])  # fmt: skip
    erase_rows(warehouse, "gone")
    for table in ("experiment_users", "exposed_users", "user_acts"):
        left = warehouse.query(f"SELECT count() FROM {table} WHERE user_id = 'gone'")
        assert left.result_rows[0][0] == 0, table
    got = experiment_sums(warehouse, "checkout", _at(0), _at(48))
    assert got.users == {"B": 1} and got.sums["B"]["revenue"] == 20.0


def test_retention_covers_the_per_user_rows(warehouse) -> None:
    # "old": exposed before the horizon only; "both": before it to A, after it to B
    _insert(warehouse, [["checkout", "old", _at(1), "x1", "A", 1],
                        ["checkout", "both", _at(2), "x2", "A", 1],
                        ["checkout", "both", _at(30 * 24), "x3", "B", 1]],
            [[_at(3), "p1", "purchase", "old", "o1", 10.0, 1, 1],
             [_at(30 * 24 - 1), "p2", "purchase", "both", "o2", 20.0, 1, 1],
             [_at(30 * 24 + 1), "p3", "purchase", "both", "o3", 30.0, 1, 1]])  # fmt: skip
    start, end = _at(0), _at(40 * 24)
    assert experiment_sums(warehouse, "checkout", start, end).users == {"A": 1}  # and 1 both
    purge(warehouse, timedelta(days=20), _at(40 * 24))  # horizon: day 20
    _same(warehouse, "checkout", start, end)
    got = experiment_sums(warehouse, "checkout", start, end)
    assert got.users == {"B": 1} and got.multiple_exposures == 0
    assert got.sums["B"]["revenue"] == 30.0 and got.sums["B"]["revenue_pre"] == 20.0
    left = warehouse.query("SELECT DISTINCT user_id FROM experiment_users").result_rows
    assert left == [("both",)]


def test_the_migration_fills_the_rows_of_data_already_there(warehouse_dsn, tmp_path) -> None:
    before = tmp_path / "sql"
    before.mkdir()
    for path in sorted(SQL_DIR.glob("*.sql")):
        if int(path.name[:3]) < 8:
            shutil.copy(path, before / path.name)
    client = connect(warehouse_dsn, "t_backfill_008")
    try:
        migrate(client, before)
        exposures, events = _random_rows(random.Random(3), 60)
        _insert(client, exposures, events)
        migrate(client)
        assert client.query("SELECT count() FROM experiment_users").result_rows[0][0] > 0
        for start, end in _ranges(random.Random(4)):
            _same(client, "checkout", start, end)
    finally:
        client.command("DROP DATABASE IF EXISTS t_backfill_008")
