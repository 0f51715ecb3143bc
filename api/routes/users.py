"""Users' data (CONTRACT §7, §11): ``DELETE /v1/users/{user_id}`` erases one user."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from api.deps import Services, app_services, get_warehouse, scoped
from api.erasure import NotAnnounced
from api.errors import ApiError
from warehouse.client import Client

router = APIRouter(prefix="/v1", tags=["users"])

UserId = Annotated[
    str, Path(description="the user id as sent in events", min_length=1, max_length=128)
]

_ANSWER = {
    "responses": {
        "200": {
            "description": "rows erased by kind, the audit's salted hash of the id, and "
            "whether the running flow acknowledged the erasure first",
        }
    }
}


@router.delete("/users/{user_id:path}", **scoped("admin", _ANSWER))
async def forget_user(
    user_id: UserId,
    request: Request,
    services: Services = Depends(app_services),
    client: Client = Depends(get_warehouse),
) -> dict[str, Any]:
    """Erase every row of one user, its flow state and its share of every rollup."""
    eraser = services.eraser
    if eraser is None:
        raise ApiError(503, "this API cannot erase users: it has no warehouse attached")
    key = getattr(request.state, "key", None)
    key_name = (key.name or key.id) if key is not None else "unknown"
    try:
        erased = await run_in_threadpool(eraser.forget, user_id, key_name)
    except NotAnnounced as exc:
        raise ApiError(503, str(exc), code="broker_unavailable") from None
    return erased.document()
