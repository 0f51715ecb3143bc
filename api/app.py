"""The FastAPI application: collector, metrics API, insights, dashboards (CONTRACT §7)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from api.deps import Services
from api.errors import install_error_handlers
from api.openapi import install_openapi
from api.routes import (
    dashboards,
    events,
    experiments,
    health,
    insights,
    metrics,
    realtime,
    segment,
    users,
)
from api.security import BrowserSecurity
from flows.health import register_health_metrics

__all__ = ["create_app"]


def _prometheus() -> Response:
    """Prometheus metrics: throughput, lag, freshness, rejected events, detector runs."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def create_app(services: Services) -> FastAPI:
    """Build the app around already-started services."""
    app = FastAPI(
        title="Pulse",
        summary="Real-time e-commerce analytics: events in, metrics and insights out.",
        version="0.1.0",
    )
    app.state.services = services
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(events.router)
    app.include_router(segment.router)
    app.include_router(metrics.router)
    app.include_router(insights.router)
    app.include_router(realtime.router)
    app.include_router(dashboards.router)
    app.include_router(users.router)
    app.include_router(experiments.router)
    register_health_metrics()
    # /metrics answers itself (no redirect to /metrics/, which scrapers set up before keep)
    app.add_api_route(
        "/metrics",
        _prometheus,
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    app.add_api_route("/metrics/", _prometheus, include_in_schema=False)
    app.add_middleware(GZipMiddleware, minimum_size=1024)  # static assets come pre-gzipped
    app.add_middleware(BrowserSecurity)
    install_openapi(app)
    return app
