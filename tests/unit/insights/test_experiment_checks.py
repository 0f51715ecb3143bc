"""Experiment findings (CONTRACT §10): an SRM names the variant furthest from its share,
a guardrail breach needs the sequential interval wholly below zero, and the insight says
what to do."""

from __future__ import annotations

from datetime import UTC, datetime

from insights.experiment_checks import SRM_METRIC, findings, is_experiment_insight, to_insight
from insights.experiments.report import experiment_report

T0, T1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 15, tzinfo=UTC)


def _sums(n: int, conversions: int, revenue: float) -> dict[str, float]:
    # every converting user has one order of revenue / conversions
    per = revenue / conversions if conversions else 0.0
    return {"conv": conversions, "orders": conversions, "orders_sq": conversions,
            "revenue": revenue, "revenue_sq": conversions * per * per,
            "revenue_x_orders": revenue}  # fmt: skip


def _report(users: dict[str, int], conv: dict[str, int], *, sequential: bool = True,
            weights: dict[str, float] | None = None):  # fmt: skip
    sums = {v: _sums(n, conv[v], conv[v] * 50.0) for v, n in users.items()}
    return experiment_report("checkout", T0, T1, users, sums, sequential=sequential,
                             weights=weights)  # fmt: skip


def test_a_balanced_healthy_experiment_has_no_findings() -> None:
    assert findings(_report({"control": 5000, "B": 5010}, {"control": 500, "B": 520})) == []


def test_srm_names_the_variant_furthest_from_its_share() -> None:
    report = _report({"control": 5000, "B": 5000, "C": 4000},
                     {"control": 500, "B": 500, "C": 400})  # fmt: skip
    [f] = findings(report)
    assert (f.kind, f.variant, f.metric) == ("srm", "C", SRM_METRIC)
    assert f.observed == 4000 and round(f.expected) == 4667 and f.p_value < 0.001
    insight = to_insight(f, T1)
    assert insight.slice == "experiment=checkout,variant=C" and is_experiment_insight(insight)
    assert "Check the assignment" in insight.recommendation
    assert "Pause variant C" in insight.recommendation


def test_declared_weights_are_the_expected_split() -> None:
    weights = {"control": 2.0, "B": 1.0}
    assert findings(_report({"control": 6000, "B": 3000}, {"control": 600, "B": 300},
                            weights=weights), weights) == []  # fmt: skip


def test_a_guardrail_breach_needs_the_sequential_interval_below_zero() -> None:
    users, conv = {"control": 20000, "B": 20000}, {"control": 2000, "B": 1500}
    found = findings(_report(users, conv))
    assert {(f.kind, f.metric, f.variant) for f in found} == {
        ("guardrail", "conversion", "B"), ("guardrail", "revenue_per_user", "B")}  # fmt: skip
    conversion = next(f for f in found if f.metric == "conversion")
    assert conversion.ci[1] < 0 and round(conversion.change, 3) == -0.25
    insight = to_insight(conversion, T1)
    assert insight.severity == "critical" and insight.direction == "down"
    assert "Pause variant B of checkout" in insight.recommendation
    assert "lowers conversion by 25.0%" in insight.summary
    # plain intervals are not used for alerts (peeking would raise false breaches)
    assert findings(_report(users, conv, sequential=False)) == []
    # a small loss whose sequential interval still covers zero raises nothing
    assert findings(_report({"control": 2000, "B": 2000}, {"control": 200, "B": 185})) == []
