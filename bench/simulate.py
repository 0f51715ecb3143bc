"""Simulator throughput: events/s of ``write_jsonl`` writing 1M+ events to a temp file.

    .venv/bin/python bench/simulate.py [--rate 1000] [--minutes 20] [--incidents]

Prints one line. The default run simulates a busy weekday midday (about 1.5M events).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest.simulator import SimConfig, parse_incident, write_jsonl

INCIDENTS = (
    "conversion_drop:country=DE,at=+5m,for=10m,depth=0.6",
    "traffic_spike:channel=paid,at=+2m,for=5m,depth=1",
    "late_events:device=tablet,at=+1m,for=10m",
    "duplicates:country=FR,at=+1m,for=10m,depth=0.2",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="mean events/s simulated")
    parser.add_argument("--minutes", type=float, default=20.0, help="simulated minutes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--incidents", action="store_true", help="inject four incidents")
    args = parser.parse_args()
    config = SimConfig(
        rate=args.rate,
        duration=timedelta(minutes=args.minutes),
        seed=args.seed,
        start=datetime(2025, 1, 8, 11, tzinfo=UTC),  # Wednesday noon in Central Europe
        incidents=tuple(parse_incident(s) for s in INCIDENTS) if args.incidents else (),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        began = time.perf_counter()
        events = write_jsonl(config, path)
        elapsed = time.perf_counter() - began
        size = path.stat().st_size
    print(
        f"simulate: {events:,} events in {elapsed:.2f} s = {events / elapsed:,.0f} events/s "
        f"(write_jsonl, rate={args.rate:g}/s, {args.minutes:g} min simulated, "
        f"{'4 incidents, ' if args.incidents else ''}{size / 1e6:.0f} MB, "
        f"{size / events:.0f} B/event)"
    )


if __name__ == "__main__":
    main()
