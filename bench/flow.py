"""Throughput of the event flow draining pre-filled topics into the warehouse.

    .venv/bin/python bench/flow.py [--events 1000000] [--shape simulator|heavy]
                                   [--workers 1 | --processes 2] [--profile] [--read-only]
                                   [--without refresh [--without writes]]
                                   [--minute-rollups DAYS]

Generates simulator traffic (all event types), publishes it through the collector to a
fresh embedded broker, then times `flows.run.run_flow` from start until the topics are
drained (the idle wait at the end is subtracted), writing into a fresh chDB. Prints one
result line, the resident memory peak, the flow's CPU time per event (per process with
``--processes``) and the broker's (both run on this machine's cores).

Two shapes of traffic (``--shape``):
- ``simulator``: the simulator's usual marketplace, a few hours at 2,000 events/s: many
  users with a few events each, 5% of them without session ids, no repeats.
- ``heavy``: a shop's history (issue #21): ~4,500 users with ~230 events each over 57
  days, explicit session ids, 5% of the events sent twice, prices in each country's
  currency. Generating it takes a few minutes (the simulator steps through 57 days a
  minute at a time), so it is kept in ``--cache`` (default ``$XDG_CACHE_HOME/pulse-bench``,
  else ``~/.cache/pulse-bench``) and reused.

``--without refresh`` (and ``--without writes``) leave out the sink's rollup refresh
(and its writes: nothing is inserted) in one process: where the CPU of an event goes, part
by part (docs/benchmarks.md, "Where an event's CPU goes"). A measurement only: the
warehouse is left incomplete.

``--read-only`` drains the same topics with one plain confluent-kafka consumer per
partition index (the flow source's settings) and does nothing with the records: the
ceiling that reading through this broker sets for any flow on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import os
import pstats
import resource
import socket
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_processes(
    n: int, bootstrap: str, dsn: str, home: str, idle: float, broker_pid: int | None
) -> tuple[float, list[float]]:
    """Drain with ``n`` Bytewax processes as ``pulse flow --processes n`` runs them; wall
    seconds (idle wait subtracted) and the CPU seconds of each flow process (sampled from
    /proc every 50 ms while it runs: its last ~50 ms, at exit, are not counted). The
    broker, also a child of this process, is not one of them."""
    from api.runtime import FLOW_ENTRY_POINT
    from flows.run import run_processes

    env = {**os.environ, "PULSE_KAFKA_BOOTSTRAP": bootstrap, "PULSE_CLICKHOUSE_DSN": dsn,
           "PULSE_HOME": home, "PULSE_FLOW_STATE_DIR": str(Path(home) / "recovery" / "state"),
           "PULSE_FLOW_EXIT_WHEN_IDLE": str(idle)}  # fmt: skip
    cpu: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for pid in _children():
                if pid == broker_pid:
                    continue
                with contextlib.suppress(OSError, IndexError):  # it has just ended
                    cpu[pid] = _cpu_seconds(pid)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        run_processes(n, flow=FLOW_ENTRY_POINT, env=env, recovery_dir=Path(home) / "recovery")
    finally:
        done.set()
        sampler.join()
    elapsed = time.perf_counter() - start - idle
    return elapsed, [cpu[pid] for pid in sorted(cpu)]


def _children() -> list[int]:
    """This process's child processes."""
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def _histogram(name: str, what: str) -> str:
    """A histogram of this process's Prometheus registry as ``N what, S s``."""
    from prometheus_client import REGISTRY

    count = REGISTRY.get_sample_value(f"{name}_count") or 0
    total = REGISTRY.get_sample_value(f"{name}_sum") or 0.0
    return f"{count:,.0f} {what} {total:.2f} s"


def _heavy_users(events: int, cache: Path) -> list[bytes]:
    """Traffic shaped like a shop's history (issue #21), generated once and cached: ~4,500
    returning users (each ~230 events over 57 days), every event with its session id, 5%
    of them sent twice (the ``duplicates`` incident over the whole run), prices in each
    country's currency (the simulator's markets)."""
    from ingest.simulator import Incident, MarketConfig, SimConfig, iter_events

    days = 57
    path = cache / f"heavy-{events}.jsonl"
    if not path.exists():
        users = round(events / 234)  # ~234 events a user, repeats included
        market = MarketConfig(users=users, returning_share=1.0, active_user_share=1.0,
                              sessionless_share=0.0)  # fmt: skip
        repeats = Incident("duplicates", at=timedelta(0), duration=timedelta(days=days),
                           depth=0.05)  # fmt: skip
        config = SimConfig(rate=events / 1.05 / (days * 86400), duration=timedelta(days=days),
                           seed=1, start=datetime(2026, 9, 1, tzinfo=UTC), market=market,
                           incidents=(repeats,))  # fmt: skip
        print(f"generating {path} (a few minutes, once) ...", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with partial.open("wb") as out:
            out.writelines(line + b"\n" for _, line in iter_events(config))
        partial.rename(path)
    with path.open("rb") as lines:
        return [line.rstrip(b"\n") for line, _ in zip(lines, range(events), strict=False)]


def _simulator(events: int) -> list[bytes]:
    """The simulator's usual traffic: many users with a few events each."""
    from ingest.simulator import SimConfig, iter_events

    rate = 2000.0
    config = SimConfig(rate=rate, duration=timedelta(seconds=events / rate * 1.3), seed=1,
                       start=datetime(2026, 11, 16, 8, tzinfo=UTC))  # fmt: skip
    lines = []
    for _, line in iter_events(config):
        lines.append(line)
        if len(lines) >= events:
            break
    return lines


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a running process (0 when unknown)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _leave_out(parts: list[str]) -> None:
    """Leave parts of the sink's work out of this process's flow (``--without``)."""
    import flows.dataflow
    import warehouse.writer

    if "refresh" in parts:  # no periodic refresh, none at stop
        flows.dataflow._Rollups._refresh = lambda self, force: None  # type: ignore[method-assign]
    if "writes" in parts:  # the rows are made and encoded, then dropped
        warehouse.writer.BackgroundWriter.submit_encoded = lambda self, batch: None  # type: ignore[method-assign]


def _written(client: object) -> tuple[int, float]:
    """Rows in ``events`` and the seconds between its first and last insert: the drain's
    steady part, without the start-up (process start, imports, the processes connecting,
    the first fetch) that a short drain pays in full."""
    rows, first, last = client.query(  # type: ignore[attr-defined]
        "SELECT count(), min(written_at), max(written_at) FROM events FINAL"
    ).result_rows[0]
    if not rows:
        raise SystemExit("the flow wrote no event: it stopped before reading (try --idle 10)")
    return rows, max((last - first).total_seconds(), 1e-3)


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
    parser.add_argument("--shape", choices=("simulator", "heavy"), default="simulator")
    parser.add_argument(
        "--cache", type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pulse-bench",
        help="where the heavy shape's generated events are kept",
    )  # fmt: skip
    parser.add_argument(
        "--idle", type=float, default=5.0,
        help="seconds without records before the flow stops (subtracted from its time; on "
        "a loaded machine the first fetch can take longer than 2 s)",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--without", action="append", choices=("refresh", "writes"), default=[],
        help="leave the sink's rollup refresh (writes: and its inserts) out, in one process",
    )  # fmt: skip
    parser.add_argument(
        "--minute-rollups", type=float, metavar="DAYS",
        help="keep minute rollups this many days back (the flow's default: 7; the heavy "
        "shape's history is older, so a large value measures it as if it were recent), in "
        "one process",
    )  # fmt: skip
    parser.add_argument(
        "--read-only", action="store_true",
        help="only read the topics (no flow): the ceiling reading through the broker sets",
    )  # fmt: skip
    args = parser.parse_args()
    if (args.without or args.minute_rollups is not None) and args.processes > 1:
        parser.error("--without and --minute-rollups measure one process")
    if "writes" in args.without and "refresh" not in args.without:
        parser.error("--without writes needs --without refresh (nothing to refresh)")
    _leave_out(args.without)

    from flows.config import FlowConfig
    from flows.run import run_flow
    from ingest.broker import EmbeddedBroker
    from ingest.collector import Collector
    from ingest.fx import load_fx_rates
    from ingest.producer import ConfluentProducer
    from ingest.topics import Topics, ensure_topics
    from warehouse.client import connect
    from warehouse.migrate import migrate

    fx = load_fx_rates()
    if args.shape == "heavy":
        lines = _heavy_users(args.events, args.cache)
    else:
        lines = _simulator(args.events)
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
        idle = args.idle
        if args.processes > 1:
            client.close()  # chDB: the process holding the sink opens the warehouse
            elapsed, cpus = _run_processes(
                args.processes, broker.bootstrap, dsn, tmp, idle, broker.pid
            )
            broker_cpu = _cpu_seconds(broker.pid) - broker_cpu0
            stored, span = _written(connect(dsn))
            each = ", ".join(f"{c / result.accepted * 1e6:.1f}" for c in cpus)
            print(
                f"flow [{args.shape}]: {result.accepted:,} events drained in {elapsed:.2f} s = "
                f"{result.accepted / elapsed:,.0f} events/s ({args.processes} processes; "
                f"first to last insert {span:.2f} s = {stored / span:,.0f} events/s); "
                f"{stored:,} rows in events"
            )
            print(
                f"flow CPU: {sum(cpus) / result.accepted * 1e6:.1f} µs/event in all "
                f"(per process: {each}); broker CPU: "
                f"{broker_cpu / result.accepted * 1e6:.1f} µs/event; "
                f"load {os.getloadavg()[0]:.1f}"
            )
            return
        flow = FlowConfig(broker.bootstrap, topics, dsn, None, fx, idle_stop_s=idle)
        if args.minute_rollups is not None:
            flow = dataclasses.replace(flow, minute_rollups=timedelta(days=args.minute_rollups))
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
        steady = ")"
        if "writes" not in args.without:
            stored, span = _written(client)
            steady = (f"; first to last insert {span:.2f} s = {stored / span:,.0f} events/s); "
                      f"{stored:,} rows in events")  # fmt: skip
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    left_out = "".join(f", without {part}" for part in args.without)
    print(
        f"flow [{args.shape}{left_out}]: {result.accepted:,} events drained in {elapsed:.2f} s "
        f"= {result.accepted / elapsed:,.0f} events/s ({args.workers} worker(s){steady}; "
        f"peak RSS {peak_mb:,.0f} MB"
    )
    print(
        f"flow CPU: {cpu:.2f} s = {cpu / result.accepted * 1e6:.1f} µs/event "
        f"(user + system of this process; less sensitive to other load than the rate); "
        f"broker CPU: {broker_cpu:.2f} s = {broker_cpu / result.accepted * 1e6:.1f} µs/event; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print(f"of which (wall): {_histogram('pulse_rollup_refresh_seconds', 'rollup refreshes')}, "
          f"{_histogram('pulse_flow_snapshot_seconds', 'shard snapshots')}")  # fmt: skip
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
