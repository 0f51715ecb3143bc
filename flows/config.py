"""The flow's configuration: a frozen value the composition root builds from the settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from flows.logic import FlowRules
from ingest.fx import FxRates
from ingest.topics import Topics
from warehouse.dsn import is_embedded
from warehouse.rollups import MINUTE_ROLLUPS
from warehouse.writer import WriteStatus

__all__ = ["FlowConfig"]


@dataclass(frozen=True)
class FlowConfig:
    """Everything the flow needs."""

    bootstrap: str
    topics: Topics
    warehouse_dsn: str
    database: str | None
    fx: FxRates
    rules: FlowRules = field(default_factory=FlowRules)
    idle_stop_s: float | None = None
    stop: threading.Event | None = None  # set it to end the flow cleanly
    drain: threading.Event | None = None  # set it to end once every topic is read to its end
    # how the warehouse writes are going (a write being retried makes the flow not ready)
    write_status: WriteStatus | None = None
    batch_size: int = 5000
    allowed_lateness: timedelta = timedelta(minutes=10)  # rollups wait this long for a minute
    rollup_every_s: float = 5.0
    # Minutes older than this (by `clock`) in quiet hours are left to their hours: such an
    # hour is rolled up from the raw rows, its minutes are read from them
    # (warehouse.rollups.refresh); None rolls up every minute.
    minute_rollups: timedelta | None = MINUTE_ROLLUPS
    # Where the shards save their users' states between snapshots (beside Bytewax's
    # recovery store); None keeps them in memory only, for a flow run without recovery.
    state_dir: Path | None = None
    # PULSE_RETENTION: raw rows older than this are dropped by a pass of the sink every
    # `retention_every_s` (warehouse.retention); None keeps them. `clock`: seconds (tests).
    retention: timedelta | None = None
    retention_every_s: float = 3600.0
    clock: Callable[[], float] = time.time
    idle_tick_s: float = 30.0  # an idle sink still refreshes the rollups and purges this often

    @property
    def sink_partitions(self) -> int:
        """Warehouse writers: one for chDB (one process may open it), several for a server."""
        return 1 if is_embedded(self.warehouse_dsn) else 4
