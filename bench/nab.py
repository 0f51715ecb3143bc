"""The streaming detector on the Numenta Anomaly Benchmark (development part).

    .venv/bin/python bench/nab.py [--data DIR] [--out DIR] [--jobs N] [--set NAME=VALUE ...]
                                  [--files] [--resample MINUTES] [--loco]
                                  [--loco-resample MINUTES,...] [--plot FILE ...]

Runs `insights.detector` (its default `DetectorConfig`, or that with ``--set`` overrides)
over every ``<category>/<file>.csv`` of the NAB data (default ``../shared/data/nab``), one
fresh detector per file, each row scored online from the rows before it. Writes
``OUT/<category>/<file>.csv`` (``timestamp,value,anomaly_score``, default
``bench/results/nab``), then runs the shared scorer (``../shared/tools/nab_score.py``) on
it and prints its table: threshold, raw and normalised score for the standard,
reward_low_FP_rate and reward_low_FN_rate profiles.

``--files`` adds a per-file report (standard profile, corpus threshold): each window with
the delay of its first detection (in rows and as a fraction of the window) and its
credit, and the false positives with their cost; also written to ``OUT/files.txt``.

``--resample MINUTES`` is a stress test, not NAB's score: every file as means over
clock buckets of that length, windows moved to the buckets they cover (the in-process
sweep scores it; results under ``OUT-<MINUTES>m``). Two weeks of 5-minute rows become
336 hourly ones: the same anomalies with few rows and few daily cycles.

``--loco`` is the leave-one-category-out evaluation. Every parameter set of the grid
(``GRID``: the chosen set and its neighbours on a few parameters) scores every file, as
it is and resampled to each ``--loco-resample`` length (default 15, 30, 60 minutes);
then for each category the grid winner on the *other* categories (mean standard score
over those resolutions, threshold swept over those categories) scores the left-out
one, with its own threshold sweep (as an unseen part of NAB is scored) and with the
threshold carried over from the others, and at each resolution. A category without
windows (artificialNoAnomaly) reports its false-positive cost at the carried threshold
instead. Written to ``OUT/loco.txt`` as well.

``--plot FILE`` draws each named file (``category/file.csv``) with its windows, the
detector's score and the standard threshold into ``docs/img/nab-<file>.svg``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from insights.detector import DEFAULT, DetectorConfig, score_series  # noqa: E402

SHARED = ROOT.parent / "shared"
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")

GRID: dict[str, tuple[Any, ...]] = {
    "event_gap": (64, 96, 144),
    "escalation": (1.5, 2.0),
}
"""The parameters the leave-one-category-out evaluation re-chooses, and their candidates."""


# ---------------------------------------------------------------- data and scoring


@dataclasses.dataclass(frozen=True)
class NabFile:
    """One data file: its key ``category/file.csv``, rows and window row ranges."""

    key: str
    timestamps: list[str]
    values: list[float]
    windows: list[tuple[int, int]]

    @property
    def category(self) -> str:
        return self.key.split("/")[0]


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def load_corpus(data: Path) -> list[NabFile]:
    """Every ``<category>/<file>.csv`` under ``data`` with its windows as row ranges."""
    windows = json.loads((data / "windows.json").read_text())
    out = []
    for path in sorted(data.glob("*/*.csv")):
        key = f"{path.parent.name}/{path.name}"
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        stamps = [r["timestamp"] for r in rows]
        first = {}
        for i, t in enumerate(stamps):
            first.setdefault(_parse_ts(t), i)
        spans = [(first[_parse_ts(a)], first[_parse_ts(b)]) for a, b in windows.get(key, [])]
        out.append(NabFile(key, stamps, [float(r["value"]) for r in rows], spans))
    return out


def resample(files: Sequence[NabFile], minutes: int) -> list[NabFile]:
    """Each file as means over clock buckets of ``minutes`` (files already that coarse stay).

    A window covers the buckets from the one holding its first row to the one holding its
    last; windows that reach into the probationary rows are dropped, as NAB's labeller
    did. A stress test of the same anomalies with fewer rows and fewer seasonal cycles
    (2 weeks of 5-minute rows become 336 hourly ones).
    """
    out = []
    width = 60 * minutes
    for f in files:
        stamps = [_parse_ts(t) for t in f.timestamps]
        steps = sorted((b - a).total_seconds() for a, b in itertools.pairwise(stamps[:50]))
        if steps and steps[len(steps) // 2] >= width:
            out.append(f)
            continue
        buckets: dict[float, list[float]] = {}
        row_bucket = []
        for t, v in zip(stamps, f.values, strict=True):
            key = t.timestamp() // width * width
            buckets.setdefault(key, []).append(v)
            row_bucket.append(key)
        order = sorted(buckets)
        index = {k: i for i, k in enumerate(order)}
        probation = min(math.floor(0.15 * len(order)), 750)
        spans = [(index[row_bucket[b]], index[row_bucket[e]]) for b, e in f.windows]
        spans = [(b, e) for b, e in spans if b >= probation]  # as NAB's labeller did
        out.append(
            NabFile(
                f.key,
                [datetime.fromtimestamp(k, UTC).strftime("%Y-%m-%d %H:%M:%S") for k in order],
                [math.fsum(buckets[k]) / len(buckets[k]) for k in order],
                spans,
            )
        )
    return out


def score_file(file: NabFile, config: DetectorConfig) -> tuple[list[float], float]:
    """Scores of one file by a fresh detector, and the seconds that took."""
    stamps = [_parse_ts(t) for t in file.timestamps]
    start = time.perf_counter()
    scores = score_series(stamps, file.values, config)
    return scores, time.perf_counter() - start


def score_corpus(
    files: Sequence[NabFile], config: DetectorConfig, jobs: int
) -> tuple[dict[str, list[float]], float]:
    """Scores of every file (by key) and the detector's total seconds."""
    if jobs <= 1:
        results = [score_file(f, config) for f in files]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(score_file, files, itertools.repeat(config)))
    return {f.key: s for f, (s, _) in zip(files, results, strict=True)}, sum(t for _, t in results)


def _scorer_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("nab_score", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the scorer {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The optimised threshold of one profile over some files and what it earned."""

    threshold: float
    raw: float
    score: float
    n_windows: int
    per_file: dict[str, float]


class Scorer:
    """The shared scorer's row weights, precomputed per file and profile, swept in-process.

    Gives the same numbers as ``nab_score.py`` (the row weights are its own), for any
    subset of files, fast enough for a grid.
    """

    def __init__(self, files: Sequence[NabFile], scorer_path: Path) -> None:
        module = _scorer_module(scorer_path)
        self.costs: dict[str, tuple[float, float, float]] = dict(module.PROFILES)
        self.weights = {
            (f.key, p): module.row_weights(
                len(f.values), f.windows, self.costs[p][0], self.costs[p][1]
            )
            for f in files
            for p in PROFILES
        }
        self.windows = {f.key: len(f.windows) for f in files}

    def sweep(self, keys: Iterable[str], scores: dict[str, list[float]], profile: str) -> Sweep:
        """NAB's threshold sweep over the files ``keys`` (section 6 of SCORING.md)."""
        _, _, a_fn = self.costs[profile]
        points = []
        n_windows = 0
        keys = list(keys)
        for key in keys:
            n_windows += self.windows[key]
            for s, item in zip(scores[key], self.weights[(key, profile)], strict=True):
                if item is not None:
                    points.append((s, key, item[0], item[1]))
        points.sort(key=lambda p: -p[0])
        best: dict[tuple[str, int], float] = {}
        total = -a_fn * n_windows
        top = (total, 1.1)
        i = 0
        while i < len(points):
            thr = points[i][0]
            while i < len(points) and points[i][0] == thr:
                _, key, win, w = points[i]
                if win is None:
                    total += w
                else:
                    old = best.get((key, win), -a_fn)
                    if w > old:
                        total += w - old
                        best[(key, win)] = w
                i += 1
            if total > top[0]:
                top = (total, thr)
        raw, thr = top
        per_file = {k: self.file_raw(k, scores[k], thr, profile) for k in keys}
        null = -a_fn * n_windows
        perfect = self.costs[profile][0] * n_windows
        score = 100.0 * (raw - null) / (perfect - null) if n_windows else math.nan
        return Sweep(thr, raw, score, n_windows, per_file)

    def file_raw(self, key: str, scores: list[float], thr: float, profile: str) -> float:
        """Raw score of one file at threshold ``thr``."""
        _, _, a_fn = self.costs[profile]
        best: dict[int, float] = {}
        fp = 0.0
        for s, item in zip(scores, self.weights[(key, profile)], strict=True):
            if item is None or s < thr:
                continue
            win, w = item
            if win is None:
                fp += w
            else:
                best[win] = max(best.get(win, -math.inf), w)
        return fp + sum(best.get(k, -a_fn) for k in range(self.windows[key]))


# ---------------------------------------------------------------- reports


def file_report(
    files: Sequence[NabFile], scores: dict[str, list[float]], scorer: Scorer, thr: float
) -> list[str]:
    """One line per file: windows (first detection delay, credit), false positives."""
    lines = [f"per file, standard profile, threshold {thr:.4f}"]
    for f in files:
        weights = scorer.weights[(f.key, "standard")]
        s = scores[f.key]
        parts = []
        for k, (b, e) in enumerate(f.windows):
            hit = next((i for i in range(b, e + 1) if s[i] >= thr), None)
            if hit is None:
                parts.append(f"W{k}[{b}-{e}] MISS (max {max(s[b : e + 1]):.2f})")
            else:
                item = weights[hit]
                credit = item[1] if item else 0.0
                parts.append(f"W{k} +{hit - b}r ({(hit - b) / (e - b + 1):.2f}) {credit:+.2f}")
        fps = [(i, w[1]) for i, w in enumerate(weights) if w and w[0] is None and s[i] >= thr]
        fp_cost = sum(w for _, w in fps)
        fp_rows = ",".join(str(i) for i, _ in fps[:8]) + ("..." if len(fps) > 8 else "")
        raw = scorer.file_raw(f.key, s, thr, "standard")
        lines.append(
            f"{f.key:58s} raw {raw:+6.2f} | {'; '.join(parts) or 'no windows'}"
            f" | FP {len(fps)} ({fp_cost:+.2f}) {fp_rows}"
        )
    return lines


def _config_with(overrides: dict[str, Any]) -> DetectorConfig:
    return dataclasses.replace(DEFAULT, **overrides)


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(DetectorConfig)}
    out: dict[str, Any] = {}
    for item in items:
        name, _, text = item.partition("=")
        if name not in fields:
            raise SystemExit(f"--set {item}: no DetectorConfig field {name!r}")
        current = getattr(DEFAULT, name)
        if isinstance(current, bool):
            out[name] = text.lower() in ("1", "true", "yes")
        elif isinstance(current, tuple):
            out[name] = tuple(int(x) for x in text.split(",") if x)
        else:
            out[name] = type(current)(text)
    return out


def loco(
    files: Sequence[NabFile],
    scorer_path: Path,
    base: dict[str, Any],
    jobs: int,
    resolutions: Sequence[int] = (),
) -> list[str]:
    """Leave-one-category-out over the grid; the report's lines.

    With ``resolutions`` (minutes), the files are also scored as means over buckets of
    those lengths (`resample`), and a parameter set is chosen by its mean standard score
    over the native and resampled files of the other categories.
    """
    names = list(GRID)
    grid = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*GRID.values())]
    chosen = {n: base.get(n, getattr(DEFAULT, n)) for n in names}
    if chosen not in grid:
        grid.append(chosen)
    views = [("native", list(files))] + [(f"{m}m", resample(files, m)) for m in resolutions]
    scorers = {name: Scorer(fs, scorer_path) for name, fs in views}
    results: list[tuple[dict[str, Any], dict[str, dict[str, list[float]]]]] = []
    for params in grid:
        config = _config_with({**base, **params})
        results.append((params, {name: score_corpus(fs, config, jobs)[0] for name, fs in views}))
    cats = sorted({f.category for f in files})
    by_cat = {c: [f.key for f in files if f.category == c] for c in cats}
    all_keys = [f.key for f in files]
    native = scorers["native"]

    def label(params: dict[str, Any]) -> str:
        return " ".join(f"{k}={v}" for k, v in params.items())

    def criterion(keys: list[str], by_view: dict[str, dict[str, list[float]]]) -> float:
        return statistics.fmean(
            scorers[name].sweep(keys, by_view[name], "standard").score for name, _ in views
        )

    view_names = [name for name, _ in views]
    lines = [
        f"grid: {len(grid)} parameter sets over {', '.join(names)}; "
        f"chosen by the mean standard score over {', '.join(view_names)}"
    ]
    lines.append(f"  {'':40s} " + " ".join(f"{n:>7s}" for n in view_names))
    for params, by_view in results:
        cells = [scorers[n].sweep(all_keys, by_view[n], "standard").score for n in view_names]
        lines.append(f"  {label(params):40s} " + " ".join(f"{c:7.2f}" for c in cells))
    chosen_views = next(v for p, v in results if p == chosen)
    lines.append(f"chosen: {label(chosen)}")
    extra = "".join(f" {'chosen ' + n:>10s} {'LOCO ' + n:>9s}" for n in view_names[1:])
    lines.append(
        f"{'category':24s} {'chosen':>8s} {'LOCO':>8s} {'LOCO@thr':>9s}{extra}  winner without it"
    )
    for cat in cats:
        rest = [k for k in all_keys if k not in by_cat[cat]]
        params, by_view = max(results, key=lambda r: criterion(rest, r[1]))
        scores = by_view["native"]
        top = native.sweep(rest, scores, "standard")
        own_chosen = native.sweep(by_cat[cat], chosen_views["native"], "standard")
        own = native.sweep(by_cat[cat], scores, "standard")
        carried = sum(native.file_raw(k, scores[k], top.threshold, "standard") for k in by_cat[cat])
        n = own.n_windows
        if not n:
            chosen_thr = native.sweep(rest, chosen_views["native"], "standard").threshold
            chosen_fp = sum(
                native.file_raw(k, chosen_views["native"][k], chosen_thr, "standard")
                for k in by_cat[cat]
            )
            lines.append(
                f"{cat:24s} {'FP ' + format(chosen_fp, '.2f'):>8s} {'':>8s} "
                f"{'FP ' + format(carried, '.2f'):>9s}  {label(params)} (no windows: raw FP cost)"
            )
            continue
        cells = ""
        for name in view_names[1:]:
            a = scorers[name].sweep(by_cat[cat], chosen_views[name], "standard").score
            b = scorers[name].sweep(by_cat[cat], by_view[name], "standard").score
            cells += f" {a:10.2f} {b:9.2f}"
        at_thr = 100.0 * (carried + n) / (2 * n)
        lines.append(
            f"{cat:24s} {own_chosen.score:8.2f} {own.score:8.2f} {at_thr:9.2f}{cells}"
            f"  {label(params)}"
        )
    return lines


# ---------------------------------------------------------------- plot


def plot_svg(file: NabFile, scores: list[float], thr: float, path: Path) -> None:
    """Series (top), windows (shaded), score and threshold (bottom) as a small SVG."""
    w, h, pad = 900, 300, 30
    n = len(file.values)
    lo, hi = min(file.values), max(file.values)
    span = (hi - lo) or 1.0
    probation = min(math.floor(0.15 * n), 750)

    def x(i: int) -> float:
        return pad + (w - 2 * pad) * i / max(n - 1, 1)

    def y_val(v: float) -> float:
        return pad + (h * 0.6 - pad) * (1.0 - (v - lo) / span)

    def y_score(s: float) -> float:
        return h * 0.65 + (h * 0.35 - pad / 2) * (1.0 - s)

    step = max(1, n // 1800)
    series = " ".join(f"{x(i):.1f},{y_val(file.values[i]):.1f}" for i in range(0, n, step))
    score_line = " ".join(
        f"{x(i):.1f},{y_score(max(scores[i : i + step])):.1f}" for i in range(0, n, step)
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<rect x="{pad}" y="{pad}" width="{x(probation) - pad:.1f}" height="{h - 1.5 * pad}" '
        'fill="#eeeeee"/>',
    ]
    for b, e in file.windows:
        parts.append(
            f'<rect x="{x(b):.1f}" y="{pad}" width="{max(x(e) - x(b), 1):.1f}" '
            f'height="{h - 1.5 * pad}" fill="#ffd8a8"/>'
        )
    parts += [
        f'<polyline points="{series}" fill="none" stroke="#1c5fa8" stroke-width="1"/>',
        f'<polyline points="{score_line}" fill="none" stroke="#c92a2a" stroke-width="1"/>',
        f'<line x1="{pad}" x2="{w - pad}" y1="{y_score(thr):.1f}" y2="{y_score(thr):.1f}" '
        'stroke="#555" stroke-dasharray="4 3"/>',
        f'<text x="{pad}" y="{pad - 10}">{file.key}: value (blue), windows (orange), '
        f"probation (grey), score (red), threshold {thr:.3f} (dashed)</text>",
        "</svg>",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


# ---------------------------------------------------------------- main


def _write_scores(files: Sequence[NabFile], scores: dict[str, list[float]], out: Path) -> None:
    for f in files:
        dst = out / f.key
        dst.parent.mkdir(parents=True, exist_ok=True)
        with dst.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["timestamp", "value", "anomaly_score"])
            for t, v, s in zip(f.timestamps, f.values, scores[f.key], strict=True):
                writer.writerow([t, repr(v), f"{s:.6f}"])


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "nab")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "nab")
    ap.add_argument("--scorer", type=Path, default=SHARED / "tools" / "nab_score.py")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--files", action="store_true", help="per-file report")
    ap.add_argument("--loco", action="store_true", help="leave-one-category-out evaluation")
    ap.add_argument(
        "--loco-resample",
        default="15,30,60",
        metavar="MINUTES,...",
        help="--loco also scores the files resampled to these bucket lengths ('' for none)",
    )
    ap.add_argument(
        "--resample",
        type=int,
        default=0,
        metavar="MINUTES",
        help="stress test: score the files as means over MINUTES-long buckets",
    )
    ap.add_argument("--plot", action="append", default=[], metavar="CATEGORY/FILE.csv")
    args = ap.parse_args()

    files = load_corpus(args.data) if (args.data / "windows.json").exists() else []
    if not files:
        print(f"no <category>/<file>.csv and windows.json under {args.data}", file=sys.stderr)
        return 2
    if args.resample:
        files = resample(files, args.resample)
    overrides = _parse_set(args.set)
    config = _config_with(overrides)
    start = time.perf_counter()
    scores, cpu = score_corpus(files, config, args.jobs)
    wall = time.perf_counter() - start
    rows = sum(len(f.values) for f in files)
    out = args.out if not args.resample else args.out.with_name(f"{args.out.name}-{args.resample}m")
    _write_scores(files, scores, out)
    print(
        f"scored {len(files)} files, {rows} rows in {wall:.1f}s wall ({cpu:.1f}s detector "
        f"time, {1e6 * cpu / rows:.0f} µs per row, {args.jobs} jobs) -> {out}"
    )
    if overrides:
        print("with " + " ".join(f"{k}={v}" for k, v in overrides.items()))
    if args.resample:
        print(f"resampled to {args.resample}-minute means (a stress test, not NAB's score)")
    else:
        scored = subprocess.run(
            [sys.executable, str(args.scorer), str(args.data), str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        print(scored.stdout, end="")
        if scored.returncode != 0:
            print(scored.stderr, file=sys.stderr, end="")
            return scored.returncode
    scorer = Scorer(files, args.scorer)
    keys = [f.key for f in files]
    standard = scorer.sweep(keys, scores, "standard")
    if args.resample:
        for profile in PROFILES:
            sw = scorer.sweep(keys, scores, profile)
            print(f"{profile:19s} thr={sw.threshold:.6f} raw={sw.raw:9.3f} score={sw.score:7.3f}")
    own = {
        c: scorer.sweep([k for k in keys if k.startswith(c + "/")], scores, "standard").score
        for c in sorted({f.category for f in files if f.windows})
    }
    print("by category (own sweep, standard): " + ", ".join(f"{c} {v:.1f}" for c, v in own.items()))
    if args.files:
        lines = file_report(files, scores, scorer, standard.threshold)
        (out / "files.txt").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    for key in args.plot:
        match = [f for f in files if f.key == key]
        if not match:
            print(f"--plot {key}: no such file", file=sys.stderr)
            continue
        name = Path(key).stem
        plot_svg(
            match[0], scores[key], standard.threshold, ROOT / "docs" / "img" / f"nab-{name}.svg"
        )
    if args.loco:
        resolutions = [int(m) for m in args.loco_resample.split(",") if m]
        lines = loco(files, args.scorer, overrides, args.jobs, resolutions)
        (out / "loco.txt").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
