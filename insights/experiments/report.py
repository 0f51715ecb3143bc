"""One experiment's CONTRACT §10 document from its per-variant sums.

The one path from sufficient statistics to the answer: the API, the CLI, the insights
(SRM, guardrails) and the A/A study (``bench/experiments_aa.py``, sums made in memory) all
call :func:`experiment_report`, so what the study measures is what users see.

Decisions where the contract is silent (docs/experiments.md):

- the control is the declared one, else ``control``, else the first variant by name;
- variants declared in the weights but never seen are listed with 0 users (an SRM);
- a variant seen but not named in declared weights gets weight 0 in the SRM check
  (gbstats: it adds nothing to χ² but counts in the degrees of freedom);
- a non-finite number (none is expected) is written as ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from insights.experiments.analysis import EXPERIMENT_METRICS, MetricResult, analyze
from insights.experiments.srm import SrmResult, srm
from insights.experiments.sums import Moments, VariantSums

__all__ = [
    "CONTROL",
    "ExperimentReport",
    "choose_control",
    "experiment_report",
    "metric_sums",
]

CONTROL = "control"  # CONTRACT §10: the control's default name


@dataclass(frozen=True)
class ExperimentReport:
    """The statistics of one experiment (:meth:`document` is CONTRACT §10's JSON)."""

    experiment: str
    start: datetime
    end: datetime
    control: str
    cuped: bool
    sequential: bool
    users: dict[str, int]
    multiple_exposures: int
    srm: SrmResult
    results: list[MetricResult]

    def document(self) -> dict[str, Any]:
        """``GET /v1/experiments/{key}``'s answer."""
        return {
            "experiment": self.experiment,
            "from": _iso(self.start),
            "to": _iso(self.end),
            "control": self.control,
            "cuped": self.cuped,
            "sequential": self.sequential,
            "variants": [{"variant": v, "users": n} for v, n in self.users.items()],
            "multiple_exposures": self.multiple_exposures,
            "srm": {"p_value": _finite(self.srm.p_value), "flagged": self.srm.flagged},
            "results": [_clean(r.to_dict()) for r in self.results],
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _clean(result: dict[str, Any]) -> dict[str, Any]:
    for key, value in result.items():
        if isinstance(value, float):
            result[key] = _finite(value)
    result["ci"] = [_finite(v) for v in result["ci"]]
    return result


def choose_control(variants: list[str], declared: str | None = None) -> str:
    """The control: the declared one, else ``control``, else the first by name."""
    if declared:
        return declared
    if CONTROL in variants:
        return CONTROL
    return min(variants) if variants else CONTROL


def metric_sums(n: int, s: Mapping[str, float]) -> dict[str, VariantSums]:
    """Each experiment metric's `VariantSums` of one variant's ``n`` users from the
    warehouse's sums (``warehouse.experiments.SUM_COLUMNS``; a missing one is 0)."""

    def g(name: str) -> float:
        return float(s.get(name, 0.0))

    def binomial(x: str) -> VariantSums:
        # a 0/1 value is its own square
        return VariantSums(
            n=n,
            main=Moments(g(x), g(x)),
            covariate=Moments(g(f"{x}_pre"), g(f"{x}_pre")),
            main_covariate_sum_product=g(f"{x}_x_pre"),
        )

    def count(x: str) -> VariantSums:
        return VariantSums(
            n=n,
            main=Moments(g(x), g(f"{x}_sq")),
            covariate=Moments(g(f"{x}_pre"), g(f"{x}_pre_sq")),
            main_covariate_sum_product=g(f"{x}_x_pre"),
        )

    return {
        "conversion": binomial("conv"),
        "add_to_cart_rate": binomial("atc"),
        "orders_per_user": count("orders"),
        "revenue_per_user": count("revenue"),
        "aov": VariantSums(
            n=n,
            main=Moments(g("revenue"), g("revenue_sq")),
            denominator=Moments(g("orders"), g("orders_sq")),
            main_denominator_sum_product=g("revenue_x_orders"),
        ),
    }


def experiment_report(
    experiment: str,
    start: datetime,
    end: datetime,
    users: Mapping[str, int],
    sums: Mapping[str, Mapping[str, float]],
    *,
    multiple_exposures: int = 0,
    control: str | None = None,
    weights: Mapping[str, float] | None = None,
    cuped: bool = False,
    sequential: bool = False,
) -> ExperimentReport:
    """The statistics of one experiment from its users and sums per variant (see the
    module's docstring for the control and the weights)."""
    seen = dict(users)
    for name in [*(weights or {}), *([control] if control else [])]:
        seen.setdefault(name, 0)
    names = sorted(seen)
    chosen = choose_control(names, control)
    ordered = {name: seen[name] for name in names}
    expected = None
    if weights:
        expected = {name: float(weights.get(name, 0.0)) for name in names}
    check = srm(ordered, expected)
    results: list[MetricResult] = []
    if chosen in ordered and len(ordered) > 1:
        by_metric: dict[str, dict[str, VariantSums]] = {m: {} for m in EXPERIMENT_METRICS}
        for name in names:
            for metric, variant_sums in metric_sums(ordered[name], sums.get(name, {})).items():
                by_metric[metric][name] = variant_sums
        results = analyze(by_metric, chosen, cuped=cuped, sequential=sequential)
    return ExperimentReport(
        experiment, start, end, chosen, cuped, sequential, ordered, multiple_exposures,
        check, results,
    )  # fmt: skip
