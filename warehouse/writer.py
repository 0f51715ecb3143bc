"""Batched, replay-safe writes of the flow's output.

A batch written again after a crash is harmless: ``events``, ``sessions`` and
``duplicates`` are ReplacingMergeTree tables keyed by the row's identity, and the writer
stamps ``events`` and ``sessions`` rows with a strictly increasing write version, so the
newest truth wins whatever was written before a crash; ``flow_progress`` keeps maxima.

Rows are sent as ``JSONCompactEachRow`` encoded by msgspec and parsed by ClickHouse:
~1.7x less CPU per row than clickhouse-connect's Native encoding, which walks every value
in Python (measured on chDB, 50K event rows: 2.8 vs 5.0 µs per row).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import msgspec
from clickhouse_connect.driver.client import Client

from warehouse.rollups import mark_dirty

__all__ = ["COLUMNS", "BackgroundWriter", "WarehouseWriter"]

COLUMNS = {
    "events": [
        "ts", "event_id", "type", "user_id", "session_key", "country", "device", "channel",
        "page", "product_id", "category", "price_eur", "quantity", "query", "cart_value_eur",
        "order_id", "revenue_eur", "is_order", "items.product_id", "items.category",
        "items.price_eur", "items.quantity", "version", "topic", "partition", "offset",
    ],
    "sessions": [
        "session_key", "user_id", "start", "end", "country", "device", "channel", "n_events",
        "n_pageviews", "version", "deleted",
    ],
    "duplicates": ["ts", "event_id", "topic", "partition", "offset"],
    "flow_progress": ["topic", "partition", "max_ts", "offset", "updated_at"],
}  # fmt: skip

# DateTime64 columns: rows carry epoch milliseconds, sent as seconds with a fraction (an
# integer would be read as seconds). msgspec writes the shortest exact decimal of ms/1000.
_TIMES = {
    table: [i for i, c in enumerate(columns) if c in {"ts", "start", "end", "max_ts",
                                                      "updated_at"}]
    for table, columns in COLUMNS.items()
}  # fmt: skip
_encode_lines = msgspec.json.Encoder().encode_lines

Rows = Sequence[list[object]]


class WarehouseWriter:
    """Writes one batch of flow output; safe to call from several worker threads."""

    _lock = threading.Lock()  # chDB is one engine per process: serialise its inserts
    _last_version = 0

    def __init__(self, client: Client) -> None:
        self._client = client

    @classmethod
    def _next_version(cls) -> int:
        cls._last_version = max(cls._last_version + 1, time.time_ns())
        return cls._last_version

    def write(
        self, batch: dict[str, Rows], minutes: Mapping[int, Iterable[int]] | None = None
    ) -> None:
        """Insert the rows of one batch, by table (columns as in :data:`COLUMNS`), then
        mark ``minutes`` (epoch-ms minute starts the batch changed, per rollup family)."""
        with self._lock:
            version = self._next_version()
            for table, columns in COLUMNS.items():
                rows = batch.get(table)
                if not rows:
                    continue
                stamp = columns.index("version") if "version" in columns else None
                times = _TIMES[table]
                for row in rows:
                    if stamp is not None:
                        row[stamp] = version
                    for at in times:
                        row[at] = row[at] / 1000  # type: ignore[operator]
                self._client.raw_insert(
                    table, columns, _encode_lines(rows), fmt="JSONCompactEachRow"
                )
            if minutes:
                mark_dirty(self._client, minutes, version)


class BackgroundWriter:
    """A :class:`WarehouseWriter` on its own thread, so that encoding and ClickHouse's
    parsing and merging (which run without the GIL) overlap with the caller's next batch.

    At most ``depth`` batches wait; :meth:`flush` returns once everything submitted is
    written, and raises the error of a failed write (later batches are then not written:
    the caller must stop, and resume from before the failed batch).
    """

    def __init__(
        self, writer: WarehouseWriter, after: Callable[[], None] | None = None, depth: int = 2
    ) -> None:
        self._writer = writer
        self._after = after  # run on the writer's thread after each write
        self._queue: queue.Queue[tuple[dict[str, Rows], Mapping[int, Iterable[int]] | None]] = (
            queue.Queue(maxsize=depth)
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pulse-warehouse-writer")
        self._thread.daemon = True
        self._thread.start()

    def submit(
        self, batch: dict[str, Rows], minutes: Mapping[int, Iterable[int]] | None = None
    ) -> None:
        """Queue one batch (waits while ``depth`` batches are already waiting)."""
        self._check()
        self._queue.put((batch, minutes))

    def flush(self) -> None:
        """Wait until every submitted batch is written."""
        self._queue.join()
        self._check()

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing to the warehouse failed: {self._error}") from self._error

    def _run(self) -> None:
        while True:
            batch, minutes = self._queue.get()
            try:
                if self._error is None:
                    self._writer.write(batch, minutes)
                    if self._after is not None:
                        self._after()
            except BaseException as exc:  # surfaced to the caller by submit/flush
                self._error = exc
            finally:
                self._queue.task_done()
