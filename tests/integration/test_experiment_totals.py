"""The kept per-variant sums of whole experiments (warehouse/experiment_totals.py) against
the array query over ``experiment_users`` and the raw tables, on adversarial data: batches
in any order and written again, newer versions of an event (one moved in time), users
exposed to two variants, late purchases and exposures after a refresh, erasure, retention,
and ranges at the edges of the data. Whatever path answers, the sums are the array
query's; the path taken is checked too, so kept sums used when stale, or no longer used
at all, fail here.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

import warehouse.experiments as experiments
from insights.experiments.report import experiment_report
from tests.integration.test_experiment_users import _at, _insert, _random_rows, _raw
from warehouse.erasure import erase_rows
from warehouse.experiment_totals import refresh
from warehouse.experiments import SUM_COLUMNS, experiment_sums
from warehouse.retention import purge

_MS = timedelta(milliseconds=1)
_PRE = {c for c in SUM_COLUMNS if "pre" in c}


def _sums(client, start, end, *, cuped=True, arrays=False, monkeypatch=None):
    if arrays:
        with monkeypatch.context() as m:
            m.setattr(experiments, "kept_sums", lambda *a, **k: None)
            return experiment_sums(client, "checkout", start, end, cuped=cuped)
    return experiment_sums(client, "checkout", start, end, cuped=cuped)


def _agree(client, monkeypatch, start, end, path: str) -> None:
    """Every path's answer for [start, end) is the array query's (and the raw tables')."""
    for cuped in (True, False):
        fast = _sums(client, start, end, cuped=cuped)
        rows = _sums(client, start, end, cuped=cuped, arrays=True, monkeypatch=monkeypatch)
        assert fast.path == path, (start, end, cuped)
        assert rows.path == "rows"
        assert fast.users == rows.users and fast.multiple_exposures == rows.multiple_exposures
        # without CUPED the array query reads no event before `from`, so its pre-period
        # sums are partial (and unused); the kept sums hold the whole pre-period
        columns = SUM_COLUMNS if cuped else [c for c in SUM_COLUMNS if c not in _PRE]
        for variant in rows.sums:
            want = [rows.sums[variant][c] for c in columns]
            got = [fast.sums[variant][c] for c in columns]
            assert got == pytest.approx(want, rel=1e-12, abs=1e-9), (variant, cuped)
        # the CONTRACT document is the same, statistics and all
        docs = [
            experiment_report("checkout", start, end, s.users, s.sums,
                              multiple_exposures=s.multiple_exposures, cuped=cuped)
            .document()
            for s in (fast, rows)
        ]  # fmt: skip
        assert _close(*docs)
    raw = _raw(client, "checkout", start, end)
    got = _sums(client, start, end)
    assert {v: n for v, (n, _) in raw.items() if v} == got.users


def _close(a, b) -> bool:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert len(a) == len(b)
        return all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
        return True
    assert a == b
    return True


def _span(client):
    first, last, act = client.query(
        "SELECT first_exposure, last_exposure, last_act "
        "FROM experiment_totals FINAL WHERE experiment = 'checkout'"
    ).result_rows[0]
    return (
        first.replace(tzinfo=_at(0).tzinfo),
        last.replace(tzinfo=_at(0).tzinfo),
        act.replace(tzinfo=_at(0).tzinfo),
    )


def test_the_fast_paths_answer_as_the_array_query_on_adversarial_data(
    warehouse, monkeypatch
) -> None:
    rng = random.Random(17)
    exposures, events = _random_rows(rng, 400)
    rows = [("x", r) for r in exposures] + [("e", r) for r in events]
    rng.shuffle(rows)
    for i in range(0, len(rows), 53):
        chunk = rows[i : i + 53]
        _insert(warehouse, [r for k, r in chunk if k == "x"], [r for k, r in chunk if k == "e"])
    # a newer version of a purchase with other revenue; another moved in time (its
    # versions differ in ts: that user is always read from its row)
    _insert(warehouse, [], [[_at(30), "p-new", "purchase", "u1", "o-new", 10.0, 1, 1]])
    _insert(warehouse, [], [[_at(30), "p-new", "purchase", "u1", "o-new", 99.5, 1, 2]])
    moved = [[_at(31), "p-mv", "purchase", "u2", "o-mv", 5.0, 1, 1],
             [_at(31 - 24 * 30), "p-mv", "purchase", "u2", "o-mv", 5.0, 1, 2]]  # fmt: skip
    _insert(warehouse, [], moved)
    # before any refresh: every user dirty, the array query answers
    whole = (_at(-24 * 60), _at(24 * 60))
    _agree(warehouse, monkeypatch, *whole, path="rows")

    assert refresh(warehouse).experiments == ["checkout"]
    # u2's moved event: never from the kept sums (a range could keep its other version)
    _agree(warehouse, monkeypatch, *whole, path="rows")
    erase_rows(warehouse, "u2")
    _agree(warehouse, monkeypatch, *whole, path="rows")  # erased since the sums were taken
    assert refresh(warehouse).experiments == ["checkout"]
    _agree(warehouse, monkeypatch, *whole, path="totals")
    assert refresh(warehouse).experiments == []  # nothing written since

    # a replay of rows after the refresh: written, so the array query until the next one
    again = rows[: len(rows) // 3]
    _insert(warehouse, [r for k, r in again if k == "x"], [r for k, r in again if k == "e"])
    _agree(warehouse, monkeypatch, *whole, path="rows")
    refresh(warehouse)
    _agree(warehouse, monkeypatch, *whole, path="totals")

    # late data: a purchase before a user's exposure (its pre-period), one after, a second
    # variant for another user, a new user; read before the refresh, then after it
    _insert(warehouse, [["checkout", "u3", _at(25 * 24), "x-late", "C", 1],
                        ["checkout", "new", _at(26 * 24), "x-new", "B", 1]],
            [[_at(2), "p-late1", "purchase", "u4", "o-l1", 12.5, 1, 1],
             [_at(28 * 24), "p-late2", "purchase", "u5", "o-l2", 7.25, 1, 1],
             [_at(26 * 24 + 1), "c-new", "add_to_cart", "new", "", None, 0, 1]])  # fmt: skip
    _agree(warehouse, monkeypatch, *whole, path="rows")
    refresh(warehouse)
    _agree(warehouse, monkeypatch, *whole, path="totals")

    # the edges: `from` at the first exposure, `to` just after the last exposure or act
    first, last_exposure, last_act = _span(warehouse)
    end = max(last_exposure, last_act) + _MS
    _agree(warehouse, monkeypatch, first, end, path="totals")
    _agree(warehouse, monkeypatch, first + _MS, end, path="rows")  # cuts the first user
    _agree(warehouse, monkeypatch, first, end - _MS, path="rows")  # cuts the last one
    _agree(warehouse, monkeypatch, _at(5 * 24), _at(6 * 24), path="rows")

    # erasure: the kept sums are not read until taken again without the user
    erase_rows(warehouse, "u5")
    _agree(warehouse, monkeypatch, *whole, path="rows")
    refresh(warehouse)
    _agree(warehouse, monkeypatch, *whole, path="totals")

    # retention: a horizon within 14 days of the first exposure cuts pre-periods: rows
    purge(warehouse, timedelta(days=30), first + timedelta(days=30) - timedelta(days=13))
    refresh(warehouse)
    _agree(warehouse, monkeypatch, *whole, path="rows")


def test_a_young_write_waits_for_the_next_refresh(warehouse) -> None:
    _insert(warehouse, [["checkout", "a", _at(1), "x1", "B", 1]], [])
    assert refresh(warehouse, settle=timedelta(hours=1)).experiments == []
    assert refresh(warehouse).experiments == ["checkout"]
    got = experiment_sums(warehouse, "checkout", _at(0), _at(2))
    assert got.path == "totals" and got.users == {"B": 1}


def test_the_migration_marks_the_experiments_already_there(warehouse_dsn, tmp_path) -> None:
    import shutil

    from warehouse.client import connect
    from warehouse.migrate import SQL_DIR, migrate

    before = tmp_path / "sql"
    before.mkdir()
    for path in sorted(SQL_DIR.glob("*.sql")):
        if int(path.name[:3]) < 10:
            shutil.copy(path, before / path.name)
    client = connect(warehouse_dsn, "t_backfill_010")
    try:
        migrate(client, before)
        exposures, events = _random_rows(random.Random(3), 60)
        _insert(client, exposures, events)
        migrate(client)
        assert refresh(client).experiments == ["checkout"]
        got = experiment_sums(client, "checkout", _at(-24 * 60), _at(24 * 60))
        assert got.path == "totals"
        assert got.users == {v: n for v, (n, _) in _raw(
            client, "checkout", _at(-24 * 60), _at(24 * 60)).items() if v}  # fmt: skip
    finally:
        client.command("DROP DATABASE IF EXISTS t_backfill_010")
