"""The flow's warehouse writer on chDB: batches merged into one insert keep their own
versions (a later batch's row wins), and a failed write is raised, not lost."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.client import Client

from warehouse.writer import BackgroundWriter, WarehouseWriter

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


def test_a_failed_write_is_raised_by_flush(warehouse: Client) -> None:
    warehouse.command("DROP TABLE sessions")  # the insert fails
    writer = BackgroundWriter(WarehouseWriter(warehouse))
    writer.submit({"sessions": [session("s1", 1)]}, None)
    with pytest.raises(RuntimeError, match="writing to the warehouse failed"):
        writer.flush()
    with pytest.raises(RuntimeError, match="writing to the warehouse failed"):
        writer.submit({"sessions": [session("s2", 1)]}, None)
