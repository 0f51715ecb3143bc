"""Events moved to another session by the flow's merges, rewritten inside the warehouse.

When a late event bridges two derived sessions, the later one's events move to the
surviving session. The flow does not keep those events (only their times): the writer
rewrites their rows here, after inserting the batch that made the merge and every batch
before it, so each row to move is already in ``events``. A moved row is the row as
stored with the new ``session_key`` and the merging batch's ``version``, higher than any
the row was written with; ``ReplacingMergeTree(version)`` keeps it. Rows are found
through the primary key by their times, then by user and old key.

Applied again (a batch written twice after a crash), a move finds no row under its old
key any more and writes nothing. Moves of several batches written together are applied
as one: a session moved into one that a later batch moved again goes straight to the
last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import msgspec
from clickhouse_connect.driver.client import Client

from warehouse.schema import MOVES

__all__ = ["MOVES", "apply_moves", "collapse"]

# As written by the flow (warehouse.schema.MOVE_COLUMNS): user, old key, new key, times
# (epoch ms), version.
Move = tuple[str, str, str, list[int], int]
_decode_lines = msgspec.json.Decoder(Move).decode_lines


@lru_cache(maxsize=2)
def _move_sql(columns: tuple[str, ...]) -> str:
    """The statement rewriting moved rows of ``events`` (its columns as inserted)."""
    changed = {
        "session_key": "transform(session_key, {olds:Array(String)}, {news:Array(String)})",
        "version": "transform(session_key, {olds:Array(String)}, {versions:Array(UInt64)}, 0)",
    }
    return f"""
INSERT INTO events ({", ".join(f"`{c}`" for c in columns)})
SELECT {", ".join(changed.get(c, f"`{c}`") for c in columns)}
FROM events FINAL
WHERE ts IN (SELECT arrayJoin(arrayMap(t -> fromUnixTimestamp64Milli(t), {{times:Array(Int64)}})))
  AND (user_id, session_key) IN (SELECT arrayJoin(arrayZip({{users:Array(String)}},
                                                          {{olds:Array(String)}})))
"""


def collapse(moves: Sequence[Move]) -> list[Move]:
    """Moves in the order made, as one move per old key to where it ends up: a move
    into a session that a later move moves again goes to the later one's new key, at the
    later version."""
    final: dict[tuple[str, str], list[object]] = {}
    for user, old, new, times, version in moves:
        for move in final.values():
            if move[0] == user and move[2] == old:
                move[2], move[4] = new, max(version, move[4])  # type: ignore[call-overload]
        final.setdefault((user, old), [user, old, new, times, version])
    return [tuple(m) for m in final.values()]  # type: ignore[misc]


def apply_moves(client: Client, lines: bytes, columns: Sequence[str]) -> None:
    """Rewrite the rows of the moved events of one write (JSON lines of
    :data:`~warehouse.schema.MOVE_COLUMNS`), after the write's rows are inserted;
    ``columns``: those of ``events`` the writer inserts."""
    moves = collapse(_decode_lines(lines))
    if not moves:
        return
    client.command(
        _move_sql(tuple(columns)),
        parameters={
            "users": [m[0] for m in moves],
            "olds": [m[1] for m in moves],
            "news": [m[2] for m in moves],
            "versions": [m[4] for m in moves],
            "times": sorted({t for m in moves for t in m[3]}),
        },
    )
