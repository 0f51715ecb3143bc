"""Every Grafana dashboard validates against grafana-foundation-sdk's models, and the
validator catches what Grafana would silently drop or refuse."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from dashboards.catalog import DASHBOARDS
from dashboards.grafana import LAST_WEEK, RenderOptions, render
from dashboards.macros import INTERVAL_SQL, expand
from dashboards.model import FunnelData, InsightsData, MetricData, ProductsData
from dashboards.validate import validate


def render_all(options: RenderOptions | None = None) -> dict[str, dict[str, Any]]:
    """Every dashboard's Grafana JSON, by uid."""
    return {board.uid: render(board, options) for board in DASHBOARDS}


@pytest.mark.parametrize("board", DASHBOARDS, ids=lambda b: b.uid)
def test_every_dashboard_validates(board) -> None:
    data = render(board, RenderOptions(timezone="Europe/Amsterdam"))
    assert validate(data) == []
    assert data["uid"] == board.uid and data["title"] == board.title
    assert len(data["panels"]) == len(board.panels)
    assert data["timezone"] == "Europe/Amsterdam"
    names = {v["name"] for v in data["templating"]["list"]}
    assert {"tz", "bucket"} <= names


def test_the_requirement_is_covered() -> None:
    uids = {b.uid for b in DASHBOARDS}
    assert uids == {"pulse-overview", "pulse-funnel", "pulse-products", "pulse-engagement",
                    "pulse-anomalies", "pulse-pipeline", "pulse-experiments"}  # fmt: skip
    overview = {p.data.metric for p in DASHBOARDS[0].panels if isinstance(p.data, MetricData)}
    assert {"revenue", "orders", "aov", "conversion_rate", "revenue_per_visitor", "visitors",
            "sessions", "traffic_sources"} <= overview  # fmt: skip
    assert {p.data.breakdown for p in DASHBOARDS[0].panels if isinstance(p.data, MetricData)} >= {
        "country", "device", "channel"}  # fmt: skip
    assert any(isinstance(p.data, MetricData) and p.data.compare_week for p in DASHBOARDS[0].panels)
    kinds = {type(p.data) for b in DASHBOARDS for p in b.panels}
    assert {FunnelData, ProductsData, InsightsData} <= kinds


def test_validator_reports_what_grafana_would_lose() -> None:
    good = render_all()["pulse-overview"]
    bad = copy.deepcopy(good)
    bad["panels"][7]["options"]["legend"]["placment"] = "bottom"
    bad["panels"][8]["fieldConfig"]["defaults"]["unti"] = "percent"
    bad["panels"][9]["type"] = "timeserie"
    bad["panels"][10]["targets"][0]["rawSQL"] = "SELECT 1"
    bad["panels"][11]["gridPos"]["w"] = 30
    bad["panels"][12]["id"] = bad["panels"][13]["id"]
    problems = "\n".join(validate(bad))
    for needle in ("placment", "unti", "timeserie", "rawSQL", "24-column", "duplicate id"):
        assert needle in problems, problems


def test_validator_reports_undefined_variables() -> None:
    bad = render_all()["pulse-engagement"]
    bad["templating"]["list"] = [v for v in bad["templating"]["list"] if v["name"] != "bucket"]
    assert any("$bucket" in p for p in validate(bad))


def test_panels_use_the_clickhouse_plugin_with_raw_sql() -> None:
    for data in render_all().values():
        for panel in data["panels"]:
            for target in panel["targets"]:
                if panel["datasource"]["type"] == "prometheus":
                    assert target["expr"].strip()
                    continue
                assert target["datasource"] == {
                    "type": "grafana-clickhouse-datasource",
                    "uid": "pulse-clickhouse",
                }
                assert target["editorType"] == "sql" and target["rawSql"].strip()
                assert target["format"] == {"timeSeries": 0, "table": 1}[target["queryType"]]
                # [from, to) as METRICS.md: never the plugin's inclusive $__timeFilter
                assert "$__timeFilter" not in target["rawSql"]


def test_compare_week_and_annotations_reach_the_right_panels() -> None:
    data = render(DASHBOARDS[0])
    by_title = {p["title"]: p for p in data["panels"]}
    revenue = by_title["Revenue vs last week"]
    assert [t["refId"] for t in revenue["targets"]] == ["A", "B"]
    assert f"`{LAST_WEEK}`" in revenue["targets"][1]["rawSql"]
    assert revenue["fieldConfig"]["overrides"][0]["matcher"]["options"] == LAST_WEEK
    annotations = {a["name"]: a for a in data["annotations"]["list"]}
    conversion_ids = {p["id"] for p in data["panels"] if "onversion" in p["title"]}
    assert set(annotations["Insights: conversion_rate"]["filter"]["ids"]) <= conversion_ids
    partial = set(annotations["Partial buckets"]["filter"]["ids"])
    assert revenue["id"] in partial and by_title["Revenue (GMV)"]["id"] not in partial


def test_macros_expand_like_the_plugin() -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    end = datetime(2026, 1, 3, tzinfo=UTC)
    sql = "SELECT $__fromTime_ms, $__toTime, ${tz}, $bucket WHERE $__timeFilter(ts)"
    out = expand(sql, start, end, {"tz": "'UTC'", "bucket": INTERVAL_SQL["1h"]})
    assert out == (
        "SELECT fromUnixTimestamp64Milli(1767323045678), toDateTime(1767398400), 'UTC', 1 HOUR"
        " WHERE ts >= toDateTime(1767323045) AND ts <= toDateTime(1767398400)"
    )
    with pytest.raises(KeyError):
        expand("SELECT ${nope}", start, end)
    with pytest.raises(ValueError):
        expand("SELECT $__unknownMacro", start, end)


def test_rendering_is_deterministic() -> None:
    assert json.dumps(render_all()) == json.dumps(render_all())
