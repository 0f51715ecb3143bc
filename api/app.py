"""The FastAPI application: collector, metrics API, insights, dashboards (CONTRACT §7)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from prometheus_client import make_asgi_app

from api.deps import Services
from api.errors import install_error_handlers
from api.routes import dashboards, events, health, insights, metrics, realtime
from flows.health import register_health_metrics

__all__ = ["create_app"]


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
    app.include_router(metrics.router)
    app.include_router(insights.router)
    app.include_router(realtime.router)
    app.include_router(dashboards.router)
    app.add_middleware(GZipMiddleware, minimum_size=1024)  # static assets come pre-gzipped
    register_health_metrics()
    app.mount("/metrics", make_asgi_app())
    return app
