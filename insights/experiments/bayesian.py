"""gbstats 0.8's ``EffectBayesianABTest`` with its default prior
(``gbstats/bayesian/tests.py``), for the chance to win.

The default prior (``GaussianPrior()``: mean 0, variance 1, ``proper=False``) is improper,
so the posterior of the relative lift is the normal approximation of the data alone:
N(Δ, σ²) with Δ and σ² the frequentist lift and its delta-method variance. The chance to
win is P(lift > 0) = 1 − Φ(−Δ/σ). When gbstats gives up (zero control mean, a variant
without users, a zero variance) it answers 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from insights.experiments.frequentist import (
    BASELINE_VARIATION_ZERO,
    NO_UNITS_IN_VARIATION,
    ZERO_NEGATIVE_VARIANCE,
    relative_diff,
    relative_variance,
)
from insights.experiments.statistics import Statistic, adjust_pair, has_zero_variance

__all__ = ["BayesianResult", "effect_bayesian_ab_test"]


@dataclass(frozen=True, slots=True)
class BayesianResult:
    """The posterior mean lift, its 95 % credible interval and P(lift > 0); ``error`` is
    gbstats' message when the neutral default was returned instead."""

    expected: float
    ci: tuple[float, float]
    chance_to_win: float
    error: str | None = None


def effect_bayesian_ab_test(a: Statistic, b: Statistic, *, alpha: float = 0.05) -> BayesianResult:
    """gbstats ``EffectBayesianABTest`` (relative, default improper prior) of ``b`` over ``a``."""
    # gbstats' test keeps the caller's statistics after its base class has set θ on them
    # in place; a θ of 0 leaves x̄ − 0·p̄ and var(x), the same as falling back to x alone
    a, b = adjust_pair(a, b)
    error = None
    if a.mean == 0 or a.unadjusted_mean == 0:
        error = BASELINE_VARIATION_ZERO
    elif a.n == 0 or b.n == 0:
        error = NO_UNITS_IN_VARIATION
    elif has_zero_variance(a) or has_zero_variance(b):
        error = ZERO_NEGATIVE_VARIANCE
    if error:
        return BayesianResult(expected=0.0, ci=(0.0, 0.0), chance_to_win=0.5, error=error)
    data_variance = relative_variance(a, b)
    data_mean = relative_diff(a, b)
    # improper prior: the precision it adds is int(False) / variance = 0
    post_prec = 1 / data_variance + 0 / 1
    std_diff = np.sqrt(1 / post_prec)
    from scipy.stats import norm  # imported here: see insights/experiments/__init__.py

    lo, hi = norm.ppf([alpha / 2, 1 - alpha / 2], data_mean, std_diff)
    return BayesianResult(
        expected=float(data_mean),
        ci=(float(lo), float(hi)),
        chance_to_win=float(norm.sf(0, data_mean, std_diff)),
    )
