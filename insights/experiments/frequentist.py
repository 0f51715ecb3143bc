"""Frequentist tests of a treatment against the control on relative lift (gbstats 0.8,
``gbstats/frequentist/tests.py``: ``TwoSidedTTest`` and ``SequentialTwoSidedTTest``).

Lift Δ = (μ_b − μ_a) / μ̄_a where μ are the (possibly CUPED-adjusted) means and μ̄_a the
control's unadjusted mean. Its variance by the delta method is
``var_b / (μ̄_a² n_b) + var_a μ̄_b² / (μ̄_a⁴ n_a)``. The fixed-horizon test uses Student's t
with Welch–Satterthwaite degrees of freedom; the sequential one the asymptotic confidence
sequence of Waudby-Smith et al. (arXiv:2103.06476v7, eqs. 9, 155, 161) with tuning
parameter 5,000. When gbstats gives up (a zero or negative control mean, a zero or negative
variance in a variant) the result is its neutral default: lift 0, CI [0, 0], p-value 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from insights.experiments.statistics import Statistic, adjust_pair, has_zero_variance

__all__ = [
    "BASELINE_VARIATION_ZERO",
    "NO_UNITS_IN_VARIATION",
    "ZERO_NEGATIVE_VARIANCE",
    "FrequentistResult",
    "relative_diff",
    "relative_variance",
    "sequential_two_sided_ttest",
    "two_sided_ttest",
]

# gbstats/messages.py: why a test returned its neutral default
BASELINE_VARIATION_ZERO = "ZERO_NEGATIVE_BASELINE_VARIATION"
ZERO_NEGATIVE_VARIANCE = "ZERO_NEGATIVE_VARIANCE"
NO_UNITS_IN_VARIATION = "NO_UNITS_IN_VARIATION"


@dataclass(frozen=True, slots=True)
class FrequentistResult:
    """Relative lift (``expected``), its CI and two-sided p-value; ``error`` is gbstats'
    message when the neutral default was returned instead."""

    expected: float
    ci: tuple[float, float]
    p_value: float
    error: str | None = None


def _default(error: str) -> FrequentistResult:
    return FrequentistResult(expected=0.0, ci=(0.0, 0.0), p_value=1.0, error=error)


def relative_diff(a: Statistic, b: Statistic) -> float:
    """gbstats ``frequentist_diff`` (relative): (μ_b − μ_a) / μ̄_a."""
    return (b.mean - a.mean) / a.unadjusted_mean


def relative_variance(a: Statistic, b: Statistic) -> float:
    """gbstats ``frequentist_variance`` (relative): the delta-method variance of the lift."""
    mean_a, mean_b = a.unadjusted_mean, b.unadjusted_mean
    return b.variance / (pow(mean_a, 2) * b.n) + a.variance * pow(mean_b, 2) / (
        pow(mean_a, 4) * a.n
    )


def _welch_dof(a: Statistic, b: Statistic) -> float:
    return pow(b.variance / b.n + a.variance / a.n, 2) / (
        pow(b.variance, 2) / (pow(b.n, 2) * (b.n - 1))
        + pow(a.variance, 2) / (pow(a.n, 2) * (a.n - 1))
    )


def _degenerate(a: Statistic, b: Statistic) -> str | None:
    # TTest.compute_result's guards, in its order
    if a.mean == 0 or a.unadjusted_mean == 0:
        return BASELINE_VARIATION_ZERO
    if has_zero_variance(a) or has_zero_variance(b):
        return ZERO_NEGATIVE_VARIANCE
    return None


def _lift(
    a: Statistic, b: Statistic
) -> tuple[Statistic, Statistic, float, float] | FrequentistResult:
    """The θ-adjusted pair with the lift's estimate and variance, or the default result of
    a degenerate pair (both tests start so, as gbstats' ``TTest`` does)."""
    a, b = adjust_pair(a, b)
    error = _degenerate(a, b)
    if error:
        return _default(error)
    return a, b, relative_diff(a, b), relative_variance(a, b)


def two_sided_ttest(a: Statistic, b: Statistic, *, alpha: float = 0.05) -> FrequentistResult:
    """gbstats ``TwoSidedTTest`` (relative): Welch's t-test of the lift of ``b`` over ``a``."""
    lift = _lift(a, b)
    if isinstance(lift, FrequentistResult):
        return lift
    a, b, estimate, variance = lift
    dof = _welch_dof(a, b)
    critical = estimate / np.sqrt(variance)
    from scipy.stats import t as student_t  # imported here: see insights/experiments/__init__.py

    p_value = 2 * (1 - student_t.cdf(abs(critical), dof))
    width = student_t.ppf(1 - alpha / 2, dof) * np.sqrt(variance)
    return FrequentistResult(
        expected=float(estimate),
        ci=(float(estimate - width), float(estimate + width)),
        p_value=float(p_value),
    )


def sequential_two_sided_ttest(
    a: Statistic, b: Statistic, *, alpha: float = 0.05, tuning: float = 5000.0
) -> FrequentistResult:
    """gbstats ``SequentialTwoSidedTTest`` (relative): an always-valid CI and p-value,
    safe to look at as often as one likes; ``tuning`` is the sample size where the
    interval is tightest."""
    lift = _lift(a, b)
    if isinstance(lift, FrequentistResult):
        return lift
    a, b, estimate, variance = lift
    n = a.n + b.n
    rho = np.sqrt((-2 * np.log(alpha) + np.log(-2 * np.log(alpha) + 1)) / tuning)
    s2 = variance * n
    width = np.sqrt(s2) * np.sqrt(
        (2 * (n * np.power(rho, 2) + 1))
        * np.log(np.sqrt(n * np.power(rho, 2) + 1) / alpha)
        / np.power(n * rho, 2)
    )
    st2 = np.power(estimate, 2) * n / variance
    tr2p1 = n * np.power(rho, 2) + 1
    with np.errstate(over="ignore"):  # a huge statistic: e-value inf, p-value 0
        evalue = np.exp(np.power(rho, 2) * st2 / (2 * tr2p1)) / np.sqrt(tr2p1)
    return FrequentistResult(
        expected=float(estimate),
        ci=(float(estimate - width), float(estimate + width)),
        p_value=float(min(1 / evalue, 1)),
    )
