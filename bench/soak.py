"""Soak: memory of the event flow over a long run at a steady rate.

    .venv/bin/python bench/soak.py [--minutes 60] [--rate 3000] [--every 10] [--retention 48h]
                                   [--daily]

Starts the embedded broker on a free port and the event flow in this process
(``flows.run.FlowThread`` with recovery, as ``pulse up`` runs it) writing to a fresh chDB.
A separate producer process generates simulator traffic on the fly (event times start
now; the same mix and rate all along unless ``--daily``, whose morning ramp makes the users
active within the retention grow through the run) and sends it through
``ingest.collector.Collector`` at a steady ``--rate`` paced by the wall clock, reporting
how many events and distinct users it has sent. Every
``--every`` seconds this process records its RSS (``VmRSS`` of /proc/self/status), chDB's
own tracked memory (``system.metrics`` MemoryTracking), events sent and written, distinct
users sent and users the flow holds (``pulse_flow_users``), and where the memory is:
Python's object allocator (bytes in live objects and in the 1 MiB arenas holding them, from
``sys._debugmallocstats``) and glibc's heap (in use and free but kept, ``mallinfo2``).
Prints peak RSS and the RSS slope over the second half (MB/min, also per 1,000 new users),
and writes the samples to ``bench/results/soak-<stamp>.csv`` and a
plot to ``bench/results/soak-<stamp>.svg`` (and ``.png`` when Chromium is installed).
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
FIELDS = ["t_s", "rss_mb", "chdb_mb", "sent", "written", "lag", "users", "held_users",
          "py_live_mb", "py_arenas_mb", "malloc_used_mb", "malloc_free_mb"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def python_heap_mb() -> tuple[float, float]:
    """Bytes in live Python objects and in the arenas of Python's allocator (MB)."""
    with tempfile.TemporaryFile() as fh:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(fh.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        fh.seek(0)
        stats = fh.read().decode(errors="replace")
    found = {}
    for line in stats.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("# "):
            found[name[2:].strip()] = int(value.strip().replace(",", ""))
    live = found.get("bytes in allocated blocks", 0)
    arenas = found.get("arenas allocated current", 0) * 2**20
    return live / 2**20, arenas / 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost",
    )]  # fmt: skip


def malloc_mb() -> tuple[float, float]:
    """glibc's heap: bytes in use (with large mmapped blocks) and free but kept (MB)."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return float("nan"), float("nan")
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


def producer_main(
    bootstrap: str, rate: float, seconds: float, seed: int, daily: bool, conn: Connection
) -> None:
    """Generate simulator traffic and send it at ``rate`` until ``seconds`` have passed."""
    import dataclasses

    import msgspec

    from ingest.collector import Collector
    from ingest.fx import load_fx_rates
    from ingest.producer import ConfluentProducer
    from ingest.simulator import MarketConfig, SimConfig, iter_events
    from ingest.topics import Topics

    user_of = msgspec.json.Decoder(dict[str, object])
    market = MarketConfig()
    if not daily:  # the same traffic all along: event time runs with the wall clock
        flat = (1.0,) * 24
        market = dataclasses.replace(
            market, hourly_weekday=flat, hourly_weekend=flat, day_factors=(1.0,) * 7
        )
    # The daily curve goes down to a tenth of the mean at night: simulate far more time
    # than the run lasts, so the traffic never runs out.
    config = SimConfig(
        rate=rate,
        duration=timedelta(seconds=seconds * (12 if daily else 2)),
        seed=seed,
        start=datetime.now(UTC),
        market=market,
    )
    events = iter_events(config)
    producer = ConfluentProducer(bootstrap)
    collector = Collector(producer, Topics(), load_fx_rates().currencies)
    batch = producer.batch()
    users: set[object] = set()
    conn.send("ready")
    conn.recv()  # go
    t0 = time.time()
    sent, reported = 0, t0
    while (now := time.time()) - t0 < seconds:
        due = int((now - t0) * rate) + 1
        if due <= sent:
            time.sleep(0.002)
            continue
        chunk = [line for _, (_, line) in zip(range(due - sent), events, strict=False)]
        users.update(user_of.decode(line)["user_id"] for line in chunk)
        collector.submit(chunk, batch, source="bench")
        sent += len(chunk)
        if now - reported >= 0.25:
            conn.send(("sent", sent, len(users)))
            reported = now
    batch.wait(300)
    conn.send(("done", sent, len(users)))
    producer.close()


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def chart_frame(
    w: int,
    h: int,
    left: int,
    top: int,
    pw: int,
    ph: int,
    title: str,
    x: Callable[[float], float],
    y: Callable[[float, float], float],
    m_max: float,
    l_max: float,
    t_max: float,
    fmt: str,
    shade_from: float | None = None,
) -> list[str]:
    """The SVG of a soak chart without its lines: frame, title, grid, the MB axis on the
    left and the lag axis on the right; ``shade_from`` (seconds) shades what follows."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">{title}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    if shade_from is not None:
        parts.append(
            f'<rect x="{x(shade_from):.1f}" y="{top}" width="{left + pw - x(shade_from):.1f}" '
            f'height="{ph}" fill="#f4f4f4"/>'
        )
    for i in range(6):
        mv, lv, tv = m_max * i / 5, l_max * i / 5, t_max * i / 5
        yy = y(mv, m_max)
        parts += [
            f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#eee"/>',
            f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{mv:,.0f}</text>',
            f'<text x="{left + pw + 6}" y="{yy + 4:.1f}" fill="#c60">{lv:,.0f}</text>',
            f'<text x="{x(tv):.1f}" y="{top + ph + 18}" text-anchor="middle">'
            f"{tv / 60:{fmt}}</text>",
        ]
    parts += [
        f'<text x="16" y="{top + ph / 2}" transform="rotate(-90 16 {top + ph / 2})" '
        'text-anchor="middle">MB</text>',
        f'<text x="{w - 12}" y="{top + ph / 2}" transform="rotate(90 {w - 12} {top + ph / 2})" '
        'text-anchor="middle" fill="#c60">lag (events)</text>',
    ]
    return parts


def write_svg(path: Path, rows: list[dict[str, float]], title: str) -> None:
    """A small line chart of RSS and chDB memory (MB, left axis) and lag (right axis)."""
    w, h, left, right, top, bottom = 900, 420, 70, 80, 40, 50
    pw, ph = w - left - right, h - top - bottom
    t_max = max(r["t_s"] for r in rows) or 1.0
    m_max = max(max(r["rss_mb"], r["chdb_mb"]) for r in rows) * 1.1 or 1.0
    l_max = max(r["lag"] for r in rows) * 1.1 or 1.0
    fmt = ".0f" if t_max >= 600 else ".1f"

    def x(t: float) -> float:
        return left + pw * t / t_max

    def y(v: float, top_v: float) -> float:
        return top + ph * (1 - v / top_v)

    def line(key: str, top_v: float, color: str) -> str:
        pts = " ".join(f"{x(r['t_s']):.1f},{y(max(r[key], 0), top_v):.1f}" for r in rows)
        return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>'

    parts = chart_frame(w, h, left, top, pw, ph, title, x, y, m_max, l_max, t_max, fmt)
    parts += [
        f'<text x="{left + pw / 2}" y="{h - 10}" text-anchor="middle">minutes</text>',
        line("rss_mb", m_max, "#1f6feb"),
        line("chdb_mb", m_max, "#2da44e"),
        line("lag", l_max, "#c60"),
        f'<text x="{left + 10}" y="{top + 16}" fill="#1f6feb">process RSS</text>',
        f'<text x="{left + 110}" y="{top + 16}" fill="#2da44e">chDB MemoryTracking</text>',
        f'<text x="{left + 270}" y="{top + 16}" fill="#c60">lag (sent − written)</text>',
        "</svg>",
    ]
    path.write_text("\n".join(parts) + "\n")


def _png(svg: Path) -> Path | None:
    """The SVG rendered to PNG by a headless Chromium, when one is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    png = svg.with_suffix(".png")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
         "--window-size=900,420", svg.resolve().as_uri()],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return png if png.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=3000.0, help="events/s")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--retention", default="48h", help="the flow's PULSE_FLOW_RETENTION (e.g. 20m, 48h)"
    )
    parser.add_argument(
        "--daily",
        action="store_true",
        help="traffic follows the simulator's daily curve from the current hour (default: "
        "the same all along, so that what the flow holds can level off)",
    )
    args = parser.parse_args()

    from prometheus_client import REGISTRY

    from api.settings import parse_duration
    from flows.config import FlowConfig
    from flows.logic import FlowRules
    from flows.run import FlowThread
    from ingest.broker import EmbeddedBroker
    from ingest.fx import load_fx_rates
    from ingest.topics import Topics, ensure_topics
    from warehouse.client import connect
    from warehouse.migrate import migrate

    seconds = args.minutes * 60
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    csv_path, svg_path = RESULTS / f"soak-{stamp}.csv", RESULTS / f"soak-{stamp}.svg"
    rows: list[dict[str, float]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedBroker(f"127.0.0.1:{_free_port()}") as broker,
    ):
        topics = Topics()
        ensure_topics(broker.bootstrap, topics)
        ours, theirs = mp.Pipe()
        worker = mp.get_context("spawn").Process(
            target=producer_main,
            args=(broker.bootstrap, args.rate, seconds, args.seed, args.daily, theirs),
        )
        worker.start()
        assert ours.recv() == "ready"
        dsn = f"chdb://{tmp}/wh"
        client = connect(dsn)
        migrate(client)
        retention_ms = int(parse_duration(args.retention).total_seconds() * 1000)
        rules = FlowRules(retention_ms=retention_ms)
        flow = FlowThread(
            FlowConfig(broker.bootstrap, topics, dsn, None, load_fx_rates(), rules=rules),
            recovery_dir=Path(tmp) / "rec",
        ).start()
        print(f"flow retention {args.retention}, rate {args.rate:,.0f} events/s", flush=True)
        time.sleep(3.0)
        load_before = subprocess.getoutput("uptime").strip()
        print(f"load before: {load_before}", flush=True)
        ours.send("go")
        t0 = time.time()
        sent, users, done = 0, 0, False
        next_at = t0
        with csv_path.open("w", newline="") as fh:
            out = csv.DictWriter(fh, fieldnames=FIELDS)
            out.writeheader()
            while not done or time.time() - t0 < seconds + args.every:
                while ours.poll():
                    kind, sent, users = ours.recv()
                    done = done or kind == "done"
                if not flow.alive:
                    raise SystemExit(f"the flow stopped: {flow.error!r}")
                if not done and not worker.is_alive():
                    raise SystemExit("the producer process died")
                now = time.time()
                if now >= next_at:
                    chdb = client.query(
                        "SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'"
                    ).result_rows[0][0]
                    written = REGISTRY.get_sample_value("pulse_flow_events_total") or 0.0
                    held = sum(
                        sample.value
                        for metric in REGISTRY.collect()
                        if metric.name == "pulse_flow_users"
                        for sample in metric.samples
                    )
                    py_live, py_arenas = python_heap_mb()
                    malloc_used, malloc_free = malloc_mb()
                    row = {
                        "t_s": round(now - t0, 1),
                        "rss_mb": round(rss_mb(), 1),
                        "chdb_mb": round(chdb / 2**20, 1),
                        "sent": sent,
                        "written": int(written),
                        "lag": int(sent - written),
                        "users": users,
                        "held_users": int(held),
                        "py_live_mb": round(py_live, 1),
                        "py_arenas_mb": round(py_arenas, 1),
                        "malloc_used_mb": round(malloc_used, 1),
                        "malloc_free_mb": round(malloc_free, 1),
                    }
                    rows.append(row)
                    out.writerow(row)
                    fh.flush()
                    if len(rows) % 30 == 1:
                        print(
                            f"  {row['t_s'] / 60:5.1f} min  RSS {row['rss_mb']:7,.0f} MB  "
                            f"chDB {row['chdb_mb']:6,.0f} MB  sent {sent:>10,}  "
                            f"lag {row['lag']:>8,}  users {users:>9,} (held {held:>9,.0f})  "
                            f"Python {py_live:,.0f}/{py_arenas:,.0f} MB  "
                            f"malloc {malloc_used:,.0f}+{malloc_free:,.0f} MB",
                            flush=True,
                        )
                    next_at += args.every
                time.sleep(0.2)
        load_after = subprocess.getoutput("uptime").strip()
        flow.stop()
        worker.join(30)

    half = [r for r in rows if r["t_s"] >= seconds / 2]
    per_min = slope([(r["t_s"] / 60, r["rss_mb"]) for r in half])
    chdb_per_min = slope([(r["t_s"] / 60, r["chdb_mb"]) for r in half])
    per_kuser = slope([(r["users"] / 1000, r["rss_mb"]) for r in half])
    peak = max(rows, key=lambda r: r["rss_mb"])
    title = (
        f"soak: {args.rate:,.0f} events/s for {args.minutes:g} min — peak RSS "
        f"{peak['rss_mb']:,.0f} MB, second-half slope {per_min:+.1f} MB/min"
    )
    write_svg(svg_path, rows, title)
    png_path = _png(svg_path)
    lags = [r["lag"] for r in half]
    print(f"load after:  {load_after}")
    print(
        f"\nsoak: {sent:,} events at {args.rate:,.0f}/s for {args.minutes:g} min, "
        f"{users:,} distinct users; samples every {args.every:g} s"
    )
    print(
        f"  RSS: start {rows[0]['rss_mb']:,.0f} MB, peak {peak['rss_mb']:,.0f} MB "
        f"(at {peak['t_s'] / 60:.1f} min), end {rows[-1]['rss_mb']:,.0f} MB"
    )
    print(
        f"  second half: RSS slope {per_min:+.2f} MB/min ({per_kuser:+.3f} MB per 1,000 new "
        f"users); chDB MemoryTracking slope {chdb_per_min:+.2f} MB/min; "
        f"lag mean {statistics.fmean(lags or [0]):,.0f}, max {max(lags, default=0):,} events"
    )
    first, last = half[0] if half else rows[0], rows[-1]
    where = ("held_users", "py_live_mb", "py_arenas_mb", "malloc_used_mb", "malloc_free_mb")
    changes = ", ".join(f"{k} {first[k]:,.0f} -> {last[k]:,.0f}" for k in (*where, "chdb_mb"))
    print(f"  second half, start -> end: {changes}")
    print(f"  samples: {csv_path}\n  plot:    {svg_path}" + (f", {png_path}" if png_path else ""))


if __name__ == "__main__":
    main()
