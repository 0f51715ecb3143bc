"""A variant's statistic of one metric, as gbstats 0.8 models it.

Each class mirrors the one of the same name in gbstats' ``gbstats/models/statistics.py``
(GrowthBook, ``packages/stats``) term by term, in the same order of floating-point
operations, so that results agree to the last bits rather than merely to 10^-6:

- `SampleMeanStatistic` (count and revenue metrics): mean Σx/n, sample variance
  (Σx² − (Σx)²/n)/(n − 1); both 0 when there are too few users (n = 0, n ≤ 1).
- `ProportionStatistic` (0/1 metrics): mean p = Σx/n, variance p(1 − p).
- `RatioStatistic` (``aov``): mean Σm/Σd (0 when Σd = 0) and the delta-method variance of
  a ratio of means (0 when the denominator's mean is 0 or n ≤ 1).
- `RegressionAdjustedStatistic` (CUPED): mean x̄ − θ·p̄, variance
  var(x) + θ²·var(p) − 2θ·cov(x, p); `compute_theta` pools control and treatment.

Unlike gbstats (whose test classes set θ on the statistics in place) the values here are
frozen: `adjust_pair` returns the θ-adjusted pair.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "ProportionStatistic",
    "RatioStatistic",
    "RegressionAdjustedStatistic",
    "SampleMeanStatistic",
    "Statistic",
    "adjust_pair",
    "compute_theta",
    "has_zero_variance",
]


class _SumOverUsers:
    """The mean of a per-user metric: Σx / n (0 without users), nothing to undo."""

    __slots__ = ()
    n: int
    sum: float

    @property
    def mean(self) -> float:
        """Σx / n (0 without users)."""
        if self.n == 0:
            return 0.0
        return self.sum / self.n

    @property
    def unadjusted_mean(self) -> float:
        """The mean (no regression adjustment to undo)."""
        return self.mean


@dataclass(frozen=True, slots=True)
class SampleMeanStatistic(_SumOverUsers):
    """A metric with any per-user value: n users, Σx, Σx²."""

    n: int
    sum: float
    sum_squares: float

    @property
    def variance(self) -> float:
        """The sample variance; 0 for n ≤ 1."""
        if self.n <= 1:
            return 0.0
        return (self.sum_squares - pow(self.sum, 2) / self.n) / (self.n - 1)


@dataclass(frozen=True, slots=True)
class ProportionStatistic(_SumOverUsers):
    """A 0/1 metric: n users, Σx of them with a 1 (its mean is the share p)."""

    n: int
    sum: float

    @property
    def sum_squares(self) -> float:
        """Σx² = Σx for 0/1 values."""
        return self.sum

    @property
    def variance(self) -> float:
        """p(1 − p), the variance of one user's 0/1 value."""
        return self.mean * (1 - self.mean)


BaseStatistic = SampleMeanStatistic | ProportionStatistic


@dataclass(frozen=True, slots=True)
class RatioStatistic:
    """Σm / Σd over n users (gbstats ``RatioStatistic``), e.g. revenue over orders."""

    n: int
    m_statistic: BaseStatistic
    d_statistic: BaseStatistic
    m_d_sum_of_products: float

    @property
    def mean(self) -> float:
        """Σm / Σd (0 when Σd = 0)."""
        if self.d_statistic.sum == 0:
            return 0.0
        return self.m_statistic.sum / self.d_statistic.sum

    @property
    def unadjusted_mean(self) -> float:
        """The ratio (no regression adjustment to undo)."""
        return self.mean

    @property
    def covariance(self) -> float:
        """The sample covariance of the per-user m and d; 0 for n ≤ 1."""
        if self.n <= 1:
            return 0.0
        return (self.m_d_sum_of_products - self.m_statistic.sum * self.d_statistic.sum / self.n) / (
            self.n - 1
        )

    @property
    def variance(self) -> float:
        """Delta method: var(m)/d̄² − 2·cov·m̄/d̄³ + m̄²·var(d)/d̄⁴ (0 if d̄ = 0 or n ≤ 1)."""
        m, d = self.m_statistic, self.d_statistic
        if d.mean == 0 or self.n <= 1:
            return 0.0
        return (
            m.variance / pow(d.mean, 2)
            - 2 * self.covariance * m.mean / pow(d.mean, 3)
            + pow(m.mean, 2) * d.variance / pow(d.mean, 4)
        )


@dataclass(frozen=True, slots=True)
class RegressionAdjustedStatistic:
    """A metric adjusted by its pre-period covariate (CUPED): x̄ − θ·p̄."""

    n: int
    post_statistic: BaseStatistic
    pre_statistic: BaseStatistic
    post_pre_sum_of_products: float
    theta: float = 0.0

    @property
    def mean(self) -> float:
        """The adjusted mean x̄ − θ·p̄."""
        return self.post_statistic.mean - self.theta * self.pre_statistic.mean

    @property
    def unadjusted_mean(self) -> float:
        """The plain mean x̄ (what is reported, and the base of the relative lift)."""
        return self.post_statistic.mean

    @property
    def covariance(self) -> float:
        """The sample covariance of the per-user x and p; 0 for n ≤ 1."""
        if self.n <= 1:
            return 0.0
        return (
            self.post_pre_sum_of_products
            - self.post_statistic.sum * self.pre_statistic.sum / self.n
        ) / (self.n - 1)

    @property
    def variance(self) -> float:
        """var(x) + θ²·var(p) − 2θ·cov(x, p); 0 for n ≤ 1."""
        if self.n <= 1:
            return 0.0
        return (
            self.post_statistic.variance
            + pow(self.theta, 2) * self.pre_statistic.variance
            - 2 * self.theta * self.covariance
        )


Statistic = SampleMeanStatistic | ProportionStatistic | RatioStatistic | RegressionAdjustedStatistic


def has_zero_variance(stat: Statistic) -> bool:
    """gbstats' ``_has_zero_variance``: the variance is 0 or (by rounding) negative."""
    return stat.variance <= 0.0


def _joint(a: BaseStatistic, b: BaseStatistic, n: int) -> BaseStatistic:
    if isinstance(a, ProportionStatistic) and isinstance(b, ProportionStatistic):
        return ProportionStatistic(n=n, sum=a.sum + b.sum)
    if isinstance(a, SampleMeanStatistic) and isinstance(b, SampleMeanStatistic):
        return SampleMeanStatistic(
            n=n, sum=a.sum + b.sum, sum_squares=a.sum_squares + b.sum_squares
        )
    raise ValueError("a metric's statistics must be of one type in every variant")


def compute_theta(a: RegressionAdjustedStatistic, b: RegressionAdjustedStatistic) -> float:
    """θ = cov(x, p) / var(p) over control and treatment pooled (gbstats
    ``compute_theta``); 0 when the pooled pre- or post-period values do not vary."""
    n = a.n + b.n
    post = _joint(a.post_statistic, b.post_statistic, n)
    pre = _joint(a.pre_statistic, b.pre_statistic, n)
    if pre.variance == 0 or post.variance == 0:
        return 0.0
    joint = RegressionAdjustedStatistic(
        n=n,
        post_statistic=post,
        pre_statistic=pre,
        post_pre_sum_of_products=a.post_pre_sum_of_products + b.post_pre_sum_of_products,
    )
    return joint.covariance / pre.variance


def adjust_pair(a: Statistic, b: Statistic) -> tuple[Statistic, Statistic]:
    """The control and treatment statistics a gbstats test works on (``BaseABTest``):
    two regression-adjusted statistics get their pooled θ, or fall back to the plain
    post-period statistics when θ = 0 (no variance in a period); others are unchanged."""
    if isinstance(a, RegressionAdjustedStatistic) and isinstance(b, RegressionAdjustedStatistic):
        theta = compute_theta(a, b)
        if theta == 0:
            return a.post_statistic, b.post_statistic
        return replace(a, theta=theta), replace(b, theta=theta)
    return a, b
