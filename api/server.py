"""Serving the API with uvicorn, alone or inside the whole stack."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from rich.console import Console

from api.app import create_app
from api.stack import Stack, open_stack
from ingest.errors import PulseError
from ingest.settings import Settings
from warehouse.client import redact_dsn

if TYPE_CHECKING:
    from ingest.simulator import SimConfig
    from insights.runner import DetectorLoop

__all__ = [
    "dashboard_url",
    "open_browser",
    "run_api_only",
    "run_demo",
    "run_stack",
    "serve_in_thread",
    "start_banner",
]


_console = Console(stderr=True)
# Text-mode browsers ``webbrowser`` may find: they would take over the demo's terminal.
_TEXT_BROWSERS = frozenset({"www-browser", "links", "elinks", "lynx", "w3m"})


def dashboard_url(settings: Settings, board: str = "pulse-overview") -> str:
    """The URL of a built-in dashboard page, reachable from this machine."""
    host = settings.api_host
    if host in ("0.0.0.0", ""):  # listening everywhere: this machine is one of them
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}/#{board}"


def open_browser(url: str) -> bool:
    """Open ``url`` in the user's web browser when there is one; returns whether one was
    asked. Never blocks and never raises: without a display (and no ``$BROWSER``) Python
    finds no browser, and a text-mode browser is not started (it would take this terminal).
    """
    import webbrowser

    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    if getattr(browser, "name", "") in _TEXT_BROWSERS:
        return False

    def run() -> None:
        with contextlib.suppress(Exception):  # a browser that fails to start is not fatal
            browser.open(url, new=2)

    threading.Thread(target=run, name="pulse-open-browser", daemon=True).start()
    return True


def start_banner(stack: Stack) -> str:
    """The start-up message: where everything is."""
    s = stack.settings
    broker = "embedded broker" if s.embedded_broker else "Kafka"
    lines = [
        f"Pulse is up on [bold]http://{s.api_host}:{s.api_port}[/bold]"
        "  (API docs: /docs, metrics: /metrics)",
        f"  dashboards: http://{s.api_host}:{s.api_port}/#pulse-overview",
        f"  {broker}: {stack.bootstrap}",
        f"  warehouse: {redact_dsn(s.warehouse_dsn)}"
        + ("  (flow running)" if "flow" in stack.services.readiness else ""),
        "  API keys: `pulse keys create --scope ingest|read|admin`"
        f" (stored hashed in {s.keys_file})",
        "  Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def _when_started(server: uvicorn.Server, callback: Callable[[], object]) -> None:
    """Call ``callback`` from a background thread once ``server`` listens."""

    def wait() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        callback()

    threading.Thread(target=wait, name="pulse-when-started", daemon=True).start()


class _Server(uvicorn.Server):
    """uvicorn, whose first stop signal also arms the watchdog of the whole stop."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        _watchdog.arm()
        super().handle_exit(sig, frame)


def _serve(
    stack: Stack,
    notes: Sequence[str] = (),
    on_ready: Callable[[], object] | None = None,
) -> None:
    s = stack.settings
    app = create_app(stack.services)
    config = uvicorn.Config(app, host=s.api_host, port=s.api_port, log_level="warning",
                            timeout_graceful_shutdown=5)  # fmt: skip
    server = _Server(config)
    _console.print(start_banner(stack), highlight=False)
    for line in [*stack.notes, *notes]:
        _console.print(line, highlight=False, soft_wrap=True)
    if on_ready is not None:
        _when_started(server, on_ready)
    server.run()  # returns (or re-raises KeyboardInterrupt) after a graceful shutdown


def serve_in_thread(
    app: Any, port: int, host: str = "127.0.0.1", timeout: float = 10.0
) -> tuple[uvicorn.Server, threading.Thread]:
    """Serve ``app`` from a background thread (tests, benchmarks); returns once it listens.
    Stop it with ``server.should_exit = True`` and ``thread.join()``."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="pulse-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the API did not start on {host}:{port} within {timeout:.0f} s")
        time.sleep(0.02)
    return server, thread


class _Watchdog:
    """SIGTERM always stops the process: once a graceful stop begins, it has ``bound``
    seconds; after that the process says so and exits anyway (what was not written is
    re-read at the next start: the flow resumes from its last committed state, and an
    embedded broker left running is reattached). A second signal during the stop exits
    at once."""

    def __init__(self) -> None:
        self.bound = 90.0
        self.stopping = threading.Event()
        self._armed = threading.Lock()

    def arm(self) -> None:
        """Start the countdown (once)."""
        if not self._armed.acquire(blocking=False):
            return
        threading.Thread(target=self._expire, name="pulse-stop-watchdog", daemon=True).start()

    def _expire(self) -> None:
        time.sleep(self.bound)
        _console.print(
            f"[red]pulse:[/red] the graceful stop did not finish within {self.bound:.0f} s"
            " (PULSE_STOP_TIMEOUT): exiting now; what was not written is read again at the"
            " next start",
            highlight=False,
        )
        os._exit(1)

    def on_signal(self, signum: int, _frame: object) -> None:
        """SIGINT / SIGTERM outside uvicorn: begin the graceful stop, or end it now."""
        if self.stopping.is_set():
            _console.print(
                f"[red]pulse:[/red] {signal.Signals(signum).name} again: exiting now, without"
                " finishing the graceful stop (what was not written is read again at the next"
                " start)",
                highlight=False,
            )
            os._exit(128 + signum)
        self.arm()
        raise KeyboardInterrupt

    def install(self, settings: Settings) -> None:
        """Handle SIGTERM (systemd, docker, timeout, `pulse stop`) like Ctrl-C."""
        self.bound = settings.stop_timeout.total_seconds()
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)

    def begin(self) -> None:
        """The graceful stop begins now (the API has stopped)."""
        self.stopping.set()
        self.arm()


_watchdog = _Watchdog()


@contextlib.contextmanager
def _running(settings: Settings, command: str) -> Iterator[None]:
    """Around a whole stack: signals and watchdog, and the pid file `pulse stop` reads
    (one stack per PULSE_HOME)."""
    from api.stack import pulse_pid_file
    from ingest import pidfile

    _watchdog.install(settings)
    path = pulse_pid_file(settings)
    running = pidfile.read_live(path)
    if running is not None and running.pid != os.getpid():
        raise PulseError(
            f"`pulse {running.marker}` already runs on PULSE_HOME={settings.home} "
            f"(pid {running.pid}); `pulse stop` stops it"
        )
    settings.home.mkdir(parents=True, exist_ok=True)
    pidfile.write(path, os.getpid(), command, api=f"{settings.api_host}:{settings.api_port}")
    try:
        yield
    finally:
        pidfile.remove_if_mine(path, os.getpid())


def run_stack(settings: Settings) -> None:
    """``pulse up``: everything in this one process."""
    embedded = settings.embedded_broker
    stopped: list[Stack] = []  # the stack, once started (a Ctrl-C may come before)
    with (
        _running(settings, "up"),
        contextlib.suppress(KeyboardInterrupt),
        open_stack(settings, start_broker=embedded, run_flow=True, run_detector=True) as stack,
    ):
        stopped.append(stack)
        try:
            _serve(stack)
        finally:
            _stopping(stack)
    _stopped(stopped)


def _stopped(stacks: list[Stack]) -> None:
    """Say how the stop went. A flow that could not finish (its writes failing) may still
    hold a thread in Bytewax: exit without waiting for it; nothing it had not written
    was committed, and an embedded broker holding it was left running."""
    parts = stacks[0].parts if stacks else None
    if parts is None or parts.clean:
        _console.print("Pulse stopped.")
        return
    _console.print(
        "Pulse stopped, but the flow could not write everything it read: the next start "
        "reads it again" + (" from the embedded broker, left running" if parts.broker else ""),
        highlight=False,
    )  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def _stopping(stack: Stack) -> None:
    """The API has stopped: the rest stops next (bounded by the watchdog)."""
    _watchdog.begin()
    if stack.settings.embedded_broker and "flow" in stack.services.readiness:
        _console.print("stopping: the flow reads what the broker holds, then everything stops",
                       highlight=False)  # fmt: skip


def run_api_only(settings: Settings) -> None:
    """``pulse serve``: the API against an already-running broker."""
    _watchdog.install(settings)
    with contextlib.suppress(KeyboardInterrupt), open_stack(settings, start_broker=False) as stack:
        try:
            _serve(stack)
        finally:
            _watchdog.begin()
    _console.print("Pulse stopped.")


def _written(count: int, stop: threading.Event, timeout: float = 600.0) -> bool:
    """Wait until this process's flow has written ``count`` events to the warehouse
    (``pulse_flow_events_total``); False when stopped or after ``timeout`` seconds."""
    from prometheus_client import REGISTRY

    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        if (REGISTRY.get_sample_value("pulse_flow_events_total") or 0) >= count:
            return True
        stop.wait(0.5)
    return False


class _DemoTraffic:
    """The demo's feeder: the history as fast as the broker takes it, then live traffic;
    detection starts once the history is in the warehouse.

    While the flow catches up on a back-fill, its topics progress unevenly: the event-time
    watermark can pass minutes whose page views are not written yet, and the detector
    would learn those gaps and report them ("page views nearly stopped"), with its
    series in anomalies that then hide the live incident."""

    def __init__(self, stack: Stack, past: SimConfig, live: SimConfig) -> None:
        self.stack, self.past, self.live = stack, past, live
        self.stop = threading.Event()
        self.detector: DetectorLoop | None = None
        self._lock = threading.Lock()
        self._feeder = threading.Thread(target=self._feed, name="pulse-demo-traffic", daemon=True)

    def _feed(self) -> None:
        from ingest.simulator.publish import publish

        collector, producer = self.stack.services.collector, self.stack.producer
        assert collector is not None  # open_stack always builds one
        sent = publish(self.past, collector, producer, speed=None, stop=self.stop)
        threading.Thread(
            target=self._detect_when_written, args=(sent.accepted,), name="pulse-demo-detect",
            daemon=True,
        ).start()  # fmt: skip
        publish(self.live, collector, producer, speed=1.0, stop=self.stop)

    def _detect_when_written(self, history: int) -> None:
        from insights.runner import DetectorLoop, detect_config
        from warehouse.client import connect

        _written(history, self.stop)  # after the timeout, detect anyway
        settings = self.stack.settings
        with self._lock:
            if self.stop.is_set():
                return
            # a pass every 5 s (not 20): the live incident is raised soon after its
            # buckets are complete; each pass reads only the buckets completed since
            config = detect_config(settings, poll_every_s=5.0)
            self.detector = DetectorLoop(lambda: connect(settings.warehouse_dsn), config).start()
            self.stack.services.readiness["detector"] = self.detector.check

    def start(self) -> None:
        self._feeder.start()

    def close(self) -> None:
        with self._lock:
            self.stop.set()
        self._feeder.join(10)
        if self.detector is not None:
            self.detector.stop()


def run_demo(settings: Settings, *, open_page: bool = True) -> None:
    """``pulse demo``: the whole stack, a few hours of back-filled history (the detector
    learns before it judges), then live simulated traffic with a conversion drop. With
    ``open_page``, the Business overview opens in the browser once the API is up (when
    this machine has one)."""
    from datetime import timedelta

    from insights.demo import DEMO_INCIDENT, demo_simulations

    # The simulator sends nothing late: a short lateness lets buckets close quickly.
    settings = settings.model_copy(update={"allowed_lateness": timedelta(seconds=30)})
    past, live = demo_simulations()
    embedded = settings.embedded_broker
    stopped: list[Stack] = []
    with (
        _running(settings, "demo"),
        contextlib.suppress(KeyboardInterrupt),
        open_stack(settings, start_broker=embedded, run_flow=True) as stack,
    ):
        stopped.append(stack)
        traffic = _DemoTraffic(stack, past, live)
        traffic.start()
        key = stack.services.keys.create("admin")
        url = dashboard_url(settings)
        incident_at = live.start + timedelta(minutes=1)
        notes = [
            f"Demo: {past.duration} of history back-filled, then live traffic "
            f"(~{live.rate:.0f} events/s) with [bold]{DEMO_INCIDENT}[/bold] "
            f"from {incident_at:%H:%M} UTC; it becomes an open insight within minutes.",
            f"  Business overview: [bold]{url}[/bold]",
            f"  When the page asks for a key, paste: [bold]{key}[/bold]",
            "  (an admin key, shown once: it reads and can acknowledge or resolve insights)",
        ]
        if settings.warehouse_dsn.startswith("chdb://"):
            read_key = settings.home / "cli-read.key"
            notes.append(f"  A read key for curl and `pulse query` is in {read_key}")

        def opened() -> None:
            if open_page and open_browser(url):
                _console.print(f"Opened {url} in your browser.", highlight=False)

        try:
            _serve(stack, notes, opened)
        finally:
            traffic.close()
            _stopping(stack)
    _stopped(stopped)
