"""PULSE_RETENTION (CONTRACT §11) with a settable clock: raw events, sessions and duplicates
older than the horizon go, the rollups' counts stay (every metric of an old range the
rollups answer equals the reference over everything that was sent), and a late event from
before the horizon changes no rollup and is dropped by the flow's own pass."""

from __future__ import annotations

import uuid
from datetime import timedelta

import msgspec
import pytest

from flows.config import FlowConfig
from flows.run import run_flow
from ingest.fx import load_fx_rates
from tests import reference as ref
from tests.pipeline import publish, run_pipeline, synthetic_events, utc
from warehouse.client import connect
from warehouse.migrate import migrate
from warehouse.queries import MetricQuery, metric_series
from warehouse.retention import purge

pytestmark = pytest.mark.integration

START = utc(2026, 10, 24, 0)
END = utc(2026, 10, 26, 6)
NOW = utc(2026, 10, 27, 6)  # the settable clock: 2 days of retention reach back to 10-25 06:00
RETENTION = timedelta(days=2)
HORIZON = utc(2026, 10, 25, 6)
KEPT = ("events", "pageviews", "visitors", "sessions", "orders", "revenue", "units",
        "conversion_rate", "revenue_per_visitor")  # fmt: skip


def _raw_before(client, horizon) -> list[int]:
    return [
        client.query(f"SELECT count() FROM {t} WHERE {c} < {{h:DateTime64(3)}}",
                     parameters={"h": horizon}).result_rows[0][0]
        for t, c in (("events", "ts"), ("sessions", "end"), ("duplicates", "ts"))
    ]  # fmt: skip


def test_retention_drops_raw_rows_and_keeps_rollup_counts(broker, warehouse_dsn, tmp_path):
    database = f"rt_{uuid.uuid4().hex[:8]}"
    client = connect(warehouse_dsn, database)
    migrate(client)
    try:
        raws = synthetic_events(400, START)
        drained = run_pipeline(broker.bootstrap, warehouse_dsn, database, raws, tmp_path / "a")
        events = ref.load_events(drained.accepted)
        assert all(n > 0 for n in _raw_before(client, HORIZON))

        purged = purge(client, RETENTION, NOW)
        assert purged.horizon == HORIZON and purged.rows["events"] > 0
        assert _raw_before(client, HORIZON) == [0, 0, 0]
        assert client.query("SELECT count() FROM events").result_rows[0][0] > 0  # the rest
        _old_ranges_answer_like_the_reference(client, events)

        # a late event from before the horizon, and the flow's own pass on the same clock
        late = {
            "event_id": "late-old",
            "type": "purchase",
            "user_id": "late-user",
            "ts": int((START + timedelta(hours=5)).timestamp() * 1000),
            "order_id": "ol",
            "revenue": 100,
            "currency": "EUR",
            "items": [{"product_id": "p", "price": 100}],
        }
        fresh = {"event_id": "late-new", "type": "page_view", "user_id": "late-user",
                 "ts": int((END - timedelta(hours=1)).timestamp() * 1000)}  # fmt: skip
        topics = drained_topics = _topics(broker)
        publish(broker.bootstrap, drained_topics, [msgspec.json.encode(late),
                                                   msgspec.json.encode(fresh)])  # fmt: skip
        config = FlowConfig(broker.bootstrap, topics, warehouse_dsn, database, load_fx_rates(),
                            idle_stop_s=1.5, retention=RETENTION, clock=NOW.timestamp,
                            rollup_every_s=0.0)  # fmt: skip
        run_flow(config, workers=1, recovery_dir=tmp_path / "b")
        ids = {r[0] for r in client.query("SELECT event_id FROM events FINAL").result_rows}
        assert "late-new" in ids and "late-old" not in ids
        assert _raw_before(client, HORIZON) == [0, 0, 0]
        # the old rollups did not take the late event: they are the record
        _old_ranges_answer_like_the_reference(client, events)
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{database}`")


def _topics(broker):
    from ingest.topics import Topics, ensure_topics

    topics = Topics(prefix=f"rt{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, topics, partitions=4)
    return topics


def _old_ranges_answer_like_the_reference(client, events) -> None:
    for metric in KEPT:
        for interval, by in (("1h", None), ("1d", None), ("1d", "country"), ("1h", "device")):
            q = MetricQuery(metric, START, HORIZON, interval, by, {})
            want = ref.metric_series(events, metric, start=START, end=HORIZON,
                                     interval=interval, by=by)  # fmt: skip
            got = metric_series(client, q)
            assert len(got) == len(want), (metric, interval, by)
            for g, w in zip(got, want, strict=True):
                for k, v in w.items():
                    if isinstance(v, float):
                        assert g[k] == pytest.approx(v, abs=0.01), (metric, interval, by, g, w)
                    else:
                        assert g[k] == v, (metric, interval, by, g, w)


def test_an_idle_flow_drops_what_the_clock_ages_out(broker, warehouse_dsn, tmp_path):
    """The pass runs with the flow idle: only the (settable) clock moves."""
    import time

    from flows.run import FlowThread

    database = f"ri_{uuid.uuid4().hex[:8]}"
    client = connect(warehouse_dsn, database)
    migrate(client)
    topics = _topics(broker)
    now = [START.timestamp()]
    config = FlowConfig(broker.bootstrap, topics, warehouse_dsn, database, load_fx_rates(),
                        retention=timedelta(hours=1), retention_every_s=60.0,
                        clock=lambda: now[0], idle_tick_s=0.2)  # fmt: skip
    flow = FlowThread(config, recovery_dir=tmp_path / "r").start()
    try:
        raws = [msgspec.json.encode({"event_id": f"i{i}", "type": "page_view", "user_id": "u",
                                     "ts": int(START.timestamp() * 1000) + i * 60_000})
                for i in range(30)]  # fmt: skip
        publish(broker.bootstrap, topics, raws)

        def rows() -> int:
            return client.query("SELECT count() FROM events").result_rows[0][0]

        deadline = time.monotonic() + 60
        while rows() < 30:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        now[0] += 2 * 3600  # two hours later: everything is older than the retention
        deadline = time.monotonic() + 60
        while rows() > 0:
            assert time.monotonic() < deadline, "the idle flow dropped nothing"
            time.sleep(0.2)
        kept = client.query("SELECT sum(events) FROM rollup_1h FINAL WHERE level = 1")
        assert kept.result_rows[0][0] == 30  # the day is not over: its hours have them
        q = MetricQuery("events", START, START + timedelta(days=1), "1d", None, {})
        assert [p["value"] for p in metric_series(client, q)] == [30]
        q = MetricQuery("visitors", START, START + timedelta(hours=2), "1h", None, {})
        assert [p["value"] for p in metric_series(client, q)] == [1, 0]
    finally:
        flow.stop(30)
        client.command(f"DROP DATABASE IF EXISTS `{database}`")
