"""The business layer around the detector, on synthetic series (real detector, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from insights.engine import AnomalyEvent, DetectionEngine, _inflations, signed_deviance
from insights.series import Obs, SeriesKey

T0 = datetime(2025, 1, 6, tzinfo=UTC)
ORDERS = SeriesKey("orders", (("country", "DE"),), "1m")
CONV = SeriesKey("conversion_rate", (("country", "DE"),), "1m")
N = 2100  # a day and a half of minutes: the detector is warm, the daily baseline known
DAY_ONE = T0 + timedelta(days=1)  # before that, the expectation is only the recent level


def level(i: int) -> float:
    """A daily rhythm: 30 orders a minute at night, 90 in the evening."""
    return 60.0 + 30.0 * math.sin(2 * math.pi * (i / 1440.0 - 0.25))


def counts(factor: Callable[[int], float], seed: int = 1, n: int = N) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(rng.poisson(level(i) * factor(i))) for i in range(n)]


def run(values: list[float], key: SeriesKey = ORDERS, weights: list[float] | None = None,
        engine: DetectionEngine | None = None) -> list[AnomalyEvent]:  # fmt: skip
    engine = engine or DetectionEngine()
    events: list[AnomalyEvent] = []
    for i, v in enumerate(values):
        w = weights[i] if weights else None
        events += engine.step(T0 + timedelta(minutes=i), {key: Obs(v, w)})
    return events


def opened(events: list[AnomalyEvent]) -> list[AnomalyEvent]:
    return [e for e in events if e.kind == "opened"]


def test_a_drop_opens_fast_with_its_onset_and_recovers() -> None:
    values = counts(lambda i: 0.4 if 1800 <= i < 1830 else 1.0)
    events = [e for e in run(values) if e.at > DAY_ONE]
    [first] = opened(events)
    a = first.anomaly
    start = T0 + timedelta(minutes=1800)
    assert first.at - start <= timedelta(minutes=5)
    assert abs((a.onset - start).total_seconds()) <= 120
    assert -0.75 < a.change < -0.45 and a.direction == "down"
    recovered = [e for e in events if e.kind == "recovered"]
    assert len(recovered) == 1 and recovered[0].at > start + timedelta(minutes=30)


def test_one_odd_bucket_is_an_outlier_not_an_incident() -> None:
    values = counts(lambda i: 1.0)
    values[1800] *= 6
    assert [e for e in opened(run(values)) if e.at > DAY_ONE] == []


def test_a_level_shift_stays_open_and_quiet() -> None:
    events = [e for e in run(counts(lambda i: 0.3 if i >= 1800 else 1.0)) if e.at > DAY_ONE]
    assert len(opened(events)) == 1
    assert [e for e in events if e.kind == "recovered"] == []


def test_a_rate_dip_on_few_sessions_is_not_raised() -> None:
    rng = np.random.default_rng(3)
    sessions = [20.0] * N
    buyers = [float(rng.binomial(20, 0.05 if i < 1800 else 0.025)) for i in range(N)]
    events = run([b / s for b, s in zip(buyers, sessions, strict=True)], CONV, sessions)
    assert opened(events) == []


def test_a_rate_drop_on_enough_sessions_is_raised() -> None:
    rng = np.random.default_rng(4)
    sessions = [float(rng.poisson(3000)) for _ in range(N)]
    buyers = [float(rng.binomial(int(s), 0.05 if not 1800 <= i < 1840 else 0.02))
              for i, s in enumerate(sessions)]  # fmt: skip
    events = run([b / s for b, s in zip(buyers, sessions, strict=True)], CONV, sessions)
    [first] = [e for e in opened(events) if e.at > DAY_ONE]
    assert first.at - (T0 + timedelta(minutes=1800)) <= timedelta(minutes=5)
    assert first.anomaly.change < -0.4


def test_a_second_incident_inside_the_detectors_event_is_found() -> None:
    # the detector damps alarms less than 144 buckets after its last one (one alert per
    # event); the engine reads through that, so a new incident there is not lost
    def factor(i: int) -> float:
        return 0.3 if 1800 <= i < 1820 else (1.8 if 1900 <= i < 1920 else 1.0)

    found = [e.anomaly for e in opened(run(counts(factor, seed=5))) if e.at > DAY_ONE]
    assert [a.direction for a in found] == ["down", "up"]
    assert abs((found[1].onset - (T0 + timedelta(minutes=1900))).total_seconds()) <= 180


def test_feeding_a_bucket_twice_is_harmless() -> None:
    engine = DetectionEngine()
    values = counts(lambda i: 1.0, n=300)
    for i, v in enumerate(values):
        engine.step(T0 + timedelta(minutes=i), {ORDERS: Obs(v)})
    before = engine.buckets(ORDERS)
    assert engine.step(T0 + timedelta(minutes=299), {ORDERS: Obs(1e6)}) == []
    assert engine.buckets(ORDERS) == before
    assert engine.last_ts("1m") == T0 + timedelta(minutes=299)


# -- the fast path: counts and shares judged on the counts behind them ------------------

SESSIONS = SeriesKey("sessions", (("country", "PT"),), "1m")
HISTORY = 3 * 1440  # three days: a seasonal expectation and a learnt noise


def rhythm(i: int, mean: float) -> float:
    """A daily rhythm around ``mean`` per minute (0.6x at night to 1.4x in the evening)."""
    return mean * (1.0 + 0.4 * math.sin(2 * math.pi * (i / 1440.0 - 0.25)))


def fast_only(values: list[float], key: SeriesKey, weights: list[float] | None = None
              ) -> list[AnomalyEvent]:  # fmt: skip
    """Run the engine with the detector silent (score 0): only the fast path can arm."""
    engine = DetectionEngine()
    events: list[AnomalyEvent] = []
    for i, v in enumerate(values):
        obs = Obs(v, weights[i] if weights else None)
        events += engine.step(T0 + timedelta(minutes=i), {key: obs}, {key: 0.0})
    return [e for e in events if e.kind == "opened" and e.at > T0 + timedelta(days=1)]


def poisson_series(mean: float, factor: Callable[[int], float], seed: int, n: int
                   ) -> list[float]:  # fmt: skip
    rng = np.random.default_rng(seed)
    return [float(rng.poisson(rhythm(i, mean) * factor(i))) for i in range(n)]


def test_fast_path_finds_a_40_percent_drop_on_100_sessions_a_minute_within_5_minutes() -> None:
    start = HISTORY + 600  # 10:00 on the fourth day: about 110 sessions a minute
    values = poisson_series(100, lambda i: 0.6 if start <= i < start + 30 else 1.0, 1,
                            start + 60)  # fmt: skip
    [first] = fast_only(values, SESSIONS)
    begin = T0 + timedelta(minutes=start)
    assert first.at - begin <= timedelta(minutes=5)
    assert abs((first.anomaly.onset - begin).total_seconds()) <= 120
    assert first.anomaly.direction == "down" and -0.55 < first.anomaly.change < -0.25


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_path_is_quiet_on_the_same_noise_without_a_drop(seed: int) -> None:
    values = poisson_series(100, lambda i: 1.0, seed, HISTORY + 1440)
    assert fast_only(values, SESSIONS) == []


@pytest.mark.parametrize(("sessions", "found"), [(2000.0, True), (100.0, False)])
def test_fast_path_reads_a_conversion_drop_from_the_sessions_behind_it(
    sessions: float, found: bool
) -> None:
    # 5% of the sessions buy; 40% of them stop buying for half an hour. On 2,000 sessions
    # a minute (100 buyers) that is clear in minutes; on 100 (5 buyers) it is noise
    rng = np.random.default_rng(7)
    start = HISTORY + 600
    n = start + 60
    weights = [float(rng.poisson(rhythm(i, sessions))) for i in range(n)]
    rate = [0.05 * (0.6 if start <= i < start + 30 else 1.0) for i in range(n)]
    buyers = [float(rng.binomial(int(w), p)) for w, p in zip(weights, rate, strict=True)]
    values = [b / w for b, w in zip(buyers, weights, strict=True)]
    opened_ = fast_only(values, CONV, weights)
    if found:
        [first] = opened_
        assert first.at - (T0 + timedelta(minutes=start)) <= timedelta(minutes=5)
        assert first.anomaly.change < -0.25
    else:
        assert opened_ == []


def test_signed_deviance_is_a_z_that_holds_for_a_handful_of_events() -> None:
    assert signed_deviance(50, 50) == 0.0
    assert signed_deviance(40, 50) < 0 < signed_deviance(60, 50)
    # 10 orders where 2.5 were expected: p ≈ 2e-4, z ≈ 3.5 (the Pearson 4.7 is too much)
    assert 3.3 < signed_deviance(10, 2.5) < 3.8 < (10 - 2.5) / math.sqrt(2.5)
    # nothing where 50 were expected: unmistakable
    assert signed_deviance(0, 50) < -9.9
    # a rare share out of many trials is Poisson; a common one is narrower
    assert abs(signed_deviance(30, 50, 100_000) - signed_deviance(30, 50)) < 0.01
    assert signed_deviance(400, 500, 1000) < signed_deviance(400, 500) < -4


def test_inflation_grows_for_minutes_that_move_together() -> None:
    rng = np.random.default_rng(2)
    independent = rng.normal(size=1440)
    together = np.empty(1440)
    together[0] = 0.0
    for i in range(1, 1440):  # AR(1), rho 0.6: a window of 10 varies ~1.8x more
        together[i] = 0.6 * together[i - 1] + rng.normal()
    assert _inflations(independent)[10] < 1.2
    assert 1.5 < _inflations(together)[10] < 2.3


def night_and_day(i: int) -> float:
    """50 a minute at 02:00, 5,000 at 14:00, smoothly (log-sinusoidal)."""
    return 500.0 * 10.0 ** -math.cos(2 * math.pi * (i - 120) / 1440.0)


def test_the_noise_grows_with_the_volume_behind_a_bucket() -> None:
    # an expectation ~5% off each minute: a fraction of a Poisson error at 50 events a
    # minute, ~3.5 errors at 5,000; the learnt noise follows the volume
    rng = np.random.default_rng(3)
    values = [float(rng.poisson(night_and_day(i) * (1 + 0.05 * rng.normal())))
              for i in range(HISTORY)]  # fmt: skip
    engine = DetectionEngine()
    for i, v in enumerate(values):
        engine.step(T0 + timedelta(minutes=i), {SESSIONS: Obs(v)}, {SESSIONS: 0.0})
    state = engine._series[SESSIONS]
    assert state.noise.at(50.0) < 1.3
    assert 2.5 < state.noise.at(5000.0) < 4.5  # sqrt(1 + 0.05² × 5000) ≈ 3.7
    assert state.noise.at(50.0) < state.noise.at() < state.noise.at(5000.0)


def test_fast_path_finds_a_night_time_drop_on_a_series_noisy_by_day() -> None:
    # one noise for the whole day would hide a 40% drop at night for many minutes (16
    # with this seed; 4 with the noise of the night's volume)
    rng = np.random.default_rng(6)
    start = HISTORY + 120  # 02:00 on the fourth day
    values = [
        float(rng.poisson(night_and_day(i) * (1 + 0.05 * rng.normal())
                          * (0.6 if start <= i < start + 30 else 1.0)))
        for i in range(start + 60)
    ]  # fmt: skip
    [first] = fast_only(values, SESSIONS)
    assert first.at - (T0 + timedelta(minutes=start)) <= timedelta(minutes=5)
