"""The collector: ``POST /v1/events`` (CONTRACT §7)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from api.deps import Services, get_services, scoped
from api.errors import ApiError
from ingest.collector import BodyError, split_body

router = APIRouter(prefix="/v1", tags=["events"])

MAX_EVENTS = 1000
MAX_BODY = 1024 * 1024


class Rejected(BaseModel):
    index: int
    reason: str


class IngestResponse(BaseModel):
    accepted: int
    rejected: list[Rejected]


_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "A JSON array of events or JSON lines (CONTRACT §5)",
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


async def _read_limited(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, f"body over {MAX_BODY} bytes: split it into smaller requests")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, f"body over {MAX_BODY} bytes: split it into smaller requests")
    return bytes(body)


@router.post("/events", response_model=IngestResponse, **scoped("ingest", _BODY_DOC))
async def post_events(
    request: Request, services: Services = Depends(get_services)
) -> IngestResponse:
    """Validate and publish up to 1,000 events; bad ones go to the dead-letter topic."""
    body = await _read_limited(request)
    try:
        raws = split_body(body)
    except BodyError as exc:
        raise ApiError(400, str(exc)) from None
    if len(raws) > MAX_EVENTS:
        raise ApiError(413, f"{len(raws)} events in one request; the limit is {MAX_EVENTS}")
    if services.collector is None:
        raise ApiError(503, "the collector is not connected to Kafka")
    result = await services.collector.ingest_async(
        raws, source="http", timeout=services.delivery_timeout_s
    )
    return IngestResponse(
        accepted=result.accepted,
        rejected=[Rejected(index=r.index, reason=r.reason) for r in result.rejected],
    )
