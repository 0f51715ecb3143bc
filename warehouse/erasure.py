"""Erasing a user's rows from the warehouse (CONTRACT §11), and the audit of it.

Every row of the user goes: events (orders and experiment exposures are events of their
types; an exposure's ``exposures`` row goes with it, and so do the experiment query's rows
of the user: ``experiment_users``, ``exposed_users``, ``user_acts``, and the kept sums of
its experiments are not read until the refresh takes them again), sessions (with the
tombstones of its merged derived sessions, whose keys carry the user id), and the
``duplicates`` rows of its repeated events. The rollups hold no id (their exact sets are
of 64-bit hashes), but the user's share of them must go: the minutes of its events and of
its sessions' starts are marked dirty, so queries answer them from the raw tables at once,
and the rollups' refresh recomputes them, their hours and their days.

Deletes are ClickHouse lightweight ``DELETE``s (rows masked at once, gone from disk at the
next merge), bounded by the user: the primary keys are by time, so each is a scan of the
``user_id`` column (docs/benchmarks.md, "Forgetting a user").
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from warehouse.experiment_totals import mark_written
from warehouse.rollups import EVENTS, STARTS, mark_dirty

__all__ = ["KINDS", "audit", "count_rows", "erase_rows", "flow_has_read"]

KINDS = ("events", "orders", "exposures", "sessions", "duplicates")

# A derived session's key is "<user_id>/<first event ms>" (flows.logic): its tombstone
# (user_id '') is the user's too.
_OWNS_KEY = (
    "(startsWith(session_key, concat({u:String}, '/'))"
    " AND match(substring(session_key, length({u:String}) + 2), '^-?[0-9]+$'))"
)
# Without FINAL (a merge of the whole table, ~10x the scan): a row written again has the
# same event_id, session key or Kafka position, so distinct ones count each once.
_COUNT = f"""
SELECT uniqExact(event_id), uniqExactIf(event_id, is_order = 1),
    uniqExactIf(event_id, type = 'experiment_exposure'),
    (SELECT countIf(alive) FROM (
        SELECT argMax(deleted, version) = 0 AS alive FROM sessions
        WHERE user_id = {{u:String}} OR {_OWNS_KEY} GROUP BY session_key)),
    (SELECT uniqExact(topic, partition, offset) FROM duplicates
     WHERE event_id IN (SELECT event_id FROM events WHERE user_id = {{u:String}}))
FROM events WHERE user_id = {{u:String}}
"""
_MINUTES = """
SELECT 0, toUnixTimestamp(toStartOfMinute(ts)) * 1000 FROM events WHERE user_id = {u:String}
UNION DISTINCT
SELECT 1, toUnixTimestamp(toStartOfMinute(start)) * 1000 FROM sessions
WHERE user_id = {u:String} AND deleted = 0
"""
# Order matters: duplicates and sessions are found through the user's events.
_DELETES = (
    "DELETE FROM duplicates WHERE event_id IN "
    "(SELECT event_id FROM events WHERE user_id = {u:String})",
    f"DELETE FROM sessions WHERE user_id = {{u:String}} OR {_OWNS_KEY} OR session_key IN "
    "(SELECT DISTINCT session_key FROM events WHERE user_id = {u:String})",
    "DELETE FROM exposures WHERE user_id = {u:String}",
    # the experiment query's per-user rows (warehouse/sql/008_experiment_users.sql)
    "DELETE FROM experiment_users WHERE user_id = {u:String}",
    "DELETE FROM exposed_users WHERE user_id = {u:String}",
    "DELETE FROM user_acts WHERE user_id = {u:String}",
    "DELETE FROM events WHERE user_id = {u:String}",
    "DELETE FROM bot_events WHERE user_id = {u:String}",  # CONTRACT §9: stored, so erased
)


def count_rows(client: Client, user_id: str) -> dict[str, int]:
    """How many rows of each kind (:data:`KINDS`) the warehouse holds of a user."""
    row = client.query(_COUNT, parameters={"u": user_id}).result_rows[0]
    return dict(zip(KINDS, map(int, row), strict=True))


def erase_rows(client: Client, user_id: str) -> dict[str, int]:
    """Delete every row of ``user_id`` (the id as stored) and mark its minutes for the
    rollups; how many rows of each kind went (all 0 when none were left: idempotent)."""
    counts = count_rows(client, user_id)
    minutes: dict[int, set[int]] = {EVENTS: set(), STARTS: set()}
    for family, ms in client.query(_MINUTES, parameters={"u": user_id}).result_rows:
        minutes[int(family)].add(int(ms))
    # a session's start minute also counts its events' measures, and its events' minutes
    # the session's attributes (sessions and events of a minute are recomputed together)
    both = minutes[EVENTS] | minutes[STARTS]
    if not any(counts.values()) and not both:
        return counts
    experiments = [
        str(e)
        for (e,) in client.query(
            "SELECT DISTINCT experiment FROM exposed_users WHERE user_id = {u:String}",
            parameters={"u": user_id},
        ).result_rows
    ]
    for sql in _DELETES:
        client.command(sql, parameters={"u": user_id})
    mark_written(client, experiments)  # after the deletes: sums taken now are without it
    if both:
        mark_dirty(client, {EVENTS: both, STARTS: both}, time.time_ns())
    return counts


def flow_has_read(client: Client, topic: str, partition: int, offset: int) -> bool:
    """Whether the flow acknowledged the record at ``offset`` of ``topic``/``partition``
    (its progress row is written after the rows of everything it read before)."""
    rows = client.query(
        "SELECT max(offset) FROM flow_progress WHERE topic = {t:String} AND partition = {p:UInt16}",
        parameters={"t": topic, "p": partition},
    ).result_rows
    return bool(rows) and rows[0][0] is not None and int(rows[0][0]) >= offset


def audit(
    client: Client,
    *,
    at: datetime,
    key_name: str,
    id_hash: str,
    counts: Mapping[str, int],
    flow_acknowledged: bool,
) -> None:
    """Record one erasure request (never the id: its salted hash)."""
    row = [at.astimezone(UTC), key_name, id_hash, *(counts.get(k, 0) for k in KINDS)]
    row.append(int(flow_acknowledged))
    columns = ["at", "key_name", "id_hash", *KINDS, "flow_acknowledged"]
    client.insert("erasures", [row], column_names=columns)
