"""Rollups of a backlog spread thinly over weeks of event time (issue #21): refreshed a
piece at a time while more of it is written, with sessions whose attributes change after
their minutes were rolled up, they equal the rollups rebuilt from scratch, also when the
refresh runs on a client of its own beside the writes (as the flow runs it); and the flow's
periodic refresh waits for a partition still draining a backlog. All on the real engine
(chDB); the hooks only reorder real calls, to force an interleaving of two refreshes."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from flows.logic import UserState, enrich, step
from flows.rows import Part, Read, batch_rows
from ingest.events import Event, Item
from tests.unit.flows.test_logic import FX, MIN, RULES, T0
from warehouse import rollups
from warehouse.client import connect
from warehouse.clock import next_version
from warehouse.erasure import erase_rows
from warehouse.queries import MetricQuery, complete_until, metric_series
from warehouse.rollups import (
    EVENTS,
    GRAINS,
    STARTS,
    UNROLLED,
    first_dirty_of,
    mark_dirty,
    rebuild,
    refresh,
    settled_until,
)
from warehouse.writer import WarehouseWriter

pytestmark = pytest.mark.integration

DAY = 1440 * MIN
PART = Part("user.pageviews", 0)


def _visits(days: int, seed: int = 7) -> dict[str, list[list[Event]]]:
    """A dozen users visiting every few hours for ``days`` days: a few events a visit,
    two minutes apart, some carts and orders, each visit from a country, device and
    channel of its own."""
    rng = random.Random(seed)
    users: dict[str, list[list[Event]]] = {}
    for u in range(12):
        visits, t, n = [], T0 + rng.randrange(0, 6 * 60) * MIN, 0
        while t < T0 + days * DAY:
            where = {"country": rng.choice(["DE", "FR", "NL"]),
                     "device": rng.choice(["desktop", "mobile"]),
                     "channel": rng.choice(["direct", "paid", "email"])}  # fmt: skip
            visit = []
            for i in range(rng.randrange(1, 5)):
                n += 1
                kind = rng.choice(["page_view", "product_view", "add_to_cart", "purchase"])
                fields: dict[str, object] = {}
                if kind == "add_to_cart":
                    fields = {"product_id": "p1", "price": 5.0, "currency": "EUR"}
                elif kind == "purchase":
                    items = [Item(product_id="p1", price=5.0, quantity=2)]
                    fields = {"order_id": f"o{u}-{n}", "revenue": 10.0, "currency": "EUR",
                              "items": items}  # fmt: skip
                visit.append(Event(event_id=f"e{u}-{n}", type=kind, ts=t + i * 2 * MIN,
                                   user_id=f"u{u}", **where, **fields))  # type: ignore[arg-type]  # fmt: skip
            visits.append(visit)
            t += rng.randrange(3 * 60, 9 * 60) * MIN
        users[f"u{u}"] = visits
    return users


def _write(client: Client, states: dict[str, UserState | None], events: list[Event]) -> None:
    """Fold events in order (each user's state kept in ``states``) and write them as one
    batch, as the flow does."""
    reads, outs = [], []
    for offset, event in enumerate(events):
        enriched = enrich(event, FX)
        state, out = step(states.get(event.user_id), enriched, RULES)
        states[event.user_id] = state
        reads.append(Read(enriched, PART, offset))
        outs.append(out)
    batch = batch_rows([(reads, outs)])
    WarehouseWriter(client).write_many(
        [WarehouseWriter.encode(batch.tables, batch.minutes, batch.spans)]
    )


_TABLES = {
    "rollup": "events, pageviews, orders, revenue, units, n_visitors, n_sessions, "
    "n_purchase_sessions, n_cart_sessions, finalizeAggregation(visitors), "
    "finalizeAggregation(sessions), finalizeAggregation(purchase_sessions), "
    "finalizeAggregation(cart_sessions)",
    "starts": "started, bounces, start_pageviews, start_duration_s",
}


def _rollups(client: Client) -> dict[str, list[tuple[object, ...]]]:
    """Every rollup row with data (zero rows stand for combinations a minute lost)."""
    found = {}
    for prefix, measures in _TABLES.items():
        some = "events" if prefix == "rollup" else "started"
        for grain in GRAINS:
            found[f"{prefix}_{grain}"] = client.query(
                f"SELECT level, t, country, device, channel, {measures} "
                f"FROM {prefix}_{grain} FINAL WHERE {some} > 0 "
                "ORDER BY level, t, country, device, channel"
            ).result_rows
    return found


def test_a_backlog_over_weeks_refreshed_piecewise_equals_a_rebuild(warehouse: Client) -> None:
    users = _visits(days=21)
    # The backlog arrives a week at a time, each week refreshed before the next arrives.
    # After each refresh, a late page view (within the allowed lateness) from another
    # country joins each user's last visit of the week and becomes its session's first
    # event: the session's attributes change after its minutes were rolled up.
    refreshed, states = 0, {}
    for week in range(3):
        lo, hi = T0 + week * 7 * DAY, T0 + (week + 1) * 7 * DAY
        visits = {u: [v for v in vs if lo <= v[0].ts < hi] for u, vs in users.items()}
        _write(warehouse, states, [e for vs in visits.values() for v in vs for e in v])
        refreshed += refresh(warehouse, datetime.fromtimestamp(hi / 1000, UTC))
        late = [Event(event_id=f"late-{u}-{week}", type="page_view", ts=vs[-1][0].ts - MIN,
                      user_id=u, country="BE", device=vs[-1][0].device,
                      channel=vs[-1][0].channel) for u, vs in visits.items() if vs]  # fmt: skip
        _write(warehouse, states, late)
    assert refreshed > 0
    refresh(warehouse)
    # the combinations the late events' sessions had before are zero rows now
    zeros = warehouse.query(
        "SELECT count() FROM rollup_1m FINAL WHERE level = 0 AND events = 0"
    ).result_rows
    assert zeros[0][0] > 0
    piecewise = _rollups(warehouse)
    assert all(piecewise.values())
    events = warehouse.query("SELECT count() FROM events FINAL").result_rows[0][0]
    assert sum(r[5] for r in piecewise["rollup_1d"] if r[0] == 1) == events
    assert any(r[2] == "BE" for r in piecewise["starts_1m"])

    for table in [*piecewise, "rollup_marks"]:
        warehouse.command(f"TRUNCATE TABLE {table}")
    rebuild(warehouse)
    assert _rollups(warehouse) == piecewise


@pytest.mark.parametrize("busy", [None, 3])
def test_old_minutes_left_to_their_hours_answer_like_a_rebuild(
    warehouse: Client, monkeypatch: pytest.MonkeyPatch, busy: int | None
) -> None:
    """With ``minutes_from`` (the flow's refresh: a week before its clock), the whole hours
    before it are rolled up from the raw rows, and the minutes of the sparse ones get no
    rows: they stay dirty, are read from the raw rows, and are not read again until
    written again. An hour of ``busy`` events or more (here: a few) keeps its minute rows.
    Late events changing old sessions' attributes leave zero rows in the hours, as in
    minutes. Every answer equals the raw events', and a refresh without it (a retention
    pass, a rebuild) then computes those minutes like any other."""
    if busy is not None:
        monkeypatch.setattr(rollups, "_SPARSE_HOUR", busy)
    users = _visits(days=21, seed=5)
    kept_from = datetime.fromtimestamp((T0 + 14 * DAY + 30 * MIN) / 1000, UTC)
    hour = kept_from.replace(minute=0)
    states: dict[str, UserState | None] = {}
    for week in range(3):
        lo, hi = T0 + week * 7 * DAY, T0 + (week + 1) * 7 * DAY
        visits = {u: [v for v in vs if lo <= v[0].ts < hi] for u, vs in users.items()}
        _write(warehouse, states, [e for vs in visits.values() for v in vs for e in v])
        refresh(warehouse, datetime.fromtimestamp(hi / 1000, UTC), minutes_from=kept_from)
        late = [Event(event_id=f"late-{u}-{week}", type="page_view", ts=vs[-1][0].ts - MIN,
                      user_id=u, country="BE", device=vs[-1][0].device,
                      channel=vs[-1][0].channel) for u, vs in visits.items() if vs]  # fmt: skip
        _write(warehouse, states, late)
    assert refresh(warehouse, minutes_from=kept_from) > 0
    assert refresh(warehouse, minutes_from=kept_from) == 0  # the old minutes are not read again

    # the old minutes with rows are those of the hours with `busy` events or more
    busy_hours = warehouse.query(
        "SELECT toStartOfHour(ts) AS h FROM events FINAL WHERE ts < {h:DateTime64(3)} "
        "GROUP BY h HAVING count() >= {n:UInt32}",
        parameters={"h": hour, "n": busy or rollups._SPARSE_HOUR},
    ).result_rows
    minutes_of_hours = warehouse.query(
        "SELECT DISTINCT toStartOfHour(t) FROM rollup_1m FINAL WHERE t < {h:DateTime}",
        parameters={"h": hour},
    ).result_rows
    assert set(minutes_of_hours) == set(busy_hours)
    assert bool(busy_hours) == (busy is not None)
    zeros = warehouse.query(
        "SELECT count() FROM rollup_1h FINAL WHERE level = 0 AND events = 0 AND t < {h:DateTime}",
        parameters={"h": hour},
    ).result_rows
    assert zeros[0][0] > 0  # the late events' sessions' combinations, zeroed in old hours
    start, end = (
        datetime.fromtimestamp(T0 / 1000, UTC),
        datetime.fromtimestamp((T0 + 21 * DAY) / 1000, UTC),
    )
    dirty = first_dirty_of(warehouse, [EVENTS, STARTS], start, end)
    assert dirty[(EVENTS, "1m")] < hour and (EVENTS, UNROLLED) not in dirty
    assert (EVENTS, "1h") not in dirty and (STARTS, "1d") not in dirty
    for metric, interval, by in [("sessions", "1d", "country"), ("bounce_rate", "1h", None),
                                 ("revenue", "1h", "device"), ("visitors", "1m", None),
                                 ("add_to_cart_rate", "5m", "channel")]:  # fmt: skip
        for lo in (start, hour - timedelta(days=2), hour):
            q = MetricQuery(metric, lo, end, interval, by)
            assert metric_series(warehouse, q) == metric_series(warehouse, q, rollups=False)

    left_to_hours = _rollups(warehouse)
    refresh(warehouse)  # without minutes_from: the old minutes too
    assert first_dirty_of(warehouse, [EVENTS, STARTS], start, end) == {}
    computed = _rollups(warehouse)
    for table in [*computed, "rollup_marks"]:
        warehouse.command(f"TRUNCATE TABLE {table}")
    rebuild(warehouse)
    rebuilt = _rollups(warehouse)
    assert rebuilt == computed
    for table in rebuilt:
        if not table.endswith("_1m"):
            assert left_to_hours[table] == rebuilt[table], table


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_old_hours_and_the_hour_going_on_are_read_from_the_rollups(warehouse: Client) -> None:
    """Hours holding minutes left to them answer hour and day questions, and the hour
    going on is still read from its minute rows after such minutes: with the raw rows
    gone, those answers stay (minute questions over the old part read raw rows: they go)."""
    users = _visits(days=10, seed=3)
    events = [e for vs in users.values() for v in vs for e in v]
    _write(warehouse, {}, events)
    last = max(e.ts for e in events)
    hour = 60 * MIN
    assert last % hour < hour - 2 * MIN  # the hour of the last event is still going on
    refresh(warehouse, _at(last + MIN), minutes_from=_at(T0 + 7 * DAY))
    start, end = _at(T0 - T0 % DAY), _at(last - last % hour + hour)
    old_day = _at(T0 - T0 % DAY + DAY)
    asked = [MetricQuery("events", start, end, "1h"),
             MetricQuery("visitors", start, end, "1h", "country"),
             MetricQuery("sessions", start, end, "1d"),
             MetricQuery("revenue", start, end, "1d", "device")]  # fmt: skip
    before = [metric_series(warehouse, q) for q in asked]
    old_minutes = MetricQuery("events", old_day, old_day + timedelta(days=1), "1m")
    assert sum(p["value"] for p in metric_series(warehouse, old_minutes)) > 0
    warehouse.command("DELETE FROM events WHERE 1")
    warehouse.command("DELETE FROM sessions WHERE 1")
    assert [metric_series(warehouse, q) for q in asked] == before
    assert sum(p["value"] for p in metric_series(warehouse, old_minutes)) == 0


def test_an_hour_from_its_minutes_while_another_refresh_left_one_to_it(
    warehouse: Client, warehouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two refreshes that disagree on which minutes are old (an erasure's and the flow's,
    either side of an hour): one recomputes an hour from its minutes while the other, after
    a write, leaves a new minute of it to the hour and recomputes the hour from the raw
    rows, and lands first. The hour is marked dirty again, and the next refresh takes it
    from the raw rows: the hours and days equal a rebuild's."""
    users = _visits(days=3, seed=13)
    events = [e for vs in users.values() for v in vs for e in v]
    _write(warehouse, {}, events)
    hour_ms = 60 * MIN
    h = events[len(events) // 2].ts // hour_ms * hour_ms
    taken = {e.ts // MIN * MIN for e in events}
    quiet = next(m for m in range(h, h + hour_ms, MIN) if m not in taken)
    late = Event(event_id="late-1", type="page_view", ts=quiet + 1000, user_id="u-late",
                 country="BE", device="mobile", channel="direct")  # fmt: skip
    database = warehouse.query("SELECT currentDatabase()").result_rows[0][0]
    other = connect(warehouse_dsn, database, create=False)
    recompute, fired = rollups._recompute, []

    def other_lands_first(client: Client, family: int, grain: str, starts: list[int],
                          *, from_raw: bool = False) -> None:  # fmt: skip
        if grain == "1h" and not from_raw and h in starts and not fired:
            fired.append(family)
            _write(other, {}, [late])
            refresh(other, minutes_from=_at(T0 + 10 * DAY))  # every minute is old to it
        recompute(client, family, grain, starts, from_raw=from_raw)

    monkeypatch.setattr(rollups, "_recompute", other_lands_first)
    refresh(warehouse, minutes_from=_at(T0))  # no minute is old to it
    monkeypatch.undo()
    assert fired
    refresh(warehouse, minutes_from=_at(T0 + 10 * DAY))
    got = _rollups(warehouse)
    for table in [*got, "rollup_marks"]:
        warehouse.command(f"TRUNCATE TABLE {table}")
    rebuild(warehouse)
    rebuilt = _rollups(warehouse)
    for table in rebuilt:
        if not table.endswith("_1m"):
            assert got[table] == rebuilt[table], table


def test_an_old_minute_with_rows_is_recomputed_not_left(warehouse: Client) -> None:
    """A minute that has rows is recomputed even when old and sparse: an erasure's change
    reaches its rows instead of leaving the user's counts and hashes in them."""
    users = _visits(days=3, seed=17)
    _write(warehouse, {}, [e for vs in users.values() for v in vs for e in v])
    refresh(warehouse)  # every minute gets rows
    assert sum(erase_rows(warehouse, "u1").values()) > 0
    refresh(warehouse, minutes_from=_at(T0 + 10 * DAY))
    erased = _rollups(warehouse)
    for table in [*erased, "rollup_marks"]:
        warehouse.command(f"TRUNCATE TABLE {table}")
    rebuild(warehouse)
    assert _rollups(warehouse) == erased


def test_refreshes_racing_the_writes_equal_a_rebuild(warehouse: Client, warehouse_dsn: str) -> None:
    """The flow refreshes on a thread and client of its own while its writer goes on
    (flows.dataflow._Rollups): a day of a backlog written at a time, with a late event
    changing sessions already rolled up, while another client refreshes over and over."""
    users = _visits(days=14, seed=11)
    database = warehouse.query("SELECT currentDatabase()").result_rows[0][0]
    refresher = connect(warehouse_dsn, database, create=False)
    writing, refreshes, errors = threading.Event(), [0], []

    def keep_refreshing() -> None:
        try:
            while writing.is_set():
                refreshes[0] += 1
                refresh(refresher)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    writing.set()
    thread = threading.Thread(target=keep_refreshing)
    thread.start()
    try:
        states: dict[str, UserState | None] = {}
        for day in range(14):
            lo, hi = T0 + day * DAY, T0 + (day + 1) * DAY
            visits = {u: [v for v in vs if lo <= v[0].ts < hi] for u, vs in users.items()}
            _write(warehouse, states, [e for vs in visits.values() for v in vs for e in v])
            late = [Event(event_id=f"late-{u}-{day}", type="page_view", ts=vs[-1][0].ts - MIN,
                          user_id=u, country="BE", device=vs[-1][0].device,
                          channel=vs[-1][0].channel) for u, vs in visits.items() if vs]  # fmt: skip
            _write(warehouse, states, late)
    finally:
        writing.clear()
        thread.join()
    assert not errors
    assert refreshes[0] > 1  # the refreshes did race the writes
    refresh(warehouse)  # the flow's refresh at stop
    raced = _rollups(warehouse)
    assert all(raced.values())
    assert any(r[2] == "BE" for r in raced["starts_1m"])

    for table in [*raced, "rollup_marks"]:
        warehouse.command(f"TRUNCATE TABLE {table}")
    rebuild(warehouse)
    assert _rollups(warehouse) == raced


def test_a_refresh_whose_older_rows_land_late_leaves_no_stale_minute(
    warehouse: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two refreshes both find a minute without rows: one computed it before a user's rows
    were erased and its insert lands only after the other checked for rows. The newer
    computation has no row for that user's combination, so nothing would ever zero the
    older one; the minute must be marked dirty again and recomputed."""
    visit = [Event(event_id=f"x{i}", type="page_view", ts=T0 + 10 * MIN + i, user_id="x",
                   country="FR", device="mobile", channel="paid") for i in range(3)]  # fmt: skip
    other = [Event(event_id=f"y{i}", type="page_view", ts=T0 + 30 * MIN + i, user_id="y",
                   country="DE", device="desktop", channel="direct") for i in range(2)]  # fmt: skip
    _write(warehouse, {}, visit + other)
    refresh(warehouse)  # the older refresh's computation, with x's rows
    tables = [f"{prefix}_{grain}" for prefix in _TABLES for grain in GRAINS]
    for table in ("rollup_1m", "starts_1m"):
        warehouse.command(f"CREATE TABLE late_{table} AS {table}")
        warehouse.command(f"INSERT INTO late_{table} SELECT * FROM {table}")
    for table in [*tables, "rollup_marks"]:
        warehouse.command(f"TRUNCATE TABLE {table}")
    minutes = [T0 + 10 * MIN, T0 + 30 * MIN]
    mark_dirty(warehouse, {EVENTS: minutes, STARTS: minutes}, next_version())
    assert sum(erase_rows(warehouse, "x").values()) > 0

    with_rows = rollups._with_rows
    landed: list[str] = []

    def older_rows_land_now(
        client: Client, table: str, mins: list[int], other_than: int | None = None
    ) -> set[int]:
        seen = with_rows(client, table, mins, other_than)
        if table not in landed:  # right after this refresh found no rows
            landed.append(table)
            client.command(f"INSERT INTO {table} SELECT * FROM late_{table}")
        return seen

    monkeypatch.setattr(rollups, "_with_rows", older_rows_land_now)
    refresh(warehouse)
    monkeypatch.undo()
    assert landed == ["rollup_1m", "starts_1m"]
    refresh(warehouse)  # the next refresh
    raced = _rollups(warehouse)
    assert not any(r[2] == "FR" for r in raced["rollup_1m"])

    for table in [*tables, "rollup_marks"]:
        warehouse.command(f"TRUNCATE TABLE {table}")
    rebuild(warehouse)
    assert _rollups(warehouse) == raced


def _progress(client: Client, rows: list[tuple[str, int, datetime, datetime]]) -> None:
    client.insert(
        "flow_progress",
        [[topic, partition, ts, 1, written] for topic, partition, ts, written in rows],
        column_names=["topic", "partition", "max_ts", "offset", "updated_at"],
    )


def test_the_periodic_refresh_waits_for_a_partition_draining_a_backlog(
    warehouse: Client,
) -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    lateness = timedelta(minutes=10)
    oct27, sep22 = datetime(2026, 10, 27, tzinfo=UTC), datetime(2026, 9, 22, tzinfo=UTC)
    _progress(warehouse, [
        ("user.purchases", 0, oct27, now - timedelta(seconds=40)),  # read to its end
        ("user.pageviews", 0, sep22, now - timedelta(seconds=1)),  # weeks behind, being read
        ("user.erasures", 0, datetime(1970, 1, 1, tzinfo=UTC), now),  # no event time
    ])  # fmt: skip
    # the pageviews are over an hour behind: complete_until does not wait for them ...
    assert complete_until(warehouse, lateness) == oct27 - lateness
    # ... but their minutes are still coming: the refresh waits
    assert settled_until(warehouse, lateness, now) == sep22 - lateness
    # once that partition is no longer written (read to its end, or quiet), it does not
    assert settled_until(warehouse, lateness, now + timedelta(minutes=2)) == oct27 - lateness
