"""Latency of ``POST /v1/events``: C clients posting 100-event batches at a set rate.

    .venv/bin/python bench/collector.py [--clients 1 8] [--rate 2000] [--seconds 10] [--up]
                                        [--sweep 10000 20000 30000 ...]

Starts the embedded broker on a free port and the API (collector only) under uvicorn in
this process — or, with ``--up``, a whole ``pulse up`` (flow and detector in the same
process, as users run it) — then runs the clients, each its own process with one keep-alive
connection, paced so that together they send ``--rate`` events per second (or each of
``--sweep``'s rates in turn), and prints p50 / p99 / max of the request latency per client
count and rate. A request's latency counts from when it was due, so a saturated server
shows as latency rather than as a lower rate. A quick measurement for comparing two
versions on one machine, not a soak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client(url: str, key: str, clients: int, rate: float, seconds: float) -> None:
    """One client process (``clients`` of them run at once): one keep-alive connection,
    100-event batches encoded with msgspec, paced to its share of ``rate``; prints its
    latencies (ms) as JSON. A process per client, so that no client waits on another's
    GIL: what is measured is the server."""
    import http.client
    from urllib.parse import urlsplit

    import msgspec

    c = int(os.environ.get("PULSE_BENCH_CLIENT", "0"))
    batch = 100
    every = clients * batch / rate  # seconds between this client's requests
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    encode = msgspec.json.Encoder().encode
    latencies: list[float] = []
    errors = 0
    # every client starts at the same moment, once all have started up
    begin = float(os.environ.get("PULSE_BENCH_START", time.time()))
    start = time.monotonic() + max(0.0, begin - time.time()) + c * every / clients
    n = 0
    while (due := start + n * every) < start + seconds:
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        now_ms = int(time.time() * 1000)
        events = [
            {"event_id": f"c{c}-{n}-{i}", "type": "page_view", "ts": now_ms,
             "user_id": f"u{(c * batch + i) % 5000}"}
            for i in range(batch)
        ]  # fmt: skip
        body = encode(events)
        began = time.perf_counter()
        # the latency counts from when the request was due: a client that falls behind
        # schedule (the server is saturated) shows it, rather than silently sending less
        lateness = max(0.0, time.monotonic() - due) * 1000
        conn.request("POST", parts.path, body, headers)
        response = conn.getresponse()
        response.read()
        took = (time.perf_counter() - began) * 1000 + lateness
        if response.status == 200:
            latencies.append(took)
        else:
            errors += 1
        n += 1
    print(json.dumps({"latencies": latencies, "errors": errors}))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s, all clients")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--sweep", type=float, nargs="+", metavar="RATE",
        help="measure at each of these rates (events/s, all clients) instead of --rate",
    )  # fmt: skip
    parser.add_argument(
        "--up", action="store_true",
        help="measure a whole `pulse up` (flow and detector in the same process) instead of "
        "the API alone",
    )  # fmt: skip
    parser.add_argument("--client", nargs=2, help=argparse.SUPPRESS)  # URL KEY: client mode
    args = parser.parse_args()
    if args.client:
        _client(*args.client, args.clients[0], args.rate, args.seconds)
        return
    if args.up:
        with tempfile.TemporaryDirectory() as tmp, _pulse_up(Path(tmp)) as (url, key):
            _measure(args, url, key)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from api.app import create_app
    from api.deps import Services
    from api.keys import KeyStore
    from ingest.broker import EmbeddedBroker
    from ingest.collector import Collector
    from ingest.fx import load_fx_rates
    from ingest.producer import ConfluentProducer
    from ingest.topics import Topics, ensure_topics
    from tests.servers import serve_in_thread

    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(f"127.0.0.1:{_free_port()}") as b:
        topics = Topics()
        ensure_topics(b.bootstrap, topics)
        producer = ConfluentProducer(b.bootstrap)
        keys = KeyStore(Path(tmp) / "keys.json")
        key = keys.create("ingest")
        services = Services(keys=keys, collector=Collector(producer, topics,
                                                           load_fx_rates().currencies))  # fmt: skip
        port = _free_port()
        server, thread = serve_in_thread(create_app(services), port)
        try:
            _measure(args, f"http://127.0.0.1:{port}", key)
        finally:
            server.should_exit = True
            thread.join(10)
            producer.close()


def _measure(args: argparse.Namespace, base: str, key: str) -> None:
    rates = args.sweep or [args.rate]
    for clients in args.clients:
        for rate in rates:
            began = time.process_time()
            lat, errors = _run_clients(base, key, clients, rate, args.seconds)
            # the server's CPU per request (every thread of this process; without --up the
            # API runs here): unlike latency, hardly changed by other work on the machine
            cpu = "" if args.up else (
                f" server_cpu={(time.process_time() - began) * 1000 / max(1, len(lat)):.2f} ms/req"
            )  # fmt: skip
            print(
                f"clients={clients} rate={rate:.0f} ev/s requests={len(lat)} "
                f"errors={errors} p50={_pct(lat, 0.5):.1f} ms "
                f"p99={_pct(lat, 0.99):.1f} ms max={max(lat, default=0):.1f} ms{cpu}",
                flush=True,
            )


def _run_clients(
    base: str, key: str, clients: int, rate: float, seconds: float
) -> tuple[list[float], int]:
    """Run ``clients`` client processes at once; their latencies and errors together."""
    begin = str(time.time() + 3.0)  # time for every client process to start up
    command = [sys.executable, __file__, "--client", f"{base}/v1/events", key, "--clients",
               str(clients), "--rate", str(rate), "--seconds", str(seconds)]  # fmt: skip
    procs = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PULSE_BENCH_CLIENT": str(c), "PULSE_BENCH_START": begin},
        )
        for c in range(clients)
    ]
    latencies: list[float] = []
    errors = 0
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"a client failed (exit {proc.returncode})")
        result = json.loads(out)
        latencies += result["latencies"]
        errors += result["errors"]
    return latencies, errors


@contextlib.contextmanager
def _pulse_up(home: Path) -> Iterator[tuple[str, str]]:
    """`pulse up` on a fresh home and free ports; yields its URL and an ingest key."""
    import httpx

    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PULSE_")},
           "PULSE_HOME": str(home), "PULSE_API_PORT": str(port),
           "PULSE_BROKER_LISTEN": f"127.0.0.1:{_free_port()}"}  # fmt: skip
    cli = [sys.executable, "-m", "api.cli"]
    up = subprocess.Popen([*cli, "up"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or up.poll() is not None:
                raise RuntimeError("pulse up did not become ready")
            time.sleep(0.5)
        made = subprocess.run([*cli, "keys", "create", "--scope", "ingest"], env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        yield base, made.stdout.strip().splitlines()[-1]
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(120)


if __name__ == "__main__":
    main()
