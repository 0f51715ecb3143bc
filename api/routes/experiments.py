"""Experiments (CONTRACT §7, §10): the experiments seen, one experiment's results, and the
declared control and split. The statistics are ``insights.experiment_results``'."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import IsoTime, get_warehouse, scoped
from api.errors import ApiError
from ingest.times import aware
from insights.experiment_results import (
    UnknownExperiment,
    declare,
    experiment_document,
    experiments_document,
)
from warehouse.client import Client

router = APIRouter(prefix="/v1", tags=["experiments"])

Key = Annotated[str, Path(description="the experiment, as sent in exposures", min_length=1,
                          max_length=64)]  # fmt: skip

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_RESULT = {
    "type": "object",
    "required": [
        "metric",
        "variant",
        "mean",
        "control_mean",
        "lift",
        "ci",
        "p_value",
        "chance_to_win",
    ],
    "properties": {
        "metric": {
            "type": "string",
            "enum": [
                "conversion",
                "add_to_cart_rate",
                "orders_per_user",
                "revenue_per_user",
                "aov",
            ],
        },
        "variant": {"type": "string"},
        "mean": _NUMBER_OR_NULL,
        "control_mean": _NUMBER_OR_NULL,
        "lift": _NUMBER_OR_NULL,
        "ci": {"type": "array", "items": _NUMBER_OR_NULL, "minItems": 2, "maxItems": 2},
        "p_value": _NUMBER_OR_NULL,
        "chance_to_win": _NUMBER_OR_NULL,
    },
}
_DOCUMENT = {
    "type": "object",
    "required": [
        "experiment",
        "from",
        "to",
        "control",
        "cuped",
        "sequential",
        "variants",
        "multiple_exposures",
        "srm",
        "results",
    ],
    "properties": {
        "experiment": {"type": "string"},
        "from": {"type": "string", "format": "date-time"},
        "to": {"type": "string", "format": "date-time"},
        "control": {"type": "string"},
        "cuped": {"type": "boolean"},
        "sequential": {"type": "boolean"},
        "variants": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["variant", "users"],
                "properties": {"variant": {"type": "string"}, "users": {"type": "integer"}},
            },
        },
        "multiple_exposures": {"type": "integer"},
        "srm": {
            "type": "object",
            "required": ["p_value", "flagged"],
            "properties": {"p_value": _NUMBER_OR_NULL, "flagged": {"type": "boolean"}},
        },
        "results": {"type": "array", "items": _RESULT},
    },
}
_ONE = {
    200: {
        "description": "One result per metric and non-control variant (CONTRACT §10)",
        "content": {"application/json": {"schema": _DOCUMENT}},
    },
    404: {"description": "no exposure of this experiment was seen"},
}


class Declaration(BaseModel):
    """``PUT /v1/experiments/{key}``: the control and the expected split."""

    control: str | None = Field(None, min_length=1, max_length=64)
    weights: dict[str, float] | None = Field(
        None, description="expected share per variant (any positive scale); none: equal split"
    )


@router.get("/experiments", **scoped("read"))
async def list_all(client: Client = Depends(get_warehouse)) -> dict[str, Any]:
    """Every experiment seen in the exposures, with its variants and users."""
    return await run_in_threadpool(experiments_document, client)


@router.get("/experiments/{key}", responses=_ONE, **scoped("read"))  # type: ignore[arg-type]
async def get_one(
    key: Key,
    from_: Annotated[
        IsoTime | None,
        Query(alias="from", description="range start, ISO 8601 (default: the first exposure)"),
    ] = None,
    to: Annotated[
        IsoTime | None, Query(description="range end (exclusive), ISO 8601 (default: now)")
    ] = None,
    cuped: Annotated[
        bool, Query(description="CUPED: adjust by the 14 days before exposure")
    ] = False,
    sequential: Annotated[bool, Query(description="always-valid (sequential) intervals")] = False,
    client: Client = Depends(get_warehouse),
) -> dict[str, Any]:
    """One experiment's users per variant, SRM check and results per metric."""
    start = aware(from_) if from_ else None
    end = aware(to) if to else None

    def answer() -> dict[str, Any]:
        return experiment_document(client, key, start, end, cuped=cuped, sequential=sequential)

    try:
        return await run_in_threadpool(answer)
    except UnknownExperiment as exc:
        raise ApiError(404, str(exc)) from None


@router.put("/experiments/{key}", **scoped("admin"))
async def put_one(
    key: Key, body: Declaration, client: Client = Depends(get_warehouse)
) -> dict[str, Any]:
    """Declare an experiment's control and expected split (weights by variant)."""
    return await run_in_threadpool(declare, client, key, body.control, body.weights)
