"""Dashboard definitions refuse panels that would show wrong numbers."""

from __future__ import annotations

import pytest

from dashboards.model import Dashboard, FunnelData, MetricData, Panel


def test_unknown_metric_and_bad_slices_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        MetricData("gmv")
    with pytest.raises(ValueError, match="cannot be broken down"):
        MetricData("bounce_rate", by="category")
    with pytest.raises(ValueError, match="bad filter"):
        MetricData("revenue", where=(("country", "DE' OR 1=1"),))


def test_sums_and_totals_only_of_additive_metrics() -> None:
    # The sum of hourly visitor counts is not the number of visitors.
    with pytest.raises(ValueError, match="not additive"):
        MetricData("visitors", reduce="sum")
    with pytest.raises(ValueError, match="not additive"):
        MetricData("conversion_rate", by="country", total=True)
    assert MetricData("revenue", by="country", total=True).total


def test_forced_breakdown_is_known() -> None:
    assert MetricData("traffic_sources").breakdown == "channel"


def test_panel_and_dashboard_shape() -> None:
    with pytest.raises(ValueError, match="width"):
        Panel("x", MetricData("orders"), width=25)
    with pytest.raises(ValueError, match="FunnelData"):
        Panel("x", MetricData("orders"), "funnel")
    with pytest.raises(ValueError, match="total"):
        Panel("x", MetricData("orders", by="country"), "bars")
    with pytest.raises(ValueError, match="uid"):
        Dashboard("Bad UID", "t", "d", (Panel("f", FunnelData(), "funnel"),))
