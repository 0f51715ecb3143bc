"""Sample-ratio mismatch: gbstats 0.8's ``check_srm`` (``gbstats/utils.py``).

Pearson's chi-square goodness of fit of the users per variant against the expected
weights, with (variants − 1) degrees of freedom. A variant with weight ≤ 0 adds nothing
to the statistic but still counts in the degrees of freedom; no users at all gives 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["SRM_THRESHOLD", "SrmResult", "check_srm", "srm"]

SRM_THRESHOLD = 0.001  # CONTRACT §10: flagged when p < 0.001


@dataclass(frozen=True, slots=True)
class SrmResult:
    """The SRM p-value and whether it is flagged (p < 0.001)."""

    p_value: float
    flagged: bool


def check_srm(users: Sequence[int], weights: Sequence[float]) -> float:
    """The p-value that ``users`` (per variant) were drawn with ``weights`` (same order)."""
    if len(users) != len(weights):
        raise ValueError(f"{len(weights)} weights for {len(users)} variants")
    total_observed = sum(users)
    if not total_observed:
        return 1.0
    total_weight = sum(weights)
    x = 0.0
    for observed, weight in zip(users, weights, strict=True):
        if weight <= 0:
            continue
        expected = weight / total_weight * total_observed
        x = x + ((observed - expected) ** 2) / expected
    from scipy.stats import chi2  # imported here: see insights/experiments/__init__.py

    return float(chi2.sf(x, len(users) - 1))


def srm(users: Mapping[str, int], weights: Mapping[str, float] | None = None) -> SrmResult:
    """SRM of the users per variant against declared ``weights`` (equal when ``None``);
    declared weights must name every variant. Fewer than two variants: nothing to
    compare, p = 1 (gbstats would answer NaN, a chi-square with 0 degrees of freedom)."""
    names = list(users)
    if len(names) < 2:
        return SrmResult(p_value=1.0, flagged=False)
    if weights is None:
        expected = [1.0] * len(names)
    else:
        missing = [name for name in names if name not in weights]
        if missing:
            raise ValueError(f"no weight declared for variant(s) {', '.join(missing)}")
        expected = [float(weights[name]) for name in names]
    p_value = check_srm([users[name] for name in names], expected)
    return SrmResult(p_value=p_value, flagged=p_value < SRM_THRESHOLD)
