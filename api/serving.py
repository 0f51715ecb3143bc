"""Serving the API with uvicorn: alone (``pulse serve``) or in front of the whole stack
(``pulse up``, ``pulse demo``), with the start-up banner and, for the demo, the browser."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType

import uvicorn
from rich.console import Console

from api.app import create_app
from api.demo import backfill_span, last_event_time, reset_demo
from api.process import one_stack, say_stopped, watchdog
from api.runtime import Runtime, Stack
from api.settings import Settings
from ingest.errors import PulseError
from insights.demo import DEMO_HISTORY, DEMO_INCIDENT, DemoTraffic, demo_simulation
from insights.runner import DetectorLoop
from warehouse.dsn import redact_dsn

__all__ = [
    "check_port",
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


def check_port(settings: Settings) -> None:
    """Refuse to start when the API's address is taken, before anything starts or says it is
    up (uvicorn would find out only after the start-up message)."""
    host, port = settings.api_host, settings.api_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PulseError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}): another program "
                "uses that port; stop it, or set PULSE_API_PORT (and PULSE_API_HOST) to a free "
                "address"
            ) from None


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
        f"  home: {s.home}  (PULSE_HOME: keys, logs, state; every `pulse` command on this "
        "stack needs the same PULSE_HOME)",
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


@contextlib.contextmanager
def _port_checked(settings: Settings) -> Iterator[None]:
    """:func:`check_port` as a step of a ``with``: after the one-stack check, before the
    stack starts."""
    check_port(settings)
    yield


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
        _port_checked(settings),
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
    check_port(runtime.settings)
    with contextlib.suppress(KeyboardInterrupt), runtime.open_stack(start_broker=False) as stack:
        try:
            _serve(stack)
        finally:
            watchdog.begin()
    _console.print("Pulse stopped.")


def run_demo(runtime: Runtime, *, open_page: bool = True, fresh: bool = False) -> None:
    """``pulse demo``: the whole stack, a few hours of back-filled history (the detector
    learns before it judges), then live simulated traffic with a conversion drop. With
    ``open_page``, the Business overview opens in the browser once the API is up (when
    this machine has one). Run again on the same home, it back-fills only what is missing
    since the last event (never a second copy); ``fresh`` deletes the earlier demo's data
    first (:mod:`api.demo`)."""
    # The simulator sends nothing late: a short lateness lets buckets close quickly.
    late = {"allowed_lateness": timedelta(seconds=30)}
    runtime = Runtime(runtime.settings.model_copy(update=late))
    settings = runtime.settings
    embedded = settings.embedded_broker
    stopped: list[Stack] = []
    with (
        one_stack(settings, "demo"),
        contextlib.suppress(KeyboardInterrupt),
        _port_checked(settings),
        _reset_if(settings, fresh),
        runtime.open_stack(start_broker=embedded, run_flow=True) as stack,
    ):
        stopped.append(stack)
        services = stack.services
        assert services.collector is not None  # open_stack always builds one

        def detect() -> DetectorLoop:
            # a pass every 5 s (not 20): the live incident is raised soon after its
            # buckets are complete; each pass reads only the buckets completed since
            return runtime.start_detector(services, poll_every_s=5.0)

        now = datetime.now(UTC).replace(microsecond=0)
        last = last_event_time(services.warehouse) if services.warehouse is not None else None
        span = backfill_span(now, last, DEMO_HISTORY)
        run = demo_simulation(now, history=span)

        def history_in(events: int, written: bool) -> None:
            if written:
                _console.print(f"Demo: {_span(span)} of history back-filled ({events:,} "
                               "events); the detector learns from it", highlight=False)  # fmt: skip
            else:  # a busy machine: the flow is still writing it after 10 minutes
                _console.print(f"Demo: {_span(span)} of history ({events:,} events) is still "
                               "being written; the detector starts now and learns from what "
                               "is in", highlight=False)  # fmt: skip

        traffic = DemoTraffic(services.collector, stack.producer, run, detect,
                              on_history=history_in)  # fmt: skip
        traffic.start()
        key = services.keys.create("admin")
        url = dashboard_url(settings)
        incident_at = now + timedelta(minutes=1)
        notes = [_history_note(span, last), (
            f"  then live traffic (~{run.rate:.0f} events/s) with [bold]{DEMO_INCIDENT}[/bold] "
            f"from {incident_at:%H:%M} UTC; it becomes an open insight within minutes."
        ),
            f"  Business overview: [bold]{url}[/bold]",
            f"  When the page asks for a key, paste: [bold]{key}[/bold]",
            "  (an admin key, shown once: it reads and can acknowledge or resolve insights)",
        ]  # fmt: skip
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


def _history_note(span: timedelta, last: datetime | None) -> str:
    """What the demo says of its history, before the back-fill."""
    if last is None:
        return f"Demo: back-filling {_span(span)} of simulated history,"
    since = f"this home's warehouse has events up to {last:%Y-%m-%d %H:%M} UTC"
    if not span:
        return f"Demo: resuming ({since}; `pulse demo --fresh` starts clean),"
    return (
        f"Demo: resuming ({since}; `pulse demo --fresh` starts clean): back-filling the "
        f"{_span(span)} since,"
    )


def _span(span: timedelta) -> str:
    """``3 h``, ``3 h 20 min``, ``12 min``, ``40 s``."""
    seconds = int(span.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    return " ".join([*([f"{hours} h"] if hours else []), *([f"{minutes} min"] if minutes else [])])


@contextlib.contextmanager
def _reset_if(settings: Settings, fresh: bool) -> Iterator[None]:
    """``pulse demo --fresh``: the earlier demo's data deleted, once nothing else runs on
    this home (the caller checked) and before the stack opens the warehouse."""
    if fresh:
        deleted = reset_demo(settings)
        _console.print(
            f"Demo: starting clean: deleted {', '.join(deleted)} (API keys kept)"
            if deleted
            else f"Demo: starting clean (nothing to delete in {settings.home})",
            highlight=False,
        )
    yield
