"""Attribution: the slice that carries a change, the funnel step that broke, the cause."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from insights.attribution import Step, attribute, classify
from insights.engine import DetectionEngine
from insights.series import Obs, SeriesKey, Slice

T0 = datetime(2026, 12, 1, 9, tzinfo=UTC)
MOBILE: Slice = (("device", "mobile"),)
DESKTOP: Slice = (("device", "desktop"),)
DIRECT: Slice = (("channel", "direct"),)
PAID: Slice = (("channel", "paid"),)
# sessions per minute and (add-to-cart, purchase) shares; mobile sessions are mostly direct
SESSIONS = {MOBILE: 600.0, DESKTOP: 400.0, DIRECT: 550.0, PAID: 450.0}
MOBILE_SHARE = {DIRECT: 0.8, PAID: 0.2 * 600 / 450}


def _feed(
    minutes: int, outage_from: int, *, conversion_hit: float = 0.0, cart_hit: float = 0.0,
    sessions_hit: float = 0.0,
) -> DetectionEngine:  # fmt: skip
    """An engine fed ``minutes`` of flat traffic; from ``outage_from`` mobile loses
    ``conversion_hit`` of its buyers, ``cart_hit`` of its carts, ``sessions_hit`` of its
    sessions (and every slice holding mobile sessions its share of that)."""
    engine = DetectionEngine()
    for n in range(minutes):
        hit = n >= outage_from
        rows: dict[SeriesKey, Obs] = {}
        sess: dict[Slice, float] = {}
        buyers: dict[Slice, float] = {}
        carts: dict[Slice, float] = {}
        for sl, base in SESSIONS.items():
            mobile = 1.0 if sl == MOBILE else (0.0 if sl == DESKTOP else MOBILE_SHARE[sl])
            lost = sessions_hit * mobile * base if hit else 0.0
            sess[sl] = base - lost
            carts[sl] = 0.1 * sess[sl] * (1 - (cart_hit * mobile if hit else 0.0))
            buyers[sl] = (
                0.04 * sess[sl] * (1 - (max(conversion_hit, cart_hit) * mobile if hit else 0.0))
            )
        sess[()] = sess[MOBILE] + sess[DESKTOP]
        buyers[()] = buyers[MOBILE] + buyers[DESKTOP]
        carts[()] = carts[MOBILE] + carts[DESKTOP]
        for sl in sess:
            rows[SeriesKey("sessions", sl)] = Obs(sess[sl])
            rows[SeriesKey("pageviews", sl)] = Obs(4 * sess[sl])
            rows[SeriesKey("orders", sl)] = Obs(buyers[sl])
            rows[SeriesKey("conversion_rate", sl)] = Obs(buyers[sl] / sess[sl], sess[sl])
            rows[SeriesKey("add_to_cart_rate", sl)] = Obs(carts[sl] / sess[sl], sess[sl])
        scores: Mapping[SeriesKey, float] = dict.fromkeys(rows, 0.0)
        engine.step(T0 + timedelta(minutes=n), rows, scores)
    return engine


def _window(n: int) -> tuple[datetime, datetime]:
    return T0 + timedelta(minutes=n), T0 + timedelta(minutes=n + 5)


def test_a_mobile_payment_outage_is_carried_by_mobile_not_by_direct() -> None:
    engine = _feed(245, 240, conversion_hit=0.9)
    since, until = _window(240)
    att = attribute(engine, "conversion_rate", (), "1m", since, until)
    assert att.slice == MOBILE, att.contributors
    assert att.contributors[0].label == "device=mobile"
    assert att.effect == "rate"
    assert att.cause == "checkout"
    assert att.broken == "add to cart → purchase"


def test_a_drop_of_add_to_carts_and_purchases_is_product() -> None:
    engine = _feed(245, 240, cart_hit=0.5)
    att = attribute(engine, "conversion_rate", (), "1m", *_window(240))
    assert att.slice == MOBILE
    assert att.cause == "product"
    assert att.broken == "session → add to cart"


def test_lost_sessions_with_rates_kept_are_traffic() -> None:
    engine = _feed(245, 240, sessions_hit=0.5)
    att = attribute(engine, "sessions", (), "1m", *_window(240))
    assert att.slice == MOBILE
    assert att.effect == "volume"
    assert att.cause == "traffic"


def test_a_change_everywhere_names_no_slice() -> None:
    engine = DetectionEngine()
    for n in range(245):
        f = 0.5 if n >= 240 else 1.0
        rows = {}
        for sl, base in {**SESSIONS, (): 1000.0}.items():
            rows[SeriesKey("sessions", sl)] = Obs(base)
            rows[SeriesKey("conversion_rate", sl)] = Obs(0.04 * f, base)
        engine.step(T0 + timedelta(minutes=n), rows, dict.fromkeys(rows, 0.0))
    att = attribute(engine, "conversion_rate", (), "1m", *_window(240))
    assert att.slice == () and att.contributors == ()


def test_a_change_spread_over_every_value_of_a_dimension_is_the_aggregates() -> None:
    # conversion falls everywhere; in these minutes direct fell more (-45%) than the other
    # channels (-12%), but they fell beyond their noise too: no channel carries it
    engine = DetectionEngine()
    rates = {DIRECT: (0.04, 0.022), PAID: (0.04, 0.035)}
    sessions = {DIRECT: 5500.0, PAID: 4500.0, MOBILE: 6000.0, DESKTOP: 4000.0}
    for n in range(245):
        hit = n >= 240
        rows = {}
        buyers = {sl: sessions[sl] * r[hit] for sl, r in rates.items()}
        buyers[()] = sum(buyers.values())
        for sl in (MOBILE, DESKTOP):  # each device holds both channels alike
            buyers[sl] = buyers[()] * sessions[sl] / 10000.0
        for sl, b in buyers.items():
            n_sessions = sessions.get(sl, 10000.0)
            rows[SeriesKey("sessions", sl)] = Obs(n_sessions)
            rows[SeriesKey("conversion_rate", sl)] = Obs(b / n_sessions, n_sessions)
        engine.step(T0 + timedelta(minutes=n), rows, dict.fromkeys(rows, 0.0))
    att = attribute(engine, "conversion_rate", (), "1m", *_window(240))
    assert att.slice == () and att.contributors == ()


@pytest.mark.parametrize(
    ("changes", "steps", "cause"),
    [
        # a payment outage: carts as usual, checkouts lost
        (
            {"conversion_rate": -0.9},
            [("add to cart → checkout", -0.8), ("checkout → purchase", -0.5)],
            "checkout",
        ),
        # checkout breaks after it begins
        (
            {"conversion_rate": -0.5},
            [("add to cart → checkout", 0.0), ("checkout → purchase", -0.5)],
            "checkout",
        ),
        # page views lost: one-page sessions vanish, those left convert more
        ({"sessions": -0.3, "pageviews": -0.5, "conversion_rate": 0.4}, [], "tracking"),
        # add-to-carts lost while purchases go on
        ({"add_to_cart_rate": -0.5, "conversion_rate": 0.0}, [], "tracking"),
        ({"add_to_cart_rate": -0.5, "conversion_rate": -0.5}, [], "product"),
        ({"sessions": -0.4, "pageviews": -0.4, "orders": -0.4}, [], "traffic"),
        ({"sessions": 0.8, "pageviews": 0.3, "conversion_rate": -0.45}, [], "traffic"),
        ({"aov": 2.0, "orders": 0.01}, [], "pricing"),
        ({"sessions": 0.02}, [], ""),
    ],
)
def test_the_cause_follows_from_the_funnel_and_traffic(
    changes: dict[str, float], steps: list[tuple[str, float]], cause: str
) -> None:
    funnel = tuple(Step(name, 0.1 * (1 + c), 0.1) for name, c in steps)
    assert classify(changes, funnel) == cause


def test_purchases_gone_while_checkouts_go_on_is_tracking_only_when_many_were_due() -> None:
    steps = (Step("add to cart → checkout", 0.5, 0.5, 400, 400),
             Step("checkout → purchase", 0.0, 0.6, 0, 240))  # fmt: skip
    assert classify({"conversion_rate": -1.0}, steps) == "tracking"
    few = (steps[0], Step("checkout → purchase", 0.0, 0.6, 0, 12))
    assert classify({"conversion_rate": -1.0}, few) == "checkout"  # a 95% outage leaves 0 of 12
