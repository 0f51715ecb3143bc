"""``pulse replay`` and ``pulse simulate``: events into Kafka through the collector."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from prometheus_client import REGISTRY
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from api.cli.common import app, err, parse_speed, runtime, say_notes
from api.cli.stackwait import flow_counters, running_stack_api, wait_written
from ingest.simulator import (
    SimConfig,
    estimate_events,
    ground_truth,
    parse_duration,
    parse_experiment,
    parse_incident,
    parse_time,
    simulate_cli_help,
    simulate_experiment_help,
    truth_path,
    write_jsonl,
)

# The pipeline's modules (runtime, serving, insights, queries: ~1.4 s of imports) are
# imported inside the commands that run them, so that `pulse --help`, `pulse keys` and a
# mistyped option answer at once; what is cheap to import is imported here.

if TYPE_CHECKING:
    from api.runtime import Runtime
    from ingest.collector import IngestResult

__all__ = ["TrafficFormat", "replay", "simulate"]


class TrafficFormat(StrEnum):
    """What ``pulse simulate`` emits."""

    pulse = "pulse"
    segment = "segment"


@app.command()
def replay(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="events, one JSON object per line"
        ),
    ],
    speed: Annotated[str, typer.Option(help="'max' or X times real (event) time")] = "max",
    wait: Annotated[
        bool, typer.Option(help="run the pipeline until every event is in the warehouse")
    ] = False,
) -> None:
    """Publish events from a JSONL file through the collector's validation and routing."""
    pace = parse_speed(speed)
    run = runtime()
    stack = running_stack_api(run.settings) if wait else None
    with contextlib.ExitStack() as running:
        if stack is not None:  # `pulse up` holds the warehouse: its flow writes, we watch
            run.require_broker()
            before = flow_counters(stack)
        elif wait:
            running.enter_context(_drain_after(run))
        else:
            run.require_broker()
        result = _publish(run, file, pace)
        if stack is not None:
            with err.status(f"waiting for the running stack ({stack}) to write the events"):
                duplicates = wait_written(stack, before, result.accepted)
        reasons = Counter(r.reason for r in result.rejected)
        for reason, count in reasons.most_common(5):
            err.print(f"rejected {count}×: {reason}")
        for kind, count in Counter(g.type for g in result.general).most_common(5):
            err.print(
                f"accepted {count}× type {kind[:64]!r} as a general event (counted in `events` "
                "only): it is none of the known types of docs/events.md",
                highlight=False,
            )
    line = f"accepted={result.accepted} rejected={len(result.rejected)}"
    if wait:
        if stack is None:
            duplicates = int(REGISTRY.get_sample_value("pulse_flow_duplicates_total") or 0)
        line += f" duplicates={duplicates}"
    print(line)


def _publish(run: Runtime, file: Path, pace: float | None) -> IngestResult:
    from ingest.replay import replay_file

    columns = (TextColumn("replay"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with (
        run.edge() as (collector, producer),
        Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar,
    ):
        task = bar.add_task("replay", total=file.stat().st_size)
        return replay_file(
            collector, producer.batch(), file, speed=pace, progress=lambda n: bar.advance(task, n)
        )


@contextlib.contextmanager
def _drain_after(run: Runtime) -> Iterator[None]:
    """Around publishing: the broker (started if embedded and not running), then the flow
    until every topic is drained into the warehouse."""
    broker = run.broker_unless_running()
    run.warehouse(for_flow=True).close()  # fails clearly if `pulse up` holds it
    say_notes(run.notes)
    yield
    with err.status("draining the topics into the warehouse"):
        run.drain()
    # stopped only once drained: on an error it keeps what was published (`pulse stop`)
    if broker is not None:
        broker.stop()


@app.command(
    epilog="\n\n".join(
        line.strip() for line in (simulate_cli_help + simulate_experiment_help).splitlines()
    )
)
def simulate(
    rate: Annotated[
        float, typer.Option(help="mean events per second (seasonality moves it)")
    ] = 100.0,
    duration: Annotated[str, typer.Option(help="simulated time span, e.g. 10m, 2h, 7d")] = "10m",
    seed: Annotated[int, typer.Option(help="same seed and arguments: byte-identical output")] = 0,
    start: Annotated[
        str | None,
        typer.Option(
            help="ISO start of simulated time (default: now when sent live at --speed 1; "
            "otherwise --duration before now, so that no event lies in the future)"
        ),
    ] = None,
    speed: Annotated[
        str | None,
        typer.Option(help="'max' or X times real time (default: 1 to Kafka, max to a file)"),
    ] = None,
    incident: Annotated[
        list[str] | None, typer.Option(help="incident SPEC, repeatable (see below)")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="write JSONL here instead of sending to Kafka; the ground truth goes beside "
            "it (traffic.jsonl: traffic.truth.json)"
        ),
    ] = None,
    experiment: Annotated[
        list[str] | None, typer.Option(help="A/B experiment SPEC, repeatable (see below)")
    ] = None,
    traffic_format: Annotated[
        TrafficFormat,
        typer.Option(
            "--format",
            help="pulse: Pulse events (docs/events.md); segment: Segment messages "
            "(docs/sending-events.md) with anonymous visits that log in and crawlers, sent "
            "through the /segment API's mapping, or written as one /segment/v1/batch body "
            "per line",
        ),
    ] = TrafficFormat.pulse,
) -> None:
    """Simulated marketplace traffic to Kafka or to a JSONL file, with ground truth."""
    pace = parse_speed(speed or ("max" if output else "1"))
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        span = parse_duration(duration)
        config = SimConfig(
            rate=rate,
            duration=span,
            seed=seed,
            start=parse_time(start) if start else now if pace == 1 else now - span,
            incidents=tuple(parse_incident(spec) for spec in incident or []),
            experiments=tuple(parse_experiment(spec) for spec in experiment or []),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    # Live traffic (speed 1) keeps step with the clock from its start; anything faster
    # reaches its end before the clock does.
    ahead = (config.start if pace == 1 else config.end) - now
    if ahead > timedelta(minutes=1):
        err.print(
            f"[yellow]warning:[/yellow] the traffic ends {ahead} after now: those events "
            "are in the future (freshness reads negative, buckets stay partial); pass an "
            "earlier --start",
            highlight=False,
        )
    columns = (TextColumn("simulate"), BarColumn(), TextColumn("{task.completed:,} events"),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("simulate", total=estimate_events(config), rate="")
        started = time.monotonic()

        def advance(n: int) -> None:
            bar.advance(task, n)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.monotonic() - started, 1e-6):,.0f} ev/s")

        segment = traffic_format is TrafficFormat.segment
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            if segment:
                from ingest.simulator.segment import write_segment

                written = write_segment(config, output, progress=advance)
                what = "Segment messages (in /segment/v1/batch bodies)"
            else:
                written, what = write_jsonl(config, output, progress=advance), "events"
            err.print(f"wrote {written:,} {what} to {output} (ground truth: {truth_path(output)})")
            return
        run = runtime()
        result = _simulate_to_kafka(run, config, pace, advance, segment=segment)
    truth_file = (
        run.settings.simulations_dir / f"{config.start:%Y%m%dT%H%M%SZ}-seed{seed}.truth.json"
    )
    truth_file.parent.mkdir(parents=True, exist_ok=True)
    truth_file.write_text(json.dumps(ground_truth(config), indent=2) + "\n")
    err.print(f"ground truth: {truth_file}")
    print(f"accepted={result.accepted} rejected={len(result.rejected)}")


def _simulate_to_kafka(
    run: Runtime,
    config: SimConfig,
    pace: float | None,
    advance: Callable[[int], None],
    *,
    segment: bool,
) -> IngestResult:
    from ingest.simulator.publish import publish

    run.require_broker()
    with run.edge() as (collector, producer):
        return publish(config, collector, producer, speed=pace, progress=advance, segment=segment)
