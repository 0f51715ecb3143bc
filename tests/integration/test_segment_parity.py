"""A Segment-format day of simulator traffic (``pulse simulate --format segment``: visits that
browse anonymously and log in, crawlers) through the Segment API's mapping, the collector,
the broker and the real flow gives the same numbers as the polars reference for every
metric; the reference reads the §5 events the messages stand for, not the mapping's output."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from flows.config import FlowConfig
from flows.run import run_flow
from ingest.collector import Collector
from ingest.fx import load_fx_rates
from ingest.producer import ConfluentProducer
from ingest.simulator import SimConfig
from ingest.simulator.publish import publish
from ingest.simulator.segment import iter_segment
from ingest.topics import Topics, ensure_topics
from tests import reference as ref
from tests.integration.test_flow_parity import assert_same
from warehouse.client import connect
from warehouse.metrics import METRICS
from warehouse.migrate import migrate
from warehouse.queries import MetricQuery, funnel, metric_series, top_products

pytestmark = pytest.mark.integration

START = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)  # over Amsterdam's DST change (25 Oct 01:00Z)
END = START + timedelta(days=1)
CONFIG = SimConfig(rate=0.5, duration=END - START, seed=16, start=START)


@pytest.fixture(scope="module")
def day(broker, warehouse_dsn, tmp_path_factory):
    sent = list(iter_segment(CONFIG))
    topics = Topics(prefix=f"s{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, topics, partitions=4)
    producer = ConfluentProducer(broker.bootstrap)
    try:
        result = publish(CONFIG, Collector(producer, topics, load_fx_rates().currencies),
                         producer, speed=None, segment=True)  # fmt: skip
    finally:
        producer.close()
    assert result.accepted == len(sent) and not result.rejected
    database = f"segday_{uuid.uuid4().hex[:8]}"
    client = connect(warehouse_dsn, database)
    migrate(client)
    try:
        config = FlowConfig(broker.bootstrap, topics, warehouse_dsn, database, load_fx_rates(),
                            idle_stop_s=1.5)  # fmt: skip
        run_flow(config, workers=1, recovery_dir=tmp_path_factory.mktemp("segday") / "recovery")
        yield client, ref.load_events([s.event for s in sent]), sent
    finally:
        client.command(f"DROP DATABASE `{database}`")


def test_the_day_has_stitched_visits_and_crawlers(day) -> None:
    client, frame, sent = day
    logins = [s for s in sent if s.event["type"] == "identify"]
    crawlers = {s.event["event_id"] for s in sent if s.event["event_id"].endswith("-bot")}
    assert len(logins) > 50 and len(crawlers) > 10  # the day exercises both
    [(bots,)] = client.query("SELECT uniqExact(event_id) FROM bot_events").result_rows
    assert bots == len(crawlers)
    # the anonymous part of each visit that logged in counts under the user: only visits
    # that never logged in are left under an anonymous id, as in the reference
    stored = {r[0] for r in client.query(
        "SELECT DISTINCT user_id FROM events FINAL WHERE startsWith(user_id, 'anon-')"
    ).result_rows}  # fmt: skip
    expected = {u for u in frame["user_id"].to_list() if u.startswith("anon-")}
    assert stored == expected
    assert not stored & {s.event["anonymous_id"] for s in logins}


CASES = [
    (metric, interval, tz, by)
    for metric in METRICS
    for interval, tz in [("1h", "UTC"), ("1d", "Europe/Amsterdam")]
    for by in (None, "country", "device", "channel")
    if by is None or METRICS[metric].accepts(by)
    if metric != "traffic_sources" or by in (None, "channel")
]


@pytest.mark.parametrize(("metric", "interval", "tz", "by"), CASES)
def test_segment_day_matches_reference(day, metric, interval, tz, by) -> None:
    client, frame, _ = day
    got = metric_series(client, MetricQuery(metric, START, END, interval, by, {}, tz))
    want = ref.metric_series(frame, metric, start=START, end=END, interval=interval, by=by, tz=tz)
    assert_same(got, want, f"segment {metric}/{interval}/{tz}/{by}")


def test_segment_day_funnel_and_products(day) -> None:
    client, frame, _ = day
    for by in (None, "device"):
        assert_same(funnel(client, START, END, by=by),
                    ref.funnel(frame, start=START, end=END, by=by), f"funnel/{by}")  # fmt: skip
    for measure in ("revenue", "views", "units"):
        got = top_products(client, START, END, by=measure, limit=10)
        want = ref.top_products(frame, start=START, end=END, by=measure, limit=10)
        assert_same(got, want, f"top/{measure}")
