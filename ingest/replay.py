"""``pulse replay``: publish a JSONL file through the collector's validation and routing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import msgspec

from ingest.collector import Collector, IngestResult
from ingest.producer import Batch

__all__ = ["iter_lines", "replay_file"]

_CHUNK = 5_000


class _Stamp(msgspec.Struct):
    ts: int | datetime | None = None


_stamp = msgspec.json.Decoder(_Stamp)


def iter_lines(path: Path, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """Non-blank lines of a JSONL file, reporting bytes read to ``progress``."""
    with path.open("rb") as fh:
        for line in fh:
            if progress:
                progress(len(line))
            stripped = line.strip()
            if stripped:
                yield stripped


def _event_ms(raw: bytes) -> int | None:
    try:
        ts = _stamp.decode(raw).ts
    except msgspec.MsgspecError:
        return None
    if isinstance(ts, datetime):
        return round(ts.timestamp() * 1000) if ts.tzinfo else None
    return ts


def replay_file(
    collector: Collector,
    batch: Batch,
    path: Path,
    *,
    speed: float | None = None,
    progress: Callable[[int], None] | None = None,
    timeout: float = 60.0,
) -> IngestResult:
    """Send every line of ``path``; ``speed`` None is as fast as possible, else X times real time.

    Paced replays sleep so that event time advances ``speed`` times faster than wall time.
    Returns once the broker has acknowledged every record.
    """
    result = IngestResult()
    chunk: list[bytes] = []
    index = 0
    origin: tuple[int, float] | None = None  # (first event ms, wall start)
    for raw in iter_lines(path, progress):
        if speed is not None:
            ts = _event_ms(raw)
            if ts is not None:
                if origin is None:
                    origin = (ts, time.monotonic())
                due = origin[1] + (ts - origin[0]) / 1000 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    result.merge(collector.submit(chunk, batch, source="replay", start=index))
                    index += len(chunk)
                    chunk = []
                    time.sleep(delay)
        chunk.append(raw)
        if len(chunk) >= _CHUNK:
            result.merge(collector.submit(chunk, batch, source="replay", start=index))
            index += len(chunk)
            chunk = []
    result.merge(collector.submit(chunk, batch, source="replay", start=index))
    batch.wait(timeout)
    return result
