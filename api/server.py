"""Serving the API with uvicorn, alone or inside the whole stack."""

from __future__ import annotations

import contextlib

import uvicorn
from rich.console import Console

from api.app import create_app
from api.stack import Stack, open_stack
from ingest.settings import Settings
from warehouse.client import redact_dsn

__all__ = ["run_api_only", "run_stack", "start_banner"]

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


def run_stack(settings: Settings) -> None:
    """``pulse up``: everything in this one process."""
    embedded = settings.embedded_broker
    with (
        contextlib.suppress(KeyboardInterrupt),
        open_stack(settings, start_broker=embedded, run_flow=True) as stack,
    ):
        _serve(stack)
    _console.print("Pulse stopped.")


def run_api_only(settings: Settings) -> None:
    """``pulse serve``: the API against an already-running broker."""
    with contextlib.suppress(KeyboardInterrupt), open_stack(settings, start_broker=False) as stack:
        _serve(stack)
    _console.print("Pulse stopped.")
