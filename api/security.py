"""Browser-facing protections: security headers on every answer, CORS on the ingest routes.

Both are plain ASGI middleware (no per-request task or body copy: the collector's
throughput is unchanged).

- Every response carries ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer`` and a Content-Security-Policy: the built-in pages load
  their scripts and styles from this origin only and call only this origin; the API docs
  (``/docs``, ``/redoc``) get the CDN they load Swagger UI / ReDoc from.
- CORS (CONTRACT §7): only the ingest routes answer preflights, for the origins in
  ``PULSE_CORS_ORIGINS`` or in some active key's ``--origin`` list; the key a request then
  carries decides (``api.deps``). Other routes send no CORS headers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api.deps import Services
from api.routes.segment import SEGMENT_PATHS
from api.settings import normalise_origin

__all__ = ["INGEST_PATHS", "PAGE_CSP", "BrowserSecurity"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

INGEST_PATHS = frozenset({"/v1/events"}) | SEGMENT_PATHS

# Inline style attributes: the pages set bar widths and colours in the markup they build.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; connect-src 'self'; worker-src blob:; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"Authorization, Content-Type, Content-Encoding"),
    (b"access-control-max-age", b"600"),
]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class BrowserSecurity:
    """Adds the security headers; answers CORS on :data:`INGEST_PATHS`."""

    def __init__(self, app: App) -> None:
        self.app = app

    def _known_origin(self, scope: Scope, origin: str) -> str | None:
        """``origin`` normalised when some key or ``PULSE_CORS_ORIGINS`` allows it."""
        services: Services = scope["app"].state.services
        try:
            normal = normalise_origin(origin)
        except ValueError:
            return None
        if normal in services.cors_origins or normal in services.keys.origins():
            return normal
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        csp = (_DOCS_CSP if path in _DOCS else PAGE_CSP).encode()
        extra = [*_COMMON, (b"content-security-policy", csp)]
        origin = _header(scope, b"origin") if path in INGEST_PATHS else None
        if origin is not None:
            allowed = self._known_origin(scope, origin)
            if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
                await self._preflight(send, origin, allowed, extra)
                return
            if allowed is not None:
                extra += [
                    (b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"vary", b"Origin"),
                ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", ())}
                message["headers"] = [
                    *message.get("headers", ()),
                    *((k, v) for k, v in extra if k not in present),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _preflight(
        send: Send, origin: str, allowed: str | None, extra: list[tuple[bytes, bytes]]
    ) -> None:
        if allowed is None:
            body = json.dumps(
                {
                    "error": {
                        "code": "forbidden",
                        "message": "this origin may not send events: allow it with "
                        "PULSE_CORS_ORIGINS or a key's --origin",
                    }
                }
            ).encode()
            status = 403
            headers = [(b"content-type", b"application/json"), *extra]
        else:
            body, status = b"", 204
            headers = [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"vary", b"Origin"),
                *_PREFLIGHT_HEADERS,
                *extra,
            ]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
