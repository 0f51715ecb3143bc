"""Per-minute, per-hour and per-day rollups: kept current from the raw tables, read by
queries.

The flow marks the minutes each batch changed (:func:`mark_dirty`), per family: event
measures (``rollup_*``: the minutes of the events written) and session-start measures
(``starts_*``: the start minutes of the sessions written, which keep changing while those
sessions go on). :func:`refresh` recomputes complete dirty minutes from ``events`` and
``sessions``, and an hour (a UTC day) from its minutes (hours) once it is complete, so a
row is always a function of the de-duplicated raw data: replays, late events and session
merges only make minutes dirty again, and through them their hour and day.

An hour is recomputed once, when it is over, not at every refresh while it goes on: its
cost (merging the exact sets of 60 minutes) would otherwise grow through the hour, and a
day's through the day. Queries read each bucket from the coarsest rows that are current
for it: whole days, then hours, then minutes, and the rest from raw events
(:func:`first_dirty`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import cache

import msgspec
from clickhouse_connect.driver.client import Client

from ingest.times import as_utc, aware
from warehouse.clock import next_version

__all__ = [
    "EVENTS",
    "GRAINS",
    "LEVELS",
    "MINUTE_ROLLUPS",
    "PASSES",
    "STARTS",
    "UNROLLED",
    "first_dirty",
    "first_dirty_of",
    "mark_dirty",
    "mark_kind",
    "mark_spans",
    "minutes_of",
    "rebuild",
    "refresh",
    "settled_until",
]

MINUTE_MS = 60_000

# Grouping levels of rollup rows (see 004_rollups.sql).
LEVELS: dict[frozenset[str], int] = {
    frozenset({"country", "device", "channel"}): 0,
    frozenset(): 1,
    frozenset({"country"}): 2,
    frozenset({"device"}): 3,
    frozenset({"channel"}): 4,
}

EVENTS, STARTS = 0, 1  # rollup families
GRAINS = ("1m", "1h", "1d")
UNROLLED = "unrolled"  # first_dirty_of: minutes whose data their hours do not hold yet
# How far back the flow (and an erasure) keeps minute rows current (refresh's minutes_from).
MINUTE_ROLLUPS = timedelta(days=7)
_PERIOD_MS = {"1m": MINUTE_MS, "1h": 3_600_000, "1d": 86_400_000}
_START_OF = {"1m": "toStartOfMinute", "1h": "toStartOfHour", "1d": "toStartOfDay"}


def mark_kind(family: int, grain: str) -> int:
    """``kind`` in rollup_marks: 0/1 the minutes of each family, 2/3 hours, 4/5 days."""
    return family + 2 * GRAINS.index(grain)


# Inserted by position: the order is the tables' (aliases with _ keep the state columns
# visible to the final counts, taken from the merged sets rather than merging them twice).
_EVENT_MEASURES = """
    sum(events) AS events, sum(pageviews) AS pageviews, sum(orders) AS orders,
    sum(revenue) AS revenue, sum(units) AS units,
    uniqExactMergeState(visitors) AS visitors_, uniqExactMergeState(sessions) AS sessions_,
    uniqExactMergeState(purchase_sessions) AS purchase_sessions_,
    uniqExactMergeState(cart_sessions) AS cart_sessions_,
    finalizeAggregation(visitors_) AS n_visitors, finalizeAggregation(sessions_) AS n_sessions,
    finalizeAggregation(purchase_sessions_) AS n_purchase_sessions,
    finalizeAggregation(cart_sessions_) AS n_cart_sessions"""

_START_MEASURES = """
    sum(started) AS started, sum(bounces) AS bounces, sum(start_pageviews) AS start_pageviews,
    sum(start_duration_s) AS start_duration_s"""

_EMPTY_SETS = """
    uniqExactStateIf(toUInt64(0), false) AS visitors,
    uniqExactStateIf(toUInt64(0), false) AS sessions,
    uniqExactStateIf(toUInt64(0), false) AS purchase_sessions,
    uniqExactStateIf(toUInt64(0), false) AS cart_sessions"""

# One source row fans out to every level it belongs to.
_FAN_OUT = """ARRAY JOIN [
    (0, c, d, ch), (1, '', '', ''), (2, c, '', ''), (3, '', d, ''), (4, '', '', ch)
] AS lv"""


# The periods (minutes, or hours) as epoch seconds: a list of a week of minutes is bound
# and parsed in a quarter of the time a list of DateTime takes (~25 ms instead of ~90 per use).
def _in_periods(col: str, start: str) -> str:
    return (
        f"{col} >= {{lo:DateTime64(3)}} AND {col} < {{hi:DateTime64(3)}}"
        f" AND toUInt32({start}({col})) IN {{mins:Array(UInt32)}}"
    )


# A refresh writes each row once, and its keys are unique (GROUP BY): ReplacingMergeTree's
# merge of the inserted block (optimize_on_insert) would only copy every exact set again,
# half of the insert's cost (docs/benchmarks.md, issue #21).
_INSERT_SETTINGS = "SETTINGS optimize_on_insert = 0"


def _event_cells(start: str) -> str:
    """One row per (level, period, combination) of the periods' events. The sessions whose
    attributes the events need are read without FINAL: an older version of a moved event
    only adds a key whose attributes are looked up for nothing."""
    return f"""
WITH keys AS (
    SELECT DISTINCT session_key FROM events WHERE {_in_periods("ts", start)}
),
attrs AS (
    SELECT session_key, country AS c, device AS d, channel AS ch
    FROM sessions FINAL WHERE deleted = 0 AND session_key IN keys
)
SELECT lv.1 AS level, {start}(ts) AS t, lv.2 AS country, lv.3 AS device,
       lv.4 AS channel,
       count() AS events, countIf(type IN ('page_view', 'product_view')) AS pageviews,
       countIf(is_order = 1) AS orders,
       sumIf(coalesce(revenue_eur, 0), is_order = 1) AS revenue,
       sumIf(arraySum(items.quantity), is_order = 1) AS units,
       uniqExactState(cityHash64(user_id)) AS visitors,
       uniqExactState(cityHash64(session_key)) AS sessions,
       uniqExactStateIf(cityHash64(session_key), type = 'purchase') AS purchase_sessions,
       uniqExactStateIf(cityHash64(session_key), type = 'add_to_cart') AS cart_sessions
FROM (
    SELECT ts, type, is_order, revenue_eur, items.quantity, user_id, session_key, c, d, ch
    FROM events FINAL ANY LEFT JOIN attrs USING (session_key)
    WHERE {_in_periods("ts", start)}
) {_FAN_OUT}
GROUP BY level, t, country, device, channel
"""


def _start_cells(start: str) -> str:
    """Sessions that start in the periods and whose first event carries their key (a key
    that only existed before a crash has none: see 002_events.sql). Only events at a
    session's start time are looked at: the periods of long sessions are many and large."""
    return f"""
WITH starting AS (
    SELECT session_key, start, end, n_events, n_pageviews, country, device, channel
    FROM sessions FINAL WHERE deleted = 0 AND {_in_periods("start", start)}
),
keys AS (
    SELECT DISTINCT session_key FROM events FINAL
    WHERE {_in_periods("ts", start)} AND ts IN (SELECT start FROM starting)
)
SELECT lv.1 AS level, {start}(start) AS t, lv.2 AS country, lv.3 AS device,
       lv.4 AS channel, count() AS started, countIf(n_events = 1) AS bounces,
       sum(n_pageviews) AS start_pageviews,
       sum((toUnixTimestamp64Milli(end) - toUnixTimestamp64Milli(start)) / 1000)
           AS start_duration_s
FROM (
    SELECT start, end, n_events, n_pageviews, country AS c, device AS d, channel AS ch
    FROM starting WHERE session_key IN keys
) {_FAN_OUT}
GROUP BY level, t, country, device, channel
"""


@cache
def _from_raw(family: int, grain: str) -> tuple[str, str]:
    """The SQL recomputing periods of ``grain`` (minutes; the hours of old minutes) from the
    raw rows: for periods that have rows (recomputed, and the combinations a period no
    longer has, when a session's attributes changed, rewritten as zero rows), and for
    periods without rows yet (a backlog's: nothing to zero, so each row is written as
    computed, without merging its sets again)."""
    start = _START_OF[grain]
    table = f"{_FAMILIES[family][0]}_{grain}"
    # the cells, their measures merged, a zero row's values, the final distinct counts
    zeros = _MERGED[family][1]
    if family == EVENTS:
        cells, measures = _event_cells(start), _EVENT_MEASURES
        finals = """finalizeAggregation(visitors), finalizeAggregation(sessions),
       finalizeAggregation(purchase_sessions), finalizeAggregation(cart_sessions),"""
    else:
        cells, measures, finals = _start_cells(start), _START_MEASURES, ""
    again = f"""
INSERT INTO {table}
SELECT level, t, country, device, channel, {measures}, {{v:UInt64}} AS version
FROM (
    {cells}
    UNION ALL
    SELECT level, t, country, device, channel, {zeros}
    FROM {table} FINAL WHERE {_in_periods("t", start)}
    GROUP BY level, t, country, device, channel
)
GROUP BY level, t, country, device, channel
{_INSERT_SETTINGS}
"""
    first = f"""
INSERT INTO {table}
SELECT *, {finals} {{v:UInt64}} AS version FROM ({cells})
{_INSERT_SETTINGS}
"""
    return again, first


# An hour (a UTC day) from the minutes (hours) below it, one grouping level at a time
# and a few source rows per block: the exact sets of a period are merged whole and each
# level holds every user and session of the period once, so a step holds one level's
# merged sets and a few of the sets it merges (an hour of 2M sessions: 0.28 GB at the
# peak, was 3.3 GB; docs/benchmarks.md). The combinations the period's own rows have and
# its sources no longer do are rewritten as zero rows: an hour once rolled up from the raw
# rows (its minutes left to it) can hold a combination none of its minutes has a row for,
# such as an erased user's.
_REFRESH_COARSER = """
INSERT INTO {into}
SELECT level, tt, country, device, channel, {measures}, {{v:UInt64}} AS version
FROM (
    SELECT level, {start}(t) AS tt, country, device, channel, {columns}
    FROM {source} FINAL
    WHERE level = {{level:UInt8}} AND t >= {{lo:DateTime64(3)}} AND t < {{hi:DateTime64(3)}}
      AND {start}(t) IN {{starts:Array(DateTime)}}
    UNION ALL
    SELECT level, t AS tt, country, device, channel, {zeros}
    FROM {into} FINAL
    WHERE level = {{level:UInt8}} AND t IN {{starts:Array(DateTime)}}
    GROUP BY level, t, country, device, channel
)
GROUP BY level, tt, country, device, channel
SETTINGS max_block_size = 8, optimize_on_insert = 0
"""
# Per family: table prefix, measures.
_FAMILIES = {EVENTS: ("rollup", _EVENT_MEASURES), STARTS: ("starts", _START_MEASURES)}
# Per family: the columns the measures merge, and a zero row's values of them.
_MERGED = {
    EVENTS: ("events, pageviews, orders, revenue, units, visitors, sessions, "
             "purchase_sessions, cart_sessions", f"0, 0, 0, 0, 0, {_EMPTY_SETS}"),
    STARTS: ("started, bounces, start_pageviews, start_duration_s", "0, 0, 0, 0"),
}  # fmt: skip

# Minutes before the retention's horizon (``purged_until``, warehouse.retention) are never
# recomputed from the raw tables again: their raw rows are gone, their rollups are the
# record. (Hours and days are recomputed from the rollups below them, which stay.)
_KEPT = "(kind > 1 OR minute >= (SELECT max(until) FROM purged_until))"

# A minute left to its hour (``refresh``'s ``minutes_from``) is read again only when it was
# written since its hour took it (``rolled``: 012_old_minutes.sql).
_DIRTY = f"""
SELECT toUInt32(minute), dirty FROM rollup_marks FINAL
WHERE kind = {{{{kind:UInt8}}}} AND dirty > clean AND {_KEPT} {{where}} ORDER BY minute
"""
_NOT_ROLLED = "AND (dirty > rolled OR minute < {raw_lo:DateTime} OR minute >= {raw_hi:DateTime})"

# Per kind, the first period whose rows are not current, and the first whose data is not
# in the rows of its parent either (a minute left to its hour is in it; see refresh).
_FIRST_DIRTY = f"""
SELECT kind, min(minute), minIfOrNull(minute, dirty > greatest(clean, rolled))
FROM rollup_marks FINAL
WHERE kind IN {{kinds:Array(UInt8)}} AND dirty > clean AND {_KEPT}
  AND minute >= {{lo:DateTime}} AND minute < {{hi:DateTime}}
GROUP BY kind
"""


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def minutes_of(ts_ms: Iterable[int]) -> set[int]:
    """The minute starts (epoch ms) of some event times."""
    return {t - t % MINUTE_MS for t in ts_ms}


def mark_dirty(client: Client, minutes: Mapping[int, Iterable[int]], version: int) -> None:
    """Record that minutes (epoch-ms starts, per family) got data written at ``version``."""
    _mark(client, {mark_kind(f, "1m"): ms for f, ms in minutes.items()}, version)


_MARK_SPAN = """
INSERT INTO rollup_marks (kind, minute, dirty, clean)
SELECT kind, m, {v:UInt64}, 0
FROM (
    SELECT DISTINCT toStartOfMinute(ts) AS m FROM events
    WHERE ts >= {lo:DateTime64(3)} AND ts <= {hi:DateTime64(3)}
)
ARRAY JOIN {kinds:Array(UInt8)} AS kind
"""


def mark_spans(client: Client, spans: Iterable[tuple[int, int]], version: int) -> None:
    """Mark dirty, in both families, the minutes within each (first, last) span (epoch
    ms, inclusive) that hold events: a long session whose times or attributes changed
    (flows.rows.LONG_SPAN_MS). Bounded by the events in the span, not by its length."""
    kinds = [mark_kind(f, "1m") for f in _FAMILIES]
    merged: list[list[int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    for first, last in merged:
        client.command(_MARK_SPAN, parameters={"v": version, "lo": _dt(first), "hi": _dt(last),
                                               "kinds": kinds})  # fmt: skip


def _mark(client: Client, periods: Mapping[int, Iterable[int]], version: int) -> None:
    _insert_marks(
        client,
        [(kind, m // 1000, version, 0, 0) for kind, ms in periods.items() for m in set(ms)],
    )


_MARK_COLUMNS = ["kind", "minute", "dirty", "clean", "rolled"]
_encode_lines = msgspec.json.Encoder().encode_lines


def _insert_marks(client: Client, rows: list[tuple[int, int, int, int, int]]) -> None:
    """Insert (kind, period start in epoch seconds, dirty, clean, rolled) rows into rollup_marks,
    as JSON lines ClickHouse parses: a backlog's batch marks tens of thousands of minutes,
    and building them as DateTime values in Python held the interpreter from the flow's
    thread for about a tenth of the drain (docs/benchmarks.md, issue #21)."""
    if rows:
        client.raw_insert("rollup_marks", _MARK_COLUMNS, _encode_lines(rows),
                          fmt="JSONCompactEachRow")  # fmt: skip


def _chunks(
    periods: list[int], size: int, length: int, weights: Mapping[int, int] | None = None
) -> Iterable[list[int]]:
    """Sorted period starts in groups of at most ``size`` spanning at most ``size``
    periods of ``length`` ms. With ``weights`` (events per period start, dirty or not), a
    group goes on beyond that while the events it spans stay within
    :data:`_GROUP_EVENTS` (and its periods within :data:`_GROUP_PERIODS`): sparse periods
    — weeks of a shop's history, a few events a minute — are then recomputed a few
    queries at a time instead of one per ``size`` periods, since most of a query's cost
    is fixed (docs/benchmarks.md, issue #21). A group never spans more than ``size``
    periods' or that many events."""
    spanned = sorted((weights or {}).items())
    at = 0  # the next entry of ``spanned`` not yet counted
    group: list[int] = []
    weight = 0
    for m in periods:
        w = 0  # the events from the group's last period (excluded) to ``m`` (included)
        while at < len(spanned) and spanned[at][0] <= m:
            w += spanned[at][1]
            at += 1
        full = bool(group) and (len(group) >= size or m - group[0] >= size * length)
        if full and (weights is None or weight + w > _GROUP_EVENTS or len(group) >= _GROUP_PERIODS):
            yield group
            group, weight = [], 0
            w = weights.get(m, 0) if weights is not None else 0
        group.append(m)
        weight += w
    if group:
        yield group


# A group of sparse periods recomputed in one query holds at most this many events (its
# exact sets: ~100 MB at most in chDB) and this many periods (the query's list of them).
_GROUP_EVENTS = 500_000
_GROUP_PERIODS = 10_080


def _weights(client: Client, grain: str, periods: list[int]) -> dict[int, int]:
    """Events per period of ``grain`` (epoch-ms starts) between the first and last of
    ``periods``, from ``events`` without FINAL (an estimate: enough to size groups)."""
    rows = client.query(
        f"SELECT toUnixTimestamp({_START_OF[grain]}(ts)) * 1000 AS p, count() FROM events "
        "WHERE ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)} GROUP BY p",
        parameters={"lo": _dt(periods[0]), "hi": _dt(periods[-1] + _PERIOD_MS[grain])},
    ).result_rows
    return {int(p): int(n) for p, n in rows}


def refresh(
    client: Client,
    until: datetime | None = None,
    *,
    chunk: int = 240,
    minutes_from: datetime | None = None,
) -> int:
    """Recompute every dirty minute, hour and UTC day that ends at or before ``until``
    (all if None). Returns how many periods were recomputed.

    With ``minutes_from``, a dirty minute of a whole hour before it (after the retention's
    horizon) is left to its hour when the hour is sparse and the minute has no rows yet
    (:func:`_left_to_hours`): it stays dirty, to be read from the raw rows, and an hour
    that had a minute left to it is recomputed from the raw rows (:func:`_holding_left`).
    On a shop's history (weeks of a few events a minute) minute rows are as many as the
    events and were most of a backlog's refresh, while old ranges are read at hour and
    day grains (docs/benchmarks.md, issue #21). A refresh without it (a retention pass
    before raw rows go, a rebuild) computes those minutes too.

    Safe to run concurrently with writes and with another refresh: a period written again
    meanwhile stays dirty. A period's parent is marked dirty before the period is
    recomputed, so a query never takes a parent row as current while it misses a change,
    and again after, for a refresh that took the parent meanwhile without the period's
    new rows. In one process, refreshes and retention passes take turns (:data:`PASSES`).
    """
    with PASSES:
        return _refresh(client, until, chunk, minutes_from)


# One refresh or retention pass at a time in this process (the flow's periodic refresh, an
# erasure's, the retention pass: with chDB, every writer is in one process). Across
# processes (several writers to a ClickHouse server) the marks keep refreshes exact; a
# retention pass deleting raw rows that another process's refresh of minutes is reading
# can still leave those minutes short (docs/architecture.md).
PASSES = threading.RLock()


def _refresh(
    client: Client, until: datetime | None, chunk: int, minutes_from: datetime | None
) -> int:
    done = 0
    where = "" if until is None else "AND minute <= {last:DateTime}"
    until_ms = None if until is None else int(aware(until).timestamp() * 1000)
    raw_from = _raw_from(client)
    raw = _raw_hours(raw_from, minutes_from)
    for family in _FAMILIES:
        for grain, parent in zip(GRAINS, [*GRAINS[1:], None], strict=True):
            kind = mark_kind(family, grain)
            params: dict[str, object] = {"kind": kind}
            if until_ms is not None:  # periods that end at or before ``until``
                params["last"] = _dt(until_ms - _PERIOD_MS[grain])
            not_rolled = ""
            if grain == "1m" and raw is not None:
                not_rolled = _NOT_ROLLED
                params.update(raw_lo=_dt(raw[0]), raw_hi=_dt(raw[1]))
            query = _DIRTY.format(where=f"{where} {not_rolled}")
            rows = client.query(query, parameters=params).result_rows
            dirty = [(int(m) * 1000, int(v)) for m, v in rows]
            if not dirty:
                continue
            parents: dict[int, set[int]] = {}
            if parent is not None:
                parent_ms = _PERIOD_MS[parent]
                parents = {mark_kind(family, parent): {m - m % parent_ms for m, _ in dirty}}
                _mark(client, parents, next_version())
            starts = [m for m, _ in dirty]
            from_raw: list[int] = []  # recomputed from the raw rows (minutes, old hours)
            left: set[int] = set()  # minutes left to their hours
            if grain == "1m":
                left = _left_to_hours(client, family, starts, raw)
                from_raw, starts = [m for m in starts if m not in left], []
            elif grain == "1h":  # an hour holding minutes left to it, from the raw rows
                holding = _holding_left(client, family, starts, raw_from)
                from_raw = [m for m in starts if m in holding]
                starts = [m for m in starts if m not in holding]
            for periods, raw_rows in ((from_raw, True), (starts, False)):
                # hours from the raw rows: as many as their events allow (a busy one alone)
                size = chunk if grain == "1m" else 1 if raw_rows else 24
                # more periods than one group: how many events each holds, so that sparse
                # ones go together (one cheap query, only when there is a backlog)
                weights = _weights(client, grain, periods) if len(periods) > size else None
                for group in _chunks(periods, size, _PERIOD_MS[grain], weights):
                    _recompute(client, family, grain, group, from_raw=raw_rows)
                    if grain == "1h" and not raw_rows:
                        _left_meanwhile(client, family, group, raw_from)
            if grain == "1h" and from_raw:
                _purged_meanwhile(client, family, from_raw)
            _insert_marks(client, [
                (kind, m // 1000, 0, 0, v) if m in left  # its hour took the data
                else (kind, m // 1000, 0, v, 0)
                for m, v in dirty
            ])  # fmt: skip
            if parents:  # again: see the docstring
                _mark(client, parents, next_version())
            done += len(dirty) - len(left)
    return done


# An hour of fewer events than this has about as many minute rows as events (a row per
# level and combination of attributes, five levels): its old minutes are left to it.
_SPARSE_HOUR = 6_000


def _left_to_hours(
    client: Client, family: int, minutes: list[int], raw: tuple[int, int] | None
) -> set[int]:
    """Which of the dirty ``minutes`` (sorted epoch-ms starts) a refresh leaves to their
    hours: those in the ``raw`` hours whose hour holds fewer than :data:`_SPARSE_HOUR`
    events, and that have no rows yet. A busier hour's minute rows are far fewer than its
    events, and keep minute-grain questions over old ranges quick; a minute with rows is
    recomputed, so that no row keeps data that went (an erasure's)."""
    old = [] if raw is None else [m for m in minutes if raw[0] <= m < raw[1]]
    if not old:
        return set()
    hour = _PERIOD_MS["1h"]
    events = _weights(client, "1h", sorted({m - m % hour for m in old}))
    sparse = [m for m in old if events.get(m - m % hour, 0) < _SPARSE_HOUR]
    if not sparse:
        return set()
    table = f"{_FAMILIES[family][0]}_1m"
    # a backlog's minutes have no rows: a look at their span spares a list of all of them
    span = {"lo": _dt(sparse[0]), "hi": _dt(sparse[-1] + MINUTE_MS)}
    sql = f"SELECT 1 FROM {table} WHERE t >= {{lo:DateTime}} AND t < {{hi:DateTime}} LIMIT 1"
    if not client.query(sql, parameters=span).result_rows:
        return set(sparse)
    return set(sparse) - _with_rows(client, table, sparse)


# Hours some minute of which was ever left to them (``rolled``).
_HOLDING_LEFT = """
SELECT DISTINCT toUInt32(toStartOfHour(minute)) * 1000 FROM rollup_marks FINAL
WHERE kind = {kind:UInt8} AND minute >= {lo:DateTime} AND minute < {hi:DateTime} AND rolled > 0
"""


def _holding_left(client: Client, family: int, hours: list[int], raw_from: int) -> set[int]:
    """Which of ``hours`` (sorted epoch-ms starts, from ``raw_from`` on: :func:`_raw_from`)
    had a minute left to them: such an hour is recomputed from the raw rows, whoever
    refreshes it (a refresh leaving no minutes included). Its minutes' rows need not have
    every combination the hour's rows have (the hour is zeroed from its own rows), nor hold
    its data. Before ``raw_from`` the raw rows are gone: an hour there comes from its
    minutes, which the retention pass computed before they went."""
    hours = [h for h in hours if h >= raw_from]
    if not hours:
        return set()
    params = {"kind": mark_kind(family, "1m"), "lo": _dt(hours[0]),
              "hi": _dt(hours[-1] + _PERIOD_MS["1h"])}  # fmt: skip
    found = {int(r[0]) for r in client.query(_HOLDING_LEFT, parameters=params).result_rows}
    return found & set(hours)


def _left_meanwhile(client: Client, family: int, hours: list[int], raw_from: int) -> None:
    """After hours were recomputed from their minutes: if another refresh left a minute of
    one to it meanwhile (it recomputed the hour from the raw rows, and this computation,
    without that minute, may have landed after), the hour is marked dirty again, to be
    recomputed from the raw rows (tests/integration/test_rollup_backlog.py)."""
    left = _holding_left(client, family, hours, raw_from)
    if left:
        _mark(client, {mark_kind(family, "1h"): left}, next_version())


def _purged_meanwhile(client: Client, family: int, hours: list[int]) -> None:
    """After hours were recomputed from the raw rows: if a retention pass dropped raw rows
    of some meanwhile (another process's; it computed their minutes first), they are
    marked dirty again, to be recomputed from those minutes."""
    raw_from = _raw_from(client)
    gone = {h for h in hours if h < raw_from}
    if gone:
        _mark(client, {mark_kind(family, "1h"): gone}, next_version())


def _raw_from(client: Client) -> int:
    """The first whole hour (epoch ms) after the retention's horizon: raw rows are there
    for the whole of it and every later hour."""
    hour = _PERIOD_MS["1h"]
    purged = client.query("SELECT toUInt32(max(until)) FROM purged_until").result_rows
    return -(-int(purged[0][0]) * 1000 // hour) * hour if purged and purged[0][0] else 0


def _raw_hours(first: int, minutes_from: datetime | None) -> tuple[int, int] | None:
    """The whole hours (epoch ms, [first, end)) whose sparse minutes a refresh with
    ``minutes_from`` may leave to them: before it, from ``first`` (:func:`_raw_from`);
    None when there are none."""
    if minutes_from is None:
        return None
    hour = _PERIOD_MS["1h"]
    end = int(aware(minutes_from).timestamp() * 1000) // hour * hour
    return (first, end) if first < end else None


def _recompute(
    client: Client, family: int, grain: str, starts: list[int], *, from_raw: bool = False
) -> None:
    """Recompute periods of ``grain`` from the raw rows (minutes, and with ``from_raw``
    hours), or from the rows of the grain below."""
    prefix, measures = _FAMILIES[family]
    if grain == "1m" or from_raw:
        again_sql, first_sql = _from_raw(family, grain)
        seen = _with_rows(client, f"{prefix}_{grain}", starts)
        again = [m for m in starts if m in seen]
        first = [m for m in starts if m not in seen]
        if again:
            client.command(again_sql, parameters={**_periods(again, grain), "v": next_version()})
        if first:
            version = next_version()
            client.command(first_sql, parameters={**_periods(first, grain), "v": version})
            _raced(client, family, grain, first, version)
        return
    lo, hi = _dt(starts[0]), _dt(starts[-1] + _PERIOD_MS[grain])
    periods = [_dt(m) for m in starts]
    source = GRAINS[GRAINS.index(grain) - 1]
    columns, zeros = _MERGED[family]
    sql = _REFRESH_COARSER.format(
        into=f"{prefix}_{grain}", source=f"{prefix}_{source}", start=_START_OF[grain],
        measures=measures, columns=columns, zeros=zeros,
    )  # fmt: skip
    for level in sorted(set(LEVELS.values())):
        params = {"level": level, "lo": lo, "hi": hi, "starts": periods, "v": next_version()}
        client.command(sql, parameters=params)


def _raced(client: Client, family: int, grain: str, periods: list[int], version: int) -> None:
    """After periods without rows were written as computed (``version``): if another
    refresh wrote rows for some of them meanwhile (it found them without rows too), a
    combination only the older of the two computations holds would never be zeroed, so
    those periods are marked dirty again, to be recomputed with their rows. Whichever of
    two such refreshes looks last sees the other's rows: refreshes in different threads or
    processes stay exact (tests/integration/test_rollup_backlog.py)."""
    raced = _with_rows(client, f"{_FAMILIES[family][0]}_{grain}", periods, version)
    if raced:
        _mark(client, {mark_kind(family, grain): raced}, next_version())


def _periods(periods: list[int], grain: str) -> dict[str, object]:
    """The parameters of :func:`_in_periods` for sorted period starts (epoch ms)."""
    return {"lo": _dt(periods[0]), "hi": _dt(periods[-1] + _PERIOD_MS[grain]),
            "mins": [m // 1000 for m in periods]}  # fmt: skip


def _with_rows(
    client: Client, table: str, periods: list[int], other_than: int | None = None
) -> set[int]:
    """Which of ``periods`` (sorted epoch-ms starts) have rows in ``table`` (``rollup_1m``,
    ``starts_1h``, ...), zero rows included: only those can hold combinations their
    events no longer have. With ``other_than``, only rows of another version count
    (another writer's)."""
    grain = table.rsplit("_", 1)[1]
    where = "" if other_than is None else " AND version != {v:UInt64}"
    rows = client.query(
        f"SELECT DISTINCT toUInt32(t) FROM {table} "
        f"WHERE {_in_periods('t', _START_OF[grain])}{where}",
        parameters={**_periods(periods, grain), "v": other_than},
    ).result_rows
    return {int(r[0]) * 1000 for r in rows}


# Partitions the flow wrote this recently are still being read: one far behind the others
# is draining a backlog, not quiet (the flow writes a partition's progress with every batch).
_READING = timedelta(minutes=1)

_SETTLED = """
SELECT min(m) FROM (
    SELECT max(max_ts) AS m, max(updated_at) AS u FROM flow_progress GROUP BY topic, partition
) WHERE m >= (SELECT max(max_ts) FROM flow_progress) - INTERVAL 1 HOUR
     OR (u >= {since:DateTime64(3)} AND m >= {earliest:DateTime64(3)})
"""


def settled_until(client: Client, allowed_lateness: timedelta, now: datetime) -> datetime | None:
    """How far the flow's periodic refresh recomputes: ``complete_until``
    (warehouse.queries), and no further than the newest event of any partition the flow
    wrote within :data:`_READING` before ``now``.

    ``complete_until`` leaves out partitions over an hour behind the newest, so that a quiet
    one does not hold it back; but while a backlog drains (a restart after downtime, a
    history replayed), a large topic's partitions are weeks behind a small topic's that are
    already read to their end. Minutes recomputed then would get the rest of their events
    soon after and be recomputed again: on a shop's history, twice the refresh's work for
    nothing (docs/benchmarks.md, issue #21). Readers are not affected: they read a dirty
    minute from the raw tables either way."""
    params = {"since": aware(now) - _READING, "earliest": datetime(1971, 1, 1, tzinfo=UTC)}
    rows = client.query(_SETTLED, parameters=params).result_rows
    if not rows or rows[0][0] is None or rows[0][0].year < 1971:
        return None
    return as_utc(rows[0][0]) - allowed_lateness


def rebuild(client: Client, *, chunk: int = 1440) -> int:
    """Mark every minute holding events dirty and recompute them all (backfills)."""
    rows = client.query(
        "SELECT DISTINCT toUnixTimestamp(toStartOfMinute(ts)) * 1000 FROM events"
    ).result_rows
    minutes = [int(r[0]) for r in rows]
    mark_dirty(client, {EVENTS: minutes, STARTS: minutes}, next_version())
    return refresh(client, chunk=chunk)


def first_dirty(
    client: Client, kind: int, lo: datetime, hi: datetime, grain: str = "1m"
) -> datetime | None:
    """The earliest period of ``grain`` starting in ``[lo, hi)`` whose rows of family
    ``kind`` are not current."""
    return first_dirty_of(client, [kind], lo, hi).get((kind, grain))


def first_dirty_of(
    client: Client, families: Iterable[int], lo: datetime, hi: datetime
) -> dict[tuple[int, str], datetime]:
    """Per family and grain, the earliest period starting in ``[lo, hi)`` whose rows are
    not current, and per family (grain :data:`UNROLLED`) the earliest minute whose data is
    not in its hour's rows either (one query). They differ where minutes were left to
    their hours (``refresh``'s ``minutes_from``)."""
    kinds = {mark_kind(f, g): (f, g) for f in families for g in GRAINS}
    rows = client.query(
        _FIRST_DIRTY, parameters={"kinds": list(kinds), "lo": lo, "hi": hi}
    ).result_rows
    found = {kinds[k]: as_utc(m) for k, m, _ in rows}
    for k, _, unrolled in rows:
        family, grain = kinds[k]
        if grain == "1m" and unrolled is not None:
            found[(family, UNROLLED)] = as_utc(unrolled)
    return found
