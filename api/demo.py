"""A restarted ``pulse demo`` resumes where the last one stopped, or starts clean.

The demo back-fills a few hours of history so that the detector has something to learn
from. Run again on the same ``PULSE_HOME``, back-filling those hours once more would put a
second copy of the traffic on top of the first (every number doubled, and the detector
reports the jump). So the back-fill only covers what is missing: from the last event in
the warehouse (or the usual hours ago, whichever is later) to now. ``pulse demo --fresh``
(:func:`reset_demo`) deletes the demo's data first instead.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

from api.settings import Settings
from ingest.errors import PulseError
from warehouse.client import Client
from warehouse.dsn import embedded_path

__all__ = ["MIN_BACKFILL", "backfill_span", "last_event_time", "reset_demo"]

# Below this, a resumed demo back-fills nothing: the live traffic starts at once.
MIN_BACKFILL = timedelta(seconds=10)


def last_event_time(client: Client) -> datetime | None:
    """The time of the latest event in the warehouse, None when it has none."""
    rows = client.query("SELECT count(), max(ts) FROM events").result_rows
    if not rows or not rows[0][0]:
        return None
    last: datetime = rows[0][1]
    return last if last.tzinfo is not None else last.replace(tzinfo=UTC)


def backfill_span(now: datetime, last: datetime | None, history: timedelta) -> timedelta:
    """How much history to back-fill before ``now``: ``history``, less what the warehouse
    already has (events up to ``last``); zero when less than :data:`MIN_BACKFILL` is
    missing."""
    if last is None or last <= now - history:
        return history
    missing = now - last - timedelta(seconds=1)  # events at `last` are in
    return missing if missing >= MIN_BACKFILL else timedelta(0)


def reset_demo(settings: Settings) -> list[str]:
    """Delete what a demo left in ``PULSE_HOME`` (the embedded warehouse with its events and
    insights, the flow's state, the simulator's ground truth), keeping the API keys.
    Returns what was deleted. Refuses a warehouse that is not the embedded one: those data
    may not be the demo's."""
    path = embedded_path(settings.warehouse_dsn)
    if path is None:
        raise PulseError(
            "--fresh deletes the embedded warehouse only; PULSE_CLICKHOUSE_DSN points to a "
            "ClickHouse server, whose data Pulse does not delete"
        )
    deleted = []
    for part in (path, settings.recovery_dir, settings.runner_state_dir, settings.simulations_dir):
        if part.exists():
            shutil.rmtree(part)
            deleted.append(str(part))
    return deleted
