"""Daily and weekly profiles learnt online from timestamps (used by `insights.detector`).

The expected value of a bucket is the median of the same slot (time of day, or time of
week) over the last few days or weeks: a median, so one odd day does not move the
profile. Both profiles are tracked and the one with the smaller recent error is used. The
profile only counts as *useful* when its residuals are much smaller than the spread of
the series itself, compared on the values and on their trailing means (``smooth``
buckets): heavy noise hides a daily shape in single values, not in their means. A series
without a daily or weekly rhythm falls back to the plain value.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from datetime import datetime

__all__ = ["SeasonalProfile"]

_DAY = 86_400.0


class SeasonalProfile:
    """Per-slot medians over the last ``days`` days and ``weeks`` weeks.

    The slot width is the series' own sampling interval, inferred from the first
    timestamps. ``min_days``/``min_weeks`` past values of a slot are needed before that
    profile predicts. ``strength_ratio`` is the largest ratio of residual spread to series
    spread (mean absolute deviation over the last ``strength_window`` buckets) for which
    the profile is used, on the values or on their trailing means over ``smooth`` buckets.
    """

    def __init__(
        self,
        days: int,
        weeks: int,
        min_days: int,
        min_weeks: int,
        strength_ratio: float,
        strength_window: int,
        smooth: int = 1,
    ) -> None:
        self.days = days
        self.weeks = weeks
        self.min_days = min_days
        self.min_weeks = min_weeks
        self.strength_ratio = strength_ratio
        self.step: float | None = None
        self.useful = False
        self._diffs: list[float] = []
        self._last: datetime | None = None
        self._daily: dict[int, deque[float]] = {}
        self._weekly: dict[int, deque[float]] = {}
        self._err = {"daily": 0.0, "weekly": 0.0}
        self._raw: deque[float] = deque(maxlen=strength_window)
        self._resid: deque[float] = deque(maxlen=strength_window)
        self._recent: deque[tuple[float, float]] = deque(maxlen=max(1, smooth))
        self._sums = [0.0, 0.0]
        self._raw_smooth: deque[float] = deque(maxlen=strength_window)
        self._resid_smooth: deque[float] = deque(maxlen=strength_window)
        self._pushes = 0

    def expected(self, ts: datetime) -> dict[str, float]:
        """Expected value at ``ts`` from each profile that is ready, by name."""
        daily, weekly = self._predictions(ts)
        out = {}
        if daily is not None:
            out["daily"] = daily
        if weekly is not None:
            out["weekly"] = weekly
        return out

    def best(self, ready: dict[str, float]) -> str | None:
        """Name of the profile with the smaller recent error among ``ready`` ones."""
        if "weekly" in ready and ("daily" not in ready or self._err["weekly"] < self._err["daily"]):
            return "weekly"
        return "daily" if "daily" in ready else None

    def push(self, ts: datetime, value: float) -> None:
        """Learn ``value`` at ``ts`` (call after scoring the bucket)."""
        self._learn_step(ts)
        if self.step is None:
            return
        ready = self.expected(ts)
        if len(ready) == 2:
            for name, pred in ready.items():
                self._err[name] = 0.98 * self._err[name] + 0.02 * abs(value - pred)
        best = self.best(ready)
        if best is not None:
            self._raw.append(value)
            self._resid.append(value - ready[best])
            self._smooth(value, value - ready[best])
            self._pushes += 1
            if self._pushes % 64 == 0:
                self.useful = self._residuals_small()
        d_slot, w_slot = self._slots(ts)
        if d_slot is not None:
            self._daily.setdefault(d_slot, deque(maxlen=self.days)).append(value)
        if w_slot is not None:
            self._weekly.setdefault(w_slot, deque(maxlen=self.weeks)).append(value)

    def _smooth(self, raw: float, resid: float) -> None:
        """Append the trailing means (over ``smooth`` pushes) of the values and residuals."""
        if len(self._recent) == self._recent.maxlen:
            old_raw, old_resid = self._recent[0]
            self._sums[0] -= old_raw
            self._sums[1] -= old_resid
        self._recent.append((raw, resid))
        self._sums[0] += raw
        self._sums[1] += resid
        if self._pushes % 1024 == 0:  # wash out floating-point drift
            self._sums = [
                math.fsum(r for r, _ in self._recent),
                math.fsum(e for _, e in self._recent),
            ]
        k = len(self._recent)
        self._raw_smooth.append(self._sums[0] / k)
        self._resid_smooth.append(self._sums[1] / k)

    def _predictions(self, ts: datetime) -> tuple[float | None, float | None]:
        d_slot, w_slot = self._slots(ts)
        return (
            _median_if(self._daily.get(d_slot) if d_slot is not None else None, self.min_days),
            _median_if(self._weekly.get(w_slot) if w_slot is not None else None, self.min_weeks),
        )

    def _slots(self, ts: datetime) -> tuple[int | None, int | None]:
        if self.step is None:
            return None, None
        sec = ts.hour * 3600 + ts.minute * 60 + ts.second
        d_slot = int(sec // self.step) if self.step <= _DAY / 4 else None
        w_slot = int((ts.weekday() * _DAY + sec) // self.step) if self.step <= _DAY else None
        return d_slot, w_slot

    def _learn_step(self, ts: datetime) -> None:
        if self._last is not None and len(self._diffs) < 24:
            gap = (ts - self._last).total_seconds()
            if gap > 0:
                self._diffs.append(gap)
                if len(self._diffs) >= 8:
                    self.step = statistics.median(self._diffs)
        self._last = ts

    def _residuals_small(self) -> bool:
        # On the values, or on their trailing means: noise averages out in the means, a
        # daily shape does not, so a noisy seasonal series still passes on the means,
        # and a coarse one (hourly: a 16-hour mean flattens the day) on the values.
        return any(
            _ratio(resid, raw) < self.strength_ratio
            for raw, resid in ((self._raw, self._resid), (self._raw_smooth, self._resid_smooth))
        )


def _median_if(values: deque[float] | None, need: int) -> float | None:
    if values is None or len(values) < need:
        return None
    return statistics.median(values)


def _ratio(resid: deque[float], raw: deque[float]) -> float:
    spread = _mean_abs_dev(raw)
    return _mean_abs_dev(resid) / spread if spread > 0 else math.inf


def _mean_abs_dev(values: deque[float]) -> float:
    med = statistics.median(values)
    return sum(abs(v - med) for v in values) / len(values)
