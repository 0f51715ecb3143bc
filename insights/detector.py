"""Streaming anomaly detector for one (metric, slice) series: pure logic, no I/O.

Each closed bucket is scored once, online, from what came before it only:

1. **Features.** Trailing means of the value over several window lengths
   (``DetectorConfig.scales``), so that a spike, a short burst and a sustained shift each
   show on the scale that averages the noise away. When the series has a daily or weekly
   rhythm (`insights._seasonal`), trailing means of the residual against the learnt
   profile (``seasonal_scales``) are watched as well: a normal evening peak is expected,
   a missing one is not. The profile counts as a rhythm when its residuals spread much
   less than the series, judged on the values and on their trailing means over the
   shortest seasonal scale: on a noisy 5-minute series the daily shape only shows in the
   means, on an hourly one a 16-bucket mean flattens the day and only the values show it.
2. **Novelty.** Each feature is compared with its own past: the distance to the nearest
   earlier value (`insights._novelty`), turned into a surprise ``-log10 p`` by a tail
   fitted to the distances seen so far. An earlier outlier only makes its own
   neighbourhood familiar, and a level the series has moved to becomes familiar once it
   has been seen: the detector goes quiet after a confirmed level shift.
3. **Volume.** For a rate, ``weight`` is the count behind it (sessions for a conversion
   rate). A proportion's surprise is capped by the binomial sampling error of that many
   trials around the recent median, and any rate's surprise is scaled by
   ``weight / (weight + volume_half_weight)``: a dip on 20 sessions is not an incident.
4. **Alerting.** The largest surprise is squashed to ``[0, 1]`` (``alert_surprise`` maps to
   0.5). Within an event (surprises at or above ``alert_surprise`` less than
   ``event_gap`` buckets apart) a bucket keeps its score only if it beats the event's peak
   ``escalation`` times; the others are damped, so one incident raises one alert. The
   gap is 1.5 times the longest scale, a little longer than a feature stays elevated
   after an incident: 144 buckets (until 2026-12) swallowed a second incident days
   later on an hourly series, 64 let the tail of an incident on a 5-minute series
   alert again.

Every length but the profile's days and weeks counts buckets, not time. `bench/nab.py`
checks on the Numenta Anomaly Benchmark that one parameter set holds from 5-minute to
hourly buckets (``--resample``: the files averaged to 15, 30 and 60 minutes) and from
category to category (``--loco``: each scored with the parameters chosen without it).
Results in ``docs/benchmarks.md``.

The caller feeds closed buckets only, in time order: an incomplete bucket is never
scored. `score_series` runs a fresh detector over a whole series.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from insights._novelty import DelayedReference, TailCalibrator
from insights._seasonal import SeasonalProfile

__all__ = ["DEFAULT", "Detector", "DetectorConfig", "score_series"]


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's one parameter set; lengths count buckets of the series."""

    scales: tuple[int, ...] = (1, 4, 16, 64)
    """Trailing-mean window lengths watched on the value itself."""
    seasonal_scales: tuple[int, ...] = (16, 64)
    """Trailing-mean window lengths watched on the residual against the profile."""
    neighbours: int = 1
    """A value is as novel as its distance to the k-th nearest earlier value."""
    history: int = 20_000
    """Past values (and distances) remembered per feature."""
    tail_quantile: float = 0.95
    """Distances above this quantile of the past ones form the fitted tail."""
    tail_max_shape: float = 0.25
    """Heaviest tail allowed (generalised Pareto shape; 0 = exponential)."""
    min_history: int = 100
    """Distances needed before a feature is scored."""
    warmup: int = 100
    """Buckets scored 0 at the start of a series."""
    alert_surprise: float = 2.25
    """Surprise (``-log10 p``) of an alert; it maps to the score 0.5."""
    event_gap: int = 96
    """Buckets without an alert that end an event (1.5 times the longest scale)."""
    escalation: float = 2.0
    """Within an event, a bucket must beat the peak surprise this many times to count."""
    damping: float = 0.3
    """Factor on the score of buckets that do not count within an event."""
    seasonal: bool = True
    """Learn daily and weekly profiles from the timestamps."""
    seasonal_days: int = 7
    seasonal_weeks: int = 4
    seasonal_min_days: int = 1
    seasonal_min_weeks: int = 2
    seasonal_strength: float = 0.5
    """A profile is used when its residuals spread less than this fraction of the series."""
    seasonal_window: int = 4032
    """Buckets over which that spread is compared."""
    volume_half_weight: float = 100.0
    """Weight (e.g. sessions) at which a rate's surprise is halved."""
    scale_floor: float = 1e-3
    """Smallest tail scale, as a fraction of the range of the values seen."""


DEFAULT = DetectorConfig()


class _Channel:
    """Trailing means of one input stream at several scales, and their novelty."""

    def __init__(self, config: DetectorConfig, scales: tuple[int, ...]) -> None:
        self.scales = scales
        self.neighbours = config.neighbours
        self.scale_floor = config.scale_floor
        self.window: deque[float] = deque(maxlen=max(scales) + 1)
        self.sums = [0.0] * len(scales)
        self.refs = [DelayedReference(gap=s, capacity=config.history) for s in scales]
        self.tails = [
            TailCalibrator(
                config.tail_quantile, config.history, config.min_history, config.tail_max_shape
            )
            for _ in scales
        ]
        self.count = 0
        self.low = math.inf
        self.high = -math.inf

    def update(self, value: float) -> float | None:
        """Add ``value``; return the largest surprise over the scales (None: still learning)."""
        self._slide(value)
        floor = self.scale_floor * (self.high - self.low) + 1e-12
        best: float | None = None
        for i, scale in enumerate(self.scales):
            if self.count < scale:
                continue
            feature = self.sums[i] / scale
            ref, tail = self.refs[i], self.tails[i]
            if len(ref) >= self.neighbours:
                dist = ref.distance(feature, self.neighbours)
                surprise = tail.surprise(dist, floor)
                tail.push(dist)
                if surprise is not None:
                    best = surprise if best is None else max(best, surprise)
            ref.push(feature)
        return best

    def _slide(self, value: float) -> None:
        self.window.append(value)
        self.count += 1
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        n = len(self.window)
        for i, scale in enumerate(self.scales):
            self.sums[i] += value
            if n > scale:
                self.sums[i] -= self.window[n - scale - 1]
        if self.count % 1024 == 0:  # wash out floating-point drift
            values = list(self.window)
            self.sums = [math.fsum(values[-s:]) for s in self.scales]


class Detector:
    """Online anomaly scorer for one series: call `update` once per closed bucket."""

    def __init__(self, config: DetectorConfig = DEFAULT) -> None:
        self.config = config
        self.count = 0
        self._plain = _Channel(config, config.scales)
        self._residuals = {
            name: _Channel(config, config.seasonal_scales) for name in ("daily", "weekly")
        }
        self._profile = SeasonalProfile(
            days=config.seasonal_days,
            weeks=config.seasonal_weeks,
            min_days=config.seasonal_min_days,
            min_weeks=config.seasonal_min_weeks,
            strength_ratio=config.seasonal_strength,
            strength_window=config.seasonal_window,
            smooth=min(config.seasonal_scales),
        )
        self._last_hot = -(10**9)
        self._peak = 0.0

    def update(self, ts: datetime, value: float, *, weight: float | None = None) -> float:
        """Score the closed bucket ``(ts, value)`` in ``[0, 1]``, then learn from it.

        ``weight`` is the count behind a rate (e.g. the sessions behind a conversion
        rate); a low count damps the score. None means a plain series.
        """
        self.count += 1
        value = float(value)
        expected = self._recent_median() if weight is not None else None
        surprise = self._surprise(ts, value)
        if weight is not None:
            surprise = min(surprise, _volume_cap(value, expected, weight))
            w = float(weight) if float(weight) > 0.0 else 0.0  # NaN counts as 0
            surprise *= w / (w + self.config.volume_half_weight)
        return self._alert(surprise)

    def _recent_median(self) -> float | None:
        """Median of the values in the longest trailing window (before this bucket)."""
        window = self._plain.window
        return statistics.median(window) if window else None

    def _surprise(self, ts: datetime, value: float) -> float:
        """Largest surprise over the features of the value (and of its seasonal residual)."""
        if math.isnan(value):
            return 0.0
        plain = self._plain.update(value) or 0.0
        if not self.config.seasonal:
            return plain
        expected = self._profile.expected(ts)
        best = self._profile.best(expected)
        surprises = {
            name: self._residuals[name].update(value - pred) for name, pred in expected.items()
        }
        self._profile.push(ts, value)
        residual = surprises.get(best) if best is not None else None
        if residual is not None and self._profile.useful:
            return max(plain, residual)
        return plain

    def _alert(self, surprise: float) -> float:
        """Squash the surprise to a score; damp the buckets of an already raised event."""
        cfg = self.config
        if self.count <= cfg.warmup:
            return 0.0
        if self.count - self._last_hot > cfg.event_gap:
            self._peak = 0.0
        score = _squash(surprise, cfg.alert_surprise)
        if surprise <= self._peak * cfg.escalation:
            score *= cfg.damping
        if surprise >= cfg.alert_surprise:
            self._last_hot = self.count
        if self.count - self._last_hot <= cfg.event_gap:
            self._peak = max(self._peak, surprise)
        return score


def _volume_cap(value: float, expected: float | None, weight: float) -> float:
    """Largest surprise a proportion measured on ``weight`` trials can carry.

    For a rate in ``[0, 1]`` (conversion, abandonment) the binomial sampling error of
    ``weight`` trials around the recent median bounds how surprising the deviation can
    be; for other values there is no cap.
    """
    if expected is None or not (0.0 <= value <= 1.0 and 0.0 <= expected <= 1.0):
        return math.inf
    n = max(float(weight), 1.0) if float(weight) > 0.0 else 1.0
    p = min(max(expected, 0.5 / n), 1.0 - 0.5 / n)
    z = abs(value - expected) / math.sqrt(p * (1.0 - p) / n)
    return -math.log10(max(math.erfc(z / math.sqrt(2.0)), 1e-300))


def _squash(surprise: float, half: float) -> float:
    """Map a surprise in ``[0, inf]`` to ``[0, 1]``, ``half`` going to 0.5."""
    if math.isinf(surprise):
        return 1.0
    s = max(0.0, surprise)
    return s / (s + half)


def score_series(
    timestamps: Sequence[datetime],
    values: Sequence[float],
    config: DetectorConfig = DEFAULT,
    weights: Sequence[float] | None = None,
) -> list[float]:
    """Score a whole series with a fresh `Detector`, each bucket from its past only."""
    detector = Detector(config)
    if weights is None:
        return [detector.update(t, v) for t, v in zip(timestamps, values, strict=True)]
    return [
        detector.update(t, v, weight=w) for t, v, w in zip(timestamps, values, weights, strict=True)
    ]
