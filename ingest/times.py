"""Time zones: every datetime Pulse handles is aware; this is where naive ones become so.

ClickHouse and chDB hand back ``DateTime`` values without a zone (they are UTC), and
people type times without an offset (read in the timezone they asked for).
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

__all__ = ["as_utc", "aware"]


def aware(ts: datetime, zone: tzinfo = UTC) -> datetime:
    """``ts`` itself when it has a timezone; a naive ``ts`` read in ``zone`` (UTC)."""
    return ts if ts.tzinfo else ts.replace(tzinfo=zone)


def as_utc(ts: datetime) -> datetime:
    """``ts`` in UTC: a naive time is taken to be UTC, an aware one converted."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
