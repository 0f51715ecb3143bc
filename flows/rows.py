"""Turning the flow's typed output into warehouse rows (column order of warehouse.writer).

The ``version`` column is left 0 here: the writer stamps each batch with its write time.
Times are epoch milliseconds: clickhouse-connect writes ints into ``DateTime64(3)`` as
they are, much faster than building datetimes.
"""

from __future__ import annotations

from flows.logic import Placed, SessionAgg

__all__ = [
    "Part",
    "duplicate_row",
    "event_row",
    "progress_rows",
    "session_row",
    "tombstone_row",
]


class Part:
    """A topic partition records are read from: one shared object per partition, so the
    sink can key its per-partition progress on it cheaply (identity hash)."""

    __slots__ = ("partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition

    def __repr__(self) -> str:
        return f"Part({self.topic!r}, {self.partition})"


_NO_ITEMS = ((), (), (), ())  # an event without items: four empty arrays


def event_row(p: Placed, part: Part, offset: int) -> list[object]:
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
        e.revenue_eur, int(p.is_order), *lines, 0, part.topic, part.partition, offset,
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


def duplicate_row(ts_ms: int, event_id: str, part: Part, offset: int) -> list[object]:
    """The ``duplicates`` row of a dropped repeat."""
    return [ts_ms, event_id, part.topic, part.partition, offset]


def progress_rows(progress: dict[Part, list[int]], now_ms: int) -> list[list[object]]:
    """One ``flow_progress`` row per partition from its ``[newest event ms, offset read]``."""
    return [[p.topic, p.partition, ts, offset, now_ms] for p, (ts, offset) in progress.items()]
