"""Experiments from the warehouse (docs/experiments.md: the API, the metrics and their statistics).

:func:`experiment_sums` answers one experiment over a range with ONE query: per variant,
the users and the sufficient statistics of every experiment metric (n, Σx, Σx², the
CUPED pre-period's Σp, Σp², Σxp, the ratio's Σy, Σy², Σxy), which the statistics layer
(``insights.experiments``) turns into lifts, intervals and p-values. No per-user value
leaves the warehouse.

How the query reads docs/experiments.md, from ``experiment_users`` (one row per exposed
user, kept by ClickHouse's materialised views: warehouse/sql/008_experiment_users.sql):

- a user's variant is the variant of their first exposure with ts in ``[from, to)``; a
  user with exposures to two variants in it goes to the ``''`` group (variants are
  non-empty), counted as ``multiple_exposures`` (the row's first and last exposure time
  skip users with none in the range before any array is read);
- a user's values come from their ``purchase`` and ``add_to_cart`` events from the first
  exposure (inclusive) to ``to``; the pre-period (CUPED) from the 14 days before it;
- events are de-duplicated by ``event_id`` (the newest version of a row written twice:
  the row holds every version it was sent); exposures are a set;
- nothing before the retention's horizon counts (``purged_until``): the raw rows before it
  are gone, the row's sets may still hold them.

Every value is bound by the driver; the range is bounded like every other query
(:func:`warehouse.queries.check_range`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from ingest.times import as_utc
from warehouse.experiment_totals import kept_sums, whole_sums
from warehouse.experiments_sql import PRE_PERIOD, RANGE_SQL, ROWS_SQL, SUMS_SQL
from warehouse.queries import QueryError, check_range

__all__ = [
    "MAX_VARIANTS",
    "PRE_PERIOD",
    "SUM_COLUMNS",
    "ExperimentSettings",
    "ExperimentSummary",
    "ExperimentSums",
    "experiment_settings",
    "experiment_sums",
    "list_experiments",
    "put_experiment_settings",
    "whole_experiment_sums",
]

MAX_VARIANTS = 100  # more variants than any A/B test has: a bounded document
_MULTIPLE = ""  # the group of users exposed to more than one variant

# Per-user values (x: after exposure, p: the pre-period), in the query's column order
SUM_COLUMNS = (
    "conv", "conv_pre", "conv_x_pre",
    "atc", "atc_pre", "atc_x_pre",
    "orders", "orders_sq", "orders_pre", "orders_pre_sq", "orders_x_pre",
    "revenue", "revenue_sq", "revenue_pre", "revenue_pre_sq", "revenue_x_pre",
    "revenue_x_orders",
)  # fmt: skip

# One pass over the experiment's rows: per user, array functions over its own exposures
# and acts. Measured on 1M users (docs/benchmarks.md), every `if` around them to skip
# empty arrays or users with all exposures in the range cost more than it saved.
_SUMS_SQL = f"""
WITH {RANGE_SQL}
SELECT {SUMS_SQL}
FROM ({ROWS_SQL})
GROUP BY variant
ORDER BY variant
LIMIT {{limit:UInt32}}
"""

_LIST_SQL = """
SELECT experiment, groupUniqArray({cap:UInt32})(variant), uniqExact(user_id), min(ts), max(ts)
FROM exposures
GROUP BY experiment
ORDER BY experiment
LIMIT {limit:UInt32}
"""


@dataclass(frozen=True)
class ExperimentSums:
    """One experiment's answer from the warehouse: users and per-user-value sums per
    variant (name order; :data:`SUM_COLUMNS`), and the users left out because they saw
    more than one variant."""

    experiment: str
    start: datetime
    end: datetime
    users: dict[str, int]
    sums: dict[str, dict[str, float]]
    multiple_exposures: int
    # which path answered: "totals" (the kept per-variant sums of the whole experiment:
    # warehouse.experiment_totals), "live" (the same, taken before writes that all lie at
    # or after `end`) or "rows" (the array query over experiment_users)
    path: str = "rows"


@dataclass(frozen=True)
class ExperimentSummary:
    """An experiment seen in the exposures: its variants, users, first and last exposure."""

    experiment: str
    variants: list[str]
    users: int
    first_exposure: datetime
    last_exposure: datetime

    def to_dict(self) -> dict[str, Any]:
        """The ``GET /v1/experiments`` entry."""
        return {
            "experiment": self.experiment,
            "variants": self.variants,
            "users": self.users,
            "first_exposure": _iso(self.first_exposure),
            "last_exposure": _iso(self.last_exposure),
        }


@dataclass(frozen=True)
class ExperimentSettings:
    """What ``PUT /v1/experiments/{key}`` declared: the control (None: ``control``, else
    the first variant by name) and the expected weights (empty: an equal split)."""

    control: str | None = None
    weights: Mapping[str, float] = field(default_factory=dict)


def _iso(value: datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


def experiment_sums(
    client: Client, experiment: str, start: datetime, end: datetime, *, cuped: bool = True
) -> ExperimentSums:
    """One experiment over ``[start, end)`` (see the module's docstring); ``cuped=False``
    reads no events before ``start`` (the pre-period's sums are then partial)."""
    check_range(start, end)
    path, rows = "totals", kept_sums(client, experiment, start, end)
    if rows is None:
        path, rows = "rows", _rows(client, experiment, start, end, cuped)
    return _summary(experiment, start, end, rows, path)


def whole_experiment_sums(client: Client, experiment: str, now: datetime) -> ExperimentSums | None:
    """The question without a range from the kept sums, with the range they answer
    (``warehouse.experiment_totals.whole_sums``), or None: the caller picks the range and
    calls :func:`experiment_sums`."""
    whole = whole_sums(client, experiment, now)
    if whole is None:
        return None
    path = "live" if whole.live else "totals"
    return _summary(experiment, whole.start, whole.end, whole.rows, path)


def _summary(
    experiment: str, start: datetime, end: datetime, rows: list[Any], path: str
) -> ExperimentSums:
    users: dict[str, int] = {}
    sums: dict[str, dict[str, float]] = {}
    multiple = 0
    for variant, n, *values in rows:
        if variant == _MULTIPLE:
            multiple = int(n)
            continue
        users[variant] = int(n)
        sums[variant] = {c: _number(v) for c, v in zip(SUM_COLUMNS, values, strict=True)}
    if len(users) > MAX_VARIANTS:
        raise QueryError(f"experiment: over {MAX_VARIANTS} variants; not an A/B test")
    return ExperimentSums(experiment, start, end, users, sums, multiple, path)


def _rows(
    client: Client, experiment: str, start: datetime, end: datetime, cuped: bool
) -> list[Any]:
    pre_lo = start - PRE_PERIOD if cuped else start
    return list(
        client.query(
            _SUMS_SQL,
            parameters={
                "e": experiment,
                "lo": start,
                "hi": end,
                "pre_lo": pre_lo,
                "limit": MAX_VARIANTS + 2,
            },
        ).result_rows
    )


def _number(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else 0.0


def list_experiments(client: Client, limit: int = 1000) -> list[ExperimentSummary]:
    """Every experiment seen in the exposures (by name, at most ``limit``)."""
    rows = client.query(_LIST_SQL, parameters={"cap": MAX_VARIANTS, "limit": limit}).result_rows
    return [
        ExperimentSummary(str(e), sorted(map(str, v)), int(n), as_utc(first), as_utc(last))
        for e, v, n, first, last in rows
    ]


def experiment_settings(client: Client, experiment: str) -> ExperimentSettings | None:
    """The newest declaration of ``experiment`` (None: never declared)."""
    rows = client.query(
        "SELECT argMax(control, version), argMax(weights, version) FROM experiment_settings "
        "WHERE experiment = {e:String} GROUP BY experiment",
        parameters={"e": experiment},
    ).result_rows
    if not rows:
        return None
    control, weights = rows[0]
    return ExperimentSettings(str(control) or None, {str(k): float(v) for k, v in weights.items()})


def put_experiment_settings(
    client: Client, experiment: str, settings: ExperimentSettings, now: datetime, version: int
) -> None:
    """Store a declaration (newest ``version`` wins)."""
    client.insert(
        "experiment_settings",
        [[experiment, settings.control or "", dict(settings.weights), as_utc(now), version]],
        column_names=["experiment", "control", "weights", "updated_at", "version"],
    )
