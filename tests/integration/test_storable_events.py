"""Property-based, on real chDB: every event the edge (or, for records on the topics, the
flow) accepts is written by the flow's code path without error, stored as sent (no wrapped
quantity, no null amount, no shifted time), and the rollups recomputed from it agree with
the raw rows — at the smallest and largest values the rules allow."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows import dataflow as flow
from flows.logic import FlowRules
from flows.rows import Read, batch_rows
from flows.shard import Shard
from flows.state_store import ShardStore
from ingest.events import MAX_TS_MS, Event, encode_event, validate
from ingest.fx import load_fx_rates
from tests.event_strategies import MIN_TS_MS, NOW_MS, to_raw, valid_events
from warehouse.client import Client
from warehouse.rollups import EVENTS, STARTS, mark_dirty, refresh
from warehouse.schema import COLUMNS
from warehouse.writer import WarehouseWriter

pytestmark = pytest.mark.integration

FX = load_fx_rates()
EVENT = {c: i for i, c in enumerate(COLUMNS["events"])}
# Times only a record written straight to a topic can have (the flow has no clock rule).
FLOW_ONLY_TS = [MIN_TS_MS, MAX_TS_MS - 1, MAX_TS_MS - 60_000, 4_000_000_000_000]
_STORED = """
SELECT event_id, toUnixTimestamp64Milli(ts), quantity, items.quantity, price_eur,
       cart_value_eur, revenue_eur, items.price_eur
FROM events FINAL WHERE version = {v:UInt64} ORDER BY event_id
"""


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    """Normalised records as the flow reads them: accepted by the edge, or (for a time
    beyond the edge's clock rule) written straight to the topic."""
    out = []
    for sent in draw(st.lists(valid_events(), min_size=1, max_size=6)):
        if draw(st.integers(0, 3)) == 0:
            sent["ts"] = draw(st.sampled_from(FLOW_ONLY_TS))
            out.append(to_raw(sent))
        elif isinstance(e := validate(to_raw(sent), now_ms=NOW_MS, currencies=FX.currencies),
                        Event):  # fmt: skip
            out.append(encode_event(e))
    return out


def sent_values(line: bytes) -> tuple[Any, ...]:
    row = msgspec.json.decode(line)
    return (
        row[EVENT["event_id"]], round(row[EVENT["ts"]] * 1000), row[EVENT["quantity"]],
        row[EVENT["items.quantity"]], row[EVENT["price_eur"]], row[EVENT["cart_value_eur"]],
        row[EVENT["revenue_eur"]], row[EVENT["items.price_eur"]],
    )  # fmt: skip


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(records=batches())
def test_accepted_events_are_stored_as_sent_and_rolled_up(
    warehouse: Client, records: list[bytes]
) -> None:
    decode = flow._decoder(FX, flow._ReadSoFar())
    reads = [r for i, raw in enumerate(records) if isinstance(r := decode(raw, "t", 0, i), Read)]
    if not reads:
        return
    folded = Shard(FlowRules(), ShardStore(None, None)).fold([r.event for r in reads])
    rows = batch_rows([(reads, folded)])
    encoded = WarehouseWriter.encode(rows.tables, rows.minutes)
    WarehouseWriter(warehouse).write_many([encoded])

    sent = sorted(sent_values(line) for line in encoded.lines["events"].splitlines())
    stored = warehouse.query(_STORED, parameters={"v": encoded.version}).result_rows
    assert len(stored) == len(sent)
    for got, want in zip(stored, sent, strict=True):
        assert tuple(got[:4]) == tuple(want[:4])  # id, time, quantities: exact
        for g, w in zip(got[4:7], want[4:7], strict=True):
            assert (g is None and w is None) or (math.isfinite(g) and g == w)
        assert list(got[7]) == want[7]

    refresh(warehouse)
    raw = warehouse.query(
        "SELECT count(), sumIf(arraySum(items.quantity), is_order = 1) FROM events FINAL"
    ).result_rows[0]
    rolled = warehouse.query(
        "SELECT sum(events), sum(units) FROM rollup_1m FINAL WHERE level = 1"
    ).result_rows[0]
    assert tuple(rolled) == tuple(raw)


def test_the_rollup_marks_take_the_first_and_last_storable_minutes(warehouse: Client) -> None:
    first, last = MIN_TS_MS, MAX_TS_MS - 1
    mark_dirty(warehouse, {EVENTS: [first, last - last % 60_000], STARTS: [first]}, 1)
    assert refresh(warehouse) > 0  # minutes, then their hours and days: no error
    rows = warehouse.query(
        "SELECT kind, toUnixTimestamp(minute) FROM rollup_marks FINAL "
        "WHERE kind = 0 ORDER BY minute"
    ).result_rows
    assert [r[1] * 1000 for r in rows] == [first, last - last % 60_000]
