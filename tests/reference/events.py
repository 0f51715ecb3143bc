"""Load accepted events into the reference ``Events`` frame.

This is the batch side of the parity tests: plain Python + polars, written from
METRICS.md and CONTRACT §5 alone. The input is events the edge has *already accepted*
(no validation here), in arrival order.

Rules applied by :func:`load_events` (the production pipeline must make the same choices):

- **Arrival order** is the order of the input (file lines, blank lines skipped).
- **Timestamps**: ``ts`` is RFC 3339 with an offset or integer epoch milliseconds; it is
  normalised to UTC epoch milliseconds, sub-millisecond fractions are floored.
- **event_id dedup**: a repeated ``event_id`` counts once; the first occurrence in arrival
  order wins, later ones are dropped entirely.
- **order_id dedup**: among the ``purchase`` events that survive event_id dedup, the first
  occurrence (arrival order) of an ``order_id`` is *the order* (``is_order``): its ts,
  revenue, currency and items. A later purchase with the same order_id is still an
  accepted event (counts in ``events``, for "session has a purchase" in
  ``conversion_rate``, and for the funnel's ``purchase`` step) but contributes nothing to
  ``orders``, ``revenue``, ``units`` or product units/revenue.
- **device**: the event's ``device`` when present; otherwise from ``user_agent``:
  contains "iPad" or "Tablet" -> tablet; else contains "Mobi", "Android" or "iPhone" ->
  mobile; else a non-empty user_agent -> desktop; else null.
- **quantity** (product events and purchase items) defaults to 1.
- **FX**: ``eur = amount * eur_per_unit`` with the row of the FX CSV for the event's
  currency with the latest date on or before the event's UTC day; for a day before that
  currency's first row, its earliest row. EUR is always 1 (EUR rows of the CSV ignored).
  Order revenue and item amounts (``price * quantity``) use the purchase event's
  currency and day. An amount without a currency is not converted (null).
- **Sessions**: an event's ``session_id`` when present -- sessions are identified by
  session_id alone, even across users. Events without session_id are sessionised per
  user_id among those events only: ordered by ts (ties by arrival), a new session starts
  when the gap to the previous one is > ``session_timeout`` (a gap of exactly the
  timeout stays in the session). A derived session's id is ``f"{user_id}/{first_ts_ms}"``.
- **Session attributes** ``session_country``, ``session_device``, ``session_channel`` are
  those of the session's first event (by ts, ties by arrival); if that event lacks one,
  it is null (never filled from later events). ``session_start_ms`` = first event ts,
  ``session_duration_s`` = (last ts - first ts) / 1000, ``session_events`` = its number of
  events, ``session_pageviews`` = its ``page_view`` + ``product_view`` events -- all over
  the whole session, whatever range is later asked for.
- **Bots** (CONTRACT §9): an event with ``bot: true``, or whose ``user_agent`` is a known
  crawler, bot or monitor (the ``crawlerdetect`` list), is left out entirely, before
  event_id dedup.
- **Identity** (CONTRACT §9): an event carrying ``anonymous_id`` A says that the visitor
  A is its ``user_id`` U (the last such event in arrival order wins); every event of
  ``user_id`` A without an ``anonymous_id`` counts as U's. (The pipeline applies it to the
  visit in which A identified and after; the parity data has one visit per anonymous id.)
"""

from __future__ import annotations

import bisect
import csv
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from crawlerdetect import CrawlerDetect

__all__ = ["DEFAULT_FX", "PAGEVIEW_TYPES", "Events", "device_from_user_agent", "load_events"]

Events = pl.DataFrame

DEFAULT_FX = Path(__file__).resolve().parents[2] / "ingest" / "data" / "fx_rates.csv"
PAGEVIEW_TYPES = ("page_view", "product_view")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_FRACTION = re.compile(r"\.(\d+)")

_ITEM = pl.Struct(
    {
        "product_id": pl.String,
        "category": pl.String,
        "price": pl.Float64,
        "quantity": pl.Int64,
        "eur": pl.Float64,
    }
)
_SCHEMA: dict[str, Any] = {
    "arrival": pl.Int64,
    "event_id": pl.String,
    "type": pl.String,
    "ts_ms": pl.Int64,
    "user_id": pl.String,
    "session_id": pl.String,
    "country": pl.String,
    "device": pl.String,
    "channel": pl.String,
    "product_id": pl.String,
    "category": pl.String,
    "price": pl.Float64,
    "quantity": pl.Int64,
    "query": pl.String,
    "results_count": pl.Int64,
    "cart_value": pl.Float64,
    "currency": pl.String,
    "fx_rate": pl.Float64,
    "order_id": pl.String,
    "revenue": pl.Float64,
    "revenue_eur": pl.Float64,
    "items": pl.List(_ITEM),
}


def load_events(
    source: str | Path | Iterable[bytes | str | Mapping[str, Any]],
    *,
    fx_csv: Path = DEFAULT_FX,
    session_timeout: timedelta = timedelta(minutes=30),
) -> Events:
    """One row per accepted, de-duplicated event, with FX and derived session columns.

    ``source`` is a JSONL path, or an iterable of JSON lines (bytes/str) or dicts, in
    arrival order. See the module docstring for every rule applied.
    """
    fx = _load_fx(Path(fx_csv))
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    records = list(_records(source))
    identities = {
        str(r["anonymous_id"]): str(r["user_id"]) for r in records if r.get("anonymous_id")
    }
    for arrival, record in enumerate(records):
        if _is_bot(record):
            continue
        if not record.get("anonymous_id") and str(record["user_id"]) in identities:
            record = {**record, "user_id": identities[str(record["user_id"])]}
        event_id = str(record["event_id"])
        if event_id in seen:  # first occurrence in arrival order wins
            continue
        seen.add(event_id)
        rows.append(_row(arrival, record, fx))
    frame = pl.DataFrame(rows, schema=_SCHEMA)
    frame = frame.with_columns(ts=pl.col("ts_ms").cast(pl.Datetime("ms", "UTC")))
    frame = _mark_orders(frame)
    return _sessionise(frame, session_timeout)


_CRAWLERS = CrawlerDetect()


def _is_bot(record: Mapping[str, Any]) -> bool:
    user_agent = record.get("user_agent")
    return record.get("bot") is True or bool(user_agent and _CRAWLERS.isCrawler(user_agent))


def device_from_user_agent(user_agent: str | None) -> str | None:
    """tablet / mobile / desktop from user-agent markers; None without a user agent."""
    if not user_agent:
        return None
    if "iPad" in user_agent or "Tablet" in user_agent:
        return "tablet"
    if any(marker in user_agent for marker in ("Mobi", "Android", "iPhone")):
        return "mobile"
    return "desktop"


def _records(source: str | Path | Iterable[Any]) -> Iterator[Mapping[str, Any]]:
    if isinstance(source, str | Path):
        with Path(source).open("rb") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)
        return
    for item in source:
        if isinstance(item, Mapping):
            yield item
        elif item.strip():
            yield json.loads(item)


def _parse_ts_ms(value: Any) -> int:
    """RFC 3339 (with offset) or integer epoch ms -> epoch ms (UTC, floored)."""
    if isinstance(value, bool):
        raise ValueError(f"ts: not a timestamp: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        # Python's parser takes at most 6 fraction digits; RFC 3339 allows more.
        text = _FRACTION.sub(lambda m: "." + m.group(1)[:6], value.strip().upper())
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            raise ValueError(f"ts: RFC 3339 timestamp without offset: {value!r}")
        return (parsed - _EPOCH) // _MS
    raise ValueError(f"ts: not a timestamp: {value!r}")


def _load_fx(path: Path) -> dict[str, tuple[list[date], list[float]]]:
    table: dict[str, list[tuple[date, float]]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            currency = row["currency"].strip().upper()
            table.setdefault(currency, []).append(
                (date.fromisoformat(row["date"].strip()), float(row["eur_per_unit"]))
            )
    out = {}
    for currency, dated in table.items():
        dated.sort()
        out[currency] = ([d for d, _ in dated], [r for _, r in dated])
    return out


def _eur_per_unit(
    fx: dict[str, tuple[list[date], list[float]]], currency: str, ts_ms: int
) -> float:
    """Rate of the latest row dated on or before the UTC day of ts (else the earliest)."""
    if currency == "EUR":
        return 1.0
    if currency not in fx:
        raise ValueError(f"currency {currency!r} is not in the FX table")
    days, rates = fx[currency]
    day = (_EPOCH + ts_ms * _MS).date()
    i = bisect.bisect_right(days, day) - 1  # last row with date <= day
    return rates[max(i, 0)]


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _row(arrival: int, rec: Mapping[str, Any], fx: Any) -> dict[str, Any]:
    ts_ms = _parse_ts_ms(rec["ts"])
    currency = rec.get("currency")
    rate = _eur_per_unit(fx, currency, ts_ms) if currency else None
    revenue = _num(rec.get("revenue"))
    items = None
    if rec.get("items") is not None:
        items = []
        for item in rec["items"]:
            price = float(item.get("price") or 0.0)
            quantity = int(item.get("quantity") or 1)
            items.append(
                {
                    "product_id": str(item["product_id"]),
                    "category": item.get("category"),
                    "price": price,
                    "quantity": quantity,
                    "eur": None if rate is None else price * quantity * rate,
                }
            )
    product_id = rec.get("product_id")
    return {
        "arrival": arrival,
        "event_id": str(rec["event_id"]),
        "type": rec["type"],
        "ts_ms": ts_ms,
        "user_id": str(rec["user_id"]),
        "session_id": rec.get("session_id"),
        "country": rec.get("country"),
        "device": rec.get("device") or device_from_user_agent(rec.get("user_agent")),
        "channel": rec.get("channel"),
        "product_id": None if product_id is None else str(product_id),
        "category": rec.get("category"),
        "price": _num(rec.get("price")),
        "quantity": int(rec.get("quantity") or 1),
        "query": rec.get("query"),
        "results_count": rec.get("results_count"),
        "cart_value": _num(rec.get("cart_value")),
        "currency": currency,
        "fx_rate": rate,
        "order_id": rec.get("order_id"),
        "revenue": revenue,
        "revenue_eur": None if revenue is None or rate is None else revenue * rate,
        "items": items,
    }


def _mark_orders(frame: pl.DataFrame) -> pl.DataFrame:
    """``is_order``: this purchase is the first (arrival order) with its order_id."""
    purchase_order = pl.when(pl.col("type") == "purchase").then(pl.col("order_id"))
    first_arrival = pl.col("arrival").min().over(purchase_order)
    return frame.with_columns(
        is_order=purchase_order.is_not_null() & (pl.col("arrival") == first_arrival)
    )


def _sessionise(frame: pl.DataFrame, timeout: timedelta) -> pl.DataFrame:
    timeout_ms = timeout // _MS
    explicit = frame.filter(pl.col("session_id").is_not_null()).with_columns(
        session=pl.col("session_id")
    )
    derived = (
        frame.filter(pl.col("session_id").is_null())
        .sort("user_id", "ts_ms", "arrival")
        .with_columns(_gap=pl.col("ts_ms").diff().over("user_id"))
        .with_columns(_new=pl.col("_gap").is_null() | (pl.col("_gap") > timeout_ms))
        .with_columns(_n=pl.col("_new").cast(pl.Int64).cum_sum().over("user_id"))
        .with_columns(_first=pl.col("ts_ms").min().over("user_id", "_n"))
        .with_columns(session=pl.col("user_id") + pl.lit("/") + pl.col("_first").cast(pl.String))
        .drop("_gap", "_new", "_n", "_first")
    )
    frame = pl.concat([explicit, derived]).sort("arrival")
    sessions = (
        frame.sort("session", "ts_ms", "arrival")
        .group_by("session", maintain_order=True)
        .agg(
            session_start_ms=pl.col("ts_ms").first(),
            session_end_ms=pl.col("ts_ms").last(),
            session_events=pl.len().cast(pl.Int64),
            session_pageviews=pl.col("type").is_in(PAGEVIEW_TYPES).sum().cast(pl.Int64),
            session_country=pl.col("country").first(),
            session_device=pl.col("device").first(),
            session_channel=pl.col("channel").first(),
        )
        .with_columns(
            session_duration_s=(pl.col("session_end_ms") - pl.col("session_start_ms")) / 1000
        )
    )
    return frame.join(sessions, on="session", how="left").sort("arrival")
