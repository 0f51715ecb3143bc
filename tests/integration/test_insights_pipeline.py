"""Insights on real pipeline output: simulator -> collector -> broker -> flow -> ClickHouse.

Three and a half hours of simulated afternoon traffic (~450K events) with a payment outage
on mobile (``conversion_drop``, 90% of would-be buyers, 10 minutes) go through the real
pipeline. Then:

* the backtest's series (`insights.simseries`) equal the warehouse's METRICS.md answers;
* detection passes over the warehouse (`insights.runner.run_once`), with ``complete_until``
  held back to just after the outage began, raise one insight within 5 minutes of the
  start, attribute it to ``device=mobile`` as a rate change with a payment/checkout cause,
  recommend checking the payment provider and the checkout, and alert nobody twice; once
  every bucket is complete it resolves itself;
* the API lists it, acknowledges (admin scope), refuses to act on a resolved insight,
  takes a false-positive label that a later run honours, and serves ``/v1/realtime``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from api.routes import insights as insights_routes
from api.routes import realtime as realtime_routes
from ingest.simulator import SimConfig, iter_events, parse_incident
from insights.runner import DetectConfig, run_once
from insights.simseries import simulate_counts
from insights.store import InsightStore
from tests.conftest import free_port
from tests.pipeline import detection_until, drained_database
from tests.servers import serve_in_thread
from warehouse.client import Client
from warehouse.queries import MetricQuery, metric_series

pytestmark = pytest.mark.integration

START = datetime(2025, 1, 6, 11, tzinfo=UTC)  # a Monday afternoon: flat traffic
OUTAGE = parse_incident("conversion_drop:device=mobile,at=+3h,for=10m,depth=0.9")
OUTAGE_AT = START + timedelta(hours=3)
SIM = SimConfig(
    rate=30, duration=timedelta(hours=3, minutes=35), seed=3, start=START, incidents=(OUTAGE,)
)


@pytest.fixture(scope="module")
def pipeline(
    broker: Any, warehouse_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    raws = [line for _, line in iter_events(SIM)]
    database = drained_database(broker.bootstrap, warehouse_dsn, raws, tmp_path_factory, "ins")
    with database as (client, drained):
        assert drained.rejected == 0
        yield client


def _config(client: Client, until: datetime) -> DetectConfig:
    return detection_until(client, until, timedelta(hours=1))


def _close(a: float | None, b: float | None, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=tol)


def test_backtest_series_equal_the_warehouse(pipeline: Client) -> None:
    counts = simulate_counts(SIM, ("1m",))["1m"]
    for metric, tol in [("sessions", 0), ("orders", 0), ("revenue", 0.011),
                        ("conversion_rate", 1e-12), ("aov", 0.011)]:  # fmt: skip
        for sl in [(), (("device", "mobile"),), (("country", "DE"),), (("channel", "paid"),)]:
            q = MetricQuery(metric, SIM.start, SIM.end, "1m", where=dict(sl), tz="UTC")
            got = [p["value"] for p in metric_series(pipeline, q)]
            want, _ = counts.metric(metric, counts.slices.index(sl))
            assert len(got) == len(want)
            for i, (g, w) in enumerate(zip(got, want.tolist(), strict=True)):
                w = None if w != w else w
                assert _close(g, w, tol), f"{metric}{sl} bucket {i}: warehouse {g} != sim {w}"


def _serve(client: Client, tmp: Path) -> tuple[str, dict[str, str], Any, Any]:
    keys = KeyStore(tmp / "keys.json")
    tokens = {scope: keys.create(scope) for scope in ("read", "admin")}
    app = create_app(Services(keys=keys, warehouse=client))
    paths = {getattr(r, "path", "") for r in app.routes}
    if "/v1/insights" not in paths:  # until api/app.py includes the routers
        app.include_router(insights_routes.router)
        app.include_router(realtime_routes.router)
    port = free_port()
    server, thread = serve_in_thread(app, port)
    return f"http://127.0.0.1:{port}", tokens, server, thread


def test_insight_lifecycle_on_pipeline_output(pipeline: Client, tmp_path: Path) -> None:
    store = InsightStore(pipeline)
    # pass 1: the buckets up to six minutes into the outage are complete
    report, state = run_once(pipeline, _config(pipeline, OUTAGE_AT + timedelta(minutes=6)),
                             now=OUTAGE_AT + timedelta(minutes=6))  # fmt: skip
    raised = [i for i in report.changed if i.started_at >= OUTAGE_AT - timedelta(minutes=10)]
    assert len(raised) == 1, [i.summary for i in report.changed]
    insight = raised[0]
    assert insight.detected_at - OUTAGE_AT <= timedelta(minutes=5)
    assert insight.status == "open" and insight.direction == "down"
    assert "device=mobile" in insight.slice, insight.summary
    assert insight.metric in ("conversion_rate", "orders", "revenue")
    assert insight.cause == "checkout", insight.description
    assert "a rate change inside device=mobile" in insight.explanation.lower(), insight.explanation
    assert insight.change < -0.5
    assert "mobile" in insight.recommendation
    assert "payment" in insight.recommendation and "checkout" in insight.recommendation
    assert insight.severity in ("critical", "warning")
    assert {m.metric for m in insight.members} >= {"orders"}
    assert store.get(insight.id) == insight  # stored in ClickHouse as raised

    url, tokens, server, thread = _serve(pipeline, tmp_path)
    try:
        read = {"Authorization": f"Bearer {tokens['read']}"}
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        listed = httpx.get(f"{url}/v1/insights", params={"status": "open"}, headers=read).json()
        assert [i["id"] for i in listed["insights"]] == [insight.id]
        doc = listed["insights"][0]
        assert doc["contributors"][0]["slice"] == "device=mobile"
        assert doc["related"] and doc["recommendation"] == insight.recommendation
        assert httpx.post(f"{url}/v1/insights/{insight.id}/ack", headers=read).status_code == 403
        acked = httpx.post(f"{url}/v1/insights/{insight.id}/ack", headers=admin)
        assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"

        live = httpx.get(f"{url}/v1/realtime", params={"window": "1h"}, headers=read).json()
        assert 0 < live["conversion_rate"] < 0.05 and live["revenue_per_visitor"] > 0
        assert {s["channel"] for s in live["traffic_sources"]} >= {"paid", "organic"}
        assert len(live["top_products"]) == 5 and live["engagement"]["pages_per_session"] > 1
        assert [a["id"] for a in live["open_anomalies"]] == [insight.id]
        assert live["recommendations"] == [insight.recommendation]

        # pass 2: every bucket complete; the acknowledgement holds until it resolves itself
        report, state = run_once(pipeline, _config(pipeline, SIM.end), now=SIM.end, state=state)
        final = store.get(insight.id)
        assert final is not None
        assert final.status == "resolved" and final.resolved_by == "auto", final.members
        assert final.acknowledged_at is not None
        assert not [i for i in report.changed if i.id != insight.id and i.active]

        again = httpx.post(f"{url}/v1/insights/{insight.id}/resolve", headers=admin)
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
        missing = httpx.post(f"{url}/v1/insights/ffff/ack", headers=admin)
        assert missing.status_code == 404
        label = httpx.post(
            f"{url}/v1/insights/{insight.id}/feedback", headers=admin,
            json={"label": "false_positive", "note": "planned payment maintenance"},
        )  # fmt: skip
        assert label.status_code == 200
        assert label.json()["feedback"] == {
            "label": "false_positive",
            "note": "planned payment maintenance",
        }
        bad = httpx.post(f"{url}/v1/insights/{insight.id}/feedback", headers=admin,
                         json={"label": "maybe"})  # fmt: skip
        assert bad.status_code == 400 and "label" in bad.json()["error"]["message"]
    finally:
        server.should_exit = True
        thread.join(10)

    # a later run honours the label: the same outage, seen afresh, is not raised again
    fresh = replace(_config(pipeline, SIM.end), live_horizon=timedelta(hours=2))
    report, state = run_once(pipeline, fresh, now=SIM.end)
    assert state.book.muted >= 1
    assert not [i for i in report.changed if i.started_at >= OUTAGE_AT - timedelta(minutes=10)]
