"""Alerts reach on-call through the real Debian Alertmanager (CONTRACT §8).

Alertmanager runs on a free loopback port, routing every alert to a webhook receiver this
test serves. Pulse's notifier writes each notification to the ClickHouse outbox and
delivers it: while Alertmanager is down nothing is lost (the row waits), once it is up the
firing alert arrives with its labels and annotations, is re-sent while open, and after
the insight resolves the resolved notification arrives. The plain webhook gets the same
events and is retried until it answers 2xx. Resolving by hand through the API
(``POST /v1/insights/{id}/resolve``) ends the alert: the detector loop's next pass takes
the resolution in and its notifier sends the alert with ``endsAt``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from insights.alerts import AlertConfig, Notifier
from insights.lifecycle import Insight, Member
from insights.runner import DetectConfig, DetectorLoop
from insights.store import InsightStore
from tests.conftest import free_port, require
from tests.servers import serve_in_thread
from warehouse.client import connect

pytestmark = pytest.mark.integration

BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


class Receiver:
    """A webhook receiver: records JSON bodies; can fail the first ``fail`` requests."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[Any] = []
        self.fail = fail
        self.port = free_port()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.fail > 0:
                    receiver.fail -= 1
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.bodies):
                if predicate(body):
                    return body
            time.sleep(0.1)
        raise AssertionError(f"no matching notification within {timeout}s: {self.bodies}")

    def close(self) -> None:
        self.server.shutdown()


class Alertmanager:
    """The Debian binary on a free port, clustering off, routing to ``receiver_url``."""

    def __init__(self, tmp: Path, receiver_url: str) -> None:
        self.port = free_port()
        self.tmp = tmp
        config = tmp / "alertmanager.yml"
        config.write_text(
            "route:\n"
            "  receiver: test\n"
            "  group_by: [alertname, metric, slice]\n"
            "  group_wait: 1s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: test\n"
            "    webhook_configs:\n"
            f"      - url: {receiver_url}\n"
            "        send_resolved: true\n"
        )
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.tmp / "alertmanager.log").open("ab")
        self.proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={self.config}",
                f"--storage.path={self.tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError((self.tmp / "alertmanager.log").read_text())
            time.sleep(0.1)
        raise RuntimeError("alertmanager did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    am_hook, plain = Receiver(), Receiver(fail=1)
    yield am_hook, plain
    am_hook.close()
    plain.close()


@pytest.fixture
def alertmanager(tmp_path: Path, receivers: tuple[Receiver, Receiver]) -> Iterator[Alertmanager]:
    require(Path(BINARY).exists(), "prometheus-alertmanager (Debian package)")
    am = Alertmanager(tmp_path, receivers[0].url)
    yield am
    am.stop()


def _insight(now: datetime) -> Insight:
    member = Member("conversion_rate", "country=DE,device=mobile", "1m", now - timedelta(
        minutes=6), now - timedelta(minutes=2), 0.7, 0.021, 0.044, -0.52)  # fmt: skip
    return Insight(
        id="0123456789abcdef", status="open", metric="conversion_rate",
        slice="country=DE,device=mobile", interval="1m", direction="down", change=-0.52,
        observed=0.021, expected=0.044, started_at=now - timedelta(minutes=6),
        detected_at=now - timedelta(minutes=2), updated_at=now, severity="critical",
        impact_eur_per_hour=-1840.0, members=(member,),
        summary="Conversion in DE on mobile fell 52% since 14:05 (EUR 1,840 per hour).",
        description="Conversion in DE on mobile: 2.10% observed vs 4.40% expected.",
        recommendation="Conversion in DE on mobile fell 52% since 14:05 while add-to-cart "
        "is normal: check payment and checkout for DE mobile.",
    )  # fmt: skip


def _alerts(body: dict[str, Any], status: str) -> list[dict[str, Any]]:
    return [a for a in body.get("alerts", []) if a["status"] == status]


def test_alert_survives_an_outage_fires_and_resolves(
    warehouse: Any, alertmanager: Alertmanager, receivers: tuple[Receiver, Receiver]
) -> None:
    am_hook, plain = receivers
    store = InsightStore(warehouse)
    now = datetime.now(UTC).replace(microsecond=0)
    insight = store.save([_insight(now)])[0]
    config = AlertConfig(
        alertmanager_url=alertmanager.url, webhook_url=plain.url,
        public_url="http://pulse.example:8000", resend_every=timedelta(seconds=1),
    )  # fmt: skip
    notifier = Notifier(warehouse, config)

    # Alertmanager is down and the plain webhook fails once: nothing is lost
    assert notifier.enqueue([insight], now) == 2
    down = notifier.deliver([insight], now)
    assert down.failed == {"alertmanager": 1, "webhook": 1} and down.pending == 2

    # Alertmanager comes up; the retries (after the back-off) deliver both
    alertmanager.start()
    later = now + timedelta(seconds=30)
    up = notifier.deliver([insight], later)
    assert up.sent == {"alertmanager": 1, "webhook": 1} and up.pending == 0
    firing = am_hook.wait_for(lambda b: _alerts(b, "firing"))
    alert = _alerts(firing, "firing")[0]
    assert alert["labels"]["alertname"] == "PulseAnomaly"
    assert alert["labels"]["metric"] == "conversion_rate"
    assert alert["labels"]["slice"] == "country=DE,device=mobile"
    assert alert["labels"]["severity"] == "critical"
    notes = alert["annotations"]
    assert notes["summary"].startswith("Conversion in DE on mobile fell 52%")
    assert "2.10% observed vs 4.40% expected" in notes["description"]
    assert "check payment and checkout for DE mobile" in notes["description"]
    assert notes["insight_url"] == "http://pulse.example:8000/v1/insights/0123456789abcdef"
    assert notes["dashboard_url"].startswith("http://pulse.example:8000/")
    assert plain.wait_for(lambda b: b["event"] == "firing")["insight"]["id"] == insight.id

    # re-sent while open: Alertmanager sees the alert updated again
    def updated_at() -> str:
        shown = httpx.get(f"{alertmanager.url}/api/v2/alerts", timeout=5).json()
        return str(shown[0]["updatedAt"])

    first = updated_at()
    time.sleep(1.1)
    again = notifier.deliver([insight], later + timedelta(seconds=2))
    assert again.sent == {"alertmanager": 1}
    assert updated_at() != first

    # resolved: endsAt goes out and the resolved notification arrives
    resolved_at = datetime.now(UTC)
    resolved = replace(
        insight, status="resolved", resolved_at=resolved_at, resolved_by="auto",
        updated_at=resolved_at,
    )  # fmt: skip
    store.save([resolved])
    assert notifier.enqueue([resolved], resolved_at) == 2
    done = notifier.deliver([], resolved_at)
    assert done.sent == {"alertmanager": 1, "webhook": 1} and done.pending == 0
    gone = am_hook.wait_for(lambda b: _alerts(b, "resolved"))
    assert _alerts(gone, "resolved")[0]["labels"]["slice"] == "country=DE,device=mobile"
    assert plain.wait_for(lambda b: b["event"] == "resolved")["insight"]["status"] == "resolved"
    # a resolved insight is not re-sent
    assert notifier.deliver([], resolved_at + timedelta(minutes=5)).sent == {}


def test_resolving_through_the_api_ends_the_alert(
    warehouse: Any,
    warehouse_dsn: str,
    alertmanager: Alertmanager,
    receivers: tuple[Receiver, Receiver],
    tmp_path: Path,
) -> None:
    am_hook, _ = receivers
    alertmanager.start()
    now = datetime.now(UTC).replace(microsecond=0)
    insight = InsightStore(warehouse).save([_insight(now)])[0]

    # the detector loop, as `pulse up` runs it: its notifier keeps the open insight firing
    config = DetectConfig(
        poll_every_s=0.5,
        alerts=AlertConfig(alertmanager_url=alertmanager.url,
                           public_url="http://pulse.example:8000",
                           resend_every=timedelta(seconds=1)),
    )  # fmt: skip
    database = warehouse.database
    loop = DetectorLoop(lambda: connect(warehouse_dsn, database), config).start()
    keys = KeyStore(tmp_path / "keys.json")
    admin = {"Authorization": f"Bearer {keys.create('admin')}"}
    port = free_port()
    server, thread = serve_in_thread(create_app(Services(keys=keys, warehouse=warehouse)), port)
    try:
        firing = am_hook.wait_for(lambda b: _alerts(b, "firing"))
        assert _alerts(firing, "firing")[0]["labels"]["insight_id"] == insight.id

        # a person resolves it through the API
        r = httpx.post(f"http://127.0.0.1:{port}/v1/insights/{insight.id}/resolve", headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "resolved" and r.json()["resolved_by"] == "user"

        # the alert ends: Alertmanager sends the resolved notification, endsAt set
        gone = am_hook.wait_for(lambda b: _alerts(b, "resolved"))
        ended = _alerts(gone, "resolved")[0]
        assert ended["labels"]["insight_id"] == insight.id
        ends_at = datetime.fromisoformat(ended["endsAt"].replace("Z", "+00:00"))
        assert now <= ends_at <= datetime.now(UTC)
        assert loop.error is None and loop.passes >= 2
        # later passes do not make it fire again
        time.sleep(1.5)
        shown = httpx.get(f"{alertmanager.url}/api/v2/alerts", timeout=5).json()
        mine = [a for a in shown if a["labels"].get("insight_id") == insight.id]
        assert not [a for a in mine if a["status"]["state"] == "active"], mine
    finally:
        loop.stop()
        server.should_exit = True
        thread.join(10)


def test_an_outage_while_the_alert_is_open_loses_neither_re_sends_nor_the_resolve(
    warehouse: Any, alertmanager: Alertmanager, receivers: tuple[Receiver, Receiver]
) -> None:
    """CONTRACT §12: Alertmanager unreachable for a while after an alert fired: the
    re-sends are tried at every pass, the resolve made during the outage waits in the
    outbox (with back-off) and both get through once Alertmanager is back."""
    am_hook, _ = receivers
    store = InsightStore(warehouse)
    now = datetime.now(UTC).replace(microsecond=0)
    insight = store.save([_insight(now)])[0]
    config = AlertConfig(alertmanager_url=alertmanager.url, resend_every=timedelta(seconds=1))
    notifier = Notifier(warehouse, config)
    alertmanager.start()
    notifier.enqueue([insight], now)
    assert notifier.deliver([insight], now).sent == {"alertmanager": 1}
    am_hook.wait_for(lambda b: _alerts(b, "firing"))

    alertmanager.stop()
    for s in (2, 4):  # re-sends fail while it is down, and are tried again
        assert notifier.deliver([insight], now + timedelta(seconds=s)).failed == {"alertmanager": 1}
    resolved_at = now + timedelta(seconds=5)
    resolved = replace(insight, status="resolved", resolved_at=resolved_at,
                       resolved_by="auto", updated_at=resolved_at)  # fmt: skip
    store.save([resolved])
    assert notifier.enqueue([resolved], resolved_at) == 1
    down = notifier.deliver([], resolved_at)
    assert down.failed == {"alertmanager": 1} and down.pending == 1

    alertmanager.start()
    back = notifier.deliver([], resolved_at + timedelta(seconds=2))  # with the next re-send
    assert back.sent == {"alertmanager": 1} and back.pending == 0
    gone = am_hook.wait_for(lambda b: _alerts(b, "resolved"))
    assert _alerts(gone, "resolved")[0]["labels"]["metric"] == "conversion_rate"
