"""``pulse flow`` and ``pulse detect``: the stream processing and the detector, alone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from api.cli.common import app, detect_app, err, runtime, say_notes
from insights.score_csv import score_csv
from warehouse.dsn import redact_dsn

# The pipeline's modules (runtime, serving, insights, queries: ~1.4 s of imports) are
# imported inside the commands that run them, so that `pulse --help`, `pulse keys` and a
# mistyped option answer at once; what is cheap to import is imported here.

__all__ = ["detect", "detect_backtest", "detect_score", "flow"]


@app.command()
def flow(
    workers: Annotated[int, typer.Option(help="Bytewax worker threads")] = 1,
    exit_when_idle: Annotated[
        float | None, typer.Option(help="stop after this many idle seconds once drained")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Bytewax processes on this host (default: one per two cores, see "
            "docs/operations.md); each has its own interpreter lock, while worker threads "
            "share one",
        ),
    ] = None,
) -> None:
    """Run the Bytewax dataflows alone (Kafka topics -> ClickHouse)."""
    if processes is not None and processes > 1 and workers > 1:
        raise typer.BadParameter("use either --workers or --processes, not both")
    from flows.run import processes_for, usable_cores

    run = runtime()
    settings = run.settings
    run.require_broker()
    run.warehouse(for_flow=True).close()
    say_notes(run.notes)
    why = ""
    if processes is None:
        cores = usable_cores()
        processes = 1 if workers > 1 else processes_for(cores)
        if workers == 1:
            why = f" (one per two cores, {cores} here; --processes N to choose)"
    if processes > 1:
        shape = f"{processes} processes"
    else:
        shape = f"{workers} worker threads" if workers > 1 else "1 process"
    err.print(
        f"flow: {settings.bootstrap} -> {redact_dsn(settings.warehouse_dsn)} with "
        f"{shape}{why}; Ctrl-C stops it"
    )
    run.run_flow(workers=workers, processes=processes, idle_stop_s=exit_when_idle)
    err.print("flow: stopped (all topics drained)" if exit_when_idle else "flow: stopped")


@detect_app.callback(invoke_without_command=True)
def detect(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(help="run one detection pass and exit")] = False,
) -> None:
    """Run anomaly detection alone."""
    if ctx.invoked_subcommand is not None:
        return
    from insights.alerts import Notifier
    from insights.runner import run_once

    run = runtime()
    client = run.warehouse()  # run alone, the insights tables may not exist yet
    say_notes(run.notes)
    if once:
        config = run.detect_config()
        report, _ = run_once(client, config, notifier=Notifier(client, config.alerts))
        err.print(f"detect: {len(report.changed)} insight(s) changed, {len(report.active)} open")
        return
    loop = run.detector().start()
    try:
        while loop.alive:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        loop.stop()


@detect_app.command("backtest")
def detect_backtest(
    rate: Annotated[float, typer.Option(help="simulated mean events per second")] = 1000.0,
    days: Annotated[int, typer.Option(help="simulated days (7 of history first)")] = 12,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 7,
    workers: Annotated[int, typer.Option(help="processes")] = 2,
    output: Annotated[Path | None, typer.Option(help="also write the table here")] = None,
) -> None:
    """Replay simulated history with incidents; report detection per incident type."""
    from insights.backtest import BacktestConfig, format_table, run_backtest

    report = run_backtest(
        BacktestConfig(rate=rate, days=days, seed=seed, workers=workers), progress=err.print
    )
    table = format_table(report)
    print(table)
    if output is not None:
        output.write_text(table + "\n")


@detect_app.command("score")
def detect_score(
    input: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="timestamp,value CSV")],
    output: Annotated[Path, typer.Option(help="timestamp,value,anomaly_score CSV to write")],
) -> None:
    """Score a series with the production streaming detector (online, no look-ahead)."""
    rows = score_csv(input, output)
    err.print(f"scored {rows:,} rows -> {output}")
