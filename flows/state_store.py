"""Versioned per-user state of one shard on local disk, saved incrementally.

The flow keys its state by shard (a fixed hash of ``user_id``), not by user, so Bytewax's
per-key work is paid per shard and batch rather than per event. A shard's whole state is
too large to snapshot at every epoch, so the snapshot Bytewax keeps is only a *generation*
number; the states of the users changed since the previous snapshot are appended here,
tagged with that generation. On resume Bytewax hands back the generation of the last
epoch it committed, and everything written after it is rolled back: the shard then holds
exactly the state that goes with the offsets the source resumes from.

The table is an append-only log (rows in rowid order, no index to maintain): a save is a
sequential insert, and a user's older versions are deleted by rowid once no resume can go
back to them. On resume the saved states are read once, as bytes, and decoded when their
user next shows up.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed snapshot survives the flow's
process being killed (not a power cut, like Bytewax's own recovery store).
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Iterable
from pathlib import Path

__all__ = ["KEEP_GENERATIONS", "ShardStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    gen INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    newest_ms INTEGER NOT NULL,
    blob BLOB                -- NULL: the user was forgotten at this generation
)
"""

# Older versions of a user are kept this many generations: Bytewax resumes from the last
# epoch committed by every worker, at most a couple of epochs behind the newest snapshot.
KEEP_GENERATIONS = 8


class ShardStore:
    """One shard's users' states by generation, in ``path`` (or nowhere when None)."""

    def __init__(self, path: Path | None, resume_gen: int | None) -> None:
        self._db: sqlite3.Connection | None = None
        self.persistent = path is not None
        # The newest saved row of each user: rowid, and (until loaded) newest_ms and state.
        self._latest: dict[str, int] = {}
        self._unloaded: dict[str, tuple[int, bytes | None]] = {}
        # (generation, rowid) of rows superseded at that generation, deleted once it is old,
        # and (generation, rowid, user) of users forgotten then, whose last row goes too.
        self._superseded: deque[tuple[int, int]] = deque()
        self._forgotten: deque[tuple[int, int, str]] = deque()
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
        self._db = db
        if resume_gen is not None:
            db.execute("DELETE FROM state WHERE gen > ?", (resume_gen,))
            self._read_back()

    @property
    def resumed(self) -> bool:
        """Whether saved users may be missing from memory (lookups can find something)."""
        return bool(self._unloaded)

    def _read_back(self) -> None:
        assert self._db is not None
        rows = self._db.execute("SELECT rowid, gen, user_id, newest_ms, blob FROM state")
        for rowid, gen, user, newest, blob in rows:  # in rowid order: oldest first
            self._track(gen, rowid, user, blob is None)
            self._unloaded[user] = (newest, blob)
        for user in [u for u, (_, blob) in self._unloaded.items() if blob is None]:
            del self._unloaded[user]

    def _track(self, gen: int, rowid: int, user: str, forgotten: bool) -> None:
        older = self._latest.get(user)
        if older is not None:
            self._superseded.append((gen, older))
        self._latest[user] = rowid
        if forgotten:
            self._forgotten.append((gen, rowid, user))

    def load(self, user_id: str) -> bytes | None:
        """The saved state of ``user_id`` not loaded yet (None: unknown or forgotten)."""
        saved = self._unloaded.pop(user_id, None)
        return None if saved is None else saved[1]

    def save(self, gen: int, states: Iterable[tuple[str, int, bytes | None]]) -> None:
        """Append ``(user_id, newest_ms, state or None)`` as of ``gen``, atomically."""
        db = self._db
        if db is None:
            return
        rows = [(gen, user, newest, blob) for user, newest, blob in states]
        if not rows:
            return
        db.execute("BEGIN")
        db.executemany("INSERT INTO state VALUES (?, ?, ?, ?)", rows)
        # Rowids of an append are consecutive: the table's maximum counts back to the first.
        (last,) = db.execute("SELECT max(rowid) FROM state").fetchone()
        for rowid, (_, user, _, blob) in enumerate(rows, last - len(rows) + 1):
            self._track(gen, rowid, user, blob is None)
            if blob is None:
                self._unloaded.pop(user, None)
        self._compact(gen - KEEP_GENERATIONS)
        db.execute("COMMIT")

    def idle_users(self, horizon_ms: int) -> list[str]:
        """Saved users not loaded since the resume and idle since before ``horizon_ms``;
        users in memory are the caller's to look at."""
        return [u for u, (newest, _) in self._unloaded.items() if newest < horizon_ms]

    def _compact(self, before: int) -> None:
        """Delete the rows no resume can go back to: versions superseded at a generation
        at or before ``before``, and the last row of a user forgotten then."""
        assert self._db is not None
        old = []
        while self._superseded and self._superseded[0][0] <= before:
            old.append((self._superseded.popleft()[1],))
        while self._forgotten and self._forgotten[0][0] <= before:
            _, rowid, user = self._forgotten.popleft()
            if self._latest.get(user) == rowid:  # not saved again since
                del self._latest[user]
                old.append((rowid,))
        if old:
            self._db.executemany("DELETE FROM state WHERE rowid = ?", old)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
