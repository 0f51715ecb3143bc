"""`flows.kafka_source.RoutingKafkaSource` on the real broker, called as Bytewax calls it:
one input partition per partition index reading that partition of every topic, records
routed and grouped by key per fetch in read order, offsets saved and resumed, and the
three ways it ends (idle, drained, stopped). Restarted brokers and topics are in
test_broker_faults.py."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from flows.kafka_source import RoutingKafkaSource
from ingest.broker import EmbeddedBroker

pytestmark = pytest.mark.integration

Read = tuple[str, int, int, bytes]  # topic, partition, offset, value


def _route(key: bytes | None, value: bytes, topic: str, partition: int, offset: int) -> Any:
    return (key or b"-").decode(), (topic, partition, offset, value)


def _topics(bootstrap: str, partitions: dict[str, int]) -> dict[str, int]:
    """Create uniquely named topics (name -> partitions); the names given -> created."""
    prefix = f"ks{uuid.uuid4().hex[:8]}."
    named = {prefix + name: n for name, n in partitions.items()}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, n, 1) for t, n in named.items()])
    for future in futures.values():
        future.result(10)
    return named


def _produce(bootstrap: str, records: list[tuple[str, int, str, bytes]]) -> None:
    """(topic, partition, key, value) each, in this order, acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for topic, partition, key, value in records:
        producer.produce(topic, value, key.encode(), partition=partition)
    assert producer.flush(10) == 0


def _read(part: Any, want: int, timeout: float = 20.0) -> list[tuple[str, list[Read]]]:
    """Call the partition as Bytewax does until ``want`` records came; the items."""
    items: list[tuple[str, list[Read]]] = []
    deadline = time.monotonic() + timeout
    while sum(len(values) for _, values in items) < want:
        assert time.monotonic() < deadline, f"read {items}"
        for key, (again, values) in part.next_batch():
            assert key == again  # the key is repeated in the value for the stateful step
            items.append((key, values))
        time.sleep(0.005)
    return items


def _until_stopped(part: Any, timeout: float = 10.0) -> float:
    """Call the partition until it ends; how long that took."""
    began = time.monotonic()
    with pytest.raises(StopIteration):
        while time.monotonic() - began < timeout:
            part.next_batch()
            time.sleep(0.005)
    return time.monotonic() - began


def test_one_partition_index_reads_that_partition_of_every_topic_grouped_by_key(
    broker: EmbeddedBroker,
) -> None:
    a, b = _topics(broker.bootstrap, {"a": 2, "b": 2})
    records = [(a, 0, "u1", b"a0-1"), (b, 0, "u1", b"b0-1"), (a, 0, "u2", b"a0-2"),
               (a, 0, "u1", b"a0-3"), (a, 1, "u9", b"a1-1"), (b, 1, "u9", b"b1-1")]  # fmt: skip
    _produce(broker.bootstrap, records)
    source = RoutingKafkaSource([broker.bootstrap], [a, b], _route)
    assert source.list_parts() == ["partition-0", "partition-1"]
    part = source.build_part("kafka", "partition-0", None)
    try:
        items = _read(part, 4)
        time.sleep(0.2)
        items += [(k, v) for k, (_, v) in part.next_batch()]  # nothing more comes
        read = [r for _, values in items for r in values]
        assert sorted(r[3] for r in read) == [b"a0-1", b"a0-2", b"a0-3", b"b0-1"]
        assert {(r[0], r[1]) for r in read} == {(a, 0), (b, 0)}  # partition 1 is not its
        by_key: dict[str, list[Read]] = {}
        for key, values in items:  # one item per key of a fetch
            by_key.setdefault(key, []).extend(values)
        assert {k: sorted(r[3] for r in v) for k, v in by_key.items()} == {
            "u1": [b"a0-1", b"a0-3", b"b0-1"],
            "u2": [b"a0-2"],
        }
        of_a = [r[3] for r in by_key["u1"] if r[0] == a]
        assert of_a == [b"a0-1", b"a0-3"]  # a key's records of a partition in read order
        assert part.snapshot()["topics"][a][0] == 3 and part.snapshot()["topics"][b][0] == 1
    finally:
        part.close()


def test_a_partition_index_reads_only_the_topics_that_have_it(broker: EmbeddedBroker) -> None:
    a, b = _topics(broker.bootstrap, {"a": 2, "b": 1})
    _produce(broker.bootstrap, [(a, 1, "u1", b"a1"), (b, 0, "u1", b"b0")])
    source = RoutingKafkaSource([broker.bootstrap], [a, b], _route)
    assert source.list_parts() == ["partition-0", "partition-1"]
    part = source.build_part("kafka", "partition-1", None)
    try:
        assert [r[3] for _, values in _read(part, 1) for r in values] == [b"a1"]
        assert set(part.snapshot()["topics"]) == {a}
    finally:
        part.close()


def test_a_part_resumes_after_the_last_record_it_read(broker: EmbeddedBroker) -> None:
    (a,) = _topics(broker.bootstrap, {"a": 1})
    _produce(broker.bootstrap, [(a, 0, f"u{i}", f"old{i}".encode()) for i in range(5)])
    source = RoutingKafkaSource([broker.bootstrap], [a], _route, batch_size=2)
    part = source.build_part("kafka", "partition-0", None)
    first = [r for _, values in _read(part, 3) for r in values]
    state = part.snapshot()
    part.close()
    assert state["v"] == 2 and state["cluster"]
    offset, topic_id, _highest = state["topics"][a]
    assert offset == len(first) and topic_id  # the next offset, with the topic's identity

    _produce(broker.bootstrap, [(a, 0, "u9", b"new")])
    resumed = source.build_part("kafka", "partition-0", state)
    try:
        rest = [r for _, values in _read(resumed, 6 - len(first)) for r in values]
        assert [r[3] for r in first + rest] == [*(f"old{i}".encode() for i in range(5)), b"new"]
        assert [r[2] for r in first + rest] == list(range(6))  # nothing twice, nothing skipped
    finally:
        resumed.close()


def test_a_part_ends_when_idle_for_idle_s(broker: EmbeddedBroker) -> None:
    (a,) = _topics(broker.bootstrap, {"a": 1})
    _produce(broker.bootstrap, [(a, 0, "u1", b"x")])
    part = RoutingKafkaSource([broker.bootstrap], [a], _route, idle_s=1.0).build_part(
        "kafka", "partition-0", None
    )
    try:
        assert len(_read(part, 1)) == 1
        assert 0.9 <= _until_stopped(part) < 5.0
    finally:
        part.close()


def test_idle_never_ends_a_part_before_it_read_to_the_end(broker: EmbeddedBroker) -> None:
    """On a loaded machine the first lookup and fetch can take longer than ``idle_s``:
    a part idle for that long but not at the end of every topic goes on reading."""
    a, b = _topics(broker.bootstrap, {"a": 1, "b": 1})
    records = [(t, 0, f"u{i}", f"{t[-1]}{i}".encode()) for t in (a, b) for i in range(50)]
    _produce(broker.bootstrap, records)
    part = RoutingKafkaSource([broker.bootstrap], [a, b], _route, idle_s=0.0).build_part(
        "kafka", "partition-0", None
    )
    read: list[Read] = []
    try:
        with pytest.raises(StopIteration):
            for _ in range(10_000):
                read += [r for _, (_, values) in part.next_batch() for r in values]
                time.sleep(0.005)
    finally:
        part.close()
    assert sorted(r[3] for r in read) == sorted(value for *_, value in records)


@pytest.mark.parametrize("other", ["one partition", "not created"])
def test_a_topic_without_the_partition_does_not_hold_up_the_end(
    broker: EmbeddedBroker, other: str
) -> None:
    """Partition 1 of two topics, the other with a single partition (as the erasures topic
    has) or not created yet: nothing to wait for there, so the part ends once idle."""
    a, b = _topics(broker.bootstrap, {"a": 2, "b": 1})
    if other == "not created":
        b = f"{a}.missing"
    _produce(broker.bootstrap, [(a, 1, "u1", b"x")])
    part = RoutingKafkaSource([broker.bootstrap], [a, b], _route, idle_s=0.5).build_part(
        "kafka", "partition-1", None
    )
    try:
        assert len(_read(part, 1)) == 1
        assert _until_stopped(part) < 5.0
    finally:
        part.close()


def test_a_part_ends_once_drained_or_at_once_when_stopped(broker: EmbeddedBroker) -> None:
    (a,) = _topics(broker.bootstrap, {"a": 1})
    _produce(broker.bootstrap, [(a, 0, "u1", b"x")])
    drain, stop = threading.Event(), threading.Event()
    source = RoutingKafkaSource([broker.bootstrap], [a], _route, drain=drain, stop=stop)
    part = source.build_part("kafka", "partition-0", None)
    try:
        assert len(_read(part, 1)) == 1
        assert part.next_batch() == []  # without either event it waits for more
        assert part.next_awake() is not None  # ... and asks to be called again shortly
        drain.set()
        assert _until_stopped(part) < 5.0  # read to its end: it ends
    finally:
        part.close()
    stopped = source.build_part("kafka", "partition-0", None)
    try:
        stop.set()
        with pytest.raises(StopIteration):
            stopped.next_batch()
    finally:
        stopped.close()
