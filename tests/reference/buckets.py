"""Time buckets of a range, aligned to the interval in an IANA timezone.

- Buckets cover ``[start, end)``: the first starts at ``start`` rounded down to the
  interval in ``tz``; then consecutive buckets while a bucket's start is ``< end``. Each
  bucket is counted in full ("in R" = the bucket), also the first and last when ``start``
  / ``end`` are not aligned.
- ``1d`` buckets run from local midnight to the next local midnight (23 or 25 h on a DST
  change; where midnight does not exist, the day starts at the first instant after it).
- ``1m``/``5m``/``1h`` buckets have that fixed length; the first is aligned to the local
  wall clock (e.g. whole local hours, so ``:30`` UTC in Asia/Kolkata). With whole-hour DST
  shifts (every European and US zone) all later buckets stay aligned; during a fall-back
  the repeated local hour gives two distinct buckets with different offsets.
- A bucket's label is its start as RFC 3339 in ``tz`` with a numeric offset, to the
  second: ``2026-03-29T00:00:00+01:00`` (UTC: ``...+00:00``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

__all__ = ["INTERVALS", "Bucket", "assign_bucket", "bucket_frame", "make_buckets", "to_ms"]

INTERVALS = ("1m", "5m", "1h", "1d")
_FIXED = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "1h": timedelta(hours=1)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Bucket:
    """One bucket ``[start_ms, end_ms)`` in epoch ms, with its label."""

    start_ms: int
    end_ms: int
    label: str


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of a timezone-aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return (moment - _EPOCH) // _MS


def make_buckets(start: datetime, end: datetime, interval: str, tz: str = "UTC") -> list[Bucket]:
    """Every bucket of ``[start, end)``, in order, empty ones included."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, not {interval!r}")
    to_ms(start), to_ms(end)
    if not start < end:
        raise ValueError("start must be before end")
    zone = ZoneInfo(tz)
    bounds: list[datetime] = []
    if interval == "1d":
        day = start.astimezone(zone).date()
        while True:
            # fold=0: a midnight inside a DST gap maps to the transition instant.
            bound = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
            bounds.append(bound)
            if bound >= end:
                break
            day += timedelta(days=1)
    else:
        step = _FIXED[interval]
        offset = start.astimezone(zone).utcoffset() or timedelta(0)
        bound = start - (start + offset - _EPOCH) % step  # floor on the local wall clock
        bounds.append(bound)
        while bound < end:
            bound += step
            bounds.append(bound)
    return [
        Bucket(to_ms(lo), to_ms(hi), lo.astimezone(zone).isoformat(timespec="seconds"))
        for lo, hi in itertools.pairwise(bounds)
    ]


def bucket_frame(buckets: list[Bucket]) -> pl.DataFrame:
    """``bucket`` (index), ``bucket_start_ms``, ``bucket_end_ms``, ``label``."""
    return pl.DataFrame(
        {
            "bucket": list(range(len(buckets))),
            "bucket_start_ms": [b.start_ms for b in buckets],
            "bucket_end_ms": [b.end_ms for b in buckets],
            "label": [b.label for b in buckets],
        },
        schema={
            "bucket": pl.Int64,
            "bucket_start_ms": pl.Int64,
            "bucket_end_ms": pl.Int64,
            "label": pl.String,
        },
    )


def assign_bucket(frame: pl.DataFrame, ts_col: str, buckets: list[Bucket]) -> pl.DataFrame:
    """Rows of ``frame`` whose ``ts_col`` (epoch ms) falls in a bucket, with ``bucket``.

    Buckets are contiguous, so a ts in ``[first start, last end)`` belongs to the last
    bucket whose start is <= ts.
    """
    inside = frame.filter(
        (pl.col(ts_col) >= buckets[0].start_ms) & (pl.col(ts_col) < buckets[-1].end_ms)
    )
    starts = pl.Series([b.start_ms for b in buckets], dtype=pl.Int64)
    index = starts.search_sorted(inside[ts_col], side="right").cast(pl.Int64) - 1
    return inside.with_columns(bucket=index)
