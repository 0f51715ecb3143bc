"""The streaming detector on synthetic series (fast, no I/O)."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from insights.detector import DEFAULT, Detector, DetectorConfig, score_series

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DAY = 288  # five-minute buckets per day
ALERT = 0.5  # score of a surprise of DetectorConfig.alert_surprise


def stamps(n: int, minutes: int = 5) -> list[datetime]:
    return [T0 + timedelta(minutes=minutes * i) for i in range(n)]


def noise(n: int, seed: int, level: float = 100.0, sd: float = 5.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(level, sd) for _ in range(n)]


def evening_peak(n: int, seed: int, missing_from: int | None = None) -> list[float]:
    """Daily series: 20 all day, 80 from 18:00 to 21:00 (peak missing from a bucket on)."""
    rng = random.Random(seed)
    out = []
    for i, ts in enumerate(stamps(n)):
        peak = 18 <= ts.hour < 21 and (missing_from is None or i < missing_from)
        out.append((80.0 if peak else 20.0) + rng.gauss(0.0, 2.0))
    return out


def evening(day: int) -> slice:
    return slice(day * DAY + 18 * 12, day * DAY + 21 * 12)


def test_scores_are_in_unit_interval() -> None:
    values = noise(1500, seed=1)
    values[700] = 1e9  # absurd spike
    values[900:950] = [0.0] * 50  # dead flat stretch
    values[1000] = math.nan
    scores = score_series(stamps(1500), values)
    assert len(scores) == 1500
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(scores) > ALERT


def test_constant_series_scores_zero() -> None:
    assert max(score_series(stamps(800), [45.0] * 800)) == 0.0


def test_spike_scores_high() -> None:
    values = noise(1500, seed=2)
    values[1200] += 60.0  # twelve standard deviations
    scores = score_series(stamps(1500), values)
    assert scores[1200] >= 0.7
    assert scores[1200] == max(scores)


def test_stable_noisy_series_scores_low() -> None:
    scores = score_series(stamps(3000), noise(3000, seed=3))[DEFAULT.warmup :]
    alerts = sum(s >= ALERT for s in scores)
    assert alerts <= 0.005 * len(scores)
    assert sorted(scores)[len(scores) // 2] < 0.05  # the typical bucket is unremarkable
    assert max(scores) < 0.7


def test_scores_are_online() -> None:
    values = noise(1200, seed=4)
    changed = values[:800] + [v + 40.0 for v in values[800:]]
    before = score_series(stamps(1200), values)
    after = score_series(stamps(1200), changed)
    assert before[:800] == after[:800]
    assert before[800:] != after[800:]


def test_detector_update_matches_score_series() -> None:
    ts, values = stamps(600), noise(600, seed=5)
    detector = Detector()
    assert [detector.update(t, v) for t, v in zip(ts, values, strict=True)] == score_series(
        ts, values
    )


def test_low_volume_damps_a_rate_dip() -> None:
    rng = random.Random(6)
    rates = [0.03 + rng.gauss(0.0, 0.001) for _ in range(1500)]
    rates[1200:1210] = [0.015] * 10  # conversion halves for ten buckets
    ts = stamps(1500)
    few = score_series(ts, rates, weights=[20.0] * 1500)[1200:1210]
    many = score_series(ts, rates, weights=[5000.0] * 1500)[1200:1210]
    assert max(many) >= 0.7
    assert max(few) < 0.1
    assert max(few) < max(many) / 5


def test_volume_damps_rates_that_are_not_proportions() -> None:
    values = noise(1500, seed=7)
    values[1200] += 60.0
    ts = stamps(1500)
    low = score_series(ts, values, weights=[5.0] * 1500)[1200]
    high = score_series(ts, values, weights=[1e6] * 1500)[1200]
    assert high >= 0.7
    assert low < ALERT


def test_normal_evening_peak_is_expected_after_a_few_days() -> None:
    scores = score_series(stamps(8 * DAY), evening_peak(8 * DAY, seed=8))
    for day in range(4, 8):
        assert max(scores[evening(day)]) < ALERT


def test_missing_evening_peak_is_flagged() -> None:
    n = 9 * DAY
    values = evening_peak(n, seed=8, missing_from=8 * DAY)
    seasonal = score_series(stamps(n), values)
    assert max(seasonal[evening(8)]) >= 0.6
    # without the profile every value is an ordinary one: the break goes unseen
    plain = score_series(stamps(n), values, DetectorConfig(seasonal=False))
    assert max(plain[evening(8)]) < ALERT


def test_level_shift_alerts_then_goes_quiet() -> None:
    values = noise(3000, seed=9)
    values[1500:] = [v + 50.0 for v in values[1500:]]  # ten standard deviations up, for good
    scores = score_series(stamps(3000), values)
    assert max(scores[1500:1505]) >= 0.7
    assert max(scores[1700:]) < 0.6
    assert sum(s >= ALERT for s in scores[1700:]) <= 3


def test_one_incident_raises_one_alert() -> None:
    values = noise(2000, seed=10)
    values[1500:1530] = [v + 80.0 for v in values[1500:1530]]  # a 30-bucket burst
    scores = score_series(stamps(2000), values)
    assert scores[1500] >= 0.7
    assert sum(s >= ALERT for s in scores[1501:1640]) <= 1


def test_hourly_series_with_weekly_rhythm() -> None:
    n = 24 * 7 * 6
    rng = random.Random(11)
    ts = stamps(n, minutes=60)
    values = [
        (50.0 if t.weekday() >= 5 else 100.0) + 20.0 * (9 <= t.hour < 18) + rng.gauss(0, 2)
        for t in ts
    ]
    scores = score_series(ts, values)
    assert sum(s >= ALERT for s in scores[24 * 7 * 3 :]) <= 1  # weekends are expected
    # the last day is a Sunday running at weekday level: only the weekly profile knows
    broken = values[: n - 24] + [v + 40.0 for v in values[n - 24 :]]
    assert max(score_series(ts, broken)[n - 24 :]) >= 0.6


def test_config_is_frozen_and_series_lengths_must_match() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.warmup = 5  # type: ignore[misc]
    with pytest.raises(ValueError):
        score_series(stamps(10), [1.0] * 9)


def noisy_daily(n: int, seed: int, sd: float, minutes: int = 5) -> list[float]:
    """A daytime hump of 30 over a floor of 50 (06:00-20:00), Gaussian noise ``sd``."""
    rng = random.Random(seed)
    out = []
    for ts in stamps(n, minutes):
        hour = ts.hour + ts.minute / 60
        hump = 30.0 * math.sin(math.pi * (hour - 6) / 14) if 6 <= hour <= 20 else 0.0
        out.append(50.0 + hump + rng.gauss(0.0, sd))
    return out


def test_missing_daytime_hump_is_flagged_on_a_noisy_series() -> None:
    # noise 8 against a hump of 30: single values hide the shape, trailing means do not
    n = 20 * DAY
    values = noisy_daily(n, seed=12, sd=8.0)
    start = 18 * DAY + 10 * 12  # day 18, 10:00 to 16:00 at the floor
    values[start : start + 72] = [v - 25.0 for v in values[start : start + 72]]
    scores = score_series(stamps(n), values)
    assert max(scores[start : start + 72]) >= 0.55
    assert max(scores[start : start + 72]) > max(scores[3 * DAY : start])
    assert sum(s >= ALERT for s in scores[3 * DAY : start]) <= 3  # 15 days


def test_a_second_incident_after_the_event_gap_raises_its_own_alert() -> None:
    values = noise(2000, seed=13)
    values[1500] += 60.0
    values[1650] -= 60.0  # 150 buckets later: a new event
    scores = score_series(stamps(2000), values)
    assert scores[1500] >= 0.7
    assert scores[1650] >= 0.7


def test_short_hourly_series_flags_a_spike_and_stays_quiet_otherwise() -> None:
    # three weeks of hourly values: 504 rows, seven daily cycles before the spike
    n = 21 * 24
    values = noisy_daily(n, seed=14, sd=3.0, minutes=60)
    spike, drop = 10 * 24 + 12, 15 * 24 + 12  # five days (120 hours) apart
    values[spike] += 40.0
    values[drop] -= 60.0  # far below anything seen
    scores = score_series(stamps(n, minutes=60), values)
    assert scores[spike] >= 0.6
    assert scores[drop] >= ALERT  # a new event, not damped as part of the first
    quiet = [s for i, s in enumerate(scores[5 * 24 :], start=5 * 24) if i not in (spike, drop)]
    assert sum(s >= ALERT for s in quiet) <= 2


def test_level_shift_on_a_daily_series_alerts_then_goes_quiet() -> None:
    n = 16 * DAY
    values = noisy_daily(n, seed=15, sd=3.0)
    shift = 10 * DAY + 12 * 12
    values[shift:] = [v + 20.0 for v in values[shift:]]
    scores = score_series(stamps(n), values)
    assert max(scores[shift : shift + 12]) >= 0.6
    # one incident, one alert: no alert once the shift is a day old
    assert sum(s >= ALERT for s in scores[shift + DAY :]) <= 2
