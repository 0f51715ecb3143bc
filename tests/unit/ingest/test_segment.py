"""Segment messages -> Pulse events (CONTRACT §9 mapping), without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ingest.events import Event, validate, validate_fields
from ingest.fx import load_fx_rates
from ingest.segment import (
    Message,
    SegmentError,
    decode_message,
    parse_single,
    split_batch,
    translate,
    translate_all,
)

NOW_MS = int(datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp() * 1000)
TS = "2026-11-20T11:59:00.000Z"
CURRENCIES = load_fx_rates().currencies


def track(event: str, **props: object) -> dict:
    return {
        "type": "track",
        "event": event,
        "messageId": "m1",
        "anonymousId": "anon-1",
        "timestamp": TS,
        "properties": props,
    }


def event_of(message: dict, **kw: object) -> dict:
    out = translate(message, received_ms=NOW_MS, **kw)  # type: ignore[arg-type]
    assert isinstance(out, bytes), out
    return json.loads(out)


def accepted(message: dict, **kw: object) -> Event:
    out = translate(message, received_ms=NOW_MS, **kw)  # type: ignore[arg-type]
    assert isinstance(out, bytes), out
    checked = validate(out, now_ms=NOW_MS, currencies=CURRENCIES)
    assert isinstance(checked, Event), checked
    return checked


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("Product Viewed", "product_view"),
        ("Product Added", "add_to_cart"),
        ("Product Removed", "remove_from_cart"),
    ],
)
def test_product_events_map_to_their_types(name: str, kind: str) -> None:
    e = accepted(track(name, product_id="p1", category="shoes", price=10, currency="eur"))
    assert (e.type, e.product_id, e.category, e.price, e.currency) == (
        kind,
        "p1",
        "shoes",
        10,
        "EUR",
    )
    assert e.user_id == "anon-1"
    assert e.ts == NOW_MS - 60_000


def test_sku_stands_in_for_a_missing_product_id_and_usd_for_a_missing_currency() -> None:
    e = accepted(track("Product Viewed", sku="S-1", price=3.5))
    assert (e.product_id, e.currency) == ("S-1", "USD")


@pytest.mark.parametrize(
    ("props", "value"),
    [
        ({"value": 5, "revenue": 6, "total": 7}, 5),
        ({"revenue": 6, "total": 7}, 6),
        ({"total": 7}, 7),
    ],
)
def test_checkout_started_cart_value_is_value_else_revenue_else_total(
    props: dict, value: float
) -> None:
    e = accepted(track("Checkout Started", currency="EUR", **props))
    assert (e.type, e.cart_value) == ("begin_checkout", value)


def test_order_completed_revenue_falls_back_to_total_then_to_the_products() -> None:
    products = [
        {"product_id": "a", "price": 10, "quantity": 2, "category": "c", "name": "ignored"},
        {"sku": "b", "price": 5.5},
    ]
    e = accepted(track("Order Completed", order_id="o1", currency="EUR", products=products))
    assert (e.type, e.order_id, e.revenue) == ("purchase", "o1", 25.5)
    assert [(i.product_id, i.price, i.quantity, i.category) for i in e.items or []] == [
        ("a", 10, 2, "c"),
        ("b", 5.5, 1, None),
    ]
    assert (
        accepted(
            track("Order Completed", order_id="o", total=9, currency="EUR", products=products)
        ).revenue
        == 9
    )
    assert (
        accepted(
            track(
                "Order Completed",
                order_id="o",
                revenue=8,
                total=9,
                currency="EUR",
                products=products,
            )
        ).revenue
        == 8
    )


def test_search_and_experiment_and_other_tracks() -> None:
    assert accepted(track("Products Searched", query="red")).query == "red"
    exposure = event_of(track("Experiment Viewed", experiment_id="exp", variation_name="B"))
    assert (exposure["type"], exposure["experiment"], exposure["variant"]) == (
        "experiment_exposure",
        "exp",
        "B",
    )
    by_name = event_of(track("Experiment Viewed", experiment_name="Exp", variation_id="v2"))
    assert (by_name["experiment"], by_name["variant"]) == ("Exp", "v2")
    assert accepted(track("Newsletter Signed Up", anything=1)).type == "Newsletter Signed Up"


def test_page_and_screen_are_page_views_with_their_context() -> None:
    msg = {
        "type": "page",
        "messageId": "m2",
        "userId": "u1",
        "anonymousId": "anon-1",
        "timestamp": TS,
        "properties": {"url": "https://shop.example/a?utm_medium=cpc"},
        "context": {
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile",
            "ip": "203.0.113.7",
            "page": {"referrer": "https://www.google.com/"},
            "sessionId": 1712345678,
            "campaign": {"medium": "email", "source": "news"},
            "unknown": {"deep": [1, 2]},
        },
        "unknownTop": True,
    }
    out = event_of(msg)
    assert out["type"] == "page_view"
    assert out["user_id"] == "u1" and out["anonymous_id"] == "anon-1"
    assert out["page"] == "https://shop.example/a?utm_medium=cpc"
    assert out["referrer"] == "https://www.google.com/"
    assert out["session_id"] == "1712345678"
    assert out["channel"] == "email"  # the campaign's medium wins over the referrer
    assert out["ip"] == "203.0.113.7"  # for the country at the edge; never re-encoded
    assert "unknown" not in out and "unknownTop" not in out
    assert event_of({**msg, "type": "screen"})["type"] == "page_view"
    assert event_of(msg, kind="screen")["type"] == "page_view"


def test_identity_user_id_else_anonymous_id_and_alias_links_the_previous_id() -> None:
    base = {"type": "identify", "messageId": "m", "timestamp": TS}
    assert event_of({**base, "anonymousId": "a"})["user_id"] == "a"
    both = event_of({**base, "anonymousId": "a", "userId": 42})
    assert (both["type"], both["user_id"], both["anonymous_id"]) == ("identify", "42", "a")
    alias = event_of({**base, "type": "alias", "userId": "u", "previousId": "a"})
    assert (alias["type"], alias["user_id"], alias["anonymous_id"]) == ("alias", "u", "a")
    assert event_of({**base, "type": "group", "userId": "u", "groupId": "g"})["type"] == "group"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"type": "track", "event": "x", "anonymousId": "a"}, "messageId"),
        ({"type": "track", "event": "x", "messageId": "m"}, "userId or anonymousId"),
        ({"type": "nope", "messageId": "m", "userId": "u"}, "type"),
        ({"type": "track", "messageId": "m", "userId": "u"}, "event"),
        ({"type": "alias", "messageId": "m", "userId": "u"}, "alias"),
        ({"type": "page", "messageId": "m", "userId": "u", "timestamp": "yesterday"}, "timestamp"),
        (
            {"type": "page", "messageId": "m", "userId": "u", "timestamp": "2026-11-20T11:00:00"},
            "timestamp",
        ),
    ],
)
def test_messages_that_cannot_be_events_come_back_as_reasons(message: dict, reason: str) -> None:
    out = translate(message, received_ms=NOW_MS)
    assert isinstance(out, str) and out.startswith(reason)


def test_sent_at_corrects_a_client_clock_that_is_off() -> None:
    # the client's clock is 1 h behind: it stamped 10:59 and sent at 11:00 (its time),
    # received at 12:00 -> the event happened at 11:59
    msg = {**track("X"), "timestamp": "2026-11-20T10:59:00Z", "sentAt": "2026-11-20T11:00:00Z"}
    assert event_of(msg)["ts"] == NOW_MS - 60_000
    batch_level = {**track("X"), "originalTimestamp": "2026-11-20T10:59:00Z"}
    del batch_level["timestamp"]
    assert event_of(batch_level, sent_at="2026-11-20T11:00:00Z")["ts"] == NOW_MS - 60_000
    # a sentAt within a second is latency: the client's own time is kept
    near = {**track("X"), "sentAt": "2026-11-20T11:59:59.500Z"}
    assert event_of(near)["ts"] == NOW_MS - 60_000
    no_time = {k: v for k, v in track("X").items() if k != "timestamp"}
    assert event_of(no_time)["ts"] == NOW_MS


def test_a_message_sent_at_of_null_is_no_clock_at_all() -> None:
    # the message's own sentAt (even null) counts, not the batch's
    msg = {**track("X"), "timestamp": "2026-11-20T10:59:00Z", "sentAt": None}
    assert event_of(msg, sent_at="2026-11-20T11:00:00Z")["ts"] == NOW_MS - 3_660_000
    raw = json.dumps(msg).encode()
    done = translate_all([(raw, decode_message(raw))], received_ms=NOW_MS,
                         sent_at="2026-11-20T11:00:00Z")  # fmt: skip
    assert done.events[0]["ts"] == NOW_MS - 3_660_000


def test_a_time_at_the_edge_of_the_calendar_is_judged_not_a_crash() -> None:
    # in UTC this is in year 0, which datetime cannot hold (it raised OverflowError)
    msg = {**track("X"), "timestamp": "0001-01-01T00:00:00+01:00"}
    checked = validate(translate(msg, received_ms=NOW_MS), now_ms=NOW_MS, currencies=CURRENCIES)
    assert not isinstance(checked, Event) and checked.reason.startswith("ts:")


def test_batch_context_is_the_default_context() -> None:
    msg = {k: v for k, v in track("X").items()}
    out = event_of(msg, context={"userAgent": "UA/1"})
    assert out["user_agent"] == "UA/1"


def test_a_message_of_an_unusual_shape_is_read_as_plain_json() -> None:
    # the usual shape is decoded straight into a Message; a context that is not an object
    # does not fit it, and the message is read again as JSON, its context left out
    usual = decode_message(json.dumps({**track("X"), "context": {"ip": "1.2.3.4"}}).encode())
    assert isinstance(usual, Message) and usual.context is not None
    odd = decode_message(json.dumps({**track("X"), "context": "x", "userId": 7}).encode())
    assert isinstance(odd, Message) and odd.context is None and odd.userId == 7
    page = {**track("X"), "context": {"page": [1], "campaign": 2, "userAgent": "UA/1"}}
    read = decode_message(json.dumps(page).encode())
    assert isinstance(read, Message) and read.context is not None
    assert (read.context.page, read.context.campaign, read.context.userAgent) == (
        None,
        None,
        "UA/1",
    )


def test_split_batch_keeps_each_message_bytes() -> None:
    body = b'{"batch": [{"a": 1}, {"b":  2}], "writeKey": "k", "sentAt": "x", "extra": 1}'
    batch = split_batch(body)
    assert batch.messages == [b'{"a": 1}', b'{"b":  2}']
    assert (batch.write_key, batch.sent_at) == ("k", "x")
    with pytest.raises(SegmentError):
        split_batch(b'{"nobatch": []}')
    with pytest.raises(SegmentError):
        split_batch(b"{")
    with pytest.raises(SegmentError):
        parse_single(b"[1]")
    assert parse_single(b'{"writeKey": "k"}')[1] == "k"
    assert decode_message(b"[1]") == "not a JSON object"
    assert "limit" in str(decode_message(b'{"a": "' + b"x" * 40_000 + b'"}'))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = {
    "type": st.sampled_from(["track", "page", "screen", "identify", "alias", "group", "x"]) | _JSON,
    "event": st.sampled_from(["Product Viewed", "Order Completed", "Checkout Started", ""]) | _JSON,
    "messageId": st.text(max_size=70) | _JSON,
    "userId": st.text(max_size=130) | st.integers() | _JSON,
    "anonymousId": st.text(max_size=10) | _JSON,
    "previousId": st.text(max_size=10) | _JSON,
    "timestamp": st.sampled_from([TS, "2026-11-20T11:59:00", "nope", ""]) | _JSON,
    "sentAt": st.sampled_from(["2026-11-20T10:00:00Z", "x"]) | _JSON,
    "context": st.fixed_dictionaries(
        {},
        optional={
            "ip": _JSON,
            "userAgent": _JSON,
            "page": _JSON,
            "campaign": _JSON,
            "sessionId": _JSON,
        },
    )
    | _JSON,
    "properties": st.fixed_dictionaries(
        {},
        optional={
            "products": _JSON,
            "price": _JSON,
            "currency": _JSON,
            "revenue": _JSON,
            "order_id": _JSON,
            "value": _JSON,
            "product_id": _JSON,
        },
    )
    | _JSON,
}


@settings(max_examples=300, deadline=None)
@given(message=st.fixed_dictionaries({}, optional=_FIELDS))
def test_any_message_becomes_an_event_or_a_reason(message: dict) -> None:
    out = translate(message, received_ms=NOW_MS)
    if isinstance(out, str):
        return
    checked = validate(out, now_ms=NOW_MS, currencies=CURRENCIES)
    assert isinstance(checked, Event) or checked.reason  # judged like any event, never raises


@settings(max_examples=300, deadline=None)
@given(message=st.fixed_dictionaries({}, optional=_FIELDS), sent_at=_FIELDS["sentAt"])
def test_the_routes_path_gives_what_translate_gives(message: dict, sent_at: object) -> None:
    # the routes decode each message's bytes straight into a Message (or again as plain
    # JSON when its shape does not fit) and hand the collector the event's fields;
    # translate() reads the decoded JSON and writes the event as JSON: same event, same
    # verdict, same reason
    try:
        raw = msgspec.json.encode(message)
        assume(msgspec.json.decode(raw) == message)  # NaN, huge integers: not JSON
    except (msgspec.EncodeError, OverflowError):
        assume(False)
    decoded = decode_message(raw)
    assert isinstance(decoded, Message)
    done = translate_all([(raw, decoded)], received_ms=NOW_MS, sent_at=sent_at)
    expected = translate(message, received_ms=NOW_MS, sent_at=sent_at)
    if isinstance(expected, str):
        assert done.refused == [(raw, expected)] and not done.events
        return
    assert done.originals == [raw] and not done.refused
    assert msgspec.json.encode(done.events[0]) == expected
    fields = validate_fields(done.events[0], now_ms=NOW_MS, currencies=CURRENCIES)
    assert fields == validate(expected, now_ms=NOW_MS, currencies=CURRENCIES)
