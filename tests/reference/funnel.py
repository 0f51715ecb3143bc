"""Reference funnel (METRICS.md "Funnel").

- Population: sessions whose start (first event ts) is in ``[start, end)``, after ``where``
  on session attributes. All their events count, also those after ``end``.
- Steps ``product_view`` -> ``add_to_cart`` -> ``begin_checkout`` -> ``purchase``. A session
  reaches step 1 at its earliest ``product_view``; it reaches step k at its earliest
  step-k event with ts >= the time it reached step k-1 (equal ts is enough). Any purchase
  event counts, also one repeating an earlier order_id.
- Per step: ``sessions`` reaching it, ``conversion_from_previous`` = sessions / sessions of
  the previous step, ``conversion_from_first`` = sessions / sessions of step 1; None on a
  zero denominator. For step 1 both are sessions / sessions (1.0, or None when 0).
- ``by`` (country/device/channel) gives the four steps for each value present among the
  population's sessions (values ascending, null last), steps in order within a value.
  ``category`` raises ValueError (the funnel is over sessions).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import polars as pl

from tests.reference.buckets import to_ms
from tests.reference.events import Events
from tests.reference.slices import check_dims, dim_sort_key, filter_sessions, session_col

__all__ = ["FUNNEL_STEPS", "funnel"]

FUNNEL_STEPS = ("product_view", "add_to_cart", "begin_checkout", "purchase")


def funnel(
    events: Events,
    *,
    start: datetime,
    end: datetime,
    by: str | None = None,
    where: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """``[{"step", "sessions", "conversion_from_previous", "conversion_from_first", <by>?}]``."""
    filters = check_dims(by, where)
    if by == "category" or "category" in filters:
        raise ValueError("the funnel is over sessions: slice by country, device or channel")
    start_ms, end_ms = to_ms(start), to_ms(end)
    population = filter_sessions(events, filters).filter(
        (pl.col("session_start_ms") >= start_ms) & (pl.col("session_start_ms") < end_ms)
    )
    key = session_col(by) if by is not None else None
    dim = pl.col(key) if key else pl.lit(None, pl.String)
    session_dim = population.select("session", dim.alias("dim")).unique("session")

    reached: list[dict[str | None, int]] = []  # per step: dim value -> sessions
    previous: pl.DataFrame | None = None  # session -> time it reached the previous step
    for step in FUNNEL_STEPS:
        candidates = population.filter(pl.col("type") == step).select("session", "ts_ms")
        if previous is not None:
            candidates = candidates.join(previous, on="session").filter(
                pl.col("ts_ms") >= pl.col("reached_ms")
            )
        previous = candidates.group_by("session").agg(reached_ms=pl.col("ts_ms").min())
        counts = previous.join(session_dim, on="session").group_by("dim").agg(n=pl.len())
        reached.append(dict(zip(counts["dim"].to_list(), counts["n"].to_list(), strict=True)))

    dims = sorted(set(session_dim["dim"].to_list()), key=dim_sort_key) if by else [None]
    out = []
    for value in dims:
        first = reached[0].get(value, 0)
        before = first
        for step, per_dim in zip(FUNNEL_STEPS, reached, strict=True):
            n = per_dim.get(value, 0)
            row: dict[str, Any] = {
                "step": step,
                "sessions": n,
                "conversion_from_previous": n / before if before else None,
                "conversion_from_first": n / first if first else None,
            }
            if by is not None:
                row[by] = value
            out.append(row)
            before = n
    return out
