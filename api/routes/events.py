"""The collector: ``POST /v1/events`` (CONTRACT §7)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address

import msgspec
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from api.deps import Services, app_services, scoped
from api.errors import ApiError
from ingest.collector import BodyError, split_body
from ingest.topics import TOPIC_BY_TYPE

router = APIRouter(prefix="/v1", tags=["events"])

MAX_EVENTS = 1000
MAX_BODY = 1024 * 1024
_encode = msgspec.json.Encoder().encode


class Rejected(BaseModel):
    index: int
    reason: str


class General(BaseModel):
    index: int
    type: str
    note: str


class IngestResponse(BaseModel):
    accepted: int
    rejected: list[Rejected]
    # Only in an answer with such events (the documented answer is unchanged otherwise).
    general: list[General] | None = Field(
        None,
        description="accepted events whose type is none of the known ones (docs/events.md): "
        "kept as general events, counted in `events` only",
    )


_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "A JSON array of events or JSON lines (docs/events.md)",
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


def browser_address(request: Request, trusted: tuple[IPv4Network | IPv6Network, ...]) -> str | None:
    """The address of the shopper's browser (docs/events.md), for events without ``ip``: only
    for a request a browser sent (it carries ``Origin``; a server's requests are not the
    shopper's), the connection's address, or the first ``X-Forwarded-For`` entry when the
    connection comes from a trusted proxy. Used for the country, never stored."""
    if "origin" not in request.headers or request.client is None:
        return None
    address = request.client.host
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and trusted:
        try:
            peer = ip_address(address)
        except ValueError:
            return address
        if any(peer in net for net in trusted):
            return forwarded.split(",")[0].strip() or None
    return address


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
async def post_events(request: Request, services: Services = Depends(app_services)) -> Response:
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
        raws,
        source="http",
        timeout=services.delivery_timeout_s,
        client_ip=browser_address(request, services.trusted_proxies),
    )
    # the documented IngestResponse, encoded directly: the hot path skips pydantic's
    # validation of what it built itself; "general" only when there is one
    answer: dict[str, object] = {
        "accepted": result.accepted,
        "rejected": [{"index": r.index, "reason": r.reason} for r in result.rejected],
    }
    if result.general:
        answer["general"] = [
            {"index": g.index, "type": g.type, "note": general_note(g.type)} for g in result.general
        ]
    return Response(_encode(answer), media_type="application/json")


def general_note(event_type: str) -> str:
    """What the answer says of an accepted event of an unknown type."""
    return (
        f"type {event_type[:64]!r} is not a known event type: accepted as a general event "
        "(counted in `events` only); known types: " + ", ".join(TOPIC_BY_TYPE)
    )
