"""The experiment backtest: simulated experiments with a known true lift, graded.

Each run simulates traffic with ``pulse simulate --experiment SPEC`` semantics, builds
every user's values of METRICS.md "Experiments" in memory from the event lines
(:func:`sums_from_lines`: the same per-variant sums the warehouse query returns, so
:func:`insights.experiments.report.experiment_report` is the one statistics path), and
grades the report against the ground truth:

- **power**: a (metric, variant) whose true lift is not 0, found significant (p < 0.05)
  with the right sign;
- **false alarm**: a (metric, variant) whose true lift is 0, found significant; and an
  SRM flagged where no exposure was lost (a missed SRM is counted apart).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ingest.fx import FxRates, load_fx_rates
from ingest.simulator import SimConfig, experiment_truth, iter_events, parse_experiment
from insights.experiments.report import ExperimentReport, experiment_report

__all__ = [
    "ExperimentGrade",
    "format_grades",
    "grade",
    "run_experiment_backtest",
    "sums_from_lines",
]

_PRE = 14 * 86_400_000  # METRICS.md: CUPED's pre-period, ms
GRADED = ("conversion", "revenue_per_user", "aov")  # metrics with a true lift in the truth


class _Ev(msgspec.Struct):
    event_id: str
    type: str
    ts: int
    user_id: str
    experiment: str | None = None
    variant: str | None = None
    order_id: str | None = None
    revenue: float | None = None
    currency: str | None = None


_decode = msgspec.json.Decoder(_Ev).decode


def sums_from_lines(
    lines: Iterable[bytes | str],
    experiment: str,
    start_ms: int,
    end_ms: int,
    fx: FxRates | None = None,
) -> tuple[dict[str, int], dict[str, dict[str, float]], int]:
    """Users, sums (``warehouse.experiments.SUM_COLUMNS``) per variant and the users with
    more than one variant, from event lines: the warehouse query's answer, computed in
    Python over ``[start_ms, end_ms)`` (events de-duplicated by ``event_id``)."""
    fx = fx or load_fx_rates()
    seen: set[str] = set()
    exposures: dict[str, list[tuple[int, str]]] = {}
    acts: dict[str, list[_Ev]] = {}
    for line in lines:
        ev = _decode(line)
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        if ev.type == "experiment_exposure":
            if ev.experiment == experiment and start_ms <= ev.ts < end_ms and ev.variant:
                exposures.setdefault(ev.user_id, []).append((ev.ts, ev.variant))
        elif ev.type in ("purchase", "add_to_cart") and ev.ts < end_ms:
            acts.setdefault(ev.user_id, []).append(ev)
    users: dict[str, int] = {}
    sums: dict[str, dict[str, float]] = {}
    multiple = 0
    for user, exps in exposures.items():
        if len({v for _, v in exps}) > 1:
            multiple += 1
            continue
        first, variant = min(exps)
        post = _values(acts.get(user, ()), first, end_ms, fx)
        pre = _values(acts.get(user, ()), first - _PRE, first, fx)
        users[variant] = users.get(variant, 0) + 1
        s = sums.setdefault(variant, {})
        for name, x, p in (("conv", post[0], pre[0]), ("atc", post[1], pre[1]),
                           ("orders", post[2], pre[2]), ("revenue", post[3], pre[3])):  # fmt: skip
            s[name] = s.get(name, 0.0) + x
            s[f"{name}_pre"] = s.get(f"{name}_pre", 0.0) + p
            s[f"{name}_x_pre"] = s.get(f"{name}_x_pre", 0.0) + x * p
            if name in ("orders", "revenue"):
                s[f"{name}_sq"] = s.get(f"{name}_sq", 0.0) + x * x
                s[f"{name}_pre_sq"] = s.get(f"{name}_pre_sq", 0.0) + p * p
        s["revenue_x_orders"] = s.get("revenue_x_orders", 0.0) + post[3] * post[2]
    return dict(sorted(users.items())), sums, multiple


def _values(events: Iterable[_Ev], lo: int, hi: int, fx: FxRates) -> tuple[float, ...]:
    buys = [e for e in events if lo <= e.ts < hi and e.type == "purchase"]
    orders = {e.order_id: e for e in buys if e.order_id}
    revenue = math.fsum(
        fx.to_eur(e.revenue or 0.0, e.currency or "EUR", e.ts) for e in orders.values()
    )
    carts = any(lo <= e.ts < hi and e.type == "add_to_cart" for e in events)
    return float(bool(buys)), float(carts), float(len(orders)), revenue


@dataclass(frozen=True)
class ExperimentGrade:
    """One report graded against its experiment's ground truth."""

    experiment: str
    detected: list[tuple[str, str, float]] = field(default_factory=list)  # metric, variant, lift
    missed: list[tuple[str, str, float]] = field(default_factory=list)
    false_alarms: list[tuple[str, str]] = field(default_factory=list)
    true_nulls: int = 0
    srm_flagged: bool = False
    srm_expected: bool = False


def grade(report: ExperimentReport, truth: dict[str, Any], alpha: float = 0.05) -> ExperimentGrade:
    """Detections, misses and false alarms of ``report`` against one experiment's truth
    (``ground_truth()["experiments"][i]``)."""
    out = ExperimentGrade(report.experiment, srm_flagged=report.srm.flagged,
                          srm_expected=bool(truth["srm_expected"]))  # fmt: skip
    nulls = 0
    for r in report.results:
        if r.metric not in GRADED:
            continue
        true = float(truth["lifts"][r.metric][r.variant])
        significant = r.p_value < alpha
        if true == 0:
            nulls += 1
            if significant:
                out.false_alarms.append((r.metric, r.variant))
        elif significant and (r.lift > 0) == (true > 0):
            out.detected.append((r.metric, r.variant, true))
        else:
            out.missed.append((r.metric, r.variant, true))
    return replace(out, true_nulls=nulls)


def run_experiment_backtest(
    spec: str,
    *,
    runs: int = 10,
    rate: float = 50.0,
    days: float = 7.0,
    seed: int = 7,
    sequential: bool = True,
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC),
) -> list[ExperimentGrade]:
    """``runs`` simulated experiments (seeds ``seed``, ``seed + 1``, ...), each analysed
    at the end of its ``days``; their grades."""
    experiment = parse_experiment(spec)
    grades = []
    fx = load_fx_rates()
    for n in range(runs):
        config = SimConfig(rate=rate, duration=timedelta(days=days), seed=seed + n,
                           start=start, experiments=(experiment,))  # fmt: skip
        lines = [line for _, line in iter_events(config)]
        start_ms = int(config.start.timestamp() * 1000)
        end_ms = start_ms + int(config.duration.total_seconds() * 1000)
        users, sums, multiple = sums_from_lines(lines, experiment.name, start_ms, end_ms, fx)
        weights = dict(zip(experiment.variants, experiment.shares, strict=True))
        report = experiment_report(
            experiment.name, config.start, config.end, users, sums,
            multiple_exposures=multiple, control=experiment.variants[0], weights=weights,
            sequential=sequential,
        )  # fmt: skip
        [truth] = experiment_truth(None, (experiment,))
        grades.append(grade(report, truth))
    return grades


def format_grades(spec: str, grades: list[ExperimentGrade]) -> str:
    """The backtest's table: power per (metric, variant) with a true lift, false alarms
    over the true nulls, SRM flags."""
    per: dict[tuple[str, str, float], list[bool]] = {}
    for g in grades:
        for metric, variant, lift in g.detected:
            per.setdefault((metric, variant, lift), []).append(True)
        for metric, variant, lift in g.missed:
            per.setdefault((metric, variant, lift), []).append(False)
    nulls = sum(g.true_nulls for g in grades)
    false = sum(len(g.false_alarms) for g in grades)
    srm_false = sum(g.srm_flagged and not g.srm_expected for g in grades)
    srm_found = sum(g.srm_flagged and g.srm_expected for g in grades)
    srm_runs = sum(g.srm_expected for g in grades)
    lines = [
        f"Experiment `{spec}`, {len(grades)} runs:",
        "",
        "| metric | variant | true lift | power (p < 0.05, right sign) |",
        "|---|---|---:|---:|",
        *[
            f"| {m} | {v} | {lift:+.1%} | {sum(hits)}/{len(hits)} = {sum(hits) / len(hits):.0%} |"
            for (m, v, lift), hits in sorted(per.items())
        ],
        "",
        f"False alarms (p < 0.05 where the true lift is 0): {false}/{nulls}"
        + (f" = {false / nulls:.1%}" if nulls else ""),
        f"SRM flagged: {srm_found}/{srm_runs} runs that lost exposures, "
        f"{srm_false}/{len(grades) - srm_runs} runs that did not (false alarms).",
    ]
    return "\n".join(lines)
