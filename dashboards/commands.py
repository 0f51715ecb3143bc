"""The ``pulse dashboards export|provision`` commands, called by ``api/cli.py``.

They take the settings read once by the CLI and a ``say`` callback for progress lines; an
error is a :class:`~dashboards.provision.GrafanaError` (a ``PulseError``: one line, exit 1).
The Grafana token is a ``SecretStr``: it is unwrapped only for the HTTP call, never printed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dashboards.grafana import RenderOptions
from dashboards.provision import GrafanaError, Outcome, export, provision
from ingest.settings import Settings

__all__ = ["export_command", "provision_command", "render_options"]


def render_options(settings: Settings) -> RenderOptions:
    """Rendering choices from the settings (default timezone, allowed lateness)."""
    return RenderOptions(
        timezone=settings.timezone,
        allowed_lateness_s=int(settings.allowed_lateness.total_seconds()),
    )


def export_command(settings: Settings, directory: Path, say: Callable[[str], None]) -> None:
    """Write the Grafana dashboards and provisioning files under ``directory``."""
    files = export(directory, settings.warehouse_dsn, render_options(settings))
    for path in files:
        say(f"wrote {path}")
    if settings.warehouse_dsn.startswith("chdb://"):
        say(
            "note: the datasource file points at clickhouse:8123 because the embedded chdb "
            "warehouse cannot serve Grafana; edit it or set PULSE_CLICKHOUSE_DSN"
        )


def provision_command(settings: Settings, say: Callable[[str], None]) -> list[Outcome]:
    """Push the datasource, the Pulse folder and the dashboards to ``PULSE_GRAFANA_URL``."""
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
        render_options(settings),
        progress=show,
    )
