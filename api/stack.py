"""Starting the parts of Pulse in one process (``pulse up`` / ``pulse serve``)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

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
from warehouse.client import Client, connect
from warehouse.migrate import migrate
from warehouse.reference_data import sync_fx_rates

__all__ = ["Stack", "broker_ready", "flow_config", "open_stack", "recovery_dir", "require_broker"]


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


def recovery_dir(settings: Settings) -> Path:
    """Bytewax recovery state. The embedded broker keeps topics in memory only, so its
    offsets mean nothing after a restart: the state is started afresh (re-reading is
    harmless, every write is idempotent)."""
    directory = settings.home / "recovery"
    if settings.embedded_broker and directory.exists():
        shutil.rmtree(directory)
    return directory


def write_cli_key(settings: Settings, keys: KeyStore) -> Path:
    """A read key for local commands (``pulse query``) while this process holds the
    embedded warehouse; stored like a password file (mode 0600) under PULSE_HOME, and
    reused by the next start while it is valid."""
    return ensure_key_file(keys, settings.home / "cli-read.key", "read", name="cli-read")


@contextlib.contextmanager
def open_stack(
    settings: Settings,
    *,
    start_broker: bool,
    use_warehouse: bool = True,
    run_flow: bool = False,
    run_detector: bool = False,
) -> Iterator[Stack]:
    """Broker (embedded when asked), topics, warehouse schema, flow, collector and API."""
    with contextlib.ExitStack() as stack:
        bootstrap = settings.bootstrap
        if start_broker:
            settings.home.mkdir(parents=True, exist_ok=True)
            broker = EmbeddedBroker(bootstrap, log_file=settings.home / "broker.log")
            stack.enter_context(broker)
        else:
            require_broker(bootstrap, settings.embedded_broker)
        topics = Topics(settings.topic_prefix)
        ensure_topics(bootstrap, topics, settings.topic_partitions)
        fx = load_fx_rates(settings.fx_rates)
        warehouse = None
        if use_warehouse:
            warehouse = connect(settings.warehouse_dsn)
            migrate(warehouse)
            sync_fx_rates(warehouse, fx)
        producer = ConfluentProducer(bootstrap)
        stack.callback(producer.close)
        services = Services(
            keys=KeyStore(settings.keys_file),
            cors_origins=frozenset(settings.cors_origins),
            collector=Collector(producer, topics, fx.currencies),
            warehouse=warehouse,
            timezone=settings.timezone,
            allowed_lateness=settings.allowed_lateness,
            readiness={"broker": lambda: broker_ready(bootstrap)},
        )
        if warehouse is not None:
            services.readiness["warehouse"] = partial(warehouse.command, "SELECT 1")
            if settings.warehouse_dsn.startswith("chdb://"):
                write_cli_key(settings, services.keys)
        flow = None
        if run_flow:
            flow = FlowThread(flow_config(settings, fx), recovery_dir=recovery_dir(settings))
            flow.start()
            stack.callback(flow.stop)
            services.readiness["flow"] = flow.check
        if run_detector and warehouse is not None:
            from insights.runner import DetectorLoop, detect_config

            loop = DetectorLoop(lambda: connect(settings.warehouse_dsn), detect_config(settings))
            loop.start()
            stack.callback(loop.stop)
            services.readiness["detector"] = loop.check
        yield Stack(settings, bootstrap, topics, fx, warehouse, services, producer)
