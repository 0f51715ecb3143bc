"""Liveness and readiness (open, no key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.deps import Services, app_services
from ingest.errors import PulseError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(services: Services = Depends(app_services)) -> Any:
    """Every part (broker, warehouse, flow, detector) works now."""
    checks: dict[str, str] = {}
    for name, check in services.readiness.items():
        try:
            check()
            checks[name] = "ok"
        except PulseError as exc:  # Pulse's own messages: they say what is wrong
            checks[name] = f"unavailable: {exc}"
        except Exception as exc:  # others may carry addresses: their kind only
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
    )
