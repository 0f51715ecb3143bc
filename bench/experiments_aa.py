"""Honest peeking: a simulated A/A study of the experiment statistics (CONTRACT §10).

    .venv/bin/python bench/experiments_aa.py [--experiments 400] [--days 14]
        [--users-per-day 400] [--seed 17] [--out docs/img/experiments_aa.svg]

Each simulated experiment has two identical variants (no true effect): every day
``--users-per-day`` new users per variant (Poisson) are exposed, each converting with
probability 5 %, a converter placing 1 + Poisson(0.15) orders of log-normal value (median
EUR 60). The experiment is looked at once a day for ``--days`` days, on the cumulative
data, with the API's own statistics (`insights.experiments.report.experiment_report`,
from the per-variant sufficient statistics the warehouse query returns) — once with plain
intervals and once with ``sequential=true``. A false positive is a look where a metric's
p-value is under 0.05; the study reports, per metric, the share of experiments with at
least one false positive over the looks (what a person who stops at the first
"significant" look would suffer), and the share at the last look only.

It writes the table (stdout, Markdown) and a chart of the cumulative false-positive rate
by look day (SVG, and PNG beside it when Chromium is installed).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from insights.experiments.report import experiment_report  # noqa: E402

METRICS = ("conversion", "add_to_cart_rate", "orders_per_user", "revenue_per_user", "aov")
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _day_sums(rng: np.random.Generator, n: int) -> dict[str, float]:
    """The sums of one day's ``n`` new users of one variant (per-user values drawn)."""
    conv = rng.random(n) < 0.05
    atc = conv | (rng.random(n) < 0.10)
    orders = conv * (1 + rng.poisson(0.15, n))
    revenue = np.zeros(n)
    buyers = np.flatnonzero(orders)
    for i in buyers:
        revenue[i] = rng.lognormal(np.log(60.0), 0.8, orders[i]).sum()
    revenue = np.round(revenue, 2)
    o = orders.astype(float)
    return {
        "conv": float(conv.sum()), "atc": float(atc.sum()), "orders": float(o.sum()),
        "orders_sq": float((o * o).sum()), "revenue": float(revenue.sum()),
        "revenue_sq": float((revenue * revenue).sum()),
        "revenue_x_orders": float((revenue * o).sum()),
    }  # fmt: skip


def simulate(experiments: int, days: int, users_per_day: float, seed: int) -> dict[str, np.ndarray]:
    """p-values per (mode, metric): arrays [experiment, look day]."""
    rng = np.random.Generator(np.random.PCG64(seed))
    p = {(mode, m): np.ones((experiments, days)) for mode in ("plain", "sequential")
         for m in METRICS}  # fmt: skip
    for e in range(experiments):
        users = {"control": 0, "B": 0}
        sums: dict[str, dict[str, float]] = {"control": {}, "B": {}}
        for d in range(days):
            for v in users:
                n = int(rng.poisson(users_per_day))
                users[v] += n
                for k, x in _day_sums(rng, n).items():
                    sums[v][k] = sums[v].get(k, 0.0) + x
            end = T0 + timedelta(days=d + 1)
            for mode in ("plain", "sequential"):
                report = experiment_report("aa", T0, end, users, sums,
                                           sequential=mode == "sequential")  # fmt: skip
                for r in report.results:
                    p[(mode, r.metric)][e, d] = r.p_value
    return {f"{mode}/{m}": v for (mode, m), v in p.items()}


def table(p: dict[str, np.ndarray], alpha: float = 0.05) -> str:
    """Markdown: per metric, the false-positive rate at any look and at the last look."""
    _n, days = next(iter(p.values())).shape
    rows = [
        f"| metric | plain: any of {days} daily looks | plain: last look | "
        f"sequential: any look | sequential: last look |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in METRICS:
        cells = []
        for mode in ("plain", "sequential"):
            hits = p[f"{mode}/{m}"] < alpha
            cells += [f"{hits.any(axis=1).mean():.1%}", f"{hits[:, -1].mean():.1%}"]
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def cumulative(p: np.ndarray, alpha: float = 0.05) -> list[float]:
    """Share of experiments with a false positive at or before each look."""
    hits = np.logical_or.accumulate(p < alpha, axis=1)
    return [float(x) for x in hits.mean(axis=0)]


def write_svg(path: Path, p: dict[str, np.ndarray], title: str) -> None:
    """Cumulative false-positive rate by look day, plain and sequential (two metrics)."""
    w, h, left, top, pw, ph = 820, 420, 70, 40, 540, 320
    days = next(iter(p.values())).shape[1]
    y_max = 0.4

    def x(d: float) -> float:
        return left + pw * (d - 1) / max(days - 1, 1)

    def y(v: float) -> float:
        return top + ph * (1 - min(v, y_max) / y_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">{title}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for i in range(5):
        v = y_max * i / 4
        yv = f"{y(v):.1f}"
        parts += [
            f'<line x1="{left}" y1="{yv}" x2="{left + pw}" y2="{yv}" stroke="#eee"/>',
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0%}</text>',
        ]
    for d in range(1, days + 1):
        parts.append(f'<text x="{x(d):.1f}" y="{top + ph + 18}" text-anchor="middle">{d}</text>')
    parts += [
        f'<line x1="{left}" y1="{y(0.05):.1f}" x2="{left + pw}" y2="{y(0.05):.1f}" '
        'stroke="#999" stroke-dasharray="4 4"/>',
        f'<text x="{left + pw + 6}" y="{y(0.05) + 4:.1f}">α = 5%</text>',
        f'<text x="{left + pw / 2}" y="{h - 12}" text-anchor="middle">look (day)</text>',
    ]
    series = [
        ("plain/conversion", "#d1242f", "plain, conversion"),
        ("plain/revenue_per_user", "#fb8f44", "plain, revenue per user"),
        ("sequential/conversion", "#1f6feb", "sequential, conversion"),
        ("sequential/revenue_per_user", "#2da44e", "sequential, revenue per user"),
    ]
    for n, (key, color, label) in enumerate(series):
        pts = " ".join(f"{x(d + 1):.1f},{y(v):.1f}" for d, v in enumerate(cumulative(p[key])))
        parts += [f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>',
                  f'<text x="{left + pw + 6}" y="{top + 16 + 18 * n}" fill="{color}">'
                  f"{label}</text>"]  # fmt: skip
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


def to_png(svg: Path, size: str = "820,420") -> Path | None:
    """The SVG rendered to PNG by a headless Chromium, when one is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    png = svg.with_suffix(".png")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
         f"--window-size={size}", svg.resolve().as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    return png if png.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=400)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--users-per-day", type=float, default=400.0, help="per variant")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img/experiments_aa.svg")
    args = parser.parse_args()
    started = time.perf_counter()
    p = simulate(args.experiments, args.days, args.users_per_day, args.seed)
    took = time.perf_counter() - started
    print(f"A/A study: {args.experiments} experiments, {args.days} daily looks, "
          f"~{args.users_per_day:g} new users per variant and day, seed {args.seed}\n")  # fmt: skip
    print(table(p))
    by_look = {mode: ", ".join(f"{v:.1%}" for v in cumulative(p[f"{mode}/conversion"]))
               for mode in ("plain", "sequential")}  # fmt: skip
    print(f"\nCumulative false-positive rate by look (conversion): plain {by_look['plain']}; "
          f"sequential {by_look['sequential']}")  # fmt: skip
    write_svg(args.out, p, f"A/A: experiments with ≥ 1 false positive by look day "
              f"({args.experiments} experiments)")  # fmt: skip
    png = to_png(args.out)
    print(f"\nchart: {args.out}" + (f" and {png}" if png else "") + f"; took {took:.0f} s")


if __name__ == "__main__":
    main()
