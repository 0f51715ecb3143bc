"""The columns of the rows the flow writes, in the order its row builders fill them.

Rows are plain lists (cheap to build and to encode), so a column is found by its position:
this module is the one place that order is written down. :mod:`flows.rows` builds the rows
in this order and finds columns through :func:`position`; :mod:`warehouse.writer` inserts
them under these names; :mod:`warehouse.moves` decodes moves in :data:`MOVE_COLUMNS`.

Times are epoch milliseconds in a row, sent to ClickHouse as seconds with a fraction
(:data:`TIME_COLUMNS`); ``version`` is 0 in a row and stamped when the batch is encoded.
"""

from __future__ import annotations

__all__ = [
    "COLUMNS",
    "MOVES",
    "MOVE_COLUMNS",
    "RELABELS",
    "RELABEL_COLUMNS",
    "TIME_COLUMNS",
    "position",
]

COLUMNS: dict[str, list[str]] = {
    "events": [
        "ts", "event_id", "type", "user_id", "session_key", "country", "device", "channel",
        "page", "product_id", "category", "price_eur", "quantity", "query", "cart_value_eur",
        "order_id", "revenue_eur", "is_order", "items.product_id", "items.category",
        "items.price_eur", "items.quantity", "version", "topic", "partition", "offset",
    ],
    "sessions": [
        "session_key", "user_id", "start", "end", "country", "device", "channel", "n_events",
        "n_pageviews", "version", "deleted",
    ],
    "duplicates": ["ts", "event_id", "topic", "partition", "offset"],
    "bot_events": [
        "ts", "event_id", "type", "user_id", "user_agent", "page", "version", "topic",
        "partition", "offset",
    ],
    # before flow_progress: the writer inserts in this order, and progress comes last
    "exposures": ["experiment", "user_id", "ts", "event_id", "variant", "version"],
    "flow_progress": ["topic", "partition", "max_ts", "offset", "updated_at"],
}  # fmt: skip
"""The tables' columns, in the order of their rows."""

# DateTime64 columns: epoch milliseconds in a row (an integer would be read as seconds).
TIME_COLUMNS = frozenset({"ts", "start", "end", "max_ts", "updated_at"})

MOVES = "moves"  # events a merge moved to another session (not a table: warehouse.moves)
MOVE_COLUMNS = ["user_id", "old_key", "new_key", "times", "version"]
"""A move's fields, in the order of its row (``times``: epoch ms of the moved events)."""


RELABELS = "relabels"  # visits identified: anonymous rows now of a user (warehouse.identity)
RELABEL_COLUMNS = ["anonymous_id", "session_key", "first", "last", "user_id", "version"]
"""A relabel's fields: the anonymous id and session whose rows between ``first`` and
``last`` (epoch ms) now belong to ``user_id``."""


def position(table: str, column: str) -> int:
    """Where ``column`` is in a row of ``table`` (or of :data:`MOVES`, :data:`RELABELS`)."""
    if table == RELABELS:
        return RELABEL_COLUMNS.index(column)
    return (MOVE_COLUMNS if table == MOVES else COLUMNS[table]).index(column)
