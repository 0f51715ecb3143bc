"""``pulse keys create|list|revoke``: API keys, stored hashed under ``PULSE_HOME``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.cli.common import err, keys_app, out, read_settings
from api.keys import SCOPES, KeyStore
from api.settings import normalise_origin, parse_duration

__all__ = ["keys_create", "keys_list", "keys_revoke"]


def _key_store() -> KeyStore:
    return KeyStore(read_settings().keys_file)


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
    settings = read_settings()
    if not settings.home.exists():  # a key here is one no running Pulse of another home reads
        err.print(
            f"[yellow]note:[/yellow] PULSE_HOME={settings.home} is new: no Pulse ran with it. "
            "A running API accepts only keys of its own PULSE_HOME (its start-up message "
            "says which).",
            highlight=False,
        )
    store = KeyStore(settings.keys_file)
    record, key = store.issue(scope, name=name, origins=origins, expires_in=expires_in)
    until = f", expires {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else ""
    err.print(
        f"created {'an' if scope[0] in 'aeiou' else 'a'} {scope} key, id {record.id}{until} "
        f"(stored hashed in {store.path}); "
        "it is shown once:",
        highlight=False,
    )
    print(key)


@keys_app.command("list")
def keys_list(
    format: Annotated[str, typer.Option(help="table or json")] = "table",
) -> None:
    """List the keys: id, name, scope, origins, created, expires, last used (never the key)."""
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
