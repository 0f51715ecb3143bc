"""Property-based: whatever bytes arrive, validation answers (never raises), rejects with a
short reason, and what it accepts is what was sent, within every bound, accepted again by
the flow, and goes through the flow's pure logic and the row encoding without error."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from flows import dataflow as flow
from flows.dead_letters import DeadLetter
from flows.logic import FlowRules
from flows.rows import Read, batch_rows
from flows.shard import Shard
from flows.state_store import ShardStore
from ingest.events import (
    MAX_EVENT_BYTES,
    MAX_TS_MS,
    Event,
    Rejection,
    encode_event,
    validate,
)
from ingest.fx import load_fx_rates
from ingest.privacy import EdgePrivacy
from tests.event_strategies import DAY_MS, MIN_TS_MS, NOW_MS, raws, to_raw, valid_events
from warehouse.schema import COLUMNS
from warehouse.writer import WarehouseWriter

FX = load_fx_rates()
CURRENCIES = FX.currencies
EVENT = {c: i for i, c in enumerate(COLUMNS["events"])}
# A reason names the field (``items[2].price: ...``) or says what the bytes are not.
REASON = re.compile(
    r"^([a-z_]+(\[\d+\])?(\.[a-z_]+)?: \S|not valid JSON|not a JSON object|event is )"
)
QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def edge(raw: bytes) -> Event | Rejection:
    return validate(raw, now_ms=NOW_MS, currencies=CURRENCIES)


def assert_storable(e: Event, *, latest_ms: int) -> None:
    """The bounds that make an event storable, checked apart from the code under test."""
    assert type(e.ts) is int and MIN_TS_MS <= e.ts <= latest_ms
    assert 1 <= len(e.event_id) <= 64 and 1 <= len(e.user_id) <= 128 and 1 <= len(e.type) <= 64
    for amount in (e.price, e.cart_value, e.revenue, *(i.price for i in e.items or ())):
        assert amount is None or (type(amount) is float and 0 <= amount <= 1e9), amount
    for quantity in (e.quantity, *(i.quantity for i in e.items or ())):
        assert quantity is None or (type(quantity) is int and 1 <= quantity <= 100_000)
    assert e.results_count is None or (type(e.results_count) is int
                                       and 0 <= e.results_count < 2**32)  # fmt: skip
    assert len(e.items or ()) <= 1000
    assert e.currency is None or e.currency in CURRENCIES
    assert e.country is None or re.fullmatch("[A-Z]{2}", e.country)


def assert_as_sent(e: Event, sent: Any) -> None:
    """An accepted value is the value sent: nothing wrapped, rounded away or coerced."""
    for name in ("quantity", "results_count", "price", "cart_value", "revenue"):
        if name in sent and sent[name] is not None:
            assert getattr(e, name) == sent[name], name
    for item, line in zip(e.items or (), sent.get("items") or (), strict=True):
        assert item.price == line["price"] and item.quantity == line.get("quantity", 1)


@QUICK
@given(raw=raws())
@example(raw=b'{"event_id":"a","type":"page_view","ts":-1,"user_id":"u"}')
@example(raw=b'{"event_id":"a","type":"page_view","ts":"1800-01-01T00:00:00Z","user_id":"u"}')
@example(raw=b'{"event_id":"a","type":"x","ts":1,"user_id":"u","quantity":1' + b"0" * 30 + b"}")
@example(raw=b'{"event_id":"a","type":"page_view","ts":1795176000,"user_id":"u"}')
@example(raw=b'{"event_id":"a","type":"page_view","ts":-1' + b"0" * 5000 + b',"user_id":"u"}')
@example(raw=b'{"event_id":"\\ud800","type":"page_view","ts":1795176000000,"user_id":"u"}')
def test_validation_answers_every_input_with_an_event_or_a_short_reason(raw: bytes) -> None:
    result = edge(raw)
    if isinstance(result, Rejection):
        assert REASON.match(result.reason), result.reason
        assert len(result.reason) <= 200 and "\n" not in result.reason, result.reason
    else:
        assert_storable(result, latest_ms=NOW_MS + DAY_MS)


@QUICK
@given(sent=valid_events(), big_tokens=st.booleans(), ascii=st.booleans())
def test_valid_events_are_accepted_as_sent(sent: dict, big_tokens: bool, ascii: bool) -> None:
    raw = to_raw(sent, big_tokens, ascii)
    result = edge(raw)
    if len(raw) > MAX_EVENT_BYTES:
        assert isinstance(result, Rejection) and result.reason.startswith("event is ")
        return
    assert isinstance(result, Event), result
    assert_storable(result, latest_ms=NOW_MS + DAY_MS)
    assert_as_sent(result, sent)


@QUICK
@given(raw=raws(valid_events()))
def test_what_the_edge_accepts_the_flow_accepts_unchanged(raw: bytes) -> None:
    result = edge(raw)
    assume(isinstance(result, Event))
    assert isinstance(result, Event)
    # the normalised record, read by the flow years later, on another host's clock
    again = validate(encode_event(result), now_ms=None, currencies=CURRENCIES, max_bytes=None)
    assert again == result


@QUICK
@given(raw=raws())
@example(raw=b'{"event_id":"a","type":"page_view","ts":4102444799999,"user_id":"u"}')
@example(raw=b'{"event_id":"a","type":"page_view","ts":4102444800000,"user_id":"u"}')
@example(raw=b"[]")
@example(raw=b"")
@example(raw=b'{"event_id":"0","type":"page_view","ts":946684800000,"user_id":"u1","ip":null,'
         b'"cart_value":-1}')  # fmt: skip
def test_the_flow_reads_any_record_as_an_event_or_a_dead_letter(raw: bytes) -> None:
    read = flow._ReadSoFar()
    out = flow._decoder(FX, read)(raw, "t", 3, 17)
    if isinstance(out, DeadLetter):
        # the record as sent, less any IP address (a dead letter never keeps one)
        kept = EdgePrivacy().dead_letter(raw)[0]
        assert (out.value, out.topic, out.partition, out.offset) == (kept, "t", 3, 17)
        assert REASON.match(out.reason), out.reason
    else:
        assert isinstance(out, Read) and out.offset == 17
        assert_storable(out.event.event, latest_ms=MAX_TS_MS - 1)


_batches = st.lists(
    valid_events(event_id=st.sampled_from(["e1", "e2", "é", "x" * 64]) | st.text(min_size=1)),
    min_size=1,
    max_size=12,
).map(lambda batch: [r for e in batch if isinstance(r := edge(to_raw(e)), Event)])


def reads_of(events: list[Event]) -> list[Read]:
    """The events as the flow reads them back from the topics."""
    decode = flow._decoder(FX, flow._ReadSoFar())
    reads = [decode(encode_event(e), "t", 0, i) for i, e in enumerate(events)]
    assert all(isinstance(r, Read) for r in reads)
    return reads


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_batches)
def test_accepted_events_go_through_the_flow_logic_and_row_encoding(events: list[Event]) -> None:
    assume(events)
    reads = reads_of(events)
    # remember every id, whatever the span of the generated times (a repeat that comes
    # later than the retention is counted again: by design, not what is checked here)
    rules = FlowRules(retention_ms=2**62)
    folded = Shard(rules, ShardStore(None, None)).fold([r.event for r in reads])
    rows = batch_rows([(reads, folded)])
    assert rows.events + rows.duplicates == len(events)
    encoded = WarehouseWriter.encode(rows.tables, rows.minutes)
    lines = encoded.lines["events"].splitlines()
    # the flow de-duplicates per user (events are keyed, sharded and folded by user_id)
    assert len(lines) == len({(e.user_id, e.event_id) for e in events})
    for line in lines:
        row = msgspec.json.decode(line)
        assert MIN_TS_MS / 1000 <= row[EVENT["ts"]] <= (NOW_MS + DAY_MS) / 1000
        for name in ("price_eur", "cart_value_eur", "revenue_eur"):
            value = row[EVENT[name]]
            assert value is None or (math.isfinite(value) and value >= 0)
        assert 1 <= row[EVENT["quantity"]] <= 100_000
        assert all(1 <= q <= 100_000 for q in row[EVENT["items.quantity"]])
        assert all(math.isfinite(p) for p in row[EVENT["items.price_eur"]])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_batches)
def test_the_users_states_are_saved_and_resumed(events: list[Event]) -> None:
    assume(events)
    again = [r.event for r in reads_of(events)]
    with tempfile.TemporaryDirectory() as state:
        path = Path(state) / "shard.sqlite3"
        shard = Shard(FlowRules(), ShardStore(path, None))
        shard.fold(again)
        assert shard.snapshot() == 1  # the users' states as MessagePack, in SQLite
        resumed = Shard(FlowRules(), ShardStore(path, 1), 1)
        # a shard resumed from its saved states is the shard that went on
        assert [o is None for o in resumed.fold(again)] == [o is None for o in shard.fold(again)]
