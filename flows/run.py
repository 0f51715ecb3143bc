"""Running the flows: in this process with N worker threads, with Bytewax recovery."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig, init_db_dir

from flows.config import FlowConfig
from flows.dataflow import build_flow
from ingest.errors import PulseError
from warehouse.writer import WriteStatus

__all__ = [
    "FlowThread",
    "processes_for",
    "recovery_config",
    "run_flow",
    "run_processes",
    "tune_gc",
    "usable_cores",
]

_log = logging.getLogger(__name__)


def recovery_config(directory: Path, partitions: int = 1) -> RecoveryConfig:
    """Bytewax's recovery store under ``directory``, created on first use: in a directory
    of its own first, so that a flow killed while creating it leaves no half-made partition
    that the next start would take for a store (Bytewax then refuses to start)."""
    if not any(directory.glob("part-*.sqlite3")):
        directory.mkdir(parents=True, exist_ok=True)
        fresh = directory / ".creating"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        init_db_dir(fresh, partitions)
        for part in sorted(fresh.glob("part-*.sqlite3")):
            part.replace(directory / part.name)
        shutil.rmtree(fresh, ignore_errors=True)
    return RecoveryConfig(str(directory))


def tune_gc() -> None:
    """The flow allocates millions of short-lived objects while holding a large, long-lived
    state; CPython's default collector thresholds made full collections over that state
    take more than half the flow's time (measured with py-spy). Collect young objects far
    less often and never rescan what existed at start-up."""
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)


def run_flow(
    config: FlowConfig,
    *,
    workers: int = 1,
    recovery_dir: Path | None = None,
    epoch: timedelta = timedelta(seconds=5),
) -> None:
    """Run the event flow until it stops (idle stop) or is interrupted."""
    tune_gc()
    recovery = recovery_config(recovery_dir) if recovery_dir else None
    if recovery_dir is not None and config.state_dir is None:
        config = dataclasses.replace(config, state_dir=recovery_dir / "state")
    cli_main(
        build_flow(config),
        workers_per_process=workers,
        epoch_interval=epoch,
        recovery_config=recovery,
    )


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, cpusets)."""
    return len(os.sched_getaffinity(0))


def processes_for(cores: int) -> int:
    """How many Bytewax processes ``pulse flow`` runs by default on ``cores`` cores: one
    per two. One process keeps 1.5–2 cores busy — its flow thread, the writer's and the
    rollup refresh's ClickHouse work, librdkafka's threads — and two processes spend
    1.2–1.5x its CPU per event (the exchange, and one process spinning in Bytewax's input
    operator while it waits for the other at each epoch's end), so on 2 cores one process
    drains faster than two (docs/benchmarks.md, issue #21)."""
    return max(1, cores // 2)


def run_processes(
    processes: int,
    *,
    flow: str,
    env: Mapping[str, str],
    recovery_dir: Path,
    epoch: timedelta = timedelta(seconds=5),
) -> None:
    """Run the event flow as ``processes`` Bytewax processes on this host (``-i/-a`` on
    loopback), each with its own interpreter lock: the flow's Python work then uses as
    many cores. ``flow`` is the runner's import string of the function that builds the
    flow (an entry point reading its settings), ``env`` the processes' environment: the
    caller's, with the shards' state directory (``recovery_dir / "state"``, as with
    :func:`run_flow`, so either can resume the other's recovery) and the idle stop.
    Returns when every process has ended; if one fails, the others are stopped and the
    error is raised."""
    recovery_config(recovery_dir, processes)
    addresses = ";".join(f"127.0.0.1:{_free_port()}" for _ in range(processes))
    epoch_s = str(round(epoch.total_seconds()))  # the runner takes whole seconds
    runner = [sys.executable, "-m", "bytewax.run", flow, "-a", addresses,
              "-r", str(recovery_dir), "-s", epoch_s, "-b", "0"]  # fmt: skip
    running = [subprocess.Popen([*runner, "-i", str(i)], env=dict(env)) for i in range(processes)]
    try:
        while any(proc.poll() is None for proc in running):
            failed = [p for p in running if p.returncode not in (None, 0)]
            if failed:
                _stop(running)
                raise RuntimeError(
                    f"flow process {running.index(failed[0])} exited with {failed[0].returncode}"
                )
            time.sleep(0.05)
    except BaseException:
        _stop(running)
        raise
    codes = [proc.returncode for proc in running]
    if any(codes):
        raise RuntimeError(f"flow processes exited with {codes}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(running: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """Ask the processes still running to stop, then kill those that do not."""
    for proc in running:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FlowThread:
    """The flow running beside other parts of ``pulse up``, stopped cleanly on request."""

    def __init__(self, config: FlowConfig, *, workers: int = 1, recovery_dir: Path | None = None):
        self._stop = threading.Event()
        self._drain = threading.Event()
        self.status = WriteStatus()
        self._config = dataclasses.replace(
            config, stop=self._stop, drain=self._drain, write_status=self.status
        )
        self._workers = workers
        self._recovery_dir = recovery_dir
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pulse-flow", daemon=True)

    def _run(self) -> None:
        try:
            run_flow(self._config, workers=self._workers, recovery_dir=self._recovery_dir)
        except BaseException as exc:  # surfaced by stop() and the health endpoint
            self.error = exc
            _log.exception("the flow stopped with an error")

    @property
    def alive(self) -> bool:
        """Whether the flow is still running."""
        return self._thread.is_alive()

    def check(self) -> None:
        """Readiness: raise when the flow is not running, or its writes keep failing."""
        if not self.alive:
            error = self.error
            why = "" if error is None else f": {type(error).__name__}: {str(error)[:200]}"
            raise PulseError(f"the flow is not running{why}")
        self.status.check()

    def start(self) -> FlowThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0, *, drain: float = 0.0) -> bool:
        """Stop the flow: with ``drain`` seconds, first let it read every topic to its end
        and write it; then ask every partition to end, and wait for the last snapshot and
        writes. Returns whether everything read was written (it ended without error)."""
        if not self._thread.is_alive():
            return self.error is None
        if drain > 0:
            self._drain.set()
            deadline = time.monotonic() + drain
            while self._thread.is_alive() and time.monotonic() < deadline:
                if self.status.failing_since is not None:
                    break  # the warehouse is unavailable: nothing more can be written now
                self._thread.join(0.2)
        self._stop.set()  # a write being retried gives up: its epoch is not committed
        self._thread.join(timeout if self.status.failing_since is None else min(timeout, 5.0))
        return not self._thread.is_alive() and self.error is None
