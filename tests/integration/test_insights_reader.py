"""`insights.reader` on a real warehouse: the detector's frames and drill-downs, read from
what the real flow wrote for a small hand-counted shop (numbers checked by hand, not by
the queries the reader calls)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from insights.reader import first_event, floor, funnel_counts, read_frame, refine
from insights.series import Obs, SeriesKey
from tests.pipeline import drained_database, utc
from warehouse.client import Client

pytestmark = pytest.mark.integration

D1, D2 = utc(2026, 11, 10), utc(2026, 11, 11)  # the day before, the day watched
_DEVICE = {"DE": "desktop", "PL": "mobile"}


def _sessions(
    day: datetime, hour: int, country: str, n: int, buying: int, revenue: float = 10.0
) -> list[dict[str, Any]]:
    """``n`` sessions of one page view in ``country`` at ``hour``; the first ``buying``
    of them also buy for ``revenue`` EUR."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        sid = f"{day:%d}-{hour}-{country}-{i}"
        at = day + timedelta(hours=hour, minutes=5 * i)
        base = {"user_id": f"u{sid}", "session_id": f"s{sid}", "country": country,
                "device": _DEVICE[country]}  # fmt: skip
        out.append({**base, "event_id": f"v{sid}", "type": "page_view", "ts": at.isoformat()})
        if i < buying:
            item = {"product_id": "p1", "price": revenue, "quantity": 1}
            out.append({**base, "event_id": f"p{sid}", "type": "purchase",
                        "ts": (at + timedelta(minutes=1)).isoformat(), "order_id": f"o{sid}",
                        "currency": "EUR", "revenue": revenue, "items": [item]})  # fmt: skip
    return out


def _shop() -> list[dict[str, Any]]:
    return [
        *_sessions(D1, 9, "DE", 2, 0),  # the hours before D1's window: nobody buys
        *_sessions(D1, 9, "PL", 2, 0),
        *_sessions(D1, 10, "DE", 2, 1),  # D1 10-12: 4 of 8 sessions buy
        *_sessions(D1, 10, "PL", 2, 1),
        *_sessions(D1, 11, "DE", 2, 1),
        *_sessions(D1, 11, "PL", 2, 1),
        *_sessions(D2, 10, "DE", 4, 2),  # D2 10-12: 4 of 12 sessions buy
        *_sessions(D2, 10, "PL", 2, 0),
        *_sessions(D2, 11, "DE", 2, 1, revenue=20.0),
        *_sessions(D2, 11, "PL", 4, 1, revenue=30.0),
    ]


@pytest.fixture(scope="module")
def shop(
    broker: Any, warehouse_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    raws = [msgspec.json.encode(e) for e in _shop()]
    database = drained_database(broker.bootstrap, warehouse_dsn, raws, tmp_path_factory, "reader")
    with database as (client, drained):
        assert drained.rejected == 0
        yield client


def _key(metric: str, interval: str = "1h", **slice_: str) -> SeriesKey:
    return SeriesKey(metric, tuple(slice_.items()), interval)


def test_floor_aligns_buckets_in_utc() -> None:
    at = utc(2026, 11, 11, 10, 37, 12)
    assert floor(at, "1h") == utc(2026, 11, 11, 10)
    assert floor(at, "1m") == utc(2026, 11, 11, 10, 37)


def test_first_event_is_none_on_an_empty_warehouse(warehouse: Client) -> None:
    assert first_event(warehouse) is None


def test_first_event_is_the_oldest_event(shop: Client) -> None:
    assert first_event(shop) == D1 + timedelta(hours=9)


def test_read_frame_holds_every_watched_metric_per_bucket_and_slice(shop: Client) -> None:
    frame = read_frame(shop, D2 + timedelta(hours=10), D2 + timedelta(hours=12), "1h")
    ten, eleven = D2 + timedelta(hours=10), D2 + timedelta(hours=11)
    assert list(frame) == [ten, eleven]  # buckets in order, nothing from [end, ...)
    at10, at11 = frame[ten], frame[eleven]
    assert at10[_key("sessions")] == Obs(6.0, None)
    assert at10[_key("sessions", country="DE")].value == 4.0
    assert at10[_key("sessions", device="mobile")].value == 2.0
    assert at10[_key("pageviews")].value == 6.0
    assert at10[_key("orders")].value == 2.0
    assert at10[_key("revenue")].value == pytest.approx(20.0)
    # a rate carries the count behind it: the sessions (conversion) or orders (AOV)
    assert at10[_key("conversion_rate")].value == pytest.approx(2 / 6)
    assert at10[_key("conversion_rate")].weight == 6.0
    assert at10[_key("conversion_rate", country="PL")] == Obs(0.0, 2.0)
    assert at11[_key("aov")].value == pytest.approx(25.0)
    assert at11[_key("aov")].weight == 2.0
    assert at11[_key("aov", country="PL")].value == pytest.approx(30.0)
    assert at11[_key("add_to_cart_rate")].value == 0.0  # nobody added to a cart
    # no channel was sent: no slice of it, rather than an empty one
    assert not any(dim == "channel" for key in at10 for dim, _ in key.slice)


def test_refine_compares_with_the_day_before(shop: Client) -> None:
    since, until = D2 + timedelta(hours=10), D2 + timedelta(hours=12)
    out = refine(shop, "conversion_rate", (), since, until)
    assert set(out) == {"country", "device"}  # the dimensions that have two values
    country = out["country"]
    assert country.ratio
    # The windows are summed from 1-minute buckets (shorter than 6 h), where a session is
    # counted in each minute it has an event: a buyer's session in two (its page view, its
    # purchase a minute later). D1 10-12: 4 buying of 8 + 4 session-minutes; D2 10-12: 4 of
    # 12 + 4. The split adds up to that change.
    assert math.isclose(country.total, 4 / 16 - 4 / 12)
    assert {c.value for c in country.contributions} == {"DE", "PL"}
    assert math.isclose(sum(c.share for c in country.contributions), 1.0)


def test_refine_within_a_slice_leaves_its_own_dimension_out(shop: Client) -> None:
    since, until = D2 + timedelta(hours=10), D2 + timedelta(hours=12)
    assert "country" not in refine(shop, "orders", (("country", "DE"),), since, until)


def test_refine_without_a_day_of_history_compares_with_the_window_before(
    shop: Client,
) -> None:
    # D1 has no day before it: its 10-12 window (4 buying of 8 + 4 session-minutes, as
    # above) is compared with 8-10 (0 of 4)
    out = refine(shop, "conversion_rate", (), D1 + timedelta(hours=10), D1 + timedelta(hours=12))
    assert math.isclose(out["country"].total, 4 / 12 - 0 / 4)


def test_funnel_counts_sessions_and_the_steps_they_reached_in_a_slice(shop: Client) -> None:
    # D2 10-12: 12 sessions, 4 bought a minute after their page view (none added to a cart
    # nor began a checkout: this shop's buyers go straight to the purchase). Per minute,
    # summed: a buyer's session counts in two minutes. DE: 6 sessions, 3 bought.
    since, until = D2 + timedelta(hours=10), D2 + timedelta(hours=12)
    assert funnel_counts(shop, (), since, until) == {
        "sessions": 16.0, "carts": 0.0, "checkouts": 0.0, "purchases": 4.0,
    }  # fmt: skip
    de = funnel_counts(shop, (("country", "DE"),), since, until)
    assert de == {"sessions": 9.0, "carts": 0.0, "checkouts": 0.0, "purchases": 3.0}
    mobile = funnel_counts(shop, (("device", "mobile"),), since, until)
    assert mobile is not None and mobile["sessions"] == 7.0 and mobile["purchases"] == 1.0
    assert funnel_counts(shop, (("category", "shoes"),), since, until) is None
