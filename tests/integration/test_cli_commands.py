"""Broker, topics, warehouse migrations and the CLI, against the real components."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.broker import EmbeddedBroker
from ingest.topics import Topics, ensure_topics
from tests.conftest import free_port
from tests.kafka_read import read_topic
from warehouse.client import Client
from warehouse.migrate import applied_versions, load_migrations, migrate

pytestmark = pytest.mark.integration

PULSE = [sys.executable, "-m", "api.cli"]


def run_pulse(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TZ": "UTC", **(env or {})}
    return subprocess.run(
        [*PULSE, *args], capture_output=True, text=True, env=full_env, timeout=120, **kw
    )


def test_topic_creation_is_idempotent(broker: EmbeddedBroker) -> None:
    topics = Topics(prefix="idem.")
    first = ensure_topics(broker.bootstrap, topics, partitions=2)
    assert (
        sorted(first) == sorted(topics.all) and len(first) == 9
    )  # the 7 of docs/events.md, dead letters, erasures
    assert ensure_topics(broker.bootstrap, topics, partitions=2) == []


def test_migrations_apply_once_and_are_recorded(warehouse: Client) -> None:
    expected = {m.version for m in load_migrations()}
    assert applied_versions(warehouse) == expected  # the fixture migrated
    assert migrate(warehouse) == []
    tables = {r[0] for r in warehouse.query("SHOW TABLES").result_rows}
    assert {"schema_migrations", "fx_rates"} <= tables


def test_embedded_broker_refuses_a_busy_port(broker: EmbeddedBroker) -> None:
    from ingest.errors import BrokerError

    with pytest.raises(BrokerError, match="already in use"):
        EmbeddedBroker(broker.bootstrap).start()


def test_every_command_answers_help() -> None:
    commands = [
        "up",
        "demo",
        "simulate",
        "replay",
        "broker",
        "flow",
        "detect",
        "detect score",
        "serve",
        "stop",
        "migrate",
        "query",
        "dashboards export",
        "dashboards provision",
        "keys create",
        "keys list",
        "keys revoke",
    ]
    top = run_pulse("--help")
    assert top.returncode == 0
    for command in commands:
        result = run_pulse(*command.split(), "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage" in result.stdout


def test_keys_create_prints_the_key_last_and_stores_it_hashed(tmp_path: Path) -> None:
    result = run_pulse("keys", "create", "--scope", "read", env={"PULSE_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("pulse_") and len(key) > 30
    assert key not in (tmp_path / "keys.json").read_text()
    bad = run_pulse("keys", "create", "--scope", "root", env={"PULSE_HOME": str(tmp_path)})
    assert bad.returncode != 0 and "scope" in bad.stderr


def test_bad_setting_stops_with_one_line(tmp_path: Path) -> None:
    result = run_pulse(
        "migrate", env={"PULSE_HOME": str(tmp_path), "PULSE_TIMEZONE": "Nowhere/Land"}
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "PULSE_TIMEZONE" in result.stderr


def test_migrate_command_is_idempotent(tmp_path: Path) -> None:
    env = {"PULSE_HOME": str(tmp_path)}
    first = run_pulse("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 001_fx_rates" in first.stdout
    second = run_pulse("migrate", env=env)
    assert second.returncode == 0 and "0 applied now" in second.stdout


def test_replay_validates_and_routes_like_the_collector(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    lines = [
        json.dumps(
            {"event_id": f"e{i}", "type": "page_view", "ts": 1795176000000 + i, "user_id": f"u{i}"}
        )
        for i in range(50)
    ]
    lines.insert(10, '{"event_id": "x", "type": "page_view"}')
    lines.insert(20, "not json at all")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    prefix = f"r{free_port()}."
    env = {
        "PULSE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "PULSE_TOPIC_PREFIX": prefix,
        "PULSE_HOME": str(tmp_path),
    }
    result = run_pulse("replay", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "accepted=50 rejected=2"
    assert len(read_topic(broker.bootstrap, prefix + "user.pageviews")) == 50
    dead = read_topic(broker.bootstrap, prefix + "user.events.dlq")
    assert sorted(r.value for r in dead) == sorted(
        [b'{"event_id": "x", "type": "page_view"}', b"not json at all"]
    )


def test_replay_without_a_broker_says_how_to_start_one(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("{}\n")
    result = run_pulse(
        "replay", str(path), env={"PULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    )
    assert result.returncode == 1
    assert "no Kafka broker answers" in result.stderr


def test_detect_once_on_an_empty_warehouse(tmp_path: Path) -> None:
    result = run_pulse("detect", "--once", env={"PULSE_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "0 open" in result.stderr


def test_broker_command_stops_on_sigterm(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "TZ": "UTC", "PULSE_HOME": str(tmp_path)}
    with subprocess.Popen(
        [*PULSE, "broker", "--listen", address], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as running:  # fmt: skip
        try:
            assert running.stdout is not None
            assert "listening on" in running.stdout.readline()  # topics created: it waits
            running.send_signal(signal.SIGTERM)
            out, err = running.communicate(timeout=30)  # it hung here for ever (a deadlock)
        finally:
            running.kill()
    assert running.returncode == 0, err
    assert "stopping broker" in out
    host, _, port = address.rpartition(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()  # the broker stopped


@pytest.mark.parametrize(
    "command",
    [
        ["migrate"],
        ["query", "events", "--from", "2026-11-24T00:00Z", "--to", "2026-11-25T00:00Z"],
        ["detect", "--once"],
    ],
    ids=lambda c: c[0],
)
def test_commands_that_run_no_flow_leave_its_state_alone(tmp_path: Path, command) -> None:
    # a new warehouse beside earlier flow state: only a command running the flow starts
    # that state afresh (a flow elsewhere may be using it)
    state = tmp_path / "recovery" / "part-0.sqlite3"
    state.parent.mkdir()
    state.write_bytes(b"")
    result = run_pulse(*command, env={"PULSE_HOME": str(tmp_path)})
    if command[0] == "query":  # a query creates no warehouse: it says there is none
        assert result.returncode == 1 and "no warehouse at" in result.stderr, result.stderr
        assert not (tmp_path / "warehouse").exists()
    else:
        assert result.returncode == 0, result.stderr
    assert state.exists()
    assert "is new (missing or empty)" not in result.stderr
