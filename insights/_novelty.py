"""Novelty of a scalar feature against its own past: nearest-neighbour distance + tail model.

Building blocks of `insights.detector`, pure and stateful, no I/O:

* `DelayedReference` keeps past feature values in a sorted list, each entering only
  ``gap`` updates after it was produced, so a value is never compared with itself or with
  the overlapping windows right before it.
* `kth_distance` is the distance to the k-th nearest stored value (1-D, O(k) by bisection).
  A value that the series has shown before (a daily spike, a level it already moved to) is
  close to something stored; a value it never showed is far from everything.
* `TailCalibrator` turns such distances into a surprise, ``-log10`` of the tail probability
  under a generalised Pareto tail fitted (peaks over a high quantile) to the distances
  seen so far. The scale adapts to each series: the same distance is more surprising on a
  quiet series than on a jumpy one, and a heavy-tailed series earns a heavier tail.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

__all__ = ["DelayedReference", "TailCalibrator", "kth_distance"]

_LN10 = math.log(10.0)


def kth_distance(ref: list[float], value: float, k: int) -> float:
    """Distance from ``value`` to its ``k``-th nearest element of the sorted list ``ref``.

    Returns ``inf`` when ``ref`` has fewer than ``k`` elements.
    """
    lo = bisect.bisect_left(ref, value) - 1
    hi = lo + 1
    n = len(ref)
    dist = math.inf
    for _ in range(k):
        d_lo = value - ref[lo] if lo >= 0 else math.inf
        d_hi = ref[hi] - value if hi < n else math.inf
        if d_lo <= d_hi:
            dist, lo = d_lo, lo - 1
        else:
            dist, hi = d_hi, hi + 1
    return dist


class _SortedWindow:
    """The last ``capacity`` values pushed, kept sorted."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.sorted: list[float] = []
        self._order: deque[float] = deque()

    def add(self, value: float) -> None:
        bisect.insort(self.sorted, value)
        self._order.append(value)
        if len(self._order) > self.capacity:
            gone = self._order.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, gone)]


class DelayedReference:
    """Sorted store of past values; each value becomes visible ``gap`` pushes later.

    At most ``capacity`` values are kept (first in, first out), which bounds memory and
    lets very old behaviour be forgotten.
    """

    def __init__(self, gap: int, capacity: int) -> None:
        self.gap = gap
        self._pending: deque[float] = deque()
        self._window = _SortedWindow(capacity)

    def __len__(self) -> int:
        return len(self._window.sorted)

    def distance(self, value: float, k: int) -> float:
        """k-th nearest-neighbour distance of ``value`` to the visible values."""
        return kth_distance(self._window.sorted, value, k)

    def push(self, value: float) -> None:
        """Record ``value``; it becomes visible after ``gap`` further pushes."""
        self._pending.append(value)
        if len(self._pending) > self.gap:
            self._window.add(self._pending.popleft())


class TailCalibrator:
    """Surprise of a distance given the distances seen before (peaks over threshold).

    Above the ``quantile`` ``u`` of past distances the excess is modelled as generalised
    Pareto, fitted by probability-weighted moments with its shape clipped to
    ``[0, max_shape]`` (0 is the exponential tail; larger is heavier). The surprise of
    ``d`` is ``-log10 P(D > d)``, 0 at or below ``u``. The fit is refreshed every
    ``refit_every`` pushes from the last ``capacity`` distances.
    """

    def __init__(
        self,
        quantile: float,
        capacity: int,
        min_count: int,
        max_shape: float,
        refit_every: int = 8,
    ) -> None:
        self.quantile = quantile
        self.min_count = min_count
        self.max_shape = max_shape
        self.refit_every = refit_every
        self._window = _SortedWindow(capacity)
        self._pushes = 0
        self._fit: tuple[float, float, float, float] | None = None

    def surprise(self, dist: float, floor: float) -> float | None:
        """``-log10`` tail probability of ``dist``; None while too little is known.

        ``floor`` is the smallest tail scale used, so a constant history does not make
        every tiny change infinitely surprising.
        """
        if len(self._window.sorted) < self.min_count:
            return None
        if self._fit is None or self._pushes % self.refit_every == 0:
            self._fit = self._refit()
        u, scale, shape, log_pu = self._fit
        if dist <= u:
            return 0.0
        if math.isinf(dist):
            return math.inf
        z = (dist - u) / max(scale, floor)
        if shape > 1e-6:
            return log_pu + math.log10(1.0 + shape * z) / shape
        return log_pu + z / _LN10

    def push(self, dist: float) -> None:
        """Add a distance to the history (infinite distances are not stored)."""
        if not math.isinf(dist):
            self._pushes += 1
            self._window.add(dist)

    def _refit(self) -> tuple[float, float, float, float]:
        """Threshold, scale, shape and ``-log10 P(D > threshold)`` of the tail."""
        h = self._window.sorted
        n = len(h)
        m = min(n - 1, max(5, int(n * (1.0 - self.quantile))))
        u = h[n - m - 1]
        excess = [x - u for x in h[n - m :]]
        a0 = math.fsum(excess) / m
        shape, scale = 0.0, a0
        if self.max_shape > 0.0 and a0 > 0.0:
            # probability-weighted moments (Hosking & Wallis 1987), excess sorted ascending
            a1 = math.fsum((1.0 - (i + 0.65) / m) * y for i, y in enumerate(excess)) / m
            if a0 > 2.0 * a1:
                shape = min(self.max_shape, max(0.0, 2.0 - a0 / (a0 - 2.0 * a1)))
                scale = a0 * (1.0 - shape)
        return u, scale, shape, -math.log10(m / n)
