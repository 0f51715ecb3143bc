"""No single event can stop the pipeline (CONTRACT §12), on the real broker and chDB.

Each poison event is followed by a marker event of the same user (same partition, read
after it). Through the edge, every poison is rejected with its reason and dead-lettered by
the collector; produced straight to an event topic (a producer bypassing the edge), the
flow dead-letters it with its reason and goes on. Either way every marker is counted in
the warehouse, and the warehouse still answers.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from flows.config import FlowConfig
from flows.run import run_flow
from ingest.fx import load_fx_rates
from ingest.topics import Topics, ensure_topics
from tests.kafka_read import read_topic
from tests.pipeline import publish
from warehouse.client import connect
from warehouse.migrate import migrate

pytestmark = pytest.mark.integration

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z, the earliest event time (CONTRACT §5)
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z, beyond what the warehouse stores
NOW_MS = time.time_ns() // 1_000_000
T = NOW_MS - 3_600_000  # a valid event time: an hour ago
USER = "poisoned-user"  # every event of a test is this user's: one partition, in order


def ev(event_id: str, type_: str = "page_view", **fields: object) -> dict:
    return {"event_id": event_id, "type": type_, "ts": T, "user_id": USER, **fields}


def product(event_id: str, **fields: object) -> dict:
    return ev(event_id, "add_to_cart", **{"product_id": "p", "price": 10.0, "currency": "EUR",
                                          **fields})  # fmt: skip


def purchase(event_id: str, item: dict | None = None, **fields: object) -> dict:
    line = {"product_id": "p", "price": 10.0, "quantity": 1, **(item or {})}
    return ev(event_id, "purchase", **{"order_id": f"o-{event_id}", "revenue": 10.0,
                                       "currency": "EUR", "items": [line], **fields})  # fmt: skip


def raw(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


# Events the edge must reject: id -> (raw bytes, start of the reason).
EDGE_POISON: dict[str, tuple[bytes, str]] = {
    "ts-minus-1": (raw(ev("p01", ts=-1)), "ts: -1 is before 2000-01-01"),
    "ts-1800": (raw(ev("p02", ts="1800-01-01T00:00:00Z")), "ts: before 2000-01-01"),
    "ts-minus-1e15": (raw(ev("p03", ts=-(10**15))), "ts: -1000000000000000 is before"),
    "ts-zero": (raw(ev("p04", ts=0)), "ts: 0 is before 2000-01-01"),
    "ts-epoch-seconds": (
        raw(ev("p05", ts=NOW_MS // 1000)),
        f"ts: {NOW_MS // 1000} is before 2000-01-01; epoch milliseconds expected, "
        "this looks like seconds",
    ),
    "ts-epoch-microseconds": (
        raw(ev("p06", ts=NOW_MS * 1000)),
        "ts: more than 24 h in the future; epoch milliseconds expected, "
        "this looks like microseconds",
    ),
    "ts-far-future": (raw(ev("p07", ts="2200-01-01T00:00:00Z")), "ts: more than 24 h"),
    "ts-no-offset": (raw(ev("p08", ts="2026-01-01T00:00:00")), "ts: RFC 3339 timestamp needs"),
    "ts-bool": (raw(ev("p09", ts=True)), "ts: expected"),
    "quantity-1e30": (raw(product("p10", quantity=10**30)), "quantity: expected `int` <= 100000"),
    "quantity-2^32+5": (raw(product("p11", quantity=2**32 + 5)), "quantity: expected `int` <="),
    "quantity-0": (raw(product("p12", quantity=0)), "quantity: expected `int` >= 1"),
    "quantity-bool": (raw(product("p13", quantity=True)), "quantity: expected `int"),
    "revenue-1e308": (raw(purchase("p14", revenue=1e308)), "revenue: expected `float` <="),
    "revenue-inf": (
        raw(purchase("p15")).replace(b'"revenue":10.0', b'"revenue":1e999'),
        "revenue: number out of range",
    ),
    "price-minus-1": (raw(product("p16", price=-1)), "price: expected `float` >= 0"),
    "cart-value-over-1e9": (
        raw(ev("p17", "begin_checkout", cart_value=1e9 + 1, currency="EUR")),
        "cart_value: expected `float` <=",
    ),
    "item-price-1e10": (raw(purchase("p18", {"price": 1e10})), "items[0].price: expected"),
    "item-quantity-2^32+5": (
        raw(purchase("p19", {"quantity": 2**32 + 5})),
        "items[0].quantity: expected `int` <=",
    ),
    "items-1001": (
        raw(
            ev(
                "p20",
                "purchase",
                order_id="o",
                revenue=1.0,
                currency="EUR",
                items=[{"product_id": "p", "price": 0.0}] * 1001,
            )
        ),
        "items: expected `array` of length <= 1000",
    ),
    "results-count-2^32": (
        raw(ev("p21", "search", query="q", results_count=2**32)),
        "results_count: expected `int` <=",
    ),
    "currency-unknown": (raw(product("p22", currency="XXX")), "currency: XXX is not in"),
    "country-newline": (raw(ev("p23", country="DE\n")), "country: expected `str` of length"),
    "over-32KiB": (raw(ev("p24", page="x" * 2000, pad="y" * 33_000)), "event is "),
}
# What the edge must still accept, at the bounds (each is also a marker of sorts).
EDGE_BOUNDS = {
    "ts-2000-01-01": ev("b01", ts=MIN_TS_MS),
    "ts-2000-rfc3339": ev("b02", ts="2000-01-01T01:00:00+01:00"),
    "amounts-1e9": purchase("b03", {"price": 1e9, "quantity": 100_000}, revenue=1e9),
    "quantity-100000": product("b04", quantity=100_000, price=1e9),
    "zero-amounts": purchase("b05", {"price": 0.0}, revenue=0.0),
    "results-count-max": ev("b06", "search", query="q", results_count=2**32 - 1),
    "unicode": ev("b07", page="/ünï/😀/\u0000", session_id="s-😀", type="wishlist ✓"),
}


def marker(key: str) -> dict:
    return ev(f"m-{key}")


def run(bootstrap: str, topics: Topics, dsn: str, database: str, tmp: Path) -> None:
    config = FlowConfig(bootstrap, topics, dsn, database, load_fx_rates(), idle_stop_s=2.0)
    run_flow(config, workers=1, recovery_dir=tmp / "recovery")


def stored_ids(dsn: str, database: str) -> set[str]:
    client = connect(dsn, database)
    return {r[0] for r in client.query("SELECT event_id FROM events FINAL").result_rows}


def _fresh(broker, warehouse_dsn: str, prefix: str) -> tuple[Topics, str]:
    """Topics of their own (4 partitions) and a migrated database of its own."""
    topics = Topics(prefix=f"{prefix}{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, topics, partitions=4)
    database = f"poison_{uuid.uuid4().hex[:8]}"
    migrate(connect(warehouse_dsn, database))
    return topics, database


@pytest.fixture(scope="module")
def through_the_edge(broker, warehouse_dsn, tmp_path_factory):
    topics, database = _fresh(broker, warehouse_dsn, "pe")
    raws = []
    for key, (poison, _) in EDGE_POISON.items():
        raws += [poison, raw(marker(key))]
    raws += [raw(e) for e in EDGE_BOUNDS.values()]
    drained = publish(broker.bootstrap, topics, raws)
    run(broker.bootstrap, topics, warehouse_dsn, database, tmp_path_factory.mktemp("edge"))
    letters = {r.value: r.headers for r in read_topic(broker.bootstrap, topics.dlq)}
    yield drained, letters, stored_ids(warehouse_dsn, database)
    connect(warehouse_dsn, database).command(f"DROP DATABASE `{database}`")


@pytest.mark.parametrize("key", EDGE_POISON)
def test_a_poison_event_is_rejected_at_the_edge_and_the_next_one_is_counted(
    through_the_edge, key: str
) -> None:
    drained, letters, stored = through_the_edge
    poison, reason = EDGE_POISON[key]
    assert poison not in drained.accepted
    headers = letters.get(poison)
    assert headers is not None, f"{key} is not in the dead-letter topic"
    assert headers["pulse.reason"].decode().startswith(reason), headers["pulse.reason"]
    assert headers["pulse.source"] == b"test"
    assert f"m-{key}" in stored


@pytest.mark.parametrize("key", EDGE_BOUNDS)
def test_events_at_the_bounds_are_accepted_and_stored(through_the_edge, key: str) -> None:
    _, _, stored = through_the_edge
    assert EDGE_BOUNDS[key]["event_id"] in stored


# Records produced straight to an event topic: id -> (value, start of the reason).
TOPIC_POISON: dict[str, tuple[bytes, str]] = {
    "not-json": (b"not json", "not valid JSON"),
    "json-array": (b"[1, 2]", "not a JSON object"),
    "json-string": (b'"page_view"', "not a JSON object"),
    "empty-value": (b"", "not valid JSON"),
    "not-utf8": (b'{"event_id": "\xff\xfe"}', "not valid JSON"),
    "ts-minus-1": (raw(ev("q01", ts=-1)), "ts: -1 is before 2000-01-01"),
    "ts-1800": (raw(ev("q02", ts="1800-01-01T00:00:00Z")), "ts: before 2000-01-01"),
    "ts-minus-1e15": (raw(ev("q03", ts=-(10**15))), "ts: -1000000000000000 is before"),
    "ts-zero": (raw(ev("q04", ts=0)), "ts: 0 is before 2000-01-01"),
    "ts-epoch-seconds": (raw(ev("q05", ts=NOW_MS // 1000)), "ts: "),
    "ts-after-2099": (raw(ev("q06", ts=MAX_TS_MS)), "ts: after 2099-12-31"),
    "quantity-1e30": (raw(product("q07", quantity=10**30)), "quantity: expected `int` <="),
    "quantity-2^32+5": (raw(product("q08", quantity=2**32 + 5)), "quantity: expected `int` <="),
    "revenue-1e308": (raw(purchase("q09", revenue=1e308)), "revenue: expected `float` <="),
    "price-minus-1": (raw(product("q10", price=-1)), "price: expected `float` >= 0"),
    "currency-unknown": (raw(product("q11", currency="XXX")), "currency: XXX is not in"),
    "missing-user": (msgspec.json.encode({"event_id": "q12", "type": "x", "ts": T}), "user_id"),
}
# Records only the flow sees that it must store: far ahead of the clock (the edge's rule,
# not the flow's), and at the other bounds.
TOPIC_BOUNDS = {
    "ts-2099": ev("c01", ts=MAX_TS_MS - 1),
    "ts-2000": ev("c02", ts=MIN_TS_MS),
    "rfc3339-not-normalised": ev("c03", ts="2026-01-01T10:00:00+05:00"),
    "amounts-1e9": purchase("c04", {"price": 1e9, "quantity": 100_000}, revenue=1e9),
}


@pytest.fixture(scope="module")
def bypassing_the_edge(broker, warehouse_dsn, tmp_path_factory):
    topics, database = _fresh(broker, warehouse_dsn, "pt")
    topic = topics.for_type("page_view")
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for key, (poison, _) in TOPIC_POISON.items():
        producer.produce(topic, poison, key=USER.encode())
        producer.produce(topic, raw(marker(key)), key=USER.encode())
    for event in TOPIC_BOUNDS.values():
        producer.produce(topic, raw(event), key=USER.encode())
    producer.produce(topic, b"no key, not an event")  # routed by its value: cannot be
    assert producer.flush(30) == 0
    counter = ("pulse_flow_dead_letters_total", {"topic": topic})
    before = REGISTRY.get_sample_value(*counter) or 0
    run(broker.bootstrap, topics, warehouse_dsn, database, tmp_path_factory.mktemp("bypass"))
    counted = (REGISTRY.get_sample_value(*counter) or 0) - before
    letters = read_topic(broker.bootstrap, topics.dlq)
    yield topic, letters, counted, stored_ids(warehouse_dsn, database)
    connect(warehouse_dsn, database).command(f"DROP DATABASE `{database}`")


@pytest.mark.parametrize("key", TOPIC_POISON)
def test_a_poison_record_on_a_topic_is_dead_lettered_by_the_flow_which_goes_on(
    bypassing_the_edge, key: str
) -> None:
    topic, letters, _, stored = bypassing_the_edge
    poison, reason = TOPIC_POISON[key]
    found = [r for r in letters if r.value == poison]
    assert len(found) == 1, f"{key}: {len(found)} dead letters"
    headers = found[0].headers
    assert headers["pulse.reason"].decode().startswith(reason), headers["pulse.reason"]
    assert headers["pulse.source"] == b"flow"
    assert headers["pulse.topic"] == topic.encode()
    assert int(headers["pulse.partition"]) >= 0 and int(headers["pulse.offset"]) >= 0
    assert f"m-{key}" in stored


def test_the_flow_counts_its_dead_letters_and_stores_the_rest(bypassing_the_edge) -> None:
    _, letters, counted, stored = bypassing_the_edge
    assert len(letters) == counted == len(TOPIC_POISON) + 1  # and the keyless record
    assert {e["event_id"] for e in TOPIC_BOUNDS.values()} <= stored
    assert {f"m-{key}" for key in TOPIC_POISON} <= stored
    # where each came from: the poisons (one key, one partition) are every other record
    poisons = [r.headers for r in letters if r.value != b"no key, not an event"]
    assert len({h["pulse.partition"] for h in poisons}) == 1
    offsets = sorted(int(h["pulse.offset"]) for h in poisons)
    assert offsets == list(range(0, 2 * len(TOPIC_POISON), 2))
