"""CONTRACT §9 with clients nobody here wrote: Segment's ``segment-analytics-python`` and
RudderStack's ``rudder-sdk-python`` (which gzips) pointed at a running Pulse API, their
messages drained by the real flow into the warehouse: every message there exactly once,
enriched, and the anonymous part of the visit counted under the user who logged in."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import RunningApi
from tests.pipeline import drained_topics
from warehouse.client import Client

pytestmark = pytest.mark.integration

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
PRODUCTS = [
    {"product_id": "sku-1", "category": "shoes", "price": 59.9, "quantity": 1},
    {"product_id": "sku-2", "category": "socks", "price": 4.5, "quantity": 2},
]


def _client(sdk: str, key: str, host: str, failures: list[Exception]) -> Any:
    if sdk == "segment":
        from segment.analytics import Client
    else:
        from rudderstack.analytics import Client  # type: ignore[no-redef]
    return Client(
        write_key=key, host=host, max_retries=2, on_error=lambda e, _b: failures.append(e)
    )


def _shop(client: Any, anon: str, user: str) -> int:
    """A visit: browse anonymously, log in, buy. How many messages were sent."""
    ctx = {
        "ip": "81.2.69.160",  # GB; used for the country, never stored
        "userAgent": IPHONE,
        "page": {"url": "https://shop.example/p/sku-1?utm_source=news&utm_medium=email",
                 "referrer": "https://mail.example/"},
        "campaign": {"source": "news", "medium": "email", "name": "spring"},
    }  # fmt: skip
    client.page(anonymous_id=anon, name="Product", properties={"path": "/p/sku-1"}, context=ctx)
    client.track(anonymous_id=anon, event="Product Viewed", context=ctx,
                 properties={"product_id": "sku-1", "category": "shoes", "price": 59.9,
                             "currency": "EUR"})  # fmt: skip
    client.track(anonymous_id=anon, event="Product Added", context=ctx,
                 properties={"product_id": "sku-1", "price": 59.9, "currency": "EUR"})  # fmt: skip
    client.identify(user_id=user, anonymous_id=anon, traits={"email": "u@example.com"},
                    context=ctx)  # fmt: skip
    client.track(user_id=user, anonymous_id=anon, event="Checkout Started", context=ctx,
                 properties={"value": 68.9, "currency": "EUR", "products": PRODUCTS})  # fmt: skip
    client.track(user_id=user, anonymous_id=anon, event="Order Completed", context=ctx,
                 properties={"order_id": f"o-{user}", "currency": "EUR",
                             "products": PRODUCTS})  # fmt: skip
    client.flush()
    client.join()
    return 6


@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_python_sdk_visit_reaches_the_warehouse(
    api: RunningApi, warehouse_dsn: str, tmp_path, sdk: str
) -> None:
    anon, user = f"anon-{uuid.uuid4().hex[:8]}", f"user-{uuid.uuid4().hex[:8]}"
    failures: list[Exception] = []
    client = _client(sdk, api.keys["ingest"], f"{api.url}/segment", failures)
    sent = _shop(client, anon, user)
    assert not failures
    assert not api.read(api.topics.dlq)

    with drained_topics(api.bootstrap, api.topics, warehouse_dsn, tmp_path, "sdk") as warehouse:
        assert_shop_visit(warehouse, user, sent)


def assert_shop_visit(warehouse: Client, user: str, sent: int) -> None:
    """The warehouse holds the visit of :func:`_shop` (also sent by the Node SDK's script,
    tests/data/analytics_node_shop.js): each of its ``sent`` messages once, enriched, one
    session under ``user``."""
    rows = warehouse.query(
        "SELECT type, user_id, country, device, channel, revenue_eur, session_key "
        "FROM events FINAL ORDER BY ts"
    ).result_rows
    # (the SDKs stamp microseconds, Pulse keeps milliseconds: ties, so compare as sets)
    assert sorted(r[0] for r in rows) == ["add_to_cart", "begin_checkout", "identify",
                                          "page_view", "product_view", "purchase"]  # fmt: skip
    assert len(rows) == sent  # each message exactly once
    assert {r[1] for r in rows} == {user}  # the anonymous part counts under the user
    assert {(r[2], r[3], r[4]) for r in rows} == {("GB", "mobile", "email")}
    [revenue] = [r[5] for r in rows if r[0] == "purchase"]
    assert revenue == pytest.approx(59.9 + 2 * 4.5)  # Σ price × quantity
    assert len({r[6] for r in rows}) == 1  # one session
    sessions = warehouse.query(
        "SELECT user_id, n_events FROM sessions FINAL WHERE deleted = 0"
    ).result_rows
    assert sessions == [(user, sent)]
