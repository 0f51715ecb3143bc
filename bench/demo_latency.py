"""Time from ``pulse demo`` start to its incident as an open insight and as an alert.

    .venv/bin/python bench/demo_latency.py [--pulse .venv/bin/pulse] [--timeout 600] [--output FILE]

Starts Debian's Alertmanager on a free port (a minimal config: one receiver, no
notifications), then ``pulse demo --no-open`` as a subprocess with its own PULSE_HOME, a
free API port and ``PULSE_ALERTMANAGER_URL`` pointing at that Alertmanager. It polls the
demo over HTTP only (the demo process holds the embedded warehouse): ``GET /v1/insights``
with the read key the demo writes to ``PULSE_HOME/cli-read.key``, and Alertmanager's
``GET /api/v2/alerts``. Reports the seconds from start to: the API answering, the
injected ``conversion_drop`` as an open insight, and its alert in Alertmanager (target:
both within 5 minutes). Then stops the demo with SIGINT (SIGTERM if it lingers).

The embedded broker listens on 127.0.0.1:19092 (``pulse demo`` has no setting for its
port); when that port is taken, a separate ``pulse broker`` is started on a free port and
the demo is pointed at it with ``PULSE_KAFKA_BOOTSTRAP`` (``--broker separate`` forces this).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
DEMO_BROKER = ("127.0.0.1", 19092)
# The demo's incident is a conversion drop: these headline metrics fall.
INCIDENT_METRICS = {"conversion_rate", "orders", "revenue", "revenue_per_visitor"}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_taken(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_taken("127.0.0.1", port):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes], first: int = signal.SIGINT, grace: float = 60) -> float:
    """Stop ``proc`` with ``first``, then SIGTERM, then SIGKILL; seconds it took."""
    started = time.monotonic()
    for sig, wait in ((first, grace), (signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    return time.monotonic() - started


@contextlib.contextmanager
def alertmanager(tmp: Path) -> Iterator[str]:
    """Debian's Alertmanager on a free port, clustering off; yields its URL."""
    if not Path(ALERTMANAGER).exists():
        raise SystemExit("needs prometheus-alertmanager (Debian package)")
    port = free_port()
    config = tmp / "alertmanager.yml"
    config.write_text(
        "route:\n  receiver: nobody\n  group_wait: 1s\nreceivers:\n  - name: nobody\n"
    )
    log = (tmp / "alertmanager.log").open("ab")
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
         "--log.level=warn"],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        wait_port(port, proc, "alertmanager")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, signal.SIGTERM, 10)


def incident_insight(insights: list[dict[str, Any]], since: datetime) -> dict[str, Any] | None:
    """The open insight of the demo's conversion drop on mobile (live traffic starts at
    ``since``; the drop a minute later), if any: a fall of a headline metric overall or
    on mobile, starting at most two minutes before the live traffic (the onset is the
    start of a bucket, and the detector may date it a bucket early)."""
    for doc in insights:
        started = datetime.fromisoformat(doc["started_at"])
        if (
            doc["status"] == "open"
            and doc["direction"] == "down"
            and doc["metric"] in INCIDENT_METRICS
            and doc["slice"] in ("all", "device=mobile")
            and started >= since - timedelta(minutes=2)
        ):
            return doc
    return None


# Pipeline progress sampled from /metrics into the timeline (the first sample of each).
_PROGRESS = ("pulse_events_accepted_total", "pulse_flow_events_total",
             "pulse_flow_newest_event_seconds", "pulse_detector_last_bucket_seconds",
             'pulse_detector_runs_total{outcome="ok"}', "pulse_insights_active")  # fmt: skip
_KEEP = ("id", "metric", "slice", "severity", "started_at", "detected_at", "summary")


class Poller:
    """What the running demo shows over HTTP, polled until the alert is there."""

    def __init__(self, api: str, key_file: Path, alertmanager: str, since: datetime) -> None:
        self.api, self.key_file, self.alertmanager, self.since = api, key_file, alertmanager, since
        self.http = httpx.Client(timeout=5)
        self.insight: dict[str, Any] | None = None
        self.seen: dict[str, str] = {}  # every open insight seen: id -> summary

    def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return self.http.get(f"{self.api}/healthz").status_code == 200
        return False

    def progress(self, t0: float) -> dict[str, float]:
        """Where the pipeline is: events in, events written, newest event and newest
        bucket the detector scored (seconds behind now), detection passes."""
        out = {"t_s": round(time.monotonic() - t0, 1)}
        with contextlib.suppress(httpx.HTTPError):
            text = self.http.get(f"{self.api}/metrics/").text
            for line in text.splitlines():
                name, _, value = line.rpartition(" ")
                short = name.split("{")[0] if "runs_total" not in name else name
                if short in _PROGRESS and short not in out:
                    v = float(value)
                    if short.endswith("_seconds"):
                        v = time.time() - v if v > 0 else math.nan
                    out[short.removeprefix("pulse_")] = round(v, 1)
        return out

    def find_insight(self) -> dict[str, Any] | None:
        if not self.key_file.exists():  # written by the demo once its warehouse is up
            return None
        headers = {"Authorization": f"Bearer {self.key_file.read_text().strip()}"}
        with contextlib.suppress(httpx.HTTPError):
            r = self.http.get(f"{self.api}/v1/insights", params={"status": "open"},
                              headers=headers)  # fmt: skip
            if r.status_code == 200:
                found = r.json()["insights"]
                self.seen |= {doc["id"]: doc["summary"] for doc in found}
                self.insight = incident_insight(found, self.since)
        return self.insight

    def alerted(self) -> bool:
        assert self.insight is not None
        with contextlib.suppress(httpx.HTTPError):
            alerts = self.http.get(f"{self.alertmanager}/api/v2/alerts").json()
            return any(a["labels"].get("insight_id") == self.insight["id"] for a in alerts)
        return False


def measure(pulse: str, tmp: Path, broker: str, timeout: float) -> dict[str, Any]:
    """Run the demo once; the times of what happened, in seconds from its start."""
    home = tmp / "home"
    port = free_port()
    result: dict[str, Any] = {"pulse": pulse, "broker": broker}
    with contextlib.ExitStack() as running:
        am_url = running.enter_context(alertmanager(tmp))
        env = {**os.environ, "PULSE_HOME": str(home), "PULSE_API_PORT": str(port),
               "PULSE_ALERTMANAGER_URL": am_url, "PYTHONUNBUFFERED": "1"}  # fmt: skip
        env.pop("PULSE_KAFKA_BOOTSTRAP", None)
        env.pop("PULSE_CLICKHOUSE_DSN", None)
        if broker == "separate":
            kafka_port = free_port()
            env["PULSE_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{kafka_port}"
            blog = (tmp / "broker.log").open("ab")
            bproc = subprocess.Popen([pulse, "broker"], env=env, stdout=blog, stderr=blog)
            running.callback(stop, bproc, signal.SIGINT, 15)
            wait_port(kafka_port, bproc, "pulse broker")
        log_path = tmp / "demo.log"
        log = log_path.open("ab")
        wall0 = datetime.now(UTC)
        t0 = time.monotonic()
        proc = subprocess.Popen([pulse, "demo", "--no-open"], env=env, stdout=log, stderr=log)
        result["started_at"] = wall0.isoformat(timespec="seconds")
        poll = Poller(f"http://127.0.0.1:{port}", home / "cli-read.key", am_url, wall0)
        timeline: list[dict[str, float]] = []
        result["timeline"] = timeline
        try:
            while time.monotonic() - t0 < timeout and "alert_s" not in result:
                if proc.poll() is not None:
                    raise RuntimeError(f"pulse demo exited with {proc.returncode}")
                elapsed = round(time.monotonic() - t0, 1)
                if "api_ready_s" not in result:
                    if poll.ready():
                        result["api_ready_s"] = elapsed
                elif poll.insight is None and (found := poll.find_insight()) is not None:
                    result["insight_s"] = elapsed
                    result["insight"] = {k: found[k] for k in _KEEP}
                    for k in ("started_at", "detected_at"):
                        ts = datetime.fromisoformat(found[k])
                        result[f"incident_{k}_s"] = round((ts - wall0).total_seconds(), 1)
                if poll.insight is not None and poll.alerted():
                    result["alert_s"] = round(time.monotonic() - t0, 1)
                if "api_ready_s" in result and (
                    not timeline or time.monotonic() - t0 - timeline[-1]["t_s"] >= 15
                ):
                    timeline.append(poll.progress(t0))
                time.sleep(2.0)
        finally:
            result["stop_s"] = round(stop(proc), 1)
            result["exit_code"] = proc.returncode
            poll.http.close()
            result["open_insights_seen"] = poll.seen
            result["log_tail"] = log_path.read_text(errors="replace").splitlines()[-15:]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pulse",
        default=str(ROOT / ".venv" / "bin" / "pulse"),
        help="the pulse executable (e.g. a fresh clone's .venv/bin/pulse)",
    )
    parser.add_argument("--broker", choices=("auto", "embedded", "separate"), default="auto")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    parser.add_argument("--output", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()
    broker = args.broker
    if broker == "auto":
        broker = "separate" if port_taken(*DEMO_BROKER) else "embedded"
    with tempfile.TemporaryDirectory(prefix="pulse-bench-demo-") as tmp_name:
        result = measure(args.pulse, Path(tmp_name), broker, args.timeout)
    result["within_5_min"] = all(result.get(k, math.inf) <= 300 for k in ("insight_s", "alert_s"))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    if not result["within_5_min"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
