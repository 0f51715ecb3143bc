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
Which record holds a user's newest state is the shard's to remember (it keeps every
user's encoded state anyway, :mod:`flows.shard`); the store counts per record only how
many users still live there, and reads a record's users back from disk when it is to be
compacted. A record is encoded in one call, states inline.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed snapshot survives the flow's
process being killed (not a power cut, like Bytewax's own recovery store). The log is only
appended to and read back at a resume, so SQLite's page cache is kept small.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["KEEP_GENERATIONS", "Saved", "ShardStore"]

# Older records are kept this many generations: Bytewax resumes from the last epoch
# committed by every worker, at most a couple of epochs behind the newest snapshot.
KEEP_GENERATIONS = 8

# (user_id, newest event ms, state or None when forgotten, generation of the record that
# held the user's newest state until now or None). The state is anything msgspec encodes
# inline (here the Raw slice of the user's encoded state).
Saved = tuple[str, int, Any, int | None]
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[str, int, msgspec.Raw]]).decode
_NIL = 1  # the length of an encoded None: a forgotten user
_PAGE_CACHE_KIB = 256  # per shard; SQLite's default is 2 MiB


def _state(raw: msgspec.Raw) -> bytes | None:
    """A saved state as read back, encoded (None for a forgotten user)."""
    return None if len(raw) == _NIL else bytes(raw)


@dataclass(slots=True)
class _Record:
    """What the store knows of one saved record."""

    size: int  # users saved in it
    live: int  # users whose newest state is in it
    dead_since: int | None = None  # the generation in which its last live user moved on
    forgets: bool = False  # it forgets users: it goes only once it is the oldest


class ShardStore:
    """One shard's users' states by generation, in ``path`` (or nowhere when None)."""

    def __init__(self, path: Path | None, resume_gen: int | None) -> None:
        self._db: sqlite3.Connection | None = None
        self.persistent = path is not None
        self._records: dict[int, _Record] = {}
        # What a resume found, for the shard to take: user -> (generation, newest, state).
        self._found: dict[str, tuple[int, int, bytes]] = {}
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_gen is None:  # a fresh start: nothing earlier counts
            for stale in (path, path.with_name(path.name + "-wal")):
                stale.unlink(missing_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{_PAGE_CACHE_KIB}")
        db.execute("CREATE TABLE IF NOT EXISTS log (gen INTEGER PRIMARY KEY, users BLOB)")
        self._db = db
        if resume_gen is not None:
            db.execute("DELETE FROM log WHERE gen > ?", (resume_gen,))
            self._read_back()

    def _read_back(self) -> None:
        assert self._db is not None
        found = self._found
        for gen, blob in self._db.execute("SELECT gen, users FROM log ORDER BY gen"):
            saved = [(user, newest, _state(raw), found.get(user, (None,))[0])
                     for user, newest, raw in _decode(blob)]  # fmt: skip
            self._index(gen, saved)
            for user, newest, state, _ in saved:
                if state is None:
                    found.pop(user, None)
                else:
                    found[user] = (gen, newest, state)

    def take_found(self) -> dict[str, tuple[int, int, bytes]]:
        """The users a resume read back: ``user -> (generation of the record holding
        the newest state, newest event ms, encoded state)``; empty afterwards."""
        found, self._found = self._found, {}
        return found

    def to_rewrite(self, gen: int) -> list[tuple[int, list[str]]]:
        """Records old and mostly superseded enough that the users whose newest state is
        still there should be saved again with generation ``gen``, so they can go:
        ``(record's generation, the users saved in it)``, read back from disk."""
        old = [g for g, r in self._records.items()
               if r.live and g <= gen - KEEP_GENERATIONS and r.live * 2 < r.size]  # fmt: skip
        if not old or self._db is None:
            return []
        read = self._db.execute
        return [(g, [user for user, _, _ in _decode(blob)])
                for g in old
                for (blob,) in read("SELECT users FROM log WHERE gen = ?", (g,))]  # fmt: skip

    def save(self, gen: int, saved: Sequence[Saved]) -> None:
        """Append ``saved`` (see :data:`Saved`) as generation ``gen``."""
        db = self._db
        if db is None or not saved:
            return
        self._index(gen, saved)
        done = self._deletable(gen)
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO log VALUES (?, ?)",
                   (gen, _encode([row[:3] for row in saved])))  # fmt: skip
        db.executemany("DELETE FROM log WHERE gen = ?", [(g,) for g in done])
        db.execute("COMMIT")
        for g in done:
            del self._records[g]

    def erase(self, newest_in: dict[str, int | None], gen: int) -> None:
        """Remove every saved entry of these users (CONTRACT §11: an erased user leaves
        nothing on disk), given the generation of the record holding each one's newest
        state (None: not held) and the shard's generation now. Reads the whole log: an
        erasure is rare, and its cost is measured in docs/benchmarks.md."""
        db = self._db
        if db is None or not newest_in:
            return
        changed = []
        for g, blob in db.execute("SELECT gen, users FROM log").fetchall():
            entries = _decode(blob)
            kept = [e for e in entries if e[0] not in newest_in]
            if len(kept) == len(entries):
                continue
            changed.append((g, kept))
            record = self._records.get(g)
            if record is None:
                continue
            record.size -= len(entries) - len(kept)
            record.live -= sum(1 for e in entries if e[0] in newest_in and newest_in[e[0]] == g)
            if record.live <= 0 and record.dead_since is None:
                record.live, record.dead_since = 0, gen
        if not changed:
            return
        db.execute("PRAGMA secure_delete=ON")  # the old entries' bytes are overwritten
        db.execute("BEGIN")
        db.executemany("UPDATE log SET users = ? WHERE gen = ?",
                       [(_encode(kept), g) for g, kept in changed])  # fmt: skip
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # and not left in the write-ahead log

    def _deletable(self, gen: int) -> list[int]:
        """Records no resume needs: no user's newest state in them for KEEP_GENERATIONS.
        One that forgets users goes only once it is the oldest, or an older record
        would bring those users back on a resume."""
        done: list[int] = []
        oldest = True
        for g in sorted(self._records):
            record = self._records[g]
            since = record.dead_since
            if since is None or since > gen - KEEP_GENERATIONS:
                oldest = False
                continue
            if record.forgets and not oldest:
                continue
            done.append(g)
        return done

    def _index(self, gen: int, saved: Sequence[Saved]) -> None:
        records = self._records
        record = records[gen] = _Record(len(saved), len(saved))
        for _, _, state, before in saved:
            old = None if before is None else records.get(before)
            if old is not None:
                old.live -= 1
                if not old.live:
                    old.dead_since = gen
            if state is None:  # forgotten: this record holds it only for a resume
                record.live -= 1
                record.forgets = True
        if not record.live:
            record.dead_since = gen

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
