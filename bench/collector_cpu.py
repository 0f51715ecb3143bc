"""CPU per ``POST /v1/events`` request, the whole app in this process, no sockets.

    .venv/bin/python bench/collector_cpu.py [--requests 2000] [--runs 3]

Starts the embedded broker on a free port and builds the real app around a collector (as
``bench/collector.py`` does), then sends ``--requests`` 100-event JSON arrays from eight
concurrent tasks through ``httpx.ASGITransport`` and divides the process's CPU time
(every thread: the event loop, librdkafka's and the poll thread) by the requests. The
same for ``GET /healthz`` gives what the client and the framework cost on their own.
Load changes CPU times less than wall times, so two versions can be compared on a busy
machine; take the lowest of a few ``--runs`` and alternate the versions.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import msgspec  # noqa: E402

from api.app import create_app  # noqa: E402
from api.deps import Services  # noqa: E402
from api.keys import KeyStore  # noqa: E402
from ingest.broker import EmbeddedBroker  # noqa: E402
from ingest.collector import Collector  # noqa: E402
from ingest.fx import load_fx_rates  # noqa: E402
from ingest.producer import ConfluentProducer  # noqa: E402
from ingest.topics import Topics, ensure_topics  # noqa: E402

TASKS = 8
TYPES = ("page_view", "product_view", "add_to_cart", "search")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _body(rng: random.Random, n: int) -> bytes:
    now = int(time.time() * 1000)
    events = []
    for j in range(100):
        kind = rng.choice(TYPES)
        event = {"event_id": f"e{n}-{j}-{rng.random()}", "type": kind, "ts": now,
                 "user_id": f"u{rng.randrange(20_000)}", "session_id": f"s{rng.randrange(50_000)}",
                 "country": "DE", "device": "mobile", "channel": "direct"}  # fmt: skip
        if kind in ("product_view", "add_to_cart"):
            event.update(product_id="p1", category="shoes", price=19.99, currency="EUR")
        elif kind == "search":
            event.update(query="red shoes", results_count=3)
        events.append(event)
    return msgspec.json.encode(events)


async def _measure(app: object, key: str, requests: int) -> tuple[float, float]:
    rng = random.Random(7)
    bodies = [_body(rng, n) for n in range(200)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def post(task: int, n: int) -> None:
            for i in range(n):
                r = await client.post("/v1/events", content=bodies[(task * n + i) % 200],
                                      headers=headers)  # fmt: skip
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code}: {r.text}")

        async def health(n: int) -> None:
            for _ in range(n):
                await client.get("/healthz")

        await asyncio.gather(*(post(t, 50) for t in range(TASKS)))  # warm up
        per_task = requests // TASKS
        before = time.process_time()
        await asyncio.gather(*(post(t, per_task) for t in range(TASKS)))
        posted = time.process_time() - before
        before = time.process_time()
        await asyncio.gather(*(health(per_task) for _ in range(TASKS)))
        checked = time.process_time() - before
    done = per_task * TASKS
    return posted / done * 1000, checked / done * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(f"127.0.0.1:{_free_port()}") as b:
        topics = Topics()
        ensure_topics(b.bootstrap, topics)
        producer = ConfluentProducer(b.bootstrap)
        keys = KeyStore(Path(tmp) / "keys.json")
        key = keys.create("ingest")
        collector = Collector(producer, topics, load_fx_rates().currencies)
        app = create_app(Services(keys=keys, collector=collector))
        try:
            for run in range(1, args.runs + 1):
                post, health = asyncio.run(_measure(app, key, args.requests))
                print(f"run {run}: POST /v1/events {post:.2f} ms CPU per 100-event request; "
                      f"GET /healthz {health:.2f} ms", flush=True)  # fmt: skip
        finally:
            producer.close()


if __name__ == "__main__":
    main()
