"""Serving the real API app from a background thread, for tests and benchmarks."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

__all__ = ["serve_in_thread"]


def serve_in_thread(
    app: Any, port: int, host: str = "127.0.0.1", timeout: float = 10.0
) -> tuple[uvicorn.Server, threading.Thread]:
    """Serve ``app`` from a background thread; returns once it listens.
    Stop it with ``server.should_exit = True`` and ``thread.join()``."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", proxy_headers=False)
    server = uvicorn.Server(config)  # as api.serving runs it: no proxy headers believed
    thread = threading.Thread(target=server.run, name="pulse-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the API did not start on {host}:{port} within {timeout:.0f} s")
        time.sleep(0.02)
    return server, thread
