"""Which rollup rows answer a series (warehouse.queries._grain): hour rows only where the
requested zone's hours and days start on UTC hours all through the range."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from warehouse.buckets import make_grid
from warehouse.queries import MetricQuery, _grain


def _grain_of(tz: str, interval: str, year: int) -> str:
    zone = ZoneInfo(tz)
    start, end = datetime(year, 3, 1, tzinfo=zone), datetime(year, 11, 1, tzinfo=zone)
    grid = make_grid(start, end, interval, tz)
    return _grain(MetricQuery("events", start, end, interval, tz=tz), grid.starts[0], grid.end)


@pytest.mark.parametrize(
    ("tz", "interval", "year", "grain"),
    [
        ("UTC", "1d", 2026, "1d"),
        ("UTC", "1h", 2026, "1h"),
        ("Europe/Berlin", "1d", 2026, "1h"),  # 23 and 25 h days: still whole UTC hours
        ("Asia/Kolkata", "1h", 2026, "1m"),  # always half an hour off
        ("Australia/Lord_Howe", "1d", 2026, "1m"),  # half an hour off in its winter
        ("America/Caracas", "1d", 2015, "1m"),  # 4:30 h behind UTC until 2016
        ("America/Caracas", "1d", 2026, "1h"),  # 4 h since
    ],
)
def test_hour_rows_where_the_zone_keeps_to_whole_hours(
    tz: str, interval: str, year: int, grain: str
) -> None:
    assert _grain_of(tz, interval, year) == grain
