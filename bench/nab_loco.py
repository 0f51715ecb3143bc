"""Leave-one-category-out on the NAB development part: does one parameter set generalise?

    .venv/bin/python bench/nab_loco.py [--grid NAME=V1,V2,... ...] [--set NAME=VALUE ...]
                                       [--resample MINUTES,...] [--jobs N] [--cache DIR]

Every parameter set of the grid (the product of the ``--grid`` candidates on top of the
default `DetectorConfig` with the ``--set`` overrides; default grid: ``GRID`` of
`bench/nab.py`) scores every file of the development part (``../shared/data/nab``) with a
fresh detector per file, online, exactly as `bench/nab.py` does, and with that runner's
scorer (the shared scorer's row weights, threshold swept as NAB does). Then, for each
category with windows, the set with the best standard score on the *other* categories is
chosen and scores the left-out one:

* ``LOCO``: the left-out category with its own threshold sweep (as NAB scores a part of
  the corpus the detector never saw);
* ``LOCO@thr``: with the threshold carried over from the other categories (the harder
  test: the score scale must mean the same on unseen data);
* ``default``: the default set (``--set`` applied) on the same category, for comparison.

A category without windows (artificialNoAnomaly) reports its false-positive cost at the
carried threshold. The full development score of every set closes the table.

``--resample 15,30`` also scores the files as means over 15- and 30-minute buckets (see
`bench/nab.resample`: short files with few daily cycles, like NAB's hourly and traffic
categories) and chooses by the mean standard score over all views; each view is then
reported. ``--cache DIR`` keeps each set's scores (keyed by the set, the view and the
detector's source) so a rerun or a larger grid only scores what is new. Progress goes to
stderr, the table to stdout and ``OUT/loco.txt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import os
import pickle
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import nab  # noqa: E402  (bench/nab.py: corpus, resampling, scorer)

from insights.detector import DEFAULT, DetectorConfig  # noqa: E402

__all__ = ["Evaluation", "choose", "main", "parse_grid"]

_SOURCES = ("insights/detector.py", "insights/_novelty.py", "insights/_seasonal.py")


def parse_grid(items: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """``NAME=V1,V2`` items as candidates per `DetectorConfig` field, typed like the field."""
    fields = {f.name for f in dataclasses.fields(DetectorConfig)}
    grid: dict[str, tuple[Any, ...]] = {}
    for item in items:
        name, _, text = item.partition("=")
        if name not in fields or not text:
            raise SystemExit(f"--grid {item}: expected NAME=V1,V2,... with a DetectorConfig field")
        current = getattr(DEFAULT, name)
        try:
            if isinstance(current, tuple):  # a tuple field: candidates separated by ';'
                grid[name] = tuple(
                    tuple(int(x) for x in c.split(",") if x) for c in text.split(";")
                )
            elif isinstance(current, bool):
                grid[name] = tuple(c.lower() in ("1", "true", "yes") for c in text.split(","))
            else:
                grid[name] = tuple(type(current)(c) for c in text.split(","))
        except ValueError:
            kind = type(current).__name__
            raise SystemExit(f"--grid {item}: {name} takes {kind} values") from None
    return grid


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One left-out category: the set chosen without it and what it scored."""

    category: str
    winner: dict[str, Any]
    loco: dict[str, float]
    """Standard score per view with the category's own threshold sweep."""
    default: dict[str, float]
    """The default set's standard score per view, own sweep."""
    carried: float
    """Native standard score at the threshold carried from the other categories (raw
    false-positive cost when the category has no windows)."""


def choose(
    candidates: Sequence[tuple[dict[str, Any], dict[str, float]]],
) -> tuple[dict[str, Any], dict[str, float]]:
    """The candidate with the best mean criterion (ties: the first, i.e. grid order)."""
    return max(candidates, key=lambda c: statistics.fmean(c[1].values()))


def _label(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) or "(default)"


def _source_digest() -> str:
    h = hashlib.sha256()
    for rel in _SOURCES:
        h.update((ROOT / rel).read_bytes())
    return h.hexdigest()[:16]


def _scores(
    config: DetectorConfig,
    view: str,
    files: Sequence[nab.NabFile],
    jobs: int,
    cache: Path | None,
    digest: str,
) -> dict[str, list[float]]:
    key = hashlib.sha256(f"{digest}|{view}|{config!r}".encode()).hexdigest()[:24]
    path = cache / f"{key}.pickle" if cache else None
    if path and path.exists():
        with path.open("rb") as f:
            cached: dict[str, list[float]] = pickle.load(f)  # our own cache
        return cached
    scores, _ = nab.score_corpus(files, config, jobs)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            pickle.dump(scores, f)
    return scores


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(
    files: Sequence[nab.NabFile],
    scorer_path: Path,
    base: dict[str, Any],
    grid: dict[str, tuple[Any, ...]],
    resolutions: Sequence[int],
    jobs: int,
    cache: Path | None,
) -> list[str]:
    """Score the grid, leave each category out in turn; the report's lines."""
    names = list(grid)
    sets = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]
    default = {n: base.get(n, getattr(DEFAULT, n)) for n in names}
    if default not in sets:
        sets.append(default)
    views = [("native", list(files))] + [(f"{m}m", nab.resample(files, m)) for m in resolutions]
    scorers = {name: nab.Scorer(fs, scorer_path) for name, fs in views}
    digest = _source_digest()
    results: list[tuple[dict[str, Any], dict[str, dict[str, list[float]]]]] = []
    total = len(sets) * len(views)
    done = 0
    started = time.perf_counter()
    for params in sets:
        config = dataclasses.replace(DEFAULT, **{**base, **params})
        by_view = {}
        for name, fs in views:
            t0 = time.perf_counter()
            by_view[name] = _scores(config, name, fs, jobs, cache, digest)
            done += 1
            _progress(
                f"[{done}/{total}] {_label(params)} {name}: {time.perf_counter() - t0:.0f}s "
                f"({time.perf_counter() - started:.0f}s so far)"
            )
        results.append((params, by_view))

    view_names = [name for name, _ in views]
    all_keys = [f.key for f in files]
    cats = sorted({f.category for f in files})
    by_cat = {c: [f.key for f in files if f.category == c] for c in cats}
    default_views = next(v for p, v in results if p == default)

    def per_view(keys: list[str], by_view: dict[str, dict[str, list[float]]]) -> dict[str, float]:
        return {n: scorers[n].sweep(keys, by_view[n], "standard").score for n in view_names}

    native = scorers["native"]
    evaluations = []
    for cat in cats:
        rest = [k for k in all_keys if k not in by_cat[cat]]
        winner, _ = choose([(p, per_view(rest, v)) for p, v in results])
        scores = next(v for p, v in results if p == winner)
        thr = native.sweep(rest, scores["native"], "standard").threshold
        raw = sum(native.file_raw(k, scores["native"][k], thr, "standard") for k in by_cat[cat])
        n = sum(native.windows[k] for k in by_cat[cat])
        carried = 100.0 * (raw + n) / (2 * n) if n else raw
        evaluations.append(
            Evaluation(
                cat,
                winner,
                per_view(by_cat[cat], scores) if n else {},
                per_view(by_cat[cat], default_views) if n else {},
                carried,
            )
        )
    return _table(evaluations, results, per_view, all_keys, view_names, default, base)


def _table(
    evaluations: list[Evaluation],
    results: list[tuple[dict[str, Any], dict[str, dict[str, list[float]]]]],
    per_view: Callable[[list[str], dict[str, dict[str, list[float]]]], dict[str, float]],
    all_keys: list[str],
    view_names: list[str],
    default: dict[str, Any],
    base: dict[str, Any],
) -> list[str]:
    lines = [
        "leave-one-category-out, standard profile"
        + (f"; base: {_label(base)}" if base else "")
        + f"; criterion: mean standard score over {', '.join(view_names)}",
        "",
        f"{'left out':24s} {'view':>6s} {'LOCO':>7s} {'default':>8s} {'LOCO@thr':>9s}"
        "  chosen without it",
    ]
    for ev in evaluations:
        if not ev.loco:
            fp = f"FP {ev.carried:.2f}"
            lines.append(
                f"{ev.category:24s} {'':>6s} {'':>7s} {'':>8s} {fp:>9s}"
                f"  {_label(ev.winner)} (no windows: raw FP cost)"
            )
            continue
        for i, view in enumerate(view_names):
            carried = f"{ev.carried:9.2f}" if i == 0 else f"{'':9s}"
            lines.append(
                f"{ev.category if i == 0 else '':24s} {view:>6s} {ev.loco[view]:7.2f} "
                f"{ev.default[view]:8.2f} {carried}  {_label(ev.winner) if i == 0 else ''}"
            )
    lines += ["", f"{'set (all 35 files)':40s} " + " ".join(f"{n:>7s}" for n in view_names)]
    for params, by_view in results:
        cells = per_view(all_keys, by_view)
        mark = " (default)" if params == default else ""
        lines.append(
            f"{_label(params) + mark:40s} " + " ".join(f"{cells[n]:7.2f}" for n in view_names)
        )
    return lines


def main() -> int:
    """Parse the options, run the evaluation, print and write the table."""
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[5:]),
    )
    ap.add_argument("--data", type=Path, default=nab.SHARED / "data" / "nab")
    ap.add_argument("--scorer", type=Path, default=nab.SHARED / "tools" / "nab_score.py")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "nab")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="candidates of one DetectorConfig field (repeatable; default: GRID of bench/nab.py)",
    )
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override of the default set, applied to every set")  # fmt: skip
    ap.add_argument("--resample", default="", metavar="MINUTES,...",
                    help="also score the files as means over buckets of these lengths")  # fmt: skip
    ap.add_argument("--cache", type=Path, help="keep each set's scores here between runs")
    args = ap.parse_args()

    if not (args.data / "windows.json").exists():
        print(f"no windows.json under {args.data}", file=sys.stderr)
        return 2
    files = nab.load_corpus(args.data)
    grid = parse_grid(args.grid) if args.grid else dict(nab.GRID)
    base = nab._parse_set(args.set)
    resolutions = [int(m) for m in args.resample.split(",") if m]
    lines = run(files, args.scorer, base, grid, resolutions, args.jobs, args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loco.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
