"""Rendering dashboard definitions for the built-in pages (served at ``/`` by the API).

The page is static HTML/JS/CSS from ``dashboards/static`` with the dashboards embedded as a
JSON document: each panel says which JSON API route feeds it. The browser then calls the
API itself with the key the user entered (``Authorization: Bearer``), so the page holds no
data and no secret. Static files are served gzip-compressed from memory, each with a
content hash so that browsers can cache them for good.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from dashboards.catalog import DASHBOARDS
from dashboards.grafana import TIMEZONES
from dashboards.model import (
    Dashboard,
    ExperimentData,
    FunnelData,
    HealthData,
    InsightsData,
    MetricData,
    Panel,
    ProductsData,
)
from warehouse.metrics import METRICS

__all__ = ["DEFINITIONS", "STATIC_DIR", "Asset", "asset", "index_html", "page_spec"]

DEFINITIONS = {
    "events": "accepted events",
    "pageviews": "page and product views",
    "visitors": "distinct users with an event",
    "sessions": "distinct sessions with an event",
    "traffic_sources": "sessions by channel",
    "bounce_rate": "sessions that start here with exactly one event / those sessions",
    "pages_per_session": "page views per session, sessions that start here",
    "avg_session_duration_s": "last event − first event, sessions that start here",
    "orders": "distinct orders",
    "revenue": "sum of order revenue in EUR",
    "aov": "revenue / orders, EUR",
    "conversion_rate": "session conversion: sessions with a purchase / sessions",
    "add_to_cart_rate": "sessions with an add-to-cart / sessions",
    "revenue_per_visitor": "revenue / visitors, EUR",
    "units": "items sold",
}
"""What each METRICS.md number is, in a few words: said under every tile and chart (and
in the insight cards) so that no one confuses a per-bucket rate with a range total."""

STATIC_DIR = Path(str(resources.files("dashboards") / "static"))
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml",
          ".txt": "text/plain; charset=utf-8"}  # fmt: skip
_KINDS = {MetricData: "metric", FunnelData: "funnel", InsightsData: "insights",
          HealthData: "health", ProductsData: "products",
          ExperimentData: "experiment"}  # fmt: skip


@dataclass(frozen=True)
class Asset:
    """A static file ready to send: raw and gzip bytes, type and a content hash."""

    body: bytes
    gzipped: bytes
    content_type: str
    etag: str


def _make_asset(body: bytes, content_type: str) -> Asset:
    digest = hashlib.sha256(body).hexdigest()[:16]
    # mtime=0: the same bytes every time, so the compressed size is reproducible.
    return Asset(body, gzip.compress(body, 9, mtime=0), content_type, digest)


@cache
def asset(name: str) -> Asset | None:
    """A file of ``dashboards/static`` by its relative name (None if there is none)."""
    known = {p.relative_to(STATIC_DIR).as_posix(): p for p in STATIC_DIR.rglob("*") if p.is_file()}
    path = known.get(name)  # only names that exist: no path tricks
    if path is None or name == "index.html":
        return None
    return _make_asset(path.read_bytes(), _TYPES.get(path.suffix, "application/octet-stream"))


def _panel(panel: Panel) -> dict[str, Any]:
    data = dataclasses.asdict(panel.data)
    data["kind"] = _KINDS[type(panel.data)]
    if isinstance(panel.data, MetricData):
        data["where"] = dict(panel.data.where)
        data["by"] = panel.data.breakdown
    out = dataclasses.asdict(panel)
    out["data"] = data
    out["thresholds"] = [dataclasses.asdict(t) for t in panel.thresholds]
    return out


def _board(board: Dashboard) -> dict[str, Any]:
    return {
        "uid": board.uid,
        "title": board.title,
        "description": board.description,
        "refresh_s": board.refresh_s,
        "default_range": board.default_range,
        "panels": [_panel(p) for p in board.panels],
    }


def page_spec(timezone: str = "UTC", allowed_lateness_s: int = 600) -> dict[str, Any]:
    """What the page needs to know: the dashboards and the installation's defaults."""
    zones = [timezone, *(z for z in TIMEZONES if z != timezone)]
    return {
        "dashboards": [_board(b) for b in DASHBOARDS],
        "timezone": timezone,
        "timezones": zones,
        "allowed_lateness_s": allowed_lateness_s,
        # a breakdown of a ratio is ranked by its slices' sessions, not by the ratio
        "ratio_metrics": [name for name, m in METRICS.items() if m.kind == "ratio"],
        "definitions": {name: DEFINITIONS.get(name, name) for name in METRICS},
    }


@cache
def index_html(timezone: str = "UTC", allowed_lateness_s: int = 600) -> Asset:
    """The page: ``static/index.html`` with the spec inlined and asset URLs versioned."""
    html = (STATIC_DIR / "index.html").read_text()
    spec = json.dumps(page_spec(timezone, allowed_lateness_s), separators=(",", ":"))
    # "</" inside a <script> block would end it early.
    html = html.replace("{{SPEC}}", spec.replace("</", "<\\/"))
    for name in ("app.js", "app.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"):
        found = asset(name)
        version = found.etag if found else "missing"
        html = html.replace(f'/static/{name}"', f'/static/{name}?v={version}"')
    return _make_asset(html.encode(), _TYPES[".html"])
