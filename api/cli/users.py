"""``pulse users forget USER_ID... [--yes]``: erase users' data (CONTRACT §4, §11)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from api.cli.common import app, err, out, runtime, say_notes
from ingest.errors import PulseError
from warehouse.errors import WarehouseBusy

__all__ = ["users_forget"]

users_app = typer.Typer(help="Users' data: erasure requests.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("forget")
def users_forget(
    user_ids: Annotated[list[str], typer.Argument(help="user ids as sent in events")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Erase every row of these users, their flow state and their share of the rollups;
    prints what was erased (one JSON line per user; the id itself is never printed)."""
    bad = [u for u in user_ids if not 0 < len(u) <= 128]
    if bad:
        raise typer.BadParameter("a user id is 1 to 128 characters", param_hint="USER_ID")
    if not yes:
        typer.confirm(
            f"Erase all data of {len(user_ids)} user(s)? This cannot be undone", abort=True
        )
    run = runtime()
    try:
        client = run.warehouse()
    except WarehouseBusy:
        raise PulseError(
            "the embedded warehouse is held by a running `pulse up`: ask its API instead, "
            "DELETE /v1/users/USER_ID with an admin key (`pulse keys create --scope admin`)"
        ) from None
    say_notes(run.notes)
    # Holding the embedded warehouse, this process knows no flow runs on this home: the
    # flow's saved states are cleaned here too. With a broker up, the flow also hears of it.
    eraser = run.eraser(client, flow_stopped=run.settings.embedded_warehouse)
    if not run.broker_answers():
        eraser.announce = None
        err.print("no broker answers: the erasures are not announced to a flow", highlight=False)
    for index, user_id in enumerate(user_ids, start=1):
        erased = eraser.forget(user_id, "cli")
        if len(user_ids) > 1:
            err.print(f"{index}/{len(user_ids)} erased", highlight=False)
        out.print(json.dumps(erased.document()), highlight=False, soft_wrap=True)
