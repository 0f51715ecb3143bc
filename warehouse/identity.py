"""Visits identified after the fact (CONTRACT §9), rewritten inside the warehouse.

A visitor browses under an anonymous id, then identifies (Segment's ``identify``, or any
message carrying both ids): from then on the flow writes that visitor's events under the
user id, and the rows it wrote before, those of the same session, must follow. The flow
keeps no events, so the writer rewrites them here after inserting the batch that
identified the visitor: each row as stored with the new ``user_id`` and that batch's
``version``, higher than any it was written with (``ReplacingMergeTree(version)`` keeps
it). Rows are found through the primary key by the session's time range, then by the
anonymous id and the session key.

Applied again (a batch written twice after a crash), a relabel finds no row under the
anonymous id any more and writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import msgspec
from clickhouse_connect.driver.client import Client

__all__ = ["apply_relabels"]

# As written by the flow (warehouse.schema.RELABEL_COLUMNS).
Relabel = tuple[str, str, int, int, str, int]
_decode_lines = msgspec.json.Decoder(Relabel).decode_lines


@lru_cache(maxsize=2)
def _relabel_sql(columns: tuple[str, ...]) -> str:
    """The statement rewriting one identified session's anonymous rows of ``events``."""
    changed = {"user_id": "{user:String}", "version": "{version:UInt64}"}
    return f"""
INSERT INTO events ({", ".join(f"`{c}`" for c in columns)})
SELECT {", ".join(changed.get(c, f"`{c}`") for c in columns)}
FROM events FINAL
WHERE ts >= fromUnixTimestamp64Milli({{first:Int64}})
  AND ts <= fromUnixTimestamp64Milli({{last:Int64}})
  AND user_id = {{anonymous:String}} AND session_key = {{key:String}}
"""


def apply_relabels(client: Client, lines: bytes, columns: Sequence[str]) -> None:
    """Rewrite the anonymous rows of the sessions identified in one write (JSON lines of
    :data:`~warehouse.schema.RELABEL_COLUMNS`), after the write's rows and moves are in;
    ``columns``: those of ``events`` the writer inserts."""
    sql = _relabel_sql(tuple(columns))
    for anonymous, key, first, last, user, version in _decode_lines(lines):
        client.command(
            sql,
            parameters={"anonymous": anonymous, "key": key, "first": first, "last": last,
                        "user": user, "version": version},
        )  # fmt: skip
