"""The metrics API over a warehouse filled by the real pipeline: same document as the CLI,
partial buckets flagged after complete_until, clear 422s."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from tests import reference as ref
from tests.conftest import free_port, serve_in_thread
from tests.integration.test_flow_parity import assert_same
from tests.pipeline import run_pipeline, synthetic_events, utc
from warehouse.client import connect
from warehouse.migrate import migrate

pytestmark = pytest.mark.integration
START, END = utc(2026, 10, 24), utc(2026, 10, 26, 6)


@pytest.fixture(scope="module")
def served(broker, warehouse_dsn, tmp_path_factory) -> Iterator[tuple[str, dict, object]]:
    database = f"api_{uuid.uuid4().hex[:8]}"
    client = connect(warehouse_dsn, database)
    migrate(client)
    tmp = tmp_path_factory.mktemp("api")
    drained = run_pipeline(
        broker.bootstrap, warehouse_dsn, database, synthetic_events(400, START), tmp
    )
    store = KeyStore(tmp / "keys.json")
    headers = {"Authorization": f"Bearer {store.create('read')}"}
    services = Services(keys=store, warehouse=client, allowed_lateness=timedelta(minutes=10))
    port = free_port()
    server, thread = serve_in_thread(create_app(services), port)
    yield f"http://127.0.0.1:{port}", headers, ref.load_events(drained.accepted)
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(10)


def test_metric_document(served) -> None:
    url, headers, events = served
    params = {"from": START.isoformat(), "to": END.isoformat(), "interval": "1d",
              "by": "country", "tz": "Europe/Amsterdam"}  # fmt: skip
    doc = httpx.get(f"{url}/v1/metrics/revenue", params=params, headers=headers).json()
    assert set(doc) == {"metric", "interval", "tz", "complete_until", "series"}
    assert (doc["metric"], doc["interval"], doc["tz"]) == ("revenue", "1d", "Europe/Amsterdam")
    want = ref.metric_series(events, "revenue", start=START, end=END, interval="1d",
                             by="country", tz="Europe/Amsterdam")  # fmt: skip
    got = [{k: v for k, v in p.items() if k != "partial"} for p in doc["series"]]
    assert [(p["ts"], p["country"]) for p in got] == [(p["ts"], p["country"]) for p in want]
    # the newest events bound complete_until: the last day is partial, earlier ones are not
    assert doc["series"][-1].get("partial") is True
    assert not any(p.get("partial") for p in doc["series"] if p["ts"].startswith("2026-10-24"))


def test_funnel_products_and_where(served) -> None:
    url, headers, events = served
    base = {"from": START.isoformat(), "to": END.isoformat()}
    steps = httpx.get(f"{url}/v1/funnel", params={**base, "by": "device"}, headers=headers).json()
    assert [s["step"] for s in steps["steps"][:4]] == [
        "product_view",
        "add_to_cart",
        "begin_checkout",
        "purchase",
    ]
    top = httpx.get(
        f"{url}/v1/products/top", params={**base, "by": "units", "limit": 3}, headers=headers
    )
    want_top = ref.top_products(events, start=START, end=END, by="units", limit=3)
    assert_same(top.json()["products"], want_top, "top products via API")
    where = ["country=DE", "device=mobile"]
    filtered = httpx.get(f"{url}/v1/metrics/sessions", headers=headers,
                         params={**base, "interval": "1d", "where": where})  # fmt: skip
    want = ref.metric_series(events, "sessions", start=START, end=END, interval="1d",
                             where={"country": "DE", "device": "mobile"})  # fmt: skip
    assert [p["value"] for p in filtered.json()["series"]] == [p["value"] for p in want]


@pytest.mark.parametrize(
    ("path", "params", "fragment"),
    [
        ("/v1/metrics/nope", {}, "unknown metric"),
        ("/v1/metrics/sessions", {"by": "category"}, "cannot be sliced by category"),
        ("/v1/metrics/sessions", {"where": "country"}, "DIM=VALUE"),
        ("/v1/metrics/sessions", {"tz": "Mars/Base"}, "unknown timezone"),
        ("/v1/metrics/sessions", {"interval": "7m"}, "interval"),
        ("/v1/funnel", {"by": "category"}, "funnel"),
    ],
)
def test_bad_parameters_are_422_with_a_reason(
    served, path: str, params: dict, fragment: str
) -> None:
    url, headers, _ = served
    full = {"from": START.isoformat(), "to": END.isoformat(), **params}
    r = httpx.get(f"{url}{path}", params=full, headers=headers)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]["message"]
