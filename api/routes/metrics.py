"""Metrics, funnel and top products (CONTRACT §7), answered from the warehouse.

Every parameter is checked before a query runs; a bad one is a 400 naming it
(``warehouse.queries.QueryError``), including a range too long or too fine to answer.
"""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo, available_timezones

import msgspec
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.deps import (
    IsoTime,
    Services,
    app_services,
    documented,
    get_warehouse,
    scoped,
)
from ingest.times import aware
from warehouse.buckets import INTERVALS
from warehouse.client import Client
from warehouse.metrics import DIMENSIONS, METRICS
from warehouse.queries import MetricQuery, QueryError, funnel, metric_document, top_products

router = APIRouter(prefix="/v1", tags=["metrics"])

_SESSION_DIMS = ["country", "device", "channel"]
_ZONES = frozenset(available_timezones())
_WHERE_ITEM = documented((), pattern=f"^({'|'.join(DIMENSIONS)})=.+$")

From = Annotated[
    IsoTime, Query(alias="from", description="range start, ISO 8601 (2000-01-01 .. 2100-01-01)")
]
To = Annotated[IsoTime, Query(description="range end (exclusive), ISO 8601")]
Where = Annotated[
    list[Annotated[str, _WHERE_ITEM]] | None, Query(description="DIM=VALUE filter, repeatable")
]
Tz = Annotated[str | None, Query(description="IANA timezone for buckets (default PULSE_TIMEZONE)")]

_POINT = {
    "type": "object",
    "required": ["ts", "value"],
    "properties": {
        "ts": {"type": "string", "format": "date-time"},
        "value": {"type": ["number", "null"]},
        "partial": {"type": "boolean"},
    },
}
_DOCUMENT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The series (CONTRACT §7); a breakdown adds its dimension to each point",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["metric", "interval", "tz", "complete_until", "series"],
                    "properties": {
                        "metric": {"type": "string"},
                        "interval": {"type": "string"},
                        "tz": {"type": "string"},
                        "complete_until": {"type": ["string", "null"], "format": "date-time"},
                        "series": {"type": "array", "items": _POINT},
                    },
                }
            }
        },
    }
}


def parse_where(items: list[str] | None) -> dict[str, str]:
    """``["country=DE", "device=mobile"]`` -> ``{"country": "DE", "device": "mobile"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        dim, sep, value = item.partition("=")
        if not sep or not dim.strip() or not value.strip():
            raise QueryError(f"where: expects DIM=VALUE, got {item!r}")
        out[dim.strip()] = value.strip()
    return out


def _zone(tz: str | None, services: Services) -> ZoneInfo:
    zone = tz or services.timezone
    if zone not in _ZONES:  # checked first: ZoneInfo() would look any string up as a file
        raise QueryError(f"tz: unknown timezone {zone[:64]!r}; use an IANA name like UTC")
    return ZoneInfo(zone)


@router.get("/metrics/{metric}", response_class=Response, responses=_DOCUMENT, **scoped("read"))
async def get_metric(
    metric: Annotated[str, documented(METRICS), Path(description="a metric of docs/metrics.md")],
    from_: From,
    to: To,
    interval: Annotated[str, documented(INTERVALS), Query(description="bucket size")] = "1h",
    by: Annotated[
        Annotated[str, documented(DIMENSIONS)] | None, Query(description="breakdown dimension")
    ] = None,
    where: Where = None,
    tz: Tz = None,
    services: Services = Depends(app_services),
    client: Client = Depends(get_warehouse),
) -> Response:
    """A metric series with ``complete_until``; later buckets are flagged partial."""
    zone = _zone(tz, services)
    q = MetricQuery(metric, aware(from_, zone), aware(to, zone), interval, by,
                    parse_where(where), zone.key)  # fmt: skip

    def answer() -> bytes:
        # encoded here: FastAPI's generic encoder takes seconds for 200,000 points
        return msgspec.json.encode(metric_document(client, q, services.allowed_lateness))

    return Response(await run_in_threadpool(answer), media_type="application/json")


@router.get("/funnel", **scoped("read"))
async def get_funnel(
    from_: From,
    to: To,
    by: Annotated[
        Annotated[str, documented(_SESSION_DIMS)] | None,
        Query(description="breakdown dimension"),
    ] = None,
    where: Where = None,
    tz: Tz = None,
    services: Services = Depends(app_services),
    client: Client = Depends(get_warehouse),
) -> dict[str, Any]:
    """Sessions reaching each funnel step, with step and overall conversion."""
    zone = _zone(tz, services)
    start, end, filters = aware(from_, zone), aware(to, zone), parse_where(where)
    steps = await run_in_threadpool(
        lambda: funnel(client, start, end, by=by, where=filters)
    )  # fmt: skip
    return {"from": from_.isoformat(), "to": to.isoformat(), "steps": steps}


@router.get("/products/top", **scoped("read"))
async def get_top_products(
    from_: From,
    to: To,
    by: Annotated[
        str, documented(["revenue", "views", "units"]), Query(description="ranking measure")
    ] = "revenue",
    limit: Annotated[int, Query(ge=0, le=1000)] = 10,
    where: Where = None,
    services: Services = Depends(app_services),
    client: Client = Depends(get_warehouse),
) -> dict[str, Any]:
    """Top products by revenue, views or units (ties by product_id)."""
    zone = _zone(None, services)
    start, end, filters = aware(from_, zone), aware(to, zone), parse_where(where)
    products = await run_in_threadpool(
        lambda: top_products(client, start, end, by=by, limit=limit, where=filters)
    )
    return {"by": by, "products": products}
