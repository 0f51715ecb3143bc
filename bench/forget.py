"""The time to forget one user (CONTRACT §11) in a warehouse of N events.

    .venv/bin/python bench/forget.py [--events 50000000] [--users 5] [--dir PATH]

Fills a fresh chDB warehouse like ``bench/query.py`` (30 days, ~3M users, sessions of ~8
events; ``--dir`` keeps and reuses it), adds one ``duplicates`` row per 1,000 events,
builds the rollups, then forgets ``--users`` users one after the other with
``api.erasure.Eraser.forget`` (no flow runs: nothing to wait for), and prints for each
the rows erased and the time of its steps: counting, deleting (``warehouse.erasure``:
three lightweight DELETEs and the rollup marks), recomputing the rollups of its minutes,
hours and days, the audit. The users are the busiest ones (the worst case of a shop's
recurring customers), then ordinary ones. ``--purge-days N`` then times a retention pass
(``warehouse.retention.purge``) keeping the last N days, and the pass after it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from query import DAYS, START, prepared_warehouse, table_stats  # bench/query.py: the same warehouse

DUPLICATES_FILL_SQL = """
INSERT INTO duplicates (ts, event_id, topic, partition, offset)
SELECT ts, event_id, topic, partition, offset + 1000000000 FROM events WHERE offset % 1000 = 7
"""


class _Timed:
    """Wraps a client: wall time per statement kind, to split a forget into its steps."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.spent: dict[str, float] = {}

    def _time(self, kind: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            self.spent[kind] = self.spent.get(kind, 0.0) + time.perf_counter() - t

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        return self._time("select", self._client.query, sql, *args, **kwargs)

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        kind = "delete" if sql.lstrip().startswith("DELETE") else "rollups"
        return self._time(kind, self._client.command, sql, *args, **kwargs)

    def insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        kind = "audit" if table == "erasures" else "marks"
        return self._time(kind, self._client.insert, table, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="keep (and reuse) the warehouse here")
    parser.add_argument(
        "--purge-days",
        type=int,
        default=0,
        help="then time a retention pass keeping this many days (0: none)",
    )
    args = parser.parse_args()

    from api.erasure import Eraser

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        client = prepared_warehouse(args.dir or Path(tmp), args.events, DUPLICATES_FILL_SQL)
        print(table_stats(client))
        busiest = client.query(
            "SELECT user_id FROM events GROUP BY user_id ORDER BY count() DESC, user_id "
            "LIMIT {n:UInt32}",
            parameters={"n": max(1, args.users // 2)},
        ).result_rows
        ordinary = client.query(
            "SELECT user_id FROM events WHERE cityHash64(user_id) % 1000 = 1 GROUP BY user_id "
            "ORDER BY user_id LIMIT {n:UInt32}",
            parameters={"n": args.users - len(busiest)},
        ).result_rows
        print(f"load: {subprocess.getoutput('uptime').strip()}")
        print("\n| user | events | sessions | duplicates | total s | count | delete | marks "
              "| rollups | audit |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
        for kind, (user,) in [("busiest", u) for u in busiest] + [
            ("ordinary", u) for u in ordinary
        ]:
            timed = _Timed(client)
            eraser = Eraser(timed, b"bench-salt-bytes!", ack_timeout_s=0)  # type: ignore[arg-type]
            t = time.perf_counter()
            erased = eraser.forget(user, "bench")
            total = time.perf_counter() - t
            s = timed.spent
            c = erased.counts
            print(f"| {kind} | {c['events']:,} | {c['sessions']:,} | {c['duplicates']:,} "
                  f"| {total:.2f} | {s.get('select', 0):.2f} | {s.get('delete', 0):.2f} "
                  f"| {s.get('marks', 0):.2f} | {s.get('rollups', 0):.2f} "
                  f"| {s.get('audit', 0):.2f} |")  # fmt: skip
        print(f"load: {subprocess.getoutput('uptime').strip()}")
        if args.purge_days:
            _purge(client, args.purge_days)


def _purge(client: Any, days: int) -> None:
    """Time a retention pass keeping ``days`` of the 30, then the next one (nothing to do)."""
    from datetime import timedelta

    from warehouse.retention import purge

    now = START + timedelta(days=DAYS)
    for what in ("first pass", "next pass"):
        t = time.perf_counter()
        purged = purge(client, timedelta(days=days), now)
        print(f"retention {days}d, {what}: {purged.rows} in {time.perf_counter() - t:.1f} s")
    print(table_stats(client))


if __name__ == "__main__":
    main()
