"""A shard's users: folded like one user at a time, saved incrementally by generation,
rolled back on resume to the generation Bytewax committed, forgotten when idle."""

from __future__ import annotations

import random
import sys
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import msgspec

from flows.logic import Enriched, FlowRules, enrich
from flows.shard import SHARDS, Shard, shard_of_key
from flows.state_store import KEEP_GENERATIONS, ShardStore
from ingest.events import Event, Item
from ingest.fx import load_fx_rates

FX = load_fx_rates()
RULES = FlowRules(session_timeout_ms=30 * 60 * 1000, retention_ms=3600 * 1000)
MIN = 60 * 1000
T0 = 1_795_176_000_000


def ev(event_id: str, user: str, ts: int, session: str | None = None, **kw: Any) -> Enriched:
    kw.setdefault("type", "page_view")
    return enrich(Event(event_id=event_id, ts=ts, user_id=user, session_id=session, **kw), FX)


def shard_of(user_id: str) -> str:
    """The shard key of a user's records (keyed by the UTF-8 bytes of ``user_id``)."""
    return shard_of_key(user_id.encode())


def fresh(path: Path | None) -> Shard:
    return Shard(RULES, ShardStore(path, None))


def resumed(path: Path, gen: int) -> Shard:
    return Shard(RULES, ShardStore(path, gen), gen)


def test_shard_keys_are_stable_and_spread() -> None:
    keys = {shard_of(f"user-{i}") for i in range(5000)}
    assert len(keys) == SHARDS
    assert shard_of("u1") == f"{zlib.crc32(b'u1') % SHARDS:02d}"


def test_a_repeat_is_a_duplicate_across_users_batches_and_a_resume(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    shard = fresh(path)
    outs = shard.fold([ev("a", "u1", T0), ev("b", "u2", T0), ev("a", "u1", T0 + MIN)])
    assert [o is None for o in outs] == [False, False, True]
    assert shard.snapshot() == 1
    again = resumed(path, 1)
    outs = again.fold([ev("a", "u1", T0 + 2 * MIN), ev("b", "u2", T0), ev("c", "u1", T0)])
    assert [o is None for o in outs] == [True, True, False]


def test_resume_rolls_back_what_came_after_the_committed_generation(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    shard = fresh(path)
    shard.fold([ev("a", "u1", T0)])
    assert shard.snapshot() == 1
    shard.fold([ev("b", "u1", T0 + MIN), ev("c", "u3", T0)])
    assert shard.snapshot() == 2  # written, but Bytewax committed only generation 1
    again = resumed(path, 1)
    outs = again.fold([ev("b", "u1", T0 + MIN), ev("c", "u3", T0), ev("a", "u1", T0)])
    assert [o is None for o in outs] == [False, False, True]


def test_a_snapshot_without_changes_keeps_its_generation(tmp_path: Path) -> None:
    shard = fresh(tmp_path / "s.sqlite3")
    assert shard.snapshot() == 0
    shard.fold([ev("a", "u1", T0)])
    assert shard.snapshot() == shard.snapshot() == 1


def test_a_fresh_start_ignores_what_an_earlier_run_saved(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    shard = fresh(path)
    shard.fold([ev("a", "u1", T0)])
    shard.snapshot()
    assert fresh(path).fold([ev("a", "u1", T0)]) != [None]


def test_idle_users_are_forgotten_in_memory_and_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    shard = fresh(path)
    shard.fold([ev("a", "old", T0), ev("b", "busy", T0 + 2 * 3600 * 1000)])
    shard.snapshot()
    assert shard.forget(T0 + 3600 * 1000) == 1 and len(shard) == 1
    shard.snapshot()
    again = resumed(path, 2)  # "old" is gone from the store too: its event is new again
    assert again.fold([ev("a", "old", T0)]) != [None]
    assert again.fold([ev("b", "busy", T0)]) == [None]


def test_saved_users_not_loaded_since_a_resume_are_forgotten_too(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    shard = fresh(path)
    shard.fold([ev("a", "old", T0)])
    shard.snapshot()
    again = resumed(path, 1)
    assert again.forget(T0 + MIN) == 1  # never loaded, found idle in the store
    assert again.snapshot() == 2
    assert resumed(path, 2).fold([ev("a", "old", T0)]) != [None]
    assert resumed(path, 1).fold([ev("a", "old", T0)]) == [None]  # before the forgetting


def test_old_versions_are_compacted_but_recent_generations_stay(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    shard = fresh(path)
    for i in range(20):
        shard.fold([ev(f"e{i}", "u1", T0 + i * MIN)])
        shard.snapshot()
    store = ShardStore(path, 20)
    assert store._db is not None
    gens = [g for (g,) in store._db.execute("SELECT gen FROM log ORDER BY gen")]
    assert gens == list(range(12, 21))  # the last KEEP_GENERATIONS + 1 versions
    # A resume to any of them finds that generation's state.
    outs = resumed(path, 13).fold([ev("e12", "u1", T0), ev("e13", "u1", T0)])
    assert outs[0] is None and outs[1] is not None


def _gens(path: Path) -> list[int]:
    store = ShardStore(path, 10**9)
    assert store._db is not None
    return [g for (g,) in store._db.execute("SELECT gen FROM log ORDER BY gen")]


def test_a_mostly_superseded_record_is_rewritten_and_then_goes(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    shard = fresh(path)
    shard.fold([ev("a1", "a", T0), ev("b1", "b", T0), ev("c1", "c", T0)])
    shard.snapshot()  # 1: a, b, c
    for i in range(2, 20):  # b and c move on every generation; a stays idle in record 1
        shard.fold([ev(f"b{i}", "b", T0 + i * MIN), ev(f"c{i}", "c", T0 + i * MIN)])
        assert shard.snapshot() == i
    assert 1 not in _gens(tmp_path / "s.sqlite3")  # a was saved again at 9, record 1 went
    again = resumed(path, 19)
    assert again.fold([ev("a1", "a", T0), ev("b5", "b", T0), ev("a2", "a", T0)])[:2] == [
        None,
        None,
    ]


def test_a_record_forgetting_users_outlives_older_records(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    shard = fresh(path)
    shard.fold([ev("a1", "a", T0), ev("b1", "b", T0 + 3 * 3600 * 1000)])
    shard.snapshot()  # 1: a and b; b stays live there
    assert shard.forget(T0 + 3600 * 1000) == 1
    shard.snapshot()  # 2: a forgotten
    for i in range(3, 15):
        shard.fold([ev(f"x{i}", "x", T0 + 3 * 3600 * 1000)])
        shard.snapshot()
    assert {1, 2} <= set(_gens(path))
    assert resumed(path, 14).fold([ev("a1", "a", T0)]) != [None]  # still forgotten


def test_without_a_store_nothing_is_tracked() -> None:
    shard = fresh(None)
    shard.fold([ev("a", "u1", T0)])
    assert shard.snapshot() == 0
    assert shard.fold([ev("a", "u1", T0)]) == [None]


def _random_events(rng: random.Random, n: int, t: int) -> tuple[list[Enriched], int]:
    """Users with and without session_id, repeats, orders (some repeated), late events."""
    events = []
    for _ in range(n):
        user = f"u{rng.randrange(8)}"
        t += rng.randrange(0, 6 * MIN)
        ts = t - rng.choice([0, 0, 0, MIN, 40 * MIN, 3 * 3600 * 1000])
        event_id = f"e{rng.randrange(4000)}"
        session = None if user in ("u0", "u1") else f"{user}-s{rng.randrange(4)}"
        if rng.random() < 0.1:
            order = f"o{rng.randrange(50)}"
            item = Item(product_id="p1", price=10.0, quantity=1)
            events.append(ev(event_id, user, ts, session, type="purchase", order_id=order,
                             revenue=10.0, currency="EUR", items=[item]))  # fmt: skip
        else:
            events.append(ev(event_id, user, ts, session))
    return events, t


def test_a_resume_finds_each_users_state_exactly_as_it_was(tmp_path: Path) -> None:
    """Every generation a resume can go back to gives back the very state of every user,
    through pruning, forgetting, derived sessions and compaction."""
    rng = random.Random(7)
    path = tmp_path / "s.sqlite3"
    shard = fresh(path)
    t = T0
    encode = msgspec.msgpack.encode
    states: dict[int, dict[str, bytes]] = {}
    for _ in range(150):
        events, t = _random_events(rng, rng.randrange(1, 40), t)
        shard.fold(events)
        if rng.random() < 0.1:
            shard.forget(t - 2 * 3600 * 1000)
        gen = shard.snapshot()
        states[gen] = {u: encode(shard.state(u)) for u in shard.users()}
    assert len(states) > 100
    final = [shard.state(u) for u in shard.users()]
    assert any(len(s.events) < s.arrivals - 100 for s in final if s)  # pruned
    for gen in sorted(states, reverse=True)[: KEEP_GENERATIONS + 1]:  # newest first
        again = resumed(path, gen)
        assert {u: encode(again.state(u)) for u in again.users()} == states[gen], gen


def test_users_are_held_encoded_and_decoded_when_they_show_up_again(tmp_path: Path) -> None:
    shard = fresh(tmp_path / "s.sqlite3")
    shard.fold([ev("a", "u1", T0, "s1"), ev("b", "u2", T0), ev("c", "u1", T0 + MIN, "s1")])
    assert shard._hot and not shard._held  # decoded while they change
    assert shard.snapshot() == 1
    assert not shard._hot and sorted(shard._held) == ["u1", "u2"]  # bytes from now on
    assert shard.held_bytes == sum(len(b) for b in shard._held.values())
    outs = shard.fold([ev("c", "u1", T0), ev("d", "u1", T0 + 2 * MIN, "s1")])
    assert outs[0] is None and outs[1] is not None and outs[1].session.events == 3
    assert list(shard._hot) == ["u1"]
    shard.snapshot()
    u1 = shard.state("u1")
    assert u1 is not None and u1.arrivals == 3 and len(u1.events) == 3
    assert shard.held_bytes == sum(len(b) for b in shard._held.values())
    assert shard.forget(T0 + 30 * 1000) == 1 and shard.users() == ["u1"]
    assert shard.held_bytes == len(shard._held["u1"])


def test_memory_per_held_user_stays_under_a_bound() -> None:
    """The encoded bytes, the user's key and its slot in the shard's dict stay under a
    bound (the numbers: docs/architecture.md, "Users are held encoded")."""
    users = [f"user-{i:06d}" for i in range(3000)]
    events = [
        ev(f"{i:08x}-{j:04x}-4000-8000-000000000000", user, T0 + j * MIN, f"sess-{i:06d}",
           country="DE", channel="paid", device="mobile")
        for j in range(3) for i, user in enumerate(users)
    ]  # fmt: skip
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        shard = fresh(None)
        for at in range(0, len(events), 500):
            shard.fold(events[at : at + 500])
        shard.snapshot()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(shard) == len(users)
    keys = sum(sys.getsizeof(user) for user in users)  # the events' user_id strings
    per_user = (held + keys) / len(users)
    assert per_user < 300, per_user
    assert shard.held_bytes / len(users) < 150  # the encoded state, with its header


def test_memory_per_remembered_event_stays_under_a_bound() -> None:
    rules = FlowRules(retention_ms=48 * 3600 * 1000)
    for session, bound in (("s1", 17), (None, 25)):  # a derived session also keeps times
        shard = Shard(rules, ShardStore(None, None))
        n = 5000
        shard.fold([ev(f"event-{i:032d}", "u1", T0 + i * 1000, session) for i in range(n)])
        shard.snapshot()
        assert len(shard.state("u1").events) == n  # type: ignore[union-attr]
        assert shard.held_bytes / n < bound, (session, shard.held_bytes / n)
