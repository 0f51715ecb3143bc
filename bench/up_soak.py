"""Soak of `pulse up`'s process: HTTP collector, flow and chDB in one process, at a set rate.

    .venv/bin/python bench/up_soak.py [--minutes 60] [--rate 20000] [--retention 20m]
                                      [--clients 4] [--connections 2] [--batch 100]
                                      [--every 10] [--drain 120] [--trace 300]
                                      [--plot docs/img/up-soak.png]

Starts the stack as ``pulse up`` does (``api.runtime.Runtime.open_stack``: the embedded broker on a
free port, migrations, the flow with recovery, the detector) and serves the real API app
with uvicorn in this process, under a fresh ``PULSE_HOME``. ``--clients`` processes
(spawned, each with ``--connections`` keep-alive connections) generate simulator traffic
on the fly, the same mix and rate all along, event times from now, and ``POST /v1/events``
it in ``--batch``-event JSON arrays with an ingest key, paced by the wall clock to
``--rate`` events/s in all. After ``--minutes`` the clients stop and sampling goes on for
``--drain`` seconds: what is still held once everything is written.

Every ``--every`` seconds this process records: RSS and its anonymous part
(``/proc/self/status``); Python's live objects and the arenas holding them
(``sys._debugmallocstats``); glibc's heap in use and free but kept (``mallinfo2``);
chDB's tracked memory (``system.metrics`` MemoryTracking, its merges' part and its caches:
marks, primary index, uncompressed, query condition); events accepted by the API, written
by the flow (``pulse_flow_events_total``) and the difference; how far behind schedule the
clients are; the producer's local queue; the users the flow holds (``pulse_flow_users``)
and the bytes of their state (``pulse_flow_state_bytes``, when the flow reports it).
``--trace SECONDS`` also runs ``tracemalloc`` (one frame; it slows the process) and
writes the top allocation sites, and their growth since the previous snapshot, every that
many seconds.

Writes ``bench/results/up-soak-<stamp>.csv`` (samples), ``-trace.txt`` (with
``--trace``), and a plot ``.svg``/``.png`` (the PNG by headless Chromium, as
``bench/soak.py``); ``--plot PATH`` copies the PNG there. Prints peak RSS, the RSS slope
over the second half of the load, and where the memory was at the end of the load and
after draining.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.servers, run from anywhere

from soak import _free_port, chart_frame, malloc_mb, python_heap_mb, slope

RESULTS = Path(__file__).parent / "results"
FIELDS = ["t_s", "phase", "rss_mb", "anon_mb", "py_live_mb", "py_arenas_mb", "malloc_used_mb",
          "malloc_free_mb", "chdb_mb", "chdb_merges_mb", "chdb_caches_mb", "accepted",
          "written", "lag", "behind", "producer_queue", "held_users", "state_mb",
          "load1"]  # fmt: skip
_CACHES = ("MarkCacheBytes", "PrimaryIndexCacheBytes", "UncompressedCacheBytes",
           "QueryConditionCacheBytes", "IndexMarkCacheBytes", "IndexUncompressedCacheBytes",
           "MMapCacheCells")  # fmt: skip


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def client_main(
    port: int, key: str, rate: float, seconds: float, seed: int, batch: int, connections: int,
    conn: Connection,
) -> None:  # fmt: skip
    """Generate simulator traffic and POST it at ``rate`` events/s for ``seconds``."""
    import dataclasses

    from ingest.simulator import MarketConfig, SimConfig, iter_events

    flat = (1.0,) * 24  # the same traffic all along: what the flow holds can level off
    market = dataclasses.replace(
        MarketConfig(), hourly_weekday=flat, hourly_weekend=flat, day_factors=(1.0,) * 7
    )
    config = SimConfig(rate=rate, duration=timedelta(seconds=seconds * 2), seed=seed,
                       start=datetime.now(UTC), market=market)  # fmt: skip
    events = iter_events(config)
    lock = threading.Lock()
    state = {"sent": 0, "accepted": 0, "errors": 0}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn.send("ready")
    conn.recv()  # go
    t0 = time.time()
    per_conn = rate / connections

    def post_loop(i: int) -> None:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        sent = 0
        while (now := time.time()) - t0 < seconds:
            due = int((now - t0) * per_conn)
            if due - sent < batch:
                time.sleep(min(0.05, (batch - (due - sent)) / per_conn))
                continue
            with lock:  # one generator for the client's connections
                lines = [line for _, (_, line) in zip(range(batch), events, strict=False)]
            body = b"[" + b",".join(lines) + b"]"
            try:
                client.request("POST", "/v1/events", body, headers)
                response = client.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                client.close()
                client = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                with lock:
                    state["errors"] += 1
                continue
            sent += len(lines)
            with lock:
                state["sent"] += len(lines)
                if response.status == 200:
                    state["accepted"] += int(answer.split(b'"accepted":', 1)[1].split(b",")[0])
                else:
                    state["errors"] += 1

    threads = [threading.Thread(target=post_loop, args=(i,), daemon=True)
               for i in range(connections)]  # fmt: skip
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        behind = max(0, int((min(time.time(), t0 + seconds) - t0) * rate) - state["sent"])
        with lock:
            conn.send(("sent", state["sent"], state["accepted"], behind, state["errors"]))
    with lock:
        conn.send(("done", state["sent"], state["accepted"], 0, state["errors"]))


def _gauge_sum(registry: Any, name: str) -> float:
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == name
        for sample in metric.samples
    )


def write_svg(path: Path, rows: list[dict[str, Any]], title: str, load_end_s: float) -> None:
    """RSS and where it goes (MB, left axis) and the flow's lag (events, right axis)."""
    w, h, left, right, top, bottom = 1000, 460, 70, 90, 40, 70
    pw, ph = w - left - right, h - top - bottom
    t_max = max(r["t_s"] for r in rows) or 1.0
    m_max = max(r["rss_mb"] for r in rows) * 1.1 or 1.0
    l_max = max(max(r["lag"] for r in rows) * 1.1, 1.0)
    fmt = ".0f" if t_max >= 600 else ".1f"

    def x(t: float) -> float:
        return left + pw * t / t_max

    def y(v: float, top_v: float) -> float:
        return top + ph * (1 - min(max(v, 0.0), top_v) / top_v)

    def line(key: str, top_v: float, color: str, dash: str = "") -> str:
        pts = " ".join(f"{x(r['t_s']):.1f},{y(float(r[key]), top_v):.1f}" for r in rows)
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        return (f'<polyline fill="none" stroke="{color}" stroke-width="1.5"{extra} '
                f'points="{pts}"/>')  # fmt: skip

    series = [("rss_mb", "#1f6feb", "", "process RSS"),
              ("py_arenas_mb", "#8250df", "", "Python arenas"),
              ("state_mb", "#8250df", "4 3", "flow state (encoded)"),
              ("malloc_used_mb", "#bf8700", "", "glibc heap in use"),
              ("chdb_mb", "#2da44e", "", "chDB MemoryTracking"),
              ("lag", "#c60", "2 2", "lag (accepted − written)")]  # fmt: skip
    parts = chart_frame(w, h, left, top, pw, ph, title, x, y, m_max, l_max, t_max, fmt,
                        shade_from=load_end_s)  # fmt: skip
    parts += [
        f'<text x="{left + pw / 2}" y="{top + ph + 36}" text-anchor="middle">minutes '
        "(shaded: load stopped, draining)</text>",
    ]
    for i, (key, color, dash, label) in enumerate(series):
        top_v = l_max if key == "lag" else m_max
        parts.append(line(key, top_v, color, dash))
        lx = left + 10 + (i % 6) * 150
        parts.append(f'<text x="{lx}" y="{h - 12}" fill="{color}">— {label}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def _png(svg: Path, width: int = 1000, height: int = 460) -> Path | None:
    """The SVG rendered to PNG by a headless Chromium, when one is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    png = svg.with_suffix(".png")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={png}", f"--window-size={width},{height}", svg.resolve().as_uri()],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return png if png.exists() else None


def _trace(out: Any, previous: tracemalloc.Snapshot | None, t_s: float) -> tracemalloc.Snapshot:
    """The top allocation sites now, and their growth since ``previous``."""
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    out.write(f"\n=== {t_s / 60:.1f} min: {total / 2**20:,.1f} MB traced ===\n")
    for stat in stats[:25]:
        out.write(f"{stat.size / 2**20:9.1f} MB {stat.count:>10,}  {stat.traceback}\n")
    if previous is not None:
        out.write("--- growth since the previous snapshot ---\n")
        for diff in snap.compare_to(previous, "lineno")[:15]:
            out.write(f"{diff.size_diff / 2**20:+9.1f} MB {diff.count_diff:>+10,}  "
                      f"{diff.traceback}\n")  # fmt: skip
    out.flush()
    return snap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=20000.0, help="events/s in all")
    parser.add_argument("--retention", default="20m", help="PULSE_FLOW_RETENTION (e.g. 20m)")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--connections", type=int, default=2, help="connections per client")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds sampled after")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-detector", action="store_true", help="leave the detector out")
    parser.add_argument("--trace", type=float, default=0.0, metavar="SECONDS",
                        help="tracemalloc snapshots this often (0: off)")  # fmt: skip
    parser.add_argument("--plot", type=Path, help="copy the PNG plot here (docs/img/...)")
    args = parser.parse_args()
    if args.trace:
        tracemalloc.start(1)

    from prometheus_client import REGISTRY

    from api.app import create_app
    from api.runtime import Runtime
    from api.settings import Settings
    from tests.servers import serve_in_thread

    seconds = args.minutes * 60
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = RESULTS / f"up-soak-{stamp}"
    csv_path, svg_path = base.with_suffix(".csv"), base.with_suffix(".svg")
    trace_out = base.with_name(base.name + "-trace.txt").open("w") if args.trace else None
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        settings = Settings(
            home=Path(tmp) / "home",
            kafka_bootstrap=f"127.0.0.1:{_free_port()}",
            api_port=port,
            flow_retention=args.retention,  # type: ignore[arg-type]
        )
        with Runtime(settings).open_stack(
            start_broker=True, run_flow=True, run_detector=not args.no_detector
        ) as stack:
            from api.keys import KeyStore

            keystore = KeyStore(settings.keys_file)
            server, thread = serve_in_thread(create_app(stack.services), port)
            pipes, workers = [], []
            for i in range(args.clients):
                ours, theirs = mp.Pipe()
                worker = mp.get_context("spawn").Process(
                    target=client_main,
                    args=(port, keystore.create("ingest"), args.rate / args.clients, seconds,
                          args.seed + i, args.batch, args.connections, theirs),
                )  # fmt: skip
                worker.start()
                pipes.append(ours)
                workers.append(worker)
            for ours in pipes:
                assert ours.recv() == "ready"
            warehouse = stack.warehouse
            assert warehouse is not None
            producer = stack.producer._producer  # librdkafka's local queue, for the sample
            print(f"up-soak: {args.rate:,.0f} events/s for {args.minutes:g} min through "
                  f"{args.clients}x{args.connections} connections, retention "
                  f"{args.retention}", flush=True)  # fmt: skip
            load_before = subprocess.getoutput("uptime").strip()
            print(f"load before: {load_before}", flush=True)
            for ours in pipes:
                ours.send("go")
            t0 = time.time()
            clients = {i: (0, 0, 0, 0) for i in range(args.clients)}
            done: set[int] = set()
            next_at, load_end, snap = t0, None, None
            next_trace = t0 + args.trace
            with csv_path.open("w", newline="") as fh:
                out = csv.DictWriter(fh, fieldnames=FIELDS)
                out.writeheader()
                while load_end is None or time.time() - load_end < args.drain:
                    for i, ours in enumerate(pipes):
                        while i not in done and ours.poll():
                            try:
                                kind, *counts = ours.recv()
                            except EOFError:  # the client exited
                                kind = "done"
                            else:
                                clients[i] = tuple(counts)  # type: ignore[assignment]
                            if kind == "done":
                                done.add(i)
                    if load_end is None and len(done) == len(pipes):
                        load_end = time.time()
                    if not thread.is_alive():
                        raise SystemExit("the API server stopped")
                    now = time.time()
                    if now >= next_at:
                        row = _sample(warehouse, REGISTRY, producer, clients, now - t0,
                                      "load" if load_end is None else "drain")  # fmt: skip
                        rows.append(row)
                        out.writerow(row)
                        fh.flush()
                        if len(rows) % 6 == 1:
                            _print(row)
                        next_at += args.every
                    if trace_out is not None and now >= next_trace:
                        snap = _trace(trace_out, snap, now - t0)
                        next_trace += args.trace
                    time.sleep(0.2)
            load_after = subprocess.getoutput("uptime").strip()
            errors = sum(c[3] for c in clients.values())
            server.should_exit = True
            thread.join(30)
            for worker in workers:
                worker.join(30)
    _report(args, rows, seconds, load_before, load_after, errors, csv_path, svg_path)


def _sample(
    warehouse: Any, registry: Any, producer: Any, clients: dict[int, Any], t_s: float,
    phase: str,
) -> dict[str, Any]:  # fmt: skip
    metrics = dict(warehouse.query(
        "SELECT metric, value FROM system.metrics WHERE metric IN "
        "('MemoryTracking', 'MergesMutationsMemoryTracking', {caches:Array(String)})",
        parameters={"caches": list(_CACHES)},
    ).result_rows)  # fmt: skip
    caches = sum(v for k, v in metrics.items() if k in _CACHES and k != "MMapCacheCells")
    written = registry.get_sample_value("pulse_flow_events_total") or 0.0
    accepted = sum(c[1] for c in clients.values())
    py_live, py_arenas = python_heap_mb()
    malloc_used, malloc_free = malloc_mb()
    return {
        "t_s": round(t_s, 1),
        "phase": phase,
        "rss_mb": round(_status_mb("VmRSS"), 1),
        "anon_mb": round(_status_mb("RssAnon"), 1),
        "py_live_mb": round(py_live, 1),
        "py_arenas_mb": round(py_arenas, 1),
        "malloc_used_mb": round(malloc_used, 1),
        "malloc_free_mb": round(malloc_free, 1),
        "chdb_mb": round(metrics.get("MemoryTracking", 0) / 2**20, 1),
        "chdb_merges_mb": round(metrics.get("MergesMutationsMemoryTracking", 0) / 2**20, 1),
        "chdb_caches_mb": round(caches / 2**20, 1),
        "accepted": accepted,
        "written": int(written),
        "lag": int(accepted - written),
        "behind": sum(c[2] for c in clients.values()),
        "producer_queue": len(producer),
        "held_users": int(_gauge_sum(registry, "pulse_flow_users")),
        "state_mb": round(_gauge_sum(registry, "pulse_flow_state_bytes") / 2**20, 1),
        "load1": round(os.getloadavg()[0], 1),
    }


def _print(row: dict[str, Any]) -> None:
    print(
        f"  {row['t_s'] / 60:5.1f} min {row['phase']:5} RSS {row['rss_mb']:7,.0f} MB  "
        f"Python {row['py_live_mb']:,.0f}/{row['py_arenas_mb']:,.0f}  "
        f"malloc {row['malloc_used_mb']:,.0f}+{row['malloc_free_mb']:,.0f}  "
        f"chDB {row['chdb_mb']:,.0f} (caches {row['chdb_caches_mb']:,.0f})  "
        f"accepted {row['accepted']:>10,}  lag {row['lag']:>8,}  behind {row['behind']:>7,}  "
        f"users {row['held_users']:>9,} ({row['state_mb']:,.0f} MB)  load {row['load1']}",
        flush=True,
    )


def _report(
    args: argparse.Namespace, rows: list[dict[str, Any]], seconds: float, load_before: str,
    load_after: str, errors: int, csv_path: Path, svg_path: Path,
) -> None:  # fmt: skip
    load = [r for r in rows if r["phase"] == "load"]
    half = [r for r in load if r["t_s"] >= seconds / 2]
    per_min = slope([(r["t_s"] / 60, r["rss_mb"]) for r in half])
    peak = max(rows, key=lambda r: r["rss_mb"])
    end_of_load, last = load[-1], rows[-1]
    rate = end_of_load["accepted"] / max(end_of_load["t_s"], 1.0)
    title = (
        f"pulse up: {rate:,.0f} events/s over HTTP ({args.rate:,.0f} asked) for "
        f"{args.minutes:g} min, retention {args.retention} — peak RSS {peak['rss_mb']:,.0f} MB, "
        f"second-half slope {per_min:+.1f} MB/min"
    )
    write_svg(svg_path, rows, title, end_of_load["t_s"])
    png = _png(svg_path)
    if png is not None and args.plot is not None:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, args.plot)
    lags = [r["lag"] for r in half] or [0]
    print(f"load before: {load_before}\nload after:  {load_after}")
    print(
        f"\nup-soak: {end_of_load['accepted']:,} events accepted in {args.minutes:g} min "
        f"({rate:,.0f}/s achieved, {args.rate:,.0f}/s asked; {errors} failed requests)"
    )
    print(f"  RSS: start {rows[0]['rss_mb']:,.0f} MB, peak {peak['rss_mb']:,.0f} MB (at "
          f"{peak['t_s'] / 60:.1f} min), end of load {end_of_load['rss_mb']:,.0f} MB, after "
          f"draining {last['rss_mb']:,.0f} MB")  # fmt: skip
    print(f"  second half of the load: RSS slope {per_min:+.2f} MB/min; lag mean "
          f"{statistics.fmean(lags):,.0f}, max {max(lags):,} events")  # fmt: skip
    keys = ("held_users", "state_mb", "py_live_mb", "py_arenas_mb", "malloc_used_mb",
            "malloc_free_mb", "chdb_mb", "chdb_caches_mb", "producer_queue")  # fmt: skip
    for label, row in (("end of load", end_of_load), ("after draining", last)):
        print(f"  {label}: " + ", ".join(f"{k} {row[k]:,}" for k in keys))
    shown = f", {png}" if png else ""
    print(f"  samples: {csv_path}\n  plot:    {svg_path}{shown}")
    if args.plot is not None and png is not None:
        print(f"  copied to {args.plot}")


if __name__ == "__main__":
    main()
