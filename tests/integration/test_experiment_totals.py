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
import threading
from datetime import timedelta

import pytest

import warehouse.experiments as experiments
from insights.experiment_results import report_for
from insights.experiments.report import experiment_report
from tests.integration.test_experiment_users import (
    _at,
    _insert,
    _insert_shuffled,
    _random_rows,
    _raw,
)
from warehouse.client import connect
from warehouse.erasure import erase_rows
from warehouse.experiment_totals import refresh, whole_sums
from warehouse.experiments import SUM_COLUMNS, experiment_sums, whole_experiment_sums
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
    rows = _insert_shuffled(warehouse, rng, exposures, events, 53)
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
    assert refresh(warehouse, settle=timedelta(hours=1)).experiments == ["checkout"]
    # still written (the newest write is younger than `settle`): not again before
    # `live_every`, however often the flow refreshes
    _insert(warehouse, [["checkout", "b", _at(2), "x2", "B", 1]], [])
    assert refresh(warehouse, settle=timedelta(hours=1)).experiments == []
    assert refresh(warehouse).experiments == ["checkout"]  # settled: at once
    got = experiment_sums(warehouse, "checkout", _at(0), _at(3))
    assert got.path == "totals" and got.users == {"B": 2}


def _agree_whole(client, monkeypatch, path: str, now=None):
    """The answer without a range: the path taken, and its sums over the range it states
    equal to the array query's over that range."""
    now = now or _at(24 * 365)
    fast = whole_experiment_sums(client, "checkout", now)
    assert fast is not None and fast.path == path
    rows = _sums(client, fast.start, fast.end, arrays=True, monkeypatch=monkeypatch)
    assert rows.path == "rows"
    assert fast.users == rows.users and fast.multiple_exposures == rows.multiple_exposures
    for variant in rows.sums:
        want = [rows.sums[variant][c] for c in SUM_COLUMNS]
        got = [fast.sums[variant][c] for c in SUM_COLUMNS]
        assert got == pytest.approx(want, rel=1e-12, abs=1e-9), variant
    raw = _raw(client, "checkout", fast.start, fast.end)
    assert {v: n for v, (n, _) in raw.items() if v} == fast.users
    return fast


def _live_rows(i: int):
    """User ``w{i}``'s exposure and purchase, an hour apart, after every earlier one."""
    user, at = f"w{i}", 24 * 40 + 2 * i
    exposure = ["checkout", user, _at(at), f"xw{i}", "B" if i % 2 else "control", 1]
    purchase = [_at(at + 1), f"pw{i}", "purchase", user, f"ow{i}", 3.0 + i, 1, 1]
    return [exposure], [purchase]


def test_sums_taken_while_writes_continue_are_exact_for_the_range_they_state(
    warehouse, warehouse_dsn, monkeypatch
) -> None:
    exposures, events = _random_rows(random.Random(5), 200)
    _insert(warehouse, exposures, events)
    database = warehouse.query("SELECT currentDatabase()").result_rows[0][0]
    writer = connect(warehouse_dsn, database)
    stop, written = threading.Event(), []

    def write() -> None:
        while not stop.is_set() and len(written) < 400:
            _insert(writer, *_live_rows(len(written)))
            written.append(1)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        taken = 0
        while taken < 3 and thread.is_alive():  # refreshes while the writer writes
            taken += len(refresh(warehouse, live_every=timedelta(0)).experiments)
    finally:
        stop.set()
        thread.join()
    assert taken >= 1 and written
    # the sums taken last, while the writer went on, over the range they state (the
    # first exposure to just after their newest exposure or act) are the array query's
    # over it, once every write has landed
    first, last_exposure, last_act = _span(warehouse)
    end = max(last_exposure, last_act) + _MS
    earliest = min(r[2] for r in exposures)
    assert first == earliest.replace(microsecond=earliest.microsecond // 1000 * 1000)
    variants, counts, sums = warehouse.query(
        "SELECT variants, counts, sums FROM experiment_totals FINAL WHERE experiment = 'checkout'"
    ).result_rows[0]
    rows = _sums(warehouse, first, end, arrays=True, monkeypatch=monkeypatch)
    kept = {v: n for v, n in zip(variants, counts, strict=True) if v}
    assert kept == rows.users
    for variant, values in zip(variants, sums, strict=True):
        if variant:
            want = [rows.sums[variant][c] for c in SUM_COLUMNS]
            assert values == pytest.approx(want, rel=1e-12, abs=1e-9), variant
    assert rows.users != _sums(warehouse, first, _at(24 * 365)).users  # writes came after
    # and they answer the question without a range, unless a write was in flight while
    # their count was read (it may be missing from them: the array query answers)
    got = whole_experiment_sums(warehouse, "checkout", _at(24 * 365))
    if got is None:
        _insert(warehouse, *_live_rows(len(written)))
        assert whole_experiment_sums(warehouse, "checkout", _at(24 * 365)) is None
        assert refresh(warehouse, live_every=timedelta(0)).experiments == ["checkout"]
        _insert(warehouse, *_live_rows(len(written) + 1))
    got = _agree_whole(warehouse, monkeypatch, "live")
    assert got.start == first


def test_a_live_experiment_is_answered_from_sums_that_state_their_end(
    warehouse, monkeypatch
) -> None:
    exposures, events = _random_rows(random.Random(6), 150)
    _insert(warehouse, exposures, events)
    assert refresh(warehouse).experiments == ["checkout"]
    whole = _agree_whole(warehouse, monkeypatch, "totals")
    assert whole.end == _at(24 * 365)  # nothing written since: up to now
    first, last_exposure, last_act = _span(warehouse)
    end = max(last_exposure, last_act) + _MS

    # writes after the refresh, all after the end of the data the sums hold: answered
    # from them, with `to` their end (the document states the range it is exact for)
    for i in range(3):
        _insert(warehouse, *_live_rows(i))
    live = _agree_whole(warehouse, monkeypatch, "live")
    assert (live.start, live.end) == (first, end)
    report = report_for(warehouse, "checkout", now=_at(24 * 365))
    document = report.document()
    assert (document["from"], document["to"]) == (_iso(first), _iso(end))
    assert sum(v["users"] for v in document["variants"]) == sum(live.users.values())

    # beyond the bound: the array query answers (over up to now, its newest data too)
    assert whole_sums(warehouse, "checkout", _at(0), bound=timedelta(0)) is None
    monkeypatch.setattr(
        "warehouse.experiments.whole_sums",
        lambda c, e, now: whole_sums(c, e, now, bound=timedelta(0)),
    )
    assert whole_experiment_sums(warehouse, "checkout", _at(24 * 365)) is None
    stale = report_for(warehouse, "checkout", now=_at(24 * 365))
    assert stale.document()["variants"] != document["variants"]  # the new users count
    monkeypatch.undo()

    # a late write, before the sums' end (a purchase of a user exposed before it): the
    # range they state is no longer theirs; the array query answers until the next take
    _insert(warehouse, [], [[last_act - timedelta(hours=1), "p-late", "purchase",
                             exposures[0][1], "o-late", 4.0, 1, 1]])  # fmt: skip
    assert whole_experiment_sums(warehouse, "checkout", _at(24 * 365)) is None
    assert refresh(warehouse, live_every=timedelta(0)).experiments == ["checkout"]
    _agree_whole(warehouse, monkeypatch, "totals")


def test_an_erasure_is_never_served_from_live_sums(warehouse, monkeypatch) -> None:
    exposures, events = _random_rows(random.Random(7), 100)
    _insert(warehouse, exposures, events)
    refresh(warehouse)
    _insert(warehouse, *_live_rows(0))
    assert whole_experiment_sums(warehouse, "checkout", _at(24 * 365)).path == "live"
    exposed = {r[1] for r in exposures}
    user = next(r[3] for r in events if r[3] in exposed)  # with events: erase_rows finds it
    before = _agree_whole(warehouse, monkeypatch, "live")
    assert any(erase_rows(warehouse, user).values())
    # at once, within the bound, however young the sums: the array query, without the user
    assert whole_experiment_sums(warehouse, "checkout", _at(24 * 365)) is None
    after = report_for(warehouse, "checkout", now=_at(24 * 365)).document()
    everyone = sum(v["users"] for v in after["variants"]) + after["multiple_exposures"]
    # one user fewer; w0, written after the sums' end, is in the array query's range
    assert everyone == sum(before.users.values()) + before.multiple_exposures - 1 + 1
    assert refresh(warehouse, live_every=timedelta(0)).experiments == ["checkout"]
    again = _agree_whole(warehouse, monkeypatch, "totals")
    assert sum(again.users.values()) + again.multiple_exposures == everyone


def _iso(value) -> str:
    return value.isoformat().replace("+00:00", "Z")


class _WriteAfterCount:
    """A client whose first read of the write count is followed by a write (another
    writer committing between the refresh's count and its take's snapshot)."""

    def __init__(self, client, rows) -> None:
        self._client, self._rows = client, rows

    def query(self, sql, *args, **kwargs):
        got = self._client.query(sql, *args, **kwargs)
        if self._rows and "max(until)" in sql:
            _insert(self._client, *self._rows)
            self._rows = None
        return got

    def insert(self, *args, **kwargs):
        return self._client.insert(*args, **kwargs)


def test_a_write_between_the_count_and_the_snapshot_is_left_out(warehouse, monkeypatch) -> None:
    exposures, events = _random_rows(random.Random(9), 80)
    _insert(warehouse, exposures, events)
    refresh(warehouse)
    _insert(warehouse, *_live_rows(0))
    racing = _WriteAfterCount(warehouse, _live_rows(1))
    assert refresh(racing, live_every=timedelta(0)).experiments == ["checkout"]
    assert racing._rows is None  # the write landed after the count, before the take
    # the sums hold w0 (counted), not w1 (not counted: its data after their end), and
    # answer live, exact over their range
    got = _agree_whole(warehouse, monkeypatch, "live")
    assert got.end == _at(24 * 40 + 1) + _MS  # just after w0's purchase
    later = _sums(warehouse, got.start, _at(24 * 365), arrays=True, monkeypatch=monkeypatch)
    assert sum(later.users.values()) == sum(got.users.values()) + 1  # w1 is after `to`


def test_a_write_in_flight_while_the_count_was_read_is_not_trusted(warehouse) -> None:
    exposures, events = _random_rows(random.Random(10), 40)
    _insert(warehouse, exposures, events)
    refresh(warehouse)
    _insert(warehouse, *_live_rows(0))
    assert whole_experiment_sums(warehouse, "checkout", _at(24 * 365)).path == "live"
    # a write stamped before the sums' count was read, committed after it: it may be
    # missing from their snapshot, wherever its data lies
    taken = warehouse.query("SELECT taken FROM experiment_totals FINAL").result_rows[0][0]
    warehouse.insert(
        "experiment_marks",
        [["checkout", 1, taken - 1, _at(24 * 400), _at(24 * 400)]],
        column_names=["experiment", "writes", "written", "since", "until"],
    )
    assert whole_experiment_sums(warehouse, "checkout", _at(24 * 365)) is None
