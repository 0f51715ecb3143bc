"""How the running flow learns that a user is to be forgotten (CONTRACT §11).

An erasure is a record on the erasures topic (``user.erasures``), keyed by the user id as
stored (the pseudonym when ids are pseudonymised), so the flow's source routes it to the
user's shard like that user's events, and ordered after the events read before it. The
shard then drops the user's state, in memory and in its saved log
(:meth:`flows.shard.Shard.erase`), and from then on drops the user's events whose event
time is before the erasure (still in flight, or read again from the topics); events after
it are a new start. The flow acknowledges the erasure by writing the record's offset to
``flow_progress`` after the rows of every event it read before it, and the erasure service
(:mod:`warehouse.erasure`) deletes the user's rows once it sees that.
"""

from __future__ import annotations

import logging
import time

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from prometheus_client import Counter

from flows.dead_letters import DeadLetter
from flows.logic import Enriched

__all__ = [
    "ERASED",
    "Erasure",
    "Erasures",
    "decode_erasure",
    "encode_erasure",
    "read_erasures",
]

ERASED = Counter(
    "pulse_flow_erased_events_total",
    "Events of erased users read after the erasure and dropped by the flow",
)


class _Value(msgspec.Struct, frozen=True):
    user_id: str
    before_ms: int


_decode = msgspec.json.Decoder(_Value).decode
_encode = msgspec.json.Encoder().encode


class Erasure(msgspec.Struct, frozen=True, gc=False):
    """One erasure as read: the user, the event time before which its events go, and
    where the record was read (its offset is the acknowledgement)."""

    user_id: str
    before_ms: int
    topic: str
    partition: int
    offset: int


def encode_erasure(user_id: str, before_ms: int) -> bytes:
    """The value of an erasure record."""
    return _encode(_Value(user_id, before_ms))


def decode_erasure(value: bytes, topic: str, partition: int, offset: int) -> Erasure | DeadLetter:
    """An erasure record, or a dead letter for anything else on that topic."""
    try:
        v = _decode(value)
    except msgspec.MsgspecError as exc:
        return DeadLetter(value, f"not an erasure: {exc}", topic, partition, offset)
    return Erasure(v.user_id, v.before_ms, topic, partition, offset)


_log = logging.getLogger(__name__)


def read_erasures(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[str, int]:
    """Every erasure the topic still holds: user -> the newest erasure time (ms).

    Read whole when the flow starts, so that a flow resuming after an erasure still drops
    the user's events older than it that it reads later (a lagging partition): for as long
    as Kafka keeps the erasure, which is as long as it keeps those events. Each erasure is
    produced alone (one batch), so the partitions' high watermarks are exact here."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "pulse-erasures",
                         "enable.auto.commit": False, "log_level": 2})  # fmt: skip
    found: dict[str, int] = {}
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return found
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + 3 * timeout
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            e = decode_erasure(msg.value() or b"", topic, partition, offset)
            if type(e) is Erasure:
                found[e.user_id] = max(found.get(e.user_id, e.before_ms), e.before_ms)
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
        if ends:
            _log.warning("erasures topic %s not read to its end at start", topic)
    except KafkaException as exc:
        _log.warning("cannot read the erasures topic %s at start: %s", topic, exc)
    finally:
        consumer.close()
    return found


class Erasures:
    """The users of one shard erased (read at start, or in this run): user -> the event
    time (ms) before which their events are dropped."""

    def __init__(self, known: dict[str, int] | None = None) -> None:
        self._before: dict[str, int] = dict(known or {})

    def __bool__(self) -> bool:
        return bool(self._before)

    def add(self, erasure: Erasure) -> None:
        """Remember an erasure (the latest wins)."""
        seen = self._before.get(erasure.user_id, erasure.before_ms)
        self._before[erasure.user_id] = max(seen, erasure.before_ms)

    def covers(self, e: Enriched) -> bool:
        """Whether an event belongs to an erased user and is older than its erasure."""
        before = self._before.get(e.event.user_id)
        return before is not None and e.ts_ms < before
