"""CONTRACT §9 identity in the flow's pure rules: a visitor who browses anonymously and then
identifies is one visitor and one session; the anonymous rows of that visit follow."""

from __future__ import annotations

from flows.logic import FlowRules, StepOutput, UserState, enrich, step
from flows.rows import Part, Read, batch_rows
from flows.shard import Shard
from flows.state_store import ShardStore
from ingest.events import Event
from ingest.fx import load_fx_rates
from warehouse.schema import RELABELS

FX = load_fx_rates()
RULES = FlowRules()
MIN = 60 * 1000
T0 = 1_795_176_000_000


def anon(event_id: str, ts: int, **kw: object) -> Event:
    return Event(event_id=event_id, type="page_view", ts=ts, user_id="anon-1", **kw)  # type: ignore[arg-type]


def known(event_id: str, ts: int, type_: str = "identify") -> Event:
    return Event(event_id=event_id, type=type_, ts=ts, user_id="u-1", anonymous_id="anon-1")


def run(events: list[Event]) -> tuple[UserState, list[StepOutput]]:
    state: UserState | None = None
    outs = []
    for e in events:
        state, out = step(state, enrich(e, FX), RULES)
        assert out is not None
        outs.append(out)
    assert state is not None
    return state, outs


def test_identifying_relabels_the_visit_and_later_anonymous_events() -> None:
    cart = known("d", T0 + 3 * MIN, "add_to_cart")
    visit = [
        anon("a", T0),
        anon("b", T0 + MIN),
        known("c", T0 + 2 * MIN),
        cart,
        anon("e", T0 + 4 * MIN),
    ]
    state, outs = run(visit)
    keys = {o.placed.session_key for o in outs}
    assert len(keys) == 1  # one session
    assert [o.identified for o in outs] == [None, None, ("anon-1", *keys, T0, T0 + 2 * MIN),
                                            None, None]  # fmt: skip
    assert outs[2].reattributed == [(T0, T0 + 2 * MIN)]  # its minutes' rollups change
    # an anonymous event after the visitor identified is the user's
    assert outs[4].placed.enriched.event.user_id == "u-1"
    assert outs[4].session.events == 5
    assert state.identity == "u-1"


def test_an_identification_read_first_still_claims_the_anonymous_events() -> None:
    _, outs = run([known("c", T0 + 2 * MIN), anon("a", T0), anon("b", T0 + MIN)])
    assert [o.placed.enriched.event.user_id for o in outs] == ["u-1", "u-1", "u-1"]
    assert len({o.placed.session_key for o in outs}) == 1


def test_the_shard_keeps_both_parts_of_a_visit_in_one_state() -> None:
    shard = Shard(RULES, ShardStore(None, None))
    part = Part("t", 0)
    events = [enrich(e, FX) for e in (anon("a", T0), known("c", T0 + MIN))]
    outs = shard.fold(events)
    assert shard.users() == ["anon-1"]  # the visitor
    batch = batch_rows([([Read(e, part, i) for i, e in enumerate(events)], outs)])
    [relabel] = batch.tables[RELABELS]
    assert relabel[:5] == ["anon-1", outs[0].placed.session_key, T0, T0 + MIN, "u-1"]
    [session] = batch.tables["sessions"]
    assert session[1] == "u-1"  # the session is the user's
