"""The seasonal-naive expectation of `insights.baseline` on synthetic minutes (no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from insights.baseline import Baseline

MONDAY = datetime(2025, 1, 6, tzinfo=UTC)


def feed(days: float, value: Callable[[datetime], float]) -> tuple[Baseline, dict[datetime, float]]:
    """A 1-minute baseline fed ``days`` from Monday; returns it and what it expected."""
    baseline = Baseline(60)
    expected = {}
    for i in range(int(days * 1440)):
        ts = MONDAY + timedelta(minutes=i)
        e = baseline.expected(ts)
        if e is not None:
            expected[ts] = e
        baseline.push(ts, value(ts))
    return baseline, expected


def shop(ts: datetime) -> float:
    """Weekdays 100 a minute, weekends 200, Friday evenings 150."""
    if ts.weekday() >= 5:
        return 200.0
    return 150.0 if ts.weekday() == 4 and ts.hour >= 20 else 100.0


def test_a_friday_evening_is_expected_like_the_last_one() -> None:
    # one week known: the weekdays are pooled, shaped like last Friday where it differs;
    # from the first minutes of the evening, before today's level could follow
    _, expected = feed(12, shop)
    friday_evening = MONDAY + timedelta(days=11, hours=20, minutes=5)
    assert 140 < expected[friday_evening] < 160
    thursday_evening = MONDAY + timedelta(days=10, hours=20, minutes=5)
    assert 95 < expected[thursday_evening] < 105


def test_todays_level_starts_afresh_each_day() -> None:
    # the second Sunday runs at 80% of the weekend's usual; Monday is a normal weekday,
    # and its first minutes must not inherit Sunday's level
    def value(ts: datetime) -> float:
        return 160.0 if ts.date() == datetime(2025, 1, 12).date() else shop(ts)

    _, expected = feed(7 + 1 / 24, value)
    sunday_evening = datetime(2025, 1, 12, 23, 0, tzinfo=UTC)
    assert 150 < expected[sunday_evening] < 170
    monday = datetime(2025, 1, 13, 0, 5, tzinfo=UTC)
    assert 95 < expected[monday] < 105


def test_an_incident_does_not_pull_its_own_expectation_along() -> None:
    # the newest quarter of an hour is not learnt yet, and a confirmed incident's
    # buckets are forgotten: the expectation stays where it was
    baseline, _ = feed(3, shop)
    start = MONDAY + timedelta(days=3, hours=10)
    before = baseline.expected(start)
    assert before is not None
    for i in range(40):
        ts = start + timedelta(minutes=i)
        baseline.expected(ts)
        baseline.push(ts, 50.0)
        if i == 10:
            assert abs(baseline.level(ts) - 1.0) < 1e-9  # not learnt while confirming
    baseline.forget(start)  # the engine opened an anomaly with this onset
    after = baseline.expected(start + timedelta(minutes=40))
    assert after is not None and abs(after / before - 1.0) < 0.01
