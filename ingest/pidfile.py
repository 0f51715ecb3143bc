"""Pid files that recognise their process: a pid alone may have been recycled.

A record holds the pid, the process's start time as the kernel counts it (clock ticks
since boot, ``/proc/PID/stat``), a word its command line must contain, and whatever the
owner wants to add (an address). :func:`read_live` returns the record only while that very
process runs; a stale file is removed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["PidRecord", "alive", "read_live", "remove_if_mine", "terminate", "write"]


@dataclass(frozen=True)
class PidRecord:
    """Who runs: pid, kernel start time, a word of its command line, extra fields."""

    pid: int
    started: int | None  # clock ticks since boot (None where /proc is not available)
    marker: str
    since: str = ""  # wall-clock start, for people
    extra: dict[str, Any] = field(default_factory=dict)


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ")"
    return raw[raw.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None  # field 22 of stat, 20th after the name


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, which has exited, does not)."""
    fields = _stat(pid)
    if fields is not None:
        return fields[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def write(path: Path, pid: int, marker: str, **extra: Any) -> PidRecord:
    """Record ``pid`` (which must be running) in ``path``, atomically."""
    record = PidRecord(pid, _start_ticks(pid), marker,
                       datetime.now(UTC).isoformat(timespec="seconds"), extra)  # fmt: skip
    body = {"pid": record.pid, "started": record.started, "marker": marker,
            "since": record.since, **extra}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(body) + "\n")
    tmp.replace(path)
    return record


def _is(record: PidRecord) -> bool:
    if not alive(record.pid):
        return False
    if record.started is not None and _start_ticks(record.pid) not in (None, record.started):
        return False  # the pid now belongs to another process
    cmdline = _cmdline(record.pid)
    # empty for an instant after exec: then the start time alone decides
    return not cmdline or record.marker in cmdline


def read_live(path: Path) -> PidRecord | None:
    """The record in ``path`` if its process still runs; a stale file is removed."""
    try:
        body = json.loads(path.read_text())
        record = PidRecord(
            int(body.pop("pid")), body.pop("started", None), str(body.pop("marker", "")),
            str(body.pop("since", "")), body,
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _is(record):
        return record
    remove_if_mine(path, record.pid)
    return None


def remove_if_mine(path: Path, pid: int) -> None:
    """Remove ``path`` if it still names ``pid`` (another process may have replaced it)."""
    try:
        if int(json.loads(path.read_text())["pid"]) == pid:
            path.unlink()
    except (OSError, ValueError, KeyError, TypeError):
        pass


def terminate(record: PidRecord, timeout: float, *, kill_after: bool = True) -> bool:
    """SIGTERM the recorded process and wait up to ``timeout`` s for it to end; then SIGKILL
    it if ``kill_after``. Returns whether it ended."""
    if not _is(record):
        return True
    try:
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(record.pid):
            return True
        time.sleep(0.05)
    if not kill_after:
        return False
    try:
        os.kill(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while alive(record.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(record.pid)
