"""Reference top products (METRICS.md "Products").

- Range R = ``[start, end)``. Per ``product_id``: ``views`` = ``product_view`` events in R,
  ``add_to_carts`` = ``add_to_cart`` events in R (events, not quantities), ``units`` and
  ``revenue`` (EUR, ``price * quantity`` at the order's dated rate) from the items of the
  orders (first purchase of each order_id) whose ts is in R.
  ``view_to_purchase_rate`` = units / views, None when views = 0.
- A product is listed when it has a view, an add-to-cart or a sold unit in R.
- ``category`` of a product: the category of the first event mentioning it that has one
  (over all events, not only R), first by ts, then arrival, then item position in a
  purchase; None when no event gives one.
- Order: the chosen measure (``revenue`` | ``views`` | ``units``) descending -- revenue
  compared rounded to 0.01 EUR -- then product_id ascending; the first ``limit`` rows.
- ``where``: ``category`` matches the product's category; country/device/channel keep the
  events and orders of sessions with that attribute.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import polars as pl

from tests.reference.buckets import to_ms
from tests.reference.events import Events
from tests.reference.metrics import order_items
from tests.reference.slices import check_dims, filter_sessions

__all__ = ["TOP_BY", "product_categories", "top_products"]

TOP_BY = ("revenue", "views", "units")


def top_products(
    events: Events,
    *,
    start: datetime,
    end: datetime,
    by: str = "revenue",
    limit: int = 10,
    where: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Top ``limit`` products of ``[start, end)`` by ``by``, ties by product_id."""
    if by not in TOP_BY:
        raise ValueError(f"by must be one of {TOP_BY}, not {by!r}")
    if limit < 0:
        raise ValueError("limit must be >= 0")
    filters = check_dims(None, where)
    start_ms, end_ms = to_ms(start), to_ms(end)
    in_range = filter_sessions(events, filters).filter(
        (pl.col("ts_ms") >= start_ms) & (pl.col("ts_ms") < end_ms)
    )

    def count_of(kind: str, name: str) -> pl.DataFrame:
        of_kind = in_range.filter((pl.col("type") == kind) & pl.col("product_id").is_not_null())
        return of_kind.group_by("product_id").agg(pl.len().cast(pl.Int64).alias(name))

    views = count_of("product_view", "views")
    carts = count_of("add_to_cart", "add_to_carts")
    sold = (
        order_items(in_range.filter(pl.col("is_order")))
        .group_by("product_id")
        .agg(
            units=pl.col("quantity").sum().cast(pl.Int64),
            revenue=pl.col("eur").sum().cast(pl.Float64),
        )
    )
    table = pl.concat([f.select("product_id") for f in (views, carts, sold)]).unique()
    for part in (views, carts, sold):
        table = table.join(part, on="product_id", how="left")
    table = (
        table.join(product_categories(events), on="product_id", how="left")
        .with_columns(
            pl.col("views", "add_to_carts", "units").fill_null(0),
            pl.col("revenue").fill_null(0.0),
        )
        .with_columns(
            view_to_purchase_rate=pl.when(pl.col("views") > 0)
            .then(pl.col("units") / pl.col("views"))
            .otherwise(None)
        )
    )
    if "category" in filters:
        table = table.filter(pl.col("category") == str(filters["category"]))
    measure = pl.col("revenue").round(2) if by == "revenue" else pl.col(by)
    table = table.sort([measure, pl.col("product_id")], descending=[True, False]).head(limit)
    columns = ["product_id", "category", "views", "add_to_carts", "units", "revenue"]
    return table.select(*columns, "view_to_purchase_rate").to_dicts()


def product_categories(events: Events) -> pl.DataFrame:
    """``product_id`` -> ``category`` from the first event mentioning it with a category."""
    direct = events.filter(pl.col("product_id").is_not_null()).select(
        "product_id", "category", "ts_ms", "arrival", pos=pl.lit(0, pl.Int64)
    )
    in_items = (
        events.filter(pl.col("items").is_not_null())
        .select(
            "ts_ms",
            "arrival",
            "items",
            pos=pl.int_ranges(0, pl.col("items").list.len(), dtype=pl.Int64),
        )
        .explode("items", "pos")
        .filter(pl.col("items").is_not_null())
        .select(
            pl.col("items").struct.field("product_id"),
            pl.col("items").struct.field("category"),
            "ts_ms",
            "arrival",
            "pos",
        )
    )
    return (
        pl.concat([direct, in_items])
        .filter(pl.col("category").is_not_null())
        .sort("ts_ms", "arrival", "pos")
        .group_by("product_id", maintain_order=True)
        .agg(pl.col("category").first())
    )
