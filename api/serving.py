"""Serving the API with uvicorn: alone (``pulse serve``) or in front of the whole stack
(``pulse up``, ``pulse demo``), with the start-up banner and, for the demo, the browser."""

from __future__ import annotations

import contextlib
import threading
import time
import webbrowser
from collections.abc import Callable, Sequence
from datetime import timedelta
from types import FrameType

import uvicorn
from rich.console import Console

from api.app import create_app
from api.process import one_stack, say_stopped, watchdog
from api.runtime import Runtime, Stack
from api.settings import Settings
from insights.demo import DEMO_INCIDENT, DemoTraffic, demo_simulations
from insights.runner import DetectorLoop
from warehouse.dsn import redact_dsn

__all__ = [
    "dashboard_url",
    "open_browser",
    "run_api_only",
    "run_demo",
    "run_stack",
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
        watchdog.arm()
        super().handle_exit(sig, frame)


def _serve(
    stack: Stack,
    notes: Sequence[str] = (),
    on_ready: Callable[[], object] | None = None,
) -> None:
    s = stack.settings
    app = create_app(stack.services)
    # No access log: it would write every client's address (CONTRACT §11). No proxy headers:
    # uvicorn would believe X-Forwarded-For from 127.0.0.1; Pulse believes it only from
    # PULSE_TRUSTED_PROXIES (api.routes.events.browser_address).
    config = uvicorn.Config(app, host=s.api_host, port=s.api_port, log_level="warning",
                            access_log=False, proxy_headers=False,
                            timeout_graceful_shutdown=5)  # fmt: skip
    server = _Server(config)
    _console.print(start_banner(stack), highlight=False)
    for line in [*stack.notes, *notes]:
        _console.print(line, highlight=False, soft_wrap=True)
    if on_ready is not None:
        _when_started(server, on_ready)
    server.run()  # returns (or re-raises KeyboardInterrupt) after a graceful shutdown


def _stopping(stack: Stack) -> None:
    """The API has stopped: the rest stops next (bounded by the watchdog)."""
    watchdog.begin()
    if stack.settings.embedded_broker and "flow" in stack.services.readiness:
        _console.print("stopping: the flow reads what the broker holds, then everything stops",
                       highlight=False)  # fmt: skip


def _say_stopped(stacks: list[Stack]) -> None:
    parts = stacks[0].parts if stacks else None  # none: a Ctrl-C came before the start
    say_stopped(parts is None or parts.clean, parts is not None and parts.broker is not None)


def run_stack(runtime: Runtime) -> None:
    """``pulse up``: everything in this one process."""
    settings = runtime.settings
    embedded = settings.embedded_broker
    stopped: list[Stack] = []  # the stack, once started (a Ctrl-C may come before)
    with (
        one_stack(settings, "up"),
        contextlib.suppress(KeyboardInterrupt),
        runtime.open_stack(start_broker=embedded, run_flow=True, run_detector=True) as stack,
    ):
        stopped.append(stack)
        try:
            _serve(stack)
        finally:
            _stopping(stack)
    _say_stopped(stopped)


def run_api_only(runtime: Runtime) -> None:
    """``pulse serve``: the API against an already-running broker."""
    watchdog.install(runtime.settings)
    with contextlib.suppress(KeyboardInterrupt), runtime.open_stack(start_broker=False) as stack:
        try:
            _serve(stack)
        finally:
            watchdog.begin()
    _console.print("Pulse stopped.")


def run_demo(runtime: Runtime, *, open_page: bool = True) -> None:
    """``pulse demo``: the whole stack, a few hours of back-filled history (the detector
    learns before it judges), then live simulated traffic with a conversion drop. With
    ``open_page``, the Business overview opens in the browser once the API is up (when
    this machine has one)."""
    # The simulator sends nothing late: a short lateness lets buckets close quickly.
    late = {"allowed_lateness": timedelta(seconds=30)}
    runtime = Runtime(runtime.settings.model_copy(update=late))
    settings = runtime.settings
    past, live = demo_simulations()
    embedded = settings.embedded_broker
    stopped: list[Stack] = []
    with (
        one_stack(settings, "demo"),
        contextlib.suppress(KeyboardInterrupt),
        runtime.open_stack(start_broker=embedded, run_flow=True) as stack,
    ):
        stopped.append(stack)
        services = stack.services
        assert services.collector is not None  # open_stack always builds one

        def detect() -> DetectorLoop:
            # a pass every 5 s (not 20): the live incident is raised soon after its
            # buckets are complete; each pass reads only the buckets completed since
            return runtime.start_detector(services, poll_every_s=5.0)

        traffic = DemoTraffic(services.collector, stack.producer, past, live, detect)
        traffic.start()
        key = services.keys.create("admin")
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
        if settings.embedded_warehouse:
            notes.append(f"  A read key for curl and `pulse query` is in {settings.cli_key_file}")

        def opened() -> None:
            if open_page and open_browser(url):
                _console.print(f"Opened {url} in your browser.", highlight=False)

        try:
            _serve(stack, notes, opened)
        finally:
            traffic.close()
            _stopping(stack)
    _say_stopped(stopped)
