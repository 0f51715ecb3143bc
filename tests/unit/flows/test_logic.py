"""The flow's pure rules: de-duplication, orders, sessions (explicit, derived, merged)."""

from __future__ import annotations

from flows.ids import id_hash, unpack_times
from flows.logic import KEEP_SESSIONS, FlowRules, Move, StepOutput, UserState, enrich, step
from ingest.events import Event, Item
from ingest.fx import load_fx_rates

FX = load_fx_rates()
RULES = FlowRules(session_timeout_ms=30 * 60 * 1000)
MIN = 60 * 1000
T0 = 1_795_176_000_000


def ev(event_id: str, ts: int, type_: str = "page_view", **kw: object) -> Event:
    return Event(event_id=event_id, type=type_, ts=ts, user_id="u1", **kw)  # type: ignore[arg-type]


def run(events: list[Event]) -> tuple[UserState, list[StepOutput | None]]:
    state: UserState | None = None
    outs = []
    for e in events:
        state, out = step(state, enrich(e, FX), RULES)
        outs.append(out)
    assert state is not None
    return state, outs


def test_repeated_event_id_is_dropped_first_arrival_wins() -> None:
    _, outs = run([ev("a", T0), ev("a", T0 + MIN), ev("b", T0)])
    assert outs[1] is None and outs[0] is not None and outs[2] is not None


def test_repeated_order_id_counts_one_order() -> None:
    items = [Item(product_id="p", price=10.0)]
    p = {"type_": "purchase", "order_id": "o1", "revenue": 10.0, "currency": "EUR", "items": items}
    _, outs = run([ev("a", T0, **p), ev("b", T0 + MIN, **p)])
    assert [o.placed.is_order for o in outs if o] == [True, False]


def test_gap_of_exactly_the_timeout_stays_in_the_session() -> None:
    _, outs = run([ev("a", T0), ev("b", T0 + 30 * MIN), ev("c", T0 + 60 * MIN + 1)])
    keys = [o.placed.session_key for o in outs if o]
    assert keys[0] == keys[1] != keys[2]


def test_late_event_bridging_two_sessions_merges_them() -> None:
    state, outs = run([ev("a", T0), ev("b", T0 + 50 * MIN), ev("c", T0 + 25 * MIN)])
    first, second, bridge = outs
    assert first and second and bridge
    survivor, absorbed = first.placed.session_key, second.placed.session_key
    assert survivor != absorbed
    # b's row moves into a's session (the warehouse finds it by its time), b's session
    # becomes a tombstone
    assert bridge.moves == [Move(absorbed, survivor, (T0 + 50 * MIN).to_bytes(8, "little"))]
    assert bridge.tombstones == [(absorbed, second.session.rev + 1)]
    agg = bridge.session
    assert bridge.placed.session_key == survivor
    assert (agg.events, agg.first_ms, agg.last_ms) == (3, T0, T0 + 50 * MIN)
    assert list(state.sessions) == [survivor]
    [span] = state.spans
    assert sorted(unpack_times(span.times)) == [T0, T0 + 25 * MIN, T0 + 50 * MIN]


def test_merges_chain_and_every_moved_session_carries_all_its_events_times() -> None:
    # a | b | c, each 40 minutes apart; d bridges b and c, then e bridges a and b+c
    state, outs = run([ev("a", T0), ev("b", T0 + 40 * MIN), ev("c", T0 + 80 * MIN),
                       ev("d", T0 + 60 * MIN), ev("e", T0 + 20 * MIN)])  # fmt: skip
    a, b, c, d, e = outs
    assert a and b and c and d and e
    keys = [o.placed.session_key for o in (a, b, c)]
    assert [(m.old, m.new) for m in d.moves] == [(keys[2], keys[1])]
    assert [(m.old, m.new) for m in e.moves] == [(keys[1], keys[0])]
    assert sorted(unpack_times(e.moves[0].times)) == [T0 + 40 * MIN, T0 + 60 * MIN, T0 + 80 * MIN]
    assert e.session.events == 5 and list(state.sessions) == [keys[0]]


def test_session_attributes_come_from_the_first_event_even_when_it_arrives_late() -> None:
    state, first = step(None, enrich(ev("b", T0 + MIN, session_id="s", country="PL",
                                         channel="paid"), FX), RULES)  # fmt: skip
    assert first is not None
    first_rev = first.session.rev
    late = ev("a", T0, session_id="s", country="DE", user_agent="Mozilla/5.0 (iPhone) Mobile")
    _, out = step(state, enrich(late, FX), RULES)
    assert out is not None
    agg = out.session
    assert (agg.country, agg.device, agg.channel, agg.events) == ("DE", "mobile", None, 2)
    assert agg.rev > first_rev
    # every minute of the session must have its rollups recomputed: its events' slices moved
    assert out.reattributed == [(T0, T0 + MIN)]


def test_only_attribute_changes_and_merges_ask_for_a_whole_session_recompute() -> None:
    _, outs = run([ev("a", T0), ev("b", T0 + MIN), ev("c", T0 + 50 * MIN), ev("d", T0 + 25 * MIN)])
    assert [list(o.reattributed) if o else None for o in outs] == [
        [], [], [], [(T0, T0 + 50 * MIN)],  # the bridge merged two sessions
    ]  # fmt: skip


def test_money_is_converted_at_the_events_dated_rate() -> None:
    e = ev("a", T0, "add_to_cart", product_id="p", price=100.0, currency="PLN")
    assert enrich(e, FX).price_eur == FX.to_eur(100.0, "PLN", T0)
    assert enrich(ev("b", T0), FX).price_eur is None


def test_memory_is_bounded_by_the_retention() -> None:
    rules = FlowRules(retention_ms=60 * MIN)
    state: UserState | None = None
    for i in range(1000):
        state, _ = step(state, enrich(ev(f"e{i}", T0 + i * 40 * MIN), FX), rules)
    assert state is not None
    # ids older than the retention go within a quarter retention: at most the events of
    # the last 75 minutes (one every 40 minutes, each its own session) are remembered
    assert 1 <= len(state.events) <= 2 and 1 <= len(state.spans) <= 2
    assert len(state.sessions) <= KEEP_SESSIONS + 1


def test_a_user_who_keeps_coming_back_holds_only_the_retentions_worth() -> None:
    rules = FlowRules(retention_ms=60 * MIN)
    state: UserState | None = None
    for i in range(600):  # one event a minute for ten hours, a session per hour
        e = ev(f"e{i}", T0 + i * MIN, session_id=f"s{i // 60}")
        state, out = step(state, enrich(e, FX), rules)
        assert out is not None and out.session.events == i % 60 + 1
    assert state is not None
    assert 60 <= len(state.events) <= 75 and len(state.sessions) == 10
    # a repeat within the retention is still one; older ones are forgotten
    assert step(state, enrich(ev("e580", T0 + 580 * MIN), FX), rules)[1] is None
    # a session coming back after a long gap still finds its aggregate
    e = ev("late", T0 + 601 * MIN, session_id="s0")
    assert step(state, enrich(e, FX), rules)[1].session.events == 61  # type: ignore[union-attr]


def test_an_idle_user_is_forgotten_once_the_retention_has_passed(tmp_path) -> None:
    from prometheus_client import REGISTRY

    from flows import dataflow as flow

    progress = flow._ReadSoFar()
    decode = flow._decoder(FX, progress)
    logic = flow._ShardLogic(FlowRules(retention_ms=60 * MIN), progress, decode, tmp_path, None)
    value = b'{"event_id":"a","type":"page_view","ts":%d,"user_id":"u1"}' % T0
    key, record = flow._route(b"u1", value, "t", 0, 0)
    assert flow._route(None, value, "t", 0, 0) == (key, record)  # no Kafka key: the user_id

    def counts(logic: flow._ShardLogic) -> tuple[int, int]:
        [rows] = logic.on_batch([(key, [record])])[0]
        return rows.events, rows.duplicates

    assert counts(logic) == (1, 0)
    (part,) = progress.parts.values()
    assert progress.settled_ms() == part.newest_ms == T0
    assert logic.snapshot() == (key, 1)
    users = {"shard": key}
    assert REGISTRY.get_sample_value("pulse_flow_users", users) == 1  # on /metrics
    # another partition has been read to 61 minutes later, this one to 30: kept
    behind = progress.parts[("t", 1)] = flow.Part("t", 1)
    part.newest_ms, behind.newest_ms = T0 + 61 * MIN, T0 + 30 * MIN
    assert logic.on_notify()[1] is flow.StatefulBatchLogic.RETAIN
    assert counts(logic) == (0, 1)  # still a repeat
    behind.newest_ms = T0 + 61 * MIN  # every partition is past the hour: forgotten
    assert logic.on_notify()[1] is flow.StatefulBatchLogic.RETAIN  # the shard stays
    assert logic.snapshot() == (key, 2)
    assert REGISTRY.get_sample_value("pulse_flow_users", users) == 0
    # forgotten, also for a shard resumed from that snapshot: the event is new again
    shard = logic._shard
    assert counts(logic) == (1, 0)
    assert logic._shard is shard  # a shard holding no user is still open, not opened again
    resumed = flow._ShardLogic(FlowRules(), progress, decode, tmp_path, (key, 2))
    assert counts(resumed) == (1, 0)


def test_records_the_flow_cannot_use_become_dead_letters_and_the_rest_goes_on() -> None:
    from flows import dataflow as flow
    from flows.dead_letters import DeadLetter

    progress = flow._ReadSoFar()
    logic = flow._ShardLogic(FlowRules(), progress, flow._decoder(FX, progress), None, None)
    good = b'{"event_id":"a","type":"page_view","ts":%d,"user_id":"u1"}' % T0
    early = b'{"event_id":"b","type":"page_view","ts":-1,"user_id":"u1"}'
    key, bad = flow._route(None, b"not json", "odd", 0, 0)
    out, _ = logic.on_batch([(key, [bad, (good, "odd", 0, 1), (early, "odd", 0, 2)])])
    letters = [x for x in out if isinstance(x, DeadLetter)]
    [rows] = [x for x in out if isinstance(x, flow.Rows)]
    assert (rows.events, rows.progress) == (1, {("odd", 0): (T0, 1)})
    assert [(d.value, d.topic, d.partition, d.offset) for d in letters] == [
        (b"not json", "odd", 0, 0),
        (early, "odd", 0, 2),
    ]
    assert letters[0].reason.startswith("not valid JSON")
    assert letters[1].reason == "ts: -1 is before 2000-01-01"
    # a batch of nothing but dead letters
    assert logic.on_batch([(key, [bad])])[0] == [letters[0]]


def test_nothing_is_pruned_that_a_topic_read_behind_may_still_bring() -> None:
    rules = FlowRules(retention_ms=60 * MIN)
    state, _ = step(None, enrich(ev("a", T0, session_id="s"), FX), rules, settled_ms=T0)
    # this user's page views are read three hours ahead of another topic
    state, _ = step(state, enrich(ev("b", T0 + 180 * MIN), FX), rules, settled_ms=T0)
    assert id_hash("a") in state.events and "s" in state.sessions
    state, out = step(state, enrich(ev("c", T0 + MIN, session_id="s"), FX), rules, T0 + MIN)
    assert out is not None and out.session.events == 2  # the session was still there
    # once every partition has been read past the retention, the old ones go
    state, _ = step(state, enrich(ev("d", T0 + 300 * MIN), FX), rules, settled_ms=T0 + 300 * MIN)
    assert len(state.events) == 1 and id_hash("d") in state.events and len(state.spans) == 1
