"""Query latency of `pulse query` / the API (`metric_document`) over 30 days at 50M events.

    .venv/bin/python bench/query.py [--events 50000000] [--runs 20] [--dir PATH]
                                    [--only REGEX] [--experiment]

Fills a fresh chDB warehouse (migrated with `warehouse.migrate.migrate`) inside ClickHouse:
one ``INSERT INTO events SELECT ... FROM numbers(N)`` with deterministic pseudo-random
columns (30 days with a daily shape, ~3M users, sessions of ~8 events, the simulator's type
mix, 25 countries, devices 70/25/5, 6 channels, purchases with items), then ``sessions``
from ``events`` with one ``INSERT ... SELECT ... GROUP BY session_key``. ``--dir`` keeps the
warehouse there and reuses it when it is already filled (saves the ~2 min fill).

Then times ``warehouse.queries.metric_document`` for every metric of
``warehouse.metrics.METRICS``: 30 days at 1h and 1d, the last 24 h at 1m, and 30 days at 1d
``by=country`` / ``by=device``. Each case runs 3 times to warm up, then ``--runs`` times
(fewer when a case would exceed ``--budget`` seconds; the table says how many). Per case it
prints p50/p95 of the whole call and the share spent in ClickHouse (the SQL alone, timed
around ``client.query``). Targets (warm): p95 <= 50 ms, <= 200 ms with a breakdown.

``--experiment`` then measures candidate fixes without touching production code:
``do_not_merge_across_partitions_select_final=1``, no FINAL at all (upper bound of what
merged parts could give), and a pre-aggregated hourly/minute rollup table
(AggregatingMergeTree keyed by bucket + country + device + channel, with sum/count states
and uniqCombined64 states for the distinct counts), answering the same documents from it.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ingest.simulator.defaults import (
    CHANNELS,
    DAY_FACTORS,
    DEFAULT_CATEGORIES,
    DEFAULT_COUNTRIES,
    HOURLY_WEEKDAY,
)

START = datetime(2026, 10, 20, tzinfo=UTC)  # 30 days over two monthly partitions
DAYS = 30
USERS = 3_000_000
LATENESS = timedelta(minutes=10)

# The simulator's type mix (share of events), in its order.
TYPE_MIX = (
    ("page_view", 0.445),
    ("search", 0.105),
    ("product_view", 0.388),
    ("add_to_cart", 0.037),
    ("remove_from_cart", 0.004),
    ("begin_checkout", 0.013),
    ("purchase", 0.009),
)
TOPIC = {
    "page_view": "user.pageviews",
    "search": "user.searches",
    "product_view": "user.product_interactions",
    "add_to_cart": "user.cart_events",
    "remove_from_cart": "user.cart_events",
    "begin_checkout": "user.cart_events",
    "purchase": "user.purchases",
}


def _cum(weights: list[float]) -> str:
    """A ClickHouse array literal of cumulative shares (last is exactly 1)."""
    total = sum(weights)
    acc, out = 0.0, []
    for w in weights:
        acc += w
        out.append(acc / total)
    out[-1] = 1.0
    return "[" + ", ".join(f"{x:.6f}" for x in out) + "]"


def _strs(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _pick(cum: str, u: str) -> str:
    """1-based index of the bucket of uniform ``u`` in the cumulative array ``cum``."""
    return f"greatest(1, arrayFirstIndex(x -> x > {u}, {cum}))"


def _u(expr: str) -> str:
    """A uniform [0, 1) from a 64-bit hash."""
    return f"(({expr}) % 1000000) / 1000000.0"


def events_fill_sql(n: int) -> str:
    """``INSERT INTO events SELECT ... FROM numbers(n)``: deterministic synthetic traffic.

    Blocks of 16 events are cut at a random point into two sessions (mean 8 events, 1-15);
    a session's attributes and start come from hashes of its number, its events follow
    every ~30 s. Days follow the simulator's weekday factors, hours its weekday curve (UTC).
    """
    countries = [c.code for c in DEFAULT_COUNTRIES]
    c_cum = _cum([c.weight for c in DEFAULT_COUNTRIES])
    ch_names = [c[0] for c in CHANNELS]
    ch_cum = _cum([c[1] for c in CHANNELS])
    cats = [c.name for c in DEFAULT_CATEGORIES]
    queries = [q for c in DEFAULT_CATEGORIES for q in c.queries]
    day_w = [DAY_FACTORS[(START + timedelta(days=d)).weekday()] for d in range(DAYS)]
    day_cum = _cum(day_w)
    hour_cum = _cum(list(HOURLY_WEEKDAY))
    t_names = [t for t, _ in TYPE_MIX]
    t_cum = _cum([w for _, w in TYPE_MIX])
    t0_ms = int(START.timestamp() * 1000)
    return f"""
INSERT INTO events (ts, event_id, type, user_id, session_key, country, device, channel, page,
    product_id, category, price_eur, quantity, query, cart_value_eur, order_id, revenue_eur,
    is_order, `items.product_id`, `items.category`, `items.price_eur`, `items.quantity`,
    version, topic, partition, offset, written_at)
SELECT
    fromUnixTimestamp64Milli(toInt64(ts_ms), 'UTC') AS ts,
    concat('e', hex(cityHash64(number, 11))) AS event_id,
    type,
    concat('u', toString(user_n)) AS user_id,
    concat('s', hex(sid)) AS session_key,
    {_strs(countries)}[{_pick(c_cum, _u("cityHash64(sid, 5)"))}] AS country,
    multiIf(cityHash64(sid, 6) % 100 < 70, 'mobile',
            cityHash64(sid, 6) % 100 < 95, 'desktop', 'tablet') AS device,
    {_strs(ch_names)}[{_pick(ch_cum, _u("cityHash64(sid, 7)"))}] AS channel,
    multiIf(type = 'product_view', concat('/p/', product_id), type = 'search', '/search',
            type = 'page_view', ['/', '/cart', concat('/c/', cat)][1 + cityHash64(number, 12) % 3],
            '/checkout') AS page,
    if(has_product, product_id, '') AS product_id,
    if(has_product, cat, '') AS category,
    if(has_product, price, NULL) AS price_eur,
    toUInt32(if(has_product, 1 + (cityHash64(number, 13) % 100 >= 85), 1)) AS quantity,
    if(type = 'search', {_strs(queries)}[1 + cityHash64(number, 14) % {len(queries)}], '')
        AS query,
    if(type = 'begin_checkout', round(20 + (cityHash64(number, 15) % 20000) / 100, 2), NULL)
        AS cart_value_eur,
    if(is_purchase, concat('o', hex(cityHash64(number, 16))), '') AS order_id,
    if(is_purchase, round(arraySum(arrayMap((p, q) -> p * q, it_price, it_qty)), 2), NULL)
        AS revenue_eur,
    toUInt8(is_purchase) AS is_order,
    arrayMap(i -> concat('p', toString(100000 + (cityHash64(number, 20, i) % 20000))), it_idx),
    arrayMap(i -> {_strs(cats)}[1 + (cityHash64(number, 20, i) % 20000) % {len(cats)}], it_idx),
    it_price,
    it_qty,
    toUInt64(1) AS version,
    {_strs([TOPIC[t] for t in t_names])}[t_i] AS topic,
    toUInt16(user_n % 4) AS partition,
    number AS offset,
    ts AS written_at
FROM (
    SELECT number,
        intDiv(number, 16) AS blk,
        number % 16 AS pos,
        1 + cityHash64(blk, 1) % 15 AS cut,
        blk * 2 + (pos >= cut) AS sid,
        if(pos >= cut, pos - cut, pos) AS idx,
        cityHash64(sid, 4) % {USERS} AS user_n,
        {_pick(day_cum, _u("cityHash64(sid, 2)"))} - 1 AS day,
        {_pick(hour_cum, _u("cityHash64(sid, 3)"))} - 1 AS hour,
        {t0_ms} + day * 86400000 + hour * 3600000 + cityHash64(sid, 8) % 3600000
            + idx * 30000 + cityHash64(number, 9) % 30000 AS ts_ms,
        {_pick(t_cum, _u("cityHash64(number, 10)"))} AS t_i,
        {_strs(t_names)}[t_i] AS type,
        type IN ('product_view', 'add_to_cart', 'remove_from_cart') AS has_product,
        toUInt32(floor(pow({_u("cityHash64(number, 17)")}, 2) * 20000)) AS p_n,
        concat('p', toString(100000 + p_n)) AS product_id,
        {_strs(cats)}[1 + p_n % {len(cats)}] AS cat,
        round(3 + pow({_u("cityHash64(p_n)")}, 3) * 250, 2) AS price,
        type = 'purchase' AS is_purchase,
        cityHash64(number, 18) % 100 AS n_items_u,
        if(is_purchase, range(1 + (n_items_u >= 70) + (n_items_u >= 92)), []) AS it_idx,
        arrayMap(i -> round(3 + pow({_u("cityHash64(cityHash64(number, 20, i) % 20000)")}, 3)
                 * 250, 2), it_idx) AS it_price,
        arrayMap(i -> toUInt32(1 + (cityHash64(number, 21, i) % 100 >= 85)), it_idx) AS it_qty
    FROM numbers({n})
)
SETTINGS max_insert_threads = 2, max_threads = 2
"""


SESSIONS_FILL_SQL = """
INSERT INTO sessions (session_key, user_id, start, end, country, device, channel, n_events,
    n_pageviews, version, deleted)
SELECT session_key, any(user_id), min(ts), max(ts), argMin(country, ts), argMin(device, ts),
       argMin(channel, ts), count(), countIf(type IN ('page_view', 'product_view')), 1, 0
FROM events GROUP BY session_key
"""

PROGRESS_FILL_SQL = """
INSERT INTO flow_progress (topic, partition, max_ts, offset, updated_at)
SELECT topic, partition, max(ts), max(offset), now64(3) FROM events GROUP BY topic, partition
"""


def fill(client: Any, n: int) -> dict[str, float]:
    """Fill events, sessions and flow_progress; the seconds each step took."""
    took = {}
    t = time.perf_counter()
    client.command(events_fill_sql(n))
    took["events"] = time.perf_counter() - t
    t = time.perf_counter()
    client.command(SESSIONS_FILL_SQL)
    took["sessions"] = time.perf_counter() - t
    client.command(PROGRESS_FILL_SQL)
    return took


def table_stats(client: Any) -> str:
    rows = client.query(
        "SELECT table, sum(rows), count(), formatReadableSize(sum(bytes_on_disk)) "
        "FROM system.parts WHERE active AND database = currentDatabase() "
        "AND table IN ('events', 'sessions') GROUP BY table ORDER BY table"
    ).result_rows
    return "; ".join(f"{t}: {r:,} rows in {p} parts, {s}" for t, r, p, s in rows)


# ---------------------------------------------------------------------------------------
# Timing


@dataclass
class Timed:
    """Wall times of one case: whole call and the part inside ``client.query``."""

    total: list[float]
    sql: list[float]

    def p(self, q: float, sql: bool = False) -> float:
        xs = sorted(self.sql if sql else self.total)
        if len(xs) == 1:
            return xs[0]
        return statistics.quantiles(xs, n=100, method="inclusive")[round(q * 100) - 1]


class SqlClock:
    """Wraps a client so the time spent in ``query`` is summed per call of the caller."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.spent = 0.0

    def query(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return self._client.query(*args, **kwargs)
        finally:
            self.spent += time.perf_counter() - t

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def time_case(
    fn: Callable[[Any], Any], client: Any, runs: int, budget_s: float, warm: int = 3
) -> Timed:
    """Warm ``warm`` times, then up to ``runs`` timed runs within ``budget_s`` (at least 5;
    3 when one call takes over 5 s). A case whose first call takes over 2 s is warmed once
    only: it is bound by computation, not by cold caches."""
    clock = SqlClock(client)
    for i in range(warm):
        t = time.perf_counter()
        fn(clock)
        first = time.perf_counter() - t
        if i == 0 and first > 2.0:
            break
    least = 3 if first > 5.0 else 5
    timed = Timed([], [])
    began = time.perf_counter()
    for i in range(runs):
        clock.spent = 0.0
        t = time.perf_counter()
        fn(clock)
        timed.total.append(time.perf_counter() - t)
        timed.sql.append(clock.spent)
        if i + 1 >= least and time.perf_counter() - began > budget_s:
            break
    return timed


@dataclass(frozen=True)
class Case:
    metric: str
    label: str
    start: datetime
    end: datetime
    interval: str
    by: str | None

    @property
    def target_ms(self) -> float:
        return 200.0 if self.by or self.metric == "traffic_sources" else 50.0


def cases(only: str | None) -> list[Case]:
    from warehouse.metrics import METRICS

    end = START + timedelta(days=DAYS)
    last_day = end - timedelta(days=1)
    out = []
    for name, metric in METRICS.items():
        out.append(Case(name, "30d 1h", START, end, "1h", None))
        out.append(Case(name, "30d 1d", START, end, "1d", None))
        out.append(Case(name, "24h 1m", last_day, end, "1m", None))
        for dim in ("country", "device"):
            if metric.forced_by is None and metric.accepts(dim):
                out.append(Case(name, f"30d 1d by={dim}", START, end, "1d", dim))
    if only:
        pattern = re.compile(only)
        out = [c for c in out if pattern.search(f"{c.metric} {c.label}")]
    return out


def _row(case: Case, t: Timed) -> str:
    p50, p95 = t.p(0.50) * 1000, t.p(0.95) * 1000
    sql_share = sum(t.sql) / sum(t.total) if sum(t.total) else 0.0
    ok = "ok" if p95 <= case.target_ms else "MISS"
    return (
        f"| {case.metric:<22} | {case.label:<16} | {len(t.total):>2} | {p50:>9.1f} | "
        f"{p95:>9.1f} | {sql_share:>4.0%} | {case.target_ms:>4.0f} {ok:<4} |"
    )


HEADER = (
    f"| {'metric':<22} | {'range/interval':<16} |  n | {'p50 ms':>9} | {'p95 ms':>9} |  SQL |"
    " target    |\n|---|---|---|---|---|---|---|"
)


def run_cases(
    client: Any, case_list: list[Case], runs: int, budget_s: float, doc: Callable[..., Any]
) -> dict[Case, Timed]:
    from warehouse.queries import MetricQuery

    results = {}
    print(HEADER, flush=True)
    for case in case_list:
        q = MetricQuery(case.metric, case.start, case.end, case.interval, by=case.by)
        timed = time_case(lambda c, q=q: doc(c, q, LATENESS), client, runs, budget_s)
        results[case] = timed
        print(_row(case, timed), flush=True)
    return results


def summary(results: dict[Case, Timed]) -> str:
    met = sum(1 for c, t in results.items() if t.p(0.95) * 1000 <= c.target_ms)
    worst = max(results.items(), key=lambda kv: kv[1].p(0.95))
    return (
        f"{met}/{len(results)} cases meet their p95 target; worst p95 "
        f"{worst[1].p(0.95) * 1000:,.0f} ms ({worst[0].metric} {worst[0].label})"
    )


# ---------------------------------------------------------------------------------------
# Experiments (monkeypatching inside this process only)


@contextmanager
def patched_sql(transform: Callable[[str], str]) -> Iterator[None]:
    """Every query ``metric_document`` sends goes through ``transform`` first."""
    orig = SqlClock.query

    def query(self: SqlClock, sql: str, *args: Any, **kwargs: Any) -> Any:
        return orig(self, transform(sql), *args, **kwargs)

    SqlClock.query = query  # type: ignore[method-assign]
    try:
        yield
    finally:
        SqlClock.query = orig  # type: ignore[method-assign]


def _append_setting(sql: str, setting: str) -> str:
    return sql.rstrip() + f" SETTINGS {setting}"


ROLLUP_DDL = """
CREATE TABLE IF NOT EXISTS events_rollup_{grain} (
    b DateTime('UTC'),
    country LowCardinality(String),
    device LowCardinality(String),
    channel LowCardinality(String),
    events SimpleAggregateFunction(sum, UInt64),
    pageviews SimpleAggregateFunction(sum, UInt64),
    orders SimpleAggregateFunction(sum, UInt64),
    revenue SimpleAggregateFunction(sum, Float64),
    units SimpleAggregateFunction(sum, UInt64),
    visitors AggregateFunction(uniqCombined64, String),
    sessions AggregateFunction(uniqCombined64, String),
    purchase_sessions AggregateFunction(uniqCombined64, String),
    cart_sessions AggregateFunction(uniqCombined64, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(b)
ORDER BY (b, country, device, channel)
"""

# Session attributes from the session's first event, as the flow writes them to sessions.
ROLLUP_FILL = """
INSERT INTO events_rollup_{grain}
SELECT {bucket} AS b, s.country, s.device, s.channel,
    count(), countIf(type IN ('page_view', 'product_view')), countIf(is_order = 1),
    sumIf(coalesce(revenue_eur, 0), is_order = 1), sumIf(arraySum(items.quantity), is_order = 1),
    uniqCombined64State(user_id), uniqCombined64State(session_key),
    uniqCombined64StateIf(session_key, type = 'purchase'),
    uniqCombined64StateIf(session_key, type = 'add_to_cart')
FROM events AS e FINAL
ANY LEFT JOIN (SELECT session_key, country, device, channel FROM sessions FINAL
               WHERE deleted = 0) AS s USING (session_key)
GROUP BY b, s.country, s.device, s.channel
SETTINGS max_threads = 2
"""

SESSIONS_ROLLUP_DDL = """
CREATE TABLE IF NOT EXISTS sessions_rollup_{grain} (
    b DateTime('UTC'),
    country LowCardinality(String),
    device LowCardinality(String),
    channel LowCardinality(String),
    n SimpleAggregateFunction(sum, UInt64),
    bounces SimpleAggregateFunction(sum, UInt64),
    pageviews SimpleAggregateFunction(sum, UInt64),
    duration_s SimpleAggregateFunction(sum, Float64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(b)
ORDER BY (b, country, device, channel)
"""

SESSIONS_ROLLUP_FILL = """
INSERT INTO sessions_rollup_{grain}
SELECT {bucket} AS b, country, device, channel, count(), countIf(n_events = 1),
    sum(n_pageviews), sum((toUnixTimestamp64Milli(end) - toUnixTimestamp64Milli(start)) / 1000)
FROM sessions FINAL WHERE deleted = 0
GROUP BY b, country, device, channel
"""

ROLLUP_AGG = {
    "events": "sum(events)",
    "pageviews": "sum(pageviews)",
    "visitors": "uniqCombined64Merge(visitors)",
    "sessions": "uniqCombined64Merge(sessions)",
    "traffic_sources": "uniqCombined64Merge(sessions)",
    "orders": "sum(orders)",
    "revenue": "sum(revenue)",
    "aov": "sum(revenue) / nullIf(sum(orders), 0)",
    "conversion_rate": "uniqCombined64Merge(purchase_sessions) / "
    "nullIf(uniqCombined64Merge(sessions), 0)",
    "add_to_cart_rate": "uniqCombined64Merge(cart_sessions) / "
    "nullIf(uniqCombined64Merge(sessions), 0)",
    "revenue_per_visitor": "sum(revenue) / nullIf(uniqCombined64Merge(visitors), 0)",
    "units": "sum(units)",
    # from sessions_rollup_*
    "bounce_rate": "sum(bounces) / nullIf(sum(n), 0)",
    "pages_per_session": "sum(pageviews) / nullIf(sum(n), 0)",
    "avg_session_duration_s": "sum(duration_s) / nullIf(sum(n), 0)",
}


def _document(client: Any, q: Any, lateness: timedelta, sql: str, params: dict[str, Any]) -> Any:
    """The ``metric_document`` shape from a query returning ``(bucket, [dim,] value)``:
    same grid, labels, zero/null filling and ``partial`` flags as production."""
    from warehouse.buckets import make_grid
    from warehouse.queries import complete_until

    grid = make_grid(q.start, q.end, q.interval, q.tz)
    dim = q.breakdown
    kind = q.definition.kind
    found = {}
    for row in client.query(sql, parameters=params).result_rows:
        found[(int(row[0]), (row[1] or None) if dim else None)] = row[-1]
    values = sorted({v for _, v in found}, key=lambda v: (v is None, v or "")) if dim else [None]

    def clean(v: Any) -> Any:
        if v is None:
            return {"count": 0, "money": 0.0, "ratio": None}[kind]
        if kind == "count":
            return int(v)
        v = float(v)
        return None if v != v else (round(v, 2) if kind == "money" else v)

    series = []
    for b in grid.starts:
        for v in values:
            point = {"ts": grid.label(b), "value": clean(found.get((b, v)))}
            if dim:
                point[dim] = v
            series.append(point)
    done = complete_until(client, lateness)
    ends = dict(zip(map(grid.label, grid.starts), [*grid.starts[1:], grid.end], strict=True))
    for point in series:
        if done is None or ends[point["ts"]] > done.timestamp():
            point["partial"] = True
    return {"metric": q.metric, "interval": q.interval, "tz": q.tz,
            "complete_until": done.isoformat() if done else None, "series": series}  # fmt: skip


def _range_params(q: Any) -> dict[str, Any]:
    from warehouse.buckets import make_grid

    grid = make_grid(q.start, q.end, q.interval, q.tz)
    return {"lo": datetime.fromtimestamp(grid.starts[0], UTC),
            "hi": datetime.fromtimestamp(grid.end, UTC), "tz": q.tz}  # fmt: skip


def rollup_document(client: Any, q: Any, lateness: timedelta) -> dict[str, Any]:
    """``metric_document`` from the rollups: minute tables for 1m/5m buckets, hour tables
    otherwise; distinct counts merge uniqCombined64 states."""
    from warehouse.buckets import bucket_sql

    grain = "1m" if q.interval in ("1m", "5m") else "1h"
    table = "sessions" if q.definition.source == "sessions" else "events"
    dim = q.breakdown
    select_dim = f", {dim} AS dim" if dim else ""
    sql = (
        f"SELECT {bucket_sql('b', q.interval)} AS bk{select_dim}, {ROLLUP_AGG[q.metric]} AS v "
        f"FROM {table}_rollup_{grain} WHERE b >= {{lo:DateTime}} AND b < {{hi:DateTime}} "
        f"GROUP BY bk{', dim' if dim else ''}"
    )
    return _document(client, q, lateness, sql, _range_params(q))


# Experiment F: exact answers per standard bucket (UTC-aligned 1m/5m/1h, UTC days), one row
# per (interval, bucket, dimension, value); distinct counts computed once, exactly.
ANSWERS_DDL = """
CREATE TABLE IF NOT EXISTS answers (
    iv LowCardinality(String),
    b DateTime('UTC'),
    dim LowCardinality(String),
    value LowCardinality(String),
    events SimpleAggregateFunction(sum, UInt64),
    pageviews SimpleAggregateFunction(sum, UInt64),
    visitors SimpleAggregateFunction(sum, UInt64),
    sessions SimpleAggregateFunction(sum, UInt64),
    orders SimpleAggregateFunction(sum, UInt64),
    revenue SimpleAggregateFunction(sum, Float64),
    units SimpleAggregateFunction(sum, UInt64),
    purchase_sessions SimpleAggregateFunction(sum, UInt64),
    cart_sessions SimpleAggregateFunction(sum, UInt64),
    s_n SimpleAggregateFunction(sum, UInt64),
    s_bounces SimpleAggregateFunction(sum, UInt64),
    s_pageviews SimpleAggregateFunction(sum, UInt64),
    s_duration SimpleAggregateFunction(sum, Float64)
) ENGINE = AggregatingMergeTree
ORDER BY (iv, dim, value, b)
"""
_GROUPING = """
    multiIf(grouping({c}country) = 0, 'country', grouping({c}device) = 0, 'device',
            grouping({c}channel) = 0, 'channel', '') AS dim_,
    multiIf(dim_ = 'country', {c}country, dim_ = 'device', {c}device,
            dim_ = 'channel', {c}channel, '') AS value_"""
ANSWERS_EVENTS = (
    """
INSERT INTO answers
SELECT {iv:String}, {bucket} AS b,"""
    + _GROUPING.format(c="s.")
    + """,
    count(), countIf(type IN ('page_view', 'product_view')), uniqExact(user_id),
    uniqExact(session_key), countIf(is_order = 1), sumIf(coalesce(revenue_eur, 0), is_order = 1),
    sumIf(arraySum(items.quantity), is_order = 1), uniqExactIf(session_key, type = 'purchase'),
    uniqExactIf(session_key, type = 'add_to_cart'), 0, 0, 0, 0
FROM events AS e FINAL
ANY LEFT JOIN (SELECT session_key, country, device, channel FROM sessions FINAL
               WHERE deleted = 0) AS s USING (session_key)
WHERE ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)}
GROUP BY GROUPING SETS ((b), (b, s.country), (b, s.device), (b, s.channel))
"""
)
ANSWERS_SESSIONS = (
    """
INSERT INTO answers
SELECT {iv:String}, {bucket} AS b,"""
    + _GROUPING.format(c="")
    + """,
    0, 0, 0, 0, 0, 0, 0, 0, 0, count(), countIf(n_events = 1), sum(n_pageviews),
    sum((toUnixTimestamp64Milli(end) - toUnixTimestamp64Milli(start)) / 1000)
FROM sessions FINAL
WHERE deleted = 0 AND start >= {lo:DateTime64(3)} AND start < {hi:DateTime64(3)}
GROUP BY GROUPING SETS ((b), (b, country), (b, device), (b, channel))
"""
)
ANSWERS_BUCKET = {
    "1m": "toStartOfMinute({c})",
    "5m": "toStartOfFiveMinutes({c})",
    "1h": "toStartOfHour({c})",
    "1d": "toStartOfDay({c}, 'UTC')",
}
ANSWERS_AGG = {
    "events": "sum(events)",
    "pageviews": "sum(pageviews)",
    "visitors": "sum(visitors)",
    "sessions": "sum(sessions)",
    "traffic_sources": "sum(sessions)",
    "orders": "sum(orders)",
    "revenue": "sum(revenue)",
    "aov": "sum(revenue) / nullIf(sum(orders), 0)",
    "conversion_rate": "sum(purchase_sessions) / nullIf(sum(sessions), 0)",
    "add_to_cart_rate": "sum(cart_sessions) / nullIf(sum(sessions), 0)",
    "revenue_per_visitor": "sum(revenue) / nullIf(sum(visitors), 0)",
    "units": "sum(units)",
    "bounce_rate": "sum(s_bounces) / nullIf(sum(s_n), 0)",
    "pages_per_session": "sum(s_pageviews) / nullIf(sum(s_n), 0)",
    "avg_session_duration_s": "sum(s_duration) / nullIf(sum(s_n), 0)",
}


def build_answers(client: Any) -> list[str]:
    """Fill ``answers`` day by day (the unit an incremental job would recompute)."""
    client.command("DROP TABLE IF EXISTS answers")
    client.command(ANSWERS_DDL)
    out = []
    for iv, bucket in ANSWERS_BUCKET.items():
        t = time.perf_counter()
        for day in range(DAYS + 1):
            lo = START + timedelta(days=day)
            params = {"iv": iv, "lo": lo, "hi": lo + timedelta(days=1)}
            sql = ANSWERS_EVENTS.replace("{bucket}", bucket.format(c="ts"))
            client.command(sql, parameters=params)
            sql = ANSWERS_SESSIONS.replace("{bucket}", bucket.format(c="start"))
            client.command(sql, parameters=params)
        took = time.perf_counter() - t
        out.append(
            f"answers {iv}: {took:.1f} s for {DAYS + 1} days = {took / (DAYS + 1):.2f} s/day"
        )
    client.command("OPTIMIZE TABLE answers FINAL")
    out.append(f"answers: {_size(client, 'answers')}")
    return out


def answers_document(client: Any, q: Any, lateness: timedelta) -> dict[str, Any]:
    """``metric_document`` from the exact answers table (UTC buckets only)."""
    if q.tz != "UTC":
        raise ValueError("the answers experiment holds UTC buckets only")
    dim = q.breakdown
    params = {**_range_params(q), "iv": q.interval, "dim": dim or ""}
    sql = (
        f"SELECT toUnixTimestamp(b) AS bk{', value' if dim else ''}, {ANSWERS_AGG[q.metric]} "
        "FROM answers WHERE iv = {iv:String} AND dim = {dim:String} "
        "AND b >= {lo:DateTime} AND b < {hi:DateTime} "
        f"GROUP BY bk{', value' if dim else ''}"
    )
    return _document(client, q, lateness, sql, params)


def _size(client: Any, table: str) -> str:
    rows, size = client.query(
        "SELECT sum(rows), formatReadableSize(sum(bytes_on_disk)) FROM system.parts "
        f"WHERE active AND database = currentDatabase() AND table = '{table}'"
    ).result_rows[0]
    return f"{rows:,} rows, {size}"


def build_rollups(client: Any) -> list[str]:
    out = []
    for grain, bucket in (("1h", "toStartOfHour"), ("1m", "toStartOfMinute")):
        for table, ddl, fill_sql, column in (
            ("events", ROLLUP_DDL, ROLLUP_FILL, "ts"),
            ("sessions", SESSIONS_ROLLUP_DDL, SESSIONS_ROLLUP_FILL, "start"),
        ):
            name = f"{table}_rollup_{grain}"
            client.command(f"DROP TABLE IF EXISTS {name}")
            client.command(ddl.format(grain=grain))
            t = time.perf_counter()
            client.command(fill_sql.format(grain=grain, bucket=f"{bucket}({column})"))
            client.command(f"OPTIMIZE TABLE {name} FINAL")
            out.append(f"{name}: built in {time.perf_counter() - t:.1f} s, {_size(client, name)}")
    return out


def check_rollup(client: Any, doc: Callable[..., Any]) -> str:
    """Largest relative difference between ``doc`` and production's answer per bucket."""
    from warehouse.queries import MetricQuery, metric_document

    end = START + timedelta(days=DAYS)
    worst = []
    for metric, interval, start in (
        ("visitors", "1d", START),
        ("visitors", "1h", end - timedelta(days=1)),
        ("sessions", "1d", START),
        ("conversion_rate", "1d", START),
        ("revenue", "1d", START),
        ("bounce_rate", "1d", START),
    ):
        q = MetricQuery(metric, start, end, interval)
        exact = metric_document(client, q, LATENESS)["series"]
        approx = doc(client, q, LATENESS)["series"]
        err = max(
            abs(a["value"] - e["value"]) / abs(e["value"])
            for a, e in zip(approx, exact, strict=True)
            if e["value"]
        )
        worst.append(f"{metric}@{interval} {err:.3%}")
    return "max relative error of a bucket vs exact: " + ", ".join(worst)


def _skip_dim_values_for_events() -> Callable[[], None]:
    """Experiment D: answer the breakdown values of an events metric from the series rows
    (same source and filters), not by a second query. Returns the undo."""
    import warehouse.queries as wq

    orig = wq._dim_values_sql

    def dim_values_sql(q: Any, params: dict[str, Any]) -> str:
        if q.definition.source == "events":
            return "SELECT '' WHERE 0"
        return orig(q, params)

    wq._dim_values_sql = dim_values_sql

    def undo() -> None:
        wq._dim_values_sql = orig

    return undo


EXPERIMENTS = {
    "A": "SETTINGS do_not_merge_across_partitions_select_final = 1",
    "B": "no FINAL (upper bound: fully merged parts, no duplicates)",
    "D": "breakdowns of events metrics without the separate dim-values query",
    "C": "rollup tables (AggregatingMergeTree, hour and minute grain)",
    "F": "exact answers per standard bucket and single dimension (distinct counts exact)",
    "E": "OPTIMIZE TABLE events FINAL (one part per monthly partition) + A; changes the data dir",
}


def experiments(client: Any, which: str, runs: int, budget_s: float, only: str | None) -> None:
    from warehouse.queries import metric_document

    picks = only or (
        r"^(events|visitors|sessions|revenue|conversion_rate|bounce_rate) "
        r"(30d 1h|24h 1m|30d 1d by=country)$"
    )
    chosen = cases(picks)
    dnm = "do_not_merge_across_partitions_select_final = 1"
    for key in which:
        print(f"\n## Experiment {key}: {EXPERIMENTS[key]}", flush=True)
        if key == "A":
            with patched_sql(lambda s: _append_setting(s, dnm)):
                print(summary(run_cases(client, chosen, runs, budget_s, metric_document)))
        elif key == "B":
            with patched_sql(lambda s: s.replace(" FINAL", "")):
                print(summary(run_cases(client, chosen, runs, budget_s, metric_document)))
        elif key == "D":
            undo = _skip_dim_values_for_events()
            try:
                by = [c for c in chosen if c.by] or cases(r"^(events|visitors) 30d 1d by=")
                print(summary(run_cases(client, by, runs, budget_s, metric_document)))
            finally:
                undo()
        elif key == "C":
            for line in build_rollups(client):
                print(line, flush=True)
            print(check_rollup(client, rollup_document), flush=True)
            print(summary(run_cases(client, cases(only), runs, budget_s, rollup_document)))
        elif key == "F":
            for line in build_answers(client):
                print(line, flush=True)
            print(check_rollup(client, answers_document), flush=True)
            print(summary(run_cases(client, cases(only), runs, budget_s, answers_document)))
        elif key == "E":
            t = time.perf_counter()
            client.command("OPTIMIZE TABLE events FINAL")
            client.command("OPTIMIZE TABLE sessions FINAL")
            print(f"optimize: {time.perf_counter() - t:.1f} s; {table_stats(client)}")
            with patched_sql(lambda s: _append_setting(s, dnm)):
                print(summary(run_cases(client, chosen, runs, budget_s, metric_document)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per case at most")
    parser.add_argument("--dir", type=Path, help="keep (and reuse) the warehouse here")
    parser.add_argument("--only", help="regex on '<metric> <range/interval>' to run a subset")
    parser.add_argument(
        "--experiment",
        nargs="?",
        const="ABDCF",
        default="",
        help="also run experiments (letters, default ABDCF; E optimizes the data for good): "
        + "; ".join(f"{k} {v}" for k, v in EXPERIMENTS.items()),
    )
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    from warehouse.client import connect
    from warehouse.migrate import migrate
    from warehouse.queries import metric_document

    with tempfile.TemporaryDirectory() as tmp:
        where = args.dir or Path(tmp)
        client = connect(f"chdb://{where}/wh")
        migrate(client)
        have = client.query("SELECT count() FROM events").result_rows[0][0]
        if have == 0:
            took = fill(client, args.events)
            print(f"fill: events {took['events']:.1f} s, sessions {took['sessions']:.1f} s")
        elif have != args.events:
            raise SystemExit(f"{where} holds {have:,} events, not {args.events:,}")
        print(table_stats(client))
        print(f"load: {subprocess.getoutput('uptime').strip()}")
        if not args.skip_baseline:
            print("\n## Baseline: warehouse.queries.metric_document (warm)")
            results = run_cases(client, cases(args.only), args.runs, args.budget, metric_document)
            print(summary(results))
        if args.experiment:
            experiments(client, args.experiment, args.runs, args.budget, args.only)
        print(f"load: {subprocess.getoutput('uptime').strip()}")


if __name__ == "__main__":
    main()
