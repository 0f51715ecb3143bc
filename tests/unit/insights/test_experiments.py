"""``insights.experiments`` equals GrowthBook's engine, gbstats 0.8 (CONTRACT §10).

The reference answers are gbstats' own, stored by ``tests/reference/gbstats_cases.py``
(run in its isolated venv) in ``tests/data/gbstats_cases.json``; ``make gbstats-parity``
regenerates them and points ``PULSE_GBSTATS_CASES`` here at the fresh file. Every case is
compared for every metric kind (binomial, count, ratio) × (plain, sequential, CUPED,
Bayesian) and its SRM, to 10^-6 (relative, or absolute near 0) as METRICS.md requires.
The rest are checks that do not lean on gbstats (hand-worked sums, scipy's chi-square).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import chisquare

from insights.experiments import (
    EXPERIMENT_METRICS,
    MetricResult,
    Moments,
    VariantSums,
    analyze,
    analyze_metric,
    check_srm,
    effect_bayesian_ab_test,
    sequential_two_sided_ttest,
    srm,
    statistic,
    two_sided_ttest,
    variant_sums,
)

CASES_FILE = Path(
    os.environ.get("PULSE_GBSTATS_CASES")
    or Path(__file__).resolve().parents[2] / "data" / "gbstats_cases.json"
)
REFERENCE = json.loads(CASES_FILE.read_text())
CASES = {case["name"]: case for case in REFERENCE["cases"]}
MODES = ("plain", "sequential", "bayesian", "plain_cuped", "sequential_cuped", "bayesian_cuped")
REL, ABS = 1e-6, 1e-9  # METRICS.md: equal to gbstats to 10^-6


def close(ours: float, theirs: float) -> bool:
    """Equal to 10^-6 relative (10^-9 absolute near 0)."""
    return math.isclose(ours, theirs, rel_tol=REL, abs_tol=ABS)


def sums_of(stored: dict[str, Any]) -> VariantSums:
    """A stored variant's sums as the engine's input."""

    def moments(prefix: str) -> Moments | None:
        if f"{prefix}_sum" not in stored:
            return None
        return Moments(stored[f"{prefix}_sum"], stored[f"{prefix}_sum_squares"])

    return VariantSums(
        n=stored["n"],
        main=Moments(stored["main_sum"], stored["main_sum_squares"]),
        denominator=moments("denominator"),
        main_denominator_sum_product=stored.get("main_denominator_sum_product", 0.0),
        covariate=moments("covariate"),
        main_covariate_sum_product=stored.get("main_covariate_sum_product", 0.0),
    )


def metric_variants(case: dict[str, Any], metric: str) -> dict[str, VariantSums]:
    return {name: sums_of(case["sums"][name][metric]) for name in case["variants"]}


def test_the_reference_is_gbstats_0_8_and_covers_the_brief() -> None:
    assert REFERENCE["gbstats_version"].startswith("0.8.")
    assert {
        "three_variants",
        "variant_with_one_user",
        "zero_conversions_control",
        "ties_constant_values",
        "heavy_tailed_revenue",
        "zero_orders_aov",
        "srm_unequal_weights_mismatch",
        "big_n",
        "small_n_two",
    } <= set(CASES)
    # the degenerate paths are really exercised: each of gbstats' reasons occurs
    errors = {
        answer["error"]
        for case in CASES.values()
        for modes in case["results"].values()
        for per_variant in modes.values()
        for answer in per_variant.values()
    }
    assert {
        None,
        "ZERO_NEGATIVE_VARIANCE",
        "ZERO_NEGATIVE_BASELINE_VARIATION",
        "NO_UNITS_IN_VARIATION",
    } <= errors
    assert any(case["srm_p_value"] < 0.001 for case in CASES.values())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case_name", sorted(CASES))
def test_results_equal_gbstats(case_name: str, mode: str) -> None:
    case = CASES[case_name]
    cuped, sequential, bayesian = (
        mode.endswith("_cuped"),
        mode.startswith("sequential"),
        mode.startswith("bayesian"),
    )
    control = case["variants"][0]
    mismatches: list[str] = []
    checked = 0
    for metric, kind in EXPERIMENT_METRICS.items():
        if cuped and kind == "ratio":
            continue  # aov is never adjusted (and gbstats 0.8 cannot)
        theirs = case["results"][metric][mode]
        variants = metric_variants(case, metric)
        results = analyze_metric(
            metric, kind, variants, control, cuped=cuped, sequential=sequential
        )
        assert [r.variant for r in results] == case["variants"][1:]
        a = statistic(kind, variants[control], cuped=cuped)
        for result in results:
            ref = theirs[result.variant]
            b = statistic(kind, variants[result.variant], cuped=cuped)
            if bayesian:
                test = effect_bayesian_ab_test(a, b)
                pairs = {
                    "chance_to_win": (result.chance_to_win, ref["chance_to_win"]),
                    "bayes.chance_to_win": (test.chance_to_win, ref["chance_to_win"]),
                    "bayes.ci.lo": (test.ci[0], ref["ci"][0]),
                    "bayes.ci.hi": (test.ci[1], ref["ci"][1]),
                }
            else:
                test = (sequential_two_sided_ttest if sequential else two_sided_ttest)(a, b)
                pairs = {
                    "p_value": (result.p_value, ref["p_value"]),
                    "ci.lo": (result.ci[0], ref["ci"][0]),
                    "ci.hi": (result.ci[1], ref["ci"][1]),
                }
            pairs |= {
                "mean": (result.mean, ref["mean"]),
                "control_mean": (result.control_mean, ref["control_mean"]),
                "lift": (result.lift, ref["expected"]),
            }
            for field, (ours, expected) in pairs.items():
                checked += 1
                if not close(ours, expected):
                    mismatches.append(
                        f"{metric}/{result.variant} {field}: ours {ours!r}, gbstats {expected!r}"
                    )
            if test.error != ref["error"]:
                mismatches.append(
                    f"{metric}/{result.variant} error: ours {test.error}, gbstats {ref['error']}"
                )
    assert checked
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_srm_equals_gbstats(case_name: str) -> None:
    case = CASES[case_name]
    users = {name: case["sums"][name]["aov"]["n"] for name in case["variants"]}
    weights = dict(zip(case["variants"], case["weights"], strict=True))
    result = srm(users, weights)
    assert close(result.p_value, case["srm_p_value"])
    assert result.flagged == (case["srm_p_value"] < 0.001)


@pytest.mark.parametrize("srm_case", REFERENCE["srm_cases"], ids=lambda c: str(c["users"]))
def test_check_srm_equals_gbstats(srm_case: dict[str, Any]) -> None:
    assert close(check_srm(srm_case["users"], srm_case["weights"]), srm_case["p_value"])


@pytest.mark.parametrize(
    "case_name", [name for name, case in sorted(CASES.items()) if case["values"]]
)
def test_sums_helper_gives_the_reference_sums(case_name: str) -> None:
    # the per-user values of the small cases give exactly the sums gbstats was given
    case = CASES[case_name]
    for name in case["variants"]:
        v = case["values"][name]
        columns = {
            "conversion": ("conversion", "pre_conversion"),
            "add_to_cart_rate": ("add_to_cart", "pre_add_to_cart"),
            "orders_per_user": ("orders", "pre_orders"),
            "revenue_per_user": ("revenue", "pre_revenue"),
        }
        for metric, (col, pre) in columns.items():
            assert variant_sums(v[col], covariates=v[pre]) == sums_of(case["sums"][name][metric])
        aov = variant_sums(v["revenue"], denominators=v["orders"])
        assert aov == sums_of(case["sums"][name]["aov"])


# --- checks that do not lean on gbstats ------------------------------------------------


def test_sums_helper_by_hand() -> None:
    sums = variant_sums([10.0, 0.0, 30.5], denominators=[1, 0, 2], covariates=[2.0, 1.0, 0.0])
    assert sums.n == 3
    assert sums.main == Moments(40.5, 100.0 + 930.25)
    assert sums.denominator == Moments(3.0, 5.0)
    assert sums.main_denominator_sum_product == 71.0
    assert sums.covariate == Moments(3.0, 5.0)
    assert sums.main_covariate_sum_product == 20.0
    assert variant_sums([]) == VariantSums(0, Moments(0.0, 0.0))
    with pytest.raises(ValueError, match="covariates: 1 values for 2 users"):
        variant_sums([1.0, 2.0], covariates=[1.0])


def test_srm_equal_weights_is_scipys_chi_square() -> None:
    users = [5000, 4700, 5020]
    assert math.isclose(check_srm(users, [1, 1, 1]), chisquare(users).pvalue, rel_tol=1e-12)
    unequal = [812, 188]
    expected = [800, 200]
    assert math.isclose(
        check_srm(unequal, [0.8, 0.2]), chisquare(unequal, expected).pvalue, rel_tol=1e-12
    )


def test_srm_flags_below_one_in_a_thousand_only() -> None:
    assert srm({"control": 5000, "b": 4700, "c": 5020}).p_value > 0.001  # 0.00143
    assert not srm({"control": 5000, "b": 4700, "c": 5020}).flagged
    assert srm({"control": 5000, "b": 4600}).flagged
    assert not srm({"control": 8000, "b": 2000}, {"control": 0.8, "b": 0.2}).flagged
    assert srm({"control": 5000, "b": 5000}, {"control": 0.8, "b": 0.2}).flagged
    assert srm({"control": 0, "b": 0}) == srm({"control": 10, "b": 10})  # p 1, not flagged
    assert srm({"control": 1234}).p_value == 1.0  # nothing to compare
    with pytest.raises(ValueError, match="no weight declared for variant"):
        srm({"control": 10, "b": 10}, {"control": 1.0})


def test_sequential_interval_is_wider_and_cuped_narrows() -> None:
    case = CASES["cuped_strong_covariate"]
    variants = metric_variants(case, "revenue_per_user")
    (plain,) = analyze_metric("revenue_per_user", "count", variants, "control")
    (seq,) = analyze_metric("revenue_per_user", "count", variants, "control", sequential=True)
    (cuped,) = analyze_metric("revenue_per_user", "count", variants, "control", cuped=True)
    width = lambda r: r.ci[1] - r.ci[0]  # noqa: E731
    assert width(seq) > width(plain) > width(cuped) > 0
    assert seq.p_value >= plain.p_value
    assert plain.lift == seq.lift
    assert plain.ci[0] < plain.lift < plain.ci[1]


def test_a_variant_with_one_user_gets_the_neutral_result() -> None:
    control = variant_sums([0, 1, 0, 1, 1, 0, 0, 1])
    one = variant_sums([1])
    (result,) = analyze_metric(
        "conversion", "binomial", {"control": control, "one": one}, "control"
    )
    assert result.ci == (0.0, 0.0) and result.p_value == 1.0 and result.chance_to_win == 0.5
    assert result.lift == 1.0  # 1 / 0.5 − 1: still the plain difference, as gbstats reports
    assert result.error == "ZERO_NEGATIVE_VARIANCE"


def test_a_zero_control_mean_gives_no_lift() -> None:
    variants = {"control": variant_sums([0, 0, 0]), "b": variant_sums([1, 0, 1])}
    (result,) = analyze_metric("conversion", "binomial", variants, "control")
    assert (result.control_mean, result.mean, result.lift) == (0.0, pytest.approx(2 / 3), 0.0)
    assert result.error == "ZERO_NEGATIVE_BASELINE_VARIATION"


def test_analyze_lists_every_metric_and_variant_with_the_contract_fields() -> None:
    case = CASES["three_variants"]
    sums = {metric: metric_variants(case, metric) for metric in EXPERIMENT_METRICS}
    results = analyze(sums, "control", cuped=True, sequential=True)
    assert [(r.metric, r.variant) for r in results] == [
        (m, v) for m in EXPERIMENT_METRICS for v in ("b", "c")
    ]
    assert set(results[0].to_dict()) == {
        "metric", "variant", "mean", "control_mean", "lift", "ci", "p_value", "chance_to_win",
    }  # fmt: skip
    assert isinstance(results[0], MetricResult)
    json.dumps([r.to_dict() for r in results], allow_nan=False)


def test_bad_input_is_a_clear_error() -> None:
    plain = variant_sums([1.0, 2.0])
    with pytest.raises(ValueError, match="control 'x' is not among"):
        analyze_metric("revenue_per_user", "count", {"a": plain}, "x")
    with pytest.raises(ValueError, match="denominator"):
        analyze_metric("aov", "ratio", {"a": plain, "b": plain}, "a")
    with pytest.raises(ValueError, match="CUPED needs"):
        analyze_metric("revenue_per_user", "count", {"a": plain, "b": plain}, "a", cuped=True)
    with pytest.raises(ValueError, match="unknown experiment metric"):
        analyze({"bounce_rate": {"a": plain}}, "a")
    with pytest.raises(ValueError, match="users"):
        VariantSums(-1, Moments())
