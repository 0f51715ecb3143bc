"""Reference metric series (METRICS.md "Traffic and engagement" and "Commerce").

For each bucket R of the range (see :mod:`tests.reference.buckets`) and slice S:

- ``events``: events with ts in R. ``pageviews``: ``page_view`` + ``product_view`` in R.
- ``visitors``: distinct user_id with an event in R. ``sessions``: distinct sessions with
  an event in R. ``traffic_sources``: ``sessions`` by ``channel`` (``by`` may only be
  None or "channel").
- ``bounce_rate`` / ``pages_per_session`` / ``avg_session_duration_s``: over sessions whose
  *start* is in R; each session's events, pageviews and duration count over the whole
  session (also events after R).
- ``orders``: orders (first purchase of each order_id, see events.py) whose ts is in R;
  ``revenue``: sum of their ``revenue`` in EUR; ``units``: sum of their items' quantity.
- ``aov`` = revenue / orders; ``conversion_rate`` = sessions with a ``purchase`` event in R
  (duplicate-order purchases included) / sessions; ``add_to_cart_rate`` likewise with
  ``add_to_cart``; ``revenue_per_visitor`` = revenue / visitors. A zero denominator gives
  None.
- Slices by/where ``country``/``device``/``channel`` use the session attributes of each
  event's, session's or order's session. ``category`` is allowed for ``orders``,
  ``revenue`` and ``units`` only (anything else raises ValueError) and uses the order
  items' own category: revenue = sum of ``price * quantity`` in EUR of the items of that
  category (not the order's ``revenue`` field), units = their quantities, orders = distinct
  orders with at least one item of that category.
- With ``by``, the dimension values listed are those present in the range: for a session
  dim, the session attribute of any event in the range (after ``where``); for category,
  the items of the orders in the range. Each listed value gets every bucket (counts 0,
  ratios None). A null value is its own group (``None``), sorted last. No value in
  the range -> an empty list.
- Counts are ints, ``revenue`` is a float (0.0 when empty), ratios are float or None.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import polars as pl

from tests.reference.buckets import assign_bucket, bucket_frame, make_buckets
from tests.reference.events import PAGEVIEW_TYPES, Events
from tests.reference.slices import SESSION_DIMS, check_dims, filter_sessions, session_col

__all__ = ["CATEGORY_METRICS", "METRICS", "metric_series", "order_items"]

METRICS: tuple[str, ...] = (
    "events",
    "pageviews",
    "visitors",
    "sessions",
    "bounce_rate",
    "pages_per_session",
    "avg_session_duration_s",
    "traffic_sources",
    "orders",
    "revenue",
    "aov",
    "conversion_rate",
    "add_to_cart_rate",
    "revenue_per_visitor",
    "units",
)
CATEGORY_METRICS = ("orders", "revenue", "units")

_INT_BASES = (
    "events",
    "pageviews",
    "visitors",
    "sessions",
    "purchase_sessions",
    "cart_sessions",
    "started",
    "bounced",
    "started_pageviews",
    "orders",
    "units",
)
_FLOAT_BASES = ("started_duration_s", "revenue")


def _ratio(num: str, den: str) -> pl.Expr:
    return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).otherwise(None)


_VALUE: dict[str, pl.Expr] = {
    "events": pl.col("events"),
    "pageviews": pl.col("pageviews"),
    "visitors": pl.col("visitors"),
    "sessions": pl.col("sessions"),
    "traffic_sources": pl.col("sessions"),
    "bounce_rate": _ratio("bounced", "started"),
    "pages_per_session": _ratio("started_pageviews", "started"),
    "avg_session_duration_s": _ratio("started_duration_s", "started"),
    "orders": pl.col("orders"),
    "revenue": pl.col("revenue"),
    "units": pl.col("units"),
    "aov": _ratio("revenue", "orders"),
    "conversion_rate": _ratio("purchase_sessions", "sessions"),
    "add_to_cart_rate": _ratio("cart_sessions", "sessions"),
    "revenue_per_visitor": _ratio("revenue", "visitors"),
}


def metric_series(
    events: Events,
    metric: str,
    *,
    start: datetime,
    end: datetime,
    interval: str = "1h",
    by: str | None = None,
    where: Mapping[str, str] | None = None,
    tz: str = "UTC",
) -> list[dict[str, Any]]:
    """``[{"ts", "value", <by>?}]`` for every bucket of ``[start, end)``, by (ts, dim)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")
    filters = check_dims(by, where)
    if metric == "traffic_sources":
        if by not in (None, "channel"):
            raise ValueError("traffic_sources is broken down by channel only")
        by = "channel"
    uses_category = by == "category" or "category" in filters
    if uses_category and metric not in CATEGORY_METRICS:
        raise ValueError(f"{metric} cannot be sliced by category (only {CATEGORY_METRICS})")

    buckets = make_buckets(start, end, interval, tz)
    scoped = filter_sessions(events, filters)
    in_range = assign_bucket(scoped, "ts_ms", buckets)
    orders = assign_bucket(scoped.filter(pl.col("is_order")), "ts_ms", buckets)
    items = order_items(orders)
    if "category" in filters:
        items = items.filter(pl.col("category") == str(filters["category"]))

    keys = [] if by is None else ["category" if by == "category" else session_col(by)]
    if uses_category:
        bases = [_item_bases(items, keys)]
    else:
        bases = [
            _traffic_bases(in_range, keys),
            _session_bases(scoped, buckets, keys),
            _order_bases(orders, items, keys),
        ]

    grid = bucket_frame(buckets)
    if keys:
        source = items if by == "category" else in_range
        grid = grid.join(source.select(keys).unique(), how="cross")
    for base in bases:
        grid = grid.join(base, on=["bucket", *keys], how="left", nulls_equal=True)
    grid = grid.with_columns(
        [pl.col(c).fill_null(0) for c in _INT_BASES if c in grid.columns]
        + [pl.col(c).fill_null(0.0) for c in _FLOAT_BASES if c in grid.columns]
    ).with_columns(value=_VALUE[metric])
    grid = grid.sort(["bucket", *keys], nulls_last=True)

    out = []
    for row in grid.iter_rows(named=True):
        point = {"ts": row["label"], "value": row["value"]}
        if by is not None:
            point[by] = row[keys[0]]
        out.append(point)
    return out


def order_items(orders: pl.DataFrame) -> pl.DataFrame:
    """One row per item of the given order events (their columns + the item's fields)."""
    keep = [c for c in orders.columns if c.startswith("session") or c == "bucket"]
    return (
        orders.select("order_id", "ts_ms", *keep, "items")
        .explode("items")
        .filter(pl.col("items").is_not_null())
        .unnest("items")
    )


def _traffic_bases(in_range: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    def sessions_with(kind: str) -> pl.Expr:
        return pl.col("session").filter(pl.col("type") == kind).n_unique()

    return in_range.group_by("bucket", *keys).agg(
        events=pl.len().cast(pl.Int64),
        pageviews=pl.col("type").is_in(PAGEVIEW_TYPES).sum().cast(pl.Int64),
        visitors=pl.col("user_id").n_unique().cast(pl.Int64),
        sessions=pl.col("session").n_unique().cast(pl.Int64),
        purchase_sessions=sessions_with("purchase").cast(pl.Int64),
        cart_sessions=sessions_with("add_to_cart").cast(pl.Int64),
    )


def _session_bases(scoped: pl.DataFrame, buckets: list[Any], keys: list[str]) -> pl.DataFrame:
    columns = ["session", "session_start_ms", "session_events", "session_pageviews"]
    one_row_per_session = scoped.select(
        *columns, "session_duration_s", *[session_col(d) for d in SESSION_DIMS]
    ).unique("session")
    started = assign_bucket(one_row_per_session, "session_start_ms", buckets)
    return started.group_by("bucket", *keys).agg(
        started=pl.len().cast(pl.Int64),
        bounced=(pl.col("session_events") == 1).sum().cast(pl.Int64),
        started_pageviews=pl.col("session_pageviews").sum().cast(pl.Int64),
        started_duration_s=pl.col("session_duration_s").sum().cast(pl.Float64),
    )


def _order_bases(orders: pl.DataFrame, items: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    totals = orders.group_by("bucket", *keys).agg(
        orders=pl.col("order_id").n_unique().cast(pl.Int64),
        revenue=pl.col("revenue_eur").sum().cast(pl.Float64),
    )
    units = items.group_by("bucket", *keys).agg(units=pl.col("quantity").sum().cast(pl.Int64))
    return totals.join(units, on=["bucket", *keys], how="full", coalesce=True, nulls_equal=True)


def _item_bases(items: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    return items.group_by("bucket", *keys).agg(
        orders=pl.col("order_id").n_unique().cast(pl.Int64),
        revenue=pl.col("eur").sum().cast(pl.Float64),
        units=pl.col("quantity").sum().cast(pl.Int64),
    )
