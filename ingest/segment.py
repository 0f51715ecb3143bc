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

Speed (docs/benchmarks.md): a message is decoded straight into :class:`Message`, which
keeps only the fields the mapping reads (a message whose shape does not fit is decoded
again as plain JSON and read the same way), and becomes the event's fields, which the
collector validates as they are: no JSON is written and read again between the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

import msgspec

from ingest.channel import channel_of
from ingest.useragent import device_from_user_agent

__all__ = [
    "KINDS",
    "MAX_MESSAGE_BYTES",
    "SKEW_TOLERANCE_MS",
    "Batch",
    "Message",
    "SegmentError",
    "Translation",
    "decode_message",
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


class _Absent:
    """The value of a field the message does not have (``sentAt``: absent means the
    batch's, ``null`` means none)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()


# What the mapping reads of a message, and nothing else. Values stay as the client sent
# them (``Any``): the mapping and the event's validation judge them, never the decoder.
# Not tracked by the garbage collector: decoded JSON holds no reference cycle.
class _Page(msgspec.Struct, gc=False):
    url: Any = None
    referrer: Any = None


class _Campaign(msgspec.Struct, gc=False):
    medium: Any = None
    source: Any = None


class _Context(msgspec.Struct, gc=False):
    ip: Any = None
    userAgent: Any = None
    page: _Page | None = None
    campaign: _Campaign | None = None
    sessionId: Any = None


class _Properties(msgspec.Struct, gc=False):
    product_id: Any = None
    sku: Any = None
    id: Any = None
    category: Any = None
    price: Any = None
    quantity: Any = None
    currency: Any = None
    value: Any = None
    revenue: Any = None
    total: Any = None
    order_id: Any = None
    checkout_id: Any = None
    products: Any = None
    query: Any = None
    results_count: Any = None
    experiment_id: Any = None
    experiment_name: Any = None
    variation_id: Any = None
    variation_name: Any = None
    url: Any = None
    referrer: Any = None


class Message(msgspec.Struct, gc=False):
    """A Segment message as the mapping reads it (a field the client did not send, or sent
    as ``null``, is None; ``context``/``properties`` that are not objects are None)."""

    type: Any = None
    messageId: Any = None
    userId: Any = None
    anonymousId: Any = None
    previousId: Any = None
    event: Any = None
    timestamp: Any = None
    originalTimestamp: Any = None
    sentAt: Any = ABSENT
    context: _Context | None = None
    properties: _Properties | None = None


_PROPERTIES = _Properties.__struct_fields__


def _message_of(value: Mapping[str, Any]) -> Message:
    """A decoded JSON object as a :class:`Message`: what :data:`_message` would have
    decoded, with a ``context``, ``context.page``/``campaign`` or ``properties`` that is
    not an object left out (the mapping reads those as absent)."""
    props = value.get("properties")
    return Message(
        type=value.get("type"),
        messageId=value.get("messageId"),
        userId=value.get("userId"),
        anonymousId=value.get("anonymousId"),
        previousId=value.get("previousId"),
        event=value.get("event"),
        timestamp=value.get("timestamp"),
        originalTimestamp=value.get("originalTimestamp"),
        sentAt=value.get("sentAt", ABSENT),
        context=_context_of(value.get("context")),
        properties=(
            _Properties(**{name: props.get(name) for name in _PROPERTIES})
            if isinstance(props, dict)
            else None
        ),
    )


def _context_of(value: object) -> _Context | None:
    """A decoded ``context`` object as a :class:`_Context` (None if it is not an object)."""
    if isinstance(value, _Context) or value is None:
        return value
    if not isinstance(value, dict):
        return None
    page, campaign = value.get("page"), value.get("campaign")
    return _Context(
        ip=value.get("ip"),
        userAgent=value.get("userAgent"),
        page=(
            _Page(url=page.get("url"), referrer=page.get("referrer"))
            if isinstance(page, dict)
            else None
        ),
        campaign=(
            _Campaign(medium=campaign.get("medium"), source=campaign.get("source"))
            if isinstance(campaign, dict)
            else None
        ),
        sessionId=value.get("sessionId"),
    )


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
_message = msgspec.json.Decoder(Message)
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


def decode_message(raw: bytes) -> Message | str:
    """One message's bytes -> the message, or why it is not one."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
    try:
        return _message.decode(raw)
    except (msgspec.MsgspecError, RecursionError):
        pass  # not JSON, not an object, or a context that is not one: read it as JSON
    try:
        message = _any.decode(raw)
    except RecursionError:
        return "nested too deeply"
    except msgspec.DecodeError as exc:
        return f"not valid JSON: {exc}"
    return _message_of(message) if isinstance(message, dict) else "not a JSON object"


def translate(
    message: Message | Mapping[str, Any],
    *,
    received_ms: int,
    kind: str | None = None,
    sent_at: object = None,
    context: Mapping[str, Any] | None = None,
) -> bytes | str:
    """One Segment message -> the JSON bytes of a §5 event, or why it cannot be one.

    ``kind``: the message type given by the route (single-message routes), else the
    message's ``type``; ``sent_at``/``context``: the batch's, used when the message has
    none; ``received_ms``: when Pulse received it, against which ``sentAt`` measures the
    client's clock skew. (The routes use :func:`translate_all`, which hands the collector
    the event's fields instead of their JSON.)"""
    if not isinstance(message, Message):
        message = _message_of(message)
    fields = _event(message, received_ms, kind, _parse_time(sent_at), _context_of(context))
    return fields if isinstance(fields, str) else _encode(fields)


@dataclass(frozen=True, slots=True)
class Translation:
    """Messages made events: each event's fields (for
    :meth:`~ingest.collector.Collector.submit`, which validates them), each one's original
    message bytes (for its dead letter if the collector rejects it), and the messages that
    could not become one."""

    events: list[dict[str, Any]]
    originals: list[bytes]
    refused: list[tuple[bytes, str]]


def translate_all(
    messages: Iterable[tuple[bytes, Message | Mapping[str, Any] | str]],
    *,
    received_ms: int,
    kind: str | None = None,
    sent_at: object = None,
    context: Mapping[str, Any] | None = None,
) -> Translation:
    """:func:`translate` over ``(original bytes, decoded message or why not)`` pairs, ready
    for :meth:`~ingest.collector.Collector.submit` (``originals``) and dead letters. The
    batch's ``sentAt`` and ``context`` are read once for all its messages."""
    out = Translation([], [], [])
    sent = _parse_time(sent_at)
    ctx = _context_of(context)
    for original, message in messages:
        if isinstance(message, str):
            event: dict[str, Any] | str = message
        else:
            if not isinstance(message, Message):
                message = _message_of(message)
            event = _event(message, received_ms, kind, sent, ctx)
        if isinstance(event, str):
            out.refused.append((original, event))
        else:
            out.events.append(event)
            out.originals.append(original)
    return out


def _event(
    message: Message,
    received_ms: int,
    kind: str | None,
    batch_sent_ms: int | None,
    context: _Context | None,
) -> dict[str, Any] | str:
    """The §5 fields of one message (as :func:`translate` describes), or why there are
    none; ``batch_sent_ms``: the batch's ``sentAt``, parsed."""
    kind = kind or message.type
    if not isinstance(kind, str) or kind not in KINDS:
        return f"type: expected one of {', '.join(KINDS)}"
    event_id = message.messageId
    if not isinstance(event_id, str):
        return "messageId: required string"
    ids = _identity(message, kind)
    if isinstance(ids, str):
        return ids
    user_id, anonymous_id = ids
    ts = _timestamp(message, received_ms, batch_sent_ms)
    if isinstance(ts, str):
        return ts
    ctx = message.context if message.context is not None else context
    props = message.properties if message.properties is not None else _NO_PROPERTIES
    event: dict[str, Any] = {"event_id": event_id, "ts": ts, "user_id": user_id}
    if anonymous_id is not None:
        event["anonymous_id"] = anonymous_id
    _context(event, ctx, props)
    if kind == "page" or kind == "screen":
        event["type"] = "page_view"
    elif kind == "track":
        name = message.event
        if not isinstance(name, str) or not name:
            return "event: a track message needs its event name"
        event["type"] = _TRACKS.get(name, name)
        _properties(event, props)
    else:  # identify, alias, group: general events that carry who the visitor is
        event["type"] = kind
    return event


def _identity(message: Message, kind: str) -> tuple[str, str | None] | str:
    """(user_id, anonymous id of that user) from ``userId``/``anonymousId``/``previousId``."""
    user = _id(message.userId)
    anonymous = _id(message.anonymousId)
    if kind == "alias":  # alias(previousId -> userId): the earlier id is the anonymous part
        previous = _id(message.previousId)
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
    return int(ts.timestamp() * 1000)  # aware: the same instant as in UTC


# A client sends the same sentAt with every message of a batch (or of a few batches).
_parse_sent = lru_cache(maxsize=256)(_parse_time)


def _timestamp(message: Message, received_ms: int, batch_sent_ms: int | None) -> int | str:
    """The event time: ``timestamp``, else ``originalTimestamp``, else the receive time;
    moved by the client's clock skew (receive time - ``sentAt``, the message's else the
    batch's) when that is over :data:`SKEW_TOLERANCE_MS`."""
    value, name = message.timestamp, "timestamp"
    if value is None:
        value, name = message.originalTimestamp, "originalTimestamp"
        if value is None:
            return received_ms
    ts = _parse_time(value)
    if ts is None:
        return f"{name}: expected an ISO 8601 time with an offset"
    sent_at = message.sentAt
    if sent_at is ABSENT:
        sent = batch_sent_ms
    else:
        sent = _parse_sent(sent_at) if isinstance(sent_at, str) else None
    if sent is not None and abs(received_ms - sent) > SKEW_TOLERANCE_MS:
        ts += received_ms - sent
    return ts


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


_NO_PROPERTIES = _Properties()


def _context(event: dict[str, Any], ctx: _Context | None, props: _Properties) -> None:
    """The §5 context fields from the message's ``context`` (and a page's properties)."""
    url = referrer = medium = source = None
    if ctx is not None:
        ip = ctx.ip
        if isinstance(ip, str):
            event["ip"] = ip
        if (ua := _text(ctx.userAgent)) is not None:
            event["user_agent"] = ua
            event["device"] = device_from_user_agent(ua)  # enriched at the edge (ua-parser)
        page = ctx.page
        if page is not None:
            url, referrer = _text(page.url), _text(page.referrer)
        session = ctx.sessionId
        if isinstance(session, int | str) and not isinstance(session, bool) and session != "":
            event["session_id"] = str(session)
        campaign = ctx.campaign
        if campaign is not None:
            medium, source = _text(campaign.medium), _text(campaign.source)
    url = url or _text(props.url)
    referrer = referrer or _text(props.referrer)
    if url is not None:
        event["page"] = url
    if referrer is not None:
        event["referrer"] = referrer
    event["channel"] = channel_of(medium=medium, source=source, referrer=referrer, page=url)


def _first(*values: object) -> object:
    """The first of ``values`` that is present (a §5 validation judges it)."""
    for value in values:
        if value is not None:
            return value
    return None


def _properties(event: dict[str, Any], props: _Properties) -> None:
    """The type's fields from a track's ``properties`` (E-commerce spec v2)."""
    kind = event["type"]
    if kind == "product_view" or kind == "add_to_cart" or kind == "remove_from_cart":
        _put(event, "product_id", _first(props.product_id, props.sku, props.id))
        _put(event, "category", props.category)
        _put(event, "price", props.price)
        _put(event, "quantity", props.quantity)
        _currency(event, props, "price")
    elif kind == "begin_checkout":
        _put(event, "cart_value", _first(props.value, props.revenue, props.total))
        _currency(event, props, "cart_value")
    elif kind == "purchase":
        _put(event, "order_id", _first(props.order_id, props.checkout_id))
        products = props.products
        items = [_item(p) for p in products] if isinstance(products, list) else []
        if items:
            event["items"] = items
        revenue = _first(props.revenue, props.total)
        if revenue is None and items:
            revenue = _items_total(items)
        _put(event, "revenue", revenue)
        _currency(event, props, "revenue")
    elif kind == "search":
        _put(event, "query", props.query)
        _put(event, "results_count", props.results_count)
    elif kind == "experiment_exposure":
        _put(event, "experiment", _first(props.experiment_id, props.experiment_name))
        _put(event, "variant", _first(props.variation_id, props.variation_name))


def _put(event: dict[str, Any], name: str, value: object) -> None:
    if value is not None:
        event[name] = value


def _currency(event: dict[str, Any], props: _Properties, amount: str) -> None:
    currency = props.currency
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
    _put(item, "product_id", _first(product.get("product_id"), product.get("sku"),
                                    product.get("id")))  # fmt: skip
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
