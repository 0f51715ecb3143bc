"""Grafana provisioning: files for Grafana's own provisioning, or a push through its API.

``export(directory, ...)`` writes what a Grafana server reads at start-up (dashboard JSON,
a datasource file, a dashboard provider file). ``provision(...)`` does the same through
the HTTP API with grafana-client: the ClickHouse datasource, a folder and the dashboards,
idempotently (an unchanged dashboard is not saved again) and versioned (each save carries
the definition's revision, so Grafana's version history says what changed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dashboards.catalog import DASHBOARDS
from dashboards.clickhouse_query import PLUGIN_ID
from dashboards.grafana import RenderOptions, render
from ingest.errors import PulseError
from warehouse.dsn import is_embedded

__all__ = [
    "FOLDER_TITLE",
    "FOLDER_UID",
    "ClickHouseTarget",
    "GrafanaError",
    "Outcome",
    "datasource_model",
    "export",
    "provision",
    "revision",
]

FOLDER_UID = "pulse"
FOLDER_TITLE = "Pulse"
DATASOURCE_NAME = "Pulse ClickHouse"
_REV_TAG = "pulse-rev:"


class GrafanaError(PulseError):
    """Grafana could not be reached or refused; the message says what to do."""


@dataclass(frozen=True)
class ClickHouseTarget:
    """Where Grafana finds ClickHouse (from an ``http(s)://user:pass@host:port/db`` DSN)."""

    host: str
    port: int
    secure: bool
    username: str
    database: str
    password: str = ""

    @classmethod
    def from_dsn(cls, dsn: str) -> ClickHouseTarget:
        """Parse a server DSN; the embedded ``chdb://`` warehouse cannot serve Grafana."""
        if is_embedded(dsn):
            raise GrafanaError(
                "Grafana needs a ClickHouse server, but PULSE_CLICKHOUSE_DSN is the embedded "
                "chdb:// warehouse; set it to http(s)://user:pass@host:8123/db (docs/grafana.md)"
            )
        parts = urlsplit(dsn)
        secure = parts.scheme == "https"
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (8443 if secure else 8123),
            secure=secure,
            username=parts.username or "default",
            database=parts.path.strip("/") or "pulse",
            password=parts.password or "",
        )


def datasource_model(target: ClickHouseTarget, uid: str, *, password: str | None) -> dict[str, Any]:
    """The datasource as Grafana's API and provisioning files describe it (HTTP protocol)."""
    model: dict[str, Any] = {
        "uid": uid,
        "name": DATASOURCE_NAME,
        "type": PLUGIN_ID,
        "access": "proxy",
        "jsonData": {
            "host": target.host,
            "port": target.port,
            "protocol": "http",
            "secure": target.secure,
            "username": target.username,
            "defaultDatabase": target.database,
        },
    }
    if password is not None:
        model["secureJsonData"] = {"password": password}
    return model


def revision(dashboard: dict[str, Any]) -> str:
    """A short hash of a dashboard's content (ignoring what Grafana manages)."""
    body = {k: v for k, v in dashboard.items() if k not in ("id", "version", "tags")}
    body["tags"] = [t for t in dashboard.get("tags", []) if not t.startswith(_REV_TAG)]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def _with_revision(dashboard: dict[str, Any]) -> dict[str, Any]:
    rev = revision(dashboard)
    tags = [t for t in dashboard.get("tags", []) if not t.startswith(_REV_TAG)]
    return {**dashboard, "tags": [*tags, _REV_TAG + rev]}


def _yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter for the provisioning files (scalars as JSON, which YAML reads)."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:\n{_yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}{k}: {json.dumps(v)}")
        return "\n".join(lines)
    if isinstance(value, list):
        items = []
        for v in value:
            text = _yaml(v, indent + 1).lstrip()
            items.append(f"{pad}- {text}")
        return "\n".join(items)
    return f"{pad}{json.dumps(value)}"


def export(directory: Path, dsn: str, options: RenderOptions | None = None) -> list[Path]:
    """Write dashboards and provisioning files under ``directory``; returns the files.

    Layout: ``dashboards/<uid>.json`` and ``provisioning/{datasources,dashboards}/pulse.yaml``
    — mount ``provisioning`` as Grafana's provisioning directory and point the dashboard
    provider at ``dashboards`` (docs/grafana.md). The ClickHouse password is not written:
    the datasource file reads it from ``$PULSE_CLICKHOUSE_PASSWORD`` in Grafana's
    environment.
    """
    options = options or RenderOptions()
    if is_embedded(dsn):
        # Still useful as a template: point it at your server before starting Grafana.
        target = ClickHouseTarget("clickhouse", 8123, False, "default", "pulse")
    else:
        target = ClickHouseTarget.from_dsn(dsn)
    written = []
    boards_dir = directory / "dashboards"
    boards_dir.mkdir(parents=True, exist_ok=True)
    for board in DASHBOARDS:
        path = boards_dir / f"{board.uid}.json"
        path.write_text(json.dumps(_with_revision(render(board, options)), indent=2) + "\n")
        written.append(path)
    model = datasource_model(
        target, options.datasource_uid, password="${PULSE_CLICKHOUSE_PASSWORD}"
    )
    model["editable"] = False
    datasources = {"apiVersion": 1, "datasources": [model]}
    providers = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "pulse",
                "folder": FOLDER_TITLE,
                "folderUid": FOLDER_UID,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": str(boards_dir.resolve()), "foldersFromFilesStructure": False},
            }
        ],
    }
    for kind, content in (("datasources", datasources), ("dashboards", providers)):
        path = directory / "provisioning" / kind / "pulse.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "# Written by `pulse dashboards export`; Grafana provisioning (docs/grafana.md)\n"
        path.write_text(header + _yaml(content) + "\n")
        written.append(path)
    return written


@dataclass(frozen=True)
class Outcome:
    """What provisioning did to one object."""

    kind: str  # datasource | folder | dashboard
    uid: str
    action: str  # created | updated | unchanged
    version: int | None = None


def _client(url: str, token: str, timeout: float) -> Any:
    try:
        from grafana_client import GrafanaApi
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("pulse dashboards provision needs grafana-client") from exc
    return GrafanaApi.from_url(url, credential=token, timeout=timeout)


def _call(what: str, url: str, fn: Callable[[], Any]) -> Any:
    """Run one API call, turning transport and permission failures into one clear line."""
    import niquests
    from grafana_client.client import (
        GrafanaClientError,
        GrafanaException,
        GrafanaServerError,
        GrafanaTimeoutError,
        GrafanaUnauthorizedError,
    )

    try:
        return fn()
    except GrafanaUnauthorizedError:
        raise GrafanaError(
            f"Grafana at {url} rejected PULSE_GRAFANA_TOKEN (401): check the token"
        ) from None
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            raise GrafanaError(
                f"the Grafana token lacks rights to {what} (403): use a service account "
                "with the Admin role (or Editor plus datasource rights)"
            ) from None
        raise GrafanaError(f"Grafana refused to {what}: {exc.message}") from None
    except (GrafanaTimeoutError, niquests.exceptions.RequestException) as exc:
        raise GrafanaError(
            f"cannot reach Grafana at {url} ({type(exc).__name__}): check PULSE_GRAFANA_URL"
        ) from None
    except GrafanaServerError as exc:
        raise GrafanaError(f"Grafana failed to {what}: {exc.message}") from None
    except GrafanaException as exc:
        raise GrafanaError(f"cannot reach Grafana at {url}: {exc.message}") from None


def _not_found(fn: Callable[[], Any]) -> Any:
    from grafana_client.client import GrafanaClientError

    try:
        return fn()
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def provision(
    url: str,
    token: str,
    dsn: str,
    options: RenderOptions | None = None,
    *,
    timeout: float = 10.0,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Create or update the ClickHouse datasource, the Pulse folder and every dashboard."""
    options = options or RenderOptions()
    target = ClickHouseTarget.from_dsn(dsn)
    api = _client(url, token, timeout)
    report = progress or (lambda _: None)
    out: list[Outcome] = []

    def done(outcome: Outcome) -> None:
        out.append(outcome)
        report(outcome)

    _call("read its health", url, lambda: api.health.check())
    uid = options.datasource_uid
    model = datasource_model(target, uid, password=target.password)
    existing = _call(
        "read datasources",
        url,
        lambda: _not_found(lambda: api.datasource.get_datasource_by_uid(uid)),
    )
    if existing is None:
        _call("create the datasource", url, lambda: api.datasource.create_datasource(model))
        done(Outcome("datasource", uid, "created"))
    else:
        # The password is write-only in Grafana, so it is always sent again.
        _call("update the datasource", url,
              lambda: api.datasource.update_datasource_by_uid(uid, model))  # fmt: skip
        done(Outcome("datasource", uid, "updated"))

    folder = _call(
        "read folders", url, lambda: _not_found(lambda: api.folder.get_folder(FOLDER_UID))
    )
    if folder is None:
        _call("create a folder", url, lambda: api.folder.create_folder(FOLDER_TITLE, FOLDER_UID))
        done(Outcome("folder", FOLDER_UID, "created"))
    else:
        done(Outcome("folder", FOLDER_UID, "unchanged"))

    for board in DASHBOARDS:
        dashboard = _with_revision(render(board, options))
        current = _call(
            "read dashboards",
            url,
            lambda b=board: _not_found(lambda: api.dashboard.get_dashboard(b.uid)),  # type: ignore[misc]
        )
        old = (current or {}).get("dashboard") or {}
        if old and dashboard["tags"][-1] in old.get("tags", []):
            done(Outcome("dashboard", board.uid, "unchanged", old.get("version")))
            continue
        saved = _call(
            "save dashboards",
            url,
            lambda d=dashboard: api.dashboard.update_dashboard(  # type: ignore[misc]
                {
                    "dashboard": d,
                    "folderUid": FOLDER_UID,
                    "overwrite": True,
                    "message": f"Pulse: {d['tags'][-1]}",
                }
            ),
        )
        action = "updated" if old else "created"
        done(Outcome("dashboard", board.uid, action, (saved or {}).get("version")))
    return out
