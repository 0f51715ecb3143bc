"""chDB's memory while an hour of minute rollups is rolled up into the hour.

    .venv/bin/python bench/rollup_memory.py [--sessions 11000000]

Fills ``rollup_1m`` of a fresh chDB with one hour of minute rows at every grouping level,
with exact sets shaped like simulator traffic (``--sessions`` distinct sessions in the
hour, half as many visitors, one session in 8 carting and one in 20 buying: 11M sessions
is an hour at 20,000 events/s), then recomputes the hour as the rollup refresh does at the
hour's end, sampling chDB's tracked memory (``system.metrics`` MemoryTracking) from a
second connection every 20 ms. Prints the refresh's time and the peak.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

T0 = 1_795_176_000  # an hour's start (s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=11_000_000)
    args = parser.parse_args()

    from warehouse import rollups
    from warehouse.client import connect
    from warehouse.migrate import migrate

    n = args.sessions
    with tempfile.TemporaryDirectory() as tmp:
        client = connect(f"chdb://{tmp}/wh")
        migrate(client)
        client.command(f"""
            INSERT INTO rollup_1m
            SELECT level, toDateTime({T0} + m * 60, 'UTC'), if(level IN (0, 2), 'DE', ''),
                   if(level IN (0, 3), 'mobile', ''), if(level IN (0, 4), 'paid', ''),
                   count(), 0, 0, 0, 0,
                   uniqExactState(toUInt64(number % {n // 2})),
                   uniqExactState(toUInt64(number)),
                   uniqExactStateIf(toUInt64(number * 7), number % 20 = 0),
                   uniqExactStateIf(toUInt64(number * 3), number % 8 = 0),
                   0, 0, 0, 0, 1
            FROM (SELECT number, intDiv(number, {max(n // 60, 1)}) AS m FROM numbers({n}))
            ARRAY JOIN [0, 1, 2, 3, 4] AS level
            GROUP BY level, m
        """)  # fmt: skip
        watcher = connect(f"chdb://{tmp}/wh")
        peak, stop = [0.0], threading.Event()

        def watch() -> None:
            while not stop.is_set():
                rows = watcher.query(
                    "SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'"
                ).result_rows
                peak[0] = max(peak[0], rows[0][0] / 2**20)
                time.sleep(0.02)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        time.sleep(0.2)
        base = peak[0]
        began = time.perf_counter()
        rollups._recompute(client, rollups.EVENTS, "1h", [T0 * 1000])
        took = time.perf_counter() - began
        time.sleep(0.1)
        stop.set()
        thread.join()
    print(f"hour of {n:,} sessions rolled up in {took:.1f} s; chDB MemoryTracking "
          f"{base:,.0f} MB before, peak {peak[0]:,.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
