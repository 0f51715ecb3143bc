"""Shared route dependencies: the running services and scope-checked API keys."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Annotated, Any

from clickhouse_connect.driver.client import Client
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator, WithJsonSchema

from api.errors import ApiError
from api.keys import KeyRecord, KeyRejected, KeyStore, Scope, allows
from api.ratelimit import RateLimiter
from api.settings import normalise_origin
from ingest.collector import Collector

if TYPE_CHECKING:
    from api.erasure import Eraser

__all__ = [
    "IsoTime",
    "Services",
    "app_services",
    "documented",
    "get_services",
    "get_warehouse",
    "origin_allowed",
    "scoped",
]

_NUMBER = re.compile(r"\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*")


def _iso_only(value: object) -> object:
    # pydantic would read "1700000000" as epoch seconds; a query time is ISO 8601 only
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("expected an ISO 8601 time like 2026-01-31T00:00:00Z")
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_only)]


def documented(values: Iterable[str], pattern: str | None = None) -> WithJsonSchema:
    """The OpenAPI schema of a string parameter checked by Pulse itself: its known values
    (or a pattern), so clients and fuzzers know them, while a wrong one gets Pulse's own
    400 naming what is allowed."""
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    else:
        schema["enum"] = list(values)
    return WithJsonSchema(schema)


@dataclass
class Services:
    """What the routes use; built once by whoever starts the API."""

    keys: KeyStore
    collector: Collector | None = None
    warehouse: Client | None = None
    delivery_timeout_s: float = 10.0
    timezone: str = "UTC"
    allowed_lateness: timedelta = timedelta(minutes=10)
    # name -> callable raising when that dependency is not ready
    readiness: dict[str, Callable[[], object]] = field(default_factory=dict)
    # page origins allowed to send events from browsers (PULSE_CORS_ORIGINS, normalised)
    cors_origins: frozenset[str] = frozenset()
    limiter: RateLimiter = field(default_factory=RateLimiter)
    # raises WarehouseError when the warehouse is gone (e.g. its directory was deleted)
    warehouse_check: Callable[[], None] | None = None
    eraser: Eraser | None = None  # forgets users (CONTRACT §11), with a warehouse
    # PULSE_TRUSTED_PROXIES, parsed: whose X-Forwarded-For gives a browser's address
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()


def get_services(request: Request) -> Services:
    """The services of the running app."""
    services: Services = request.app.state.services
    return services


async def app_services(request: Request) -> Services:
    """:func:`get_services` as a route's dependency: a coroutine, so FastAPI calls it on the
    event loop (a plain function costs a hop to a worker thread on every request)."""
    return get_services(request)


def get_warehouse(request: Request) -> Client:
    """The warehouse client, or 503 when this API runs without one."""
    services = get_services(request)
    if services.warehouse is None:
        raise ApiError(503, "this API has no warehouse attached")
    if services.warehouse_check is not None:
        services.warehouse_check()  # a WarehouseError is a 503 warehouse_unavailable
    return services.warehouse


_bearer = HTTPBearer(auto_error=False, description="An API key from `pulse keys create`")


def origin_allowed(origin: str, record: KeyRecord | None, services: Services) -> bool:
    """Whether a browser page at ``origin`` may send events (with ``record``'s key): the
    key's own ``--origin`` list when it has one, else ``PULSE_CORS_ORIGINS``."""
    try:
        origin = normalise_origin(origin)
    except ValueError:
        return False
    if record is not None and record.origins:
        return origin in record.origins
    return origin in services.cors_origins


def _same_origin(request: Request, origin: str) -> bool:
    try:
        return normalise_origin(origin) == normalise_origin(
            f"{request.url.scheme}://{request.headers.get('host', '')}"
        )
    except ValueError:
        return False


def _require(scope: Scope) -> Callable[..., Awaitable[KeyRecord]]:
    # async: a check is a dictionary lookup and a token bucket, cheaper than the hop to a
    # worker thread FastAPI makes for a plain function (measured: ~0.3 ms per request);
    # only the rare write of "last used" goes to a thread
    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> KeyRecord:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(401, "missing API key: send Authorization: Bearer <key>")
        return await admit(request, get_services(request), credentials.credentials, scope)

    return check


async def admit(request: Request, services: Services, key: str, scope: Scope) -> KeyRecord:
    """The record of ``key`` when it may call a route needing ``scope`` now: known and
    active (else 401), of that scope (403), for ingest sent from an allowed page (403),
    within its rate (429). Every route's key goes through here, whatever carried it
    (a Bearer header, Segment's Basic credentials or ``writeKey``)."""
    try:
        record = services.keys.authenticate(key)
    except KeyRejected as exc:
        raise ApiError(401, exc.reason) from None
    if not allows(record.scope, scope):
        raise ApiError(403, f"this key lacks the {scope!r} scope")
    origin = request.headers.get("origin")
    if (
        scope == "ingest"
        and origin
        and not _same_origin(request, origin)
        and not origin_allowed(origin, record, services)
    ):
        raise ApiError(403, "this key may not send events from this page's origin")
    wait = services.limiter.take(record.id, record.scope)
    if wait > 0:
        raise ApiError(
            429,
            f"too many requests for this key; retry in {wait:.1f} s",
            headers={"Retry-After": RateLimiter.retry_after(wait)},
        )
    if services.keys.use_due(record):
        await run_in_threadpool(services.keys.record_use, record)
    request.state.key = record  # who asked, for an audit (an erasure's)
    return record


def scoped(scope: Scope, openapi: dict[str, Any] | None = None) -> dict[str, Any]:
    """Route-decorator arguments requiring ``scope`` (also recorded in the OpenAPI doc)."""
    extra = {**(openapi or {}), "x-required-scope": scope}
    return {"dependencies": [Depends(_require(scope))], "openapi_extra": extra}
