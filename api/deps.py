"""Shared route dependencies: the running services and scope-checked API keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.keys import KeyStore, Scope, allows
from ingest.collector import Collector

__all__ = ["Services", "get_services", "get_warehouse", "scoped"]


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
    # raises WarehouseError when the warehouse is gone (e.g. its directory was deleted)
    warehouse_check: Callable[[], None] | None = None


def get_services(request: Request) -> Services:
    """The services of the running app."""
    services: Services = request.app.state.services
    return services


def get_warehouse(request: Request) -> Client:
    """The warehouse client, or 503 when this API runs without one."""
    services = get_services(request)
    if services.warehouse is None:
        raise ApiError(503, "this API has no warehouse attached")
    if services.warehouse_check is not None:
        services.warehouse_check()  # a WarehouseError is a 503 warehouse_unavailable
    return services.warehouse


_bearer = HTTPBearer(auto_error=False, description="An API key from `pulse keys create`")


def _require(scope: Scope) -> Callable[..., str]:
    def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> str:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(401, "missing API key: send Authorization: Bearer <key>")
        granted = get_services(request).keys.scope_of(credentials.credentials)
        if granted is None:
            raise ApiError(401, "unknown API key")
        if not allows(granted, scope):
            raise ApiError(403, f"this key lacks the {scope!r} scope")
        return granted

    return check


def scoped(scope: Scope, openapi: dict[str, Any] | None = None) -> dict[str, Any]:
    """Route-decorator arguments requiring ``scope`` (also recorded in the OpenAPI doc)."""
    extra = {**(openapi or {}), "x-required-scope": scope}
    return {"dependencies": [Depends(_require(scope))], "openapi_extra": extra}
