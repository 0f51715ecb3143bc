"""CONTRACT §5, §11 at the edge, on the real pipeline: no IP address reaches Kafka or any
table (an ``ip`` only derives ``country``), and with pseudonymisation no raw user id does."""

from __future__ import annotations

import uuid

import httpx
import msgspec
import pytest

from flows.config import FlowConfig
from flows.run import run_flow
from ingest.collector import Collector
from ingest.fx import load_fx_rates
from ingest.privacy import EdgePrivacy, Pseudonymizer
from ingest.producer import ConfluentProducer
from ingest.topics import Topics, ensure_topics
from tests.privacy_scan import find_in_tables, find_in_topics
from warehouse.client import connect
from warehouse.migrate import migrate

pytestmark = pytest.mark.integration

T0 = 1_795_176_000_000  # 2026-11-19T08:00:00Z
IPS = ["81.2.69.160", "2a00:1450:4001:81b::200e", "8.8.8.8", "192.0.2.77", "203.0.113.9"]
USERS = ["alice@example.com", "bob-4711", "carol.k"]


def _events() -> list[bytes]:
    out = [
        # no country: derived from the address (GB), which is then dropped
        {"event_id": "a1", "type": "page_view", "ts": T0, "user_id": USERS[0], "ip": IPS[0]},
        # IPv6, no country: derived (IE)
        {"event_id": "a2", "type": "page_view", "ts": T0 + 1000, "user_id": USERS[1],
         "ip": IPS[1], "session_id": "s-b"},
        # a country given wins over the address
        {"event_id": "a3", "type": "product_view", "ts": T0 + 2000, "user_id": USERS[2],
         "country": "DE", "ip": IPS[2], "product_id": "p1", "price": 10, "currency": "EUR"},
        # a Segment-style context address, a documentation range (no country)
        {"event_id": "a4", "type": "purchase", "ts": T0 + 3000, "user_id": USERS[0],
         "context": {"ip": IPS[3]}, "ip": IPS[3], "order_id": "o1", "revenue": 20,
         "currency": "EUR", "items": [{"product_id": "p1", "price": 20}]},
        # rejected (no type): the dead letter keeps neither address nor, pseudonymised, id
        {"event_id": "bad", "ts": T0, "user_id": USERS[1], "ip": IPS[4],
         "context": {"ip": IPS[4]}},
    ]  # fmt: skip
    return [msgspec.json.encode(e) for e in out] + [
        # not JSON at all, with an address and an id in it
        b'{"event_id": "x", "user_id": "'
        + USERS[2].encode()
        + b'", "ip": "'
        + IPS[4].encode()
        + b'", oops',
    ]


def _run(broker, warehouse_dsn, tmp_path, privacy: EdgePrivacy, bypass: bool = False):
    topics = Topics(prefix=f"pv{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, topics, partitions=4)
    producer = ConfluentProducer(broker.bootstrap)
    collector = Collector(producer, topics, load_fx_rates().currencies, privacy=privacy)
    result = collector.ingest(_events(), source="test", timeout=30)
    producer.close()
    if bypass:  # a producer bypassing the edge writes an address to the general topic:
        # the flow dead-letters the record (no type) without it
        other = ConfluentProducer(broker.bootstrap)
        batch = other.batch()
        batch.send(topics.for_type("other"), b"x", msgspec.json.encode(
            {"event_id": "z", "ts": T0, "user_id": "x", "ip": "198.51.100.7"}))  # fmt: skip
        batch.wait(30)
        other.close()
    assert result.accepted == 4 and len(result.rejected) == 2
    database = f"pv_{uuid.uuid4().hex[:8]}"
    client = connect(warehouse_dsn, database)
    migrate(client)
    config = FlowConfig(broker.bootstrap, topics, warehouse_dsn, database, load_fx_rates(),
                        idle_stop_s=1.5)  # fmt: skip
    run_flow(config, workers=1, recovery_dir=tmp_path / "recovery")
    return topics, client


def test_no_ip_address_reaches_kafka_or_any_table(broker, warehouse_dsn, tmp_path) -> None:
    topics, client = _run(broker, warehouse_dsn, tmp_path, EdgePrivacy(), bypass=True)
    try:
        assert find_in_topics(broker.bootstrap, topics.all, IPS) == []
        # the bypassing record is where its producer put it, and nowhere else
        found = find_in_topics(broker.bootstrap, topics.all, ["198.51.100.7"])
        assert found == [(topics.for_type("other"), "198.51.100.7")]
        assert find_in_tables(client, [*IPS, "198.51.100.7"]) == []
        # the address did its one job: a country where the event had none
        rows = client.query("SELECT event_id, country FROM events FINAL ORDER BY event_id")
        assert rows.result_rows == [("a1", "GB"), ("a2", "IE"), ("a3", "DE"), ("a4", "")]
        # the dead letters are still there, with their reasons, minus the address
        from tests.kafka_read import read_topic

        letters = read_topic(broker.bootstrap, topics.dlq)
        assert len(letters) == 3 and all(r.headers["pulse.reason"] for r in letters)
        edge = [r for r in letters if r.headers["pulse.source"] == b"test"]
        assert len(edge) == 2
        assert all(r.headers["pulse.scrubbed"].startswith(b"ip") for r in edge)
        assert any(b"oops" in r.value for r in edge)
        (flow,) = [r for r in letters if r.headers["pulse.source"] == b"flow"]
        assert msgspec.json.decode(flow.value) == {"event_id": "z", "ts": T0, "user_id": "x"}
    finally:
        client.command("DROP DATABASE IF EXISTS `" + client.database + "`")


def test_pseudonymised_ids_never_reach_kafka_or_any_table(broker, warehouse_dsn, tmp_path):
    pseudonym = Pseudonymizer(b"k" * 32)
    topics, client = _run(broker, warehouse_dsn, tmp_path, EdgePrivacy(pseudonym))
    try:
        assert find_in_topics(broker.bootstrap, topics.all, USERS + IPS) == []
        assert find_in_tables(client, USERS + IPS) == []
        stored = client.query("SELECT DISTINCT user_id FROM events FINAL").result_rows
        assert sorted(u for (u,) in stored) == sorted(pseudonym(u) for u in USERS)
        # the same user is the same visitor: alice's two events under one pseudonym
        visitors = client.query("SELECT uniqExact(user_id), count() FROM events FINAL")
        assert visitors.result_rows == [(3, 4)]
        # Kafka's keys are the pseudonyms too, so a user's events stay in one partition
        from tests.kafka_read import read_topic

        keys = {r.key for t in topics.events for r in read_topic(broker.bootstrap, t)}
        assert keys == {pseudonym(u).encode() for u in USERS}
    finally:
        client.command("DROP DATABASE IF EXISTS `" + client.database + "`")


def test_http_collector_drops_addresses(api) -> None:
    body = [{"event_id": "h1", "type": "page_view", "ts": T0, "user_id": "u1", "ip": IPS[0]},
            {"event_id": "h2", "type": "page_view", "user_id": "u1", "ip": IPS[2]}]  # fmt: skip
    answer = httpx.post(f"{api.url}/v1/events", json=body, headers=api.auth("ingest"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
    assert find_in_topics(api.bootstrap, api.topics.all, IPS) == []
    (record,) = api.read(api.topics.for_type("page_view"))
    assert msgspec.json.decode(record.value)["country"] == "GB"


def test_a_browser_address_gives_the_country_and_is_not_stored(api) -> None:
    from ipaddress import ip_network

    page = {"type": "page_view", "ts": T0, "user_id": "u1"}
    body = [{"event_id": "b1", **page}, {"event_id": "b2", "country": "DE", **page},
            {"event_id": "b3", "ip": IPS[1], **page}]  # fmt: skip
    forwarded = {"X-Forwarded-For": f"{IPS[0]}, 10.0.0.9", "Origin": api.url}
    auth = api.auth("ingest")
    # not a trusted proxy (yet): the connection's own address, loopback: no country
    assert httpx.post(f"{api.url}/v1/events", json=body[:1], headers=auth | forwarded).is_success
    api.services.trusted_proxies = (ip_network("127.0.0.0/8"),)
    # a server's request (no Origin) is not the shopper's: the proxy header is not used
    assert httpx.post(f"{api.url}/v1/events", json=body[:1],
                      headers=auth | {"X-Forwarded-For": IPS[0]}).is_success  # fmt: skip
    assert httpx.post(f"{api.url}/v1/events", json=body, headers=auth | forwarded).is_success
    got = [msgspec.json.decode(r.value) for r in api.read(api.topics.for_type("page_view"))]
    assert [(e["event_id"], e.get("country")) for e in got] == [
        ("b1", None), ("b1", None), ("b1", "GB"), ("b2", "DE"), ("b3", "IE")]  # fmt: skip
    assert find_in_topics(api.bootstrap, api.topics.all, [*IPS, "10.0.0.9"]) == []
