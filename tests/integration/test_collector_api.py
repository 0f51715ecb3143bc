"""The HTTP collector against the real broker: routing, dead letters, limits, auth."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from ingest.broker import EmbeddedBroker
from tests.conftest import RunningApi, free_port
from tests.servers import serve_in_thread

pytestmark = pytest.mark.integration

NOW = "2026-11-20T12:00:00Z"


def good(i: int, type_: str = "page_view", **extra: object) -> dict:
    return {"event_id": f"e{i}", "type": type_, "ts": NOW, "user_id": f"u{i % 7}", **extra}


GOOD = [
    good(0),
    good(1, "product_view", product_id="p1", category="shoes", price=10.5, currency="PLN"),
    good(2, "add_to_cart", product_id="p1", price=10.5, currency="PLN"),
    good(3, "remove_from_cart", product_id="p1"),
    good(4, "begin_checkout", cart_value=10.5, currency="EUR"),
    good(
        5,
        "purchase",
        order_id="o1",
        revenue=21.0,
        currency="SEK",
        items=[{"product_id": "p1", "price": 10.5, "quantity": 2}],
    ),
    good(6, "search", query="red shoes", results_count=3),
    good(7, "newsletter_signup"),
    {**good(8), "ts": 1795000000000},
]
BAD = [
    ({**good(100), "currency": "XXX", "price": 1}, "currency"),
    ({"type": "page_view", "ts": NOW, "user_id": "u"}, "event_id"),
    (good(101, "purchase"), "order_id"),
]


def test_mixed_batch_routes_good_events_and_dead_letters_bad_ones(api: RunningApi) -> None:
    batch = [*GOOD[:4], BAD[0][0], *GOOD[4:], BAD[1][0], BAD[2][0]]
    r = httpx.post(f"{api.url}/v1/events", content=json.dumps(batch), headers=api.auth("ingest"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == len(GOOD)
    assert [x["index"] for x in body["rejected"]] == [4, 10, 11]
    assert body["accepted"] + len(body["rejected"]) == len(batch)

    expected_topic = {
        "page_view": "user.pageviews",
        "product_view": "user.product_interactions",
        "add_to_cart": "user.cart_events",
        "remove_from_cart": "user.cart_events",
        "begin_checkout": "user.cart_events",
        "purchase": "user.purchases",
        "search": "user.searches",
        "newsletter_signup": "user.general_events",
    }
    by_topic: dict[str, set[str]] = {}
    for topic in {*expected_topic.values()}:
        records = api.read(api.topics.prefix + topic)
        by_topic[topic] = {json.loads(r.value)["event_id"] for r in records}
        for rec in records:
            assert rec.key == json.loads(rec.value)["user_id"].encode()
    for event in GOOD:
        assert event["event_id"] in by_topic[expected_topic[event["type"]]]
    assert sum(len(v) for v in by_topic.values()) == len(GOOD)

    dead = api.read(api.topics.dlq)
    assert len(dead) == len(BAD)
    originals = [json.dumps(b[0]).encode() for b in BAD]
    dead.sort(key=lambda r: originals.index(r.value))
    for record, (_, field) in zip(dead, BAD, strict=True):
        assert record.value in originals  # the original bytes, untouched
        assert record.headers["pulse.reason"].decode().startswith(field)


def test_jsonl_body_and_a_malformed_line_is_one_rejection(api: RunningApi) -> None:
    lines = [json.dumps(good(1)), "{not json", json.dumps(good(2))]
    r = httpx.post(
        f"{api.url}/v1/events",
        content="\n".join(lines),
        headers={**api.auth("ingest"), "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 200
    assert r.json()["accepted"] == 2
    assert r.json()["rejected"][0]["index"] == 1
    assert [d.value for d in api.read(api.topics.dlq)] == [b"{not json"]


def test_timestamps_are_normalised_to_epoch_ms(api: RunningApi) -> None:
    event = {**good(1), "ts": "2026-11-20T13:00:00.250+01:00"}
    r = httpx.post(f"{api.url}/v1/events", json=[event], headers=api.auth("ingest"))
    assert r.json()["accepted"] == 1
    [record] = api.read(api.topics.prefix + "user.pageviews")
    expected = datetime(2026, 11, 20, 12, 0, 0, 250_000, tzinfo=UTC)
    assert json.loads(record.value)["ts"] == int(expected.timestamp() * 1000)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b'[{"a": 1}, ', 400),
        (json.dumps([good(i) for i in range(1001)]).encode(), 413),
        (b"[" + b" " * (1024 * 1024) + b"]", 413),
    ],
    ids=["empty", "broken-array", "too-many-events", "too-many-bytes"],
)
def test_body_limits_and_malformed_bodies(api: RunningApi, body: bytes, status: int) -> None:
    r = httpx.post(f"{api.url}/v1/events", content=body, headers=api.auth("ingest"))
    assert r.status_code == status
    assert set(r.json()["error"]) == {"code", "message"}
    assert api.read(api.topics.dlq) == []


def test_exactly_the_limits_are_accepted(api: RunningApi) -> None:
    batch = [good(i) for i in range(1000)]
    r = httpx.post(f"{api.url}/v1/events", json=batch, headers=api.auth("ingest"))
    assert r.status_code == 200
    assert r.json()["accepted"] == 1000


def test_every_v1_route_needs_a_key_of_the_right_scope(api: RunningApi) -> None:
    spec = httpx.get(f"{api.url}/openapi.json").json()
    operations = [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if path.startswith("/v1")
    ]
    assert operations, "the OpenAPI document lists no /v1 route"
    for path, method, op in operations:
        scope = op.get("x-required-scope")
        assert scope in {"ingest", "read", "admin"}, f"{method} {path} declares no scope"
        url = api.url + path.replace("{", "").replace("}", "")
        for headers, status in [
            ({}, 401),
            ({"Authorization": "Bearer not-a-key"}, 401),
            (api.auth("read" if scope == "ingest" else "ingest"), 403),
        ]:
            r = httpx.request(method, url, headers=headers, content=b"[]")
            assert r.status_code == status, f"{method} {path} with {headers}: {r.status_code}"
            assert set(r.json()["error"]) == {"code", "message"}
            assert "pulse_" not in r.text  # no key material echoed back
        r = httpx.request(method, url, headers=api.auth("admin"), content=b"[]")
        assert r.status_code not in (401, 403), f"admin refused on {method} {path}"


def test_health_and_metrics_are_open(api: RunningApi) -> None:
    assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{api.url}/readyz").status_code == 200
    httpx.post(f"{api.url}/v1/events", json=[good(1), {"bad": 1}], headers=api.auth("ingest"))
    metrics = httpx.get(f"{api.url}/metrics/").text
    assert 'pulse_events_rejected_total{source="http"}' in metrics


def test_broker_outage_is_an_error_not_silent_loss(tmp_path) -> None:
    from api.app import create_app
    from api.deps import Services
    from api.keys import KeyStore
    from ingest.collector import Collector
    from ingest.fx import load_fx_rates
    from ingest.producer import ConfluentProducer
    from ingest.topics import Topics, ensure_topics

    broker = EmbeddedBroker(f"127.0.0.1:{free_port()}").start()
    ensure_topics(broker.bootstrap, Topics())
    producer = ConfluentProducer(broker.bootstrap, delivery_timeout_s=3)
    store = KeyStore(tmp_path / "keys.json")
    key = store.create("ingest")
    services = Services(
        keys=store,
        collector=Collector(producer, Topics(), load_fx_rates().currencies),
        delivery_timeout_s=5,
    )
    port = free_port()
    server, thread = serve_in_thread(create_app(services), port)
    try:
        broker.stop()
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/events",
            json=[good(1)],
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "broker_unavailable"
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(10)


def test_pipeline_health_gauges_are_exposed(api: RunningApi) -> None:
    from flows.dataflow import FLOW_NEWEST

    FLOW_NEWEST.set(1_795_176_000)  # what the flow sets as it writes
    text = httpx.get(f"{api.url}/metrics/").text
    for name in ("pulse_freshness_seconds", "pulse_events_accepted_total",
                 "pulse_flow_duplicates_total", "pulse_flow_events_total"):  # fmt: skip
        assert name in text, name
    freshness = next(ln for ln in text.splitlines() if ln.startswith("pulse_freshness_seconds "))
    assert float(freshness.split()[1]) > 0
