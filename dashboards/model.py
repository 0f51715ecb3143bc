"""Dashboards as data: one definition per dashboard, rendered to Grafana and to built-in pages.

A panel says *what* it shows (a metric of METRICS.md, the funnel, top products, insights or
a pipeline signal), *how* (visualisation, unit, thresholds) and *how wide*. Nothing here
knows about Grafana or the browser: :mod:`dashboards.grafana` and :mod:`dashboards.pages`
render the same objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from warehouse.metrics import METRICS

__all__ = [
    "Dashboard",
    "Data",
    "ExperimentData",
    "FunnelData",
    "HealthData",
    "InsightsData",
    "MetricData",
    "Panel",
    "ProductsData",
    "Signal",
    "Threshold",
    "Unit",
    "Viz",
]

Viz = Literal["timeseries", "stat", "bars", "table", "funnel", "insights", "experiment"]
Unit = Literal["eur", "count", "percent", "seconds", "per_second", "number"]
Signal = Literal[
    "freshness",
    "duplicates",
    "rejected",
    "bot_events",
    "consumer_lag",
    "detector_runs",
    "alert_deliveries",
]
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.-]+$")
# Metrics whose bucket values add up to the range value (so a total or a sum is exact).
_ADDITIVE = {"events", "pageviews", "orders", "revenue", "units"}


@dataclass(frozen=True)
class Threshold:
    """From ``value`` upwards the panel turns ``color`` (the first step starts at -inf)."""

    value: float | None
    color: Literal["green", "orange", "red", "blue"]


@dataclass(frozen=True)
class MetricData:
    """A metric series (``GET /v1/metrics``, ``pulse query``).

    ``total``: one value per breakdown over the whole range instead of a series (bars).
    ``reduce``: how a stat turns the series into one number — ``sum`` of the buckets
    (exact for additive metrics) or the ``last`` complete bucket.
    ``per_second``: divide each bucket by its length (throughput).
    """

    metric: str
    by: str | None = None
    where: tuple[tuple[str, str], ...] = ()
    compare_week: bool = False
    reduce: Literal["sum", "last"] = "last"
    total: bool = False
    per_second: bool = False

    def __post_init__(self) -> None:
        metric = METRICS.get(self.metric)
        if metric is None:
            raise ValueError(f"unknown metric {self.metric!r}")
        for dim, value in self.where:
            if not metric.accepts(dim) or not _SAFE_VALUE.match(value):
                raise ValueError(f"bad filter {dim}={value!r} for {self.metric}")
        if self.by and not metric.accepts(self.by):
            raise ValueError(f"{self.metric} cannot be broken down by {self.by}")
        if (self.total or self.reduce == "sum") and self.metric not in _ADDITIVE:
            raise ValueError(f"{self.metric} is not additive: a sum or total would be wrong")

    @property
    def breakdown(self) -> str | None:
        """The breakdown, including a metric's forced one (traffic_sources: channel)."""
        return METRICS[self.metric].forced_by or self.by


@dataclass(frozen=True)
class FunnelData:
    """Funnel steps over sessions starting in the range (``GET /v1/funnel``)."""

    by: Literal["country", "device", "channel"] | None = None


@dataclass(frozen=True)
class ProductsData:
    """Top products (``GET /v1/products/top``)."""

    by: Literal["revenue", "views", "units"] = "revenue"
    limit: int = 10


@dataclass(frozen=True)
class InsightsData:
    """Insights of the anomaly detector (``GET /v1/insights``)."""

    status: Literal["open", "acknowledged", "resolved"] | None = "open"
    limit: int = 50


@dataclass(frozen=True)
class HealthData:
    """A pipeline signal: from the warehouse where it lives there, else from ``/metrics``."""

    signal: Signal


@dataclass(frozen=True)
class ExperimentData:
    """One view of an experiment's results (``GET /v1/experiments/{key}``, CONTRACT §10):
    ``users`` per variant, ``lift`` with its interval per metric, ``srm`` status, or the
    ``cumulative`` lift of ``metric`` day by day. Which experiment: the page's (or
    Grafana's) ``experiment`` variable."""

    view: Literal["users", "lift", "srm", "cumulative"]
    metric: Literal["conversion", "add_to_cart_rate", "orders_per_user", "revenue_per_user",
                    "aov"] = "conversion"  # fmt: skip


Data = MetricData | FunnelData | ProductsData | InsightsData | HealthData | ExperimentData


@dataclass(frozen=True)
class Panel:
    """One panel. ``width`` is in 24ths of the screen (phones always show full width).

    ``annotate``: draw the metric's insights (anomalies) on this panel.
    """

    title: str
    data: Data
    viz: Viz = "timeseries"
    unit: Unit = "count"
    thresholds: tuple[Threshold, ...] = ()
    width: int = 8
    height: int = 8
    description: str = ""
    annotate: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.width <= 24:
            raise ValueError(f"{self.title}: width must be 1..24")
        if self.viz == "funnel" and not isinstance(self.data, FunnelData):
            raise ValueError(f"{self.title}: a funnel panel needs FunnelData")
        if (self.viz == "experiment") != isinstance(self.data, ExperimentData):
            raise ValueError(f"{self.title}: experiment panels show ExperimentData")
        if self.viz == "insights" and not isinstance(self.data, InsightsData):
            raise ValueError(f"{self.title}: an insights panel needs InsightsData")
        if self.viz == "bars" and isinstance(self.data, MetricData) and not self.data.total:
            raise ValueError(f"{self.title}: bars show range totals (total=True)")


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: ``uid`` is stable (Grafana URL, page anchor); panels in reading order."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    tags: tuple[str, ...] = field(default=())
    refresh_s: int = 30
    default_range: str = "6h"

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z0-9-]{3,40}$", self.uid):
            raise ValueError(f"dashboard uid {self.uid!r}: 3-40 of a-z, 0-9, -")

    def metrics(self) -> set[str]:
        """Every metric a panel of this dashboard shows."""
        return {p.data.metric for p in self.panels if isinstance(p.data, MetricData)}
