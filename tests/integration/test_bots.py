"""CONTRACT §9 bots on the real pipeline: events of known crawlers, bots and monitors are
accepted, counted, stored in ``bot_events`` and left out of every METRICS.md number, for
§5 events and Segment messages alike, and for a record that bypassed the edge."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from prometheus_client import REGISTRY

from flows.config import FlowConfig
from flows.run import run_flow
from ingest.collector import Collector
from ingest.fx import load_fx_rates
from ingest.producer import ConfluentProducer
from ingest.segment import translate
from ingest.topics import Topics, ensure_topics
from tests.pipeline import utc
from warehouse.client import connect
from warehouse.metrics import METRICS
from warehouse.migrate import migrate
from warehouse.queries import MetricQuery, metric_series

pytestmark = pytest.mark.integration

T0 = 1_795_176_000_000  # 2026-11-20T12:00:00Z
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
UPTIME = "UptimeRobot/2.0 (http://www.uptimerobot.com/)"
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


def _pv(i: int, user: str, ua: str | None, **extra: object) -> bytes:
    e = {"event_id": f"e{i}", "type": "page_view", "ts": T0 + i * 1000, "user_id": user}
    if ua:
        e["user_agent"] = ua
    return msgspec.json.encode({**e, **extra})


def _segment(i: int, ua: str) -> bytes:
    message = {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"s{i}",
        "anonymousId": "crawler-anon",
        "timestamp": "2026-11-20T12:00:30Z",
        "context": {"userAgent": ua},
        "properties": {"order_id": f"o{i}", "revenue": 10, "currency": "EUR",
                       "products": [{"product_id": "p", "price": 10}]},
    }  # fmt: skip
    out = translate(message, received_ms=T0 + 60_000)
    assert isinstance(out, bytes)
    return out


def test_bots_are_stored_apart_counted_and_in_no_metric(broker, warehouse_dsn, tmp_path) -> None:
    topics = Topics(prefix=f"bt{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, topics, partitions=4)
    humans = [_pv(0, "alice", BROWSER), _pv(1, "alice", None), _pv(2, "bob", None, device="mobile")]
    bots = [_pv(3, "crawler", GOOGLEBOT), _pv(4, "alice", UPTIME), _segment(5, GOOGLEBOT),
            _pv(6, "carol", BROWSER, bot=True)]  # fmt: skip
    before = REGISTRY.get_sample_value("pulse_bot_events_total", {"source": "test"}) or 0
    producer = ConfluentProducer(broker.bootstrap)
    collector = Collector(producer, topics, load_fx_rates().currencies)
    result = collector.ingest([*humans, *bots], source="test", timeout=30)
    assert result.accepted == len(humans) + len(bots) and not result.rejected
    after = REGISTRY.get_sample_value("pulse_bot_events_total", {"source": "test"})
    assert after == before + len(bots)
    # a producer bypassing the edge: the flow judges the user agent itself
    batch = producer.batch()
    batch.send(topics.for_type("page_view"), b"bypass", _pv(7, "bypass", GOOGLEBOT))
    batch.wait(30)
    producer.close()

    database = f"bt_{uuid.uuid4().hex[:8]}"
    client = connect(warehouse_dsn, database)
    migrate(client)
    try:
        config = FlowConfig(broker.bootstrap, topics, warehouse_dsn, database, load_fx_rates(),
                            idle_stop_s=5)  # fmt: skip
        run_flow(config, workers=1, recovery_dir=tmp_path / "recovery")
        stored = client.query("SELECT event_id, user_agent FROM bot_events FINAL ORDER BY event_id")
        assert [r[0] for r in stored.result_rows] == ["e3", "e4", "e6", "e7", "s5"]
        assert sorted(r[0] for r in client.query("SELECT event_id FROM events").result_rows) == [
            "e0",
            "e1",
            "e2",
        ]
        bot_users = "('crawler', 'bypass', 'crawler-anon')"
        sessions = client.query(f"SELECT count() FROM sessions WHERE user_id IN {bot_users}")
        assert sessions.result_rows[0][0] == 0
        start, end = utc(2026, 11, 20, 0), utc(2026, 11, 21, 0)
        values = {}
        for metric in METRICS:  # raw rows: the rollups are built from the same tables
            series = metric_series(client, MetricQuery(metric, start, end, interval="1d"),
                                   rollups=False)  # fmt: skip
            values[metric] = series[0]["value"] if series else None
        assert values["events"] == values["pageviews"] == 3
        assert values["visitors"] == values["sessions"] == 2
        assert values["orders"] == 0 and values["revenue"] in (0, None)
    finally:
        client.command(f"DROP DATABASE `{database}`")
