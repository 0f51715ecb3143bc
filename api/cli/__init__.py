"""The ``pulse`` command line (CONTRACT §4): parse -> settings -> runtime -> run.

Each command reads the settings once and asks :class:`~api.runtime.Runtime` for the parts
it runs. Commands live by group: :mod:`api.cli.stack` (``up``, ``demo``, ``stop``,
``serve``, ``broker``, ``migrate``), :mod:`api.cli.ingest` (``replay``, ``simulate``),
:mod:`api.cli.pipeline` (``flow``, ``detect``), :mod:`api.cli.query`, :mod:`api.cli.keys`
and :mod:`api.cli.dashboards`. A command imports the pipeline's heavy modules (the
runtime, serving, insights, queries: ~1.4 s) when it runs, so that ``pulse --help`` and
``pulse keys`` do not load them; everything else is imported at the top.
"""

from __future__ import annotations

import os
import sys

from typer import Abort, rich_utils

try:  # Typer 0.2x carries its own copy of click; earlier ones use click itself
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

# Importing the command modules registers their commands, in the order `--help` lists them.
# isort: off
from api.cli import stack, ingest, pipeline, query, keys, dashboards, users, experiments  # noqa: F401
# isort: on

from api.cli.common import app, err
from ingest.errors import PulseError

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: one clear line and a non-zero exit on any Pulse error, and on a usage
    error (a missing or bad option) the same: one line and the command to ask for help."""
    try:
        code = app(standalone_mode=False, prog_name="pulse")
    except NoArgsIsHelpError as exc:  # `pulse keys`: its help, as before
        rich_utils.rich_format_error(exc)
        sys.exit(exc.exit_code)
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "pulse"
        err.print(f"[red]error:[/red] {exc.format_message()} (see `{where} --help`)",
                  highlight=False)  # fmt: skip
        sys.exit(exc.exit_code)
    except Abort:
        sys.exit(1)
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
    if isinstance(code, int) and code:  # typer.Exit(code) / Ctrl-C, returned when not standalone
        sys.exit(code)
