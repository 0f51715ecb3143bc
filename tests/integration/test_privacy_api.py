"""DELETE /v1/users/{user_id} (CONTRACT §7, §11) on the real app and warehouse: admin scope
only, JSON errors, the answer, the audit (the key's name, a salted hash), ids with a slash."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from api.deps import Services
from api.erasure import Eraser
from api.keys import KeyStore
from tests.conftest import free_port
from tests.servers import serve_in_thread
from warehouse.writer import WarehouseWriter

pytestmark = pytest.mark.integration

T0 = 1_795_176_000_000


def _write(client, batch) -> None:
    writer = WarehouseWriter(client)
    writer.write_many([writer.encode(batch)])


def _row(event_id: str, user: str, ts: int, **kw: object) -> list[object]:
    base: dict[str, object] = {
        "ts": ts, "event_id": event_id, "type": "page_view", "user_id": user,
        "session_key": f"{user}/{T0}", "country": "DE", "device": "mobile", "channel": "",
        "page": "", "product_id": "", "category": "", "price_eur": None, "quantity": 0,
        "query": "", "cart_value_eur": None, "order_id": "", "revenue_eur": None,
        "is_order": 0, "items.product_id": [], "items.category": [], "items.price_eur": [],
        "items.quantity": [], "version": 0, "topic": "t", "partition": 0, "offset": 0,
    }  # fmt: skip
    base.update(kw)
    from warehouse.writer import COLUMNS

    return [base[c] for c in COLUMNS["events"]]


@pytest.fixture
def app_with_warehouse(warehouse, tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    keys = {s: store.issue(s, name=f"{s}-key")[1] for s in ("read", "admin")}
    services = Services(keys=store, warehouse=warehouse, eraser=Eraser(warehouse, b"x" * 32))
    port = free_port()
    server, thread = serve_in_thread(create_app(services), port)
    yield f"http://127.0.0.1:{port}", keys, warehouse, services
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(10)


def test_delete_user(app_with_warehouse) -> None:
    url, keys, client, services = app_with_warehouse
    _write(
        client,
        {
            "events": [_row("a", "shop/user 1", T0), _row("b", "shop/user 1", T0 + 1000),
                       _row("c", "other", T0, session_key="s-other")],
            "sessions": [[f"shop/user 1/{T0}", "shop/user 1", T0, T0 + 1000, "DE", "mobile",
                          "", 2, 2, 0, 0]],
            "duplicates": [[T0, "a", "t", 0, 99]],
        }
    )  # fmt: skip
    target = f"{url}/v1/users/shop%2Fuser%201"
    r = httpx.delete(target)
    assert r.status_code == 401 and r.json()["error"]["code"]
    r = httpx.delete(target, headers={"Authorization": f"Bearer {keys['read']}"})
    assert r.status_code == 403 and r.json()["error"]["code"]
    r = httpx.delete(target, headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["erased"] == {"events": 2, "orders": 0, "exposures": 0, "sessions": 1,
                             "duplicates": 1}  # fmt: skip
    assert doc["flow_acknowledged"] is False  # no flow here
    assert "shop/user" not in r.text
    left = client.query("SELECT event_id FROM events FINAL").result_rows
    assert left == [("c",)]
    assert client.query("SELECT count() FROM duplicates").result_rows[0][0] == 0
    audit = client.query("SELECT key_name, id_hash, events, sessions FROM erasures")
    assert audit.result_rows == [("admin-key", doc["id_hash"], 2, 1)]
    assert doc["id_hash"] == services.eraser.id_hash("shop/user 1")
    r = httpx.delete(target, headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=60)
    assert r.json()["erased"] == dict.fromkeys(doc["erased"], 0)


def test_delete_user_without_a_warehouse_is_a_json_503(api) -> None:
    r = httpx.delete(f"{api.url}/v1/users/u1", headers=api.auth("admin"))
    assert r.status_code == 503 and r.json()["error"]["code"]
    assert httpx.delete(f"{api.url}/v1/users/u1", headers=api.auth("ingest")).status_code == 403


def test_no_erasure_without_the_broker(app_with_warehouse) -> None:
    url, keys, client, services = app_with_warehouse
    _write(client, {"events": [_row("a", "u1", T0)]})
    services.eraser.announce = lambda user, before_ms: None  # the broker did not take it
    r = httpx.delete(f"{url}/v1/users/u1", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "broker_unavailable"
    assert client.query("SELECT count() FROM events").result_rows[0][0] == 1
    assert client.query("SELECT count() FROM erasures").result_rows[0][0] == 0
