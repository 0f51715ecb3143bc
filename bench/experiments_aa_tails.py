"""Why revenue per user's sequential A/A false-positive rate was 5.8 % (bench/experiments_aa.py).

    .venv/bin/python bench/experiments_aa_tails.py [--experiments 4000] [--days 14] [--seed 5]

The A/A study of ``bench/experiments_aa.py`` with revenue per user only, on many more
simulated experiments (its 400 give the rate ± 1.1 points of standard error), through the
API's own test (``insights.experiments.frequentist.sequential_two_sided_ttest`` on
``SampleMeanStatistic``, gbstats' ``SequentialTwoSidedTTest``), in scenarios that change
one thing each:

- ``baseline``: the study's data (5 % convert, 1 + Poisson(0.15) orders of log-normal value,
  σ 0.8, median EUR 60), ~400 new users per variant and day;
- ``light tail``: every order worth EUR 60 (the same conversion and orders, no skew);
- ``heavier tail``: log-normal σ 1.2;
- ``10x users``: ~4,000 new users per variant and day (the asymptotics);
- ``tuning 500`` / ``tuning 50000``: the sequential test's tuning parameter (CONTRACT §10
  and gbstats' default: 5,000).

A false positive is a look with p < 0.05; per scenario: the share of experiments with one
in any of the daily looks, its standard error, and the share of those first seen on day 1.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from insights.experiments.frequentist import sequential_two_sided_ttest  # noqa: E402
from insights.experiments.statistics import SampleMeanStatistic  # noqa: E402

SCENARIOS = {
    "baseline": {},
    "light tail": {"sigma": 0.0},
    "heavier tail": {"sigma": 1.2},
    "10x users": {"users": 10.0},
    "tuning 500": {"tuning": 500.0},
    "tuning 50000": {"tuning": 50000.0},
}


def _day(rng: np.random.Generator, n: int, sigma: float) -> tuple[float, float]:
    """Σx and Σx² of the revenue of one day's ``n`` new users of one variant."""
    buyers = int(rng.binomial(n, 0.05))
    if buyers == 0:
        return 0.0, 0.0
    orders = 1 + rng.poisson(0.15, buyers)
    values = (
        rng.lognormal(np.log(60.0), sigma, int(orders.sum()))
        if sigma
        else np.full(int(orders.sum()), 60.0)
    )
    per_buyer = np.round(np.add.reduceat(values, np.r_[0, np.cumsum(orders)[:-1]]), 2)
    return float(per_buyer.sum()), float((per_buyer * per_buyer).sum())


def study(experiments: int, days: int, seed: int, *, sigma: float = 0.8, users: float = 1.0,
          tuning: float = 5000.0) -> tuple[float, float]:  # fmt: skip
    """(share of experiments with ≥ 1 false positive, share of those first seen on day 1)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    any_fp = first_day = 0
    for _ in range(experiments):
        n = [0, 0]
        s = [0.0, 0.0]
        sq = [0.0, 0.0]
        for d in range(days):
            for v in (0, 1):
                k = int(rng.poisson(400 * users))
                x, x2 = _day(rng, k, sigma)
                n[v] += k
                s[v] += x
                sq[v] += x2
            a, b = (SampleMeanStatistic(n[v], s[v], sq[v]) for v in (0, 1))
            if sequential_two_sided_ttest(a, b, tuning=tuning).p_value < 0.05:
                any_fp += 1
                first_day += d == 0
                break
    return any_fp / experiments, first_day / max(any_fp, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=4000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--only", help="one scenario")
    args = parser.parse_args()
    print(f"revenue_per_user, sequential=true: {args.experiments} A/A experiments per "
          f"scenario, {args.days} daily looks, seed {args.seed}\n")  # fmt: skip
    print("| scenario | any look | ± s.e. | first seen on day 1 |")
    print("|---|---:|---:|---:|")
    started = time.perf_counter()
    for name, kwargs in SCENARIOS.items():
        if args.only and name != args.only:
            continue
        rate, day1 = study(args.experiments, args.days, args.seed, **kwargs)
        se = math.sqrt(rate * (1 - rate) / args.experiments)
        print(f"| {name} | {rate:.1%} | {se:.1%} | {day1:.0%} |", flush=True)
    print(f"\ntook {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
