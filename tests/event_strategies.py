"""Hypothesis strategies for events at every field's edges (CONTRACT §5).

``valid_events`` draws events the contract accepts, biased to the bounds of each limit;
``wild_events`` draws anything an event's bytes could be: those, the same with one field
broken (missing, ill-typed, out of range, just past a bound), and JSON that is not an
event at all. ``to_raw`` encodes a drawn value as a client would, sometimes with a number
token Python would not write (``1e999``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from ingest.events import Event

NOW_MS = 1_795_176_000_000  # 2026-11-20T12:00:00Z, the clock of every test here
MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
DAY_MS = 86_400_000
CURRENCIES = ["EUR", "PLN", "SEK", "HUF", "GBP", "USD", "CHF"]
TYPES = ["page_view", "product_view", "add_to_cart", "remove_from_cart", "search",
         "begin_checkout", "purchase"]  # fmt: skip

_ids = st.text(min_size=1, max_size=64)
_short_ids = st.sampled_from(["u1", "u2", "ü-1", "😀"]) | _ids  # users repeat: sessions form
_texts = st.text(max_size=40) | st.sampled_from(["", "x" * 2048, "a\u0000b", "\ud7ff\ue000"])


def _edges(lo: float, hi: float, *more: float) -> st.SearchStrategy[float]:
    return st.sampled_from([lo, hi, *more])


# Valid values, with their bounds drawn often.
_money = _edges(0.0, 1e9, 1e9 - 0.01, 5e-324, 0.01) | st.floats(0, 1e9) | st.integers(0, 10**9)
_quantity = _edges(1, 100_000) | st.integers(1, 100_000)
_count = _edges(0, 2**32 - 1) | st.integers(0, 2**32 - 1)
_offsets = st.integers(-23 * 60 + 1, 23 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


def _rfc3339(ms: int, tz: timezone, frac: bool) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz)
    return moment.isoformat(timespec="milliseconds" if frac else "seconds").replace("+00:00", "Z")


_ts_ms = (
    _edges(MIN_TS_MS, NOW_MS + DAY_MS, NOW_MS, MIN_TS_MS + 59_999)
    | st.integers(MIN_TS_MS, NOW_MS + DAY_MS)
    | st.integers(NOW_MS - 7 * DAY_MS, NOW_MS)
)
# An RFC 3339 string is whole seconds or milliseconds here; a zone that puts the local time
# before 2000 or after the edge's limit is still the same instant.
_ts = _ts_ms | st.builds(_rfc3339, _ts_ms.map(lambda ms: ms - ms % 1000), _offsets, st.just(False))
_ts |= st.builds(_rfc3339, _ts_ms, _offsets, st.just(True))


@st.composite
def _item(draw: st.DrawFn) -> dict[str, Any]:
    item: dict[str, Any] = {"product_id": draw(_ids), "price": draw(_money)}
    if draw(st.booleans()):
        item["quantity"] = draw(_quantity)
    if draw(st.booleans()):
        item["category"] = draw(_texts)
    return item


# The most lines a purchase may have, each as small as can be (the event stays < 32 KiB).
_items = st.lists(_item(), min_size=1, max_size=4) | st.just(
    [{"product_id": "p", "price": 1}] * 1000
)


_FIELDS = frozenset(Event.__struct_fields__)


def _general(type_: str) -> bool:
    return type_ not in TYPES


def _json_of(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | floats | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=8,
    )


_json = _json_of(st.floats())  # NaN and infinities: Python writes them, JSON has none
_valid_json = _json_of(st.floats(allow_nan=False, allow_infinity=False))


_CONTEXT = {
    "session_id": _short_ids,
    "country": st.sampled_from(["DE", "PL", "SE", "ZZ"]),
    "device": st.sampled_from(["desktop", "mobile", "tablet"]),
    "channel": st.sampled_from(["direct", "organic", "paid", "email", "social", "referral"]),
    "page": _texts,
    "referrer": _texts,
    "user_agent": _texts | st.sampled_from(["Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile"]),
}


@st.composite
def valid_events(draw: st.DrawFn, event_id: st.SearchStrategy[str] = _ids) -> dict[str, Any]:
    """An event the contract accepts at ``NOW_MS``, its values often at their bounds."""
    type_ = draw(st.sampled_from(TYPES) | st.text(min_size=1, max_size=64).filter(_general))
    e: dict[str, Any] = {"event_id": draw(event_id), "type": type_, "ts": draw(_ts),
                         "user_id": draw(_short_ids)}  # fmt: skip
    e.update(draw(st.fixed_dictionaries({}, optional=_CONTEXT)))
    currency = draw(st.sampled_from(CURRENCIES))
    if type_ in ("product_view", "add_to_cart", "remove_from_cart"):
        e["product_id"] = draw(_ids)
        extra = {"category": _texts, "price": _money, "quantity": _quantity}
        e.update(draw(st.fixed_dictionaries({}, optional=extra)))
        if "price" in e:
            e["currency"] = currency
    elif type_ == "search":
        e["query"] = draw(_texts)
        e.update(draw(st.fixed_dictionaries({}, optional={"results_count": _count})))
    elif type_ == "begin_checkout":
        e.update(draw(st.fixed_dictionaries({}, optional={"cart_value": _money})))
        e["currency"] = currency
    elif type_ == "purchase":
        e.update(order_id=draw(_short_ids), revenue=draw(_money), currency=currency,
                 items=draw(_items))  # fmt: skip
    if draw(st.booleans()):  # unknown fields are ignored (a known one left out is not unknown)
        unknown = st.text(max_size=10).filter(lambda k: k not in e and k not in _FIELDS)
        e[draw(unknown)] = draw(_valid_json)
    return e


# Values just past a bound or of the wrong type, per field.
_BAD_NUMBERS = [-1, -0.5, 1e9 + 1, 1e10, 2**32 + 5, 2**32, 10**30, -(10**30), 1e308,
                float("inf"), float("-inf"), float("nan"), True, "12", None, [1]]  # fmt: skip
_BAD: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.sampled_from(["", "x" * 65, 42, None, True]),
    "user_id": st.sampled_from(["", "x" * 129, 42, None]),
    "type": st.sampled_from(["", "x" * 65, 1, None]),
    "ts": st.sampled_from(
        [
            -1,
            0,
            -(10**15),
            10**30,
            -(10**30),
            946_684_799_999,
            1_795_176_000,
            NOW_MS // 1000,
            NOW_MS * 1000,
            NOW_MS + DAY_MS + 1,
            1.7e12,
            True,
            "1800-01-01T00:00:00Z",
            "2026-11-20T12:00:00",
            "yesterday",
            "2200-01-01T00:00:00Z",
            "1999-12-31T23:59:59.999Z",
            "",
            "2000-01-01T00:30:00+01:00",
            None,
        ]
    )
    | st.integers(),
    "price": st.sampled_from(_BAD_NUMBERS) | st.floats(),
    "cart_value": st.sampled_from(_BAD_NUMBERS),
    "revenue": st.sampled_from(_BAD_NUMBERS),
    "quantity": st.sampled_from([0, 100_001, 2**32 + 5, 10**30, -1, 1.0, True, "1"]),
    "results_count": st.sampled_from([-1, 2**32, 10**30, 1.5, True]),
    "currency": st.sampled_from(["XXX", "eur", "EUR\n", "", "EURO", 978]),
    "country": st.sampled_from(["DE\n", "de", "DEU", "", 49]),
    "device": st.sampled_from(["phone", "", 1]),
    "channel": st.sampled_from(["tv", "", None]),
    "page": st.sampled_from(["x" * 2049, "\ud800", "a\udfffb"]),
    "items": st.sampled_from(
        [
            [],
            None,
            {},
            "p1",
            [{"price": 1}],
            [{"product_id": "p"}],
            [{"product_id": "p", "price": 1, "quantity": 0}],
            [{"product_id": "p", "price": 1e10}],
            [{"product_id": "p", "price": 1, "quantity": 2**32 + 5}],
            [{"product_id": "p", "price": 0}] * 1001,
        ]
    ),
}


@st.composite
def _broken(draw: st.DrawFn) -> Any:
    """A valid event with one field broken, dropped, or the whole thing another JSON value."""
    e = draw(valid_events())
    how = draw(st.sampled_from(["value", "value", "drop", "not an object"]))
    if how == "value":
        name = draw(st.sampled_from(sorted(_BAD)))
        e[name] = draw(_BAD[name])
    elif how == "drop":
        del e[draw(st.sampled_from(sorted(e)))]
    else:
        return draw(_json)
    return e


wild_events = valid_events() | _broken()


@st.composite
def raws(draw: st.DrawFn, events: st.SearchStrategy[Any] = wild_events) -> bytes:
    """One drawn event's bytes as a client would send them, sometimes as no client should."""
    raw = to_raw(draw(events), draw(st.booleans()), draw(st.booleans()))
    cut = draw(st.sampled_from([None, None, None, None, 1, 10]))
    return raw if cut is None else raw[: max(0, len(raw) - cut)]  # truncated JSON


def to_raw(value: Any, big_tokens: bool = False, ascii: bool = False) -> bytes:
    """JSON bytes; non-finite floats as ``1e999`` (a number beyond a double) when asked,
    else as Python writes them (``Infinity``, ``NaN``: not JSON); text as UTF-8 (a lone
    surrogate as bytes no UTF-8 decoder takes) or, with ``ascii``, as ``\\u`` escapes."""
    raw = json.dumps(value, ensure_ascii=ascii, separators=(",", ":"))
    if big_tokens:
        raw = raw.replace("-Infinity", "-1e999").replace("Infinity", "1e999")
    return raw.encode("utf-8", "surrogatepass")
