"""A shard forgets an erased user at once, in memory and in every saved record, so that no
resume brings it back and its id is nowhere on disk (CONTRACT §11); erasure records."""

from __future__ import annotations

from flows.dead_letters import DeadLetter
from flows.erasure import Erasure, Erasures, decode_erasure, encode_erasure
from flows.logic import FlowRules, enrich
from flows.shard import Shard
from flows.state_store import ShardStore
from ingest.events import Event
from ingest.fx import load_fx_rates

T0 = 1_795_176_000_000
FX = load_fx_rates()


def _event(user: str, i: int, ts: int = T0) -> object:
    return enrich(Event(event_id=f"{user}-{i}", type="page_view", ts=ts + i, user_id=user), FX)


def test_erased_user_leaves_no_trace_in_the_shard_log(tmp_path) -> None:
    path = tmp_path / "shard-00.sqlite3"
    shard = Shard(FlowRules(), ShardStore(path, None))
    for gen in range(12):  # many generations: the user is in several records
        shard.fold([_event("erase-me@example.com", gen), _event(f"keep-{gen}", gen)])
        shard.snapshot()
    assert shard.state("erase-me@example.com") is not None
    assert shard.erase({"erase-me@example.com", "never-seen"}) == 1
    assert shard.state("erase-me@example.com") is None
    assert shard.state("keep-3") is not None
    for gen in range(12, 30):  # compaction and deletion go on as before
        shard.fold([_event(f"keep-{gen}", gen)])
        shard.snapshot()
    gen = shard.gen
    shard._store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"erase-me" not in on_disk and b"keep-3" in on_disk
    for resume in (gen, gen - 5):  # whichever epoch a resume goes back to
        again = Shard(FlowRules(), ShardStore(path, resume), resume)
        assert again.state("erase-me@example.com") is None
        assert again.state("keep-3") is not None
        assert (again.state("keep-29") is not None) == (resume == gen)  # saved at the last
        again._store.close()


def test_an_erased_user_that_comes_back_starts_afresh(tmp_path) -> None:
    shard = Shard(FlowRules(), ShardStore(None, None))
    shard.fold([_event("u", 0), _event("u", 1)])
    shard.erase({"u"})
    (out,) = shard.fold([_event("u", 0)])  # the same event id: not a repeat any more
    assert out is not None and out.session.events == 1


def test_erasure_records() -> None:
    value = encode_erasure("u1", T0)
    e = decode_erasure(value, "t", 2, 7)
    assert e == Erasure("u1", T0, "t", 2, 7)
    assert isinstance(decode_erasure(b"nope", "t", 0, 1), DeadLetter)
    erasures = Erasures()
    assert not erasures
    erasures.add(e)
    assert erasures.covers(_event("u1", 0, T0 - 10))  # type: ignore[arg-type]
    assert not erasures.covers(_event("u1", 0, T0))  # type: ignore[arg-type]
    assert not erasures.covers(_event("u2", 0, T0 - 10))  # type: ignore[arg-type]
