"""`pulse up` as a user runs it: one process with flow + API; events posted over HTTP show
up in `pulse query` (answered through the running API, since `up` holds the embedded
warehouse); Ctrl-C stops everything cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration


def test_up_ingests_queries_and_stops_cleanly(broker, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ, "TZ": "UTC", "PULSE_HOME": str(tmp_path), "PULSE_API_PORT": str(port),
        "PULSE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "PULSE_TOPIC_PREFIX": f"u{uuid.uuid4().hex[:6]}.",
    }  # fmt: skip
    up = subprocess.Popen([sys.executable, "-m", "api.cli", "up"], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert up.poll() is None, up.communicate()[1][-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "pulse up did not become ready in 60 s"
            time.sleep(0.3)
        create = [sys.executable, "-m", "api.cli", "keys", "create", "--scope", "ingest"]
        made = subprocess.run(create, env=env, capture_output=True, text=True)
        key = made.stdout.strip().splitlines()[-1]
        now = int(time.time() * 1000)
        events = [{"event_id": f"e{i}", "type": "page_view", "ts": now - i, "user_id": f"u{i % 9}"}
                  for i in range(300)]  # fmt: skip
        r = httpx.post(f"{base}/v1/events", json=events, headers={"Authorization": f"Bearer {key}"})
        assert r.json() == {"accepted": 300, "rejected": []}

        query = [sys.executable, "-m", "api.cli", "query", "events", "--interval", "1d",
                 "--from", time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(now / 1000 - 86400)),
                 "--to", time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(now / 1000 + 86400)),
                 "--format", "json"]  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            done = subprocess.run(query, env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            doc = json.loads(done.stdout)
            if sum(p["value"] for p in doc["series"]) == 300:
                break
            assert time.monotonic() < deadline, doc
            time.sleep(0.5)
        assert doc["complete_until"] is not None
        assert "pulse_consumer_lag" in httpx.get(f"{base}/metrics/").text
    finally:
        up.send_signal(signal.SIGINT)
        _, stderr = up.communicate(timeout=60)
    assert up.returncode == 0, stderr[-3000:]
    assert "Pulse is up on" in stderr and "Pulse stopped." in stderr
