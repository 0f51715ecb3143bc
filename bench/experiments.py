"""Latency of ``GET /v1/experiments/{key}`` for an experiment with 1M exposed users over 30 days.

    .venv/bin/python bench/experiments.py [--events 20000000] [--users 1000000] [--runs 20]
                                          [--dir PATH] [--live]

Fills a fresh chDB warehouse inside ClickHouse: the events of ``bench/query.py``
(``events_fill_sql``: 30 days, ~3M users, the simulator's type mix, purchases with
revenue), then one ``INSERT INTO exposures SELECT ... FROM numbers(users)``: the users
``u0`` .. ``u{users-1}`` exposed at a random time of the 30 days to ``control`` or ``B``,
10 % of them exposed a second time to the same variant and 0.3 % to the other one too. The
experiment's users are thus real users of the events table, with their purchases, carts
and pre-period.

Then serves the real API (uvicorn, in a thread, with a read key) and times ``GET
/v1/experiments/bench?from&to`` over the whole 30 days (plain; ``cuped=true``;
``sequential=true``), 3 warm-up calls then ``--runs`` timed ones, p50/p95 of the HTTP
round trip, plus the SQL alone (wall time, and the process's CPU time: chDB runs the query
on this process's threads, so it is the work done whatever the machine's load). Target:
p95 <= 200 ms. ``--dir`` keeps the warehouse. The range covers every user's history, so
the kept per-variant sums answer it (warehouse/experiment_totals.py, taken by a refresh
as the flow does); the array query over the same range, which answers ranges that cut a
user's history, is timed alone too.

``--live``: a writer thread adds, every 0.5 s, 10 new users' exposures and purchases
(after the data's end, as a running experiment's traffic) during the timed requests, and
the kept sums are taken again as the flow does for a live experiment (before each block
of requests, when over ``LIVE_EVERY`` old; its time and CPU are printed, outside the timed
windows). The requests without a range are then answered from sums taken before the
newest writes (path ``live``, ``to`` their data's end). The writer's own inserts run
during the timed windows: their CPU is in the numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.query import DAYS, START, events_fill_sql  # noqa: E402

KEY = "bench"


def exposures_fill_sql(users: int) -> str:
    """``INSERT INTO exposures SELECT ... FROM numbers(users)`` (see the module docstring)."""
    span_ms = DAYS * 86_400_000
    t0 = int(START.timestamp() * 1000)
    first = f"{t0} + cityHash64(number, 21) % {span_ms - 86_400_000}"
    variant = "if(cityHash64(number, 22) % 2 = 0, 'control', 'B')"
    other = "if(cityHash64(number, 22) % 2 = 0, 'B', 'control')"
    return f"""
INSERT INTO exposures (experiment, user_id, ts, event_id, variant, version)
SELECT '{KEY}', concat('u', toString(number)),
    fromUnixTimestamp64Milli(toInt64(({first}) + k * 3600000), 'UTC'),
    concat('x', toString(number), '-', toString(k)),
    if(k = 2, {other}, {variant}), 1
FROM numbers({users})
ARRAY JOIN arrayFilter(k -> k = 0
    OR (k = 1 AND cityHash64(number, 23) % 100 < 10)
    OR (k = 2 AND cityHash64(number, 24) % 1000 < 3), [0, 1, 2]) AS k
"""


def prepared(where: Path, events: int, users: int):  # type: ignore[no-untyped-def]
    """The warehouse at ``where``, filled the first time."""
    from warehouse.client import connect
    from warehouse.migrate import migrate

    client = connect(f"chdb://{where}/wh")
    migrate(client)
    if client.query("SELECT count() FROM events").result_rows[0][0] == 0:
        t = time.perf_counter()
        client.command(events_fill_sql(events))
        print(f"fill: {events:,} events in {time.perf_counter() - t:.1f} s")
    if client.query("SELECT count() FROM exposures").result_rows[0][0] == 0:
        t = time.perf_counter()
        client.command(exposures_fill_sql(users))
        print(f"fill: exposures of {users:,} users in {time.perf_counter() - t:.1f} s "
              "(with the experiment_users rows their views write)")  # fmt: skip
        t = time.perf_counter()
        # what background merges do in time: the bench times the merged steady state
        client.command("OPTIMIZE TABLE exposures FINAL")
        client.command("OPTIMIZE TABLE experiment_users FINAL")
        print(f"merge: exposures and experiment_users in {time.perf_counter() - t:.1f} s")
    # what the flow's refresh does within seconds of a write: the kept per-variant sums
    from warehouse.experiment_totals import refresh

    t, c0 = time.perf_counter(), time.process_time()
    taken = refresh(client).experiments
    print(f"refresh: kept sums of {taken} in {time.perf_counter() - t:.1f} s "
          f"({time.process_time() - c0:.1f} s CPU)")  # fmt: skip
    return client


class _Writer(threading.Thread):
    """``--live``: new users' exposures and purchases every 0.5 s, after the data's end."""

    def __init__(self, client, after: datetime) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.client, self.after, self.stop, self.users = client, after, threading.Event(), 0

    def run(self) -> None:
        from tests.integration.test_experiment_users import EVENT_COLUMNS, EXPOSURE_COLUMNS

        while not self.stop.wait(0.5):
            exposures, events = [], []
            for _ in range(10):
                i, self.users = self.users, self.users + 1
                at = self.after + timedelta(seconds=i)
                exposures.append([KEY, f"live{i}", at, f"xl{i}", ("control", "B")[i % 2], 1])
                events.append([at + timedelta(milliseconds=500), f"pl{i}", "purchase",
                               f"live{i}", f"ol{i}", 20.0, 1, 1])  # fmt: skip
            self.client.insert("events", events, column_names=EVENT_COLUMNS)
            self.client.insert("exposures", exposures, column_names=EXPOSURE_COLUMNS)


def _retake(client) -> None:  # type: ignore[no-untyped-def]
    """What the flow's refresh does for a live experiment (at most every LIVE_EVERY)."""
    from warehouse.experiment_totals import refresh

    t, c0 = time.perf_counter(), time.process_time()
    taken = refresh(client, settle=timedelta(seconds=1)).experiments
    if taken:
        print(f"live refresh: kept sums of {taken} in {time.perf_counter() - t:.1f} s "
              f"({time.process_time() - c0:.2f} s CPU)")  # fmt: skip


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--dir", type=Path, help="keep (and reuse) the warehouse here")
    parser.add_argument(
        "--live", action="store_true", help="a writer adds exposures and purchases meanwhile"
    )
    args = parser.parse_args()
    where = args.dir or Path(tempfile.mkdtemp(prefix="pulse-bench-exp-"))
    client = prepared(where, args.events, args.users)

    from api.app import create_app
    from api.deps import Services
    from api.keys import KeyStore
    from insights.experiment_results import report_for
    from tests.conftest import free_port
    from tests.servers import serve_in_thread
    from warehouse.experiments import _rows as array_query
    from warehouse.experiments import experiment_sums, whole_experiment_sums

    store = KeyStore(where / "keys.json")
    headers = {"Authorization": f"Bearer {store.create('read')}"}
    port = free_port()
    server, thread = serve_in_thread(create_app(Services(keys=store, warehouse=client)), port)
    end = START + timedelta(days=DAYS)
    base = {"from": START.isoformat(), "to": end.isoformat()}
    rows = []
    exposed = client.query("SELECT uniqExact(user_id) FROM exposures").result_rows[0][0]
    writer = None
    if args.live:
        last = client.query("SELECT max(ts) FROM events").result_rows[0][0]
        writer = _Writer(client, last.replace(tzinfo=UTC) + timedelta(hours=1))
        writer.start()
        time.sleep(1)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as c:
            for label, extra in (("plain", {}), ("cuped=true", {"cuped": "true"}),
                                 ("sequential=true", {"sequential": "true"}),
                                 ("no from/to", {"from": None, "to": None}),
                                 ("no from/to, cuped=true", {"from": None, "to": None,
                                                             "cuped": "true"})):  # fmt: skip
                params = {k: v for k, v in {**base, **extra}.items() if v is not None}
                if writer is not None:
                    _retake(client)
                times = []
                for n in range(3 + args.runs):
                    t = time.perf_counter()
                    r = c.get(f"/v1/experiments/{KEY}", params=params)
                    took = time.perf_counter() - t
                    r.raise_for_status()
                    if n >= 3:
                        times.append(took * 1000)
                doc = r.json()
                sql, cpu = [], []
                for _ in range(5):
                    t, c0 = time.perf_counter(), time.process_time()
                    if "from" in params:
                        path = experiment_sums(client, KEY, START, end, cuped="cuped" in extra).path
                    else:  # what the API does without a range: its defaults, the sums, the
                        # statistics (timed), then which path answered (not timed)
                        report_for(client, KEY, cuped="cuped" in extra)
                        took, c1 = time.perf_counter(), time.process_time()
                        whole = whole_experiment_sums(client, KEY, datetime.now(UTC))
                        path = whole.path if whole is not None else "rows"
                        t, c0 = t + time.perf_counter() - took, c0 + time.process_time() - c1
                    sql.append((time.perf_counter() - t) * 1000)
                    cpu.append((time.process_time() - c0) * 1000)
                rows.append((f"{label} ({path})", _p(times, 0.5), _p(times, 0.95),
                             statistics.median(sql), statistics.median(cpu)))  # fmt: skip
            sql, cpu = [], []
            for _ in range(5):
                t, c0 = time.perf_counter(), time.process_time()
                array_query(client, KEY, START, end, True)
                sql.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
            arrays = (statistics.median(sql), statistics.median(cpu))
    finally:
        server.should_exit = True
        thread.join(10)
        if writer is not None:
            writer.stop.set()
            writer.join(10)
            print(f"live: {writer.users:,} users written meanwhile; the last answer's range "
                  f"{doc['from']} .. {doc['to']}")  # fmt: skip
    users = {v["variant"]: v["users"] for v in doc["variants"]}
    print(f"\nGET /v1/experiments/{KEY} over 30 days: {exposed:,} exposed users "
          f"({users}, {doc['multiple_exposures']:,} with two variants), "
          f"{args.events:,} events; {args.runs} timed runs each\n")  # fmt: skip
    print("| query | p50 ms | p95 ms | SQL alone (median) ms | SQL CPU (median) ms | target p95 |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, p50, p95, sql_ms, cpu_ms in rows:
        ok = "ok" if p95 <= 200 else "MISS"
        print(f"| {label} | {p50:.0f} | {p95:.0f} | {sql_ms:.0f} | {cpu_ms:.0f} | 200 {ok} |")
    print(f"| the array query alone (cuped) | | | {arrays[0]:.0f} | {arrays[1]:.0f} | |")
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print(f"\n{platform.machine()} / Python {platform.python_version()}; warehouse {where}")


if __name__ == "__main__":
    main()
