"""What every command of the ``pulse`` CLI shares: the Typer apps, the consoles, the settings
(read once per command) and the parsing of shared options."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from typer.core import TyperOption

from api.settings import Settings, load_settings

if TYPE_CHECKING:
    from api.runtime import Runtime

__all__ = [
    "app",
    "dashboards_app",
    "detect_app",
    "err",
    "keys_app",
    "out",
    "parse_speed",
    "read_settings",
    "runtime",
    "say_notes",
]

_display_type_rich = TyperOption.display_type_rich


def _flag_without_type(self: TyperOption, ctx: typer.Context) -> str | None:
    # Typer's rich help shows a flag (`--help`, `--wait`) as taking a `<bool>` value, which it
    # does not; a flag shows no type.
    return None if self.is_flag else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign,assignment]

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


def read_settings() -> Settings:
    """The settings, read once per command."""
    return load_settings()


def runtime(of: Settings | None = None) -> Runtime:
    """The runtime that builds the parts of this command's run from the settings (read
    now unless given). Imported here, when a command runs: the whole pipeline is not
    loaded for ``pulse --help`` or ``pulse keys``."""
    from api.runtime import Runtime

    return Runtime(of or load_settings())


def say_notes(notes: Iterable[str]) -> None:
    """Print what start-up found worth saying (e.g. a warehouse that is new)."""
    for note in notes:
        err.print(note, highlight=False)


def parse_speed(value: str) -> float | None:
    """``--speed``: ``max`` (None) or a positive factor of real (event) time."""
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise typer.BadParameter("expected 'max' or a positive number like 10") from None
    if speed <= 0:
        raise typer.BadParameter("expected 'max' or a positive number like 10")
    return speed
