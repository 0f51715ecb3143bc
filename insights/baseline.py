"""What a bucket "should" have been: a seasonal-naive expectation for insight texts.

The detector decides *whether* a bucket is anomalous; people also want to read *how much*
("fell 45% since 14:05"). `Baseline` answers with a trimmed mean of the same time of day
over earlier days — the same weekday once a week is known, else days of the same kind
(weekday or weekend) — ± a few neighbouring slots, so one noisy minute does not set it,
scaled to today's level, and with the recent trimmed mean while less than a day is known.
Trimmed, so an earlier incident does not move it. `Window` averages observed and expected
values over a stretch of buckets, weighting a rate by the count behind it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

__all__ = ["Baseline", "Bucket", "Window", "window"]

_DAY = 86_400


@dataclass(frozen=True)
class Bucket:
    """One fed bucket: value, weight (for a rate), expectation and detector score."""

    ts: datetime
    value: float | None
    weight: float | None
    expected: float | None
    score: float


@dataclass(frozen=True)
class Window:
    """Observed and expected means per bucket over some buckets (rates: weighted by the
    count behind them)."""

    observed: float
    expected: float
    buckets: int

    @property
    def change(self) -> float:
        """Relative change ``observed / expected - 1`` (0 when nothing was expected)."""
        if self.expected == 0:
            return 0.0 if self.observed == 0 else math.inf
        return self.observed / self.expected - 1.0


def window(buckets: list[Bucket], ratio: bool) -> Window | None:
    """Means of the buckets that have both a value and an expectation."""
    obs = exp = weight = 0.0
    n = 0
    for b in buckets:
        if b.value is None or b.expected is None:
            continue
        w = (b.weight or 0.0) if ratio else 1.0
        if ratio and w <= 0:
            continue
        obs += b.value * w
        exp += b.expected * w
        weight += w
        n += 1
    if n == 0:
        return None
    if ratio:
        return Window(obs / weight, exp / weight, n)
    return Window(obs / n, exp / n, n)


class Baseline:
    """Seasonal-naive expectation of one series (same slot of the last ``days`` days)."""

    def __init__(
        self, step_s: int, days: int = 14, neighbours: int = 2, recent: int = 30, level: int = 60
    ) -> None:
        self.step_s = step_s
        self.slots = max(_DAY // step_s, 1)
        self.neighbours = neighbours if self.slots > 24 else 0
        self.min_values = 3 if self.neighbours else 1
        self._table = np.full((days, self.slots), np.nan)
        # the recent level skips the newest buckets: a change under way must not pull
        # its own expectation along before the detector has spoken
        self._skip = max(recent // 2, 1)
        self._recent: deque[float] = deque(maxlen=recent + self._skip)
        self._days: deque[int] = deque(maxlen=days)
        # (observed, seasonal-naive) pairs of calm buckets: today's level against the
        # earlier days' (a Sunday is busier than the Wednesday before it)
        self._level: deque[tuple[float, float]] = deque(maxlen=level)
        self._naive: float | None = None

    def _slot(self, ts: datetime) -> tuple[int, int]:
        epoch = int(ts.timestamp())
        return epoch // _DAY, (epoch % _DAY) // self.step_s

    def _seasonal(self, ts: datetime) -> float | None:
        day, slot = self._slot(ts)
        if not self._days or self._days[0] >= day:
            return None
        cols = [(slot + k) % self.slots for k in range(-self.neighbours, self.neighbours + 1)]
        earlier = [d for d in self._days if d < day]
        # the same weekday if a week is known (a Saturday is not a Wednesday), else the
        # same kind of day (weekday or weekend), else any earlier day
        for pick in (
            [d for d in earlier if (d - day) % 7 == 0],
            [d for d in earlier if _weekend(d) == _weekend(day)],
            earlier,
        ):
            if not pick:
                continue
            values = self._table[np.ix_([d % len(self._table) for d in pick], cols)]
            values = values[~np.isnan(values)]
            if len(values) >= self.min_values:
                return _trimmed_mean(values)
        return None

    def level(self) -> float:
        """Recent observed / seasonal-naive ratio (1 while unknown), within 0.5 .. 2."""
        naive = math.fsum(n for _, n in self._level)
        if len(self._level) < 10 or naive <= 0:
            return 1.0
        return min(max(math.fsum(o for o, _ in self._level) / naive, 0.5), 2.0)

    def expected(self, ts: datetime) -> float | None:
        """Trimmed mean of the same slot (± neighbours) over earlier days, scaled to
        today's level; the recent trimmed mean while less than a day is known."""
        self._naive = self._seasonal(ts)
        if self._naive is not None:
            return self._naive * self.level()
        if not self._recent:
            return None
        values = list(self._recent)
        older = values[: max(len(values) - self._skip, 1)]
        return _trimmed_mean(np.asarray(older, dtype=float))

    def push(self, ts: datetime, value: float | None, *, calm: bool = True) -> None:
        """Learn a bucket's value (after computing its expectation). ``calm`` False keeps
        an incident's buckets out of the level estimate."""
        if value is None or math.isnan(value):
            return
        day, slot = self._slot(ts)
        if not self._days or self._days[-1] != day:
            if len(self._days) == self._days.maxlen:
                self._days.popleft()
            self._days.append(day)
            self._table[day % len(self._table)] = np.nan
        self._table[day % len(self._table), slot] = value
        if calm:
            self._recent.append(value)
            if self._naive is not None:
                self._level.append((value, self._naive))


def _weekend(epoch_day: int) -> bool:
    return (epoch_day + 3) % 7 >= 5  # 1970-01-01 was a Thursday


def _trimmed_mean(values: npt.NDArray[np.float64]) -> float:
    """Mean of the middle 60%: as robust as a median to an odd day, but not 0 for a
    sparse series (a small country's revenue per minute is 0 most minutes)."""
    ordered = np.sort(values)
    cut = len(ordered) // 5
    middle = ordered[cut : len(ordered) - cut] if len(ordered) > 2 * cut else ordered
    return float(middle.mean())
