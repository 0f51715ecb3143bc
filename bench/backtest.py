"""The insight backtest: simulated days with incidents, graded against the ground truth.

    .venv/bin/python bench/backtest.py [--rate 1000] [--days 12] [--seed 7] [--workers 2]
                                       [--out bench/results/backtest.md] [--cache DIR]

Simulates ``--days`` of marketplace traffic at ``--rate`` events/s with the incidents of
`insights.backtest.DEFAULT_INCIDENTS` (a week of history, then one incident every three
hours, then clean days up to a Saturday), scores every watched series with the production
detector and the business layer, and prints (and writes) the table: per incident its
depth, its slice's sessions per minute, whether it is a target (and why not), which
anomaly found it and how fast; per kind the totals; and the false insights per simulated
day. Series come straight from the simulator's event arrays (`insights.simseries`), not
through the broker, the flow and ClickHouse — the integration test
`tests/integration/test_insights_pipeline.py` checks those numbers against the pipeline.

``--short`` is the development version (about a sixth of the work): one day of history,
then the same incidents one hour apart for 30 minutes each, 1-minute series only.
Detection times are then slower than the full run's (a day of history teaches less),
attribution (slice and cause named) is graded the same way.

``--experiment SPEC`` (repeatable) adds the experiment backtest: ``--experiment-runs``
simulated experiments per SPEC (``pulse simulate --experiment`` syntax, e.g.
``checkout:variants=control/B/C,conversion=0/-0.1/0,lose=0/0/0``), each analysed with the
API's statistics at its end, graded against the ground truth: power per metric and
variant with a true lift, false alarms where it is 0, SRM flags
(`insights.experiment_backtest`). ``--no-incidents`` runs only that part.

``--cache DIR`` keeps the simulated counts and the detector's scores between runs (keyed
by the configuration and the source of the simulator and the detector), so iterating on
the business layer (`insights.engine`) takes minutes instead of twenty; the recorded
result is always a run without it.
"""

from __future__ import annotations

import argparse
import platform
import re
import shelve
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from insights.backtest import (  # noqa: E402
    DEFAULT_INCIDENTS,
    BacktestConfig,
    describe_false,
    format_table,
    run_backtest,
)
from insights.experiment_backtest import format_grades, run_experiment_backtest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="simulated events/s")
    parser.add_argument("--days", type=float, default=12.0, help="simulated days")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2, help="scoring processes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/backtest.md")
    parser.add_argument("--cache", type=Path, help="keep counts and scores here between runs")
    parser.add_argument("--experiment", action="append", default=[], metavar="SPEC",
                        help="an A/B experiment to backtest (repeatable)")  # fmt: skip
    parser.add_argument("--experiment-runs", type=int, default=20, help="runs per experiment")
    parser.add_argument("--experiment-rate", type=float, default=20.0, help="their events/s")
    parser.add_argument("--experiment-days", type=float, default=7.0, help="their length")
    parser.add_argument("--no-incidents", action="store_true", help="only the experiments")
    parser.add_argument(
        "--short", action="store_true", help="development: 1 day of history, incidents 1 h apart"
    )
    args = parser.parse_args()
    if args.experiment:
        _experiments(args)
        if args.no_incidents:
            return
    config = BacktestConfig(
        rate=args.rate, days=args.days, seed=args.seed, workers=args.workers,
        warmup=timedelta(days=7),
    )  # fmt: skip
    if args.short:
        config = replace(
            config, days=1.85, warmup=timedelta(days=1), intervals=("1m",),
            incidents=_short(DEFAULT_INCIDENTS),
        )  # fmt: skip
    started = time.perf_counter()

    def say(phase: str) -> None:
        print(f"... {phase}", file=sys.stderr)

    if args.cache is None:
        report = run_backtest(config, progress=say)
    else:
        args.cache.mkdir(parents=True, exist_ok=True)
        with shelve.open(str(args.cache / "backtest")) as cache:
            report = run_backtest(config, progress=say, cache=cache)
    took = time.perf_counter() - started
    table = format_table(report)
    false = describe_false(report.false_insights)
    text = "\n".join(
        [
            f"# Insight backtest (seed {args.seed}, {args.rate:g} events/s, {config.days:g} days"
            + (", --short)" if args.short else ")"),
            "",
            table,
            "",
            "False insights:" if false else "False insights: none.",
            *[f"- {line}" for line in false],
            "",
            "First recommendation per detected incident:",
            *[f"- `{r.spec}`: {r.insight}" for r in report.results if r.detected],
            "",
            f"Took {took:.0f} s on {platform.machine()} / Python {platform.python_version()}"
            + (f" (with --cache {args.cache})." if args.cache else "."),
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


def _short(incidents: tuple[str, ...]) -> tuple[str, ...]:
    """The incidents from 25 hours in, one hour apart, 30 minutes each."""
    out = []
    for n, spec in enumerate(incidents):
        minutes = 25 * 60 + 60 * n
        spec = re.sub(r"at=\+[^,]+", f"at=+{minutes // 60}h{minutes % 60}m", spec)
        out.append(spec.replace("for=45m", "for=30m"))
    return tuple(out)


def _experiments(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    parts = [f"# Experiment backtest (seed {args.seed}, {args.experiment_rate:g} events/s, "
             f"{args.experiment_days:g} days, sequential intervals)", ""]  # fmt: skip
    for spec in args.experiment:
        print(f"... experiment {spec}", file=sys.stderr)
        grades = run_experiment_backtest(
            spec, runs=args.experiment_runs, rate=args.experiment_rate,
            days=args.experiment_days, seed=args.seed,
        )  # fmt: skip
        parts += [format_grades(spec, grades), ""]
    took = time.perf_counter() - started
    parts.append(f"Took {took:.0f} s on {platform.machine()} / Python {platform.python_version()}.")
    text = "\n".join(parts)
    print(text)
    out = args.out.with_name(args.out.stem + "_experiments.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
