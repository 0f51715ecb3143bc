"""Which slices explain a change of an aggregate, and is it a rate change or a mix shift?

A metric over a set of slices is a ratio ``R = Σ num_s / Σ den_s`` (conversion: buyers
over sessions; AOV: revenue over orders) or, for a count, ``C = Σ num_s`` with a natural
denominator (sessions) giving its rate per unit of traffic. Comparing the anomaly window
(``cur``) with what was expected (``base``) — per slice — the change splits exactly:

* ratio: ``ΔR = Σ_s [ s̄_s · Δr_s ]  +  Σ_s [ Δs_s · (r̄_s − R̄) ]`` — the first term is
  the **rate** change inside each slice, the second the **mix** shift between slices
  (``s`` is a slice's share of the denominator, bars are means of base and current);
* count: ``ΔC_s = Δd_s · r̄_s + d̄_s · Δr_s`` — a **volume** change (traffic) or a
  **rate** change (e.g. fewer orders per session).

`decompose` does this for one dimension; `explain` picks the dimensions whose few values
carry most of the change and names them. Pure Python over plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Contribution", "Decomposition", "SliceStats", "decompose", "explain"]

Effect = Literal["rate", "mix", "volume"]


@dataclass(frozen=True)
class SliceStats:
    """Numerator and denominator of one slice, expected (``base``) and observed (``cur``)."""

    value: str
    base_num: float
    base_den: float
    cur_num: float
    cur_den: float


@dataclass(frozen=True)
class Contribution:
    """One slice's part of an aggregate change."""

    dim: str
    value: str
    share: float
    """Fraction of the aggregate change this slice carries (can exceed 1 when others
    moved the other way)."""
    effect: Effect
    change: float
    """The slice's own relative change of the metric (its rate, or its count)."""
    base_share: float = 0.0
    """The slice's share of the aggregate before (of the denominator for a ratio, of the
    count itself otherwise): a slice explains a change when it carries more of it than
    of the business."""

    @property
    def label(self) -> str:
        return f"{self.dim}={self.value}"


@dataclass(frozen=True)
class Decomposition:
    """An aggregate change split over one dimension's values."""

    dim: str
    ratio: bool
    total: float
    rate: float
    other: float
    """The mix (ratio) or volume (count) part of the total."""
    contributions: tuple[Contribution, ...]

    @property
    def effect(self) -> Effect:
        """Which part dominates the change."""
        if abs(self.rate) >= abs(self.other):
            return "rate"
        return "mix" if self.ratio else "volume"


def _safe(num: float, den: float) -> float:
    return num / den if den else 0.0


def decompose(dim: str, stats: Sequence[SliceStats], ratio: bool) -> Decomposition:
    """Split the aggregate change over the values of ``dim`` (ratio or count metric)."""
    base_den = math.fsum(s.base_den for s in stats)
    cur_den = math.fsum(s.cur_den for s in stats)
    parts: list[tuple[SliceStats, float, float]] = []  # (stats, rate part, other part)
    if ratio:
        agg = 0.5 * (
            _safe(math.fsum(s.base_num for s in stats), base_den)
            + _safe(math.fsum(s.cur_num for s in stats), cur_den)
        )
        for s in stats:
            rb, rc = _safe(s.base_num, s.base_den), _safe(s.cur_num, s.cur_den)
            sb, sc = _safe(s.base_den, base_den), _safe(s.cur_den, cur_den)
            rate = 0.5 * (sb + sc) * (rc - rb)
            mix = (sc - sb) * (0.5 * (rb + rc) - agg)
            parts.append((s, rate, mix))
    else:
        for s in stats:
            rb, rc = _safe(s.base_num, s.base_den), _safe(s.cur_num, s.cur_den)
            if s.base_den or s.cur_den:
                volume = (s.cur_den - s.base_den) * 0.5 * (rb + rc)
                rate = 0.5 * (s.base_den + s.cur_den) * (rc - rb)
            else:  # no denominator known: all of it is the count's own change
                volume, rate = 0.0, s.cur_num - s.base_num
            parts.append((s, rate, volume))
    total = math.fsum(r + o for _, r, o in parts)
    base_num = math.fsum(s.base_num for s in stats)
    contributions = []
    for s, rate, other in parts:
        base_share = _safe(s.base_den, base_den) if ratio else _safe(s.base_num, base_num)
        delta = rate + other
        own = (
            _safe(_safe(s.cur_num, s.cur_den), _safe(s.base_num, s.base_den)) - 1.0
            if ratio
            else _safe(s.cur_num, s.base_num) - 1.0
        )
        effect: Effect = "rate" if abs(rate) >= abs(other) else ("mix" if ratio else "volume")
        contributions.append(
            Contribution(dim, s.value, _safe(delta, total), effect, own, base_share)
        )
    contributions.sort(key=lambda c: -c.share)
    return Decomposition(
        dim=dim,
        ratio=ratio,
        total=total,
        rate=math.fsum(r for _, r, _ in parts),
        other=math.fsum(o for _, _, o in parts),
        contributions=tuple(contributions),
    )


def explain(
    by_dim: Mapping[str, Decomposition],
    *,
    cover: float = 0.6,
    max_slices: int = 3,
    excess: float = 0.2,
) -> list[Contribution]:
    """The slices that explain the change, most concentrated dimension first.

    Within each dimension the largest contributors are taken until they carry ``cover``
    of the change (at most ``max_slices``), each carrying ``excess`` more of the change
    than of the business; a dimension whose change is spread like the business itself
    (a drop everywhere) explains nothing and is left out.
    """
    named: list[tuple[float, list[Contribution]]] = []
    for dec in by_dim.values():
        if not dec.contributions or dec.total == 0:
            continue
        chosen: list[Contribution] = []
        carried = 0.0
        for c in dec.contributions[:max_slices]:
            if c.share <= 0 or c.share < c.base_share + excess:
                break
            chosen.append(c)
            carried += c.share
            if carried >= cover:
                break
        if chosen and carried >= cover:
            named.append((carried / len(chosen), chosen))
    named.sort(key=lambda item: -item[0])
    return [c for _, chosen in named for c in chosen]
