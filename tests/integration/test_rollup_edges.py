"""Rollups at their edges (a review of issue #21's old minutes left to their hours): an
erasure after a retention pass, the hour of a retention's horizon right after the pass, a
retention pass during another refresh, the writer and a stop while another refresh runs,
two refreshes in two processes taking the same hour, a process whose time zone is not
UTC, and a time zone whose summer time moves its hours by half an hour. Each test fails
without its fix. All on the real engine (chDB) and broker; the hooks only reorder real
calls, to force an interleaving of concurrent refreshes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.client import Client

from flows import dataflow
from flows.config import FlowConfig
from ingest.broker import EmbeddedBroker
from ingest.events import Event
from ingest.fx import load_fx_rates
from ingest.topics import Topics
from tests.integration.test_rollup_backlog import _rollups, _write
from tests.unit.flows.test_logic import MIN, T0
from warehouse import rollups
from warehouse.client import connect
from warehouse.erasure import erase_rows
from warehouse.queries import MetricQuery, metric_series
from warehouse.retention import purge
from warehouse.rollups import refresh

pytestmark = pytest.mark.integration

HOUR, DAY = 60 * MIN, 1440 * MIN
H = T0 + 10 * HOUR  # an old hour (22:00 UTC), long before the flow's last week


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _event(event_id: str, ts: int, user: str, country: str, device: str = "desktop",
           channel: str = "direct") -> Event:  # fmt: skip
    return Event(event_id=event_id, type="page_view", ts=ts, user_id=user, country=country,
                 device=device, channel=channel)  # fmt: skip


def _events(client: Client, lo: int, hi: int, interval: str, rollups: bool = True) -> list[int]:
    q = MetricQuery("events", _at(lo), _at(hi), interval)
    return [p["value"] for p in metric_series(client, q, rollups=rollups)]


LATER = _at(H + 30 * DAY)  # the flow's clock: every minute of these tests is old to it


def test_an_erasure_after_a_retention_pass_reaches_the_hour_holding_its_horizon(
    warehouse: Client,
) -> None:
    """The hour the retention's horizon falls in was rolled up from the raw rows (its
    sparse minutes left to it). After the pass it is rolled up from its minutes, and a
    combination only its own rows had (an erased user's) is zeroed: the user's counts and
    hashes leave the hour and its day."""
    _write(warehouse, {}, [
        _event("a1", H + 10 * MIN, "a", "FR"),  # before the horizon
        _event("u1", H + 40 * MIN, "u", "DE", "mobile", "paid"),  # after it
        _event("b1", H + 45 * MIN, "b", "NL", "desktop", "email"),
        _event("z1", H + 3 * DAY, "z", "FR"),  # later traffic
    ])  # fmt: skip
    refresh(warehouse, _at(H + 2 * HOUR), minutes_from=LATER)
    assert not warehouse.query("SELECT count() FROM rollup_1m").result_rows[0][0]  # left

    purged = purge(warehouse, timedelta(days=1), _at(H + 30 * MIN + DAY))
    assert purged.horizon == _at(H + 30 * MIN) and purged.rows["events"] == 1
    assert erase_rows(warehouse, "u")["events"] == 1
    refresh(warehouse, _at(H + 2 * HOUR), minutes_from=LATER)

    kept = _rollups(warehouse)
    assert [r for rows in kept.values() for r in rows if "DE" in r or "mobile" in r] == []
    assert [r[5] for r in kept["rollup_1h"] if r[0] == 1] == [2]  # a1 and b1
    q = MetricQuery("visitors", _at(H - 22 * HOUR), _at(H + 2 * HOUR), "1d", "device")
    assert [(p["device"], p["value"]) for p in metric_series(warehouse, q) if p["value"]] == [
        ("desktop", 2)
    ]


def test_right_after_a_retention_pass_the_hour_holding_its_horizon_is_whole(
    warehouse: Client,
) -> None:
    """The pass computes the hour its horizon falls in, not only the minutes before the
    horizon: the hour is not read from raw rows half of which the pass just dropped."""
    _write(warehouse, {}, [_event("a1", H + 10 * MIN, "a", "FR"),
                           _event("u1", H + 40 * MIN, "u", "DE"),
                           _event("z1", H + 3 * DAY, "z", "FR")])  # fmt: skip
    refresh(warehouse, _at(H + 2 * HOUR), minutes_from=LATER)  # the hour's minutes left
    assert _events(warehouse, H, H + HOUR, "1h") == [2]
    purge(warehouse, timedelta(days=1), _at(H + 30 * MIN + DAY))
    assert _events(warehouse, H, H + HOUR, "1h") == [2]


def test_a_retention_pass_during_a_refresh_of_old_hours_loses_nothing(
    warehouse: Client, warehouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure's refresh, in another process, is about to roll up an old hour from the
    raw rows when a retention pass computes its minutes and drops those rows. The hour
    computed from what is left is marked dirty again and taken from its minutes by the
    next refresh: its five events stay at every grain."""
    kept = [_event(f"a{i}", H + (5 + i) * MIN, f"a{i}", "FR") for i in range(5)]
    _write(warehouse, {}, [*kept, _event("u1", H + 40 * MIN, "u", "DE"),
                           _event("z", H + 3 * DAY, "z", "FR")])  # fmt: skip
    refresh(warehouse, minutes_from=LATER)  # the flow: the hour's minutes left to it
    assert _events(warehouse, H, H + HOUR, "1h") == [6]
    erase_rows(warehouse, "u")  # the erasure, then its refresh

    database = warehouse.query("SELECT currentDatabase()").result_rows[0][0]
    other = connect(warehouse_dsn, database, create=False)
    holding_left, purged = rollups._holding_left, []

    def purge_now(client: Client, family: int, hours: list[int], raw_from: int) -> set[int]:
        if not purged:  # the erasure's refresh is in its hour stage: the pass runs
            purged.append(None)  # (its own refresh comes here too)
            purged[0] = purge(other, timedelta(days=1), _at(H + 2 * HOUR + DAY))
        return holding_left(client, family, hours, raw_from)

    monkeypatch.setattr(rollups, "_holding_left", purge_now)
    refresh(warehouse, minutes_from=LATER)
    monkeypatch.undo()
    assert purged and purged[0].rows["events"] == 5

    refresh(warehouse, minutes_from=LATER)  # the next refresh
    for interval in ("1m", "1h"):
        assert sum(_events(warehouse, H, H + HOUR, interval)) == 5, interval
    assert _events(warehouse, H - 22 * HOUR, H + 2 * HOUR, "1d") == [5]


class _FlowBesideAnErasure:
    """The flow's rollup refreshes (``_Rollups``) on one client, and on another thread an
    erasure's refresh holding this process's passes until :meth:`release`."""

    def __init__(self, warehouse: Client, warehouse_dsn: str, bootstrap: str,
                 **config: object) -> None:  # fmt: skip
        _write(warehouse, {}, [_event("a1", H + 10 * MIN, "a", "FR")])
        database = warehouse.query("SELECT currentDatabase()").result_rows[0][0]
        flow = FlowConfig(bootstrap, Topics(), warehouse_dsn, database, load_fx_rates(),
                          rollup_every_s=3600.0, **config)  # fmt: skip
        self.flow = dataflow._Rollups(connect(warehouse_dsn, database, create=False), flow)
        self._held, self._done = threading.Event(), threading.Event()
        self.erasure = threading.Thread(target=self._erasure_refresh)
        self.erasure.start()
        assert self._held.wait(10)

    def _erasure_refresh(self) -> None:
        with rollups.PASSES:
            self._held.set()
            self._done.wait(10)

    def release(self) -> None:
        self._done.set()
        self.erasure.join()

    def close(self) -> None:
        self.release()
        self.flow.close()


def test_the_writer_never_waits_for_another_refresh_to_run_a_retention_pass(
    warehouse: Client, warehouse_dsn: str, broker: EmbeddedBroker
) -> None:
    """While an erasure's refresh holds this process's passes, the flow's writer skips a due
    retention pass instead of waiting (writes never wait for a refresh), and runs it after
    a later write."""
    both = _FlowBesideAnErasure(warehouse, warehouse_dsn, broker.bootstrap,
                                retention=timedelta(days=1),
                                clock=lambda: (H + 2 * DAY) / 1000)  # fmt: skip
    raw = "SELECT count() FROM events"
    try:
        both.flow.after_write()  # the pass is due: it does not wait for the erasure's refresh
        assert warehouse.query(raw).result_rows[0][0] == 1
        both.release()
        both.flow.after_write()
        assert warehouse.query(raw).result_rows[0][0] == 0
    finally:
        both.close()


def test_a_stop_waits_for_another_refresh_only_so_long(
    warehouse: Client,
    warehouse_dsn: str,
    broker: EmbeddedBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flow's refresh at stop (or after an erasure) waits for another refresh of this
    process (an API erasure's) at most as long as for its own (``_WAIT_S``): the marks stay,
    and the next refresh takes them."""
    monkeypatch.setattr(dataflow, "_WAIT_S", 0.5)
    both = _FlowBesideAnErasure(warehouse, warehouse_dsn, broker.bootstrap, minute_rollups=None)
    dirty = "SELECT countIf(dirty > clean) FROM rollup_marks FINAL WHERE kind = 0"
    try:
        both.flow.maybe_refresh(force=True)
        assert both.erasure.is_alive()  # it returned while the other refresh went on
        assert warehouse.query(dirty).result_rows[0][0] == 1  # the minute's mark stays
    finally:
        both.close()


@pytest.mark.parametrize("leaves", [True, False], ids=["minute left", "minute computed"])
def test_two_processes_refreshing_the_same_hour_leave_it_exact(
    warehouse: Client, warehouse_dsn: str, monkeypatch: pytest.MonkeyPatch, leaves: bool
) -> None:
    """Writers to a ClickHouse server refresh in several processes (no lock between them:
    modelled by removing this process's). Refresh 1 has read its minutes when a late event
    comes; refresh 2 marks the event's hour dirty, and before it writes the new minute's
    marks (left to the hour, or computed), refresh 1 rolls the hour up from its minutes,
    without it, and marks it clean. Refresh 2 marks the hour dirty again after its minute
    marks, so its own hour stage rolls it up with the event."""
    monkeypatch.setattr(rollups, "PASSES", contextlib.nullcontext())
    database = warehouse.query("SELECT currentDatabase()").result_rows[0][0]
    second, writer = (connect(warehouse_dsn, database, create=False) for _ in range(2))
    _write(warehouse, {}, [_event("a", H + 5 * MIN, "a", "FR"),
                           _event("b", H + 15 * MIN, "b", "DE"),
                           _event("c", H + 25 * MIN, "c", "NL")])  # fmt: skip
    refresh(warehouse)  # every minute has rows; the hour from its minutes
    _write(warehouse, {}, [_event("g", H + 10 * HOUR, "g", "FR")])  # refresh 1's own work

    left_to_hours = rollups._left_to_hours
    decided, first_done, errors = threading.Event(), threading.Event(), []
    minutes_from = LATER if leaves else None

    def second_refresh() -> None:
        try:
            refresh(second, minutes_from=minutes_from)
        except Exception as exc:  # surfaced below
            errors.append(exc)
            decided.set()

    other = threading.Thread(target=second_refresh, name="refresh-2")
    fired: set[str] = set()

    def interleave(client: Client, family: int, minutes: list[int], raw: object) -> set[int]:
        out = left_to_hours(client, family, minutes, raw)  # type: ignore[arg-type]
        name = threading.current_thread().name
        if name not in fired:
            fired.add(name)
            if name == "refresh-2":  # it has marked the hour dirty and decided: 1 goes on
                decided.set()
                first_done.wait(60)
            else:  # refresh 1 has read its minutes: a late event, and refresh 2 runs
                _write(writer, {}, [_event("late", H + 40 * MIN, "l", "BE")])
                other.start()
                decided.wait(60)
        return out

    monkeypatch.setattr(rollups, "_left_to_hours", interleave)
    try:
        refresh(warehouse)
    finally:
        first_done.set()
        if other.is_alive() or other.ident is not None:
            other.join(60)
    monkeypatch.setattr(rollups, "_left_to_hours", left_to_hours)
    assert not errors and fired == {"MainThread", "refresh-2"}

    raw = _events(warehouse, H, H + 2 * HOUR, "1h", rollups=False)
    assert raw == [4, 0]
    assert _events(warehouse, H, H + 2 * HOUR, "1h") == raw
    refresh(warehouse, minutes_from=minutes_from)
    assert _events(warehouse, H, H + 2 * HOUR, "1h") == raw


# Run in a process whose time zone is Berlin's: rollups and raw rows must answer alike.
_IN_ANOTHER_ZONE = """
import json, sys
from datetime import UTC, datetime
from tests.integration.test_rollup_backlog import _visits, _write
from tests.unit.flows.test_logic import MIN, T0
from warehouse.client import connect
from warehouse.migrate import migrate
from warehouse.queries import MetricQuery, metric_series
from warehouse.rollups import refresh

at = lambda ms: datetime.fromtimestamp(ms / 1000, UTC)
client = connect(sys.argv[1], "zones")
migrate(client)
events = [e for vs in _visits(days=9, seed=3).values() for v in vs for e in v]
_write(client, {}, events)
last, day = max(e.ts for e in events), 1440 * MIN
refresh(client, at(last + MIN), minutes_from=at(T0 + 7 * day))
# a late event in an old sparse hour, not refreshed yet
late = events[0].__class__(event_id="late", type="page_view", ts=T0 + 2 * day + 7 * MIN,
                           user_id="zz", country="BE", device="mobile", channel="direct")
_write(client, {}, [late])
# 02:10 in Berlin comes twice on 2026-10-25: at 00:10 and at 01:10 UTC
fold = int(datetime(2026, 10, 25, tzinfo=UTC).timestamp() * 1000)
_write(client, {}, [late.__class__(event_id=f"fold{i}", type="page_view",
                                   ts=fold + (i * 60 + 10) * MIN, user_id=f"f{i}",
                                   country="DE", device="mobile", channel="direct")
                    for i in range(2)])
refresh(client)
q = MetricQuery("events", at(fold), at(fold + 120 * MIN), "1h")
wrong = [f"fold, rollups {r}" for r in (True, False)
         if [p["value"] for p in metric_series(client, q, rollups=r)] != [1, 1]]
for metric, by in [("events", None), ("visitors", "country"), ("bounce_rate", "device")]:
    for interval in ("5m", "1h", "1d"):
        for lo, hi in [(T0 + day, T0 + 3 * day), (T0 + 6 * day + 5 * 60 * MIN, last + 120 * MIN)]:
            q = MetricQuery(metric, at(lo), at(hi), interval, by)
            if metric_series(client, q) != metric_series(client, q, rollups=False):
                wrong.append(str(q))
print(json.dumps(wrong))
"""


def test_rollups_answer_like_raw_rows_in_a_process_not_on_utc(tmp_path: Path) -> None:
    """chDB hands back the marks' times in the process's zone: read as UTC they put the
    first dirty minute an hour or two late east of UTC, and dirty rollups were served. And
    the client bound times as wall-clock times of that zone: the hour the clocks go back
    comes twice, and one of the two read as empty."""
    env = {**os.environ, "TZ": "Europe/Berlin"}
    done = subprocess.run(
        [sys.executable, "-c", _IN_ANOTHER_ZONE, f"chdb://{tmp_path / 'warehouse'}"],
        env=env, capture_output=True, text=True, timeout=600,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_days_of_a_zone_whose_summer_time_moves_half_an_hour(warehouse: Client) -> None:
    """Lord Howe Island is 10:30 h ahead of UTC in winter and 11 h in summer: a range from
    summer to summer has winter days that start at :30 UTC, which hour rows do not tile."""
    ts = int(datetime(2026, 6, 15, 13, 40, tzinfo=UTC).timestamp() * 1000)  # 16 June 00:10
    _write(warehouse, {}, [_event("x", ts, "x", "FR")])
    refresh(warehouse)
    zone = ZoneInfo("Australia/Lord_Howe")
    q = MetricQuery("events", datetime(2026, 3, 1, tzinfo=zone), datetime(2026, 11, 1, tzinfo=zone),
                    "1d", tz="Australia/Lord_Howe")  # fmt: skip
    got = [(p["ts"], p["value"]) for p in metric_series(warehouse, q) if p["value"]]
    assert got == [("2026-06-16T00:00:00+10:30", 1)]
    assert [p for p in metric_series(warehouse, q, rollups=False) if p["value"]] == [
        {"ts": "2026-06-16T00:00:00+10:30", "value": 1}
    ]
