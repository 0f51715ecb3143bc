"""Freshness: how long after it is produced an event is visible in the warehouse.

    .venv/bin/python bench/freshness.py [--rate 20000] [--seconds 90] [--sample 1000]
                                        [--warmup 15] [--producer process|thread]

Starts the embedded broker on a free port and the event flow in this process
(``flows.run.FlowThread``, recovery on, as ``pulse up`` runs it) writing to a fresh chDB.
A producer (by default a separate process, so it does not share this process's GIL; it
pre-generates simulator traffic first, then sends it through ``ingest.collector.Collector``)
paces the events at a steady ``--rate`` by the wall clock and reports the send time of every
``--sample``-th event. Every ``--poll`` seconds (0.2) this process asks the warehouse
which of the pending sampled event_ids are visible (``SELECT event_id FROM events WHERE ts
BETWEEN .. AND
event_id IN ..``). Prints p50/p95/p99/max of produce→visible for events sent after
``--warmup`` seconds, the rate achieved, and the flow's lag (sent − written) over time, whose
slope says whether the flow keeps up. Target: p99 <= 2 s at 20,000 events/s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

_EID = b'"event_id":"'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _event_id(line: bytes) -> str:
    at = line.index(_EID) + len(_EID)
    return line[at : line.index(b'"', at)].decode()


def _ts_ms(line: bytes) -> int:
    at = line.index(b'"ts":') + 5
    end = at
    while line[end : end + 1].isdigit():
        end += 1
    return int(line[at:end])


def producer_main(
    bootstrap: str, rate: float, seconds: float, sample: int, seed: int, conn: Connection
) -> None:
    """Pre-generate, then send paced at ``rate``; report sampled sends over ``conn``."""
    from ingest.collector import Collector
    from ingest.fx import load_fx_rates
    from ingest.producer import ConfluentProducer
    from ingest.simulator import SimConfig, iter_events
    from ingest.topics import Topics

    n = int(rate * seconds)
    start = datetime.now(UTC)
    # The simulator's rate follows a daily curve (a quarter of it at night); ask for more
    # and cut at n.
    config = SimConfig(rate=rate, duration=timedelta(seconds=seconds * 8), seed=seed, start=start)
    lines: list[bytes] = []
    for _, line in iter_events(config):
        lines.append(line)
        if len(lines) >= n:
            break
    n = len(lines)
    producer = ConfluentProducer(bootstrap)
    collector = Collector(producer, Topics(), load_fx_rates().currencies)
    conn.send(("ready", n))
    conn.recv()  # go
    batch = producer.batch()
    t0 = time.time()
    sent = 0
    while sent < n:
        due = min(n, int((time.time() - t0) * rate) + 1)
        if due <= sent:
            time.sleep(0.001)
            continue
        now = time.time()
        collector.submit(lines[sent:due], batch, source="bench")
        first = -(-sent // sample) * sample  # first multiple of sample >= sent
        picks = [(_event_id(lines[i]), _ts_ms(lines[i]), now) for i in range(first, due, sample)]
        conn.send(("sent", due, picks))
        sent = due
    elapsed = time.time() - t0
    batch.wait(300)
    conn.send(("done", sent, elapsed, batch.failed))
    producer.close()


def _cpu_s(pid: int | str) -> float:
    """User + system CPU seconds of a process so far (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(xs: list[float], q: float) -> float:
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=1000, method="inclusive")[round(q * 1000) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20_000.0, help="events/s")
    parser.add_argument("--seconds", type=float, default=90.0, help="how long to send")
    parser.add_argument("--sample", type=int, default=1000, help="tag every N-th event")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds not counted")
    parser.add_argument(
        "--poll", type=float, default=0.2,
        help="seconds between polls (each adds its wait to the latencies it finds; polls share "
        "chDB's one engine with the flow's writes: every 50 ms they took ~0.3 cores)",
    )  # fmt: skip
    parser.add_argument("--drain", type=float, default=120.0, help="max seconds to wait after")
    parser.add_argument("--producer", choices=("process", "thread"), default="process")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--epoch", type=float, help="experiment: Bytewax epoch (snapshot) interval, s (5)"
    )
    parser.add_argument(
        "--no-recovery", action="store_true", help="experiment: run without recovery snapshots"
    )
    args = parser.parse_args()

    from prometheus_client import REGISTRY

    from flows.config import FlowConfig
    from flows.run import FlowThread
    from ingest.broker import EmbeddedBroker
    from ingest.fx import load_fx_rates
    from ingest.topics import Topics, ensure_topics
    from warehouse.client import connect
    from warehouse.migrate import migrate

    def written() -> float:
        return REGISTRY.get_sample_value("pulse_flow_events_total") or 0.0

    writes = _count_writes()
    gc_pauses = _time_gc()
    if args.epoch:  # bench-only: FlowThread does not expose the epoch
        import flows.run

        flows.run.run_flow.__kwdefaults__["epoch"] = timedelta(seconds=args.epoch)

    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedBroker(f"127.0.0.1:{_free_port()}") as broker,
    ):
        topics = Topics()
        ensure_topics(broker.bootstrap, topics)
        ours, theirs = mp.Pipe()
        prod_args = (broker.bootstrap, args.rate, args.seconds, args.sample, args.seed, theirs)
        if args.producer == "process":
            worker: Any = mp.get_context("spawn").Process(target=producer_main, args=prod_args)
        else:
            worker = threading.Thread(target=producer_main, args=prod_args, daemon=True)
        worker.start()
        kind, _ = ours.recv()
        assert kind == "ready"

        dsn = f"chdb://{tmp}/wh"
        client = connect(dsn)
        migrate(client)
        fx = load_fx_rates()
        recovery = None if args.no_recovery else Path(tmp) / "rec"
        flow = FlowThread(
            FlowConfig(broker.bootstrap, topics, dsn, None, fx), recovery_dir=recovery
        ).start()
        time.sleep(3.0)  # let the flow build its partitions and consumers
        print(f"load before: {subprocess.getoutput('uptime').strip()}", flush=True)
        pids = {"flow process": "self", "broker": broker._process.pid}  # type: ignore[union-attr]
        if args.producer == "process":
            pids["producer"] = worker.pid
        cpu0 = {k: _cpu_s(p) for k, p in pids.items()}
        ours.send("go")
        t0 = time.time()
        pending: dict[str, tuple[int, float]] = {}  # event_id -> (ts_ms, sent_at)
        latencies: list[tuple[float, float]] = []  # (sent_at - t0, visible after)
        lag_trace: list[tuple[float, float, float]] = []  # (t, sent, written)
        sent = 0
        done: tuple[Any, ...] | None = None
        next_lag = t0
        polls, poll_time = 0, 0.0
        while True:
            while ours.poll():
                msg = ours.recv()
                if msg[0] == "sent":
                    sent = msg[1]
                    for eid, ts_ms, at in msg[2]:
                        pending[eid] = (ts_ms, at)
                else:
                    done = msg
                    cpu1 = {k: _cpu_s(p) for k, p in pids.items()}
                    cpu_wall = time.time() - t0
            now = time.time()
            if now >= next_lag:
                lag_trace.append((now - t0, sent, written()))
                next_lag += 1.0
            if pending:
                lo = min(ts for ts, _ in pending.values())
                hi = max(ts for ts, _ in pending.values())
                issued = time.time()
                rows = client.query(
                    "SELECT event_id FROM events WHERE ts >= fromUnixTimestamp64Milli({lo:Int64})"
                    " AND ts <= fromUnixTimestamp64Milli({hi:Int64})"
                    " AND event_id IN {ids:Array(String)}",
                    parameters={"lo": lo, "hi": hi, "ids": list(pending)},
                ).result_rows
                poll_time += time.time() - issued
                polls += 1
                for (eid,) in rows:
                    ts_ms, at = pending.pop(eid)
                    latencies.append((at - t0, issued - at))
            if done is not None and not pending:
                break
            if done is not None and now - t0 > args.seconds + args.drain:
                break
            if not flow.alive:
                raise SystemExit(f"the flow stopped: {flow.error!r}")
            time.sleep(max(0.0, args.poll - (time.time() - now)))
        print(f"load after:  {subprocess.getoutput('uptime').strip()}", flush=True)
        flow.stop()
        worker.join(30)

    assert done is not None
    _, n_sent, send_s, failed = done
    steady = [lat for at, lat in latencies if at >= args.warmup]
    all_lat = [lat for _, lat in latencies]
    # lag while sending (after warm-up): slope by least squares over the trace
    trace = [(t, s - w) for t, s, w in lag_trace if args.warmup <= t <= send_s]
    slope = _slope(trace)
    drain_s = next((t for t, s, w in lag_trace if t > send_s and w >= n_sent), None)
    print(
        f"\nfreshness: {n_sent:,} events sent in {send_s:.1f} s = {n_sent / send_s:,.0f} events/s "
        f"(target rate {args.rate:,.0f}; {failed} failed; producer as a {args.producer}; "
        f"epoch {args.epoch or 5:g} s; recovery {'off' if args.no_recovery else 'on'})"
    )
    print(
        f"  produce→visible over {len(steady)} sampled events sent after {args.warmup:.0f} s: "
        f"p50 {_pct(steady, 0.5):.2f} s, p95 {_pct(steady, 0.95):.2f} s, "
        f"p99 {_pct(steady, 0.99):.2f} s, max {max(steady, default=float('nan')):.2f} s "
        f"(target p99 <= 2 s: {'met' if _pct(steady, 0.99) <= 2 else 'MISSED'}); "
        f"all {len(all_lat)} samples: p99 {_pct(all_lat, 0.99):.2f} s; "
        f"unseen {len(pending)}"
    )
    lags = [lag for _, lag in trace]
    tenth = max(1, len(lags) // 10)
    first, last = statistics.fmean(lags[:tenth] or [0]), statistics.fmean(lags[-tenth:] or [0])
    print(
        f"  lag (sent − written) after warm-up: mean {statistics.fmean(lags or [0]):,.0f}, "
        f"max {max(lags, default=0):,.0f} events, first/last 10% {first:,.0f}/{last:,.0f};"
        f" slope {slope:+,.0f} events/s "
        f"({'keeps up' if slope < 0.05 * args.rate else 'FALLS BEHIND'}); "
        f"drained {f'{drain_s - send_s:.1f} s after the last send' if drain_s else 'n/a'}"
    )
    print(
        "  CPU while sending (cores busy on average): "
        + ", ".join(f"{k} {(cpu1[k] - cpu0[k]) / cpu_wall:.2f}" for k in pids)
    )
    n_writes, n_rows, write_s = writes
    print(
        f"  warehouse writes: {n_writes[0]:,} batches, mean {n_rows[0] / max(n_writes[0], 1):,.0f} "
        f"event rows each, {write_s[0] / max(n_writes[0], 1) * 1000:.1f} ms each, "
        f"{write_s[0]:.1f} s in total"
    )
    snap_n = REGISTRY.get_sample_value("pulse_flow_snapshot_seconds_count") or 0
    snap_s = REGISTRY.get_sample_value("pulse_flow_snapshot_seconds_sum") or 0
    roll_n = REGISTRY.get_sample_value("pulse_rollup_refresh_seconds_count") or 0
    roll_s = REGISTRY.get_sample_value("pulse_rollup_refresh_seconds_sum") or 0
    print(
        f"  shard snapshots: {snap_s:.1f} s in total over {snap_n:,.0f} (all shards, every "
        f"epoch); rollup refreshes: {roll_n:,.0f}, {roll_s / max(roll_n, 1) * 1000:,.0f} ms each"
    )
    print(
        "  GC pauses in the flow's process: "
        + ", ".join(
            f"gen{g} {n:,} × {t / max(n, 1) * 1000:.0f} ms" for g, (n, t) in gc_pauses.items()
        )
    )
    print(
        f"  polls: {polls}, mean {poll_time / max(polls, 1) * 1000:.1f} ms each; "
        f"lag trace every 10 s: "
        + ", ".join(f"{t:.0f}s:{s - w:,.0f}" for t, s, w in lag_trace[::10])
    )


def _count_writes() -> tuple[list[int], list[int], list[float]]:
    """Count the flow's warehouse writes (batches, event rows, seconds) by wrapping the
    writer's method in this process only."""
    from warehouse.writer import WarehouseWriter

    calls, rows, spent = [0], [0], [0.0]
    orig = WarehouseWriter.write_many

    def write_many(self: WarehouseWriter, batches: Any) -> None:
        t = time.perf_counter()
        orig(self, batches)
        spent[0] += time.perf_counter() - t
        calls[0] += 1
        rows[0] += sum(b.lines.get("events", b"").count(b"\n") for b in batches)

    WarehouseWriter.write_many = write_many  # type: ignore[method-assign]
    return calls, rows, spent


def _time_gc() -> dict[int, list[float]]:
    """Count and time the garbage collector's passes by generation in this process."""
    import gc

    pauses: dict[int, list[float]] = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            entry = pauses[info["generation"]]
            entry[0] += 1
            entry[1] += time.perf_counter() - started[0]

    gc.callbacks.append(callback)
    return pauses


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


if __name__ == "__main__":
    main()
