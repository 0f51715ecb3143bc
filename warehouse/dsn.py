"""Warehouse addresses (DSNs): which engine, which database, safe to print.

``chdb://PATH`` is the embedded engine (chDB, in this process; one process may hold a path
at a time); ``http(s)://user:pass@host:8123/db`` a ClickHouse server. No client here:
settings and configs ask these questions without loading one.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_DATABASE",
    "EMBEDDED_SCHEME",
    "database_of",
    "embedded_path",
    "is_embedded",
    "redact_dsn",
]

DEFAULT_DATABASE = "pulse"
EMBEDDED_SCHEME = "chdb://"


def is_embedded(dsn: str) -> bool:
    """Whether ``dsn`` names the embedded engine."""
    return dsn.startswith(EMBEDDED_SCHEME)


def embedded_path(dsn: str) -> Path | None:
    """The directory of an embedded (chDB) warehouse; None for a server."""
    return Path(dsn.removeprefix(EMBEDDED_SCHEME)).resolve() if is_embedded(dsn) else None


def database_of(dsn: str) -> str:
    """The database a DSN names (its path for servers); ``pulse`` otherwise."""
    if is_embedded(dsn):
        return DEFAULT_DATABASE
    path = urlsplit(dsn).path.strip("/")
    return path or DEFAULT_DATABASE


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, safe to print."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return dsn
