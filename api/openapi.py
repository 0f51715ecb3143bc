"""The OpenAPI document as clients and fuzzers need it (``/openapi.json``).

FastAPI documents the 200 answers; this adds what every route can also answer — the JSON
error body with its statuses (400 for a bad parameter instead of FastAPI's 422; 401/403
for keys; 404 for an unknown id; 413 for a too-large body; 429 for too many requests; 503
when a dependency is down) — and the event schema of ``POST /v1/events``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ingest.events import Event

__all__ = ["ERROR_SCHEMA", "install_openapi"]

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_WHY = {
    "400": "A bad parameter or body; the message names it",
    "401": "No key, or an unknown, revoked or expired key",
    "403": "The key lacks the scope, or may not send from this page's origin",
    "404": "No such resource",
    "409": "The change does not apply in the resource's state",
    "413": "Body over 1 MiB or more than 1,000 events",
    "429": "Too many requests for this key; see Retry-After",
    "503": "A dependency (key store, broker, warehouse) is unavailable",
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_NOT_READY = {
    "description": "Some dependency does not answer",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["status", "checks"],
                "properties": {
                    "status": {"type": "string"},
                    "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            }
        }
    },
}


def _error(status: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _WHY[status],
        "content": {"application/json": {"schema": _ERROR_REF}},
    }
    if status == "429":
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        }
    return response


def _events_body(components: dict[str, Any]) -> dict[str, Any]:
    (array,), defs = msgspec.json.schema_components(
        [list[Event]], ref_template="#/components/schemas/{name}"
    )
    defs["Event"]["description"] = (
        "One event: the format, the types and their fields, the limits and the topics are in "
        "docs/events.md. Unknown fields are ignored; an unknown type is a general event."
    )
    # read at the edge (the country), never stored: not a field of the stored event
    defs["Event"]["properties"]["ip"] = {
        "type": "string",
        "description": "the shopper's address: derives country when absent, then dropped",
    }
    components.update(defs)
    return {
        "required": True,
        "description": "A JSON array of up to 1,000 events, or JSON lines; at most 1 MiB",
        "content": {
            # no maxItems: more than 1,000 events is a 413 (CONTRACT §7), not a bad body
            "application/json": {"schema": array},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }


def _document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components["Error"] = ERROR_SCHEMA
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            statuses: set[str] = set()
            if op.get("parameters") or op.get("requestBody"):
                statuses.add("400")
            if any(p.get("in") == "path" for p in op.get("parameters", ())):
                statuses.add("404")
            if "x-required-scope" in op:
                statuses |= {"401", "403", "429", "503"}
            if (method, path) == ("post", "/v1/events"):
                op["requestBody"] = _events_body(components)
                statuses |= {"400", "413"}
            if path.startswith("/segment/"):  # CONTRACT §9: HTTP Basic, the write key as user
                statuses.add("413")
                schemes = doc["components"].setdefault("securitySchemes", {})
                schemes["basicAuth"] = {"type": "http", "scheme": "basic"}
            if path.startswith("/v1/insights/") and method == "post":
                statuses.add("409")
            if (method, path) == ("get", "/readyz"):
                responses.setdefault("503", _NOT_READY)
            for status in sorted(statuses):
                responses.setdefault(status, _error(status))
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`_document` (built once) as the app's OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
