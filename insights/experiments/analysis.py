"""One result per metric and non-control variant (CONTRACT §10 ``results``), as gbstats
0.8's engine (``gbstats/gbstats.py``: ``get_configured_test``, ``analyze_row``) builds it.

- ``mean`` / ``control_mean``: the variants' unadjusted means (for ``aov``, Σ revenue /
  Σ orders), gbstats' ``cr``.
- ``lift``, ``ci``, ``p_value``: `two_sided_ttest`, or `sequential_two_sided_ttest` with
  ``sequential=True``. Where the test gave up but the control mean is positive, the lift is
  still the plain relative difference of the means (as the engine reports it); with a
  control mean ≤ 0 it is 0.
- ``chance_to_win``: `effect_bayesian_ab_test` (default prior) on the same statistics.
- ``cuped=True`` adjusts the binomial and count metrics by their pre-period covariate
  (`RegressionAdjustedStatistic`); ratio metrics (``aov``) are never adjusted — gbstats
  0.8 has no regression-adjusted ratio.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from insights.experiments.bayesian import effect_bayesian_ab_test
from insights.experiments.frequentist import sequential_two_sided_ttest, two_sided_ttest
from insights.experiments.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
    adjust_pair,
)
from insights.experiments.sums import Moments, VariantSums

__all__ = [
    "EXPERIMENT_METRICS",
    "SEQUENTIAL_TUNING",
    "MetricKind",
    "MetricResult",
    "analyze",
    "analyze_metric",
    "statistic",
]

# binomial: a 0/1 value per user; count: any value per user; ratio: Σ numerator / Σ denominator
MetricKind = Literal["binomial", "count", "ratio"]

# METRICS.md "Experiments": the metrics of every experiment, in the order results are listed
EXPERIMENT_METRICS: Mapping[str, MetricKind] = {
    "conversion": "binomial",
    "add_to_cart_rate": "binomial",
    "orders_per_user": "count",
    "revenue_per_user": "count",
    "aov": "ratio",
}

SEQUENTIAL_TUNING = 5000.0  # CONTRACT §10: the sequential test's tuning parameter


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric's result for one non-control variant (CONTRACT §10 ``results`` entry);
    ``error`` is gbstats' reason when its tests returned their neutral default."""

    metric: str
    variant: str
    mean: float
    control_mean: float
    lift: float
    ci: tuple[float, float]
    p_value: float
    chance_to_win: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The CONTRACT §10 fields (``error`` is not one of them)."""
        return {
            "metric": self.metric,
            "variant": self.variant,
            "mean": self.mean,
            "control_mean": self.control_mean,
            "lift": self.lift,
            "ci": [self.ci[0], self.ci[1]],
            "p_value": self.p_value,
            "chance_to_win": self.chance_to_win,
        }


def _base(kind: MetricKind, n: int, moments: Moments) -> SampleMeanStatistic | ProportionStatistic:
    if kind == "binomial":
        return ProportionStatistic(n=n, sum=moments.sum)
    return SampleMeanStatistic(n=n, sum=moments.sum, sum_squares=moments.sum_squares)


def statistic(kind: MetricKind, sums: VariantSums, *, cuped: bool = False) -> Statistic:
    """The gbstats statistic of one variant (``variation_statistic_from_metric_row``);
    ``cuped`` is ignored for ratio metrics."""
    if kind == "ratio":
        if sums.denominator is None:
            raise ValueError("a ratio metric needs the denominator's sums")
        return RatioStatistic(
            n=sums.n,
            m_statistic=_base("count", sums.n, sums.main),
            d_statistic=_base("count", sums.n, sums.denominator),
            m_d_sum_of_products=sums.main_denominator_sum_product,
        )
    if not cuped:
        return _base(kind, sums.n, sums.main)
    if sums.covariate is None:
        raise ValueError("CUPED needs the pre-period covariate's sums")
    return RegressionAdjustedStatistic(
        n=sums.n,
        post_statistic=_base(kind, sums.n, sums.main),
        pre_statistic=_base(kind, sums.n, sums.covariate),
        post_pre_sum_of_products=sums.main_covariate_sum_product,
    )


def analyze_metric(
    metric: str,
    kind: MetricKind,
    variants: Mapping[str, VariantSums],
    control: str,
    *,
    cuped: bool = False,
    sequential: bool = False,
    alpha: float = 0.05,
) -> list[MetricResult]:
    """Each non-control variant of ``variants`` (in their order) against ``control``."""
    if control not in variants:
        raise ValueError(f"the control {control!r} is not among the variants")
    a = statistic(kind, variants[control], cuped=cuped)
    results = []
    for name, sums in variants.items():
        if name == control:
            continue
        b = statistic(kind, sums, cuped=cuped)
        if sequential:
            freq = sequential_two_sided_ttest(a, b, alpha=alpha, tuning=SEQUENTIAL_TUNING)
        else:
            freq = two_sided_ttest(a, b, alpha=alpha)
        bayes = effect_bayesian_ab_test(a, b, alpha=alpha)
        results.append(
            MetricResult(
                metric=metric,
                variant=name,
                mean=float(b.unadjusted_mean),
                control_mean=float(a.unadjusted_mean),
                lift=_lift(a, b, freq.expected),
                ci=freq.ci,
                p_value=freq.p_value,
                chance_to_win=bayes.chance_to_win,
                error=freq.error or bayes.error,
            )
        )
    return results


def _lift(a: Statistic, b: Statistic, expected: float) -> float:
    # gbstats analyze_row: what the engine reports as the variant's "expected" lift
    a, b = adjust_pair(a, b)
    if a.unadjusted_mean <= 0:
        return 0.0
    if expected == 0:
        return float((b.mean - a.mean) / a.unadjusted_mean)
    return expected


def analyze(
    sums: Mapping[str, Mapping[str, VariantSums]],
    control: str,
    *,
    cuped: bool = False,
    sequential: bool = False,
) -> list[MetricResult]:
    """Results for every metric of `EXPERIMENT_METRICS` present in ``sums``
    (metric → variant → sums), metric by metric."""
    unknown = [metric for metric in sums if metric not in EXPERIMENT_METRICS]
    if unknown:
        raise ValueError(f"unknown experiment metric(s) {', '.join(unknown)}")
    results: list[MetricResult] = []
    for metric, kind in EXPERIMENT_METRICS.items():
        if metric in sums:
            results += analyze_metric(
                metric, kind, sums[metric], control, cuped=cuped, sequential=sequential
            )
    return results
