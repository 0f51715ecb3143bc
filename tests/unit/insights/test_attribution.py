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


def test_an_insight_raised_on_a_slice_names_the_aggregate_when_the_rest_moved_too() -> None:
    # traffic falls 30% everywhere and direct happened to cross first: not direct's
    engine = DetectionEngine()
    for n in range(245):
        f = 0.7 if n >= 240 else 1.0
        rows = {}
        for sl, base in {**SESSIONS, (): 1000.0}.items():
            rows[SeriesKey("sessions", sl)] = Obs(base * f)
            rows[SeriesKey("pageviews", sl)] = Obs(4 * base * f)
        engine.step(T0 + timedelta(minutes=n), rows, dict.fromkeys(rows, 0.0))
    att = attribute(engine, "pageviews", DIRECT, "1m", *_window(240))
    assert att.slice == () and att.cause == "traffic"
    # a slice whose rest of the shop held, or moved a little beyond its (Poisson) noise,
    # is still named
    engine = _feed(245, 240, sessions_hit=0.5)
    assert attribute(engine, "pageviews", MOBILE, "1m", *_window(240)).slice == MOBILE
    shoes: Slice = (("category", "shoes"),)  # not a dimension shared out: its own slice
    engine = DetectionEngine()
    for n in range(245):
        hit = n >= 240
        rows = {
            SeriesKey("sessions", shoes): Obs(400.0 + (300.0 if hit else 0.0)),  # +75%
            SeriesKey("sessions", ()): Obs(4000.0 + (300.0 + 90.0 if hit else 0.0)),
        }  # the rest: +2.5%, beyond its Poisson noise over 5 minutes (z > 3) but no more
        engine.step(T0 + timedelta(minutes=n), rows, dict.fromkeys(rows, 0.0))
    assert attribute(engine, "sessions", shoes, "1m", *_window(240)).slice == shoes


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
        # ...and the same with fewer page views per session lost (half the page_view
        # events of desktop, the backtest's, in its first minutes)
        (
            {
                "sessions": -0.17,
                "pageviews": -0.27,
                "conversion_rate": 0.28,
                "add_to_cart_rate": 0.18,
            },
            [],
            "tracking",
        ),
        # a traffic drop's first minutes: the sessions already there keep shopping (rates
        # up) while new ones stop coming, page views per session about as before
        (
            {
                "sessions": -0.31,
                "pageviews": -0.33,
                "orders": 0.04,
                "conversion_rate": 0.32,
                "add_to_cart_rate": 0.16,
            },
            [],
            "traffic",
        ),
        ({"sessions": -0.12, "pageviews": -0.13, "conversion_rate": 0.12}, [], ""),
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
