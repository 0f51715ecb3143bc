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
from typing import TYPE_CHECKING, Annotated, Any, get_args
from zoneinfo import ZoneInfo, available_timezones

import httpx
import typer
from rich.console import Console
from rich.table import Table

from api.cli.common import app, err, out, runtime, say_notes
from api.settings import Settings
from ingest.errors import PulseError
from ingest.events import Channel, Device
from ingest.times import aware
from warehouse.dsn import embedded_path
from warehouse.errors import WarehouseBusy

# The pipeline's modules (runtime, serving, insights, queries: ~1.4 s of imports) are
# imported inside the commands that run them, so that `pulse --help`, `pulse keys` and a
# mistyped option answer at once; what is cheap to import is imported here.

if TYPE_CHECKING:
    from api.runtime import Runtime
    from warehouse.queries import MetricQuery

__all__ = ["fetch_metric", "query", "render", "require_warehouse", "where_warnings"]

# The values an event can carry (docs/events.md): a --where outside them matches nothing.
_KNOWN_VALUES: dict[str, tuple[str, ...]] = {
    "device": get_args(Device),
    "channel": get_args(Channel),
}


@app.command()
def query(
    metric: Annotated[
        str, typer.Argument(help="a metric of docs/metrics.md, e.g. conversion_rate or orders")
    ],
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
    """Print a metric series (docs/metrics.md)."""
    from api.routes.metrics import parse_where
    from warehouse.queries import MetricQuery

    if format not in ("table", "json", "csv"):
        raise PulseError(f"--format: expected table, json or csv, got {format!r}")
    run = runtime()
    zone = tz or run.settings.timezone
    # Checked here as the API checks them (MetricQuery): the same line with or without a
    # running stack, before anything is opened.
    if zone not in available_timezones():
        raise PulseError(f"tz: unknown timezone {zone[:64]!r}; use an IANA name like UTC")
    start, end = _time(from_, "from", zone), _time(to, "to", zone)
    q = MetricQuery(metric, start, end, interval, by, parse_where(where), zone)
    doc = fetch_metric(run, q)
    for line in where_warnings(q.where, doc):
        err.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
    render(doc, format, out)


def _time(value: str, name: str, zone: str) -> datetime:
    """``--from`` / ``--to``: ISO 8601; without an offset, a time in the bucket zone."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PulseError(
            f"{name}: expected an ISO 8601 time like 2026-11-24T00:00Z, got {value[:64]!r}"
        ) from None
    return parsed if parsed.tzinfo is not None else aware(parsed, ZoneInfo(zone))


def where_warnings(where: Mapping[str, str], doc: Mapping[str, Any]) -> list[str]:
    """What to say about ``--where`` values that match nothing: a value no event can carry
    (a device or channel outside the event format, a country that is no ISO code), or, when
    every bucket is empty, a value not seen in the range."""
    lines = []
    for dim, value in where.items():
        known = _KNOWN_VALUES.get(dim)
        if known is not None and value not in known:
            lines.append(f"{dim}={value} matches no event: {dim} is one of {', '.join(known)}")
        elif dim == "country" and not (len(value) == 2 and value.isupper()):
            lines.append(
                f"country={value} matches no event: countries are ISO 3166-1 alpha-2 codes "
                "in capitals, like DE"
            )
    if where and not lines and not any(p.get("value") for p in doc.get("series", [])):
        shown = " ".join(f"{k}={v}" for k, v in where.items())
        lines.append(f"no events with {shown} in this range: is the value right?")
    return lines


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
        raise PulseError(_api_error(r))
    return dict(r.json())


def _api_error(r: httpx.Response) -> str:
    """The API's own message for a refused request (the same line the warehouse path would
    give), or what went wrong when it did not say."""
    try:
        message = r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"the API at {r.request.url.host}:{r.request.url.port} failed ({r.status_code})"
    return str(message) if r.status_code < 500 else f"the API failed: {message}"


def fetch_metric(run: Runtime, q: MetricQuery) -> dict[str, Any]:
    """The metric document, from the warehouse directly or via the running API. An embedded
    warehouse that does not exist is an error, not an empty answer: it is a PULSE_HOME where
    Pulse never ran (e.g. ``./.pulse`` of another directory)."""
    from warehouse.queries import metric_document

    require_warehouse(run.settings)
    try:
        client = run.warehouse()  # a fresh warehouse answers with empty buckets, not an error
    except WarehouseBusy:
        return _via_api(run.settings, q)
    say_notes(run.notes)
    try:
        return metric_document(client, q, run.settings.allowed_lateness)
    finally:
        client.close()


def require_warehouse(settings: Settings) -> None:
    """Refuse to query an embedded warehouse that was never created (opening it would create
    an empty one and answer zeros)."""
    path = embedded_path(settings.warehouse_dsn)
    if path is not None and not path.exists():
        raise PulseError(
            f"no warehouse at {path}: nothing of Pulse ran with PULSE_HOME={settings.home}; "
            "run this command with the PULSE_HOME of your `pulse up` (or run `pulse up` or "
            "`pulse replay --wait` here first)"
        )


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
            table.add_row(*[_cell(c, point.get(c)) for c in columns])
        console.print(table)


def _cell(column: str, value: object) -> str:
    """A table cell: floats rounded for reading (json and csv keep every digit)."""
    if column == "partial":
        return "*" if value else ""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.4f}"
    return str(value)
