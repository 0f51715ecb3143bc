"""Answering docs/metrics.md from the warehouse: metric series, funnel, top products.

Every value is bound by the driver; dimension names come from a fixed list. Results are
plain dicts in the shapes of CONTRACT §7 (``ts`` labels are RFC 3339 in the query's zone).

Every question is bounded before it runs (CONTRACT §12: a query too large to answer is a
400): times lie in ``[EARLIEST, LATEST)``, a range spans at most ``MAX_RANGE``, and a
metric document has at most ``POINT_BUDGET`` points (buckets × breakdown values). A
parameter out of bounds is a :class:`QueryError` naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from clickhouse_connect.driver.client import Client

from ingest.errors import PulseError
from ingest.times import as_utc
from warehouse.buckets import INTERVALS, bucket_sql, make_grid
from warehouse.metrics import DIMENSIONS, METRICS, Metric
from warehouse.rollups import EVENTS, GRAINS, LEVELS, STARTS, UNROLLED, first_dirty_of

__all__ = [
    "EARLIEST",
    "FUNNEL_STEPS",
    "LATEST",
    "MAX_RANGE",
    "POINT_BUDGET",
    "MetricQuery",
    "QueryError",
    "check_budget",
    "check_range",
    "check_time",
    "complete_until",
    "funnel",
    "metric_series",
    "top_products",
]

# No event is older than 2000-01-01 (docs/events.md); 2100 leaves every real question inside,
# and both are far within what ClickHouse's DateTime64 holds (1900-2299).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# Five years: a range no dashboard asks for in one request (the pages ask for up to 7 days,
# Grafana's longest quick range is 5 years).
MAX_RANGE = timedelta(days=5 * 366)
# Points (buckets × breakdown values) of one metric document: 30 days at 1m is 43,200
# buckets, so a month by minute on one slice, or by device, fits; a year by minute does not.
POINT_BUDGET = 200_000
# Upper bounds of a breakdown's values, where the event format fixes them (None counts
# once): 3 devices, 6 channels, 26 × 26 two-letter country codes. Categories are open.
_MAX_VALUES = {"device": 4, "channel": 7, "country": 26 * 26 + 1}
_ZONES = frozenset(available_timezones())
# A document's grid is made once for its series and once for its partial flags.
_grid = lru_cache(maxsize=4)(make_grid)


class QueryError(PulseError, ValueError):
    """A query parameter out of bounds or unknown; the message names the parameter."""


def _shown(value: str) -> str:
    """A caller's value as quoted in an error (long ones cut)."""
    return repr(value if len(value) <= 64 else value[:64] + "…")


def check_time(value: datetime, name: str) -> datetime:
    """``value`` if it is timezone-aware and within ``[EARLIEST, LATEST]``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise QueryError(f"{name}: needs a timezone offset (e.g. Z or +01:00)")
    if not EARLIEST <= value <= LATEST:
        raise QueryError(
            f"{name}: {value.isoformat()} is outside {EARLIEST:%Y-%m-%d}..{LATEST:%Y-%m-%d}"
        )
    return value


def check_range(start: datetime, end: datetime) -> None:
    """A range ``[start, end)``: both ends in bounds, ``start`` before ``end``, at most
    ``MAX_RANGE`` long."""
    check_time(start, "from")
    check_time(end, "to")
    if end <= start:
        raise QueryError("to: must be after from")
    if end - start > MAX_RANGE:
        raise QueryError(
            f"from/to: the range spans {(end - start).days:,} days, over the "
            f"{MAX_RANGE.days:,}-day limit; ask for a shorter range"
        )


def check_budget(buckets: int, slices: int = 1, budget: int = POINT_BUDGET) -> None:
    """Refuse a metric document of more than ``budget`` points."""
    if buckets * slices <= budget:
        return
    size = f"{buckets:,} buckets" + (f" × {slices:,} slices" if slices > 1 else "")
    raise QueryError(
        f"interval: {size} over the {budget:,} budget; "
        "use a coarser interval or a shorter range"
        + (" or filter with where=" if slices > 1 else "")
    )


FUNNEL_STEPS = ("product_view", "add_to_cart", "begin_checkout", "purchase")
_SESSION_ATTRS = ("country", "device", "channel")

# Sessions with their attributes (from the first event) and sizes, limited to those that
# could matter for the query (the caller adds the range conditions).
_SESS = """
SELECT session_key, start AS s_start, end AS s_end, country AS s_country,
       device AS s_device, channel AS s_channel, n_events, n_pageviews,
       (toUnixTimestamp64Milli(end) - toUnixTimestamp64Milli(start)) / 1000 AS duration_s
FROM sessions FINAL WHERE deleted = 0 {where}
"""

# Sessions that start in the range. A session starts in the range exactly when its first
# event is in it; requiring an event of the range to carry the key also drops keys that
# only existed before a crash (see 002_events.sql).
_STARTS_IN_RANGE = """
AND start >= {lo:DateTime64(3)} AND start < {hi:DateTime64(3)}
AND session_key IN (
    SELECT session_key FROM events FINAL WHERE ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)}
)"""


@dataclass(frozen=True)
class MetricQuery:
    """A validated metric request."""

    metric: str
    start: datetime
    end: datetime
    interval: str = "1h"
    by: str | None = None
    where: Mapping[str, str] = field(default_factory=dict)
    tz: str = "UTC"

    def __post_init__(self) -> None:
        metric = METRICS.get(self.metric)
        if metric is None:
            raise QueryError(
                f"metric: unknown metric {_shown(self.metric)}; known: {', '.join(METRICS)}"
            )
        if self.interval not in INTERVALS:
            raise QueryError(f"interval: expected one of {', '.join(INTERVALS)}")
        if self.tz not in _ZONES:
            raise QueryError(f"tz: unknown timezone {_shown(self.tz)}; use an IANA name like UTC")
        if metric.forced_by and self.by not in (None, metric.forced_by):
            raise QueryError(f"by: {self.metric} is always broken down by {metric.forced_by}")
        for name, dim in [
            *([("by", self.by)] if self.by else []),
            *(("where", d) for d in self.where),
        ]:
            if dim not in DIMENSIONS:
                raise QueryError(
                    f"{name}: unknown dimension {_shown(dim)}; use {', '.join(DIMENSIONS)}"
                )
            if not metric.accepts(dim):
                raise QueryError(f"{name}: {self.metric} cannot be sliced by {dim}")
        for dim, value in self.where.items():
            if not value:
                raise QueryError(f"where: {dim}= needs a value")
        check_range(self.start, self.end)

    @property
    def buckets(self) -> int:
        """About how many buckets the range spans (one more when it is not aligned)."""
        return math.ceil((self.end - self.start).total_seconds() / INTERVALS[self.interval])

    @property
    def definition(self) -> Metric:
        return METRICS[self.metric]

    @property
    def breakdown(self) -> str | None:
        return self.definition.forced_by or self.by


def _ms(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _filters(where: Mapping[str, str], params: dict[str, Any], category_col: str) -> list[str]:
    out = []
    for i, (dim, value) in enumerate(sorted(where.items())):
        params[f"w{i}"] = value
        column = category_col if dim == "category" else f"s_{dim}"
        out.append(f"{column} = {{w{i}:String}}")
    return out


def _needs_sessions(q: MetricQuery) -> bool:
    dims = {*q.where, *([q.breakdown] if q.breakdown else [])}
    return bool(dims & set(_SESSION_ATTRS))


def _series_sql(q: MetricQuery, lo: int, hi: int, params: dict[str, Any]) -> str:
    metric = q.definition
    dim = q.breakdown
    uses_items = "category" in q.where or dim == "category"
    params.update(lo=_ms(lo), hi=_ms(hi), tz=q.tz)
    if metric.source == "sessions":
        sess = _SESS.format(where=_STARTS_IN_RANGE)
        conds = _filters(q.where, params, "")
        select_dim = f", s_{dim} AS dim" if dim else ""
        return (
            f"SELECT {bucket_sql('s_start', q.interval)} AS b{select_dim}, {metric.sql} AS v "
            f"FROM ({sess}) {'WHERE ' + ' AND '.join(conds) if conds else ''} "
            f"GROUP BY b{', dim' if dim else ''}"
        )
    in_range = "ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)}"
    source = "events FINAL"
    agg = metric.sql
    if uses_items:
        source += (
            " ARRAY JOIN items.category AS item_category, items.quantity AS item_quantity,"
            " arrayMap((p, n) -> p * n, items.price_eur, items.quantity) AS item_eur"
        )
        in_range += " AND is_order = 1"
        agg = metric.by_category_sql or agg
    if _needs_sessions(q):
        sess = _SESS.format(
            where=f"AND session_key IN (SELECT session_key FROM events WHERE {in_range})"
        )
        source += f" ANY LEFT JOIN ({sess}) AS s USING (session_key)"
    conds = [in_range, *_filters(q.where, params, "item_category")]
    dim_col = {"category": "item_category"}.get(dim or "", f"s_{dim}")
    select_dim = f", {dim_col} AS dim" if dim else ""
    return (
        f"SELECT {bucket_sql('ts', q.interval)} AS b{select_dim}, {agg} AS v FROM {source} "
        f"WHERE {' AND '.join(conds)} GROUP BY b{', dim' if dim else ''}"
    )


def _dim_values_sql(q: MetricQuery, params: dict[str, Any]) -> str:
    """Every value of the breakdown seen in the range (after ``where``)."""
    dim = q.breakdown
    in_range = "ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)}"
    if dim == "category" or "category" in q.where:
        source = "events FINAL ARRAY JOIN items.category AS item_category"
        in_range += " AND is_order = 1"
    else:
        source = "events FINAL"
    if _needs_sessions(q):
        sess = _SESS.format(
            where=f"AND session_key IN (SELECT session_key FROM events WHERE {in_range})"
        )
        source += f" ANY LEFT JOIN ({sess}) AS s USING (session_key)"
    dim_col = "item_category" if dim == "category" else f"s_{dim}"
    conds = [in_range, *_filters(q.where, params, "item_category")]
    return f"SELECT DISTINCT {dim_col} FROM {source} WHERE {' AND '.join(conds)}"


def _uses_rollups(q: MetricQuery) -> bool:
    return q.breakdown != "category" and "category" not in q.where


def _family(q: MetricQuery) -> int:
    return STARTS if q.definition.source == "sessions" else EVENTS


def _grain(q: MetricQuery, lo: int, hi: int) -> str:
    """The coarsest rollup grain whose rows tile the buckets: UTC days, whole hours, minutes."""
    if q.interval == "1d" and q.tz == "UTC":
        return "1d"
    if q.interval in ("1h", "1d") and lo % 3600 == 0 and hi % 3600 == 0:
        years = range(
            datetime.fromtimestamp(lo, UTC).year, datetime.fromtimestamp(hi, UTC).year + 1
        )
        if all(_whole_hours(q.tz, year) for year in years):
            return "1h"
    return "1m"


@lru_cache(maxsize=4096)
def _whole_hours(tz: str, year: int) -> bool:
    """Whether ``tz`` is a whole number of hours off UTC all through ``year``, so that its
    hours and days start on UTC hours. Never so, by half an hour, for India or
    Newfoundland; for Lord Howe Island not in its winter, whose days in a range from summer
    to summer start at :30 UTC; for Caracas until 2016 only. Looked at every week: every
    offset lasts longer than that."""
    zone = ZoneInfo(tz)
    at = datetime(year, 1, 1, tzinfo=UTC)
    while at.year == year:
        offset = at.astimezone(zone).utcoffset()
        if offset is None or offset % timedelta(hours=1):
            return False
        at += timedelta(days=7)
    return True


def _rollup_sql(
    q: MetricQuery, lo: int, hi: int, grain: str, params: dict[str, Any]
) -> tuple[str, str]:
    """Series SQL over the rollups of ``grain`` for whole buckets in ``[lo, hi)``, and the
    SQL of the breakdown values of the range (those an event of the range carries, as on
    raw events)."""
    dim = q.breakdown
    dims = frozenset({*q.where, *([dim] if dim else [])})
    params.update(rlo=_ms(lo), rhi=_ms(hi), tz=q.tz, level=LEVELS.get(dims, 0))
    conds = ["level = {level:UInt8}", "t >= {rlo:DateTime}", "t < {rhi:DateTime}"]
    for i, (name, value) in enumerate(sorted(q.where.items())):
        params[f"r{i}"] = value
        conds.append(f"{name} = {{r{i}:String}}")
    where = " AND ".join(conds)
    agg = q.definition.rollup_sql
    if dims in LEVELS and grain == q.interval:
        # one row per bucket (and breakdown value): its final distinct counts are the answer
        agg = re.sub(r"uniqExactMerge\((\w+)\)", r"sum(n_\1)", agg)
    starts = _family(q) == STARTS
    table = f"{'starts' if starts else 'rollup'}_{grain}"
    select_dim = f", {dim} AS dim" if dim else ""
    # Rows of combinations a minute no longer has are zeros: leave them out.
    series = (
        f"SELECT {bucket_sql('t', q.interval)} AS b{select_dim}, {agg} AS v "
        f"FROM {table} FINAL WHERE {where} GROUP BY b{', dim' if dim else ''} "
        f"HAVING sum({'started' if starts else 'events'}) > 0"
    )
    values = f"SELECT DISTINCT {dim} FROM rollup_{grain} FINAL WHERE {where} AND events > 0"
    return series, values


_EMPTY: dict[str, Any] = {"count": 0, "money": 0.0, "ratio": None}


def _empty(kind: str) -> Any:
    return _EMPTY[kind]


def _clean(value: Any, kind: str) -> Any:
    if value is None:
        return _empty(kind)
    if kind == "count":
        return int(value)
    value = float(value)
    if value != value:  # NaN (0/0) -> null
        return None
    return round(value, 2) if kind == "money" else value


def metric_series(
    client: Client, q: MetricQuery, *, rollups: bool = True, budget: int | None = None
) -> list[dict[str, Any]]:
    """``[{"ts", "value", <dim>?}]`` for every bucket (and breakdown value) of the range.

    Buckets made only of periods whose rollups are current are read from the rollups
    (the coarsest grain that tiles them: UTC days, hours, minutes); from the first bucket
    holding a dirty minute on, from the raw events (all of them with ``rollups=False``).
    With a ``budget``, a series of more points than that is a :class:`QueryError`, raised
    before the series is read (a breakdown's values are counted first when they could be
    too many).
    """
    if budget is not None:
        check_budget(q.buckets, 1, budget)
    grid = _grid(q.start, q.end, q.interval, q.tz)
    bounds = [*grid.starts, grid.end]
    # (series SQL, breakdown values SQL, parameters, whether the series rows miss values)
    parts: list[tuple[str, str | None, dict[str, Any], bool]] = []
    cut = 0  # buckets before this index come from the rollups
    if rollups and _uses_rollups(q):
        # Each bucket from the coarsest rows current for it: days, hours, minutes. A grain
        # is current where it and every finer grain are (an hour is recomputed only once
        # it is over, so the hour going on comes from its minutes), but for the minutes
        # left to their hours (warehouse.rollups.refresh): their hours hold them.
        coarsest = _grain(q, bounds[0], bounds[-1])
        grains = GRAINS[: GRAINS.index(coarsest) + 1]
        # breakdown values of session-start metrics come from the event rollups
        families = {_family(q), *([EVENTS] if q.breakdown else [])}
        dirty = first_dirty_of(client, families, _ms(grid.starts[0]), _ms(grid.end))

        def current_until(found: dict[Any, datetime], grain: str, end: int) -> int:
            for since in (found.get((f, grain)) for f in families):
                if since is not None:
                    end = min(end, sum(1 for b in bounds[1:] if b <= since.timestamp()))
            return end

        ends: dict[str, int] = {}
        end = len(grid.starts)
        for grain in grains:
            ends[grain] = current_until(dirty, grain, end)
            end = current_until(dirty, UNROLLED, end) if grain == "1m" else ends[grain]
        if len(grains) > 1 and ends["1m"] < ends["1h"]:
            # a minute left to its hour lies before the hours' end: the minutes after it
            # (the hour going on) may still be current
            after = first_dirty_of(client, families, _ms(bounds[ends["1h"]]), _ms(grid.end))
            ends["1m"] = current_until(after, "1m", len(grid.starts))
        # an event rollup's series rows already name every breakdown value
        needs_values = _family(q) == STARTS
        for grain in reversed(grains):
            if ends[grain] > cut:
                params: dict[str, Any] = {}
                series_sql, values_sql = _rollup_sql(
                    q, bounds[cut], bounds[ends[grain]], grain, params
                )
                parts.append((series_sql, values_sql, params, needs_values))
                cut = ends[grain]
    if cut < len(grid.starts):
        params = {}
        series_sql = _series_sql(q, bounds[cut], grid.end, params)
        raw_values = _dim_values_sql(q, params) if q.breakdown else None
        parts.append((series_sql, raw_values, params, True))
    kind = q.definition.kind
    dim = q.breakdown
    found: dict[tuple[int, Any], Any] = {}
    values: set[str | None] = set()
    counted = False
    if dim and budget is not None:
        buckets = len(grid.starts)
        if buckets * _MAX_VALUES.get(dim, budget + 1) > budget:
            # count the breakdown's values first, so that too many points are never read
            for _, part_values_sql, part_params, _ in parts:
                assert part_values_sql is not None
                rows = client.query(part_values_sql, parameters=part_params).result_rows
                values.update(r[0] or None for r in rows)
            check_budget(buckets, max(len(values), 1), budget)
            counted = True
    for part_sql, part_values_sql, part_params, needed in parts:
        for row in client.query(part_sql, parameters=part_params).result_rows:
            key = (int(row[0]), (row[1] or None) if dim else None)
            found[key] = row[-1]
        if dim and part_values_sql and needed and not counted:
            rows = client.query(part_values_sql, parameters=part_params).result_rows
            values.update(r[0] or None for r in rows)
    if not dim:
        return [
            {"ts": grid.label(b), "value": _clean(found.get((b, None)), kind)} for b in grid.starts
        ]
    values |= {v for _, v in found}
    ordered = sorted(values, key=lambda v: (v is None, v or ""))
    return [
        {"ts": grid.label(b), "value": _clean(found.get((b, v)), kind), dim: v}
        for b in grid.starts
        for v in ordered
    ]


def funnel(
    client: Client,
    start: datetime,
    end: datetime,
    *,
    by: str | None = None,
    where: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Sessions starting in ``[start, end)`` reaching each step, in order (docs/metrics.md)."""
    where = dict(where or {})
    for name, dim in [*([("by", by)] if by else []), *(("where", d) for d in where)]:
        if dim not in _SESSION_ATTRS:
            raise QueryError(
                f"{name}: the funnel can be sliced by {', '.join(_SESSION_ATTRS)} only"
            )
    check_range(start, end)
    params: dict[str, Any] = {"lo": start, "hi": end}
    sess = _SESS.format(where=_STARTS_IN_RANGE)
    conds = _filters(where, params, "")
    dim = f"s_{by}" if by else "''"
    filtered = f"SELECT * FROM ({sess}) {'WHERE ' + ' AND '.join(conds) if conds else ''}"
    sql = f"{funnel_ctes(filtered, dim)}\nSELECT dim, n1, n2, n3, n4 FROM counts ORDER BY dim"
    out = []
    rows = list(client.query(sql, parameters=params).result_rows)
    rows.sort(key=lambda r: (r[0] in ("", None), r[0] or ""))
    for row in rows:
        counts = [int(x) for x in row[1:]]
        for i, step in enumerate(FUNNEL_STEPS):
            prev = counts[i - 1] if i else counts[0]
            item: dict[str, Any] = {
                "step": step,
                "sessions": counts[i],
                "conversion_from_previous": counts[i] / prev if prev else None,
                "conversion_from_first": counts[i] / counts[0] if counts[0] else None,
            }
            if by:
                item[by] = row[0] or None
            out.append(item)
    return out


def funnel_ctes(sessions_sql: str, dim_sql: str) -> str:
    """``WITH sess, steps, reached, counts``: per ``dim_sql`` value, the sessions of
    ``sessions_sql`` (which must select ``session_key`` and the ``s_*`` attributes) reaching
    each step (``n1``..``n4``). A step counts when it happens at or after the time the
    previous step was reached (docs/metrics.md). Shared by the API and the Grafana panels."""
    return f"""
WITH sess AS ({sessions_sql}),
steps AS (
  SELECT session_key,
         minIfOrNull(ts, type = 'product_view') AS t1,
         groupArrayIf(ts, type = 'add_to_cart') AS a,
         groupArrayIf(ts, type = 'begin_checkout') AS c,
         groupArrayIf(ts, type = 'purchase') AS p
  FROM events FINAL WHERE session_key IN (SELECT session_key FROM sess)
  GROUP BY session_key
),
reached AS (
  SELECT session_key, t1,
         if(t1 IS NULL OR NOT arrayExists(x -> x >= t1, a), NULL,
            arrayMin(arrayFilter(x -> x >= t1, a))) AS t2,
         if(t2 IS NULL OR NOT arrayExists(x -> x >= t2, c), NULL,
            arrayMin(arrayFilter(x -> x >= t2, c))) AS t3,
         if(t3 IS NULL OR NOT arrayExists(x -> x >= t3, p), NULL, t3) AS t4
  FROM steps
),
counts AS (
  SELECT {dim_sql} AS dim, countIf(t1 IS NOT NULL) AS n1, countIf(t2 IS NOT NULL) AS n2,
         countIf(t3 IS NOT NULL) AS n3, countIf(t4 IS NOT NULL) AS n4
  FROM sess LEFT JOIN reached USING (session_key)
  GROUP BY dim
)"""


def top_products(
    client: Client,
    start: datetime,
    end: datetime,
    *,
    by: str = "revenue",
    limit: int = 10,
    where: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Products ranked by ``revenue``, ``views`` or ``units``; ties by ``product_id``."""
    if by not in ("revenue", "views", "units"):
        raise QueryError("by: must be revenue, views or units")
    where = dict(where or {})
    category = where.pop("category", None)
    for dim in where:
        if dim not in _SESSION_ATTRS:
            raise QueryError(f"where: unknown dimension {_shown(dim)}; use {', '.join(DIMENSIONS)}")
    check_range(start, end)
    params: dict[str, Any] = {"lo": start, "hi": end}
    in_range = "ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)}"
    join = ""
    conds = _filters(where, params, "")
    if where:
        sess = _SESS.format(
            where=f"AND session_key IN (SELECT session_key FROM events WHERE {in_range})"
        )
        join = f" ANY LEFT JOIN ({sess}) AS s USING (session_key)"
    extra = "".join(f" AND {c}" for c in conds)
    views_sql = f"""
        SELECT product_id, countIf(type = 'product_view'), countIf(type = 'add_to_cart')
        FROM events FINAL{join}
        WHERE {in_range} AND type IN ('product_view', 'add_to_cart') AND product_id != ''{extra}
        GROUP BY product_id"""
    sales_sql = f"""
        SELECT item_product, sum(item_quantity), sum(item_price * item_quantity)
        FROM events FINAL ARRAY JOIN items.product_id AS item_product,
             items.quantity AS item_quantity, items.price_eur AS item_price{join}
        WHERE {in_range} AND is_order = 1{extra}
        GROUP BY item_product"""
    stats: dict[str, list[Any]] = {}
    for pid, views, carts in client.query(views_sql, parameters=params).result_rows:
        stats[pid] = [int(views), int(carts), 0, 0.0]
    for pid, units, revenue in client.query(sales_sql, parameters=params).result_rows:
        stats.setdefault(pid, [0, 0, 0, 0.0])[2:] = [int(units), float(revenue)]
    categories = _categories(client, list(stats))
    rows = [
        {
            "product_id": pid, "category": categories.get(pid), "views": v, "add_to_carts": c,
            "units": u, "revenue": round(r, 2), "view_to_purchase_rate": u / v if v else None,
        }
        for pid, (v, c, u, r) in stats.items()
        if category is None or categories.get(pid) == category
    ]  # fmt: skip
    measure = {"revenue": lambda x: round(x["revenue"], 2), "views": lambda x: x["views"],
               "units": lambda x: x["units"]}[by]  # fmt: skip
    rows.sort(key=lambda x: (-measure(x), x["product_id"]))
    return rows[: max(limit, 0)]


def _categories(client: Client, products: list[str]) -> dict[str, str]:
    """Each product's category: from the first event (by time) naming it with one."""
    if not products:
        return {}
    sql = """
    SELECT pid, argMin(cat, ts) FROM (
        SELECT product_id AS pid, category AS cat, ts FROM events FINAL
        WHERE product_id IN {p:Array(String)} AND category != ''
        UNION ALL
        SELECT item_product AS pid, item_category AS cat, ts FROM events FINAL
        ARRAY JOIN items.product_id AS item_product, items.category AS item_category
        WHERE item_product IN {p:Array(String)} AND item_category != ''
    ) GROUP BY pid"""
    return {pid: cat for pid, cat in client.query(sql, parameters={"p": products}).result_rows}


def complete_until(client: Client, allowed_lateness: timedelta) -> datetime | None:
    """How far answers are final: the flow's event-time watermark minus the lateness.

    The watermark is the oldest newest-event time among partitions that are active (within
    an hour of the newest partition), so a partition that went quiet does not hold it back.
    """
    sql = """
    SELECT min(m) FROM (
        SELECT max(max_ts) AS m FROM flow_progress GROUP BY topic, partition
    ) WHERE m >= (SELECT max(max_ts) FROM flow_progress) - INTERVAL 1 HOUR
    """
    rows = client.query(sql).result_rows
    if not rows or rows[0][0] is None or rows[0][0].year < 1971:
        return None
    watermark = as_utc(rows[0][0])
    return watermark - allowed_lateness


def metric_document(
    client: Client,
    q: MetricQuery,
    allowed_lateness: timedelta,
    *,
    rollups: bool = True,
    budget: int | None = POINT_BUDGET,
) -> dict[str, Any]:
    """The API/CLI document: series plus ``complete_until``; later buckets are partial.
    At most ``budget`` points (a :class:`QueryError` beyond)."""
    series = metric_series(client, q, rollups=rollups, budget=budget)
    done = complete_until(client, allowed_lateness)
    grid = _grid(q.start, q.end, q.interval, q.tz)  # the one metric_series made
    ends = dict(zip(map(grid.label, grid.starts), [*grid.starts[1:], grid.end], strict=True))
    for point in series:
        if done is None or ends[point["ts"]] > done.timestamp():
            point["partial"] = True
    return {
        "metric": q.metric,
        "interval": q.interval,
        "tz": q.tz,
        "complete_until": done.isoformat() if done else None,
        "series": series,
    }
