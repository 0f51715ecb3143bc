"""The built-in pages and the dashboards API: public page, keyed data, compressed assets."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from api.routes import dashboards as dashboards_route
from dashboards.catalog import DASHBOARDS
from dashboards.pages import STATIC_DIR, page_spec
from dashboards.validate import validate


@pytest.fixture
def client(tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    store = KeyStore(tmp_path / "keys.json")
    keys = {s: store.create(s) for s in ("ingest", "read", "admin")}
    app = create_app(Services(keys=store, timezone="Europe/Warsaw"))
    if not any(getattr(r, "path", None) == "/v1/dashboards" for r in app.routes):
        app.include_router(dashboards_route.router)
    return TestClient(app), keys


def test_page_is_public_and_inlines_the_dashboards(client) -> None:
    http, _ = client
    r = http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    spec_text = re.search(r'id="pulse-spec" type="application/json">(.*?)</script>', r.text)
    assert spec_text
    spec = json.loads(spec_text.group(1))
    assert [b["uid"] for b in spec["dashboards"]] == [b.uid for b in DASHBOARDS]
    assert spec["timezone"] == "Europe/Warsaw"
    # No CDN: every script and stylesheet comes from this server.
    for url in re.findall(r'(?:src|href)="([^"]+)"', r.text):
        assert url.startswith(("/static/", "data:", "#")), url


def test_assets_are_compressed_versioned_and_cached(client) -> None:
    http, _ = client
    page = http.get("/", headers={"Accept-Encoding": "gzip"})
    assert page.headers["content-encoding"] == "gzip"
    total = len(gzip.compress(page.content))  # what went over the wire, roughly
    for url in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        r = http.get(url, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200, url
        assert r.headers["content-encoding"] == "gzip"
        assert "immutable" in r.headers["cache-control"]
        total += int(r.headers["content-length"])
        again = http.get(url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
    assert total < 500 * 1024


def test_static_files_cannot_escape(client) -> None:
    http, _ = client
    assert http.get("/static/../pages.py").status_code == 404
    assert http.get("/static/%2e%2e/pages.py").status_code == 404
    assert http.get("/static/nope.js").status_code == 404


def test_dashboards_api_needs_a_read_key(client) -> None:
    http, keys = client
    assert http.get("/v1/dashboards").status_code == 401
    assert http.get("/v1/dashboards", headers=_auth(keys["ingest"])).status_code == 403
    listed = http.get("/v1/dashboards", headers=_auth(keys["read"])).json()["dashboards"]
    assert [d["uid"] for d in listed] == [b.uid for b in DASHBOARDS]
    for entry in listed:
        data = http.get(entry["grafana_json_url"], headers=_auth(keys["read"])).json()
        assert validate(data) == [] and data["timezone"] == "Europe/Warsaw"
    missing = http.get("/v1/dashboards/nope", headers=_auth(keys["admin"]))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_page_keeps_keys_out_of_urls_and_storage_of_other_tabs() -> None:
    js = (STATIC_DIR / "app.js").read_text()
    assert "sessionStorage" in js and "localStorage.setItem('pulse.key'" not in js
    assert "Authorization: 'Bearer ' + key" in js
    assert not re.search(r"[?&](key|token|api_key)=", js)


def test_vendored_chart_library_ships_with_its_license() -> None:
    vendor = STATIC_DIR / "vendor"
    assert (vendor / "uPlot.iife.min.js").stat().st_size > 10_000
    assert "MIT License" in (vendor / "uPlot.LICENSE.txt").read_text()


def test_spec_panels_name_an_api_route() -> None:
    for board in page_spec()["dashboards"]:
        for panel in board["panels"]:
            assert panel["data"]["kind"] in {
                "metric",
                "funnel",
                "products",
                "insights",
                "health",
                "experiment",
            }


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
