"""Turning the flow's typed output into warehouse rows (column order of warehouse.writer).

The ``version`` column is left 0 here: the writer stamps each batch with its write time.
Times are epoch milliseconds: clickhouse-connect writes ints into ``DateTime64(3)`` as
they are, much faster than building datetimes.
"""

from __future__ import annotations

import msgspec

from flows.logic import Placed, SessionAgg

__all__ = [
    "Coordinates",
    "duplicate_row",
    "event_row",
    "progress_rows",
    "session_row",
    "tombstone_row",
]


class Coordinates(msgspec.Struct, frozen=True, gc=False):
    """Where a record was read from."""

    topic: str
    partition: int
    offset: int


_NO_ITEMS = ((), (), (), ())  # an event without items: four empty arrays


def event_row(p: Placed, at: Coordinates) -> list[object]:
    """The ``events`` row of one placed event."""
    e = p.enriched
    ev = e.event
    items = ev.items
    if items:
        lines: tuple[object, ...] = (
            [i.product_id for i in items], [i.category or "" for i in items],
            list(e.items_eur), [i.quantity for i in items],
        )  # fmt: skip
    else:
        lines = _NO_ITEMS
    return [
        e.ts_ms, ev.event_id, ev.type, ev.user_id, p.session_key, ev.country or "",
        e.device or "", ev.channel or "", ev.page or "", ev.product_id or "", ev.category or "",
        e.price_eur, ev.quantity or 1, ev.query or "", e.cart_value_eur, ev.order_id or "",
        e.revenue_eur, int(p.is_order), *lines, 0, at.topic, at.partition, at.offset,
    ]  # fmt: skip


def session_row(s: SessionAgg) -> list[object]:
    """The ``sessions`` row of a session's current aggregate."""
    return [
        s.key, s.user_id, s.first_ms, s.last_ms, s.country or "", s.device or "",
        s.channel or "", s.events, s.pageviews, 0, 0,
    ]  # fmt: skip


def tombstone_row(key: str) -> list[object]:
    """Marks a session absorbed by a merge."""
    return [key, "", 0, 0, "", "", "", 0, 0, 0, 1]


def duplicate_row(ts_ms: int, event_id: str, at: Coordinates) -> list[object]:
    """The ``duplicates`` row of a dropped repeat."""
    return [ts_ms, event_id, at.topic, at.partition, at.offset]


def progress_rows(seen: list[tuple[int, Coordinates]], now_ms: int) -> list[list[object]]:
    """One ``flow_progress`` row per partition: newest event time and offset read."""
    best: dict[tuple[str, int], tuple[int, int]] = {}
    for ts_ms, at in seen:
        old = best.get((at.topic, at.partition), (0, 0))
        best[(at.topic, at.partition)] = (max(old[0], ts_ms), max(old[1], at.offset))
    return [[t, p, ts, off, now_ms] for (t, p), (ts, off) in best.items()]
