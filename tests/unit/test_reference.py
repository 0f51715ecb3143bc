"""Unit tests of the reference metrics on small hand-made event lists.

Every expected number is worked out by hand in the test from METRICS.md.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.reference import (
    METRICS,
    device_from_user_agent,
    funnel,
    load_events,
    metric_series,
    otto_to_events,
    top_products,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
_ids = itertools.count()


def ev(kind: str, at: datetime, user: str = "u1", **fields: Any) -> dict[str, Any]:
    """One accepted event; ts as RFC 3339 (UTC) unless given as epoch ms in ``fields``."""
    event = {"event_id": f"e{next(_ids)}", "type": kind, "ts": at.isoformat(), "user_id": user}
    event.update(fields)
    return event


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def values(series: list[dict[str, Any]]) -> list[Any]:
    return [point["value"] for point in series]


def one(events: Any, metric: str, start: datetime = T0, **kw: Any) -> Any:
    """The value of a metric over a single 1h bucket starting at ``start``."""
    series = metric_series(events, metric, start=start, end=start + timedelta(hours=1), **kw)
    assert len(series) == 1
    return series[0]["value"]


# --- sessionisation ------------------------------------------------------------------


def test_gap_of_exactly_the_timeout_stays_in_the_session() -> None:
    frame = load_events([ev("page_view", T0), ev("page_view", T0 + 30 * MIN)])
    assert frame["session"].to_list() == [f"u1/{ms(T0)}"] * 2
    assert one(frame, "sessions") == 1
    assert one(frame, "avg_session_duration_s") == 1800.0


def test_gap_of_timeout_plus_one_ms_splits() -> None:
    later = T0 + 30 * MIN + timedelta(milliseconds=1)
    frame = load_events([ev("page_view", T0), ev("page_view", later)])
    assert frame["session"].to_list() == [f"u1/{ms(T0)}", f"u1/{ms(later)}"]
    assert one(frame, "sessions") == 2
    assert one(frame, "bounce_rate") == 1.0  # two one-event sessions


def test_derived_sessions_order_by_ts_not_arrival_and_respect_custom_timeout() -> None:
    # Arrival order 40, 0, 20 min: sorted by ts the gaps are 20 and 20 min -> one session.
    raw = [ev("page_view", T0 + 40 * MIN), ev("page_view", T0), ev("page_view", T0 + 20 * MIN)]
    assert load_events(raw)["session"].n_unique() == 1
    short = load_events(raw, session_timeout=timedelta(minutes=15))
    assert short["session"].n_unique() == 3


def test_explicit_session_id_is_the_session_and_derived_sessions_skip_it() -> None:
    raw = [
        ev("page_view", T0, session_id="s1"),
        ev("page_view", T0 + timedelta(hours=5), session_id="s1"),  # far apart, same session
        ev("page_view", T0 + 10 * MIN),  # no session_id: its own derived session
        ev("page_view", T0 + 20 * MIN, user="u2", session_id="s1"),  # session_id alone counts
    ]
    frame = load_events(raw)
    assert frame["session"].to_list() == ["s1", "s1", f"u1/{ms(T0 + 10 * MIN)}", "s1"]
    assert one(frame, "sessions") == 2
    assert one(frame, "visitors") == 2
    # s1 starts at T0 and lasts 5 h; the derived one lasts 0 s.
    assert one(frame, "avg_session_duration_s") == (5 * 3600 + 0) / 2


def test_session_attributes_come_from_the_first_event_by_ts_without_filling() -> None:
    raw = [
        # arrives first but is the later event
        ev("page_view", T0 + 5 * MIN, session_id="s", country="DE", device="mobile"),
        ev("page_view", T0, session_id="s", country="NL", channel="paid"),  # no device/UA
    ]
    raw.append(ev("page_view", T0 + 10 * MIN, session_id="t"))  # first event: no country
    raw.append(ev("page_view", T0 + 11 * MIN, session_id="t", country="DE", channel="email"))
    frame = load_events(raw)
    later = frame.row(3, named=True)
    assert (later["session_country"], later["session_channel"]) == (None, None)
    row = frame.row(0, named=True)
    assert (row["session_country"], row["session_device"], row["session_channel"]) == (
        "NL",
        None,
        "paid",
    )
    by_country = metric_series(frame, "events", start=T0, end=T0 + timedelta(hours=1), by="country")
    assert by_country == [
        {"ts": "2026-03-02T10:00:00+00:00", "value": 2, "country": "NL"},
        {"ts": "2026-03-02T10:00:00+00:00", "value": 2, "country": None},
    ]
    by_device = metric_series(frame, "sessions", start=T0, end=T0 + timedelta(hours=1), by="device")
    assert by_device == [{"ts": "2026-03-02T10:00:00+00:00", "value": 2, "device": None}]


def test_device_is_derived_from_the_user_agent_when_absent() -> None:
    assert device_from_user_agent("Mozilla/5.0 (iPad; CPU OS 17_0)") == "tablet"
    assert device_from_user_agent("Mozilla/5.0 (Linux; Android 14; Tablet)") == "tablet"
    assert device_from_user_agent("Mozilla/5.0 (Linux; Android 14) Mobile") == "mobile"
    assert device_from_user_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)") == "mobile"
    assert device_from_user_agent("Mozilla/5.0 (X11; Linux x86_64)") == "desktop"
    assert device_from_user_agent(None) is None
    frame = load_events(
        [
            ev("page_view", T0, user_agent="Mozilla/5.0 (iPhone)"),
            ev("page_view", T0, device="desktop", user_agent="Mozilla/5.0 (iPhone)"),
        ]
    )
    assert frame["device"].to_list() == ["mobile", "desktop"]


# --- de-duplication --------------------------------------------------------------------


def test_repeated_event_id_counts_once_first_occurrence_wins() -> None:
    first = ev("page_view", T0, country="DE")
    repeat = dict(first, type="product_view", ts=(T0 + 5 * MIN).isoformat(), country="FR")
    frame = load_events([first, repeat, first])
    assert frame.height == 1
    assert frame.row(0, named=True)["type"] == "page_view"
    assert one(frame, "events") == 1
    assert one(frame, "pageviews") == 1
    assert (
        metric_series(frame, "events", start=T0, end=T0 + timedelta(hours=1), by="country")[0][
            "country"
        ]
        == "DE"
    )


def _purchase(at: datetime, order_id: str, revenue: float, session: str, **kw: Any) -> dict:
    items = kw.pop("items", [{"product_id": "p1", "category": "shoes", "price": revenue}])
    return ev(
        "purchase",
        at,
        session_id=session,
        order_id=order_id,
        revenue=revenue,
        currency="EUR",
        items=items,
        **kw,
    )


def test_repeated_order_id_counts_one_order_but_every_purchase_event() -> None:
    raw = [
        _purchase(T0 + 10 * MIN, "o1", 100.0, "s1"),
        _purchase(T0 + 5 * MIN, "o1", 50.0, "s2"),  # later arrival, earlier ts: a duplicate
        ev("page_view", T0, session_id="s3"),
    ]
    frame = load_events(raw)
    assert frame["is_order"].to_list() == [True, False, False]
    assert one(frame, "events") == 3
    assert one(frame, "orders") == 1
    assert one(frame, "revenue") == 100.0
    assert one(frame, "units") == 1
    assert one(frame, "aov") == 100.0
    # both purchase events make their session converted: s1, s2 out of s1, s2, s3
    assert one(frame, "conversion_rate") == pytest.approx(2 / 3)
    # the order's ts is the first occurrence's: in the 10:00 bucket, not before it
    early = metric_series(frame, "orders", start=T0, end=T0 + 15 * MIN, interval="5m")
    assert values(early) == [0, 0, 1]


# --- FX ----------------------------------------------------------------------------------


def test_fx_uses_the_latest_rate_on_or_before_the_events_utc_day(tmp_path: Path) -> None:
    fx = tmp_path / "fx.csv"
    fx.write_text("date,currency,eur_per_unit\n2024-02-01,USD,0.8\n2024-01-01,USD,0.9\n")
    jan31 = datetime(2024, 1, 31, 23, 59, 59, tzinfo=UTC)
    usd = {"currency": "USD", "revenue": 100.0}
    raw = [
        dict(_purchase(jan31, "a", 0, "s1"), **usd),  # Jan 31 -> 0.9
        dict(_purchase(jan31 + timedelta(seconds=1), "b", 0, "s2"), **usd),  # Feb 1 -> 0.8
        # 23:30 at -01:00 is 00:30 UTC on Feb 1 -> 0.8
        dict(_purchase(jan31, "c", 0, "s3"), ts="2024-01-31T23:30:00-01:00", **usd),
        dict(_purchase(datetime(2023, 12, 1, tzinfo=UTC), "d", 0, "s4"), **usd),  # earliest
        _purchase(datetime(2023, 12, 1, tzinfo=UTC), "e", 7.0, "s5"),  # EUR is 1
    ]
    frame = load_events(raw, fx_csv=fx)
    assert frame["revenue_eur"].to_list() == pytest.approx([90.0, 80.0, 80.0, 90.0, 7.0])
    daily = metric_series(
        frame,
        "revenue",
        start=datetime(2024, 1, 31, tzinfo=UTC),
        end=datetime(2024, 2, 2, tzinfo=UTC),
        interval="1d",
    )
    assert [round(v, 2) for v in values(daily)] == [90.0, 160.0]


def test_item_amounts_use_the_order_rate_and_quantity(tmp_path: Path) -> None:
    fx = tmp_path / "fx.csv"
    fx.write_text("date,currency,eur_per_unit\n2026-01-01,GBP,1.2\n")
    items = [
        {"product_id": "p1", "category": "shoes", "price": 10.0, "quantity": 3},
        {"product_id": "p2", "category": "hats", "price": 5.0},  # quantity defaults to 1
    ]
    raw = [dict(_purchase(T0, "o1", 40.0, "s1", items=items), currency="GBP")]
    frame = load_events(raw, fx_csv=fx)
    assert one(frame, "revenue") == pytest.approx(48.0)  # the order's revenue field
    assert one(frame, "units") == 4
    by_cat = metric_series(frame, "revenue", start=T0, end=T0 + timedelta(hours=1), by="category")
    assert [(p["category"], round(p["value"], 2)) for p in by_cat] == [
        ("hats", 6.0),
        ("shoes", 36.0),
    ]


# --- buckets -----------------------------------------------------------------------------


def test_day_buckets_in_amsterdam_are_23_and_25_hours_long() -> None:
    # 2026-03-29: clocks 02:00 -> 03:00; 2026-10-25: clocks 03:00 -> 02:00 (Europe/Amsterdam)
    raw = [
        ev("page_view", datetime(2026, 3, 28, 23, 30, tzinfo=UTC)),  # 00:30+01:00 on the 29th
        ev("page_view", datetime(2026, 3, 29, 21, 59, tzinfo=UTC)),  # 23:59+02:00 on the 29th
        ev("page_view", datetime(2026, 3, 29, 22, 0, tzinfo=UTC)),  # 00:00+02:00 on the 30th
    ]
    frame = load_events(raw)
    spring = metric_series(
        frame,
        "events",
        start=datetime(2026, 3, 28, 12, tzinfo=UTC),  # rounded down to local midnight
        end=datetime(2026, 3, 30, 12, tzinfo=UTC),
        interval="1d",
        tz="Europe/Amsterdam",
    )
    assert spring == [
        {"ts": "2026-03-28T00:00:00+01:00", "value": 0},
        {"ts": "2026-03-29T00:00:00+01:00", "value": 2},  # 23 hours
        {"ts": "2026-03-30T00:00:00+02:00", "value": 1},
    ]
    autumn = metric_series(
        load_events([ev("page_view", datetime(2026, 10, 25, 22, 59, tzinfo=UTC))]),
        "events",
        start=datetime(2026, 10, 24, 22, tzinfo=UTC),
        end=datetime(2026, 10, 26, 23, tzinfo=UTC),
        interval="1d",
        tz="Europe/Amsterdam",
    )
    # the 25th runs 2026-10-24T22:00Z .. 2026-10-25T23:00Z (25 h), so 22:59Z is in it
    assert autumn == [
        {"ts": "2026-10-25T00:00:00+02:00", "value": 1},
        {"ts": "2026-10-26T00:00:00+01:00", "value": 0},
    ]


def test_hour_buckets_across_the_fall_back_keep_the_repeated_hour_apart() -> None:
    frame = load_events([ev("page_view", datetime(2026, 10, 25, 1, 15, tzinfo=UTC))])
    series = metric_series(
        frame,
        "events",
        start=datetime(2026, 10, 25, 0, tzinfo=UTC),
        end=datetime(2026, 10, 25, 3, tzinfo=UTC),
        tz="Europe/Amsterdam",
    )
    assert series == [
        {"ts": "2026-10-25T02:00:00+02:00", "value": 0},
        {"ts": "2026-10-25T02:00:00+01:00", "value": 1},
        {"ts": "2026-10-25T03:00:00+01:00", "value": 0},
    ]


def test_sub_day_buckets_align_to_the_local_wall_clock() -> None:
    # Asia/Kolkata is +05:30: local hours start at :30 UTC
    frame = load_events([ev("page_view", T0 - 20 * MIN), ev("page_view", T0 + 40 * MIN)])
    series = metric_series(
        frame, "events", start=T0, end=T0 + timedelta(hours=1), tz="Asia/Kolkata"
    )
    assert series == [
        {"ts": "2026-03-02T15:00:00+05:30", "value": 1},  # 09:30Z .. 10:30Z
        {"ts": "2026-03-02T16:00:00+05:30", "value": 1},  # 10:30Z .. 11:30Z
    ]


def test_unaligned_start_rounds_down_and_empty_buckets_are_listed() -> None:
    frame = load_events([ev("page_view", T0 + 5 * MIN), ev("page_view", T0 + 5 * MIN)])
    series = metric_series(frame, "pageviews", start=T0 + 20 * MIN, end=T0 + timedelta(hours=2))
    # the whole 10:00 bucket counts, also the 10:05 events before `start`
    assert series == [
        {"ts": "2026-03-02T10:00:00+00:00", "value": 2},
        {"ts": "2026-03-02T11:00:00+00:00", "value": 0},
    ]
    with pytest.raises(ValueError):
        metric_series(frame, "events", start=T0, end=T0, interval="1h")
    with pytest.raises(ValueError):
        metric_series(frame, "events", start=T0, end=T0 + MIN, interval="2h")


# --- engagement and ratios ---------------------------------------------------------------


def test_session_start_metrics_count_whole_sessions_starting_in_the_bucket() -> None:
    raw = [
        ev("page_view", T0 + 10 * MIN, session_id="a"),  # bounce
        ev("page_view", T0 + 50 * MIN, session_id="b"),
        ev("product_view", T0 + 55 * MIN, session_id="b", product_id="p1"),
        ev("add_to_cart", T0 + 70 * MIN, session_id="b", product_id="p1"),  # next bucket
    ]
    frame = load_events(raw)
    start, end = T0, T0 + timedelta(hours=2)
    assert values(metric_series(frame, "bounce_rate", start=start, end=end)) == [0.5, None]
    assert values(metric_series(frame, "pages_per_session", start=start, end=end)) == [1.5, None]
    # durations 0 s and 20 min
    assert values(metric_series(frame, "avg_session_duration_s", start=start, end=end)) == [
        600.0,
        None,
    ]
    # b has an event in both buckets, so it is a session of both
    assert values(metric_series(frame, "sessions", start=start, end=end)) == [2, 1]
    assert values(metric_series(frame, "add_to_cart_rate", start=start, end=end)) == [0.0, 1.0]


def test_ratios_are_null_on_zero_denominators_and_counts_zero() -> None:
    frame = load_events([ev("page_view", T0, session_id="a")])
    start, end = T0, T0 + timedelta(hours=2)  # the 11:00 bucket is empty
    expected = {
        "events": [1, 0],
        "visitors": [1, 0],
        "orders": [0, 0],
        "revenue": [0.0, 0.0],
        "units": [0, 0],
        "aov": [None, None],
        "conversion_rate": [0.0, None],
        "add_to_cart_rate": [0.0, None],
        "revenue_per_visitor": [0.0, None],
        "bounce_rate": [1.0, None],
    }
    for metric, want in expected.items():
        assert values(metric_series(frame, metric, start=start, end=end)) == want, metric
    assert set(expected) <= set(METRICS)
    assert len(METRICS) == 15


# --- slices ------------------------------------------------------------------------------


def test_by_lists_every_bucket_for_dims_with_data_and_where_is_anded() -> None:
    raw = [
        ev("page_view", T0, session_id="a", country="DE", device="mobile"),
        ev("page_view", T0, session_id="b", country="DE", device="desktop"),
        ev("page_view", T0 + 70 * MIN, session_id="c", country="AT", device="mobile"),
        ev("page_view", T0 + 70 * MIN, session_id="d"),
    ]
    frame = load_events(raw)
    start, end = T0, T0 + timedelta(hours=2)
    series = metric_series(frame, "sessions", start=start, end=end, by="country")
    assert [(p["ts"][11:16], p["country"], p["value"]) for p in series] == [
        ("10:00", "AT", 0),
        ("10:00", "DE", 2),
        ("10:00", None, 0),
        ("11:00", "AT", 1),
        ("11:00", "DE", 0),
        ("11:00", None, 1),
    ]
    both = {"country": "DE", "device": "mobile"}
    assert values(metric_series(frame, "sessions", start=start, end=end, where=both)) == [1, 0]
    sources = metric_series(frame, "traffic_sources", start=start, end=end)
    assert [p["channel"] for p in sources] == [None, None]


def test_category_slices_use_order_items_and_reject_session_metrics() -> None:
    raw = [
        _purchase(
            T0,
            "o1",
            30.0,
            "s1",
            country="DE",
            items=[
                {"product_id": "p1", "category": "shoes", "price": 10.0, "quantity": 2},
                {"product_id": "p2", "category": "hats", "price": 10.0},
                {"product_id": "p5", "category": "shoes", "price": 1.0},
            ],
        ),
        _purchase(T0 + MIN, "o2", 5.0, "s2", country="FR"),  # one shoes item at 5.0
    ]
    frame = load_events(raw)
    window = {"start": T0, "end": T0 + timedelta(hours=1)}
    by_cat = {
        m: {p["category"]: p["value"] for p in metric_series(frame, m, **window, by="category")}
        for m in ("orders", "revenue", "units")
    }
    assert by_cat == {
        "orders": {"hats": 1, "shoes": 2},  # o1 has two shoes items: still one order
        "revenue": {"hats": 10.0, "shoes": 26.0},
        "units": {"hats": 1, "shoes": 4},
    }
    de_shoes = {"country": "DE", "category": "shoes"}
    assert values(metric_series(frame, "revenue", **window, where=de_shoes)) == [21.0]
    assert values(metric_series(frame, "orders", **window, where=de_shoes)) == [1]
    for bad in ("sessions", "conversion_rate", "aov", "traffic_sources"):
        with pytest.raises(ValueError):
            metric_series(frame, bad, **window, by="category")
    with pytest.raises(ValueError):
        metric_series(frame, "traffic_sources", **window, by="country")
    with pytest.raises(ValueError):
        metric_series(frame, "events", **window, by="colour")
    with pytest.raises(ValueError):
        metric_series(frame, "bounces", **window)


# --- funnel ------------------------------------------------------------------------------


def test_funnel_steps_must_happen_in_order_at_or_after_the_previous_step() -> None:
    def at(m: int) -> datetime:
        return T0 + m * MIN

    raw = [
        # s1: every step in order
        ev("product_view", at(0), session_id="s1", country="DE"),
        ev("add_to_cart", at(1), session_id="s1"),
        ev("begin_checkout", at(2), session_id="s1"),
        ev("purchase", at(3), session_id="s1", order_id="o1", revenue=1, currency="EUR"),
        # s2: cart before its view -> reaches step 1 only
        ev("add_to_cart", at(0), session_id="s2", country="FR"),
        ev("product_view", at(1), session_id="s2"),
        # s3: cart at the same ts as the view counts; checkout before the cart does not
        ev("begin_checkout", at(0), session_id="s3", country="DE"),
        ev("product_view", at(1), session_id="s3"),
        ev("add_to_cart", at(1), session_id="s3"),
        # s4: purchase without a view reaches nothing
        ev("purchase", at(2), session_id="s4", order_id="o2", revenue=1, currency="EUR"),
        # s5 starts before the range: not in the funnel even though it continues into it
        ev("product_view", T0 - 5 * MIN, session_id="s5"),
        ev("add_to_cart", at(5), session_id="s5"),
        # s6 starts in the range; its purchase after `end` still counts
        ev("product_view", at(50), session_id="s6", country="DE"),
        ev("add_to_cart", at(51), session_id="s6"),
        ev("begin_checkout", at(52), session_id="s6"),
        ev("purchase", at(70), session_id="s6", order_id="o3", revenue=1, currency="EUR"),
    ]
    frame = load_events(raw)
    steps = funnel(frame, start=T0, end=T0 + timedelta(hours=1))
    # step 1: s1 s2 s3 s6 = 4; step 2: s1 s3 s6 = 3; step 3: s1 s6 = 2; step 4: s1 s6 = 2
    assert [(s["step"], s["sessions"]) for s in steps] == [
        ("product_view", 4),
        ("add_to_cart", 3),
        ("begin_checkout", 2),
        ("purchase", 2),
    ]
    assert [s["conversion_from_previous"] for s in steps] == [1.0, 0.75, pytest.approx(2 / 3), 1.0]
    assert [s["conversion_from_first"] for s in steps] == [1.0, 0.75, 0.5, 0.5]

    fr = funnel(frame, start=T0, end=T0 + timedelta(hours=1), where={"country": "FR"})
    assert [s["sessions"] for s in fr] == [1, 0, 0, 0]
    assert [s["conversion_from_previous"] for s in fr] == [1.0, 0.0, None, None]
    by = funnel(frame, start=T0, end=T0 + timedelta(hours=1), by="country")
    assert [(s["country"], s["sessions"]) for s in by if s["step"] == "purchase"] == [
        ("DE", 2),
        ("FR", 0),
        (None, 0),  # s4 has no country
    ]
    empty = funnel(frame, start=T0 + timedelta(days=1), end=T0 + timedelta(days=2))
    assert [s["sessions"] for s in empty] == [0, 0, 0, 0]
    assert {s["conversion_from_first"] for s in empty} == {None}
    with pytest.raises(ValueError):
        funnel(frame, start=T0, end=T0 + MIN, by="category")


def test_a_duplicate_order_purchase_still_counts_for_the_funnel() -> None:
    raw = [
        ev("product_view", T0, session_id="s1"),
        ev("add_to_cart", T0, session_id="s1"),
        ev("begin_checkout", T0, session_id="s1"),
        _purchase(T0 - MIN, "o1", 10.0, "s0"),  # the order itself, outside the range
        _purchase(T0 + MIN, "o1", 10.0, "s1"),  # duplicate order_id
    ]
    steps = funnel(load_events(raw), start=T0, end=T0 + timedelta(hours=1))
    assert [s["sessions"] for s in steps] == [1, 1, 1, 1]


# --- products ----------------------------------------------------------------------------


def test_top_products_measures_categories_and_ties_by_product_id() -> None:
    def item(pid: str, price: float, qty: int = 1, cat: str | None = None) -> dict[str, Any]:
        return {"product_id": pid, "category": cat, "price": price, "quantity": qty}

    raw = [
        ev("product_view", T0 + 5 * MIN, session_id="a", product_id="p2", category="late"),
        ev("product_view", T0, session_id="a", product_id="p2", category="shoes"),  # first by ts
        ev("product_view", T0, session_id="a", product_id="p2"),
        ev("add_to_cart", T0, session_id="a", product_id="p2", category="shoes"),
        ev("product_view", T0, session_id="a", product_id="p1"),  # no category here
        _purchase(
            T0 + MIN,
            "o1",
            40.0,
            "a",
            items=[item("p1", 10.0, 2, "hats"), item("p2", 20.0), item("p3", 30.0, 1, "hats")],
        ),
        _purchase(T0 + 2 * MIN, "o1", 999.0, "a", items=[item("p1", 999.0)]),  # duplicate
        ev("product_view", T0 - MIN, session_id="z", product_id="p4", category="x"),  # before R
    ]
    frame = load_events(raw)
    window = {"start": T0, "end": T0 + timedelta(hours=1)}
    top = top_products(frame, **window)
    # revenue: p3 30, p1 20, p2 20 -> tie p1 before p2
    assert [p["product_id"] for p in top] == ["p3", "p1", "p2"]
    assert top[1] == {
        "product_id": "p1",
        "category": "hats",
        "views": 1,
        "add_to_carts": 0,
        "units": 2,
        "revenue": 20.0,
        "view_to_purchase_rate": 2.0,
    }
    assert top[2]["category"] == "shoes"
    assert (top[2]["views"], top[2]["add_to_carts"], top[2]["view_to_purchase_rate"]) == (
        3,
        1,
        1 / 3,
    )
    assert top[0]["view_to_purchase_rate"] is None  # p3 has no views
    by_views = top_products(frame, **window, by="views", limit=2)
    assert [p["product_id"] for p in by_views] == ["p2", "p1"]
    by_units = top_products(frame, **window, by="units")
    assert [p["product_id"] for p in by_units] == ["p1", "p2", "p3"]  # 2, then 1 and 1 by id
    hats = top_products(frame, **window, where={"category": "hats"})
    assert [p["product_id"] for p in hats] == ["p3", "p1"]
    with pytest.raises(ValueError):
        top_products(frame, **window, by="margin")


# --- input formats and the OTTO fixture --------------------------------------------------


def test_loads_jsonl_files_bytes_and_both_ts_forms(tmp_path: Path) -> None:
    raw = [
        ev("page_view", T0),
        ev("page_view", T0, ts=ms(T0) + 1),
        ev("page_view", T0, ts="2026-03-02T11:00:00.0029999+01:00"),  # floored to the ms
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in raw) + "\n\n")
    from_file = load_events(path)
    from_bytes = load_events([json.dumps(r).encode() for r in raw])
    assert from_file["ts_ms"].to_list() == [ms(T0), ms(T0) + 1, ms(T0) + 2]
    assert from_file.equals(from_bytes)
    assert from_file["session"].n_unique() == 1


def test_otto_sample_maps_to_contract_events() -> None:
    events = otto_to_events()
    assert len(events) == 862
    assert events[0]["event_id"] == "otto-0-0"
    assert {e["type"] for e in events} == {"product_view", "add_to_cart", "purchase"}
    purchase = next(e for e in events if e["type"] == "purchase")
    assert purchase["order_id"] == f"otto-{purchase['session_id']}-{purchase['ts']}"
    frame = load_events(events)
    start, end = datetime(2022, 7, 1, tzinfo=UTC), datetime(2022, 9, 1, tzinfo=UTC)
    total = {
        m: sum(values(metric_series(frame, m, start=start, end=end, interval="1d")))
        for m in ("events", "pageviews", "orders", "units")
    }
    # 800 clicks; 10 order entries at 5 distinct (session, ts) -> 5 orders of one item each
    assert total == {"events": 862, "pageviews": 800, "orders": 5, "units": 5}
    assert frame["session"].n_unique() == 20
