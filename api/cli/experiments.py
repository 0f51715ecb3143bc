"""``pulse experiments list|show`` (CONTRACT §4, §10): experiments seen in the events and one
experiment's results, from the warehouse or, while ``pulse up`` holds the embedded one,
through its API (with the read key it left in PULSE_HOME), like ``pulse query``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.table import Table

from api.cli.common import app, out, runtime, say_notes
from ingest.errors import PulseError
from ingest.times import aware
from warehouse.errors import WarehouseBusy

if TYPE_CHECKING:
    from collections.abc import Callable

    from api.runtime import Runtime
    from warehouse.client import Client

__all__ = ["experiments_list", "experiments_show"]

experiments_app = typer.Typer(help="A/B experiments seen in the events.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")

Format = Annotated[str, typer.Option(help="table or json")]


def _format(value: str) -> str:
    if value not in ("table", "json"):
        raise typer.BadParameter("expected table or json", param_hint="--format")
    return value


@experiments_app.command("list")
def experiments_list(format: Format = "table") -> None:
    """List the experiments seen: variants, users, first and last exposure."""
    from insights.experiment_results import experiments_document

    fmt = _format(format)
    doc = _fetch(runtime(), experiments_document, "/v1/experiments", {})
    if fmt == "json":
        print(json.dumps(doc, indent=2))
        return
    table = Table(title="experiments")
    for col in ("experiment", "variants", "control", "users", "first exposure", "last exposure"):
        table.add_column(col, justify="right" if col == "users" else "left")
    for e in doc["experiments"]:
        table.add_row(e["experiment"], ", ".join(e["variants"]), e["control"], str(e["users"]),
                      e["first_exposure"], e["last_exposure"])  # fmt: skip
    out.print(table)


@experiments_app.command("show")
def experiments_show(
    key: Annotated[str, typer.Argument(help="the experiment, as sent in exposures")],
    from_: Annotated[
        str | None, typer.Option("--from", help="range start, ISO 8601 (default: first exposure)")
    ] = None,
    to: Annotated[str | None, typer.Option(help="range end (exclusive), ISO 8601")] = None,
    cuped: Annotated[bool, typer.Option("--cuped", help="CUPED: adjust by the pre-period")] = False,
    sequential: Annotated[
        bool, typer.Option("--sequential", help="always-valid (sequential) intervals")
    ] = False,
    format: Format = "table",
) -> None:
    """One experiment's users per variant, SRM check and results (CONTRACT §10)."""
    from insights.experiment_results import experiment_document

    fmt = _format(format)
    if not 0 < len(key) <= 64:
        raise typer.BadParameter("an experiment name is 1 to 64 characters", param_hint="KEY")
    start, end = _time(from_, "--from"), _time(to, "--to")
    params: dict[str, Any] = {"cuped": cuped, "sequential": sequential}
    if start:
        params["from"] = start.isoformat()
    if end:
        params["to"] = end.isoformat()

    def local(client: Client) -> dict[str, Any]:
        return experiment_document(client, key, start, end, cuped=cuped, sequential=sequential)

    doc = _fetch(runtime(), local, f"/v1/experiments/{key}", params)
    if fmt == "json":
        print(json.dumps(doc, indent=2))
    else:
        _render(doc)


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return aware(datetime.fromisoformat(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from None


def _fetch(
    run: Runtime, local: Callable[[Client], dict[str, Any]], path: str, params: dict[str, Any]
) -> dict[str, Any]:
    """The document from the warehouse directly, or via the running API."""
    try:
        client = run.warehouse()
    except WarehouseBusy:
        return _via_api(run, path, params)
    say_notes(run.notes)
    try:
        return local(client)
    finally:
        client.close()


def _via_api(run: Runtime, path: str, params: dict[str, Any]) -> dict[str, Any]:
    key_file, base = run.settings.cli_key_file, run.settings.api_url
    if not key_file.exists():
        raise PulseError(f"the warehouse is busy and {key_file} is missing: is `pulse up` running?")
    headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
    query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    try:
        r = httpx.get(f"{base}{path}", params=query, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise PulseError(
            f"the warehouse is busy and the API at {base} does not answer: {exc}"
        ) from None
    if r.status_code != 200:
        raise PulseError(f"API {r.status_code}: {r.json().get('error', {}).get('message', r.text)}")
    return dict(r.json())


def _num(value: float | None, pct: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.2%}" if pct else f"{value:.4g}"


def _render(doc: dict[str, Any]) -> None:
    users = ", ".join(f"{v['variant']}={v['users']:,}" for v in doc["variants"])
    srm = doc["srm"]
    head = f"{doc['experiment']}  {doc['from']} .. {doc['to']}  control={doc['control']}"
    out.print(f"{head}  cuped={doc['cuped']}  sequential={doc['sequential']}", highlight=False)
    out.print(f"users: {users}; multiple exposures (left out): {doc['multiple_exposures']:,}",
              highlight=False)  # fmt: skip
    flag = "MISMATCH: check the assignment" if srm["flagged"] else "ok"
    out.print(f"sample ratio: p = {_num(srm['p_value'])} ({flag})", highlight=False)
    table = Table()
    for col in ("metric", "variant", "mean", "control", "lift", "95% CI", "p", "chance to win"):
        name = col in ("metric", "variant")
        table.add_column(col, justify="left" if name else "right", no_wrap=name)
    for r in doc["results"]:
        lo, hi = r["ci"]
        table.add_row(r["metric"], r["variant"], _num(r["mean"]), _num(r["control_mean"]),
                      _num(r["lift"], True), f"[{_num(lo, True)}, {_num(hi, True)}]",
                      _num(r["p_value"]), _num(r["chance_to_win"]))  # fmt: skip
    out.print(table)
