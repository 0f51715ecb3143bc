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
    "DEMO_INCIDENT",
    "run_api_only",
    "run_demo",
    "run_stack",
    "serve_in_thread",
    "start_banner",
]

DEMO_INCIDENT = "conversion_drop:device=mobile,at=+3m,for=20m,depth=0.7"

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
        open_stack(settings, start_broker=embedded, run_flow=True) as stack,
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
    """``pulse demo``: the whole stack plus live simulated traffic with an incident."""
    _stop_on_sigterm()
    from datetime import UTC, datetime, timedelta

    from ingest.simulator import SimConfig, parse_incident
    from ingest.simulator.publish import publish

    config = SimConfig(
        rate=150,
        duration=timedelta(hours=8),
        seed=int(datetime.now(UTC).timestamp()),
        start=datetime.now(UTC).replace(microsecond=0),
        incidents=(parse_incident(DEMO_INCIDENT),),
    )
    stop = threading.Event()
    embedded = settings.embedded_broker
    with (
        contextlib.suppress(KeyboardInterrupt),
        open_stack(settings, start_broker=embedded, run_flow=True) as stack,
    ):
        assert stack.services.collector is not None
        collector, producer = stack.services.collector, stack.producer
        feeder = threading.Thread(
            target=publish,
            args=(config, collector, producer),
            kwargs={"speed": 1.0, "stop": stop},
            name="pulse-demo-traffic",
            daemon=True,
        )
        feeder.start()
        key = stack.services.keys.create("admin")
        incident_at = config.start + timedelta(minutes=3)
        _console.print(
            f"Demo: simulated marketplace traffic (~{config.rate:.0f} events/s) with "
            f"[bold]{DEMO_INCIDENT}[/bold] from {incident_at:%H:%M} UTC.",
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
