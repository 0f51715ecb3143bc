"""Versioned per-user state of one shard on local disk, saved incrementally.

The flow keys its state by shard (a fixed hash of ``user_id``), not by user, so Bytewax's
per-key work is paid per shard and batch rather than per event. A shard's whole state is
too large to snapshot at every epoch, so the snapshot Bytewax keeps is only a *generation*
number; the states of the users changed since the previous snapshot are appended here as
one record tagged with that generation. On resume Bytewax hands back the generation of the
last epoch it committed, and every record after it is deleted: the shard then holds
exactly the state that goes with the offsets the source resumes from.

A record stays while it holds the newest state of some user, or while a resume could still
go back to it (:data:`KEEP_GENERATIONS`). When fewer than half of a record's users still
have their newest state in it, those users are saved again with the next generation, so
the log stays within about twice the live state (a log-structured store's compaction).
A record is encoded in one call, states inline; on resume it is read once, its users'
states kept as undecoded slices (``msgspec.Raw``) and decoded when a user next shows up.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed snapshot survives the flow's
process being killed (not a power cut, like Bytewax's own recovery store).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["KEEP_GENERATIONS", "ShardStore"]

# Older records are kept this many generations: Bytewax resumes from the last epoch
# committed by every worker, at most a couple of epochs behind the newest snapshot.
KEEP_GENERATIONS = 8

# (user_id, newest event ms, state or None when forgotten). The state is anything msgspec
# encodes (the caller's state object, or the Raw slice of a user carried over).
Saved = tuple[str, int, Any]
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[str, int, msgspec.Raw]]).decode
_NIL = 1  # the length of an encoded None: a forgotten user
_BIN = frozenset({0xC4, 0xC5, 0xC6})  # a state encoded on its own first (logs before 2026-12)


def _state(raw: msgspec.Raw) -> msgspec.Raw | bytes | None:
    """A saved state as read back: None for a forgotten user."""
    if len(raw) == _NIL:
        return None
    if memoryview(raw)[0] in _BIN:
        return msgspec.msgpack.decode(raw, type=bytes)
    return raw


class ShardStore:
    """One shard's users' states by generation, in ``path`` (or nowhere when None)."""

    def __init__(self, path: Path | None, resume_gen: int | None) -> None:
        self._db: sqlite3.Connection | None = None
        self.persistent = path is not None
        self._home: dict[str, int] = {}  # user -> generation of the record with its newest
        self._live: dict[int, int] = {}  # generation -> users whose newest state is there
        self._size: dict[int, int] = {}  # generation -> users saved in it
        self._members: dict[int, list[str]] = {}  # generation -> users saved in it
        self._dead: dict[int, int] = {}  # generation -> when its last live user moved on
        self._forgets: set[int] = set()  # generations forgetting users
        # Saved users not loaded since a resume: newest event ms and encoded state.
        self._unloaded: dict[str, tuple[int, msgspec.Raw | bytes]] = {}
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_gen is None:  # a fresh start: nothing earlier counts
            for stale in (path, path.with_name(path.name + "-wal")):
                stale.unlink(missing_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS log (gen INTEGER PRIMARY KEY, users BLOB)")
        self._db = db
        if resume_gen is not None:
            db.execute("DELETE FROM log WHERE gen > ?", (resume_gen,))
            for gen, blob in db.execute("SELECT gen, users FROM log ORDER BY gen"):
                saved = [(user, newest, _state(raw)) for user, newest, raw in _decode(blob)]
                self._index(gen, saved)
                for user, newest, state in saved:
                    if state is None:
                        self._unloaded.pop(user, None)
                    else:
                        self._unloaded[user] = (newest, state)

    @property
    def resumed(self) -> bool:
        """Whether saved users may be missing from memory (lookups can find something)."""
        return bool(self._unloaded)

    def load(self, user_id: str) -> msgspec.Raw | bytes | None:
        """The encoded saved state of ``user_id`` not loaded yet (None: unknown or
        forgotten)."""
        saved = self._unloaded.pop(user_id, None)
        return None if saved is None else saved[1]

    def idle_users(self, horizon_ms: int) -> list[str]:
        """Saved users not loaded since the resume and idle since before ``horizon_ms``;
        users in memory are the caller's to look at."""
        return [u for u, (newest, _) in self._unloaded.items() if newest < horizon_ms]

    def to_rewrite(self, gen: int) -> list[str]:
        """Users to save again with generation ``gen`` so that old, mostly superseded
        records can go: those whose newest state sits in such a record."""
        home = self._home
        return [
            user
            for g, live in self._live.items()
            if live and g <= gen - KEEP_GENERATIONS and live * 2 < self._size[g]
            for user in self._members[g]
            if home.get(user) == g
        ]

    def save(self, gen: int, saved: Sequence[Saved], rewrite: Sequence[str] = ()) -> None:
        """Append ``(user_id, newest_ms, state or None)`` as generation ``gen``; users of
        ``rewrite`` (from :meth:`to_rewrite`) not loaded are carried over as saved."""
        db = self._db
        if db is None:
            return
        rows = list(saved)
        unloaded = self._unloaded
        rows.extend((user, *unloaded[user]) for user in rewrite if user in unloaded)
        if not rows:
            return
        self._index(gen, rows)
        done = self._deletable(gen)
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO log VALUES (?, ?)", (gen, _encode(rows)))
        db.executemany("DELETE FROM log WHERE gen = ?", [(g,) for g in done])
        db.execute("COMMIT")
        for g in done:
            del self._live[g], self._size[g], self._dead[g], self._members[g]
            self._forgets.discard(g)

    def _deletable(self, gen: int) -> list[int]:
        """Records no resume needs: no user's newest state in them for KEEP_GENERATIONS.
        One that forgets users goes only once it is the oldest, or an older record
        would bring those users back on a resume."""
        done: list[int] = []
        oldest = True
        for g in sorted(self._size):
            since = self._dead.get(g)
            if since is None or since > gen - KEEP_GENERATIONS:
                oldest = False
                continue
            if g in self._forgets and not oldest:
                continue
            done.append(g)
        return done

    def _index(self, gen: int, rows: Sequence[Saved]) -> None:
        home, live, dead = self._home, self._live, self._dead
        live[gen] = self._size[gen] = len(rows)
        self._members[gen] = [user for user, _, _ in rows]
        for user, _, state in rows:
            old = home.get(user)
            if old is not None:
                live[old] -= 1
                if not live[old]:
                    dead[old] = gen
            if state is None:  # forgotten: this record holds it only for a resume
                home.pop(user, None)
                live[gen] -= 1
                self._forgets.add(gen)
            else:
                home[user] = gen
        if not live[gen]:
            dead[gen] = gen

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
