"""Sufficient statistics of one metric over one variant's users (the engine's input).

The production path gets these sums from one ClickHouse query per experiment; the helper
`variant_sums` builds them from per-user value lists (tests, the warehouse-less path).
Field names follow gbstats' query columns (``main_sum``, ``denominator_sum``,
``main_covariate_sum_product``...), so a warehouse row maps onto them one to one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Moments", "VariantSums", "variant_sums"]


@dataclass(frozen=True, slots=True)
class Moments:
    """Σv and Σv² of one per-user value over a variant's users."""

    sum: float = 0.0
    sum_squares: float = 0.0


@dataclass(frozen=True, slots=True)
class VariantSums:
    """One metric's sums over one variant's ``n`` users.

    ``main`` is the metric's per-user value x (for a ratio metric, its numerator);
    ``denominator`` the ratio's per-user denominator y with ``main_denominator_sum_product``
    = Σxy; ``covariate`` the CUPED pre-period value p with ``main_covariate_sum_product``
    = Σx·p. Unused parts stay ``None`` / 0.
    """

    n: int
    main: Moments
    denominator: Moments | None = None
    main_denominator_sum_product: float = 0.0
    covariate: Moments | None = None
    main_covariate_sum_product: float = 0.0

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"a variant cannot have {self.n} users")


def _moments(values: Sequence[float]) -> Moments:
    # fsum: correctly rounded, so the sums do not depend on the users' order
    return Moments(math.fsum(values), math.fsum(v * v for v in values))


def _products(a: Sequence[float], b: Sequence[float], name: str) -> float:
    if len(a) != len(b):
        raise ValueError(f"{name}: {len(b)} values for {len(a)} users")
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def variant_sums(
    values: Sequence[float],
    *,
    denominators: Sequence[float] | None = None,
    covariates: Sequence[float] | None = None,
) -> VariantSums:
    """The sums of per-user ``values`` (one per user), with optional per-user ratio
    ``denominators`` and CUPED ``covariates`` (same length, same user order)."""
    return VariantSums(
        n=len(values),
        main=_moments(values),
        denominator=None if denominators is None else _moments(denominators),
        main_denominator_sum_product=(
            0.0 if denominators is None else _products(values, denominators, "denominators")
        ),
        covariate=None if covariates is None else _moments(covariates),
        main_covariate_sum_product=(
            0.0 if covariates is None else _products(values, covariates, "covariates")
        ),
    )
