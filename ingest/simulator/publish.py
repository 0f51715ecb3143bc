"""Sending simulated traffic to Kafka through the collector, paced by ``--speed``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ingest.collector import Collector, IngestResult
from ingest.producer import EventProducer
from ingest.simulator import SimConfig, iter_events
from ingest.simulator.timeutil import to_ms

__all__ = ["publish"]

_CHUNK = 2_000


def publish(
    config: SimConfig,
    collector: Collector,
    producer: EventProducer,
    *,
    speed: float | None = 1.0,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> IngestResult:
    """Validate and route every simulated event; ``speed`` None sends as fast as possible,
    otherwise event time runs ``speed`` times faster than the wall clock. Returns once the
    broker acknowledged everything sent (or ``stop`` was set)."""
    origin_ms = to_ms(config.start)
    wall0 = time.monotonic()
    batch = producer.batch()
    result = IngestResult()
    chunk: list[bytes] = []
    sent = 0

    def flush() -> None:
        nonlocal chunk, sent
        if chunk:
            result.merge(collector.submit(chunk, batch, source="simulator", start=sent))
            sent += len(chunk)
            if progress:
                progress(len(chunk))
            chunk = []

    for emit_ms, line in iter_events(config):
        if stop is not None and stop.is_set():
            break
        if speed is not None:
            delay = wall0 + (emit_ms - origin_ms) / 1000 / speed - time.monotonic()
            if delay > 0:
                flush()
                if stop is None:
                    time.sleep(delay)
                else:
                    stop.wait(delay)
        chunk.append(line)
        if len(chunk) >= _CHUNK:
            flush()
    flush()
    batch.wait(60)
    return result
