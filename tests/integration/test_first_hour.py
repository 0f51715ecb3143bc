"""What a newcomer meets in the first hour (issue #20): one clear line for every mistake,
the same whether a stack runs or not; ports checked before "Pulse is up"; a query on a
PULSE_HOME where nothing ran says so; an event of an unknown type is said in the answer;
`--where` values that match nothing are warned about; tables show rounded numbers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.cli.query import render, where_warnings
from tests.conftest import free_port

pytestmark = pytest.mark.integration

PULSE = [sys.executable, "-m", "api.cli"]
RANGE = ["--from", "2026-11-24T00:00Z", "--to", "2026-11-25T00:00Z"]


def run_pulse(*args: str, home: Path, cwd: Path | None = None, **env: str):
    full = {**os.environ, "TZ": "UTC", "PULSE_HOME": str(home), **env}
    return subprocess.run([*PULSE, *args], capture_output=True, text=True, env=full,
                          timeout=120, cwd=cwd)  # fmt: skip


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Error:" not in lines[0] and "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["query", "orders", "--from", "2026-11-25T00:00Z", "--to", "2026-11-24T00:00Z"],
         "to: must be after from"),
        (["query", "orders", *RANGE, "--tz", "Mars/Olympus"],
         "tz: unknown timezone 'Mars/Olympus'; use an IANA name like UTC"),
        (["query", "orders", "--from", "yesterday", "--to", "2026-11-25T00:00Z"],
         "from: expected an ISO 8601 time"),
        (["query", "orderz", *RANGE], "metric: unknown metric 'orderz'"),
        (["query", "orders", *RANGE, "--by", "colour"], "by: unknown dimension 'colour'"),
        (["query", "orders"], "Missing option '--from'. (see `pulse query --help`)"),
        (["keys", "create", "--scope", "write"], "--scope: expected one of ingest, read, admin"),
    ],
)  # fmt: skip
def test_a_mistake_is_one_line_naming_it_and_what_is_expected(
    tmp_path: Path, args: list[str], says: str
) -> None:
    assert says in one_line(run_pulse(*args, home=tmp_path))


def test_a_query_on_a_home_where_nothing_ran_says_so_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere" / ".pulse"
    line = one_line(run_pulse("query", "orders", *RANGE, home=home))
    assert f"no warehouse at {home}/warehouse" in line
    assert not home.exists()


def test_the_home_is_absolute_in_what_pulse_says(tmp_path: Path) -> None:
    made = run_pulse("keys", "create", "--scope", "read", home=Path(".pulse"), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert f"stored hashed in {tmp_path}/.pulse/keys.json" in made.stderr
    assert made.stderr.startswith(f"note: PULSE_HOME={tmp_path}/.pulse is new")
    assert "created a read key, id " in made.stderr
    again = run_pulse("keys", "create", "--scope", "admin", home=Path(".pulse"), cwd=tmp_path)
    assert again.stderr.startswith("created an admin key, id ")
    assert (tmp_path / ".pulse" / "keys.json").exists()


def test_a_busy_port_stops_up_before_it_says_it_is_up(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_pulse("up", home=tmp_path, PULSE_API_PORT=str(port),
                           PULSE_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")  # fmt: skip
    line = one_line(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "PULSE_API_PORT" in line
    assert "Pulse is up" not in result.stdout + result.stderr
    assert time.monotonic() - started < 30  # refused before anything started


def test_an_unknown_event_type_is_accepted_and_said_in_the_answer(api) -> None:
    events = [
        {"event_id": "k1", "type": "page_view", "ts": int(time.time() * 1000), "user_id": "u"},
        {"event_id": "k2", "type": "pageveiw", "ts": int(time.time() * 1000), "user_id": "u"},
    ]
    r = httpx.post(f"{api.url}/v1/events", json=events, headers=api.auth("ingest"))
    body = r.json()
    assert r.status_code == 200 and body["accepted"] == 2 and body["rejected"] == []
    assert [(g["index"], g["type"]) for g in body["general"]] == [(1, "pageveiw")]
    assert "not a known event type" in body["general"][0]["note"]
    known = httpx.post(f"{api.url}/v1/events", json=events[:1], headers=api.auth("ingest"))
    assert known.json() == {"accepted": 1, "rejected": []}  # the documented answer, unchanged


def test_where_values_that_match_nothing_are_warned_about() -> None:
    empty = {"series": [{"ts": "2026-11-24T00:00:00Z", "value": 0}]}
    some = {"series": [{"ts": "2026-11-24T00:00:00Z", "value": 3}]}
    assert (
        "device is one of desktop, mobile, tablet" in where_warnings({"device": "phone"}, some)[0]
    )
    assert "ISO 3166-1 alpha-2" in where_warnings({"country": "germany"}, some)[0]
    assert "no events with country=XX" in where_warnings({"country": "XX"}, empty)[0]
    assert where_warnings({"country": "DE"}, some) == []
    assert where_warnings({}, empty) == []


def test_tables_round_floats_and_json_keeps_them(capsys) -> None:
    import io

    from rich.console import Console

    doc = {"metric": "conversion_rate", "interval": "1h", "tz": "UTC", "complete_until": None,
           "series": [{"ts": "2026-11-24T00:00:00Z", "value": 0.0632946961714085},
                      {"ts": "2026-11-24T01:00:00Z", "value": 1234.5678}]}  # fmt: skip
    console = Console(record=True, width=120, file=io.StringIO())
    render(doc, "table", console)
    text = console.export_text()
    assert "0.0633" in text and "1,234.57" in text and "0.06329469" not in text
    render(doc, "json", console)
    assert json.loads(capsys.readouterr().out)["series"][0]["value"] == 0.0632946961714085


def test_simulate_to_a_file_never_writes_the_future_and_says_where_the_truth_goes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "new" / "traffic.jsonl"
    made = run_pulse("simulate", "--rate", "5", "--duration", "10m", "--output", str(out),
                     home=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert f"ground truth: {tmp_path}/new/traffic.truth.json" in made.stderr
    assert (tmp_path / "new" / "traffic.truth.json").exists()
    newest = max(json.loads(line)["ts"] for line in out.read_text().splitlines())
    assert newest <= time.time() * 1000
    ahead = run_pulse("simulate", "--rate", "1", "--duration", "1h", "--output", str(out),
                      "--start", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      home=tmp_path)  # fmt: skip
    assert ahead.returncode == 0 and "in the future" in ahead.stderr
    helped = run_pulse("simulate", "--help", home=tmp_path, COLUMNS="200")
    assert "traffic.truth.json" in helped.stdout and "<bool>" not in helped.stdout
