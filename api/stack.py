"""Starting the parts of Pulse in one process (``pulse up`` / ``pulse serve``), and stopping
them in the order that loses nothing (CONTRACT §12)."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from kafka import KafkaAdminClient

from api.deps import Services
from api.keys import KeyStore, ensure_key_file
from flows.config import flow_config
from flows.run import FlowThread
from ingest.broker import EmbeddedBroker, wait_for_port
from ingest.collector import Collector
from ingest.errors import BrokerError
from ingest.fx import FxRates, load_fx_rates
from ingest.producer import ConfluentProducer
from ingest.settings import Settings
from ingest.topics import Topics, ensure_topics
from warehouse.client import Client, connect, has_schema, presence_check, redact_dsn
from warehouse.migrate import migrate
from warehouse.reference_data import sync_fx_rates

if TYPE_CHECKING:
    from insights.runner import DetectorLoop

__all__ = [
    "Stack",
    "broker_pid_file",
    "broker_ready",
    "embedded_broker",
    "flow_config",
    "open_stack",
    "open_warehouse",
    "pulse_pid_file",
    "recovery_dir",
    "require_broker",
]

_log = logging.getLogger(__name__)


@dataclass
class Stack:
    """The started parts; closed by :func:`open_stack`'s context."""

    settings: Settings
    bootstrap: str
    topics: Topics
    fx: FxRates
    warehouse: Client | None
    services: Services
    producer: ConfluentProducer
    notes: list[str] = field(default_factory=list)  # said once at start-up
    parts: _Parts | None = None  # after the stack closed: parts.clean says how it went


def require_broker(bootstrap: str, embedded: bool, timeout: float = 3.0) -> None:
    """Fail with advice when no broker answers at ``bootstrap``."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        wait_for_port(host, int(port), timeout)
    except BrokerError:
        hint = (
            "start `pulse up` or `pulse broker`, or set PULSE_KAFKA_BOOTSTRAP"
            if embedded
            else "check PULSE_KAFKA_BOOTSTRAP"
        )
        raise BrokerError(f"no Kafka broker answers at {bootstrap}: {hint}") from None


def broker_ready(bootstrap: str) -> None:
    """Readiness check: the broker answers a metadata request."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        admin.list_topics()
    finally:
        admin.close()


def broker_pid_file(settings: Settings) -> Path:
    """Where the embedded broker of this ``PULSE_HOME`` is recorded."""
    return settings.home / "broker.pid"


def pulse_pid_file(settings: Settings) -> Path:
    """Where the running ``pulse up`` / ``pulse demo`` of this ``PULSE_HOME`` is recorded."""
    return settings.home / "pulse.pid"


def embedded_broker(settings: Settings) -> EmbeddedBroker:
    """The embedded broker of this home (reattached by ``start()`` if one runs)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    return EmbeddedBroker(
        settings.bootstrap,
        log_file=settings.home / "broker.log",
        pid_file=broker_pid_file(settings),
    )


def recovery_dir(settings: Settings) -> Path:
    """Bytewax recovery state (offsets, shard generations; the shards' states beside).
    Kept across restarts: with a broker reattached the offsets are still valid, and a
    broker that restarted empty is noticed by the flow's source, which then reads the new
    topics from their start."""
    return settings.home / "recovery"


def _had_state(settings: Settings) -> list[str]:
    """What in ``PULSE_HOME`` says a warehouse was used there before."""
    found = []
    if any(recovery_dir(settings).glob("part-*.sqlite3")):
        found.append("the flow's recovery state")
    if (settings.home / "cli-read.key").exists():
        found.append("the key `pulse up` leaves for local commands")
    return found


def open_warehouse(settings: Settings, fx: FxRates | None = None) -> tuple[Client, list[str]]:
    """Open the warehouse, apply the schema (and FX rates). When the warehouse is new but
    this home has state from an earlier run (its warehouse was deleted or lost), say so
    and start the flow's state afresh, so that the flow re-reads what the broker still
    holds instead of resuming past it: the new warehouse is then not silently partial.
    Returns the client and the notes to show."""
    client = connect(settings.warehouse_dsn)
    notes = []
    if not has_schema(client) and (earlier := _had_state(settings)):
        notes.append(
            f"[yellow]warning:[/yellow] the warehouse {redact_dsn(settings.warehouse_dsn)} is "
            f"new (missing or empty), but {settings.home} has {' and '.join(earlier)} from an "
            "earlier run: starting with an empty warehouse. The flow reads again everything "
            "the broker still holds; events no longer on the broker are not in it."
        )
        _log.warning("warehouse missing where Pulse had state: starting it afresh")
        for stale in (recovery_dir(settings), settings.home / "flow-state"):
            shutil.rmtree(stale, ignore_errors=True)
    migrate(client)
    if fx is not None:
        sync_fx_rates(client, fx)
    return client, notes


def write_cli_key(settings: Settings, keys: KeyStore) -> Path:
    """A read key for local commands (``pulse query``) while this process holds the
    embedded warehouse; stored like a password file (mode 0600) under PULSE_HOME, and
    reused by the next start while it is valid."""
    return ensure_key_file(keys, settings.home / "cli-read.key", "read", name="cli-read")


def _warehouse_ready(client: Client, present: Callable[[], None]) -> None:
    present()
    client.command("SELECT 1")


@dataclass
class _Parts:
    """What :func:`open_stack` started, stopped in the order that loses nothing."""

    drain_s: float
    broker: EmbeddedBroker | None = None
    producer: ConfluentProducer | None = None
    flow: FlowThread | None = None
    detector: DetectorLoop | None = None
    clean: bool = True  # after close(): everything read was written and stopped

    def close(self) -> None:
        """Detector, then the producer (what it holds reaches the broker), then the flow —
        which, on the embedded broker, first reads every topic to its end (the broker
        keeps records in memory only) — then the broker. A broker whose records could
        not all be written is left running: the next ``pulse up`` reattaches to it."""
        if self.detector is not None:
            self.detector.stop()
        if self.producer is not None:
            self.producer.close()
        drained = True
        if self.flow is not None:
            drain = self.drain_s if self.broker is not None else 0.0
            drained = self.flow.stop(timeout=20.0, drain=drain)
        self.clean = drained
        if self.broker is None:
            return
        if drained:
            self.broker.stop()
            return
        _log.error(
            "the flow could not write everything it read to the warehouse: the embedded "
            "broker (pid %s) is left running with those events; the next `pulse up` "
            "reattaches to it and writes them (`pulse stop --force` discards them)",
            self.broker.pid,
        )


def _unless_handed_over(parts: _Parts, name: str, stop: Callable[[], None]) -> None:
    """Stop a part started before start-up failed (once handed over, ``parts`` stops it)."""
    if getattr(parts, name) is None:
        stop()


@contextlib.contextmanager
def open_stack(
    settings: Settings,
    *,
    start_broker: bool,
    use_warehouse: bool = True,
    run_flow: bool = False,
    run_detector: bool = False,
) -> Iterator[Stack]:
    """Broker (embedded when asked: reattached if one runs for this home), topics,
    warehouse schema, flow, collector and API."""
    with contextlib.ExitStack() as stack:
        notes: list[str] = []
        bootstrap = settings.bootstrap
        parts = _Parts(drain_s=settings.stop_timeout.total_seconds() * 0.6)
        if start_broker:
            broker = embedded_broker(settings).start()
            if broker.reattached:
                notes.append(
                    f"reattached to the embedded broker left running at {bootstrap} "
                    f"(pid {broker.pid}): what it holds is read on"
                )
            else:
                # stopped if start-up fails below; a reattached one holds events: left alone
                stack.callback(_unless_handed_over, parts, "broker", broker.stop)
        else:
            require_broker(bootstrap, settings.embedded_broker)
        topics = Topics(settings.topic_prefix)
        ensure_topics(bootstrap, topics, settings.topic_partitions)
        fx = load_fx_rates(settings.fx_rates)
        warehouse = None
        if use_warehouse:
            warehouse, more = open_warehouse(settings, fx)
            notes += more
        producer = ConfluentProducer(
            bootstrap,
            on_new_broker=partial(ensure_topics, bootstrap, topics, settings.topic_partitions),
        )
        stack.callback(_unless_handed_over, parts, "producer", producer.close)
        services = Services(
            keys=KeyStore(settings.keys_file),
            cors_origins=frozenset(settings.cors_origins),
            collector=Collector(producer, topics, fx.currencies),
            warehouse=warehouse,
            timezone=settings.timezone,
            allowed_lateness=settings.allowed_lateness,
            readiness={"broker": producer.check},
        )
        if warehouse is not None:
            present = presence_check(settings.warehouse_dsn)
            services.warehouse_check = present
            services.readiness["warehouse"] = partial(_warehouse_ready, warehouse, present)
            if settings.warehouse_dsn.startswith("chdb://"):
                write_cli_key(settings, services.keys)
        # from here on, leaving stops everything in order
        parts.broker = broker if start_broker else None
        parts.producer = producer
        stack.callback(parts.close)
        if run_flow:
            parts.flow = FlowThread(flow_config(settings, fx), recovery_dir=recovery_dir(settings))
            parts.flow.start()
            services.readiness["flow"] = parts.flow.check
        if run_detector and warehouse is not None:
            from insights.runner import DetectorLoop, detect_config

            parts.detector = DetectorLoop(
                lambda: connect(settings.warehouse_dsn), detect_config(settings)
            ).start()
            services.readiness["detector"] = parts.detector.check
        yield Stack(settings, bootstrap, topics, fx, warehouse, services, producer, notes, parts)
