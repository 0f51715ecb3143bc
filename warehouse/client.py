"""Warehouse client factory over clickhouse-connect, for chDB and ClickHouse servers.

``chdb://PATH`` opens the embedded engine (one process may hold a path at a time);
``http(s)://user:pass@host:8123/db`` talks to a ClickHouse server (:mod:`warehouse.dsn`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from warehouse.dsn import database_of, embedded_path, redact_dsn
from warehouse.errors import WarehouseBusy, WarehouseError

__all__ = ["CHDB_OPTIONS", "Client", "connect", "has_schema", "presence_check"]


_OPENED: set[Path] = set()  # embedded paths this process has opened (it holds their lock)

# The embedded engine lives in the process of `pulse up` beside the flow and the API, so its
# caches are bounded well below a server's defaults (5 GiB each for marks and primary
# indexes): they only ever hold the marks and keys of the few tables Pulse reads. Engine
# settings take effect when the process first opens the engine.
CHDB_OPTIONS = {
    "mark_cache_size": 128 * 2**20,
    "index_mark_cache_size": 32 * 2**20,
    "primary_index_cache_size": 64 * 2**20,
    "query_condition_cache_size": 16 * 2**20,
    "compiled_expression_cache_size": 32 * 2**20,
}


def _locked_elsewhere(path: Path) -> bool:
    """Whether another process holds the embedded engine's lock on ``path``."""
    if not (path / "status").exists():
        return False
    try:
        with (path / "status").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fh, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def connect(dsn: str, database: str | None = None, *, create: bool = True) -> Client:
    """A client on ``database`` (default: the DSN's), creating the database if asked."""
    database = database or database_of(dsn)
    path = embedded_path(dsn)
    if path is not None and path not in _OPENED and _locked_elsewhere(path):
        # Ask the lock first: a failed open makes the engine print to stderr.
        raise WarehouseBusy(
            f"the embedded warehouse {dsn} is open in another process (a running `pulse up`?)"
        )
    try:
        options: dict[str, Any] = {}
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
            _OPENED.add(path)
            base_dsn = dsn
            options["chdb_options"] = CHDB_OPTIONS
            # The engine takes the process's time zone: in UTC, as a server for Pulse runs
            # (docs/operations.md), whatever the machine's (_in_utc).
            options["settings"] = {"session_timezone": "UTC"}
        else:
            base_dsn = urlsplit(dsn)._replace(path="/default").geturl()
        if create:
            admin = clickhouse_connect.get_client(dsn=base_dsn, **options)
            admin.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
        client = clickhouse_connect.get_client(dsn=base_dsn, database=database, **options)
        return _in_utc(client) if path is not None else client
    except (ClickHouseError, OSError) as exc:
        if path is not None and _locked_elsewhere(path):
            raise WarehouseBusy(
                f"the embedded warehouse {redact_dsn(dsn)} is open in another process"
                " (a running `pulse up`?)"
            ) from exc
        raise WarehouseError(f"cannot open the warehouse at {redact_dsn(dsn)}: {exc}") from exc


def _in_utc(client: Client) -> Client:
    """The embedded engine's client with times bound and read in UTC. Its session runs
    in UTC (``session_timezone``), and the client is told so: it renders a time parameter
    as wall-clock time in what it takes for the server's zone, which for chDB is the
    process's. In a zone with summer time, the hour the clocks go back comes twice there:
    a parameter in it named the wrong hour, and in a process in Berlin the flow's hour of
    2026-10-25 01:00 UTC read as empty (tests/integration/test_rollup_edges.py)."""
    client.server_tz = UTC
    return client


def presence_check(dsn: str) -> Callable[[], None]:
    """A check that raises :class:`WarehouseError` once the embedded warehouse's directory
    was deleted or replaced under the running process. chDB goes on answering from memory
    and even "writes" into a bare new directory then, which no later start reads: the API
    must say the warehouse is unavailable and the flow must not count such writes as done.
    Call it once the warehouse is open. For a server, the check does nothing (the server
    reports its own failures)."""
    path = embedded_path(dsn)
    if path is None:
        return lambda: None
    inode = os.stat(path).st_ino
    metadata = path / "metadata"

    def check() -> None:
        try:
            present = os.stat(path).st_ino == inode and metadata.is_dir()
        except OSError:
            present = False
        if not present:
            raise WarehouseError(
                f"the embedded warehouse directory {path} was deleted or replaced while Pulse"
                " ran: stop Pulse (`pulse stop`) and start it again"
            )

    return check


def has_schema(client: Client) -> bool:
    """Whether Pulse's schema was ever applied to this warehouse (its ledger exists)."""
    return bool(client.command("EXISTS TABLE schema_migrations"))
