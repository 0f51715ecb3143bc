"""``pulse simulate --experiment SPEC``: parsing, exposures, exact truth of who was exposed,
lifts in the right direction, lost exposures for an SRM, determinism."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ingest.simulator import SimConfig, ground_truth, iter_events, parse_experiment, write_jsonl
from insights.experiment_backtest import sums_from_lines

START = datetime(2026, 1, 5, tzinfo=UTC)


def test_parse_and_reject() -> None:
    spec = parse_experiment("checkout:variants=control/B/C,split=2/1/1,conversion=0/-0.2/0.1")
    assert spec.variants == ("control", "B", "C") and spec.shares == (0.5, 0.25, 0.25)
    assert spec.aov == (0.0, 0.0, 0.0) and spec.lose == (0.0, 0.0, 0.0)
    for bad, word in [("x:split=1/2/3", "split"), ("x:colour=red", "unknown part"),
                      ("x:conversion=0.1/0", "control"), ("x:lose=0/1", "lose"),
                      ("x:variants=a/a", "distinct"), (":variants=a/b", "names"),
                      ("x:aov=0/-1", "lift")]:  # fmt: skip
        with pytest.raises(ValueError, match=word):
            parse_experiment(bad)


def _config(spec: str, seed: int = 3) -> SimConfig:
    return SimConfig(rate=30, duration=timedelta(hours=3), seed=seed, start=START,
                     experiments=(parse_experiment(spec),))  # fmt: skip


def test_every_user_is_exposed_once_at_their_first_event(tmp_path) -> None:
    path = tmp_path / "x.jsonl"
    write_jsonl(_config("checkout:lose=0/0.3"), path)
    events = [json.loads(line) for line in path.read_text().splitlines()]
    exposures = [e for e in events if e["type"] == "experiment_exposure"]
    first: dict[str, int] = {}
    for e in events:
        first.setdefault(e["user_id"], e["ts"])
    assert len({e["user_id"] for e in exposures}) == len(exposures)  # once per user
    assert all(e["ts"] == first[e["user_id"]] for e in exposures)
    truth = json.loads(path.with_suffix(".truth.json").read_text())["experiments"][0]
    by_variant = {v: sum(e["variant"] == v for e in exposures) for v in ("control", "B")}
    assert truth["exposed_users"] == by_variant
    assert truth["srm_expected"] and truth["lost_users"]["control"] == 0
    lost = truth["lost_users"]["B"] / (truth["lost_users"]["B"] + by_variant["B"])
    assert 0.25 < lost < 0.35  # 30 % of B's users never send their exposure
    assert ground_truth(_config("checkout"))["experiments"][0]["lifts"]["conversion"] == {
        "control": 0.0, "B": 0.0}  # fmt: skip


def test_lifts_move_the_variants_apart_and_runs_repeat() -> None:
    config = _config("checkout:variants=control/B/C,conversion=0/-0.5/0,aov=0/0/0.5")
    lines = [line for _, line in iter_events(config)]
    assert lines == [line for _, line in iter_events(config)]  # deterministic
    end_ms = int(config.end.timestamp() * 1000)
    users, sums, multiple = sums_from_lines(lines, "checkout", int(START.timestamp() * 1000),
                                            end_ms)  # fmt: skip
    assert multiple == 0 and set(users) == {"B", "C", "control"}
    rate = {v: sums[v]["conv"] / users[v] for v in users}
    aov = {v: sums[v]["revenue"] / sums[v]["orders"] for v in users}
    assert rate["B"] < 0.75 * rate["control"]  # true -50 %
    assert aov["C"] > 1.2 * aov["control"]  # true +50 %
    # without an experiment, the market's own events are the same bytes
    plain = SimConfig(rate=30, duration=timedelta(hours=3), seed=3, start=START)
    kept = [line for line in lines if b"experiment_exposure" not in line]
    assert set(kept) <= {line for _, line in iter_events(plain)} | {
        line for line in kept if b'"purchase"' in line}  # fmt: skip
