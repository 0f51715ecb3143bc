"""Throughput of the event flow draining pre-filled topics into the warehouse.

    .venv/bin/python bench/flow.py [--events 1000000] [--workers 1 | --processes 2]
                                   [--profile] [--read-only]

Generates simulator traffic (all event types, no incidents), publishes it through the
collector to a fresh embedded broker, then times `flows.run.run_flow` from start until the
topics are drained (the idle wait at the end is subtracted), writing into a fresh chDB.
Prints one result line, the resident memory peak, the flow's CPU time per event and the
broker's (both run on this machine's cores).

``--read-only`` drains the same topics with one plain confluent-kafka consumer per
partition index (the flow source's settings) and does nothing with the records: the
ceiling that reading through this broker sets for any flow on this machine.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import socket
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_processes(n: int, bootstrap: str, dsn: str, home: str, idle: float) -> tuple[float, float]:
    """Drain with ``n`` Bytewax processes as ``pulse flow --processes n`` runs them; wall
    seconds (idle wait subtracted) and CPU of all of them."""
    from flows.run import run_processes

    os.environ.update({"PULSE_KAFKA_BOOTSTRAP": bootstrap, "PULSE_CLICKHOUSE_DSN": dsn,
                       "PULSE_HOME": home})  # fmt: skip
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run_processes(n, recovery_dir=Path(home) / "recovery", exit_when_idle=idle)
    elapsed = time.perf_counter() - start - idle
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a running process (0 when unknown)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _written(client: object) -> tuple[int, float]:
    """Rows in ``events`` and the seconds between its first and last insert: the drain's
    steady part, without the start-up (process start, imports, the processes connecting,
    the first fetch) that a short drain pays in full."""
    rows, first, last = client.query(  # type: ignore[attr-defined]
        "SELECT count(), min(written_at), max(written_at) FROM events FINAL"
    ).result_rows[0]
    return rows, (last - first).total_seconds()


def _read_only(bootstrap: str, topics: list[str], events: int, idle: float) -> tuple[float, float]:
    """Drain ``topics`` without doing anything with the records: wall seconds (idle wait
    subtracted) and this process's CPU seconds."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics().topics
    indexes = sorted({i for t in topics for i in meta[t].partitions})
    consumers = []
    for index in indexes:
        config = {"bootstrap.servers": bootstrap, "group.id": "bench-read-only",
                  "enable.auto.commit": "false", "enable.partition.eof": "false"}  # fmt: skip
        consumer = Consumer(config)
        consumer.assign([TopicPartition(t, index, OFFSET_BEGINNING) for t in topics
                         if index in meta[t].partitions])  # fmt: skip
        consumers.append(consumer)
    start, cpu0 = time.perf_counter(), time.process_time()
    read, last = 0, time.perf_counter()
    while read < events and time.perf_counter() - last < idle:
        for consumer in consumers:
            msgs = consumer.consume(5000, 0.001)
            if msgs:
                read += sum(1 for m in msgs if m.error() is None and m.value())
                last = time.perf_counter()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    for consumer in consumers:
        consumer.close()
    if read < events:
        raise SystemExit(f"read only {read:,} of {events:,} events")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--processes", type=int, default=1,
        help="run as N processes of Bytewax's runner (-i/-a) instead of in this process",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--read-only", action="store_true",
        help="only read the topics (no flow): the ceiling reading through the broker sets",
    )  # fmt: skip
    args = parser.parse_args()

    from flows.config import FlowConfig
    from flows.run import run_flow
    from ingest.broker import EmbeddedBroker
    from ingest.collector import Collector
    from ingest.fx import load_fx_rates
    from ingest.producer import ConfluentProducer
    from ingest.simulator import SimConfig, iter_events
    from ingest.topics import Topics, ensure_topics
    from warehouse.client import connect
    from warehouse.migrate import migrate

    fx = load_fx_rates()
    rate = 2000.0
    config = SimConfig(rate=rate, duration=timedelta(seconds=args.events / rate * 1.3), seed=1,
                       start=datetime(2026, 11, 16, 8, tzinfo=UTC))  # fmt: skip
    lines = []
    for _, line in iter_events(config):
        lines.append(line)
        if len(lines) >= args.events:
            break
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedBroker(f"127.0.0.1:{_free_port()}") as broker,
    ):
        topics = Topics()
        ensure_topics(broker.bootstrap, topics)
        producer = ConfluentProducer(broker.bootstrap)
        result = Collector(producer, topics, fx.currencies).ingest(
            lines, source="bench", timeout=120
        )
        producer.close()
        broker_cpu0 = _cpu_seconds(broker.pid)
        if args.read_only:
            elapsed, cpu = _read_only(broker.bootstrap, list(topics.events), result.accepted, 2.0)
            broker_cpu = _cpu_seconds(broker.pid) - broker_cpu0
            print(
                f"read only: {result.accepted:,} events in {elapsed:.2f} s = "
                f"{result.accepted / elapsed:,.0f} events/s; CPU per event: consumer "
                f"{cpu / result.accepted * 1e6:.1f} µs, broker "
                f"{broker_cpu / result.accepted * 1e6:.1f} µs; load {os.getloadavg()[0]:.1f}"
            )
            return
        dsn = f"chdb://{tmp}/wh"
        client = connect(dsn)
        migrate(client)
        idle = 2.0
        if args.processes > 1:
            client.close()  # chDB: the process holding the sink opens the warehouse
            elapsed, cpu = _run_processes(args.processes, broker.bootstrap, dsn, tmp, idle)
            stored, span = _written(connect(dsn))
            print(
                f"flow: {result.accepted:,} events drained in {elapsed:.2f} s = "
                f"{result.accepted / elapsed:,.0f} events/s ({args.processes} processes; "
                f"first to last insert {span:.2f} s = {stored / span:,.0f} events/s); "
                f"{stored:,} rows in events; CPU {cpu / result.accepted * 1e6:.1f} µs/event "
                f"(all processes); load {os.getloadavg()[0]:.1f}"
            )
            return
        flow = FlowConfig(broker.bootstrap, topics, dsn, None, fx, idle_stop_s=idle)
        profiler = cProfile.Profile() if args.profile else None
        start = time.perf_counter()
        cpu0 = time.process_time()
        if profiler:
            profiler.enable()
        run_flow(flow, workers=args.workers, recovery_dir=Path(tmp) / "recovery")
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - start - idle
        cpu = time.process_time() - cpu0
        broker_cpu = _cpu_seconds(broker.pid) - broker_cpu0
        stored, span = _written(client)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"flow: {result.accepted:,} events drained in {elapsed:.2f} s = "
        f"{result.accepted / elapsed:,.0f} events/s ({args.workers} worker(s); "
        f"first to last insert {span:.2f} s = {stored / span:,.0f} events/s); "
        f"{stored:,} rows in events; peak RSS {peak_mb:,.0f} MB"
    )
    print(
        f"flow CPU: {cpu:.2f} s = {cpu / result.accepted * 1e6:.1f} µs/event "
        f"(user + system of this process; less sensitive to other load than the rate); "
        f"broker CPU: {broker_cpu:.2f} s = {broker_cpu / result.accepted * 1e6:.1f} µs/event; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
