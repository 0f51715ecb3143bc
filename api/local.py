"""Local command helpers: answer from the warehouse, or through a running ``pulse up``.

The embedded warehouse can be open in one process only. When ``pulse up`` holds it,
``pulse query`` asks that process's API instead, with the read key it left in PULSE_HOME.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from ingest.errors import PulseError, WarehouseBusy
from ingest.settings import Settings
from warehouse.client import connect
from warehouse.migrate import migrate
from warehouse.queries import MetricQuery, metric_document

__all__ = ["fetch_metric", "render"]


def _via_api(settings: Settings, q: MetricQuery) -> dict[str, Any]:
    key_file = settings.home / "cli-read.key"
    base = f"http://{settings.api_host}:{settings.api_port}"
    if not key_file.exists():
        raise PulseError(f"the warehouse is busy and {key_file} is missing: is `pulse up` running?")
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("from", q.start.isoformat()), ("to", q.end.isoformat()), ("interval", q.interval),
        ("tz", q.tz), *(("where", f"{k}={v}") for k, v in q.where.items()),
    ]  # fmt: skip
    if q.by:
        params.append(("by", q.by))
    headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
    try:
        r = httpx.get(f"{base}/v1/metrics/{q.metric}", params=params, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise PulseError(
            f"the warehouse is busy and the API at {base} does not answer: {exc}"
        ) from None
    if r.status_code != 200:
        raise PulseError(f"API {r.status_code}: {r.json().get('error', {}).get('message', r.text)}")
    return dict(r.json())


def fetch_metric(settings: Settings, q: MetricQuery) -> dict[str, Any]:
    """The metric document, from the warehouse directly or via the running API."""
    try:
        client = connect(settings.warehouse_dsn)
    except WarehouseBusy:
        return _via_api(settings, q)
    try:
        migrate(client)  # a fresh warehouse answers with empty buckets, not an error
        return metric_document(client, q, settings.allowed_lateness)
    finally:
        client.close()


def render(doc: Mapping[str, Any], fmt: str, console: Console) -> None:
    """Print a metric document as ``table``, ``json`` or ``csv``."""
    series = doc["series"]
    columns = [
        "ts",
        *[k for k in (series[0] if series else {}) if k not in ("ts", "value", "partial")],
        "value",
        "partial",
    ]
    if fmt == "json":
        print(json.dumps(doc, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for point in series:
            writer.writerow({**point, "partial": bool(point.get("partial"))})
        print(buf.getvalue(), end="")
    else:
        table = Table(
            title=f"{doc['metric']} ({doc['interval']}, {doc['tz']})",
            caption=f"complete until {doc['complete_until']}",
        )
        for col in columns:
            table.add_column(col, justify="right" if col == "value" else "left")
        for point in series:
            table.add_row(
                *[
                    "*"
                    if c == "partial" and point.get(c)
                    else ""
                    if point.get(c) is None
                    else str(point[c])
                    for c in columns
                ]
            )
        console.print(table)
