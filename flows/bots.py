"""Events of known crawlers, bots and monitors (CONTRACT §9): kept apart from the fold.

The edge flags them (``Event.bot``) by their user agent; a record that bypassed the edge
(a producer writing to the topics itself) is judged here by the same list
(:func:`ingest.useragent.is_bot`). A bot's event never reaches a user's state, so it is
in no session, no rollup and no METRICS.md number; it is stored in ``bot_events``.
"""

from __future__ import annotations

from collections.abc import Sequence

from flows.rows import Progress, Read
from ingest.useragent import is_bot

__all__ = ["bot_rows", "is_bot_read"]


def is_bot_read(read: Read) -> bool:
    """Whether a read event was sent by a known crawler, bot or monitor."""
    ev = read.event.event
    return ev.bot or (ev.user_agent is not None and is_bot(ev.user_agent))


def bot_rows(reads: Sequence[Read], progress: Progress) -> list[list[object]]:
    """The ``bot_events`` rows of ``reads`` (columns of ``warehouse.schema``); how far
    each partition was read goes into ``progress``."""
    rows: list[list[object]] = []
    for read in reads:
        e = read.event
        ev, part = e.event, read.part
        rows.append([e.ts_ms, ev.event_id, ev.type, ev.user_id, ev.user_agent or "",
                     ev.page or "", 0, part.topic, part.partition, read.offset])  # fmt: skip
        where = (part.topic, part.partition)
        ts, offset = progress.get(where, (0, -1))
        progress[where] = (max(ts, e.ts_ms), max(offset, read.offset))
    return rows
