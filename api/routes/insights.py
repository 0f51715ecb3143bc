"""Insights (CONTRACT §7): list them, acknowledge, resolve and label them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import IsoTime, documented, get_warehouse, scoped
from api.errors import ApiError
from ingest.times import aware
from insights.lifecycle import InvalidTransition
from insights.store import InsightNotFound, InsightStore, insight_document
from warehouse.client import Client
from warehouse.metrics import METRICS
from warehouse.queries import check_time

router = APIRouter(prefix="/v1", tags=["insights"])

InsightId = Annotated[str, Path(description="the insight's id", pattern="^[0-9a-f]{1,64}$")]


class Feedback(BaseModel):
    """A person's verdict on an insight; later detection runs take it into account."""

    label: Literal["true_positive", "false_positive"]
    note: str = Field("", max_length=2000)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/insights", **scoped("read"))
async def list_insights(
    request: Request,
    since: Annotated[
        IsoTime | None, Query(description="started at or after (ISO 8601); active ones always")
    ] = None,
    status: Annotated[Literal["open", "acknowledged", "resolved"] | None, Query()] = None,
    severity: Annotated[Literal["critical", "warning", "info"] | None, Query()] = None,
    metric: Annotated[
        Annotated[str, documented(METRICS)] | None,
        Query(description="headline metric, e.g. conversion_rate"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    client: Client = Depends(get_warehouse),
) -> dict[str, Any]:
    """Insights, newest first, filtered by start time, status, severity and metric."""
    after = check_time(aware(since), "since") if since else None
    if metric is not None and metric not in METRICS:
        raise ApiError(400, f"metric: unknown metric; known: {', '.join(METRICS)}",
                       code="invalid_parameters")  # fmt: skip
    store = InsightStore(client)
    found = await run_in_threadpool(
        lambda: store.find(
            since=after, status=status, severity=severity, metric=metric, limit=limit
        )
    )
    return {"insights": [insight_document(i, _base(request)) for i in found]}


@router.get("/insights/{insight_id}", **scoped("read"))
async def get_insight(
    request: Request, insight_id: InsightId, client: Client = Depends(get_warehouse)
) -> dict[str, Any]:
    """One insight with its drill-down and related anomalies."""
    found = await run_in_threadpool(InsightStore(client).get, insight_id)
    if found is None:
        raise ApiError(404, f"no insight {insight_id}")
    return insight_document(found, _base(request))


async def _act(request: Request, client: Client, insight_id: str, action: str) -> dict[str, Any]:
    try:
        changed = await run_in_threadpool(
            InsightStore(client).act, insight_id, action, datetime.now(UTC)
        )
    except InsightNotFound:
        raise ApiError(404, f"no insight {insight_id}") from None
    except InvalidTransition as exc:
        raise ApiError(409, str(exc), code="conflict") from None
    return insight_document(changed, _base(request))


@router.post("/insights/{insight_id}/ack", **scoped("admin"))
async def acknowledge(
    request: Request, insight_id: InsightId, client: Client = Depends(get_warehouse)
) -> dict[str, Any]:
    """Acknowledge an open insight (someone is on it)."""
    return await _act(request, client, insight_id, "ack")


@router.post("/insights/{insight_id}/resolve", **scoped("admin"))
async def resolve(
    request: Request, insight_id: InsightId, client: Client = Depends(get_warehouse)
) -> dict[str, Any]:
    """Resolve an insight by hand (its alert ends)."""
    return await _act(request, client, insight_id, "resolve")


@router.post("/insights/{insight_id}/feedback", **scoped("admin"))
async def feedback(
    request: Request,
    insight_id: InsightId,
    body: Feedback,
    client: Client = Depends(get_warehouse),
) -> dict[str, Any]:
    """Label an insight a true or false positive (a false positive mutes its like)."""
    try:
        changed = await run_in_threadpool(
            InsightStore(client).feedback, insight_id, body.label, body.note, datetime.now(UTC)
        )
    except InsightNotFound:
        raise ApiError(404, f"no insight {insight_id}") from None
    return insight_document(changed, _base(request))
