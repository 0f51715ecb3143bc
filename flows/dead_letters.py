"""The flow's dead letters: records on an event topic it cannot decode or store.

Only a producer that bypasses the edge (``ingest.collector``) can write such a record; the
flow judges each one by the edge's rules (``ingest.events.validate``) and, instead of
stopping, sends it to the dead-letter topic (CONTRACT §6) as the collector does: the
original bytes as the value, the reason in ``pulse.reason``, ``pulse.source=flow``, and
where it was read (``pulse.topic``, ``pulse.partition``, ``pulse.offset``).

The sink writes them at least once: each batch is acknowledged by the broker before the
epoch that read its records is committed, and after a crash the records read since the
last commit are read and dead-lettered again (their headers tell the copies apart).
"""

from __future__ import annotations

import logging

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import Counter

__all__ = ["DEAD_LETTERS", "MAX_LETTER_BYTES", "DeadLetter", "DeadLetterSink"]

DEAD_LETTERS = Counter(
    "pulse_flow_dead_letters_total",
    "Records on event topics the flow could not decode or store, sent to the dead-letter topic",
    ["topic"],
)
# A record larger than this is dead-lettered cut to this size (``pulse.truncated`` gives
# its length): the event topics may hold records up to the broker's limit, and the letter's
# headers must still fit under it. Events are at most 32 KiB.
MAX_LETTER_BYTES = 256 * 1024
# How long the producer retries one letter before the flow gives up and stops (it then
# resumes from its last epoch and reads the record again).
_DELIVERY_TIMEOUT_MS = 120_000
_log = logging.getLogger(__name__)


class DeadLetter(msgspec.Struct, frozen=True, gc=False):
    """A record the flow could not use, why, and where it was read."""

    value: bytes
    reason: str
    topic: str
    partition: int
    offset: int

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """The Kafka headers of the dead letter (the collector's, plus the origin)."""
        headers: list[tuple[str, str | bytes | None]] = [
            ("pulse.reason", self.reason.encode()),
            ("pulse.source", b"flow"),
            ("pulse.topic", self.topic.encode()),
            ("pulse.partition", str(self.partition).encode()),
            ("pulse.offset", str(self.offset).encode()),
        ]
        if len(self.value) > MAX_LETTER_BYTES:
            headers.append(("pulse.truncated", str(len(self.value)).encode()))
        return headers


class _Partition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, bootstrap: str, topic: str) -> None:
        self._topic = topic
        # No idempotence: a dead letter may be written twice anyway (after a crash), and an
        # idempotent producer's state does not survive the embedded broker being restarted.
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": _DELIVERY_TIMEOUT_MS,
            }
        )

    def write_batch(self, items: list[DeadLetter]) -> None:
        if not items:
            return
        failed: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(err)

        producer = self._producer
        for letter in items:
            while True:
                try:
                    producer.produce(
                        self._topic,
                        letter.value[:MAX_LETTER_BYTES],
                        headers=letter.headers(),
                        on_delivery=delivered,
                    )
                    break
                except BufferError:  # the local queue is full: let it drain
                    producer.poll(0.1)
            producer.poll(0)
        if producer.flush(_DELIVERY_TIMEOUT_MS / 1000 + 10) or failed:
            # Raised before the epoch commits: the flow stops and, resumed, reads these
            # records again. Nothing the flow could not store is dropped silently.
            error = failed[0] if failed else "timed out"
            raise RuntimeError(f"cannot write dead letters to {self._topic!r}: {error}")
        for letter in items:
            DEAD_LETTERS.labels(letter.topic).inc()
        first = items[0]
        _log.warning(
            "%d record(s) sent to %s, e.g. %s/%d@%d: %s",
            len(items), self._topic, first.topic, first.partition, first.offset, first.reason,
        )  # fmt: skip

    def close(self) -> None:
        self._producer.flush(10)


class DeadLetterSink(DynamicSink[DeadLetter]):
    """Writes dead letters to ``topic``, one producer per worker (at least once)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self._bootstrap, self._topic)
