"""One small producer interface over two Kafka clients.

Both are configured for no silent loss: acks from all in-sync replicas, idempotence and
retries. A batch is confirmed only when the broker has acknowledged every record; a broker
outage surfaces as :class:`~ingest.errors.DeliveryError`, never as silent loss.

- :class:`ConfluentProducer` (librdkafka, ~580K msg/s here): the collector, ``pulse replay``
  and the simulator use it.
- :class:`KafkaPythonProducer` (pure Python, ~25K msg/s): a dependency-light producer for
  commerce services that only need kafka-python.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Any

from ingest.errors import DeliveryError

__all__ = ["Batch", "ConfluentProducer", "EventProducer", "KafkaPythonProducer", "make_producer"]

Headers = list[tuple[str, bytes]]


class Batch(ABC):
    """Records sent together and confirmed together."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.first_error: str | None = None
        self._lock = threading.Lock()

    @abstractmethod
    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> None:
        """Queue one record (may block briefly while the client's queue is full)."""

    @abstractmethod
    def wait(self, timeout: float = 30.0) -> None:
        """Block until every record is acknowledged; raise DeliveryError otherwise."""

    def _record_failure(self, error: object) -> None:
        with self._lock:
            self.failed += 1
            self.first_error = self.first_error or str(error)


class EventProducer(ABC):
    """What the collector, replay and simulator need from a Kafka client."""

    @abstractmethod
    def batch(self) -> Batch:
        """Start a batch of records to be confirmed together."""

    @abstractmethod
    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued and release the client."""


class ConfluentProducer(EventProducer):
    """librdkafka through confluent-kafka: fast, idempotent, acks=all."""

    def __init__(self, bootstrap: str, *, delivery_timeout_s: float = 30.0, **extra: Any) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": "pulse-ingest",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 500_000,
                "message.timeout.ms": int(delivery_timeout_s * 1000),
                "log_level": 3,  # errors only: outages surface as DeliveryError
                **extra,
            }
        )

    def batch(self) -> Batch:
        return _ConfluentBatch(self._producer)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)


class _ConfluentBatch(Batch):
    def __init__(self, producer: Any) -> None:
        super().__init__()
        self._producer = producer
        self._pending = 0

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        with self._lock:
            self._pending -= 1
        if err is not None:
            self._record_failure(err)

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> None:
        with self._lock:
            self._pending += 1
        self.sent += 1
        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.05)
        if self.sent % 1000 == 0:
            self._producer.poll(0)

    def wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self._pending > 0 and time.monotonic() < deadline:
            self._producer.poll(0.05)
        if self._pending > 0 or self.failed:
            raise DeliveryError(
                self._pending + self.failed, self.first_error or "timed out waiting for acks"
            )


class KafkaPythonProducer(EventProducer):
    """kafka-python: pure Python, idempotent, acks=all."""

    def __init__(self, bootstrap: str, *, delivery_timeout_s: float = 30.0, **extra: Any) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="pulse-ingest",
            acks="all",
            enable_idempotence=True,
            retries=2**31 - 1,
            linger_ms=5,
            delivery_timeout_ms=int(delivery_timeout_s * 1000),
            **extra,
        )

    def batch(self) -> Batch:
        return _KafkaPythonBatch(self._producer)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.close(timeout)


class _KafkaPythonBatch(Batch):
    def __init__(self, producer: Any) -> None:
        super().__init__()
        self._producer = producer
        self._futures: list[Any] = []

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> None:
        self.sent += 1
        self._futures.append(self._producer.send(topic, value=value, key=key, headers=headers))

    def wait(self, timeout: float = 30.0) -> None:
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout)
        except KafkaError as exc:
            self._record_failure(exc)
        pending = 0
        for future in self._futures:
            if not future.is_done:
                pending += 1
            elif future.failed():
                self._record_failure(future.exception)
        if pending or self.failed:
            raise DeliveryError(pending + self.failed, self.first_error or "timed out")


def make_producer(bootstrap: str, client: str = "confluent", **kwargs: Any) -> EventProducer:
    """A producer for ``bootstrap`` using ``client`` (``confluent`` or ``kafka-python``)."""
    if client == "confluent":
        return ConfluentProducer(bootstrap, **kwargs)
    if client == "kafka-python":
        return KafkaPythonProducer(bootstrap, **kwargs)
    raise ValueError(f"unknown Kafka client {client!r}: use confluent or kafka-python")
