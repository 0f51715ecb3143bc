"""`pulse up` under faults (CONTRACT §12), as a user runs it: its own PULSE_HOME, the
embedded broker on a free port, events posted over HTTP; acknowledged events are compared
with the warehouse by event_id.

- kill -9 of `pulse up` while events arrive, then a new `pulse up`: the broker outlived
  it and is reattached, the flow resumes from its recovery state: every acknowledged
  event is in the warehouse exactly once;
- kill -9 of the embedded broker, an empty one started on the same address: the
  collector recovers by itself, the flow reads the new topics from their start, what was
  lost is counted (and equals what was acknowledged but not stored);
- `pulse stop` stops a running stack, and a broker left by a crash after draining it;
- the warehouse directory deleted under a running stack: 503s with a reason, not ready,
  SIGTERM stops it, the next start says so and re-reads what the broker holds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from ingest import pidfile
from ingest.broker import EmbeddedBroker
from ingest.topics import Topics
from tests.conftest import free_port
from tests.pipeline import publish

pytestmark = pytest.mark.integration


class Home:
    """One PULSE_HOME with `pulse up` on free ports (the API, the embedded broker)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.api_port, self.broker_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.bootstrap = f"127.0.0.1:{self.broker_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        self.env = {**env, "TZ": "UTC", "PULSE_HOME": str(path),
                    "PULSE_API_PORT": str(self.api_port), "PULSE_BROKER_LISTEN": self.bootstrap,
                    "PULSE_STOP_TIMEOUT": "30s"}  # fmt: skip
        self.procs: list[subprocess.Popen[str]] = []
        self._logs = 0

    def pulse(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "api.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def up(self) -> subprocess.Popen[str]:
        """Start `pulse up` and wait until it is ready."""
        self._logs += 1
        log = (self.path.parent / f"{self.path.name}-up{self._logs}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", "up"], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        proc.log = Path(log.name)  # type: ignore[attr-defined]
        self.procs.append(proc)
        _wait(lambda: self.ready(proc)[0] == 200, "pulse up did not become ready", 90)
        return proc

    def ready(self, proc: subprocess.Popen[str] | None = None) -> tuple[int, dict[str, str]]:
        if proc is not None:
            assert proc.poll() is None, output(proc)
        try:
            r = httpx.get(f"{self.url}/readyz", timeout=10)
        except httpx.HTTPError:
            return 0, {}
        return r.status_code, r.json()["checks"]

    def key(self, scope: str) -> str:
        made = self.pulse("keys", "create", "--scope", scope)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip().splitlines()[-1]

    def count(self) -> int:
        """Events in the warehouse, as the API answers (a read key `up` leaves)."""
        key = (self.path / "cli-read.key").read_text().strip()
        day = 86400
        now = time.time()
        params = {"from": _iso(now - day), "to": _iso(now + day), "interval": "1d"}
        r = httpx.get(f"{self.url}/v1/metrics/events", params=params,
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
        assert r.status_code == 200, r.text
        return int(sum(p["value"] or 0 for p in r.json()["series"]))

    def stored(self) -> dict[str, int]:
        """event_id -> rows (FINAL) in the warehouse; the stack must be stopped."""
        code = (
            "import json, sys; from warehouse.client import connect;"
            "c = connect(sys.argv[1]);"
            "rows = c.query('SELECT event_id, count() FROM events FINAL GROUP BY event_id');"
            "print(json.dumps(dict(rows.result_rows)))"
        )
        dsn = f"chdb://{self.path / 'warehouse'}"
        done = subprocess.run([sys.executable, "-c", code, dsn], env=self.env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def broker_pid(self) -> int | None:
        """The pid of the Tansu listening on this home's address (found by its command
        line, not by Pulse's pid file), or None."""
        wanted = f"tcp://{self.bootstrap}".encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and pidfile.alive(int(entry.name)):
                try:
                    if wanted in (entry / "cmdline").read_bytes():
                        return int(entry.name)
                except OSError:
                    continue
        return None

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        record = pidfile.read_live(self.path / "broker.pid")
        if record is not None:
            pidfile.terminate(record, 5)


def output(proc: subprocess.Popen[str]) -> str:
    return Path(proc.log).read_text()[-4000:]  # type: ignore[attr-defined]


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path / "home")
    yield h
    h.cleanup()


def _batch(prefix: str, n: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [{"event_id": f"{prefix}-{i}", "type": "page_view", "ts": now, "user_id": f"u{i % 50}"}
            for i in range(n)]  # fmt: skip


def _post(home: Home, key: str, events: list[dict[str, Any]], timeout: float = 20) -> int:
    r = httpx.post(f"{home.url}/v1/events", json=events,
                   headers={"Authorization": f"Bearer {key}"}, timeout=timeout)  # fmt: skip
    if r.status_code == 200:
        assert r.json()["accepted"] == len(events)
    else:  # never a bare 500: a JSON reason
        assert r.json()["error"]["code"] == "broker_unavailable", r.text
    return r.status_code


class Poster(threading.Thread):
    """Posts ``rate`` events/s in batches of 50; keeps the ids of acknowledged events."""

    def __init__(self, home: Home, key: str, rate: float = 500.0) -> None:
        super().__init__(daemon=True)
        self.home, self.key, self.every = home, key, 50 / rate
        self.acked: set[str] = set()
        self.stop = threading.Event()
        self.prefix = uuid.uuid4().hex[:6]

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            began = time.monotonic()
            events = _batch(f"{self.prefix}{n}", 50)
            n += 1
            try:
                if _post(self.home, self.key, events, timeout=10) == 200:
                    self.acked |= {e["event_id"] for e in events}
            except httpx.HTTPError:
                pass  # not acknowledged (the process died, or restarts)
            self.stop.wait(max(0.0, self.every - (time.monotonic() - began)))


def _exactly_once(home: Home, acked: set[str]) -> dict[str, int]:
    stored = home.stored()
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged events are not in the warehouse"
    assert set(stored.values()) == {1}
    return stored


def _stop(home: Home, proc: subprocess.Popen[str]) -> None:
    done = home.pulse("stop")
    assert done.returncode == 0, done.stderr
    assert "stopped `pulse up`" in done.stderr
    assert proc.wait(10) == 0, output(proc)
    assert "Pulse stopped." in output(proc)


def test_kill_9_of_pulse_up_loses_nothing_acknowledged(home: Home) -> None:
    up = home.up()
    key = home.key("ingest")
    poster = Poster(home, key)
    poster.start()
    _wait(lambda: len(poster.acked) >= 1500, "events were not acknowledged")
    up.kill()  # SIGKILL while events arrive at ~500/s
    up.wait()
    assert home.broker_pid() is not None, "the embedded broker died with pulse up"
    before = len(poster.acked)
    up = home.up()
    assert "reattached to the embedded broker" in output(up)
    _wait(lambda: len(poster.acked) >= before + 500, "no events acknowledged after restart")
    poster.stop.set()
    poster.join()
    _wait(lambda: home.count() >= len(poster.acked), "acknowledged events did not arrive")
    _stop(home, up)
    stored = _exactly_once(home, poster.acked)
    assert home.count  # the count the API gave covered every stored event once
    assert not (home.path / "pulse.pid").exists() and not (home.path / "broker.pid").exists()
    assert len(stored) >= len(poster.acked)


def test_a_restarted_broker_loses_nothing_posted_after_it(home: Home) -> None:
    up = home.up()
    key = home.key("ingest")
    acked: set[str] = set()
    for n in range(3):
        events = _batch(f"a{n}", 100)
        assert _post(home, key, events) == 200
        acked |= {e["event_id"] for e in events}
    _wait(lambda: home.count() == 300, "the first events did not arrive")
    broker = home.broker_pid()
    assert broker is not None
    os.kill(broker, signal.SIGKILL)
    _wait(lambda: home.ready(up)[0] == 503, "readiness did not notice the dead broker")
    assert home.ready(up)[1]["broker"].startswith("unavailable")
    assert _post(home, key, _batch("lost", 10)) == 503  # not accepted: never a 200
    replacement = EmbeddedBroker(home.bootstrap).start()  # empty, on the same address
    try:
        deadline = time.monotonic() + 60
        for n in range(20):
            events = _batch(f"b{n}", 100)
            while _post(home, key, events) != 200:  # recovers without restarting Pulse
                assert time.monotonic() < deadline, "the collector did not recover"
                time.sleep(0.5)
            acked |= {e["event_id"] for e in events}
        _wait(lambda: home.count() >= len(acked), "events posted after the restart were lost")
        _wait(lambda: home.ready(up)[0] == 200, "not ready after the broker came back")
        metrics = httpx.get(f"{home.url}/metrics/", timeout=10).text
        assert _total(metrics, "pulse_broker_topic_resets_total") > 0
        lost = _total(metrics, "pulse_broker_lost_records_total")
        _stop(home, up)
        stored = _exactly_once(home, acked)
        assert lost == len(acked - set(stored))  # here nothing: all was read before the kill
    finally:
        replacement.stop()


def _total(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(name + "{"))  # fmt: skip


def test_pulse_stop_drains_and_stops_a_broker_left_by_a_crash(home: Home) -> None:
    assert "nothing of Pulse runs" in home.pulse("stop").stderr
    up = home.up()
    second = home.pulse("up", timeout=60)  # one stack per PULSE_HOME
    assert second.returncode == 1 and "already runs" in second.stderr
    key = home.key("ingest")
    events = _batch("s", 200)
    assert _post(home, key, events) == 200
    up.kill()
    up.wait()
    broker = home.broker_pid()
    assert broker is not None
    # more events reach the broker while no flow runs: only the broker holds them
    raws = [msgspec.json.encode(e) for e in _batch("t", 300)]
    assert len(publish(home.bootstrap, Topics(), raws).accepted) == 300
    done = home.pulse("stop")
    assert done.returncode == 0, done.stderr
    assert "left by a crash" in done.stderr and "stopped the embedded broker" in done.stderr
    assert not pidfile.alive(broker) and not (home.path / "broker.pid").exists()
    _exactly_once(home, {e["event_id"] for e in events} | {f"t-{i}" for i in range(300)})
    assert "nothing of Pulse runs" in home.pulse("stop").stderr


def test_a_deleted_warehouse_is_unavailable_then_rebuilt_from_the_broker(home: Home) -> None:
    home.env["PULSE_STOP_TIMEOUT"] = "10s"
    up = home.up()
    key = home.key("ingest")
    assert _post(home, key, _batch("w", 200)) == 200
    _wait(lambda: home.count() == 200, "the events did not arrive")
    read_key = (home.path / "cli-read.key").read_text().strip()
    shutil.rmtree(home.path / "warehouse")
    r = httpx.get(f"{home.url}/v1/metrics/events", timeout=10,
                  params={"from": _iso(time.time() - 3600), "to": _iso(time.time())},
                  headers={"Authorization": f"Bearer {read_key}"})  # fmt: skip
    assert r.status_code == 503 and r.json()["error"]["code"] == "warehouse_unavailable"
    assert _post(home, key, _batch("x", 100)) == 200  # the broker still takes events
    _wait(lambda: "retrying" in home.ready(up)[1].get("flow", ""), "the flow's failing write")
    status, checks = home.ready(up)
    assert status == 503 and "deleted" in checks["warehouse"]
    began = time.monotonic()
    up.send_signal(signal.SIGTERM)
    up.wait(40)  # SIGTERM always stops it
    assert time.monotonic() - began < 30
    assert "the flow could not write everything it read" in output(up)
    assert home.broker_pid() is not None, "the broker (holding unwritten events) was stopped"
    up = home.up()
    assert "is new (missing or empty)" in output(up)
    _wait(lambda: home.count() == 300, "the new warehouse was not rebuilt from the broker")
    _stop(home, up)


def test_a_stop_that_hangs_is_ended_by_the_watchdog() -> None:
    code = ("import time; from api.process import watchdog; watchdog.bound = 0.5;"
            "watchdog.begin(); time.sleep(30)")  # fmt: skip
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 1 and "did not finish within" in done.stderr
    assert time.monotonic() - began < 20
