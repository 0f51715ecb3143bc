"""The live summary (CONTRACT §7 ``GET /v1/realtime``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from api.deps import Services, app_services, get_warehouse, scoped
from api.errors import ApiError
from api.settings import parse_duration
from insights.live import live_summary
from warehouse.client import Client

router = APIRouter(prefix="/v1", tags=["realtime"])


@router.get("/realtime", **scoped("read"))
async def realtime(
    request: Request,
    window: Annotated[
        str,
        Query(
            description="how far back, e.g. 15m, 1h, 24h (at most 31d)",
            pattern=r"^[0-9]+(\.[0-9]+)?(ms|s|m|min|h|d)?$",
        ),
    ] = "1h",
    services: Services = Depends(app_services),
    client: Client = Depends(get_warehouse),
) -> dict[str, Any]:
    """Conversion, revenue per visitor, traffic sources, top products, engagement, open
    anomalies and recommendations over the last ``window``."""
    try:
        span = parse_duration(window)
    except (ValueError, OverflowError):
        span = None
    if span is None or not 0 < span.total_seconds() <= 31 * 86400:
        raise ApiError(400, "window: expected a duration between 1s and 31d, e.g. 1h",
                       code="invalid_parameters")  # fmt: skip
    doc = await run_in_threadpool(
        lambda: live_summary(
            client, span, services.allowed_lateness, base_url=str(request.base_url).rstrip("/")
        )
    )
    return {"window": window, **doc}
