"""Experiments answered from the warehouse (CONTRACT §10): the documents of
``GET /v1/experiments`` and ``GET /v1/experiments/{key}``, shared by the API, the CLI and
the experiment insights. The warehouse gives the sums (``warehouse.experiments``, one query),
``insights.experiments.report`` the statistics.

Where the contract is silent: without ``from`` the range starts at the experiment's first
exposure, without ``to`` it ends now (or just after its last exposure, when that is later:
events may be up to 24 h ahead). Without either, a live experiment answered from its kept
sums ends just after the newest exposure or act they hold (docs/experiments.md, "Live
experiments"): the range they are exact for. An experiment nobody was exposed to is
unknown (404).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from ingest.errors import PulseError
from ingest.times import as_utc
from insights.experiments.report import ExperimentReport, experiment_report
from warehouse.experiment_totals import kept_span
from warehouse.experiments import (
    MAX_VARIANTS,
    ExperimentSettings,
    experiment_settings,
    experiment_sums,
    list_experiments,
    put_experiment_settings,
    whole_experiment_sums,
)
from warehouse.queries import QueryError

__all__ = [
    "UnknownExperiment",
    "check_declaration",
    "declare",
    "experiment_document",
    "experiments_document",
    "report_for",
]

_MS = timedelta(milliseconds=1)


class UnknownExperiment(PulseError, LookupError):
    """No exposure of this experiment was ever seen."""


def _span(client: Client, experiment: str) -> tuple[datetime, datetime] | None:
    kept = kept_span(client, experiment)  # current kept sums know it: no scan of exposures
    if kept is not None:
        return kept
    rows = client.query(
        "SELECT min(ts), max(ts), count() FROM exposures WHERE experiment = {e:String}",
        parameters={"e": experiment},
    ).result_rows
    if not rows or not rows[0][2]:
        return None
    first, last, _ = rows[0]
    return as_utc(first), as_utc(last)


def _seen(client: Client, experiment: str) -> bool:
    rows = client.query(
        "SELECT count() FROM (SELECT 1 FROM exposures WHERE experiment = {e:String} LIMIT 1)",
        parameters={"e": experiment},
    ).result_rows
    return bool(rows[0][0])


def _unknown(experiment: str) -> UnknownExperiment:
    return UnknownExperiment(f"no experiment {experiment[:64]!r}: no exposure of it was seen")


def report_for(
    client: Client,
    experiment: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    cuped: bool = False,
    sequential: bool = False,
    now: datetime | None = None,
) -> ExperimentReport:
    """One experiment's statistics over ``[start, end)`` (defaults: the module's docstring)."""
    sums = None
    if start is None and end is None:  # the kept sums may answer, with their own range
        sums = whole_experiment_sums(client, experiment, now or datetime.now(UTC))
    if sums is not None:
        start, end = sums.start, sums.end
    elif start is None or end is None:  # the defaults need the exposures' span
        span = _span(client, experiment)
        if span is None:
            raise _unknown(experiment)
        first, last = span
        start = start or first
        end = end or max(now or datetime.now(UTC), last + _MS)
    if sums is None:
        sums = experiment_sums(client, experiment, start, end, cuped=cuped)
    if not sums.users and not sums.multiple_exposures and not _seen(client, experiment):
        raise _unknown(experiment)
    declared = experiment_settings(client, experiment) or ExperimentSettings()
    return experiment_report(
        experiment, start, end, sums.users, sums.sums,
        multiple_exposures=sums.multiple_exposures, control=declared.control,
        weights=dict(declared.weights) or None, cuped=cuped, sequential=sequential,
    )  # fmt: skip


def experiment_document(
    client: Client,
    experiment: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    cuped: bool = False,
    sequential: bool = False,
) -> dict[str, Any]:
    """``GET /v1/experiments/{key}``'s document."""
    report = report_for(client, experiment, start, end, cuped=cuped, sequential=sequential)
    return report.document()


def experiments_document(client: Client) -> dict[str, Any]:
    """``GET /v1/experiments``: every experiment seen, with its declared control."""
    found = []
    for summary in list_experiments(client):
        entry = summary.to_dict()
        declared = experiment_settings(client, summary.experiment)
        entry["control"] = (declared.control if declared and declared.control else None) or (
            "control" if "control" in summary.variants else min(summary.variants)
        )
        entry["weights"] = dict(declared.weights) if declared and declared.weights else None
        found.append(entry)
    return {"experiments": found}


def check_declaration(control: str | None, weights: Mapping[str, float] | None) -> None:
    """A 400 (:class:`QueryError`) for a declaration that cannot be used."""
    if control is not None and not 0 < len(control) <= 64:
        raise QueryError("control: a variant name is 1 to 64 characters")
    weights = weights or {}
    if len(weights) > MAX_VARIANTS:
        raise QueryError(f"weights: at most {MAX_VARIANTS} variants")
    for name, weight in weights.items():
        if not 0 < len(name) <= 64:
            raise QueryError("weights: a variant name is 1 to 64 characters")
        if not math.isfinite(weight) or weight < 0:
            raise QueryError(f"weights: {name[:64]!r} needs a finite weight ≥ 0")
    if weights and not any(w > 0 for w in weights.values()):
        raise QueryError("weights: at least one weight must be positive")
    if weights and control is not None and control not in weights:
        raise QueryError(f"control: {control[:64]!r} is not among the weights' variants")


def declare(
    client: Client, experiment: str, control: str | None, weights: Mapping[str, float] | None
) -> dict[str, Any]:
    """Store ``PUT /v1/experiments/{key}``'s declaration; what is now declared."""
    if not 0 < len(experiment) <= 64:
        raise QueryError("experiment: a name is 1 to 64 characters")
    check_declaration(control, weights)
    settings = ExperimentSettings(control, dict(weights or {}))
    put_experiment_settings(client, experiment, settings, datetime.now(UTC), time.time_ns())
    return {"experiment": experiment, "control": control, "weights": dict(weights or {})}
