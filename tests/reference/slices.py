"""Slicing rules shared by metrics, funnel and products.

- ``country``, ``device``, ``channel`` are *session* attributes (the session's first
  event), columns ``session_country`` etc. of the Events frame.
- ``category`` is a product dimension: an order item's own ``category`` for
  orders/revenue/units, the product's category for top products.
- ``where`` is ``{dim: value}``; several entries are ANDed; a value matches by string
  equality (a null attribute never matches).
- Null dimension values are a group of their own in ``by`` breakdowns (reported as
  ``None``) and sort after every non-null value.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

__all__ = ["SESSION_DIMS", "check_dims", "dim_sort_key", "filter_sessions", "session_col"]

SESSION_DIMS = ("country", "device", "channel")
_ALL_DIMS = (*SESSION_DIMS, "category")


def session_col(dim: str) -> str:
    """The Events column holding a session attribute."""
    return f"session_{dim}"


def check_dims(by: str | None, where: Mapping[str, str] | None) -> dict[str, str]:
    """Validate ``by``/``where`` names; return ``where`` as a plain dict."""
    where = dict(where or {})
    for dim in [by, *where] if by is not None else list(where):
        if dim not in _ALL_DIMS:
            raise ValueError(f"unknown dimension {dim!r}; use one of {_ALL_DIMS}")
    return where


def filter_sessions(frame: pl.DataFrame, where: Mapping[str, str]) -> pl.DataFrame:
    """Keep rows whose session attributes match every session-dim entry of ``where``."""
    for dim, value in where.items():
        if dim in SESSION_DIMS:
            frame = frame.filter(pl.col(session_col(dim)) == str(value))
    return frame


def dim_sort_key(value: str | None) -> tuple[bool, str]:
    """Sort key: values ascending, null last."""
    return (value is None, value or "")
