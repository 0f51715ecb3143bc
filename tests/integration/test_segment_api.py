"""The Segment-compatible routes (CONTRACT §9) against the real broker: auth, gzip, limits,
mapping, dead letters with the original message bytes."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.ratelimit import RateLimit, RateLimiter
from tests.conftest import RunningApi

pytestmark = pytest.mark.integration


def _now() -> str:
    return datetime.now(UTC).isoformat()


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def msg(kind: str = "track", **fields: object) -> dict:
    base: dict = {
        "type": kind,
        "messageId": uuid.uuid4().hex,
        "anonymousId": "anon-1",
        "timestamp": _now(),
        "context": {"library": {"name": "test"}},
    }
    return {**base, **fields}


def _values(api: RunningApi, topic: str) -> list[dict]:
    return [json.loads(r.value) for r in api.read(api.topics.prefix + topic)]


def test_a_batch_is_mapped_routed_and_its_bad_messages_dead_lettered(api: RunningApi) -> None:
    good = [
        msg("page", properties={"url": "https://shop.example/"}),
        msg(
            event="Product Viewed", properties={"product_id": "p1", "price": 10, "currency": "EUR"}
        ),
        msg(event="Product Added", properties={"product_id": "p1", "price": 10, "currency": "EUR"}),
        msg(event="Checkout Started", properties={"value": 20, "currency": "EUR"}),
        msg(
            event="Order Completed",
            userId="u-1",
            properties={
                "order_id": "o1",
                "currency": "EUR",
                "products": [{"product_id": "p1", "price": 10, "quantity": 2}],
            },
        ),
        msg(event="Products Searched", properties={"query": "shoes"}),
        msg("identify", userId="u-1", traits={"email": "x@example.com"}),
        msg(event="Coupon Applied", unknownField={"a": [1]}),
    ]
    bad = [
        msg(event="Product Added", properties={"product_id": "p1", "price": -1, "currency": "EUR"}),
        {"type": "track", "event": "No id", "anonymousId": "a"},
        msg(event="Order Completed", properties={"currency": "EUR"}),
    ]
    body = {"batch": [*good[:3], bad[0], *good[3:], bad[1], bad[2]], "sentAt": _now()}
    raw = json.dumps(body).encode()
    r = httpx.post(f"{api.url}/segment/v1/batch", content=raw, headers=basic(api.keys["ingest"]))
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}

    pages = _values(api, "user.pageviews")
    assert [p["event_id"] for p in pages] == [good[0]["messageId"]]
    assert pages[0]["user_id"] == "anon-1" and pages[0]["channel"] == "direct"
    [view] = _values(api, "user.product_interactions")
    assert (view["type"], view["product_id"], view["price"]) == ("product_view", "p1", 10.0)
    cart = _values(api, "user.cart_events")
    assert sorted(c["type"] for c in cart) == ["add_to_cart", "begin_checkout"]
    [order] = _values(api, "user.purchases")
    assert (order["user_id"], order["revenue"], order["items"][0]["quantity"]) == ("u-1", 20.0, 2)
    assert order["anonymous_id"] == "anon-1"
    assert [s["query"] for s in _values(api, "user.searches")] == ["shoes"]
    general = {g["type"]: g for g in _values(api, "user.general_events")}
    assert set(general) == {"identify", "Coupon Applied"}
    assert "traits" not in json.dumps(general["identify"])

    dead = api.read(api.topics.dlq)
    assert len(dead) == len(bad)
    originals = {json.dumps(b).encode() for b in bad}
    assert {r.value for r in dead} == originals  # the client's own bytes
    reasons = {dict(r.headers)["pulse.reason"].decode() for r in dead}
    assert any(x.startswith("price") for x in reasons)
    assert "messageId: required string" in reasons
    assert any(x.startswith("order_id") for x in reasons)
    assert {dict(r.headers)["pulse.source"] for r in dead} == {b"segment"}


@pytest.mark.parametrize("name", ["track", "t", "page", "p", "screen", "s", "identify", "i",
                                  "alias", "a", "group", "g"])  # fmt: skip
def test_single_message_routes_and_their_aliases(api: RunningApi, name: str) -> None:
    body = msg("ignored", event="Thing Done", userId="u-2", previousId="anon-9", groupId="g")
    r = httpx.post(f"{api.url}/segment/v1/{name}", json=body, headers=basic(api.keys["ingest"]))
    assert r.status_code == 200, r.text
    kind = {"t": "track", "p": "page", "s": "screen", "i": "identify", "a": "alias", "g": "group"}
    expected = {"track": "Thing Done", "page": "page_view", "screen": "page_view"}
    full = kind.get(name, name)
    topic = "user.pageviews" if full in ("page", "screen") else "user.general_events"
    [event] = _values(api, topic)
    assert event["type"] == expected.get(full, full)
    assert event["event_id"] == body["messageId"]


def test_write_key_in_the_body_and_auth_failures(api: RunningApi) -> None:
    url = f"{api.url}/segment/v1/t"
    beacon = {**msg(event="X"), "writeKey": api.keys["ingest"]}
    r = httpx.post(url, content=json.dumps(beacon), headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    batch = {"batch": [msg(event="Y")], "writeKey": api.keys["ingest"]}
    assert httpx.post(f"{api.url}/segment/v1/b", json=batch).status_code == 200
    assert len(_values(api, "user.general_events")) == 2

    no_key = httpx.post(url, json=msg(event="X"))
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "unauthorized"
    assert httpx.post(url, json=msg(event="X"), headers=basic("pk_wrong")).status_code == 401
    assert httpx.post(url, json=msg(event="X"), headers=basic(api.keys["read"])).status_code == 403
    bearer = httpx.post(url, json=msg(event="Z"), headers=api.auth("ingest"))
    assert bearer.status_code == 200
    garbled = httpx.post(url, content=b"{", headers=basic(api.keys["ingest"]))
    assert garbled.status_code == 400 and garbled.json()["error"]["code"] == "bad_request"
    assert httpx.post(url, content=b"{").status_code == 401  # no key: nothing more said


def test_gzip_bodies_and_the_limit_after_decompression(api: RunningApi) -> None:
    url = f"{api.url}/segment/v1/batch"
    headers = {**basic(api.keys["ingest"]), "Content-Encoding": "gzip"}
    body = {"batch": [msg(event="Zipped")]}
    r = httpx.post(url, content=gzip.compress(json.dumps(body).encode()), headers=headers)
    assert r.status_code == 200, r.text
    assert [e["type"] for e in _values(api, "user.general_events")] == ["Zipped"]

    # 1 GiB of zeros inflates from ~1 MB: refused after inflating at most the limit
    bomb = gzip.compress(b'{"batch": [' + b" " * (1 << 30), compresslevel=9)
    assert len(bomb) < 2 << 20
    r = httpx.post(url, content=bomb, headers=headers, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    # a stranger's bomb is not even read: Basic credentials are checked first
    stranger = {**basic("pk_wrong"), "Content-Encoding": "gzip"}
    assert httpx.post(url, content=bomb, headers=stranger, timeout=30).status_code == 401
    # just over 1 MiB of real messages after decompression: also 413
    padding = "x" * 20_000
    many = {"batch": [msg(event="Big", properties={"pad": padding}) for _ in range(60)]}
    r = httpx.post(url, content=gzip.compress(json.dumps(many).encode()), headers=headers)
    assert r.status_code == 413
    assert httpx.post(url, content=b"not gzip", headers=headers).status_code == 400
    plain = json.dumps(many).encode()
    assert httpx.post(url, content=plain, headers=basic(api.keys["ingest"])).status_code == 413


def test_browser_origins_preflight_and_refusal(api: RunningApi) -> None:
    key = api.services.keys.create("ingest", origins=("https://shop.example",))
    url = f"{api.url}/segment/v1/t"
    pre = httpx.options(
        url,
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://shop.example"
    assert "Authorization" in pre.headers["access-control-allow-headers"]
    ok = httpx.post(
        url, json=msg(event="X"), headers={**basic(key), "Origin": "https://shop.example"}
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    evil = httpx.post(
        url, json=msg(event="X"), headers={**basic(key), "Origin": "https://evil.example"}
    )
    assert evil.status_code == 403
    denied = httpx.options(
        url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert denied.status_code == 403


def test_a_flooding_key_gets_429(api: RunningApi) -> None:
    api.services.limiter = RateLimiter({"ingest": RateLimit(per_second=0.01, burst=2)})
    url = f"{api.url}/segment/v1/t"
    codes = [httpx.post(url, json=msg(event="X"), headers=basic(api.keys["ingest"])).status_code
             for _ in range(3)]  # fmt: skip
    assert codes == [200, 200, 429]


def test_too_many_messages_in_one_batch_is_413(api: RunningApi) -> None:
    body = {"batch": [{"type": "track"}] * 1001}
    r = httpx.post(f"{api.url}/segment/v1/batch", json=body, headers=basic(api.keys["ingest"]))
    assert r.status_code == 413


_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "page", "identify", "alias", "nope"]) | _VALUE,
        "event": st.sampled_from(["Product Added", "Order Completed", "X"]) | _VALUE,
        "messageId": st.uuids().map(str) | _VALUE,
        "userId": st.sampled_from(["u1", ""]) | _VALUE,
        "anonymousId": st.just("a1") | _VALUE,
        "timestamp": st.just(datetime.now(UTC).isoformat()) | _VALUE,
        "properties": st.fixed_dictionaries(
            {}, optional={"price": _VALUE, "currency": _VALUE, "products": _VALUE}
        ),
        "context": _VALUE,
    },
)


def test_hostile_batches_never_5xx_and_no_message_vanishes(api: RunningApi) -> None:
    key, sent = api.keys["ingest"], []

    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(batch=st.lists(_MESSAGE | _VALUE, max_size=6))
    def post(batch: list) -> None:
        r = httpx.post(f"{api.url}/segment/v1/batch", json={"batch": batch}, headers=basic(key))
        assert r.status_code == 200, r.text
        sent.append(len(batch))

    post()
    # every message is an event on its topic or a dead letter, never nothing
    assert sum(len(api.read(t)) for t in api.topics.all) == sum(sent)
