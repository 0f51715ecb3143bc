"""Exactly once: SIGKILL the flow at random moments of a drain; the warehouse still ends
exactly as the reference says — no loss, no double count."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ingest.topics import Topics, ensure_topics
from tests import reference as ref
from tests.integration.test_flow_parity import assert_same
from tests.pipeline import publish, synthetic_events, utc

pytestmark = pytest.mark.integration

START, END = utc(2026, 10, 24), utc(2026, 10, 26, 6)
CHECKS = [("events", None), ("sessions", "country"), ("orders", None), ("revenue", "device"),
          ("units", "category"), ("bounce_rate", None), ("conversion_rate", "channel"),
          ("visitors", None)]  # fmt: skip


def pulse(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", *args],
        env={**os.environ, "TZ": "UTC", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_at_random_moments_loses_and_doubles_nothing(broker, tmp_path: Path) -> None:
    topics = Topics(prefix=f"x{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, topics, partitions=4)
    drained = publish(broker.bootstrap, topics, synthetic_events(25_000, START, seed=11))
    env = {
        "PULSE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "PULSE_TOPIC_PREFIX": topics.prefix,
        "PULSE_HOME": str(tmp_path),
        "PULSE_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'warehouse'}",
    }
    rng = random.Random(5)
    kills = 0
    for _ in range(4):
        flow = pulse("flow", "--exit-when-idle", "3", env=env)
        time.sleep(rng.uniform(1.0, 3.5))
        if flow.poll() is None:
            flow.send_signal(signal.SIGKILL)
            kills += 1
        flow.wait(30)
    assert kills >= 3, "the flow finished before it could be killed three times"
    final = pulse("flow", "--exit-when-idle", "3", env=env)
    _, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr[-2000:]

    events = ref.load_events(drained.accepted)
    for metric, by in CHECKS:
        args = ["query", metric, "--from", START.isoformat(), "--to", END.isoformat(),
                "--interval", "1h", "--format", "json"]  # fmt: skip
        if by:
            args += ["--by", by]
        q = pulse(*args, env=env)
        stdout, stderr = q.communicate(timeout=120)
        assert q.returncode == 0, stderr
        got = json.loads(stdout)["series"]
        for point in got:
            point.pop("partial", None)
        want = ref.metric_series(events, metric, start=START, end=END, interval="1h", by=by)
        assert_same(got, want, f"after {kills} kills: {metric} by {by}")
