"""The insight backtest: simulated days with incidents, graded against the ground truth.

    .venv/bin/python bench/backtest.py [--rate 1000] [--days 12] [--seed 7] [--workers 2]
                                       [--out bench/results/backtest.md]

Simulates ``--days`` of marketplace traffic at ``--rate`` events/s with the incidents of
`insights.backtest.DEFAULT_INCIDENTS` (a week of history, then one incident every three
hours, then clean days up to a Saturday), scores every watched series with the production
detector and the business layer, and prints (and writes) the table: per incident whether
and how fast it was detected, per kind the totals, and the false insights per simulated
day. Series come straight from the simulator's event arrays (`insights.simseries`), not
through the broker, the flow and ClickHouse — the integration test
`tests/integration/test_insights_pipeline.py` checks those numbers against the pipeline.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from insights.backtest import (  # noqa: E402
    BacktestConfig,
    describe_false,
    format_table,
    run_backtest,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="simulated events/s")
    parser.add_argument("--days", type=float, default=12.0, help="simulated days")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2, help="scoring processes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/backtest.md")
    args = parser.parse_args()
    config = BacktestConfig(
        rate=args.rate, days=args.days, seed=args.seed, workers=args.workers,
        warmup=timedelta(days=7),
    )  # fmt: skip
    started = time.perf_counter()
    report = run_backtest(config, progress=lambda phase: print(f"... {phase}", file=sys.stderr))
    took = time.perf_counter() - started
    table = format_table(report)
    false = describe_false(report.false_insights)
    text = "\n".join(
        [
            f"# Insight backtest (seed {args.seed}, {args.rate:g} events/s, {args.days:g} days)",
            "",
            table,
            "",
            "False insights:" if false else "False insights: none.",
            *[f"- {line}" for line in false],
            "",
            "First recommendation per detected incident:",
            *[f"- `{r.spec}`: {r.insight}" for r in report.results if r.detected],
            "",
            f"Took {took:.0f} s on {platform.machine()} / Python {platform.python_version()}.",
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
