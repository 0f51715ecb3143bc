"""``pulse dashboards export|provision``: the Grafana dashboards as code.

The commands take the settings read once and a ``say`` callback for progress lines; an
error is a :class:`~dashboards.provision.GrafanaError` (a ``PulseError``: one line, exit 1).
The Grafana token is a ``SecretStr``: it is unwrapped only for the HTTP call, never printed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from api.cli.common import dashboards_app, err, read_settings, runtime
from api.settings import Settings

# dashboards.provision (~0.2 s of imports) is imported in the commands that use it, so that
# `pulse --help` does not pay for it.

if TYPE_CHECKING:
    from dashboards.provision import Outcome

__all__ = ["dashboards_export", "dashboards_provision", "export_command", "provision_command"]


@dashboards_app.command("export")
def dashboards_export(
    directory: Annotated[Path, typer.Argument(help="where to write the JSON")],
) -> None:
    """Write the Grafana dashboards and a datasource provisioning file."""
    export_command(read_settings(), directory, err.print)


@dashboards_app.command("provision")
def dashboards_provision() -> None:
    """Push the ClickHouse datasource, a folder and the dashboards to Grafana."""
    provision_command(read_settings(), err.print)


def export_command(settings: Settings, directory: Path, say: Callable[[str], None]) -> None:
    """Write the Grafana dashboards and provisioning files under ``directory``."""
    from dashboards.provision import export

    for path in export(directory, settings.warehouse_dsn, runtime(settings).render_options()):
        say(f"wrote {path}")
    if settings.embedded_warehouse:
        say(
            "note: the datasource file points at clickhouse:8123 because the embedded chdb "
            "warehouse cannot serve Grafana; edit it or set PULSE_CLICKHOUSE_DSN"
        )


def provision_command(settings: Settings, say: Callable[[str], None]) -> list[Outcome]:
    """Push the datasource, the Pulse folder and the dashboards to ``PULSE_GRAFANA_URL``."""
    from dashboards.provision import GrafanaError, provision

    if not settings.grafana_url:
        raise GrafanaError("set PULSE_GRAFANA_URL (e.g. http://grafana:3000) to provision")
    if settings.grafana_token is None or not settings.grafana_token.get_secret_value():
        raise GrafanaError(
            "set PULSE_GRAFANA_TOKEN to a Grafana service account token (Admin role)"
        )

    def show(o: Outcome) -> None:
        version = f" (version {o.version})" if o.version is not None else ""
        say(f"{o.kind} {o.uid}: {o.action}{version}")

    return provision(
        settings.grafana_url,
        settings.grafana_token.get_secret_value(),
        settings.warehouse_dsn,
        runtime(settings).render_options(),
        progress=show,
    )
