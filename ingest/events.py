"""The event contract (CONTRACT §5): one frozen, typed model, validated once at the edge.

``validate`` turns the raw bytes of one event into either an :class:`Event` (normalised:
``ts`` in epoch milliseconds, UTC) or a :class:`Rejection` with a reason a person can act
on. It never raises on bad input: bad records are data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import msgspec

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_FUTURE_MS",
    "Event",
    "Item",
    "Rejection",
    "decode_event",
    "encode_event",
    "validate",
]

MAX_EVENT_BYTES = 32 * 1024
MAX_FUTURE_MS = 24 * 3600 * 1000

_Id64 = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Id128 = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Text = Annotated[str, msgspec.Meta(max_length=2048)]
_Money = Annotated[float, msgspec.Meta(ge=0)]
_Quantity = Annotated[int, msgspec.Meta(ge=1)]
_Count = Annotated[int, msgspec.Meta(ge=0)]
_Country = Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")]
_Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
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
    items: list[Item] | None = None

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
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


def validate(raw: bytes, *, now_ms: int, currencies: frozenset[str]) -> Event | Rejection:
    """Check one event's bytes against every rule of CONTRACT §5."""
    if len(raw) > MAX_EVENT_BYTES:
        return Rejection(f"event is {len(raw)} bytes, over the {MAX_EVENT_BYTES}-byte limit")
    try:
        event = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return Rejection(_reason(str(exc)))
    except msgspec.DecodeError as exc:
        return Rejection(f"not valid JSON: {exc}")
    ts = event.ts
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            return Rejection("ts: RFC 3339 timestamp needs an offset (e.g. Z or +01:00)")
        ts_ms = _epoch_ms(ts)
    else:
        ts_ms = ts
    if ts_ms > now_ms + MAX_FUTURE_MS:
        return Rejection("ts: more than 24 h in the future")
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


def decode_event(value: bytes) -> Event:
    """Decode a normalised event from a topic (raises ``msgspec.DecodeError``)."""
    return _decoder.decode(value)


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
