"""Forgetting users on the real pipeline while the flow runs (CONTRACT §11): afterwards no
table holds their ids (every String column of every table), nor the flow's saved state;
every metric equals the polars reference over the remaining users; events of theirs still
in flight are not stored; the audit has a salted hash, never the id; a second request
changes nothing."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import timedelta
from functools import partial
from pathlib import Path

import msgspec
import pytest

from api.erasure import Eraser, announce_erasure
from flows.config import FlowConfig
from flows.run import FlowThread, run_flow
from ingest.collector import Collector
from ingest.fx import load_fx_rates
from ingest.privacy import EdgePrivacy, Pseudonymizer
from ingest.producer import ConfluentProducer
from ingest.topics import Topics, ensure_topics
from tests import reference as ref
from tests.pipeline import synthetic_events, utc
from tests.privacy_scan import find_in_tables
from warehouse.client import connect
from warehouse.erasure import KINDS
from warehouse.migrate import migrate
from warehouse.queries import MetricQuery, complete_until, funnel, metric_series
from warehouse.rollups import EVENTS, STARTS, UNROLLED, first_dirty, first_dirty_of

pytestmark = pytest.mark.integration

START = utc(2026, 10, 24, 0)
END = utc(2026, 10, 26, 6)
SALT = b"s" * 32


def _renamed(raws: list[bytes]) -> list[bytes]:
    """The synthetic events with ids no other id contains (u1 is inside u12)."""
    out = []
    for raw in raws:
        e = msgspec.json.decode(raw)
        if "user_id" in e:
            e["user_id"] = f"shopper-{int(e['user_id'][1:]):04d}~"
        out.append(msgspec.json.encode(e))
    return out


def _publish(bootstrap: str, topics: Topics, raws: list[bytes], privacy: EdgePrivacy) -> set[int]:
    producer = ConfluentProducer(bootstrap)
    result = Collector(producer, topics, load_fx_rates().currencies, privacy=privacy).ingest(
        raws, source="test", timeout=60
    )
    producer.close()
    return {r.index for r in result.rejected}


def _wait(what, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _distinct_events(client) -> int:
    return client.query("SELECT count() FROM events FINAL").result_rows[0][0]


def _state(client) -> tuple:
    """Everything a second request could change (the audit aside)."""
    q = client.query
    return (
        q("SELECT count(), sum(cityHash64(*)) FROM events FINAL").result_rows,
        q("SELECT count(), sum(cityHash64(*)) FROM sessions FINAL").result_rows,
        q("SELECT count() FROM duplicates FINAL").result_rows,
        q("SELECT level, t, sum(events), sum(n_visitors) FROM rollup_1h FINAL "
          "GROUP BY level, t ORDER BY level, t").result_rows,
    )  # fmt: skip


def _settled_state(client, timeout: float = 60.0) -> tuple:
    """The state once two reads a few rollup refreshes apart agree."""
    deadline = time.monotonic() + timeout
    state = _state(client)
    while True:
        time.sleep(2.5)
        again = _state(client)
        if again == state:
            return state
        assert time.monotonic() < deadline, "the warehouse never settled"
        state = again


@pytest.fixture
def running(broker, warehouse_dsn, tmp_path: Path):
    """Fresh topics and database, and a flow running on them (with saved state)."""
    topics = Topics(prefix=f"fg{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, topics, partitions=4)
    database = f"fg_{uuid.uuid4().hex[:8]}"
    client = connect(warehouse_dsn, database)
    migrate(client)
    config = FlowConfig(broker.bootstrap, topics, warehouse_dsn, database, load_fx_rates(),
                        rollup_every_s=1.0, retention_every_s=1.0, idle_tick_s=1.0)  # fmt: skip
    flow = FlowThread(config, recovery_dir=tmp_path / "recovery").start()
    yield topics, client, flow, tmp_path / "recovery" / "state", config
    flow.stop(30)
    client.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_forget_users_while_the_flow_runs(broker, running) -> None:
    topics, client, flow, state_dir, config = running
    raws = _renamed(synthetic_events(400, START))
    bad = _publish(broker.bootstrap, topics, raws, EdgePrivacy())
    accepted = [r for i, r in enumerate(raws) if i not in bad]
    events = ref.load_events(accepted)
    expected = len({msgspec.json.decode(r)["event_id"] for r in accepted})
    _wait(lambda: _distinct_events(client) == expected)

    # three users: the most active ones (purchases, derived sessions, repeats among them)
    per_user: dict[str, list[dict]] = {}
    for r in accepted:
        e = msgspec.json.decode(r)
        per_user.setdefault(e["user_id"], []).append(e)
    forgotten = sorted(per_user, key=lambda u: -len(per_user[u]))[:3]
    assert any(e["type"] == "purchase" for u in forgotten for e in per_user[u])

    announce = partial(announce_erasure, broker.bootstrap, topics.erasures)
    eraser = Eraser(client, SALT, announce=announce, ack_timeout_s=60)
    answers = [eraser.forget(u, "dpo-key") for u in forgotten]
    for user, answer in zip(forgotten, answers, strict=True):
        assert answer.flow_acknowledged, user
        assert answer.counts["events"] == len({e["event_id"] for e in per_user[user]})
        assert answer.counts["sessions"] > 0 and set(answer.counts) == set(KINDS)
    assert sum(a.counts["orders"] for a in answers) > 0

    # the rollups of the affected minutes, hours and days are recomputed at once (the
    # events are weeks old: their minutes are left to their hours, which hold them)
    def rolled_up() -> bool:
        until = complete_until(client, timedelta(minutes=10))
        assert until is not None
        hour = until.replace(minute=0, second=0, microsecond=0)
        dirty = first_dirty_of(client, (EVENTS, STARTS), START, until - timedelta(minutes=1))
        return all((family, UNROLLED) not in dirty
                   and first_dirty(client, family, START, hour, "1h") is None
                   for family in (EVENTS, STARTS))  # fmt: skip

    assert rolled_up()
    # an event of a forgotten user still in flight (event time before the erasure) is
    # dropped by the flow; a later one of another user goes through
    late = [
        {"event_id": "late-1", "type": "page_view", "user_id": forgotten[0],
         "ts": int(START.timestamp() * 1000) + 3_600_000, "session_id": "s-late"},
        {"event_id": "late-2", "type": "page_view", "user_id": "shopper-late~",
         "ts": int(START.timestamp() * 1000) + 3_600_000},
    ]  # fmt: skip
    assert not _publish(broker.bootstrap, topics, [msgspec.json.encode(e) for e in late],
                        EdgePrivacy())  # fmt: skip
    _wait(
        lambda: (
            client.query("SELECT count() FROM events FINAL WHERE event_id = 'late-2'").result_rows[
                0
            ][0]
            == 1
        )
    )
    remaining = ref.load_events(
        [r for r in accepted if msgspec.json.decode(r)["user_id"] not in forgotten]
        + [msgspec.json.encode(late[1])]
    )

    assert flow.alive

    # no id anywhere: every String column of every table
    assert find_in_tables(client, forgotten) == []
    assert find_in_tables(client, ["shopper-late~"]) != []  # the scan does find ids

    # every metric over the remaining users, from rollups and raw events alike
    for metric in ("events", "visitors", "sessions", "orders", "revenue", "units",
                   "bounce_rate", "conversion_rate", "avg_session_duration_s"):  # fmt: skip
        for interval, by in (("1h", None), ("1d", "country"), ("1h", "device")):
            q = MetricQuery(metric, START, END, interval, by, {})
            want = ref.metric_series(remaining, metric, start=START, end=END,
                                     interval=interval, by=by)  # fmt: skip
            _same(metric_series(client, q), want, f"{metric}/{interval}/{by}")
    _same(funnel(client, START, END), ref.funnel(remaining, start=START, end=END), "funnel")
    assert events.height > remaining.height  # the reference did change

    # the audit: when, by which key, a salted hash (never the id)
    audit = client.query("SELECT key_name, id_hash, events FROM erasures ORDER BY at")
    assert [(k, h) for k, h, _ in audit.result_rows] == [
        ("dpo-key", eraser.id_hash(u)) for u in forgotten
    ]

    # a second request changes nothing (but is audited, with nothing erased)
    # the late event's session and rollups settle first (a loaded machine may still be writing them)
    _wait(rolled_up)
    before = _settled_state(client)
    again = eraser.forget(forgotten[0], "dpo-key")
    assert again.counts == dict.fromkeys(KINDS, 0)
    time.sleep(2.5)  # a rollup refresh or two
    assert _state(client) == before

    # nor on disk: the deleted rows' parts are rewritten by the flow's next pass
    def on_disk() -> int:
        sql = ("SELECT count() FROM {t} WHERE user_id IN {u:Array(String)} "
               "SETTINGS apply_deleted_mask = 0")  # fmt: skip
        return sum(client.query(sql.replace("{t}", t), parameters={"u": forgotten})
                   .result_rows[0][0] for t in ("events", "sessions"))  # fmt: skip

    _wait(lambda: on_disk() == 0)

    # nothing of them in the flow's saved state either
    assert flow.stop(30)
    for path in state_dir.glob("shard-*"):
        blob = path.read_bytes()
        assert not [u for u in forgotten if u.encode() in blob], path

    # a flow resuming after the erasure (its offsets past it) still drops an old event of
    # the user that it reads only now (a lagging partition): it read the erasures at start
    config = dataclasses.replace(config, idle_stop_s=2.0)
    stale = {"event_id": "stale-1", "type": "page_view", "user_id": forgotten[1],
             "ts": int(START.timestamp() * 1000) + 7_200_000}  # fmt: skip
    fresh = {"event_id": "fresh-1", "type": "page_view", "user_id": "shopper-fresh~",
             "ts": int(START.timestamp() * 1000) + 7_200_000}  # fmt: skip
    assert not _publish(
        broker.bootstrap,
        topics,
        [msgspec.json.encode(stale), msgspec.json.encode(fresh)],
        EdgePrivacy(),
    )
    run_flow(config, workers=1, recovery_dir=state_dir.parent)
    ids = {r[0] for r in client.query("SELECT event_id FROM events FINAL").result_rows}
    assert "fresh-1" in ids and "stale-1" not in ids
    assert find_in_tables(client, forgotten) == []


def _same(got: list[dict], want: list[dict], what: str) -> None:
    import math

    assert len(got) == len(want), f"{what}: {len(got)} rows vs {len(want)}"
    for g, w in zip(got, want, strict=True):
        for k in w:
            a, b = g[k], w[k]
            if isinstance(a, float) or isinstance(b, float):
                assert a is not None and b is not None, f"{what}: {g} != {w}"
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=0.01), f"{what}: {g} != {w}"
            else:
                assert a == b, f"{what}: {k} {g} != {w}"


def test_forget_a_pseudonymised_user(broker, running) -> None:
    topics, client, _flow, _, _ = running
    pseudonym = Pseudonymizer(b"p" * 32)
    ts = int(START.timestamp() * 1000)
    raws = [msgspec.json.encode({"event_id": f"x{i}", "type": "page_view", "ts": ts + i * 1000,
                                 "user_id": "raw-id-7" if i % 2 else "raw-id-8"})
            for i in range(10)]  # fmt: skip
    assert not _publish(broker.bootstrap, topics, raws, EdgePrivacy(pseudonym))
    _wait(lambda: _distinct_events(client) == 10)
    announce = partial(announce_erasure, broker.bootstrap, topics.erasures)
    eraser = Eraser(client, SALT, announce=announce, pseudonymize=pseudonym, ack_timeout_s=60)
    answer = eraser.forget("raw-id-7", "dpo")  # the raw id: hashed as the edge did
    assert answer.flow_acknowledged and answer.counts["events"] == 5
    assert find_in_tables(client, [pseudonym("raw-id-7"), "raw-id-7", "raw-id-8"]) == []
    assert _distinct_events(client) == 5
