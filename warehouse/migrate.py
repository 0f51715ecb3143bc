"""Ordered, idempotent schema migrations: ``warehouse/sql/NNN_name.sql``.

Each file runs once; ``schema_migrations`` records version, name, checksum and time. A file
holds one or more statements separated by ``;`` lines.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clickhouse_connect.driver.client import Client

from warehouse.errors import WarehouseError

__all__ = ["Migration", "applied_versions", "load_migrations", "migrate"]

SQL_DIR = Path(str(resources.files("warehouse") / "sql"))
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    """One schema file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self) -> list[str]:
        """The file's statements, without comments and blanks."""
        body = "\n".join(ln for ln in self.sql.splitlines() if not ln.lstrip().startswith("--"))
        return [s.strip() for s in body.split(";") if s.strip()]


def load_migrations(directory: Path = SQL_DIR) -> list[Migration]:
    """Every ``NNN_name.sql`` file in version order."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise WarehouseError(f"migration file name must be NNN_name.sql: {path.name}")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise WarehouseError("two migration files share a version number")
    return found


def applied_versions(client: Client) -> set[int]:
    """Versions already recorded in the ledger."""
    client.command(_LEDGER)
    return {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}


def migrate(client: Client, directory: Path = SQL_DIR) -> list[Migration]:
    """Apply every migration not yet applied, in order; returns those applied now."""
    done = applied_versions(client)
    applied = []
    for migration in load_migrations(directory):
        if migration.version in done:
            continue
        for statement in migration.statements():
            try:
                client.command(statement)
            except Exception as exc:
                raise WarehouseError(
                    f"migration {migration.version:03d}_{migration.name} failed: {exc}"
                ) from exc
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        applied.append(migration)
    return applied
