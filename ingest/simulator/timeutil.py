"""Durations and instants as the simulator's users write them, and the EU summer-time rule."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from ingest.times import as_utc

__all__ = ["eu_summer_time", "format_ms", "parse_duration", "parse_time", "to_ms"]

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_duration(text: str) -> timedelta:
    """``90s``, ``10m``, ``1h30m``, ``2d``, ``1w``, ``250ms``; a bare number is seconds."""
    value = text.strip().lower()
    try:
        return timedelta(seconds=float(value))
    except ValueError:
        pass
    parts = _PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"expected a duration like 90s, 10m, 1h30m or 2d, got {text!r}")
    return timedelta(seconds=sum(float(n) * _UNIT_S[u] for n, u in parts))


def parse_time(text: str) -> datetime:
    """An ISO 8601 instant (``2025-01-06T18:00:00Z``, ``...+01:00``); naive means UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError(f"expected an ISO time like 2025-01-06T18:00:00Z, got {text!r}") from None
    return as_utc(moment)


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def format_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2025-01-06T18:00:00.000Z``."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@lru_cache(maxsize=64)
def _summer_bounds_ms(year: int) -> tuple[int, int]:
    def last_sunday(month: int) -> date:
        last = date(year, month, 31)
        return last - timedelta(days=(last.weekday() + 1) % 7)

    def at_one_utc(day: date) -> int:
        return to_ms(datetime(day.year, day.month, day.day, 1, tzinfo=UTC))

    return at_one_utc(last_sunday(3)), at_one_utc(last_sunday(10))


def eu_summer_time(ms: int) -> bool:
    """Whether EU summer time is in force at ``ms`` (all EU zones switch at 01:00 UTC)."""
    year = (_EPOCH + timedelta(milliseconds=ms)).year
    begin, end = _summer_bounds_ms(year)
    return begin <= ms < end
