"""The metrics API over a warehouse filled by the real pipeline: same document as the CLI,
partial buckets flagged after complete_until, a 400 naming every bad parameter, and every
query bounded (CONTRACT §7, §12)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from tests import reference as ref
from tests.conftest import free_port
from tests.integration.test_flow_parity import assert_same
from tests.pipeline import run_pipeline, synthetic_events, utc
from tests.servers import serve_in_thread
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
        ("/v1/metrics/sessions", {"from": "yesterday"}, "from"),
        ("/v1/metrics/sessions", {"to": START.isoformat()}, "to: must be after from"),
        ("/v1/metrics/sessions", {"from": END.isoformat(), "to": START.isoformat()}, "to:"),
        # what an attacker asked: every minute from 1970 to 2100, years 9999 and 0207
        ("/v1/metrics/events", {"from": "1970-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z",
                                "interval": "1m"}, "from: 1970-01-01"),
        ("/v1/metrics/events", {"to": "9999-12-31T00:00:00Z", "interval": "1d"}, "to: 9999"),
        ("/v1/metrics/events", {"from": "0207-12-14T07:01:30+14:00"}, "from: 0207"),
        ("/v1/metrics/events", {"from": "2001-01-01T00:00:00Z", "to": "2099-01-01T00:00:00Z",
                                "interval": "1d"}, "days, over the"),
        ("/v1/metrics/events", {"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z",
                                "interval": "1m"}, "525,600 buckets over the 200,000 budget"),
        ("/v1/funnel", {"from": "0586-01-01T00:00:00Z"}, "from: 0586"),
        ("/v1/funnel", {"to": START.isoformat()}, "to: must be after from"),
        ("/v1/products/top", {"from": "0586-01-01T00:00:00Z", "to": "0713-01-01T00:00:00Z"},
         "from: 0586"),
        ("/v1/products/top", {"where": "colour=red"}, "unknown dimension"),
        ("/v1/products/top", {"limit": "-1"}, "limit"),
        ("/v1/insights", {"since": "0207-12-14T07:01:30Z"}, "since: 0207"),
        ("/v1/insights", {"since": "not a time"}, "since"),
        ("/v1/insights", {"severity": "apocalyptic"}, "severity"),
        ("/v1/insights", {"metric": "nope"}, "unknown metric"),
        ("/v1/realtime", {"window": "99999999999999999999d"}, "window"),
        ("/v1/realtime", {"window": "0s"}, "window"),
        ("/v1/realtime", {"window": "32d"}, "window"),
    ],
)  # fmt: skip
def test_bad_parameters_are_400_naming_them(served, path: str, params: dict, fragment: str) -> None:
    url, headers, _ = served
    full = {"from": START.isoformat(), "to": END.isoformat(), **params}
    started = time.monotonic()
    r = httpx.get(f"{url}{path}", params=full, headers=headers, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_parameters"
    assert fragment in r.json()["error"]["message"], r.json()
    assert time.monotonic() - started < 2, "refused only after working on it"


def test_too_many_slices_are_refused_before_the_series_is_read(served) -> None:
    url, headers, _ = served
    month = {"from": "2026-10-01T00:00:00Z", "to": "2026-10-31T00:00:00Z", "interval": "1m"}
    r = httpx.get(f"{url}/v1/metrics/events", params={**month, "by": "country"},
                  headers=headers, timeout=30)  # fmt: skip
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    # five countries and "none" in the data: 43,200 minutes × 6 slices
    assert "43,200 buckets × 6 slices over the 200,000 budget" in message, message
    assert "coarser interval" in message


@pytest.mark.parametrize("by", [None, "device"])
def test_a_month_by_minute_is_answered(served, by: str | None) -> None:
    """What a real dashboard may ask stays within the limits: 30 days at 1m on one slice
    (and by device: 4 slices)."""
    url, headers, events = served
    month = {"from": "2026-10-01T00:00:00Z", "to": "2026-10-31T00:00:00Z", "interval": "1m"}
    params = {**month, **({"by": by} if by else {})}
    r = httpx.get(f"{url}/v1/metrics/events", params=params, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    series = r.json()["series"]
    slices = len({p.get(by) for p in series}) if by else 1
    assert len(series) == 43_200 * slices
    want = ref.metric_series(events, "events", start=utc(2026, 10, 1), end=utc(2026, 10, 31),
                             interval="1d")  # fmt: skip
    assert sum(p["value"] for p in series) == sum(p["value"] for p in want) > 0
