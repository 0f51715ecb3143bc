"""Throughput of the Segment-compatible API into the broker (CONTRACT §9), messages/s.

    .venv/bin/python bench/segment.py [--messages 300000] [--clients 4] [--http-seconds 15]

Simulated Segment traffic (``pulse simulate --format segment``: page/track/identify with
context, logins, crawlers) cut into 100-message ``/segment/v1/batch`` bodies, then:

- **in process**: each body through the route's own steps — ``split_batch``, per-message
  decode, ``translate_all`` (mapping, user agent, channel), ``Collector.submit`` (validation,
  country from the address, bots, routing, produce with acks=all + idempotence) — until the
  broker acknowledged the last record, with the CPU per message of this process (and of
  librdkafka's threads in it) and of the broker;
- **over HTTP** (``--clients`` > 0): the API under uvicorn in this process and C client
  processes posting the bodies with HTTP Basic auth on keep-alive connections, as fast as
  the server answers, for ``--http-seconds``.

Prints one line per measurement. A measurement for comparing versions on one machine.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bodies(n: int) -> list[bytes]:
    """At least ``n`` simulated messages as 100-message batch bodies."""
    from ingest.simulator import SimConfig
    from ingest.simulator.segment import batch_body, iter_segment

    # about n messages: the simulator's rate is a mean over the day's seasonality
    start = datetime(2026, 11, 2, 9, tzinfo=UTC)
    config = SimConfig(rate=max(1.0, n / 3600), duration=timedelta(hours=1.2), seed=5, start=start)
    bodies, batch, total = [], [], 0
    for sent in iter_segment(config):
        batch.append(sent.message)
        if len(batch) == BATCH:
            bodies.append(batch_body(batch))
            total += BATCH
            batch = []
            if total >= n:
                break
    return bodies


def _cpu_seconds(pid: int | str = "self", threads: str | None = None) -> float:
    """CPU time (user + system) of a process, or of its threads whose name starts with
    ``threads`` (Linux ``/proc``; 0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    paths = [f"/proc/{pid}/stat"]
    if threads is not None:
        paths = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                if (task / "comm").read_text().startswith(threads):
                    paths.append(str(task / "stat"))
    total = 0.0
    for path in paths:
        with contextlib.suppress(OSError):
            fields = Path(path).read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _in_process(
    bootstrap: str, bodies: list[bytes], broker_pid: int | None = None
) -> tuple[int, float, float, str]:
    """The route's path without HTTP; (messages accepted, seconds, CPU seconds of this
    process: on a shared machine the wall time says more about the others, and where the
    CPU went: librdkafka's threads, the broker)."""
    from ingest.collector import Collector
    from ingest.fx import load_fx_rates
    from ingest.producer import ConfluentProducer
    from ingest.segment import decode_message, split_batch, translate_all
    from ingest.topics import Topics, ensure_topics

    topics = Topics(prefix="bench.")
    ensure_topics(bootstrap, topics)
    producer = ConfluentProducer(bootstrap)
    collector = Collector(producer, topics, load_fx_rates().currencies)
    accepted = 0
    rdk, broker = _cpu_seconds(threads="rdk:"), _cpu_seconds(broker_pid) if broker_pid else 0.0
    began, cpu = time.perf_counter(), time.process_time()
    batch = producer.batch()
    for body in bodies:
        parsed = split_batch(body)
        done = translate_all(
            ((raw, decode_message(raw)) for raw in parsed.messages),
            received_ms=time.time_ns() // 1_000_000,
            sent_at=parsed.sent_at,
            context=parsed.context,
        )
        result = collector.submit(done.events, batch, source="segment", originals=done.originals)
        accepted += result.accepted
    batch.wait(120)
    took, cpu = time.perf_counter() - began, time.process_time() - cpu
    rdk = _cpu_seconds(threads="rdk:") - rdk
    broker = _cpu_seconds(broker_pid) - broker if broker_pid else 0.0
    producer.close()
    per = max(accepted, 1) / 1e6
    where = f"of which librdkafka's threads {rdk / per:.1f} µs; the broker {broker / per:.1f} µs"
    return accepted, took, cpu, where


def _client(url: str, key: str, bodies_file: str, seconds: float) -> None:
    """One client process: posts the bodies in turn on one keep-alive connection for
    ``seconds``; prints how many messages the server took and how many requests failed."""
    import http.client
    from urllib.parse import urlsplit

    c = int(os.environ.get("PULSE_BENCH_CLIENT", "0"))
    bodies = Path(bodies_file).read_bytes().split(b"\n")
    bodies = [b for b in bodies if b]
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    auth = base64.b64encode(f"{key}:".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
    begin = float(os.environ.get("PULSE_BENCH_START", time.time()))
    time.sleep(max(0.0, begin - time.time()))
    end = time.monotonic() + seconds
    sent = errors = 0
    n = c * 7919  # clients start at different bodies
    while time.monotonic() < end:
        conn.request("POST", parts.path, bodies[n % len(bodies)], headers)
        response = conn.getresponse()
        response.read()
        if response.status == 200:
            sent += BATCH
        else:
            errors += 1
        n += 1
    print(json.dumps({"messages": sent, "errors": errors}))


def _over_http(bootstrap: str, bodies: list[bytes], clients: int, seconds: float) -> None:
    from api.app import create_app
    from api.deps import Services
    from api.keys import KeyStore
    from ingest.collector import Collector
    from ingest.fx import load_fx_rates
    from ingest.producer import ConfluentProducer
    from ingest.topics import Topics, ensure_topics
    from tests.servers import serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        topics = Topics(prefix="bench-http.")
        ensure_topics(bootstrap, topics)
        producer = ConfluentProducer(bootstrap)
        keys = KeyStore(Path(tmp) / "keys.json")
        key = keys.create("ingest")
        services = Services(keys=keys, collector=Collector(producer, topics,
                                                           load_fx_rates().currencies))  # fmt: skip
        port = _free_port()
        server, thread = serve_in_thread(create_app(services), port)
        bodies_file = Path(tmp) / "bodies.jsonl"
        bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
        url = f"http://127.0.0.1:{port}/segment/v1/batch"
        try:
            begin = str(time.time() + 3.0)  # time for every client process to start up
            command = [sys.executable, __file__, "--client", url, key, str(bodies_file),
                       "--http-seconds", str(seconds)]  # fmt: skip
            procs = [
                subprocess.Popen(
                    command,
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PULSE_BENCH_CLIENT": str(c), "PULSE_BENCH_START": begin},
                )
                for c in range(clients)
            ]
            messages = errors = 0
            for proc in procs:
                out, _ = proc.communicate()
                if proc.returncode:
                    raise RuntimeError(f"a client failed (exit {proc.returncode})")
                result = json.loads(out)
                messages += result["messages"]
                errors += result["errors"]
        finally:
            server.should_exit = True
            thread.join(10)
            producer.close()
    print(
        f"over HTTP: {clients} clients, {seconds:.0f} s: {messages:,} messages, "
        f"{errors} failed requests: {messages / seconds:,.0f} messages/s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--clients", type=int, default=4, help="HTTP clients; 0: no HTTP")
    parser.add_argument("--http-seconds", type=float, default=15.0)
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)  # URL KEY FILE
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.client:
        _client(*args.client, args.http_seconds)
        return
    from ingest.broker import EmbeddedBroker

    began = time.perf_counter()
    bodies = _bodies(args.messages)
    print(f"{len(bodies) * BATCH:,} messages in {len(bodies):,} batch bodies, "
          f"simulated in {time.perf_counter() - began:.1f} s", flush=True)  # fmt: skip
    with EmbeddedBroker(f"127.0.0.1:{_free_port()}") as broker:
        accepted, took, cpu, where = _in_process(broker.bootstrap, bodies, broker.pid)
        print(
            f"in process: {accepted:,} messages accepted in {took:.2f} s: "
            f"{accepted / took:,.0f} messages/s; {cpu:.2f} s of CPU: "
            f"{cpu / accepted * 1e6:.1f} µs/message ({where} more), {accepted / cpu:,.0f} "
            f"messages per CPU second (load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        if args.clients:
            _over_http(broker.bootstrap, bodies, args.clients, args.http_seconds)


if __name__ == "__main__":
    main()
