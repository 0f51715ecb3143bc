"""Segment's message format in, Pulse events out (CONTRACT §9).

Storefronts instrumented with Segment's specs (or RudderStack's, the same format) send
batches of messages; :func:`split_batch` cuts a body into the bytes of each message and
:func:`translate` turns one message into the bytes of an event (docs/events.md), which then goes
through the same :class:`~ingest.collector.Collector` as ``POST /v1/events`` (validation,
routing, dead letters with the message's original bytes). A message that cannot become an
event at all (no ``messageId``, not an object, an unknown ``type``) comes back as a reason.

The mapping follows Segment's E-commerce spec v2 as CONTRACT §9 lists it; unknown fields are
left out, never an error. Identity: ``userId`` when present, else ``anonymousId``; a message
carrying both (or an ``alias`` with its ``previousId``) also says which anonymous id that
user had, in the event's ``anonymous_id``, so the flow can stitch the visit together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from ingest.channel import channel_of
from ingest.useragent import device_from_user_agent

__all__ = [
    "KINDS",
    "MAX_MESSAGE_BYTES",
    "SKEW_TOLERANCE_MS",
    "Batch",
    "SegmentError",
    "Translation",
    "parse_single",
    "split_batch",
    "translate",
    "translate_all",
]

MAX_MESSAGE_BYTES = 32 * 1024  # Segment's own limit per message, as §5's per event
# A sentAt this close to the receive time is network latency, not a wrong clock: the
# client's own times are kept (and replays of the same messages give the same events).
SKEW_TOLERANCE_MS = 1_000
DEFAULT_CURRENCY = "USD"  # Segment's spec: amounts without a currency are in US dollars

# Message types and their one-letter route aliases (``/segment/v1/t`` ...).
KINDS = {
    "track": "t",
    "page": "p",
    "screen": "s",
    "identify": "i",
    "alias": "a",
    "group": "g",
}
# Segment E-commerce spec v2 event names -> §5 types (the others keep their own name).
_TRACKS = {
    "Product Viewed": "product_view",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Checkout Started": "begin_checkout",
    "Order Completed": "purchase",
    "Products Searched": "search",
    "Experiment Viewed": "experiment_exposure",
}
_ID_MAX = 4096  # an id longer than this is not quoted back in a reason


class SegmentError(ValueError):
    """A body that is not a Segment batch or message at all."""


class _BatchBody(msgspec.Struct):
    batch: list[msgspec.Raw]
    writeKey: Any = None
    sentAt: Any = None
    context: Any = None


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch body cut into its messages' original bytes, with the batch-wide fields."""

    messages: list[bytes]
    write_key: str | None
    sent_at: object
    context: Mapping[str, Any] | None


_batch = msgspec.json.Decoder(_BatchBody)
_any = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode


def split_batch(body: bytes) -> Batch:
    """A ``/v1/batch`` body -> its messages (each as the client's bytes) and batch fields."""
    try:
        parsed = _batch.decode(body)
    except RecursionError:
        raise SegmentError("body nests too deeply") from None
    except msgspec.ValidationError as exc:
        raise SegmentError(f"not a Segment batch: {exc}") from None
    except msgspec.DecodeError as exc:
        raise SegmentError(f"malformed JSON: {exc}") from None
    key = parsed.writeKey if isinstance(parsed.writeKey, str) else None
    context = parsed.context if isinstance(parsed.context, dict) else None
    return Batch([bytes(m) for m in parsed.batch], key, parsed.sentAt, context)


def parse_single(body: bytes) -> tuple[dict[str, Any], str | None]:
    """A single-message body (``/v1/track`` ...) -> the message and its ``writeKey``."""
    try:
        message = _any.decode(body)
    except RecursionError:
        raise SegmentError("body nests too deeply") from None
    except msgspec.DecodeError as exc:
        raise SegmentError(f"malformed JSON: {exc}") from None
    if not isinstance(message, dict):
        raise SegmentError("not a Segment message: expected a JSON object")
    key = message.get("writeKey")
    return message, key if isinstance(key, str) else None


def decode_message(raw: bytes) -> dict[str, Any] | str:
    """One message's bytes -> the message, or why it is not one."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
    try:
        message = _any.decode(raw)
    except RecursionError:
        return "nested too deeply"
    except msgspec.DecodeError as exc:
        return f"not valid JSON: {exc}"
    return message if isinstance(message, dict) else "not a JSON object"


def translate(
    message: Mapping[str, Any],
    *,
    received_ms: int,
    kind: str | None = None,
    sent_at: object = None,
    context: Mapping[str, Any] | None = None,
) -> bytes | str:
    """One Segment message -> the bytes of a §5 event, or why it cannot be one.

    ``kind``: the message type given by the route (single-message routes), else the
    message's ``type``; ``sent_at``/``context``: the batch's, used when the message has
    none; ``received_ms``: when Pulse received it, against which ``sentAt`` measures the
    client's clock skew."""
    kind = kind or message.get("type")
    if not isinstance(kind, str) or kind not in KINDS:
        return f"type: expected one of {', '.join(KINDS)}"
    event_id = message.get("messageId")
    if not isinstance(event_id, str):
        return "messageId: required string"
    ids = _identity(message, kind)
    if isinstance(ids, str):
        return ids
    user_id, anonymous_id = ids
    ts = _timestamp(message, received_ms, sent_at)
    if isinstance(ts, str):
        return ts
    ctx = message.get("context")
    if not isinstance(ctx, dict):
        ctx = context if isinstance(context, dict) else {}
    props = message.get("properties")
    if not isinstance(props, dict):
        props = {}
    event: dict[str, Any] = {"event_id": event_id, "ts": ts, "user_id": user_id}
    if anonymous_id is not None:
        event["anonymous_id"] = anonymous_id
    _context(event, ctx, props)
    if kind in ("page", "screen"):
        event["type"] = "page_view"
    elif kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name:
            return "event: a track message needs its event name"
        event["type"] = _TRACKS.get(name, name)
        _properties(event, props)
    else:  # identify, alias, group: general events that carry who the visitor is
        event["type"] = kind
    return _encode(event)


@dataclass(frozen=True, slots=True)
class Translation:
    """Messages made events: the events' bytes, each one's original message bytes (for its
    dead letter if the collector rejects it), and the messages that could not become one."""

    raws: list[bytes]
    originals: list[bytes]
    refused: list[tuple[bytes, str]]


def translate_all(
    messages: Iterable[tuple[bytes, Mapping[str, Any] | str]],
    *,
    received_ms: int,
    kind: str | None = None,
    sent_at: object = None,
    context: Mapping[str, Any] | None = None,
) -> Translation:
    """:func:`translate` over ``(original bytes, decoded message or why not)`` pairs, ready
    for :meth:`~ingest.collector.Collector.submit` (``originals``) and dead letters."""
    out = Translation([], [], [])
    for original, message in messages:
        event = (
            message
            if isinstance(message, str)
            else translate(
                message, received_ms=received_ms, kind=kind, sent_at=sent_at, context=context
            )
        )
        if isinstance(event, str):
            out.refused.append((original, event))
        else:
            out.raws.append(event)
            out.originals.append(original)
    return out


def _identity(message: Mapping[str, Any], kind: str) -> tuple[str, str | None] | str:
    """(user_id, anonymous id of that user) from ``userId``/``anonymousId``/``previousId``."""
    user = _id(message.get("userId"))
    anonymous = _id(message.get("anonymousId"))
    if kind == "alias":  # alias(previousId -> userId): the earlier id is the anonymous part
        previous = _id(message.get("previousId"))
        if user is None or previous is None:
            return "alias: needs userId and previousId"
        return user, previous if previous != user else None
    if user is not None:
        return user, anonymous if anonymous != user else None
    if anonymous is not None:
        return anonymous, None
    return "userId or anonymousId: required"


def _id(value: object) -> str | None:
    """An id as Segment's SDKs send it (a string, or a number some turn into one)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _parse_time(value: object) -> int | None:
    """Epoch ms of an ISO 8601 time with an offset (Segment's format); None otherwise."""
    if not isinstance(value, str) or not 10 <= len(value) <= 64:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    return int(ts.astimezone(UTC).timestamp() * 1000)


def _timestamp(message: Mapping[str, Any], received_ms: int, batch_sent_at: object) -> int | str:
    """The event time: ``timestamp``, else ``originalTimestamp``, else the receive time;
    moved by the client's clock skew (receive time - ``sentAt``) when that is over
    :data:`SKEW_TOLERANCE_MS`."""
    for name in ("timestamp", "originalTimestamp"):
        value = message.get(name)
        if value is not None:
            ts = _parse_time(value)
            if ts is None:
                return f"{name}: expected an ISO 8601 time with an offset"
            break
    else:
        return received_ms
    sent = _parse_time(message.get("sentAt", batch_sent_at))
    if sent is not None and abs(received_ms - sent) > SKEW_TOLERANCE_MS:
        ts += received_ms - sent
    return ts


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _context(event: dict[str, Any], ctx: Mapping[str, Any], props: Mapping[str, Any]) -> None:
    """The §5 context fields from the message's ``context`` (and a page's properties)."""
    ip = ctx.get("ip")
    if isinstance(ip, str):
        event["ip"] = ip
    if (ua := _text(ctx.get("userAgent"))) is not None:
        event["user_agent"] = ua
        event["device"] = device_from_user_agent(ua)  # enriched at the edge (ua-parser)
    page = ctx.get("page")
    page = page if isinstance(page, dict) else {}
    url = _text(page.get("url")) or _text(props.get("url"))
    referrer = _text(page.get("referrer")) or _text(props.get("referrer"))
    if url is not None:
        event["page"] = url
    if referrer is not None:
        event["referrer"] = referrer
    session = ctx.get("sessionId")
    if isinstance(session, int | str) and not isinstance(session, bool) and session != "":
        event["session_id"] = str(session)
    campaign = ctx.get("campaign")
    campaign = campaign if isinstance(campaign, dict) else {}
    event["channel"] = channel_of(
        medium=_text(campaign.get("medium")),
        source=_text(campaign.get("source")),
        referrer=referrer,
        page=url,
    )


def _amount(props: Mapping[str, Any], *names: str) -> object:
    """The first of ``names`` present in ``props`` (a §5 validation judges its value)."""
    for name in names:
        value = props.get(name)
        if value is not None:
            return value
    return None


def _product_id(props: Mapping[str, Any]) -> object:
    return _amount(props, "product_id", "sku", "id")


def _properties(event: dict[str, Any], props: Mapping[str, Any]) -> None:
    """The type's fields from a track's ``properties`` (E-commerce spec v2)."""
    kind = event["type"]
    if kind in ("product_view", "add_to_cart", "remove_from_cart"):
        _put(event, "product_id", _product_id(props))
        _put(event, "category", props.get("category"))
        _put(event, "price", props.get("price"))
        _put(event, "quantity", props.get("quantity"))
        _currency(event, props, "price")
    elif kind == "begin_checkout":
        _put(event, "cart_value", _amount(props, "value", "revenue", "total"))
        _currency(event, props, "cart_value")
    elif kind == "purchase":
        _put(event, "order_id", _amount(props, "order_id", "checkout_id"))
        products = props.get("products")
        items = [_item(p) for p in products] if isinstance(products, list) else []
        if items:
            event["items"] = items
        revenue = _amount(props, "revenue", "total")
        if revenue is None and items:
            revenue = _items_total(items)
        _put(event, "revenue", revenue)
        _currency(event, props, "revenue")
    elif kind == "search":
        _put(event, "query", props.get("query"))
        _put(event, "results_count", props.get("results_count"))
    elif kind == "experiment_exposure":
        _put(event, "experiment", _amount(props, "experiment_id", "experiment_name"))
        _put(event, "variant", _amount(props, "variation_id", "variation_name"))


def _put(event: dict[str, Any], name: str, value: object) -> None:
    if value is not None:
        event[name] = value


def _currency(event: dict[str, Any], props: Mapping[str, Any], amount: str) -> None:
    currency = props.get("currency")
    if isinstance(currency, str):
        event["currency"] = currency.upper()
    elif currency is not None:
        event["currency"] = currency  # validation names the problem
    elif amount in event:
        event["currency"] = DEFAULT_CURRENCY


def _item(product: object) -> object:
    """A ``products[]`` entry -> a §5 purchase item (validation judges what is left)."""
    if not isinstance(product, dict):
        return product
    item: dict[str, Any] = {}
    _put(item, "product_id", _product_id(product))
    _put(item, "category", product.get("category"))
    _put(item, "price", product.get("price"))
    _put(item, "quantity", product.get("quantity"))
    return item


def _items_total(items: list[object]) -> object:
    """Σ price × quantity over the order's products, when every one has numbers."""
    total = 0.0
    for item in items:
        if not isinstance(item, dict):
            return None
        price, quantity = item.get("price"), item.get("quantity", 1)
        if not isinstance(price, int | float) or not isinstance(quantity, int | float):
            return None
        total += price * quantity
    return round(total, 6)
