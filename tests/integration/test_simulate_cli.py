"""`pulse simulate` end to end: deterministic files, zero rejections on replay, to Kafka;
`pulse detect score` on a CSV."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import pytest

from ingest.broker import EmbeddedBroker
from tests.integration.test_cli_commands import run_pulse
from tests.kafka_read import read_topic

pytestmark = pytest.mark.integration

SIM = ["simulate", "--rate", "300", "--duration", "5m", "--seed", "4",
       "--start", "2026-11-20T18:00:00Z", "--incident", "duplicates:at=+1m,for=2m",
       "--incident", "late_events:country=DE,at=+2m,for=1m,delay=2m"]  # fmt: skip


def test_same_seed_same_bytes_and_ground_truth_beside(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert run_pulse(*SIM, "--output", str(a)).returncode == 0
    assert run_pulse(*SIM, "--output", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 10_000
    truth = json.loads((tmp_path / "a.truth.json").read_text())
    assert [i["kind"] for i in truth["incidents"]] == ["duplicates", "late_events"]
    other = run_pulse(*[x if x != "4" else "5" for x in SIM], "--output", str(b))
    assert other.returncode == 0 and a.read_bytes() != b.read_bytes()


def test_simulator_output_replays_with_zero_rejections(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    path = tmp_path / "sim.jsonl"
    assert run_pulse(*SIM, "--output", str(path)).returncode == 0
    lines = sum(1 for _ in path.open())
    env = {
        "PULSE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "PULSE_TOPIC_PREFIX": f"s{uuid.uuid4().hex[:6]}.",
    }
    result = run_pulse("replay", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"accepted={lines} rejected=0"


def test_simulate_to_kafka(broker: EmbeddedBroker, tmp_path: Path) -> None:
    prefix = f"k{uuid.uuid4().hex[:6]}."
    env = {"PULSE_KAFKA_BOOTSTRAP": broker.bootstrap, "PULSE_TOPIC_PREFIX": prefix,
           "PULSE_HOME": str(tmp_path)}  # fmt: skip
    result = run_pulse("simulate", "--rate", "200", "--duration", "2m", "--speed", "max",
                       "--start", "2026-11-20T18:00:00Z", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    accepted = int(result.stdout.split("accepted=")[1].split()[0])
    assert accepted > 1000 and "rejected=0" in result.stdout
    assert len(read_topic(broker.bootstrap, prefix + "user.pageviews")) > 100
    assert list((tmp_path / "simulations").glob("*.truth.json"))


def test_detect_score_writes_a_score_per_row(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    rows = [
        (f"2026-01-01 {i // 60:02d}:{i % 60:02d}:00", 50 + (i % 7) + (400 if i == 250 else 0))
        for i in range(300)
    ]
    with source.open("w", newline="") as fh:
        csv.writer(fh).writerows([("timestamp", "value"), *rows])
    result = run_pulse(
        "detect", "score", "--input", str(source), "--output", str(tmp_path / "o.csv")
    )
    assert result.returncode == 0, result.stderr
    out = list(csv.DictReader((tmp_path / "o.csv").open()))
    assert [r["timestamp"] for r in out] == [r[0] for r in rows]
    scores = [float(r["anomaly_score"]) for r in out]
    assert all(0 <= s <= 1 for s in scores)
    assert max(scores) == scores[250] and scores[250] > 0.5


def test_simulate_segment_to_kafka(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """``--format segment``: the messages go through the Segment API's mapping; each becomes
    one event (logins as ``identify``, crawlers flagged), as many as ``--output`` writes."""
    prefix = f"g{uuid.uuid4().hex[:6]}."
    env = {"PULSE_KAFKA_BOOTSTRAP": broker.bootstrap, "PULSE_TOPIC_PREFIX": prefix,
           "PULSE_HOME": str(tmp_path)}  # fmt: skip
    args = ["simulate", "--format", "segment", "--rate", "100", "--duration", "3m",
            "--speed", "max", "--seed", "3", "--start", "2026-11-20T18:00:00Z"]  # fmt: skip
    result = run_pulse(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert run_pulse(*args, "--output", str(tmp_path / "s.jsonl")).returncode == 0
    messages = [m for line in (tmp_path / "s.jsonl").open() for m in json.loads(line)["batch"]]
    assert result.stdout.strip().splitlines()[-1] == f"accepted={len(messages)} rejected=0"
    general = [json.loads(r.value) for r in read_topic(broker.bootstrap,
                                                       prefix + "user.general_events")]  # fmt: skip
    assert general and {e["type"] for e in general} == {"identify"}
    pages = [json.loads(r.value) for r in read_topic(broker.bootstrap, prefix + "user.pageviews")]
    assert any(p.get("bot") for p in pages) and not any("ip" in p for p in pages)
    assert not read_topic(broker.bootstrap, prefix + "user.events.dlq")
