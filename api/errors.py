"""Every error leaves the API as ``{"error": {"code", "message"}}`` (CONTRACT §7)."""

from __future__ import annotations

import logging

from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ingest.errors import DeliveryError, PulseError, WarehouseError

__all__ = ["ApiError", "error_response", "install_error_handlers"]

_log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "invalid_parameters",
    503: "unavailable",
}


class ApiError(Exception):
    """An error with an HTTP status, a stable code and a message for the caller."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.code = code or _CODES.get(status, "error")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error body every route uses."""
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map Pulse errors, HTTP errors and validation errors to the JSON error body."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path"))
        return error_response(
            422, "invalid_parameters", f"{where}: {first.get('msg')}".lstrip(": ")
        )

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
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # never a bare text 500: the caller gets the JSON error body; the server still
        # logs the traceback (Starlette re-raises the error after this answer)
        return error_response(500, "internal_error", "an unexpected error occurred")
