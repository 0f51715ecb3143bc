"""``pulse query``: a metric series from the warehouse, or through a running ``pulse up``.

The embedded warehouse can be open in one process only. When ``pulse up`` holds it,
``pulse query`` asks that process's API instead, with the read key it left in PULSE_HOME.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import httpx
import typer
from rich.console import Console
from rich.table import Table

from api.cli.common import app, out, runtime, say_notes
from api.settings import Settings
from ingest.errors import PulseError
from ingest.times import aware
from warehouse.errors import WarehouseBusy

# The pipeline's modules (runtime, serving, insights, queries: ~1.4 s of imports) are
# imported inside the commands that run them, so that `pulse --help`, `pulse keys` and a
# mistyped option answer at once; what is cheap to import is imported here.

if TYPE_CHECKING:
    from api.runtime import Runtime
    from warehouse.queries import MetricQuery

__all__ = ["fetch_metric", "query", "render"]


@app.command()
def query(
    metric: Annotated[str, typer.Argument(help="a metric of METRICS.md, e.g. conversion_rate")],
    from_: Annotated[str, typer.Option("--from", help="range start, ISO 8601")],
    to: Annotated[str, typer.Option(help="range end (exclusive), ISO 8601")],
    interval: Annotated[str, typer.Option(help="1m, 5m, 1h or 1d")] = "1h",
    by: Annotated[str | None, typer.Option(help="country, device, channel or category")] = None,
    where: Annotated[list[str] | None, typer.Option(help="DIM=VAL filter, repeatable")] = None,
    tz: Annotated[
        str | None, typer.Option(help="bucket timezone", envvar="PULSE_TIMEZONE", show_envvar=True)
    ] = None,
    format: Annotated[str, typer.Option(help="table, json or csv")] = "table",
) -> None:
    """Print a metric series (METRICS.md)."""
    from api.routes.metrics import parse_where
    from warehouse.queries import MetricQuery

    if format not in ("table", "json", "csv"):
        raise typer.BadParameter("expected table, json or csv", param_hint="--format")
    run = runtime()
    zone = tz or run.settings.timezone
    try:
        start, end = datetime.fromisoformat(from_), datetime.fromisoformat(to)
        if start.tzinfo is None or end.tzinfo is None:
            start, end = aware(start, ZoneInfo(zone)), aware(end, ZoneInfo(zone))
        q = MetricQuery(metric, start, end, interval, by, parse_where(where), zone)
    except (ValueError, KeyError) as exc:  # KeyError: ZoneInfoNotFoundError
        raise typer.BadParameter(str(exc).strip("'\"")) from None
    render(fetch_metric(run, q), format, out)


def _via_api(settings: Settings, q: MetricQuery) -> dict[str, Any]:
    key_file = settings.cli_key_file
    base = settings.api_url
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


def fetch_metric(run: Runtime, q: MetricQuery) -> dict[str, Any]:
    """The metric document, from the warehouse directly or via the running API."""
    from warehouse.queries import metric_document

    try:
        client = run.warehouse()  # a fresh warehouse answers with empty buckets, not an error
    except WarehouseBusy:
        return _via_api(run.settings, q)
    say_notes(run.notes)
    try:
        return metric_document(client, q, run.settings.allowed_lateness)
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
