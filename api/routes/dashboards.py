"""Dashboards: Grafana JSON (read scope) and the built-in pages at ``/`` (public HTML/JS).

The pages hold no data: the browser calls the JSON API with the key the user typed in.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse, Response

from api.deps import Services, app_services, scoped
from api.errors import ApiError
from dashboards import catalog
from dashboards.grafana import RenderOptions, render
from dashboards.pages import Asset, asset, index_html

__all__ = ["router"]

router = APIRouter(tags=["dashboards"])


def _options(services: Services) -> RenderOptions:
    return RenderOptions(
        timezone=services.timezone,
        allowed_lateness_s=int(services.allowed_lateness.total_seconds()),
    )


def _send(request: Request, found: Asset, cache_control: str) -> Response:
    headers = {"ETag": f'"{found.etag}"', "Cache-Control": cache_control, "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == f'"{found.etag}"':
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(found.gzipped, media_type=found.content_type, headers=headers)
    return Response(found.body, media_type=found.content_type, headers=headers)


@router.get("/", include_in_schema=False)
def page(request: Request, services: Services = Depends(app_services)) -> Response:
    """The built-in dashboards (public page; its data needs a read key)."""
    lateness = int(services.allowed_lateness.total_seconds())
    # Revalidated on every load (cheap: 304), so a new version shows at once.
    return _send(request, index_html(services.timezone, lateness), "no-cache")


@router.get("/index.html", include_in_schema=False)
def index_redirect() -> RedirectResponse:
    """Old habit: ``/index.html`` is ``/``."""
    return RedirectResponse("/")


@router.get("/static/{name:path}", include_in_schema=False)
def static_file(name: str, request: Request) -> Response:
    """Page assets, compressed; URLs carry a content hash so they are cached for a year."""
    found = asset(name)
    if found is None:
        raise ApiError(404, f"no static file {name!r}")
    cache = "public, max-age=31536000, immutable" if request.query_params.get("v") else "no-cache"
    return _send(request, found, cache)


@router.get("/v1/dashboards", **scoped("read"))
def list_dashboards(request: Request) -> dict[str, Any]:
    """The dashboards: uid, title, description and where to see them; and the scope of the
    key asking (the pages show insight controls to an admin key only)."""
    record = getattr(request.state, "key", None)
    return {
        "scope": record.scope if record is not None else None,
        "dashboards": [
            {
                "uid": b.uid,
                "title": b.title,
                "description": b.description,
                "panels": len(b.panels),
                "page_url": f"/#{b.uid}",
                "grafana_json_url": f"/v1/dashboards/{b.uid}",
            }
            for b in catalog.DASHBOARDS
        ],
    }


@router.get("/v1/dashboards/{uid}", **scoped("read"))
def get_dashboard(
    uid: Annotated[str, Path(description="a dashboard uid, e.g. pulse-overview")],
    services: Services = Depends(app_services),
) -> dict[str, Any]:
    """A dashboard as Grafana JSON for the ClickHouse datasource plugin."""
    board = catalog.get(uid)
    if board is None:
        known = ", ".join(b.uid for b in catalog.DASHBOARDS)
        raise ApiError(404, f"no dashboard {uid!r}; known: {known}")
    return render(board, _options(services))
