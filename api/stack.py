"""Starting the parts of Pulse in one process (``pulse up`` / ``pulse serve``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

from kafka import KafkaAdminClient

from api.deps import Services
from api.keys import KeyStore
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

__all__ = ["Stack", "broker_ready", "open_stack", "require_broker"]


@dataclass
class Stack:
    """The started parts; closed by :func:`open_stack`'s context."""

    settings: Settings
    bootstrap: str
    topics: Topics
    fx: FxRates
    warehouse: Client | None
    services: Services


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


@contextlib.contextmanager
def open_stack(
    settings: Settings, *, start_broker: bool, use_warehouse: bool = True
) -> Iterator[Stack]:
    """Broker (embedded when asked), topics, warehouse schema, collector and API services."""
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
            collector=Collector(producer, topics, fx.currencies),
            readiness={"broker": lambda: broker_ready(bootstrap)},
        )
        if warehouse is not None:
            services.readiness["warehouse"] = partial(warehouse.command, "SELECT 1")
        yield Stack(settings, bootstrap, topics, fx, warehouse, services)
