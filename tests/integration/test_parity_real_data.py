"""Parity on realistic data through the real pipeline: the OTTO clickstream sample (real
shopping sessions, CC BY 4.0 OTTO GmbH & Co KG) and simulator traffic with late and
duplicated events across the Europe/Amsterdam DST change, every metric and interval."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from ingest.simulator import SimConfig, iter_events, parse_incident
from tests import reference as ref
from tests.integration.test_flow_parity import assert_same
from tests.pipeline import run_pipeline
from warehouse.client import connect
from warehouse.metrics import METRICS
from warehouse.migrate import migrate
from warehouse.queries import MetricQuery, funnel, metric_series, top_products

pytestmark = pytest.mark.integration


def _load(broker, warehouse_dsn, tmp_path_factory, raws):
    database = f"real_{uuid.uuid4().hex[:8]}"
    client = connect(warehouse_dsn, database)
    migrate(client)
    drained = run_pipeline(
        broker.bootstrap, warehouse_dsn, database, raws, tmp_path_factory.mktemp("f")
    )
    return client, ref.load_events(drained.accepted), drained


@pytest.fixture(scope="module")
def otto(broker, warehouse_dsn, tmp_path_factory):
    events = ref.otto_to_events()
    raws = [msgspec.json.encode(e) for e in events]
    client, frame, drained = _load(broker, warehouse_dsn, tmp_path_factory, raws)
    assert drained.rejected == 0
    stamps = [e["ts"] for e in events]
    start = datetime.fromtimestamp(min(stamps) / 1000, UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    end = datetime.fromtimestamp(max(stamps) / 1000, UTC) + timedelta(days=1)
    return client, frame, start, end


@pytest.mark.parametrize("metric", list(METRICS))
def test_otto_every_metric_daily(otto, metric: str) -> None:
    client, frame, start, end = otto
    got = metric_series(client, MetricQuery(metric, start, end, "1d"))
    want = ref.metric_series(frame, metric, start=start, end=end, interval="1d")
    assert_same(got, want, f"otto {metric}")


def test_otto_funnel_and_products(otto) -> None:
    client, frame, start, end = otto
    assert_same(funnel(client, start, end), ref.funnel(frame, start=start, end=end), "otto funnel")
    for by in ("views", "units"):
        got = top_products(client, start, end, by=by, limit=20)
        assert_same(
            got, ref.top_products(frame, start=start, end=end, by=by, limit=20), f"otto top {by}"
        )


SIM_START = datetime(
    2026, 10, 24, 23, 0, tzinfo=UTC
)  # Amsterdam: 25 Oct 03:00 CEST -> 02:00 CET at 01:00Z


@pytest.fixture(scope="module")
def simulated(broker, warehouse_dsn, tmp_path_factory):
    config = SimConfig(
        rate=25, duration=timedelta(hours=4), seed=21, start=SIM_START,
        incidents=(
            parse_incident("late_events:country=DE,at=+60m,for=60m,delay=7m"),
            parse_incident("duplicates:at=+90m,for=60m,depth=0.2"),
            parse_incident("conversion_drop:device=mobile,at=+150m,for=30m,depth=0.6"),
        ),
    )  # fmt: skip
    raws = [line for _, line in iter_events(config)]
    client, frame, drained = _load(broker, warehouse_dsn, tmp_path_factory, raws)
    assert drained.rejected == 0
    return client, frame


SIM_CASES = [
    (metric, interval, tz, by)
    for metric in METRICS
    for interval, tz in [("1h", "Europe/Amsterdam"), ("1d", "Europe/Amsterdam"), ("5m", "UTC")]
    for by in (None, "country", "device")
    if by is None or METRICS[metric].accepts(by)
    if metric != "traffic_sources" or by is None
]


@pytest.mark.parametrize(("metric", "interval", "tz", "by"), SIM_CASES)
def test_simulated_traffic_matches_reference(simulated, metric, interval, tz, by) -> None:
    client, frame = simulated
    start, end = SIM_START, SIM_START + timedelta(hours=4)
    got = metric_series(client, MetricQuery(metric, start, end, interval, by, {}, tz))
    want = ref.metric_series(frame, metric, start=start, end=end, interval=interval, by=by, tz=tz)
    assert_same(got, want, f"sim {metric}/{interval}/{tz}/{by}")


@pytest.mark.parametrize("metric", ["sessions", "orders", "revenue", "conversion_rate", "units"])
def test_simulated_one_minute_by_channel_and_category(simulated, metric: str) -> None:
    client, frame = simulated
    start, end = SIM_START + timedelta(hours=2), SIM_START + timedelta(hours=3)
    by = "category" if METRICS[metric].accepts("category") else "channel"
    got = metric_series(client, MetricQuery(metric, start, end, "1m", by))
    want = ref.metric_series(frame, metric, start=start, end=end, interval="1m", by=by)
    assert_same(got, want, f"sim {metric}/1m/{by}")


def test_simulated_funnel_by_device(simulated) -> None:
    client, frame = simulated
    start, end = SIM_START, SIM_START + timedelta(hours=4)
    assert_same(funnel(client, start, end, by="device"),
                ref.funnel(frame, start=start, end=end, by="device"), "sim funnel")  # fmt: skip
