"""The ``pulse`` command line (CONTRACT §4). Each command reads the settings once."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ingest.errors import NotBuiltYet, PulseError
from ingest.settings import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from api.keys import KeyStore
    from ingest.collector import IngestResult
    from ingest.simulator import SimConfig

__all__ = ["app", "main"]

app = typer.Typer(
    help="Pulse: real-time e-commerce analytics. Settings come from PULSE_* variables.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
dashboards_app = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)
detect_app = typer.Typer(help="Run anomaly detection alone, or score a CSV series.")
app.add_typer(keys_app, name="keys")
app.add_typer(dashboards_app, name="dashboards")
app.add_typer(detect_app, name="detect")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _settings() -> Settings:
    return load_settings()


# -- the whole stack ---------------------------------------------------------------------


@app.command()
def up() -> None:
    """Run the whole stack: broker (if embedded), migrations, flows, detector, API."""
    from api.server import run_stack

    run_stack(_settings())


@app.command()
def demo(
    open_page: Annotated[
        bool,
        typer.Option(
            "--open/--no-open",
            help="open the Business overview in your web browser once the API is up "
            "(when this machine has one; the URL and key are printed either way)",
        ),
    ] = True,
) -> None:
    """[bold]up[/bold] plus the simulator with an injected conversion_drop incident."""
    from api.server import run_demo

    run_demo(_settings(), open_page=open_page)


@app.command()
def stop(
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="stop an embedded broker left by a crash even when what it holds cannot be "
            "written to the warehouse first (those events are then lost)",
        ),
    ] = False,
) -> None:
    """Stop whatever of Pulse runs on this PULSE_HOME (a stack, or an embedded broker left
    by a crash), after draining what it can into the warehouse."""
    from api.stack import broker_pid_file, pulse_pid_file
    from ingest import pidfile
    from ingest.broker import leftover_broker

    settings = _settings()
    stopped = False
    running = pidfile.read_live(pulse_pid_file(settings))
    if running is not None:
        bound = settings.stop_timeout.total_seconds() + 15
        err.print(f"stopping `pulse {running.marker}` (pid {running.pid}): it writes what it "
                  "holds to the warehouse, then stops", highlight=False)  # fmt: skip
        with err.status(f"waiting for pid {running.pid} to stop"):
            if not pidfile.terminate(running, bound, kill_after=False):
                raise PulseError(
                    f"`pulse {running.marker}` (pid {running.pid}) did not stop within "
                    f"{bound:.0f} s"
                )
        err.print(f"stopped `pulse {running.marker}` (pid {running.pid})", highlight=False)
        stopped = True
    broker = leftover_broker(broker_pid_file(settings))
    if broker is not None:
        address = str(broker.extra.get("address", settings.bootstrap))
        if not force:
            err.print(
                f"an embedded broker runs at {address} (pid {broker.pid}), left by a crash: "
                "writing what it holds to the warehouse first",
                highlight=False,
            )
            try:
                _drain_broker(settings, address)
            except PulseError as exc:
                raise PulseError(
                    f"{exc} — the broker (pid {broker.pid}) is left running with what it "
                    "holds; `pulse stop --force` stops it anyway"
                ) from exc
        pidfile.terminate(broker, 10.0)
        pidfile.remove_if_mine(broker_pid_file(settings), broker.pid)
        err.print(f"stopped the embedded broker (pid {broker.pid})", highlight=False)
        stopped = True
    if not stopped:
        err.print(f"nothing of Pulse runs on PULSE_HOME={settings.home}", highlight=False)


def _drain_broker(settings: Settings, address: str) -> None:
    """Run the flow until every topic of the broker at ``address`` is in the warehouse."""
    from api.stack import flow_config, open_warehouse, recovery_dir
    from flows.run import run_flow
    from ingest.fx import load_fx_rates

    settings = settings.model_copy(update={"broker_listen": address, "kafka_bootstrap": None})
    client, notes = open_warehouse(settings)  # fails clearly if another process holds it
    client.close()
    for note in notes:
        err.print(note, highlight=False)
    config = flow_config(settings, load_fx_rates(settings.fx_rates), idle_stop_s=2.0)
    with err.status("draining the broker's topics into the warehouse"):
        try:
            run_flow(config, recovery_dir=recovery_dir(settings))
        except Exception as exc:
            raise PulseError(f"draining the broker failed: {exc}") from exc


@app.command()
def serve() -> None:
    """Run the API alone (needs a running broker; see PULSE_KAFKA_BOOTSTRAP)."""
    from api.server import run_api_only

    run_api_only(_settings())


@app.command()
def broker(
    listen: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT to listen on", envvar="PULSE_KAFKA_BOOTSTRAP", show_envvar=True
        ),
    ] = None,
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu) in the foreground."""
    from ingest.broker import EmbeddedBroker
    from ingest.topics import Topics, ensure_topics

    settings = _settings()
    with EmbeddedBroker(listen or settings.broker_listen) as running:
        created = ensure_topics(
            running.bootstrap, Topics(settings.topic_prefix), settings.topic_partitions
        )
        out.print(
            f"Kafka-compatible broker listening on [bold]{running.bootstrap}[/bold] "
            f"(memory storage; {len(created)} topics created). Ctrl-C stops it."
        )
        signal.signal(signal.SIGTERM, lambda *_: running.stop())
        try:
            running.wait()
        except KeyboardInterrupt:
            out.print("stopping broker")


@app.command()
def migrate() -> None:
    """Apply the warehouse schema (idempotent) and load the FX rates."""
    from ingest.fx import load_fx_rates
    from warehouse.client import connect, redact_dsn
    from warehouse.migrate import migrate as apply
    from warehouse.reference_data import sync_fx_rates

    settings = _settings()
    client = connect(settings.warehouse_dsn)
    applied = apply(client)
    rows = sync_fx_rates(client, load_fx_rates(settings.fx_rates))
    for m in applied:
        out.print(f"applied {m.version:03d}_{m.name}")
    out.print(
        f"warehouse {redact_dsn(settings.warehouse_dsn)} is up to date "
        f"({len(applied)} applied now, {rows} FX rates loaded)"
    )


# -- ingest --------------------------------------------------------------------------------


def _parse_speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise typer.BadParameter("expected 'max' or a positive number like 10") from None
    if speed <= 0:
        raise typer.BadParameter("expected 'max' or a positive number like 10")
    return speed


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
    pace = _parse_speed(speed)
    settings = _settings()
    from api.stack import require_broker

    with contextlib.ExitStack() as running:
        if wait:
            running.enter_context(_drain_after(settings))
        else:
            require_broker(settings.bootstrap, settings.embedded_broker)
        result = _publish(settings, file, pace)
        reasons = Counter(r.reason for r in result.rejected)
        for reason, count in reasons.most_common(5):
            err.print(f"rejected {count}×: {reason}")
    line = f"accepted={result.accepted} rejected={len(result.rejected)}"
    if wait:
        from prometheus_client import REGISTRY

        duplicates = REGISTRY.get_sample_value("pulse_flow_duplicates_total") or 0
        line += f" duplicates={int(duplicates)}"
    print(line)


def _publish(settings: Settings, file: Path, pace: float | None) -> IngestResult:
    from ingest.collector import Collector
    from ingest.fx import load_fx_rates
    from ingest.producer import ConfluentProducer
    from ingest.replay import replay_file
    from ingest.topics import Topics, ensure_topics

    topics = Topics(settings.topic_prefix)
    ensure_topics(settings.bootstrap, topics, settings.topic_partitions)
    producer = ConfluentProducer(settings.bootstrap)
    collector = Collector(producer, topics, load_fx_rates(settings.fx_rates).currencies)
    columns = (TextColumn("replay"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("replay", total=file.stat().st_size)
        result = replay_file(
            collector, producer.batch(), file, speed=pace, progress=lambda n: bar.advance(task, n)
        )
    producer.close()
    return result


@contextlib.contextmanager
def _drain_after(settings: Settings) -> Iterator[None]:
    """Around publishing: the broker (started if embedded and not running), then the flow
    until every topic is drained into the warehouse."""
    from api.stack import embedded_broker, flow_config, open_warehouse, recovery_dir, require_broker
    from flows.run import run_flow
    from ingest.errors import BrokerError
    from ingest.fx import load_fx_rates

    broker = None
    try:
        require_broker(settings.bootstrap, settings.embedded_broker, timeout=0.5)
    except BrokerError:
        if not settings.embedded_broker:
            raise
        broker = embedded_broker(settings).start()
    client, notes = open_warehouse(settings)  # fails clearly if `pulse up` holds it
    client.close()
    for note in notes:
        err.print(note, highlight=False)
    yield
    config = flow_config(settings, load_fx_rates(settings.fx_rates), idle_stop_s=2.0)
    with err.status("draining the topics into the warehouse"):
        run_flow(config, recovery_dir=recovery_dir(settings))
    # stopped only once drained: on an error it keeps what was published (`pulse stop`)
    if broker is not None:
        broker.stop()


def _sim_help() -> str:
    from ingest.simulator import simulate_cli_help

    return simulate_cli_help


@app.command(epilog="\n\n".join(line.strip() for line in _sim_help().splitlines()))
def simulate(
    rate: Annotated[
        float, typer.Option(help="mean events per second (seasonality moves it)")
    ] = 100.0,
    duration: Annotated[str, typer.Option(help="simulated time span, e.g. 10m, 2h, 7d")] = "10m",
    seed: Annotated[int, typer.Option(help="same seed and arguments: byte-identical output")] = 0,
    start: Annotated[
        str | None, typer.Option(help="ISO start of simulated time (default: now)")
    ] = None,
    speed: Annotated[
        str | None,
        typer.Option(help="'max' or X times real time (default: 1 to Kafka, max to a file)"),
    ] = None,
    incident: Annotated[
        list[str] | None, typer.Option(help="incident SPEC, repeatable (see below)")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="write JSONL here instead of sending to Kafka")
    ] = None,
) -> None:
    """Simulated marketplace traffic to Kafka or to a JSONL file, with ground truth."""
    import json
    from datetime import UTC, datetime

    from ingest.simulator import (
        SimConfig,
        ground_truth,
        parse_duration,
        parse_incident,
        parse_time,
        truth_path,
        write_jsonl,
    )

    try:
        config = SimConfig(
            rate=rate,
            duration=parse_duration(duration),
            seed=seed,
            start=parse_time(start) if start else datetime.now(UTC).replace(microsecond=0),
            incidents=tuple(parse_incident(spec) for spec in incident or []),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    pace = _parse_speed(speed or ("max" if output else "1"))
    columns = (TextColumn("simulate"), BarColumn(), TextColumn("{task.completed:,} events"),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        from ingest.simulator import estimate_events

        task = bar.add_task("simulate", total=estimate_events(config), rate="")
        started = time.monotonic()

        def advance(n: int) -> None:
            bar.advance(task, n)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.monotonic() - started, 1e-6):,.0f} ev/s")

        if output is not None:
            written = write_jsonl(config, output, progress=advance)
            err.print(f"wrote {written:,} events to {output} (ground truth: {truth_path(output)})")
            return
        settings = _settings()
        result = _simulate_to_kafka(settings, config, pace, advance)
    truth_file = (
        settings.home / "simulations" / f"{config.start:%Y%m%dT%H%M%SZ}-seed{seed}.truth.json"
    )
    truth_file.parent.mkdir(parents=True, exist_ok=True)
    truth_file.write_text(json.dumps(ground_truth(config), indent=2) + "\n")
    err.print(f"ground truth: {truth_file}")
    print(f"accepted={result.accepted} rejected={len(result.rejected)}")


def _simulate_to_kafka(
    settings: Settings, config: SimConfig, pace: float | None, advance: Callable[[int], None]
) -> IngestResult:
    from api.stack import require_broker
    from ingest.collector import Collector
    from ingest.fx import load_fx_rates
    from ingest.producer import ConfluentProducer
    from ingest.simulator.publish import publish
    from ingest.topics import Topics, ensure_topics

    require_broker(settings.bootstrap, settings.embedded_broker)
    topics = Topics(settings.topic_prefix)
    ensure_topics(settings.bootstrap, topics, settings.topic_partitions)
    producer = ConfluentProducer(settings.bootstrap)
    collector = Collector(producer, topics, load_fx_rates(settings.fx_rates).currencies)
    try:
        return publish(config, collector, producer, speed=pace, progress=advance)
    finally:
        producer.close()


# -- streaming, detection, queries ------------------------------------------------------


@app.command()
def flow(
    workers: Annotated[int, typer.Option(help="Bytewax worker threads")] = 1,
    exit_when_idle: Annotated[
        float | None, typer.Option(help="stop after this many idle seconds once drained")
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Bytewax processes on this host: each uses a core, while worker threads share one",
        ),
    ] = 1,
) -> None:
    """Run the Bytewax dataflows alone (Kafka topics -> ClickHouse)."""
    from api.stack import flow_config, open_warehouse, recovery_dir, require_broker
    from flows.run import run_flow, run_processes
    from ingest.fx import load_fx_rates
    from warehouse.client import redact_dsn

    settings = _settings()
    require_broker(settings.bootstrap, settings.embedded_broker)
    client, notes = open_warehouse(settings)
    client.close()
    for note in notes:
        err.print(note, highlight=False)
    config = flow_config(settings, load_fx_rates(settings.fx_rates), idle_stop_s=exit_when_idle)
    if processes > 1 and workers > 1:
        raise typer.BadParameter("use either --workers or --processes, not both")
    err.print(
        f"flow: {settings.bootstrap} -> {redact_dsn(settings.warehouse_dsn)} with "
        + (f"{processes} processes" if processes > 1 else f"{workers} worker(s)")
        + "; Ctrl-C stops it"
    )
    if processes > 1:
        run_processes(processes, recovery_dir=recovery_dir(settings), exit_when_idle=exit_when_idle)
    else:
        run_flow(config, workers=workers, recovery_dir=recovery_dir(settings))
    err.print("flow: stopped (all topics drained)" if exit_when_idle else "flow: stopped")


@detect_app.callback(invoke_without_command=True)
def detect(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(help="run one detection pass and exit")] = False,
) -> None:
    """Run anomaly detection alone."""
    if ctx.invoked_subcommand is None:
        from insights.runner import run_detect

        report = run_detect(_settings(), once=once)
        if once and report is not None:
            err.print(
                f"detect: {len(report.changed)} insight(s) changed, {len(report.active)} open"
            )


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
    from insights.score_csv import score_csv

    rows = score_csv(input, output)
    err.print(f"scored {rows:,} rows -> {output}")


@app.command()
def query(
    metric: Annotated[str, typer.Argument(help="a metric of METRICS.md, e.g. conversion_rate")],
    from_: Annotated[str, typer.Option("--from", help="range start, ISO 8601")],
    to: Annotated[str, typer.Option(help="range end (exclusive), ISO 8601")],
    interval: Annotated[str, typer.Option(help="1m, 5m, 1h or 1d")] = "1h",
    by: Annotated[str | None, typer.Option(help="country, device, channel or category")] = None,
    where: Annotated[list[str] | None, typer.Option(help="DIM=VAL filter, repeatable")] = None,
    tz: Annotated[
        str | None, typer.Option(help="bucket timezone", envvar="PULSE_TIMEZONE", show_envvar=True)
    ] = None,
    format: Annotated[str, typer.Option(help="table, json or csv")] = "table",
) -> None:
    """Print a metric series (METRICS.md)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from api.local import fetch_metric, render
    from api.routes.metrics import parse_where
    from warehouse.queries import MetricQuery

    if format not in ("table", "json", "csv"):
        raise typer.BadParameter("expected table, json or csv", param_hint="--format")
    settings = _settings()
    zone = tz or settings.timezone
    try:
        start, end = datetime.fromisoformat(from_), datetime.fromisoformat(to)
        if start.tzinfo is None or end.tzinfo is None:
            start = start if start.tzinfo else start.replace(tzinfo=ZoneInfo(zone))
            end = end if end.tzinfo else end.replace(tzinfo=ZoneInfo(zone))
        q = MetricQuery(metric, start, end, interval, by, parse_where(where), zone)
    except (ValueError, KeyError) as exc:  # KeyError: ZoneInfoNotFoundError
        raise typer.BadParameter(str(exc).strip("'\"")) from None
    render(fetch_metric(settings, q), format, out)


@dashboards_app.command("export")
def dashboards_export(
    directory: Annotated[Path, typer.Argument(help="where to write the JSON")],
) -> None:
    """Write the Grafana dashboards and a datasource provisioning file."""
    from dashboards.commands import export_command

    export_command(_settings(), directory, err.print)


@dashboards_app.command("provision")
def dashboards_provision() -> None:
    """Push the ClickHouse datasource, a folder and the dashboards to Grafana."""
    from dashboards.commands import provision_command

    provision_command(_settings(), err.print)


def _key_store() -> KeyStore:
    from api.keys import KeyStore

    return KeyStore(_settings().keys_file)


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="ingest, read or admin")],
    name: Annotated[str, typer.Option(help="what the key is for, shown by `keys list`")] = "",
    origin: Annotated[
        list[str] | None,
        typer.Option(
            help="page origin (https://shop.example.com) a browser may send events from "
            "with this ingest key; repeatable; restricts the key to those origins"
        ),
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="expire after this long, e.g. 90d or 12h (default never)")
    ] = None,
) -> None:
    """Create an API key; the key alone is the last line (shown once, stored hashed)."""
    from api.keys import SCOPES
    from ingest.settings import normalise_origin, parse_duration

    if scope not in SCOPES:
        raise typer.BadParameter(f"expected one of {', '.join(SCOPES)}", param_hint="--scope")
    if origin and scope != "ingest":
        raise typer.BadParameter(
            "only an ingest key is used from browser pages", param_hint="--origin"
        )
    try:
        origins = [normalise_origin(o) for o in origin or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--origin") from None
    expires_in = None
    if expires is not None:
        try:
            expires_in = parse_duration(expires)
        except (ValueError, OverflowError):
            expires_in = None
        if expires_in is None or expires_in.total_seconds() <= 0:
            raise typer.BadParameter("expected a duration like 90d or 12h", param_hint="--expires")
    store = _key_store()
    record, key = store.issue(scope, name=name, origins=origins, expires_in=expires_in)
    until = f", expires {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else ""
    err.print(
        f"created {scope} key {record.id}{until} (stored hashed in {store.path}); "
        "it is shown once:",
        highlight=False,
    )
    print(key)


@keys_app.command("list")
def keys_list(
    format: Annotated[str, typer.Option(help="table or json")] = "table",
) -> None:
    """List the keys: id, name, scope, origins, created, expires, last used (never the key)."""
    import json
    from datetime import UTC, datetime

    from rich.table import Table

    if format not in ("table", "json"):
        raise typer.BadParameter("expected table or json", param_hint="--format")
    now = datetime.now(UTC)
    rows = [r.public(now) for r in _key_store().records()]
    if format == "json":
        print(json.dumps(rows, indent=2))
        return
    table = Table()
    columns = ("id", "name", "scope", "origins", "created", "expires", "last_used", "status")
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in rows:
        for column in ("created", "expires", "last_used"):  # to the minute, in UTC
            row[column] = str(row[column])[:16].replace("T", " ") if row[column] else None
        cells = [row[c] for c in columns]
        table.add_row(*(", ".join(c) if isinstance(c, list) else str(c or "-") for c in cells))
    # piped (scripts, less): wide enough that no id or time is wrapped
    (out if out.is_terminal else Console(width=200, soft_wrap=True)).print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the id `keys list` shows")]) -> None:
    """Revoke a key; the running API refuses it from its next request on."""
    record = _key_store().revoke(key_id)
    err.print(f"revoked {record.scope} key {record.id}{f' ({record.name})' if record.name else ''}")


def main() -> None:
    """Entry point: one clear line and a non-zero exit on any Pulse error."""
    try:
        app()
    except NotBuiltYet as exc:
        err.print(f"[yellow]pulse:[/yellow] {exc}")
        sys.exit(2)
    except PulseError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # one line for the user; PULSE_DEBUG=1 shows the traceback
        if os.environ.get("PULSE_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err.print(f"[red]error:[/red] {type(exc).__name__}: {message}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
