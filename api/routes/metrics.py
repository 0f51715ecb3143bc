"""Metrics, funnel and top products (CONTRACT §7), answered from the warehouse."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Path, Query
from starlette.concurrency import run_in_threadpool

from api.deps import Services, get_services, get_warehouse, scoped
from api.errors import ApiError
from warehouse.client import Client
from warehouse.queries import MetricQuery, funnel, metric_document, top_products

router = APIRouter(prefix="/v1", tags=["metrics"])

From = Annotated[datetime, Query(alias="from", description="range start, ISO 8601")]
To = Annotated[datetime, Query(description="range end (exclusive), ISO 8601")]
Where = Annotated[list[str] | None, Query(description="DIM=VALUE filter, repeatable")]
Tz = Annotated[str | None, Query(description="IANA timezone for buckets (default PULSE_TIMEZONE)")]


def parse_where(items: list[str] | None) -> dict[str, str]:
    """``["country=DE", "device=mobile"]`` -> ``{"country": "DE", "device": "mobile"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        dim, sep, value = item.partition("=")
        if not sep or not dim or not value:
            raise ValueError(f"where expects DIM=VALUE, got {item!r}")
        out[dim.strip()] = value.strip()
    return out


def _zone(tz: str | None, services: Services) -> str:
    zone = tz or services.timezone
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(422, f"tz: unknown timezone {zone!r}") from None
    return zone


def _aware(ts: datetime, zone: str) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=ZoneInfo(zone))


@router.get("/metrics/{metric}", **scoped("read"))
async def get_metric(
    metric: Annotated[str, Path(description="a metric of METRICS.md")],
    from_: From,
    to: To,
    interval: Annotated[str, Query(pattern="^(1m|5m|1h|1d)$")] = "1h",
    by: Annotated[str | None, Query(description="country, device, channel or category")] = None,
    where: Where = None,
    tz: Tz = None,
    services: Services = Depends(get_services),
    client: Client = Depends(get_warehouse),
) -> dict[str, Any]:
    """A metric series with ``complete_until``; later buckets are flagged partial."""
    zone = _zone(tz, services)
    try:
        q = MetricQuery(metric, _aware(from_, zone), _aware(to, zone), interval, by,
                        parse_where(where), zone)  # fmt: skip
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    return await run_in_threadpool(metric_document, client, q, services.allowed_lateness)


@router.get("/funnel", **scoped("read"))
async def get_funnel(
    from_: From,
    to: To,
    by: Annotated[str | None, Query(description="country, device or channel")] = None,
    where: Where = None,
    tz: Tz = None,
    services: Services = Depends(get_services),
    client: Client = Depends(get_warehouse),
) -> dict[str, Any]:
    """Sessions reaching each funnel step, with step and overall conversion."""
    zone = _zone(tz, services)
    try:
        steps = await run_in_threadpool(
            funnel, client, _aware(from_, zone), _aware(to, zone), by=by, where=parse_where(where)
        )
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    return {"from": from_.isoformat(), "to": to.isoformat(), "steps": steps}


@router.get("/products/top", **scoped("read"))
async def get_top_products(
    from_: From,
    to: To,
    by: Annotated[str, Query(pattern="^(revenue|views|units)$")] = "revenue",
    limit: Annotated[int, Query(ge=0, le=1000)] = 10,
    where: Where = None,
    services: Services = Depends(get_services),
    client: Client = Depends(get_warehouse),
) -> dict[str, Any]:
    """Top products by revenue, views or units (ties by product_id)."""
    zone = services.timezone
    try:
        products = await run_in_threadpool(
            top_products, client, _aware(from_, zone), _aware(to, zone),
            by=by, limit=limit, where=parse_where(where),
        )  # fmt: skip
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    return {"by": by, "products": products}
