"""Reading the watched series (and drill-downs) from the warehouse, complete buckets only.

Everything goes through `warehouse.queries.metric_series`, so the detector sees exactly
the METRICS.md numbers the API serves. Detection buckets are aligned in UTC (a 1-hour
bucket in Asia/Kolkata would start at :30); texts show times in ``PULSE_TIMEZONE``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from ingest.times import as_utc
from insights.drilldown import Decomposition, SliceStats, decompose
from insights.series import INTERVAL_SECONDS, WATCHED, WATCHED_BY_NAME, Obs, SeriesKey, Slice
from warehouse.queries import MetricQuery, metric_series

__all__ = ["Frame", "first_event", "floor", "funnel_counts", "read_frame", "refine"]

_DIMS = ("country", "device", "channel")

Frame = dict[datetime, dict[SeriesKey, Obs]]
"""Bucket start -> every (metric, slice) observation of that bucket."""


def floor(ts: datetime, interval: str) -> datetime:
    """The start of the UTC-aligned bucket holding ``ts``."""
    step = INTERVAL_SECONDS[interval]
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, UTC)


def first_event(client: Client) -> datetime | None:
    """The time of the oldest event in the warehouse (None when it is empty)."""
    rows = client.query("SELECT min(ts), count() FROM events").result_rows
    if not rows or not rows[0][1]:
        return None
    ts: datetime = rows[0][0]
    return as_utc(ts)


def _series(
    client: Client, metric: str, start: datetime, end: datetime, interval: str,
    by: str | None, where: Mapping[str, str] | None = None,
) -> dict[tuple[datetime, Slice], float | None]:  # fmt: skip
    q = MetricQuery(metric, start, end, interval, by, dict(where or {}), "UTC")
    out: dict[tuple[datetime, Slice], float | None] = {}
    for point in metric_series(client, q):
        ts = datetime.fromisoformat(point["ts"]).astimezone(UTC)
        if by is None:
            sl: Slice = ()
        elif point.get(by) is None:
            continue  # events without the attribute belong to no slice of it
        else:
            sl = ((by, str(point[by])),)
        value = point["value"]
        out[(ts, sl)] = None if value is None else float(value)
    return out


def read_frame(client: Client, start: datetime, end: datetime, interval: str) -> Frame:
    """Every watched metric on the aggregate and every one-dimension slice, per bucket of
    ``[start, end)`` (``start`` and ``end`` on bucket boundaries)."""
    frame: Frame = defaultdict(dict)
    values: dict[str, dict[tuple[datetime, Slice], float | None]] = {}
    for w in WATCHED:
        merged: dict[tuple[datetime, Slice], float | None] = {}
        for by in (None, *_DIMS):
            merged.update(_series(client, w.metric, start, end, interval, by))
        values[w.metric] = merged
    for w in WATCHED:
        weights = values[w.weight] if w.weight else None
        for (ts, sl), value in values[w.metric].items():
            if ts >= end:
                continue
            weight = (weights.get((ts, sl)) if weights else None) if w.weight else None
            if w.kind == "ratio" and weight is None:
                weight = 0.0
            frame[ts][SeriesKey(w.metric, sl, interval)] = Obs(value, weight)
    return dict(sorted(frame.items()))


def _totals(
    client: Client, metric: str, start: datetime, end: datetime, by: str,
    where: Mapping[str, str],
) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Per value of ``by``: (numerator, denominator) of the metric over ``[start, end)``."""
    watched = WATCHED_BY_NAME[metric]
    ratio = watched.kind == "ratio"
    den_metric = watched.weight if ratio else ("sessions" if metric != "sessions" else None)
    hour = timedelta(hours=1)
    interval = "1h" if (end - start) >= 6 * hour else "1m"
    num = _series(client, metric, start, end, interval, by, where)
    den = _series(client, den_metric, start, end, interval, by, where) if den_metric else {}
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (ts, sl), value in num.items():
        if not sl or value is None:
            continue
        d = den.get((ts, sl)) or 0.0
        acc = out[sl[0][1]]
        acc[0] += value * d if ratio else value
        acc[1] += d
    return {k: (v[0], v[1]) for k, v in out.items()}


def refine(
    client: Client, metric: str, sl: Slice, since: datetime, until: datetime
) -> dict[str, Decomposition]:
    """The change of ``metric`` in ``sl`` split by each other dimension: the window
    against the same window a day earlier (same time of day, so the same mix), or the
    window just before while there is no day of history."""
    where = dict(sl)
    ratio = WATCHED_BY_NAME[metric].kind == "ratio"
    day = timedelta(days=1)
    out = {}
    for dim in _DIMS:
        if dim in where:
            continue
        cur = _totals(client, metric, since, until, dim, where)
        base = _totals(client, metric, since - day, until - day, dim, where)
        if not any(n or d for n, d in base.values()):  # no day of history yet
            span = until - since
            base = _totals(client, metric, since - span, since, dim, where)
        stats = [
            SliceStats(v, *base.get(v, (0.0, 0.0)), *cur.get(v, (0.0, 0.0)))
            for v in sorted(set(cur) | set(base))
        ]
        if len(stats) >= 2:
            out[dim] = decompose(dim, stats, ratio)
    return out


def funnel_counts(
    client: Client, sl: Slice, start: datetime, end: datetime
) -> dict[str, float] | None:
    """`insights.attribution.Funnel` from the warehouse over ``[start, end)`` in the slice:
    per minute, the distinct sessions with an event and those with an add-to-cart, a
    begin-checkout and a purchase, summed over the minutes."""
    if any(dim not in _DIMS for dim, _ in sl):
        return None  # a dimension sessions do not have
    # the slice is the session's (its first event's) attributes, as every metric's
    where = "".join(f" AND {dim} = {{{dim}:String}}" for dim, _ in sl)
    in_slice = (
        " AND session_key IN (SELECT session_key FROM sessions FINAL WHERE deleted = 0"
        f" AND `start` < {{hi:DateTime64(3)}} AND `end` >= {{lo:DateTime64(3)}}{where})"
        if sl
        else ""
    )
    # per minute, summed: the same sessions-per-minute view as the watched rates, so a
    # window's step rates do not depend on its length
    rows = client.query(
        "SELECT sum(s), sum(c), sum(k), sum(p) FROM (SELECT toStartOfMinute(ts) AS m,"
        " uniqExact(session_key) AS s, uniqExactIf(session_key, type = 'add_to_cart') AS c,"
        " uniqExactIf(session_key, type = 'begin_checkout') AS k,"
        " uniqExactIf(session_key, type = 'purchase') AS p FROM events FINAL"
        " WHERE ts >= {lo:DateTime64(3)} AND ts < {hi:DateTime64(3)}" + in_slice + " GROUP BY m)",
        parameters={"lo": start, "hi": end, **dict(sl)},
    ).result_rows
    if not rows:
        return None
    sessions, carts, checkouts, purchases = (float(v or 0) for v in rows[0])
    return {"sessions": sessions, "carts": carts, "checkouts": checkouts,
            "purchases": purchases}  # fmt: skip
