"""The event contract (docs/events.md): one frozen, typed model, validated once at the edge.

``validate`` turns the raw bytes of one event into either an :class:`Event` (normalised:
``ts`` in epoch milliseconds, UTC) or a :class:`Rejection` with a reason a person can act
on. It never raises on bad input: bad records are data.

Every bound here is also what makes an event storable (``warehouse/sql``: ``ts`` in
``DateTime`` minutes, quantities in ``UInt32``, money in finite ``Float64``), so the flow
judges what it reads from the topics with the same rules (:func:`check`), without the one
that depends on the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "MAX_AMOUNT",
    "MAX_COUNT",
    "MAX_EVENT_BYTES",
    "MAX_FUTURE_MS",
    "MAX_ITEMS",
    "MAX_QUANTITY",
    "MAX_TS_MS",
    "MIN_TS_MS",
    "Event",
    "Item",
    "Rejection",
    "check",
    "encode_event",
    "validate",
    "validate_fields",
]

MAX_EVENT_BYTES = 32 * 1024
MAX_FUTURE_MS = 24 * 3600 * 1000
MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
# 2100-01-01T00:00:00Z: the rollups' DateTime minutes end in 2106. Only an event that did
# not come through the edge (whose limit is 24 h ahead) can get near it.
MAX_TS_MS = 4_102_444_800_000
MAX_AMOUNT = 1e9  # every money field, in its own currency
MAX_QUANTITY = 100_000
MAX_ITEMS = 1_000  # lines of a purchase
MAX_COUNT = 2**32 - 1  # results_count: a UInt32

_Id64 = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Id128 = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Text = Annotated[str, msgspec.Meta(max_length=2048)]
# NaN, infinities and numbers beyond a double are rejected by msgspec itself.
_Money = Annotated[float, msgspec.Meta(ge=0, le=MAX_AMOUNT)]
_Quantity = Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
# The length as well as the pattern: a regex's ``$`` also matches before a final newline.
_Country = Annotated[str, msgspec.Meta(min_length=2, max_length=2, pattern="^[A-Z]+$")]
_Currency = Annotated[str, msgspec.Meta(min_length=3, max_length=3, pattern="^[A-Z]+$")]
Device = Literal["desktop", "mobile", "tablet"]
Channel = Literal["direct", "organic", "paid", "email", "social", "referral"]


class Item(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of a purchase."""

    product_id: _Id128
    price: _Money
    quantity: _Quantity = 1
    category: _Text | None = None


class Event(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """One user event. After :func:`validate`, ``ts`` is epoch milliseconds (int)."""

    event_id: _Id64
    type: _Id64
    ts: int | datetime
    user_id: _Id128
    session_id: _Id128 | None = None
    country: _Country | None = None
    device: Device | None = None
    channel: Channel | None = None
    page: _Text | None = None
    referrer: _Text | None = None
    user_agent: _Text | None = None
    # CONTRACT §9 identity: the anonymous id this user browsed under before identifying
    anonymous_id: _Id128 | None = None
    # CONTRACT §9 bots: set at the edge for a known crawler's user agent
    bot: bool = False
    # product_view, add_to_cart, remove_from_cart
    product_id: _Id128 | None = None
    category: _Text | None = None
    price: _Money | None = None
    quantity: _Quantity | None = None
    # search
    query: _Text | None = None
    results_count: _Count | None = None
    # begin_checkout, purchase
    cart_value: _Money | None = None
    currency: _Currency | None = None
    order_id: _Id128 | None = None
    revenue: _Money | None = None
    items: Annotated[list[Item], msgspec.Meta(max_length=MAX_ITEMS)] | None = None
    # experiment_exposure
    experiment: _Id64 | None = None
    variant: _Id64 | None = None

    @property
    def ts_ms(self) -> int:
        """Event time in epoch milliseconds (valid after :func:`validate`)."""
        return self.ts if isinstance(self.ts, int) else _epoch_ms(self.ts)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one event was not accepted."""

    reason: str


_PRODUCT_TYPES = frozenset({"product_view", "add_to_cart", "remove_from_cart"})
_REQUIRED: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_PRODUCT_TYPES, ("product_id",)),
    "search": ("query",),
    "purchase": ("order_id", "revenue", "currency", "items"),
    "experiment_exposure": ("experiment", "variant"),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


def validate(
    raw: bytes,
    *,
    now_ms: int | None,
    currencies: frozenset[str],
    max_bytes: int | None = MAX_EVENT_BYTES,
) -> Event | Rejection:
    """Check one event's bytes against every rule of docs/events.md.

    The edge checks everything. The flow re-checks what it reads from the topics with
    ``now_ms=None`` and ``max_bytes=None``: the clock rule is the edge's alone (see
    :func:`check`), and the size limit applies to what a client sent, not to the
    normalised event (``1e9`` is written back as ``1000000000.0``); every other bound
    keeps what it accepts storable."""
    if max_bytes is not None and len(raw) > max_bytes:
        return Rejection(f"event is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        event = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return Rejection(_reason(str(exc)))
    except msgspec.DecodeError as exc:
        return Rejection(f"not valid JSON: {exc}")
    except RecursionError:  # msgspec recurses into the nesting of an unknown field
        return Rejection("nested too deeply: an event is a flat object")
    return check(event, currencies=currencies, now_ms=now_ms)


def validate_fields(
    fields: Mapping[str, Any], *, now_ms: int | None, currencies: frozenset[str]
) -> Event | Rejection:
    """:func:`validate` for an event whose JSON is already decoded — what a translator
    made of a client's message (a Segment message, docs/sending-events.md): the same rules
    and reasons, without writing the fields as JSON to read them again. The size limit
    is not applied: it is the client's message that has one. Fields the model does not
    have (``ip``) are left out."""
    try:
        event = msgspec.convert(fields, Event)
    except msgspec.ValidationError as exc:
        return Rejection(_reason(str(exc)))
    except RecursionError:
        return Rejection("nested too deeply: an event is a flat object")
    return check(event, currencies=currencies, now_ms=now_ms)


def check(event: Event, *, currencies: frozenset[str], now_ms: int | None) -> Event | Rejection:
    """The rules of docs/events.md beyond types and ranges, on a decoded event; the event with
    ``ts`` in epoch milliseconds, or why it is rejected.

    ``now_ms`` None leaves out the one rule that depends on the clock (at most 24 h ahead):
    the flow judges records read from the topics with it, so that its verdict on a record is
    the same on every run, whenever and on whichever host it is read again (after a crash,
    in a replay of old topics); what the edge accepted, the flow accepts."""
    ts = event.ts
    if type(ts) is int:
        ts_ms = ts
    elif isinstance(ts, datetime):
        if ts.tzinfo is None:
            return Rejection("ts: RFC 3339 timestamp needs an offset (e.g. Z or +01:00)")
        ts_ms = _epoch_ms(ts)
    else:  # only a hand-built Event can get here (msgspec decodes int or datetime)
        return Rejection("ts: expected RFC 3339 with offset or epoch milliseconds")
    if ts_ms < MIN_TS_MS:
        return Rejection(_too_early(ts))
    if now_ms is not None and ts_ms > now_ms + MAX_FUTURE_MS:
        return Rejection(_too_late(ts, now_ms))
    if ts_ms >= MAX_TS_MS:
        return Rejection("ts: after 2099-12-31, beyond what the warehouse stores")
    for name in _REQUIRED.get(event.type, ()):
        if getattr(event, name) is None:
            return Rejection(f"{name}: required for {event.type} events")
    if event.type == "purchase" and not event.items:
        return Rejection("items: a purchase needs at least one item")
    if event.currency is None:
        if event.price is not None or event.cart_value is not None:
            return Rejection("currency: required when an amount is given")
    elif event.currency not in currencies:
        return Rejection(f"currency: {event.currency} is not in the FX rates table")
    if ts_ms is ts:
        return event
    return msgspec.structs.replace(event, ts=ts_ms)


_EXPECTED = "epoch milliseconds expected"


def _too_early(ts: int | datetime) -> str:
    """Why a timestamp before 2000 is rejected: epoch seconds are the usual mistake."""
    if type(ts) is int and MIN_TS_MS // 1000 <= ts < MAX_TS_MS // 1000:
        return f"ts: {ts} is before 2000-01-01; {_EXPECTED}, this looks like seconds"
    if type(ts) is int and ts > -(10**18):  # short enough to quote
        return f"ts: {ts} is before 2000-01-01"
    return "ts: before 2000-01-01"


def _too_late(ts: int | datetime, now_ms: int) -> str:
    """Why a timestamp over 24 h ahead is rejected: epoch microseconds are a usual mistake."""
    if type(ts) is int and MIN_TS_MS <= ts // 1000 <= now_ms + MAX_FUTURE_MS:
        return f"ts: more than 24 h in the future; {_EXPECTED}, this looks like microseconds"
    return "ts: more than 24 h in the future"


def encode_event(event: Event) -> bytes:
    """The normalised JSON bytes written to the event topics."""
    return _encoder.encode(event)


def _epoch_ms(ts: datetime) -> int:
    return (ts - _EPOCH) // _MS


def _reason(message: str) -> str:
    """Turn msgspec's 'Expected `str`, got `int` - at `$.user_id`' into 'user_id: ...'."""
    text, sep, where = message.rpartition(" - at `$.")
    if sep:
        where = where.rstrip("`")
        if text.startswith("Object missing required field"):
            return f"{where}.{text.split('`')[1]}: required field missing"
        return f"{where}: {text[0].lower()}{text[1:]}"
    if message.startswith("Object missing required field"):
        return f"{message.split('`')[1]}: required field missing"
    if message.startswith("Expected `object`"):
        return "not a JSON object"
    return message
