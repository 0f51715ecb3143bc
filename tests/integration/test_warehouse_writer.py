"""The flow's warehouse writer on chDB: batches merged into one insert keep their own
versions (a later batch's row wins); a write failing because the warehouse is unavailable
is retried until it succeeds (CONTRACT §12), one that can never succeed is raised, never
lost."""

from __future__ import annotations

import threading
import time

import pytest
from clickhouse_connect.driver.client import Client

from warehouse.errors import WarehouseError
from warehouse.migrate import migrate
from warehouse.rollups import EVENTS, mark_kind, refresh
from warehouse.writer import BackgroundWriter, WarehouseWriter, WriteStatus

pytestmark = pytest.mark.integration

T0 = 1_795_176_000_000


def session(key: str, n_events: int) -> list[object]:
    return [key, "u1", T0, T0 + 60_000, "DE", "mobile", "paid", n_events, n_events, 0, 0]


def test_merged_batches_keep_their_order(warehouse: Client) -> None:
    writer = BackgroundWriter(WarehouseWriter(warehouse), linger=0.5)
    for n in range(1, 6):  # five versions of one session, queued within the linger
        writer.submit({"sessions": [session("s1", n)]}, None)
    writer.submit({"sessions": [session("s2", 7)]}, None)
    writer.flush()
    rows = warehouse.query(
        "SELECT session_key, n_events, toUnixTimestamp64Milli(start) "
        "FROM sessions FINAL ORDER BY session_key"
    ).result_rows
    assert rows == [("s1", 5, T0), ("s2", 7, T0)]
    versions = warehouse.query(
        "SELECT version FROM sessions WHERE session_key = 's1' ORDER BY n_events"
    ).result_rows
    assert [v for (v,) in versions] == sorted({v for (v,) in versions})  # 5 distinct, rising


def test_a_write_failing_for_a_while_is_retried_and_nothing_is_lost(warehouse: Client) -> None:
    """The warehouse unavailable for a while (here: its database dropped, then created
    again): the write is retried with backoff, flush() waits for it (so the flow's epoch is
    not committed before), and the rows are written once it is back."""
    database = warehouse.database
    warehouse.command(f"DROP DATABASE `{database}`")
    status = WriteStatus()
    writer = BackgroundWriter(WarehouseWriter(warehouse), backoff=(0.1, 0.4), status=status)
    writer.submit({"sessions": [session("s1", 1)]}, None)
    deadline = time.monotonic() + 10
    while status.attempts < 3:  # it keeps trying, and says so to readiness
        assert time.monotonic() < deadline, "the writer did not retry"
        time.sleep(0.05)
    with pytest.raises(WarehouseError, match="retrying"):
        status.check()

    def restore() -> None:
        time.sleep(0.5)
        warehouse.command(f"CREATE DATABASE `{database}`")
        migrate(warehouse)

    restoring = threading.Thread(target=restore)
    restoring.start()
    writer.flush()  # returns once the retried write went through
    writer.submit({"sessions": [session("s2", 2)]}, None)
    writer.flush()
    restoring.join()  # the migration's later steps, before the fixture drops the database
    rows = warehouse.query("SELECT session_key, n_events FROM sessions FINAL ORDER BY 1")
    assert rows.result_rows == [("s1", 1), ("s2", 2)]
    status.check()  # healthy again


def test_a_write_that_can_never_succeed_is_raised_by_flush(warehouse: Client) -> None:
    writer = BackgroundWriter(WarehouseWriter(warehouse), backoff=(0.1, 0.1))
    bad = session("s1", 1)
    bad[7] = "not a number"  # n_events: ClickHouse cannot parse it, whatever is retried
    writer.submit({"sessions": [bad]}, None)
    with pytest.raises(RuntimeError, match="writing to the warehouse failed"):
        writer.flush()
    with pytest.raises(RuntimeError, match="writing to the warehouse failed"):
        writer.submit({"sessions": [session("s2", 1)]}, None)


def test_a_write_being_retried_gives_up_when_the_flow_stops(warehouse: Client) -> None:
    warehouse.command("DROP TABLE sessions")
    stop = threading.Event()
    writer = BackgroundWriter(WarehouseWriter(warehouse), backoff=(0.1, 0.2), stop=stop)
    writer.submit({"sessions": [session("s1", 1)]}, None)
    threading.Timer(0.5, stop.set).start()
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="writing to the warehouse failed"):
        writer.flush()  # the epoch is not committed: the rows are read again at the next start
    assert time.monotonic() - began < 5


def test_a_batch_encoded_before_a_refresh_but_written_after_it_is_rolled_up(
    warehouse: Client,
) -> None:
    # several workers encode; their batches reach the one writer in any order
    writer = WarehouseWriter(warehouse)
    early = WarehouseWriter.encode({"sessions": [session("a", 1)]}, {EVENTS: {T0}})
    late = WarehouseWriter.encode({"sessions": [session("b", 1)]}, {EVENTS: {T0}})
    assert early.version < late.version
    kind = mark_kind(EVENTS, "1m")
    dirty = (
        "SELECT count() FROM rollup_marks FINAL "
        f"WHERE kind = {kind} AND dirty > clean AND minute = fromUnixTimestamp64Milli({T0})"
    )
    writer.write_many([late])
    assert warehouse.query(dirty).result_rows == [(1,)]
    refresh(warehouse)
    assert warehouse.query(dirty).result_rows == [(0,)]
    writer.write_many([early])  # its rows were not in that refresh: the minute is dirty
    assert warehouse.query(dirty).result_rows == [(1,)]


def _keys(warehouse: Client) -> dict[str, str]:
    rows = warehouse.query("SELECT event_id, session_key FROM events FINAL").result_rows
    return dict(rows)


def test_a_merge_moves_rows_written_before_and_a_replay_changes_nothing(
    warehouse: Client,
) -> None:
    from flows.rows import batch_rows
    from tests.unit.flows.test_logic import MIN, ev
    from tests.unit.flows.test_rows import fold

    reads, outs = fold([ev("a", T0), ev("b", T0 + 50 * MIN), ev("x", T0 + 55 * MIN),
                        ev("c", T0 + 25 * MIN)])  # fmt: skip
    a, b = f"u1/{T0}", f"u1/{T0 + 50 * MIN}"
    writer = WarehouseWriter(warehouse)
    writer.write_many([WarehouseWriter.encode(batch_rows([(reads[:3], outs[:3])]).tables)])
    assert _keys(warehouse) == {"a": a, "b": b, "x": b}
    bridge = WarehouseWriter.encode(batch_rows([(reads[3:], outs[3:])]).tables)
    writer.write_many([bridge])
    assert _keys(warehouse) == {"a": a, "b": a, "x": a, "c": a}
    moved = warehouse.query(
        "SELECT event_id, version, topic, offset FROM events FINAL WHERE event_id IN ('b', 'x')"
        " ORDER BY event_id"
    ).result_rows
    # the rows as stored, with the merging batch's version (the read they came from kept)
    assert [(e, v, o) for e, v, _, o in moved] == [
        ("b", bridge.version, 1),
        ("x", bridge.version, 2),
    ]
    writer.write_many([bridge])  # written again after a crash: nothing is left to move
    assert _keys(warehouse) == {"a": a, "b": a, "x": a, "c": a}
    assert warehouse.query("SELECT count() FROM events FINAL").result_rows == [(4,)]


def test_moves_of_batches_written_together_go_where_the_last_one_says(
    warehouse: Client,
) -> None:
    from flows.rows import batch_rows
    from tests.unit.flows.test_logic import MIN, ev
    from tests.unit.flows.test_rows import fold

    # a | b written; then c merges b into a, and in the next batch, z and e merge a into z
    reads, outs = fold([ev("a", T0), ev("b", T0 + 50 * MIN), ev("c", T0 + 25 * MIN),
                        ev("z", T0 - 50 * MIN), ev("e", T0 - 25 * MIN)])  # fmt: skip
    writer = WarehouseWriter(warehouse)
    writer.write_many([WarehouseWriter.encode(batch_rows([(reads[:2], outs[:2])]).tables)])
    second = WarehouseWriter.encode(batch_rows([(reads[2:3], outs[2:3])]).tables)
    third = WarehouseWriter.encode(batch_rows([(reads[3:], outs[3:])]).tables)
    writer.write_many([second, third])  # one write: the inserts, then the moves
    z = f"u1/{T0 - 50 * MIN}"
    assert _keys(warehouse) == {"a": z, "b": z, "c": z, "z": z, "e": z}


def test_a_session_spanning_years_marks_only_the_minutes_holding_events(
    warehouse: Client,
) -> None:
    from flows.rows import batch_rows
    from tests.unit.flows.test_logic import MIN, ev
    from tests.unit.flows.test_rows import fold

    years = 10 * 365 * 1440 * MIN
    reads, outs = fold([ev("late", T0 + years, session_id="s"), ev("mid", T0 + 7 * MIN),
                        ev("early", T0, session_id="s")])  # fmt: skip
    writer = WarehouseWriter(warehouse)
    writer.write_many([WarehouseWriter.encode(batch_rows([(reads[:2], outs[:2])]).tables)])
    batch = batch_rows([(reads[2:], outs[2:])])
    assert batch.spans == ((T0, T0 + years),)
    writer.write_many([WarehouseWriter.encode(batch.tables, batch.minutes, batch.spans)])
    marked = warehouse.query(
        "SELECT kind, toUnixTimestamp(minute) * 1000 FROM rollup_marks FINAL "
        "WHERE dirty > clean ORDER BY kind, minute"
    ).result_rows
    minutes = [T0, T0 + 7 * MIN, T0 + years]  # those holding events, in both families
    assert marked == [(k, m) for k in (0, 1) for m in minutes]
    refresh(warehouse)
    raw = warehouse.query("SELECT count() FROM events FINAL").result_rows
    rolled = warehouse.query("SELECT sum(events) FROM rollup_1m FINAL WHERE level = 1")
    assert rolled.result_rows == raw == [(3,)]
