"""The broker under faults, part by part (CONTRACT §12), on real Tansu brokers killed with
SIGKILL and started again empty on the same address:

- the flow's source notices the restarted topics, reads them from their start (never
  from the saved offsets, which would skip records) and counts what the old broker held
  that it had not read — resumed from its recovery state or while running;
- the collector's producer recovers by itself when the broker lost its idempotence state
  (fenced: librdkafka retries for ever or reports a fatal error), and nothing is answered
  as delivered that was not;
- readiness reflects a dead broker, such a stuck producer and a dead flow.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client import REGISTRY

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from flows.config import FlowConfig
from flows.kafka_source import RoutingKafkaSource
from flows.run import FlowThread
from ingest.broker import EmbeddedBroker
from ingest.collector import Collector
from ingest.errors import DeliveryError, PulseError
from ingest.fx import load_fx_rates
from ingest.producer import ConfluentProducer
from ingest.topics import Topics, ensure_topics
from tests.conftest import free_port
from tests.kafka_read import read_topic
from tests.servers import serve_in_thread

pytestmark = pytest.mark.integration


def _events(prefix: str, n: int) -> list[bytes]:
    now = int(time.time() * 1000)
    return [msgspec.json.encode({"event_id": f"{prefix}{i}", "type": "page_view", "ts": now,
                                 "user_id": f"u{i}"}) for i in range(n)]  # fmt: skip


def _publish(bootstrap: str, topics: Topics, raws: list[bytes]) -> None:
    producer = ConfluentProducer(bootstrap)
    try:
        Collector(producer, topics, load_fx_rates().currencies).ingest(raws, source="test")
    finally:
        producer.close()


def _kill(broker: EmbeddedBroker) -> None:
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGKILL)
    broker.stop()  # reaps it


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def address() -> Iterator[str]:
    yield f"127.0.0.1:{free_port()}"


def _route(_key: bytes | None, value: bytes, *_: Any) -> tuple[str, Any]:
    return "all", value


def _read(part: Any, want: int, timeout: float = 20.0) -> list[bytes]:
    """Call the partition as Bytewax does until ``want`` records came."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        assert time.monotonic() < deadline, f"read {len(got)} of {want} records"
        for _, (_, values) in part.next_batch():
            got += values
        time.sleep(0.005)
    return got


def _ids(raws: list[bytes]) -> set[str]:
    return {msgspec.json.decode(r)["event_id"] for r in raws}


@pytest.mark.parametrize("resume", [True, False], ids=["resumed", "running"])
def test_the_source_reads_a_restarted_topic_from_its_start_and_counts_the_loss(
    address: str, resume: bool
) -> None:
    topics = Topics(prefix=f"r{uuid.uuid4().hex[:6]}.")
    topic = topics.for_type("page_view")
    first = EmbeddedBroker(address).start()
    ensure_topics(address, topics, partitions=1)
    _publish(address, topics, _events("old", 100))
    source = RoutingKafkaSource([address], [topic], _route, batch_size=10)
    part = source.build_part("kafka", "partition-0", None)
    assert len(_read(part, 30)) == 30  # 30 of the 100 read, the end (100) seen
    state = part.snapshot()
    assert state["topics"][topic][0] == 30 and state["topics"][topic][2] == 100
    lost, resets = (_sample("pulse_broker_lost_records_total", topic=topic),
                    _sample("pulse_broker_topic_resets_total", topic=topic))  # fmt: skip
    if resume:
        part.close()  # the flow stopped here; its state was saved

    _kill(first)  # memory only: the 70 unread records go with it
    second = EmbeddedBroker(address).start()
    try:
        ensure_topics(address, topics, partitions=1)
        _publish(address, topics, _events("new", 5))
        if resume:
            part = source.build_part("kafka", "partition-0", state)
        new = {f"new{i}" for i in range(5)}
        got: list[bytes] = []
        deadline = time.monotonic() + 20
        while not new <= _ids(got):
            assert time.monotonic() < deadline, f"read {sorted(_ids(got))}"
            got += _read(part, 1)
        # the new topic is read from its start: offset 30 would have skipped all five
        old = _ids(got) - new
        assert len(got) == len(old) + 5  # nothing twice
        lost_now = _sample("pulse_broker_lost_records_total", topic=topic) - lost
        if resume:
            assert not old and lost_now == 70  # the 70 unread went with the broker
        else:
            # a running flow still reads what it had fetched before the broker died; the
            # rest is counted lost: together, the 70 it had not read
            assert old <= {f"old{i}" for i in range(30, 100)}
            assert len(old) + lost_now == 70
        assert _sample("pulse_broker_topic_resets_total", topic=topic) - resets == 1
        assert part.snapshot()["topics"][topic][0] == 5
        part.close()
    finally:
        second.stop()


def test_a_reattached_broker_is_read_on_from_the_saved_offsets(address: str) -> None:
    topics = Topics(prefix=f"s{uuid.uuid4().hex[:6]}.")
    topic = topics.for_type("page_view")
    with EmbeddedBroker(address):
        ensure_topics(address, topics, partitions=1)
        _publish(address, topics, _events("a", 40))
        source = RoutingKafkaSource([address], [topic], _route, batch_size=10)
        part = source.build_part("kafka", "partition-0", None)
        first = _read(part, 20)
        state = part.snapshot()
        part.close()
        resets = _sample("pulse_broker_topic_resets_total", topic=topic)
        part = source.build_part("kafka", "partition-0", state)  # same broker: go on
        rest = _read(part, 20)
        part.close()
    assert _ids(first) | _ids(rest) == {f"a{i}" for i in range(40)}
    assert not _ids(first) & _ids(rest)
    assert _sample("pulse_broker_topic_resets_total", topic=topic) == resets


def _wait(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _ready(url: str) -> tuple[int, dict[str, str]]:
    r = httpx.get(f"{url}/readyz", timeout=10)
    return r.status_code, r.json()["checks"]


def test_the_producer_recovers_from_a_lost_broker_by_itself(address: str, tmp_path: Path) -> None:
    """A broker replaced by an empty one with the same cluster id (so only its answers
    tell): the producer's idempotence state is gone, librdkafka reports a fatal error. No
    request in between is answered as accepted; the producer recreates its client and
    requests succeed again, without restarting anything. Readiness says the broker is
    unreachable while it is down."""
    topics = Topics()
    first = EmbeddedBroker(address, cluster_id="pulse-same").start()
    ensure_topics(address, topics)
    producer = ConfluentProducer(address, delivery_timeout_s=5)
    collector = Collector(producer, topics, load_fx_rates().currencies)
    store = KeyStore(tmp_path / "keys.json")
    services = Services(keys=store, collector=collector, delivery_timeout_s=5,
                        readiness={"broker": producer.check})  # fmt: skip
    port = free_port()
    server, thread = serve_in_thread(create_app(services), port)
    url = f"http://127.0.0.1:{port}"
    second = None
    try:
        assert collector.ingest(_events("a", 10), source="test").accepted == 10
        assert _ready(url)[0] == 200
        _kill(first)
        _wait(lambda: _ready(url)[0] == 503, "readiness did not notice the dead broker")
        assert "unreachable" in _ready(url)[1]["broker"]
        with pytest.raises(DeliveryError):  # fails fast while the broker is known down
            collector.ingest(_events("b", 10), source="test", timeout=5)
        second = EmbeddedBroker(address, cluster_id="pulse-same").start()
        ensure_topics(address, topics)
        _wait(lambda: _ready(url)[0] == 200, "readiness did not see the broker back")
        recreated = _sample("pulse_producer_recreated_total")
        # the broker answers, but no longer knows this producer: its records are not
        # acknowledged (librdkafka waits for ever, or reports a fatal error)
        outcome: list[object] = []

        def first_request() -> None:
            try:
                outcome.append(collector.ingest(_events("d", 10), source="test", timeout=5))
            except DeliveryError as exc:
                outcome.append(exc)

        threading.Thread(target=first_request).start()
        _wait(lambda: _ready(url)[0] == 503, "readiness did not notice the stuck producer")
        assert "acknowledgements" in _ready(url)[1]["broker"] or outcome
        _wait(lambda: bool(outcome), "the request was not answered")
        assert isinstance(outcome[0], DeliveryError)  # never accepted
        accepted: list[str] = []
        deadline = time.monotonic() + 20
        while len(accepted) < 30:
            assert time.monotonic() < deadline, "the producer did not recover"
            raws = _events(f"c{len(accepted)}-", 10)
            try:
                collector.ingest(raws, source="test", timeout=5)
                accepted += _ids(raws)
            except DeliveryError:  # the records of the lost state: not accepted
                time.sleep(0.1)
        assert _sample("pulse_producer_recreated_total") == recreated + 1
        stored = _ids([r.value for r in read_topic(address, topics.for_type("page_view"))])
        assert set(accepted) <= stored  # every request answered as accepted is stored
        assert _ready(url)[0] == 200
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(10)
        producer.close()
        if second is not None:
            second.stop()


def test_readiness_reports_a_dead_flow(
    broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    # a warehouse path that is a file: the flow's sink cannot open it and the flow dies
    # (at the first rows it has to write)
    (tmp_path / "wh").write_text("not a directory")
    _publish(broker.bootstrap, topics, _events("d", 3))
    config = FlowConfig(broker.bootstrap, topics, f"chdb://{tmp_path / 'wh'}", None,
                        load_fx_rates())  # fmt: skip
    flow = FlowThread(config).start()
    services = Services(keys=KeyStore(tmp_path / "keys.json"), readiness={"flow": flow.check})
    port = free_port()
    server, thread = serve_in_thread(create_app(services), port)
    try:
        _wait(lambda: not flow.alive, "the flow did not fail")
        with pytest.raises(PulseError, match="the flow is not running"):
            flow.check()
        status, checks = _ready(f"http://127.0.0.1:{port}")
        assert status == 503 and checks["flow"].startswith("unavailable: the flow is not running")
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(10)


def test_a_partition_created_while_the_flow_runs_is_read_from_its_start(address: str) -> None:
    """Topic B is created again with two partitions (Tansu has no CreatePartitions): the
    running input partition 1, which read only topic A, takes B's new partition 1 in."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": address})

    def create(name: str, partitions: int) -> None:
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result()

    with EmbeddedBroker(address):
        create("a", 2)
        create("b", 1)
        source = RoutingKafkaSource([address], ["a", "b"], _route)
        assert source.list_parts() == ["partition-0", "partition-1"]
        part = source.build_part("kafka", "partition-1", None)
        assert "b" not in part.snapshot()["topics"]
        for future in admin.delete_topics(["b"]).values():
            future.result()
        create("b", 2)
        producer = Producer({"bootstrap.servers": address})
        for i in range(5):
            producer.produce("b", msgspec.json.encode({"event_id": f"b{i}"}), partition=1)
        producer.flush(10)
        assert _ids(_read(part, 5)) == {f"b{i}" for i in range(5)}
        assert part.snapshot()["topics"]["b"][0] == 5
        part.close()
