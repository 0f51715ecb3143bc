"""The backtest machinery on a small run: simulate, score, group, grade (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from insights.backtest import BacktestConfig, format_table, run_backtest


def test_a_small_backtest_finds_its_incident_and_grades_it() -> None:
    config = BacktestConfig(
        rate=40, days=1.1, seed=11, start=datetime(2025, 1, 6, 12, tzinfo=UTC),
        warmup=timedelta(days=1), intervals=("1m",), workers=1,
        incidents=("tracking_loss:at=+1d40m,for=30m,depth=1",),
    )  # fmt: skip
    phases: list[str] = []
    report = run_backtest(config, progress=phases.append)
    [result] = report.results
    assert result.detected and result.in_target
    assert result.time_to_detect is not None and result.time_to_detect <= timedelta(minutes=5)
    assert "stopped" in result.insight
    assert report.graded_days < 0.2 and len(phases) == 4
    table = format_table(report)
    assert "| tracking_loss | 1 | 1 | 1 |" in table
    assert "Target incidents detected within 5 minutes: 1 of 1" in table
