"""Bytewax's Kafka source, plus two ways to end: idle for a while, or asked to stop."""

from __future__ import annotations

import threading
import time
from typing import Any

from bytewax.connectors.kafka import KafkaSource
from bytewax.inputs import StatefulSourcePartition

__all__ = ["StoppableKafkaSource"]


class _StoppablePartition(StatefulSourcePartition[Any, Any]):
    """Delegates to a Kafka partition; ends it when idle ``idle_s`` or when ``stop`` is set."""

    def __init__(self, inner: Any, idle_s: float | None, stop: threading.Event | None) -> None:
        self._inner = inner
        self._idle_s = idle_s
        self._stop = stop
        self._last = time.monotonic()

    def next_batch(self) -> list[Any]:
        if self._stop is not None and self._stop.is_set():
            raise StopIteration
        batch = self._inner.next_batch()
        now = time.monotonic()
        if batch:
            self._last = now
        elif self._idle_s is not None and now - self._last >= self._idle_s:
            raise StopIteration
        return list(batch)

    def next_awake(self) -> Any:
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class StoppableKafkaSource(KafkaSource):
    """A tailing Kafka source whose partitions end when idle ``idle_s`` or on ``stop``."""

    def __init__(
        self,
        *args: Any,
        idle_s: float | None = None,
        stop: threading.Event | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._idle_s = idle_s
        self._stop = stop

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Any:
        part = super().build_part(step_id, for_part, resume_state)
        return _StoppablePartition(part, self._idle_s, self._stop)
