"""Sending simulated traffic to Kafka through the collector, paced by ``--speed``: §5 events,
or Segment messages through the Segment API's mapping (``ingest.segment``) first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import msgspec

from ingest.collector import Collector, IngestResult, RejectedEvent
from ingest.producer import EventProducer
from ingest.segment import decode_message, translate_all
from ingest.simulator import SimConfig, iter_events
from ingest.simulator.segment import iter_segment
from ingest.simulator.timeutil import to_ms

__all__ = ["publish"]

_encode = msgspec.json.Encoder().encode

_CHUNK = 2_000


def publish(
    config: SimConfig,
    collector: Collector,
    producer: EventProducer,
    *,
    speed: float | None = 1.0,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    segment: bool = False,
    due_from: datetime | None = None,
    caught_up: Callable[[int], object] | None = None,
) -> IngestResult:
    """Validate and route every simulated event; ``speed`` None sends as fast as possible,
    otherwise event time runs ``speed`` times faster than the wall clock. Returns once the
    broker acknowledged everything sent (or ``stop`` was set). ``segment``: send the traffic
    as Segment messages (``ingest.simulator.segment``), mapped as ``/segment/v1/batch``
    maps them.

    Paced, the run's start is due when publishing begins, or at the wall-clock time
    ``due_from`` when given: the events already due then are sent at once (a back-fill),
    the others when they are due (live traffic). ``caught_up`` is told, once, how many
    events were accepted before the first one that had to wait."""
    origin_ms = to_ms(config.start)
    # the wall-clock second (time.time()) at which the run's start is due
    wall0 = due_from.timestamp() if due_from is not None else time.time()
    batch = producer.batch()
    result = IngestResult()
    chunk: list[bytes] = []
    sent = 0
    waiting = caught_up is not None

    def flush() -> None:
        nonlocal chunk, sent
        if chunk and segment:
            done = translate_all(
                ((raw, decode_message(raw)) for raw in chunk),
                received_ms=time.time_ns() // 1_000_000,
            )
            result.merge(collector.submit(done.events, batch, source="segment", start=sent,
                                          originals=done.originals))  # fmt: skip
            for raw, reason in done.refused:
                collector.dead_letter(batch, raw, reason, source="segment")
                result.rejected.append(RejectedEvent(sent, reason))
            sent += len(chunk)
            if progress:
                progress(len(chunk))
            chunk = []
        elif chunk:
            result.merge(collector.submit(chunk, batch, source="simulator", start=sent))
            sent += len(chunk)
            if progress:
                progress(len(chunk))
            chunk = []

    for emit_ms, line in _segment_lines(config) if segment else iter_events(config):
        if stop is not None and stop.is_set():
            break
        if speed is not None:
            delay = wall0 + (emit_ms - origin_ms) / 1000 / speed - time.time()
            if delay > 0:
                flush()
                if waiting and caught_up is not None:
                    waiting = False
                    caught_up(result.accepted)
                if stop is None:
                    time.sleep(delay)
                elif stop.wait(delay):
                    break  # stopped while waiting: this event is not sent
        chunk.append(line)
        if len(chunk) >= _CHUNK:
            flush()
    flush()
    if waiting and caught_up is not None:  # nothing had to wait
        caught_up(result.accepted)
    batch.wait(60)
    return result


def _segment_lines(config: SimConfig) -> Iterator[tuple[int, bytes]]:
    for sent in iter_segment(config):
        yield sent.emit_ms, _encode(sent.message)
