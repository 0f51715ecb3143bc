"""The real pipeline (collector -> broker -> Bytewax flow -> ClickHouse -> queries) gives
exactly the numbers of the independent polars reference, for every metric, interval,
slice and timezone — including a DST change in Europe/Amsterdam. The flow's clock puts its
first day beyond the week of minute rollups (FlowConfig.minute_rollups): its hours are
rolled up from the raw rows, the rest from minutes."""

from __future__ import annotations

import math
from datetime import UTC, timedelta
from typing import Any

import pytest

from tests import reference as ref
from tests.pipeline import drained_database, synthetic_events, utc
from warehouse.metrics import METRICS
from warehouse.queries import (
    MetricQuery,
    complete_until,
    funnel,
    metric_series,
    top_products,
)
from warehouse.rollups import EVENTS, UNROLLED, first_dirty, first_dirty_of

pytestmark = pytest.mark.integration

START = utc(2026, 10, 24, 0)  # Amsterdam leaves summer time on 2026-10-25 01:00 UTC
END = utc(2026, 10, 26, 6)
KEPT_FROM = utc(2026, 10, 25, 0, 30)  # the flow keeps minute rows from this hour on


@pytest.fixture(scope="module")
def pipeline(broker, warehouse_dsn, tmp_path_factory):
    raws = synthetic_events(600, START, visitors=True)  # stitched visits and bots too
    clock = (KEPT_FROM + timedelta(days=7)).timestamp
    database = drained_database(
        broker.bootstrap, warehouse_dsn, raws, tmp_path_factory, "parity", clock=clock
    )
    with database as (client, drained):
        assert drained.rejected == 1
        events = ref.load_events(drained.accepted)
        yield client, events


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.01)
    return a == b


def assert_same(got: list[dict], want: list[dict], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} rows vs reference {len(want)}"
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys(), what
        for k in w:
            assert close(g[k], w[k]), f"{what}: {k} {g} != reference {w}"


CASES = [
    (metric, interval, tz, by)
    for metric in METRICS
    for interval, tz in [("1h", "UTC"), ("1d", "Europe/Amsterdam"), ("1h", "Europe/Amsterdam")]
    for by in [None, "country", "device", "channel", "category"]
    if (by is None or METRICS[metric].accepts(by))
    and (metric != "traffic_sources" or by in (None, "channel"))
]


@pytest.mark.parametrize(("metric", "interval", "tz", "by"), CASES)
def test_metric_matches_reference(
    pipeline, metric: str, interval: str, tz: str, by: str | None
) -> None:
    client, events = pipeline
    q = MetricQuery(metric, START, END, interval, by, {}, tz)
    got = metric_series(client, q)
    want = ref.metric_series(events, metric, start=START, end=END, interval=interval, by=by, tz=tz)
    assert_same(got, want, f"{metric}/{interval}/{tz}/{by}")


@pytest.mark.parametrize(
    "metric", ["sessions", "conversion_rate", "revenue", "bounce_rate", "units"]
)
def test_one_minute_buckets_and_where_filters(pipeline, metric: str) -> None:
    client, events = pipeline
    where = {"country": "DE", "device": "mobile"}
    for start in (utc(2026, 10, 24, 10), utc(2026, 10, 25, 10)):  # left to hours, rolled up
        end = start + timedelta(hours=3)
        got = metric_series(client, MetricQuery(metric, start, end, "1m", None, where))
        want = ref.metric_series(events, metric, start=start, end=end, interval="1m", where=where)
        assert_same(got, want, f"{metric}/1m/where")


def test_category_where(pipeline) -> None:
    client, events = pipeline
    got = metric_series(
        client, MetricQuery("revenue", START, END, "1d", "country", {"category": "shoes"})
    )
    want = ref.metric_series(events, "revenue", start=START, end=END, interval="1d", by="country",
                             where={"category": "shoes"})  # fmt: skip
    assert_same(got, want, "revenue by country where category")


@pytest.mark.parametrize("by", [None, "device", "country"])
def test_funnel_matches_reference(pipeline, by: str | None) -> None:
    client, events = pipeline
    got = funnel(client, START, END, by=by)
    want = ref.funnel(events, start=START, end=END, by=by)
    assert_same(got, want, f"funnel/{by}")


@pytest.mark.parametrize("measure", ["revenue", "views", "units"])
def test_top_products_match_reference(pipeline, measure: str) -> None:
    client, events = pipeline
    for where in ({}, {"category": "books"}, {"country": "PL"}):
        got = top_products(client, START, END, by=measure, limit=10, where=where)
        want = ref.top_products(events, start=START, end=END, by=measure, limit=10, where=where)
        assert_same(got, want, f"top/{measure}/{where}")


def test_rollups_cover_complete_minutes(pipeline) -> None:
    """The flow kept the rollups current up to complete_until (its watermark minus the
    allowed lateness): only the minutes after it are still answered from raw events, and
    the minutes of the hours before KEPT_FROM, held by their hours."""
    client, _ = pipeline
    until = complete_until(client, timedelta(minutes=10))
    hour = KEPT_FROM.replace(minute=0)
    dirty = first_dirty_of(client, [EVENTS], START, END + timedelta(days=1))
    assert until is not None
    assert dirty[(EVENTS, UNROLLED)] >= until - timedelta(minutes=1), (dirty, until)
    assert dirty[(EVENTS, "1m")] < hour
    assert first_dirty(client, EVENTS, hour, END) >= until - timedelta(minutes=1)  # type: ignore[operator]
    sql = "SELECT countIf(events > 0), min(t) FROM rollup_1m FINAL"
    clean, first = client.query(sql).result_rows[0]
    assert clean > 100 and first.replace(tzinfo=UTC) >= hour
    starts = client.query("SELECT sum(started) FROM starts_1d FINAL WHERE level = 1").result_rows
    assert starts[0][0] > 100


def test_an_hour_is_rolled_up_once_it_is_over(pipeline) -> None:
    """The hour (and day) going on has no coarse row yet: queries take its minutes, which
    are current up to complete_until (the cases below check they equal raw events)."""
    client, _ = pipeline
    until = complete_until(client, timedelta(minutes=10))
    assert until is not None
    hour = until.replace(minute=0, second=0, microsecond=0)
    assert until - hour >= timedelta(minutes=1)  # the data ends well into an hour
    assert first_dirty(client, EVENTS, START, hour, "1h") is None
    assert first_dirty(client, EVENTS, hour, END, "1h") == hour
    day = hour.replace(hour=0)
    assert first_dirty(client, EVENTS, START, day, "1d") is None
    assert first_dirty(client, EVENTS, day, END, "1d") == day
    assert first_dirty(client, EVENTS, KEPT_FROM, until - timedelta(minutes=1)) is None
    sql = "SELECT countIf(t < {h:DateTime}), countIf(t >= {h:DateTime}) FROM rollup_1h FINAL"
    before, going_on = client.query(sql, parameters={"h": hour}).result_rows[0]
    assert before > 0 and going_on == 0


ROLLUP_CASES = [
    # (metric, interval, tz, by, where): every rollup level, both tables, odd timezones
    ("events", "1h", "UTC", None, {}),
    ("visitors", "1d", "Europe/Amsterdam", "country", {}),
    ("sessions", "5m", "Asia/Kolkata", "device", {}),
    ("conversion_rate", "1h", "UTC", "channel", {"channel": "email"}),
    ("revenue", "1h", "Europe/Amsterdam", "device", {"country": "DE"}),
    ("bounce_rate", "1d", "UTC", None, {"device": "mobile", "channel": "search"}),
    ("avg_session_duration_s", "1m", "UTC", "country", {}),
    ("revenue_per_visitor", "1h", "Asia/Kathmandu", None, {"country": "FR"}),
    ("units", "1d", "Europe/Amsterdam", "channel", {}),
    # one rollup row per bucket: the stored final distinct counts answer
    ("visitors", "1d", "UTC", "country", {}),
    ("conversion_rate", "1h", "UTC", None, {}),
    ("sessions", "1m", "UTC", None, {"country": "DE"}),
    ("add_to_cart_rate", "1d", "UTC", "device", {"device": "mobile"}),
]


@pytest.mark.parametrize("start", [START, KEPT_FROM.replace(minute=0)])
@pytest.mark.parametrize(("metric", "interval", "tz", "by", "where"), ROLLUP_CASES)
def test_rollups_answer_like_raw_events(pipeline, metric, interval, tz, by, where, start) -> None:
    client, _ = pipeline
    q = MetricQuery(metric, start, END, interval, by, where, tz)
    assert_same(metric_series(client, q), metric_series(client, q, rollups=False), str(q))
