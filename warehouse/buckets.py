"""Bucket grids: a range ``[from, to)`` split into intervals aligned in a timezone.

Sub-day intervals are fixed lengths aligned to local clock time (an hour in Asia/Kolkata
starts at :30 UTC; the repeated autumn hour is two buckets). A day runs from local midnight
to local midnight, so it is 23 or 25 hours long across a DST change. Every bucket touched
by the range is whole: the first may start before ``from``, the last may end after ``to``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = ["INTERVALS", "Grid", "bucket_sql", "make_grid"]

INTERVALS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
_SQL_UNIT = {"1m": "1 MINUTE", "5m": "5 MINUTE", "1h": "1 HOUR", "1d": "1 DAY"}


@dataclass(frozen=True)
class Grid:
    """Bucket starts (UTC epoch seconds) and the end of the last bucket."""

    interval: str
    tz: str
    starts: tuple[int, ...]
    end: int

    def label(self, start: int) -> str:
        """RFC 3339 label of a bucket start in the grid's timezone."""
        return _label(start, self.tz)


@lru_cache(maxsize=65536)
def _label(start: int, tz: str) -> str:
    return datetime.fromtimestamp(start, ZoneInfo(tz)).isoformat(timespec="seconds")


def _floor_local(ts: datetime, interval: str, zone: ZoneInfo) -> datetime:
    local = ts.astimezone(zone)
    if interval == "1d":
        midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
        return midnight.astimezone(UTC)
    step = INTERVALS[interval]
    wall = local.replace(tzinfo=None)
    seconds = wall.hour * 3600 + wall.minute * 60 + wall.second
    floored = wall - timedelta(seconds=seconds % step, microseconds=wall.microsecond)
    offset = local.utcoffset() or timedelta(0)
    return (floored - offset).replace(tzinfo=UTC)


def _next_local(start: datetime, interval: str, zone: ZoneInfo) -> datetime:
    if interval == "1d":
        local = start.astimezone(zone)
        day = (local + timedelta(hours=26)).date()
        return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    return start + timedelta(seconds=INTERVALS[interval])


def make_grid(start: datetime, end: datetime, interval: str, tz: str) -> Grid:
    """Every bucket of ``[start, end)`` for ``interval`` in ``tz``."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("from and to need a timezone offset")
    if end <= start:
        raise ValueError("'to' must be after 'from'")
    zone = ZoneInfo(tz)
    cursor = _floor_local(start, interval, zone)
    starts = []
    while cursor < end:
        starts.append(int(cursor.timestamp()))
        cursor = _next_local(cursor, interval, zone)
    return Grid(interval, tz, tuple(starts), int(cursor.timestamp()))


def bucket_sql(column: str, interval: str) -> str:
    """SQL for the bucket start (epoch seconds) of ``column``; binds ``{tz:String}``."""
    if interval == "1d":
        return f"toUnixTimestamp(toStartOfDay({column}, {{tz:String}}))"
    unit = _SQL_UNIT[interval]
    return f"toUnixTimestamp(toStartOfInterval({column}, INTERVAL {unit}, {{tz:String}}))"
