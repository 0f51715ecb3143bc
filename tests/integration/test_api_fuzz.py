"""Fuzzing the live API from its own OpenAPI document (schemathesis).

The real app under uvicorn, with the collector on the real broker and a chDB warehouse
filled by the real pipeline, so the metric routes run real queries. Every operation gets a
bounded number of generated requests (valid and invalid), with an admin key and with no
key; every answer must be documented (status, content type, body schema) and none may be
a 5xx. Requests are sent with httpx: the ``requests`` stack schemathesis uses by default
is shadowed here by ``urllib3-future`` (pulled in by ``niquests``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, reject, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.deps import Services
from api.erasure import Eraser
from api.keys import KeyStore
from api.ratelimit import RateLimit, RateLimiter
from ingest.collector import Collector
from ingest.fx import load_fx_rates
from ingest.producer import ConfluentProducer
from ingest.topics import Topics, ensure_topics
from tests.conftest import free_port
from tests.pipeline import run_pipeline, synthetic_events, utc
from tests.servers import serve_in_thread
from warehouse.client import connect
from warehouse.migrate import migrate

pytestmark = pytest.mark.integration

# Generated requests per operation (~15 operations): ~1.5 minutes here in all. Without a
# key every keyed route answers 401 before reading anything, so fewer tell as much.
EXAMPLES, EXAMPLES_WITHOUT_KEY = 40, 15
# Every answer documented and no 5xx, and invalid requests refused. Not checked: that each
# schema-valid request is accepted (OpenAPI cannot say "to after from" or the point
# budget, so some are 400s by design), and the checks that send requests of their own
# through `requests`.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@dataclass
class Target:
    url: str
    keys: dict[str, str]
    spec: dict[str, Any]
    client: httpx.Client


@pytest.fixture(scope="module")
def target(broker, warehouse_dsn, tmp_path_factory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    database = f"fuzz_{uuid.uuid4().hex[:8]}"
    warehouse = connect(warehouse_dsn, database)
    migrate(warehouse)
    run_pipeline(
        broker.bootstrap, warehouse_dsn, database, synthetic_events(60, utc(2026, 10, 24)), tmp
    )
    topics = Topics(prefix=f"fz{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, topics, partitions=2)
    producer = ConfluentProducer(broker.bootstrap)
    store = KeyStore(tmp / "keys.json")
    keys = {scope: store.create(scope) for scope in ("ingest", "read", "admin")}
    services = Services(
        keys=store,
        collector=Collector(producer, topics, load_fx_rates().currencies),
        warehouse=warehouse,
        allowed_lateness=timedelta(minutes=10),
        # the fuzzer is one very busy client: its key is not to be throttled here
        limiter=RateLimiter({"admin": RateLimit(per_second=10_000, burst=100_000)}),
        eraser=Eraser(warehouse, b"fuzz-salt-16byte"),  # DELETE /v1/users, without a flow
    )
    port = free_port()
    server, thread = serve_in_thread(create_app(services), port)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=60) as client:
        yield Target(url, keys, client.get(f"{url}/openapi.json").json(), client)
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(10)
    producer.close()
    warehouse.command(f"DROP DATABASE IF EXISTS `{database}`")


def _document() -> dict[str, Any]:
    """The app's OpenAPI document (the same for every app: the routes are fixed)."""
    return create_app(Services(keys=KeyStore(Path("/nonexistent/keys.json")))).openapi()


# Built at import (schemathesis' fixture-based loader does not work with this pytest); the
# first test checks it is the document the live app serves.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")  # JSON lines: text
schema = schemathesis.openapi.from_dict(_document())
schema.config.generation.update(max_examples=EXAMPLES)


def test_the_fuzzed_document_is_the_live_one(target: Target) -> None:
    assert target.spec == _document()
    statuses = {
        (path, method): set(op["responses"])
        for path, item in target.spec["paths"].items()
        for method, op in item.items()
    }
    assert {"400", "401", "403", "413", "429", "503"} <= statuses[("/v1/events", "post")]
    assert "422" not in set().union(*statuses.values())
    metric = target.spec["paths"]["/v1/metrics/{metric}"]["get"]
    enums = {p["name"]: p["schema"].get("enum") for p in metric["parameters"]}
    assert "conversion_rate" in enums["metric"] and enums["interval"] == ["1m", "5m", "1h", "1d"]
    event = target.spec["components"]["schemas"]["Event"]
    assert {"event_id", "type", "ts", "user_id"} <= set(event["required"])


def _call(case: Any, target: Target, key: str | None) -> None:
    sent = case.as_transport_kwargs(base_url=target.url)
    headers = {k: v for k, v in sent["headers"].items() if k.lower() != "authorization"}
    # The generated bearer token stands for a key: ours. A case that leaves the header
    # out on purpose (an invalid request) is sent without one.
    if key is not None and len(headers) < len(sent["headers"]):
        headers["Authorization"] = f"Bearer {key}"
    request: dict[str, Any] = {"params": sent.get("params"), "headers": headers}
    if "json" in sent:
        request["json"] = sent["json"]
    elif sent.get("data") is not None:
        data = sent["data"]
        request["content"] = data.encode() if isinstance(data, str) else data
    try:
        response = target.client.request(sent["method"], sent["url"], **request)
    except httpx.LocalProtocolError:
        reject()  # a header no HTTP client sends (httpx refuses it): nothing to learn
    assert response.status_code < 500, f"{sent['method']} {sent['url']}: {response.text}"
    checks = CHECKS
    if case.operation.path == "/v1/events":
        # By design, events that break the schema are answered 200 with each one listed as
        # rejected (and dead-lettered): they are data, not a bad request (CONTRACT §5).
        checks = [c for c in CHECKS if c is not negative_data_rejection]
        if response.status_code == 200:
            body = response.json()
            assert body["accepted"] >= 0 and all("reason" in r for r in body["rejected"])
    case.validate_response(response, checks=checks, headers=headers)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,  # every run explores afresh; nothing is left in the work tree
    )


@schema.parametrize()
@_settings(EXAMPLES)
def test_fuzz_with_an_admin_key(case: Any, target: Target) -> None:
    _call(case, target, target.keys["admin"])


@schema.parametrize()
@_settings(EXAMPLES_WITHOUT_KEY)
def test_fuzz_without_a_key(case: Any, target: Target) -> None:
    _call(case, target, None)
