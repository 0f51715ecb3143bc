"""The streaming detector on the Numenta Anomaly Benchmark (development part).

    .venv/bin/python bench/nab.py [--data DIR] [--out DIR] [--jobs N]

Runs `insights.detector` with its default `DetectorConfig` over every
``<category>/<file>.csv`` of the NAB data (default ``../shared/data/nab``), one fresh
detector per file, each row scored online from the rows before it. Writes
``OUT/<category>/<file>.csv`` (``timestamp,value,anomaly_score``, default
``bench/results/nab``), then runs the shared scorer (``../shared/tools/nab_score.py``) on
it and prints its table: threshold, raw and normalised score for the standard,
reward_low_FP_rate and reward_low_FN_rate profiles.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from insights.detector import score_series  # noqa: E402

SHARED = ROOT.parent / "shared"


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def score_file(src: Path, dst: Path) -> tuple[str, int, float]:
    """Score one NAB file into ``dst``; return its name, row count and seconds taken."""
    with src.open(newline="") as f:
        rows = list(csv.DictReader(f))
    stamps = [_parse_ts(r["timestamp"]) for r in rows]
    values = [float(r["value"]) for r in rows]
    start = time.perf_counter()
    scores = score_series(stamps, values)
    took = time.perf_counter() - start
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["timestamp", "value", "anomaly_score"])
        for row, score in zip(rows, scores, strict=True):
            out.writerow([row["timestamp"], row["value"], f"{score:.6f}"])
    return f"{src.parent.name}/{src.name}", len(rows), took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "nab")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "nab")
    ap.add_argument("--scorer", type=Path, default=SHARED / "tools" / "nab_score.py")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--verbose", action="store_true", help="print each file's time")
    args = ap.parse_args()

    files = sorted(p for p in args.data.glob("*/*.csv"))
    if not files:
        print(f"no <category>/<file>.csv under {args.data}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(score_file, p, args.out / p.parent.name / p.name) for p in files]
        results = [f.result() for f in futures]
    wall = time.perf_counter() - start
    rows = sum(n for _, n, _ in results)
    cpu = sum(t for _, _, t in results)
    if args.verbose:
        for name, n, took in results:
            print(f"{name:60s} {n:6d} rows {took:6.2f}s")
    print(
        f"scored {len(files)} files, {rows} rows in {wall:.1f}s wall "
        f"({cpu:.1f}s detector time, {args.jobs} jobs) -> {args.out}"
    )
    scored = subprocess.run(
        [sys.executable, str(args.scorer), str(args.data), str(args.out)],
        capture_output=True,
        text=True,
        check=False,
    )
    print(scored.stdout, end="")
    if scored.returncode != 0:
        print(scored.stderr, file=sys.stderr, end="")
    return scored.returncode


if __name__ == "__main__":
    sys.exit(main())
