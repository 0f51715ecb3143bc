"""The Segment-compatible collector: ``/segment/v1/batch`` and the single-message routes
(CONTRACT §9).

Segment's and RudderStack's SDKs send here unchanged, with a Pulse ingest key as their
write key: HTTP Basic (the key as user name) or ``writeKey`` in the body (a browser's
beacon cannot set headers). Bodies may be gzip-compressed; the 1 MiB limit holds after
decompression, checked while inflating, so a gzip bomb is a 413 after inflating at most
the limit. Each message is translated (:mod:`ingest.segment`) and goes through the same
collector as ``POST /v1/events``; a message refused goes to the dead-letter topic with its
original bytes and the reason, and the answer is Segment's ``{"success": true}``.
"""

from __future__ import annotations

import base64
import binascii
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from api.deps import Services, admit, app_services
from api.errors import ApiError
from api.keys import KeyRecord
from api.routes.events import MAX_BODY, MAX_EVENTS, browser_address
from ingest.segment import (
    KINDS,
    MAX_MESSAGE_BYTES,
    Message,
    SegmentError,
    decode_message,
    parse_single,
    split_batch,
    translate_all,
)

__all__ = ["SEGMENT_PATHS", "router"]

PREFIX = "/segment/v1"
SEGMENT_PATHS = frozenset(
    f"{PREFIX}/{name}" for kind, short in KINDS.items() for name in (kind, short)
) | {f"{PREFIX}/batch", f"{PREFIX}/b"}

router = APIRouter(prefix=PREFIX, tags=["segment"])


class Success(BaseModel):
    success: bool = True


# the documented Success, encoded once: the hot path skips pydantic's serialisation
_SUCCESS = b'{"success":true}'


_TOO_BIG = f"body over {MAX_BODY} bytes (after decompression): split it into smaller batches"
_SECURITY: list[dict[str, list[str]]] = [{"basicAuth": []}]
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A Segment message or batch (JSON; gzip with Content-Encoding: gzip)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    "security": _SECURITY,
    "x-required-scope": "ingest",
}


async def _inflate(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Gunzip a streamed body, never producing more than ``limit`` bytes (413 beyond)."""
    inflater = zlib.decompressobj(wbits=47)  # gzip or zlib, by its header
    out = bytearray()
    try:
        async for chunk in chunks:
            data = chunk
            while data:
                out += inflater.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise ApiError(413, _TOO_BIG)
                data = inflater.unconsumed_tail
                if inflater.eof:
                    break
            if inflater.eof:
                break
        out += inflater.flush(limit + 1 - len(out))
    except zlib.error:
        raise ApiError(400, "Content-Encoding: gzip, but the body is not valid gzip") from None
    if len(out) > limit:
        raise ApiError(413, _TOO_BIG)
    return bytes(out)


async def _read_body(request: Request) -> bytes:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        return await _inflate(request.stream(), MAX_BODY)
    if encoding not in ("identity", ""):
        raise ApiError(400, f"Content-Encoding {encoding!r} is not supported: use gzip")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, _TOO_BIG)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, _TOO_BIG)
    return bytes(body)


def _basic_user(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":  # Pulse's own way works here too
        return value.strip() or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(
            401, "malformed Basic credentials: send the write key as user name"
        ) from None
    return decoded.partition(":")[0] or None


async def _admit(request: Request, services: Services, key: str | None) -> KeyRecord:
    """The ingest key's record, checked as every route's key is (``api.deps.admit``)."""
    if key is None:
        raise ApiError(
            401, "missing write key: send HTTP Basic with the key as user name, or writeKey"
        )
    return await admit(request, services, key, "ingest")


async def _collect(
    request: Request,
    services: Services,
    messages: Sequence[tuple[bytes, Message | dict[str, Any] | str]],
    *,
    kind: str | None,
    sent_at: object = None,
    context: Any = None,
) -> Response:
    if len(messages) > MAX_EVENTS:
        raise ApiError(413, f"{len(messages)} messages in one batch; the limit is {MAX_EVENTS}")
    if services.collector is None:
        raise ApiError(503, "the collector is not connected to Kafka")
    received_ms = time.time_ns() // 1_000_000
    done = translate_all(
        messages, received_ms=received_ms, kind=kind, sent_at=sent_at, context=context
    )
    await services.collector.ingest_async(
        done.events,
        source="segment",
        timeout=services.delivery_timeout_s,
        client_ip=browser_address(request, services.trusted_proxies),
        originals=done.originals,
        refused=done.refused,
    )
    return Response(_SUCCESS, media_type="application/json")


@router.post("/batch", response_model=Success, openapi_extra=_BODY_DOC)
@router.post("/b", response_model=Success, include_in_schema=False)
async def post_batch(request: Request, services: Services = Depends(app_services)) -> Response:
    """Collect a Segment batch: each message is validated and routed like a Pulse event."""
    user = _basic_user(request)
    if user is not None:  # checked before the body is read (a beacon's key is inside it)
        await _admit(request, services, user)
    body = await _read_body(request)
    try:
        batch = split_batch(body)
    except SegmentError as exc:
        if user is None:
            await _admit(request, services, None)  # a stranger learns nothing more
        raise ApiError(400, str(exc)) from None
    if user is None:
        await _admit(request, services, batch.write_key)
    messages = [(raw, decode_message(raw)) for raw in batch.messages]
    return await _collect(
        request, services, messages, kind=None, sent_at=batch.sent_at, context=batch.context
    )


def _single(kind: str) -> Any:
    async def post_single(request: Request, services: Services = Depends(app_services)) -> Response:
        user = _basic_user(request)
        if user is not None:  # checked before the body is read (a beacon's key is inside it)
            await _admit(request, services, user)
        body = await _read_body(request)
        try:
            message, write_key = parse_single(body)
        except SegmentError as exc:
            if user is None:
                await _admit(request, services, None)  # a stranger learns nothing more
            raise ApiError(400, str(exc)) from None
        if user is None:
            await _admit(request, services, write_key)
        checked: dict[str, Any] | str = message
        if len(body) > MAX_MESSAGE_BYTES:
            checked = f"message is {len(body)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
        return await _collect(request, services, [(body, checked)], kind=kind)

    post_single.__doc__ = f"Collect one Segment {kind} message (alias /{KINDS[kind]})."
    return post_single


for _kind, _short in KINDS.items():
    _handler = _single(_kind)
    router.post(f"/{_kind}", response_model=Success, openapi_extra=_BODY_DOC)(_handler)
    router.post(f"/{_short}", response_model=Success, include_in_schema=False)(_handler)
