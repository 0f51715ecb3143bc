"""ClickHouse SQL for Grafana panels, with the ClickHouse datasource plugin's macros.

Each query answers exactly what ``warehouse.queries`` answers for the same metric (tests
run both against one warehouse). The range comes from ``$__fromTime_ms``/``$__toTime_ms``;
the bucket and timezone from the dashboard variables ``${bucket}`` (``1 HOUR``, …) and
``${tz}``. As in ``metric_series``, a series covers whole buckets: the range is widened to
bucket boundaries. ``$__timeFilter`` is not used because it includes the end (``<=``) and
METRICS.md ranges exclude it.

Filter values in definitions are checked to be plain tokens, so quoting them is safe.
"""

from __future__ import annotations

from dashboards.model import FunnelData, HealthData, MetricData, ProductsData
from warehouse.metrics import METRICS
from warehouse.queries import funnel_ctes

__all__ = [
    "EMPTY_LABEL",
    "INSIGHT_COLUMNS",
    "WEEK_SHIFT",
    "freshness_sql",
    "funnel_sql",
    "health_sql",
    "insight_annotations_sql",
    "insights_sql",
    "metric_sql",
    "partial_annotation_sql",
    "products_sql",
    "watermark_sql",
]

FROM, TO = "$__fromTime_ms", "$__toTime_ms"
BUCKET = "INTERVAL ${bucket}"
TZ = "'${tz}'"
WEEK_SHIFT = "INTERVAL 168 HOUR"  # same time last week: 7 x 24 h, as the pages do
EMPTY_LABEL = "(unknown)"  # a breakdown value that is missing ('' in the warehouse)
_SESSION_DIMS = ("country", "device", "channel")

_SESSIONS = """SELECT session_key, start AS s_start, country AS s_country, device AS s_device,
           channel AS s_channel, n_events, n_pageviews,
           (toUnixTimestamp64Milli(end) - toUnixTimestamp64Milli(start)) / 1000 AS duration_s
    FROM sessions FINAL WHERE deleted = 0"""


def _bounds(shift: str = "") -> tuple[str, str]:
    """The range widened to whole buckets (optionally shifted back by ``shift``)."""
    lo = f"toStartOfInterval({FROM}{shift}, {BUCKET}, {TZ})"
    hi = f"(toStartOfInterval({TO}{shift} - INTERVAL 1 MILLISECOND, {BUCKET}, {TZ}) + {BUCKET})"
    return lo, hi


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _label(column: str) -> str:
    return f"if({column} = '', {_quote(EMPTY_LABEL)}, {column})"


def _inner_metric(data: MetricData, shift: str) -> tuple[str, str | None]:
    """``SELECT b, [dim,] v`` — the bucket start, breakdown value and metric value."""
    metric = METRICS[data.metric]
    lo, hi = _bounds(shift)
    dim = data.breakdown
    where = dict(data.where)
    bucket = "" if data.total else f"toStartOfInterval(@COL@, {BUCKET}, {TZ})"
    if metric.source == "sessions":
        sess = (
            f"{_SESSIONS} AND start >= {lo} AND start < {hi}\n"
            f"      AND session_key IN (SELECT session_key FROM events FINAL"
            f" WHERE ts >= {lo} AND ts < {hi})"
        )
        conds = [f"s_{d} = {_quote(v)}" for d, v in sorted(where.items())]
        cols = [bucket.replace("@COL@", "s_start") + " AS b"] if bucket else []
        cols += [f"s_{dim} AS dim"] if dim else []
        group = ["b"] * bool(bucket) + ["dim"] * bool(dim)
        sql = (
            f"SELECT {', '.join([*cols, f'{metric.sql} AS v'])}\n"
            f"  FROM ({sess})\n"
            + (f"  WHERE {' AND '.join(conds)}\n" if conds else "")
            + (f"  GROUP BY {', '.join(group)}" if group else "")
        )
        return sql, dim
    in_range = f"ts >= {lo} AND ts < {hi}"
    source = "events FINAL"
    agg = metric.sql
    uses_items = dim == "category" or "category" in where
    if uses_items:
        source += (
            "\n    ARRAY JOIN items.category AS item_category, items.quantity AS item_quantity,"
            " arrayMap((p, n) -> p * n, items.price_eur, items.quantity) AS item_eur"
        )
        in_range += " AND is_order = 1"
        agg = metric.by_category_sql or agg
    if {*where, *([dim] if dim else [])} & set(_SESSION_DIMS):
        source += (
            f"\n    ANY LEFT JOIN ({_SESSIONS}\n"
            f"      AND session_key IN (SELECT session_key FROM events WHERE {in_range})"
            ") AS s USING (session_key)"
        )
    conds = [in_range] + [
        f"{'item_category' if d == 'category' else 's_' + d} = {_quote(v)}"
        for d, v in sorted(where.items())
    ]
    dim_col = "item_category" if dim == "category" else f"s_{dim}"
    cols = [bucket.replace("@COL@", "ts") + " AS b"] if bucket else []
    cols += [f"{dim_col} AS dim"] if dim else []
    group = ["b"] * bool(bucket) + ["dim"] * bool(dim)
    sql = (
        f"SELECT {', '.join([*cols, f'{agg} AS v'])}\n  FROM {source}\n"
        f"  WHERE {' AND '.join(conds)}\n" + (f"  GROUP BY {', '.join(group)}" if group else "")
    )
    return sql, dim


def metric_sql(data: MetricData, label: str, *, last_week: bool = False) -> str:
    """A metric as Grafana reads it: ``time`` (bucket start), ``[<dim>]``, ``<label>``.

    ``last_week``: the same buckets one week earlier, drawn at this week's times. A total
    (``data.total``) has no ``time`` column: one row per breakdown value.
    """
    shift = f" - {WEEK_SHIFT}" if last_week else ""
    inner, dim = _inner_metric(data, shift)
    value = "v"
    if data.per_second:
        value = f"v / (toUnixTimestamp(b + {BUCKET}) - toUnixTimestamp(b))"
    cols = []
    if not data.total:
        cols.append(f"b + {WEEK_SHIFT} AS time" if last_week else "b AS time")
    if dim:
        cols.append(f"{_label('dim')} AS {dim}")
    cols.append(f"{value} AS {_ident(label)}")
    order = "time" if not data.total else _ident(label) + " DESC"
    if dim and not data.total:
        order += f", {dim}"
    return f"SELECT {', '.join(cols)}\nFROM (\n  {inner}\n)\nORDER BY {order}"


def _ident(name: str) -> str:
    return "`" + name.replace("`", "") + "`"


def funnel_sql(data: FunnelData) -> str:
    """Sessions starting in the range reaching each step (METRICS.md funnel).

    Without a breakdown: one row per step (``step``, ``sessions``, conversions). With one:
    a row per breakdown value with each step's sessions and the overall conversion.
    """
    sess = (
        f"{_SESSIONS} AND start >= {FROM} AND start < {TO}\n"
        f"      AND session_key IN (SELECT session_key FROM events FINAL"
        f" WHERE ts >= {FROM} AND ts < {TO})"
    )
    dim = f"s_{data.by}" if data.by else "''"
    reached = funnel_ctes(sess, dim)
    if data.by:
        return (
            f"{reached}\nSELECT {_label('dim')} AS {data.by}, n1 AS product_view,"
            " n2 AS add_to_cart, n3 AS begin_checkout, n4 AS purchase,"
            " n4 / nullIf(n1, 0) AS conversion\nFROM counts\nORDER BY n1 DESC, "
            f"{data.by}"
        )
    return (
        f"{reached}\nSELECT step, sessions, sessions / nullIf(prev, 0) AS from_previous,"
        " sessions / nullIf(n1, 0) AS from_first\nFROM counts\n"
        "ARRAY JOIN ['product_view', 'add_to_cart', 'begin_checkout', 'purchase'] AS step,"
        " [n1, n2, n3, n4] AS sessions, [n1, n1, n2, n3] AS prev\n"
        "ORDER BY indexOf(['product_view', 'add_to_cart', 'begin_checkout', 'purchase'], step)"
    )


def products_sql(data: ProductsData) -> str:
    """Top products in the range (``top_products``): views, carts, units, revenue, rate."""
    in_range = f"ts >= {FROM} AND ts < {TO}"
    measure = {"revenue": "round(revenue, 2)", "views": "views", "units": "units"}[data.by]
    return f"""
WITH views AS (
  SELECT product_id, countIf(type = 'product_view') AS views,
         countIf(type = 'add_to_cart') AS add_to_carts
  FROM events FINAL
  WHERE {in_range} AND type IN ('product_view', 'add_to_cart') AND product_id != ''
  GROUP BY product_id
),
sales AS (
  SELECT item_product AS product_id, sum(item_quantity) AS units,
         sum(item_price * item_quantity) AS revenue
  FROM events FINAL ARRAY JOIN items.product_id AS item_product,
       items.quantity AS item_quantity, items.price_eur AS item_price
  WHERE {in_range} AND is_order = 1
  GROUP BY product_id
),
stats AS (
  SELECT if(views.product_id != '', views.product_id, sales.product_id) AS product_id,
         views, add_to_carts, units, revenue
  FROM views FULL OUTER JOIN sales ON views.product_id = sales.product_id
),
categories AS (
  SELECT pid, argMin(cat, ts) AS category FROM (
    SELECT product_id AS pid, category AS cat, ts FROM events FINAL
    WHERE category != '' AND product_id IN (SELECT product_id FROM stats)
    UNION ALL
    SELECT item_product AS pid, item_category AS cat, ts FROM events FINAL
    ARRAY JOIN items.product_id AS item_product, items.category AS item_category
    WHERE item_category != '' AND item_product IN (SELECT product_id FROM stats)
  ) GROUP BY pid
)
SELECT product_id, category, views, add_to_carts, units, revenue,
       units / nullIf(views, 0) AS view_to_purchase_rate
FROM stats LEFT JOIN categories ON stats.product_id = categories.pid
ORDER BY {measure} DESC, product_id
LIMIT {int(data.limit)}""".strip()


def watermark_sql() -> str:
    """The flow's event-time watermark (``warehouse.queries.complete_until`` + lateness)."""
    return """SELECT min(m) FROM (
  SELECT max(max_ts) AS m FROM flow_progress GROUP BY topic, partition
) WHERE m >= (SELECT max(max_ts) FROM flow_progress) - INTERVAL 1 HOUR"""


def freshness_sql() -> str:
    """Seconds since the watermark: how far behind real time the data is."""
    return f"SELECT dateDiff('second', ({watermark_sql()}), now64(3)) AS `watermark age`"


def health_sql(data: HealthData) -> str | None:
    """Warehouse SQL for a pipeline signal, or None when it lives only in ``/metrics``."""
    if data.signal == "freshness":
        return freshness_sql()
    if data.signal in ("duplicates", "bot_events"):  # rows of the table of that name
        lo, hi = _bounds()
        return (
            f"SELECT toStartOfInterval(ts, {BUCKET}, {TZ}) AS time, count() AS `{data.signal}`\n"
            f"FROM {data.signal} FINAL WHERE ts >= {lo} AND ts < {hi}\n"
            "GROUP BY time ORDER BY time"
        )
    return None


# The insights table of warehouse/sql/003_insights.sql (built alongside this module; the
# columns below are the contract the Anomalies dashboard reads).
INSIGHT_COLUMNS = {
    "id": "id",
    "metric": "metric",
    "slice": "slice",
    "severity": "severity",
    "status": "status",
    "start": "started_at",
    "end": "resolved_at",
    "summary": "summary",
}


def insights_sql(status: str | None, limit: int = 50) -> str:
    """Insights raised by the detector, newest first (the lifecycle on the Anomalies board)."""
    c = INSIGHT_COLUMNS
    cond = f"{c['status']} = {_quote(status)}" if status else "1"
    return (
        f"SELECT {c['start']} AS time, {c['severity']} AS severity, {c['metric']} AS metric,"
        f" {c['slice']} AS slice, {c['status']} AS status, {c['summary']} AS summary,"
        f" {c['id']} AS id\nFROM insights FINAL\n"
        f"WHERE {cond} AND {c['start']} < {TO}\n"
        f"ORDER BY time DESC LIMIT {int(limit)}"
    )


def insight_annotations_sql(metric: str) -> str:
    """Insights on ``metric`` overlapping the range, as Grafana region annotations."""
    c = INSIGHT_COLUMNS
    return (
        f"SELECT {c['start']} AS time, coalesce({c['end']}, now64(3)) AS timeEnd,"
        f" concat({c['severity']}, ': ', {c['summary']}) AS text,"
        f" [{c['metric']}, {c['slice']}, {c['status']}] AS tags\nFROM insights FINAL\n"
        f"WHERE {c['metric']} = {_quote(metric)} AND {c['start']} < {TO}"
        f" AND coalesce({c['end']}, now64(3)) >= {FROM}"
    )


def partial_annotation_sql(lateness_s: int) -> str:
    """A region from ``complete_until`` to now: buckets there may still grow."""
    return (
        f"SELECT ({watermark_sql()}) - INTERVAL {int(lateness_s)} SECOND AS time,"
        " now64(3) AS timeEnd,"
        " 'partial: events up to the allowed lateness may still arrive' AS text"
    )
