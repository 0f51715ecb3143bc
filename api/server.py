"""Serving the API with uvicorn, alone or inside the whole stack."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any

import uvicorn
from rich.console import Console

from api.app import create_app
from api.stack import Stack, open_stack
from ingest.settings import Settings
from warehouse.client import redact_dsn

__all__ = [
    "run_api_only",
    "run_demo",
    "run_stack",
    "serve_in_thread",
    "start_banner",
]


_console = Console(stderr=True)


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


def _serve(stack: Stack) -> None:
    s = stack.settings
    app = create_app(stack.services)
    config = uvicorn.Config(app, host=s.api_host, port=s.api_port, log_level="warning")
    server = uvicorn.Server(config)
    _console.print(start_banner(stack), highlight=False)
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


def _stop_on_sigterm() -> None:
    """SIGTERM (systemd, docker, timeout) stops as cleanly as Ctrl-C."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def run_stack(settings: Settings) -> None:
    """``pulse up``: everything in this one process."""
    _stop_on_sigterm()
    embedded = settings.embedded_broker
    with (
        contextlib.suppress(KeyboardInterrupt),
        open_stack(settings, start_broker=embedded, run_flow=True, run_detector=True) as stack,
    ):
        _serve(stack)
    _console.print("Pulse stopped.")


def run_api_only(settings: Settings) -> None:
    """``pulse serve``: the API against an already-running broker."""
    _stop_on_sigterm()
    with contextlib.suppress(KeyboardInterrupt), open_stack(settings, start_broker=False) as stack:
        _serve(stack)
    _console.print("Pulse stopped.")


def run_demo(settings: Settings) -> None:
    """``pulse demo``: the whole stack, a few hours of back-filled history (the detector
    learns before it judges), then live simulated traffic with a conversion drop."""
    _stop_on_sigterm()
    from datetime import timedelta

    from ingest.simulator.publish import publish
    from insights.demo import DEMO_INCIDENT, demo_simulations

    # The simulator sends nothing late: a short lateness lets buckets close quickly.
    settings = settings.model_copy(update={"allowed_lateness": timedelta(seconds=30)})
    past, live = demo_simulations()
    stop = threading.Event()

    def feed(collector: Any, producer: Any) -> None:
        publish(past, collector, producer, speed=None, stop=stop)
        publish(live, collector, producer, speed=1.0, stop=stop)

    embedded = settings.embedded_broker
    with (
        contextlib.suppress(KeyboardInterrupt),
        open_stack(settings, start_broker=embedded, run_flow=True, run_detector=True) as stack,
    ):
        feeder = threading.Thread(
            target=feed,
            args=(stack.services.collector, stack.producer),
            name="pulse-demo-traffic",
            daemon=True,
        )
        feeder.start()
        key = stack.services.keys.create("admin")
        incident_at = live.start + timedelta(minutes=1)
        _console.print(
            f"Demo: {past.duration} of history back-filled, then live traffic "
            f"(~{live.rate:.0f} events/s) with [bold]{DEMO_INCIDENT}[/bold] "
            f"from {incident_at:%H:%M} UTC.",
            highlight=False,
        )
        _console.print(
            f"Admin key for the dashboards (shown once): [bold]{key}[/bold]", highlight=False
        )
        try:
            _serve(stack)
        finally:
            stop.set()
            feeder.join(10)
    _console.print("Pulse stopped.")
