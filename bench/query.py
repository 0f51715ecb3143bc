"""Query latency of `pulse query` / the API (`metric_document`) over 30 days at 50M events.

    .venv/bin/python bench/query.py [--events 50000000] [--runs 20] [--dir PATH]
                                    [--only REGEX] [--raw]

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

After the fill, the rollups are built the way the flow keeps them
(``warehouse.rollups.rebuild``: every minute marked dirty, then recomputed), and timed.
``--raw`` times the same cases on raw events only (``rollups=False``), for comparison.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
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
        "AND table IN ('events', 'sessions', 'rollup_1m', 'rollup_1h', 'starts_1m') "
        "GROUP BY table ORDER BY table"
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


def _call(doc: Callable[..., Any], q: Any, client: Any) -> Any:
    return doc(client, q, LATENESS)


def run_cases(
    client: Any, case_list: list[Case], runs: int, budget_s: float, doc: Callable[..., Any]
) -> dict[Case, Timed]:
    from warehouse.queries import MetricQuery

    results = {}
    print(HEADER, flush=True)
    for case in case_list:
        q = MetricQuery(case.metric, case.start, case.end, case.interval, by=case.by)
        timed = time_case(partial(_call, doc, q), client, runs, budget_s)
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


def prepared_warehouse(where: Path, events: int, extra_fill_sql: str | None = None) -> Any:
    """A chDB warehouse at ``where`` holding ``events`` events of :func:`fill` and their
    rollups: filled and rolled up the first time, reused as it is afterwards.
    ``extra_fill_sql`` runs once after a fill (another benchmark's own rows)."""
    from warehouse.client import connect
    from warehouse.migrate import migrate
    from warehouse.rollups import first_dirty, rebuild

    client = connect(f"chdb://{where}/wh")
    migrate(client)
    have = client.query("SELECT count() FROM events").result_rows[0][0]
    if have == 0:
        took = fill(client, events)
        if extra_fill_sql:
            client.command(extra_fill_sql)
        print(f"fill: events {took['events']:.1f} s, sessions {took['sessions']:.1f} s")
    elif have != events:
        raise SystemExit(f"{where} holds {have:,} events, not {events:,}")
    rolled = client.query("SELECT count() FROM rollup_1m").result_rows[0][0]
    if not rolled or first_dirty(client, 0, START, START + timedelta(days=DAYS)) is not None:
        t = time.perf_counter()
        print(f"rollups: {rebuild(client):,} minutes in {time.perf_counter() - t:.1f} s")
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per case at most")
    parser.add_argument("--dir", type=Path, help="keep (and reuse) the warehouse here")
    parser.add_argument("--only", help="regex on '<metric> <range/interval>' to run a subset")
    parser.add_argument("--raw", action="store_true", help="also time raw events only")
    args = parser.parse_args()

    from warehouse.queries import metric_document

    with tempfile.TemporaryDirectory() as tmp:
        client = prepared_warehouse(args.dir or Path(tmp), args.events)
        print(table_stats(client))
        print(f"load: {subprocess.getoutput('uptime').strip()}")
        print("\n## warehouse.queries.metric_document (warm)")
        results = run_cases(client, cases(args.only), args.runs, args.budget, metric_document)
        print(summary(results))
        if args.raw:
            print("\n## the same on raw events only (rollups=False)")

            def raw(c: Any, q: Any, lateness: timedelta) -> Any:
                return metric_document(c, q, lateness, rollups=False)

            results = run_cases(client, cases(args.only), args.runs, args.budget, raw)
            print(summary(results))
        print(f"load: {subprocess.getoutput('uptime').strip()}")


if __name__ == "__main__":
    main()
