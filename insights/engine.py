"""The business layer around the detector: one `Detector` per series, scores to anomalies.

`DetectionEngine.step` is fed one closed bucket time at a time with every watched
series' observation (the caller guarantees the bucket is complete: ``complete_until``).
Each series' detector scores it online; then the engine decides:

* **arm** a series when its score reaches ``EngineConfig.arm`` (the detector's alert
  level; read through the detector's damping within an event, see `_Alarm.hot`), or,
  on the *fast path* of 1-minute counts and shares, when a CUSUM of its residuals
  against the seasonal expectation reaches ``EngineConfig.fast`` noise units. The
  alarm opens a short confirmation window (``arm_for``);
* **open** an anomaly inside that window once the change since its onset is *material*
  (``min_change`` relative to the seasonal expectation of `insights.baseline`),
  *significant* (``min_z`` standard errors) and *persistent* (several buckets, so one odd
  minute or one huge basket is an outlier, not an incident). The onset is the start of
  the most significant window;
* keep it open, silently, while the series stays changed: the detector goes quiet once
  a level shift is familiar, and the engine does not raise an open series again;
* **recover** it when the last ``resolve_after`` buckets are back within
  ``recover_fraction`` of the opening change (judged on the values: the return to normal
  surprises the detector too).

Significance is judged on the counts behind a metric. A count (sessions, page views,
orders) is Poisson around its expectation and a share (conversion: sessions that bought
out of the sessions) binomial, so a window's observed and expected totals give a
likelihood-ratio z (`signed_deviance`), right even for a handful of orders a minute. It
is divided by the noise learnt from calm buckets (how much more the series varies than
Poisson or binomial: overdispersion, an expectation a few percent off) and by its
inflation for sums of minutes that move together, both measured robustly. The noise
grows with the volume behind a bucket (``1 + phi * volume`` in variance, like a negative
binomial): an expectation a few percent off is many Poisson errors at noon and a fraction
of one at night, so one factor for the whole day would be too lax by day and too strict at
night. Money and
other rates use scaled residuals the same way. At 1 minute, ``min_z`` of 5 over some 200
series keeps false insights near a few a week; a 30% drop is then found in 2–5 minutes
once a few hundred events a minute are behind the metric, later below that.

Pure logic: no I/O, time comes from the buckets. Scores may be passed in precomputed
(the backtest scores series in parallel with the same detector).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from insights.baseline import Baseline, Bucket, Window, window
from insights.detector import DEFAULT, Detector, DetectorConfig
from insights.series import INTERVAL_SECONDS, Obs, SeriesKey

__all__ = ["Anomaly", "AnomalyEvent", "DetectionEngine", "EngineConfig", "signed_deviance"]


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
    fast: Mapping[str, float] = field(default_factory=lambda: {"1m": 5.0})
    """The fast path (intervals absent here have none): a two-sided CUSUM of the
    standardised residuals of counts and shares, in noise units, that arms the series
    once it reaches this height..."""
    fast_slack: float = 0.5
    """...less this many noise units per bucket (the CUSUM's reference value)."""
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


@dataclass(frozen=True, slots=True)
class _Kind:
    """How a series' buckets are judged: counts (Poisson) and shares (binomial) on the
    counts themselves, other rates by the weight behind them, money by its level."""

    ratio: bool
    share: bool
    exact: bool  # counts and shares
    money: bool

    @staticmethod
    def of(key: SeriesKey) -> _Kind:
        """The kind of the series ``key``."""
        watched = key.watched
        return _Kind(
            ratio=watched.kind == "ratio",
            share=watched.share,
            exact=watched.kind == "count" or watched.share,
            money=watched.kind == "money",
        )

    def standardised(self, b: Bucket) -> float | None:
        if b.value is None or b.expected is None:
            return None
        if self.exact:  # counts and shares: the likelihood of the counts themselves
            k, e, n = self.counts(b)
            return signed_deviance(k, e, n)
        if self.ratio:  # the error shrinks with the count behind the rate
            return (b.value - b.expected) * math.sqrt(max(b.weight or 0.0, 0.0))
        # money (compound Poisson): the variance grows with the level
        return (b.value - b.expected) / math.sqrt(max(abs(b.expected), 1.0))

    def volume(self, b: Bucket) -> float:
        """The events expected in a count bucket, the trials behind a share (0 else)."""
        if not self.exact or b.expected is None:
            return 0.0
        _, e, n = self.counts(b)
        return n if n is not None else e

    def counts(self, b: Bucket) -> tuple[float, float, float | None]:
        """(observed, expected, trials) behind a count or share bucket: events against
        their expectation, or sessions that bought out of the sessions."""
        value, expected = b.value or 0.0, b.expected or 0.0
        if not self.share:
            return max(value, 0.0), max(expected, 0.0), None
        n = max(b.weight or 0.0, 0.0)
        return value * n, expected * n, n


class _Noise:
    """The noise of a series, learnt from the standardised residuals of its calm buckets
    and the volumes behind them (counts and shares): its scale and its inflation."""

    __slots__ = ("_factors", "_fit", "_fresh", "_scaled", "exact", "residuals", "volumes")

    def __init__(self, exact: bool) -> None:
        self.exact = exact
        self.residuals: deque[float] = deque(maxlen=1440)
        self.volumes: deque[float] = deque(maxlen=1440)
        self._scaled: float | None = None  # cached, with...
        self._fit = (1.0, 0.0)  # ...the variance a + phi * volume (counts and shares)...
        self._factors: list[float] = [1.0, 1.0]  # ...and inflation(n) at [n]
        self._fresh = 0

    def __len__(self) -> int:
        return len(self.residuals)

    def at(self, volume: float | None = None) -> float:
        """Standard deviation of the standardised residuals of calm buckets, robustly; for
        counts and shares, of a bucket with ``volume`` behind it (see :func:`_fit_noise`;
        None: the typical bucket's)."""
        if len(self.residuals) < 30:
            return math.inf
        if self._scaled is None or self._fresh >= 60:  # it moves slowly: refresh now and then
            values = np.asarray(self.residuals, dtype=float)
            if self.exact:
                # counts and shares: robust spreads (a smaller incident elsewhere that
                # moved this series for a while does not count), never below their
                # Poisson / binomial error
                vols = np.asarray(self.volumes, dtype=float)
                self._fit = _fit_noise(values, vols)
                self._scaled = float(self._scale(np.median(vols)))
                values = values / self._scale(vols)  # in units of their own noise
            else:
                # money: the mean absolute deviation, not 0 for a series that is 0 most
                # minutes
                self._scaled = max(1.2533 * float(np.abs(values - np.median(values)).mean()), 1e-9)
            self._factors = _inflations(values)
            self._fresh = 0
        if volume is None or not self.exact:
            return self._scaled
        return float(self._scale(volume))

    def _scale(self, volume: Any) -> Any:
        """The fitted noise at ``volume`` (a number or an array), never below 1."""
        a, phi = self._fit
        return np.sqrt(np.maximum(a + phi * volume, 1.0))

    def learn(self, resid: float, volume: float = 0.0) -> None:
        """Add a calm bucket's standardised residual and the volume behind it."""
        self.residuals.append(resid)
        self.volumes.append(volume)
        self._fresh += 1

    def inflation(self, n: int) -> float:
        """How much more the sum of ``n`` neighbouring residuals varies than ``n``
        independent ones: a session spans several minutes, so its slice's minutes move
        together, and an expectation a little off stays off for a while. Measured: the
        robust spread of the sums of ``n`` consecutive calm residuals over ``sqrt(n)``
        times that of single ones, never below 1 nor below a shorter window's. Robust,
        so a stretch of a smaller incident elsewhere that moved this series a little
        does not make every later window look noisy."""
        if n <= 1 or not math.isfinite(self.at()):
            return 1.0
        return self._factors[min(n, len(self._factors) - 1)]


@dataclass(slots=True)
class _Alarm:
    """The detector's alarms on a series, read through its damping within an event."""

    fed: int = 0  # buckets scored, as the detector counts them
    last_hot: int = -(10**9)  # the bucket of the last alarm

    def hot(self, score: float, arm: float, detector: DetectorConfig) -> bool:
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


@dataclass(slots=True)
class _Cusum:
    """A two-sided CUSUM of residuals in noise units, bounded at twice its ``height``."""

    height: float  # where it arms the series
    up: float = 0.0
    down: float = 0.0

    def add(self, u: float, slack: float) -> bool:
        """Add one residual ``u`` less ``slack``; whether either side reached the height."""
        top = 2.0 * self.height  # bounded: a long-gone deviation must not keep it armed
        self.up = min(max(0.0, self.up + u - slack), top)
        self.down = min(max(0.0, self.down - u - slack), top)
        return max(self.up, self.down) >= self.height

    def reset(self) -> None:
        self.up = self.down = 0.0


@dataclass(slots=True)
class _Watch:
    """Where a series is in the engine's cycle: armed, open (an anomaly), recovered."""

    anomaly: Anomaly | None = None
    armed: int = 0  # buckets left to confirm an alarm
    calm: int = 0  # buckets since the anomaly opened (recovery needs enough of them)
    quiet_since: datetime | None = None  # end of the last recovered anomaly


class _Series:
    """One watched series: its detector and baseline, its recent buckets, and the
    engine's state of it in small parts (kind, noise, alarms, CUSUM, watch)."""

    __slots__ = ("alarm", "baseline", "cusum", "detector", "key", "kind", "last_ts", "noise",
                 "recent", "watch")  # fmt: skip

    def __init__(self, key: SeriesKey, config: EngineConfig) -> None:
        self.key = key
        self.kind = _Kind.of(key)
        fast = config.fast.get(key.interval) if self.kind.exact else None
        self.cusum = None if fast is None else _Cusum(fast)  # the fast path, if any
        self.detector = Detector(config.detector)
        self.baseline = Baseline(INTERVAL_SECONDS[key.interval])
        self.recent: deque[Bucket] = deque(maxlen=config.history.get(key.interval, 720))
        self.last_ts: datetime | None = None
        self.noise = _Noise(self.kind.exact)
        self.alarm = _Alarm()
        self.watch = _Watch()

    def sequential(self, slack: float) -> bool:
        """Add the newest bucket to the CUSUM; whether it armed the fast path.

        The residual is measured against the seasonal expectation and scaled by the
        noise learnt from calm buckets, itself in units of the Poisson (counts) or
        binomial (shares) error of the bucket's own volume: a 30% drop on a few thousand
        sessions crosses in one or two buckets, on fifty in several, noise rarely."""
        if self.cusum is None or len(self.noise) < _FAST_HISTORY:
            return False
        bucket = self.recent[-1]
        resid = self.kind.standardised(bucket)
        noise = self.noise.at(self.kind.volume(bucket))
        if resid is None or not math.isfinite(noise):
            return False
        return self.cusum.add(resid / noise, slack)

    def outlier(self, b: Bucket) -> bool:
        """A money bucket too far from its expectation to teach the baseline (one huge
        basket). Counts and shares teach it every bucket outside an anomaly, the ones
        that lead up to it forgotten when it opens: a level that moved by a few percent
        (a big series' slow drift) is followed, not excluded bucket by bucket."""
        if self.kind.exact or self.kind.ratio:
            return False
        resid = self.kind.standardised(b)
        noise = self.noise.at()
        return resid is not None and math.isfinite(noise) and abs(resid) > 4.0 * noise


def _inflations(values: npt.NDArray[np.float64]) -> list[float]:
    """`_Noise.inflation` by window length (index n) for residuals in arrival order."""
    top = min(_MAX_WINDOW, len(values) // 4)
    cumsum = np.concatenate(([0.0], np.cumsum(values)))
    single = _spread(values)
    if single <= 0 or top < 2:
        return [1.0, 1.0]
    lengths = [n for n in _WINDOWS if n <= top]
    measured = [1.0] + [_spread(cumsum[n:] - cumsum[:-n]) / (math.sqrt(n) * single)
                        for n in lengths[1:]]  # fmt: skip
    out, best = [1.0, 1.0], 1.0
    for n in range(2, top + 1):  # between the measured lengths: interpolated
        best = max(best, float(np.interp(n, lengths, measured)))
        out.append(best)
    return out


def _fit_noise(
    values: npt.NDArray[np.float64], volumes: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """``(a, phi)`` of the residuals' variance ``a + phi * volume``: robust variances of
    the residuals in four groups by volume, fitted by least squares with ``phi >= 0``
    (one variance for all when the groups do not grow with volume)."""
    whole = _spread(values) ** 2
    if len(values) < 4 * _FIT_GROUP or float(np.ptp(volumes)) <= 0:
        return whole, 0.0
    order = np.argsort(volumes, kind="stable")
    groups = np.array_split(order, 4)
    v = np.array([float(np.median(volumes[g])) for g in groups])
    var = np.array([_spread(values[g]) ** 2 for g in groups])
    phi, a = np.polyfit(v, var, 1)
    if not (math.isfinite(phi) and phi > 0):
        return whole, 0.0
    return float(a), float(phi)


_FIT_GROUP = 30  # residuals per volume group at least


def _spread(values: npt.NDArray[np.float64]) -> float:
    """Median absolute deviation around the median, as a normal standard deviation."""
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


_FAST_HISTORY = 120  # calm buckets learnt before the fast path arms: a noise worth trusting
_WINDOWS = (1, 2, 3, 5, 8, 12, 18, 30, 45, 64)
_MAX_WINDOW = 64


def signed_deviance(k: float, e: float, n: float | None = None) -> float:
    """Signed root of the likelihood-ratio statistic of ``k`` events where ``e`` were
    expected: Poisson, or binomial with ``n`` trials. Close to a standard normal even for
    a handful of events, where ``(k - e) / sqrt(e)`` has a far too heavy upper tail."""
    e = max(e, 0.5)  # nothing expected: judge against half an event
    if n is not None:
        if n <= 0:
            return 0.0
        e = min(e, n - 0.5) if n > 1 else min(e, n / 2)
        k = min(max(k, 0.0), n)
        d = _xlogy(k, e) + _xlogy(n - k, n - e)
    else:
        k = max(k, 0.0)
        d = _xlogy(k, e) - (k - e)
    return math.copysign(math.sqrt(max(2.0 * d, 0.0)), k - e)


def _xlogy(x: float, y: float) -> float:
    """``x * log(x / y)``, 0 for ``x`` = 0."""
    return x * math.log(x / y) if x > 0 else 0.0


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
                w = None if not state.kind.ratio else (obs.weight or 0.0)
                score = state.detector.update(ts, v, weight=w)
            bucket = Bucket(ts, value, obs.weight, expected, score)
            # armed buckets are learnt too (the fast path arms often), and forgotten
            # if an anomaly opens over them
            calm = state.watch.anomaly is None and not state.outlier(bucket)
            state.baseline.push(ts, value, calm=calm)
            state.recent.append(bucket)
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
        hot = state.alarm.hot(score, cfg.arm, cfg.detector)
        watch = state.watch
        if watch.anomaly is None:
            hot = state.sequential(cfg.fast_slack) or hot
            event = self._confirm(state, end, score, hot)
            resid = state.kind.standardised(bucket)
            volume = state.kind.volume(bucket)
            noise = state.noise.at(volume)
            if (
                resid is not None
                and watch.anomaly is None
                and not (math.isfinite(noise) and abs(resid) > 4.0 * noise)
            ):
                state.noise.learn(resid, volume)  # the noise scale learns from calm buckets
            return event
        # back to normal is judged on the values alone: the return to normal is itself a
        # surprise to the detector, and must not keep the anomaly open
        watch.calm += 1
        need = cfg.resolve_after.get(state.key.interval, 15)
        if watch.calm < need:
            return None
        recent = window(list(state.recent)[-need:], state.kind.ratio)
        opening = abs(watch.anomaly.change)
        if recent is not None and abs(recent.change) > max(
            cfg.recover_fraction * opening, cfg.recover_floor
        ):
            return None  # quiet, but still changed: a level shift, the incident goes on
        gone, watch.anomaly = watch.anomaly, None
        if state.cusum is not None:
            state.cusum.reset()
        watch.quiet_since = end  # a later anomaly is judged on what came after this
        return AnomalyEvent("recovered", gone, end)

    def _confirm(
        self, state: _Series, end: datetime, score: float, hot: bool
    ) -> AnomalyEvent | None:
        """Arm on a detector alarm; open once the change is material and significant.

        The detector raises one high score per event and damps the buckets after it, so
        the alarm arms the series for a few buckets in which the change itself must prove
        material (``min_change``), significant (``min_z``) and persistent."""
        cfg, watch = self.config, state.watch
        if hot:
            watch.armed = cfg.arm_for.get(state.key.interval, 10)
        if watch.armed <= 0:
            return None
        watch.armed -= 1
        anomaly = self._open(state, end, max(score, 0.0))
        if anomaly is None:
            return None
        watch.anomaly, watch.calm, watch.armed = anomaly, 0, 0
        state.baseline.forget(anomaly.onset)
        return AnomalyEvent("opened", anomaly, end)

    def _open(self, state: _Series, end: datetime, score: float) -> Anomaly | None:
        """The anomaly at this bucket, if the change since its onset is material and
        significant; the onset is where the cumulative deviation is largest."""
        cfg, kind, noises_of = self.config, state.kind, state.noise
        lookback = cfg.onset_lookback.get(state.key.interval, 30)
        quiet_since = state.watch.quiet_since
        buckets = [
            b for b in list(state.recent)[-lookback:] if quiet_since is None or b.ts >= quiet_since
        ]
        devs = [kind.standardised(b) or 0.0 for b in buckets]
        noises = [noises_of.at(kind.volume(b)) for b in buckets]
        noise = noises_of.at()
        if not devs or not math.isfinite(noise):
            return None
        if kind.money:
            # a basket is heavy-tailed: no single bucket may carry more than 3 noise units
            devs = [max(min(d, 3.0 * noise), -3.0 * noise) for d in devs]
        sign = 1.0 if devs[-1] > 0 else -1.0
        # onset: the start whose window deviates most significantly (a scan statistic),
        # each window's sum scaled by the noise of a sum of that many correlated buckets
        z, start, total = -math.inf, len(buckets) - 1, 0.0
        k_sum = e_sum = n_sum = 0.0
        for i in range(len(buckets) - 1, -1, -1):
            n = len(buckets) - i
            if kind.exact:
                # the window's totals against their expectation: right for a handful
                # of orders a minute, where a sum of per-bucket residuals is not
                b = buckets[i]
                if b.value is not None and b.expected is not None:
                    k, e, trials = kind.counts(b)
                    k_sum, e_sum, n_sum = k_sum + k, e_sum + e, n_sum + (trials or 0.0)
                total = sign * signed_deviance(k_sum, e_sum, n_sum if kind.share else None)
                volume = (n_sum if kind.share else e_sum) / n  # the window's mean volume
                stat = total / (noises_of.at(volume) * noises_of.inflation(n))
            else:
                total += sign * devs[i]
                stat = total / (noise * noises_of.inflation(n) * math.sqrt(n))
            if stat > z:
                z, start = stat, i
        span = window(buckets[start:], kind.ratio)
        if span is None or (not math.isfinite(span.change) and span.observed <= 0):
            return None
        change = span.change if math.isfinite(span.change) else 1.0
        persistent = sum(
            1 for d, u in zip(devs[start:], noises[start:], strict=True) if sign * d >= u
        )
        persist = cfg.min_persist_money if kind.money else cfg.min_persist
        if (
            abs(change) < cfg.min_change
            or z < cfg.min_z
            or persistent < persist.get(state.key.interval, 1)
        ):
            return None
        if len(buckets) - start > 1:
            # an outlier is one bucket carrying the whole change: without it, is it still?
            peak = max(range(start, len(buckets)), key=lambda i: sign * devs[i])
            rest = window(buckets[start:peak] + buckets[peak + 1 :], kind.ratio)
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
        return [s.watch.anomaly for s in self._series.values() if s.watch.anomaly is not None]

    def change(
        self, key: SeriesKey, since: datetime, until: datetime | None = None
    ) -> Window | None:
        """Observed vs expected of a series over its buckets in ``[since, until)``."""
        state = self._series.get(key)
        if state is None:
            return None
        chosen = [b for b in state.recent if b.ts >= since and (until is None or b.ts < until)]
        return window(chosen, state.kind.ratio)

    def buckets(self, key: SeriesKey) -> list[Bucket]:
        """The recent buckets of a series (oldest first)."""
        state = self._series.get(key)
        return list(state.recent) if state else []
