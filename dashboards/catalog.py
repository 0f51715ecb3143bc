"""The seven Pulse dashboards, each defined once (rendered to Grafana JSON and to pages)."""

from __future__ import annotations

from dashboards.model import (
    Dashboard,
    ExperimentData,
    FunnelData,
    HealthData,
    InsightsData,
    MetricData,
    Panel,
    ProductsData,
    Threshold,
)

__all__ = ["DASHBOARDS", "get"]

# Conversion below 2 % is a problem, below 3 % worth a look (simulated baseline ~4.8 %).
_CONVERSION = (Threshold(None, "red"), Threshold(0.02, "orange"), Threshold(0.03, "green"))
_BOUNCE = (Threshold(None, "green"), Threshold(0.5, "orange"), Threshold(0.7, "red"))
# Data older than the allowed lateness is late; 3x that is an outage.
_FRESHNESS = (Threshold(None, "green"), Threshold(900, "orange"), Threshold(1800, "red"))


def _m(metric: str, **kw: object) -> MetricData:
    return MetricData(metric, **kw)  # type: ignore[arg-type]


OVERVIEW = Dashboard(
    uid="pulse-overview",
    title="Business overview",
    description="GMV, orders, conversion and visitors, against the same time last week.",
    tags=("business",),
    panels=(
        Panel("Revenue (GMV)", _m("revenue", reduce="sum", compare_week=True), "stat", "eur",
              width=4, height=4, annotate=True),
        Panel("Orders", _m("orders", reduce="sum", compare_week=True), "stat", width=4, height=4,
              annotate=True),
        Panel("Average order value", _m("aov", compare_week=True), "stat", "eur", width=4,
              height=4),
        Panel("Conversion rate", _m("conversion_rate", compare_week=True), "stat", "percent",
              _CONVERSION, width=4, height=4, annotate=True),
        Panel("Revenue per visitor", _m("revenue_per_visitor", compare_week=True), "stat",
              "eur", width=4, height=4),
        Panel("Visitors", _m("visitors", compare_week=True), "stat", width=4, height=4),
        Panel("Open insights", InsightsData("open", limit=5), "insights", width=24, height=5,
              description="Anomalies the detector raised and nobody resolved yet."),
        Panel("Revenue vs last week", _m("revenue", compare_week=True), unit="eur", width=12,
              annotate=True),
        Panel("Conversion rate vs last week", _m("conversion_rate", compare_week=True),
              unit="percent", thresholds=_CONVERSION, width=12, annotate=True),
        Panel("Orders by country", _m("orders", by="country"), width=8, annotate=True),
        Panel("Conversion by device", _m("conversion_rate", by="device"), unit="percent",
              width=8, annotate=True),
        Panel("Sessions by channel", _m("traffic_sources"), width=8),
        Panel("Sessions vs last week", _m("sessions", compare_week=True), width=12,
              annotate=True),
        Panel("Revenue by country", _m("revenue", by="country", total=True), "bars", "eur",
              width=12),
    ),
)  # fmt: skip

FUNNEL = Dashboard(
    uid="pulse-funnel",
    title="Funnel",
    description="Product view → add to cart → checkout → purchase, by device and country.",
    tags=("business",),
    panels=(
        # the two short cards side by side, then the chart beside the long table: rows of
        # like heights leave no empty space under a card
        Panel("Funnel", FunnelData(), "funnel", "count", width=12, height=9),
        Panel("Funnel by device", FunnelData(by="device"), "funnel", width=12),
        Panel("Add-to-cart rate", _m("add_to_cart_rate", compare_week=True), unit="percent",
              width=12, annotate=True),
        Panel("Funnel by country", FunnelData(by="country"), "funnel", width=12),
        Panel("Conversion by country", _m("conversion_rate", by="country"), unit="percent",
              width=12, annotate=True),
        Panel("Conversion by channel", _m("conversion_rate", by="channel"), unit="percent",
              width=12, annotate=True),
    ),
)  # fmt: skip

PRODUCTS = Dashboard(
    uid="pulse-products",
    title="Products",
    description="Top performers, view-to-purchase and categories.",
    tags=("business",),
    panels=(
        Panel("Top products by revenue", ProductsData("revenue", 10), "table", "eur", width=12,
              height=10),
        Panel("Most viewed products (view-to-purchase)", ProductsData("views", 10), "table",
              width=12, height=10),
        Panel("Revenue by category", _m("revenue", by="category", total=True), "bars", "eur",
              width=12),
        Panel("Units by category", _m("units", by="category"), width=12, annotate=True),
    ),
)  # fmt: skip

ENGAGEMENT = Dashboard(
    uid="pulse-engagement",
    title="Engagement",
    description="Sessions, bounce, pages per session, duration and traffic sources.",
    tags=("business",),
    panels=(
        Panel("Sessions", _m("sessions", compare_week=True), width=12, annotate=True),
        Panel("Traffic sources", _m("traffic_sources"), width=12),
        Panel("Bounce rate", _m("bounce_rate"), unit="percent", thresholds=_BOUNCE, width=8,
              annotate=True),
        Panel("Pages per session", _m("pages_per_session"), unit="number", width=8),
        Panel("Average session duration", _m("avg_session_duration_s"), unit="seconds",
              width=8),
        Panel("Page views by device", _m("pageviews", by="device"), width=12),
        Panel("Bounce rate by channel", _m("bounce_rate", by="channel"), unit="percent",
              width=12),
    ),
)  # fmt: skip

ANOMALIES = Dashboard(
    uid="pulse-anomalies",
    title="Anomalies",
    description="Open insights, their lifecycle, and the affected metrics with annotations.",
    tags=("insights",),
    panels=(
        Panel("Open insights", InsightsData("open"), "insights", width=24, height=8),
        Panel("Conversion rate", _m("conversion_rate"), unit="percent", thresholds=_CONVERSION,
              width=12, annotate=True),
        Panel("Revenue", _m("revenue"), unit="eur", width=12, annotate=True),
        Panel("Sessions", _m("sessions"), width=12, annotate=True),
        Panel("Orders", _m("orders"), width=12, annotate=True),
        Panel("Acknowledged", InsightsData("acknowledged"), "insights", width=12, height=6),
        Panel("Resolved", InsightsData("resolved"), "insights", width=12, height=6),
    ),
)  # fmt: skip

PIPELINE = Dashboard(
    uid="pulse-pipeline",
    title="Pipeline health",
    description="Throughput, lag, freshness, rejected, duplicate and bot events, detector, alerts.",
    tags=("operations",),
    refresh_s=15,
    default_range="1h",
    panels=(
        Panel("Events per second (event time)", _m("events", per_second=True), unit="per_second",
              width=12),
        Panel("Data freshness (watermark age)", HealthData("freshness"), "stat", "seconds",
              _FRESHNESS, width=6, height=8),
        Panel("Consumer lag (records)", HealthData("consumer_lag"), "stat", width=6, height=8),
        Panel("Duplicate events dropped", HealthData("duplicates"), width=6),
        Panel("Rejected events", HealthData("rejected"), width=6),
        # CONTRACT §9: stored apart, left out of every metric
        Panel("Bot events", HealthData("bot_events"), width=4),
        Panel("Detector runs", HealthData("detector_runs"), width=4),
        Panel("Alert deliveries", HealthData("alert_deliveries"), width=4),
    ),
)  # fmt: skip

EXPERIMENTS = Dashboard(
    uid="pulse-experiments",
    title="Experiments",
    description="A/B experiments (CONTRACT §10): users per variant, lift with 95% intervals "
    "per metric, sample-ratio check, and the lift over time.",
    tags=("business", "experiments"),
    refresh_s=60,
    default_range="7d",
    panels=(
        Panel("Users per variant", ExperimentData("users"), "experiment", width=8, height=8),
        Panel("Sample ratio (SRM check)", ExperimentData("srm"), "experiment", width=16,
              height=8),
        Panel("Lift by metric (95% interval)", ExperimentData("lift"), "experiment", width=24,
              height=12),
        Panel("Cumulative lift: conversion", ExperimentData("cumulative", "conversion"),
              "experiment", width=12, height=10),
        Panel("Cumulative lift: revenue per user",
              ExperimentData("cumulative", "revenue_per_user"), "experiment", width=12,
              height=10),
    ),
)  # fmt: skip

DASHBOARDS: tuple[Dashboard, ...] = (
    OVERVIEW, FUNNEL, PRODUCTS, ENGAGEMENT, ANOMALIES, PIPELINE, EXPERIMENTS,
)  # fmt: skip
_BY_UID = {d.uid: d for d in DASHBOARDS}


def get(uid: str) -> Dashboard | None:
    """The dashboard with ``uid``, if any."""
    return _BY_UID.get(uid)
