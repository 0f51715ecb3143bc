"""``pulse up``, ``demo``, ``stop``, ``serve``, ``broker``, ``migrate``: running Pulse."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from api.cli.common import app, err, out, read_settings, runtime, say_notes
from api.settings import Settings
from ingest import pidfile
from ingest.broker import EmbeddedBroker, leftover_broker
from ingest.errors import PulseError
from warehouse.dsn import redact_dsn

# The pipeline's modules (runtime, serving, insights, queries: ~1.4 s of imports) are
# imported inside the commands that run them, so that `pulse --help`, `pulse keys` and a
# mistyped option answer at once; what is cheap to import is imported here.

__all__ = ["broker", "demo", "migrate", "serve", "stop", "up"]


@app.command()
def up() -> None:
    """Run the whole stack: broker (if embedded), migrations, flows, detector, API."""
    from api.serving import run_stack

    run_stack(runtime())


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
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="delete the data of an earlier demo on this PULSE_HOME first (its warehouse, "
            "flow state and ground truth; API keys are kept). Without it a demo run again "
            "resumes: it back-fills only the time since the last event",
        ),
    ] = False,
) -> None:
    """[bold]up[/bold] plus the simulator with an injected conversion_drop incident."""
    from api.serving import run_demo

    run_demo(runtime(), open_page=open_page, fresh=fresh)


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
    settings = read_settings()
    stopped = False
    running = pidfile.read_live(settings.pulse_pid_file)
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
    broker = leftover_broker(settings.broker_pid_file)
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
        pidfile.remove_if_mine(settings.broker_pid_file, broker.pid)
        err.print(f"stopped the embedded broker (pid {broker.pid})", highlight=False)
        stopped = True
    if not stopped:
        err.print(f"nothing of Pulse runs on PULSE_HOME={settings.home}", highlight=False)


def _drain_broker(settings: Settings, address: str) -> None:
    """Run the flow until every topic of the broker at ``address`` is in the warehouse."""
    drain = runtime(settings.model_copy(update={"broker_listen": address, "kafka_bootstrap": None}))
    drain.warehouse(for_flow=True).close()  # fails clearly if another process holds it
    say_notes(drain.notes)
    with err.status("draining the broker's topics into the warehouse"):
        try:
            drain.drain()
        except Exception as exc:
            raise PulseError(f"draining the broker failed: {exc}") from exc


@app.command()
def serve() -> None:
    """Run the API alone (needs a running broker; see PULSE_KAFKA_BOOTSTRAP)."""
    from api.serving import run_api_only

    run_api_only(runtime())


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
    s = read_settings()
    with EmbeddedBroker(listen or s.broker_listen) as running:
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            on_it = runtime(s.model_copy(update={"kafka_bootstrap": running.bootstrap}))
            created = on_it.ensure_topics()
            out.print(
                f"Kafka-compatible broker listening on [bold]{running.bootstrap}[/bold] "
                f"(memory storage; {len(created)} topics created). Ctrl-C stops it."
            )
            running.wait()
        except KeyboardInterrupt:
            out.print("stopping broker")


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM like Ctrl-C: leave the wait, and the broker is stopped on the way out. (Stopping
    it from the handler deadlocked: the handler runs inside ``Popen.wait``, which holds the
    lock the stop's own wait needs.)"""
    raise KeyboardInterrupt


@app.command()
def migrate() -> None:
    """Apply the warehouse schema (idempotent) and load the FX rates."""
    run = runtime()
    run.warehouse(fx_rates=True).close()
    say_notes(run.notes)
    for m in run.applied:
        out.print(f"applied {m.version:03d}_{m.name}")
    out.print(
        f"warehouse {redact_dsn(run.settings.warehouse_dsn)} is up to date "
        f"({len(run.applied)} applied now, {run.fx_rows} FX rates loaded)"
    )
