"""Entry point for running the flow with Bytewax's own runner, e.g. on several hosts::

    python -m bytewax.run "flows.app:get_flow()" -w 2                  # 2 worker threads
    python -m bytewax.run "flows.app:get_flow()" -i 0 -a "h1:2101;h2:2101" -w 2 \\
        -r /var/lib/pulse/recovery                                     # process 0 of 2

Settings come from the ``PULSE_*`` environment as for every other entry point.
``PULSE_FLOW_EXIT_WHEN_IDLE`` (seconds) makes every process stop once drained. The shards
save their users' states between snapshots under ``$PULSE_HOME/flow-state`` (or
``PULSE_FLOW_STATE_DIR``): with ``-r`` on several hosts, that directory must be shared like
the recovery directory. ``pulse flow --processes N`` runs N such processes on one host.
"""

from __future__ import annotations

import os
from pathlib import Path

from bytewax.dataflow import Dataflow

from flows.config import flow_config
from flows.dataflow import build_flow
from flows.run import tune_gc
from ingest.fx import load_fx_rates
from ingest.settings import load_settings

__all__ = ["get_flow"]


def get_flow() -> Dataflow:
    """The event flow configured from the environment."""
    settings = load_settings()
    idle = os.environ.get("PULSE_FLOW_EXIT_WHEN_IDLE")
    state_dir = os.environ.get("PULSE_FLOW_STATE_DIR")
    tune_gc()
    return build_flow(
        flow_config(
            settings,
            load_fx_rates(settings.fx_rates),
            idle_stop_s=float(idle) if idle else None,
            state_dir=Path(state_dir) if state_dir else settings.home / "flow-state",
        )
    )
