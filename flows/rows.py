"""Turning the flow's typed output into warehouse rows (column order of warehouse.schema).

Engine-agnostic like :mod:`flows.logic`: :func:`batch_rows` turns what the fold made of a
batch of reads into the rows of its tables, the minutes whose rollups change and how far
each partition was read; :func:`progress_rows` turns the latter (merged over batches) into
``flow_progress`` rows.

The builders here (``*_row``) are the only code that fills rows; they fill them in the
order of :data:`warehouse.schema.COLUMNS`, and code reading a column of a row finds it by
name (:func:`warehouse.schema.position`). The ``version`` column is left 0 here: the
writer stamps each batch with its write time. Times are epoch milliseconds (the writer
sends them as seconds with a fraction).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec

from flows.exposures import EXPOSURE, exposure_row
from flows.ids import unpack_times
from flows.logic import Enriched, Placed, SessionAgg, StepOutput
from flows.logic import Move as LogicMove
from warehouse.rollups import EVENTS, MINUTE_MS, STARTS, minutes_of
from warehouse.schema import MOVES, RELABELS, position

__all__ = [
    "LONG_SPAN_MS",
    "Batch",
    "Part",
    "Read",
    "batch_rows",
    "duplicate_row",
    "event_row",
    "merge_progress",
    "move_row",
    "progress_rows",
    "session_row",
    "tombstone_row",
]


class Part:
    """A topic partition records are read from: one shared object per partition, so the
    sink can key its per-partition progress on it cheaply (identity hash)."""

    __slots__ = ("newest_ms", "partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.newest_ms = 0  # the newest event time read from it

    def __repr__(self) -> str:
        return f"Part({self.topic!r}, {self.partition})"


class Read(msgspec.Struct, frozen=True, gc=False):
    """An enriched event and where it was read from."""

    event: Enriched
    part: Part
    offset: int


# The columns read back from rows built here.
_EVENT_TS = position("events", "ts")
_EVENT_SESSION_KEY = position("events", "session_key")
_SESSION_START = position("sessions", "start")
_SESSION_DELETED = position("sessions", "deleted")

# (topic, partition) -> (newest event ms, last offset read) of the records in a batch
Progress = dict[tuple[str, int], tuple[int, int]]


# A session whose times change marks every minute it spans, up to a day of them (real
# sessions last minutes to hours); a longer one leaves it to the warehouse, which marks
# only the minutes in it that hold events, instead of millions of empty ones.
LONG_SPAN_MS = 86_400_000


class Batch(NamedTuple):
    """One batch of the flow's output as warehouse rows."""

    tables: dict[str, list[list[object]]]  # rows by table (all but flow_progress)
    minutes: dict[int, set[int]]  # rollup family -> minute starts (epoch ms) that change
    events: int  # events read and kept (repeats not counted)
    duplicates: int  # repeated event_ids dropped
    newest_ms: int  # the newest event time read (0: none)
    progress: Progress  # how far each partition was read
    # (first, last) event times (ms) of sessions too long to list their minutes: the
    # warehouse marks the minutes in them that hold events (warehouse.rollups.mark_spans)
    spans: tuple[tuple[int, int], ...] = ()


class _Gone(msgspec.Struct, frozen=True, gc=False):
    """A session absorbed by a merge (written as a tombstone), as of ``rev``."""

    rev: int


def batch_rows(folded: Iterable[tuple[Sequence[Read], Sequence[StepOutput | None]]]) -> Batch:
    """The rows of a batch: ``folded`` pairs reads with what each changed (None: a repeat).

    Each new event is one row; a session's row is built once, from its aggregate as it is
    at the end of the batch (sessions change with nearly every event) or its tombstone;
    one ``duplicates`` row per repeat; and per partition, how far it was read. A merge
    moves the rows of this batch in place and leaves the rows written before to the
    warehouse (``moves``: :mod:`warehouse.moves`).
    """
    event_rows: list[list[object]] = []
    derived: dict[str, list[list[object]]] = {}  # derived session key -> its rows here
    moves: list[Move] = []
    sessions: dict[str, SessionAgg | _Gone] = {}
    users: dict[str, str] = {}  # session key -> user
    progress: dict[Part, list[int]] = {}  # partition -> [newest event ms, offset read]
    dups: list[list[object]] = []
    exposures: list[list[object]] = []
    spans: list[tuple[int, int]] = []
    relabels: list[list[object]] = []
    count = 0
    for reads, outs in folded:
        count += len(reads)
        for read, out in zip(reads, outs, strict=True):
            ts_ms, part, offset = read.event.ts_ms, read.part, read.offset
            seen = progress.get(part)
            if seen is None:
                progress[part] = [ts_ms, offset]
            else:
                if ts_ms > seen[0]:
                    seen[0] = ts_ms
                if offset > seen[1]:
                    seen[1] = offset
            if out is None:
                dups.append(duplicate_row(ts_ms, read.event.event.event_id, part, offset))
                continue
            placed = out.placed
            key, event = placed.session_key, placed.enriched.event
            row = event_row(placed, part, offset)
            event_rows.append(row)
            if event.type == EXPOSURE and (exposure := exposure_row(placed.enriched)):
                exposures.append(exposure)
            if event.session_id is None:
                derived.setdefault(key, []).append(row)
            for move in out.moves:
                _move(move, event.user_id, derived, moves)
            session = out.session
            old = sessions.get(key)
            if old is None or session.rev >= old.rev:
                sessions[key] = session
                users[key] = event.user_id
            for gone, rev in out.tombstones:
                sessions[gone] = _Gone(rev)
            if out.reattributed:
                spans.extend(out.reattributed)
            if out.identified is not None:  # rewritten in the warehouse (warehouse.identity)
                relabels.append([*out.identified, event.user_id, 0])
    session_rows = [
        tombstone_row(key) if type(agg) is _Gone else session_row(key, users[key], agg)  # type: ignore[arg-type]
        for key, agg in sessions.items()
    ]
    # Minutes whose rollups change: event measures where events were written, start
    # measures where a session written starts, both all over a session whose attributes
    # or key may have changed.
    event_minutes = minutes_of(row[_EVENT_TS] for row in event_rows)  # type: ignore[misc]
    start_minutes = minutes_of(row[_SESSION_START] for row in session_rows  # type: ignore[misc]
                               if not row[_SESSION_DELETED])  # fmt: skip
    long_spans = []
    for first, last in spans:
        if last - first > LONG_SPAN_MS:  # a hostile session may span years: see Batch
            long_spans.append((first, last))
            continue
        span = range(first - first % MINUTE_MS, last + 1, MINUTE_MS)
        event_minutes.update(span)
        start_minutes.update(span)
    tables = {"events": event_rows, "sessions": session_rows, "duplicates": dups}
    if exposures:
        tables["exposures"] = exposures
    if moves:
        tables[MOVES] = [move_row(*move) for move in moves]
    if relabels:
        tables[RELABELS] = relabels
    newest = max((ts for ts, _ in progress.values()), default=0)
    by_part = {(p.topic, p.partition): (ts, offset) for p, (ts, offset) in progress.items()}
    return Batch(tables, {EVENTS: event_minutes, STARTS: start_minutes},
                 count - len(dups), len(dups), newest, by_part, tuple(long_spans))  # fmt: skip


Move = tuple[str, str, str, bytes]  # user, old session key, new session key, event times


def _move(
    move: LogicMove, user: str, derived: dict[str, list[list[object]]], moves: list[Move]
) -> None:
    """A merge's move: this batch's rows of the old session take the new key here; the
    rows written before are moved by the warehouse, once this batch is in."""
    rows = derived.pop(move.old, None)
    if rows:
        for row in rows:
            row[_EVENT_SESSION_KEY] = move.new
        derived.setdefault(move.new, []).extend(rows)
    moves.append((user, move.old, move.new, move.times))


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


def session_row(key: str, user_id: str, s: SessionAgg) -> list[object]:
    """The ``sessions`` row of a session's current aggregate."""
    return [
        key, user_id, s.first_ms, s.last_ms, s.country or "", s.device or "",
        s.channel or "", s.events, s.pageviews, 0, 0,
    ]  # fmt: skip


def tombstone_row(key: str) -> list[object]:
    """Marks a session absorbed by a merge."""
    return [key, "", 0, 0, "", "", "", 0, 0, 0, 1]


def duplicate_row(ts_ms: int, event_id: str, part: Part, offset: int) -> list[object]:
    """The ``duplicates`` row of a dropped repeat."""
    return [ts_ms, event_id, part.topic, part.partition, offset]


def move_row(user_id: str, old: str, new: str, times: bytes) -> list[object]:
    """The row of a merge's move of ``user_id``'s events (packed ``times``) from the
    session ``old`` to ``new`` (:data:`warehouse.schema.MOVE_COLUMNS`)."""
    return [user_id, old, new, list(unpack_times(times)), 0]


def merge_progress(into: Progress, progress: Progress) -> None:
    """Add how far a batch read each partition to ``into`` (the maxima of both)."""
    for part, (ts, offset) in progress.items():
        seen = into.get(part)
        into[part] = (ts, offset) if seen is None else (max(seen[0], ts), max(seen[1], offset))


def progress_rows(progress: Progress, now_ms: int) -> list[list[object]]:
    """One ``flow_progress`` row per partition from its (newest event ms, offset read)."""
    return [[topic, partition, ts, offset, now_ms]
            for (topic, partition), (ts, offset) in progress.items()]  # fmt: skip
