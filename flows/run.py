"""Running the flows: in this process with N worker threads, with Bytewax recovery."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig, init_db_dir

from flows.events import FlowConfig, build_flow

__all__ = ["recovery_config", "run_flow"]


def recovery_config(directory: Path, partitions: int = 1) -> RecoveryConfig:
    """Bytewax's recovery store under ``directory``, created on first use."""
    if not any(directory.glob("part-*.sqlite3")):
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, partitions)
    return RecoveryConfig(str(directory))


def run_flow(
    config: FlowConfig,
    *,
    workers: int = 1,
    recovery_dir: Path | None = None,
    epoch: timedelta = timedelta(seconds=1),
) -> None:
    """Run the event flow until it stops (idle stop) or is interrupted."""
    recovery = recovery_config(recovery_dir) if recovery_dir else None
    cli_main(
        build_flow(config),
        workers_per_process=workers,
        epoch_interval=epoch,
        recovery_config=recovery,
    )
