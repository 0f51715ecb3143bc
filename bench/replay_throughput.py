"""Throughput of `pulse replay` into the broker: JSONL file -> validate -> route -> Kafka.

    .venv/bin/python bench/replay_throughput.py [--events 1000000]

Starts the embedded broker on a free port, writes a file of mixed events (every type,
1% invalid), then times the same code path `pulse replay FILE --speed max` runs, up to
the broker's acknowledgement of the last record. Prints one result line.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_events(path: Path, n: int) -> None:
    t0 = 1_795_176_000_000
    kinds = [
        {
            "type": "page_view",
            "page": "/home",
            "country": "DE",
            "device": "mobile",
            "channel": "organic",
        },
        {
            "type": "product_view",
            "product_id": "p123",
            "category": "shoes",
            "price": 59.9,
            "currency": "EUR",
        },
        {"type": "search", "query": "red shoes", "results_count": 42},
        {
            "type": "add_to_cart",
            "product_id": "p123",
            "price": 249.0,
            "currency": "PLN",
            "quantity": 1,
        },
        {"type": "begin_checkout", "cart_value": 249.0, "currency": "PLN"},
        {
            "type": "purchase",
            "order_id": "o{i}",
            "revenue": 249.0,
            "currency": "PLN",
            "items": [{"product_id": "p123", "category": "shoes", "price": 249.0, "quantity": 1}],
        },
    ]
    with path.open("w") as fh:
        for i in range(n):
            if i % 100 == 99:
                fh.write(f'{{"event_id": "bad{i}", "type": "page_view"}}\n')
                continue
            kind = dict(kinds[i % 6 if i % 3 else 0])
            if "order_id" in kind:
                kind["order_id"] = f"o{i}"
            event = {
                "event_id": f"e{i}",
                "ts": t0 + i,
                "user_id": f"u{i % 50_000}",
                "session_id": f"s{i % 9000}",
                **kind,
            }
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()

    from ingest.broker import EmbeddedBroker
    from ingest.collector import Collector
    from ingest.fx import load_fx_rates
    from ingest.producer import ConfluentProducer
    from ingest.replay import replay_file
    from ingest.topics import Topics, ensure_topics

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        write_events(path, args.events)
        size_mb = path.stat().st_size / 1e6
        with EmbeddedBroker(f"127.0.0.1:{_free_port()}") as broker:
            topics = Topics()
            ensure_topics(broker.bootstrap, topics)
            producer = ConfluentProducer(broker.bootstrap)
            collector = Collector(producer, topics, load_fx_rates().currencies)
            start = time.perf_counter()
            result = replay_file(collector, producer.batch(), path)
            elapsed = time.perf_counter() - start
            producer.close()
    total = result.accepted + len(result.rejected)
    print(
        f"replay: {total:,} events ({size_mb:.0f} MB) in {elapsed:.2f} s"
        f" = {total / elapsed:,.0f} events/s"
        f"(accepted={result.accepted} rejected={len(result.rejected)}) "
        f"python {sys.version.split()[0]}, {subprocess.getoutput('nproc')} cores"
    )


if __name__ == "__main__":
    main()
