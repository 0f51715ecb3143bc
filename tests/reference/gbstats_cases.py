"""Adversarial A/B cases and GrowthBook's answers to them (gbstats 0.8, the reference).

gbstats pins numpy < 2 and pandas < 2, so it is not a dependency of Pulse: it runs in its
own virtual environment, and this script (stdlib + numpy + gbstats only) stores its answers
beside the parity test, which compares ``insights.experiments`` with them.

Regenerate (``make gbstats-parity`` builds the venv, regenerates into a temporary file,
checks it against the stored one and runs the parity test against the fresh answers)::

    python3 -m venv .venv-gbstats && .venv-gbstats/bin/pip install 'gbstats==0.8.*'
    .venv-gbstats/bin/python tests/reference/gbstats_cases.py --out tests/data/gbstats_cases.json

``--check tests/data/gbstats_cases.json`` compares the fresh answers with the stored ones.

Every case is a set of simulated users per variant (seeded), each with the per-user values
METRICS.md defines — conversion and add-to-cart (0/1), orders, revenue (EUR, cents), and the
same over the pre-period (the CUPED covariates). The sums of every metric go to gbstats'
own entry point, ``gbstats.gbstats.process_experiment_results`` (as GrowthBook's back end
calls it), in three analyses — frequentist, frequentist sequential (tuning 5,000) and
Bayesian (default prior) — for the plain (``mean``), CUPED (``mean_ra``) and ratio
(``aov``) statistics, plus ``gbstats.utils.check_srm`` on its own cases. Small cases keep
their per-user values, so the sums helper is checked too.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from gbstats.gbstats import process_experiment_results
from gbstats.utils import check_srm

SEED = 17
KEEP_VALUES_UP_TO = 60  # users per variant whose per-user values are stored

# metric -> (gbstats metric type, per-user value column, covariate column); aov apart
MEAN_METRICS = {
    "conversion": ("binomial", "conversion", "pre_conversion"),
    "add_to_cart_rate": ("binomial", "add_to_cart", "pre_add_to_cart"),
    "orders_per_user": ("count", "orders", "pre_orders"),
    "revenue_per_user": ("count", "revenue", "pre_revenue"),
}
COLUMNS = (
    "conversion",
    "add_to_cart",
    "orders",
    "revenue",
    "pre_conversion",
    "pre_add_to_cart",
    "pre_orders",
    "pre_revenue",
)
ANALYSES = {
    "plain": {"stats_engine": "frequentist"},
    "sequential": {
        "stats_engine": "frequentist",
        "sequential_testing_enabled": True,
        "sequential_tuning_parameter": 5000,
    },
    "bayesian": {"stats_engine": "bayesian"},
}

Users = dict[str, np.ndarray]


# --- simulated users -----------------------------------------------------------------


def users(
    rng: np.random.Generator,
    n: int,
    *,
    rate: float = 0.08,
    effect: float = 1.0,
    basket: float = 3.6,
    pareto: float | None = None,
    pre_link: float = 1.0,
) -> Users:
    """``n`` users: a propensity per user drives orders before and after exposure (so the
    pre-period predicts the post-period with ``pre_link`` 1, and not at all with 0);
    ``effect`` multiplies the post-period order rate; order values are log-normal, or
    Pareto with index ``pareto`` (heavy-tailed)."""
    propensity = rng.gamma(0.4, rate / 0.4, size=n)
    orders = rng.poisson(propensity * effect)
    pre_orders = rng.poisson(propensity * pre_link + rate * (1 - pre_link))
    return {
        "conversion": (orders > 0).astype(float),
        "add_to_cart": ((orders > 0) | (rng.random(n) < 0.15 + propensity)).astype(float),
        "orders": orders.astype(float),
        "revenue": _revenue(rng, orders, basket, pareto),
        "pre_conversion": (pre_orders > 0).astype(float),
        "pre_add_to_cart": ((pre_orders > 0) | (rng.random(n) < 0.15)).astype(float),
        "pre_orders": pre_orders.astype(float),
        "pre_revenue": _revenue(rng, pre_orders, basket, pareto),
    }


def _revenue(
    rng: np.random.Generator, orders: np.ndarray, basket: float, pareto: float | None
) -> np.ndarray:
    total = int(orders.sum())
    if pareto is None:
        amounts = rng.lognormal(basket, 0.9, size=total)
    else:
        amounts = 10.0 * (1.0 + rng.pareto(pareto, size=total))
    owner = np.repeat(np.arange(len(orders)), orders.astype(int))
    per_user = np.zeros(len(orders))
    np.add.at(per_user, owner, amounts)
    return np.round(per_user, 2)


def constant(n: int, **values: float) -> Users:
    """``n`` identical users (ties); unnamed columns are 0."""
    return {col: np.full(n, float(values.get(col, 0.0))) for col in COLUMNS}


def concat(*parts: Users) -> Users:
    """The users of ``parts`` together."""
    return {col: np.concatenate([p[col] for p in parts]) for col in COLUMNS}


def cases() -> list[dict[str, Any]]:
    """The cases: name, what it probes, users per variant (control first), weights."""
    rng = np.random.default_rng(SEED)
    out: list[dict[str, Any]] = []

    def case(
        name: str, about: str, variants: dict[str, Users], weights: list[float] | None = None
    ) -> None:
        out.append(
            {
                "name": name,
                "about": about,
                "variants": variants,
                "weights": weights or [1.0] * len(variants),
            }
        )

    case(
        "typical_two_variants",
        "2,000 users a side, +15 % orders in the treatment",
        {"control": users(rng, 2000), "treatment": users(rng, 2000, effect=1.15)},
    )
    case(
        "three_variants",
        "control and two treatments, one better, one worse",
        {
            "control": users(rng, 1500),
            "b": users(rng, 1480, effect=1.3),
            "c": users(rng, 1530, effect=0.8),
        },
    )
    case(
        "variant_with_one_user",
        "a treatment with a single (buying) user next to a normal one",
        {
            "control": users(rng, 400),
            "one": concat(constant(1, conversion=1, add_to_cart=1, orders=2, revenue=81.5)),
            "b": users(rng, 390),
        },
    )
    case(
        "control_with_one_user",
        "the control has one user, who bought",
        {
            "control": constant(1, conversion=1, add_to_cart=1, orders=1, revenue=40.0),
            "treatment": users(rng, 300),
        },
    )
    case(
        "one_user_each",
        "one user per variant",
        {
            "control": constant(
                1, conversion=1, add_to_cart=1, orders=1, revenue=12.0, pre_orders=1
            ),
            "treatment": constant(1, add_to_cart=1),
        },
    )
    case(
        "zero_conversions_treatment",
        "nobody in the treatment bought (zero variance, no orders for aov)",
        {"control": users(rng, 800), "treatment": users(rng, 800, effect=0.0)},
    )
    case(
        "zero_conversions_control",
        "nobody in the control bought (zero control mean)",
        {"control": users(rng, 800, effect=0.0), "treatment": users(rng, 800)},
    )
    case(
        "zero_conversions_anywhere",
        "nobody bought at all, before or after",
        {"control": users(rng, 500, rate=0.0), "treatment": users(rng, 500, rate=0.0)},
    )
    same = users(rng, 700)
    case(
        "ties_identical_variants",
        "the treatment's users are the control's (lift exactly 0)",
        {"control": same, "treatment": {k: v.copy() for k, v in same.items()}},
    )
    case(
        "ties_constant_values",
        "every user bought once for 19.99 (variances 0 or rounding noise)",
        {
            "control": constant(50, conversion=1, add_to_cart=1, orders=1, revenue=19.99),
            "treatment": constant(40, conversion=1, add_to_cart=1, orders=1, revenue=19.99),
        },
    )
    case(
        "ties_mostly_zero",
        "40 users, one buyer per variant",
        {
            "control": concat(
                constant(39), constant(1, conversion=1, add_to_cart=1, orders=1, revenue=55.0)
            ),
            "treatment": concat(
                constant(39, add_to_cart=1),
                constant(1, conversion=1, add_to_cart=1, orders=3, revenue=120.0, pre_orders=1),
            ),
        },
    )
    case(
        "heavy_tailed_revenue",
        "Pareto(1.1) order values: a few huge orders",
        {
            "control": users(rng, 3000, pareto=1.1),
            "treatment": users(rng, 3000, pareto=1.1, effect=1.05),
        },
    )
    case(
        "zero_orders_aov",
        "most users never order (aov over few orderers); high conversion elsewhere",
        {
            "control": users(rng, 2500, rate=0.01),
            "treatment": users(rng, 2500, rate=0.012),
        },
    )
    case(
        "small_n_two",
        "two users per variant",
        {"control": users(rng, 2, rate=2.0), "treatment": users(rng, 2, rate=2.0)},
    )
    case(
        "small_n_five",
        "five and six users",
        {"control": users(rng, 5, rate=1.0), "treatment": users(rng, 6, rate=1.0)},
    )
    case(
        "small_n_hand_made",
        "ten users each, values by hand",
        {
            "control": concat(
                constant(6),
                constant(
                    2,
                    conversion=1,
                    add_to_cart=1,
                    orders=1,
                    revenue=25.5,
                    pre_orders=1,
                    pre_revenue=10,
                ),
                constant(1, conversion=1, add_to_cart=1, orders=2, revenue=99.99, pre_conversion=1),
                constant(1, add_to_cart=1, pre_add_to_cart=1),
            ),
            "treatment": concat(
                constant(4, pre_add_to_cart=1),
                constant(3, conversion=1, add_to_cart=1, orders=1, revenue=30.0, pre_orders=2),
                constant(3, conversion=1, add_to_cart=1, orders=3, revenue=150.25, pre_revenue=5.5),
            ),
        },
    )
    case(
        "big_n",
        "a million users a side, +2 % orders",
        {"control": users(rng, 1_000_000), "treatment": users(rng, 1_000_000, effect=1.02)},
    )
    case(
        "big_n_huge_effect",
        "200,000 users a side, orders tripled (p-values underflow to 0)",
        {"control": users(rng, 200_000), "treatment": users(rng, 200_000, effect=3.0)},
    )
    case(
        "cuped_strong_covariate",
        "the pre-period predicts well (CUPED narrows the interval)",
        {
            "control": users(rng, 3000, rate=0.3),
            "treatment": users(rng, 3000, rate=0.3, effect=1.1),
        },
    )
    case(
        "cuped_useless_covariate",
        "the pre-period is independent of the post-period",
        {
            "control": users(rng, 2000, pre_link=0.0),
            "treatment": users(rng, 2000, pre_link=0.0, effect=1.1),
        },
    )
    case(
        "cuped_no_pre_period",
        "no activity before exposure (θ = 0: CUPED falls back to the plain test)",
        {
            "control": {
                **users(rng, 900),
                **{c: np.zeros(900) for c in COLUMNS if c.startswith("pre_")},
            },
            "treatment": {
                **users(rng, 900, effect=1.2),
                **{c: np.zeros(900) for c in COLUMNS if c.startswith("pre_")},
            },
        },
    )
    case(
        "srm_unequal_weights_ok",
        "declared 80/20 split, observed close to it",
        {"control": users(rng, 4000), "treatment": users(rng, 1010, effect=1.1)},
        [0.8, 0.2],
    )
    case(
        "srm_unequal_weights_mismatch",
        "declared 80/20 split, observed 50/50",
        {"control": users(rng, 2000), "treatment": users(rng, 2000)},
        [0.8, 0.2],
    )
    case(
        "srm_equal_weights_mismatch",
        "declared equal, observed 5,000 / 4,700 / 5,020",
        {"control": users(rng, 5000), "b": users(rng, 4700), "c": users(rng, 5020)},
    )
    case(
        "empty_variant",
        "a declared variant nobody saw",
        {"control": users(rng, 500), "treatment": users(rng, 500), "nobody": users(rng, 0)},
        [1.0, 1.0, 1.0],
    )
    return out


# --- sums ------------------------------------------------------------------------------


def _fsum(values: np.ndarray) -> float:
    return math.fsum(values.tolist())


def metric_sums(variant: Users) -> dict[str, dict[str, float]]:
    """Each metric's sufficient statistics over one variant (fsum, like the helper)."""
    n = len(variant["conversion"])
    out: dict[str, dict[str, float]] = {}
    for metric, (_, col, pre) in MEAN_METRICS.items():
        x, p = variant[col], variant[pre]
        out[metric] = {
            "n": n,
            "main_sum": _fsum(x),
            "main_sum_squares": _fsum(x * x),
            "covariate_sum": _fsum(p),
            "covariate_sum_squares": _fsum(p * p),
            "main_covariate_sum_product": _fsum(x * p),
        }
    x, y = variant["revenue"], variant["orders"]
    out["aov"] = {
        "n": n,
        "main_sum": _fsum(x),
        "main_sum_squares": _fsum(x * x),
        "denominator_sum": _fsum(y),
        "denominator_sum_squares": _fsum(y * y),
        "main_denominator_sum_product": _fsum(x * y),
    }
    return out


# --- gbstats ---------------------------------------------------------------------------


# gbstats metric id -> (metric, statistic type, cuped)
def _metric_settings() -> dict[str, tuple[str, dict[str, Any], bool]]:
    settings: dict[str, tuple[str, dict[str, Any], bool]] = {}
    for metric, (kind, _, _) in MEAN_METRICS.items():
        settings[metric] = (
            metric,
            {"statistic_type": "mean", "main_metric_type": kind},
            False,
        )
        settings[f"{metric}__cuped"] = (
            metric,
            {"statistic_type": "mean_ra", "main_metric_type": kind, "covariate_metric_type": kind},
            True,
        )
    settings["aov"] = (
        "aov",
        {
            "statistic_type": "ratio",
            "main_metric_type": "count",
            "denominator_metric_type": "count",
        },
        False,
    )
    return settings


def gbstats_answers(batch: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """gbstats' engine on cases with the same number of variants and the same weights,
    per case (keys ``name``, ``variants``, ``weights``, ``sums``): per metric and mode,
    per variant its answer, and the SRM p-value. One call for the batch, each case one
    of its dimensions (the engine analyses dimensions independently; this only saves
    its per-call pandas overhead). Variants are passed by position ("0" the control)."""
    settings = _metric_settings()
    ids = list(settings)
    var_ids = [str(i) for i in range(len(batch[0]["variants"]))]
    rows = []
    for case in batch:
        for var_id, name in zip(var_ids, case["variants"], strict=True):
            sums = case["sums"][name]
            row: dict[str, Any] = {
                "dimension": case["name"],
                "variation": var_id,
                "users": sums["aov"]["n"],
            }
            for i, mid in enumerate(ids):
                for key, value in sums[settings[mid][0]].items():
                    if key != "n":
                        row[f"m{i}_{key}"] = value
            rows.append(row)
    data = {
        "metrics": {
            mid: {"id": mid, "name": mid, **spec} for mid, (_, spec, _) in settings.items()
        },
        "analyses": [
            {
                "var_names": var_ids,
                "var_ids": var_ids,
                "weights": batch[0]["weights"],
                "max_dimensions": len(batch) + 1,  # never merge cases into "(other)"
                **spec,
            }
            for spec in ANALYSES.values()
        ],
        "query_results": [{"rows": rows, "metrics": ids}],
    }
    by_name = {case["name"]: case for case in batch}
    answers: dict[str, dict[str, Any]] = {name: {"results": {}, "srm": set()} for name in by_name}
    for result in process_experiment_results(data):
        metric, _, cuped = settings[result["metric"]]
        for mode, analysis in zip(ANALYSES, result["analyses"], strict=True):
            assert len(analysis["dimensions"]) == len(batch)
            for dimension in analysis["dimensions"]:
                case = by_name[dimension["dimension"]]
                out = answers[case["name"]]
                out["srm"].add(float(dimension["srm"]))
                baseline, *others = dimension["variations"]
                per_variant = {}
                for name, v in zip(case["variants"][1:], others, strict=True):
                    answer = {
                        "mean": float(v["cr"]),
                        "control_mean": float(baseline["cr"]),
                        "expected": float(v["expected"]),
                        "ci": [float(c) for c in v["ci"]],
                        "error": v["errorMessage"],
                    }
                    if mode == "bayesian":
                        answer["chance_to_win"] = float(v["chanceToWin"])
                    else:
                        answer["p_value"] = float(v["pValue"])
                    per_variant[name] = answer
                key = f"{mode}_cuped" if cuped else mode
                out["results"].setdefault(metric, {})[key] = per_variant
    for out in answers.values():
        (out["srm_p_value"],) = out.pop("srm")  # one SRM per case, whichever metric
    return answers


SRM_CASES: list[tuple[list[int], list[float]]] = [
    ([1000, 1000], [0.5, 0.5]),
    ([1000, 1100], [0.5, 0.5]),
    ([5000, 4700, 5020], [1.0, 1.0, 1.0]),
    ([8000, 2000], [0.8, 0.2]),
    ([5000, 5000], [0.8, 0.2]),
    ([812, 188], [4.0, 1.0]),
    ([0, 0], [0.5, 0.5]),
    ([0, 10], [0.5, 0.5]),
    ([1, 0], [0.5, 0.5]),
    ([100, 90, 0], [0.4, 0.6, 0.0]),
    ([100, 90, 7], [0.5, 0.5, 0.0]),
    ([1_000_000, 1_003_000], [0.5, 0.5]),
    ([1_000_000, 1_010_000], [0.5, 0.5]),
    ([333, 333, 334, 300], [0.25, 0.25, 0.25, 0.25]),
]


def generate() -> dict[str, Any]:
    """Every case with its sums, per-user values (small cases) and gbstats' answers."""
    out_cases = []
    for spec in cases():
        small = all(len(v["conversion"]) <= KEEP_VALUES_UP_TO for v in spec["variants"].values())
        out_cases.append(
            {
                "name": spec["name"],
                "about": spec["about"],
                "variants": list(spec["variants"]),
                "weights": spec["weights"],
                "values": (
                    {
                        name: {col: v[col].tolist() for col in COLUMNS}
                        for name, v in spec["variants"].items()
                    }
                    if small
                    else None
                ),
                "sums": {name: metric_sums(v) for name, v in spec["variants"].items()},
            }
        )
    batches: dict[tuple[int, tuple[float, ...]], list[dict[str, Any]]] = {}
    for case in out_cases:
        batches.setdefault((len(case["variants"]), tuple(case["weights"])), []).append(case)
    for batch in batches.values():
        for name, answers in gbstats_answers(batch).items():
            next(case for case in batch if case["name"] == name).update(answers)
    return {
        "gbstats_version": version("gbstats"),
        "numpy_version": version("numpy"),
        "scipy_version": version("scipy"),
        "regenerate": ".venv-gbstats/bin/python tests/reference/gbstats_cases.py "
        "--out tests/data/gbstats_cases.json",
        "cases": out_cases,
        "srm_cases": [
            {"users": u, "weights": w, "p_value": float(check_srm(u, w))} for u, w in SRM_CASES
        ],
    }


def _dump(data: Any) -> str:
    """JSON, one key per line but each list of plain values on one line (reviewable)."""
    text = json.dumps(data, indent=1, allow_nan=False)
    return re.sub(
        r"\[\s*([^\[\]{}]*?)\s*\]",
        lambda m: (
            "[" + ", ".join(part.strip() for part in m.group(1).split(",")) + "]"
            if m.group(1).strip()
            else "[]"
        ),
        text,
    )


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        if old.keys() != new.keys():
            return [f"{path}: keys {sorted(old)} != {sorted(new)}"]
        return [d for k in old for d in _differences(old[k], new[k], f"{path}.{k}")]
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: {len(old)} items != {len(new)}"]
        return [
            d
            for i, (o, n) in enumerate(zip(old, new, strict=True))
            for d in _differences(o, n, f"{path}[{i}]")
        ]
    if isinstance(old, float) and isinstance(new, float | int):
        same = math.isclose(old, new, rel_tol=1e-12, abs_tol=1e-15) or (
            math.isnan(old) and math.isnan(new)
        )
        return [] if same else [f"{path}: {old!r} != {new!r}"]
    return [] if old == new else [f"{path}: {old!r} != {new!r}"]


def main(argv: list[str] | None = None) -> int:
    """Write the answers to ``--out``; with ``--check STORED``, also compare them with a
    stored file (exit 1 if it is stale)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the answers here")
    parser.add_argument("--check", type=Path, metavar="STORED", help="compare with this file")
    args = parser.parse_args(argv)
    if args.out is None and args.check is None:
        parser.error("nothing to do: give --out PATH and/or --check STORED")
    # gbstats' sequential test overflows exp() on huge statistics (p-value 0): expected
    warnings.filterwarnings("ignore", "overflow encountered in exp", RuntimeWarning)
    data = generate()
    if args.out is not None:
        args.out.write_text(_dump(data) + "\n")
        print(f"wrote {len(data['cases'])} cases, {len(data['srm_cases'])} SRM cases: {args.out}")
    if args.check is not None:
        stored = json.loads(args.check.read_text())
        ignore = ("numpy_version", "scipy_version")
        diffs = _differences(
            {k: v for k, v in stored.items() if k not in ignore},
            {k: v for k, v in data.items() if k not in ignore},
        )
        for line in diffs[:20]:
            print(f"differs: {line}", file=sys.stderr)
        verdict = "stale, regenerate it" if diffs else "matches gbstats"
        print(f"{args.check}: {verdict} ({len(diffs)} differences)")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
