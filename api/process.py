"""The process of a whole stack (``pulse up``, ``pulse demo``): one per ``PULSE_HOME`` (its
pid file, read by ``pulse stop``), signals, and a watchdog bounding the graceful stop."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

from rich.console import Console

from api.settings import Settings
from ingest import pidfile
from ingest.errors import PulseError

__all__ = ["Watchdog", "one_stack", "say_stopped", "watchdog"]

_console = Console(stderr=True)


class Watchdog:
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


watchdog = Watchdog()


@contextlib.contextmanager
def one_stack(settings: Settings, command: str) -> Iterator[None]:
    """Around a whole stack: signals and watchdog, and the pid file `pulse stop` reads
    (one stack per PULSE_HOME)."""
    watchdog.install(settings)
    path = settings.pulse_pid_file
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


def say_stopped(clean: bool, broker_left: bool) -> None:
    """Say how the stop went. A flow that could not finish (its writes failing) may still
    hold a thread in Bytewax: exit without waiting for it; nothing it had not written
    was committed, and an embedded broker holding it was left running."""
    if clean:
        _console.print("Pulse stopped.")
        return
    _console.print(
        "Pulse stopped, but the flow could not write everything it read: the next start "
        "reads it again" + (" from the embedded broker, left running" if broker_left else ""),
        highlight=False,
    )  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
