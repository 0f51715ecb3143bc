"""The cost of one retention pass of a shard (``Shard.forget``) per user held.

    .venv/bin/python bench/retention_pass.py [--users 100000]

Folds one event for each of ``--users`` users into a shard, snapshots it (so the users are
held encoded, as between snapshots) and times a pass that forgets nobody (it still reads
the header of every user held): the best of 7. The flow runs such a pass every 10 minutes,
or every eighth of a shorter retention.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from flows.logic import FlowRules, enrich
from flows.shard import Shard
from flows.state_store import ShardStore
from ingest.events import Event
from ingest.fx import load_fx_rates

T0 = 1_795_176_000_000  # ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    n = parser.parse_args().users
    fx = load_fx_rates()
    events = [
        enrich(Event(event_id=f"{i:08x}-0000-4000-8000-000000000000", type="page_view",
                     ts=T0, user_id=f"user-{i:06d}", session_id=f"sess-{i:06d}"), fx)
        for i in range(n)
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        shard = Shard(FlowRules(), ShardStore(Path(tmp) / "shard", None))
        for at in range(0, n, 5000):
            shard.fold(events[at : at + 5000])
        shard.snapshot()
        times = []
        for _ in range(7):
            began = time.perf_counter()
            assert shard.forget(T0 - 1) == 0
            times.append(time.perf_counter() - began)
    best = min(times)
    print(f"{n:,} users held: a pass takes {best * 1e3:.1f} ms, {best / n * 1e6:.2f} µs a user")


if __name__ == "__main__":
    main()
