"""The metrics of docs/metrics.md as SQL over the warehouse tables.

Each metric names the rows it is computed over (``events``: accepted events by their time;
``sessions``: sessions by their start; ``items``: order items by their order's time) and the
aggregate that gives its value. Queries are built from these pieces with bound values only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DIMENSIONS", "METRICS", "Metric"]

Source = Literal["events", "sessions", "items"]
Kind = Literal["count", "money", "ratio"]

DIMENSIONS = ("country", "device", "channel", "category")
_SESSION_DIMS = ("country", "device", "channel")
_REVENUE = "sumIf(coalesce(revenue_eur, 0), is_order = 1)"
_ORDERS = "countIf(is_order = 1)"


@dataclass(frozen=True)
class Metric:
    """How to compute one metric."""

    name: str
    source: Source
    sql: str
    kind: Kind
    by_category_sql: str | None = None  # the same metric over order items, if sliceable
    forced_by: str | None = None

    @property
    def rollup_sql(self) -> str:
        """The aggregate over rollup rows (``rollup_1m``/``rollup_1h``) giving the metric."""
        return ROLLUP_SQL[self.name]

    def accepts(self, dim: str) -> bool:
        """Whether the metric can be sliced by ``dim``."""
        if dim == "category":
            return self.by_category_sql is not None
        return dim in _SESSION_DIMS


def _ratio(num: str, den: str) -> str:
    return f"({num}) / nullIf({den}, 0)"


_LIST = [
    Metric("events", "events", "count()", "count"),
    Metric("pageviews", "events", "countIf(type IN ('page_view', 'product_view'))", "count"),
    Metric("visitors", "events", "uniqExact(user_id)", "count"),
    Metric("sessions", "events", "uniqExact(session_key)", "count"),
    Metric("traffic_sources", "events", "uniqExact(session_key)", "count", forced_by="channel"),
    Metric("bounce_rate", "sessions", _ratio("countIf(n_events = 1)", "count()"), "ratio"),
    Metric("pages_per_session", "sessions", "avgOrNull(n_pageviews)", "ratio"),
    Metric("avg_session_duration_s", "sessions", "avgOrNull(duration_s)", "ratio"),
    Metric("orders", "events", _ORDERS, "count", by_category_sql="uniqExact(order_id)"),
    Metric("revenue", "events", _REVENUE, "money", by_category_sql="sum(item_eur)"),
    Metric("aov", "events", _ratio(_REVENUE, _ORDERS), "ratio"),
    Metric(
        "conversion_rate", "events",
        _ratio("uniqExactIf(session_key, type = 'purchase')", "uniqExact(session_key)"), "ratio",
    ),
    Metric(
        "add_to_cart_rate", "events",
        _ratio("uniqExactIf(session_key, type = 'add_to_cart')", "uniqExact(session_key)"), "ratio",
    ),
    Metric("revenue_per_visitor", "events", _ratio(_REVENUE, "uniqExact(user_id)"), "ratio"),
    Metric(
        "units", "events", "sumIf(arraySum(items.quantity), is_order = 1)", "count",
        by_category_sql="sum(item_quantity)",
    ),
]  # fmt: skip
METRICS: dict[str, Metric] = {m.name: m for m in _LIST}

_R_REVENUE, _R_VISITORS = "sum(revenue)", "uniqExactMerge(visitors)"
_R_SESSIONS = "uniqExactMerge(sessions)"
ROLLUP_SQL = {
    "events": "sum(events)",
    "pageviews": "sum(pageviews)",
    "visitors": _R_VISITORS,
    "sessions": _R_SESSIONS,
    "traffic_sources": _R_SESSIONS,
    "bounce_rate": _ratio("sum(bounces)", "sum(started)"),
    "pages_per_session": _ratio("sum(start_pageviews)", "sum(started)"),
    "avg_session_duration_s": _ratio("sum(start_duration_s)", "sum(started)"),
    "orders": "sum(orders)",
    "revenue": _R_REVENUE,
    "aov": _ratio(_R_REVENUE, "sum(orders)"),
    "conversion_rate": _ratio("uniqExactMerge(purchase_sessions)", _R_SESSIONS),
    "add_to_cart_rate": _ratio("uniqExactMerge(cart_sessions)", _R_SESSIONS),
    "revenue_per_visitor": _ratio(_R_REVENUE, _R_VISITORS),
    "units": "sum(units)",
}
