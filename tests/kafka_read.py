"""Reading a topic back from the real broker, whole, for assertions."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int


def read_topic(bootstrap: str, topic: str, idle: float = 0.5) -> list[Record]:
    """Every record of ``topic`` so far, across partitions.

    Reads at least up to each partition's high watermark, then until nothing arrives for
    ``idle`` seconds: Tansu reports a high watermark that lags by up to one producer batch,
    so end offsets alone cannot say when a topic is read.
    """
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "pulse-tests", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = list(meta.topics[topic].partitions)
        behind = {}
        for p in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > 0:
                behind[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[Record] = []
        while (msg := consumer.poll(10.0 if behind else idle)) is not None:
            if not msg.error():
                out.append(
                    Record(msg.key(), msg.value(), dict(msg.headers() or []), msg.partition())
                )
                if msg.offset() + 1 >= behind.get(msg.partition(), 0):
                    behind.pop(msg.partition(), None)
        if behind:
            raise TimeoutError(f"{topic}: partitions {sorted(behind)} not read to their end")
        return out
    finally:
        consumer.close()
