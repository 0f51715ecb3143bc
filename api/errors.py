"""Every error leaves the API as ``{"error": {"code", "message"}}`` (CONTRACT §7).

A bad parameter is a 400 naming it (never a 422 or a 500); an unexpected failure is still a
JSON 500, never a plain-text one.
"""

from __future__ import annotations

import logging

from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.keys import KeyStoreUnavailable
from ingest.errors import DeliveryError, PulseError
from warehouse.errors import WarehouseError
from warehouse.queries import QueryError

__all__ = ["ERROR_CODES", "ApiError", "error_response", "install_error_handlers"]

_log = logging.getLogger("pulse.api")

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}
_INVALID = "invalid_parameters"  # the code of every 400 about a parameter


class ApiError(Exception):
    """An error with an HTTP status, a stable code and a message for the caller."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers
        self.code = code or ERROR_CODES.get(status, "error")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error body every route uses."""
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    """``"<parameter>: <what is wrong>"`` for the first problem of a request."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ())]
    where = ".".join(p for p in loc[1:] if p) if len(loc) > 1 else ""
    if loc and loc[0] == "body" and not where:
        where = "body"
    message = str(first.get("msg", "invalid value"))
    return f"{where}: {message}" if where else message


def install_error_handlers(app: FastAPI) -> None:
    """Map Pulse errors, HTTP errors and validation errors to the JSON error body."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status == 401:
            headers.setdefault("WWW-Authenticate", "Bearer")
        return error_response(exc.status, exc.code, exc.message, headers or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = ERROR_CODES.get(exc.status_code, "error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _INVALID, _validation_message(exc))

    @app.exception_handler(QueryError)
    async def _query(_: Request, exc: QueryError) -> JSONResponse:
        return error_response(400, _INVALID, str(exc))

    @app.exception_handler(KeyStoreUnavailable)
    async def _keys(_: Request, exc: KeyStoreUnavailable) -> JSONResponse:
        return error_response(503, "keys_unavailable", str(exc))

    @app.exception_handler(DeliveryError)
    async def _delivery(_: Request, exc: DeliveryError) -> JSONResponse:
        return error_response(503, "broker_unavailable", f"events not accepted: {exc.reason}")

    @app.exception_handler(WarehouseError)
    async def _warehouse(_: Request, exc: WarehouseError) -> JSONResponse:
        return error_response(503, "warehouse_unavailable", f"the warehouse is unavailable: {exc}")

    @app.exception_handler(ClickHouseError)
    async def _clickhouse(_: Request, exc: ClickHouseError) -> JSONResponse:
        # bad parameters are 400s before any query runs: a failing query means the
        # warehouse cannot answer now (gone, failed, overloaded)
        _log.warning("warehouse query failed: %s", str(exc).strip().splitlines()[:1])
        return error_response(
            503, "warehouse_unavailable", "the warehouse could not answer; try again later"
        )

    @app.exception_handler(PulseError)
    async def _pulse(_: Request, exc: PulseError) -> JSONResponse:
        return error_response(500, "internal_error", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with the traceback; the caller learns nothing of the internals.
        _log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the server log")
