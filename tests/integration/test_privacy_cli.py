"""Erasure as an operator runs it (CONTRACT §4, §7, §11), with pseudonymised ids: `pulse up`
answers DELETE /v1/users/{id} (admin scope only) and every metric follows; `pulse users
forget` says to ask the API while `up` holds the warehouse, and erases on its own (rows and
the flow's saved state) once it has stopped."""

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

from ingest.privacy import Pseudonymizer
from tests.conftest import free_port

pytestmark = pytest.mark.integration

PULSE = [sys.executable, "-m", "api.cli"]


def _total(env: dict[str, str], now: int) -> int:
    query = [*PULSE, "query", "events", "--interval", "1d",
             "--from", time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(now / 1000 - 86400)),
             "--to", time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(now / 1000 + 86400)),
             "--format", "json"]  # fmt: skip
    done = subprocess.run(query, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(sum(p["value"] for p in json.loads(done.stdout)["series"]))


def _until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_erasure_through_up_and_the_cli(broker, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ, "TZ": "UTC", "PULSE_HOME": str(tmp_path), "PULSE_API_PORT": str(port),
        "PULSE_KAFKA_BOOTSTRAP": broker.bootstrap, "PULSE_PSEUDONYMIZE": "true",
        "PULSE_TOPIC_PREFIX": f"e{uuid.uuid4().hex[:6]}.",
    }  # fmt: skip
    up = subprocess.Popen([*PULSE, "up"], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    now = int(time.time() * 1000)
    try:
        _until(lambda: up.poll() is None and _ready(base), 60)
        keys = {}
        for scope in ("ingest", "admin"):
            create = [*PULSE, "keys", "create", "--scope", scope, "--name", f"k-{scope}"]
            made = subprocess.run(create, env=env, capture_output=True, text=True)
            keys[scope] = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
        events = [{"event_id": f"e{i}", "type": "page_view", "ts": now - i, "user_id": f"u{i % 9}"}
                  for i in range(300)]  # fmt: skip
        r = httpx.post(f"{base}/v1/events", json=events, headers=keys["ingest"])
        assert r.json() == {"accepted": 300, "rejected": []}
        _until(lambda: _total(env, now) == 300)

        assert httpx.delete(f"{base}/v1/users/u3").status_code == 401
        denied = httpx.delete(f"{base}/v1/users/u3", headers=keys["ingest"])
        assert denied.status_code == 403 and denied.json()["error"]["code"]
        answer = httpx.delete(f"{base}/v1/users/u3", headers=keys["admin"], timeout=60)
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        assert doc["erased"]["events"] == 33 and doc["flow_acknowledged"] is True
        assert "u3" not in answer.text
        _until(lambda: _total(env, now) == 300 - 33)
        again = httpx.delete(f"{base}/v1/users/u3", headers=keys["admin"], timeout=60).json()
        assert again["erased"]["events"] == 0 and again["id_hash"] == doc["id_hash"]

        busy = subprocess.run([*PULSE, "users", "forget", "u4", "--yes"], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert busy.returncode == 1 and "DELETE /v1/users" in busy.stderr
        assert len(busy.stderr.strip().splitlines()) == 1
    finally:
        up.send_signal(signal.SIGINT)
        _, stderr = up.communicate(timeout=60)
    assert up.returncode == 0, stderr[-3000:]

    # stopped: the CLI erases alone, the flow's saved state included
    done = subprocess.run([*PULSE, "users", "forget", "u4", "u5", "--yes"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [d["erased"]["events"] for d in lines] == [33, 33]
    assert "u4" not in done.stdout and "u5" not in done.stdout
    pseudonym = Pseudonymizer(bytes.fromhex((tmp_path / "pseudonymize.key").read_text()))
    state = list((tmp_path / "recovery" / "state").glob("shard-*"))
    assert state, "the flow saved its users' states"
    blobs = b"".join(p.read_bytes() for p in state)
    assert pseudonym("u6").encode() in blobs  # the check can fail: others are there
    for user in ("u3", "u4", "u5"):
        assert pseudonym(user).encode() not in blobs, user
    assert _total(env, now) == 300 - 33 - 33 - 33


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
