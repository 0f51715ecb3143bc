"""Checking Grafana dashboard JSON against grafana-foundation-sdk's models.

The SDK's models are generated from Grafana's schema (kinds). A dashboard is valid here when
decoding it with ``Dashboard.from_json`` (with the SDK's panel and query variants plus our
ClickHouse query variant) and encoding it again gives back exactly the same JSON: a field
the schema does not know, a misspelt option or a wrong panel type is lost in that round
trip and reported by path. On top come the checks Grafana does when it loads a dashboard:
unique panel ids, a 24-column grid, known datasources, defined variables.
"""

from __future__ import annotations

import json
import re
from typing import Any

from grafana_foundation_sdk.cog import plugins, runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dash_m

from dashboards import clickhouse_query
from dashboards.clickhouse_query import PLUGIN_ID, ClickHouseQuery

__all__ = ["validate"]

_VARIABLE_USE = re.compile(r"\$\{(\w+)[^}]*\}|\$(\w+)")
_ready = False


def _register() -> None:
    global _ready
    if not _ready:
        plugins.register_default_plugins()
        clickhouse_query.register()
        _ready = True


def _diff(path: str, want: Any, got: Any, out: list[str]) -> None:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in want.keys() | got.keys():
            if key not in got:
                out.append(f"{path}.{key}: not in the schema (lost when decoded)")
            elif key not in want:
                continue  # a default the model adds is fine
            else:
                _diff(f"{path}.{key}", want[key], got[key], out)
    elif isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            _diff(f"{path}[{i}]", a, b, out)
    elif want != got:
        out.append(f"{path}: {json.dumps(want)[:80]} decodes as {json.dumps(got)[:80]}")


def _round_trip(data: dict[str, Any], out: list[str]) -> None:
    # Annotation targets of backend datasources are plain queries (Grafana stores them that
    # way); the SDK types them as the built-in tag query, so check them as queries instead.
    body = json.loads(json.dumps(data))
    for i, anno in enumerate(body.get("annotations", {}).get("list", [])):
        target = anno.pop("target", None)
        if anno.get("datasource", {}).get("type") == PLUGIN_ID and target is not None:
            try:
                ClickHouseQuery.from_json(target)
            except (ValueError, KeyError) as exc:
                out.append(f"annotations.list[{i}].target: {exc}")
    panels = body.pop("panels", [])
    for i, panel in enumerate(panels):
        try:
            decoded = dash_m.Panel.from_json(panel)
        except (ValueError, KeyError, TypeError) as exc:
            out.append(f"panels[{i}] {panel.get('title')!r}: cannot be decoded: {exc}")
            continue
        _diff(
            f"dashboard.panels[{i}]", panel, json.loads(json.dumps(decoded, cls=JSONEncoder)), out
        )
    try:
        model = dash_m.Dashboard.from_json(body)
    except (ValueError, KeyError, TypeError) as exc:
        out.append(f"dashboard: {exc}")
        return
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    _diff("dashboard", body, again, out)


def _panels(data: dict[str, Any], out: list[str]) -> None:
    ids: set[int] = set()
    taken: set[tuple[int, int]] = set()
    variables = {v["name"] for v in data.get("templating", {}).get("list", [])}
    for i, panel in enumerate(data.get("panels", [])):
        where = f"panels[{i}] {panel.get('title')!r}"
        if panel.get("id") in ids:
            out.append(f"{where}: duplicate id {panel.get('id')}")
        ids.add(panel.get("id", -1))
        if runtime.panelcfg_config(panel.get("type", "")) is None:
            out.append(f"{where}: unknown panel type {panel.get('type')!r}")
        grid = panel.get("gridPos", {})
        x, y, w, h = (grid.get(k, 0) for k in ("x", "y", "w", "h"))
        if x < 0 or w < 1 or x + w > 24 or h < 1:
            out.append(f"{where}: gridPos {grid} is outside the 24-column grid")
        cells = {(cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)}
        if cells & taken:
            out.append(f"{where}: overlaps another panel")
        taken |= cells
        targets = panel.get("targets") or []
        if not targets:
            out.append(f"{where}: no query")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            out.append(f"{where}: duplicate refId")
        for t in targets:
            text = t.get("rawSql") or t.get("expr") or ""
            for m in _VARIABLE_USE.finditer(text):
                name = m.group(1) or m.group(2)
                # $__name is a macro of the plugin or a Grafana global, not a variable.
                if not name.startswith("__") and name not in variables:
                    out.append(f"{where}: uses ${name}, which the dashboard does not define")


def validate(data: dict[str, Any]) -> list[str]:
    """Problems with a Grafana dashboard JSON; an empty list means it is valid."""
    _register()
    out: list[str] = []
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in data:
            out.append(f"dashboard.{key}: missing")
    _round_trip(data, out)
    _panels(data, out)
    return out
