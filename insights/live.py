"""The live summary of CONTRACT §7 ``GET /v1/realtime``: the last hour (or any window).

Totals over an arbitrary ``[start, end)`` — not bucket-aligned — built from the metric
definitions of `warehouse.metrics` (the same SQL the metric series use), so every number
follows METRICS.md: conversion and revenue per visitor over the window's events,
sessions by channel (the session's channel, from its first event), engagement over the
sessions that start in the window, top products, and the active insights with their
recommendations.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from insights.lifecycle import Insight
from insights.store import InsightStore, insight_document
from warehouse.metrics import METRICS
from warehouse.queries import complete_until, top_products

__all__ = ["live_summary", "window_totals"]

_EVENT_METRICS = ("sessions", "visitors", "pageviews", "orders", "revenue", "conversion_rate",
                  "add_to_cart_rate", "revenue_per_visitor", "aov")  # fmt: skip
_RANGE = "ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)}"
_SESSIONS_IN_RANGE = f"""
SELECT session_key, channel, n_events, n_pageviews,
       (toUnixTimestamp64Milli(end) - toUnixTimestamp64Milli(start)) / 1000 AS duration_s
FROM sessions FINAL
WHERE deleted = 0 AND session_key IN (SELECT session_key FROM events FINAL WHERE {_RANGE})
"""
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def _num(value: Any, kind: str) -> Any:
    if value is None:
        return 0 if kind == "count" else (0.0 if kind == "money" else None)
    v = float(value)
    if v != v:
        return None
    return int(v) if kind == "count" else (round(v, 2) if kind == "money" else v)


def window_totals(client: Client, start: datetime, end: datetime) -> dict[str, Any]:
    """Traffic, commerce and engagement totals over ``[start, end)``."""
    params = {"lo": start, "hi": end}
    cols = ", ".join(f"{METRICS[m].sql} AS {m}" for m in _EVENT_METRICS)
    row = client.query(f"SELECT {cols} FROM events FINAL WHERE {_RANGE}", parameters=params)
    values = dict(zip(_EVENT_METRICS, row.result_rows[0], strict=True))
    out = {m: _num(values[m], METRICS[m].kind) for m in _EVENT_METRICS}
    sources = client.query(
        f"SELECT channel, count() FROM ({_SESSIONS_IN_RANGE}) GROUP BY channel "
        "ORDER BY count() DESC, channel",
        parameters=params,
    ).result_rows
    total = sum(int(n) for _, n in sources) or 1
    out["traffic_sources"] = [
        {"channel": ch or None, "sessions": int(n), "share": int(n) / total} for ch, n in sources
    ]
    starting = (
        f"SELECT * FROM ({_SESSIONS_IN_RANGE}) WHERE session_key IN (SELECT session_key "
        "FROM sessions FINAL WHERE start >= {lo:DateTime64(3)} AND start < {hi:DateTime64(3)})"
    )
    engagement = client.query(
        f"SELECT {METRICS['bounce_rate'].sql}, {METRICS['pages_per_session'].sql}, "
        f"{METRICS['avg_session_duration_s'].sql} FROM ({starting})",
        parameters=params,
    ).result_rows[0]
    out["engagement"] = {
        "bounce_rate": _num(engagement[0], "ratio"),
        "pages_per_session": _num(engagement[1], "ratio"),
        "avg_session_duration_s": _num(engagement[2], "ratio"),
        "pageviews": out["pageviews"],
    }
    return out


def live_summary(
    client: Client,
    window: timedelta,
    allowed_lateness: timedelta,
    *,
    now: datetime | None = None,
    base_url: str = "",
    top: int = 5,
) -> dict[str, Any]:
    """The ``/v1/realtime`` document for the window ending at the newest data (or now)."""
    now = now or datetime.now(UTC)
    newest = complete_until(client, timedelta(0))  # the flow's event-time watermark
    end = min(now, newest) if newest is not None else now
    start = end - window
    totals = window_totals(client, start, end)
    active: list[Insight] = sorted(
        InsightStore(client).active(),
        key=lambda i: (_SEVERITY_ORDER.get(i.severity, 3), -i.started_at.timestamp()),
    )
    done = complete_until(client, allowed_lateness)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "complete_until": done.isoformat() if done else None,
        "conversion_rate": totals["conversion_rate"],
        "revenue_per_visitor": totals["revenue_per_visitor"],
        "revenue": totals["revenue"],
        "orders": totals["orders"],
        "sessions": totals["sessions"],
        "visitors": totals["visitors"],
        "add_to_cart_rate": totals["add_to_cart_rate"],
        "aov": totals["aov"],
        "traffic_sources": totals["traffic_sources"],
        "top_products": top_products(client, start, end, by="revenue", limit=top),
        "engagement": totals["engagement"],
        "open_anomalies": [insight_document(i, base_url) for i in active],
        "recommendations": [i.recommendation for i in active if i.recommendation],
    }
