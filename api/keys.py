"""API keys with scopes, stored hashed under ``PULSE_HOME`` (never the key itself).

A key is shown once, when created. The store is a small JSON file so that ``pulse keys
create`` works while ``pulse up`` holds the embedded warehouse; the API re-reads it when
it changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

__all__ = ["SCOPES", "KeyStore", "Scope", "allows"]

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin")


def allows(granted: str, needed: Scope) -> bool:
    """Whether a key of scope ``granted`` may call a route needing ``needed``.

    ``admin`` may do everything; ``read`` and ``ingest`` only their own routes.
    """
    return granted == needed or granted == "admin"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Hashed keys in a JSON file: ``[{"id", "scope", "sha256", "created_at"}]``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._by_digest: dict[str, str] = {}

    def create(self, scope: Scope) -> str:
        """Make, store (hashed) and return a new key of ``scope``."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        key = f"pulse_{secrets.token_urlsafe(32)}"
        with self._lock:
            entries = self._read()
            entries.append(
                {
                    "id": secrets.token_hex(4),
                    "scope": scope,
                    "sha256": _digest(key),
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(entries, fh, indent=1)
            os.replace(tmp, self.path)
        return key

    def scope_of(self, key: str) -> str | None:
        """The scope of ``key``, or None when it is not a known key."""
        with self._lock:
            self._refresh()
            digest = _digest(key)
            for known, scope in self._by_digest.items():
                if hmac.compare_digest(known, digest):
                    return scope
        return None

    def _read(self) -> list[dict[str, str]]:
        try:
            return list(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return []

    def _refresh(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._by_digest, self._mtime = {}, None
            return
        if mtime != self._mtime:
            self._by_digest = {e["sha256"]: e["scope"] for e in self._read()}
            self._mtime = mtime
