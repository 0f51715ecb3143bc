"""The demo's incident through the real pipeline: the first insight says where and why.

``pulse demo`` back-fills three hours of flat traffic (`insights.demo.demo_market`) and
then injects its mobile payment outage (`insights.demo.DEMO_INCIDENT`: 90 % of mobile
would-be buyers lose their checkout). Here the same simulation — at 30 events/s to keep
the test short — goes simulator -> collector -> broker -> flow -> chDB, and detection
passes (`insights.runner.run_once`) run as the live detector would, one per minute of the
outage. The first insight raised must come within 5 minutes of the start, name
``device=mobile`` as the slice that carries the change (not ``channel=direct``, which
holds most mobile sessions), give a payment/checkout cause and advise checking the
payment provider and the checkout; the API serves the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from ingest.simulator import iter_events
from insights.demo import DEMO_INCIDENT, demo_simulation
from insights.runner import DetectConfig, run_once
from tests.conftest import free_port
from tests.pipeline import detection_until, drained_database
from tests.servers import serve_in_thread
from warehouse.client import Client

pytestmark = pytest.mark.integration

NOW = datetime(2025, 1, 7, 9, 30, tzinfo=UTC)  # when the demo starts its live traffic
SIM = demo_simulation(NOW, rate=30, live=timedelta(minutes=12))
OUTAGE_AT = NOW + timedelta(minutes=1)  # DEMO_INCIDENT: at=+1m


@pytest.fixture(scope="module")
def pipeline(
    broker: Any, warehouse_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    raws = [line for _, line in iter_events(SIM)]
    database = drained_database(broker.bootstrap, warehouse_dsn, raws, tmp_path_factory, "demo")
    with database as (client, drained):
        assert drained.rejected == 0
        yield client


def _config(client: Client, until: datetime) -> DetectConfig:
    return detection_until(client, until, timedelta(minutes=30), experiments_every=None)


def test_the_demo_outage_is_raised_on_mobile_as_a_payment_problem(
    pipeline: Client, tmp_path: Path
) -> None:
    assert "device=mobile" in DEMO_INCIDENT
    state = None
    first = None
    # a pass per minute, as the live detector polls, until something is raised
    for minute in range(1, 8):
        at = OUTAGE_AT + timedelta(minutes=minute)
        report, state = run_once(pipeline, _config(pipeline, at), now=at, state=state)
        raised = [i for i in report.changed if i.started_at >= OUTAGE_AT - timedelta(minutes=10)]
        if raised:
            first = min(raised, key=lambda i: i.detected_at)
            break
    assert first is not None, "the outage was not raised within 7 minutes"
    assert first.detected_at - OUTAGE_AT <= timedelta(minutes=5)
    assert first.slice == "device=mobile", first.description
    assert first.cause == "checkout", first.description
    assert first.contributors and first.contributors[0].label == "device=mobile"
    assert "payment or checkout" in first.explanation.lower(), first.explanation
    assert "payment provider" in first.recommendation and "mobile" in first.recommendation
    assert "per minute" in first.description and "expected" in first.description

    keys = KeyStore(tmp_path / "keys.json")
    read = {"Authorization": f"Bearer {keys.create('read')}"}
    port = free_port()
    server, thread = serve_in_thread(create_app(Services(keys=keys, warehouse=pipeline)), port)
    try:
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/insights", headers=read).json()
        doc = next(i for i in listed["insights"] if i["id"] == first.id)
        assert doc["slice"] == "device=mobile" and doc["cause"] == "checkout"
        assert doc["contributors"][0]["slice"] == "device=mobile"
        assert doc["explanation"] and doc["recommendation"] == first.recommendation
    finally:
        server.should_exit = True
        thread.join(10)
