"""Scale-out: one worker, two worker threads, and two processes (`pulse flow --processes 2`:
Bytewax's own runner with -i/-a) drain the same topics into separate warehouses and give
identical answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ingest.topics import Topics, ensure_topics
from tests import reference as ref
from tests.integration.test_flow_parity import assert_same
from tests.pipeline import publish, synthetic_events, utc

pytestmark = pytest.mark.integration

START, END = utc(2026, 10, 24), utc(2026, 10, 26, 6)
METRICS = [
    ("events", None), ("sessions", "device"), ("revenue", "country"),
    ("units", "category"), ("bounce_rate", "channel"), ("conversion_rate", None),
]  # fmt: skip


def _env(bootstrap: str, prefix: str, home: Path) -> dict[str, str]:
    return {**os.environ, "TZ": "UTC", "PULSE_KAFKA_BOOTSTRAP": bootstrap,
            "PULSE_TOPIC_PREFIX": prefix, "PULSE_HOME": str(home),
            "PULSE_CLICKHOUSE_DSN": f"chdb://{home / 'warehouse'}",
            "PULSE_FLOW_EXIT_WHEN_IDLE": "3"}  # fmt: skip


def _answers(env: dict[str, str]) -> dict[tuple[str, str | None], list[dict]]:
    out = {}
    for metric, by in METRICS:
        args = [sys.executable, "-m", "api.cli", "query", metric, "--from", START.isoformat(),
                "--to", END.isoformat(), "--interval", "1h", "--format", "json"]  # fmt: skip
        done = subprocess.run([*args, *(["--by", by] if by else [])], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        series = json.loads(done.stdout)["series"]
        for point in series:
            point.pop("partial", None)
        out[(metric, by)] = series
    return out


def test_workers_and_processes_give_identical_answers(broker, tmp_path: Path) -> None:
    topics = Topics(prefix=f"w{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, topics, partitions=4)
    drained = publish(broker.bootstrap, topics, synthetic_events(3000, START, seed=3))
    runner = [sys.executable, "-m", "bytewax.run", "api.runtime:get_flow()"]

    one = _env(broker.bootstrap, topics.prefix, tmp_path / "one")
    cli = [sys.executable, "-m", "api.cli", "flow", "--exit-when-idle", "3"]
    # the default picks the processes from the cores it may run on: one per two (on one
    # core here, so one process whatever the machine)
    done = subprocess.run(["taskset", "-c", "0", *cli], env=one, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "with 1 process (one per two cores, 1 here;" in done.stderr

    threads = _env(broker.bootstrap, topics.prefix, tmp_path / "threads")
    done = subprocess.run(
        [*runner, "-w", "2"], env=threads, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]

    # two processes of Bytewax's runner (-i/-a), as `pulse flow --processes 2` starts them
    procs = _env(broker.bootstrap, topics.prefix, tmp_path / "procs")
    done = subprocess.run([*cli, "--processes", "2"], env=procs, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "with 2 processes" in done.stderr
    assert (tmp_path / "procs" / "recovery" / "state").is_dir()  # as one process keeps it

    events = ref.load_events(drained.accepted)
    answers = [_answers(one), _answers(threads), _answers(procs)]
    for metric, by in answers[0]:
        want = ref.metric_series(events, metric, start=START, end=END, interval="1h", by=by)
        for name, other in zip(["1 worker", "2 threads", "2 processes"], answers, strict=True):
            assert_same(other[(metric, by)], want, f"{name}: {metric} by {by}")
    assert answers[0] == answers[1] == answers[2]
