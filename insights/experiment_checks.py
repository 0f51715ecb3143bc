"""Experiment insights (CONTRACT §10): a sample-ratio mismatch (SRM p < 0.001) or a guardrail
breach (``conversion`` or ``revenue_per_user`` whose *sequential* 95 % interval lies wholly
below zero) raises an insight naming the experiment and the variant, through the same
lifecycle, store and Alertmanager path as the anomaly insights.

The sequential interval is the one that stays valid however often it is looked at
(``docs/benchmarks.md``, the A/A study): the detector checks every few minutes, so a
plain interval would raise false breaches. An insight's identity is (check, experiment,
variant, metric): found again, it is the same insight; once its condition is gone it is
resolved by Pulse, and one a person resolved is not raised again.

:func:`findings` is pure (a report in, what is wrong out); :func:`check_experiments` reads
the warehouse and turns findings into insights.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from clickhouse_connect.driver.client import Client

from insights.experiment_results import report_for
from insights.experiments.report import ExperimentReport
from insights.lifecycle import Insight, Severity
from insights.store import InsightStore
from warehouse.experiments import experiment_settings, list_experiments

__all__ = [
    "EXPERIMENT_INTERVAL",
    "GUARDRAILS",
    "SRM_METRIC",
    "Finding",
    "check_experiments",
    "findings",
    "is_experiment_insight",
    "to_insight",
]

_log = logging.getLogger(__name__)

GUARDRAILS = ("conversion", "revenue_per_user")  # CONTRACT §10
SRM_METRIC = "sample_ratio"  # the insight's metric for a mismatch
EXPERIMENT_INTERVAL = "experiment"  # the insight's interval: it is not a time series
IDLE_AFTER = timedelta(days=30)  # experiments without exposures for this long are not checked
Kind = Literal["srm", "guardrail"]


@dataclass(frozen=True)
class Finding:
    """Something wrong with one variant of one experiment."""

    kind: Kind
    experiment: str
    variant: str
    metric: str
    observed: float  # srm: the variant's users; guardrail: its mean
    expected: float  # srm: the users its weight expects; guardrail: the control's mean
    change: float  # relative: observed / expected - 1 (srm), the lift (guardrail)
    p_value: float
    ci: tuple[float, float]
    users: int
    control: str
    since: datetime

    @property
    def id(self) -> str:
        text = f"experiment|{self.kind}|{self.experiment}|{self.variant}|{self.metric}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def findings(report: ExperimentReport, weights: dict[str, float] | None = None) -> list[Finding]:
    """What is wrong in a report computed with ``sequential=True``: the SRM, naming the
    variant furthest from its expected share, and each guardrail breach."""
    out: list[Finding] = []
    total = sum(report.users.values())
    if report.srm.flagged and total:
        w = {v: float((weights or {}).get(v, 1.0 if not weights else 0.0)) for v in report.users}
        wsum = sum(w.values()) or 1.0
        expected = {v: w[v] / wsum * total for v in report.users}

        def gap(v: str) -> float:
            return abs(report.users[v] - expected[v]) / max(expected[v], 1.0)

        worst = max(report.users, key=gap)
        exp_users = expected[worst]
        out.append(Finding(
            "srm", report.experiment, worst, SRM_METRIC, float(report.users[worst]), exp_users,
            report.users[worst] / exp_users - 1 if exp_users else 0.0, report.srm.p_value,
            (0.0, 0.0), report.users[worst], report.control, report.start,
        ))  # fmt: skip
    for r in report.results:
        if r.metric in GUARDRAILS and report.sequential and r.ci[1] < 0:
            out.append(Finding(
                "guardrail", report.experiment, r.variant, r.metric, r.mean, r.control_mean,
                r.lift, r.p_value, r.ci, report.users.get(r.variant, 0), report.control,
                report.start,
            ))  # fmt: skip
    return out


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def _value(metric: str, x: float) -> str:
    if metric == "conversion":
        return f"{x:.2%}"
    if metric == "revenue_per_user":
        return f"€{x:,.2f}"
    return f"{x:,.0f}"


def to_insight(f: Finding, now: datetime) -> Insight:
    """The insight of a finding, with what a product manager can do about it."""
    severity: Severity
    if f.kind == "srm":
        severity = "warning"
        summary = (
            f"Experiment {f.experiment}: variant {f.variant} got {f.observed:,.0f} users where "
            f"the split expects {f.expected:,.0f} (sample ratio mismatch, p = {f.p_value:.1e})."
        )
        description = (
            f"Users per variant do not match the expected split since {f.since:%Y-%m-%d %H:%M} "
            f"UTC: {f.variant} has {_pct(f.change)} against its share. Results of this "
            f"experiment are not trustworthy while the assignment is broken."
        )
        recommendation = (
            f"Check the assignment of {f.experiment}: redirects or errors that drop users in "
            f"one variant, bots, a variant started late, or a split changed mid-test. Pause "
            f"variant {f.variant} until the cause is found; declare the intended split with "
            f"PUT /v1/experiments/{f.experiment} if it is not equal."
        )
    else:
        severity = "critical"
        lo, hi = f.ci
        summary = (
            f"Experiment {f.experiment}: variant {f.variant} lowers {f.metric} by "
            f"{-f.change:.1%} ({_value(f.metric, f.observed)} vs "
            f"{_value(f.metric, f.expected)} in {f.control})."
        )
        description = (
            f"Guardrail breach: the always-valid (sequential) 95% interval of the lift of "
            f"{f.metric} is {_pct(lo)} to {_pct(hi)}, wholly below zero, over {f.users:,} users "
            f"of {f.variant} since {f.since:%Y-%m-%d %H:%M} UTC."
        )
        recommendation = (
            f"Pause variant {f.variant} of {f.experiment} (send its traffic to {f.control}) and "
            f"review what it changes; the loss holds even though the experiment is watched "
            f"continuously."
        )
    return Insight(
        id=f.id, status="open", metric=f.metric,
        slice=f"experiment={f.experiment},variant={f.variant}", interval=EXPERIMENT_INTERVAL,
        direction="down" if f.change < 0 else "up", change=f.change, observed=f.observed,
        expected=f.expected, started_at=f.since, detected_at=now, updated_at=now,
        severity=severity, summary=summary, description=description,
        recommendation=recommendation,
    )  # fmt: skip


def is_experiment_insight(i: Insight) -> bool:
    """Whether an insight comes from an experiment check."""
    return i.interval == EXPERIMENT_INTERVAL


def check_experiments(
    client: Client, store: InsightStore, active: list[Insight], now: datetime | None = None
) -> list[Insight]:
    """Check every experiment with recent exposures; the insights that change: new ones,
    and active experiment insights whose condition is gone (resolved by Pulse). One a
    person resolved is not raised again."""
    now = now or datetime.now(UTC)
    current = {i.id: i for i in active if is_experiment_insight(i)}
    found: dict[str, Finding] = {}
    for summary in list_experiments(client):
        if summary.last_exposure < now - IDLE_AFTER:
            continue
        try:
            report = report_for(client, summary.experiment, sequential=True, now=now)
        except Exception as exc:  # one experiment must not stop the others, nor detection
            _log.warning("checking experiment %r failed: %s", summary.experiment[:64], exc)
            continue
        weights = _weights(client, summary.experiment)
        for f in findings(report, weights):
            found[f.id] = f
    changed = []
    new = [fid for fid in found if fid not in current]
    stored = store.many(new) if new else {}
    for fid in new:
        before = stored.get(fid)
        if before is not None and before.status == "resolved" and before.resolved_by == "user":
            continue
        changed.append(to_insight(found[fid], now))
    for iid, i in current.items():
        if iid not in found:
            changed.append(replace(i, status="resolved", resolved_at=now, resolved_by="pulse",
                                   updated_at=now))  # fmt: skip
    return changed


def _weights(client: Client, experiment: str) -> dict[str, float] | None:
    declared = experiment_settings(client, experiment)
    return dict(declared.weights) if declared and declared.weights else None
