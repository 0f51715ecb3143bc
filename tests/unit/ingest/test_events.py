"""Every validation rule of CONTRACT §5, one case each, plus what must pass."""

from __future__ import annotations

import json

import msgspec
import pytest

from ingest.events import (
    MAX_EVENT_BYTES,
    Event,
    Rejection,
    encode_event,
    validate,
    validate_fields,
)

NOW_MS = 1_795_176_000_000  # 2026-11-20T12:00:00Z
CURRENCIES = frozenset({"EUR", "PLN", "SEK"})


def check(event: dict | bytes) -> Event | Rejection:
    raw = event if isinstance(event, bytes) else json.dumps(event, separators=(",", ":")).encode()
    return validate(raw, now_ms=NOW_MS, currencies=CURRENCIES)


def base(**extra: object) -> dict:
    return {"event_id": "e1", "type": "page_view", "ts": NOW_MS, "user_id": "u1", **extra}


PURCHASE = base(
    type="purchase",
    order_id="o1",
    revenue=30.0,
    currency="PLN",
    items=[{"product_id": "p1", "category": "shoes", "price": 15.0, "quantity": 2}],
)

REJECTED = {
    "missing event_id": ({k: v for k, v in base().items() if k != "event_id"}, "event_id"),
    "missing type": ({k: v for k, v in base().items() if k != "type"}, "type"),
    "missing ts": ({k: v for k, v in base().items() if k != "ts"}, "ts"),
    "missing user_id": ({k: v for k, v in base().items() if k != "user_id"}, "user_id"),
    "event_id too long": (base(event_id="x" * 65), "event_id"),
    "user_id too long": (base(user_id="x" * 129), "user_id"),
    "user_id ill-typed": (base(user_id=42), "user_id"),
    "event_id empty": (base(event_id=""), "event_id"),
    "ts unparsable": (base(ts="yesterday"), "ts"),
    "ts without offset": (base(ts="2026-11-20T10:00:00"), "ts"),
    "ts boolean": (base(ts=True), "ts"),
    "ts over 24h ahead": (base(ts=NOW_MS + 24 * 3600 * 1000 + 1), "ts"),
    "ts RFC3339 over 24h ahead": (base(ts="2099-01-01T00:00:00Z"), "ts"),
    "unknown currency": (
        base(type="add_to_cart", product_id="p", price=1, currency="XYZ"),
        "currency",
    ),
    "currency not ISO shaped": (
        base(type="add_to_cart", product_id="p", price=1, currency="euro"),
        "currency",
    ),
    "amount without currency": (base(type="begin_checkout", cart_value=10), "currency"),
    "negative price": (
        base(type="product_view", product_id="p", price=-1, currency="EUR"),
        "price",
    ),
    "negative cart_value": (
        base(type="begin_checkout", cart_value=-5, currency="EUR"),
        "cart_value",
    ),
    "negative revenue": ({**PURCHASE, "revenue": -1}, "revenue"),
    "negative item price": (
        {**PURCHASE, "items": [{"product_id": "p", "price": -2}]},
        "items[0].price",
    ),
    "item quantity zero": (
        {**PURCHASE, "items": [{"product_id": "p", "price": 2, "quantity": 0}]},
        "items[0].quantity",
    ),
    "item without product": ({**PURCHASE, "items": [{"price": 2}]}, "items[0].product_id"),
    "purchase without items": ({**PURCHASE, "items": []}, "items"),
    "purchase without order_id": (
        {k: v for k, v in PURCHASE.items() if k != "order_id"},
        "order_id",
    ),
    "purchase without revenue": ({k: v for k, v in PURCHASE.items() if k != "revenue"}, "revenue"),
    "purchase without currency": (
        {k: v for k, v in PURCHASE.items() if k != "currency"},
        "currency",
    ),
    "product_view without product": (base(type="product_view"), "product_id"),
    "search without query": (base(type="search"), "query"),
    "bad device": (base(device="phone"), "device"),
    "bad channel": (base(channel="tv"), "channel"),
    "bad country": (base(country="Germany"), "country"),
    "quantity not an integer": (base(type="add_to_cart", product_id="p", quantity=1.5), "quantity"),
    # every number bounded so that what is accepted can be stored (CONTRACT §5, §12)
    "ts before 2000": (base(ts=946_684_799_999), "ts: 946684799999 is before 2000-01-01"),
    "ts -1": (base(ts=-1), "ts: -1 is before 2000-01-01"),
    "ts 1800": (base(ts="1800-01-01T00:00:00Z"), "ts: before 2000-01-01"),
    "ts in 1999 by its offset": (base(ts="2000-01-01T00:30:00+01:00"), "ts: before 2000"),
    "ts huge negative": (base(ts=-(10**30)), "ts: before 2000-01-01"),
    "ts in epoch seconds": (
        base(ts=NOW_MS // 1000),
        "ts: 1795176000 is before 2000-01-01; epoch milliseconds expected, this looks like seconds",
    ),
    "ts in epoch microseconds": (
        base(ts=NOW_MS * 1000),
        "ts: more than 24 h in the future; epoch milliseconds expected, "
        "this looks like microseconds",
    ),
    "ts huge": (base(ts=10**30), "ts: more than 24 h in the future"),
    "quantity over 100000": (
        base(type="add_to_cart", product_id="p", quantity=100_001),
        "quantity",
    ),
    "quantity 2^32+5": (base(type="add_to_cart", product_id="p", quantity=2**32 + 5), "quantity"),
    "quantity boolean": (base(type="add_to_cart", product_id="p", quantity=True), "quantity"),
    "price over 10^9": (
        base(type="product_view", product_id="p", price=1e9 + 1, currency="EUR"),
        "price: expected `float` <= 1000000000.0",
    ),
    "revenue 1e308": ({**PURCHASE, "revenue": 1e308}, "revenue"),
    "cart_value over 10^9": (
        base(type="begin_checkout", cart_value=2e9, currency="EUR"),
        "cart_value",
    ),
    "item price over 10^9": (
        {**PURCHASE, "items": [{"product_id": "p", "price": 1e10}]},
        "items[0].price",
    ),
    "item quantity over 100000": (
        {**PURCHASE, "items": [{"product_id": "p", "price": 1, "quantity": 100_001}]},
        "items[0].quantity",
    ),
    "over 1000 items": ({**PURCHASE, "items": [{"product_id": "p", "price": 1}] * 1001}, "items"),
    "results_count over a UInt32": (
        base(type="search", query="q", results_count=2**32),
        "results_count",
    ),
    "results_count negative": (base(type="search", query="q", results_count=-1), "results_count"),
    "country with a newline": (base(country="DE\n"), "country"),
    "exposure without experiment": (base(type="experiment_exposure", variant="a"), "experiment"),
    "exposure without variant": (base(type="experiment_exposure", experiment="e"), "variant"),
    "experiment over 64 characters": (
        base(type="experiment_exposure", experiment="e" * 65, variant="a"),
        "experiment",
    ),
    "empty variant": (base(type="experiment_exposure", experiment="e", variant=""), "variant"),
    "currency with a newline": (
        base(type="add_to_cart", product_id="p", price=1, currency="EUR\n"),
        "currency",
    ),
}


@pytest.mark.parametrize(("event", "field"), REJECTED.values(), ids=REJECTED.keys())
def test_each_rule_rejects_with_a_reason_naming_the_field(event: dict, field: str) -> None:
    result = check(event)
    assert isinstance(result, Rejection)
    assert result.reason.startswith(field), result.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"42", "not a JSON object"),
        (
            json.dumps(base(page="x" * 2000, referrer="y" * 2000, user_agent="z" * 2000))
            .encode()
            .replace(b"}", b', "pad": "' + b"p" * MAX_EVENT_BYTES + b'"}'),
            "event is",
        ),
        (b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    ],
    ids=["malformed", "array", "number", "over-32KiB", "deep-unknown-field"],
)
def test_non_events_are_rejected(raw: bytes, reason: str) -> None:
    result = check(raw)
    assert isinstance(result, Rejection)
    assert result.reason.startswith(reason)


ACCEPTED = {
    "page_view epoch ms": base(),
    "RFC 3339 with offset": base(ts="2026-11-20T10:00:00+01:00"),
    "RFC 3339 Z": base(ts="2026-11-20T10:00:00.123Z"),
    "exactly 24h ahead": base(ts=NOW_MS + 24 * 3600 * 1000),
    "purchase": PURCHASE,
    "product view without price": base(type="product_view", product_id="p"),
    "search": base(type="search", query="shoes", results_count=0),
    "unknown type is a general event": base(type="wishlist_add"),
    "zero amounts": base(type="begin_checkout", cart_value=0, currency="EUR"),
    "context": base(
        session_id="s", country="DE", device="mobile", channel="paid", page="/", user_agent="UA"
    ),
    "unknown fields are ignored": base(colour="red"),
    "ts on 2000-01-01": base(ts=946_684_800_000),
    "ts on 2000-01-01 by its offset": base(ts="1999-12-31T23:30:00-00:30"),
    "largest amounts and quantities": {
        **PURCHASE,
        "revenue": 1e9,
        "items": [{"product_id": "p", "price": 1e9, "quantity": 100_000}] * 10,
    },
    "1000 items": {**PURCHASE, "items": [{"product_id": "p", "price": 1}] * 1000},
    "largest results_count": base(type="search", query="q", results_count=2**32 - 1),
    "experiment exposure": base(type="experiment_exposure", experiment="e" * 64, variant="B"),
}


@pytest.mark.parametrize("event", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_valid_events_are_accepted(event: dict) -> None:
    assert isinstance(check(event), Event)


def test_normalised_event_round_trips_with_epoch_ms() -> None:
    result = check(base(ts="2026-11-20T10:00:00.250+01:00", type="add_to_cart", product_id="p"))
    assert isinstance(result, Event)
    assert result.ts == result.ts_ms
    again = msgspec.json.decode(encode_event(result), type=Event)
    assert again == result
    assert again.ts == 1_795_165_200_250  # 09:00:00.250Z


_EVERY_CASE = {**{k: v for k, (v, _) in REJECTED.items()}, **ACCEPTED}


@pytest.mark.parametrize("event", _EVERY_CASE.values(), ids=_EVERY_CASE.keys())
def test_decoded_fields_are_judged_as_their_json_is(event: dict) -> None:
    # a translator (the Segment API) hands the collector fields, not JSON: same verdict,
    # same reason, same event
    fields = json.loads(json.dumps(event))
    assert validate_fields(fields, now_ms=NOW_MS, currencies=CURRENCIES) == check(event)
