"""What a bucket "should" have been: a seasonal-naive expectation for insight texts.

The detector decides *whether* a bucket is anomalous; people also want to read *how much*
("fell 45% since 14:05"), and the engine's own tests measure changes against it.
`Baseline` answers with a trimmed mean of the same time of day over earlier days ± a few
neighbouring slots, so one noisy minute does not set it (trimmed, so an earlier incident
does not move it either):

* the same weekday once three weeks are known; before that the days of the same kind
  (weekday or weekend), shaped like the same weekday where one is known (a Friday night
  is busier than a Tuesday's: the median ratio of last Friday to the pooled days over
  the hour around the slot);
* scaled to *today's* level (observed over expected of today's buckets, the newest
  quarter of an hour left out, so a change under way does not pull its own expectation
  along; an incident's buckets are forgotten once it is confirmed);
* the recent trimmed mean while less than a day is known.

`Window` averages observed and expected values over a stretch of buckets, weighting a
rate by the count behind it.
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
        self,
        step_s: int,
        days: int = 21,
        neighbours: int = 5,
        recent: int = 30,
        level: int = 60,
        min_weeks: int = 3,
    ) -> None:
        self.step_s = step_s
        self.min_weeks = min_weeks
        self.slots = max(_DAY // step_s, 1)
        self.neighbours = neighbours if self.slots > 24 else 0
        self.min_values = 3 if self.neighbours else 1
        self._table = np.full((days, self.slots), np.nan)
        self._shape_span = max(1800 // step_s, 1)  # half an hour, or one bucket
        self._shape_every = max(600 // step_s, 1)
        self._shape: tuple[tuple[int, int], float] = ((-1, -1), 1.0)
        # the recent level skips the newest buckets: a change under way must not pull
        # its own expectation along before the detector has spoken
        self._skip = max(recent // 2, 1)
        self._recent: deque[tuple[datetime, float]] = deque(maxlen=recent + self._skip)
        self._days: deque[int] = deque(maxlen=days)
        # (time, day, observed, seasonal-naive) of calm buckets: today's level against the
        # earlier days' (a Sunday is busier than the Wednesday before it)
        self._level: deque[tuple[datetime, int, float, float]] = deque(maxlen=level)
        # ...each joining it a quarter of an hour late: a change under way is not learnt
        # while it is being confirmed (and forgotten if it is)
        self._pending: deque[tuple[datetime, int, float, float]] = deque()
        self._delay = max(900 // step_s, 1)
        self._min_level = 10 if self.slots > 24 else 3
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
        # the same weekday once a few weeks are known (a Saturday is not a Wednesday),
        # else the same kind of day (weekday or weekend), else any earlier day. One
        # earlier day alone is too noisy: its minutes move together (a session spans
        # several), so one day's chance bump would be expected again for ten minutes
        same_weekday = [d for d in earlier if (d - day) % 7 == 0]
        if len(same_weekday) >= self.min_weeks:
            value = self._mean_of(same_weekday, cols)
            if value is not None:
                return value
        for pick in ([d for d in earlier if _weekend(d) == _weekend(day)], earlier):
            value = self._mean_of(pick, cols)
            if value is not None:
                # shaped like the same weekday where one is known: a Friday night is
                # busier than a Tuesday's
                return value * self._weekday_shape(same_weekday, pick, slot)
        return None

    def _mean_of(self, days: list[int], cols: list[int]) -> float | None:
        if not days:
            return None
        values = self._table[np.ix_([d % len(self._table) for d in days], cols)]
        values = values[~np.isnan(values)]
        return _trimmed_mean(values) if len(values) >= self.min_values else None

    def _weekday_shape(self, same: list[int], pool: list[int], slot: int) -> float:
        """How the same weekday compares with the pooled days around ``slot``: the median
        over the slots of the surrounding hour of their ratio (1 when unknown), within
        0.5 .. 2. A median, so a short incident on that weekday is not expected again;
        refreshed every ten minutes."""
        if not same:
            return 1.0
        key = (same[-1], slot // self._shape_every)
        if self._shape[0] == key:
            return self._shape[1]
        span = self._shape_span
        # not wrapped around midnight: the end of a Friday is not the start of one
        cols = list(range(max(slot - span, 0), min(slot + span + 1, self.slots)))
        mine = self._table[np.ix_([d % len(self._table) for d in same], cols)]
        pooled = self._table[np.ix_([d % len(self._table) for d in pool], cols)]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = mine / np.nanmedian(pooled, axis=0)
        ratios = ratios[np.isfinite(ratios)]
        factor = 1.0
        if len(ratios) > len(cols) // 2:
            factor = min(max(float(np.median(ratios)), 0.5), 2.0)
        self._shape = (key, factor)
        return factor

    def level(self, ts: datetime) -> float:
        """Recent observed / seasonal-naive ratio of the day of ``ts`` (1 while unknown),
        within 0.5 .. 2. Today's only: the naive expectation of another day came from
        other days (a Sunday night's level against weekends says nothing of Monday's)."""
        day = self._slot(ts)[0]
        observed = naive = 0.0
        count = 0
        for _, d, o, n in reversed(self._level):
            if d != day:
                break
            observed, naive, count = observed + o, naive + n, count + 1
        if count < self._min_level or naive <= 0:
            return 1.0
        return min(max(observed / naive, 0.5), 2.0)

    def expected(self, ts: datetime) -> float | None:
        """Trimmed mean of the same slot (± neighbours) over earlier days, scaled to
        today's level; the recent trimmed mean while less than a day is known."""
        self._naive = self._seasonal(ts)
        if self._naive is not None:
            return self._naive * self.level(ts)
        if not self._recent:
            return None
        values = [v for _, v in self._recent]
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
            self._recent.append((ts, value))
            if self._naive is not None:
                self._pending.append((ts, day, value, self._naive))
                while len(self._pending) > self._delay:
                    self._level.append(self._pending.popleft())

    def forget(self, since: datetime) -> None:
        """Drop the buckets from ``since`` on from the recent level: they turned out to
        be an incident's, learnt while it was still being confirmed."""
        for queue in (self._recent, self._pending, self._level):
            while queue and queue[-1][0] >= since:
                queue.pop()


def _weekend(epoch_day: int) -> bool:
    return (epoch_day + 3) % 7 >= 5  # 1970-01-01 was a Thursday


def _trimmed_mean(values: npt.NDArray[np.float64]) -> float:
    """Mean of the middle 60%: as robust as a median to an odd day, but not 0 for a
    sparse series (a small country's revenue per minute is 0 most minutes)."""
    ordered = np.sort(values)
    cut = len(ordered) // 5
    middle = ordered[cut : len(ordered) - cut] if len(ordered) > 2 * cut else ordered
    return float(middle.mean())
