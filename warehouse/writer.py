"""Batched, replay-safe writes of the flow's output.

A batch written again after a crash is harmless: ``events``, ``sessions`` and
``duplicates`` are ReplacingMergeTree tables keyed by the row's identity, and
``events`` and ``sessions`` rows are stamped with a strictly increasing version when they
are encoded, so the newest truth wins whatever was written before a crash;
``flow_progress`` keeps maxima. A batch may also carry moves: events a merge of derived
sessions moved to another session, rewritten in the warehouse once the batch's rows are in
(:mod:`warehouse.moves`). The minutes a batch changed are marked for the rollups when it is
written.

Rows are sent as ``JSONCompactEachRow`` encoded by msgspec and parsed by ClickHouse:
less CPU per row than clickhouse-connect's Native encoding, which walks every value in
Python (docs/benchmarks.md, "Flow: draining pre-filled topics into the warehouse").
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import msgspec
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from prometheus_client import Counter

from warehouse.clock import next_version
from warehouse.errors import WarehouseError
from warehouse.identity import apply_relabels
from warehouse.moves import apply_moves
from warehouse.rollups import mark_dirty, mark_spans
from warehouse.schema import COLUMNS, MOVES, RELABELS, TIME_COLUMNS, position

__all__ = [
    "BackgroundWriter",
    "Encoded",
    "WarehouseWriter",
    "WriteStatus",
    "is_permanent",
]

_log = logging.getLogger(__name__)
WRITE_RETRIES = Counter(
    "pulse_warehouse_write_retries_total", "Failed warehouse writes of the flow, retried"
)

# Per table: where its rows have times (epoch ms, sent as seconds with a fraction: msgspec
# writes the shortest exact decimal of ms/1000) and their version (None: no version).
_TIMES = {t: [i for i, c in enumerate(cs) if c in TIME_COLUMNS] for t, cs in COLUMNS.items()}
_VERSION = {t: cs.index("version") if "version" in cs else None for t, cs in COLUMNS.items()}
_MOVE_VERSION = position(MOVES, "version")
_RELABEL_VERSION = position(RELABELS, "version")
_encode_lines = msgspec.json.Encoder().encode_lines

Rows = Sequence[list[object]]


class Encoded(NamedTuple):
    """One batch ready to insert: JSON lines by table, its version, the minutes it changed
    (epoch-ms minute starts per rollup family). Plain bytes, ints and sets: cheap to send
    from the process that encoded it to the one writing."""

    lines: dict[str, bytes]
    version: int
    minutes: Mapping[int, Iterable[int]] | None
    spans: tuple[tuple[int, int], ...] = ()  # whose minutes holding events change

    @staticmethod
    def join(batches: Sequence[Encoded]) -> Encoded:
        """Several batches as one (each row keeps its batch's version)."""
        if len(batches) == 1:
            return batches[0]
        lines = {
            table: b"".join(b.lines[table] for b in batches if table in b.lines)
            for table in (*COLUMNS, MOVES, RELABELS)
            if any(table in b.lines for b in batches)
        }
        minutes: dict[int, set[int]] = {}
        for b in batches:
            for kind, ms in (b.minutes or {}).items():
                minutes.setdefault(kind, set()).update(ms)
        spans = tuple(s for b in batches for s in b.spans)
        return Encoded(lines, max(b.version for b in batches), minutes, spans)


class WarehouseWriter:
    """Writes batches of flow output; safe to call from several worker threads."""

    _lock = threading.Lock()  # chDB is one engine per process: serialise its inserts

    def __init__(self, client: Client, check: Callable[[], None] | None = None) -> None:
        self._client = client
        self._check = check  # raises when the warehouse is gone (see warehouse.client)

    @classmethod
    def lock(cls) -> threading.Lock:
        """The lock serialising this process's writes (chDB: one engine per process), for
        other statements that must not interleave with them (an erasure's deletes)."""
        return cls._lock

    @classmethod
    def encode(
        cls,
        batch: Mapping[str, Rows],
        minutes: Mapping[int, Iterable[int]] | None = None,
        spans: Sequence[tuple[int, int]] = (),
    ) -> Encoded:
        """Encode a batch's rows (by table, columns as in
        :data:`~warehouse.schema.COLUMNS`), stamped with the next version; the rows given
        are left as they are. Versions grow in the order batches are encoded in this
        process, which must be the order each row's batches are written in: the flow's
        rows belong to one user's shard, encoded and sent to the writer in order. Rows are
        encoded at once, so the many small lists they are made of die young. Needs no
        warehouse: a flow's workers encode, one process writes. ``minutes``: the minutes
        whose rollups change; ``spans``: (first, last) times whose minutes holding events
        change (:func:`~warehouse.rollups.mark_spans`)."""
        version = next_version()
        lines = {}
        for table in COLUMNS:
            rows = batch.get(table)
            if not rows:
                continue
            lines[table] = _encode_lines(_stamped(rows, _VERSION[table], version, _TIMES[table]))
        moves = batch.get(MOVES)  # events moved to another session (warehouse.moves)
        if moves:
            lines[MOVES] = _encode_lines(_stamped(moves, _MOVE_VERSION, version, ()))
        relabels = batch.get(RELABELS)  # visits identified (warehouse.identity)
        if relabels:
            lines[RELABELS] = _encode_lines(_stamped(relabels, _RELABEL_VERSION, version, ()))
        return Encoded(lines, version, minutes, tuple(spans))

    def write_many(self, batches: Sequence[Encoded]) -> None:
        """Write encoded batches with one insert per table (each row keeps its batch's
        version, so a row of a later batch still wins over an earlier one's)."""
        batch = Encoded.join(batches)
        with self._lock:
            if self._check is not None:
                self._check()
            for table, columns in COLUMNS.items():
                data = batch.lines.get(table)
                if data:
                    self._client.raw_insert(table, columns, data, fmt="JSONCompactEachRow")
            moves = batch.lines.get(MOVES)
            if moves:  # after the inserts: every row a move rewrites is in
                apply_moves(self._client, moves, COLUMNS["events"])
            relabels = batch.lines.get(RELABELS)
            if relabels:  # after the moves: a relabel finds rows under their last key
                apply_relabels(self._client, relabels, COLUMNS["events"])
            if batch.minutes:
                # Stamped now, not when encoded: batches encoded by several workers may
                # arrive out of order, and a mark must be newer than any refresh that
                # could have read the minute before these rows were in.
                mark_dirty(self._client, batch.minutes, next_version())
            if batch.spans:  # after the inserts: the spans' own events are in
                mark_spans(self._client, batch.spans, next_version())


def _stamped(rows: Rows, stamp: int | None, version: int, times: Sequence[int]) -> Rows:
    """Copies of ``rows`` as they are sent: ``version`` at ``stamp``, times in seconds."""
    if stamp is None and not times:
        return rows
    out = []
    for row in rows:
        row = row.copy()
        if stamp is not None:
            row[stamp] = version
        for at in times:
            row[at] = row[at] / 1000  # type: ignore[operator]
        out.append(row)
    return out


class WriteStatus:
    """Whether the flow's writes succeed, for readiness: set by the writer's thread."""

    def __init__(self) -> None:
        self.failing_since: float | None = None  # monotonic time of the first failure
        self.attempts = 0
        self.last_error = ""

    def failed(self, error: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.attempts += 1
        self.last_error = _short(error)

    def succeeded(self) -> None:
        self.failing_since, self.attempts, self.last_error = None, 0, ""

    def check(self) -> None:
        """Raise while a write is failing (being retried)."""
        if self.failing_since is not None:
            since = time.monotonic() - self.failing_since
            raise WarehouseError(
                f"writing to the warehouse has failed for {since:.0f} s ({self.attempts} "
                f"attempts; retrying): {self.last_error}"
            )


# ClickHouse error codes of data that can never be written however often it is retried
# (parsing, types, ranges, unknown columns): such a batch stops the flow (it is re-read
# after a restart) instead of being retried for ever. Every other error (the warehouse
# unreachable, its directory or database gone, out of memory or disk...) is retried.
_DATA_ERRORS = frozenset({6, 16, 26, 27, 32, 38, 41, 47, 53, 62, 69, 70, 72, 117, 131, 321,
                          349})  # fmt: skip
_CODE = re.compile(r"Code: (\d+)\.")


def is_permanent(error: BaseException) -> bool:
    """Whether a failed write would fail again whatever the warehouse's state."""
    if isinstance(error, ClickHouseError):
        match = _CODE.search(str(error))
        return match is not None and int(match.group(1)) in _DATA_ERRORS
    # the warehouse gone, a connection refused, a timeout: worth retrying; anything else
    # is a bug in what was encoded, which no retry fixes
    return not isinstance(error, WarehouseError | OSError)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


class BackgroundWriter:
    """A :class:`WarehouseWriter` on its own thread, so that encoding and ClickHouse's
    parsing and merging (which run without the GIL) overlap with the caller's next batch.

    Like a Kafka producer's ``linger.ms``, a write waits until ``linger`` seconds after the
    previous one and takes every batch submitted meanwhile: a trickle of small batches
    becomes a few inserts a second (each insert is a part ClickHouse has to merge).
    :meth:`flush` returns once everything submitted is written. A write that fails because
    the warehouse is unavailable is retried with backoff (``backoff``: first and longest
    wait in seconds) until it succeeds, so an outage only delays the flow: flush() waits,
    and the flow's epoch is not committed before its rows are written. A write that can
    never succeed (:func:`is_permanent`), or any failure once ``stop`` is set, makes
    :meth:`flush` raise (later batches are then not written: the caller must stop, and
    resume from before the failed batch). At most ``depth`` batches wait.
    """

    def __init__(
        self,
        writer: WarehouseWriter,
        after: Callable[[], None] | None = None,
        *,
        linger: float = 0.2,
        depth: int = 64,
        backoff: tuple[float, float] = (0.5, 10.0),
        stop: threading.Event | None = None,
        status: WriteStatus | None = None,
    ) -> None:
        self._writer = writer
        self._after = after  # run on the writer's thread after each write
        self._linger = linger
        self._backoff = backoff
        self._stop = stop or threading.Event()
        self.status = status or WriteStatus()
        self._queue: queue.Queue[Encoded] = queue.Queue(maxsize=depth)
        self._flushing = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pulse-warehouse-writer")
        self._thread.daemon = True
        self._thread.start()

    def submit(
        self, batch: Mapping[str, Rows], minutes: Mapping[int, Iterable[int]] | None = None
    ) -> None:
        """Encode one batch here and queue it (waits while ``depth`` batches are waiting)."""
        self.submit_encoded(self._writer.encode(batch, minutes))

    def submit_encoded(self, batch: Encoded) -> None:
        """Queue one encoded batch (waits while ``depth`` batches are waiting)."""
        self._check()
        while True:
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                self._check()  # the writer gave up while this waited

    def flush(self) -> None:
        """Write everything submitted now, and wait until it is written."""
        self._flushing.set()
        try:
            # queue.join() cannot be interrupted: wait in steps, so that a writer that
            # gave up (stop set during an outage) is noticed
            with self._queue.all_tasks_done:
                while self._queue.unfinished_tasks and self._error is None:
                    self._queue.all_tasks_done.wait(0.5)
        finally:
            self._flushing.clear()
        self._check()

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing to the warehouse failed: {self._error}") from self._error

    def _take(self, last: float) -> list[Encoded]:
        """The next batches: the first one, then whatever comes until the linger is over."""
        jobs = [self._queue.get()]
        deadline = last + self._linger
        while not self._flushing.is_set() and (wait := deadline - time.monotonic()) > 0:
            try:
                jobs.append(self._queue.get(timeout=min(wait, 0.02)))
            except queue.Empty:
                continue
        while True:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                return jobs

    def _write(self, jobs: list[Encoded]) -> None:
        """Write ``jobs``, retrying while the warehouse is unavailable (re-writing a batch
        is harmless: every table is replay-safe)."""
        first, longest = self._backoff
        while True:
            try:
                self._writer.write_many(jobs)
            except Exception as exc:
                if is_permanent(exc) or self._stop.is_set():
                    raise
                self.status.failed(exc)
                WRITE_RETRIES.inc()
                if self.status.attempts == 1 or self.status.attempts % 10 == 0:
                    _log.warning(
                        "writing to the warehouse failed (attempt %d; retrying, nothing is "
                        "lost): %s", self.status.attempts, _short(exc),
                    )  # fmt: skip
                if self._stop.wait(min(longest, first * 2 ** (self.status.attempts - 1))):
                    raise
                continue
            if self.status.attempts:
                _log.warning("writing to the warehouse works again (after %d failed attempts)",
                             self.status.attempts)  # fmt: skip
            self.status.succeeded()
            return

    def _run(self) -> None:
        last = 0.0
        while True:
            jobs = self._take(last)
            try:
                if self._error is None:
                    self._write(jobs)
                    last = time.monotonic()
                    if self._after is not None:
                        try:
                            self._after()
                        except Exception as exc:  # rollups are recomputed at the next one
                            _log.warning("refreshing the rollups failed: %s", _short(exc))
            except BaseException as exc:  # surfaced to the caller by submit/flush
                self._error = exc
                with self._queue.all_tasks_done:
                    self._queue.all_tasks_done.notify_all()
            finally:
                for _ in jobs:
                    self._queue.task_done()
