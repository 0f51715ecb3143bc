"""The business layer around the detector: one `Detector` per series, scores to anomalies.

`DetectionEngine.step` is fed one closed bucket time at a time with every watched
series' observation (the caller guarantees the bucket is complete: ``complete_until``).
Each series' detector scores it online; then the engine decides:

* **arm** a series when its score reaches ``EngineConfig.arm`` (the detector's alert
  level; read through the detector's damping within an event, see `_Series.alarm`). The
  alarm opens a short confirmation window (``arm_for``);
* **open** an anomaly inside that window once the change since its onset is *material*
  (``min_change`` relative to the seasonal expectation of `insights.baseline`),
  *significant* (``min_z`` standard errors, with the count behind a rate as its weight,
  the noise learnt from calm buckets and inflated for minutes that move together) and
  *persistent* (several buckets, so one odd minute or one huge basket is an outlier, not
  an incident). The onset is the start of the most significant window;
* keep it open, silently, while the series stays changed: the detector goes quiet once
  a level shift is familiar, and the engine does not raise an open series again;
* **recover** it when the last ``resolve_after`` buckets are back within
  ``recover_fraction`` of the opening change (judged on the values: the return to normal
  surprises the detector too).

Pure logic: no I/O, time comes from the buckets. Scores may be passed in precomputed
(the backtest scores series in parallel with the same detector).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from insights.baseline import Baseline, Bucket, Window, window
from insights.detector import DEFAULT, Detector, DetectorConfig
from insights.series import INTERVAL_SECONDS, Obs, SeriesKey

__all__ = ["Anomaly", "AnomalyEvent", "DetectionEngine", "EngineConfig"]


@dataclass(frozen=True)
class EngineConfig:
    """Thresholds of the business layer (lengths in buckets of each interval)."""

    arm: float = 0.5
    """A detector score that arms a series (0.5 is the detector's own alert level)."""
    arm_for: Mapping[str, int] = field(default_factory=lambda: {"1m": 10, "1h": 2})
    """Buckets an armed series waits for the change to become material and significant."""
    min_change: float = 0.2
    """Smallest relative change (observed vs expected since the onset) worth an insight."""
    min_z: float = 5.0
    """Smallest significance of that change, in robust standard errors of the series."""
    min_persist: Mapping[str, int] = field(default_factory=lambda: {"1m": 2, "1h": 1})
    """Buckets since the onset that must each deviate (≥ 1 standard error) the same way:
    one odd bucket is an outlier, not an incident..."""
    min_persist_money: Mapping[str, int] = field(default_factory=lambda: {"1m": 3, "1h": 1})
    """...and for money, whose tail is heavy (two big baskets in a row happen), three."""
    resolve_after: Mapping[str, int] = field(default_factory=lambda: {"1m": 15, "1h": 2})
    recover_fraction: float = 0.5
    """Back to normal: the change is below this share of the opening change..."""
    recover_floor: float = 0.05
    """...or below this relative change."""
    onset_lookback: Mapping[str, int] = field(default_factory=lambda: {"1m": 30, "1h": 6})
    history: Mapping[str, int] = field(default_factory=lambda: {"1m": 720, "1h": 168})
    detector: DetectorConfig = DEFAULT


@dataclass(frozen=True)
class Anomaly:
    """A series that left its normal behaviour."""

    key: SeriesKey
    onset: datetime
    """Estimated start of the change (bucket start)."""
    detected: datetime
    """End of the bucket that confirmed it: when it could first be known."""
    score: float
    observed: float
    expected: float
    change: float

    @property
    def direction(self) -> Literal["up", "down"]:
        return "up" if self.change > 0 else "down"


@dataclass(frozen=True)
class AnomalyEvent:
    """An anomaly opened or recovered at the end of bucket ``at``."""

    kind: Literal["opened", "recovered"]
    anomaly: Anomaly
    at: datetime


class _Series:
    def __init__(self, key: SeriesKey, config: EngineConfig) -> None:
        self.key = key
        self.ratio = key.watched.kind == "ratio"
        self.detector = Detector(config.detector)
        self.baseline = Baseline(INTERVAL_SECONDS[key.interval])
        self.recent: deque[Bucket] = deque(maxlen=config.history.get(key.interval, 720))
        self.anomaly: Anomaly | None = None
        self.calm = 0
        self.armed = 0  # buckets left to confirm an alarm
        self.last_ts: datetime | None = None
        self.quiet_since: datetime | None = None  # end of the last recovered anomaly
        self.fed = 0  # buckets scored, as the detector counts them
        self.last_hot = -(10**9)
        # standardised residuals (rates: scaled by sqrt(weight)) for the noise scale
        self.residuals: deque[float] = deque(maxlen=360)
        self._scale: tuple[float, float] | None = None  # (noise, inflation), cached
        self._fresh = 0

    def standardised(self, b: Bucket) -> float | None:
        if b.value is None or b.expected is None:
            return None
        if self.ratio:  # binomial-like: the error shrinks with the count behind the rate
            return (b.value - b.expected) * math.sqrt(max(b.weight or 0.0, 0.0))
        # counts and money (compound Poisson): the variance grows with the level
        return (b.value - b.expected) / math.sqrt(max(abs(b.expected), 1.0))

    def alarm(self, score: float, arm: float, detector: DetectorConfig) -> bool:
        """Whether the detector's surprise reached its alert level in this bucket.

        Within an event (alarms less than ``event_gap`` buckets apart) the detector damps
        the scores of the buckets that do not escalate by ``damping``, so that one event
        gives one high score. The engine does its own de-duplication (an open anomaly is
        never raised again), so it reads the alarm through that damping: a second incident
        on a series still inside the first one's event is not lost."""
        self.fed += 1
        in_event = self.fed - self.last_hot <= detector.event_gap
        hot = score >= arm or (in_event and score >= arm * detector.damping - 1e-12)
        if hot:
            self.last_hot = self.fed
        return hot

    def outlier(self, value: float | None, expected: float | None) -> bool:
        """A bucket too far from its expectation to teach the baseline or the noise."""
        if value is None or expected is None or self.ratio:
            return False
        noise = self.noise()
        resid = (value - expected) / math.sqrt(max(abs(expected), 1.0))
        return math.isfinite(noise) and abs(resid) > 4.0 * noise

    def noise(self) -> float:
        """Standard deviation of the standardised residuals, from their mean absolute
        deviation around the median: robust to a few outliers, and not zero for a series
        that is zero most of the time (revenue of a small country per minute)."""
        if len(self.residuals) < 30:
            return math.inf
        if self._scale is None or self._fresh >= 30:  # it moves slowly: refresh now and then
            values = sorted(self.residuals)
            med = values[len(values) // 2]
            mean_abs = math.fsum(abs(v - med) for v in values) / len(values)
            self._scale = (max(1.2533 * mean_abs, 1e-9), self._inflation())
            self._fresh = 0
        return self._scale[0]

    def learn(self, resid: float) -> None:
        """Add a calm bucket's standardised residual."""
        self.residuals.append(resid)
        self._fresh += 1

    def inflation(self) -> float:
        """How much sums of neighbouring residuals vary beyond independent ones: a session
        spans several minutes, so its slice's minutes move together. From the lag-1
        autocorrelation ``rho``: ``sqrt((1 + rho) / (1 - rho))``."""
        if not math.isfinite(self.noise()) or self._scale is None:
            return 1.0
        return self._scale[1]

    def _inflation(self) -> float:
        values = list(self.residuals)  # in arrival order
        mean = math.fsum(values) / len(values)
        dev = [v - mean for v in values]
        var = math.fsum(d * d for d in dev)
        if var <= 0:
            return 1.0
        rho = math.fsum(a * b for a, b in itertools.pairwise(dev)) / var
        rho = min(max(rho, 0.0), 0.9)
        return math.sqrt((1 + rho) / (1 - rho))


class DetectionEngine:
    """Every watched series' detector and anomaly state."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._series: dict[SeriesKey, _Series] = {}

    # -- feeding -----------------------------------------------------------------------

    def last_ts(self, interval: str) -> datetime | None:
        """The newest bucket fed at ``interval`` (None before the first)."""
        stamps = [s.last_ts for k, s in self._series.items() if k.interval == interval]
        known = [t for t in stamps if t is not None]
        return max(known) if known else None

    def step(
        self,
        ts: datetime,
        observations: Mapping[SeriesKey, Obs],
        scores: Mapping[SeriesKey, float] | None = None,
    ) -> list[AnomalyEvent]:
        """Feed the closed bucket starting at ``ts``; return anomalies opened/recovered."""
        if not observations:
            return []
        interval = next(iter(observations)).interval
        end = ts + timedelta(seconds=INTERVAL_SECONDS[interval])
        fresh: list[_Series] = []
        for key, obs in observations.items():
            state = self._series.get(key)
            if state is None:
                state = self._series[key] = _Series(key, self.config)
            if state.last_ts is not None and ts <= state.last_ts:
                continue  # already fed: feeding again is harmless
            value = obs.value if obs.value is not None and not math.isnan(obs.value) else None
            expected = state.baseline.expected(ts)
            if scores is not None and key in scores:
                score = scores[key]
            else:
                v = math.nan if value is None else value
                w = None if not state.ratio else (obs.weight or 0.0)
                score = state.detector.update(ts, v, weight=w)
            calm = state.anomaly is None and state.armed <= 0 and not state.outlier(value, expected)
            state.baseline.push(ts, value, calm=calm)
            state.recent.append(Bucket(ts, value, obs.weight, expected, score))
            state.last_ts = ts
            fresh.append(state)
        events: list[AnomalyEvent] = []
        for state in fresh:
            event = self._decide(state, end)
            if event is not None:
                events.append(event)
        return events

    def _decide(self, state: _Series, end: datetime) -> AnomalyEvent | None:
        cfg = self.config
        bucket = state.recent[-1]
        score = bucket.score
        hot = state.alarm(score, cfg.arm, cfg.detector)
        if state.anomaly is None:
            event = self._confirm(state, end, score, hot)
            resid = state.standardised(bucket)
            noise = state.noise()
            if (
                resid is not None
                and state.anomaly is None
                and not (math.isfinite(noise) and abs(resid) > 4.0 * noise)
            ):
                state.learn(resid)  # the noise scale learns from calm buckets
            return event
        # back to normal is judged on the values alone: the return to normal is itself a
        # surprise to the detector, and must not keep the anomaly open
        state.calm += 1
        need = cfg.resolve_after.get(state.key.interval, 15)
        if state.calm < need:
            return None
        recent = window(list(state.recent)[-need:], state.ratio)
        opening = abs(state.anomaly.change)
        if recent is not None and abs(recent.change) > max(
            cfg.recover_fraction * opening, cfg.recover_floor
        ):
            return None  # quiet, but still changed: a level shift, the incident goes on
        gone, state.anomaly = state.anomaly, None
        state.quiet_since = end  # a later anomaly is judged on what came after this
        return AnomalyEvent("recovered", gone, end)

    def _confirm(
        self, state: _Series, end: datetime, score: float, hot: bool
    ) -> AnomalyEvent | None:
        """Arm on a detector alarm; open once the change is material and significant.

        The detector raises one high score per event and damps the buckets after it, so
        the alarm arms the series for a few buckets in which the change itself must prove
        material (``min_change``), significant (``min_z``) and persistent."""
        cfg = self.config
        if hot:
            state.armed = cfg.arm_for.get(state.key.interval, 10)
        if state.armed <= 0:
            return None
        state.armed -= 1
        anomaly = self._open(state, end, max(score, 0.0))
        if anomaly is None:
            return None
        state.anomaly, state.calm, state.armed = anomaly, 0, 0
        return AnomalyEvent("opened", anomaly, end)

    def _open(self, state: _Series, end: datetime, score: float) -> Anomaly | None:
        """The anomaly at this bucket, if the change since its onset is material and
        significant; the onset is where the cumulative deviation is largest."""
        cfg = self.config
        lookback = cfg.onset_lookback.get(state.key.interval, 30)
        buckets = [
            b
            for b in list(state.recent)[-lookback:]
            if state.quiet_since is None or b.ts >= state.quiet_since
        ]
        devs = [state.standardised(b) or 0.0 for b in buckets]
        noise = state.noise()
        if not devs or not math.isfinite(noise):
            return None
        if state.key.watched.kind == "money":
            # a basket is heavy-tailed: no single bucket may carry more than 3 noise units
            devs = [max(min(d, 3.0 * noise), -3.0 * noise) for d in devs]
        sign = 1.0 if devs[-1] > 0 else -1.0
        # onset: the start whose window deviates most significantly (a scan statistic)
        z, start, total = -math.inf, len(buckets) - 1, 0.0
        scale = noise * state.inflation()
        for i in range(len(buckets) - 1, -1, -1):
            total += sign * devs[i]
            n = len(buckets) - i
            # one bucket is not inflated; a longer window is, up to the full factor
            stat = total / (noise * math.sqrt(n) if n == 1 else scale * math.sqrt(n))
            if stat > z:
                z, start = stat, i
        span = window(buckets[start:], state.ratio)
        if span is None or (not math.isfinite(span.change) and span.observed <= 0):
            return None
        change = span.change if math.isfinite(span.change) else 1.0
        persistent = sum(1 for d in devs[start:] if sign * d >= noise)
        persist = cfg.min_persist_money if state.key.watched.kind == "money" else cfg.min_persist
        if (
            abs(change) < cfg.min_change
            or z < cfg.min_z
            or persistent < persist.get(state.key.interval, 1)
        ):
            return None
        if len(buckets) - start > 1:
            # an outlier is one bucket carrying the whole change: without it, is it still?
            peak = max(range(start, len(buckets)), key=lambda i: sign * devs[i])
            rest = window(buckets[start:peak] + buckets[peak + 1 :], state.ratio)
            if rest is None or abs(rest.change) < cfg.min_change or rest.change * change < 0:
                return None
        return Anomaly(
            key=state.key,
            onset=buckets[start].ts,
            detected=end,
            score=score,
            observed=span.observed,
            expected=span.expected,
            change=change,
        )

    # -- reading -----------------------------------------------------------------------

    def series_keys(self) -> list[SeriesKey]:
        """Every series seen so far."""
        return list(self._series)

    def open_anomalies(self) -> list[Anomaly]:
        """The anomalies currently open."""
        return [s.anomaly for s in self._series.values() if s.anomaly is not None]

    def change(
        self, key: SeriesKey, since: datetime, until: datetime | None = None
    ) -> Window | None:
        """Observed vs expected of a series over its buckets in ``[since, until)``."""
        state = self._series.get(key)
        if state is None:
            return None
        chosen = [b for b in state.recent if b.ts >= since and (until is None or b.ts < until)]
        return window(chosen, state.ratio)

    def buckets(self, key: SeriesKey) -> list[Bucket]:
        """The recent buckets of a series (oldest first)."""
        state = self._series.get(key)
        return list(state.recent) if state else []
