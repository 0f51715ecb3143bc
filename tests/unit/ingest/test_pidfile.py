"""Pid files believe a pid only while that very process runs (a pid may be recycled)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ingest import pidfile


def test_a_live_process_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    pidfile.write(path, os.getpid(), "python", address="127.0.0.1:1")
    record = pidfile.read_live(path)
    assert record is not None and record.pid == os.getpid()
    assert record.extra == {"address": "127.0.0.1:1"}


def test_a_recycled_pid_is_not_believed_and_the_file_goes(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    pidfile.write(path, os.getpid(), "python")
    body = json.loads(path.read_text())
    body["started"] -= 1  # the same pid, started at another time: another process
    path.write_text(json.dumps(body))
    assert pidfile.read_live(path) is None
    assert not path.exists()


def test_a_dead_process_or_another_command_is_not_believed(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    path = tmp_path / "dead.pid"
    pidfile.write(path, os.getpid(), "python")
    body = json.loads(path.read_text())
    body["pid"] = int(done.stdout)
    path.write_text(json.dumps(body))
    assert pidfile.read_live(path) is None
    other = tmp_path / "other.pid"
    pidfile.write(other, os.getpid(), "--listener-url")  # this process is no broker
    assert pidfile.read_live(other) is None


def test_terminate_stops_the_recorded_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    path = tmp_path / "p.pid"
    record = pidfile.write(path, proc.pid, "time.sleep")
    assert pidfile.read_live(path) is not None
    assert pidfile.terminate(record, 5.0)
    proc.wait(5)
    assert pidfile.read_live(path) is None
