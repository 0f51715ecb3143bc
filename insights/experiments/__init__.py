"""A/B experiment statistics equal to GrowthBook's engine, gbstats 0.8 (CONTRACT §10).

Pure: per-variant sufficient statistics in (`VariantSums`), one `MetricResult` per metric
and non-control variant out, plus the sample-ratio-mismatch check. No I/O, no clients.
The formulas and where each comes from in gbstats: ``docs/experiments.md``.

scipy.stats is imported inside the functions that use it: it takes over a second to import,
and every ``pulse`` command imports this package through the detector.
"""

from insights.experiments.analysis import (
    EXPERIMENT_METRICS,
    SEQUENTIAL_TUNING,
    MetricKind,
    MetricResult,
    analyze,
    analyze_metric,
    statistic,
)
from insights.experiments.bayesian import BayesianResult, effect_bayesian_ab_test
from insights.experiments.frequentist import (
    FrequentistResult,
    sequential_two_sided_ttest,
    two_sided_ttest,
)
from insights.experiments.srm import SRM_THRESHOLD, SrmResult, check_srm, srm
from insights.experiments.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
    compute_theta,
)
from insights.experiments.sums import Moments, VariantSums, variant_sums

__all__ = [
    "EXPERIMENT_METRICS",
    "SEQUENTIAL_TUNING",
    "SRM_THRESHOLD",
    "BayesianResult",
    "FrequentistResult",
    "MetricKind",
    "MetricResult",
    "Moments",
    "ProportionStatistic",
    "RatioStatistic",
    "RegressionAdjustedStatistic",
    "SampleMeanStatistic",
    "SrmResult",
    "Statistic",
    "VariantSums",
    "analyze",
    "analyze_metric",
    "check_srm",
    "compute_theta",
    "effect_bayesian_ab_test",
    "sequential_two_sided_ttest",
    "srm",
    "statistic",
    "two_sided_ttest",
    "variant_sums",
]
