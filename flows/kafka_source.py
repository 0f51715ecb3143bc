"""Bytewax's Kafka source, plus an optional stop once every partition has been idle."""

from __future__ import annotations

import time
from typing import Any

from bytewax.connectors.kafka import KafkaSource
from bytewax.inputs import StatefulSourcePartition

__all__ = ["IdleStopKafkaSource"]


class _IdleStopPartition(StatefulSourcePartition[Any, Any]):
    """Delegates to a Kafka partition; ends it after ``idle_s`` without a record."""

    def __init__(self, inner: Any, idle_s: float) -> None:
        self._inner = inner
        self._idle_s = idle_s
        self._last = time.monotonic()

    def next_batch(self) -> list[Any]:
        batch = self._inner.next_batch()
        now = time.monotonic()
        if batch:
            self._last = now
        elif now - self._last >= self._idle_s:
            raise StopIteration
        return list(batch)

    def next_awake(self) -> Any:
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class IdleStopKafkaSource(KafkaSource):
    """A tailing Kafka source; with ``idle_s`` each partition stops after that long idle."""

    def __init__(self, *args: Any, idle_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle_s = idle_s

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Any:
        part = super().build_part(step_id, for_part, resume_state)
        return part if self._idle_s is None else _IdleStopPartition(part, self._idle_s)
