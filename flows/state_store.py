"""Versioned per-user state of one shard on local disk, saved incrementally.

The flow keys its state by shard (a fixed hash of ``user_id``), not by user, so Bytewax's
per-key work is paid per shard and batch rather than per event. A shard's whole state is
too large to snapshot at every epoch, so the snapshot Bytewax keeps is only a *generation*
number; the states of the users changed since the previous snapshot are written here,
tagged with that generation. On resume Bytewax hands back the generation of the last
epoch it committed, and everything written after it is rolled back: the shard then holds
exactly the state that goes with the offsets the source resumes from.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed snapshot survives the flow's
process being killed (not a power cut, like Bytewax's own recovery store).
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ShardStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    user_id TEXT NOT NULL,
    gen INTEGER NOT NULL,
    newest_ms INTEGER NOT NULL,
    blob BLOB,               -- NULL: the user was forgotten at this generation
    PRIMARY KEY (user_id, gen)
) WITHOUT ROWID
"""

# Older versions of a user are kept this many generations: Bytewax resumes from the last
# epoch committed by every worker, at most a couple of epochs behind the newest snapshot.
KEEP_GENERATIONS = 8


class ShardStore:
    """One shard's users' states by generation, in ``path`` (or nowhere when None)."""

    def __init__(self, path: Path | None, resume_gen: int | None) -> None:
        self._db: sqlite3.Connection | None = None
        self.resumed = False  # whether saved users may be missing from memory
        self.persistent = path is not None
        # Users written at each recent generation, to drop their older versions later.
        self._recent: deque[tuple[int, list[str]]] = deque()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_gen is None:  # a fresh start: nothing earlier counts
            for stale in (path, path.with_name(path.name + "-wal")):
                stale.unlink(missing_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        if resume_gen is not None:
            db.execute("DELETE FROM state WHERE gen > ?", (resume_gen,))
            self.resumed = db.execute("SELECT 1 FROM state LIMIT 1").fetchone() is not None
        self._db = db

    def load(self, user_id: str) -> bytes | None:
        """The newest saved state of ``user_id`` (None: unknown or forgotten)."""
        if self._db is None or not self.resumed:
            return None
        row = self._db.execute(
            "SELECT blob FROM state WHERE user_id = ? ORDER BY gen DESC LIMIT 1", (user_id,)
        ).fetchone()
        return None if row is None else row[0]

    def save(self, gen: int, states: Iterable[tuple[str, int, bytes | None]]) -> None:
        """Write ``(user_id, newest_ms, state or None)`` as of ``gen``, atomically."""
        if self._db is None:
            return
        db = self._db
        rows = [(user, gen, newest, blob) for user, newest, blob in states]
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", rows)
        self._compact(gen - KEEP_GENERATIONS)
        db.execute("COMMIT")
        self._recent.append((gen, [row[0] for row in rows]))

    def idle_users(self, horizon_ms: int) -> list[tuple[str, int]]:
        """Saved users (with their newest event time) idle since before ``horizon_ms``.

        Only a resumed store can hold users the flow has not loaded; otherwise every saved
        user is in memory and forgotten there, so this costs nothing."""
        if self._db is None or not self.resumed:
            return []
        return self._db.execute(
            "SELECT user_id, newest_ms FROM state AS s WHERE blob IS NOT NULL "
            "AND newest_ms < ? AND gen = (SELECT max(gen) FROM state WHERE user_id = s.user_id)",
            (horizon_ms,),
        ).fetchall()

    def _compact(self, before: int) -> None:
        """Drop versions no resume can go back to: for a user written at a generation at or
        before ``before``, its older versions (and all of it when it was forgotten then)."""
        assert self._db is not None
        while self._recent and self._recent[0][0] <= before:
            gen, users = self._recent.popleft()
            self._db.executemany(
                "DELETE FROM state WHERE user_id = ? AND gen < ?", ((u, gen) for u in users)
            )
            self._db.execute("DELETE FROM state WHERE gen = ? AND blob IS NULL", (gen,))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
