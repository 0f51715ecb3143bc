"""The flow's configuration, built from the settings at each entry point."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from flows.logic import FlowRules
from ingest.fx import FxRates
from ingest.settings import Settings
from ingest.topics import Topics
from warehouse.writer import WriteStatus

__all__ = ["FlowConfig", "flow_config"]


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
    # Where the shards save their users' states between snapshots (beside Bytewax's
    # recovery store); None keeps them in memory only, for a flow run without recovery.
    state_dir: Path | None = None

    @property
    def sink_partitions(self) -> int:
        """Warehouse writers: one for chDB (one process may open it), several for a server."""
        return 1 if self.warehouse_dsn.startswith("chdb://") else 4


def flow_config(settings: Settings, fx: FxRates, **overrides: Any) -> FlowConfig:
    """The event flow's configuration from the settings."""
    rules = FlowRules(
        session_timeout_ms=int(settings.session_timeout.total_seconds() * 1000),
        retention_ms=int(settings.flow_retention.total_seconds() * 1000),
    )
    base = FlowConfig(
        bootstrap=settings.bootstrap,
        topics=Topics(settings.topic_prefix),
        warehouse_dsn=settings.warehouse_dsn,
        database=None,
        fx=fx,
        rules=rules,
        allowed_lateness=settings.allowed_lateness,
    )
    return replace(base, **overrides)
